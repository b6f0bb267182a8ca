//! Salient-subject segmentation with ISNet, and the connected objects of a mask.
//!
//! The model is IS-Net ("Highly Accurate Dichotomous Image Segmentation", Qin et al. 2022) as
//! IMG.LY ships it for background removal: a 1×3×1024×1024 f32 input `input`, channels RGB,
//! each value `(v - 128) / 256` for a byte `v`; a 1×1×1024×1024 output `output` already through
//! a sigmoid (0 = background, 1 = subject). `scripts/setup.sh` installs it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use image::imageops::{self, FilterType};
use image::{GrayImage, Luma, RgbImage};
use ndarray::Array4;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{OutputSelector, RunOptions, Session};
use ort::value::{Tensor, TensorElementType, ValueType};

/// The side of the square the network sees.
const SIDE: u32 = 1024;
/// The model `scripts/setup.sh` installs, relative to the models folder.
const INSTALLED_MODEL: &str = "isnet/small-int8.onnx";
const SETUP_HINT: &str = "run `bash scripts/setup.sh` to install it";

/// What can go wrong when segmenting.
#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    /// A file that `scripts/setup.sh` installs (the model, or ONNX Runtime) is missing.
    #[error("{0}; {SETUP_HINT}")]
    NotInstalled(String),
    /// ONNX Runtime failed to load the model or to run it.
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    /// The file loads but is not the network this crate expects.
    #[error("{path}: not an ISNet segmentation model: {reason}")]
    BadModel { path: PathBuf, reason: String },
}

fn runtime_error(context: &str) -> impl FnOnce(ort::Error) -> VisionError + '_ {
    move |e| VisionError::Runtime(format!("{context}: {e}"))
}

/// ISNet on ONNX Runtime, loaded once and shared (`Send + Sync`; runs are serialised).
pub struct Segmenter {
    session: Mutex<Session>,
    input: String,
    output: String,
    path: PathBuf,
}

impl std::fmt::Debug for Segmenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segmenter").field("path", &self.path).field("input", &self.input).field("output", &self.output).finish()
    }
}

impl Segmenter {
    /// The installed ISNet model: `$PLANTAIN_VISION_DIR/isnet/small-int8.onnx` if that variable is
    /// set, else `.models/isnet/small-int8.onnx` in the nearest ancestor of the executable's folder
    /// or of the current directory that has it (where `scripts/setup.sh` puts it).
    pub fn open_installed() -> Result<Segmenter, VisionError> {
        if let Some(dir) = std::env::var_os("PLANTAIN_VISION_DIR") {
            let path = PathBuf::from(dir).join(INSTALLED_MODEL);
            if !path.is_file() {
                return Err(VisionError::NotInstalled(format!(
                    "the ISNet model {} is missing ($PLANTAIN_VISION_DIR is set; unset it to use the repository's .models/)",
                    path.display()
                )));
            }
            return Segmenter::open(&path);
        }
        match plantain_engine::runtime::find_installed(&Path::new(".models").join(INSTALLED_MODEL), Path::is_file) {
            Ok(path) => Segmenter::open(&path),
            Err(roots) => Err(VisionError::NotInstalled(format!(
                "the ISNet model .models/{INSTALLED_MODEL} was not found in any ancestor of {roots} (or set $PLANTAIN_VISION_DIR)"
            ))),
        }
    }

