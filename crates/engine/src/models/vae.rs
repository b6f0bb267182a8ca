//! `AutoencoderKL`: the SD/SDXL VAE, as two graphs (encode to the posterior's mean and
//! log-variance; decode latents to pixels in [-1, 1]).

use std::path::Path;

use serde::Deserialize;

use super::nn::{attention, conv, from_tokens, group_norm, linear, to_tokens};
use crate::error::{EngineError, Result};
use crate::graph::{DType, Dim, Graph, GraphBuilder, Value};
use crate::weights::{Params, TensorIndex};

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct VaeConfig {
    #[serde(default = "three")]
    pub in_channels: usize,
    #[serde(default = "three")]
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    #[serde(default = "one")]
    pub layers_per_block: usize,
    #[serde(default = "four")]
    pub latent_channels: usize,
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    #[serde(default = "scale")]
    pub scaling_factor: f32,
    #[serde(default)]
    pub shift_factor: Option<f32>,
    #[serde(default = "yes")]
    pub use_quant_conv: bool,
    #[serde(default = "yes")]
    pub use_post_quant_conv: bool,
    #[serde(default = "yes")]
    pub mid_block_add_attention: bool,
    /// `AutoencoderKLFlux2`: the latents are patchified 2x2 and normalised by the batch-norm
    /// statistics `bn.running_mean` / `bn.running_var` (with this epsilon).
    #[serde(default)]
    pub batch_norm_eps: Option<f32>,
    #[serde(default)]
    pub patch_size: Option<Vec<usize>>,
}

fn three() -> usize {
    3
}
fn one() -> usize {
    1
}
fn four() -> usize {
    4
}
fn thirty_two() -> usize {
    32
}
fn scale() -> f32 {
    0.18215
}
fn yes() -> bool {
    true
}

impl VaeConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
        Self::from_json(&text).map_err(|e| EngineError::bad_config(path, e))
    }
    /// Parses the text of a diffusers `vae/config.json`.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let cfg: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if cfg.block_out_channels.iter().any(|c| c % cfg.norm_num_groups != 0) {
            return Err("block_out_channels must be multiples of norm_num_groups".into());
        }
        Ok(cfg)
    }
    /// The side of the square patch folded into channels after encoding (`AutoencoderKLFlux2`).
    pub fn patch(&self) -> Option<usize> {
        self.batch_norm_eps.map(|_| self.patch_size.as_ref().and_then(|p| p.first().copied()).unwrap_or(2))
    }
    /// Pixels per latent cell along each axis.
    pub fn scale_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

const EPS: f32 = 1e-6;

struct Ctx<'a> {
    g: GraphBuilder,
    p: Params<'a>,
    groups: usize,
    /// Mid-block attention as ONNX Runtime's fused kernel (no `[HW, HW]` score matrix: 1 GiB
    /// for a 1024² decode). The FLUX.2 VAE uses it; the SD graphs keep plain attention.
    fused_attention: bool,
}

impl Ctx<'_> {
    fn resnet(&mut self, pre: &str, x: Value, inp: usize, out: usize) -> Result<Value> {
        let g = &mut self.g;
        let h = group_norm(g, &self.p, &format!("{pre}.norm1"), x, self.groups, inp, EPS)?;
        let h = g.silu(h);
        let h = conv(g, &self.p, &format!("{pre}.conv1"), h, inp, out, 3, 1, 1, true)?;
        let h = group_norm(g, &self.p, &format!("{pre}.norm2"), h, self.groups, out, EPS)?;
        let h = g.silu(h);
        let h = conv(g, &self.p, &format!("{pre}.conv2"), h, out, out, 3, 1, 1, true)?;
        let skip = if inp != out { conv(g, &self.p, &format!("{pre}.conv_shortcut"), x, inp, out, 1, 1, 0, true)? } else { x };
        Ok(g.add(skip, h))
    }

    /// Single-head self-attention over all pixels, with its own group norm and residual.
    fn attention(&mut self, pre: &str, x: Value, ch: usize) -> Result<Value> {
        let g = &mut self.g;
        let h = group_norm(g, &self.p, &format!("{pre}.group_norm"), x, self.groups, ch, EPS)?;
        let t = to_tokens(g, h, ch);
        let q = linear(g, &self.p, &format!("{pre}.to_q"), t, ch, ch, true)?;
        let k = linear(g, &self.p, &format!("{pre}.to_k"), t, ch, ch, true)?;
        let v = linear(g, &self.p, &format!("{pre}.to_v"), t, ch, ch, true)?;
        let a = if self.fused_attention { g.multi_head_attention(q, k, v, 1) } else { attention(g, q, k, v, 1, ch, None) };
        let a = linear(g, &self.p, &format!("{pre}.to_out.0"), a, ch, ch, true)?;
        let a = from_tokens(g, a, x);
        Ok(g.add(a, x))
    }

    fn mid(&mut self, pre: &str, x: Value, ch: usize, attn: bool) -> Result<Value> {
        let mut x = self.resnet(&format!("{pre}.resnets.0"), x, ch, ch)?;
        if attn {
            x = self.attention(&format!("{pre}.attentions.0"), x, ch)?;
        }
        self.resnet(&format!("{pre}.resnets.1"), x, ch, ch)
    }
}

