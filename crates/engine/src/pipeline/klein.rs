//! FLUX.2 [klein]: text-to-image and editing by instruction, as diffusers' `Flux2KleinPipeline`
//! runs the distilled model (one transformer pass per step, no guidance).
//!
//! Prompt ids → Qwen3 hidden states of layers 9/18/27 → flow-matching Euler over patchified,
//! batch-norm-normalised VAE latents packed into tokens → unpack → VAE decode. Each reference
//! image is VAE-encoded (posterior mode), patchified, normalised and packed; its tokens follow the
//! noisy image tokens with their own RoPE time coordinate, and only the noisy tokens' outputs
//! are kept.
//!
//! Loading builds every graph (which binds and checks every tensor) before any ONNX Runtime
//! session is created, so a wrong or incomplete checkpoint fails at once, naming the file and
//! the tensor.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::{ArrayD, Axis, IxDyn};
use plantain_schedulers::{FlowMatchConfig, FlowMatchEuler};

use super::WeightOptions;
use super::klein_prompt::KleinTokenizer;
use super::load::component_weights;
use crate::error::{EngineError, Result};
use crate::graph::Graph;
use crate::models::flux2::{self, Flux2Config};
use crate::models::presets::FLUX2_KLEIN;
use crate::models::qwen3::{self, Qwen3Config};
use crate::models::vae::{self, VaeConfig};
use crate::runtime::{Input, Network, Resident, RuntimeOptions};
use crate::weights::quant::{Packer, scratch_dir};
use crate::weights::{TensorIndex, bfl, gguf};

/// The loaded FLUX.2 [klein] networks.
pub struct KleinPipeline {
    tokenizer: KleinTokenizer,
    /// Always loaded, or (lean) created for each prompt from its graph.
    text_encoder: Resident,
    transformer: Network,
    vae_encoder: Network,
    vae_decoder: Network,
    dit: Flux2Config,
    vae: VaeConfig,
}

/// One flow-matching step of [`KleinPipeline::denoise_with`].
pub struct KleinStep<'a> {
    /// 0-based step index, of `total`.
    pub index: usize,
    pub total: usize,
    /// The noise level the step started from (1 → 0).
    pub sigma: f32,
    /// Packed latents `[1, h*w, C]` after the step.
    pub latents: &'a ArrayD<f32>,
    /// The step's estimate of the finished latents (`x - sigma * velocity`), packed.
    pub denoised: &'a ArrayD<f32>,
    /// The token grid (h, w).
    pub grid: (usize, usize),
}

impl KleinStep<'_> {
    /// Packed `[1, h*w, C]` tokens → `[C, h, w]` values (the latent layout decoders read).
    pub fn unpacked(packed: &ArrayD<f32>, grid: (usize, usize)) -> Result<Vec<f32>> {
        Ok(as_vec(&unpack(packed, grid.0, grid.1)?))
    }
}

/// One component's config and graph(s), built before any session exists.
struct Built {
    dit: Flux2Config,
    vae: VaeConfig,
    text: Graph,
    transformer: Graph,
    vae_encoder: Graph,
    vae_decoder: Graph,
}

/// One component's weights: the files they come from, their index, and how a diffusers name is
/// spelled in those files (for error messages).
struct Weights {
    files: Vec<PathBuf>,
    index: TensorIndex,
    original: fn(&str) -> String,
}

impl Weights {
    /// A folder component's weights, packed by `packer` when given.
    fn folder(dir: &Path, component: &str, base: &str, packer: Option<&Arc<Packer>>) -> Result<Self> {
        let files = component_weights(dir, component, base, None)?;
        let mut index = TensorIndex::open_all(&files)?;
        if let Some(p) = packer {
            index = index.with_packer(p.clone());
        }
        Ok(Self { files, index, original: str::to_string })
    }

