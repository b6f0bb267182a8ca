//! Text to image: the whole schedule from seeded noise.

use super::{ImageLatents, Setup};
use crate::error::Result;
use crate::pipeline::{GenerateRequest, Generated, OnStep, SdPipeline};

/// Draws `req.prompt` at the canvas for `req`'s size.
pub(in crate::pipeline) fn run(p: &SdPipeline, req: &GenerateRequest, on_step: &mut OnStep<'_>) -> Result<Generated> {
    Setup::new(p, req)?.finish(p, req, ImageLatents::NONE, on_step)
}
