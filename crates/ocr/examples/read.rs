//! Reads pictures with PP-OCRv4 (and Tesseract, with `--tesseract LANG`) and prints each line
//! with its box and confidence.
//!
//! ```sh
//! cargo run --release -p plantain-ocr --example read -- picture.png [--tesseract eng]
//! ```

use std::time::Instant;

use plantain_ocr::{PageSegmentation, PpOcr, Tesseract};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tesseract = args.iter().position(|a| a == "--tesseract").and_then(|i| args.get(i + 1)).cloned();
    let paths: Vec<&String> = args.iter().filter(|a| !a.starts_with("--") && Some(*a) != tesseract.as_ref()).collect();
    let ppocr = PpOcr::open_installed()?;
    for path in paths {
        let image = image::open(path)?.to_rgb8();
        let started = Instant::now();
        let lines = ppocr.read(&image)?;
        println!("{path}: {}×{}, PP-OCR {:.0} ms", image.width(), image.height(), started.elapsed().as_secs_f64() * 1e3);
        for line in &lines {
            println!("  {:?} {:?} {:.3}", line.text, line.bbox, line.confidence);
        }
        if let Some(language) = &tesseract {
            let started = Instant::now();
            let lines = Tesseract::read_lines(&image, language, PageSegmentation::Auto)?;
            println!("  Tesseract {language}: {:.0} ms", started.elapsed().as_secs_f64() * 1e3);
            for line in &lines {
                println!("  {:?} {:?} {:.3}", line.text, line.bbox, line.confidence);
            }
        }
    }
    Ok(())
}
