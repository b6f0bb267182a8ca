//! diffusers `scheduler_config.json` parsing and per-class default resolution.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, SchedulerError};
use crate::numerics;

/// The subset of a diffusers `scheduler/scheduler_config.json` that affects
/// the supported schedulers.
///
/// Every field is optional because diffusers fills missing keys with the
/// defaults of the class being *instantiated* (not the class named in the
/// file: `_use_default_values` makes `from_config` forget inherited
/// defaults), so resolution happens per scheduler. Unknown keys are ignored;
/// keys whose non-default values we cannot honour are rejected with
/// [`SchedulerError::Unsupported`] rather than silently mis-sampling.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    /// diffusers class that wrote the file; picks the kind in
    /// [`crate::build_from_config`].
    #[serde(rename = "_class_name", skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Length of the training noise schedule.
    pub num_train_timesteps: Option<usize>,
    /// First beta of the linear / scaled-linear schedules.
    pub beta_start: Option<f64>,
    /// Last beta of the linear / scaled-linear schedules.
    pub beta_end: Option<f64>,
    /// `linear`, `scaled_linear` or `squaredcos_cap_v2`.
    pub beta_schedule: Option<String>,
    /// Explicit betas; override `beta_schedule` when present.
    pub trained_betas: Option<Vec<f64>>,
    /// `epsilon`, `v_prediction` or `sample`: what the UNet predicts.
    pub prediction_type: Option<String>,
    /// `leading`, `linspace` or `trailing`.
    pub timestep_spacing: Option<String>,
    /// Added to `leading` timesteps (SD 1.x/2.x ship 1).
    pub steps_offset: Option<i64>,
    /// Karras rho=7 sigma ramp (Euler, DPM++).
    pub use_karras_sigmas: Option<bool>,
    /// Rejected when true.
    pub use_exponential_sigmas: Option<bool>,
    /// Rejected when true.
    pub use_beta_sigmas: Option<bool>,
    /// Rejected when true.
    pub use_lu_lambdas: Option<bool>,
    /// Rejected when true (flow-matching models are not handled here).
    pub use_flow_sigmas: Option<bool>,
    /// Rejected when true.
    pub use_dynamic_shifting: Option<bool>,
    /// Karras ramp lower bound override (Euler, DPM++).
    pub sigma_min: Option<f64>,
    /// Karras ramp upper bound override (Euler, DPM++).
    pub sigma_max: Option<f64>,
    /// Euler sigma interpolation; only `linear` is supported.
    pub interpolation_type: Option<String>,
    /// Euler `discrete` or `continuous` (continuous only changes v-prediction).
    pub timestep_type: Option<String>,
    /// Rescale betas to zero terminal SNR (Lin et al. 2023).
    pub rescale_betas_zero_snr: Option<bool>,
    /// `zero` or `sigma_min`: the sigma appended after the last step.
    pub final_sigmas_type: Option<String>,
    /// Clamp the predicted x0 (DDIM, LCM).
    pub clip_sample: Option<bool>,
    /// Clamp bound for `clip_sample`.
    pub clip_sample_range: Option<f64>,
    /// DDIM/LCM: use alpha=1 past the last step instead of `alphas_cumprod[0]`.
    pub set_alpha_to_one: Option<bool>,
    /// Rejected when true (needs per-batch quantiles).
    pub thresholding: Option<bool>,
    /// DPM-Solver order; 1 and 2 are supported.
    pub solver_order: Option<usize>,
    /// `dpmsolver++` or `sde-dpmsolver++`.
    pub algorithm_type: Option<String>,
    /// DPM-Solver second-order update: `midpoint` or `heun`.
    pub solver_type: Option<String>,
    /// DPM-Solver: drop to lower order at the end for short schedules.
    pub lower_order_final: Option<bool>,
    /// DPM-Solver: always finish with a first-order step.
    pub euler_at_final: Option<bool>,
    /// DPM-Solver: clip the schedule where lambda falls below this.
    pub lambda_min_clipped: Option<f64>,
    /// DPM-Solver learned variance; rejected when set.
    pub variance_type: Option<String>,
    /// LCM: length of the distillation schedule.
    pub original_inference_steps: Option<usize>,
    /// LCM: timestep multiplier for the boundary-condition scalings.
    pub timestep_scaling: Option<f64>,
    /// DDIM stochasticity. Not a diffusers config key (diffusers takes it as
    /// a pipeline argument); kept here so one value configures a run.
    pub eta: Option<f64>,
}

