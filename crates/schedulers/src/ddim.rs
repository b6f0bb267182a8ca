//! `DDIMScheduler`.

use crate::config::{Base, DDIM_DEFAULTS, Prediction, SchedulerConfig, Spacing};
use crate::error::{Result, SchedulerError};
use crate::numerics;
use crate::{Scheduler, SchedulerKind, check_index, check_len, check_step_inputs, img2img_begin};

/// Denoising diffusion implicit models (Song et al. 2020): deterministic at
/// eta 0, stochastic (caller noise) for eta > 0. Works in alpha space, so
/// `sigmas()` is `None` and model inputs are not rescaled.
#[derive(Debug, Clone)]
pub struct Ddim {
    base: Base,
    final_alpha_cumprod: f32,
    clip_sample: Option<f32>,
    eta: f32,
    num_inference_steps: usize,
    timesteps: Vec<f32>,
    timesteps_int: Vec<usize>,
    begin_index: usize,
}

impl Ddim {
    /// Build from a diffusers config, using `DDIMScheduler` defaults (note:
    /// `clip_sample` and `set_alpha_to_one` default to true for this class).
    pub fn new(cfg: &SchedulerConfig) -> Result<Self> {
        let base = Base::resolve(cfg, &DDIM_DEFAULTS)?;
        let final_alpha_cumprod = if cfg.set_alpha_to_one.unwrap_or(true) { 1.0 } else { base.alphas_cumprod[0] };
        let clip_sample = clip_range(cfg, true)?;
        let eta = cfg.eta.unwrap_or(0.0);
        if !(eta.is_finite() && eta >= 0.0) {
            return Err(SchedulerError::InvalidConfig(format!("eta must be finite and >= 0, got {eta}")));
        }
        Ok(Self {
            base,
            final_alpha_cumprod,
            clip_sample,
            eta: eta as f32,
            num_inference_steps: 0,
            timesteps: Vec::new(),
            timesteps_int: Vec::new(),
            begin_index: 0,
        })
    }
}

/// `clip_sample` / `clip_sample_range` resolved to an optional clamp bound.
pub(crate) fn clip_range(cfg: &SchedulerConfig, default_on: bool) -> Result<Option<f32>> {
    if !cfg.clip_sample.unwrap_or(default_on) {
        return Ok(None);
    }
    let r = cfg.clip_sample_range.unwrap_or(1.0);
    if !(r.is_finite() && r > 0.0) {
        return Err(SchedulerError::InvalidConfig(format!("clip_sample_range must be positive, got {r}")));
    }
    Ok(Some(r as f32))
}

/// Timesteps of the DDIM family as integers (diffusers int64 arithmetic).
pub(crate) fn ddim_timesteps(base: &Base, n: usize) -> Result<Vec<usize>> {
    let nt = base.num_train_timesteps;
    let ts: Vec<i64> = match base.spacing {
        Spacing::Linspace => {
            numerics::np_linspace(0.0, (nt - 1) as f64, n, true).into_iter().rev().map(|t| t.round_ties_even() as i64).collect()
        }
        Spacing::Leading => {
            let ratio = nt / n;
            (0..n).rev().map(|i| (i * ratio) as i64 + base.steps_offset).collect()
        }
        Spacing::Trailing => {
            numerics::np_arange(nt as f64, 0.0, -(nt as f64 / n as f64)).into_iter().map(|t| t.round_ties_even() as i64 - 1).collect()
        }
    };
    ts.into_iter()
        .map(|t| {
            usize::try_from(t).ok().filter(|&t| t < nt).ok_or_else(|| {
                SchedulerError::InvalidSteps(format!("timestep {t} falls outside the training range 0..{nt} (check steps_offset)"))
            })
        })
        .collect()
}

