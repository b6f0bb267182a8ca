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
use crate::data::{batch, buckets, caption_batch, edge_weights, gaussian, object_crops, pick_bucket, twin_batch};
use crate::export::{ExportInfo, export};
use crate::nn::Store;
use crate::parse::ParseHead;
use crate::probe::ObjectProbe;
use crate::text::TextEncoder;
use crate::unet::UNet;
use crate::vae::Vae;
use crate::{NanoError, Result};

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
    /// Centre each autoencoder crop (per picture) near a random object pixel instead of at a
    /// random place: a random quarter of a picture is mostly flat background, while the small
    /// objects are what the autoencoder loses (BENCHMARKS.md: shapes come back as blobs).
    #[serde(default)]
    pub vae_object_crops: bool,
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
    /// Share of each batch whose timesteps are drawn from the noisiest quarter
    /// (t ≥ [`HIGH_NOISE_FROM`]) instead of uniformly: there the prompt is all the model has
    /// to go on, and sampling decides colours and layout in those first steps.
    #[serde(default)]
    pub high_noise_share: f64,
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
    /// Further weight on latent cells that object outlines cross (+ this x the cell's share of
    /// a 2 px band along the outlines): an object's shape is all in its outline, and changing
    /// it moves the latents a third as far as changing its colour (`--example latent_gaps`).
    #[serde(default)]
    pub outline_weight: f64,
    /// Batches of twin pairs (a scene and the same scene with one object's shape changed, with
    /// the same noise, timestep and wording) and, at this weight, a loss on the difference of
    /// each pair's errors: the part of the error only the shape word can explain (0: off).
    #[serde(default)]
    pub shape_twin_weight: f64,
    /// Weight of the object probe's loss ([`crate::probe`]): a linear head on the UNet's last
    /// features, pooled over each object's box, names its shape and colour (0: off).
    #[serde(default)]
    pub object_probe_weight: f64,
    /// Share of each diffusion batch drawn from single-object scenes (0: the world's own mix,
    /// about a third of them): one object and one shape word, nothing to bind it to.
    #[serde(default)]
    pub single_object_share: f64,
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

/// One training timestep in `0..len`: uniform, or from the options' high- or middle-noise
/// share. No random number is drawn for a share of 0, so older runs replay exactly.
fn draw_timestep(opts: &TrainOptions, len: usize, rng: &mut ChaCha8Rng) -> usize {
    if opts.mid_noise_share > 0.0 && rng.random_bool(opts.mid_noise_share) {
        // Logit-normal(0, 1) over the schedule (as SD3 samples its timesteps): most mass in
        // the middle, where a picture's shapes are decided (BENCHMARKS.md, --from-truth).
        let z: f64 = rng.sample(rand_distr::StandardNormal);
        let u = 1.0 / (1.0 + (-z).exp());
        return ((u * len as f64) as usize).min(len - 1);
    }
    let high = opts.high_noise_share > 0.0 && rng.random_bool(opts.high_noise_share);
    rng.random_range(if high { HIGH_NOISE_FROM } else { 0 }..len)
}

/// The diffusion loss's weight on each latent cell (factor `f` pixels on a side) of pictures
/// with these (batch, 1, h, w) object masks: 1 + `object` x the cell's object share +
/// `outline` x its share of [`outline_band`], normalised to mean 1 per picture.
pub fn cell_weights(masks: &Tensor, f: usize, object: f64, outline: f64) -> candle_core::Result<Tensor> {
    let share = masks.avg_pool2d((f, f))?;
    let mut w = ((share * object)? + 1.0)?;
    if outline > 0.0 {
        w = (w + (outline_band(masks)?.avg_pool2d((f, f))? * outline)?)?;
    }
    w.broadcast_div(&w.flatten_from(1)?.mean_keepdim(1)?.unsqueeze(2)?.unsqueeze(3)?)
}

/// Each item of the batch twice in a row: (n, ...) to (2n, ...) as a0 a0 a1 a1 ...
pub fn repeat_pairwise(t: &Tensor) -> candle_core::Result<Tensor> {
    let dims = t.dims();
    let mut paired = vec![dims[0], 2];
    paired.extend_from_slice(&dims[1..]);
    let mut out = dims.to_vec();
    out[0] *= 2;
    t.unsqueeze(1)?.broadcast_as(paired)?.contiguous()?.reshape(out)
}

