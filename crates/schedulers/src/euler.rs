//! `EulerDiscreteScheduler` and `EulerAncestralDiscreteScheduler`.

use crate::config::{Base, ClassDefaults, EULER_A_DEFAULTS, EULER_DEFAULTS, Prediction, SchedulerConfig, Spacing};
use crate::error::{Result, SchedulerError};
use crate::numerics;
use crate::{Scheduler, SchedulerKind, check_index, check_len, check_step_inputs, img2img_begin};

/// Options only the (non-ancestral) Euler scheduler reads.
#[derive(Debug, Clone)]
struct EulerOptions {
    karras: bool,
    sigma_min: Option<f64>,
    sigma_max: Option<f64>,
    final_sigma_min: bool,
    continuous_v: bool,
}

/// Sigma-space schedule shared by both Euler variants.
#[derive(Debug, Clone)]
struct SigmaSchedule {
    base: Base,
    train_sigmas: Vec<f32>,
    log_sigmas: Vec<f32>,
    timesteps: Vec<f32>,
    sigmas: Vec<f32>,
    begin_index: usize,
}

impl SigmaSchedule {
    fn new(cfg: &SchedulerConfig, d: &ClassDefaults) -> Result<Self> {
        let base = Base::resolve(cfg, d)?;
        let train_sigmas = base.train_sigmas();
        let log_sigmas = train_sigmas.iter().map(|&s| (s as f64).ln() as f32).collect();
        Ok(Self { base, train_sigmas, log_sigmas, timesteps: Vec::new(), sigmas: Vec::new(), begin_index: 0 })
    }

    /// Timesteps per `timestep_spacing`, as diffusers' Euler builds them (f32).
    fn spaced_timesteps(&self, n: usize) -> Vec<f32> {
        let nt = self.base.num_train_timesteps;
        match self.base.spacing {
            Spacing::Linspace => numerics::np_linspace(0.0, (nt - 1) as f64, n, true).into_iter().rev().map(|t| t as f32).collect(),
            Spacing::Leading => {
                let ratio = nt / n;
                let offset = self.base.steps_offset as f32;
                (0..n).rev().map(|i| (i * ratio) as f32 + offset).collect()
            }
            Spacing::Trailing => {
                let ratio = nt as f64 / n as f64;
                numerics::np_arange(nt as f64, 0.0, -ratio).into_iter().map(|t| t.round_ties_even() as f32 - 1.0).collect()
            }
        }
    }

    fn set(&mut self, n: usize, opts: Option<&EulerOptions>) -> Result<()> {
        self.base.check_steps(n)?;
        let mut timesteps = self.spaced_timesteps(n);
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| numerics::np_interp_grid(t as f64, &self.train_sigmas)).collect();
        let mut last = 0.0f64;
        if let Some(o) = opts {
            if o.karras {
                let smin = o.sigma_min.unwrap_or(sigmas[sigmas.len() - 1]);
                let smax = o.sigma_max.unwrap_or(sigmas[0]);
                sigmas = numerics::karras_sigmas(smin, smax, n);
                timesteps = sigmas.iter().map(|&s| numerics::sigma_to_t(s, &self.log_sigmas) as f32).collect();
            }
            if o.final_sigma_min {
                last = self.train_sigmas[0] as f64;
            }
        }
        let mut sigmas: Vec<f32> = sigmas.into_iter().map(|s| s as f32).collect();
        sigmas.push(last as f32);
        if opts.is_some_and(|o| o.continuous_v) {
            timesteps = sigmas[..n].iter().map(|s| 0.25 * s.ln()).collect();
        }
        self.timesteps = timesteps;
        self.sigmas = sigmas;
        self.begin_index = 0;
        Ok(())
    }

    fn init_noise_sigma(&self) -> f32 {
        let max = self.sigmas.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let max = if self.sigmas.is_empty() { 0.0 } else { max };
        match self.base.spacing {
            Spacing::Linspace | Spacing::Trailing => max,
            Spacing::Leading => (max * max + 1.0).sqrt(),
        }
    }

    fn scale(&self, sample: &[f32], i: usize) -> Result<Vec<f32>> {
        check_index(i, self.timesteps.len())?;
        let sigma = self.sigmas[i];
        let denom = (sigma * sigma + 1.0).sqrt();
        Ok(sample.iter().map(|x| x / denom).collect())
    }

    fn add_noise(&self, original: &[f32], noise: &[f32], i: usize) -> Result<Vec<f32>> {
        check_index(i, self.timesteps.len())?;
        check_len("noise", noise.len(), original.len())?;
        let sigma = self.sigmas[i];
        Ok(original.iter().zip(noise).map(|(o, n)| o + n * sigma).collect())
    }

    /// [`Self::pred_original`] over a whole buffer at `step_index`.
    fn pred_original_all(&self, model_output: &[f32], i: usize, sample: &[f32]) -> Result<Vec<f32>> {
        check_step_inputs(self.timesteps.len(), i, model_output, sample, None, false)?;
        let sigma = self.sigmas[i];
        Ok(model_output.iter().zip(sample).map(|(&mo, &x)| self.pred_original(sigma, mo, x)).collect())
    }

    /// x0 prediction, with diffusers' f32 operation order.
    fn pred_original(&self, sigma: f32, mo: f32, x: f32) -> f32 {
        match self.base.prediction {
            Prediction::Epsilon => x - sigma * mo,
            Prediction::V => {
                let s2p1 = sigma * sigma + 1.0;
                mo * (-sigma / s2p1.sqrt()) + x / s2p1
            }
            Prediction::Sample => mo,
        }
    }
}

