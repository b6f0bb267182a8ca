//! Flow-matching Euler (diffusers' `FlowMatchEulerDiscreteScheduler`) as FLUX.2 [klein]'s
//! pipeline drives it: sigmas `linspace(1, 1/N, N)` passed explicitly, exponential time shift by
//! the empirical `mu` of the image token count, a terminal 0, and `x += (σ_next − σ)·v`.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Result, SchedulerError};

/// The fields of a `FlowMatchEulerDiscreteScheduler` `scheduler_config.json` that change the
/// schedule FLUX.2's pipeline builds; values other than FLUX.2's are refused.
#[derive(Clone, Debug, Deserialize)]
pub struct FlowMatchConfig {
    #[serde(default, rename = "_class_name")]
    class_name: Option<String>,
    #[serde(default)]
    use_dynamic_shifting: bool,
    #[serde(default)]
    time_shift_type: Option<String>,
    #[serde(default)]
    shift_terminal: Option<f64>,
    #[serde(default)]
    use_karras_sigmas: bool,
    #[serde(default)]
    use_exponential_sigmas: bool,
    #[serde(default)]
    use_beta_sigmas: bool,
    #[serde(default)]
    stochastic_sampling: bool,
    #[serde(default)]
    invert_sigmas: bool,
}

impl FlowMatchConfig {
    /// Reads and checks a `scheduler_config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| SchedulerError::Io { path: path.display().to_string(), source })?;
        let cfg: Self = serde_json::from_str(&text)?;
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<()> {
        if let Some(c) = self.class_name.as_deref().filter(|c| *c != "FlowMatchEulerDiscreteScheduler") {
            return Err(SchedulerError::UnsupportedClass(c.to_string()));
        }
        let unsupported = |what: &str| Err(SchedulerError::Unsupported(format!("{what} (FLUX.2 [klein] uses none)")));
        if !self.use_dynamic_shifting {
            return Err(SchedulerError::Unsupported("use_dynamic_shifting=false (FLUX.2 shifts by the image size)".into()));
        }
        if self.time_shift_type.as_deref().unwrap_or("exponential") != "exponential" {
            return Err(SchedulerError::Unsupported(format!("time_shift_type {:?}", self.time_shift_type)));
        }
        if self.shift_terminal.is_some() {
            return unsupported("shift_terminal");
        }
        if self.use_karras_sigmas || self.use_exponential_sigmas || self.use_beta_sigmas {
            return unsupported("karras/exponential/beta sigmas");
        }
        if self.stochastic_sampling || self.invert_sigmas {
            return unsupported("stochastic sampling or inverted sigmas");
        }
        Ok(())
    }
}

/// `compute_empirical_mu` of diffusers' `Flux2KleinPipeline`: the shift for `image_seq_len`
/// noisy image tokens and `num_steps` steps (interpolated between fits at 10 and 200 steps).
pub fn flux2_empirical_mu(image_seq_len: usize, num_steps: usize) -> f64 {
    let (a1, b1) = (8.73809524e-05, 1.89833333);
    let (a2, b2) = (0.00016927, 0.45666666);
    let l = image_seq_len as f64;
    if image_seq_len > 4300 {
        return a2 * l + b2;
    }
    let m_200 = a2 * l + b2;
    let m_10 = a1 * l + b1;
    let a = (m_200 - m_10) / 190.0;
    let b = m_200 - 200.0 * a;
    a * num_steps as f64 + b
}

/// A flow-matching Euler schedule: `sigmas` has `N + 1` entries ending in 0.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowMatchEuler {
    sigmas: Vec<f32>,
}

impl FlowMatchEuler {
    /// FLUX.2 [klein]'s schedule for `num_steps` steps over `image_seq_len` noisy image tokens,
    /// in f32 as diffusers computes it (numpy float32 sigmas, shifted with a float64 `e^mu`
    /// that numpy rounds to float32).
    pub fn flux2(num_steps: usize, image_seq_len: usize) -> Result<Self> {
        if num_steps == 0 {
            return Err(SchedulerError::InvalidConfig("num_inference_steps must be at least 1".into()));
        }
        let e = flux2_empirical_mu(image_seq_len, num_steps).exp() as f32;
        let n = num_steps as f64;
        let mut sigmas: Vec<f32> = (0..num_steps)
            .map(|i| {
                let lin = if num_steps == 1 { 1.0 } else { 1.0 + (1.0 / n - 1.0) * i as f64 / (n - 1.0) };
                let s = lin as f32;
                e / (e + (1.0 / s - 1.0))
            })
            .collect();
        sigmas.push(0.0);
        Ok(Self { sigmas })
    }

    /// `N + 1` sigmas, the last 0. Step `i` goes from `sigmas[i]` to `sigmas[i + 1]`; the model
    /// is given `sigmas[i]` as its timestep (diffusers passes `1000·σ / 1000`).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// The number of steps (one less than the sigmas).
    pub fn num_steps(&self) -> usize {
        self.sigmas.len() - 1
    }

    /// `x + (σ_{i+1} − σ_i)·v`.
    pub fn step(&self, velocity: &[f32], i: usize, sample: &[f32]) -> Result<Vec<f32>> {
        if i >= self.num_steps() || velocity.len() != sample.len() {
            return Err(SchedulerError::InvalidConfig(format!(
                "step {i} of {} with {} velocities for {} latents",
                self.num_steps(),
                velocity.len(),
                sample.len()
            )));
        }
        let dt = self.sigmas[i + 1] - self.sigmas[i];
        Ok(sample.iter().zip(velocity).map(|(x, v)| x + dt * v).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_matches_the_design_table() {
        // 512² → 32×32 = 1024 tokens, 1024² → 4096 tokens (values computed from diffusers' formulas).
        let s = FlowMatchEuler::flux2(4, 1024).unwrap();
        let want = [1.0, 0.9581, 0.8840, 0.7175, 0.0];
        assert!(s.sigmas().iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-4), "{:?}", s.sigmas());
        let s = FlowMatchEuler::flux2(4, 4096).unwrap();
        let want = [1.0, 0.9674, 0.9081, 0.7672, 0.0];
        assert!(s.sigmas().iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-4), "{:?}", s.sigmas());
    }

    #[test]
    fn bad_configs_are_refused() {
        let cfg: FlowMatchConfig = serde_json::from_str(r#"{"use_dynamic_shifting": false}"#).unwrap();
        assert!(cfg.check().is_err());
        let cfg: FlowMatchConfig = serde_json::from_str(r#"{"use_dynamic_shifting": true, "time_shift_type": "linear"}"#).unwrap();
        assert!(cfg.check().is_err());
        let cfg: FlowMatchConfig = serde_json::from_str(r#"{"use_dynamic_shifting": true, "time_shift_type": "exponential"}"#).unwrap();
        assert!(cfg.check().is_ok());
    }
}