    /// Builds with `index`; a missing or misshapen tensor is reported with the files, named as
    /// they name it.
    fn run<T>(&self, index: &TensorIndex, build: impl Fn(&TensorIndex) -> Result<T>) -> Result<T> {
        build(index).map_err(|e| match e {
            EngineError::MissingWeight { name, .. } => {
                EngineError::MissingTensor { files: file_list(&self.files), name: (self.original)(&name) }
            }
            EngineError::ShapeMismatch { name, expected, found, .. } => EngineError::BadConfig {
                path: self.files[0].clone(),
                reason: format!("tensor `{}` has shape {found:?}, the config says {expected:?}", (self.original)(&name)),
            },
            other => other,
        })
    }
    /// Checks every tensor's name and shape without quantising or repacking anything.
    fn check<T>(&self, build: impl Fn(&TensorIndex) -> Result<T>) -> Result<()> {
        self.run(&self.index.dry_run(), build).map(drop)
    }
    fn build<T>(&self, build: impl Fn(&TensorIndex) -> Result<T>) -> Result<T> {
        self.run(&self.index, build)
    }
}

fn file_list(files: &[PathBuf]) -> String {
    files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
}

fn config<T>(dir: &Path, component: &str, name: &str, parse: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let path = dir.join(component).join(name);
    if !path.is_file() {
        return Err(EngineError::MissingFile { what: format!("{component} config"), looked_for: vec![path] });
    }
    parse(&path)
}

impl Built {
    fn new(dir: &Path, opts: &WeightOptions, runtime: &RuntimeOptions) -> Result<Self> {
        let spec = FLUX2_KLEIN;
        check_distilled(dir)?;
        let te_cfg = config(dir, "text_encoder", "config.json", Qwen3Config::from_file)?;
        let dit = config(dir, "transformer", "config.json", Flux2Config::from_file)?;
        let vae = config(dir, "vae", "config.json", VaeConfig::from_file)?;
        let sched_path = dir.join("scheduler/scheduler_config.json");
        FlowMatchConfig::from_file(&sched_path).map_err(|e| EngineError::bad_config(&sched_path, e))?;
        let context = spec.text_layers.len() * te_cfg.hidden_size;
        if dit.joint_attention_dim != context || vae.patch().is_none() || dit.in_channels != vae.latent_channels * 4 {
            return Err(EngineError::Unsupported(format!(
                "{}: not a FLUX.2 [klein] folder (transformer context {} vs text encoder {}x{}, transformer input {} vs VAE latents {}x4)",
                dir.display(),
                dit.joint_attention_dim,
                spec.text_layers.len(),
                te_cfg.hidden_size,
                dit.in_channels,
                vae.latent_channels
            )));
        }
        opts.check_device(runtime)?;
        let quant = opts.spec()?;
        let packer = match (quant, &opts.transformer_file) {
            (None, None) => None,
            _ => Some(Arc::new(Packer::new(&scratch_dir(&runtime.cache_dir), quant)?)),
        };
        let text_quant = opts.text_spec()?;
        let te_packer = match &packer {
            Some(_) if text_quant.is_some() && text_quant != quant => {
                Some(Arc::new(Packer::new(&scratch_dir(&runtime.cache_dir), text_quant)?))
            }
            _ => packer.clone().filter(|_| quant.is_some()),
        };
        let te_w = Weights::folder(dir, "text_encoder", "model", te_packer.as_ref())?;
        let dit_w = match &opts.transformer_file {
            Some(file) => Weights {
                files: vec![file.clone()],
                index: gguf::flux2_transformer(file, packer.clone().expect("a packer exists for a transformer file"))?,
                original: |n| bfl::from_diffusers(n).unwrap_or_else(|| n.to_string()),
            },
            None => Weights::folder(dir, "transformer", "diffusion_pytorch_model", packer.as_ref())?,
        };
        let vae_w = Weights::folder(dir, "vae", "diffusion_pytorch_model", None)?;
        let text = |w: &TensorIndex| qwen3::build(&te_cfg, w, spec.text_len, &spec.text_layers);
        let transformer = |w: &TensorIndex| flux2::build(&dit, w);
        let vaes = |w: &TensorIndex| Ok((vae::build_flux2_encoder(&vae, w)?, vae::build_flux2_decoder(&vae, w)?));
        // Every tensor of every component is checked before anything is quantised.
        te_w.check(text)?;
        dit_w.check(transformer)?;
        let (vae_encoder, vae_decoder) = vae_w.build(vaes)?;
        let transformer = dit_w.build(transformer)?;
        let text = te_w.build(text)?;
        Ok(Self { dit, vae, text, transformer, vae_encoder, vae_decoder })
    }
}

