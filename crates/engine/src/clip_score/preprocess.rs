//! `CLIPImageProcessor` on 8-bit RGB pictures: resize the shortest side to `size` with Pillow's
//! bicubic filter, centre-crop to `crop_size`, rescale by 1/255 and normalise per channel.
//!
//! The resize is Pillow's own algorithm (`ImagingResample`), reproduced step for step rather
//! than approximated: the bicubic kernel with a = -0.5, its support widened by the scale when
//! shrinking (antialiasing), weights normalised per output pixel and rounded to 22-bit fixed
//! point, a horizontal pass rounded and clamped to 8 bits, then a vertical pass. transformers'
//! PIL backend (`CLIPImageProcessorPil`) calls exactly that, and its default torchvision
//! backend's uint8 antialiased bicubic was written to agree with it (the fixture's pixel values
//! from both are identical). So the pixel values here equal transformers' but for the last bits
//! of the float rescale/normalise (see `fixtures/ref/README.md` for the measured difference).

use std::path::Path;

use image::RgbImage;
use ndarray::{Array4, ArrayD};
use serde_json::Value as Json;

use crate::error::{EngineError, Result};

/// OpenAI CLIP's per-channel mean and standard deviation (`OPENAI_CLIP_MEAN` / `_STD`), with
/// transformers' digits.
pub const OPENAI_CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
#[allow(clippy::excessive_precision)]
pub const OPENAI_CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// PIL's `Image.BICUBIC`, the only resampling filter implemented.
const PIL_BICUBIC: u64 = 3;

/// The settings of a `preprocessor_config.json` that CLIP uses.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageProcessor {
    /// Target of the shortest side (`size.shortest_edge`, or a bare number in old files).
    pub shortest_edge: u32,
    /// `crop_size` as (width, height).
    pub crop: (u32, u32),
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub rescale_factor: f64,
}

impl ImageProcessor {
    /// OpenAI CLIP's processor for a model of `side` pixels.
    pub fn openai(side: u32) -> Self {
        Self { shortest_edge: side, crop: (side, side), mean: OPENAI_CLIP_MEAN, std: OPENAI_CLIP_STD, rescale_factor: 1.0 / 255.0 }
    }

    /// Reads `preprocessor_config.json` (old `CLIPFeatureExtractor` files with bare numbers too);
    /// missing settings take `openai(side)`'s. Settings this does not implement (no resize, no
    /// crop, another filter) are refused rather than ignored.
    pub fn from_file(path: &Path, side: u32) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
        let json: Json = serde_json::from_str(&text).map_err(|e| EngineError::bad_config(path, e))?;
        Self::from_json(&json, side).map_err(|reason| match reason {
            Refusal::Bad(r) => EngineError::bad_config(path, r),
            Refusal::Unsupported(r) => EngineError::Unsupported(format!("{}: {r}", path.display())),
        })
    }

    fn from_json(json: &Json, side: u32) -> std::result::Result<Self, Refusal> {
        let mut p = Self::openai(side);
        for flag in ["do_resize", "do_center_crop", "do_rescale", "do_normalize"] {
            if json.get(flag).and_then(Json::as_bool) == Some(false) {
                return Err(Refusal::Unsupported(format!("`{flag}: false` is not supported")));
            }
        }
        if let Some(r) = json.get("resample").and_then(Json::as_u64)
            && r != PIL_BICUBIC
        {
            return Err(Refusal::Unsupported(format!("resample {r} is not supported (only 3, bicubic)")));
        }
        if let Some(size) = json.get("size") {
            p.shortest_edge = match size.as_u64().or_else(|| size.get("shortest_edge").and_then(Json::as_u64)) {
                Some(n) => u32::try_from(n).map_err(|_| Refusal::Bad(format!("size {n} is too large")))?,
                None => return Err(Refusal::Unsupported(format!("size {size} is not supported (only a shortest edge)"))),
            };
        }
        if let Some(crop) = json.get("crop_size") {
            p.crop = crop_size(crop).ok_or_else(|| Refusal::Bad(format!("crop_size {crop} is not a size")))?;
        }
        p.mean = triple(json, "image_mean")?.unwrap_or(p.mean);
        p.std = triple(json, "image_std")?.unwrap_or(p.std);
        p.rescale_factor = json.get("rescale_factor").and_then(Json::as_f64).unwrap_or(p.rescale_factor);
        if p.crop.0 > p.shortest_edge || p.crop.1 > p.shortest_edge {
            return Err(Refusal::Unsupported(format!(
                "a crop {:?} larger than the resized side {} is not supported",
                p.crop, p.shortest_edge
            )));
        }
        Ok(p)
    }

    /// The picture's size after the shortest-side resize, as transformers computes it
    /// (`get_resize_output_image_size`: the long side is truncated, not rounded).
    pub fn resized_size(&self, width: u32, height: u32) -> (u32, u32) {
        let s = self.shortest_edge;
        let long = |a: u32, b: u32| ((s as u64 * a as u64) / b as u64) as u32;
        if width <= height { (s, long(height, width)) } else { (long(width, height), s) }
    }

    /// `pixel_values` `[1, 3, crop_h, crop_w]` for one picture.
    pub fn pixel_values(&self, image: &RgbImage) -> Result<ArrayD<f32>> {
        if image.width() == 0 || image.height() == 0 {
            return Err(EngineError::InvalidRequest("an empty picture cannot be scored".into()));
        }
        let (w, h) = self.resized_size(image.width(), image.height());
        let resized = pil_bicubic(image, w, h);
        // transformers' centre crop: top-left at the floor of half the excess.
        let (cw, ch) = self.crop;
        let (left, top) = ((w - cw) / 2, (h - ch) / 2);
        let scale = self.rescale_factor;
        let out = Array4::from_shape_fn((1, 3, ch as usize, cw as usize), |(_, c, y, x)| {
            let v = resized.get_pixel(left + x as u32, top + y as u32)[c];
            ((v as f64 * scale) as f32 - self.mean[c]) / self.std[c]
        });
        Ok(out.into_dyn())
    }
}

