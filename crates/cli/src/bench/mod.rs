//! `plantain bench`: the engine's speed and memory on full-size models with random weights,
//! measured the same way as scripts/bench_diffusers.py measures diffusers (the peer).

mod checkpoint;
mod checks;
mod clip_score;
mod edit;
mod klein;
mod lora;
mod memory;
mod sdxl;
mod upscale;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ndarray::{ArrayD, IxDyn};
use plantain_engine::models::clip::{self, ClipOutputs, ClipTextConfig};
use plantain_engine::models::presets;
use plantain_engine::models::taesd::{self, TaesdConfig};
use plantain_engine::models::unet::{self, UNetConfig};
use plantain_engine::models::vae::{self, VaeConfig};
use plantain_engine::pipeline::{Decoder, GenerateRequest, LoadOptions, ModelSource, Pipeline, SdPipeline, WeightOptions};
use plantain_engine::resize::Lanczos3;
use plantain_engine::runtime::{Input, Network, RuntimeOptions};
use plantain_engine::weights::TensorIndex;
use plantain_engine::weights::quant::WeightBits;

use checkpoint::{FolderSpec, write_random_folder};

#[derive(clap::Args)]
pub struct Args {
    /// Timed runs per measurement, after one warm-up; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// CPU threads for ONNX Runtime (the peer script defaults to 2 as well).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 512)]
    pub size: usize,
    /// Which models: sd15, turbo (random weights), turbo-edit (a background replaced at 1K on
    /// a photograph: ISNet + SD-Turbo repaint + paste-back), nano (the shipped plantain-nano:
    /// 20 steps end-to-end at its native size), checks (what the loop's checks add per attempt
    /// at 1K: BRISQUE, text typeset and read back by OCR), clip-score (the adherence scorer at
    /// openai/clip-vit-large-patch14's size, random weights, a `--size` picture), lora (the
    /// SD-Turbo UNet step with and without a rank-32 LoRA on every projection), upscale
    /// (1K -> 4K with each Real-ESRGAN model, each in its own process, against the ncnn runtime
    /// on CPU via scripts/bench_ncnn_upscale.py with $PYTHON; `upscale:<model>` for one model here),
    /// sdxl (SDXL at full size: text encoders, UNet step at 512 and 1024, VAE decode at 1024),
    /// klein (FLUX.2 [klein] 4B with random 4-bit weights: text encode, transformer step, VAE
    /// decode, the 4-step image from cold; `klein:int8` for 8-bit weights), memory (each of
    /// `--memory-models` loaded f32, int8, int8 with lean text encoders and int4 lean, each in
    /// its own process: load time, one picture, peak RSS, PSNR against f32).
    #[arg(long, value_delimiter = ',', default_value = "sd15,turbo")]
    pub only: Vec<String>,
    /// The Real-ESRGAN models `upscale` times (x4plus, anime, animevideov3); the input is the
    /// photograph resized to `--size` a side, the output 4 times that.
    #[arg(long, value_delimiter = ',', default_value = "animevideov3,anime,x4plus")]
    pub upscale_models: Vec<String>,
    /// The models `memory` compares weight modes on: turbo (SD-Turbo, 1 step), sd15 (SD 1.5,
    /// 1 step), nano (the shipped plantain-nano, 20 steps).
    #[arg(long, value_delimiter = ',', default_value = "turbo,sd15,nano")]
    pub memory_models: Vec<String>,
    /// The weight modes `memory` compares (the first is the reference for PSNR).
    #[arg(long, value_delimiter = ',', default_value = "f32,f32-lean,int8,int8-lean,int4-lean")]
    pub memory_modes: Vec<String>,
    /// Where to write the random checkpoints (default: a temporary folder, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The photograph turbo-edit edits and checks checks (resized to 1024x1024).
    #[arg(long, default_value = ".assets/photos/astronaut.png")]
    pub photo: PathBuf,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Run on the GPU (cuda builds only).
    #[arg(long)]
    pub cuda: bool,
}

