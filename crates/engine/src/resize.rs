//! Resizing a generated picture from the canvas the model drew at to the pixels the request
//! asked for. A step of its own, after generation, so that a caller can keep the native-size
//! picture (to composite at an input's own pixels, say) or swap in another resizer such as an
//! upscaling model.

use image::RgbImage;

use crate::error::{EngineError, Result};
use crate::pipeline::{Generated, MAX_OUTPUT_SIDE, images};

/// Turns a picture into one of exactly the asked size.
pub trait Resizer: Send + Sync {
    /// `image` at exactly `width`x`height`.
    fn resize(&self, image: RgbImage, width: u32, height: u32) -> Result<RgbImage>;
}

/// Lanczos3 resampling, the resizer plantain has always used for outputs and previews: the same
/// bytes as before resizing became a separate step. An image already of the asked size comes
/// back untouched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lanczos3;

impl Resizer for Lanczos3 {
    fn resize(&self, image: RgbImage, width: u32, height: u32) -> Result<RgbImage> {
        if width == 0 || height == 0 || width > MAX_OUTPUT_SIDE || height > MAX_OUTPUT_SIDE {
            return Err(EngineError::InvalidRequest(format!("size {width}x{height} is outside 1..={MAX_OUTPUT_SIDE} per side")));
        }
        Ok(images::resize_exact(image, width, height))
    }
}

impl Generated {
    /// A picture made by enlarging rather than denoising (an upscale edit): no step ran, so its
    /// sampler and guidance say nothing; `requested` is the size it will be closed onto.
    pub fn enlarged(image: RgbImage, requested: (u32, u32), timings: crate::pipeline::Timings, warnings: Vec<String>) -> Generated {
        Generated {
            canvas: image.dimensions(),
            image,
            seed: 0,
            requested,
            steps_run: 0,
            scheduler: plantain_schedulers::SchedulerKind::Euler,
            guidance: 0.0,
            timings,
            warnings,
        }
    }

    /// This generation with its image resized by `resizer` to the size the request asked for
    /// ([`Generated::requested`]); [`Generated::canvas`] still says what the model drew at.
    pub fn resized(mut self, resizer: &dyn Resizer) -> Result<Generated> {
        let (width, height) = self.requested;
        self.image = resizer.resize(self.image, width, height)?;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanczos3_resizes_exactly_and_leaves_fitting_images_alone() {
        let img = RgbImage::from_fn(16, 8, |x, y| image::Rgb([(x * 16) as u8, (y * 32) as u8, 7]));
        assert_eq!(Lanczos3.resize(img.clone(), 16, 8).unwrap(), img);
        let out = Lanczos3.resize(img.clone(), 10, 6).unwrap();
        assert_eq!(out, image::imageops::resize(&img, 10, 6, image::imageops::FilterType::Lanczos3));
        assert!(matches!(Lanczos3.resize(img, 0, 6), Err(EngineError::InvalidRequest(_))));
    }
}
