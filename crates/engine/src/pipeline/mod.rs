//! Image pipelines over one loaded model, in the diffusers style.
//!
//! [`Pipeline`] is what callers load and run: a Stable Diffusion model ([`SdPipeline`]) or
//! FLUX.2 [klein] ([`klein::KleinPipeline`]), chosen by the folder, behind one type; a
//! [`GenerateRequest`]'s [`Task`] is run by whichever it holds, or refused with a reason.
//!
//! [`SdPipeline`] holds the loaded components (text encoders, UNet, VAE, optional TAESD, the
//! scheduler config) and the steps every task shares: [`SdPipeline::encode_prompt`],
//! [`SdPipeline::encode_image`], [`SdPipeline::denoise_with`] and [`SdPipeline::decode`]. They are
//! public so that callers and the parity tests can feed exactly the tensors another
//! implementation used. Each task is its own short pipeline over them (txt2img, img2img,
//! inpainting, in `tasks`); [`Pipeline::generate_with`] validates a [`GenerateRequest`] and runs
//! the one its [`Task`] names.
//!
//! A generation comes back at the canvas the model drew ([`Generated::image`],
//! [`Generated::canvas`], picked by [`Pipeline::canvas_for`]); resizing it (and previews) to the
//! requested pixels is a separate step the caller chooses ([`crate::resize::Resizer`], with
//! [`crate::resize::Lanczos3`] the standard one: `generate(..)?.resized(&Lanczos3)?`). Input
//! images and masks are still fitted to the canvas here, as preparing input.

mod decode;
mod denoise;
mod diffedit;
mod encode;
pub mod images;
pub mod klein;
pub mod klein_prompt;
mod klein_tasks;
mod load;
mod model;
mod request;
mod tasks;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ndarray::{ArrayD, IxDyn};
use plantain_schedulers::{Scheduler, SchedulerConfig, SchedulerKind};
use plantain_tokenizer::ClipTokenizer;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

pub use denoise::{DenoiseInput, InstructInput, StepLatents, rescale_guided};
pub use diffedit::{DiffEditMask, DiffEditOptions};
pub use encode::Conditioning;
pub use klein_tasks::{max_reference_pixels, reference_size};
pub use load::ModelSource;
pub(crate) use load::component_weights;
pub use model::Pipeline;
pub use request::{GenerateRequest, Generated, MAX_OUTPUT_PIXELS, MAX_OUTPUT_SIDE, ModelKind, Progress, Task, Timings};

use crate::error::{EngineError, Result};
use crate::models::Family;
use crate::models::clip::{self, ClipOutputs};
use crate::models::taesd::TaesdConfig;
use crate::models::unet::{self, UNetConfig};
use crate::models::vae::VaeConfig;
use crate::runtime::{Network, Resident, RuntimeOptions};
use crate::weights::TensorIndex;
pub use crate::weights::lora::LoraSpec;
use crate::weights::quant::{DEFAULT_BLOCK, Packer, QuantLayout, QuantSpec, WeightBits, scratch_dir};

/// The per-step callback of [`Pipeline::generate_with`]: the step's progress and latents;
/// [`ControlFlow::Break`] cancels the generation.
pub type OnStep<'a> = dyn FnMut(&Progress, &StepLatents<'_>) -> ControlFlow<()> + 'a;

/// How a model is loaded.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    pub runtime: RuntimeOptions,
    /// Prefer this weight variant when a folder has several (`fp16`).
    pub variant: Option<String>,
    /// A TAESD folder (`config.json` + `diffusion_pytorch_model.safetensors`) for fast previews.
    pub tiny_autoencoder: Option<PathBuf>,
    /// LoRA files applied, in order, to the UNet and text encoders as the graphs are built.
    pub loras: Vec<LoraSpec>,
    /// How the weights are held: 8-/4-bit weights, a single-file transformer (klein only),
    /// lean memory.
    pub weights: WeightOptions,
}

