//! The training recipe: first the autoencoder on rendered scenes, then the text encoder and the
//! UNet together on its latents (ε-prediction, min-SNR weighting, caption dropout for
//! classifier-free guidance, EMA weights). Every step's data and noise come from the seed and
//! the step number, and checkpoints hold weights, optimizer moments and EMA, so a resumed run
//! continues exactly where it stopped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use candle_core::{DType, Tensor, Var};
use plantain_tokenizer::ClipTokenizer;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::adamw::{AdamW, ema_update};
use crate::checkpoint::Paths;
use crate::config::{NanoConfig, alphas_cumprod};
use crate::data::{Batch, batch, buckets, caption_batch, edge_weights, gaussian, pick_bucket};
use crate::export::{ExportInfo, export};
use crate::nn::Store;
use crate::parse::ParseHead;
use crate::text::TextEncoder;
use crate::unet::UNet;
use crate::vae::Vae;
use crate::{NanoError, Result};

/// How plantain-nano is trained: each phase's steps, batches and rates, and the diffusion
/// loss's settings (recorded in a run's checkpoints and in the exported model's `training.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    pub seed: u64,
    pub vae_steps: u64,
    pub vae_batch: usize,
    pub vae_lr: f64,
    /// Extra autoencoder loss weight on edges ([`edge_weights`]).
    pub vae_edge_weight: f32,
    /// The autoencoder trains on random crops of at most this side (it is convolutional, and
    /// a quarter of the pixels is a quarter of the cost per image), 0 for whole canvases.
    pub vae_crop: u32,
    pub steps: u64,
    pub batch: usize,
    pub lr: f64,
    pub warmup: u64,
    pub caption_dropout: f64,
    /// Scale of the per-channel offset added to the training noise.
    pub offset_noise: f64,
    pub ema_decay: f64,
    pub checkpoint_every: u64,
    /// Predict v (α·ε − σ·x0) instead of ε, with loss weights that keep the high-noise steps,
    /// where only the prompt can say what the picture is, in play (see the loss below).
    #[serde(default)]
    pub v_prediction: bool,
    /// Rescale the noise schedule so its last step is pure noise ([`alphas_cumprod`]); needs
    /// v-prediction (ε is undefined where there is no signal).
    #[serde(default)]
    pub zero_terminal_snr: bool,
    /// Share of each batch's timesteps drawn logit-normally (most of them between t ≈ 270 and
    /// 730) instead of uniformly: with the model given the layout and colours at t = 500 it still
    /// drew a fifth of the shapes, and the loss weighs those noise levels a fifth to a ninth of
    /// low noise.
    #[serde(default)]
    pub mid_noise_share: f64,
    /// With v-prediction, the loss weighs the x0 error by min(snr + floor, 5): the floor keeps
    /// the noisiest steps (where only the prompt says what the picture is) in play. At 1 they
    /// weigh as much as a clean picture's fine detail, and measured, the detail then suffers.
    #[serde(default = "default_x0_weight_floor")]
    pub x0_weight_floor: f64,
    /// Extra diffusion-loss weight on latent cells that objects cover (1 + this x the cell's
    /// object share; each picture's weights normalised to mean 1 over its cells): objects are
    /// a few percent of a picture's area, yet they are what the captions are mostly about.
    #[serde(default)]
    pub object_weight: f64,
    /// Steps that teach the text encoder to parse captions ([`crate::parse`]) before the
    /// diffusion phase, on captions alone.
    #[serde(default)]
    pub text_steps: u64,
    #[serde(default = "default_text_batch")]
    pub text_batch: usize,
    #[serde(default = "default_text_lr")]
    pub text_lr: f64,
    /// Weight of the parse loss beside the diffusion loss (0: the diffusion loss alone).
    #[serde(default)]
    pub parse_weight: f64,
    /// Keep the text encoder as the parse phase left it while the UNet trains: each step skips
    /// the encoder's backward pass and the update of its 6.9 M parameters (mostly the token
    /// table), so more UNet steps fit the budget.
    #[serde(default)]
    pub freeze_text: bool,
    /// Start from an exported plantain-nano folder's weights (a fine-tune): its autoencoder and
    /// latent scale are kept as they are (no autoencoder phase), its text encoder and UNet are
    /// the starting point of the later phases. None: train from scratch.
    #[serde(default)]
    pub init_from: Option<PathBuf>,
}

fn default_text_batch() -> usize {
    64
}

fn default_text_lr() -> f64 {
    2e-3
}

fn default_x0_weight_floor() -> f64 {
    1.0
}

/// One training timestep in `0..len`: uniform, or from the options' middle-noise share. No
/// random number is drawn for a share of 0, so older runs replay exactly.
fn draw_timestep(opts: &TrainOptions, len: usize, rng: &mut ChaCha8Rng) -> usize {
    if opts.mid_noise_share > 0.0 && rng.random_bool(opts.mid_noise_share) {
        // Logit-normal(0, 1) over the schedule (as SD3 samples its timesteps): most mass in
        // the middle, where a picture's shapes are decided (BENCHMARKS.md, --from-truth).
        let z: f64 = rng.sample(rand_distr::StandardNormal);
        let u = 1.0 / (1.0 + (-z).exp());
        return ((u * len as f64) as usize).min(len - 1);
    }
    rng.random_range(0..len)
}

