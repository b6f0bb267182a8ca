//! `plantain eval photo-edits`: light, colour and background-blur edits on real photographs
//! (scikit-image's sample photos, fetched by the set-up script) at 1K, the subject found by
//! ISNet: time per edit with segmentation included, pixels changed outside each region (must
//! be 0), and a contact sheet to look at.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use image::RgbImage;
use image::imageops::{self, FilterType};
use plantain_director::edit::{EditOptions, SubjectFinder, plan};

#[derive(clap::Args)]
pub struct Args {
    /// Folder of photographs (PNG or JPEG).
    #[arg(long, default_value = ".assets/photos")]
    pub photos: PathBuf,
    /// Each photo is resized so its long side is this many pixels first.
    #[arg(long, default_value_t = 1024)]
    pub long_side: u32,
    /// Write a contact sheet (original, then each edit) here.
    #[arg(long)]
    pub sheet: Option<PathBuf>,
}

/// The edits: none needs a generative model.
const EDITS: [&str; 6] = [
    "make it warmer",
    "make the background black and white",
    "blur the background",
    "brighten the subject",
    "make it sepia",
    "add a vignette",
];
/// Height of a picture in the contact sheet.
const THUMB: u32 = 128;

pub fn run(a: Args) -> Result<()> {
    let segmenter = plantain_vision::Segmenter::open_installed()?;
    let files = photo_files(&a.photos)?;
    println!("| photo | size | segmentation | {} | pixels changed outside the regions |", EDITS.join(" | "));
    println!("|---|---|---|{}---|", "---|".repeat(EDITS.len()));
    let mut rows = Vec::new();
    for f in &files {
        let img = crate::io::read_rgb(f)?;
        let (w, h) = img.dimensions();
        let s = a.long_side as f32 / w.max(h) as f32;
        let img =
            imageops::resize(&img, ((w as f32 * s).round() as u32).max(1), ((h as f32 * s).round() as u32).max(1), FilterType::Lanczos3);
        let t = Instant::now();
        SubjectFinder::subject(&segmenter, &img)?;
        let seg_ms = t.elapsed().as_secs_f64() * 1000.0;
        let mut times = Vec::new();
        let mut outside = 0;
        let mut row = vec![img.clone()];
        for text in EDITS {
            let t = Instant::now();
            let p = plan(text, std::slice::from_ref(&img), &EditOptions::default(), Some(&segmenter))
                .map_err(|e| anyhow::anyhow!("{text}: {e}"))?;
            let edited = p.finish(None)?;
            times.push(format!("{:.0} ms", t.elapsed().as_secs_f64() * 1000.0));
            outside += edited.report.outside_changed.unwrap_or(u64::MAX);
            row.push(edited.image);
        }
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        println!("| {name} | {}x{} | {seg_ms:.0} ms | {} | {outside} |", img.width(), img.height(), times.join(" | "));
        rows.push(row);
    }
    if let Some(path) = &a.sheet {
        sheet(&rows, THUMB).save(path).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("contact sheet: {}", path.display());
    }
    Ok(())
}

/// A contact sheet: one row per list, each picture scaled to `thumb` pixels high, side by side.
pub(crate) fn sheet(rows: &[Vec<RgbImage>], thumb: u32) -> RgbImage {
    let thumbs: Vec<Vec<RgbImage>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|im| {
                    let w = ((im.width() as f32 * thumb as f32 / im.height() as f32).round() as u32).max(1);
                    imageops::resize(im, w, thumb, FilterType::Triangle)
                })
                .collect()
        })
        .collect();
    let width = thumbs.iter().map(|r| r.iter().map(|t| t.width() + 4).sum::<u32>()).max().unwrap_or(1);
    let mut out = RgbImage::from_pixel(width, (thumb + 4) * thumbs.len() as u32, image::Rgb([255, 255, 255]));
    for (i, row) in thumbs.iter().enumerate() {
        let mut x = 0;
        for t in row {
            imageops::replace(&mut out, t, i64::from(x), i64::from(i as u32 * (thumb + 4)));
            x += t.width() + 4;
        }
    }
    out
}

/// The photographs (PNG, JPEG) in `dir`, sorted by name; none is an error naming the set-up.
pub fn photo_files(dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{} (run `bash scripts/setup.sh`)", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "png" || x == "jpg"))
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no photographs in {}", dir.display());
    Ok(files)
}
