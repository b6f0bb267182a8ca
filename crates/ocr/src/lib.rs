//! plantain's text reading: what a picture says, and whether it says what it should.
//!
//! - [`PpOcr`]: PP-OCRv4 on ONNX Runtime (text detection, direction classification,
//!   recognition), for Chinese and Latin text, digits and punctuation; lines with boxes.
//! - [`Tesseract`]: the `tesseract` program, for Cyrillic, Greek, Arabic, Hebrew, Devanagari,
//!   Thai, Japanese and Korean (given its language packs).
//! - [`Script`], [`Reader`], [`verify`]: which reader checks a text, and the check.
//!
//! `scripts/setup-ocr.sh` installs the models and Tesseract.

mod detect;
mod error;
mod geometry;
mod imaging;
mod line;
mod model;
mod ppocr;
mod recognize;
mod script;
mod tesseract;

pub use error::OcrError;
pub use line::{CharSpan, SpannedText, TextLine};
pub use ppocr::{CLASSIFIER_FILE, DETECTOR_FILE, FoundLine, MAX_LINE_WIDTH, PpOcr, PpOcrOptions, RECOGNIZER_FILE};
pub use script::{Reader, Script, Verdict, normalize, verify};
pub use tesseract::{PageSegmentation, Tesseract};
