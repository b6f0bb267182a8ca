//! Layers shared by every network, bound to weights by their diffusers/transformers names.

use crate::error::Result;
use crate::graph::{GraphBuilder, Value};
use crate::weights::{LinearWeight, Params};

/// `y = x W^T + b` for `W` stored as `[out, in]` (PyTorch layout). The transpose is on the
/// initializer, so ONNX Runtime folds it away at load time. A weight the index packs (8/4-bit)
/// runs as `MatMulNBits` instead.
pub fn linear(g: &mut GraphBuilder, p: &Params, prefix: &str, x: Value, inp: usize, out: usize, bias: bool) -> Result<Value> {
    let y = match p.linear_weight(g, &format!("{prefix}.weight"), out, inp)? {
        LinearWeight::Dense(w) => {
            let wt = g.transpose(w, &[1, 0]);
            g.matmul(x, wt)
        }
        LinearWeight::Packed(w) => g.linear_nbits(x, &w, p.accuracy_level()),
        LinearWeight::Columns(w) => g.linear_dynamic_int8(x, &w),
    };
    if bias {
        let b = p.get(g, &format!("{prefix}.bias"), &[out])?;
        Ok(g.add(y, b))
    } else {
        Ok(y)
    }
}

/// A square 2D convolution with symmetric padding (8-bit weights when the index quantises).
#[allow(clippy::too_many_arguments)]
pub fn conv(
    g: &mut GraphBuilder,
    p: &Params,
    prefix: &str,
    x: Value,
    inp: usize,
    out: usize,
    kernel: usize,
    stride: i64,
    pad: i64,
    bias: bool,
) -> Result<Value> {
    let w = p.conv_weight(g, &format!("{prefix}.weight"), &[out, inp, kernel, kernel], x)?;
    let b = if bias { Some(p.get(g, &format!("{prefix}.bias"), &[out])?) } else { None };
    Ok(g.conv2d(x, w, b, stride, pad))
}

pub fn group_norm(g: &mut GraphBuilder, p: &Params, prefix: &str, x: Value, groups: usize, channels: usize, eps: f32) -> Result<Value> {
    let gamma = p.get(g, &format!("{prefix}.weight"), &[channels])?;
    let beta = p.get(g, &format!("{prefix}.bias"), &[channels])?;
    Ok(g.group_norm(x, groups, channels, gamma, beta, eps))
}

pub fn layer_norm(g: &mut GraphBuilder, p: &Params, prefix: &str, x: Value, channels: usize, eps: f32) -> Result<Value> {
    let gamma = p.get(g, &format!("{prefix}.weight"), &[channels])?;
    let beta = p.get(g, &format!("{prefix}.bias"), &[channels])?;
    Ok(g.layer_norm(x, gamma, beta, eps))
}

/// Scaled dot-product attention over `[B, T, heads*dim]` projections; `mask` is added to the
/// scores (e.g. CLIP's causal mask).
pub fn attention(g: &mut GraphBuilder, q: Value, k: Value, v: Value, heads: usize, dim: usize, mask: Option<Value>) -> Value {
    let (h, d) = (heads as i64, dim as i64);
    let q = g.mul_scalar(q, (dim as f32).powf(-0.5));
    let q = g.reshape_to(q, &[0, 0, h, d]);
    let q = g.transpose(q, &[0, 2, 1, 3]);
    let k = g.reshape_to(k, &[0, 0, h, d]);
    let k = g.transpose(k, &[0, 2, 3, 1]);
    let v = g.reshape_to(v, &[0, 0, h, d]);
    let v = g.transpose(v, &[0, 2, 1, 3]);
    let mut scores = g.matmul(q, k);
    if let Some(m) = mask {
        scores = g.add(scores, m);
    }
    let probs = g.softmax(scores, -1);
    let o = g.matmul(probs, v);
    let o = g.transpose(o, &[0, 2, 1, 3]);
    g.reshape_to(o, &[0, 0, h * d])
}

