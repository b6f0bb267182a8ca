//! FLUX.2 [klein] behind [`Pipeline`](super::Pipeline): a [`GenerateRequest`] run as text-to-image
//! or as an instruction edit with the request's picture (and its further `references`: fusion)
//! as the references, in diffusers' `Flux2KleinPipeline` order (seeded noise in the patchified latent shape, prompt, reference,
//! a few flow-matching steps, decode). Klein reads no mask: an inpainting request is that edit
//! with the input's own pixels put back outside the mask (at the canvas), the honest equivalent
//! its callers' paste-back then makes exact. What klein cannot do (another sampler, the tiny
//! decoder, a reference far larger than it draws) is refused before any network runs.

use std::path::Path;
use std::time::Instant;

use image::RgbImage;
use ndarray::ArrayD;
use plantain_schedulers::SchedulerKind;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::WeightOptions;
use super::klein::{KleinPipeline, KleinStep};
use super::request::validate_shared;
use super::{Decoder, GenerateRequest, Generated, ModelKind, OnStep, Progress, StepLatents, Task, Timings, gaussian, images, shaped};
use crate::error::{EngineError, Result};
use crate::runtime::RuntimeOptions;

/// diffusers' `Flux2KleinPipeline.default_sample_size`: the default side in latent cells of the
/// VAE (before the 2x2 patchify), 1024 px with the FLUX.2 VAE.
const DEFAULT_SAMPLE_SIZE: u32 = 128;

/// A reference picture may have at most this many times the model's native area in pixels
/// ([`max_reference_pixels`]).
const MAX_REFERENCE_AREAS: u64 = 16;

/// The most pixels a klein reference picture may have for a model that draws `native`² pixels
/// natively: 16 native areas (16.8 MP at 1024², a 12 MP photograph passes). References are
/// scaled to the canvas before encoding; larger ones are refused before any work starts.
pub fn max_reference_pixels(native: u32) -> u64 {
    MAX_REFERENCE_AREAS * u64::from(native) * u64::from(native)
}

/// FLUX.2 [klein] loaded, with what the product asks of every model.
pub(super) struct Klein {
    pub net: KleinPipeline,
    notes: Vec<String>,
}

impl Klein {
    pub fn load(dir: &Path, runtime: &RuntimeOptions, opts: &WeightOptions, notes: Vec<String>) -> Result<Self> {
        Ok(Klein { net: KleinPipeline::load_with(dir, runtime, opts)?, notes })
    }

    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Canvas sides are multiples of this (one latent token: 16 px with the FLUX.2 VAE).
    pub fn pixel_multiple(&self) -> u32 {
        self.net.pixels_per_token() as u32
    }

    /// diffusers' default size: `default_sample_size` VAE cells (1024 px).
    pub fn native_resolution(&self) -> u32 {
        DEFAULT_SAMPLE_SIZE * self.pixel_multiple() / 2
    }

    fn canvas_for(&self, width: u32, height: u32) -> (u32, u32) {
        plantain_core::canvas_for(width, height, self.native_resolution(), self.pixel_multiple())
    }

