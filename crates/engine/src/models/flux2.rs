//! `Flux2Transformer2DModel`: the FLUX.2 MMDiT (double-stream blocks over separate text and image
//! streams, then single-stream blocks over both), with modulation computed once per step and
//! shared by every block, 4-axis interleaved RoPE and bias-free linears.
//!
//! The graph keeps the text and image tokens in two streams all the way through. Every layer but
//! attention works token by token, and attention is computed for the text queries and for the
//! image queries separately over the concatenated [text, image] keys and values, which is exactly
//! diffusers' joint attention over the concatenated sequence. So no sequence split of dynamic
//! length is ever needed, and the output is the image stream (noisy tokens, then any reference
//! tokens; the caller keeps the first ones).

use std::path::Path;

use serde::Deserialize;

use super::nn::{attention_bshd, layer_norm_plain, linear, rms_norm, swiglu_fused, timestep_embedding};
use crate::error::{EngineError, Result};
use crate::graph::{DType, Dim, Graph, GraphBuilder, Value};
use crate::weights::{Params, TensorIndex};

/// `transformer/config.json` of a FLUX.2 diffusers folder.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Flux2Config {
    #[serde(default = "one")]
    pub patch_size: usize,
    pub in_channels: usize,
    #[serde(default)]
    pub out_channels: Option<usize>,
    pub num_layers: usize,
    pub num_single_layers: usize,
    pub attention_head_dim: usize,
    pub num_attention_heads: usize,
    pub joint_attention_dim: usize,
    #[serde(default = "channels_256")]
    pub timestep_guidance_channels: usize,
    #[serde(default = "three")]
    pub mlp_ratio: f32,
    pub axes_dims_rope: Vec<usize>,
    #[serde(default = "theta_2000")]
    pub rope_theta: f64,
    #[serde(default = "eps")]
    pub eps: f32,
    #[serde(default)]
    pub guidance_embeds: bool,
}

fn one() -> usize {
    1
}
fn channels_256() -> usize {
    256
}
fn three() -> f32 {
    3.0
}
fn theta_2000() -> f64 {
    2000.0
}
fn eps() -> f32 {
    1e-6
}

impl Flux2Config {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
        Self::from_json(&text).map_err(|e| EngineError::bad_config(path, e))
    }
    /// Parses and checks the text of a diffusers `Flux2Transformer2DModel` config.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let cfg: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if cfg.patch_size != 1 {
            return Err(format!("patch_size {} is not supported (FLUX.2 uses 1)", cfg.patch_size));
        }
        if cfg.guidance_embeds {
            return Err("guidance_embeds (FLUX.2 [dev]'s guidance embedder) is not supported; [klein] has none".into());
        }
        if cfg.axes_dims_rope.iter().sum::<usize>() != cfg.attention_head_dim || cfg.axes_dims_rope.iter().any(|d| d % 2 != 0) {
            return Err(format!(
                "axes_dims_rope {:?} must be even and sum to attention_head_dim {}",
                cfg.axes_dims_rope, cfg.attention_head_dim
            ));
        }
        Ok(cfg)
    }
    pub fn inner_dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }
    pub fn out_channels(&self) -> usize {
        self.out_channels.unwrap_or(self.in_channels)
    }
    fn mlp_hidden(&self) -> usize {
        (self.inner_dim() as f32 * self.mlp_ratio) as usize
    }
}

/// Rotary tables for positions `ids` (one `[t, h, w, l]` per token): `(cos, sin)`, each
/// `[ids.len(), head_dim]` row-major, every frequency repeated for its interleaved pair, computed
/// in f64 as diffusers' `Flux2PosEmbed` does on CPU.
pub fn rope_tables(ids: &[[i64; 4]], cfg: &Flux2Config) -> (Vec<f32>, Vec<f32>) {
    let d: usize = cfg.axes_dims_rope.iter().sum();
    let (mut cos, mut sin) = (Vec::with_capacity(ids.len() * d), Vec::with_capacity(ids.len() * d));
    for id in ids {
        for (axis, &dim) in cfg.axes_dims_rope.iter().enumerate() {
            let pos = id.get(axis).copied().unwrap_or(0) as f32 as f64;
            for j in 0..dim / 2 {
                let freq = 1.0 / cfg.rope_theta.powf((2 * j) as f64 / dim as f64);
                let a = pos * freq;
                let (c, s) = (a.cos() as f32, a.sin() as f32);
                cos.extend([c, c]);
                sin.extend([s, s]);
            }
        }
    }
    (cos, sin)
}

