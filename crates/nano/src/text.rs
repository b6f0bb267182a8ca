//! A small CLIP text transformer (transformers' `CLIPTextModel` names), trained from scratch.

use candle_core::{DType, Device, Result, Tensor};

use crate::config::TextConfig;
use crate::nn::{Init, LayerNorm, Linear, Store, attention, quick_gelu};

struct Layer {
    ln1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

pub struct TextEncoder {
    token_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<Layer>,
    final_ln: LayerNorm,
    heads: usize,
    causal_mask: Tensor,
}

impl TextEncoder {
    pub fn new(s: &mut Store, cfg: &TextConfig) -> Result<Self> {
        let d = cfg.hidden_size;
        let p = "text_model";
        // Token identity has to reach the UNet. With CLIP's 0.02 embeddings and default-sized
        // residual branches, the branches' shared output was 40x the embeddings from the first
        // step, every prompt came out of the encoder nearly the same (measured: 0.6% apart) and
        // the UNet learnt to ignore the text. So: unit-scale token vectors, and the residual
        // branches' output projections start at zero (the encoder starts as the identity on
        // them; GPT-2/ReZero-style), growing only as far as training pushes them.
        let token_embedding = s.get(&format!("{p}.embeddings.token_embedding.weight"), &[cfg.vocab_size, d], Init::Normal(1.0))?;
        let position_embedding = s.get(&format!("{p}.embeddings.position_embedding.weight"), &[cfg.max_positions, d], Init::Normal(0.2))?;
        let mut layers = Vec::new();
        for i in 0..cfg.layers {
            let l = format!("{p}.encoder.layers.{i}");
            for branch_out in [format!("{l}.self_attn.out_proj"), format!("{l}.mlp.fc2")] {
                let out_dim = d;
                let in_dim = if branch_out.ends_with("fc2") { cfg.intermediate_size } else { d };
                s.preset(&format!("{branch_out}.weight"), Tensor::zeros((out_dim, in_dim), DType::F32, &Device::Cpu)?)?;
                s.preset(&format!("{branch_out}.bias"), Tensor::zeros(out_dim, DType::F32, &Device::Cpu)?)?;
            }
            layers.push(Layer {
                ln1: LayerNorm::new(s, &format!("{l}.layer_norm1"), d, 1e-5)?,
                q: Linear::new(s, &format!("{l}.self_attn.q_proj"), d, d, true)?,
                k: Linear::new(s, &format!("{l}.self_attn.k_proj"), d, d, true)?,
                v: Linear::new(s, &format!("{l}.self_attn.v_proj"), d, d, true)?,
                out: Linear::new(s, &format!("{l}.self_attn.out_proj"), d, d, true)?,
                ln2: LayerNorm::new(s, &format!("{l}.layer_norm2"), d, 1e-5)?,
                fc1: Linear::new(s, &format!("{l}.mlp.fc1"), d, cfg.intermediate_size, true)?,
                fc2: Linear::new(s, &format!("{l}.mlp.fc2"), cfg.intermediate_size, d, true)?,
            });
        }
        let final_ln = LayerNorm::new(s, &format!("{p}.final_layer_norm"), d, 1e-5)?;
        let n = cfg.max_positions;
        // Large negative rather than -inf: softmax of a fully masked row must stay finite.
        let mask: Vec<f32> = (0..n * n).map(|i| if i % n > i / n { -1e9 } else { 0.0 }).collect();
        let causal_mask = Tensor::from_vec(mask, (n, n), &Device::Cpu)?;
        Ok(Self { token_embedding, position_embedding, layers, final_ln, heads: cfg.heads, causal_mask })
    }

    /// Token ids `[B, T]` (T = max positions) → last hidden state `[B, T, D]`, what SD 1.x
    /// pipelines feed the UNet.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let tok = self.token_embedding.index_select(&ids.flatten_all()?, 0)?.reshape((b, t, ()))?;
        let mut x = tok.broadcast_add(&self.position_embedding.narrow(0, 0, t)?)?;
        let mask = self.causal_mask.narrow(0, 0, t)?.narrow(1, 0, t)?;
        for l in &self.layers {
            let h = l.ln1.forward(&x)?;
            let a = attention(&l.q.forward(&h)?, &l.k.forward(&h)?, &l.v.forward(&h)?, self.heads, Some(&mask))?;
            x = (x + l.out.forward(&a)?)?;
            let h = l.ln2.forward(&x)?;
            x = (&x + l.fc2.forward(&quick_gelu(&l.fc1.forward(&h)?)?)?)?;
        }
        self.final_ln.forward(&x)
    }
}
