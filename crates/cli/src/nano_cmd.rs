//! `plantain train nano`: trains plantain-nano on the synthetic world (candle, CPU).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use plantain_nano::{NanoConfig, Phase, TrainOptions};

#[derive(clap::Subcommand)]
pub enum TrainCommand {
    /// Train plantain-nano from scratch (or resume from --work) and write a diffusers folder.
    Nano(TrainArgs),
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Where the finished model (diffusers layout) goes; replaced only when training is done.
    #[arg(long, default_value = "models/plantain-nano")]
    pub out: PathBuf,
    /// Checkpoint folder; a run started with the same settings resumes from it.
    #[arg(long, default_value = "nano-train")]
    pub work: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Autoencoder steps (default: the documented recipe's).
    #[arg(long)]
    pub vae_steps: Option<u64>,
    /// Text encoder + UNet steps (default: the documented recipe's).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Images per diffusion step.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Peak learning rate of the diffusion phase (default: the recipe's, 1e-3).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Fine-tune an exported plantain-nano folder (same architecture) instead of training from
    /// scratch: its autoencoder is kept, there is no parse phase, and --steps diffusion steps
    /// continue from its text encoder and UNet with the recipe's other settings.
    #[arg(long, value_name = "MODEL_DIR", conflicts_with_all = ["vae_steps", "tiny", "attention", "fine_latents"])]
    pub init_from: Option<PathBuf>,
    /// The earlier recipe: ε-prediction on SD's noise schedule, uniform timesteps (measured in
    /// BENCHMARKS.md; kept for comparison)
    #[arg(long, conflicts_with = "frozen_text")]
    pub epsilon: bool,
    /// The eighth run's variant: the text encoder frozen after its parse phase, 2,900 UNet
    /// steps in the time 2,400 took (measured in BENCHMARKS.md)
    #[arg(long)]
    pub frozen_text: bool,
    /// Share of each batch's timesteps drawn logit-normally (around the middle of the noise
    /// schedule, where shapes are decided) instead of uniformly; 0..=1 (default: the recipe's,
    /// 0.5; 0 for --epsilon)
    #[arg(long)]
    pub mid_noise_share: Option<f64>,
    /// Loss weight on latent cells by their object share: 1 + K x share (default: the
    /// recipe's, 8)
    #[arg(long)]
    pub object_weight: Option<f64>,
    /// Latent sides of the UNet levels with cross-attention transformers, e.g. `8` for the
    /// eighth run's UNet or `16,8,4` (default: the recipe's, 8 and 4)
    #[arg(long, value_delimiter = ',', conflicts_with = "tiny")]
    pub attention: Option<Vec<usize>>,
    /// The factor-2 architecture: latents 32x32x4 instead of 16x16x8 and a four-level UNet,
    /// so an object's shape is a pattern over 5-8 latent cells a side rather than a code in
    /// 2-4 (`NanoConfig::fine_latents`; measured in BENCHMARKS.md)
    #[arg(long, conflicts_with = "tiny")]
    pub fine_latents: bool,
    /// Use the tiny test architecture (seconds, for trying the command out).
    #[arg(long)]
    pub tiny: bool,
}

/// Runs `plantain train nano`: the recipe and architecture the arguments name, trained (or
/// resumed) in `--work` and written to `--out`.
pub fn run(cmd: TrainCommand) -> Result<()> {
    let TrainCommand::Nano(a) = cmd;
    set_candle_threading();
    let cfg = architecture(&a)?;
    let opts = train_options(&a);
    eprintln!(
        "training plantain-nano ({} px native): {} autoencoder steps x {}, {} text-parse steps x {}, {} diffusion steps x {}, seed {}; checkpoints in {}",
        cfg.native_resolution(),
        opts.vae_steps,
        opts.vae_batch,
        opts.text_steps,
        opts.text_batch,
        opts.steps,
        opts.batch,
        opts.seed,
        a.work.display()
    );
    let summary = train_with_progress(&cfg, &opts, &a)?;
    println!(
        "{}: {} parameters, autoencoder loss {:.5}, diffusion loss {:.5}, latent scale {:.4}, {:.1} min of training",
        a.out.display(),
        summary.params,
        summary.vae_loss,
        summary.loss,
        summary.latent_scale,
        summary.seconds / 60.0
    );
    Ok(())
}

/// Sets the environment candle's CPU backend reads when its thread pool starts, unless the
/// user set it: call before any tensor op or thread exists.
fn set_candle_threading() {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // candle's CPU workers spin 25,000 times between ops before sleeping; training runs
        // thousands of small ops, and the spinning stole a core from the work (measured: a
        // step 15% faster with 50). SAFETY: nothing else runs yet; candle reads this when
        // its pool starts, on the first tensor op.
        unsafe { std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "50") };
    }
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // Unless this is set, candle works its thread count out again (reading /proc/cpuinfo)
        // on every matrix product: 6% of a training step by perf. Fix its own answer once.
        // SAFETY: as above, before any thread or pool exists.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", plantain_nano::candle_threads().to_string()) };
    }
}