/// The diffusion loss's weight on each latent cell (factor `f` pixels on a side) of pictures
/// with these (batch, 1, h, w) object masks: 1 + `object` x the cell's object share,
/// normalised to mean 1 per picture.
pub fn cell_weights(masks: &Tensor, f: usize, object: f64) -> candle_core::Result<Tensor> {
    let share = masks.avg_pool2d((f, f))?;
    let w = ((share * object)? + 1.0)?;
    w.broadcast_div(&w.flatten_from(1)?.mean_keepdim(1)?.unsqueeze(2)?.unsqueeze(3)?)
}

impl TrainOptions {
    /// The CPU recipe for [`NanoConfig::standard`], sized to the 90-minute budget on 2 cores
    /// (autoencoder about 26 minutes, text parse about 9, diffusion about 0.75 s a step; BENCHMARKS.md).
    pub fn standard() -> Self {
        Self {
            seed: 0,
            vae_steps: 2000,
            vae_batch: 16,
            vae_lr: 2e-3,
            vae_edge_weight: 2.0,
            vae_crop: 32,
            steps: 3200,
            batch: 16,
            lr: 1e-3,
            warmup: 50,
            caption_dropout: 0.1,
            // Zero terminal SNR does what offset noise approximated (Lin et al. 2024).
            offset_noise: 0.0,
            ema_decay: 0.995,
            checkpoint_every: 50,
            v_prediction: true,
            zero_terminal_snr: true,
            // The eleventh run (BENCHMARKS.md): positions, counts and backgrounds up.
            mid_noise_share: 0.5,
            x0_weight_floor: 0.25,
            object_weight: 8.0,
            text_steps: 1500,
            text_batch: 64,
            text_lr: 2e-3,
            parse_weight: 0.1,
            freeze_text: false,
            init_from: None,
        }
    }

    /// The eighth run's variant (BENCHMARKS.md): the text encoder frozen after the parse phase
    /// and the time that saves spent on more UNet steps.
    pub fn frozen_text() -> Self {
        Self { steps: 2900, parse_weight: 0.0, freeze_text: true, ..Self::standard() }
    }

    /// What the autoencoder phase depends on (its schedule shares the warm-up length).
    fn autoencoder_part(&self) -> (u64, u64, usize, f64, f32, u32, u64) {
        (self.seed, self.vae_steps, self.vae_batch, self.vae_lr, self.vae_edge_weight, self.vae_crop, self.warmup)
    }

    /// The earlier recipe (runs one to three in BENCHMARKS.md): ε-prediction on SD's schedule
    /// with min-SNR-5 weights, uniform timesteps and offset noise.
    pub fn epsilon() -> Self {
        Self {
            steps: 2200,
            offset_noise: 0.05,
            v_prediction: false,
            zero_terminal_snr: false,
            mid_noise_share: 0.0,
            x0_weight_floor: 1.0,
            object_weight: 0.0,
            text_steps: 0,
            parse_weight: 0.0,
            freeze_text: false,
            ..Self::standard()
        }
    }

    /// A few steps of everything, for tests.
    pub fn smoke() -> Self {
        Self {
            seed: 0,
            vae_steps: 3,
            vae_batch: 2,
            vae_lr: 1e-3,
            vae_edge_weight: 2.0,
            vae_crop: 0,
            steps: 3,
            batch: 2,
            lr: 1e-3,
            warmup: 1,
            caption_dropout: 0.1,
            offset_noise: 0.05,
            ema_decay: 0.9,
            checkpoint_every: 2,
            v_prediction: true,
            zero_terminal_snr: true,
            mid_noise_share: 0.0,
            x0_weight_floor: 0.25,
            object_weight: 8.0,
            text_steps: 3,
            text_batch: 4,
            text_lr: 2e-3,
            parse_weight: 0.1,
            freeze_text: false,
            init_from: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Autoencoder,
    /// The text encoder learning to parse captions.
    Text,
    Diffusion,
}

#[derive(Clone, Debug)]
pub struct Progress {
    pub phase: Phase,
    pub step: u64,
    pub total: u64,
    /// Smoothed training loss.
    pub loss: f64,
    pub grad_norm: f64,
    pub elapsed: Duration,
}

/// What the checkpoint folder says about the run; written after the weights, atomically.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct State {
    config: Option<NanoConfig>,
    options: Option<TrainOptions>,
    vae_step: u64,
    latent_scale: Option<f32>,
    #[serde(default)]
    text_step: u64,
    #[serde(default)]
    text_loss: f64,
    step: u64,
    vae_loss: f64,
    loss: f64,
    seconds: f64,
}

pub struct Summary {
    pub vae_loss: f64,
    pub loss: f64,
    pub latent_scale: f32,
    pub seconds: f64,
    pub params: usize,
}

fn step_rng(seed: u64, phase: Phase, step: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(match phase {
        Phase::Autoencoder => step,
        Phase::Diffusion => (1 << 40) + step,
        Phase::Text => (2 << 40) + step,
    });
    rng
}

fn lr_at(base: f64, warmup: u64, total: u64, step: u64) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    // Cosine decay to a tenth of the base rate.
    let p = (step - warmup) as f64 / (total - warmup).max(1) as f64;
    base * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
}

