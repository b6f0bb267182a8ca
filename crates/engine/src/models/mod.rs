//! The networks, each a function from a config and a weight index to a [`crate::graph::Graph`].

pub mod clip;
pub mod clip_vision;
pub mod flux2;
pub mod ncnn;
pub mod nn;
pub mod presets;
pub mod qwen3;
pub mod taesd;
pub mod unet;
pub mod vae;

/// The Stable Diffusion generation a checkpoint belongs to (defined in `plantain-core`, shared
/// with the hub).
pub use plantain_core::Family;