/// The architecture the arguments ask for (a fine-tune's is its model's).
fn architecture(a: &TrainArgs) -> Result<NanoConfig> {
    let mut cfg = if a.tiny {
        NanoConfig::tiny()
    } else if a.fine_latents {
        NanoConfig::fine_latents()
    } else {
        NanoConfig::standard()
    };
    if let Some(sides) = &a.attention {
        cfg = cfg.with_attention_at(sides).map_err(anyhow::Error::msg).context("--attention")?;
    }
    if let Some(dir) = &a.init_from {
        // A fine-tune keeps the model's architecture.
        cfg = plantain_nano::train::exported_config(dir).with_context(|| format!("--init-from {}", dir.display()))?;
    }
    Ok(cfg)
}

/// The recipe the arguments ask for, with their overrides and checkpoints at least once per phase.
fn train_options(a: &TrainArgs) -> TrainOptions {
    let mut opts = if a.epsilon {
        TrainOptions::epsilon()
    } else if a.frozen_text {
        TrainOptions::frozen_text()
    } else {
        TrainOptions::standard()
    };
    opts.seed = a.seed;
    opts.vae_steps = a.vae_steps.unwrap_or(opts.vae_steps);
    opts.steps = a.steps.unwrap_or(opts.steps);
    opts.batch = a.batch.unwrap_or(opts.batch);
    opts.mid_noise_share = a.mid_noise_share.unwrap_or(opts.mid_noise_share);
    opts.object_weight = a.object_weight.unwrap_or(opts.object_weight);
    opts.lr = a.lr.unwrap_or(opts.lr);
    if let Some(dir) = &a.init_from {
        opts.init_from = Some(dir.clone());
        opts.vae_steps = 0;
        opts.text_steps = 0;
        opts.parse_weight = 0.0;
    }
    opts.checkpoint_every = opts.checkpoint_every.min(opts.steps.max(1));
    if opts.vae_steps > 0 {
        opts.checkpoint_every = opts.checkpoint_every.min(opts.vae_steps);
    }
    opts
}

