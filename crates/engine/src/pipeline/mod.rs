//! Stable Diffusion pipelines: txt2img, img2img and inpainting over one loaded model.
//!
//! [`Pipeline::generate`] is the whole job. Its steps are public too ([`Pipeline::encode_prompt`],
//! [`Pipeline::encode_image`], [`Pipeline::denoise`], [`Pipeline::decode`]) so that callers and
//! the parity tests can feed exactly the tensors another implementation used.

pub mod images;
mod load;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::{GrayImage, RgbImage};
use ndarray::{Array2, Array3, ArrayD, Axis, IxDyn, concatenate};
use plantain_schedulers::{Scheduler, SchedulerConfig, SchedulerKind};
use plantain_tokenizer::ClipTokenizer;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

pub use load::ModelSource;

use crate::error::{EngineError, Result};
use crate::models::Family;
use crate::models::clip::{self, ClipOutputs};
use crate::models::taesd::{self, TaesdConfig};
use crate::models::unet::{self, UNetConfig};
use crate::models::vae::{self, VaeConfig};
use crate::runtime::{Input, Network, RuntimeOptions};
use crate::weights::TensorIndex;

/// The largest output we accept, in pixels (the biggest Gemini preset, 4K at 8:1, is 18.9 MP).
pub const MAX_OUTPUT_PIXELS: u64 = 25_000_000;
/// The longest side we accept.
pub const MAX_OUTPUT_SIDE: u32 = 16_384;

/// How a model is loaded.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    pub runtime: RuntimeOptions,
    /// Prefer this weight variant when a folder has several (`fp16`).
    pub variant: Option<String>,
    /// A TAESD folder (`config.json` + `diffusion_pytorch_model.safetensors`) for fast previews.
    pub tiny_autoencoder: Option<PathBuf>,
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

/// One generation.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub prompt: String,
    /// `None`: the empty prompt (SD 1.x/2.x) or zeros (SDXL models that ask for them).
    pub negative_prompt: Option<String>,
    /// Output size in pixels. The model draws on the nearest canvas it supports (see
    /// [`Pipeline::canvas_for`]) and the result is resized to exactly this.
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
    pub decoder: Decoder,
}

impl GenerateRequest {
    /// A txt2img request with the usual defaults.
    pub fn new(prompt: impl Into<String>, width: u32, height: u32) -> Self {
        Self {
            prompt: prompt.into(),
            negative_prompt: None,
            width,
            height,
            steps: 25,
            guidance: 7.5,
            guidance_rescale: 0.0,
            seed: 0,
            scheduler: None,
            init_image: None,
            strength: 0.8,
            mask: None,
            decoder: Decoder::Full,
        }
    }
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

/// The denoising loop's state after a step, for callers that want more than the step count
/// (see [`Pipeline::generate_with`]). Borrowed from the loop: nothing is copied unless asked
/// for, so a callback that ignores it costs nothing.
pub struct StepLatents<'a> {
    scheduler: &'a dyn Scheduler,
    step_index: usize,
    /// The (guided) model output of this step and the latents it was computed on.
    model_output: &'a [f32],
    sample: &'a [f32],
    /// The latents after the step.
    latents: &'a [f32],
    /// Latent-blend inpainting: (mask, init latents); outside the mask the picture is the init.
    keep: Option<(&'a [f32], &'a [f32])>,
    latent_size: (usize, usize),
}

impl<'a> StepLatents<'a> {
    /// Latent height and width.
    pub fn latent_size(&self) -> (usize, usize) {
        self.latent_size
    }

    /// The scaled latents after this step (still noisy until the last one).
    pub fn latents(&self) -> &'a [f32] {
        self.latents
    }

    /// The model's current estimate of the finished latents ("x0", diffusers'
    /// `pred_original_sample`), computed on each call: what a preview of the running
    /// generation is decoded from ([`Pipeline::preview`]). For latent-blend inpainting the part
    /// outside the mask is the init image's.
    pub fn denoised(&self) -> Result<Vec<f32>> {
        let mut x0 = self
            .scheduler
            .pred_original_sample(self.model_output, self.step_index, self.sample)
            .map_err(|e| EngineError::Scheduler(e.to_string()))?;
        if let Some((mask, init)) = self.keep {
            for ((x, i), m) in x0.iter_mut().zip(init).zip(mask.iter().cycle()) {
                *x = (1.0 - m) * i + m * *x;
            }
        }
        Ok(x0)
    }
}

