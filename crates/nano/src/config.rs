//! plantain-nano's architecture, and the diffusers / transformers config files that describe it.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate_size: usize,
    pub max_positions: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    /// Per down level: cross-attention transformers or not (mirrored on the way up).
    pub attention: Vec<bool>,
    pub layers_per_block: usize,
    pub heads: usize,
    pub cross_attention_dim: usize,
    pub norm_num_groups: usize,
    /// Latent side of the native square (diffusers' `sample_size`).
    pub sample_size: usize,
    /// Heads of diffusers' `text` additional embedding (the prompt attention-pooled into the
    /// time embedding: a global path for whole-picture attributes like the background); none
    /// without it.
    #[serde(default)]
    pub text_pool_heads: Option<usize>,
}

impl UNetConfig {
    pub fn time_embed_dim(&self) -> usize {
        self.block_out_channels[0] * 4
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VaeConfig {
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    /// Pixel side of the native square.
    pub sample_size: usize,
    /// Self-attention in the mid blocks (diffusers' `mid_block_add_attention`). Models trained
    /// before this field existed had it.
    #[serde(default = "yes")]
    pub mid_attention: bool,
}

fn yes() -> bool {
    true
}

impl VaeConfig {
    pub fn scale_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NanoConfig {
    pub text: TextConfig,
    pub unet: UNetConfig,
    pub vae: VaeConfig,
}

impl NanoConfig {
    /// The shipped model: 64 px native, latents 16x16x8 (8 channels rather than SD's 4: a
    /// factor-4 autoencoder with 4 channels keeps small shapes as blobs for far longer than the
    /// CPU budget allows). Cross-attention transformers at 8x8 and 4x4 (the eleventh run; the
    /// eighth had them at 8x8 only): at 4x4 every cell's receptive field spans the picture, so
    /// it knows where it is (the convolutions' zero padding is the UNet's only sense of
    /// position), and 16 tokens cost next to nothing; at 16x16 they took 40% of a training step
    /// (256-token self-attention with 8-wide heads).
    pub fn standard() -> Self {
        Self {
            text: TextConfig { vocab_size: 49408, hidden_size: 128, layers: 3, heads: 4, intermediate_size: 512, max_positions: 77 },
            unet: UNetConfig {
                in_channels: 8,
                out_channels: 8,
                block_out_channels: vec![32, 64, 64],
                attention: vec![false, true, true],
                layers_per_block: 1,
                heads: 4,
                cross_attention_dim: 128,
                norm_num_groups: 16,
                sample_size: 16,
                text_pool_heads: Some(4),
            },
            vae: VaeConfig {
                block_out_channels: vec![16, 32, 32],
                layers_per_block: 1,
                latent_channels: 8,
                norm_num_groups: 8,
                sample_size: 64,
                mid_attention: true,
            },
        }
    }

    /// The standard model on a factor-2 autoencoder: latents 32x32x4 instead of 16x16x8, and a
    /// UNet with a fourth level (32, 16, 8, 4; cross-attention at 8x8 and 4x4 as in the
    /// standard model). At factor 4 a 10-17 px object covers 2.5-4 latent cells, so its shape
    /// is a code in a few cells' channels; at factor 2 it covers 5-8 cells a side and the shape
    /// is a pattern in space. The 32x32 level has 16 channels, so its convolutions cost what the
    /// 16x16 level's do. Measured (BENCHMARKS.md, thirteenth run): it keeps shapes far better
    /// from a noised rendering, but from noise it draws them no better and learns the other
    /// attributes more slowly in the same steps, so it is not the default.
    pub fn fine_latents() -> Self {
        let standard = Self::standard();
        Self {
            text: standard.text,
            unet: UNetConfig {
                in_channels: 4,
                out_channels: 4,
                block_out_channels: vec![16, 32, 64, 64],
                attention: vec![false, false, true, true],
                norm_num_groups: 8,
                sample_size: 32,
                ..standard.unet
            },
            // Self-attention over 32x32 latents (1,024 tokens) made an autoencoder step 1.6x
            // dearer; a factor-2 latent is nearly a picture and needs no global mixing.
            vae: VaeConfig { block_out_channels: vec![16, 32], latent_channels: 4, mid_attention: false, ..standard.vae },
        }
    }

    /// A model small enough for unit tests (seconds per step on one core).
    pub fn tiny() -> Self {
        Self {
            text: TextConfig { vocab_size: 49408, hidden_size: 16, layers: 1, heads: 2, intermediate_size: 32, max_positions: 77 },
            unet: UNetConfig {
                in_channels: 4,
                out_channels: 4,
                block_out_channels: vec![16, 32],
                attention: vec![true, true],
                layers_per_block: 1,
                heads: 2,
                cross_attention_dim: 16,
                norm_num_groups: 8,
                sample_size: 8,
                text_pool_heads: Some(2),
            },
            vae: VaeConfig {
                block_out_channels: vec![8, 16],
                layers_per_block: 1,
                latent_channels: 4,
                norm_num_groups: 4,
                sample_size: 16,
                mid_attention: true,
            },
        }
    }

    /// Latent side of each UNet level (16, 8, 4 for the standard model).
    pub fn level_sides(&self) -> Vec<usize> {
        (0..self.unet.block_out_channels.len()).map(|i| self.unet.sample_size >> i).collect()
    }

    /// The UNet with cross-attention transformers at the levels whose latent sides are given
    /// (e.g. `[8]` for the eighth run's UNet, `[16, 8, 4]` for attention everywhere).
    pub fn with_attention_at(mut self, sides: &[usize]) -> Result<Self, String> {
        let levels = self.level_sides();
        if let Some(bad) = sides.iter().find(|s| !levels.contains(s)) {
            return Err(format!("the UNet has no {bad}x{bad} level (its levels: {levels:?})"));
        }
        self.unet.attention = levels.iter().map(|l| sides.contains(l)).collect();
        Ok(self)
    }

    /// The latent sides of the levels with cross-attention.
    pub fn attention_sides(&self) -> Vec<usize> {
        self.level_sides().into_iter().zip(&self.unet.attention).filter(|(_, a)| **a).map(|(s, _)| s).collect()
    }

    /// Pixel side of the native square.
    pub fn native_resolution(&self) -> usize {
        self.unet.sample_size * self.vae.scale_factor()
    }

    /// Canvas sides must be multiples of this (VAE factor × UNet down-sampling).
    pub fn pixel_multiple(&self) -> usize {
        self.vae.scale_factor() << (self.unet.block_out_channels.len() - 1)
    }
}

const DIFFUSERS_VERSION: &str = "0.42.1";

pub fn model_index_json() -> Value {
    json!({
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": DIFFUSERS_VERSION,
        "feature_extractor": [null, null],
        "image_encoder": [null, null],
        "requires_safety_checker": false,
        "safety_checker": [null, null],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]
    })
}

pub fn text_encoder_json(c: &TextConfig) -> Value {
    json!({
        "architectures": ["CLIPTextModel"],
        "attention_dropout": 0.0,
        "bos_token_id": 49406,
        "dropout": 0.0,
        "eos_token_id": 49407,
        "hidden_act": "quick_gelu",
        "hidden_size": c.hidden_size,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": c.intermediate_size,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": c.max_positions,
        "model_type": "clip_text_model",
        "num_attention_heads": c.heads,
        "num_hidden_layers": c.layers,
        "pad_token_id": 1,
        "projection_dim": c.hidden_size,
        "torch_dtype": "float32",
        "vocab_size": c.vocab_size
    })
}

pub fn unet_json(c: &UNetConfig) -> Value {
    let n = c.block_out_channels.len();
    let down: Vec<&str> = c.attention.iter().map(|&a| if a { "CrossAttnDownBlock2D" } else { "DownBlock2D" }).collect();
    let up: Vec<&str> = (0..n).map(|i| if c.attention[n - 1 - i] { "CrossAttnUpBlock2D" } else { "UpBlock2D" }).collect();
    let mut v = json!({
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": DIFFUSERS_VERSION,
        "act_fn": "silu",
        "attention_head_dim": c.heads,
        "block_out_channels": c.block_out_channels,
        "center_input_sample": false,
        "cross_attention_dim": c.cross_attention_dim,
        "down_block_types": down,
        "downsample_padding": 1,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "in_channels": c.in_channels,
        "layers_per_block": c.layers_per_block,
        "mid_block_scale_factor": 1,
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "norm_eps": 1e-05,
        "norm_num_groups": c.norm_num_groups,
        "out_channels": c.out_channels,
        "sample_size": c.sample_size,
        "transformer_layers_per_block": 1,
        "up_block_types": up,
        "upcast_attention": false,
        "use_linear_projection": false
    });
    if let Some(heads) = c.text_pool_heads {
        v["addition_embed_type"] = json!("text");
        v["addition_embed_type_num_heads"] = json!(heads);
    }
    v
}

pub fn vae_json(c: &VaeConfig, scaling_factor: f32) -> Value {
    let n = c.block_out_channels.len();
    json!({
        "_class_name": "AutoencoderKL",
        "_diffusers_version": DIFFUSERS_VERSION,
        "act_fn": "silu",
        "block_out_channels": c.block_out_channels,
        "down_block_types": vec!["DownEncoderBlock2D"; n],
        "force_upcast": false,
        "in_channels": 3,
        "latent_channels": c.latent_channels,
        "layers_per_block": c.layers_per_block,
        "mid_block_add_attention": c.mid_attention,
        "norm_num_groups": c.norm_num_groups,
        "out_channels": 3,
        "sample_size": c.sample_size,
        "scaling_factor": scaling_factor,
        "up_block_types": vec!["UpDecoderBlock2D"; n],
        "use_post_quant_conv": true,
        "use_quant_conv": true
    })
}

/// The noise schedule the UNet is trained on: SD's (scaled-linear betas, ε-prediction), so
/// every standard sampler applies.
/// `v_prediction`: the UNet predicts v (α·ε − σ·x0) rather than ε. `zero_terminal_snr`: the
/// betas are rescaled so the last step is pure noise (diffusers' `rescale_betas_zero_snr`).
pub fn scheduler_json(v_prediction: bool, zero_terminal_snr: bool) -> Value {
    let mut v = json!({
        "_class_name": "EulerDiscreteScheduler",
        "_diffusers_version": DIFFUSERS_VERSION,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "interpolation_type": "linear",
        "num_train_timesteps": 1000,
        "prediction_type": if v_prediction { "v_prediction" } else { "epsilon" },
        "steps_offset": 1,
        "timestep_spacing": "trailing",
        "use_karras_sigmas": false
    });
    if zero_terminal_snr {
        v["rescale_betas_zero_snr"] = json!(true);
    }
    v
}

/// ᾱ_t of [`scheduler_json`]'s schedule, t = 0..1000. With `zero_terminal_snr`, √ᾱ is
/// shifted and scaled so that it starts where it did and ends at exactly 0 (Lin et al. 2024,
/// diffusers' `rescale_zero_terminal_snr`): SD's schedule leaves √ᾱ ≈ 0.07 at the last step,
/// and on 16x16 latents that still shows a picture's mean colour through the noise (measured:
/// the model read a red or blue background off pure-noise-level inputs and ignored the
/// prompt), so at sampling the colours came from the seed.
pub fn alphas_cumprod(zero_terminal_snr: bool) -> Vec<f64> {
    let (start, end, n) = (0.00085f64.sqrt(), 0.012f64.sqrt(), 1000);
    let mut acc = 1.0;
    let plain: Vec<f64> = (0..n)
        .map(|i| {
            let b = start + (end - start) * i as f64 / (n - 1) as f64;
            acc *= 1.0 - b * b;
            acc
        })
        .collect();
    if !zero_terminal_snr {
        return plain;
    }
    let (first, last) = (plain[0].sqrt(), plain[n - 1].sqrt());
    plain.iter().map(|a| ((a.sqrt() - last) * first / (first - last)).powi(2)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use plantain_schedulers::{SchedulerConfig, SchedulerKind};

    /// The trainer's noise levels are the ones the engine (and diffusers) derive from the
    /// exported scheduler config, with and without the zero-terminal-SNR rescale.
    #[test]
    fn training_schedule_matches_the_exported_scheduler() {
        for zero_snr in [false, true] {
            let cfg: SchedulerConfig = serde_json::from_value(scheduler_json(true, zero_snr)).unwrap();
            let engine = plantain_schedulers::alphas_cumprod(SchedulerKind::Euler, &cfg).unwrap();
            let ours = alphas_cumprod(zero_snr);
            assert_eq!(engine.len(), ours.len());
            // Euler clamps a zero last ᾱ to 2^-24 so its sigma stays finite (as diffusers does).
            let checked = if zero_snr { ours.len() - 1 } else { ours.len() };
            for t in 0..checked {
                assert!((engine[t] as f64 - ours[t]).abs() < 2e-6, "t {t}, zero snr {zero_snr}: {} vs {}", engine[t], ours[t]);
            }
            if zero_snr {
                assert_eq!(ours[999], 0.0);
                assert!(engine[999] > 0.0 && engine[999] < 1e-6);
                assert!((ours[0] - alphas_cumprod(false)[0]).abs() < 1e-12, "the first level is kept");
            }
        }
    }
}