/// Encoder graph: `sample` `[B, 3, H, W]` in [-1, 1] → `mean`, `logvar` `[B, 4, H/8, W/8]`.
pub fn build_encoder(cfg: &VaeConfig, weights: &TensorIndex) -> Result<Graph> {
    let mut c = Ctx { g: GraphBuilder::new(), p: Params::new(weights, "vae"), groups: cfg.norm_num_groups, fused_attention: false };
    let x = encode_moments(&mut c, cfg)?;
    let l = cfg.latent_channels as i64;
    let mean = c.g.slice(x, 1, 0, l);
    let logvar = c.g.slice(x, 1, l, 2 * l);
    Ok(c.g.finish(&[("mean", mean), ("logvar", logvar)]))
}

/// The encoder up to the posterior's moments `[B, 2 * latent_channels, H/8, W/8]`.
fn encode_moments(c: &mut Ctx, cfg: &VaeConfig) -> Result<Value> {
    let x = c.g.input(
        "sample",
        DType::F32,
        vec![Dim::Named("batch"), Dim::Fixed(cfg.in_channels as i64), Dim::Named("height"), Dim::Named("width")],
    );
    let chans = &cfg.block_out_channels;
    let mut x = conv(&mut c.g, &c.p, "encoder.conv_in", x, cfg.in_channels, chans[0], 3, 1, 1, true)?;
    let mut ch = chans[0];
    for (i, &out) in chans.iter().enumerate() {
        for j in 0..cfg.layers_per_block {
            x = c.resnet(&format!("encoder.down_blocks.{i}.resnets.{j}"), x, ch, out)?;
            ch = out;
        }
        if i + 1 < chans.len() {
            // diffusers pads right/bottom by one, then a stride-2 conv without padding.
            x = c.g.conv2d_pads_named(&c.p, &format!("encoder.down_blocks.{i}.downsamplers.0.conv"), x, ch)?;
        }
    }
    x = c.mid("encoder.mid_block", x, ch, cfg.mid_block_add_attention)?;
    x = group_norm(&mut c.g, &c.p, "encoder.conv_norm_out", x, cfg.norm_num_groups, ch, EPS)?;
    x = c.g.silu(x);
    let l2 = 2 * cfg.latent_channels;
    x = conv(&mut c.g, &c.p, "encoder.conv_out", x, ch, l2, 3, 1, 1, true)?;
    if cfg.use_quant_conv {
        x = conv(&mut c.g, &c.p, "quant_conv", x, l2, l2, 1, 1, 0, true)?;
    }
    Ok(x)
}

/// Decoder graph: `latent` `[B, 4, h, w]` (already divided by the scaling factor) → `sample`
/// `[B, 3, 8h, 8w]` in about [-1, 1].
pub fn build_decoder(cfg: &VaeConfig, weights: &TensorIndex) -> Result<Graph> {
    let mut c = Ctx { g: GraphBuilder::new(), p: Params::new(weights, "vae"), groups: cfg.norm_num_groups, fused_attention: false };
    let z = c.g.input(
        "latent",
        DType::F32,
        vec![Dim::Named("batch"), Dim::Fixed(cfg.latent_channels as i64), Dim::Named("height"), Dim::Named("width")],
    );
    let x = decode_latent(&mut c, cfg, z)?;
    Ok(c.g.finish(&[("sample", x)]))
}

/// The decoder from latents `[B, latent_channels, h, w]` to pixels.
fn decode_latent(c: &mut Ctx, cfg: &VaeConfig, z: Value) -> Result<Value> {
    let l = cfg.latent_channels;
    let mut x = if cfg.use_post_quant_conv { conv(&mut c.g, &c.p, "post_quant_conv", z, l, l, 1, 1, 0, true)? } else { z };
    let chans: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
    let mut ch = chans[0];
    x = conv(&mut c.g, &c.p, "decoder.conv_in", x, l, ch, 3, 1, 1, true)?;
    x = c.mid("decoder.mid_block", x, ch, cfg.mid_block_add_attention)?;
    for (i, &out) in chans.iter().enumerate() {
        for j in 0..=cfg.layers_per_block {
            x = c.resnet(&format!("decoder.up_blocks.{i}.resnets.{j}"), x, ch, out)?;
            ch = out;
        }
        if i + 1 < chans.len() {
            x = c.g.upsample_nearest2x(x);
            x = conv(&mut c.g, &c.p, &format!("decoder.up_blocks.{i}.upsamplers.0.conv"), x, ch, ch, 3, 1, 1, true)?;
        }
    }
    x = group_norm(&mut c.g, &c.p, "decoder.conv_norm_out", x, cfg.norm_num_groups, ch, EPS)?;
    x = c.g.silu(x);
    conv(&mut c.g, &c.p, "decoder.conv_out", x, ch, cfg.out_channels, 3, 1, 1, true)
}

