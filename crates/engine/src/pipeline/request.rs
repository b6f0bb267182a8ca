//! What a generation is asked for and what it gives back, shared by every task pipeline.

use std::time::Duration;

use image::{GrayImage, RgbImage};
use plantain_core::{DEFAULT_GUIDANCE, DEFAULT_IMAGE_GUIDANCE, DEFAULT_STEPS, DEFAULT_STRENGTH};
use plantain_schedulers::SchedulerKind;

use super::{Decoder, SdPipeline};
use crate::error::{EngineError, Result};

/// The largest output we accept, in pixels (the biggest Gemini preset, 4K at 8:1, is 18.9 MP).
pub const MAX_OUTPUT_PIXELS: u64 = 25_000_000;
/// The longest side we accept.
pub const MAX_OUTPUT_SIDE: u32 = 16_384;

/// One generation. Which task pipeline runs follows from the inputs ([`GenerateRequest::task`]).
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub prompt: String,
    /// `None`: the empty prompt (SD 1.x/2.x) or zeros (SDXL models that ask for them).
    pub negative_prompt: Option<String>,
    /// Output size in pixels. The model draws on the nearest canvas it supports (see
    /// [`Pipeline::canvas_for`]); [`Generated::image`] is that canvas, and a
    /// [`Resizer`](crate::resize::Resizer) makes it exactly this size.
    pub width: u32,
    pub height: u32,
    pub steps: usize,
    /// Classifier-free guidance scale; at or below 1 the negative branch is skipped.
    pub guidance: f32,
    /// diffusers' `guidance_rescale` (Lin et al. 2024): 0 = plain guidance, up to 1 = the
    /// guided prediction scaled back to the prompt branch's standard deviation, which keeps
    /// high guidance from over-saturating models trained with a zero-terminal-SNR schedule.
    pub guidance_rescale: f32,
    pub seed: u64,
    /// `None`: the model's own scheduler config.
    pub scheduler: Option<SchedulerKind>,
    /// img2img / inpainting source; resized to the canvas.
    pub init_image: Option<RgbImage>,
    /// How much of the schedule to run on `init_image` (1 = ignore its content entirely).
    pub strength: f32,
    /// Inpainting mask, white = repaint; needs `init_image`.
    pub mask: Option<GrayImage>,
    /// InstructPix2Pix models only: how strongly the edit keeps to `init_image` (diffusers'
    /// `image_guidance_scale`; below 1 turns guidance off, as there).
    pub image_guidance: f32,
    pub decoder: Decoder,
    /// Further pictures a multi-reference model reads after `init_image`, in the order the
    /// words count them (FLUX.2 [klein]'s fusion: "the cat from image 1 on the sofa of image 2";
    /// `init_image` is image 1). Stable Diffusion models refuse them.
    pub references: Vec<RgbImage>,
}

impl GenerateRequest {
    /// A txt2img request with the shared defaults ([`DEFAULT_STEPS`], [`DEFAULT_GUIDANCE`],
    /// and [`DEFAULT_STRENGTH`] should an init image be added).
    pub fn new(prompt: impl Into<String>, width: u32, height: u32) -> Self {
        Self {
            prompt: prompt.into(),
            negative_prompt: None,
            width,
            height,
            steps: DEFAULT_STEPS,
            guidance: DEFAULT_GUIDANCE,
            guidance_rescale: 0.0,
            seed: 0,
            scheduler: None,
            init_image: None,
            strength: DEFAULT_STRENGTH,
            mask: None,
            image_guidance: DEFAULT_IMAGE_GUIDANCE,
            decoder: Decoder::Full,
            references: Vec::new(),
        }
    }

    /// The task this request asks for, from its inputs and the kind of model: no image is
    /// txt2img, an image img2img, an image and a mask inpainting; for an InstructPix2Pix model
    /// an image is an instruction edit, and it reads neither a mask nor nothing; for FLUX.2
    /// [klein] an image is an instruction edit (it has no partial-strength img2img). A mask
    /// without an image is an error.
    pub fn task(&self, kind: ModelKind) -> Result<Task<'_>> {
        match kind {
            ModelKind::Diffusion => match (&self.init_image, &self.mask) {
                (None, None) => Ok(Task::Txt2Img),
                (Some(image), None) => Ok(Task::Img2Img { image, strength: self.strength }),
                (Some(image), Some(mask)) => Ok(Task::Inpaint { image, mask, strength: self.strength }),
                (None, Some(_)) => Err(EngineError::InvalidRequest("a mask needs an image to edit".into())),
            },
            ModelKind::InstructPix2Pix => match (&self.init_image, &self.mask) {
                (Some(image), None) => Ok(Task::Instruct { image, image_guidance: self.image_guidance }),
                (None, _) => Err(EngineError::InvalidRequest(
                    "this is an InstructPix2Pix model: give the image to edit and the instruction as the prompt".into(),
                )),
                (Some(_), Some(_)) => Err(EngineError::InvalidRequest(
                    "an InstructPix2Pix model edits the whole picture and reads no mask; paste its result back inside the mask".into(),
                )),
            },
            ModelKind::Klein => match (&self.init_image, &self.mask) {
                (None, None) => Ok(Task::Txt2Img),
                (Some(image), None) => Ok(Task::Instruct { image, image_guidance: self.image_guidance }),
                (Some(image), Some(mask)) => Ok(Task::Inpaint { image, mask, strength: self.strength }),
                (None, Some(_)) => Err(EngineError::InvalidRequest("a mask needs an image to edit".into())),
            },
        }
    }
}