    /// Loads an ISNet model from `path` (the `small` int8 or `medium` fp16 file of the package:
    /// both take and give f32).
    pub fn open(path: &Path) -> Result<Segmenter, VisionError> {
        if !path.is_file() {
            return Err(VisionError::NotInstalled(format!("the ISNet model {} is missing", path.display())));
        }
        let env =
            plantain_engine::runtime::init().map_err(|e| VisionError::NotInstalled(format!("ONNX Runtime could not be loaded ({e})")))?;
        let started = std::time::Instant::now();
        let context = path.display().to_string();
        let session = Session::builder(env)
            .map_err(runtime_error(&context))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| runtime_error(&context)(e.into()))?
            .commit_from_file(path)
            .map_err(runtime_error(&context))?;
        let bad = |reason: String| VisionError::BadModel { path: path.to_path_buf(), reason };
        let [input] = session.inputs() else {
            return Err(bad(format!("it has {} inputs, expected one image", session.inputs().len())));
        };
        check_image_tensor(input.dtype(), 3).map_err(|r| bad(format!("input `{}`: {r}", input.name())))?;
        // The package's models have the final mask, `output`, first, then deep-supervision side outputs.
        let output = session.outputs().iter().find(|o| o.name() == "output").or(session.outputs().first());
        let Some(output) = output else { return Err(bad("it has no outputs".into())) };
        check_image_tensor(output.dtype(), 1).map_err(|r| bad(format!("output `{}`: {r}", output.name())))?;
        let (input, output) = (input.name().to_string(), output.name().to_string());
        tracing::info!(model = %path.display(), secs = started.elapsed().as_secs_f32(), "ISNet ready");
        Ok(Segmenter { session: Mutex::new(session), input, output, path: path.to_path_buf() })
    }

    /// Soft subject mask at the input's own size: 255 = subject, 0 = background. An empty image
    /// gives an empty mask.
    pub fn subject(&self, image: &RgbImage) -> Result<GrayImage, VisionError> {
        let (width, height) = image.dimensions();
        if width == 0 || height == 0 {
            return Ok(GrayImage::new(width, height));
        }
        let input = to_input(image);
        let input = Tensor::from_array(input).map_err(runtime_error("input tensor"))?;
        let options =
            RunOptions::new().map_err(runtime_error("run options"))?.with_outputs(OutputSelector::no_default().with(&self.output));
        let mut session = self
            .session
            .lock()
            .map_err(|_| VisionError::Runtime(format!("{}: session poisoned by an earlier panic", self.path.display())))?;
        let outputs = session.run_with_options(ort::inputs![self.input.as_str() => input], &options).map_err(runtime_error("ISNet"))?;
        let mask = outputs.get(&self.output).ok_or_else(|| VisionError::Runtime(format!("ISNet gave no `{}`", self.output)))?;
        let mask = mask.try_extract_array::<f32>().map_err(runtime_error("ISNet output"))?;
        let side = SIDE as usize;
        if mask.len() != side * side {
            return Err(VisionError::Runtime(format!("ISNet gave a mask of shape {:?}, expected 1×1×{SIDE}×{SIDE}", mask.shape())));
        }
        let mut square = GrayImage::new(SIDE, SIDE);
        for (pixel, &v) in square.pixels_mut().zip(mask.iter()) {
            // NaN (never expected) maps to 0 through `as`.
            *pixel = Luma([(v.clamp(0.0, 1.0) * 255.0).round() as u8]);
        }
        drop(outputs);
        drop(session);
        if (width, height) == (SIDE, SIDE) {
            return Ok(square);
        }
        Ok(imageops::resize(&square, width, height, FilterType::Triangle))
    }
}

/// Accepts a 4-d f32 tensor with `channels` channels and, where fixed, a SIDE×SIDE plane.
fn check_image_tensor(dtype: &ValueType, channels: i64) -> Result<(), String> {
    let ValueType::Tensor { ty, shape, .. } = dtype else { return Err(format!("is a {dtype}, not a tensor")) };
    if *ty != TensorElementType::Float32 {
        return Err(format!("is {ty}, expected f32"));
    }
    let expected = [1, channels, i64::from(SIDE), i64::from(SIDE)];
    if shape.len() != 4 || shape.iter().zip(expected).any(|(&got, want)| got >= 0 && got != want) {
        return Err(format!("has shape {dtype}, expected {expected:?}"));
    }
    Ok(())
}

/// The network's input: the image stretched to SIDE×SIDE, planar RGB, `(v - 128) / 256`.
fn to_input(image: &RgbImage) -> Array4<f32> {
    let resized;
    let square = if image.dimensions() == (SIDE, SIDE) {
        image
    } else {
        resized = imageops::resize(image, SIDE, SIDE, FilterType::Triangle);
        &resized
    };
    let side = SIDE as usize;
    let mut input = Array4::<f32>::zeros((1, 3, side, side));
    for (x, y, pixel) in square.enumerate_pixels() {
        for c in 0..3 {
            input[[0, c, y as usize, x as usize]] = (f32::from(pixel[c]) - 128.0) / 256.0;
        }
    }
    input
}

