//! A small `AutoencoderKL` (diffusers names): the encoder, the decoder and the KL term.

use candle_core::{Result, Tensor};

use crate::config::VaeConfig;
use crate::nn::{Conv2d, GroupNorm, Linear, Store, attention, from_tokens, to_tokens};

const EPS: f64 = 1e-6;

struct Resnet {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl Resnet {
    fn new(s: &mut Store, p: &str, groups: usize, inp: usize, out: usize) -> Result<Self> {
        Ok(Self {
            norm1: GroupNorm::new(s, &format!("{p}.norm1"), groups, inp, EPS)?,
            conv1: Conv2d::new(s, &format!("{p}.conv1"), inp, out, 3, 1, 1)?,
            norm2: GroupNorm::new(s, &format!("{p}.norm2"), groups, out, EPS)?,
            conv2: Conv2d::new(s, &format!("{p}.conv2"), out, out, 3, 1, 1)?,
            shortcut: if inp != out { Some(Conv2d::new(s, &format!("{p}.conv_shortcut"), inp, out, 1, 1, 0)?) } else { None },
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        let skip = match &self.shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        skip + h
    }
}

struct SelfAttention {
    norm: GroupNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
}

impl SelfAttention {
    fn new(s: &mut Store, p: &str, groups: usize, ch: usize) -> Result<Self> {
        Ok(Self {
            norm: GroupNorm::new(s, &format!("{p}.group_norm"), groups, ch, EPS)?,
            q: Linear::new(s, &format!("{p}.to_q"), ch, ch, true)?,
            k: Linear::new(s, &format!("{p}.to_k"), ch, ch, true)?,
            v: Linear::new(s, &format!("{p}.to_v"), ch, ch, true)?,
            out: Linear::new(s, &format!("{p}.to_out.0"), ch, ch, true)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let t = to_tokens(&self.norm.forward(x)?)?;
        let a = attention(&self.q.forward(&t)?, &self.k.forward(&t)?, &self.v.forward(&t)?, 1, None)?;
        x + from_tokens(&self.out.forward(&a)?, h, w)?
    }
}

struct Mid {
    r0: Resnet,
    /// diffusers' `mid_block_add_attention`.
    attn: Option<SelfAttention>,
    r1: Resnet,
}

impl Mid {
    fn new(s: &mut Store, p: &str, groups: usize, ch: usize, attention: bool) -> Result<Self> {
        let r0 = Resnet::new(s, &format!("{p}.resnets.0"), groups, ch, ch)?;
        let attn = if attention { Some(SelfAttention::new(s, &format!("{p}.attentions.0"), groups, ch)?) } else { None };
        Ok(Self { r0, attn, r1: Resnet::new(s, &format!("{p}.resnets.1"), groups, ch, ch)? })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.r0.forward(x)?;
        let x = match &self.attn {
            Some(a) => a.forward(&x)?,
            None => x,
        };
        self.r1.forward(&x)
    }
}

pub struct Vae {
    enc_in: Conv2d,
    enc_blocks: Vec<(Vec<Resnet>, Option<Conv2d>)>,
    enc_mid: Mid,
    enc_norm: GroupNorm,
    enc_out: Conv2d,
    quant: Conv2d,
    post_quant: Conv2d,
    dec_in: Conv2d,
    dec_mid: Mid,
    dec_blocks: Vec<(Vec<Resnet>, Option<Conv2d>)>,
    dec_norm: GroupNorm,
    dec_out: Conv2d,
    latent_channels: usize,
}

impl Vae {
    pub fn new(s: &mut Store, cfg: &VaeConfig) -> Result<Self> {
        let g = cfg.norm_num_groups;
        let chans = &cfg.block_out_channels;
        let l = cfg.latent_channels;
        let enc_in = Conv2d::new(s, "encoder.conv_in", 3, chans[0], 3, 1, 1)?;
        let mut enc_blocks = Vec::new();
        let mut ch = chans[0];
        for (i, &out) in chans.iter().enumerate() {
            let mut resnets = Vec::new();
            for j in 0..cfg.layers_per_block {
                resnets.push(Resnet::new(s, &format!("encoder.down_blocks.{i}.resnets.{j}"), g, ch, out)?);
                ch = out;
            }
            // diffusers pads (0, 1, 0, 1) and convolves with stride 2, padding 0.
            let down = if i + 1 < chans.len() {
                Some(Conv2d::new(s, &format!("encoder.down_blocks.{i}.downsamplers.0.conv"), ch, ch, 3, 2, 0)?)
            } else {
                None
            };
            enc_blocks.push((resnets, down));
        }
        let enc_mid = Mid::new(s, "encoder.mid_block", g, ch, cfg.mid_attention)?;
        let enc_norm = GroupNorm::new(s, "encoder.conv_norm_out", g, ch, EPS)?;
        let enc_out = Conv2d::new(s, "encoder.conv_out", ch, 2 * l, 3, 1, 1)?;
        // The log-variance starts at -8 (σ ≈ 0.02), not at 0: with σ = 1 the decoder first sees
        // mostly noise and the tiny KL weight leaves it there for thousands of steps.
        let mut quant_bias = vec![0f32; l];
        quant_bias.extend(std::iter::repeat_n(-8f32, l));
        s.preset("quant_conv.bias", Tensor::from_vec(quant_bias, 2 * l, &candle_core::Device::Cpu)?)?;
        let quant = Conv2d::new(s, "quant_conv", 2 * l, 2 * l, 1, 1, 0)?;
        let post_quant = Conv2d::new(s, "post_quant_conv", l, l, 1, 1, 0)?;
        let rev: Vec<usize> = chans.iter().rev().copied().collect();
        let mut ch = rev[0];
        let dec_in = Conv2d::new(s, "decoder.conv_in", l, ch, 3, 1, 1)?;
        let dec_mid = Mid::new(s, "decoder.mid_block", g, ch, cfg.mid_attention)?;
        let mut dec_blocks = Vec::new();
        for (i, &out) in rev.iter().enumerate() {
            let mut resnets = Vec::new();
            for j in 0..=cfg.layers_per_block {
                resnets.push(Resnet::new(s, &format!("decoder.up_blocks.{i}.resnets.{j}"), g, ch, out)?);
                ch = out;
            }
            let up = if i + 1 < rev.len() {
                Some(Conv2d::new(s, &format!("decoder.up_blocks.{i}.upsamplers.0.conv"), ch, ch, 3, 1, 1)?)
            } else {
                None
            };
            dec_blocks.push((resnets, up));
        }
        let dec_norm = GroupNorm::new(s, "decoder.conv_norm_out", g, ch, EPS)?;
        let dec_out = Conv2d::new(s, "decoder.conv_out", ch, 3, 3, 1, 1)?;
        Ok(Self {
            enc_in,
            enc_blocks,
            enc_mid,
            enc_norm,
            enc_out,
            quant,
            post_quant,
            dec_in,
            dec_mid,
            dec_blocks,
            dec_norm,
            dec_out,
            latent_channels: l,
        })
    }

    /// Pixels in [-1, 1] `[B, 3, H, W]` → (mean, logvar) of the latent distribution.
    pub fn encode(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut x = self.enc_in.forward(x)?;
        for (resnets, down) in &self.enc_blocks {
            for r in resnets {
                x = r.forward(&x)?;
            }
            if let Some(d) = down {
                x = d.forward_padded(&x, 0, 1)?;
            }
        }
        x = self.enc_mid.forward(&x)?;
        x = self.enc_out.forward(&self.enc_norm.forward_silu(&x)?)?;
        let moments = self.quant.forward(&x)?;
        let l = self.latent_channels;
        // diffusers clamps the log-variance to [-30, 20].
        Ok((moments.narrow(1, 0, l)?, moments.narrow(1, l, l)?.clamp(-30.0, 20.0)?))
    }

    /// Latents (unscaled) `[B, L, h, w]` → pixels in about [-1, 1].
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let mut x = self.dec_in.forward(&self.post_quant.forward(z)?)?;
        x = self.dec_mid.forward(&x)?;
        for (resnets, up) in &self.dec_blocks {
            for r in resnets {
                x = r.forward(&x)?;
            }
            if let Some(u) = up {
                x = u.forward(&crate::nn::upsample_nearest_2x(&x)?)?;
            }
        }
        self.dec_out.forward(&self.dec_norm.forward_silu(&x)?)
    }
}
