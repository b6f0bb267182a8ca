//! plantain-nano: a small Stable Diffusion-style text-to-image model trained by plantain itself
//! on the synthetic world of `plantain-world`, with candle's autograd on the CPU.
//!
//! [`train::train`] runs the recipe (autoencoder, then text encoder + UNet) with resumable
//! checkpoints and writes a standard diffusers folder ([`export`]), which the engine loads
//! like any other Stable Diffusion model.

pub mod adamw;
mod checkpoint;
pub mod config;
pub mod data;
pub mod eval;
pub mod export;
pub mod fused;
pub mod nn;
pub mod parse;
pub mod text;
pub mod train;
pub mod unet;
pub mod vae;

use std::path::{Path, PathBuf};

pub use config::NanoConfig;
pub use train::{Phase, Progress, TrainOptions, train};

#[derive(Debug, thiserror::Error)]
pub enum NanoError {
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("training options: {0}")]
    Options(String),
    #[error("cancelled")]
    Cancelled,
}

impl NanoError {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Self::Io { path: path.as_ref().to_path_buf(), source }
    }
}

pub type Result<T> = std::result::Result<T, NanoError>;

/// The thread count candle's CPU kernels use: `RAYON_NUM_THREADS`, else the physical cores it
/// finds. Unless that variable is set, candle works this out again (reading `/proc/cpuinfo`) on
/// every matrix product — 6% of a training step by perf — so `plantain train` sets it once from this.
pub fn candle_threads() -> usize {
    candle_core::utils::get_num_threads()
}