/// Where a diffusion step's time goes (logged at debug level at each checkpoint).
#[derive(Default)]
struct StepTiming {
    steps: u32,
    render: Duration,
    encode: Duration,
    forward: Duration,
    backward: Duration,
    update: Duration,
}

impl StepTiming {
    fn log_and_reset(&mut self) {
        if self.steps > 0 {
            let ms = |d: Duration| d.as_secs_f64() * 1000.0 / self.steps as f64;
            tracing::debug!(
                steps = self.steps,
                render_ms = ms(self.render),
                encode_ms = ms(self.encode),
                forward_ms = ms(self.forward),
                backward_ms = ms(self.backward),
                update_ms = ms(self.update),
                "diffusion step time"
            );
        }
        *self = Self::default();
    }
}

fn merged_vars(a: &Store, b: &Store) -> BTreeMap<String, Var> {
    a.vars().iter().chain(b.vars()).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The architecture of an exported plantain-nano folder (its `training.json`).
pub fn exported_config(model: &Path) -> Result<NanoConfig> {
    Ok(crate::export::read_training(model)?.0)
}

/// The architecture and latent scale a checkpoint folder's run has (its `state.json`); the
/// scale is absent until the autoencoder phase has finished.
pub fn checkpoint_config(work: &Path) -> Result<(NanoConfig, Option<f32>)> {
    let path = work.join("state.json");
    let bytes = std::fs::read(&path).map_err(|e| NanoError::io(&path, e))?;
    let state: State = serde_json::from_slice(&bytes).map_err(|e| NanoError::Checkpoint(format!("{}: {e}", path.display())))?;
    let config = state.config.ok_or_else(|| NanoError::Checkpoint(format!("{} names no architecture", path.display())))?;
    Ok((config, state.latent_scale))
}

/// Makes an exported model's weights the first checkpoint of a fine-tune in `paths`: its
/// autoencoder and latent scale as the finished first phase, its text encoder and UNet as the
/// starting point of the later ones.
fn seed_from_model(model: &Path, cfg: &NanoConfig, paths: &Paths, state: &mut State) -> Result<()> {
    let (config, run) = crate::export::read_training(model)?;
    if config != *cfg {
        return Err(NanoError::Checkpoint(format!(
            "{} has another architecture than this run's; a fine-tune keeps the model's architecture",
            model.display()
        )));
    }
    let vae_json = model.join("vae/config.json");
    let bytes = std::fs::read(&vae_json).map_err(|e| NanoError::io(&vae_json, e))?;
    let scale = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("scaling_factor").and_then(|s| s.as_f64()))
        .ok_or_else(|| NanoError::Checkpoint(format!("{}: no scaling_factor", vae_json.display())))?;
    for (part, dst) in [
        ("vae/diffusion_pytorch_model.safetensors", "vae.safetensors"),
        ("text_encoder/model.safetensors", "text_encoder.safetensors"),
        ("unet/diffusion_pytorch_model.safetensors", "unet.safetensors"),
    ] {
        let src = model.join(part);
        if !src.is_file() {
            return Err(NanoError::Checkpoint(format!("{} is missing", src.display())));
        }
        Store::load(&src, 0)?.save(&paths.staged(dst))?;
    }
    state.latent_scale = Some(scale as f32);
    // The autoencoder is the model's: so is its loss.
    state.vae_loss = run.vae_loss;
    tracing::info!(model = %model.display(), "fine-tuning from an exported model");
    paths.commit(state)
}