    /// Refuses what klein cannot run, before any network does.
    fn validate<'r>(&self, req: &'r GenerateRequest) -> Result<Task<'r>> {
        validate_shared(req)?;
        if let Some(k) = req.scheduler.filter(|&k| k != SchedulerKind::FlowMatchEuler) {
            return Err(EngineError::Unsupported(format!(
                "FLUX.2 [klein] samples with its own flow-matching Euler only; scheduler `{k}` is for Stable Diffusion models"
            )));
        }
        if req.decoder == Decoder::Tiny {
            return Err(EngineError::Unsupported("FLUX.2 [klein] has no tiny decoder (TAESD is for SD's VAE)".into()));
        }
        let task = req.task(ModelKind::Klein)?;
        let max = max_reference_pixels(self.native_resolution());
        for (i, picture) in req.init_image.iter().chain(&req.references).enumerate() {
            let (w, h) = picture.dimensions();
            if w == 0 || h == 0 {
                return Err(EngineError::InvalidRequest(format!("reference picture {} is empty ({w}x{h})", i + 1)));
            }
            if u64::from(w) * u64::from(h) > max {
                return Err(EngineError::InvalidRequest(format!(
                    "reference picture {} is {w}x{h} ({} pixels), over FLUX.2 [klein]'s limit of {max} pixels ({MAX_REFERENCE_AREAS} times \
                     its native {n}x{n}); scale it down first",
                    i + 1,
                    u64::from(w) * u64::from(h),
                    n = self.native_resolution()
                )));
            }
        }
        Ok(task)
    }

    /// Text-to-image, or an instruction edit with the request's picture (resized to the canvas)
    /// as the reference. The picture comes back at the canvas size.
    pub fn generate(&self, req: &GenerateRequest, on_step: &mut OnStep<'_>) -> Result<Generated> {
        let task = self.validate(req)?;
        let canvas = self.canvas_for(req.width, req.height);
        let m = self.pixel_multiple();
        let grid = ((canvas.1 / m) as usize, (canvas.0 / m) as usize);
        let mut rng = ChaCha8Rng::seed_from_u64(req.seed);
        let c = self.net.latent_channels();
        let noise = shaped(&[1, c, grid.0, grid.1], gaussian(&mut rng, c * grid.0 * grid.1))?;
        let mut timings = Timings::default();
        let t = Instant::now();
        let context = self.net.encode_prompt(&req.prompt)?;
        timings.text = t.elapsed();
        let t = Instant::now();
        let (references, keep) = match task {
            Task::Instruct { image, .. } => (self.references(image, &req.references, canvas)?, None),
            Task::Inpaint { image, mask, .. } => (self.references(image, &req.references, canvas)?, Some((image, mask))),
            _ => (vec![], None),
        };
        timings.image_encode = t.elapsed();
        let t = Instant::now();
        let latents = self.denoise(&context, &noise, &references, req.steps, on_step)?;
        timings.denoise = t.elapsed();
        let t = Instant::now();
        let mut image = images::from_tensor(&self.net.decode(latents)?);
        timings.decode = t.elapsed();
        if let Some((input, mask)) = keep {
            image = outside_kept(image, input, mask);
        }
        Ok(Generated {
            image,
            seed: req.seed,
            canvas,
            requested: (req.width, req.height),
            steps_run: req.steps,
            scheduler: SchedulerKind::FlowMatchEuler,
            // Step-distilled: one transformer pass per step, no classifier-free guidance.
            guidance: 1.0,
            timings,
            warnings: unused_settings(req),
        })
    }

    /// The request's pictures encoded as klein's references, in order: `first` (the picture
    /// edited), then `more` (fusion), each at [`reference_size`].
    fn references(&self, first: &RgbImage, more: &[RgbImage], canvas: (u32, u32)) -> Result<Vec<ArrayD<f32>>> {
        let m = self.pixel_multiple();
        std::iter::once(first)
            .chain(more)
            .map(|image| {
                let (w, h) = reference_size(image.dimensions(), canvas, m);
                self.net.encode_reference(images::to_tensor(&images::resize_exact(image.clone(), w, h)).into_dyn())
            })
            .collect()
    }

    fn denoise(
        &self,
        context: &ArrayD<f32>,
        noise: &ArrayD<f32>,
        refs: &[ArrayD<f32>],
        steps: usize,
        on_step: &mut OnStep<'_>,
    ) -> Result<ArrayD<f32>> {
        let started = Instant::now();
        let mut failed = None;
        let out = self.net.denoise_with(context, noise, refs, steps, &mut |s: &KleinStep<'_>| {
            let progress = Progress { step: s.index + 1, total: s.total, timestep: s.sigma, elapsed: started.elapsed() };
            let unpacked = (KleinStep::unpacked(s.latents, s.grid), KleinStep::unpacked(s.denoised, s.grid));
            match unpacked {
                (Ok(latents), Ok(denoised)) => on_step(&progress, &StepLatents::flow(&latents, &denoised, s.grid)),
                (Err(e), _) | (_, Err(e)) => {
                    failed = Some(e);
                    std::ops::ControlFlow::Break(())
                }
            }
        });
        match failed {
            Some(e) => Err(e),
            None => out,
        }
    }

    /// A running generation's picture: the step's estimate of the finished latents, decoded.
    pub fn preview(&self, step: &StepLatents<'_>) -> Result<RgbImage> {
        let (h, w) = step.latent_size();
        let x0 = shaped(&[1, self.net.latent_channels(), h, w], step.denoised()?)?;
        Ok(images::from_tensor(&self.net.decode(x0)?))
    }
}

/// The size a reference picture is encoded at: its own aspect ratio at about the canvas's area,
/// sides multiples of `m` (a picture of the canvas's shape: the canvas). diffusers' pipeline
/// likewise keeps each reference's aspect, but at up to 1024² whatever the canvas; the canvas's
/// area bounds each reference's tokens to the drawn picture's own.
pub fn reference_size((w, h): (u32, u32), (cw, ch): (u32, u32), m: u32) -> (u32, u32) {
    let scale = ((f64::from(cw) * f64::from(ch)) / (f64::from(w) * f64::from(h))).sqrt();
    let side = |s: u32| ((f64::from(s) * scale / f64::from(m)).round() as u32).max(1) * m;
    (side(w), side(h))
}

/// `painted` where `mask` (resized to it) is white, `input` (resized to it) elsewhere.
fn outside_kept(painted: RgbImage, input: &RgbImage, mask: &image::GrayImage) -> RgbImage {
    let (w, h) = painted.dimensions();
    let input = images::resize_exact(input.clone(), w, h);
    let mask = image::imageops::resize(mask, w, h, image::imageops::FilterType::Triangle);
    RgbImage::from_fn(w, h, |x, y| {
        let m = f32::from(mask.get_pixel(x, y)[0]) / 255.0;
        let (p, i) = (painted.get_pixel(x, y), input.get_pixel(x, y));
        image::Rgb(std::array::from_fn(|c| (m * f32::from(p[c]) + (1.0 - m) * f32::from(i[c])).round() as u8))
    })
}

/// What a request set that klein does not read, said once in the answer.
fn unused_settings(req: &GenerateRequest) -> Vec<String> {
    let mut w = Vec::new();
    if req.mask.is_some() && req.strength < 1.0 {
        w.push(format!("FLUX.2 [klein] repaints the masked region from noise: strength {} was not used", req.strength));
    }
    if req.negative_prompt.as_deref().is_some_and(|n| !n.trim().is_empty()) {
        w.push("FLUX.2 [klein] runs without classifier-free guidance: the negative prompt was not used".into());
    }
    if req.guidance > 1.0 {
        w.push(format!("FLUX.2 [klein] is guidance-distilled: guidance {} was not used", req.guidance));
    }
    w
}
