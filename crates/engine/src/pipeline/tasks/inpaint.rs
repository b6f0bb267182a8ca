//! Inpainting: the mask's white part redrawn, the rest kept. A 9-channel inpainting UNet reads
//! the mask and the masked image beside the latents; any other UNet gets latent blending (the
//! denoising loop puts the unmasked part back on the input's trajectory after every step).

use std::time::Instant;

use image::imageops::FilterType;
use image::{GrayImage, RgbImage};

use super::{ImageLatents, Setup, encode_init};
use crate::error::Result;
use crate::pipeline::{GenerateRequest, Generated, OnStep, SdPipeline, images};

/// Repaints the white part of `mask` in `image` (both resized to the canvas) after
/// `req.prompt`, starting `strength` of the way into the schedule.
pub(in crate::pipeline) fn run(
    p: &SdPipeline,
    req: &GenerateRequest,
    image: &RgbImage,
    mask: &GrayImage,
    strength: f32,
    on_step: &mut OnStep<'_>,
) -> Result<Generated> {
    let mut setup = Setup::new(p, req)?;
    let t = Instant::now();
    let (cw, ch) = setup.canvas;
    let (image, init) = encode_init(p, image, setup.canvas)?;
    let mask = image::imageops::resize(mask, cw, ch, FilterType::Triangle);
    let (lh, lw) = setup.latent_size;
    let latent_mask = images::latent_mask(&mask, lw, lh);
    let masked = if p.is_inpainting_model() {
        let blanked = images::masked_tensor(&images::to_tensor(&image), &mask);
        Some(p.encode_image(&images::from_tensor(&blanked.into_dyn()))?)
    } else {
        None
    };
    setup.timings.image_encode = t.elapsed();
    setup.finish(p, req, ImageLatents { init: Some(init), strength, mask: Some(latent_mask), masked, instruct: None }, on_step)
}
