//! Qwen3 decoder (transformers' `Qwen3ForCausalLM`) as a text encoder: RMSNorm, grouped-query
//! attention with per-head RMSNorm on queries and keys, rotate-half RoPE, SwiGLU MLP, causal plus
//! padding mask. Only the layers whose hidden states are asked for are built (FLUX.2 [klein]
//! reads layers 9, 18 and 27 of 36); there is no final norm and no LM head.

use std::path::Path;

use serde::Deserialize;

use super::nn::{linear, rms_norm};
use crate::error::{EngineError, Result};
use crate::graph::{DType, Dim, Graph, GraphBuilder, Value};
use crate::weights::{Params, TensorIndex};

/// `text_encoder/config.json` (transformers `Qwen3Config`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Qwen3Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "eps")]
    pub rms_norm_eps: f32,
    /// transformers < 5 write `rope_theta` at the top level, 5.x inside `rope_parameters`.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
    #[serde(default = "silu")]
    pub hidden_act: String,
    #[serde(default)]
    pub model_type: Option<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct RopeParameters {
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_type: Option<String>,
}

fn eps() -> f32 {
    1e-6
}
fn silu() -> String {
    "silu".into()
}

impl Qwen3Config {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
        Self::from_json(&text).map_err(|e| EngineError::bad_config(path, e))
    }
    /// Parses and checks a transformers Qwen3 config.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let cfg: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if let Some(t) = cfg.model_type.as_deref().filter(|t| *t != "qwen3") {
            return Err(format!("model_type `{t}` is not a Qwen3 decoder"));
        }
        if cfg.hidden_act != "silu" {
            return Err(format!("hidden_act `{}` is not supported (Qwen3 uses silu)", cfg.hidden_act));
        }
        if let Some(t) = cfg.rope_parameters.as_ref().and_then(|r| r.rope_type.as_deref()).filter(|t| *t != "default") {
            return Err(format!("rope_type `{t}` is not supported (only the default RoPE)"));
        }
        if cfg.num_key_value_heads == 0 || !cfg.num_attention_heads.is_multiple_of(cfg.num_key_value_heads) {
            return Err("num_attention_heads must be a multiple of num_key_value_heads".into());
        }
        cfg.theta().ok_or("rope_theta is missing")?;
        Ok(cfg)
    }
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads)
    }
    fn theta(&self) -> Option<f64> {
        self.rope_parameters.as_ref().map(|r| r.rope_theta).or(self.rope_theta)
    }
}

struct Ctx<'a> {
    g: GraphBuilder,
    p: Params<'a>,
    cfg: &'a Qwen3Config,
    /// `[S, head_dim]` rotary tables.
    cos: Value,
    sin: Value,
    /// `[B, 1, 1, S, S]` additive mask (causal and padding).
    mask: Value,
}

impl Ctx<'_> {
    /// `x * cos + rotate_half(x) * sin` for `x` `[B, S, heads, D]` (cos/sin broadcast as `[S, 1, D]`).
    fn rope(&mut self, x: Value) -> Value {
        let d = self.cfg.head_dim() as i64;
        let g = &mut self.g;
        let x1 = g.slice(x, -1, 0, d / 2);
        let x2 = g.slice(x, -1, d / 2, d);
        let neg = g.mul_scalar(x2, -1.0);
        let rot = g.concat(&[neg, x1], -1);
        let a = g.mul(x, self.cos);
        let b = g.mul(rot, self.sin);
        g.add(a, b)
    }

    /// Grouped-query attention. Queries `[B, S, H, D]` are grouped as `[B, KV, rep*S, D]` so each
    /// key/value head serves its `rep` query heads without copying keys or values.
    fn attention(&mut self, pre: &str, x: Value) -> Result<Value> {
        let c = self.cfg;
        let (w, d, h, kv) = (c.hidden_size, c.head_dim(), c.num_attention_heads, c.num_key_value_heads);
        let (di, hi, kvi, rep) = (d as i64, h as i64, kv as i64, (h / kv) as i64);
        let q = linear(&mut self.g, &self.p, &format!("{pre}.q_proj"), x, w, h * d, false)?;
        let k = linear(&mut self.g, &self.p, &format!("{pre}.k_proj"), x, w, kv * d, false)?;
        let v = linear(&mut self.g, &self.p, &format!("{pre}.v_proj"), x, w, kv * d, false)?;
        let q = self.g.reshape_to(q, &[0, 0, hi, di]);
        let q = rms_norm(&mut self.g, &self.p, &format!("{pre}.q_norm"), q, d, c.rms_norm_eps)?;
        let q = self.rope(q);
        let k = self.g.reshape_to(k, &[0, 0, kvi, di]);
        let k = rms_norm(&mut self.g, &self.p, &format!("{pre}.k_norm"), k, d, c.rms_norm_eps)?;
        let k = self.rope(k);
        let g = &mut self.g;
        let q = g.mul_scalar(q, (d as f32).powf(-0.5));
        let q = g.reshape_to(q, &[0, 0, kvi, rep, di]);
        let q = g.transpose(q, &[0, 2, 3, 1, 4]); // [B, KV, rep, S, D]
        let k = g.transpose(k, &[0, 2, 3, 1]); // [B, KV, D, S]
        let k = g.unsqueeze(k, &[2]);
        let scores = g.matmul(q, k); // [B, KV, rep, S, S]
        let scores = g.add(scores, self.mask);
        let probs = g.softmax(scores, -1);
        let v = g.reshape_to(v, &[0, 0, kvi, di]);
        let v = g.transpose(v, &[0, 2, 1, 3]);
        let v = g.unsqueeze(v, &[2]); // [B, KV, 1, S, D]
        let o = g.matmul(probs, v); // [B, KV, rep, S, D]
        let o = g.transpose(o, &[0, 3, 1, 2, 4]);
        let o = g.reshape_to(o, &[0, 0, hi * di]);
        linear(g, &self.p, &format!("{pre}.o_proj"), o, h * d, w, false)
    }

    fn layer(&mut self, i: usize, x: Value) -> Result<Value> {
        let c = self.cfg;
        let (w, m) = (c.hidden_size, c.intermediate_size);
        let pre = format!("model.layers.{i}");
        let h = rms_norm(&mut self.g, &self.p, &format!("{pre}.input_layernorm"), x, w, c.rms_norm_eps)?;
        let a = self.attention(&format!("{pre}.self_attn"), h)?;
        let x = self.g.add(x, a);
        let h = rms_norm(&mut self.g, &self.p, &format!("{pre}.post_attention_layernorm"), x, w, c.rms_norm_eps)?;
        let gate = linear(&mut self.g, &self.p, &format!("{pre}.mlp.gate_proj"), h, w, m, false)?;
        let up = linear(&mut self.g, &self.p, &format!("{pre}.mlp.up_proj"), h, w, m, false)?;
        let gate = self.g.silu(gate);
        let h = self.g.mul(gate, up);
        let h = linear(&mut self.g, &self.p, &format!("{pre}.mlp.down_proj"), h, m, w, false)?;
        Ok(self.g.add(x, h))
    }
}