/// Trains plantain-nano with checkpoints in `work` (resuming from them when present) and
/// writes the finished model, in diffusers layout, to `out`.
pub fn train(
    cfg: &NanoConfig,
    opts: &TrainOptions,
    work: &Path,
    out: &Path,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Summary> {
    check_options(opts)?;
    let mut run = Run::open(cfg, opts, work, cancel, on_progress)?;
    if let Some(model) = &opts.init_from
        && run.state.latent_scale.is_none()
    {
        seed_from_model(model, cfg, &run.paths, &mut run.state)?;
    }
    let (vae_store, vae) = run.autoencoder_phase()?;
    let latent_scale = run.latent_scale(&vae)?;
    let text = run.text_phase()?;
    let (unet_store, ema) = run.diffusion_phase(&vae, latent_scale, &text)?;

    let pick = |store: &Store| -> BTreeMap<String, Tensor> { store.vars().keys().map(|k| (k.clone(), ema[k].clone())).collect() };
    let vae_weights: BTreeMap<String, Tensor> = vae_store.vars().iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
    let params = text.store.param_count() + unet_store.param_count() + vae_store.param_count();
    let state = &run.state;
    let info = ExportInfo { options: opts.clone(), vae_loss: state.vae_loss, loss: state.loss, seconds: state.seconds, params };
    export(out, cfg, &pick(&text.store), &pick(&unet_store), &vae_weights, latent_scale, &info, DType::F16)?;
    Ok(Summary { vae_loss: state.vae_loss, loss: state.loss, latent_scale, seconds: state.seconds, params })
}

/// Refuses options that contradict each other or are out of range, before anything is written.
fn check_options(opts: &TrainOptions) -> Result<()> {
    let refuse = |why: String| Err(NanoError::Options(why));
    let fine_tune = opts.init_from.is_some();
    if opts.zero_terminal_snr && !opts.v_prediction {
        return refuse("a zero-terminal-SNR schedule needs v-prediction (ε has no signal to predict from at the last step)".into());
    }
    if opts.freeze_text && opts.parse_weight > 0.0 {
        return refuse("a parse loss during diffusion needs a text encoder that trains (freeze_text is set)".into());
    }
    if opts.freeze_text && opts.text_steps == 0 && !fine_tune {
        return refuse("freezing the text encoder without a parse phase would freeze random weights".into());
    }
    if !(0.0..=1.0).contains(&opts.mid_noise_share) {
        return refuse(format!("mid_noise_share {} is not a share in [0, 1]", opts.mid_noise_share));
    }
    if !(opts.object_weight.is_finite() && opts.object_weight >= 0.0) {
        return refuse(format!("object_weight {} is not a weight ≥ 0", opts.object_weight));
    }
    if fine_tune && opts.vae_steps > 0 {
        return refuse("a fine-tune keeps the model's autoencoder: vae_steps must be 0".into());
    }
    if fine_tune && opts.parse_weight > 0.0 && opts.text_steps == 0 {
        return refuse("a parse loss in a fine-tune needs a parse phase first (an exported model has no parse head)".into());
    }
    Ok(())
}

/// A training run under way: what it trains, its checkpoint folder and the state recorded
/// there, and what it reports to.
struct Run<'a> {
    cfg: &'a NanoConfig,
    opts: &'a TrainOptions,
    paths: Paths,
    state: State,
    cancel: &'a AtomicBool,
    on_progress: &'a mut dyn FnMut(&Progress),
    /// When this process started training, and the seconds earlier processes trained.
    started: Instant,
    seconds_before: f64,
    tokenizer: ClipTokenizer,
    /// The native square side and the canvases of every aspect-ratio bucket.
    native: u32,
    shapes: Vec<(u32, u32)>,
}

/// The text encoder and its parse head ([`crate::parse`]), with the stores of their weights.
struct TextModels {
    store: Store,
    encoder: TextEncoder,
    head_store: Store,
    head: ParseHead,
}

