//! The director's use of `verify`: each text set with `plantain-typeset` into four sample
//! photographs (`TextSpec::default()`, the text's language for CJK faces), cut out with the
//! director's margin (`h / 8`), checked with `verify`; prints a Markdown table. Needs
//! `bash scripts/setup.sh` (ONNX Runtime, the photos, the fonts) and `bash scripts/setup-ocr.sh`.
//!
//! ```sh
//! cargo run --release -p plantain-ocr --features typeset-example --example typeset_verify
//! ```

use std::path::PathBuf;
use std::time::Instant;

use image::RgbImage;
use plantain_ocr::{PpOcr, Reader, verify};
use plantain_typeset::{TextSpec, Typesetter};

/// Each text and its BCP 47 language where it picks a CJK face.
const TEXTS: [(&str, Option<&str>); 17] = [
    ("Fresh bread baked every morning in our own ovens since 1987", None),
    ("Свежий хлеб каждое утро из нашей собственной печи с 1987 года", None),
    ("每天早上新鲜出炉的面包，自一九八七年以来", Some("zh")),
    ("GRAND OPENING", None),
    ("plantain 2026", None),
    ("Café Müller", None),
    ("Свежий хлеб", None),
    ("Καλή όρεξη", None),
    ("مرحبا بالعالم", None),
    ("שלום עולם", None),
    ("नमस्ते दुनिया", None),
    ("สวัสดีครับ", None),
    ("欢迎光临", Some("zh")),
    ("新鮮なパン", Some("ja")),
    ("ラーメン屋", Some("ja")),
    ("맛있는 빵집", Some("ko")),
    ("Sale 50% off", None),
];
const PHOTOS: [&str; 4] = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ppocr = PpOcr::open_installed()?;
    let typesetter = Typesetter::new();
    let photos: Vec<RgbImage> = PHOTOS.iter().map(|p| photo(p)).collect::<Result<_, _>>()?;
    println!("| text | first reader | {} |", PHOTOS.join(" | "));
    println!("|---|---|{}", "---|".repeat(PHOTOS.len()));
    let (mut matched, mut total) = (0, 0);
    for (text, language) in TEXTS {
        let spec = TextSpec { language: language.map(str::to_string), ..TextSpec::default() };
        let mut cells = Vec::new();
        for image in &photos {
            let set = typesetter.set(image, text, &spec)?;
            let crop = crop(&set.image, set.bbox);
            let started = Instant::now();
            let verdict = verify(&ppocr, &crop, text)?;
            let ms = started.elapsed().as_millis();
            let mark = if verdict.matches { "✓".to_string() } else { format!("✗ {}", verdict.read) };
            cells.push(format!("{mark} ({ms} ms, {}×{}, {} lines)", crop.width(), crop.height(), set.lines.len()));
            (matched, total) = (matched + usize::from(verdict.matches), total + 1);
        }
        let reader = Reader::for_text(text).map_or_else(|e| e.to_string(), |r| r.to_string());
        println!("| {text} | {reader} | {} |", cells.join(" | "));
    }
    println!("\n{matched} of {total} matched");
    Ok(())
}

fn photo(name: &str) -> Result<RgbImage, Box<dyn std::error::Error>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.assets/photos").join(name);
    let image = image::open(&path).map_err(|e| format!("{}: {e}; run `bash scripts/setup.sh` for the sample photos", path.display()))?;
    Ok(image.to_rgb8())
}

/// The box (x, y, w, h) with the director's margin (an eighth of its height, at least 2),
/// clipped to the picture.
fn crop(image: &RgbImage, (x, y, w, h): (u32, u32, u32, u32)) -> RgbImage {
    let m = (h / 8).max(2);
    let (x0, y0) = (x.saturating_sub(m), y.saturating_sub(m));
    let (x1, y1) = ((x + w + m).min(image.width()), (y + h + m).min(image.height()));
    image::imageops::crop_imm(image, x0, y0, x1.saturating_sub(x0).max(1), y1.saturating_sub(y0).max(1)).to_image()
}