/// One connected object of a mask.
#[derive(Clone, Debug)]
pub struct Region {
    /// The object alone: 255 on its pixels, 0 elsewhere, at the mask's size.
    pub mask: GrayImage,
    /// Bounding box `(x0, y0, x1, y1)`, the ends exclusive.
    pub bbox: (u32, u32, u32, u32),
    /// Pixels in the object.
    pub area: u64,
    /// Centre of mass as fractions of the width and height (pixel centres; 0.5 is the middle).
    pub centroid: (f32, f32),
}

/// What labelling gathers about one component.
struct Tally {
    bbox: (u32, u32, u32, u32),
    area: u64,
    sum: (u64, u64),
}

/// Connected components (8-connectivity) of `mask >= threshold`, dropping those under
/// `min_fraction` of the image's area, largest first (ties: the first met in raster order).
pub fn components(mask: &GrayImage, threshold: u8, min_fraction: f32) -> Vec<Region> {
    let (width, height) = mask.dimensions();
    let (labels, tallies) = label(mask, threshold);
    let total = u64::from(width) * u64::from(height);
    let min_area = f64::from(min_fraction.max(0.0)) * total as f64;
    let mut kept: Vec<usize> = (0..tallies.len()).filter(|&i| tallies[i].area as f64 >= min_area).collect();
    kept.sort_by_key(|&i| std::cmp::Reverse(tallies[i].area));
    // Label (1-based) -> position in `kept`, for painting each region's own mask in one pass.
    let mut slot = vec![usize::MAX; tallies.len() + 1];
    for (k, &i) in kept.iter().enumerate() {
        slot[i + 1] = k;
    }
    let mut regions: Vec<Region> = kept
        .iter()
        .map(|&i| {
            let t = &tallies[i];
            let centroid =
                ((t.sum.0 as f64 / t.area as f64 + 0.5) / f64::from(width), (t.sum.1 as f64 / t.area as f64 + 0.5) / f64::from(height));
            Region { mask: GrayImage::new(width, height), bbox: t.bbox, area: t.area, centroid: (centroid.0 as f32, centroid.1 as f32) }
        })
        .collect();
    for (index, &l) in labels.iter().enumerate() {
        if l != 0 && slot[l as usize] != usize::MAX {
            let (x, y) = ((index % width as usize) as u32, (index / width as usize) as u32);
            regions[slot[l as usize]].mask.put_pixel(x, y, Luma([255]));
        }
    }
    regions
}

