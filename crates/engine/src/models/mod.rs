//! The networks, each a function from a config and a weight index to a [`crate::graph::Graph`].

pub mod clip;
pub mod nn;
pub mod presets;
pub mod taesd;
pub mod unet;
pub mod vae;

/// The Stable Diffusion generation a checkpoint belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// SD 1.x: CLIP ViT-L/14 text encoder.
    Sd1,
    /// SD 2.x and SD-Turbo: OpenCLIP ViT-H text encoder.
    Sd2,
    /// SDXL and SDXL-Turbo: two text encoders, size conditioning.
    Sdxl,
}

impl Family {
    /// Lower-case tag for labels and logs.
    pub fn short_name(self) -> &'static str {
        match self {
            Family::Sd1 => "sd1",
            Family::Sd2 => "sd2",
            Family::Sdxl => "sdxl",
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::Sd1 => "SD 1.x",
            Family::Sd2 => "SD 2.x",
            Family::Sdxl => "SDXL",
        })
    }
}