impl SchedulerConfig {
    /// Parse the contents of a `scheduler_config.json`.
    ///
    /// Python's `json` writes non-finite floats as bare `NaN` / `Infinity`
    /// tokens, which are not JSON; they are read as "unset" so the class
    /// default applies (in practice `lambda_min_clipped: -Infinity`, whose
    /// default is -inf anyway).
    pub fn from_json_str(text: &str) -> Result<Self> {
        let cleaned = replace_non_finite_tokens(text);
        Ok(serde_json::from_str(&cleaned)?)
    }

    /// Read and parse a `scheduler_config.json` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SchedulerError::Io { path: path.display().to_string(), source })?;
        Self::from_json_str(&text)
    }

    /// SD 1.x style config (scaled-linear 0.00085–0.012, leading, offset 1,
    /// epsilon), handy when a model directory ships no scheduler config.
    pub fn stable_diffusion_v1() -> Self {
        Self {
            num_train_timesteps: Some(1000),
            beta_start: Some(0.00085),
            beta_end: Some(0.012),
            beta_schedule: Some("scaled_linear".into()),
            prediction_type: Some("epsilon".into()),
            timestep_spacing: Some("leading".into()),
            steps_offset: Some(1),
            clip_sample: Some(false),
            set_alpha_to_one: Some(false),
            ..Self::default()
        }
    }
}

