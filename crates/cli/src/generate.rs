//! `plantain generate`.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use plantain_core::{AspectRatio, DEFAULT_STRENGTH, ImageSize, output_pixels};
use plantain_engine::pipeline::WeightOptions;
use plantain_engine::pipeline::{Decoder, GenerateRequest, Generated, LoadOptions, LoraSpec, ModelSource, Pipeline};
use plantain_engine::resize::{Lanczos3, Resizer};
use plantain_engine::runtime::RuntimeOptions;
use plantain_engine::upscale::{SuperResolution, UpscaleModel, Upscaler};
use plantain_engine::weights::quant::WeightBits;
use plantain_hub::{Layout, ResolvedModel, resolve};

use crate::io;
use crate::provenance_cmd::{self, StampArgs};

#[derive(clap::Args)]
pub struct Args {
    /// What to draw (or, with --image, how to change it).
    pub prompt: String,
    /// plantain-nano (bundled, the default), a short name (sd15, sd21, sd-turbo, sdxl, sdxl-turbo), hub repo id,
    /// diffusers folder or .safetensors file.
    #[arg(long, short, default_value = "plantain-nano")]
    pub model: String,
    /// Aspect ratio: 1:1, 2:3, 3:2, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9, 21:9, 1:4, 4:1, 1:8, 8:1.
    #[arg(long, default_value = "1:1")]
    pub aspect: AspectRatio,
    /// Size preset: 512, 1K, 2K, 4K (exact pixels per the Gemini table). Default: the preset
    /// nearest the model's native resolution.
    #[arg(long)]
    pub size: Option<ImageSize>,
    /// Exact output width (with --height; overrides --aspect/--size).
    #[arg(long, requires = "height")]
    pub width: Option<u32>,
    #[arg(long, requires = "width")]
    pub height: Option<u32>,
    /// Seed (u64); random when not given, and always printed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Denoising steps (default: the model's).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Guidance scale; at or below 1 the negative prompt is not used (default: the model's).
    #[arg(long)]
    pub guidance: Option<f32>,
    /// Rescale the guided prediction toward the prompt branch's spread, 0..=1 (diffusers'
    /// guidance_rescale; helps zero-terminal-SNR models at high guidance).
    #[arg(long, default_value_t = 0.0)]
    pub guidance_rescale: f32,
    #[arg(long, short = 'n')]
    pub negative: Option<String>,
    /// euler, euler-a, dpm++2m, dpm++2m-karras, dpm++2m-sde[-karras], ddim, lcm, turbo (default: the model's).
    #[arg(long)]
    pub scheduler: Option<String>,
    /// Image to edit (img2img), or to inpaint with --mask.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Inpainting mask: white = repaint, black = keep.
    #[arg(long, requires = "image")]
    pub mask: Option<PathBuf>,
    /// How much to change --image, 0..1.
    #[arg(long, default_value_t = DEFAULT_STRENGTH)]
    pub strength: f32,
    /// Decode with this TAESD folder instead of the full VAE (much faster, a little softer).
    #[arg(long)]
    pub tiny_vae: Option<PathBuf>,
    /// For a single .safetensors file: a diffusers folder whose configs describe it.
    #[arg(long)]
    pub config_dir: Option<PathBuf>,
    /// Prefer this weight variant in a diffusers folder (e.g. fp16).
    #[arg(long)]
    pub variant: Option<String>,
    /// A LoRA file (kohya or diffusers/PEFT naming, .safetensors), FILE or FILE:SCALE; several
    /// are applied in order.
    #[arg(long = "lora", value_name = "FILE[:SCALE]", value_parser = LoraSpec::parse)]
    pub loras: Vec<LoraSpec>,
    #[command(flatten)]
    pub weights: WeightArgs,
    /// What enlarges the model's picture to a larger size (2K, 4K): x4plus (photographs), anime
    /// or animevideov3 (illustrations; fast), each then resized to the exact pixels, or lanczos
    /// alone. Default: animevideov3 on the CPU, x4plus with --cuda (as the server).
    #[arg(long, value_parser = parse_enlarger)]
    pub upscaler: Option<Enlarger>,
    /// CPU threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Run on the GPU (builds with `--features cuda` and the onnxruntime-gpu library only).
    #[arg(long)]
    pub cuda: bool,
    /// Output file; the format follows the extension: .png, .jpg/.jpeg or .webp (lossless).
    #[arg(long, short, default_value = "out.png")]
    pub output: PathBuf,
    #[command(flatten)]
    pub checks: LoopArgs,
    /// Print the plan before generating and every attempt's checks after.
    #[arg(long)]
    pub explain: bool,
    /// Provenance: every output carries an invisible watermark and signed C2PA Content
    /// Credentials unless switched off here.
    #[command(flatten)]
    pub provenance: StampArgs,
}