/// The kind of model a request runs on, which decides what its inputs mean
/// ([`GenerateRequest::task`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// A text-to-image or inpainting UNet: txt2img, img2img, inpainting.
    Diffusion,
    /// An InstructPix2Pix UNet: instruction edits only.
    InstructPix2Pix,
    /// FLUX.2 [klein]: txt2img, instruction edits with the picture as its reference, and
    /// inpainting as such an edit kept inside the mask.
    Klein,
}

/// A request's task and the inputs only that task reads; each has its own pipeline in
/// `pipeline::tasks`.
#[derive(Clone, Copy, Debug)]
pub enum Task<'a> {
    /// A picture from the prompt alone.
    Txt2Img,
    /// `image` redrawn: `strength` of the schedule runs on its noised latents.
    Img2Img { image: &'a RgbImage, strength: f32 },
    /// The white part of `mask` redrawn in `image`: by a 9-channel inpainting UNet, or by any
    /// other UNet with the unmasked latents blended back after every step; by FLUX.2 [klein] as
    /// an edit with `image` as the reference, the unmasked pixels then put back (it reads no
    /// mask itself).
    Inpaint { image: &'a RgbImage, mask: &'a GrayImage, strength: f32 },
    /// `image` edited after the prompt read as an instruction: by an InstructPix2Pix model
    /// (8-channel UNet: the latents and the image's latents), guided by the text and by the
    /// image (`image_guidance`); by FLUX.2 [klein] with the image as its reference (no
    /// guidance).
    Instruct { image: &'a RgbImage, image_guidance: f32 },
}

/// Reported after every denoising step.
#[derive(Clone, Debug)]
pub struct Progress {
    /// 1-based step just finished, of `total`.
    pub step: usize,
    pub total: usize,
    pub timestep: f32,
    pub elapsed: Duration,
}

/// Where the time went.
#[derive(Clone, Debug, Default)]
pub struct Timings {
    pub text: Duration,
    pub image_encode: Duration,
    pub denoise: Duration,
    pub decode: Duration,
}

/// A finished generation.
#[derive(Clone, Debug)]
pub struct Generated {
    /// The picture as the model drew it: `canvas` pixels until [`Generated::resized`] makes it
    /// the requested size.
    pub image: RgbImage,
    pub seed: u64,
    /// The size the model drew at ([`Pipeline::canvas_for`] of the request's size).
    pub canvas: (u32, u32),
    /// The output size the request asked for (its `width`, `height`).
    pub requested: (u32, u32),
    pub steps_run: usize,
    pub scheduler: SchedulerKind,
    pub guidance: f32,
    pub timings: Timings,
    /// Things the caller should know (truncated prompt, scheduler fallbacks, …).
    pub warnings: Vec<String>,
}

/// Rejects requests no pipeline can run (sizes, steps, scales out of range), with a message
/// for the user.
pub(super) fn validate_shared(req: &GenerateRequest) -> Result<()> {
    let bad = |m: String| Err(EngineError::InvalidRequest(m));
    if req.width == 0 || req.height == 0 || req.width > MAX_OUTPUT_SIDE || req.height > MAX_OUTPUT_SIDE {
        return bad(format!("size {}x{} is outside 1..={MAX_OUTPUT_SIDE} per side", req.width, req.height));
    }
    if req.width as u64 * req.height as u64 > MAX_OUTPUT_PIXELS {
        return bad(format!("size {}x{} is over {MAX_OUTPUT_PIXELS} pixels", req.width, req.height));
    }
    if req.steps == 0 || req.steps > 1000 {
        return bad(format!("steps must be 1..=1000, got {}", req.steps));
    }
    if !req.guidance.is_finite() || !(0.0..=50.0).contains(&req.guidance) {
        return bad(format!("guidance must be within 0..=50, got {}", req.guidance));
    }
    if !(0.0..=1.0).contains(&req.guidance_rescale) {
        return bad(format!("guidance_rescale must be within 0..=1, got {}", req.guidance_rescale));
    }
    if req.init_image.is_some() && !(req.strength > 0.0 && req.strength <= 1.0) {
        return bad(format!("strength must be in (0, 1], got {}", req.strength));
    }
    if req.mask.is_some() && req.init_image.is_none() {
        return bad("a mask needs an image to edit".into());
    }
    if !req.references.is_empty() && req.init_image.is_none() {
        return bad("further reference pictures need a first one (the image to edit)".into());
    }
    if !req.image_guidance.is_finite() || !(0.0..=50.0).contains(&req.image_guidance) {
        return bad(format!("image_guidance must be within 0..=50, got {}", req.image_guidance));
    }
    Ok(())
}

impl SdPipeline {
    /// Rejects requests the pipelines cannot run, with a message for the user.
    pub(super) fn validate(&self, req: &GenerateRequest) -> Result<()> {
        validate_shared(req)?;
        if self.is_inpainting_model() && req.mask.is_none() {
            return Err(EngineError::InvalidRequest("this is an inpainting model: give an image and a mask".into()));
        }
        if !req.references.is_empty() {
            return Err(EngineError::Unsupported(format!(
                "a {} model reads one picture; {} further reference pictures need a multi-reference model (FLUX.2 [klein])",
                self.family(),
                req.references.len()
            )));
        }
        req.task(self.kind()).map(|_| ())
    }
}