struct Row {
    key: String,
    label: String,
    times: Vec<f64>,
    peak_rss_gib: f64,
}

impl Row {
    fn median(&self) -> f64 {
        let mut t = self.times.clone();
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    }
}

/// Peak resident set size of this process so far (Linux `VmHWM`), in GiB.
fn peak_rss_gib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(f64::NAN, |kib| kib / (1024.0 * 1024.0))
}

struct Bench {
    repeats: usize,
    rows: Vec<Row>,
}

impl Bench {
    fn measure(&mut self, key: &str, label: &str, mut f: impl FnMut() -> Result<()>) -> Result<()> {
        f().with_context(|| format!("{label} (warm-up)"))?;
        let mut times = Vec::with_capacity(self.repeats);
        for _ in 0..self.repeats {
            let t = Instant::now();
            f()?;
            times.push(t.elapsed().as_secs_f64());
        }
        let row = Row { key: key.into(), label: label.into(), times, peak_rss_gib: peak_rss_gib() };
        let runs: Vec<String> = row.times.iter().map(|t| format!("{t:.2}")).collect();
        eprintln!("  {label}: median {:.3} s [{}] peak RSS so far {:.2} GiB", row.median(), runs.join(", "), row.peak_rss_gib);
        self.rows.push(row);
        Ok(())
    }
}

fn text_ids() -> Input {
    let tok = plantain_tokenizer::ClipTokenizer::embedded_default();
    let ids: Vec<i64> =
        tok.encode_padded("a lighthouse at dusk, 35mm photo, golden hour, dramatic sky", 77).into_iter().map(i64::from).collect();
    Input::I64(ArrayD::from_shape_vec(IxDyn(&[1, 77]), ids).expect("77 ids"))
}

fn random(shape: &[usize], seed: u64) -> ArrayD<f32> {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = shape.iter().product();
    ArrayD::from_shape_vec(IxDyn(shape), plantain_engine::pipeline::gaussian(&mut rng, n)).expect("shape")
}

/// One UNet evaluation at the first timestep of a schedule (999), batch 1, no guidance.
fn unet_step(un: &Network, latent: &ArrayD<f32>, ctx: &ArrayD<f32>) -> Result<()> {
    un.run(vec![
        ("sample", Input::F32(latent.clone())),
        ("timestep", Input::F32(ArrayD::from_elem(IxDyn(&[1]), 999.0))),
        ("encoder_hidden_states", Input::F32(ctx.clone())),
    ])?;
    Ok(())
}