/// How a model's weights are held: their precision, a single-file transformer (FLUX.2 [klein]),
/// lean memory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WeightOptions {
    /// How the weights of the denoiser (transformer or UNet) and the text encoders are stored:
    /// f32, or quantised at load — linear layers to 8 or 4 bits in blocks (`MatMulNBits`),
    /// a UNet's convolutions to 8 bits per output channel, widened one at a time as they run.
    /// Norms, embeddings, biases and the VAE stay f32. Weights that a GGUF `transformer_file`
    /// holds as `Q8_0`/`Q4_0` keep their own precision.
    pub weights: WeightBits,
    /// Quantisation block length along the input axis (a power of two ≥ 16; default 32).
    pub block_size: Option<usize>,
    /// `MatMulNBits`' accuracy level for quantised layers (default 4: int8 activations where
    /// ONNX Runtime has the kernel; 1: f32 activations, slower and closer to f32).
    pub accuracy_level: Option<i64>,
    /// FLUX.2 [klein] only: a transformer in one file, BFL/ComfyUI naming: GGUF (`F32`/`F16`/`BF16`/`Q8_0`/`Q4_0`
    /// tensors) or safetensors; used instead of the folder's `transformer/`.
    pub transformer_file: Option<PathBuf>,
    /// Release the text encoder(s) after each prompt is encoded (and rebuild their sessions for
    /// the next one): less memory held while denoising, a few seconds more per prompt.
    pub lean: bool,
}

impl WeightOptions {
    pub(crate) fn spec(&self) -> Result<Option<QuantSpec>> {
        let Some(bits) = self.weights.bits() else { return Ok(None) };
        let mut spec = QuantSpec::new(bits, self.block_size.unwrap_or(DEFAULT_BLOCK))?;
        if let Some(level) = self.accuracy_level {
            spec.accuracy_level = level;
        }
        if self.weights == WeightBits::W8A8 {
            spec.layout = QuantLayout::Channels;
        }
        Ok(Some(spec))
    }

