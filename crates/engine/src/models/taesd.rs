//! TAESD (`AutoencoderTiny`): a tiny conv-only VAE for fast previews. It works on the
//! pipeline's *scaled* latents directly (its scaling factor is 1).

use std::path::Path;

use serde::Deserialize;

use super::nn::conv;
use crate::error::{EngineError, Result};
use crate::graph::{DType, Dim, Graph, GraphBuilder, Value};
use crate::weights::{Params, TensorIndex};

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct TaesdConfig {
    #[serde(default = "three")]
    pub in_channels: usize,
    #[serde(default = "three")]
    pub out_channels: usize,
    #[serde(default = "channels")]
    pub encoder_block_out_channels: Vec<usize>,
    #[serde(default = "channels")]
    pub decoder_block_out_channels: Vec<usize>,
    #[serde(default = "four")]
    pub latent_channels: usize,
    #[serde(default = "enc_blocks")]
    pub num_encoder_blocks: Vec<usize>,
    #[serde(default = "dec_blocks")]
    pub num_decoder_blocks: Vec<usize>,
    #[serde(default = "two")]
    pub upsampling_scaling_factor: usize,
    #[serde(default = "relu")]
    pub act_fn: String,
}

fn three() -> usize {
    3
}
fn four() -> usize {
    4
}
fn two() -> usize {
    2
}
fn channels() -> Vec<usize> {
    vec![64; 4]
}
fn enc_blocks() -> Vec<usize> {
    vec![1, 3, 3, 3]
}
fn dec_blocks() -> Vec<usize> {
    vec![3, 3, 3, 1]
}
fn relu() -> String {
    "relu".into()
}

impl TaesdConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
        let cfg: Self = serde_json::from_str(&text).map_err(|e| EngineError::bad_config(path, e))?;
        if cfg.act_fn != "relu" {
            return Err(EngineError::bad_config(path, format!("act_fn `{}` is not supported (relu)", cfg.act_fn)));
        }
        if cfg.upsampling_scaling_factor != 2 {
            return Err(EngineError::bad_config(path, "only upsampling_scaling_factor 2 is supported"));
        }
        if cfg.encoder_block_out_channels.len() != cfg.num_encoder_blocks.len()
            || cfg.decoder_block_out_channels.len() != cfg.num_decoder_blocks.len()
        {
            return Err(EngineError::bad_config(path, "block channel and block count lists differ in length"));
        }
        Ok(cfg)
    }
}

/// conv → relu → conv → relu → conv, plus a 1x1 skip when channels change, then relu.
fn block(g: &mut GraphBuilder, p: &Params, pre: &str, x: Value, inp: usize, out: usize) -> Result<Value> {
    let h = conv(g, p, &format!("{pre}.conv.0"), x, inp, out, 3, 1, 1, true)?;
    let h = g.relu(h);
    let h = conv(g, p, &format!("{pre}.conv.2"), h, out, out, 3, 1, 1, true)?;
    let h = g.relu(h);
    let h = conv(g, p, &format!("{pre}.conv.4"), h, out, out, 3, 1, 1, true)?;
    let skip = if inp != out { conv(g, p, &format!("{pre}.skip"), x, inp, out, 1, 1, 0, false)? } else { x };
    let s = g.add(h, skip);
    Ok(g.relu(s))
}

/// Encoder: `sample` `[B, 3, H, W]` in [-1, 1] → `latent` `[B, 4, H/8, W/8]` (scaled latents).
pub fn build_encoder(cfg: &TaesdConfig, weights: &TensorIndex) -> Result<Graph> {
    let p = Params::new(weights, "taesd");
    let mut g = GraphBuilder::new();
    let x = g.input(
        "sample",
        DType::F32,
        vec![Dim::Named("batch"), Dim::Fixed(cfg.in_channels as i64), Dim::Named("height"), Dim::Named("width")],
    );
    // [-1, 1] → [0, 1]
    let one = g.scalar(1.0);
    let x = g.add(x, one);
    let mut x = g.mul_scalar(x, 0.5);
    let mut idx = 0;
    let mut ch = cfg.in_channels;
    for (i, (&n, &out)) in cfg.num_encoder_blocks.iter().zip(&cfg.encoder_block_out_channels).enumerate() {
        x = if i == 0 {
            conv(&mut g, &p, &format!("encoder.layers.{idx}"), x, ch, out, 3, 1, 1, true)?
        } else {
            conv(&mut g, &p, &format!("encoder.layers.{idx}"), x, ch, out, 3, 2, 1, false)?
        };
        ch = out;
        idx += 1;
        for _ in 0..n {
            x = block(&mut g, &p, &format!("encoder.layers.{idx}"), x, ch, out)?;
            idx += 1;
        }
    }
    x = conv(&mut g, &p, &format!("encoder.layers.{idx}"), x, ch, cfg.latent_channels, 3, 1, 1, true)?;
    Ok(g.finish(&[("latent", x)]))
}

/// Decoder: `latent` `[B, 4, h, w]` (scaled latents) → `sample` `[B, 3, 8h, 8w]` in [-1, 1].
pub fn build_decoder(cfg: &TaesdConfig, weights: &TensorIndex) -> Result<Graph> {
    let p = Params::new(weights, "taesd");
    let mut g = GraphBuilder::new();
    let z = g.input(
        "latent",
        DType::F32,
        vec![Dim::Named("batch"), Dim::Fixed(cfg.latent_channels as i64), Dim::Named("height"), Dim::Named("width")],
    );
    // Soft clamp: tanh(z / 3) * 3.
    let z = g.mul_scalar(z, 1.0 / 3.0);
    let z = g.tanh(z);
    let z = g.mul_scalar(z, 3.0);
    let chans = &cfg.decoder_block_out_channels;
    let mut x = conv(&mut g, &p, "decoder.layers.0", z, cfg.latent_channels, chans[0], 3, 1, 1, true)?;
    x = g.relu(x);
    let mut idx = 2;
    let mut ch = chans[0];
    let last = chans.len() - 1;
    for (i, (&n, &out)) in cfg.num_decoder_blocks.iter().zip(chans).enumerate() {
        for _ in 0..n {
            x = block(&mut g, &p, &format!("decoder.layers.{idx}"), x, ch, out)?;
            ch = out;
            idx += 1;
        }
        let final_block = i == last;
        if !final_block {
            x = g.upsample_nearest2x(x);
            idx += 1;
        }
        let conv_out = if final_block { cfg.out_channels } else { out };
        x = conv(&mut g, &p, &format!("decoder.layers.{idx}"), x, ch, conv_out, 3, 1, 1, final_block)?;
        ch = conv_out;
        idx += 1;
    }
    // [0, 1] → [-1, 1]
    let x = g.mul_scalar(x, 2.0);
    let one = g.scalar(1.0);
    let x = g.sub(x, one);
    Ok(g.finish(&[("sample", x)]))
}
