//! How often PP-OCRv4 reads rendered Latin text exactly, with this crate's defaults and with
//! RapidOCR 1.4.4's settings ([`PpOcrOptions::rapidocr`]): 120 single-line pictures (10 texts,
//! 6 sizes from 12 to 64 px, tight and loose frames), `recognize_line` on the same 120, and
//! every line of 6 pages (16–36 px text, 1.25 line spacing). Two sets of 10 texts: the one the
//! defaults were chosen on, and one held out. Needs `bash scripts/setup-ocr.sh`.
//!
//! ```sh
//! cargo run --release -p plantain-ocr --example rendered_accuracy
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use image::{Rgb, RgbImage};
use plantain_ocr::{OcrError, PpOcr, PpOcrOptions};

/// The texts the defaults (margin, detector size, two-way direction check) were chosen on.
const TUNED: [&str; 10] = [
    "plantain 2026",
    "HELLO WORLD",
    "0123456789",
    "Price: $12.50",
    "open models",
    "The quick brown fox",
    "Edit 42 images",
    "Sunday, May 3",
    "image.png",
    "ABC-123",
];

/// Texts not looked at while choosing the defaults.
const HELD_OUT: [&str; 10] = [
    "Quarterly report 2025",
    "Open Source Software",
    "Meeting at 10:45 AM",
    "www.example.org",
    "Total: 1,234.56 EUR",
    "Keep calm and carry on",
    "Route 66",
    "Error 404 not found",
    "JPEG or PNG?",
    "Alpha Beta Gamma",
];

fn main() -> Result<(), OcrError> {
    for (set, texts) in [("tuned on", &TUNED), ("held out", &HELD_OUT)] {
        for (name, options) in [("defaults", PpOcrOptions::default()), ("RapidOCR settings", PpOcrOptions::rapidocr())] {
            let ppocr = PpOcr::open_installed()?.with_options(options);
            println!("texts {set}, {name}:");
            println!("  single lines, read: {}", single_lines(&ppocr, texts, false)?);
            println!("  single lines, recognize_line: {}", single_lines(&ppocr, texts, true)?);
            println!("  page lines: {}", pages(&ppocr, texts)?);
        }
    }
    Ok(())
}

/// Exact readings, and readings right but for spaces, of each text at each size and frame.
fn single_lines(ppocr: &PpOcr, texts: &[&str; 10], recognize_only: bool) -> Result<String, OcrError> {
    let (mut exact, mut spaces, mut total) = (0, 0, 0);
    for px in [12.0, 16.0, 20.0, 28.0, 40.0, 64.0] {
        for pad in [6, 40] {
            for &text in texts {
                let image = common::line(text, px, pad);
                let read = if recognize_only { ppocr.recognize_line(&image)?.0 } else { joined(ppocr, &image)? };
                total += 1;
                exact += usize::from(read == text);
                spaces += usize::from(read != text && read.replace(' ', "") == text.replace(' ', ""));
            }
        }
    }
    Ok(format!("{exact}/{total} exact, {spaces} more right but for spaces"))
}

fn joined(ppocr: &PpOcr, image: &RgbImage) -> Result<String, OcrError> {
    Ok(ppocr.read(image)?.into_iter().map(|l| l.text).collect::<Vec<_>>().join(" "))
}

/// Lines of six pages read exactly (found among the lines read).
fn pages(ppocr: &PpOcr, texts: &[&str; 10]) -> Result<String, OcrError> {
    let (mut exact, mut total) = (0, 0);
    for (side, px) in [(1024, 16.0), (1024, 24.0), (1024, 36.0), (512, 16.0), (512, 24.0), (768, 20.0)] {
        let (image, lines) = page(texts, side, px);
        let read: Vec<String> = ppocr.read(&image)?.into_iter().map(|l| l.text).collect();
        total += lines.len();
        exact += lines.iter().filter(|l| read.contains(l)).count();
    }
    Ok(format!("{exact}/{total} exact"))
}

/// A square page of lines made of the texts, `1.25 px` apart, and the lines.
fn page(texts: &[&str; 10], side: u32, px: f32) -> (RgbImage, Vec<String>) {
    let mut image = RgbImage::from_pixel(side, side, Rgb([255, 255, 255]));
    let count = ((side as f32 - 40.0) / (1.25 * px)) as usize - 1;
    let lines: Vec<String> = (0..count).map(|i| fill_line(texts, i * 3, side as f32 - 50.0, px)).collect();
    for (i, line) in lines.iter().enumerate() {
        common::draw_text(&mut image, line, px, (20.0, 20.0 + px + i as f32 * 1.25 * px), Rgb([0, 0, 0]));
    }
    (image, lines)
}

/// Texts from `start` on, as many as fit in `width`.
fn fill_line(texts: &[&str; 10], start: usize, width: f32, px: f32) -> String {
    let mut line = texts[start % 10].to_string();
    for text in texts.iter().cycle().skip(start % 10 + 1).take(9) {
        let longer = format!("{line} {text}");
        if common::text_width(&longer, px) >= width {
            break;
        }
        line = longer;
    }
    line
}
