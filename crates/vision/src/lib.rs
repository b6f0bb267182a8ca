//! plantain's image understanding.
//!
//! [`segment`]: the salient subject of a photograph as a soft mask ([`Segmenter`], ISNet run on
//! ONNX Runtime), and the connected objects of any mask ([`components`]).

pub mod segment;

pub use segment::{Region, Segmenter, VisionError, components};