fn components(dir: &Path, rt: &RuntimeOptions, b: &mut Bench, tag: &str, name: &str, size: usize) -> Result<()> {
    let te_cfg = ClipTextConfig::from_file(&dir.join("text_encoder/config.json"))?;
    let te_w = TensorIndex::open(&dir.join("text_encoder/model.safetensors"))?;
    let te = Network::new(&clip::build(&te_cfg, &te_w, ClipOutputs { projection: false })?, &format!("{tag}-text"), rt)?;
    b.measure(&format!("{tag}_text_encode"), &format!("{name} text encode (77 tokens)"), || {
        te.run(vec![("input_ids", text_ids())])?;
        Ok(())
    })?;
    let ctx = te.run(vec![("input_ids", text_ids())])?.remove("last_hidden_state").context("text encoder output")?;
    drop(te);

    let h = size / 8;
    let latent = random(&[1, 4, h, h], 1);
    let unet_cfg = UNetConfig::from_file(&dir.join("unet/config.json"))?;
    let unet_w = TensorIndex::open(&dir.join("unet/diffusion_pytorch_model.safetensors"))?;
    let un = Network::new(&unet::build(&unet_cfg, &unet_w)?, &format!("{tag}-unet"), rt)?;
    b.measure(&format!("{tag}_unet_step"), &format!("{name} UNet step ({size}x{size}, batch 1, no CFG)"), || {
        unet_step(&un, &latent, &ctx)
    })?;
    drop(un);

    if tag == "sd15" {
        let vae_cfg = VaeConfig::from_file(&dir.join("vae/config.json"))?;
        let vae_w = TensorIndex::open(&dir.join("vae/diffusion_pytorch_model.safetensors"))?;
        let dec = Network::new(&vae::build_decoder(&vae_cfg, &vae_w)?, "vae-dec", rt)?;
        b.measure("sd15_vae_decode", &format!("SD VAE decode [1,4,{h},{h}] -> {size}x{size}"), || {
            dec.run(vec![("latent", Input::F32(latent.clone()))])?;
            Ok(())
        })?;
        drop(dec);
        let enc = Network::new(&vae::build_encoder(&vae_cfg, &vae_w)?, "vae-enc", rt)?;
        let image = random(&[1, 3, size, size], 2).mapv(|v| v.clamp(-1.0, 1.0));
        b.measure("sd15_vae_encode", &format!("SD VAE encode [1,3,{size},{size}] (posterior mean)"), || {
            enc.run(vec![("sample", Input::F32(image.clone()))])?;
            Ok(())
        })?;
    }
    Ok(())
}

/// The shipped plantain-nano, generating as `plantain generate` does with its defaults (20
/// steps, classifier-free guidance) at the native size.
fn nano(rt: &RuntimeOptions, b: &mut Bench, load_times: &mut Vec<(String, Duration)>) -> Result<()> {
    let resolved = plantain_hub::resolve("plantain-nano", &crate::hubcmd::resolve_options())?;
    eprintln!("plantain-nano ({})", resolved.path.display());
    let t = Instant::now();
    let p = Pipeline::load(&ModelSource::Diffusers(resolved.path.clone()), &LoadOptions { runtime: rt.clone(), ..Default::default() })?;
    load_times.push(("plantain-nano".to_string(), t.elapsed()));
    let side = p.native_resolution();
    let mut req = GenerateRequest::new("a red star above a blue circle on a yellow background", side, side);
    req.steps = 20;
    req.guidance = resolved.defaults.guidance;
    b.measure(
        "nano_20step_total",
        &format!("plantain-nano 20 steps end-to-end (text + 2x20 UNet evals with guidance {} + VAE decode, {side}x{side})", req.guidance),
        || {
            p.generate(&req, &mut |_| ControlFlow::Continue(()))?.resized(&Lanczos3)?;
            Ok(())
        },
    )
}

