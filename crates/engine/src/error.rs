//! The engine's error type: every message names the file, component or setting at fault.

use std::path::{Path, PathBuf};

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid safetensors file: {reason}")]
    CorruptWeights { path: PathBuf, reason: String },
    #[error("{path} is not a valid ncnn model file: {reason}")]
    CorruptNcnn { path: PathBuf, reason: String },
    #[error("{component}: weight `{name}` is missing from the checkpoint (is this the right model family?)")]
    MissingWeight { component: &'static str, name: String },
    #[error("{files}: tensor `{name}` is missing (is this the right model, complete?)")]
    MissingTensor { files: String, name: String },
    #[error("{component}: weight `{name}` has shape {found:?}, expected {expected:?} (the config and the weights disagree)")]
    ShapeMismatch { component: &'static str, name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("LoRA {}: `{key}` does not fit the model: {reason}", file.display())]
    LoraMismatch { file: PathBuf, key: String, reason: String },
    #[error("{what} not found (looked for {})", looked_for.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    MissingFile { what: String, looked_for: Vec<PathBuf> },
    #[error("{path}: invalid config: {reason}")]
    BadConfig { path: PathBuf, reason: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("scheduler: {0}")]
    Scheduler(String),
    #[error("cancelled")]
    Cancelled,
}

impl EngineError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        EngineError::Io { path: path.to_path_buf(), source }
    }
    pub fn bad_config(path: &Path, reason: impl std::fmt::Display) -> Self {
        EngineError::BadConfig { path: path.to_path_buf(), reason: reason.to_string() }
    }
}

impl From<ort::Error> for EngineError {
    fn from(e: ort::Error) -> Self {
        EngineError::Runtime(e.to_string())
    }
}