impl<'a> Run<'a> {
    /// Opens the checkpoint folder `work`: a new run, or the one it holds when that has the same
    /// settings (or differs only after a finished autoencoder whose diffusion phase has not
    /// started: trying diffusion settings need not repeat the first half hour).
    fn open(
        cfg: &'a NanoConfig,
        opts: &'a TrainOptions,
        work: &Path,
        cancel: &'a AtomicBool,
        on_progress: &'a mut dyn FnMut(&Progress),
    ) -> Result<Self> {
        let paths = Paths::open(work)?;
        let mut state: State = match std::fs::read(paths.file("state.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| NanoError::Checkpoint(format!("state.json: {e}")))?,
            Err(_) => State::default(),
        };
        let same_run = state.config.as_ref().is_none_or(|c| c == cfg) && state.options.as_ref().is_none_or(|o| o == opts);
        let reuses_autoencoder = state.step == 0
            && state.vae_step == opts.vae_steps
            && state.config.as_ref().is_some_and(|c| c.vae == cfg.vae)
            && state.options.as_ref().is_some_and(|o| o.autoencoder_part() == opts.autoencoder_part());
        if !same_run && !reuses_autoencoder {
            return Err(NanoError::Checkpoint(format!(
                "{} holds a run with another configuration; use a new --work folder or delete it",
                work.display()
            )));
        }
        if !same_run {
            tracing::info!("reusing the finished autoencoder in {}", work.display());
            // The text phase may have had other settings: it starts over (it is minutes).
            state.text_step = 0;
            state.text_loss = 0.0;
        }
        state.config = Some(cfg.clone());
        state.options = Some(opts.clone());
        let seconds_before = state.seconds;
        Ok(Run {
            cfg,
            opts,
            paths,
            state,
            cancel,
            on_progress,
            started: Instant::now(),
            seconds_before,
            tokenizer: ClipTokenizer::embedded_default(),
            native: cfg.native_resolution() as u32,
            shapes: buckets(cfg),
        })
    }

    /// Stops the run (its last checkpoint stays) when the caller asked.
    fn check_cancel(&self) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) { Err(NanoError::Cancelled) } else { Ok(()) }
    }

    /// Records the training time so far and reports a finished step of `phase`.
    fn report(&mut self, phase: Phase, step: u64, total: u64, loss: f64, grad_norm: f64) {
        self.state.seconds = self.seconds_before + self.started.elapsed().as_secs_f64();
        (self.on_progress)(&Progress { phase, step, total, loss, grad_norm, elapsed: Duration::from_secs_f64(self.state.seconds) });
    }

    /// Whether finishing `step` of a phase of `total` steps writes a checkpoint.
    fn checkpoint_due(&self, step: u64, total: u64) -> bool {
        step.is_multiple_of(self.opts.checkpoint_every) || step == total
    }

    /// A store of weights: the checkpoint's `file` where `saved`, else fresh ones from the seed.
    fn store(&self, file: &str, saved: bool) -> Result<Store> {
        Ok(if saved { Store::load(&self.paths.file(file), self.opts.seed)? } else { Store::new(self.opts.seed) })
    }

    /// Phase 1: the autoencoder, trained to its last step (or as checkpointed, or as the
    /// fine-tuned model has it).
    fn autoencoder_phase(&mut self) -> Result<(Store, Vae)> {
        let mut store = self.store("vae.safetensors", self.state.vae_step > 0 || self.opts.init_from.is_some())?;
        let vae = Vae::new(&mut store, &self.cfg.vae)?;
        if self.state.vae_step < self.opts.vae_steps {
            self.train_autoencoder(&store, &vae)?;
        }
        Ok((store, vae))
    }

    /// The autoencoder's remaining steps, checkpointed as they go (weights and AdamW moments).
    fn train_autoencoder(&mut self, store: &Store, vae: &Vae) -> Result<()> {
        let opts = self.opts;
        let mut opt = AdamW::new(opts.vae_lr, 0.0);
        if self.state.vae_step > 0 {
            opt.load(&self.paths.file("vae-optimizer.safetensors"))?;
        }
        let vars = store.vars().clone();
        let mut smooth = self.state.vae_loss;
        while self.state.vae_step < opts.vae_steps {
            self.check_cancel()?;
            let step = self.state.vae_step;
            let (rec, loss) = self.autoencoder_loss(vae, step)?;
            let grads = loss.backward()?;
            let lr = lr_at(opts.vae_lr, opts.warmup, opts.vae_steps, step);
            let norm = opt.step(&vars, &grads, lr, 1.0)?;
            let l = rec.to_scalar::<f32>()? as f64;
            smooth = if step == 0 { l } else { 0.98 * smooth + 0.02 * l };
            self.state.vae_step += 1;
            self.state.vae_loss = smooth;
            self.report(Phase::Autoencoder, step + 1, opts.vae_steps, smooth, norm);
            if self.checkpoint_due(step + 1, opts.vae_steps) {
                store.save(&self.paths.staged("vae.safetensors"))?;
                opt.save(&self.paths.staged("vae-optimizer.safetensors"), &vars)?;
                self.paths.commit(&self.state)?;
            }
        }
        Ok(())
    }

    /// Autoencoder step `step`'s reconstruction loss (what is logged) and the loss it trains on
    /// (plus a small KL term), on random crops of rendered scenes.
    fn autoencoder_loss(&self, vae: &Vae, step: u64) -> Result<(Tensor, Tensor)> {
        let opts = self.opts;
        let mut rng = step_rng(opts.seed, Phase::Autoencoder, step);
        let shape = pick_bucket(&self.shapes, self.native, &mut rng);
        let b = batch(&self.tokenizer, opts.vae_batch, shape, 0.0, self.cfg.text.max_positions, &mut rng)?;
        let images = if opts.vae_crop > 0 {
            // Sides stay multiples of the autoencoder's factor.
            let f = self.cfg.vae.scale_factor() as u32;
            let (cw, ch) = (opts.vae_crop.min(shape.0), opts.vae_crop.min(shape.1));
            let x0 = rng.random_range(0..=(shape.0 - cw) / f) * f;
            let y0 = rng.random_range(0..=(shape.1 - ch) / f) * f;
            b.images.narrow(3, x0 as usize, cw as usize)?.narrow(2, y0 as usize, ch as usize)?.contiguous()?
        } else {
            b.images
        };
        let (mean, logvar) = vae.encode(&images)?;
        let eps = gaussian(mean.dims(), &mut rng)?;
        let z = (&mean + ((&logvar * 0.5)?.exp()? * eps)?)?;
        let recon = vae.decode(&z)?;
        let diff = (recon - &images)?;
        let weights = edge_weights(&images, opts.vae_edge_weight)?;
        let wmean = weights.mean_all()?.to_scalar::<f32>()? as f64;
        let rec = ((diff.sqr()? + (diff.abs()? * 0.5)?)?.broadcast_mul(&weights)?.mean_all()? / wmean)?;
        let kl = (((mean.sqr()? + logvar.exp()?)? - 1.0)? - &logvar)?.mean_all()?;
        let loss = rec.add(&(kl * 1e-5)?)?;
        Ok((rec, loss))
    }

    /// The latent scale that gives the UNet unit-variance inputs, as SD's 0.18215 does:
    /// measured once the autoencoder is finished, then checkpointed.
    fn latent_scale(&mut self, vae: &Vae) -> Result<f32> {
        if let Some(s) = self.state.latent_scale {
            return Ok(s);
        }
        let opts = self.opts;
        let mut sum = 0.0f64;
        let mut sq = 0.0f64;
        let mut n = 0usize;
        for k in 0..8 {
            let mut rng = step_rng(opts.seed ^ 0x5ca1e, Phase::Autoencoder, k);
            let square = (self.native, self.native);
            let b = batch(&self.tokenizer, opts.vae_batch.max(4), square, 0.0, self.cfg.text.max_positions, &mut rng)?;
            let (mean, logvar) = vae.encode(&b.images)?;
            let z = (&mean + ((&logvar * 0.5)?.exp()? * gaussian(mean.dims(), &mut rng)?)?)?;
            let v: Vec<f32> = z.flatten_all()?.to_vec1()?;
            n += v.len();
            sum += v.iter().map(|&x| x as f64).sum::<f64>();
            sq += v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
        }
        let mean = sum / n as f64;
        let std = (sq / n as f64 - mean * mean).sqrt().max(1e-6);
        let s = (1.0 / std) as f32;
        self.state.latent_scale = Some(s);
        self.paths.commit(&self.state)?;
        Ok(s)
    }

    /// Phase 2: the text encoder learns to parse captions (no pictures), unless the diffusion
    /// phase has started or the parse phase is done.
    fn text_phase(&mut self) -> Result<TextModels> {
        let text_started = self.state.step > 0 || self.state.text_step > 0 || self.opts.init_from.is_some();
        let mut store = self.store("text_encoder.safetensors", text_started)?;
        let encoder = TextEncoder::new(&mut store, &self.cfg.text)?;
        let mut head_store = self.store("parse_head.safetensors", text_started && self.paths.file("parse_head.safetensors").exists())?;
        let head = ParseHead::new(&mut head_store, self.cfg.text.hidden_size)?;
        let text = TextModels { store, encoder, head_store, head };
        if self.state.step == 0 && self.state.text_step < self.opts.text_steps {
            self.train_text(&text)?;
        }
        Ok(text)
    }

    /// The parse phase's remaining steps on captions alone, checkpointed as they go.
    fn train_text(&mut self, text: &TextModels) -> Result<()> {
        let opts = self.opts;
        let vars = merged_vars(&text.store, &text.head_store);
        let mut opt = AdamW::new(opts.text_lr, 0.01);
        if self.state.text_step > 0 {
            opt.load(&self.paths.file("text-optimizer.safetensors"))?;
        }
        let mut smooth = self.state.text_loss;
        // Only logged, not checkpointed: it starts afresh with each (resumed) process.
        let mut accuracy: Option<f64> = None;
        while self.state.text_step < opts.text_steps {
            self.check_cancel()?;
            let step = self.state.text_step;
            let mut rng = step_rng(opts.seed, Phase::Text, step);
            let (ids, eos, targets) = caption_batch(&self.tokenizer, opts.text_batch, self.cfg.text.max_positions, &mut rng)?;
            let targets: Vec<_> = targets.into_iter().map(Some).collect();
            let parsed = text.head.loss(&text.encoder.forward(&ids)?, &eos, &targets)?.expect("every caption has a target");
            let grads = parsed.loss.backward()?;
            let lr = lr_at(opts.text_lr, opts.warmup, opts.text_steps, step);
            let norm = opt.step(&vars, &grads, lr, 1.0)?;
            let l = parsed.loss.to_scalar::<f32>()? as f64;
            smooth = if step == 0 { l } else { 0.98 * smooth + 0.02 * l };
            accuracy = Some(accuracy.map_or(parsed.background_accuracy, |a| 0.98 * a + 0.02 * parsed.background_accuracy));
            self.state.text_step += 1;
            self.state.text_loss = smooth;
            self.report(Phase::Text, step + 1, opts.text_steps, smooth, norm);
            if self.checkpoint_due(step + 1, opts.text_steps) {
                tracing::info!(step = step + 1, loss = smooth, background_accuracy = accuracy.unwrap_or(0.0), "text encoder parse");
                text.store.save(&self.paths.staged("text_encoder.safetensors"))?;
                text.head_store.save(&self.paths.staged("parse_head.safetensors"))?;
                opt.save(&self.paths.staged("text-optimizer.safetensors"), &vars)?;
                self.paths.commit(&self.state)?;
            }
        }
        Ok(())
    }

    /// Phase 3: text encoder + UNet on the frozen autoencoder's latents. Returns the UNet's
    /// store and the EMA of every exported weight.
    fn diffusion_phase(&mut self, vae: &Vae, latent_scale: f32, text: &TextModels) -> Result<(Store, BTreeMap<String, Tensor>)> {
        let opts = self.opts;
        let resuming = self.state.step > 0;
        let mut unet_store = self.store("unet.safetensors", resuming || opts.init_from.is_some())?;
        let unet = UNet::new(&mut unet_store, &self.cfg.unet)?;
        let mut all_vars = merged_vars(&text.store, &unet_store);
        if opts.parse_weight > 0.0 {
            all_vars.extend(text.head_store.vars().iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        // What the optimizer moves; the EMA holds every exported weight either way.
        let vars: BTreeMap<String, Var> = if opts.freeze_text { unet_store.vars().clone() } else { all_vars.clone() };
        let mut opt = AdamW::new(opts.lr, 0.01);
        let ema: BTreeMap<String, Tensor> = if resuming {
            candle_core::safetensors::load(self.paths.file("ema.safetensors"), &candle_core::Device::Cpu)?.into_iter().collect()
        } else {
            all_vars.iter().map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?))).collect::<candle_core::Result<_>>()?
        };
        if resuming {
            opt.load(&self.paths.file("optimizer.safetensors"))?;
        }
        let models = DiffusionModels { vae, latent_scale, text, unet: &unet, alphas: alphas_cumprod(opts.zero_terminal_snr) };
        let mut smooth = self.state.loss;
        let mut timing = StepTiming::default();
        while self.state.step < opts.steps {
            self.check_cancel()?;
            let step = self.state.step;
            let (loss, per_sample) = self.diffusion_loss(&models, step, &mut timing)?;
            let mark = Instant::now();
            let grads = loss.backward()?;
            timing.backward += mark.elapsed();
            let mark = Instant::now();
            let lr = lr_at(opts.lr, opts.warmup, opts.steps, step);
            let norm = opt.step(&vars, &grads, lr, 1.0)?;
            let decay = opts.ema_decay.min((1.0 + step as f64) / (10.0 + step as f64));
            for (k, v) in &vars {
                ema_update(&ema[k], v.as_tensor(), decay)?;
            }
            timing.update += mark.elapsed();
            timing.steps += 1;
            let l = per_sample.mean_all()?.to_scalar::<f32>()? as f64;
            smooth = if step == 0 { l } else { 0.99 * smooth + 0.01 * l };
            self.state.step += 1;
            self.state.loss = smooth;
            self.report(Phase::Diffusion, step + 1, opts.steps, smooth, norm);
            if self.checkpoint_due(step + 1, opts.steps) {
                self.save_diffusion_checkpoint(text, &unet_store, &opt, &vars, &ema)?;
                timing.log_and_reset();
            }
        }
        Ok((unet_store, ema))
    }

    /// Commits a diffusion checkpoint: the weights that train, the optimizer's moments, the EMA
    /// and the state, as a whole.
    fn save_diffusion_checkpoint(
        &self,
        text: &TextModels,
        unet_store: &Store,
        opt: &AdamW,
        vars: &BTreeMap<String, Var>,
        ema: &BTreeMap<String, Tensor>,
    ) -> Result<()> {
        let paths = &self.paths;
        text.store.save(&paths.staged("text_encoder.safetensors"))?;
        unet_store.save(&paths.staged("unet.safetensors"))?;
        if self.opts.parse_weight > 0.0 {
            text.head_store.save(&paths.staged("parse_head.safetensors"))?;
        }
        opt.save(&paths.staged("optimizer.safetensors"), vars)?;
        crate::nn::save_tensors(ema, &paths.staged("ema.safetensors"))?;
        paths.commit(&self.state)
    }

    /// Diffusion step `step`'s loss (with the parse loss, if on) and its per-picture diffusion
    /// losses (unweighted by noise level; what is logged).
    fn diffusion_loss(&self, m: &DiffusionModels, step: u64, timing: &mut StepTiming) -> Result<(Tensor, Tensor)> {
        let opts = self.opts;
        let mut rng = step_rng(opts.seed, Phase::Diffusion, step);
        let shape = pick_bucket(&self.shapes, self.native, &mut rng);
        let mark = Instant::now();
        let b = batch(&self.tokenizer, opts.batch, shape, opts.caption_dropout, self.cfg.text.max_positions, &mut rng)?;
        timing.render += mark.elapsed();
        let mark = Instant::now();
        let (mean, logvar) = m.vae.encode(&b.images)?;
        let z = (&mean + ((&logvar * 0.5)?.exp()? * gaussian(mean.dims(), &mut rng)?)?)?;
        let z = (z * m.latent_scale as f64)?.detach();
        timing.encode += mark.elapsed();
        let ts: Vec<usize> = (0..opts.batch).map(|_| draw_timestep(opts, m.alphas.len(), &mut rng)).collect();
        // Offset noise (a shared per-channel shift): lets the model move a picture's mean
        // colour, which plain noise schedules barely train, and flat backgrounds need.
        let dims = z.dims().to_vec();
        let offset = (gaussian(&[dims[0], dims[1], 1, 1], &mut rng)? * opts.offset_noise)?;
        let noise = gaussian(&dims, &mut rng)?.broadcast_add(&offset)?;
        let (noisy, target) = noised(&z, &noise, &ts, &m.alphas, opts.v_prediction)?;
        let mark = Instant::now();
        let ctx = if opts.freeze_text { m.text.encoder.forward(&b.ids)?.detach() } else { m.text.encoder.forward(&b.ids)? };
        let tf: Vec<f32> = ts.iter().map(|&t| t as f32).collect();
        let pred = m.unet.forward(&noisy, &tf, &ctx)?;
        let per_sample = self.per_sample_loss(&(pred - &target)?, &b)?;
        let w = Tensor::from_vec(loss_weights(opts, &m.alphas, &ts), opts.batch, &candle_core::Device::Cpu)?;
        let mut loss = (per_sample.clone() * &w)?.mean_all()?;
        if opts.parse_weight > 0.0
            && let Some(parsed) = m.text.head.loss(&ctx, &b.eos, &b.targets)?
        {
            loss = (loss + (parsed.loss * opts.parse_weight)?)?;
        }
        timing.forward += mark.elapsed();
        Ok((loss, per_sample))
    }

    /// Each picture's mean squared error `err`, over latent cells weighted by the objects they
    /// cover ([`cell_weights`]) when the options weigh objects.
    fn per_sample_loss(&self, err: &Tensor, b: &Batch) -> Result<Tensor> {
        let sq = err.sqr()?;
        Ok(if self.opts.object_weight > 0.0 {
            let w = cell_weights(&b.object_masks, self.cfg.vae.scale_factor(), self.opts.object_weight)?;
            sq.broadcast_mul(&w)?.flatten_from(1)?.mean(1)?
        } else {
            sq.flatten_from(1)?.mean(1)?
        })
    }
}

