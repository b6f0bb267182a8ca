//! Image to image: the input's latents noised to `strength` of the schedule, then denoised
//! towards the prompt.

use std::time::Instant;

use image::RgbImage;

use super::{ImageLatents, Setup, encode_init};
use crate::error::Result;
use crate::pipeline::{GenerateRequest, Generated, OnStep, SdPipeline};

/// Redraws `image` (resized to the canvas) after `req.prompt`; `strength` 1 ignores its content.
pub(in crate::pipeline) fn run(
    p: &SdPipeline,
    req: &GenerateRequest,
    image: &RgbImage,
    strength: f32,
    on_step: &mut OnStep<'_>,
) -> Result<Generated> {
    let mut setup = Setup::new(p, req)?;
    let t = Instant::now();
    let (_, init) = encode_init(p, image, setup.canvas)?;
    setup.timings.image_encode = t.elapsed();
    setup.finish(p, req, ImageLatents { init: Some(init), strength, mask: None, masked: None, instruct: None }, on_step)
}
