//! Contact sheet of ISNet subject masks: for every photo in a folder (default: `.assets/photos/`,
//! which `bash scripts/setup.sh` fills), one row of original | mask (component boxes in red) |
//! subject cut out over a checkerboard. Prints size, segmentation time, subject fraction and
//! components per photo.
//!
//!     cargo run --release -p plantain-vision --example subject_masks -- sheet.png [photos-dir]

use std::path::PathBuf;
use std::time::Instant;

use image::imageops::{self, FilterType};
use image::{GrayImage, Rgb, RgbImage};
use plantain_vision::{Segmenter, components};

/// Height of every panel in the sheet.
const ROW: u32 = 192;
const GAP: u32 = 6;
const BACKGROUND: Rgb<u8> = Rgb([32, 32, 32]);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let out = PathBuf::from(args.next().ok_or("usage: subject_masks OUT.png [PHOTOS-DIR]")?);
    let dir = match args.next() {
        Some(d) => PathBuf::from(d),
        None => find_photos().ok_or("no .assets/photos/ in the current directory's ancestors: run `bash scripts/setup.sh`")?,
    };
    let mut photos: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| ["png", "jpg", "jpeg", "webp"].contains(&x.to_string_lossy().to_lowercase().as_str())))
        .collect();
    photos.sort();
    if photos.is_empty() {
        return Err(format!("no photos in {}", dir.display()).into());
    }

    let started = Instant::now();
    let segmenter = Segmenter::open_installed()?;
    println!("model loaded in {} ms", started.elapsed().as_millis());
    // One warm-up run, so that the first photo's time is not the session's first-run cost.
    let warm = Instant::now();
    segmenter.subject(&RgbImage::new(64, 64))?;
    println!("warm-up run: {} ms", warm.elapsed().as_millis());

    let mut rows = Vec::new();
    for path in &photos {
        let photo = image::open(path)?.to_rgb8();
        let started = Instant::now();
        let mask = segmenter.subject(&photo)?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let regions = components(&mask, 128, 0.01);
        let fraction = mask.pixels().filter(|p| p[0] >= 128).count() as f64 / (mask.width() as f64 * mask.height() as f64);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        println!(
            "{name:24} {:>4}x{:<4} {ms:7.0} ms  subject {:5.1} %  components {}  (largest at {})",
            photo.width(),
            photo.height(),
            fraction * 100.0,
            regions.len(),
            regions.first().map_or("-".into(), |r| format!("{:?}", r.bbox)),
        );
        rows.push(row(&photo, &mask, &regions.iter().map(|r| r.bbox).collect::<Vec<_>>()));
    }
    let sheet = stack(&rows);
    sheet.save(&out)?;
    println!("wrote {} ({}x{}, {} bytes)", out.display(), sheet.width(), sheet.height(), std::fs::metadata(&out)?.len());
    Ok(())
}

fn find_photos() -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors().map(|a| a.join(".assets/photos")).find(|p| p.is_dir())
}

/// original | mask with the components' boxes | cut-out over a checkerboard, each ROW tall.
fn row(photo: &RgbImage, mask: &GrayImage, boxes: &[(u32, u32, u32, u32)]) -> RgbImage {
    let width = ((photo.width() as u64 * ROW as u64).div_ceil(photo.height() as u64) as u32).max(1);
    let small = imageops::resize(photo, width, ROW, FilterType::Triangle);
    let small_mask = imageops::resize(mask, width, ROW, FilterType::Triangle);
    let mut mask_panel = RgbImage::from_fn(width, ROW, |x, y| {
        let v = small_mask.get_pixel(x, y)[0];
        Rgb([v, v, v])
    });
    let (sx, sy) = (width as f32 / photo.width() as f32, ROW as f32 / photo.height() as f32);
    for &(x0, y0, x1, y1) in boxes {
        let scale = |v: u32, s: f32, max: u32| ((v as f32 * s) as u32).min(max - 1);
        outline(&mut mask_panel, (scale(x0, sx, width), scale(y0, sy, ROW), scale(x1, sx, width), scale(y1, sy, ROW)));
    }
    let cutout = RgbImage::from_fn(width, ROW, |x, y| {
        let alpha = small_mask.get_pixel(x, y)[0] as u32;
        let check = if (x / 12 + y / 12) % 2 == 0 { 200 } else { 150 };
        let p = small.get_pixel(x, y);
        Rgb(std::array::from_fn(|c| ((p[c] as u32 * alpha + check * (255 - alpha) + 127) / 255) as u8))
    });
    let mut out = RgbImage::from_pixel(3 * width + 2 * GAP, ROW, BACKGROUND);
    for (i, panel) in [&small, &mask_panel, &cutout].into_iter().enumerate() {
        imageops::replace(&mut out, panel, i as i64 * (width + GAP) as i64, 0);
    }
    out
}

fn outline(image: &mut RgbImage, (x0, y0, x1, y1): (u32, u32, u32, u32)) {
    let red = Rgb([230, 40, 40]);
    for x in x0..=x1 {
        image.put_pixel(x, y0, red);
        image.put_pixel(x, y1, red);
    }
    for y in y0..=y1 {
        image.put_pixel(x0, y, red);
        image.put_pixel(x1, y, red);
    }
}

/// The rows one under another, left-aligned, with a GAP border.
fn stack(rows: &[RgbImage]) -> RgbImage {
    let width = rows.iter().map(|r| r.width()).max().unwrap_or(0) + 2 * GAP;
    let height = rows.iter().map(|r| r.height() + GAP).sum::<u32>() + GAP;
    let mut sheet = RgbImage::from_pixel(width, height, BACKGROUND);
    let mut y = GAP;
    for r in rows {
        imageops::replace(&mut sheet, r, GAP as i64, y as i64);
        y += r.height() + GAP;
    }
    sheet
}
