//! The Stable Diffusion generation a checkpoint belongs to: the one definition the hub (model
//! resolution) and the engine (which networks to build) share.

use std::fmt;

use serde::Serialize;

/// The `_class_name` in a FLUX.2 [klein] diffusers folder's `model_index.json`: not a Stable
/// Diffusion family; the hub gives it klein's defaults and the engine its own pipeline.
pub const KLEIN_CLASS: &str = "Flux2KleinPipeline";

/// Architecture family: decides which UNet / text-encoder wiring the engine builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Family {
    /// Stable Diffusion 1.x: CLIP ViT-L/14 text encoder, 768-wide cross-attention.
    Sd1,
    /// Stable Diffusion 2.x and SD-Turbo: OpenCLIP ViT-H text encoder, 1024-wide cross-attention.
    Sd2,
    /// SDXL and SDXL-Turbo: two text encoders, 2048-wide cross-attention, size/crop conditioning.
    Sdxl,
}

impl Family {
    /// Lower-case tag for labels and logs (`sd1`, `sd2`, `sdxl`).
    pub const fn short_name(self) -> &'static str {
        match self {
            Family::Sd1 => "sd1",
            Family::Sd2 => "sd2",
            Family::Sdxl => "sdxl",
        }
    }

    /// The side of the square the family's standard checkpoints were trained at, for models
    /// whose configs do not say: SD 2.x v-prediction checkpoints are the 768 ones, its epsilon
    /// ones (2.x-base, Turbo) 512.
    pub const fn standard_resolution(self, v_prediction: bool) -> u32 {
        match self {
            Family::Sd1 => 512,
            Family::Sd2 if v_prediction => 768,
            Family::Sd2 => 512,
            Family::Sdxl => 1024,
        }
    }
}

/// The name users read: `SD 1.x`, `SD 2.x`, `SDXL`.
impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Sd1 => "SD 1.x",
            Family::Sd2 => "SD 2.x",
            Family::Sdxl => "SDXL",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_resolutions() {
        assert_eq!([Family::Sd1, Family::Sd2, Family::Sdxl].map(Family::short_name), ["sd1", "sd2", "sdxl"]);
        assert_eq!(Family::Sdxl.to_string(), "SDXL");
        assert_eq!(serde_json::to_string(&Family::Sd2).unwrap(), r#""Sd2""#);
        assert_eq!(Family::Sd2.standard_resolution(true), 768);
        assert_eq!(Family::Sd2.standard_resolution(false), 512);
        assert_eq!(Family::Sdxl.standard_resolution(false), 1024);
    }
}
