//! What can go wrong when reading text.

use std::path::PathBuf;

/// The hint every "not installed" error ends with.
pub(crate) const SETUP_HINT: &str = "run `bash scripts/setup-ocr.sh` to install it";

/// What can go wrong when reading text.
#[derive(Debug, thiserror::Error)]
pub enum OcrError {
    /// A file that `scripts/setup-ocr.sh` (a PP-OCR model) or `scripts/setup.sh` (the ONNX
    /// Runtime library; it also runs `setup-ocr.sh`) installs is missing.
    #[error("{0}; {SETUP_HINT} (or `bash scripts/setup.sh`, which also installs ONNX Runtime)")]
    NotInstalled(String),
    /// ONNX Runtime failed to load a model or to run it.
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    /// The file loads but is not the network this crate expects.
    #[error("{path}: not a PP-OCR {role} model: {reason}")]
    BadModel { path: PathBuf, role: &'static str, reason: String },
    /// The image has no pixels.
    #[error("the image is empty ({width}×{height})")]
    EmptyImage { width: u32, height: u32 },
    /// The `tesseract` program is not installed (or not on `PATH`).
    #[error("the `tesseract` program was not found on PATH ({0}); {SETUP_HINT} (Debian package tesseract-ocr)")]
    TesseractMissing(String),
    /// Tesseract is installed but lacks a language pack.
    #[error(
        "Tesseract has no `{language}` language pack (installed: {}); {SETUP_HINT} (Debian package tesseract-ocr-{})",
        installed.join(", "),
        language.replace('_', "-")
    )]
    LanguageMissing { language: String, installed: Vec<String> },
    /// Tesseract ran and failed, or its output could not be read.
    #[error("tesseract: {0}")]
    Tesseract(String),
    /// The text has letters of a script no reader here handles.
    #[error("no reader for the text {0:?}: its letters are not in any script this crate reads")]
    UnsupportedScript(String),
}

impl OcrError {
    /// `ort` errors, with what was being done.
    pub(crate) fn runtime(context: &str) -> impl FnOnce(ort::Error) -> OcrError + '_ {
        move |e| OcrError::Runtime(format!("{context}: {e}"))
    }
}