impl std::fmt::Debug for StepLatents<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepLatents").field("step_index", &self.step_index).field("latent_size", &self.latent_size).finish_non_exhaustive()
    }
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
    pub image: RgbImage,
    pub seed: u64,
    /// The size the model drew at before the final resize.
    pub canvas: (u32, u32),
    pub steps_run: usize,
    pub scheduler: SchedulerKind,
    pub guidance: f32,
    pub timings: Timings,
    /// Things the caller should know (truncated prompt, scheduler fallbacks, …).
    pub warnings: Vec<String>,
}

/// diffusers' `rescale_noise_cfg`: the guided prediction scaled to the prompt branch's
/// standard deviation (unbiased, over the whole latent as diffusers takes it per sample),
/// mixed `phi` : `1 - phi` with the unscaled one.
pub fn rescale_guided(pos: &[f32], guided: Vec<f32>, phi: f32) -> Vec<f32> {
    if phi <= 0.0 || pos.len() < 2 {
        return guided;
    }
    let std = |v: &[f32]| {
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    };
    let (sp, sg) = (std(pos), std(&guided));
    if sg == 0.0 {
        return guided;
    }
    let factor = (sp / sg) as f32;
    guided.into_iter().map(|g| phi * g * factor + (1.0 - phi) * g).collect()
}

/// Text conditioning for the UNet: `[B, 77, C]` hidden states, and SDXL's pooled embeddings.
/// With guidance, row 0 is the negative prompt and row 1 the prompt.
#[derive(Clone, Debug)]
pub struct Conditioning {
    pub hidden: Array3<f32>,
    pub pooled: Option<Array2<f32>>,
    pub guided: bool,
    pub warnings: Vec<String>,
}

/// The denoising loop's inputs besides the conditioning.
pub struct DenoiseInput<'a> {
    /// Canvas size in latent cells.
    pub latent_size: (usize, usize),
    pub steps: usize,
    pub guidance: f32,
    /// See [`GenerateRequest::guidance_rescale`].
    pub guidance_rescale: f32,
    pub scheduler: Box<dyn Scheduler>,
    /// N(0, 1) noise of the latent's size: the starting point (txt2img) or what the init latents
    /// are noised with (img2img).
    pub noise: Vec<f32>,
    /// Scaled latents of the init image (img2img / inpainting).
    pub init_latents: Option<Vec<f32>>,
    pub strength: f32,
    /// Latent-resolution repaint mask (1 = repaint).
    pub mask: Option<Vec<f32>>,
    /// Scaled latents of the masked image, for 9-channel inpainting UNets.
    pub masked_image_latents: Option<Vec<f32>>,
    /// Draws the fresh noise ancestral samplers need.
    pub rng: &'a mut ChaCha8Rng,
}

