//! CLIP text transformer (transformers' `CLIPTextModel` / `CLIPTextModelWithProjection`): the
//! text encoder of SD 1.x (ViT-L/14, quick_gelu), SD 2.x (OpenCLIP ViT-H, gelu) and both SDXL
//! encoders.

use std::path::Path;

use serde::Deserialize;

use super::nn::{attention, layer_norm, linear};
use crate::error::{EngineError, Result};
use crate::graph::{DType, Dim, Graph, GraphBuilder, Value};
use crate::weights::{Params, TensorIndex};

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ClipTextConfig {
    #[serde(default = "default_vocab")]
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f32,
    /// Set for `CLIPTextModelWithProjection` (SDXL's second encoder).
    #[serde(default)]
    pub projection_dim: Option<usize>,
}

fn default_vocab() -> usize {
    49408
}
fn default_positions() -> usize {
    77
}
fn default_act() -> String {
    "quick_gelu".into()
}
fn default_eps() -> f32 {
    1e-5
}

impl ClipTextConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
        Self::from_json(&text).map_err(|e| EngineError::bad_config(path, e))
    }
    /// Parses the text of a transformers `CLIPTextConfig` JSON.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }
}

/// Which outputs the pipeline needs from this encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClipOutputs {
    /// Apply a projection to the pooled output (`text_embeds`).
    pub projection: bool,
}

/// The sizes of one pre-norm transformer layer, shared by CLIP's text and vision towers.
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderShape {
    pub width: usize,
    pub heads: usize,
    pub intermediate: usize,
    /// `quick_gelu` (OpenAI CLIP) or `gelu` (OpenCLIP).
    pub act: String,
    pub eps: f32,
}

impl EncoderShape {
    fn text(cfg: &ClipTextConfig) -> Self {
        Self {
            width: cfg.hidden_size,
            heads: cfg.num_attention_heads,
            intermediate: cfg.intermediate_size,
            act: cfg.hidden_act.clone(),
            eps: cfg.layer_norm_eps,
        }
    }
}

/// One `CLIPEncoderLayer` (`{prefix}.layer_norm1`, `.self_attn.{q,k,v,out}_proj`,
/// `.layer_norm2`, `.mlp.fc1/fc2`): `x + attn(ln1(x))`, then `x + mlp(ln2(x))`. `mask` is added to
/// the attention scores (the text tower's causal mask; the vision tower has none).
pub fn encoder_layer(g: &mut GraphBuilder, p: &Params, prefix: &str, x: Value, s: &EncoderShape, mask: Option<Value>) -> Result<Value> {
    let c = s.width;
    if s.heads == 0 || !c.is_multiple_of(s.heads) {
        return Err(EngineError::Unsupported(format!("CLIP width {c} is not divisible by {} heads", s.heads)));
    }
    let h = layer_norm(g, p, &format!("{prefix}.layer_norm1"), x, c, s.eps)?;
    let q = linear(g, p, &format!("{prefix}.self_attn.q_proj"), h, c, c, true)?;
    let k = linear(g, p, &format!("{prefix}.self_attn.k_proj"), h, c, c, true)?;
    let v = linear(g, p, &format!("{prefix}.self_attn.v_proj"), h, c, c, true)?;
    let a = attention(g, q, k, v, s.heads, c / s.heads, mask);
    let a = linear(g, p, &format!("{prefix}.self_attn.out_proj"), a, c, c, true)?;
    let x = g.add(x, a);
    let h = layer_norm(g, p, &format!("{prefix}.layer_norm2"), x, c, s.eps)?;
    let h = linear(g, p, &format!("{prefix}.mlp.fc1"), h, c, s.intermediate, true)?;
    let h = match s.act.as_str() {
        "quick_gelu" => g.quick_gelu(h),
        "gelu" => g.gelu(h),
        other => return Err(EngineError::Unsupported(format!("CLIP activation `{other}` is not supported (quick_gelu, gelu)"))),
    };
    let h = linear(g, p, &format!("{prefix}.mlp.fc2"), h, s.intermediate, c, true)?;
    Ok(g.add(x, h))
}

/// Builds the encoder graph. Input `input_ids` `[B, 77]` (int64). Outputs:
/// `last_hidden_state` (after the final layer norm), `penultimate` (hidden_states[-2], no final
/// norm), `pooled` (final-norm state at the first end-of-text token) and, with a projection,
/// `text_embeds`.
pub fn build(cfg: &ClipTextConfig, weights: &TensorIndex, outs: ClipOutputs) -> Result<Graph> {
    let p = Params::new(weights, "text_encoder");
    let g = &mut GraphBuilder::new();
    let (c, heads) = (cfg.hidden_size, cfg.num_attention_heads);
    if c % heads != 0 {
        return Err(EngineError::Unsupported(format!("CLIP hidden size {c} is not divisible by {heads} heads")));
    }
    let seq = cfg.max_position_embeddings;
    let ids = g.input("input_ids", DType::I64, vec![Dim::Named("batch"), Dim::Fixed(seq as i64)]);

    let tok = p.get(g, "text_model.embeddings.token_embedding.weight", &[cfg.vocab_size, c])?;
    let pos = p.get(g, "text_model.embeddings.position_embedding.weight", &[seq, c])?;
    let mut x = g.gather(tok, ids, 0);
    x = g.add(x, pos);

    // Causal mask: large negative above the diagonal (transformers uses the dtype's minimum).
    let mut mask = vec![0f32; seq * seq];
    for i in 0..seq {
        for j in (i + 1)..seq {
            mask[i * seq + j] = f32::MIN;
        }
    }
    let mask = g.const_f32(&[seq, seq], mask);

    let shape = EncoderShape::text(cfg);
    let mut penultimate = x;
    for l in 0..cfg.num_hidden_layers {
        if l + 1 == cfg.num_hidden_layers {
            penultimate = x;
        }
        x = encoder_layer(g, &p, &format!("text_model.encoder.layers.{l}"), x, &shape, Some(mask))?;
    }
    let last = layer_norm(g, &p, "text_model.final_layer_norm", x, c, cfg.layer_norm_eps)?;

    // The end-of-text token has the largest id in the CLIP vocabulary, so the first argmax of
    // the ids is its position, whichever token pads the sequence.
    let eos = g.argmax(ids, 1);
    let eos = g.unsqueeze(eos, &[1]);
    let pooled = g.gather_nd_batch1(last, eos);

    let mut outputs = vec![("last_hidden_state", last), ("penultimate", penultimate), ("pooled", pooled)];
    if outs.projection {
        let proj =
            cfg.projection_dim.ok_or_else(|| EngineError::Unsupported("text_encoder_2 needs `projection_dim` in its config".into()))?;
        // diffusers stores `text_projection.weight` [proj, width]; OpenCLIP single files keep
        // their `text_projection` [width, proj], multiplied as is.
        let te = if p.has("text_projection") && !p.has("text_projection.weight") {
            let w = p.get(g, "text_projection", &[c, proj])?;
            g.matmul(pooled, w)
        } else {
            linear(g, &p, "text_projection", pooled, c, proj, false)?
        };
        outputs.push(("text_embeds", te));
    }
    let g = std::mem::take(g);
    Ok(g.finish(&outputs))
}