#[derive(Debug)]
enum Refusal {
    Bad(String),
    Unsupported(String),
}

fn crop_size(v: &Json) -> Option<(u32, u32)> {
    let n = |v: Option<&Json>| v.and_then(Json::as_u64).and_then(|n| u32::try_from(n).ok());
    match n(Some(v)) {
        Some(side) => Some((side, side)),
        None => Some((n(v.get("width"))?, n(v.get("height"))?)),
    }
}

fn triple(json: &Json, key: &str) -> std::result::Result<Option<[f32; 3]>, Refusal> {
    let Some(v) = json.get(key) else { return Ok(None) };
    let vals: Option<Vec<f32>> = v.as_array().map(|a| a.iter().filter_map(Json::as_f64).map(|x| x as f32).collect());
    match vals.as_deref() {
        Some(&[a, b, c]) => Ok(Some([a, b, c])),
        _ => Err(Refusal::Bad(format!("{key} {v} is not three numbers"))),
    }
}

/// Bits of fixed-point precision of Pillow's 8-bit resampling (`PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's bicubic kernel (a = -0.5).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output pixel: the first input pixel and the fixed-point weights (Pillow's
/// `precompute_coeffs` + `normalize_coeffs_8bpc`).
fn coefficients(in_size: u32, out_size: u32) -> Vec<(usize, Vec<i64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's `(int)` truncates toward zero; negatives are clamped to 0 next anyway.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let k: Vec<f64> = (xmin..xmax.max(xmin)).map(|x| bicubic((x as f64 - center + 0.5) * ss)).collect();
            let sum: f64 = k.iter().sum();
            let fixed = k
                .iter()
                .map(|&w| {
                    let w = (if sum != 0.0 { w / sum } else { w }) * (1u64 << PRECISION_BITS) as f64;
                    (if w < 0.0 { w - 0.5 } else { w + 0.5 }) as i64
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

/// Pillow's `clip8`: a fixed-point sum back to a byte.
fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One separable pass along x (`horizontal`) or y.
fn resample_pass(src: &RgbImage, out_w: u32, out_h: u32, horizontal: bool) -> RgbImage {
    let coeffs = if horizontal { coefficients(src.width(), out_w) } else { coefficients(src.height(), out_h) };
    let mut out = RgbImage::new(out_w, out_h);
    for (x, y, px) in out.enumerate_pixels_mut() {
        let (start, k) = &coeffs[(if horizontal { x } else { y }) as usize];
        for c in 0..3 {
            let mut acc: i64 = 1 << (PRECISION_BITS - 1);
            for (i, &w) in k.iter().enumerate() {
                let s = start + i;
                let v = if horizontal { src.get_pixel(s as u32, y) } else { src.get_pixel(x, s as u32) };
                acc += v[c] as i64 * w;
            }
            px[c] = clip8(acc);
        }
    }
    out
}

/// `PIL.Image.resize((width, height), Image.BICUBIC)` of an RGB picture, bit for bit: the
/// horizontal pass first (kept as 8-bit), then the vertical one; an axis whose size does not
/// change is not resampled.
pub fn pil_bicubic(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let horizontal = if width != image.width() { resample_pass(image, width, image.height(), true) } else { image.clone() };
    if height != image.height() { resample_pass(&horizontal, width, height, false) } else { horizontal }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_side_sizes_truncate_like_transformers() {
        let p = ImageProcessor::openai(224);
        assert_eq!(p.resized_size(640, 480), (298, 224));
        assert_eq!(p.resized_size(480, 640), (224, 298));
        assert_eq!(p.resized_size(100, 100), (224, 224));
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(80, 45), (20, 32), (1000, 224), (7, 3)] {
            for (_, k) in coefficients(i, o) {
                let sum: i64 = k.iter().sum();
                assert!((sum - (1 << PRECISION_BITS)).abs() <= k.len() as i64, "{i}->{o}: {sum}");
            }
        }
    }

    #[test]
    fn a_flat_picture_stays_flat_and_an_unchanged_size_is_a_copy() {
        let flat = RgbImage::from_pixel(37, 23, image::Rgb([200, 13, 77]));
        assert!(pil_bicubic(&flat, 11, 50).pixels().all(|p| p.0 == [200, 13, 77]));
        let img = RgbImage::from_fn(9, 5, |x, y| image::Rgb([(x * 20) as u8, (y * 40) as u8, 3]));
        assert_eq!(pil_bicubic(&img, 9, 5), img);
    }

    #[test]
    fn old_and_new_preprocessor_files_read_the_same() {
        let old = serde_json::json!({"size": 224, "crop_size": 224, "resample": 3, "do_center_crop": true});
        let new = serde_json::json!({"size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224}});
        let (a, b) = (ImageProcessor::from_json(&old, 32).unwrap(), ImageProcessor::from_json(&new, 32).unwrap());
        assert_eq!(a, b);
        assert_eq!(a, ImageProcessor::openai(224));
        let nearest = serde_json::json!({"resample": 0});
        assert!(matches!(ImageProcessor::from_json(&nearest, 32), Err(Refusal::Unsupported(_))));
        let no_crop = serde_json::json!({"do_center_crop": false});
        assert!(matches!(ImageProcessor::from_json(&no_crop, 32), Err(Refusal::Unsupported(_))));
    }
}