/// The base (undistilled) [klein] models need classifier-free guidance with a negative prompt,
/// which this pipeline does not run: refuse them rather than sample them wrongly.
fn check_distilled(dir: &Path) -> Result<()> {
    let path = dir.join("model_index.json");
    let text = std::fs::read_to_string(&path).map_err(|e| EngineError::io(&path, e))?;
    let index: serde_json::Value = serde_json::from_str(&text).map_err(|e| EngineError::bad_config(&path, e))?;
    let class = index.get("_class_name").and_then(serde_json::Value::as_str).unwrap_or("");
    if class != "Flux2KleinPipeline" {
        return Err(EngineError::bad_config(&path, format!("pipeline `{class}` is not Flux2KleinPipeline")));
    }
    if index.get("is_distilled").and_then(serde_json::Value::as_bool) != Some(true) {
        return Err(EngineError::Unsupported(format!(
            "{}: an undistilled FLUX.2 [klein] (is_distilled is not true) needs classifier-free guidance, which is not supported yet",
            path.display()
        )));
    }
    Ok(())
}

const TEXT_ENCODER: &str = "klein-text-encoder";

impl KleinPipeline {
    /// Loads a FLUX.2 [klein] diffusers folder (`text_encoder/`, `transformer/`, `vae/`,
    /// `scheduler/`) in f32.
    pub fn load(dir: &Path, runtime: &RuntimeOptions) -> Result<Self> {
        Self::load_with(dir, runtime, &WeightOptions::default())
    }

    /// Loads a FLUX.2 [klein] diffusers folder with `opts` (quantised weights, a single-file
    /// transformer, lean memory). Every tensor is checked before anything is quantised.
    pub fn load_with(dir: &Path, runtime: &RuntimeOptions, opts: &WeightOptions) -> Result<Self> {
        let b = Built::new(dir, opts, runtime)?;
        let tokenizer = KleinTokenizer::from_dir(&dir.join("tokenizer"))?;
        let text_encoder = Resident::new(b.text, TEXT_ENCODER, runtime, opts.lean)?;
        let transformer = Network::new(&b.transformer, "klein-transformer", runtime)?;
        Ok(Self {
            tokenizer,
            text_encoder,
            transformer: if opts.lean { transformer.releasing() } else { transformer },
            vae_encoder: Network::new(&b.vae_encoder, "klein-vae-encoder", runtime)?.releasing(),
            vae_decoder: Network::new(&b.vae_decoder, "klein-vae-decoder", runtime)?.releasing(),
            dit: b.dit,
            vae: b.vae,
        })
    }

    /// Pixels per latent token along each axis (16 for the real VAE).
    pub fn pixels_per_token(&self) -> usize {
        self.vae.scale_factor() * 2
    }

    /// Channels of the patchified latents the transformer denoises (`[1, C, h, w]`).
    pub fn latent_channels(&self) -> usize {
        self.dit.in_channels
    }

    /// The transformer's context `[1, text_len, 3 * hidden]` for a prompt.
    pub fn encode_prompt(&self, prompt: &str) -> Result<ArrayD<f32>> {
        let (ids, mask) = self.tokenizer.encode(prompt)?;
        self.encode_prompt_ids(ids, mask)
    }

    /// The transformer's context `[B, text_len, 3 * hidden]` for tokenised prompts `[B, text_len]`
    /// and their attention masks.
    pub fn encode_prompt_ids(&self, ids: ArrayD<i64>, mask: ArrayD<i64>) -> Result<ArrayD<f32>> {
        let inputs = vec![("input_ids", Input::I64(ids)), ("attention_mask", Input::I64(mask))];
        let mut out = self.text_encoder.run(inputs)?;
        out.remove("hidden").ok_or_else(|| EngineError::Runtime("text encoder returned no `hidden`".into()))
    }