/// Euler (Karras et al. Algorithm 2 with churn 0): deterministic first-order
/// ODE steps in sigma space; the SDXL default.
#[derive(Debug, Clone)]
pub struct EulerDiscrete {
    s: SigmaSchedule,
    opts: EulerOptions,
}

impl EulerDiscrete {
    /// Build from a diffusers config, using `EulerDiscreteScheduler` defaults.
    pub fn new(cfg: &SchedulerConfig) -> Result<Self> {
        let s = SigmaSchedule::new(cfg, &EULER_DEFAULTS)?;
        match cfg.interpolation_type.as_deref().unwrap_or("linear") {
            "linear" => {}
            other => {
                return Err(SchedulerError::Unsupported(format!("Euler interpolation_type `{other}`")));
            }
        }
        let final_sigma_min = match cfg.final_sigmas_type.as_deref().unwrap_or("zero") {
            "zero" => false,
            "sigma_min" => true,
            other => {
                return Err(SchedulerError::InvalidConfig(format!("unknown final_sigmas_type `{other}`")));
            }
        };
        let continuous = match cfg.timestep_type.as_deref().unwrap_or("discrete") {
            "discrete" => false,
            "continuous" => true,
            other => {
                return Err(SchedulerError::InvalidConfig(format!("unknown timestep_type `{other}`")));
            }
        };
        let opts = EulerOptions {
            karras: cfg.use_karras_sigmas.unwrap_or(false),
            sigma_min: cfg.sigma_min,
            sigma_max: cfg.sigma_max,
            final_sigma_min,
            continuous_v: continuous && s.base.prediction == Prediction::V,
        };
        Ok(Self { s, opts })
    }
}

impl Scheduler for EulerDiscrete {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Euler
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        self.s.set(n, Some(&self.opts))
    }

    fn set_timesteps_img2img(&mut self, n: usize, strength: f64) -> Result<usize> {
        let begin = img2img_begin(n, strength)?;
        self.set_timesteps(n)?;
        self.s.begin_index = begin;
        Ok(begin)
    }

    fn begin_index(&self) -> usize {
        self.s.begin_index
    }

    fn timesteps(&self) -> &[f32] {
        &self.s.timesteps
    }

    fn sigmas(&self) -> Option<&[f32]> {
        Some(&self.s.sigmas)
    }

    fn init_noise_sigma(&self) -> f32 {
        self.s.init_noise_sigma()
    }

    fn scale_model_input(&self, sample: &[f32], step_index: usize) -> Result<Vec<f32>> {
        self.s.scale(sample, step_index)
    }

    fn needs_noise(&self, _step_index: usize) -> bool {
        false
    }

    fn step(&mut self, model_output: &[f32], step_index: usize, sample: &[f32], noise: Option<&[f32]>) -> Result<Vec<f32>> {
        check_step_inputs(self.s.timesteps.len(), step_index, model_output, sample, noise, false)?;
        // s_churn = 0 (diffusers' pipelines never set it), so sigma_hat = sigma.
        let sigma = self.s.sigmas[step_index];
        let dt = self.s.sigmas[step_index + 1] - sigma;
        Ok(model_output
            .iter()
            .zip(sample)
            .map(|(&mo, &x)| {
                let x0 = self.s.pred_original(sigma, mo, x);
                let derivative = (x - x0) / sigma;
                x + derivative * dt
            })
            .collect())
    }

    fn add_noise(&self, original: &[f32], noise: &[f32], step_index: usize) -> Result<Vec<f32>> {
        self.s.add_noise(original, noise, step_index)
    }

    fn pred_original_sample(&self, model_output: &[f32], step_index: usize, sample: &[f32]) -> Result<Vec<f32>> {
        self.s.pred_original_all(model_output, step_index, sample)
    }
}

