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
        let a = attention(g, q, k, v, 1, ch, None);
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
    let mut c = Ctx { g: GraphBuilder::new(), p: Params::new(weights, "vae"), groups: cfg.norm_num_groups };
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
    let l = cfg.latent_channels as i64;
    let mean = c.g.slice(x, 1, 0, l);
    let logvar = c.g.slice(x, 1, l, 2 * l);
    Ok(c.g.finish(&[("mean", mean), ("logvar", logvar)]))
}

/// Decoder graph: `latent` `[B, 4, h, w]` (already divided by the scaling factor) → `sample`
/// `[B, 3, 8h, 8w]` in about [-1, 1].
pub fn build_decoder(cfg: &VaeConfig, weights: &TensorIndex) -> Result<Graph> {
    let mut c = Ctx { g: GraphBuilder::new(), p: Params::new(weights, "vae"), groups: cfg.norm_num_groups };
    let z = c.g.input(
        "latent",
        DType::F32,
        vec![Dim::Named("batch"), Dim::Fixed(cfg.latent_channels as i64), Dim::Named("height"), Dim::Named("width")],
    );
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
    x = conv(&mut c.g, &c.p, "decoder.conv_out", x, ch, cfg.out_channels, 3, 1, 1, true)?;
    Ok(c.g.finish(&[("sample", x)]))
}

impl GraphBuilder {
    /// The VAE encoder's asymmetric downsampling conv: pad (0, 1, 0, 1), then 3x3 stride 2.
    fn conv2d_pads_named(&mut self, p: &Params, prefix: &str, x: Value, ch: usize) -> Result<Value> {
        let w = p.get(self, &format!("{prefix}.weight"), &[ch, ch, 3, 3])?;
        let b = p.get(self, &format!("{prefix}.bias"), &[ch])?;
        Ok(self.conv2d_pads(x, w, Some(b), 2, [0, 0, 1, 1]))
    }
}