/// What a diffusion step runs: the frozen autoencoder and its latent scale, the text models,
/// the UNet, and the noise schedule's ᾱ.
struct DiffusionModels<'m> {
    vae: &'m Vae,
    latent_scale: f32,
    text: &'m TextModels,
    unet: &'m UNet,
    alphas: Vec<f64>,
}

/// The latents `z` noised with `noise` to timesteps `ts`, and what the UNet must predict from
/// them: v = α·ε − σ·x0 (diffusers' get_velocity, with the same, offset, noise), or ε.
fn noised(z: &Tensor, noise: &Tensor, ts: &[usize], alphas: &[f64], v_prediction: bool) -> Result<(Tensor, Tensor)> {
    let n = ts.len();
    let col = |v: Vec<f32>| Tensor::from_vec(v, (n, 1, 1, 1), &candle_core::Device::Cpu);
    let sa = || col(ts.iter().map(|&t| alphas[t].sqrt() as f32).collect());
    let sb = || col(ts.iter().map(|&t| (1.0 - alphas[t]).sqrt() as f32).collect());
    let noisy = (z.broadcast_mul(&sa()?)? + noise.broadcast_mul(&sb()?)?)?;
    let target = if v_prediction { (noise.broadcast_mul(&sa()?)? - z.broadcast_mul(&sb()?)?)? } else { noise.clone() };
    Ok((noisy, target))
}