/// Euler ancestral: Euler to `sigma_down`, then fresh noise up to the next
/// sigma. The SD-Turbo / SDXL-Turbo sampler.
///
/// Like diffusers, ignores Karras / final-sigma / continuous-timestep keys.
#[derive(Debug, Clone)]
pub struct EulerAncestralDiscrete {
    s: SigmaSchedule,
    kind: SchedulerKind,
}

impl EulerAncestralDiscrete {
    /// Build from a diffusers config, using
    /// `EulerAncestralDiscreteScheduler` defaults.
    pub fn new(cfg: &SchedulerConfig) -> Result<Self> {
        Ok(Self { s: SigmaSchedule::new(cfg, &EULER_A_DEFAULTS)?, kind: SchedulerKind::EulerAncestral })
    }

    /// Turbo preset: `trailing` spacing regardless of the config, so one
    /// step starts from the top of the noise range (t = 999).
    pub fn new_turbo(cfg: &SchedulerConfig) -> Result<Self> {
        let mut cfg = cfg.clone();
        cfg.timestep_spacing = Some("trailing".into());
        Ok(Self { s: SigmaSchedule::new(&cfg, &EULER_A_DEFAULTS)?, kind: SchedulerKind::Turbo })
    }
}

impl Scheduler for EulerAncestralDiscrete {
    fn kind(&self) -> SchedulerKind {
        self.kind
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        self.s.set(n, None)
    }

    fn set_timesteps_img2img(&mut self, n: usize, strength: f64) -> Result<usize> {
        let begin = img2img_begin(n, strength)?;
        self.set_timesteps(n)?;
        self.s.begin_index = begin;
        Ok(begin)
    }

    fn begin_index(&self) -> usize {
        self.s.begin_index
    }

    fn timesteps(&self) -> &[f32] {
        &self.s.timesteps
    }

    fn sigmas(&self) -> Option<&[f32]> {
        Some(&self.s.sigmas)
    }

    fn init_noise_sigma(&self) -> f32 {
        self.s.init_noise_sigma()
    }

    fn scale_model_input(&self, sample: &[f32], step_index: usize) -> Result<Vec<f32>> {
        self.s.scale(sample, step_index)
    }

    /// diffusers draws noise on every ancestral step (even when the final
    /// step scales it by zero), so the RNG stream stays aligned.
    fn needs_noise(&self, _step_index: usize) -> bool {
        true
    }

    fn step(&mut self, model_output: &[f32], step_index: usize, sample: &[f32], noise: Option<&[f32]>) -> Result<Vec<f32>> {
        let noise = check_step_inputs(self.s.timesteps.len(), step_index, model_output, sample, noise, true)?
            .ok_or(SchedulerError::MissingNoise(step_index))?;
        let sigma_from = self.s.sigmas[step_index];
        let sigma_to = self.s.sigmas[step_index + 1];
        let from2 = sigma_from * sigma_from;
        let to2 = sigma_to * sigma_to;
        let sigma_up = (to2 * (from2 - to2) / from2).sqrt();
        let sigma_down = (to2 - sigma_up * sigma_up).sqrt();
        let dt = sigma_down - sigma_from;
        Ok(model_output
            .iter()
            .zip(sample)
            .zip(noise)
            .map(|((&mo, &x), &n)| {
                let x0 = self.s.pred_original(sigma_from, mo, x);
                let derivative = (x - x0) / sigma_from;
                let prev = x + derivative * dt;
                prev + n * sigma_up
            })
            .collect())
    }

    fn add_noise(&self, original: &[f32], noise: &[f32], step_index: usize) -> Result<Vec<f32>> {
        self.s.add_noise(original, noise, step_index)
    }

    fn pred_original_sample(&self, model_output: &[f32], step_index: usize, sample: &[f32]) -> Result<Vec<f32>> {
        self.s.pred_original_all(model_output, step_index, sample)
    }
}