/// How a model holds its weights (`generate`, `edit`, `fuse`; the server's `[[models]]` keys
/// `weights`, `transformer_file`, `lean`).
#[derive(clap::Args, Clone, Default)]
pub struct WeightArgs {
    /// The denoiser's (UNet or transformer) and text encoders' weights as f32, or quantised at
    /// load: linear layers to int8 or int4 (about 3.5x / 6x smaller, with a scale per 32
    /// weights), a UNet's convolutions to int8 per channel (about 4x smaller, widened one layer
    /// at a time as they run). `w8a8`: linear layers int8 per output channel with their inputs
    /// quantised to int8 per tensor as they run (the fastest on CPUs with VNNI, the largest
    /// error where inputs have outliers). The VAE and norms stay f32.
    #[arg(long, default_value = "f32")]
    pub weights: WeightBits,
    /// FLUX.2 [klein]: the transformer from one file (BFL/ComfyUI naming): GGUF (F32, F16, BF16,
    /// Q8_0, Q4_0) or safetensors, instead of the folder's transformer/.
    #[arg(long)]
    pub transformer_file: Option<PathBuf>,
    /// Release the text encoder(s) after each prompt (less memory while denoising, a few
    /// seconds more per prompt).
    #[arg(long)]
    pub lean: bool,
}

impl WeightArgs {
    pub fn options(&self) -> WeightOptions {
        WeightOptions { weights: self.weights, transformer_file: self.transformer_file.clone(), lean: self.lean, ..Default::default() }
    }
}

/// Where a model comes from and how to run it (shared by `generate`, `edit` and `fuse`).
#[derive(Default)]
pub struct LoadSpec {
    pub config_dir: Option<PathBuf>,
    pub variant: Option<String>,
    pub tiny_vae: Option<PathBuf>,
    pub loras: Vec<LoraSpec>,
    pub threads: usize,
    pub cuda: bool,
    pub weights: WeightOptions,
}

/// Resolves the model (names, hub cache, files).
pub fn resolve_model(model: &str) -> Result<ResolvedModel> {
    let resolved = resolve(model, &crate::hubcmd::resolve_options())?;
    for n in &resolved.notes {
        eprintln!("note: {n}");
    }
    Ok(resolved)
}

/// Loads a resolved model, with a spinner, and prints what was loaded.
pub fn load_pipeline(resolved: &ResolvedModel, l: &LoadSpec) -> Result<Pipeline> {
    let source = match resolved.layout {
        Layout::Diffusers => ModelSource::Diffusers(resolved.path.clone()),
        Layout::SingleFile => ModelSource::SingleFile { file: resolved.path.clone(), config_dir: l.config_dir.clone() },
        Layout::Onnx => bail!("{}: ONNX exports are not loaded; use the model's safetensors weights", resolved.path.display()),
    };
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(format!("loading {}", resolved.display_name));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let started = Instant::now();
    let opts = LoadOptions {
        runtime: RuntimeOptions { threads: l.threads, cuda: l.cuda, ..Default::default() },
        variant: l.variant.clone(),
        tiny_autoencoder: l.tiny_vae.clone(),
        loras: l.loras.clone(),
        weights: l.weights.clone(),
    };
    let hint = match &source {
        ModelSource::SingleFile { config_dir: None, .. } => {
            " (a non-standard single file needs --config-dir with a diffusers folder of its configs)"
        }
        _ => "",
    };
    let pipeline = Pipeline::load(&source, &opts).with_context(|| format!("loading {}{hint}", resolved.path.display()))?;
    spinner.finish_and_clear();
    eprintln!("loaded {} ({}) in {:.1}s", resolved.display_name, pipeline.architecture(), started.elapsed().as_secs_f32());
    for n in pipeline.notes() {
        eprintln!("note: {n}");
    }
    Ok(pipeline)
}

