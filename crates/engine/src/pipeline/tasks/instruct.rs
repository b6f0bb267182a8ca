//! InstructPix2Pix: the prompt read as an instruction on the input picture. The 8-channel UNet
//! reads the noisy latents and the picture's (unscaled) latents; guidance combines three
//! branches, by the text and by the picture, as diffusers'
//! `StableDiffusionInstructPix2PixPipeline` does. The whole schedule runs from noise: the
//! picture steers every step instead of being the starting point.

use std::time::Instant;

use image::RgbImage;

use super::{ImageLatents, Setup};
use crate::error::Result;
use crate::pipeline::{GenerateRequest, Generated, InstructInput, OnStep, SdPipeline, images};

/// Edits `image` (resized to the canvas) after the instruction `req.prompt`.
pub(in crate::pipeline) fn run(
    p: &SdPipeline,
    req: &GenerateRequest,
    image: &RgbImage,
    image_guidance: f32,
    on_step: &mut OnStep<'_>,
) -> Result<Generated> {
    let mut setup = Setup::new(p, req)?;
    let t = Instant::now();
    let (cw, ch) = setup.canvas;
    let resized = images::resize_exact(image.clone(), cw, ch);
    let image_latents = p.encode_image_unscaled(&resized)?;
    setup.timings.image_encode = t.elapsed();
    let instruct = Some(InstructInput { image_latents, image_guidance });
    setup.finish(p, req, ImageLatents { instruct, ..ImageLatents::NONE }, on_step)
}