    /// A reference picture `[1, 3, H, W]` in [-1, 1] (sides multiples of
    /// [`Self::pixels_per_token`]) → normalised patchified latents `[1, C, H/16, W/16]`.
    pub fn encode_reference(&self, image: ArrayD<f32>) -> Result<ArrayD<f32>> {
        let m = self.pixels_per_token();
        let s = image.shape();
        if s.len() != 4 || s[0] != 1 || s[1] != 3 || !s[2].is_multiple_of(m) || !s[3].is_multiple_of(m) || s[2] == 0 || s[3] == 0 {
            return Err(EngineError::InvalidRequest(format!(
                "a reference image must be [1, 3, H, W] with H and W multiples of {m}, got {s:?}"
            )));
        }
        let mut out = self.vae_encoder.run(vec![("sample", Input::F32(image))])?;
        out.remove("latent").ok_or_else(|| EngineError::Runtime("VAE encoder returned no `latent`".into()))
    }

    /// Runs `steps` flow-matching steps from `noise` `[1, C, h, w]` (the patchified latent shape)
    /// with `context` `[1, L, D]` and the encoded `references`; returns the final latents `[1, C,
    /// h, w]`. `on_step(i, latents)` sees the packed latents `[1, h*w, C]` after each step.
    pub fn denoise(
        &self,
        context: &ArrayD<f32>,
        noise: &ArrayD<f32>,
        references: &[ArrayD<f32>],
        steps: usize,
        on_step: &mut dyn FnMut(usize, &ArrayD<f32>),
    ) -> Result<ArrayD<f32>> {
        self.denoise_with(context, noise, references, steps, &mut |s| {
            on_step(s.index, s.latents);
            ControlFlow::Continue(())
        })
    }

