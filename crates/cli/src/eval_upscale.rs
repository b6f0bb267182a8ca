//! `plantain eval upscale`: scikit-image's photographs (fetched by the set-up script), each cut
//! to at most `--max-side` pixels, shrunk 4x (Catmull-Rom) and restored 4x by Lanczos3 and by each
//! Real-ESRGAN model: PSNR against the original (higher: closer to it) and BRISQUE of the
//! restored picture (lower: more natural-looking), with a contact sheet of crops to look at.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use image::RgbImage;
use image::imageops::{self, FilterType};
use plantain_engine::runtime::RuntimeOptions;
use plantain_engine::upscale::{UpscaleModel, Upscaler};

#[derive(clap::Args)]
pub struct Args {
    /// Folder of photographs (PNG or JPEG).
    #[arg(long, default_value = ".assets/photos")]
    pub photos: PathBuf,
    /// Each photograph is cut (centred) to at most this many pixels a side first.
    #[arg(long, default_value_t = 512)]
    pub max_side: u32,
    /// The models restoring the pictures (x4plus, anime, animevideov3).
    #[arg(long, value_delimiter = ',', default_value = "x4plus,anime,animevideov3")]
    pub models: Vec<String>,
    /// CPU threads for ONNX Runtime (0: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Write a JPEG contact sheet (a crop of original, shrunk, Lanczos3, each model) here.
    #[arg(long)]
    pub sheet: Option<PathBuf>,
}

/// Side of each crop in the contact sheet.
const CROP: u32 = 192;

use plantain_provenance::watermark::psnr;

/// The photographs, each centre-cut to at most `max_side` and to a multiple of 4.
fn photos(a: &Args) -> Result<Vec<(String, RgbImage)>> {
    crate::eval_photos::photo_files(&a.photos)?
        .iter()
        .map(|f| {
            let img = crate::io::read_rgb(f)?;
            let (w, h) = img.dimensions();
            let (cw, ch) = (w.min(a.max_side) / 4 * 4, h.min(a.max_side) / 4 * 4);
            let cut = imageops::crop_imm(&img, (w - cw) / 2, (h - ch) / 2, cw, ch).to_image();
            Ok((f.file_stem().unwrap_or_default().to_string_lossy().into_owned(), cut))
        })
        .collect()
}

/// A `CROP`-sided cut from the centre of `img`, as a contact-sheet cell.
fn cell(img: &RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    let s = CROP.min(w).min(h);
    let c = imageops::crop_imm(img, (w - s) / 2, (h - s) / 2, s, s).to_image();
    imageops::resize(&c, CROP, CROP, FilterType::Nearest)
}

pub fn run(a: Args) -> Result<()> {
    let brisque = plantain_quality::Brisque::open_installed()?;
    let models = a.models.iter().map(|m| UpscaleModel::parse(m)).collect::<Result<Vec<_>, _>>()?;
    let rt = RuntimeOptions { threads: a.threads, ..Default::default() };
    let ups = models.iter().map(|&m| Upscaler::load(m, 4, &rt)).collect::<Result<Vec<_>, _>>()?;
    let names: Vec<&str> = std::iter::once("Lanczos3").chain(models.iter().map(|m| m.name())).collect();
    println!(
        "| photo | size | original BRISQUE | {} |",
        names.iter().map(|n| format!("{n} PSNR dB / BRISQUE")).collect::<Vec<_>>().join(" | ")
    );
    println!("|---|---|---|{}", "---|".repeat(names.len()));
    let (mut sums, mut rows) = (vec![(0.0f64, 0.0f64, 0.0f64); names.len()], Vec::new());
    let mut secs = vec![0.0f64; models.len()];
    let photos = photos(&a)?;
    for (name, orig) in &photos {
        let (w, h) = orig.dimensions();
        let small = imageops::resize(orig, w / 4, h / 4, FilterType::CatmullRom);
        let mut restored = vec![imageops::resize(&small, w, h, FilterType::Lanczos3)];
        for (i, up) in ups.iter().enumerate() {
            let t = Instant::now();
            restored.push(up.upscale(&small, &mut |_, _| ControlFlow::Continue(()))?);
            secs[i] += t.elapsed().as_secs_f64();
        }
        let mut line = format!("| {name} | {w}x{h} | {:.1} |", brisque.score(orig)?);
        for (k, r) in restored.iter().enumerate() {
            let (p, b) = (psnr(r, orig), brisque.score(r)? as f64);
            sums[k] = (sums[k].0 + p, sums[k].1 + b, sums[k].2 + 1.0);
            line += &format!(" {p:.2} / {b:.1} |");
        }
        println!("{line}");
        let mut row = vec![cell(orig), cell(&imageops::resize(&small, w, h, FilterType::Nearest))];
        row.extend(restored.iter().map(cell));
        rows.push(row);
    }
    let mean: Vec<String> = sums.iter().map(|(p, b, n)| format!(" {:.2} / {:.1} |", p / n, b / n)).collect();
    println!("| mean | | |{}", mean.concat());
    for (m, s) in models.iter().zip(&secs) {
        println!("{}: {:.1} s for {} photographs", m.name(), s, photos.len());
    }
    if let Some(path) = &a.sheet {
        write_sheet(&rows, path)?;
        println!("sheet (original, shrunk 4x, {}): {}", names.join(", "), path.display());
    }
    Ok(())
}

/// Rows of cells side by side, as a JPEG.
fn write_sheet(rows: &[Vec<RgbImage>], path: &std::path::Path) -> Result<()> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let mut sheet = RgbImage::from_pixel(cols * (CROP + 4), rows.len() as u32 * (CROP + 4), image::Rgb([255, 255, 255]));
    for (r, row) in rows.iter().enumerate() {
        for (c, img) in row.iter().enumerate() {
            imageops::replace(&mut sheet, img, (c as u32 * (CROP + 4)) as i64, (r as u32 * (CROP + 4)) as i64);
        }
    }
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::BufWriter::new(file), 80).encode_image(&sheet)?;
    Ok(())
}