/// Rotate-half RoPE tables `[seq, head_dim]` for positions `0..seq`, in f32 as transformers
/// computes them.
fn rope_tables(cfg: &Qwen3Config, theta: f64, seq: usize) -> (Vec<f32>, Vec<f32>) {
    let d = cfg.head_dim();
    let inv: Vec<f32> = (0..d / 2).map(|j| (1.0 / theta.powf((2 * j) as f64 / d as f64)) as f32).collect();
    let (mut cos, mut sin) = (Vec::with_capacity(seq * d), Vec::with_capacity(seq * d));
    for pos in 0..seq {
        let angles: Vec<f64> = inv.iter().map(|&f| (f * pos as f32) as f64).collect();
        for _ in 0..2 {
            cos.extend(angles.iter().map(|a| a.cos() as f32));
            sin.extend(angles.iter().map(|a| a.sin() as f32));
        }
    }
    (cos, sin)
}

/// Builds the encoder graph for prompts of exactly `seq` tokens. Inputs: `input_ids` and
/// `attention_mask` `[B, seq]` (int64, mask 1 for real tokens). Output: `hidden` `[B, seq,
/// layers.len() * hidden_size]`, the hidden states after each of `layers` (1-based: layer `k` is
/// transformers' `hidden_states[k]`) concatenated per token.
pub fn build(cfg: &Qwen3Config, weights: &TensorIndex, seq: usize, layers: &[usize]) -> Result<Graph> {
    let deepest = layers.iter().copied().max().unwrap_or(0);
    if deepest == 0 || deepest > cfg.num_hidden_layers {
        return Err(EngineError::Unsupported(format!(
            "text encoder layers {layers:?} are not within the model's {} layers",
            cfg.num_hidden_layers
        )));
    }
    let theta = cfg.theta().ok_or_else(|| EngineError::Unsupported("rope_theta is missing".into()))?;
    let mut g = GraphBuilder::new();
    let ids = g.input("input_ids", DType::I64, vec![Dim::Named("batch"), Dim::Fixed(seq as i64)]);
    let am = g.input("attention_mask", DType::I64, vec![Dim::Named("batch"), Dim::Fixed(seq as i64)]);
    let (cos, sin) = rope_tables(cfg, theta, seq);
    let d = cfg.head_dim();
    let cos = g.const_f32(&[seq, 1, d], cos);
    let sin = g.const_f32(&[seq, 1, d], sin);
    let mask = attention_mask(&mut g, am, seq);
    let p = Params::new(weights, "text_encoder");
    let emb = p.get(&mut g, "model.embed_tokens.weight", &[cfg.vocab_size, cfg.hidden_size])?;
    let mut x = g.gather(emb, ids, 0);
    let mut c = Ctx { g, p, cfg, cos, sin, mask };
    let mut picked = Vec::new();
    for i in 0..deepest {
        x = c.layer(i, x)?;
        if layers.contains(&(i + 1)) {
            picked.push(x);
        }
    }
    let hidden = c.g.concat(&picked, -1);
    Ok(c.g.finish(&[("hidden", hidden)]))
}

/// Key `j` is visible to query `i` when `j <= i` and token `j` is not padding: an additive
/// `[B, 1, 1, S, S]` mask with a large negative value elsewhere.
fn attention_mask(g: &mut GraphBuilder, am: Value, seq: usize) -> Value {
    const NEG: f32 = -1e9;
    let mut causal = vec![0f32; seq * seq];
    for i in 0..seq {
        for j in (i + 1)..seq {
            causal[i * seq + j] = NEG;
        }
    }
    let causal = g.const_f32(&[seq, seq], causal);
    let m = g.cast_f32(am);
    let one = g.scalar(1.0);
    let pad = g.sub(one, m);
    let pad = g.mul_scalar(pad, NEG);
    let pad = g.reshape_to(pad, &[0, 1, 1, 1, seq as i64]);
    g.add(pad, causal)
}
