//! Conversions between images and the tensors the networks read and write.

use image::imageops::FilterType;
use image::{GrayImage, RgbImage};
use ndarray::{Array4, ArrayD};

/// `[1, 3, H, W]` in [-1, 1], as diffusers' `VaeImageProcessor` makes it.
pub fn to_tensor(img: &RgbImage) -> Array4<f32> {
    let (w, h) = img.dimensions();
    Array4::from_shape_fn((1, 3, h as usize, w as usize), |(_, c, y, x)| img.get_pixel(x as u32, y as u32)[c] as f32 / 127.5 - 1.0)
}

/// Decoder output `[1, 3, H, W]` in about [-1, 1] to 8-bit RGB, rounding as diffusers'
/// `numpy_to_pil` does (`round(clamp(x / 2 + 0.5) * 255)`).
pub fn from_tensor(t: &ArrayD<f32>) -> RgbImage {
    let (h, w) = (t.shape()[2], t.shape()[3]);
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let px = |c: usize| {
            let v = (t[[0, c, y as usize, x as usize]] / 2.0 + 0.5).clamp(0.0, 1.0);
            (v * 255.0).round() as u8
        };
        image::Rgb([px(0), px(1), px(2)])
    })
}

/// Resizes to exactly `w`x`h` (Lanczos3), or returns the image as is when it already fits.
pub fn resize_exact(img: RgbImage, w: u32, h: u32) -> RgbImage {
    if img.dimensions() == (w, h) { img } else { image::imageops::resize(&img, w, h, FilterType::Lanczos3) }
}

/// The repaint mask at latent resolution, 1 where the picture may change: the image mask
/// resized (area average) to `w`x`h` and thresholded at one half, like diffusers' mask
/// processor (binarize) followed by its nearest downsampling.
pub fn latent_mask(mask: &GrayImage, w: usize, h: usize) -> Vec<f32> {
    let small = image::imageops::resize(mask, w as u32, h as u32, FilterType::Triangle);
    small.pixels().map(|p| if p[0] >= 128 { 1.0 } else { 0.0 }).collect()
}

/// The image tensor with the repaint region zeroed (mid grey in [-1, 1]), what 9-channel
/// inpainting UNets expect beside the mask (diffusers: `image * (mask < 0.5)`).
pub fn masked_tensor(img: &Array4<f32>, mask: &GrayImage) -> Array4<f32> {
    let mut out = img.clone();
    for ((_, _, y, x), v) in out.indexed_iter_mut() {
        if mask.get_pixel(x as u32, y as u32)[0] >= 128 {
            *v = 0.0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_round_trip_is_exact_for_8_bit_values() {
        let img = RgbImage::from_fn(5, 3, |x, y| image::Rgb([(x * 50) as u8, (y * 100) as u8, 255]));
        let t = to_tensor(&img).into_dyn();
        assert_eq!(from_tensor(&t), img);
    }

    #[test]
    fn latent_mask_thresholds_and_downsamples() {
        let mask = GrayImage::from_fn(16, 16, |x, _| image::Luma([if x < 8 { 0 } else { 255 }]));
        let m = latent_mask(&mask, 2, 2);
        assert_eq!(m, vec![0.0, 1.0, 0.0, 1.0]);
    }
}
