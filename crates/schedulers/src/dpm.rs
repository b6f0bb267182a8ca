//! `DPMSolverMultistepScheduler` (DPM-Solver++ 2M and 2M SDE).

use crate::config::{Base, DPM_DEFAULTS, Prediction, SchedulerConfig, Spacing};
use crate::error::{Result, SchedulerError};
use crate::numerics;
use crate::{Scheduler, SchedulerKind, check_index, check_len, check_step_inputs, img2img_begin};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SolverType {
    Midpoint,
    Heun,
}

/// DPM-Solver++ multistep (Lu et al. 2022) in data-prediction form.
///
/// Order 2 by default with diffusers' `lower_order_final` behaviour: the
/// first step (no history yet) and, with a zero final sigma, the last step
/// are first-order. The SDE variant (`sde-dpmsolver++`) consumes caller noise
/// every step.
#[derive(Debug, Clone)]
pub struct DpmSolverMultistep {
    base: Base,
    train_sigmas: Vec<f32>,
    log_sigmas: Vec<f32>,
    lambda_t: Vec<f32>,
    solver_order: usize,
    sde: bool,
    solver_type: SolverType,
    lower_order_final: bool,
    euler_at_final: bool,
    final_sigma_min: bool,
    karras: bool,
    sigma_min: Option<f64>,
    sigma_max: Option<f64>,
    lambda_min_clipped: f64,
    cosine_betas: bool,
    timesteps: Vec<f32>,
    timesteps_int: Vec<i64>,
    sigmas: Vec<f32>,
    begin_index: usize,
    /// Converted (x0) model outputs of the previous and current step.
    history: Vec<Vec<f32>>,
    lower_order_nums: usize,
    last_step: Option<usize>,
}

/// diffusers `_sigma_to_alpha_sigma_t` in f32.
fn alpha_sigma(sigma: f32) -> (f32, f32) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

fn lambda(alpha: f32, sigma: f32) -> f32 {
    alpha.ln() - sigma.ln()
}

impl DpmSolverMultistep {
    /// Build from a diffusers config, using `DPMSolverMultistepScheduler`
    /// defaults.
    pub fn new(cfg: &SchedulerConfig) -> Result<Self> {
        let base = Base::resolve(cfg, &DPM_DEFAULTS)?;
        let sde = match cfg.algorithm_type.as_deref().unwrap_or("dpmsolver++") {
            // diffusers maps the UniPC-only `deis` value to dpmsolver++.
            "dpmsolver++" | "deis" => false,
            "sde-dpmsolver++" => true,
            other => {
                return Err(SchedulerError::Unsupported(format!(
                    "DPM-Solver algorithm_type `{other}` (only dpmsolver++ and sde-dpmsolver++)"
                )));
            }
        };
        let solver_order = cfg.solver_order.unwrap_or(2);
        if !(1..=2).contains(&solver_order) {
            return Err(SchedulerError::Unsupported(format!("DPM-Solver solver_order {solver_order} (only 1 and 2)")));
        }
        let solver_type = match cfg.solver_type.as_deref().unwrap_or("midpoint") {
            // diffusers maps UniPC's solver types to midpoint.
            "midpoint" | "logrho" | "bh1" | "bh2" => SolverType::Midpoint,
            "heun" => SolverType::Heun,
            other => {
                return Err(SchedulerError::InvalidConfig(format!("unknown solver_type `{other}`")));
            }
        };
        let final_sigma_min = match cfg.final_sigmas_type.as_deref().unwrap_or("zero") {
            "zero" => false,
            "sigma_min" => true,
            other => {
                return Err(SchedulerError::InvalidConfig(format!("unknown final_sigmas_type `{other}`")));
            }
        };
        if let Some(v) = cfg.variance_type.as_deref() {
            return Err(SchedulerError::Unsupported(format!("DPM-Solver variance_type `{v}`")));
        }
        let lambda_min_clipped = cfg.lambda_min_clipped.unwrap_or(f64::NEG_INFINITY);
        if lambda_min_clipped.is_nan() {
            return Err(SchedulerError::InvalidConfig("lambda_min_clipped is NaN".into()));
        }
        let train_sigmas = base.train_sigmas();
        let log_sigmas = train_sigmas.iter().map(|&s| (s as f64).ln() as f32).collect();
        let lambda_t = base.alphas_cumprod.iter().map(|&a| a.sqrt().ln() - (1.0 - a).sqrt().ln()).collect();
        // diffusers checks the config key even when trained_betas is given.
        let cosine_betas = cfg.beta_schedule.as_deref().unwrap_or(DPM_DEFAULTS.beta_schedule) == "squaredcos_cap_v2";
        Ok(Self {
            base,
            train_sigmas,
            log_sigmas,
            lambda_t,
            solver_order,
            sde,
            solver_type,
            lower_order_final: cfg.lower_order_final.unwrap_or(true),
            euler_at_final: cfg.euler_at_final.unwrap_or(false),
            final_sigma_min,
            karras: cfg.use_karras_sigmas.unwrap_or(false),
            sigma_min: cfg.sigma_min,
            sigma_max: cfg.sigma_max,
            lambda_min_clipped,
            cosine_betas,
            timesteps: Vec::new(),
            timesteps_int: Vec::new(),
            sigmas: Vec::new(),
            begin_index: 0,
            history: Vec::new(),
            lower_order_nums: 0,
            last_step: None,
        })
    }