/// The loop's settings, shared by `generate`, `edit` and `fuse`.
#[derive(clap::Args)]
pub struct LoopArgs {
    /// The plan → check → correct loop: at most this many attempts, the best one kept
    /// (1 = no loop: one picture, still checked and reported). An edit done as exact image
    /// maths is made once.
    #[arg(long, default_value_t = plantain_director::generate::Budget::DEFAULT.attempts)]
    pub attempts: usize,
    /// No new attempt starts after this many seconds.
    #[arg(long, default_value_t = plantain_director::generate::Budget::DEFAULT.time.as_secs())]
    pub time_budget: u64,
    /// A CLIP model folder (transformers' layout, e.g. a local copy of
    /// openai/clip-vit-large-patch14): the loop also checks prompt adherence.
    #[arg(long)]
    pub clip_model: Option<PathBuf>,
}

impl LoopArgs {
    pub fn budget(&self) -> plantain_director::generate::Budget {
        plantain_director::generate::Budget { attempts: self.attempts.max(1), time: std::time::Duration::from_secs(self.time_budget) }
    }

    /// The check models, CLIP loaded now (a folder that does not load is an error before any
    /// painting).
    pub fn installed(&self) -> Result<plantain_director::generate::InstalledChecks> {
        let installed = plantain_director::generate::InstalledChecks::with_clip(self.clip_model.clone());
        installed.load_clip().map_err(anyhow::Error::msg)?;
        Ok(installed)
    }
}

/// How pictures are enlarged past the model's canvas (`--upscaler`).
#[derive(Clone, Copy, Debug)]
pub enum Enlarger {
    Model(UpscaleModel),
    Lanczos,
}

fn parse_enlarger(s: &str) -> Result<Enlarger> {
    Ok(if s == "lanczos" { Enlarger::Lanczos } else { Enlarger::Model(UpscaleModel::parse(s)?) })
}

/// The resizer that brings a `canvas` picture to `requested` pixels: the super-resolution
/// model (then Lanczos3) when the picture grows, else Lanczos3. A model whose files are not
/// installed is said and Lanczos3 used, as the server does.
pub fn resizer_for(choice: Option<Enlarger>, cuda: bool, threads: usize, canvas: (u32, u32), requested: (u32, u32)) -> Box<dyn Resizer> {
    let model = match choice {
        Some(Enlarger::Lanczos) => return Box::new(Lanczos3),
        Some(Enlarger::Model(m)) => m,
        None => UpscaleModel::default_for(cuda),
    };
    if requested.0 <= canvas.0 && requested.1 <= canvas.1 {
        return Box::new(Lanczos3);
    }
    let rt = RuntimeOptions { threads, cuda, ..Default::default() };
    match Upscaler::load(model, 4, &rt) {
        Ok(upscaler) => Box::new(SuperResolution { upscaler }),
        Err(e) => {
            eprintln!("warning: upscaler {} unavailable ({e}): enlarged with Lanczos3", model.name());
            Box::new(Lanczos3)
        }
    }
}

/// Runs one request with a progress bar; the picture at the asked size (Lanczos3).
pub fn generate_with_bar(pipeline: &Pipeline, req: &GenerateRequest) -> Result<Generated> {
    generate_sized(pipeline, req, &Lanczos3)
}

/// Runs one request with a progress bar; the picture brought to the asked size by `resizer`.
pub fn generate_sized(pipeline: &Pipeline, req: &GenerateRequest, resizer: &dyn Resizer) -> Result<Generated> {
    let bar = ProgressBar::new(req.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("denoising [{bar:30}] {pos}/{len} steps, {elapsed} elapsed, eta {eta}")?.progress_chars("=> "),
    );
    let result = pipeline.generate(req, &mut |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.step as u64);
        ControlFlow::Continue(())
    });
    bar.finish_and_clear();
    // The model draws at its canvas; the output is resized to the asked pixels.
    let g = result?;
    if g.canvas.0 < req.width || g.canvas.1 < req.height {
        eprintln!("enlarging {}x{} to {}x{}", g.canvas.0, g.canvas.1, req.width, req.height);
    }
    Ok(g.resized(resizer)?)
}