struct TextEncoder {
    net: Network,
    tokenizer: ClipTokenizer,
    seq: usize,
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

/// A loaded model, ready to generate. Cheap to share behind an `Arc`; calls run one at a time
/// per network.
pub struct Pipeline {
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

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").field("family", &self.family).field("class", &self.pipeline_class).finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Loads a model: reads configs and weight headers, builds the text encoders and the UNet.
    pub fn load(source: &ModelSource, opts: &LoadOptions) -> Result<Self> {
        let parts = match source {
            ModelSource::Diffusers(dir) => load::diffusers(dir, opts.variant.as_deref())?,
            ModelSource::SingleFile { file, config_dir } => load::single_file(file, config_dir.as_deref())?,
        };
        let rt = &opts.runtime;
        let label = |c: &str| format!("{}-{c}", parts.family.short_name());
        let te1 = TextEncoder {
            net: Network::new(
                &clip::build(&parts.text_encoder.config, &parts.text_encoder.weights, ClipOutputs { projection: false })?,
                &label("text"),
                rt,
            )?,
            seq: parts.text_encoder.config.max_position_embeddings,
            tokenizer: parts.text_encoder.tokenizer,
        };
        let te2 = match parts.text_encoder_2 {
            Some(p) => Some(TextEncoder {
                net: Network::new(&clip::build(&p.config, &p.weights, ClipOutputs { projection: true })?, &label("text2"), rt)?,
                seq: p.config.max_position_embeddings,
                tokenizer: p.tokenizer,
            }),
            None => None,
        };
        let (unet_cfg, unet_w) = parts.unet;
        // The UNet reads the VAE's latents (4 channels in SD; plantain-nano uses 8), or, in an
        // inpainting UNet, latents + mask + masked-image latents.
        let l = parts.vae.0.latent_channels;
        if unet_cfg.in_channels != l && unet_cfg.in_channels != 2 * l + 1 {
            return Err(EngineError::Unsupported(format!(
                "UNet with {} input channels for a VAE with {l} latent channels (expected {l}, or {} for inpainting)",
                unet_cfg.in_channels,
                2 * l + 1
            )));
        }
        let unet = Network::new(&unet::build(&unet_cfg, &unet_w)?, &label("unet"), rt)?;
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
    /// the VAE factor (what diffusers draws by default), or the family's standard size for
    /// configs without one and for the tiny test models (whose `sample_size` means nothing).
    pub fn native_resolution(&self) -> u32 {
        // Below 16 latents a side `sample_size` is a test model's placeholder, not a training size.
        if let Some(latents) = self.unet_cfg.sample_size.filter(|&s| s >= 16) {
            return latents as u32 * self.vae_scale();
        }
        match self.family {
            Family::Sd1 => 512,
            // SD 2.x v-prediction checkpoints are the 768 ones; eps ones (2.x-base, Turbo) 512.
            Family::Sd2 if self.scheduler.prediction_type.as_deref() == Some("v_prediction") => 768,
            Family::Sd2 => 512,
            Family::Sdxl => 1024,
        }
    }

    /// The size the model draws at for a `width`x`height` output: the output itself when both
    /// sides are multiples of [`pixel_multiple`](Self::pixel_multiple) and the area is at most
    /// 1.5² times the native one; otherwise the grid size of the same shape whose area is
    /// closest to the native square (the picture is then resized to the exact output).
    pub fn canvas_for(&self, width: u32, height: u32) -> (u32, u32) {
        let m = self.pixel_multiple();
        let native = self.native_resolution() as f64;
        let max_area = native * native * 2.25;
        if width.is_multiple_of(m) && height.is_multiple_of(m) && (width as f64) * (height as f64) <= max_area {
            return (width, height);
        }
        let ratio = width as f64 / height as f64;
        let mf = m as f64;
        let mut best = (m, m, f64::INFINITY);
        let h0 = (native * native / ratio).sqrt();
        let lo = ((h0 / mf / 2.0).floor() as u32).max(1);
        let hi = (h0 / mf * 2.0).ceil() as u32 + 1;
        for kh in lo..=hi {
            let h = kh as f64 * mf;
            let kw = ((h * ratio / mf).round() as u32).max(1);
            for kw in [kw.saturating_sub(1).max(1), kw, kw + 1] {
                let w = kw as f64 * mf;
                let cost = ((w * h) / (native * native)).ln().abs() + 4.0 * ((w / h) / ratio).ln().abs();
                if cost < best.2 {
                    best = (kw * m, kh * m, cost);
                }
            }
        }
        (best.0, best.1)
    }

    /// Text conditioning for a prompt (and the negative branch when `guidance > 1`).
    pub fn encode_prompt(&self, prompt: &str, negative: Option<&str>, guidance: f32) -> Result<Conditioning> {
        let guided = guidance > 1.0;
        let mut warnings = Vec::new();
        let zero_negative = guided && negative.is_none() && self.force_zeros_for_empty_prompt;
        let mut texts = vec![prompt];
        if guided && !zero_negative {
            texts.insert(0, negative.unwrap_or(""));
        }
        let ids = |enc: &TextEncoder, warnings: &mut Vec<String>| -> Result<ArrayD<i64>> {
            let mut flat = Vec::new();
            for (i, t) in texts.iter().enumerate() {
                let e = enc.tokenizer.encode_for_model(t, enc.seq);
                if e.truncated() {
                    let which = if i + 1 == texts.len() { "prompt" } else { "negative prompt" };
                    warnings.push(format!("{which} is {} tokens; only the first {} are used", e.prompt_tokens, e.kept_tokens));
                }
                flat.extend(e.ids.iter().map(|&v| v as i64));
            }
            ArrayD::from_shape_vec(IxDyn(&[texts.len(), enc.seq]), flat).map_err(|e| EngineError::Runtime(e.to_string()))
        };
        let run = |enc: &TextEncoder, ids: ArrayD<i64>| enc.net.run(vec![("input_ids", Input::I64(ids))]);

        let out1 = run(&self.te1, ids(&self.te1, &mut warnings)?)?;
        let (mut hidden, pooled) = match &self.te2 {
            None => (take(out1, "last_hidden_state")?, None),
            Some(te2) => {
                let mut w2 = Vec::new();
                let out2 = run(te2, ids(te2, &mut w2)?)?;
                let h1 = take(out1, "penultimate")?;
                let mut out2 = out2;
                let pooled = out2.remove("text_embeds").ok_or_else(|| EngineError::Runtime("text encoder 2 gave no text_embeds".into()))?;
                let h2 = take(out2, "penultimate")?;
                let h = concatenate(Axis(2), &[h1.view(), h2.view()]).map_err(|e| EngineError::Runtime(e.to_string()))?;
                (h, Some(pooled))
            }
        };
        let mut pooled = pooled;
        if zero_negative {
            hidden = concatenate(Axis(0), &[ArrayD::zeros(hidden.raw_dim()).view(), hidden.view()])
                .map_err(|e| EngineError::Runtime(e.to_string()))?;
            if let Some(p) = pooled.take() {
                pooled = Some(
                    concatenate(Axis(0), &[ArrayD::zeros(p.raw_dim()).view(), p.view()])
                        .map_err(|e| EngineError::Runtime(e.to_string()))?,
                );
            }
        }
        let hidden = hidden.into_dimensionality().map_err(|e| EngineError::Runtime(e.to_string()))?;
        let pooled = pooled.map(|p| p.into_dimensionality()).transpose().map_err(|e| EngineError::Runtime(e.to_string()))?;
        Ok(Conditioning { hidden, pooled, guided, warnings })
    }

    /// VAE-encodes an image (its size must be a canvas size) to scaled latents, taking the
    /// distribution's mean so that the result depends on the image alone.
    pub fn encode_image(&self, img: &RgbImage) -> Result<Vec<f32>> {
        let enc = self.vae_encoder.get(|| {
            Network::new(
                &vae::build_encoder(&self.vae_cfg, &self.vae_weights)?,
                &format!("{}-vae-enc", self.family.short_name()),
                &self.runtime,
            )
        })?;
        let out = enc.run(vec![("sample", Input::F32(images::to_tensor(img).into_dyn()))])?;
        let mean = out.get("mean").ok_or_else(|| EngineError::Runtime("VAE encoder gave no mean".into()))?;
        let (shift, scale) = (self.vae_cfg.shift_factor.unwrap_or(0.0), self.vae_cfg.scaling_factor);
        Ok(mean.iter().map(|v| (v - shift) * scale).collect())
    }

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

    /// A preview of a running generation at `width`x`height` (the request's output size): the
    /// step's estimate of the finished latents ([`StepLatents::denoised`]) decoded with
    /// [`Pipeline::preview_decoder`] and resized like the final image.
    pub fn preview(&self, step: &StepLatents<'_>, width: u32, height: u32) -> Result<RgbImage> {
        if width == 0 || height == 0 || width > MAX_OUTPUT_SIDE || height > MAX_OUTPUT_SIDE {
            return Err(EngineError::InvalidRequest(format!("preview size {width}x{height} is outside 1..={MAX_OUTPUT_SIDE} per side")));
        }
        let x0 = step.denoised()?;
        let img = self.decode(&x0, step.latent_size(), self.preview_decoder())?;
        Ok(images::resize_exact(img, width, height))
    }

    /// The denoising loop. Returns the final scaled latents.
    pub fn denoise(
        &self,
        cond: &Conditioning,
        input: DenoiseInput,
        progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<Vec<f32>> {
        self.denoise_with(cond, input, &mut |p, _| progress(p))
    }

    /// [`Pipeline::denoise`] with a callback that also sees the step's latents
    /// ([`StepLatents`]), e.g. to make previews.
    pub fn denoise_with(
        &self,
        cond: &Conditioning,
        input: DenoiseInput,
        on_step: &mut dyn FnMut(&Progress, &StepLatents<'_>) -> ControlFlow<()>,
    ) -> Result<Vec<f32>> {
        let DenoiseInput {
            latent_size: (h, w),
            steps,
            guidance,
            guidance_rescale,
            mut scheduler,
            noise,
            init_latents,
            strength,
            mask,
            masked_image_latents,
            rng,
        } = input;
        let c = self.vae_cfg.latent_channels;
        let n = c * h * w;
        if noise.len() != n || init_latents.as_ref().is_some_and(|l| l.len() != n) {
            return Err(EngineError::InvalidRequest(format!("latents must have {n} values ({c}x{h}x{w})")));
        }
        let inpaint9 = self.is_inpainting_model();
        if inpaint9 && (mask.is_none() || masked_image_latents.is_none()) {
            return Err(EngineError::InvalidRequest("this is an inpainting model: give an image and a mask".into()));
        }
        let sched_err = |e: plantain_schedulers::SchedulerError| EngineError::Scheduler(e.to_string());

        // Where to start, and from what.
        let (begin, mut latents) = match &init_latents {
            Some(init) if strength < 1.0 => {
                let begin = scheduler.set_timesteps_img2img(steps, strength as f64).map_err(sched_err)?;
                if begin >= scheduler.timesteps().len() {
                    return Err(EngineError::InvalidRequest(format!(
                        "strength {strength} with {steps} steps leaves no step to run; raise one of them"
                    )));
                }
                (begin, scheduler.add_noise(init, &noise, begin).map_err(sched_err)?)
            }
            _ => {
                scheduler.set_timesteps(steps).map_err(sched_err)?;
                let s = scheduler.init_noise_sigma();
                (0, noise.iter().map(|v| v * s).collect())
            }
        };
        let timesteps = scheduler.timesteps().to_vec();
        let total = timesteps.len() - begin;
        let batch = if cond.guided { 2 } else { 1 };
        if cond.hidden.shape()[0] != batch {
            return Err(EngineError::InvalidRequest(
                "conditioning and guidance disagree (encode the prompt with the same guidance)".into(),
            ));
        }
        let mut fixed: Vec<(&str, ArrayD<f32>)> = vec![("encoder_hidden_states", cond.hidden.clone().into_dyn())];
        if self.unet_cfg.text_time.is_some() {
            let pooled = cond.pooled.as_ref().ok_or_else(|| EngineError::InvalidRequest("SDXL needs pooled text embeddings".into()))?;
            fixed.push(("text_embeds", pooled.clone().into_dyn()));
            let (ph, pw) = ((h * self.vae_scale() as usize) as f32, (w * self.vae_scale() as usize) as f32);
            // original size, crop top-left, target size: an uncropped picture of the canvas size.
            let ids: Vec<f32> = (0..batch).flat_map(|_| [ph, pw, 0.0, 0.0, ph, pw]).collect();
            fixed.push(("time_ids", shaped(&[batch, 6], ids)?));
        }
        let extra: Option<Vec<f32>> = if inpaint9 {
            let (m, ml) = (mask.as_ref().expect("checked above"), masked_image_latents.as_ref().expect("checked above"));
            Some(m.iter().chain(ml.iter()).copied().collect())
        } else {
            None
        };
        let in_ch = self.unet_cfg.in_channels;

        let started = Instant::now();
        for (k, i) in (begin..timesteps.len()).enumerate() {
            let t = timesteps[i];
            let scaled = scheduler.scale_model_input(&latents, i).map_err(sched_err)?;
            let mut one = scaled;
            if let Some(extra) = &extra {
                one.extend_from_slice(extra);
            }
            let sample: Vec<f32> = (0..batch).flat_map(|_| one.iter().copied()).collect();
            let mut inputs = vec![
                ("sample", Input::F32(shaped(&[batch, in_ch, h, w], sample)?)),
                ("timestep", Input::F32(shaped(&[batch], vec![t; batch])?)),
            ];
            for (name, v) in &fixed {
                inputs.push((name, Input::F32(v.clone())));
            }
            let out = self.unet.run(inputs)?;
            let pred = out.get("out_sample").ok_or_else(|| EngineError::Runtime("UNet gave no output".into()))?;
            let pred = pred.as_slice().ok_or_else(|| EngineError::Runtime("UNet output not contiguous".into()))?;
            let model_out: Vec<f32> = if cond.guided {
                let (neg, pos) = pred.split_at(n);
                let guided: Vec<f32> = neg.iter().zip(pos).map(|(u, c)| u + guidance * (c - u)).collect();
                rescale_guided(&pos[..n], guided, guidance_rescale)
            } else {
                pred[..n].to_vec()
            };
            let step_noise = if scheduler.needs_noise(i) { Some(gaussian(rng, n)) } else { None };
            let mut next = scheduler.step(&model_out, i, &latents, step_noise.as_deref()).map_err(sched_err)?;
            // Latent-blend inpainting for ordinary checkpoints: keep the unmasked part on the
            // init image's trajectory.
            let keep = match (&mask, &init_latents) {
                (Some(m), Some(init)) if !inpaint9 => Some((m.as_slice(), init.as_slice())),
                _ => None,
            };
            if let Some((m, init)) = keep {
                let proper =
                    if i + 1 < timesteps.len() { scheduler.add_noise(init, &noise, i + 1).map_err(sched_err)? } else { init.to_vec() };
                for ((l, p), mv) in next.iter_mut().zip(&proper).zip(m.iter().cycle()) {
                    *l = (1.0 - mv) * p + mv * *l;
                }
            }
            let progress = Progress { step: k + 1, total, timestep: t, elapsed: started.elapsed() };
            let state = StepLatents {
                scheduler: scheduler.as_ref(),
                step_index: i,
                model_output: &model_out,
                sample: &latents,
                latents: &next,
                keep,
                latent_size: (h, w),
            };
            if on_step(&progress, &state).is_break() {
                return Err(EngineError::Cancelled);
            }
            latents = next;
        }
        Ok(latents)
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

    /// The whole job: text → (image →) latents → denoise → pixels at the requested size.
    pub fn generate(&self, req: &GenerateRequest, progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>) -> Result<Generated> {
        self.generate_with(req, &mut |p, _| progress(p))
    }

    /// [`Pipeline::generate`] with a callback that also sees each step's latents: pass them
    /// to [`Pipeline::preview`] for a preview image of the request's size.
    pub fn generate_with(
        &self,
        req: &GenerateRequest,
        on_step: &mut dyn FnMut(&Progress, &StepLatents<'_>) -> ControlFlow<()>,
    ) -> Result<Generated> {
        self.validate(req)?;
        let mut timings = Timings::default();
        let (cw, ch) = self.canvas_for(req.width, req.height);
        let vs = self.vae_scale();
        let latent_size = ((ch / vs) as usize, (cw / vs) as usize);
        let n = self.vae_cfg.latent_channels * latent_size.0 * latent_size.1;
        let mut rng = ChaCha8Rng::seed_from_u64(req.seed);
        let noise = gaussian(&mut rng, n);

        let t = Instant::now();
        let cond = self.encode_prompt(&req.prompt, req.negative_prompt.as_deref(), req.guidance)?;
        timings.text = t.elapsed();
        let mut warnings = cond.warnings.clone();

        let t = Instant::now();
        let init = req.init_image.as_ref().map(|img| images::resize_exact(img.clone(), cw, ch));
        let mask = req.mask.as_ref().map(|m| image::imageops::resize(m, cw, ch, image::imageops::FilterType::Triangle));
        let init_latents = match &init {
            Some(img) => Some(self.encode_image(img)?),
            None => None,
        };
        let (latent_mask, masked_latents) = match (&init, &mask) {
            (Some(img), Some(m)) => {
                let lm = images::latent_mask(m, latent_size.1, latent_size.0);
                let masked = if self.is_inpainting_model() {
                    let t = images::masked_tensor(&images::to_tensor(img), m);
                    Some(self.encode_image(&images::from_tensor(&t.into_dyn()))?)
                } else {
                    None
                };
                (Some(lm), masked)
            }
            _ => (None, None),
        };
        timings.image_encode = t.elapsed();

        let (scheduler, kind, fallback) = self.scheduler_for(req.scheduler)?;
        warnings.extend(fallback);
        // Inpainting with a 9-channel UNet starts from pure noise unless a strength < 1 is asked.
        let strength = if init.is_some() { req.strength } else { 1.0 };
        let t = Instant::now();
        let steps_before = req.steps;
        let latents = self.denoise_with(
            &cond,
            DenoiseInput {
                latent_size,
                steps: req.steps,
                guidance: req.guidance,
                guidance_rescale: req.guidance_rescale,
                scheduler,
                noise,
                init_latents,
                strength,
                mask: latent_mask,
                masked_image_latents: masked_latents,
                rng: &mut rng,
            },
            on_step,
        )?;
        timings.denoise = t.elapsed();
        let t = Instant::now();
        let image = self.decode(&latents, latent_size, req.decoder)?;
        timings.decode = t.elapsed();
        let steps_run = if strength < 1.0 { (steps_before as f32 * strength).floor().max(0.0) as usize } else { steps_before };
        Ok(Generated {
            image: images::resize_exact(image, req.width, req.height),
            seed: req.seed,
            canvas: (cw, ch),
            steps_run,
            scheduler: kind,
            guidance: req.guidance,
            timings,
            warnings,
        })
    }

    fn validate(&self, req: &GenerateRequest) -> Result<()> {
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
        if self.is_inpainting_model() && req.mask.is_none() {
            return bad("this is an inpainting model: give an image and a mask".into());
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::rescale_guided;

    fn std(v: &[f32]) -> f64 {
        let n = v.len() as f64;
        let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        (v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    }

    #[test]
    fn guidance_rescale_matches_the_prompt_branch_spread() {
        let pos: Vec<f32> = (0..64).map(|i| ((i * 37 % 17) as f32 - 8.0) * 0.1).collect();
        let guided: Vec<f32> = pos.iter().enumerate().map(|(i, p)| 3.0 * p + 0.05 * (i % 5) as f32).collect();
        assert_eq!(rescale_guided(&pos, guided.clone(), 0.0), guided, "0 is plain guidance");
        let full = rescale_guided(&pos, guided.clone(), 1.0);
        assert!((std(&full) - std(&pos)).abs() < 1e-5, "{} vs {}", std(&full), std(&pos));
        let ratio = full[3] / guided[3];
        assert!(full.iter().zip(&guided).all(|(f, g)| (f - g * ratio).abs() < 1e-5), "a pure rescale of the guided prediction");
        let half = rescale_guided(&pos, guided.clone(), 0.7);
        for ((h, f), g) in half.iter().zip(&full).zip(&guided) {
            assert!((h - (0.7 * f + 0.3 * g)).abs() < 1e-5);
        }
    }
}