/// Trains with a progress bar on a terminal, or a log line every 50 steps elsewhere.
fn train_with_progress(cfg: &NanoConfig, opts: &TrainOptions, a: &TrainArgs) -> Result<plantain_nano::train::Summary> {
    let style =
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg}, {elapsed} elapsed, eta {eta}")?.progress_chars("=> ");
    let bar = ProgressBar::new(opts.vae_steps).with_style(style).with_prefix("autoencoder");
    let mut current = Phase::Autoencoder;
    let cancel = AtomicBool::new(false);
    let summary = plantain_nano::train(cfg, opts, &a.work, &a.out, &cancel, &mut |p| {
        if p.phase != current {
            current = p.phase;
            bar.reset();
            bar.set_prefix(match p.phase {
                Phase::Autoencoder => "autoencoder",
                Phase::Text => "text parse",
                Phase::Diffusion => "diffusion",
            });
        }
        bar.set_length(p.total);
        bar.set_position(p.step);
        bar.set_message(format!("loss {:.4}, grad {:.2}", p.loss, p.grad_norm));
        if !bar.is_hidden() {
            return;
        }
        // Not a terminal (e.g. a log file): a line every 50 steps.
        if p.step.is_multiple_of(50) || p.step == p.total {
            eprintln!(
                "{:?} step {}/{}: loss {:.5}, grad norm {:.3}, {:.0}s",
                p.phase,
                p.step,
                p.total,
                p.loss,
                p.grad_norm,
                p.elapsed.as_secs_f64()
            );
        }
    })
    .context("training plantain-nano")?;
    bar.finish_and_clear();
    Ok(summary)
}

#[derive(clap::Subcommand)]
pub enum EvalCommand {
    /// Prompt adherence of plantain-nano (or another model) on the synthetic world, measured
    /// by the scene checker: held-out attribute combinations and the training distribution.
    Nano(EvalArgs),
    /// Edits on the synthetic world (recolour, remove, add, background, light, fusion,
    /// outpainting) judged by the scene checker, with pixels outside each region counted.
    Edits(crate::eval_edits::Args),
    /// Light, colour and background-blur edits on real photographs at 1K (ISNet finds the
    /// subject): time per edit, pixels changed outside the regions, a contact sheet.
    PhotoEdits(crate::eval_photos::Args),
    /// The plan → check → correct loop on the synthetic world's held-out captions with
    /// plantain-nano: per-attribute and whole-scene accuracy and time per picture for 1, 2, 4
    /// and 8 attempts.
    Loop(crate::eval_loop::Args),
    /// Typeset text read back by OCR: the committed 316 strings in 10 scripts, each set into
    /// generated pictures of several sizes; exact-match rate per script, language and reader.
    Text(crate::eval_text::Args),
    /// Super-resolution on real photographs: each shrunk 4x and restored by Lanczos3 and by the
    /// Real-ESRGAN models; PSNR against the original and BRISQUE of the result, a contact sheet.
    Upscale(crate::eval_upscale::Args),
}

#[derive(clap::Args)]
pub struct EvalArgs {
    #[arg(long, short, default_value = "plantain-nano")]
    pub model: String,
    /// Scenes per split.
    #[arg(long, default_value_t = 100)]
    pub scenes: usize,
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Guidance scale (default: the model's).
    #[arg(long)]
    pub guidance: Option<f32>,
    /// Rescale the guided prediction toward the prompt branch's spread, 0..=1 (diffusers'
    /// guidance_rescale).
    #[arg(long, default_value_t = 0.0)]
    pub guidance_rescale: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write every generated image (PNG, named by split, index and right/wrong) here.
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// CPU threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Rewrite the model folder's card (README.md) with this evaluation as its Evaluation section.
    #[arg(long, conflicts_with = "from_truth")]
    pub write_card: bool,
    /// Diagnostic: start each picture from the scene's own rendering noised to this strength
    /// (0..=1, as image-to-image) instead of from pure noise, to see at which noise level the
    /// model loses (or can no longer restore) an attribute.
    #[arg(long, value_parser = parse_strength)]
    pub from_truth: Option<f32>,
}

fn parse_strength(s: &str) -> std::result::Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if v > 0.0 && v <= 1.0 { Ok(v) } else { Err(format!("strength {v} is not in (0, 1]")) }
}