    fn reset_history(&mut self) {
        self.history.clear();
        self.lower_order_nums = 0;
        self.last_step = None;
    }

    /// x0 from the model output at `sigma` (dpmsolver++ data prediction).
    fn convert(&self, sigma: f32, model_output: &[f32], sample: &[f32]) -> Vec<f32> {
        let (alpha_t, sigma_t) = alpha_sigma(sigma);
        model_output
            .iter()
            .zip(sample)
            .map(|(&mo, &x)| match self.base.prediction {
                Prediction::Epsilon => (x - sigma_t * mo) / alpha_t,
                Prediction::V => alpha_t * x - sigma_t * mo,
                Prediction::Sample => mo,
            })
            .collect()
    }
}

impl Scheduler for DpmSolverMultistep {
    fn kind(&self) -> SchedulerKind {
        if self.sde {
            SchedulerKind::DpmPlusPlus2MSde { karras: self.karras }
        } else {
            SchedulerKind::DpmPlusPlus2M { karras: self.karras }
        }
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        self.base.check_steps(n)?;
        let nt = self.base.num_train_timesteps;
        // torch.searchsorted(flip(lambda_t), lambda_min_clipped), side=left
        let clip = self.lambda_min_clipped as f32;
        let clipped_idx = self.lambda_t.iter().rev().filter(|&&l| l < clip).count();
        let last_timestep = nt - clipped_idx;
        let mut timesteps: Vec<i64> = match self.base.spacing {
            Spacing::Linspace => {
                let mut t: Vec<i64> = numerics::np_linspace(0.0, last_timestep as f64 - 1.0, n + 1, true)
                    .into_iter()
                    .rev()
                    .map(|v| v.round_ties_even() as i64)
                    .collect();
                t.pop();
                t
            }
            Spacing::Leading => {
                let ratio = last_timestep / (n + 1);
                (1..=n).rev().map(|i| (i * ratio) as i64 + self.base.steps_offset).collect()
            }
            Spacing::Trailing => {
                let ratio = nt as f64 / n as f64;
                numerics::np_arange(last_timestep as f64, 0.0, -ratio).into_iter().map(|v| v.round_ties_even() as i64 - 1).collect()
            }
        };
        if timesteps.is_empty() {
            return Err(SchedulerError::InvalidSteps(format!("lambda_min_clipped leaves no timesteps for {n} steps")));
        }
        let sigmas: Vec<f64> = if self.karras {
            let smin = self.sigma_min.unwrap_or(self.train_sigmas[0] as f64);
            let smax = self.sigma_max.unwrap_or(self.train_sigmas[nt - 1] as f64);
            let sigmas = numerics::karras_sigmas(smin, smax, n);
            timesteps = sigmas
                .iter()
                .map(|&s| {
                    let t = numerics::sigma_to_t(s, &self.log_sigmas);
                    let t = if self.cosine_betas { t } else { t.round_ties_even() };
                    t as i64
                })
                .collect();
            sigmas
        } else {
            timesteps.iter().map(|&t| numerics::np_interp_grid(t as f64, &self.train_sigmas)).collect()
        };
        let last = if self.final_sigma_min { self.train_sigmas[0] } else { 0.0 };
        let mut sigmas: Vec<f32> = sigmas.into_iter().map(|s| s as f32).collect();
        sigmas.push(last);
        self.timesteps = timesteps.iter().map(|&t| t as f32).collect();
        self.timesteps_int = timesteps;
        self.sigmas = sigmas;
        self.begin_index = 0;
        self.reset_history();
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
        Some(&self.sigmas)
    }

    fn init_noise_sigma(&self) -> f32 {
        1.0
    }

    fn scale_model_input(&self, sample: &[f32], step_index: usize) -> Result<Vec<f32>> {
        check_index(step_index, self.timesteps.len())?;
        Ok(sample.to_vec())
    }

    fn needs_noise(&self, _step_index: usize) -> bool {
        self.sde
    }