/// SD-Turbo in one step end to end, decoded by the full VAE and by TAESD (random weights at
/// madebyollin/taesd's shape): the Flash path.
fn turbo_end_to_end(
    dir: &Path,
    root: &Path,
    rt: &RuntimeOptions,
    b: &mut Bench,
    size: usize,
    load_times: &mut Vec<(String, Duration)>,
) -> Result<()> {
    let t = Instant::now();
    let opts = LoadOptions { runtime: rt.clone(), tiny_autoencoder: Some(random_taesd(root)?), ..Default::default() };
    let p = SdPipeline::load(&ModelSource::Diffusers(dir.to_path_buf()), &opts)?;
    let mut req = GenerateRequest::new("a lighthouse at dusk, 35mm photo", size as u32, size as u32);
    req.steps = 1;
    req.guidance = 0.0;
    // Build the lazily created VAE decoders before timing.
    let side = size / 8;
    for decoder in [Decoder::Full, Decoder::Tiny] {
        p.decode(&vec![0.0; 4 * side * side], (side, side), decoder)?;
    }
    load_times.push(("SD-Turbo".to_string(), t.elapsed()));
    for (decoder, key, what) in
        [(Decoder::Full, "turbo_1step_total", "VAE decode"), (Decoder::Tiny, "turbo_1step_taesd_total", "TAESD decode")]
    {
        req.decoder = decoder;
        let label = format!("SD-Turbo 1 step end-to-end (text + UNet + {what}, {size}x{size}, `Pipeline::generate`)");
        b.measure(key, &label, || {
            p.generate(&req, &mut |_| ControlFlow::Continue(()))?.resized(&Lanczos3)?;
            Ok(())
        })?;
    }
    drop(p);
    // The Flash path with w8a8 linear layers (int8 weights per channel, inputs int8 per tensor).
    let opts = LoadOptions { weights: WeightOptions { weights: WeightBits::W8A8, ..Default::default() }, ..opts };
    let p = SdPipeline::load(&ModelSource::Diffusers(dir.to_path_buf()), &opts)?;
    p.decode(&vec![0.0; 4 * side * side], (side, side), Decoder::Tiny)?;
    req.decoder = Decoder::Tiny;
    let label = format!("SD-Turbo 1 step end-to-end, w8a8 linear layers (text + UNet + TAESD decode, {size}x{size})");
    b.measure("turbo_1step_taesd_w8a8_total", &label, || {
        p.generate(&req, &mut |_| ControlFlow::Continue(()))?.resized(&Lanczos3)?;
        Ok(())
    })
}

/// A TAESD folder (madebyollin/taesd's default config) with random fp16 weights.
fn random_taesd(root: &Path) -> Result<PathBuf> {
    let dir = root.join("taesd");
    let weights = dir.join("diffusion_pytorch_model.safetensors");
    if !weights.exists() {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("config.json"), r#"{"_class_name": "AutoencoderTiny"}"#)?;
        let cfg = TaesdConfig::from_file(&dir.join("config.json"))?;
        let rec = TensorIndex::recording();
        taesd::build_encoder(&cfg, &rec)?;
        taesd::build_decoder(&cfg, &rec)?;
        checkpoint::write_random_safetensors(&weights, &rec.recorded(), 5)?;
    }
    Ok(dir)
}

/// The folder of random full-size weights for `tag`, written on first use.
fn random_folder(root: &Path, tag: &str, name: &str, spec: FolderSpec) -> Result<PathBuf> {
    let dir = root.join(tag);
    if !dir.join("unet/diffusion_pytorch_model.safetensors").exists() {
        eprintln!("{name}: writing random fp16 weights to {}", dir.display());
        let t = Instant::now();
        let bytes = write_random_folder(&dir, &spec)?;
        eprintln!("  {:.2} GB in {:.1} s", bytes as f64 / 1e9, t.elapsed().as_secs_f32());
    }
    Ok(dir)
}