/// Shift, scale and gate of one modulated sub-layer, each `[B, 1, dim]`.
#[derive(Clone, Copy)]
struct Mod {
    shift: Value,
    scale: Value,
    gate: Value,
}

/// One token stream's rotary tables `[S, 1, D]`.
#[derive(Clone, Copy)]
struct Rope {
    cos: Value,
    sin: Value,
}

struct Ctx<'a> {
    g: GraphBuilder,
    p: Params<'a>,
    cfg: &'a Flux2Config,
}

impl Ctx<'_> {
    fn dim(&self) -> usize {
        self.cfg.inner_dim()
    }

    /// `Flux2Modulation`: `Linear(SiLU(temb))` split into `sets` (shift, scale, gate) triples.
    fn modulation(&mut self, prefix: &str, temb: Value, sets: usize) -> Result<Vec<Mod>> {
        let d = self.dim();
        let h = self.g.silu(temb);
        let m = linear(&mut self.g, &self.p, &format!("{prefix}.linear"), h, d, 3 * sets * d, false)?;
        let m = self.g.unsqueeze(m, &[1]);
        let chunk = |g: &mut GraphBuilder, i: usize| g.slice(m, -1, (i * d) as i64, ((i + 1) * d) as i64);
        Ok((0..sets)
            .map(|s| Mod { shift: chunk(&mut self.g, 3 * s), scale: chunk(&mut self.g, 3 * s + 1), gate: chunk(&mut self.g, 3 * s + 2) })
            .collect())
    }

    /// `LN(x) * (1 + scale) + shift`.
    fn modulate(&mut self, x: Value, m: Mod) -> Value {
        let d = self.dim();
        let eps = self.cfg.eps;
        let g = &mut self.g;
        let n = layer_norm_plain(g, x, d, eps);
        let one = g.scalar(1.0);
        let s = g.add(m.scale, one);
        let n = g.mul(n, s);
        g.add(n, m.shift)
    }

    fn gated(&mut self, x: Value, m: Mod, y: Value) -> Value {
        let y = self.g.mul(m.gate, y);
        self.g.add(x, y)
    }

    /// `[B, S, H*D]` → per-head RMS-normed `[B, S, H, D]` with RoPE applied.
    fn heads_normed(&mut self, x: Value, norm: &str, rope: Rope) -> Result<Value> {
        let (h, d) = (self.cfg.num_attention_heads as i64, self.cfg.attention_head_dim);
        let x = self.g.reshape_to(x, &[0, 0, h, d as i64]);
        let x = rms_norm(&mut self.g, &self.p, norm, x, d, self.cfg.eps)?;
        Ok(apply_rope_interleaved(&mut self.g, x, rope))
    }

    fn heads(&mut self, x: Value) -> Value {
        let (h, d) = (self.cfg.num_attention_heads as i64, self.cfg.attention_head_dim as i64);
        self.g.reshape_to(x, &[0, 0, h, d])
    }

    /// Joint attention: each stream's queries over the keys/values of [text, image].
    fn joint(&mut self, q: [Value; 2], k: [Value; 2], v: [Value; 2]) -> [Value; 2] {
        let (h, d) = (self.cfg.num_attention_heads, self.cfg.attention_head_dim);
        let k = self.g.concat(&k, 1);
        let v = self.g.concat(&v, 1);
        q.map(|q| attention_bshd(&mut self.g, q, k, v, h, d))
    }

    /// `Flux2FeedForward`: `linear_out(SwiGLU(linear_in(x)))`, no biases.
    fn feed_forward(&mut self, prefix: &str, x: Value) -> Result<Value> {
        let (d, m) = (self.dim(), self.cfg.mlp_hidden());
        let h = linear(&mut self.g, &self.p, &format!("{prefix}.linear_in"), x, d, 2 * m, false)?;
        let h = swiglu_fused(&mut self.g, h, m);
        linear(&mut self.g, &self.p, &format!("{prefix}.linear_out"), h, m, d, false)
    }

    /// `Flux2TransformerBlock`; `streams` is [text, image].
    fn double_block(&mut self, i: usize, streams: [Value; 2], mods: [&[Mod]; 2], ropes: [Rope; 2]) -> Result<[Value; 2]> {
        let pre = format!("transformer_blocks.{i}");
        let d = self.dim();
        // (projection, q norm, k norm) names for the text stream, then the image stream.
        let names =
            [("add_q_proj", "add_k_proj", "add_v_proj", "norm_added_q", "norm_added_k"), ("to_q", "to_k", "to_v", "norm_q", "norm_k")];
        let (mut q, mut k, mut v) = ([streams[0]; 2], [streams[0]; 2], [streams[0]; 2]);
        for s in 0..2 {
            let n = self.modulate(streams[s], mods[s][0]);
            let (qn, kn, vn, nq, nk) = names[s];
            let qp = linear(&mut self.g, &self.p, &format!("{pre}.attn.{qn}"), n, d, d, false)?;
            let kp = linear(&mut self.g, &self.p, &format!("{pre}.attn.{kn}"), n, d, d, false)?;
            let vp = linear(&mut self.g, &self.p, &format!("{pre}.attn.{vn}"), n, d, d, false)?;
            q[s] = self.heads_normed(qp, &format!("{pre}.attn.{nq}"), ropes[s])?;
            k[s] = self.heads_normed(kp, &format!("{pre}.attn.{nk}"), ropes[s])?;
            v[s] = self.heads(vp);
        }
        let attn = self.joint(q, k, v);
        let outs = ["attn.to_add_out", "attn.to_out.0"];
        let ffs = ["ff_context", "ff"];
        let mut result = streams;
        for s in 0..2 {
            let a = linear(&mut self.g, &self.p, &format!("{pre}.{}", outs[s]), attn[s], d, d, false)?;
            let x = self.gated(streams[s], mods[s][0], a);
            let n = self.modulate(x, mods[s][1]);
            let f = self.feed_forward(&format!("{pre}.{}", ffs[s]), n)?;
            result[s] = self.gated(x, mods[s][1], f);
        }
        Ok(result)
    }

    /// `Flux2SingleTransformerBlock` (fused qkv + MLP input, fused attention + MLP output).
    fn single_block(&mut self, i: usize, streams: [Value; 2], m: Mod, ropes: [Rope; 2]) -> Result<[Value; 2]> {
        let pre = format!("single_transformer_blocks.{i}.attn");
        let (d, mh) = (self.dim() as i64, self.cfg.mlp_hidden() as i64);
        let (mut q, mut k, mut v, mut mlp) = ([streams[0]; 2], [streams[0]; 2], [streams[0]; 2], [streams[0]; 2]);
        for s in 0..2 {
            let n = self.modulate(streams[s], m);
            let h = linear(&mut self.g, &self.p, &format!("{pre}.to_qkv_mlp_proj"), n, d as usize, (3 * d + 2 * mh) as usize, false)?;
            let qp = self.g.slice(h, -1, 0, d);
            let kp = self.g.slice(h, -1, d, 2 * d);
            let vp = self.g.slice(h, -1, 2 * d, 3 * d);
            let mp = self.g.slice(h, -1, 3 * d, 3 * d + 2 * mh);
            q[s] = self.heads_normed(qp, &format!("{pre}.norm_q"), ropes[s])?;
            k[s] = self.heads_normed(kp, &format!("{pre}.norm_k"), ropes[s])?;
            v[s] = self.heads(vp);
            mlp[s] = swiglu_fused(&mut self.g, mp, mh as usize);
        }
        let attn = self.joint(q, k, v);
        let mut result = streams;
        for s in 0..2 {
            let cat = self.g.concat(&[attn[s], mlp[s]], -1);
            let o = linear(&mut self.g, &self.p, &format!("{pre}.to_out"), cat, (d + mh) as usize, d as usize, false)?;
            result[s] = self.gated(streams[s], m, o);
        }
        Ok(result)
    }
}

