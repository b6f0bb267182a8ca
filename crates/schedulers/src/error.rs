use thiserror::Error;

/// Everything that can go wrong while configuring or running a scheduler.
///
/// Bad configs and bad call sequences are reported here instead of panicking,
/// because configs come from untrusted model repositories.
#[derive(Debug, Error)]
pub enum SchedulerError {
    /// A config value is malformed or out of range.
    #[error("invalid scheduler config: {0}")]
    InvalidConfig(String),
    /// A config value is valid for diffusers but not implemented here.
    #[error("unsupported scheduler config: {0}")]
    Unsupported(String),
    /// The `_class_name` names a scheduler with no usable equivalent.
    #[error("unsupported scheduler class `{0}`")]
    UnsupportedClass(String),
    /// A CLI scheduler name that is not recognised.
    #[error("unknown scheduler `{0}` (expected one of: {list})", list = crate::SchedulerKind::NAMES.join(", "))]
    UnknownKind(String),
    /// The config file is not valid JSON or has wrongly typed fields.
    #[error("failed to parse scheduler config: {0}")]
    Json(#[from] serde_json::Error),
    /// The config file could not be read.
    #[error("failed to read scheduler config {path}: {source}")]
    Io {
        /// File that failed to load.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The requested number of inference steps cannot be scheduled.
    #[error("invalid number of inference steps: {0}")]
    InvalidSteps(String),
    /// img2img strength outside `[0, 1]`.
    #[error("img2img strength must be within [0, 1], got {0}")]
    InvalidStrength(f64),
    /// The strength trims away every step.
    #[error("img2img strength {strength} with {steps} steps leaves no denoising step")]
    NoStepsForStrength {
        /// Requested strength.
        strength: f64,
        /// Requested steps.
        steps: usize,
    },
    /// `step_index` is outside the current schedule (or `set_timesteps` was not called).
    #[error("step index {index} out of range for a schedule of {len} timesteps")]
    StepOutOfRange {
        /// Offending index.
        index: usize,
        /// Current schedule length.
        len: usize,
    },
    /// Input buffers have different lengths.
    #[error("{what} has {got} values, expected {expected}")]
    LengthMismatch {
        /// Which buffer.
        what: &'static str,
        /// Its length.
        got: usize,
        /// Length of `sample`.
        expected: usize,
    },
    /// A stochastic step was called without noise.
    #[error("step {0} draws fresh noise; pass `noise` with the sample's length")]
    MissingNoise(usize),
}

/// Crate-wide result alias.
pub type Result<T> = std::result::Result<T, SchedulerError>;