/// `AutoencoderKLFlux2` encoder: `sample` `[B, 3, H, W]` in [-1, 1] → `latent`
/// `[B, 4 * latent_channels, H/16, W/16]`, the posterior's mode patchified 2x2 (channel
/// `c * 4 + dy * 2 + dx`) and normalised by the batch-norm statistics, as
/// `Flux2KleinPipeline._encode_vae_image` makes reference latents.
pub fn build_flux2_encoder(cfg: &VaeConfig, weights: &TensorIndex) -> Result<Graph> {
    let (patch, eps) = flux2_patch(cfg)?;
    let mut c = Ctx { g: GraphBuilder::new(), p: Params::new(weights, "vae"), groups: cfg.norm_num_groups, fused_attention: true };
    let x = encode_moments(&mut c, cfg)?;
    let mean = c.g.slice(x, 1, 0, cfg.latent_channels as i64);
    let packed = c.g.space_to_depth(mean, patch as i64);
    let order = patch_order(cfg.latent_channels, patch * patch, false);
    let order = c.g.const_i64(&order);
    let packed = c.g.gather(packed, order, 1);
    let (bn_mean, bn_std) = bn_stats(&mut c, cfg.latent_channels * patch * patch, eps)?;
    let centred = c.g.sub(packed, bn_mean);
    let out = c.g.div(centred, bn_std);
    Ok(c.g.finish(&[("latent", out)]))
}

/// `AutoencoderKLFlux2` decoder: normalised patchified `latent` `[B, 4 * latent_channels, h, w]` →
/// `sample` `[B, 3, 16h, 16w]` (un-normalise, unpatchify, decode).
pub fn build_flux2_decoder(cfg: &VaeConfig, weights: &TensorIndex) -> Result<Graph> {
    let (patch, eps) = flux2_patch(cfg)?;
    let mut c = Ctx { g: GraphBuilder::new(), p: Params::new(weights, "vae"), groups: cfg.norm_num_groups, fused_attention: true };
    let channels = cfg.latent_channels * patch * patch;
    let z =
        c.g.input("latent", DType::F32, vec![Dim::Named("batch"), Dim::Fixed(channels as i64), Dim::Named("height"), Dim::Named("width")]);
    let (bn_mean, bn_std) = bn_stats(&mut c, channels, eps)?;
    let z = c.g.mul(z, bn_std);
    let z = c.g.add(z, bn_mean);
    let order = patch_order(cfg.latent_channels, patch * patch, true);
    let order = c.g.const_i64(&order);
    let z = c.g.gather(z, order, 1);
    let z = c.g.depth_to_space(z, patch as i64);
    let x = decode_latent(&mut c, cfg, z)?;
    Ok(c.g.finish(&[("sample", x)]))
}

fn flux2_patch(cfg: &VaeConfig) -> Result<(usize, f32)> {
    match (cfg.patch(), cfg.batch_norm_eps) {
        (Some(p), Some(eps)) if p > 0 => Ok((p, eps)),
        _ => Err(EngineError::Unsupported("this VAE has no batch-norm statistics (not an AutoencoderKLFlux2)".into())),
    }
}

/// Channel permutation between ONNX's space-to-depth order (`k * C + c`, `k` the position in the
/// patch) and diffusers' patchify order (`c * K + k`): `out[c * K + k] = in[k * C + c]`, or the
/// inverse.
fn patch_order(channels: usize, k: usize, inverse: bool) -> Vec<i64> {
    let mut order = vec![0i64; channels * k];
    for c in 0..channels {
        for j in 0..k {
            let (diffusers, onnx) = (c * k + j, j * channels + c);
            if inverse {
                order[onnx] = diffusers as i64;
            } else {
                order[diffusers] = onnx as i64;
            }
        }
    }
    order
}

/// `bn.running_mean` and `sqrt(bn.running_var + eps)`, shaped `[C, 1, 1]`.
fn bn_stats(c: &mut Ctx, channels: usize, eps: f32) -> Result<(Value, Value)> {
    let mean = c.p.get(&mut c.g, "bn.running_mean", &[channels, 1, 1])?;
    let var = c.p.get(&mut c.g, "bn.running_var", &[channels, 1, 1])?;
    let e = c.g.scalar(eps);
    let var = c.g.add(var, e);
    Ok((mean, c.g.sqrt(var)))
}

impl GraphBuilder {
    /// The VAE encoder's asymmetric downsampling conv: pad (0, 1, 0, 1), then 3x3 stride 2.
    fn conv2d_pads_named(&mut self, p: &Params, prefix: &str, x: Value, ch: usize) -> Result<Value> {
        let w = p.get(self, &format!("{prefix}.weight"), &[ch, ch, 3, 3])?;
        let b = p.get(self, &format!("{prefix}.bias"), &[ch])?;
        Ok(self.conv2d_pads(x, w, Some(b), 2, [0, 0, 1, 1]))
    }
}
