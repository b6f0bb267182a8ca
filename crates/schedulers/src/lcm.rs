//! `LCMScheduler`.

use crate::config::{Base, LCM_DEFAULTS, SchedulerConfig};
use crate::ddim::{alpha_add_noise, alpha_x0, clip_range};
use crate::error::{Result, SchedulerError};
use crate::numerics;
use crate::{Scheduler, SchedulerKind, check_index, check_len, check_step_inputs};

/// Latent consistency model sampling (Luo et al. 2023): each step jumps to a
/// consistency-model estimate of x0 and re-noises it to the next timestep
/// with caller noise (except after the last step).
///
/// Timesteps are a subset of the `original_inference_steps` distillation
/// grid; `timestep_spacing` and `steps_offset` are ignored, as in diffusers.
#[derive(Debug, Clone)]
pub struct Lcm {
    base: Base,
    original_inference_steps: usize,
    timestep_scaling: f32,
    clip_sample: Option<f32>,
    timesteps: Vec<f32>,
    timesteps_int: Vec<usize>,
}

impl Lcm {
    /// Build from a diffusers config, using `LCMScheduler` defaults.
    pub fn new(cfg: &SchedulerConfig) -> Result<Self> {
        let base = Base::resolve(cfg, &LCM_DEFAULTS)?;
        let original_inference_steps = cfg.original_inference_steps.unwrap_or(50);
        if original_inference_steps == 0 || original_inference_steps > base.num_train_timesteps {
            return Err(SchedulerError::InvalidConfig(format!(
                "original_inference_steps must be within 1..={}, got {original_inference_steps}",
                base.num_train_timesteps
            )));
        }
        let timestep_scaling = cfg.timestep_scaling.unwrap_or(10.0);
        if !timestep_scaling.is_finite() {
            return Err(SchedulerError::InvalidConfig("timestep_scaling must be finite".into()));
        }
        Ok(Self {
            base,
            original_inference_steps,
            timestep_scaling: timestep_scaling as f32,
            clip_sample: clip_range(cfg, false)?,
            timesteps: Vec::new(),
            timesteps_int: Vec::new(),
        })
    }

    /// diffusers `LCMScheduler.set_timesteps(n, strength=strength)`.
    /// LCM's boundary-condition scalings (c_skip, c_out) at timestep `t`, in f32 like the
    /// tensor maths upstream.
    fn boundary_scalings(&self, t: usize) -> (f32, f32) {
        let scaled = t as f32 * self.timestep_scaling;
        let denom = scaled * scaled + 0.25;
        ((1.0 / denom) * 0.25, scaled / denom.sqrt())
    }

    fn set_with_strength(&mut self, n: usize, strength: f64) -> Result<()> {
        if !(0.0..=1.0).contains(&strength) {
            return Err(SchedulerError::InvalidStrength(strength));
        }
        self.base.check_steps(n)?;
        let original = self.original_inference_steps;
        let k = self.base.num_train_timesteps / original;
        // int(original_steps * strength) in Python float arithmetic.
        let available = (original as f64 * strength).floor() as usize;
        let origin: Vec<usize> = (1..=available).rev().map(|i| i * k - 1).collect();
        if origin.len() / n < 1 {
            return Err(SchedulerError::InvalidSteps(format!(
                "LCM: original_inference_steps x strength = {original} x {strength} gives {} \
                 distillation steps, fewer than the {n} requested",
                origin.len()
            )));
        }
        if n > original {
            return Err(SchedulerError::InvalidSteps(format!("LCM: {n} steps exceed original_inference_steps {original}")));
        }
        let ts: Vec<usize> =
            numerics::np_linspace(0.0, origin.len() as f64, n, false).into_iter().map(|x| origin[x.floor() as usize]).collect();
        self.timesteps = ts.iter().map(|&t| t as f32).collect();
        self.timesteps_int = ts;
        Ok(())
    }
}

impl Scheduler for Lcm {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Lcm
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        self.set_with_strength(n, 1.0)
    }

    /// LCM img2img shortens the distillation grid instead of trimming the
    /// schedule, so every returned step runs (begin index 0).
    fn set_timesteps_img2img(&mut self, n: usize, strength: f64) -> Result<usize> {
        self.set_with_strength(n, strength)?;
        Ok(0)
    }

    fn begin_index(&self) -> usize {
        0
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

    fn needs_noise(&self, step_index: usize) -> bool {
        step_index + 1 < self.timesteps.len()
    }

    fn step(&mut self, model_output: &[f32], step_index: usize, sample: &[f32], noise: Option<&[f32]>) -> Result<Vec<f32>> {
        let len = self.timesteps.len();
        let needs = self.needs_noise(step_index);
        let noise = check_step_inputs(len, step_index, model_output, sample, noise, needs)?;
        let t = self.timesteps_int[step_index];
        let prev_t = if step_index + 1 < len { self.timesteps_int[step_index + 1] } else { t };
        let ac = &self.base.alphas_cumprod;
        let (a_t, a_prev) = (ac[t], ac[prev_t]);
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let (c_skip, c_out) = self.boundary_scalings(t);
        let (sqrt_a, sqrt_b) = (a_t.sqrt(), b_t.sqrt());
        let (sqrt_a_prev, sqrt_b_prev) = (a_prev.sqrt(), b_prev.sqrt());
        let pred = self.base.prediction;
        let clip = self.clip_sample;
        Ok(model_output
            .iter()
            .zip(sample)
            .enumerate()
            .map(|(k, (&mo, &x))| {
                let x0 = alpha_x0(pred, clip, sqrt_a, sqrt_b, mo, x);
                let denoised = c_out * x0 + c_skip * x;
                match noise {
                    Some(n) => sqrt_a_prev * denoised + sqrt_b_prev * n[k],
                    None => denoised,
                }
            })
            .collect())
    }

    fn add_noise(&self, original: &[f32], noise: &[f32], step_index: usize) -> Result<Vec<f32>> {
        check_index(step_index, self.timesteps.len())?;
        check_len("noise", noise.len(), original.len())?;
        alpha_add_noise(&self.base.alphas_cumprod, self.timesteps_int[step_index], original, noise)
    }

    /// LCM's own estimate: the boundary-condition `denoised` (`c_out * x0 + c_skip * x`), which
    /// is what its last step returns.
    fn pred_original_sample(&self, model_output: &[f32], step_index: usize, sample: &[f32]) -> Result<Vec<f32>> {
        check_step_inputs(self.timesteps.len(), step_index, model_output, sample, None, false)?;
        let t = self.timesteps_int[step_index];
        let a_t = self.base.alphas_cumprod[t];
        let (c_skip, c_out) = self.boundary_scalings(t);
        let (sqrt_a, sqrt_b) = (a_t.sqrt(), (1.0 - a_t).sqrt());
        let (pred, clip) = (self.base.prediction, self.clip_sample);
        Ok(model_output
            .iter()
            .zip(sample)
            .map(|(&mo, &x)| {
                let x0 = alpha_x0(pred, clip, sqrt_a, sqrt_b, mo, x);
                c_out * x0 + c_skip * x
            })
            .collect())
    }
}
