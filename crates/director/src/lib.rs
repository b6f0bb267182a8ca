//! The director: what a request means for the picture, before any model runs.
//!
//! Today it holds the edit planner ([`edit`]): an instruction in words becomes one operation
//! on one region (found by the synthetic world's analysis, a salient-subject segmenter or the
//! user's mask), run either as exact image maths or as a repaint that a model does, and pasted
//! back so that every pixel outside the region and its feather band is the input's own.

pub mod edit;
pub mod generate;