impl Scheduler for Ddim {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Ddim
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        self.base.check_steps(n)?;
        let ts = ddim_timesteps(&self.base, n)?;
        self.timesteps = ts.iter().map(|&t| t as f32).collect();
        self.timesteps_int = ts;
        self.num_inference_steps = n;
        self.begin_index = 0;
        Ok(())
    }

    fn set_timesteps_img2img(&mut self, n: usize, strength: f64) -> Result<usize> {
        let begin = img2img_begin(n, strength)?;
        self.set_timesteps(n)?;
        self.begin_index = begin;
        Ok(begin)
    }

    fn begin_index(&self) -> usize {
        self.begin_index
    }

    fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f32]> {
        None
    }

    fn init_noise_sigma(&self) -> f32 {
        1.0
    }

    fn scale_model_input(&self, sample: &[f32], step_index: usize) -> Result<Vec<f32>> {
        check_index(step_index, self.timesteps.len())?;
        Ok(sample.to_vec())
    }

    fn needs_noise(&self, _step_index: usize) -> bool {
        self.eta > 0.0
    }

    fn step(&mut self, model_output: &[f32], step_index: usize, sample: &[f32], noise: Option<&[f32]>) -> Result<Vec<f32>> {
        let noise = check_step_inputs(self.timesteps.len(), step_index, model_output, sample, noise, self.eta > 0.0)?;
        let t = self.timesteps_int[step_index];
        // diffusers steps back by a fixed stride, whatever the spacing.
        let prev_t = t as i64 - (self.base.num_train_timesteps / self.num_inference_steps) as i64;
        let ac = &self.base.alphas_cumprod;
        let a_t = ac[t];
        let a_prev = if prev_t >= 0 { ac[prev_t as usize] } else { self.final_alpha_cumprod };
        let b_t = 1.0 - a_t;
        let b_prev = 1.0 - a_prev;
        let (sqrt_a, sqrt_b) = (a_t.sqrt(), b_t.sqrt());
        let variance = b_prev / b_t * (1.0 - a_t / a_prev);
        let std_dev = self.eta * variance.sqrt();
        let dir_coef = (1.0 - a_prev - std_dev * std_dev).sqrt();
        let sqrt_a_prev = a_prev.sqrt();
        let pred = self.base.prediction;
        let clip = self.clip_sample;
        Ok(model_output
            .iter()
            .zip(sample)
            .enumerate()
            .map(|(k, (&mo, &x))| {
                let (x0, eps) = match pred {
                    Prediction::Epsilon => ((x - sqrt_b * mo) / sqrt_a, mo),
                    Prediction::Sample => (mo, (x - sqrt_a * mo) / sqrt_b),
                    Prediction::V => (sqrt_a * x - sqrt_b * mo, sqrt_a * mo + sqrt_b * x),
                };
                let x0 = match clip {
                    Some(r) => x0.clamp(-r, r),
                    None => x0,
                };
                let prev = sqrt_a_prev * x0 + dir_coef * eps;
                match noise {
                    Some(n) => prev + std_dev * n[k],
                    None => prev,
                }
            })
            .collect())
    }

    fn add_noise(&self, original: &[f32], noise: &[f32], step_index: usize) -> Result<Vec<f32>> {
        check_index(step_index, self.timesteps.len())?;
        check_len("noise", noise.len(), original.len())?;
        alpha_add_noise(&self.base.alphas_cumprod, self.timesteps_int[step_index], original, noise)
    }

    fn pred_original_sample(&self, model_output: &[f32], step_index: usize, sample: &[f32]) -> Result<Vec<f32>> {
        check_step_inputs(self.timesteps.len(), step_index, model_output, sample, None, false)?;
        let a_t = self.base.alphas_cumprod[self.timesteps_int[step_index]];
        let (sqrt_a, sqrt_b) = (a_t.sqrt(), (1.0 - a_t).sqrt());
        let (pred, clip) = (self.base.prediction, self.clip_sample);
        Ok(model_output.iter().zip(sample).map(|(&mo, &x)| alpha_x0(pred, clip, sqrt_a, sqrt_b, mo, x)).collect())
    }
}

/// `sqrt(a_t) * x0 + sqrt(1 - a_t) * noise` (DDPM forward process).
pub(crate) fn alpha_add_noise(alphas_cumprod: &[f32], t: usize, original: &[f32], noise: &[f32]) -> Result<Vec<f32>> {
    let a = alphas_cumprod[t];
    let (sa, sb) = (a.sqrt(), (1.0 - a).sqrt());
    Ok(original.iter().zip(noise).map(|(&o, &n)| sa * o + sb * n).collect())
}

/// The clean-sample estimate x0 from one model output `mo` at sample `x` (ᾱ-parameterised
/// schedulers: `sqrt_a` = √ᾱ_t, `sqrt_b` = √(1−ᾱ_t)), clipped to `clip` when set.
pub(crate) fn alpha_x0(pred: Prediction, clip: Option<f32>, sqrt_a: f32, sqrt_b: f32, mo: f32, x: f32) -> f32 {
    let x0 = match pred {
        Prediction::Epsilon => (x - sqrt_b * mo) / sqrt_a,
        Prediction::Sample => mo,
        Prediction::V => sqrt_a * x - sqrt_b * mo,
    };
    match clip {
        Some(r) => x0.clamp(-r, r),
        None => x0,
    }
}