/// `[B, C, H, W]` → `[B, H*W, C]`.
pub fn to_tokens(g: &mut GraphBuilder, x: Value, channels: usize) -> Value {
    let t = g.reshape_to(x, &[0, channels as i64, -1]);
    g.transpose(t, &[0, 2, 1])
}

/// `[B, H*W, C]` → the shape of `like` (`[B, C, H, W]`).
pub fn from_tokens(g: &mut GraphBuilder, t: Value, like: Value) -> Value {
    let t = g.transpose(t, &[0, 2, 1]);
    let shape = g.shape(like);
    g.reshape(t, shape)
}

/// Sinusoidal embedding of `t` (shape `[N]`) into `[N, dim]`, as diffusers' `Timesteps` with
/// `flip_sin_to_cos` and `downscale_freq_shift`.
pub fn timestep_embedding(g: &mut GraphBuilder, t: Value, dim: usize, flip_sin_to_cos: bool, freq_shift: f32) -> Value {
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| {
            let exponent = -(10000f32.ln()) * i as f32 / (half as f32 - freq_shift);
            exponent.exp()
        })
        .collect();
    let freqs = g.const_f32(&[1, half], freqs);
    let t = g.unsqueeze(t, &[1]);
    let args = g.mul(t, freqs);
    let s = g.sin(args);
    let c = g.cos(args);
    if flip_sin_to_cos { g.concat(&[c, s], -1) } else { g.concat(&[s, c], -1) }
}

/// RMS norm over the last axis with a learnt scale (torch `RMSNorm`, Qwen3's `RMSNorm`):
/// `x / sqrt(mean(x²) + eps) * weight`.
pub fn rms_norm(g: &mut GraphBuilder, p: &Params, prefix: &str, x: Value, channels: usize, eps: f32) -> Result<Value> {
    let w = p.get(g, &format!("{prefix}.weight"), &[channels])?;
    let sq = g.mul(x, x);
    let ms = g.reduce_mean(sq, -1);
    let e = g.scalar(eps);
    let ms = g.add(ms, e);
    let r = g.sqrt(ms);
    let y = g.div(x, r);
    Ok(g.mul(y, w))
}

/// Layer norm over the last axis without a learnt affine part (`elementwise_affine=False`).
pub fn layer_norm_plain(g: &mut GraphBuilder, x: Value, channels: usize, eps: f32) -> Value {
    let ones = g.const_f32(&[channels], vec![1.0; channels]);
    let zeros = g.const_f32(&[channels], vec![0.0; channels]);
    g.layer_norm(x, ones, zeros, eps)
}

/// `silu(x[..., :n]) * x[..., n:]` for the fused gate/up projection of width `2n` (FLUX.2's SwiGLU).
pub fn swiglu_fused(g: &mut GraphBuilder, x: Value, n: usize) -> Value {
    let gate = g.slice(x, -1, 0, n as i64);
    let up = g.slice(x, -1, n as i64, 2 * n as i64);
    let gate = g.silu(gate);
    g.mul(gate, up)
}

/// Scaled dot-product attention of queries `[B, Sq, H, D]` over keys and values `[B, Sk, H, D]`,
/// without a mask; returns `[B, Sq, H*D]`. Runs as ONNX Runtime's fused `MultiHeadAttention`,
/// which never holds the whole `[H, Sq, Sk]` score matrix (FLUX.2 at 1024² would need gigabytes).
pub fn attention_bshd(g: &mut GraphBuilder, q: Value, k: Value, v: Value, heads: usize, dim: usize) -> Value {
    let flat = [0, 0, (heads * dim) as i64];
    let q = g.reshape_to(q, &flat);
    let k = g.reshape_to(k, &flat);
    let v = g.reshape_to(v, &flat);
    g.multi_head_attention(q, k, v, heads)
}