    /// The spec for text encoders: as [`Self::spec`], but always in blocks. `w8a8`'s one scale
    /// per tensor is for the denoiser: language models' activations have outlier channels
    /// (Qwen3's especially) that a per-tensor scale would crush, and their encoders are a small
    /// part of the time.
    /// `w8a8` is refused with CUDA: ONNX Runtime's CUDA provider has no `DynamicQuantizeMatMul`
    /// kernel, so every layer would go back to the CPU.
    pub(crate) fn check_device(&self, runtime: &RuntimeOptions) -> Result<()> {
        if runtime.cuda && self.weights == WeightBits::W8A8 {
            return Err(EngineError::Unsupported(
                "w8a8 weights run on the CPU only (ONNX Runtime's CUDA provider has no DynamicQuantizeMatMul kernel); on a GPU use f32, int8 or int4".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn text_spec(&self) -> Result<Option<QuantSpec>> {
        Ok(self.spec()?.map(|s| QuantSpec { layout: QuantLayout::Blocks, ..s }))
    }
}

/// Which decoder turns latents into pixels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Decoder {
    /// The model's own AutoencoderKL.
    #[default]
    Full,
    /// TAESD: much faster, a little softer (needs [`LoadOptions::tiny_autoencoder`]).
    Tiny,
}

/// A CLIP text encoder with its tokenizer and sequence length: its session always loaded, or
/// (lean) created for each prompt from its graph and dropped after.
struct TextEncoder {
    net: Resident,
    tokenizer: ClipTokenizer,
    seq: usize,
}

impl TextEncoder {
    fn build(parts: load::TextEncoderParts, outputs: ClipOutputs, label: &str, rt: &RuntimeOptions, lean: bool) -> Result<Self> {
        let net = Resident::new(clip::build(&parts.config, &parts.weights, outputs)?, label, rt, lean)?;
        Ok(TextEncoder { net, seq: parts.config.max_position_embeddings, tokenizer: parts.tokenizer })
    }
}

/// A network built on first use (the VAE encoder is only needed for img2img).
struct Lazy(Mutex<Option<Arc<Network>>>);

impl Lazy {
    fn new() -> Self {
        Self(Mutex::new(None))
    }
    fn get(&self, build: impl FnOnce() -> Result<Network>) -> Result<Arc<Network>> {
        let mut slot = self.0.lock().map_err(|_| EngineError::Runtime("network cache poisoned by an earlier panic".into()))?;
        if let Some(n) = slot.as_ref() {
            return Ok(n.clone());
        }
        let n = Arc::new(build()?);
        *slot = Some(n.clone());
        Ok(n)
    }
}

/// A loaded Stable Diffusion model: the components every task pipeline shares (text encoders,
/// UNet, VAE, optional TAESD, scheduler config), ready to generate. Callers usually hold it
/// through [`Pipeline`], which also holds FLUX.2 [klein]; the SD steps are public here for the
/// parity tests and benchmarks. Cheap to share behind an `Arc`; calls run one at a time per
/// network.
pub struct SdPipeline {
    family: Family,
    pipeline_class: String,
    notes: Vec<String>,
    te1: TextEncoder,
    te2: Option<TextEncoder>,
    unet: Network,
    unet_cfg: UNetConfig,
    vae_cfg: VaeConfig,
    vae_weights: TensorIndex,
    vae_decoder: Lazy,
    vae_encoder: Lazy,
    taesd: Option<(TaesdConfig, TensorIndex)>,
    taesd_decoder: Lazy,
    scheduler: SchedulerConfig,
    force_zeros_for_empty_prompt: bool,
    runtime: RuntimeOptions,
}

impl std::fmt::Debug for SdPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SdPipeline").field("family", &self.family).field("class", &self.pipeline_class).finish_non_exhaustive()
    }
}

/// Attaches packers to the weights: the UNet's and text encoders' quantise them when `opts` asks
/// for 8- or 4-bit weights, and every half-precision weight left in f32 (the VAE's always) is
/// widened into a scratch file rather than cast in the graph, so that no weight is held twice
/// while the sessions are created ([`Packer::widen`]). Refuses what only FLUX.2 [klein] uses.
fn prepare_weights(parts: &mut load::Parts, opts: &WeightOptions, rt: &RuntimeOptions) -> Result<()> {
    if opts.transformer_file.is_some() {
        return Err(EngineError::Unsupported(
            "a single-file transformer is for FLUX.2 [klein]; a Stable Diffusion model's own files or checkpoint hold its UNet".into(),
        ));
    }
    opts.check_device(rt)?;
    let dir = scratch_dir(&rt.cache_dir);
    let spec = opts.spec()?;
    let packer = Arc::new(Packer::new(&dir, spec)?);
    let text_packer = if opts.text_spec()? == spec { packer.clone() } else { Arc::new(Packer::new(&dir, opts.text_spec()?)?) };
    let with = |index: &mut TensorIndex, p: &Arc<Packer>| *index = std::mem::take(index).with_packer(p.clone());
    with(&mut parts.unet.1, &packer);
    with(&mut parts.text_encoder.weights, &text_packer);
    if let Some(te2) = parts.text_encoder_2.as_mut() {
        with(&mut te2.weights, &text_packer);
    }
    with(&mut parts.vae.1, &Arc::new(Packer::new(&dir, None)?));
    if let Some(spec) = spec {
        let (linears, convs) = match spec.layout {
            QuantLayout::Blocks => (format!("in blocks of {}", spec.block_size), "in 8 bits per channel"),
            QuantLayout::Channels => {
                (format!("per channel, their inputs in 8 bits per tensor (the text encoders' in blocks of {})", spec.block_size), "f32")
            }
        };
        parts.notes.push(format!(
            "{}-bit weights: the UNet's and text encoders' linear layers {linears}, convolutions {convs}; the VAE in f32",
            spec.bits
        ));
    }
    Ok(())
}

impl SdPipeline {
    /// Loads a model: reads configs and weight headers, builds the text encoders and the UNet.
    pub fn load(source: &ModelSource, opts: &LoadOptions) -> Result<Self> {
        let mut parts = match source {
            ModelSource::Diffusers(dir) => load::diffusers(dir, opts.variant.as_deref())?,
            ModelSource::SingleFile { file, config_dir } => load::single_file(file, config_dir.as_deref())?,
        };
        load::apply_loras(&mut parts, &opts.loras)?;
        let rt = &opts.runtime;
        prepare_weights(&mut parts, &opts.weights, rt)?;
        let label = |c: &str| format!("{}-{c}", parts.family.short_name());
        let lean = opts.weights.lean;
        let te1 = TextEncoder::build(parts.text_encoder, ClipOutputs { projection: false }, &label("text"), rt, lean)?;
        let te2 = match parts.text_encoder_2 {
            Some(p) => Some(TextEncoder::build(p, ClipOutputs { projection: true }, &label("text2"), rt, lean)?),
            None => None,
        };
        let (unet_cfg, unet_w) = parts.unet;
        check_unet_channels(&unet_cfg, &parts.vae.0)?;
        if parts.family == Family::Sdxl && unet_cfg.in_channels == 2 * parts.vae.0.latent_channels {
            return Err(EngineError::Unsupported("SDXL InstructPix2Pix models are not supported yet (SD 1.x/2.x ones are)".into()));
        }
        let unet = Network::new(&unet::build(&unet_cfg, &unet_w)?, &label("unet"), rt)?;
        let unet = if lean { unet.releasing() } else { unet };
        let taesd = match &opts.tiny_autoencoder {
            Some(dir) => Some(load_taesd(dir)?),
            None => None,
        };
        let mut scheduler = parts.scheduler;
        if parts.family != Family::Sdxl {
            // diffusers' SD pipelines rewrite these two outdated settings on load; do the same.
            if scheduler.steps_offset != Some(1) {
                scheduler.steps_offset = Some(1);
            }
            if scheduler.clip_sample == Some(true) {
                scheduler.clip_sample = Some(false);
            }
        }
        Ok(Self {
            family: parts.family,
            pipeline_class: parts.pipeline_class,
            notes: parts.notes,
            te1,
            te2,
            unet,
            unet_cfg,
            vae_cfg: parts.vae.0,
            vae_weights: parts.vae.1,
            vae_decoder: Lazy::new(),
            vae_encoder: Lazy::new(),
            taesd,
            taesd_decoder: Lazy::new(),
            scheduler,
            force_zeros_for_empty_prompt: parts.force_zeros_for_empty_prompt,
            runtime: rt.clone(),
        })
    }

