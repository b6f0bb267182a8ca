//! The check models a front end has installed, each loaded on first use and kept: BRISQUE
//! (`scripts/setup-quality.sh`), the system's fonts (`scripts/setup-fonts.sh`) and PP-OCRv4 +
//! Tesseract (`scripts/setup-ocr.sh`). What is missing is logged once and its check says
//! "not checked" with the reason, never "passed".

use std::sync::OnceLock;

use image::RgbImage;
use plantain_ocr::PpOcr;
use plantain_quality::Brisque;
use plantain_typeset::Typesetter;

use super::checks::{Checkers, QualityScorer};
use super::plan::Plan;
use super::text::{Reading, TextReader, TextTools};

/// The installed check models, loaded lazily (`Send + Sync`: one per process is enough).
#[derive(Default)]
pub struct InstalledChecks {
    quality: OnceLock<Option<Brisque>>,
    typesetter: OnceLock<Typesetter>,
    ocr: OnceLock<Option<PpOcr>>,
}

impl InstalledChecks {
    pub fn new() -> Self {
        Self::default()
    }

    /// What the checks of `plan` use: fonts and OCR are loaded only when it quotes text.
    pub fn checkers(&self, plan: &Plan) -> Checkers<'_> {
        let mut c = Checkers::with_quality(self.quality().map(|q| q as &dyn QualityScorer));
        if !plan.texts.is_empty() {
            c.text = TextTools { typesetter: Some(self.typesetter()), reader: self.reader().map(|r| r as &dyn TextReader) };
        }
        c
    }

    /// BRISQUE's LIVE model, if installed.
    pub fn quality(&self) -> Option<&Brisque> {
        self.quality
            .get_or_init(|| {
                Brisque::open_installed()
                    .inspect_err(|e| tracing::warn!(error = %e, "no BRISQUE model: the quality check says \"not checked\""))
                    .ok()
            })
            .as_ref()
    }

    /// The typesetter over the system's fonts.
    pub fn typesetter(&self) -> &Typesetter {
        self.typesetter.get_or_init(Typesetter::new)
    }

    /// PP-OCRv4 (and through it Tesseract), if installed.
    pub fn reader(&self) -> Option<&PpOcr> {
        self.ocr
            .get_or_init(|| {
                PpOcr::open_installed()
                    .inspect_err(|e| tracing::warn!(error = %e, "no OCR models: the text check says \"not checked\""))
                    .ok()
            })
            .as_ref()
    }
}

impl QualityScorer for Brisque {
    fn score(&self, image: &RgbImage) -> Result<f32, String> {
        Brisque::score(self, image).map_err(|e| e.to_string())
    }
}

/// PP-OCRv4 for Latin and Chinese, Tesseract with the text's language packs for the other
/// scripts ([`plantain_ocr::verify`]); the comparison is after Unicode normalisation.
impl TextReader for PpOcr {
    fn verify(&self, crop: &RgbImage, expected: &str) -> Result<Reading, String> {
        let v = plantain_ocr::verify(self, crop, expected).map_err(|e| e.to_string())?;
        Ok(Reading { read: v.read, matches: v.matches, reader: v.reader.to_string() })
    }
}