/// Labels the 8-connected components of `mask >= threshold` (0 = background, then 1, 2, ...
/// in raster order of each component's first pixel), with each component's tally.
fn label(mask: &GrayImage, threshold: u8) -> (Vec<u32>, Vec<Tally>) {
    let (width, height) = (mask.width() as usize, mask.height() as usize);
    let on = |i: usize| mask.as_raw()[i] >= threshold;
    let mut labels = vec![0u32; width * height];
    let mut tallies = Vec::new();
    let mut stack = Vec::new();
    for start in 0..width * height {
        if labels[start] != 0 || !on(start) {
            continue;
        }
        let id = tallies.len() as u32 + 1;
        let (x0, y0) = ((start % width) as u32, (start / width) as u32);
        let mut t = Tally { bbox: (x0, y0, x0 + 1, y0 + 1), area: 0, sum: (0, 0) };
        labels[start] = id;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % width, i / width);
            t.area += 1;
            t.sum.0 += x as u64;
            t.sum.1 += y as u64;
            t.bbox = (t.bbox.0.min(x as u32), t.bbox.1.min(y as u32), t.bbox.2.max(x as u32 + 1), t.bbox.3.max(y as u32 + 1));
            for ny in y.saturating_sub(1)..=(y + 1).min(height - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(width - 1) {
                    let n = ny * width + nx;
                    if labels[n] == 0 && on(n) {
                        labels[n] = id;
                        stack.push(n);
                    }
                }
            }
        }
        tallies.push(t);
    }
    (labels, tallies)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_with(width: u32, height: u32, rects: &[(u32, u32, u32, u32, u8)]) -> GrayImage {
        let mut mask = GrayImage::new(width, height);
        for &(x0, y0, x1, y1, v) in rects {
            for y in y0..y1 {
                for x in x0..x1 {
                    mask.put_pixel(x, y, Luma([v]));
                }
            }
        }
        mask
    }

    #[test]
    fn segmenter_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Segmenter>();
    }

    #[test]
    fn counts_orders_and_boxes_components() {
        // A small square top-left, a big one bottom-right, a middle one top-right.
        let mask = mask_with(100, 80, &[(2, 3, 6, 7, 255), (50, 40, 90, 75, 255), (70, 5, 90, 20, 200)]);
        let regions = components(&mask, 128, 0.0);
        assert_eq!(regions.len(), 3);
        assert_eq!(regions.iter().map(|r| r.area).collect::<Vec<_>>(), [40 * 35, 20 * 15, 4 * 4]);
        assert_eq!(regions[0].bbox, (50, 40, 90, 75));
        assert_eq!(regions[1].bbox, (70, 5, 90, 20));
        assert_eq!(regions[2].bbox, (2, 3, 6, 7));
        let (cx, cy) = regions[2].centroid;
        assert!((cx - 4.0 / 100.0).abs() < 1e-6 && (cy - 5.0 / 80.0).abs() < 1e-6, "{cx} {cy}");
        // Each region's mask is binary and holds exactly its own pixels.
        for r in &regions {
            assert_eq!(r.mask.dimensions(), (100, 80));
            assert!(r.mask.pixels().all(|p| p[0] == 0 || p[0] == 255));
            assert_eq!(r.mask.pixels().filter(|p| p[0] == 255).count() as u64, r.area);
        }
        assert_eq!(regions[2].mask.get_pixel(2, 3)[0], 255);
        assert_eq!(regions[2].mask.get_pixel(50, 40)[0], 0);
    }

    #[test]
    fn threshold_and_min_fraction_filter() {
        let mask = mask_with(100, 100, &[(0, 0, 10, 10, 100), (20, 20, 60, 60, 255), (80, 80, 82, 82, 255)]);
        // The faint square is below the threshold.
        assert_eq!(components(&mask, 128, 0.0).len(), 2);
        assert_eq!(components(&mask, 100, 0.0).len(), 3);
        // 2×2 = 0.04 % of the image; 10×10 = 1 %; 40×40 = 16 %.
        let kept = components(&mask, 100, 0.01);
        assert_eq!(kept.iter().map(|r| r.area).collect::<Vec<_>>(), [1600, 100]);
        assert_eq!(components(&mask, 100, 0.2).len(), 0);
        assert_eq!(components(&mask, 255, 0.0).len(), 2);
    }

    #[test]
    fn diagonal_neighbours_connect() {
        let mut mask = GrayImage::new(5, 5);
        for i in 0..5 {
            mask.put_pixel(i, i, Luma([255]));
        }
        mask.put_pixel(4, 0, Luma([255]));
        let regions = components(&mask, 1, 0.0);
        assert_eq!(regions.len(), 2);
        assert_eq!((regions[0].area, regions[0].bbox), (5, (0, 0, 5, 5)));
        assert_eq!((regions[0].centroid.0, regions[0].centroid.1), (0.5, 0.5));
        assert_eq!((regions[1].area, regions[1].bbox), (1, (4, 0, 5, 1)));
    }

    #[test]
    fn odd_sizes() {
        assert!(components(&GrayImage::new(0, 0), 128, 0.0).is_empty());
        assert!(components(&GrayImage::new(0, 7), 128, 0.0).is_empty());
        let full = GrayImage::from_pixel(1, 9, Luma([255]));
        let regions = components(&full, 128, 0.5);
        assert_eq!(regions.len(), 1);
        assert_eq!((regions[0].area, regions[0].bbox), (9, (0, 0, 1, 9)));
        // Threshold 0 takes every pixel.
        assert_eq!(components(&GrayImage::new(3, 2), 0, 0.0)[0].area, 6);
        // Stripes one pixel apart stay separate; a long thin line is one object.
        let stripes = mask_with(9, 3, &[(0, 0, 1, 3, 255), (2, 0, 3, 3, 255), (4, 0, 9, 1, 255)]);
        assert_eq!(components(&stripes, 128, 0.0).len(), 3);
        let line = GrayImage::from_pixel(5000, 1, Luma([255]));
        assert_eq!(components(&line, 128, 0.0)[0].bbox, (0, 0, 5000, 1));
    }

    #[test]
    fn missing_model_says_how_to_install() {
        let err = Segmenter::open(Path::new("/nonexistent/isnet/small-int8.onnx")).unwrap_err();
        assert!(matches!(err, VisionError::NotInstalled(_)), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("/nonexistent/isnet/small-int8.onnx") && message.contains("bash scripts/setup.sh"), "{message}");
    }
}