    pub fn family(&self) -> Family {
        self.family
    }
    /// Loader remarks worth showing the user.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }
    pub fn is_inpainting_model(&self) -> bool {
        self.unet_cfg.in_channels == 2 * self.vae_cfg.latent_channels + 1
    }
    /// An InstructPix2Pix model: its UNet reads the latents and the input image's latents.
    pub fn is_instruct_model(&self) -> bool {
        self.unet_cfg.in_channels == 2 * self.vae_cfg.latent_channels
    }
    /// What the request's inputs mean to this model ([`GenerateRequest::task`]).
    pub fn kind(&self) -> ModelKind {
        if self.is_instruct_model() { ModelKind::InstructPix2Pix } else { ModelKind::Diffusion }
    }
    pub fn scheduler_config(&self) -> &SchedulerConfig {
        &self.scheduler
    }
    /// Pixels per latent cell (8 for every SD VAE).
    pub fn vae_scale(&self) -> u32 {
        self.vae_cfg.scale_factor() as u32
    }
    /// Canvas sides must be multiples of this many pixels.
    pub fn pixel_multiple(&self) -> u32 {
        self.vae_scale() * self.unet_cfg.spatial_multiple() as u32
    }
    /// The side of the square the model was trained at: the UNet config's `sample_size` times
    /// the VAE factor (what diffusers draws by default), or the family's standard size
    /// ([`Family::standard_resolution`]) for configs without one and for the tiny test models
    /// (whose `sample_size` means nothing).
    pub fn native_resolution(&self) -> u32 {
        // Below 16 latents a side `sample_size` is a test model's placeholder, not a training size.
        if let Some(latents) = self.unet_cfg.sample_size.filter(|&s| s >= 16) {
            return latents as u32 * self.vae_scale();
        }
        self.family.standard_resolution(self.scheduler.prediction_type.as_deref() == Some("v_prediction"))
    }