/// Each picture's loss weight at its timestep, stated as a weight on the x0 error (ε-MSE =
/// snr·x0-MSE, v-MSE = (snr+1)·x0-MSE). ε with min-SNR-5 (Hang et al. 2023) weighs x0 by
/// min(snr, 5): next to nothing at high noise, where nothing but the prompt says what the
/// picture is, so the first model learned to draw without reading it. v with
/// min(snr+floor, 5)/(snr+1) weighs x0 by min(snr+floor, 5): at least the floor everywhere,
/// capped at low noise like min-SNR.
fn loss_weights(opts: &TrainOptions, alphas: &[f64], ts: &[usize]) -> Vec<f32> {
    ts.iter()
        .map(|&t| {
            let snr = alphas[t] / (1.0 - alphas[t]);
            if opts.v_prediction { ((snr + opts.x0_weight_floor).min(5.0) / (snr + 1.0)) as f32 } else { (snr.min(5.0) / snr) as f32 }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(opts: &TrainOptions) -> (f64, f64) {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let ts: Vec<usize> = (0..20_000).map(|_| draw_timestep(opts, 1000, &mut rng)).collect();
        let middle = ts.iter().filter(|&&t| (350..650).contains(&t)).count() as f64 / ts.len() as f64;
        let low = ts.iter().filter(|&&t| t < 100).count() as f64 / ts.len() as f64;
        (middle, low)
    }

    #[test]
    fn a_middle_noise_share_moves_timesteps_to_the_middle() {
        let uniform = TrainOptions { mid_noise_share: 0.0, ..TrainOptions::standard() };
        let (middle, low) = histogram(&uniform);
        assert!((middle - 0.30).abs() < 0.02 && (low - 0.10).abs() < 0.01, "uniform: {middle} {low}");
        let all_middle = TrainOptions { mid_noise_share: 1.0, ..TrainOptions::standard() };
        let (middle, low) = histogram(&all_middle);
        // Logit-normal(0, 1): P(0.35 < u < 0.65) ≈ 0.46, P(u < 0.1) ≈ 0.014.
        assert!((middle - 0.46).abs() < 0.02 && low < 0.03, "logit-normal: {middle} {low}");
        let half = TrainOptions { mid_noise_share: 0.5, ..TrainOptions::standard() };
        let (middle, _) = histogram(&half);
        assert!((middle - 0.38).abs() < 0.02, "half and half: {middle}");
    }

    #[test]
    fn without_a_middle_share_the_timesteps_replay_as_before() {
        // The draw the trainer made before the option existed.
        let opts = TrainOptions { mid_noise_share: 0.0, ..TrainOptions::standard() };
        let (mut a, mut b) = (ChaCha8Rng::seed_from_u64(7), ChaCha8Rng::seed_from_u64(7));
        for _ in 0..1000 {
            assert_eq!(draw_timestep(&opts, 1000, &mut a), b.random_range(0..1000));
        }
    }
}