/// Replace bare `NaN`, `Infinity`, `-Infinity` tokens outside strings by `null`.
fn replace_non_finite_tokens(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("NaN") && !text.contains("Infinity") {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
        }
        let token = ["-Infinity", "Infinity", "NaN"].into_iter().find(|t| rest.starts_with(t));
        if let Some(t) = token {
            out.push_str("null");
            rest = &rest[t.len()..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    std::borrow::Cow::Owned(out)
}

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prediction {
    Epsilon,
    V,
    Sample,
}

/// How inference timesteps are laid out over the training range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spacing {
    Leading,
    Linspace,
    Trailing,
}

/// diffusers `__init__` defaults that differ between the supported classes.
pub(crate) struct ClassDefaults {
    pub class: &'static str,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: &'static str,
    pub spacing: &'static str,
    /// Euler/EulerA/DPM pin `alphas_cumprod[-1] = 2**-24` under zero-SNR
    /// rescaling so sigmas stay finite; DDIM and LCM do not.
    pub zero_snr_clamps_last: bool,
    pub supports_sample_prediction: bool,
}

pub(crate) const EULER_DEFAULTS: ClassDefaults = ClassDefaults {
    class: "EulerDiscreteScheduler",
    beta_start: 0.0001,
    beta_end: 0.02,
    beta_schedule: "linear",
    spacing: "linspace",
    zero_snr_clamps_last: true,
    supports_sample_prediction: true,
};
pub(crate) const EULER_A_DEFAULTS: ClassDefaults =
    ClassDefaults { class: "EulerAncestralDiscreteScheduler", supports_sample_prediction: false, ..EULER_DEFAULTS };
pub(crate) const DPM_DEFAULTS: ClassDefaults = ClassDefaults { class: "DPMSolverMultistepScheduler", ..EULER_DEFAULTS };
pub(crate) const DDIM_DEFAULTS: ClassDefaults = ClassDefaults {
    class: "DDIMScheduler",
    beta_start: 0.0001,
    beta_end: 0.02,
    beta_schedule: "linear",
    spacing: "leading",
    zero_snr_clamps_last: false,
    supports_sample_prediction: true,
};
pub(crate) const LCM_DEFAULTS: ClassDefaults =
    ClassDefaults { class: "LCMScheduler", beta_start: 0.00085, beta_end: 0.012, beta_schedule: "scaled_linear", ..DDIM_DEFAULTS };

/// Settings shared by every supported scheduler, resolved against a class's
/// defaults, plus the training noise schedule.
#[derive(Debug, Clone)]
pub(crate) struct Base {
    pub num_train_timesteps: usize,
    pub prediction: Prediction,
    pub spacing: Spacing,
    pub steps_offset: i64,
    pub alphas_cumprod: Vec<f32>,
}

impl Base {
    pub(crate) fn resolve(cfg: &SchedulerConfig, d: &ClassDefaults) -> Result<Self> {
        for (flag, name) in [
            (cfg.use_exponential_sigmas, "use_exponential_sigmas"),
            (cfg.use_beta_sigmas, "use_beta_sigmas"),
            (cfg.use_lu_lambdas, "use_lu_lambdas"),
            (cfg.use_flow_sigmas, "use_flow_sigmas"),
            (cfg.use_dynamic_shifting, "use_dynamic_shifting"),
            (cfg.thresholding, "thresholding"),
        ] {
            if flag == Some(true) {
                return Err(SchedulerError::Unsupported(format!("{name} = true")));
            }
        }
        let num_train_timesteps = cfg.num_train_timesteps.unwrap_or(1000);
        if num_train_timesteps < 2 {
            return Err(SchedulerError::InvalidConfig(format!("num_train_timesteps must be at least 2, got {num_train_timesteps}")));
        }
        let prediction = match cfg.prediction_type.as_deref().unwrap_or("epsilon") {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::V,
            "sample" | "original_sample" if d.supports_sample_prediction => Prediction::Sample,
            "sample" | "original_sample" => {
                return Err(SchedulerError::Unsupported(format!("prediction_type `sample` with {}", d.class)));
            }
            other => {
                return Err(SchedulerError::InvalidConfig(format!("unknown prediction_type `{other}`")));
            }
        };
        let spacing = parse_spacing(cfg.timestep_spacing.as_deref().unwrap_or(d.spacing))?;
        let steps_offset = cfg.steps_offset.unwrap_or(0);
        let betas = betas(cfg, d, num_train_timesteps)?;
        let rescale = cfg.rescale_betas_zero_snr.unwrap_or(false);
        let betas = if rescale { rescale_zero_terminal_snr(&betas) } else { betas };
        let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
        let mut alphas_cumprod = numerics::cumprod_f32(&alphas);
        if rescale && d.zero_snr_clamps_last {
            alphas_cumprod[num_train_timesteps - 1] = 2f32.powi(-24);
        }
        if alphas_cumprod.iter().any(|a| !a.is_finite() || *a < 0.0 || *a > 1.0) {
            return Err(SchedulerError::InvalidConfig("betas produce alphas_cumprod outside [0, 1]".into()));
        }
        if !rescale && alphas_cumprod.iter().any(|a| *a <= 0.0) {
            return Err(SchedulerError::InvalidConfig("betas reach 1, making alphas_cumprod zero".into()));
        }
        Ok(Self { num_train_timesteps, prediction, spacing, steps_offset, alphas_cumprod })
    }

    /// Training sigmas `((1 - a) / a) ** 0.5` in f32, index = train timestep.
    pub(crate) fn train_sigmas(&self) -> Vec<f32> {
        self.alphas_cumprod.iter().map(|&a| numerics::sigma_from_alpha_cumprod(a)).collect()
    }

    /// Reject step counts diffusers cannot schedule sensibly.
    pub(crate) fn check_steps(&self, n: usize) -> Result<()> {
        if n == 0 {
            return Err(SchedulerError::InvalidSteps("num_inference_steps must be at least 1".into()));
        }
        if n > self.num_train_timesteps {
            return Err(SchedulerError::InvalidSteps(format!(
                "num_inference_steps {n} exceeds num_train_timesteps {}",
                self.num_train_timesteps
            )));
        }
        Ok(())
    }
}

pub(crate) fn parse_spacing(s: &str) -> Result<Spacing> {
    match s {
        "leading" => Ok(Spacing::Leading),
        "linspace" => Ok(Spacing::Linspace),
        "trailing" => Ok(Spacing::Trailing),
        other => Err(SchedulerError::InvalidConfig(format!("unknown timestep_spacing `{other}` (expected leading, linspace or trailing)"))),
    }
}

fn betas(cfg: &SchedulerConfig, d: &ClassDefaults, n: usize) -> Result<Vec<f32>> {
    if let Some(tb) = &cfg.trained_betas {
        if tb.len() != n {
            return Err(SchedulerError::InvalidConfig(format!("trained_betas has {} values but num_train_timesteps is {n}", tb.len())));
        }
        return Ok(tb.iter().map(|&b| b as f32).collect());
    }
    let start = cfg.beta_start.unwrap_or(d.beta_start);
    let end = cfg.beta_end.unwrap_or(d.beta_end);
    let schedule = cfg.beta_schedule.as_deref().unwrap_or(d.beta_schedule);
    let check_range = || {
        if !(start.is_finite() && end.is_finite() && (0.0..1.0).contains(&start) && (0.0..1.0).contains(&end)) {
            Err(SchedulerError::InvalidConfig(format!("beta_start/beta_end must be within [0, 1), got {start} and {end}")))
        } else {
            Ok(())
        }
    };
    match schedule {
        "linear" => {
            check_range()?;
            Ok(numerics::torch_linspace_f32(start, end, n))
        }
        "scaled_linear" => {
            check_range()?;
            Ok(numerics::torch_linspace_f32(start.sqrt(), end.sqrt(), n).into_iter().map(|b| b * b).collect())
        }
        "squaredcos_cap_v2" => Ok(betas_for_alpha_bar_cosine(n)),
        other => Err(SchedulerError::InvalidConfig(format!(
            "unknown beta_schedule `{other}` (expected linear, scaled_linear or squaredcos_cap_v2)"
        ))),
    }
}

/// diffusers `betas_for_alpha_bar(n, max_beta=0.999, "cosine")`, in f64 then f32.
fn betas_for_alpha_bar_cosine(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powi(2);
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// diffusers `rescale_zero_terminal_snr`, op for op in f32.
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    let cumprod = numerics::cumprod_f32(&alphas);
    let mut sqrt_bar: Vec<f32> = cumprod.iter().map(|a| a.sqrt()).collect();
    let first = sqrt_bar[0];
    let last = sqrt_bar[sqrt_bar.len() - 1];
    let scale = first / (first - last);
    for v in &mut sqrt_bar {
        *v -= last;
        *v *= scale;
    }
    let bar: Vec<f32> = sqrt_bar.iter().map(|v| v * v).collect();
    let mut out = Vec::with_capacity(bar.len());
    out.push(1.0 - bar[0]);
    for i in 1..bar.len() {
        out.push(1.0 - bar[i] / bar[i - 1]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_tokens_become_null() {
        let cfg =
            SchedulerConfig::from_json_str(r#"{"lambda_min_clipped": -Infinity, "_class_name": "NaN Infinity", "beta_end": NaN}"#).unwrap();
        assert_eq!(cfg.lambda_min_clipped, None);
        assert_eq!(cfg.beta_end, None);
        assert_eq!(cfg.class_name.as_deref(), Some("NaN Infinity"));
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let cfg = SchedulerConfig::from_json_str(
            r#"{"_class_name": "PNDMScheduler", "skip_prk_steps": true, "_diffusers_version": "0.6.0", "steps_offset": 1}"#,
        )
        .unwrap();
        assert_eq!(cfg.steps_offset, Some(1));
    }
}
