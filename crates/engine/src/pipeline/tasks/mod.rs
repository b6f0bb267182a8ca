//! One pipeline per task, in the diffusers style: [`txt2img`], [`img2img`], [`inpaint`] and
//! [`instruct`] (InstructPix2Pix) are
//! each a short function over the shared loaded components ([`Pipeline`]) and steps
//! ([`Pipeline::encode_prompt`], [`Pipeline::encode_image`], [`Pipeline::denoise_with`],
//! [`Pipeline::decode`]). [`Pipeline::generate_with`] validates a request and runs the one its
//! [`Task`](super::Task) names; a new task joins as a module here and a variant there.
//!
//! Every pipeline returns the picture at the canvas size the model drew; resizing to the
//! requested pixels is the caller's step ([`crate::resize`]).

pub(super) mod img2img;
pub(super) mod inpaint;
pub(super) mod instruct;
pub(super) mod txt2img;

use std::time::Instant;

use image::RgbImage;
use plantain_schedulers::{Scheduler, SchedulerKind};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{Conditioning, DenoiseInput, GenerateRequest, Generated, InstructInput, OnStep, SdPipeline, Timings, gaussian, images};
use crate::error::Result;

/// What every task starts from, before any input image is looked at: the canvas, the seeded
/// noise (drawn first, so a seed gives the same noise in every task), the text conditioning and
/// the scheduler.
struct Setup {
    canvas: (u32, u32),
    /// (height, width) in latent cells.
    latent_size: (usize, usize),
    /// Seeded with the request's seed; after the noise it feeds ancestral samplers.
    rng: ChaCha8Rng,
    noise: Vec<f32>,
    cond: Conditioning,
    scheduler: Box<dyn Scheduler>,
    kind: SchedulerKind,
    warnings: Vec<String>,
    timings: Timings,
}

/// The init-image inputs of the denoising loop: none for txt2img.
struct ImageLatents {
    /// Scaled latents of the init image.
    init: Option<Vec<f32>>,
    /// How much of the schedule runs (1 = all of it, from pure noise).
    strength: f32,
    /// Latent-resolution repaint mask (1 = repaint).
    mask: Option<Vec<f32>>,
    /// Scaled latents of the image with the repaint region blanked (9-channel UNets only).
    masked: Option<Vec<f32>>,
    /// The picture InstructPix2Pix edits (8-channel UNets only).
    instruct: Option<InstructInput>,
}

impl ImageLatents {
    /// txt2img: the whole schedule from noise alone.
    const NONE: ImageLatents = ImageLatents { init: None, strength: 1.0, mask: None, masked: None, instruct: None };
}

impl Setup {
    fn new(p: &SdPipeline, req: &GenerateRequest) -> Result<Setup> {
        let canvas = p.canvas_for(req.width, req.height);
        let vs = p.vae_scale();
        let latent_size = ((canvas.1 / vs) as usize, (canvas.0 / vs) as usize);
        let mut rng = ChaCha8Rng::seed_from_u64(req.seed);
        let noise = gaussian(&mut rng, p.vae_cfg.latent_channels * latent_size.0 * latent_size.1);

        let mut timings = Timings::default();
        let t = Instant::now();
        let cond = p.encode_prompt(&req.prompt, req.negative_prompt.as_deref(), req.guidance)?;
        timings.text = t.elapsed();
        let mut warnings = cond.warnings.clone();
        let (scheduler, kind, fallback) = p.scheduler_for(req.scheduler)?;
        warnings.extend(fallback);
        Ok(Setup { canvas, latent_size, rng, noise, cond, scheduler, kind, warnings, timings })
    }

    /// Denoises from `inputs` and decodes the result at the canvas size.
    fn finish(mut self, p: &SdPipeline, req: &GenerateRequest, inputs: ImageLatents, on_step: &mut OnStep<'_>) -> Result<Generated> {
        let t = Instant::now();
        let latents = p.denoise_with(
            &self.cond,
            DenoiseInput {
                latent_size: self.latent_size,
                steps: req.steps,
                guidance: req.guidance,
                guidance_rescale: req.guidance_rescale,
                scheduler: self.scheduler,
                noise: self.noise,
                init_latents: inputs.init,
                strength: inputs.strength,
                mask: inputs.mask,
                masked_image_latents: inputs.masked,
                instruct: inputs.instruct,
                rng: &mut self.rng,
            },
            on_step,
        )?;
        self.timings.denoise = t.elapsed();
        let t = Instant::now();
        let image = p.decode(&latents, self.latent_size, req.decoder)?;
        self.timings.decode = t.elapsed();
        Ok(Generated {
            image,
            seed: req.seed,
            canvas: self.canvas,
            requested: (req.width, req.height),
            steps_run: steps_run(req.steps, inputs.strength),
            scheduler: self.kind,
            guidance: req.guidance,
            timings: self.timings,
            warnings: self.warnings,
        })
    }
}

/// The steps a schedule of `steps` runs at `strength` (as the schedulers' img2img start rounds).
fn steps_run(steps: usize, strength: f32) -> usize {
    if strength < 1.0 { (steps as f32 * strength).floor().max(0.0) as usize } else { steps }
}

/// An input image prepared for the model: resized to the canvas (Lanczos3) and VAE-encoded.
/// Returns the resized image and its scaled latents.
fn encode_init(p: &SdPipeline, image: &RgbImage, (cw, ch): (u32, u32)) -> Result<(RgbImage, Vec<f32>)> {
    let resized = images::resize_exact(image.clone(), cw, ch);
    let latents = p.encode_image(&resized)?;
    Ok((resized, latents))
}