/// Text to image through the plan → check → correct loop: the plan printed with --explain,
/// every attempt's checks after it, the best attempt returned.
fn generate_checked(pipeline: &Pipeline, req: &GenerateRequest, a: &Args, resizer: &dyn Resizer) -> Result<Generated> {
    use plantain_director::generate::{Paint, Plan, Settings, run};
    let plan = Plan::new(&req.prompt, req.negative_prompt.as_deref(), req.width, req.height);
    if a.explain {
        println!("{}", plan.explain());
    }
    let budget = a.checks.budget();
    let first = Settings { seed: req.seed, steps: req.steps, guidance: req.guidance };
    let mut made: Vec<Generated> = Vec::new();
    let mut paint = |p: &Paint| -> Result<image::RgbImage> {
        if let (Some(exact), Some(rep)) = (p.exact_answer(), &p.repaint) {
            // Only blobs erased from an earlier drawing: that drawing's record, these pixels.
            let mut g = made.get(rep.from).cloned().context("a repaint follows its drawing")?;
            g.image = exact.clone();
            made.push(g);
            return Ok(exact.clone());
        }
        let g = generate_sized(pipeline, &p.request(&plan, req), resizer)?;
        let image = g.image.clone();
        made.push(g);
        Ok(image)
    };
    let installed = a.checks.installed()?;
    let outcome = run(&plan, first, budget, &installed.checkers(&plan), &mut paint)?;
    if a.explain {
        println!("{}", outcome.report());
    } else {
        let best = outcome.best();
        let failed: Vec<&str> = best.checks.iter().filter(|c| c.failed()).map(|c| c.kind.name()).collect();
        let verdict = if failed.is_empty() { "every check that ran passed".to_string() } else { format!("failed: {}", failed.join(", ")) };
        eprintln!("checked: attempt {} of {} kept ({verdict}; --explain for the report)", outcome.best + 1, outcome.attempts.len());
    }
    let mut g = made.swap_remove(outcome.best);
    // The attempt's picture as checked: with its quoted text set.
    g.image = outcome.best().image.clone();
    Ok(g)
}

pub fn run(a: Args) -> Result<()> {
    let format = provenance_cmd::output_format(&a.output)?;
    let prov = provenance_cmd::load_for_stamping(&a.provenance)?;
    let resolved = resolve_model(&a.model)?;
    let defaults = resolved.defaults;

    let (width, height) = match (a.width, a.height) {
        (Some(w), Some(h)) => (w, h),
        _ => {
            let size = a.size.unwrap_or(if defaults.resolution >= 1024 { ImageSize::S1K } else { ImageSize::S512 });
            output_pixels(a.aspect, size)
        }
    };
    let scheduler = a.scheduler.as_deref().map(str::parse).transpose().context("--scheduler")?;
    let seed = a.seed.unwrap_or_else(rand::random);
    let mut req = GenerateRequest::new(a.prompt.clone(), width, height);
    req.negative_prompt = a.negative.clone();
    req.steps = a.steps.unwrap_or(defaults.steps as usize);
    req.guidance = a.guidance.unwrap_or(defaults.guidance);
    req.guidance_rescale = a.guidance_rescale;
    req.seed = seed;
    req.scheduler = scheduler;
    req.strength = a.strength;
    req.init_image = a.image.as_deref().map(io::read_rgb).transpose()?;
    req.mask = a.mask.as_deref().map(io::read_mask).transpose()?;
    req.decoder = if a.tiny_vae.is_some() { Decoder::Tiny } else { Decoder::Full };

    let load = LoadSpec {
        config_dir: a.config_dir.clone(),
        variant: a.variant.clone(),
        tiny_vae: a.tiny_vae.clone(),
        loras: a.loras.clone(),
        threads: a.threads,
        cuda: a.cuda,
        weights: a.weights.options(),
    };
    let pipeline = load_pipeline(&resolved, &load)?;
    let canvas = pipeline.canvas_for(req.width, req.height);
    let resizer = resizer_for(a.upscaler, a.cuda, a.threads, canvas, (req.width, req.height));
    let g = if req.init_image.is_some() {
        generate_sized(&pipeline, &req, resizer.as_ref())?
    } else {
        generate_checked(&pipeline, &req, &a, resizer.as_ref())?
    };
    let stamp = provenance_cmd::stamp(&prov, &g.image, format, &resolved.display_name, a.image.as_deref(), &g)?;
    io::write_atomic(&stamp.bytes, &a.output)?;
    for w in &g.warnings {
        eprintln!("warning: {w}");
    }
    let t = &g.timings;
    println!(
        "{}: {}x{} (drawn at {}x{}), seed {}, {} steps of {}, guidance {}; text {:.2}s, denoise {:.2}s, decode {:.2}s",
        a.output.display(),
        width,
        height,
        g.canvas.0,
        g.canvas.1,
        g.seed,
        g.steps_run,
        g.scheduler,
        g.guidance,
        t.text.as_secs_f32(),
        t.denoise.as_secs_f32(),
        t.decode.as_secs_f32()
    );
    Ok(())
}
