//! Which reader reads which script: renders sample lines in each script (DejaVu Sans, or Noto
//! where DejaVu has no glyphs), checks them with `verify`, reads them with PP-OCRv4 and with
//! Tesseract (as one block), and prints a Markdown table of what each read. Drawn glyph by glyph without shaping, so Arabic and
//! Devanagari (which need shaping) are left out. Needs `bash scripts/setup-ocr.sh` and Debian's
//! fonts-dejavu-core, fonts-noto-core and fonts-noto-cjk.
//!
//! ```sh
//! cargo run --release -p plantain-ocr --example scripts_table
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use ab_glyph::FontVec;
use plantain_ocr::{OcrError, PageSegmentation, PpOcr, Reader, Script, Tesseract, normalize, verify};

const NOTO_CJK: &str = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc";

/// Sample text, font file and face index (None: DejaVu Sans).
const SAMPLES: [(&str, Option<(&str, u32)>); 11] = [
    ("plantain 2026 HELLO WORLD", None),
    ("café crème, Grüße aus Köln", None),
    ("Съешь же ещё этих мягких булок", None),
    ("Καλημέρα κόσμε", None),
    ("שלום עולם", None),
    ("สวัสดีครับ", Some(("/usr/share/fonts/truetype/noto/NotoSansThai-Regular.ttf", 0))),
    ("开源图像生成与编辑系统", Some((NOTO_CJK, 2))),
    ("東京へ行きます", Some((NOTO_CJK, 0))),
    ("カタカナとひらがな", Some((NOTO_CJK, 0))),
    ("안녕하세요 세계", Some((NOTO_CJK, 1))),
    ("12:30 - 4.5% (x2)", None),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ppocr = PpOcr::open_installed()?;
    println!("| text | script | `verify` reader | match | PP-OCRv4 read | Tesseract read (pack) |");
    println!("|---|---|---|---|---|---|");
    for (text, face) in SAMPLES {
        let image = common::line_in(&load(face)?, &drawn(text), 40.0, 12);
        let verdict = verify(&ppocr, &image, text)?;
        let unspaced = Script::of(text).is_some_and(Script::unspaced);
        let mark = |read: &str| if normalize(read, unspaced) == normalize(text, unspaced) { "✓" } else { "✗" };
        let pp = ppocr.read(&image)?.into_iter().map(|l| l.text).collect::<Vec<_>>().join(" ");
        let language = tesseract_language(text)?;
        let tess = Tesseract::read_with(&image, &language, PageSegmentation::Block)?;
        let script = Script::of(text).map_or("none".to_string(), |s| format!("{s:?}"));
        let reader = match &verdict.reader {
            Reader::PpOcr => "PP-OCRv4".to_string(),
            Reader::Tesseract { language } => format!("Tesseract `{language}`"),
        };
        let matches = if verdict.matches { "✓" } else { "✗" };
        println!("| {text} | {script} | {reader} | {matches} | {} {pp} | {} {tess} (`{language}`) |", mark(&pp), mark(&tess));
    }
    Ok(())
}

fn load(face: Option<(&str, u32)>) -> Result<FontVec, Box<dyn std::error::Error>> {
    Ok(match face {
        Some((path, index)) => FontVec::try_from_vec_and_index(std::fs::read(path)?, index)?,
        None => FontVec::try_from_vec(std::fs::read(common::FONT)?)?,
    })
}

/// The text in drawing order: Hebrew reversed (drawn left to right, with no shaping engine).
fn drawn(text: &str) -> String {
    if text.chars().any(|c| ('\u{590}'..'\u{600}').contains(&c)) { text.chars().rev().collect() } else { text.into() }
}

/// The Tesseract pack for the text: `verify`'s, or `eng` / `chi_sim` where `verify` uses PP-OCR.
fn tesseract_language(text: &str) -> Result<String, OcrError> {
    Ok(match Reader::for_text(text)? {
        Reader::Tesseract { language } => language,
        Reader::PpOcr if Script::of(text) == Some(Script::Han) => "chi_sim".into(),
        Reader::PpOcr => "eng".into(),
    })
}