    fn step(&mut self, model_output: &[f32], step_index: usize, sample: &[f32], noise: Option<&[f32]>) -> Result<Vec<f32>> {
        let len = self.timesteps.len();
        let noise = check_step_inputs(len, step_index, model_output, sample, noise, self.sde)?;
        let sequential = step_index > 0 && self.last_step == Some(step_index - 1);
        if !sequential {
            self.reset_history();
        }
        let is_last = step_index == len - 1;
        let lower_order_final = is_last && (self.euler_at_final || (self.lower_order_final && len < 15) || !self.final_sigma_min);

        let x0 = self.convert(self.sigmas[step_index], model_output, sample);
        if self.history.len() == self.solver_order {
            self.history.remove(0);
        }
        self.history.push(x0);

        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[step_index + 1]);
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigmas[step_index]);
        let lambda_t = lambda(alpha_t, sigma_t);
        let lambda_s0 = lambda(alpha_s0, sigma_s0);
        let h = lambda_t - lambda_s0;
        let m0 = &self.history[self.history.len() - 1];
        let first_order = self.solver_order == 1 || self.lower_order_nums < 1 || lower_order_final;

        let out: Vec<f32> = if first_order {
            if self.sde {
                let noise = noise.ok_or(SchedulerError::MissingNoise(step_index))?;
                let e2h = (-2.0 * h).exp();
                let c_x = sigma_t / sigma_s0 * (-h).exp();
                let c_m = alpha_t * (1.0 - e2h);
                let c_n = sigma_t * (1.0 - e2h).sqrt();
                sample.iter().zip(m0).zip(noise).map(|((&x, &m), &z)| c_x * x + c_m * m + c_n * z).collect()
            } else {
                let c_x = sigma_t / sigma_s0;
                let c_m = alpha_t * ((-h).exp() - 1.0);
                sample.iter().zip(m0).map(|(&x, &m)| c_x * x - c_m * m).collect()
            }
        } else {
            let m1 = &self.history[self.history.len() - 2];
            let (alpha_s1, sigma_s1) = alpha_sigma(self.sigmas[step_index - 1]);
            let lambda_s1 = lambda(alpha_s1, sigma_s1);
            let h_0 = lambda_s0 - lambda_s1;
            let r0 = h_0 / h;
            let inv_r0 = 1.0 / r0;
            if self.sde {
                let noise = noise.ok_or(SchedulerError::MissingNoise(step_index))?;
                let e2h = (-2.0 * h).exp();
                let c_x = sigma_t / sigma_s0 * (-h).exp();
                let c_d0 = alpha_t * (1.0 - e2h);
                let c_d1 = match self.solver_type {
                    SolverType::Midpoint => 0.5 * (alpha_t * (1.0 - e2h)),
                    SolverType::Heun => alpha_t * ((1.0 - e2h) / (-2.0 * h) + 1.0),
                };
                let c_n = sigma_t * (1.0 - e2h).sqrt();
                sample
                    .iter()
                    .zip(m0.iter().zip(m1))
                    .zip(noise)
                    .map(|((&x, (&a, &b)), &z)| {
                        let d1 = inv_r0 * (a - b);
                        c_x * x + c_d0 * a + c_d1 * d1 + c_n * z
                    })
                    .collect()
            } else {
                let c_x = sigma_t / sigma_s0;
                let em1 = (-h).exp() - 1.0;
                let c_d0 = alpha_t * em1;
                match self.solver_type {
                    SolverType::Midpoint => {
                        let c_d1 = 0.5 * (alpha_t * em1);
                        sample
                            .iter()
                            .zip(m0.iter().zip(m1))
                            .map(|(&x, (&a, &b))| {
                                let d1 = inv_r0 * (a - b);
                                c_x * x - c_d0 * a - c_d1 * d1
                            })
                            .collect()
                    }
                    SolverType::Heun => {
                        let c_d1 = alpha_t * (em1 / h + 1.0);
                        sample
                            .iter()
                            .zip(m0.iter().zip(m1))
                            .map(|(&x, (&a, &b))| {
                                let d1 = inv_r0 * (a - b);
                                c_x * x - c_d0 * a + c_d1 * d1
                            })
                            .collect()
                    }
                }
            }
        };
        if self.lower_order_nums < self.solver_order {
            self.lower_order_nums += 1;
        }
        self.last_step = Some(step_index);
        Ok(out)
    }

    fn add_noise(&self, original: &[f32], noise: &[f32], step_index: usize) -> Result<Vec<f32>> {
        check_index(step_index, self.timesteps.len())?;
        check_len("noise", noise.len(), original.len())?;
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[step_index]);
        Ok(original.iter().zip(noise).map(|(&o, &n)| alpha_t * o + sigma_t * n).collect())
    }

    fn pred_original_sample(&self, model_output: &[f32], step_index: usize, sample: &[f32]) -> Result<Vec<f32>> {
        check_step_inputs(self.timesteps.len(), step_index, model_output, sample, None, false)?;
        Ok(self.convert(self.sigmas[step_index], model_output, sample))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timesteps_int_matches_float_view() {
        let mut s = DpmSolverMultistep::new(&SchedulerConfig::stable_diffusion_v1()).unwrap();
        s.set_timesteps(4).unwrap();
        assert_eq!(s.timesteps_int, vec![801, 601, 401, 201]);
        assert_eq!(s.timesteps, vec![801.0, 601.0, 401.0, 201.0]);
    }
}
