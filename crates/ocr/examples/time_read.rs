//! Times PP-OCRv4 reading a 1024×1024 picture with five lines of text (DejaVu Sans, 48 px),
//! five times after one warm-up, and prints each time and the median; then the same for a blank
//! page (the detector alone); with this crate's defaults and with RapidOCR's settings; then
//! Tesseract `eng`. `--save PATH` also writes the picture.
//!
//! ```sh
//! cargo run --release -p plantain-ocr --example time_read [-- --save page.png]
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use plantain_ocr::{PpOcr, PpOcrOptions, Tesseract};

const LINES: [&str; 5] = ["plantain 2026", "HELLO WORLD", "Edit images with open models", "0123456789", "The quick brown fox jumps"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let image = common::page(1024, 1024, &LINES, 48.0, 60.0);
    if let Some(i) = args.iter().position(|a| a == "--save") {
        image.save(args.get(i + 1).ok_or("--save needs a path")?)?;
    }
    // A blank page of the same size: the detector alone (no line to recognise).
    let blank = image::RgbImage::from_pixel(1024, 1024, image::Rgb([255, 255, 255]));
    for (name, options) in [("defaults", PpOcrOptions::default()), ("RapidOCR settings", PpOcrOptions::rapidocr())] {
        let started = Instant::now();
        let ppocr = PpOcr::open_installed()?.with_options(options);
        println!("{name}: PP-OCR loaded in {:.0} ms", started.elapsed().as_secs_f64() * 1e3);
        for line in ppocr.read(&image)? {
            println!("  {:?} {:?} {:.3}", line.text, line.bbox, line.confidence);
        }
        println!("  read: {}", median_ms(|| ppocr.read(&image).map(drop))?);
        println!("  detector alone (blank page): {}", median_ms(|| ppocr.read(&blank).map(drop))?);
    }
    if Tesseract::available() {
        println!("Tesseract (eng) read: {}", median_ms(|| Tesseract::read(&image, "eng").map(drop))?);
    }
    Ok(())
}

/// Runs `f` five times and describes the times and their median in milliseconds.
fn median_ms<E>(mut f: impl FnMut() -> Result<(), E>) -> Result<String, E> {
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        f()?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let listed = times.iter().map(|t| format!("{t:.0}")).collect::<Vec<_>>().join(", ");
    times.sort_by(f64::total_cmp);
    Ok(format!("median {:.0} ms of 5 ({listed})", times[2]))
}