pub fn eval(cmd: EvalCommand) -> Result<()> {
    use plantain_engine::pipeline::{LoadOptions, ModelSource, Pipeline};
    use plantain_engine::runtime::RuntimeOptions;
    use plantain_nano::eval::{EvalOptions, evaluate, markdown_table, misses_table};
    use plantain_world::Split;

    let a = match cmd {
        EvalCommand::Nano(a) => a,
        EvalCommand::Edits(a) => return crate::eval_edits::run(a),
        EvalCommand::PhotoEdits(a) => return crate::eval_photos::run(a),
        EvalCommand::Loop(a) => return crate::eval_loop::run_eval(a),
        EvalCommand::Text(a) => return crate::eval_text::run(a),
        EvalCommand::Upscale(a) => return crate::eval_upscale::run(a),
    };
    let resolved = plantain_hub::resolve(&a.model, &crate::hubcmd::resolve_options())?;
    anyhow::ensure!(resolved.layout == plantain_hub::Layout::Diffusers, "{}: eval needs a diffusers folder", resolved.path.display());
    let opts = LoadOptions { runtime: RuntimeOptions { threads: a.threads, ..Default::default() }, ..Default::default() };
    let pipeline = Pipeline::load(&ModelSource::Diffusers(resolved.path.clone()), &opts)
        .with_context(|| format!("loading {}", resolved.path.display()))?;
    let guidance = a.guidance.unwrap_or(resolved.defaults.guidance);
    let eval_opts = EvalOptions {
        scenes: a.scenes,
        steps: a.steps,
        guidance,
        guidance_rescale: a.guidance_rescale,
        seed: a.seed,
        size: None,
        from_truth: a.from_truth,
    };
    if let Some(dir) = &a.save {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let started = std::time::Instant::now();
    let mut tables = Vec::new();
    for (split, name) in [(Split::HeldOut, "held-out"), (Split::Train, "train")] {
        let bar = ProgressBar::new(a.scenes as u64).with_style(
            ProgressStyle::with_template("{prefix:>9} [{bar:30}] {pos}/{len} scenes, {elapsed} elapsed, eta {eta}")?.progress_chars("=> "),
        );
        bar.set_prefix(name);
        let acc = evaluate(&pipeline, split, &eval_opts, &mut |i, s| {
            bar.set_position(i as u64 + 1);
            if let Some(dir) = &a.save {
                let verdict = if s.all_correct { "ok" } else { "wrong" };
                let path = dir.join(format!("{name}-{i:04}-{verdict}.png"));
                if let Err(e) = s.image.save(&path) {
                    eprintln!("warning: {}: {e}", path.display());
                }
                let report = serde_json::to_string_pretty(&s.report).unwrap_or_default();
                let _ = std::fs::write(path.with_extension("txt"), format!("{}\n{}\n{report}\n", s.prompt, s.scene.to_json()));
            }
        })?;
        bar.finish_and_clear();
        tables.push(acc);
    }
    println!(
        "{} ({}), {} scenes per split, {} steps, guidance {guidance} (rescale {}), seed {}{}, {:.0}s:\n",
        resolved.display_name,
        resolved.path.display(),
        a.scenes,
        a.steps,
        a.guidance_rescale,
        a.seed,
        a.from_truth.map(|v| format!(", from the scenes' own renderings at strength {v}")).unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
    let table = markdown_table(&tables[0], &tables[1]);
    print!("{table}");
    print!("\n{}", misses_table(&tables[0], &tables[1]));
    if a.write_card {
        let section = format!(
            "Measured by `plantain eval nano --scenes {} --steps {} --guidance {guidance} --guidance-rescale {} --seed {}`: one image per caption \
             through the engine at the native size, scored by the world's scene checker (no ML). Held-out \
             combinations are attribute pairs never shown together in training.\n\n{table}\n{}",
            a.scenes,
            a.steps,
            a.guidance_rescale,
            a.seed,
            plantain_nano::eval::targets_note(&tables[0])
        );
        plantain_nano::export::write_card(&resolved.path, &section)?;
        eprintln!("wrote the evaluation into {}", resolved.path.join("README.md").display());
    }
    Ok(())
}