/// `x * cos + rotate_pairs(x) * sin` for `x` `[B, S, H, D]`, where `rotate_pairs` maps each
/// interleaved pair `(a, b)` to `(-b, a)` (diffusers' `apply_rotary_emb`, `use_real_unbind_dim=-1`).
fn apply_rope_interleaved(g: &mut GraphBuilder, x: Value, rope: Rope) -> Value {
    let shape = g.shape(x);
    let pairs = g.reshape_to(x, &[0, 0, 0, -1, 2]);
    let re = g.slice(pairs, -1, 0, 1);
    let im = g.slice(pairs, -1, 1, 2);
    let neg_im = g.mul_scalar(im, -1.0);
    let rot = g.concat(&[neg_im, re], -1);
    let rot = g.reshape(rot, shape);
    let a = g.mul(x, rope.cos);
    let b = g.mul(rot, rope.sin);
    g.add(a, b)
}

/// Builds the transformer graph.
///
/// Inputs: `hidden_states` `[B, N, in_channels]` (noisy image tokens, then reference tokens),
/// `encoder_hidden_states` `[B, L, joint_attention_dim]`, `timestep` `[B]` (the sigma in [0, 1];
/// the model multiplies it by 1000), `txt_cos`/`txt_sin` `[L, head_dim]` and `img_cos`/`img_sin`
/// `[N, head_dim]` from [`rope_tables`]. Output: `sample` `[B, N, out_channels]`, the prediction
/// for every image-stream token.
pub fn build(cfg: &Flux2Config, weights: &TensorIndex) -> Result<Graph> {
    let mut c = Ctx { g: GraphBuilder::new(), p: Params::new(weights, "transformer"), cfg };
    let d = cfg.inner_dim();
    let hd = cfg.attention_head_dim as i64;
    let img = c.g.input("hidden_states", DType::F32, vec![Dim::Named("batch"), Dim::Named("tokens"), Dim::Fixed(cfg.in_channels as i64)]);
    let txt = c.g.input(
        "encoder_hidden_states",
        DType::F32,
        vec![Dim::Named("batch"), Dim::Named("text_tokens"), Dim::Fixed(cfg.joint_attention_dim as i64)],
    );
    let t = c.g.input("timestep", DType::F32, vec![Dim::Named("batch")]);
    let rope = |g: &mut GraphBuilder, prefix: &str, len: &'static str| {
        let mut table = |name: String| {
            let v = g.input(&name, DType::F32, vec![Dim::Named(len), Dim::Fixed(hd)]);
            g.unsqueeze(v, &[1])
        };
        Rope { cos: table(format!("{prefix}_cos")), sin: table(format!("{prefix}_sin")) }
    };
    let ropes = [rope(&mut c.g, "txt", "text_tokens"), rope(&mut c.g, "img", "tokens")];

    let t = c.g.mul_scalar(t, 1000.0);
    let temb = timestep_embedding(&mut c.g, t, cfg.timestep_guidance_channels, true, 0.0);
    let temb = linear(&mut c.g, &c.p, "time_guidance_embed.timestep_embedder.linear_1", temb, cfg.timestep_guidance_channels, d, false)?;
    let temb = c.g.silu(temb);
    let temb = linear(&mut c.g, &c.p, "time_guidance_embed.timestep_embedder.linear_2", temb, d, d, false)?;
    let mod_img = c.modulation("double_stream_modulation_img", temb, 2)?;
    let mod_txt = c.modulation("double_stream_modulation_txt", temb, 2)?;
    let mod_single = c.modulation("single_stream_modulation", temb, 1)?[0];

    let x = linear(&mut c.g, &c.p, "x_embedder", img, cfg.in_channels, d, false)?;
    let e = linear(&mut c.g, &c.p, "context_embedder", txt, cfg.joint_attention_dim, d, false)?;
    let mut streams = [e, x];
    for i in 0..cfg.num_layers {
        streams = c.double_block(i, streams, [&mod_txt, &mod_img], ropes)?;
    }
    for i in 0..cfg.num_single_layers {
        streams = c.single_block(i, streams, mod_single, ropes)?;
    }
    // AdaLayerNormContinuous: Linear(SiLU(temb)) → (scale, shift), in that order.
    let h = c.g.silu(temb);
    let m = linear(&mut c.g, &c.p, "norm_out.linear", h, d, 2 * d, false)?;
    let m = c.g.unsqueeze(m, &[1]);
    let scale = c.g.slice(m, -1, 0, d as i64);
    let shift = c.g.slice(m, -1, d as i64, 2 * d as i64);
    // `modulate` reads only shift and scale.
    let x = c.modulate(streams[1], Mod { shift, scale, gate: scale });
    let out = linear(&mut c.g, &c.p, "proj_out", x, d, cfg.out_channels(), false)?;
    Ok(c.g.finish(&[("sample", out)]))
}
