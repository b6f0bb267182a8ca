//! `plantain upscale`: enlarge a picture with Real-ESRGAN, tile by tile.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use plantain_engine::resize::{Lanczos3, Resizer};
use plantain_engine::runtime::RuntimeOptions;
use plantain_engine::upscale::{TileOptions, UpscaleModel, Upscaler, output_size};
use plantain_provenance::{Action, Ingredient, ManifestInfo};

#[derive(clap::Args)]
pub struct Args {
    /// The picture to enlarge (PNG, JPEG, WebP).
    pub input: PathBuf,
    /// How many times larger, per side: 2, 3 or 4.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=4))]
    pub scale: u32,
    /// x4plus (photographs, the default), anime (illustrations, drawings), animevideov3 (illustrations, fast; native 2x/3x/4x).
    #[arg(long, default_value = "x4plus")]
    pub model: String,
    /// Where to write the PNG (default: beside IN, as `IN-stem.x<scale>.png`).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Tile side in input pixels (memory grows with its square).
    #[arg(long, default_value_t = TileOptions::default().tile)]
    pub tile: u32,
    /// Input pixels neighbouring tiles share (cross-faded).
    #[arg(long, default_value_t = TileOptions::default().overlap)]
    pub overlap: u32,
    /// CPU threads for ONNX Runtime (0: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Run on the GPU (cuda builds only).
    #[arg(long)]
    pub cuda: bool,
    #[command(flatten)]
    pub provenance: crate::provenance_cmd::StampArgs,
}

pub fn run(a: Args) -> Result<()> {
    let model = UpscaleModel::parse(&a.model)?;
    let path = a.output.clone().unwrap_or_else(|| a.input.with_extension("").with_extension(format!("x{}.png", a.scale)));
    let format = crate::provenance_cmd::output_format(&path)?;
    let prov = crate::provenance_cmd::load_for_stamping(&a.provenance)?;
    let image = crate::io::read_rgb(&a.input)?;
    let (w, h) = image.dimensions();
    // Refuse sizes past the limit before the model is loaded or a tile is run.
    let (out_w, out_h) = output_size(w, h, a.scale)?;
    anyhow::ensure!(a.tile >= 16 && a.overlap < a.tile, "--tile must be at least 16 and --overlap smaller than it");
    let native = model.native_scale(a.scale);
    let rt = RuntimeOptions { threads: a.threads, cuda: a.cuda, ..Default::default() };
    let started = Instant::now();
    let mut up = Upscaler::load(model, native, &rt)?;
    up.tiles = TileOptions { tile: a.tile, overlap: a.overlap };
    let loaded = started.elapsed();
    let big = upscale_with_bar(&up, &image)?;
    let out = if big.dimensions() == (out_w, out_h) { big } else { Lanczos3.resize(big, out_w, out_h)? };
    let input = std::fs::read(&a.input).with_context(|| format!("reading {}", a.input.display()))?;
    let mut info = ManifestInfo::created(&format!("realesrgan-{}", model.name()));
    info.action = Action::Edited;
    info.ingredients = vec![Ingredient { title: crate::edit::file_name(&a.input), bytes: &input }];
    info.parameters.insert("upscale".into(), serde_json::json!({"model": model.name(), "scale": a.scale, "native": native}));
    let stamped = prov.stamp(&out, format, &info).context("stamping the output (watermark, C2PA)")?;
    crate::io::write_atomic(&stamped.bytes, &path)?;
    println!(
        "{}: {w}x{h} -> {out_w}x{out_h} with {} ({native}x{}), {:.1} s (model load {:.1} s)",
        path.display(),
        model.name(),
        if native == a.scale { String::new() } else { ", then Lanczos3".into() },
        started.elapsed().as_secs_f32(),
        loaded.as_secs_f32()
    );
    Ok(())
}

/// Runs the upscaler over `image` with a progress bar of its tiles.
fn upscale_with_bar(up: &Upscaler, image: &image::RgbImage) -> Result<image::RgbImage> {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("upscaling [{bar:30}] {pos}/{len} tiles, {elapsed} elapsed, eta {eta}")?.progress_chars("=> "),
    );
    let result = up.upscale(image, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        ControlFlow::Continue(())
    });
    bar.finish_and_clear();
    Ok(result?)
}

/// An upscale edit's enlargement (`plantain edit IN "upscale to 4K"`): `model` at the native
/// factor nearest above what the plan asks (at most 4x; the plan closes the rest with Lanczos3).
pub fn enlarge(req: &plantain_director::edit::EnlargeRequest, model: UpscaleModel, rt: &RuntimeOptions) -> Result<image::RgbImage> {
    let (w, h) = req.image.dimensions();
    let factor = (f64::from(req.width) / f64::from(w)).max(f64::from(req.height) / f64::from(h)).ceil() as u32;
    let native = model.native_scale(factor.clamp(2, 4));
    let up = Upscaler::load(model, native, rt)?;
    eprintln!("upscaling {w}x{h} with {} ({native}x), then to {}x{}", model.name(), req.width, req.height);
    upscale_with_bar(&up, &req.image)
}