    /// The size the model draws at for a `width`x`height` output: [`plantain_core::canvas_for`]
    /// with this model's [`native_resolution`](Self::native_resolution) and
    /// [`pixel_multiple`](Self::pixel_multiple).
    pub fn canvas_for(&self, width: u32, height: u32) -> (u32, u32) {
        plantain_core::canvas_for(width, height, self.native_resolution(), self.pixel_multiple())
    }

    /// A scheduler for a request: the named kind over the model's config, or the config's own.
    pub fn scheduler_for(&self, kind: Option<SchedulerKind>) -> Result<(Box<dyn Scheduler>, SchedulerKind, Option<String>)> {
        let err = |e: plantain_schedulers::SchedulerError| EngineError::Scheduler(e.to_string());
        match kind {
            Some(k) => Ok((plantain_schedulers::build(k, &self.scheduler).map_err(err)?, k, None)),
            None => {
                let (s, resolved) = plantain_schedulers::build_from_config(&self.scheduler).map_err(err)?;
                Ok((s, resolved.kind, resolved.fallback_reason))
            }
        }
    }

    /// The whole job: text (→ image) → latents → denoise → pixels at the canvas size. See
    /// [`Pipeline::generate_with`].
    pub fn generate(&self, req: &GenerateRequest, progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>) -> Result<Generated> {
        self.generate_with(req, &mut |p, _| progress(p))
    }

    /// Validates `req` and runs the task pipeline it asks for ([`GenerateRequest::task`]),
    /// calling `on_step` after every denoising step with the step's latents: pass them to
    /// [`Pipeline::preview`] for a preview image. The result is at the canvas size; resize it
    /// (and previews) with a [`Resizer`](crate::resize::Resizer).
    pub fn generate_with(&self, req: &GenerateRequest, on_step: &mut OnStep<'_>) -> Result<Generated> {
        self.validate(req)?;
        match req.task(self.kind())? {
            Task::Txt2Img => tasks::txt2img::run(self, req, on_step),
            Task::Img2Img { image, strength } => tasks::img2img::run(self, req, image, strength, on_step),
            Task::Inpaint { image, mask, strength } => tasks::inpaint::run(self, req, image, mask, strength, on_step),
            Task::Instruct { image, image_guidance } => tasks::instruct::run(self, req, image, image_guidance, on_step),
        }
    }
}

/// `n` N(0, 1) floats from `rng` (ChaCha8: the same on every platform).
pub fn gaussian(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

fn shaped(shape: &[usize], data: Vec<f32>) -> Result<ArrayD<f32>> {
    ArrayD::from_shape_vec(IxDyn(shape), data).map_err(|e| EngineError::Runtime(e.to_string()))
}

fn take(mut out: std::collections::HashMap<String, ArrayD<f32>>, name: &str) -> Result<ArrayD<f32>> {
    out.remove(name).ok_or_else(|| EngineError::Runtime(format!("network output `{name}` missing")))
}

/// The UNet reads the VAE's latents (4 channels in SD; plantain-nano uses 8), or, in an
/// InstructPix2Pix UNet, latents + image latents, or, in an inpainting UNet, latents + mask +
/// masked-image latents.
fn check_unet_channels(unet: &UNetConfig, vae: &VaeConfig) -> Result<()> {
    let l = vae.latent_channels;
    if ![l, 2 * l, 2 * l + 1].contains(&unet.in_channels) {
        return Err(EngineError::Unsupported(format!(
            "UNet with {} input channels for a VAE with {l} latent channels (expected {l}, {} for InstructPix2Pix or {} for inpainting)",
            unet.in_channels,
            2 * l,
            2 * l + 1
        )));
    }
    Ok(())
}

fn load_taesd(dir: &Path) -> Result<(TaesdConfig, TensorIndex)> {
    let cfg = TaesdConfig::from_file(&dir.join("config.json"))?;
    let w = TensorIndex::open_all(&load::component_weights(
        dir.parent().unwrap_or(dir),
        dir.file_name().and_then(|n| n.to_str()).unwrap_or(""),
        "diffusion_pytorch_model",
        None,
    )?)?;
    Ok((cfg, w))
}
