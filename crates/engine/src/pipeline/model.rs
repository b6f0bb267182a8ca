//! [`Pipeline`]: one loaded model, Stable Diffusion or FLUX.2 [klein], behind one type, so that
//! every caller (the CLI, the director's loop, the service's workers) runs either without
//! knowing which.

use image::RgbImage;

use super::klein::KleinPipeline;
use super::klein_tasks::Klein;
use super::{
    DiffEditMask, DiffEditOptions, GenerateRequest, Generated, LoadOptions, ModelKind, ModelSource, OnStep, Progress, SdPipeline,
    StepLatents, load,
};
use crate::error::{EngineError, Result};
use crate::models::Family;
use std::ops::ControlFlow;

/// A loaded model, ready to generate: a Stable Diffusion model or FLUX.2 [klein], decided by
/// the folder it was loaded from. Cheap to share behind an `Arc`; calls run one at a time per
/// network.
pub struct Pipeline {
    model: Model,
}

enum Model {
    Sd(Box<SdPipeline>),
    Klein(Box<Klein>),
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.model {
            Model::Sd(p) => p.fmt(f),
            Model::Klein(_) => f.write_str("Pipeline(FLUX.2 [klein])"),
        }
    }
}

impl Pipeline {
    /// Loads a model: a FLUX.2 [klein] diffusers folder (`Flux2KleinPipeline`) as klein, anything
    /// else as Stable Diffusion ([`SdPipeline::load`]). Options klein cannot use (LoRA files,
    /// TAESD) are refused rather than ignored.
    pub fn load(source: &ModelSource, opts: &LoadOptions) -> Result<Self> {
        if let ModelSource::Diffusers(dir) = source
            && load::is_klein(dir)?
        {
            let refuse = |what: &str| EngineError::Unsupported(format!("{}: FLUX.2 [klein] cannot use {what} yet", dir.display()));
            if !opts.loras.is_empty() {
                return Err(refuse("LoRA files"));
            }
            if opts.tiny_autoencoder.is_some() {
                return Err(refuse("a TAESD decoder (it is made for SD's VAE)"));
            }
            let mut notes = Vec::new();
            if let Some(v) = &opts.variant {
                notes.push(format!("FLUX.2 [klein] reads each component's plain weight files; variant `{v}` is not looked for"));
            }
            return Ok(Pipeline { model: Model::Klein(Box::new(Klein::load(dir, &opts.runtime, &opts.weights, notes)?)) });
        }
        Ok(Pipeline { model: Model::Sd(Box::new(SdPipeline::load(source, opts)?)) })
    }

    /// The Stable Diffusion model, when this is one (its steps, for tests and benchmarks).
    pub fn sd(&self) -> Option<&SdPipeline> {
        match &self.model {
            Model::Sd(p) => Some(p),
            Model::Klein(_) => None,
        }
    }

    /// The FLUX.2 [klein] networks, when this is klein.
    pub fn klein(&self) -> Option<&KleinPipeline> {
        match &self.model {
            Model::Klein(k) => Some(&k.net),
            Model::Sd(_) => None,
        }
    }

    /// What a request's inputs mean to this model ([`GenerateRequest::task`]).
    pub fn kind(&self) -> ModelKind {
        match &self.model {
            Model::Sd(p) => p.kind(),
            Model::Klein(_) => ModelKind::Klein,
        }
    }

    /// The Stable Diffusion family; `None` for FLUX.2 [klein].
    pub fn family(&self) -> Option<Family> {
        self.sd().map(SdPipeline::family)
    }

    /// The architecture in words, for logs and status: `SD 1.x`, `SDXL`, `FLUX.2 [klein]`.
    pub fn architecture(&self) -> String {
        match &self.model {
            Model::Sd(p) => p.family().to_string(),
            Model::Klein(_) => "FLUX.2 [klein]".into(),
        }
    }

    /// Loader remarks worth showing the user.
    pub fn notes(&self) -> &[String] {
        match &self.model {
            Model::Sd(p) => p.notes(),
            Model::Klein(k) => k.notes(),
        }
    }

    pub fn is_inpainting_model(&self) -> bool {
        self.sd().is_some_and(SdPipeline::is_inpainting_model)
    }

    /// The model edits a picture after an instruction in words (InstructPix2Pix, FLUX.2
    /// [klein]): an edit's painter gives it the whole picture and the user's words.
    pub fn is_instruct_model(&self) -> bool {
        matches!(self.kind(), ModelKind::InstructPix2Pix | ModelKind::Klein)
    }

    /// The model reads several pictures as references of one edit ([`GenerateRequest::references`]:
    /// FLUX.2 [klein]), so fusion is one pass of the model after the user's words.
    pub fn reads_references(&self) -> bool {
        self.kind() == ModelKind::Klein
    }

    /// Canvas sides must be multiples of this many pixels (64 for SD, 16 for klein).
    pub fn pixel_multiple(&self) -> u32 {
        match &self.model {
            Model::Sd(p) => p.pixel_multiple(),
            Model::Klein(k) => k.pixel_multiple(),
        }
    }

    /// The side of the square the model draws best at ([`SdPipeline::native_resolution`];
    /// 1024 for klein, diffusers' default size).
    pub fn native_resolution(&self) -> u32 {
        match &self.model {
            Model::Sd(p) => p.native_resolution(),
            Model::Klein(k) => k.native_resolution(),
        }
    }

    /// The size the model draws at for a `width`x`height` output: [`plantain_core::canvas_for`]
    /// with this model's native resolution and pixel multiple.
    pub fn canvas_for(&self, width: u32, height: u32) -> (u32, u32) {
        plantain_core::canvas_for(width, height, self.native_resolution(), self.pixel_multiple())
    }

    /// The whole job, with a progress callback. See [`Pipeline::generate_with`].
    pub fn generate(&self, req: &GenerateRequest, progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>) -> Result<Generated> {
        self.generate_with(req, &mut |p, _| progress(p))
    }

    /// Validates `req` and runs the task its inputs ask for ([`GenerateRequest::task`] with this
    /// model's [`kind`](Self::kind)), calling `on_step` after every denoising step with the
    /// step's latents (pass them to [`Pipeline::preview`]). The result is at the canvas size;
    /// resize it (and previews) with a [`Resizer`](crate::resize::Resizer).
    pub fn generate_with(&self, req: &GenerateRequest, on_step: &mut OnStep<'_>) -> Result<Generated> {
        match &self.model {
            Model::Sd(p) => p.generate_with(req, on_step),
            Model::Klein(k) => k.generate(req, on_step),
        }
    }

    /// A preview of a running generation at the canvas size, from the step's estimate of the
    /// finished latents.
    pub fn preview(&self, step: &StepLatents<'_>) -> Result<RgbImage> {
        match &self.model {
            Model::Sd(p) => p.preview(step),
            Model::Klein(k) => k.preview(step),
        }
    }

    /// DiffEdit's mask ([`SdPipeline::diffedit_mask`]); klein has no noise predictions to
    /// compare and answers [`EngineError::Unsupported`].
    pub fn diffedit_mask(
        &self,
        image: &RgbImage,
        source: &str,
        target: &str,
        negative: Option<&str>,
        opts: &DiffEditOptions,
    ) -> Result<DiffEditMask> {
        match &self.model {
            Model::Sd(p) => p.diffedit_mask(image, source, target, negative, opts),
            Model::Klein(_) => Err(EngineError::Unsupported("DiffEdit masks need a Stable Diffusion UNet; FLUX.2 [klein] has none".into())),
        }
    }
}
