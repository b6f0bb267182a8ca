//! Latents to pixels: the full VAE decoder or TAESD, for final images and previews. Shared by
//! every task pipeline.

use image::RgbImage;

use super::{Decoder, SdPipeline, StepLatents, images, shaped};
use crate::error::{EngineError, Result};
use crate::models::{taesd, vae};
use crate::runtime::{Input, Network};

impl SdPipeline {
    /// Scaled latents `[1, 4, h, w]` to pixels.
    pub fn decode(&self, latents: &[f32], latent_size: (usize, usize), decoder: Decoder) -> Result<RgbImage> {
        let (h, w) = latent_size;
        let c = self.vae_cfg.latent_channels;
        let out = match decoder {
            Decoder::Full => {
                let dec = self.vae_decoder.get(|| {
                    Network::new(
                        &vae::build_decoder(&self.vae_cfg, &self.vae_weights)?,
                        &format!("{}-vae-dec", self.family.short_name()),
                        &self.runtime,
                    )
                    .map(Network::releasing)
                })?;
                let (shift, scale) = (self.vae_cfg.shift_factor.unwrap_or(0.0), self.vae_cfg.scaling_factor);
                let z: Vec<f32> = latents.iter().map(|v| v / scale + shift).collect();
                dec.run(vec![("latent", Input::F32(shaped(&[1, c, h, w], z)?))])?
            }
            Decoder::Tiny => {
                let (cfg, weights) = self
                    .taesd
                    .as_ref()
                    .ok_or_else(|| EngineError::InvalidRequest("the tiny decoder was asked for but no TAESD folder was loaded".into()))?;
                let dec = self.taesd_decoder.get(|| Network::new(&taesd::build_decoder(cfg, weights)?, "taesd-dec", &self.runtime))?;
                // TAESD works on the UNet's (scaled) latents directly.
                dec.run(vec![("latent", Input::F32(shaped(&[1, c, h, w], latents.to_vec())?))])?
            }
        };
        let sample = out.get("sample").ok_or_else(|| EngineError::Runtime("decoder gave no sample".into()))?;
        Ok(images::from_tensor(sample))
    }

    /// The decoder previews use: TAESD when one is loaded ([`LoadOptions::tiny_autoencoder`]),
    /// else the model's own VAE.
    pub fn preview_decoder(&self) -> Decoder {
        if self.taesd.is_some() { Decoder::Tiny } else { Decoder::Full }
    }

    /// A preview of a running generation at the canvas size, like [`Generated::image`](super::Generated::image): the
    /// step's estimate of the finished latents ([`StepLatents::denoised`]) decoded with
    /// [`Pipeline::preview_decoder`]. Resize it to the request's output size with the same
    /// [`Resizer`](crate::resize::Resizer) as the final image.
    pub fn preview(&self, step: &StepLatents<'_>) -> Result<RgbImage> {
        let x0 = step.denoised()?;
        self.decode(&x0, step.latent_size(), self.preview_decoder())
    }
}
