//! plantain's diffusion engine.
//!
//! Networks are described once as [`graph::Graph`]s (see [`models`]) bound to the checkpoint's
//! own weights, exported to ONNX with those weights referenced in place, and run by ONNX Runtime.
//!
//! [`pipeline`] holds a loaded model's components and one pipeline per task (txt2img, img2img,
//! inpainting, InstructPix2Pix); a generation comes back at the canvas the model drew, and [`resize`] turns it
//! into the requested pixels as a separate, swappable step.
//!
//! [`clip_score`] rates how well a picture matches a text with a CLIP model
//! ([`clip_score::ClipScorer`]: cosine similarity of CLIP's image and text embeddings, and the
//! ×100 CLIPScore convention), for the generation loop's adherence check.
//!
//! [`upscale`] enlarges pictures with Real-ESRGAN (ncnn files read by [`models::ncnn`]), tile by
//! tile; the 2K and 4K sizes draw at the model's native size and upscale.

pub mod clip_score;
pub mod error;
pub mod graph;
pub mod models;
pub mod pipeline;
pub mod resize;
pub mod runtime;
pub mod upscale;
pub mod weights;

pub use error::{EngineError, Result};