/// A band about 2 px wide along every outline of a (batch, 1, h, w) object mask: its 3x3
/// dilation minus its 3x3 erosion.
pub fn outline_band(masks: &Tensor) -> candle_core::Result<Tensor> {
    let pad = |m: &Tensor| m.pad_with_same(2, 1, 1)?.pad_with_same(3, 1, 1);
    let dilated = pad(masks)?.max_pool2d_with_stride(3, 1)?;
    let eroded = pad(&masks.neg()?)?.max_pool2d_with_stride(3, 1)?.neg()?;
    dilated - eroded
}

/// Where [`TrainOptions::high_noise_share`]'s timesteps start.
pub const HIGH_NOISE_FROM: usize = 750;

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
            vae_object_crops: false,
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
            high_noise_share: 0.0,
            // The eleventh run (BENCHMARKS.md): positions, counts and backgrounds up.
            mid_noise_share: 0.5,
            x0_weight_floor: 0.25,
            object_weight: 8.0,
            outline_weight: 0.0,
            shape_twin_weight: 0.0,
            object_probe_weight: 0.0,
            single_object_share: 0.0,
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
    fn autoencoder_part(&self) -> (u64, u64, usize, f64, f32, u32, bool, u64) {
        (self.seed, self.vae_steps, self.vae_batch, self.vae_lr, self.vae_edge_weight, self.vae_crop, self.vae_object_crops, self.warmup)
    }

    /// The earlier recipe (runs one to three in BENCHMARKS.md): ε-prediction on SD's schedule
    /// with min-SNR-5 weights, uniform timesteps and offset noise.
    pub fn epsilon() -> Self {
        Self {
            steps: 2200,
            offset_noise: 0.05,
            v_prediction: false,
            zero_terminal_snr: false,
            high_noise_share: 0.0,
            mid_noise_share: 0.0,
            x0_weight_floor: 1.0,
            object_weight: 0.0,
            outline_weight: 0.0,
            shape_twin_weight: 0.0,
            object_probe_weight: 0.0,
            single_object_share: 0.0,
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
            vae_object_crops: false,
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
            high_noise_share: 0.5,
            mid_noise_share: 0.0,
            x0_weight_floor: 0.25,
            object_weight: 8.0,
            outline_weight: 4.0,
            shape_twin_weight: 0.0,
            object_probe_weight: 0.0,
            single_object_share: 0.0,
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
    if opts.zero_terminal_snr && !opts.v_prediction {
        return Err(NanoError::Options(
            "a zero-terminal-SNR schedule needs v-prediction (ε has no signal to predict from at the last step)".into(),
        ));
    }
    if opts.freeze_text && opts.parse_weight > 0.0 {
        return Err(NanoError::Options("a parse loss during diffusion needs a text encoder that trains (freeze_text is set)".into()));
    }
    let fine_tune = opts.init_from.is_some();
    if opts.freeze_text && opts.text_steps == 0 && !fine_tune {
        return Err(NanoError::Options("freezing the text encoder without a parse phase would freeze random weights".into()));
    }
    if !(0.0..=1.0).contains(&opts.mid_noise_share) {
        return Err(NanoError::Options(format!("mid_noise_share {} is not a share in [0, 1]", opts.mid_noise_share)));
    }
    for (name, w) in [
        ("object_weight", opts.object_weight),
        ("outline_weight", opts.outline_weight),
        ("shape_twin_weight", opts.shape_twin_weight),
        ("object_probe_weight", opts.object_probe_weight),
    ] {
        if !(w.is_finite() && w >= 0.0) {
            return Err(NanoError::Options(format!("{name} {w} is not a weight ≥ 0")));
        }
    }
    if !(0.0..=1.0).contains(&opts.single_object_share) {
        return Err(NanoError::Options(format!("single_object_share {} is not a share in [0, 1]", opts.single_object_share)));
    }
    if opts.single_object_share > 0.0 && opts.shape_twin_weight > 0.0 {
        return Err(NanoError::Options("twin batches draw their scenes from the world's own mix: no single_object_share with them".into()));
    }
    if !(0.0..=1.0).contains(&opts.high_noise_share) {
        return Err(NanoError::Options(format!("high_noise_share {} is not a share in [0, 1]", opts.high_noise_share)));
    }
    if fine_tune && opts.vae_steps > 0 {
        return Err(NanoError::Options("a fine-tune keeps the model's autoencoder: vae_steps must be 0".into()));
    }
    if fine_tune && opts.parse_weight > 0.0 && opts.text_steps == 0 {
        return Err(NanoError::Options(
            "a parse loss in a fine-tune needs a parse phase first (an exported model has no parse head)".into(),
        ));
    }
    if opts.shape_twin_weight > 0.0 && (opts.batch < 2 || !opts.batch.is_multiple_of(2)) {
        return Err(NanoError::Options(format!("shape twins come in pairs: batch {} is not even", opts.batch)));
    }
    let paths = Paths::open(work)?;
    let mut state: State = match std::fs::read(paths.file("state.json")) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| NanoError::Checkpoint(format!("state.json: {e}")))?,
        Err(_) => State::default(),
    };
    let same_run = state.config.as_ref().is_none_or(|c| c == cfg) && state.options.as_ref().is_none_or(|o| o == opts);
    // A finished autoencoder serves a run that changes only the later phase, as long as that
    // phase has not started: trying diffusion settings need not repeat the first half hour.
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
    let started = Instant::now();
    let seconds_before = state.seconds;
    let tokenizer = ClipTokenizer::embedded_default();
    let native = cfg.native_resolution() as u32;
    let shapes = buckets(cfg);

    if let Some(model) = &opts.init_from
        && state.latent_scale.is_none()
    {
        seed_from_model(model, cfg, &paths, &mut state)?;
    }

    // Phase 1: the autoencoder.
    let vae_file = paths.file("vae.safetensors");
    let mut vae_store = if state.vae_step > 0 || fine_tune { Store::load(&vae_file, opts.seed)? } else { Store::new(opts.seed) };
    let vae = Vae::new(&mut vae_store, &cfg.vae)?;
    if state.vae_step < opts.vae_steps {
        let mut opt = AdamW::new(opts.vae_lr, 0.0);
        if state.vae_step > 0 {
            opt.load(&paths.file("vae-optimizer.safetensors"))?;
        }
        let vars = vae_store.vars().clone();
        let mut smooth = state.vae_loss;
        while state.vae_step < opts.vae_steps {
            if cancel.load(Ordering::Relaxed) {
                return Err(NanoError::Cancelled);
            }
            let step = state.vae_step;
            let mut rng = step_rng(opts.seed, Phase::Autoencoder, step);
            let shape = pick_bucket(&shapes, native, &mut rng);
            let b = batch(&tokenizer, opts.vae_batch, shape, 0.0, 0.0, cfg.text.max_positions, &mut rng)?;
            let images = if opts.vae_crop > 0 {
                // Sides stay multiples of the autoencoder's factor.
                let f = cfg.vae.scale_factor() as u32;
                let (cw, ch) = (opts.vae_crop.min(shape.0), opts.vae_crop.min(shape.1));
                if opts.vae_object_crops {
                    object_crops(&b.images, &b.object_masks, (cw, ch), f, &mut rng)?
                } else {
                    let x0 = rng.random_range(0..=(shape.0 - cw) / f) * f;
                    let y0 = rng.random_range(0..=(shape.1 - ch) / f) * f;
                    b.images.narrow(3, x0 as usize, cw as usize)?.narrow(2, y0 as usize, ch as usize)?.contiguous()?
                }
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
            let grads = loss.backward()?;
            let lr = lr_at(opts.vae_lr, opts.warmup, opts.vae_steps, step);
            let norm = opt.step(&vars, &grads, lr, 1.0)?;
            let l = rec.to_scalar::<f32>()? as f64;
            smooth = if step == 0 { l } else { 0.98 * smooth + 0.02 * l };
            state.vae_step += 1;
            state.vae_loss = smooth;
            state.seconds = seconds_before + started.elapsed().as_secs_f64();
            on_progress(&Progress {
                phase: Phase::Autoencoder,
                step: state.vae_step,
                total: opts.vae_steps,
                loss: smooth,
                grad_norm: norm,
                elapsed: Duration::from_secs_f64(state.seconds),
            });
            if state.vae_step.is_multiple_of(opts.checkpoint_every) || state.vae_step == opts.vae_steps {
                vae_store.save(&paths.staged("vae.safetensors"))?;
                opt.save(&paths.staged("vae-optimizer.safetensors"), &vars)?;
                paths.commit(&state)?;
            }
        }
    }

    // The latent scale that gives the UNet unit-variance inputs, as SD's 0.18215 does.
    let latent_scale = match state.latent_scale {
        Some(s) => s,
        None => {
            let mut sum = 0.0f64;
            let mut sq = 0.0f64;
            let mut n = 0usize;
            for k in 0..8 {
                let mut rng = step_rng(opts.seed ^ 0x5ca1e, Phase::Autoencoder, k);
                let b = batch(&tokenizer, opts.vae_batch.max(4), (native, native), 0.0, 0.0, cfg.text.max_positions, &mut rng)?;
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
            state.latent_scale = Some(s);
            paths.commit(&state)?;
            s
        }
    };

    // Phase 2: the text encoder learns to parse captions (no pictures).
    let text_file = paths.file("text_encoder.safetensors");
    let head_file = paths.file("parse_head.safetensors");
    let resuming = state.step > 0;
    let text_started = resuming || state.text_step > 0 || fine_tune;
    let mut text_store = if text_started { Store::load(&text_file, opts.seed)? } else { Store::new(opts.seed) };
    let text = TextEncoder::new(&mut text_store, &cfg.text)?;
    let mut head_store = if text_started && head_file.exists() { Store::load(&head_file, opts.seed)? } else { Store::new(opts.seed) };
    let head = ParseHead::new(&mut head_store, cfg.text.hidden_size)?;
    if state.step == 0 && state.text_step < opts.text_steps {
        let vars = merged_vars(&text_store, &head_store);
        let mut opt = AdamW::new(opts.text_lr, 0.01);
        if state.text_step > 0 {
            opt.load(&paths.file("text-optimizer.safetensors"))?;
        }
        let mut smooth = state.text_loss;
        // Only logged, not checkpointed: it starts afresh with each (resumed) process.
        let mut accuracy: Option<f64> = None;
        while state.text_step < opts.text_steps {
            if cancel.load(Ordering::Relaxed) {
                return Err(NanoError::Cancelled);
            }
            let step = state.text_step;
            let mut rng = step_rng(opts.seed, Phase::Text, step);
            let (ids, eos, targets) = caption_batch(&tokenizer, opts.text_batch, cfg.text.max_positions, &mut rng)?;
            let targets: Vec<_> = targets.into_iter().map(Some).collect();
            let parsed = head.loss(&text.forward(&ids)?, &eos, &targets)?.expect("every caption has a target");
            let grads = parsed.loss.backward()?;
            let lr = lr_at(opts.text_lr, opts.warmup, opts.text_steps, step);
            let norm = opt.step(&vars, &grads, lr, 1.0)?;
            let l = parsed.loss.to_scalar::<f32>()? as f64;
            smooth = if step == 0 { l } else { 0.98 * smooth + 0.02 * l };
            accuracy = Some(accuracy.map_or(parsed.background_accuracy, |a| 0.98 * a + 0.02 * parsed.background_accuracy));
            state.text_step += 1;
            state.text_loss = smooth;
            state.seconds = seconds_before + started.elapsed().as_secs_f64();
            on_progress(&Progress {
                phase: Phase::Text,
                step: state.text_step,
                total: opts.text_steps,
                loss: smooth,
                grad_norm: norm,
                elapsed: Duration::from_secs_f64(state.seconds),
            });
            if state.text_step.is_multiple_of(opts.checkpoint_every) || state.text_step == opts.text_steps {
                tracing::info!(step = state.text_step, loss = smooth, background_accuracy = accuracy.unwrap_or(0.0), "text encoder parse");
                text_store.save(&paths.staged("text_encoder.safetensors"))?;
                head_store.save(&paths.staged("parse_head.safetensors"))?;
                opt.save(&paths.staged("text-optimizer.safetensors"), &vars)?;
                paths.commit(&state)?;
            }
        }
    }

    // Phase 3: text encoder + UNet on the frozen autoencoder's latents.
    let unet_file = paths.file("unet.safetensors");
    let mut unet_store = if resuming || fine_tune { Store::load(&unet_file, opts.seed)? } else { Store::new(opts.seed) };
    let unet = UNet::new(&mut unet_store, &cfg.unet)?;
    let probe_file = paths.file("object_probe.safetensors");
    let mut probe_store = if resuming && probe_file.exists() { Store::load(&probe_file, opts.seed)? } else { Store::new(opts.seed) };
    let probe =
        if opts.object_probe_weight > 0.0 { Some(ObjectProbe::new(&mut probe_store, cfg.unet.block_out_channels[0])?) } else { None };
    let mut all_vars = merged_vars(&text_store, &unet_store);
    if opts.parse_weight > 0.0 {
        all_vars.extend(head_store.vars().iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    all_vars.extend(probe_store.vars().iter().map(|(k, v)| (k.clone(), v.clone())));
    // What the optimizer moves; the EMA holds every exported weight either way.
    let mut vars: BTreeMap<String, Var> = if opts.freeze_text { unet_store.vars().clone() } else { all_vars.clone() };
    vars.extend(probe_store.vars().iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut opt = AdamW::new(opts.lr, 0.01);
    let ema: BTreeMap<String, Tensor> = if resuming {
        candle_core::safetensors::load(paths.file("ema.safetensors"), &candle_core::Device::Cpu)?.into_iter().collect()
    } else {
        all_vars.iter().map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?))).collect::<candle_core::Result<_>>()?
    };
    if resuming {
        opt.load(&paths.file("optimizer.safetensors"))?;
    }
    let alphas = alphas_cumprod(opts.zero_terminal_snr);
    let mut smooth = state.loss;
    let mut timing = StepTiming::default();
    while state.step < opts.steps {
        if cancel.load(Ordering::Relaxed) {
            return Err(NanoError::Cancelled);
        }
        let step = state.step;
        let mut rng = step_rng(opts.seed, Phase::Diffusion, step);
        let shape = pick_bucket(&shapes, native, &mut rng);
        let mark = Instant::now();
        let twins = opts.shape_twin_weight > 0.0;
        let b = if twins {
            twin_batch(&tokenizer, opts.batch, shape, opts.caption_dropout, cfg.text.max_positions, &mut rng)?
        } else {
            batch(&tokenizer, opts.batch, shape, opts.caption_dropout, opts.single_object_share, cfg.text.max_positions, &mut rng)?
        };
        timing.render += mark.elapsed();
        // Twins share their random draws (one per pair, repeated); otherwise one per picture.
        let draw_noise = |dims: &[usize], rng: &mut ChaCha8Rng| -> Result<Tensor> {
            if !twins {
                return Ok(gaussian(dims, rng)?);
            }
            let mut half = dims.to_vec();
            half[0] /= 2;
            Ok(repeat_pairwise(&gaussian(&half, rng)?)?)
        };
        let mark = Instant::now();
        let (mean, logvar) = vae.encode(&b.images)?;
        let z = (&mean + ((&logvar * 0.5)?.exp()? * draw_noise(mean.dims(), &mut rng)?)?)?;
        let z = (z * latent_scale as f64)?.detach();
        timing.encode += mark.elapsed();
        let n = opts.batch;
        let ts: Vec<usize> = if twins {
            (0..n / 2).flat_map(|_| [draw_timestep(opts, alphas.len(), &mut rng); 2]).collect()
        } else {
            (0..n).map(|_| draw_timestep(opts, alphas.len(), &mut rng)).collect()
        };
        // Offset noise (a shared per-channel shift): lets the model move a picture's mean
        // colour, which plain noise schedules barely train, and flat backgrounds need.
        let dims = z.dims().to_vec();
        let offset = (draw_noise(&[dims[0], dims[1], 1, 1], &mut rng)? * opts.offset_noise)?;
        let noise = draw_noise(&dims, &mut rng)?.broadcast_add(&offset)?;
        let sa: Vec<f32> = ts.iter().map(|&t| alphas[t].sqrt() as f32).collect();
        let sb: Vec<f32> = ts.iter().map(|&t| (1.0 - alphas[t]).sqrt() as f32).collect();
        let col = |v: Vec<f32>| Tensor::from_vec(v, (n, 1, 1, 1), &candle_core::Device::Cpu);
        let noisy = (z.broadcast_mul(&col(sa)?)? + noise.broadcast_mul(&col(sb)?)?)?;
        let mark = Instant::now();
        let ctx = if opts.freeze_text { text.forward(&b.ids)?.detach() } else { text.forward(&b.ids)? };
        let tf: Vec<f32> = ts.iter().map(|&t| t as f32).collect();
        let (pred, features) = unet.forward_with_features(&noisy, &tf, &ctx)?;
        // Loss weights, stated as weights on the x0 error (ε-MSE = snr·x0-MSE, v-MSE =
        // (snr+1)·x0-MSE). ε with min-SNR-5 (Hang et al. 2023) weighs x0 by min(snr, 5): next to
        // nothing at high noise, where nothing but the prompt says what the picture is, so the
        // first model learned to draw without reading it. v with min(snr+floor, 5)/(snr+1) weighs
        // x0 by min(snr+floor, 5): at least the floor everywhere, capped at low noise like min-SNR.
        let weights: Vec<f32> = ts
            .iter()
            .map(|&t| {
                let snr = alphas[t] / (1.0 - alphas[t]);
                if opts.v_prediction { ((snr + opts.x0_weight_floor).min(5.0) / (snr + 1.0)) as f32 } else { (snr.min(5.0) / snr) as f32 }
            })
            .collect();
        let target = if opts.v_prediction {
            // v = α·ε − σ·x0 (diffusers' get_velocity), with the same (offset) noise.
            let sa: Vec<f32> = ts.iter().map(|&t| alphas[t].sqrt() as f32).collect();
            let sb: Vec<f32> = ts.iter().map(|&t| (1.0 - alphas[t]).sqrt() as f32).collect();
            (noise.broadcast_mul(&col(sa)?)? - z.broadcast_mul(&col(sb)?)?)?
        } else {
            noise.clone()
        };
        let err = (pred - &target)?;
        let sq = err.sqr()?;
        let per_sample = if opts.object_weight > 0.0 || opts.outline_weight > 0.0 {
            let w = cell_weights(&b.object_masks, cfg.vae.scale_factor(), opts.object_weight, opts.outline_weight)?;
            sq.broadcast_mul(&w)?.flatten_from(1)?.mean(1)?
        } else {
            sq.flatten_from(1)?.mean(1)?
        };
        let w = Tensor::from_vec(weights, n, &candle_core::Device::Cpu)?;
        let mut loss = (per_sample.clone() * &w)?.mean_all()?;
        if twins {
            // The difference of a pair's errors: what the two pictures' shared noise, timestep,
            // layout and colours cannot explain, only the changed shape (and its word).
            let (_, c, h, wd) = err.dims4()?;
            let pairs = err.reshape((n / 2, 2, c, h, wd))?;
            let gap = (pairs.narrow(1, 0, 1)? - pairs.narrow(1, 1, 1)?)?.sqr()?.flatten_from(1)?.mean(1)?;
            let pair_w = w.reshape((n / 2, 2))?.narrow(1, 0, 1)?.squeeze(1)?;
            loss = (loss + ((gap * pair_w)?.mean_all()? * opts.shape_twin_weight)?)?;
        }
        if let Some(probe) = &probe {
            let captioned: Vec<bool> = b.targets.iter().map(|t| t.is_some()).collect();
            if let Some(probed) = probe.loss(&features, &b.scenes, &captioned, shape)? {
                loss = (loss + (&probed * opts.object_probe_weight)?)?;
                if (state.step + 1).is_multiple_of(opts.checkpoint_every) {
                    let scenes: Vec<_> = b.scenes.iter().zip(&captioned).filter(|(_, c)| **c).map(|(s, _)| s.clone()).collect();
                    let kept: Vec<u32> = captioned.iter().enumerate().filter(|(_, c)| **c).map(|(i, _)| i as u32).collect();
                    let n = kept.len();
                    let feats = features.detach().index_select(&Tensor::from_vec(kept, n, &candle_core::Device::Cpu)?, 0)?;
                    let accuracy = crate::probe::shape_accuracy(probe, &feats, &scenes, shape)?;
                    tracing::info!(step = state.step + 1, loss = probed.to_scalar::<f32>()?, shape_accuracy = accuracy, "object probe");
                }
            }
        }
        if opts.parse_weight > 0.0
            && let Some(parsed) = head.loss(&ctx, &b.eos, &b.targets)?
        {
            loss = (loss + (parsed.loss * opts.parse_weight)?)?;
        }
        timing.forward += mark.elapsed();
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
        state.step += 1;
        state.loss = smooth;
        state.seconds = seconds_before + started.elapsed().as_secs_f64();
        on_progress(&Progress {
            phase: Phase::Diffusion,
            step: state.step,
            total: opts.steps,
            loss: smooth,
            grad_norm: norm,
            elapsed: Duration::from_secs_f64(state.seconds),
        });
        if state.step.is_multiple_of(opts.checkpoint_every) || state.step == opts.steps {
            text_store.save(&paths.staged("text_encoder.safetensors"))?;
            unet_store.save(&paths.staged("unet.safetensors"))?;
            if opts.parse_weight > 0.0 {
                head_store.save(&paths.staged("parse_head.safetensors"))?;
            }
            if probe.is_some() {
                probe_store.save(&paths.staged("object_probe.safetensors"))?;
            }
            opt.save(&paths.staged("optimizer.safetensors"), &vars)?;
            crate::nn::save_tensors(&ema, &paths.staged("ema.safetensors"))?;
            paths.commit(&state)?;
            timing.log_and_reset();
        }
    }

    let pick = |store: &Store| -> BTreeMap<String, Tensor> { store.vars().keys().map(|k| (k.clone(), ema[k].clone())).collect() };
    let vae_weights: BTreeMap<String, Tensor> = vae_store.vars().iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
    let params = text_store.param_count() + unet_store.param_count() + vae_store.param_count();
    let info = ExportInfo { options: opts.clone(), vae_loss: state.vae_loss, loss: state.loss, seconds: state.seconds, params };
    export(out, cfg, &pick(&text_store), &pick(&unet_store), &vae_weights, latent_scale, &info, DType::F16)?;
    Ok(Summary { vae_loss: state.vae_loss, loss: state.loss, latent_scale, seconds: state.seconds, params })
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
    fn pairwise_repetition_puts_each_item_twice_in_a_row() {
        let t = Tensor::from_vec(vec![1f32, 2., 3., 4., 5., 6.], (3, 2), &candle_core::Device::Cpu).unwrap();
        let r: Vec<Vec<f32>> = repeat_pairwise(&t).unwrap().to_vec2().unwrap();
        assert_eq!(r, vec![vec![1., 2.], vec![1., 2.], vec![3., 4.], vec![3., 4.], vec![5., 6.], vec![5., 6.]]);
    }

    #[test]
    fn the_outline_band_follows_the_outline_only() {
        // A 6x6 square in a 16x16 mask.
        let mut m = vec![0f32; 256];
        for y in 5..11 {
            for x in 5..11 {
                m[y * 16 + x] = 1.0;
            }
        }
        let mask = Tensor::from_vec(m, (1, 1, 16, 16), &candle_core::Device::Cpu).unwrap();
        let band: Vec<Vec<f32>> = outline_band(&mask).unwrap().squeeze(0).unwrap().squeeze(0).unwrap().to_vec2().unwrap();
        // On the outline, on both sides of it: 1.
        for (y, x) in [(5, 5), (4, 7), (10, 8), (8, 11), (8, 4), (11, 11)] {
            assert_eq!(band[y][x], 1.0, "({y}, {x})");
        }
        // Inside and well outside: 0 (the canvas edge is not an outline).
        for (y, x) in [(7, 7), (8, 8), (2, 2), (8, 1), (0, 0), (15, 15), (13, 8)] {
            assert_eq!(band[y][x], 0.0, "({y}, {x})");
        }
        assert_eq!(band.iter().flatten().sum::<f32>(), (8 * 8 - 4 * 4) as f32);
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