    /// [`Self::denoise`] with the whole state of each step ([`KleinStep`]); the callback's
    /// [`ControlFlow::Break`] stops the loop with [`EngineError::Cancelled`].
    pub fn denoise_with(
        &self,
        context: &ArrayD<f32>,
        noise: &ArrayD<f32>,
        references: &[ArrayD<f32>],
        steps: usize,
        on_step: &mut dyn FnMut(&KleinStep<'_>) -> ControlFlow<()>,
    ) -> Result<ArrayD<f32>> {
        let (c, h, w) = latent_dims(noise, self.dit.in_channels)?;
        if context.ndim() != 3 || context.shape()[0] != 1 {
            return Err(EngineError::InvalidRequest(format!("context must be [1, L, D], got {:?}", context.shape())));
        }
        let mut ids = token_ids(0, h, w);
        let mut ref_tokens = Vec::new();
        for (i, r) in references.iter().enumerate() {
            let (_, rh, rw) = latent_dims(r, c)?;
            ids.extend(token_ids(FLUX2_KLEIN.ref_time_scale * (i as i64 + 1), rh, rw));
            ref_tokens.push(pack(r));
        }
        let text_ids: Vec<[i64; 4]> = (0..context.shape()[1] as i64).map(|l| [0, 0, 0, l]).collect();
        let ropes = [flux2::rope_tables(&text_ids, &self.dit), flux2::rope_tables(&ids, &self.dit)];
        let schedule = FlowMatchEuler::flux2(steps, h * w).map_err(|e| EngineError::Scheduler(e.to_string()))?;
        let mut x = pack(noise);
        for i in 0..steps {
            let mut parts = vec![x.view()];
            parts.extend(ref_tokens.iter().map(|r| r.view()));
            let hidden = ndarray::concatenate(Axis(1), &parts).map_err(|e| EngineError::Runtime(e.to_string()))?;
            let sigma = schedule.sigmas()[i];
            let v = self.velocity(hidden, context, sigma, &ropes, i + 1 == steps)?;
            let v = as_vec(&v.slice_axis(Axis(1), (0..h * w).into()).to_owned());
            let sample = as_vec(&x);
            let denoised: Vec<f32> = sample.iter().zip(&v).map(|(s, v)| s - sigma * v).collect();
            let next = schedule.step(&v, i, &sample)?;
            x = ArrayD::from_shape_vec(x.raw_dim(), next).map_err(shape_error)?;
            let denoised = ArrayD::from_shape_vec(x.raw_dim(), denoised).map_err(shape_error)?;
            let step = KleinStep { index: i, total: steps, sigma, latents: &x, denoised: &denoised, grid: (h, w) };
            if on_step(&step).is_break() {
                return Err(EngineError::Cancelled);
            }
        }
        unpack(&x, h, w)
    }

    /// One transformer pass; the last step gives the transformer's activation memory back
    /// before the VAE decodes.
    fn velocity(
        &self,
        hidden: ArrayD<f32>,
        context: &ArrayD<f32>,
        sigma: f32,
        ropes: &[(Vec<f32>, Vec<f32>); 2],
        last: bool,
    ) -> Result<ArrayD<f32>> {
        let d = self.dit.attention_head_dim;
        let table = |v: &Vec<f32>| ArrayD::from_shape_vec(IxDyn(&[v.len() / d, d]), v.clone()).map(Input::F32);
        let bad = shape_error;
        let inputs = vec![
            ("hidden_states", Input::F32(hidden)),
            ("encoder_hidden_states", Input::F32(context.clone())),
            ("timestep", Input::F32(ArrayD::from_shape_vec(IxDyn(&[1]), vec![sigma]).map_err(bad)?)),
            ("txt_cos", table(&ropes[0].0).map_err(bad)?),
            ("txt_sin", table(&ropes[0].1).map_err(bad)?),
            ("img_cos", table(&ropes[1].0).map_err(bad)?),
            ("img_sin", table(&ropes[1].1).map_err(bad)?),
        ];
        let mut out = if last { self.transformer.run_releasing(inputs)? } else { self.transformer.run(inputs)? };
        out.remove("sample").ok_or_else(|| EngineError::Runtime("transformer returned no `sample`".into()))
    }

    /// Final latents `[1, C, h, w]` → pixels `[1, 3, 16h, 16w]` in about [-1, 1].
    pub fn decode(&self, latents: ArrayD<f32>) -> Result<ArrayD<f32>> {
        let mut out = self.vae_decoder.run(vec![("latent", Input::F32(latents))])?;
        out.remove("sample").ok_or_else(|| EngineError::Runtime("VAE decoder returned no `sample`".into()))
    }
}

impl From<plantain_schedulers::SchedulerError> for EngineError {
    fn from(e: plantain_schedulers::SchedulerError) -> Self {
        EngineError::Scheduler(e.to_string())
    }
}

fn latent_dims(a: &ArrayD<f32>, channels: usize) -> Result<(usize, usize, usize)> {
    match a.shape() {
        &[1, c, h, w] if c == channels && h > 0 && w > 0 => Ok((c, h, w)),
        s => Err(EngineError::InvalidRequest(format!("latents must be [1, {channels}, h, w], got {s:?}"))),
    }
}

/// Position ids `(t, row, column, 0)` of an `h`×`w` token grid, row-major.
fn token_ids(t: i64, h: usize, w: usize) -> Vec<[i64; 4]> {
    (0..h as i64).flat_map(|y| (0..w as i64).map(move |x| [t, y, x, 0])).collect()
}

fn shape_error(e: ndarray::ShapeError) -> EngineError {
    EngineError::Runtime(format!("latent shapes: {e}"))
}

/// `[1, C, h, w]` → `[1, h*w, C]` (row-major tokens).
fn pack(a: &ArrayD<f32>) -> ArrayD<f32> {
    let s = a.shape();
    let (c, h, w) = (s[1], s[2], s[3]);
    ArrayD::from_shape_fn(IxDyn(&[1, h * w, c]), |i| a[[0, i[2], i[1] / w, i[1] % w]])
}

/// `[1, h*w, C]` → `[1, C, h, w]`.
fn unpack(t: &ArrayD<f32>, h: usize, w: usize) -> Result<ArrayD<f32>> {
    let c = t.shape()[2];
    if t.shape()[1] != h * w {
        return Err(EngineError::Runtime(format!("{} tokens for a {h}x{w} grid", t.shape()[1])));
    }
    Ok(ArrayD::from_shape_fn(IxDyn(&[1, c, h, w]), |i| t[[0, i[2] * w + i[3], i[1]]]))
}

fn as_vec(a: &ArrayD<f32>) -> Vec<f32> {
    a.as_standard_layout().iter().copied().collect()
}