/// Runs one `--only` item.
fn run_one(which: &str, a: &Args, root: &Path, rt: &RuntimeOptions, b: &mut Bench, load_times: &mut Vec<(String, Duration)>) -> Result<()> {
    if which == "nano" {
        nano(rt, b, load_times)?;
        return Ok(());
    }
    if which == "checks" {
        checks::checks(b, &a.photo)?;
        return Ok(());
    }
    if which == "upscale" {
        upscale::all(a, b)?;
        return Ok(());
    }
    if let Some(model) = which.strip_prefix("upscale:") {
        upscale::one(model, a.size as u32, rt, b, &a.photo)?;
        return Ok(());
    }
    if let Some(bits) = which.strip_prefix("klein") {
        let bits = match bits.strip_prefix(':') {
            Some(b) => b.parse().map_err(anyhow::Error::msg)?,
            None if bits.is_empty() => plantain_engine::weights::quant::WeightBits::Int4,
            None => anyhow::bail!("unknown model `{which}` (klein, klein:int8, klein:int4, klein:w8a8)"),
        };
        klein::klein(root, rt, b, a.size, bits)?;
        return Ok(());
    }
    if which == "sdxl" {
        sdxl::sdxl(root, rt, b)?;
        return Ok(());
    }
    if which == "memory" {
        memory::all(a, root, b)?;
        return Ok(());
    }
    if let Some(spec) = which.strip_prefix("memory:") {
        memory::one(spec, root, rt, b, a.size)?;
        return Ok(());
    }
    if which == "clip-score" {
        clip_score::clip_score(root, rt, b, a.size)?;
        return Ok(());
    }
    if which == "lora" {
        let dir = random_folder(root, "turbo", "SD-Turbo", FolderSpec::from(presets::SD_TURBO))?;
        lora::lora(&dir, rt, b, a.size)?;
        return Ok(());
    }
    if which == "turbo-edit" {
        let dir = random_folder(root, "turbo", "SD-Turbo", FolderSpec::from(presets::SD_TURBO))?;
        edit::turbo_edit(&dir, rt, b, &a.photo)?;
        return Ok(());
    }
    let (tag, name, spec) = match which {
        "sd15" => ("sd15", "SD 1.5", FolderSpec::from(presets::SD15)),
        "turbo" => ("turbo", "SD-Turbo", FolderSpec::from(presets::SD_TURBO)),
        other => {
            anyhow::bail!("unknown model `{other}` (sd15, turbo, sdxl, turbo-edit, lora, nano, checks, clip-score, upscale, klein, memory)")
        }
    };
    let dir = random_folder(root, tag, name, spec)?;
    eprintln!("{name}");
    components(&dir, rt, b, tag, name, a.size)?;
    if tag == "turbo" {
        turbo_end_to_end(&dir, root, rt, b, a.size, load_times)?;
    }
    Ok(())
}

pub fn run(a: Args) -> Result<()> {
    let tmp;
    let root = match &a.dir {
        Some(d) => d.clone(),
        None => {
            tmp = std::env::temp_dir().join(format!("plantain-bench-{}", std::process::id()));
            tmp.clone()
        }
    };
    let rt = RuntimeOptions { threads: a.threads, cuda: a.cuda, ..Default::default() };
    let mut b = Bench { repeats: a.repeats.max(1), rows: Vec::new() };
    let mut load_times: Vec<(String, Duration)> = Vec::new();
    let result = a.only.iter().try_for_each(|which| run_one(which, &a, &root, &rt, &mut b, &mut load_times));
    if a.dir.is_none() {
        let _ = std::fs::remove_dir_all(&root);
    }
    result?;

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    println!();
    println!(
        "plantain (ONNX Runtime 1.31.1), {} threads, fp32 compute, batch 1, {cpu}; median of {} after 1 warm-up",
        a.threads, b.repeats
    );
    println!();
    println!("| measurement | median (s) | runs (s) | peak RSS so far (GiB) |");
    println!("|---|---|---|---|");
    for r in &b.rows {
        let runs: Vec<String> = r.times.iter().map(|t| format!("{t:.2}")).collect();
        println!("| {} | {:.2} | {} | {:.2} |", r.label, r.median(), runs.join(", "), r.peak_rss_gib);
    }
    println!();
    for (name, t) in &load_times {
        println!("{name} pipeline load (sessions for text encoder, UNet, VAE decoder): {:.1} s", t.as_secs_f32());
    }
    println!("peak RSS: {:.2} GiB", peak_rss_gib());
    if let Some(path) = &a.json {
        let results: serde_json::Map<String, serde_json::Value> = b
            .rows
            .iter()
            .map(|r| {
                (
                    r.key.clone(),
                    serde_json::json!({"label": r.label, "median_s": r.median(), "times_s": r.times, "peak_rss_gb_so_far": r.peak_rss_gib}),
                )
            })
            .collect();
        let doc = serde_json::json!({"tool": "plantain", "threads": a.threads, "size": a.size, "repeats": b.repeats, "cpu": cpu, "results": results, "peak_rss_gb": peak_rss_gib()});
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
