//! plantain's diffusion engine.
//!
//! Networks are described once as [`graph::Graph`]s (see [`models`]) bound to the checkpoint's
//! own weights, exported to ONNX with those weights referenced in place, and run by ONNX Runtime.

pub mod error;
pub mod graph;
pub mod models;
pub mod pipeline;
pub mod runtime;
pub mod weights;

pub use error::{EngineError, Result};
