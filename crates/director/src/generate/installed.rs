//! The check models a front end has installed, each loaded on first use and kept: BRISQUE
//! (`scripts/setup-quality.sh`), the system's fonts (`scripts/setup-fonts.sh`), PP-OCRv4 +
//! Tesseract (`scripts/setup-ocr.sh`) and, when the user names one, a CLIP model folder (a
//! local copy of `openai/clip-vit-large-patch14`). What is missing is logged once and its
//! check says "not checked" with the reason, never "passed".

use std::path::PathBuf;
use std::sync::OnceLock;

use image::RgbImage;
use plantain_engine::clip_score::ClipScorer;
use plantain_engine::runtime::RuntimeOptions;
use plantain_ocr::PpOcr;
use plantain_quality::Brisque;
use plantain_typeset::Typesetter;

use super::checks::{AdherenceScorer, Checkers, QualityScorer};
use super::plan::Plan;
use super::text::{Reading, TextReader, TextTools};

/// The installed models, loaded once per process on first use and shared by every
/// [`InstalledChecks`] and by the text edits (`edit::installed_tools`).
static QUALITY: OnceLock<Option<Brisque>> = OnceLock::new();
static TYPESETTER: OnceLock<Typesetter> = OnceLock::new();
static OCR: OnceLock<Result<PpOcr, String>> = OnceLock::new();

/// The check models: the installed ones (shared by the process) and the CLIP model this
/// instance was given, loaded on first use.
#[derive(Default)]
pub struct InstalledChecks {
    clip_dir: Option<PathBuf>,
    clip: OnceLock<Result<ClipScorer, String>>,
}

impl InstalledChecks {
    pub fn new() -> Self {
        Self::default()
    }

    /// With a CLIP model folder (transformers' `CLIPModel` layout) for the adherence check.
    pub fn with_clip(clip_dir: Option<PathBuf>) -> Self {
        InstalledChecks { clip_dir, ..Self::default() }
    }

    /// What the checks of `plan` use: fonts and OCR are loaded only when it quotes text.
    pub fn checkers(&self, plan: &Plan) -> Checkers<'_> {
        let mut c = Checkers::with_quality(self.quality().map(|q| q as &dyn QualityScorer));
        match self.load_clip() {
            Ok(clip) => c.adherence = clip.map(|s| s as &dyn AdherenceScorer),
            Err(why) => c.adherence_unavailable = Some(why),
        }
        if !plan.texts.is_empty() {
            c.text = TextTools { typesetter: Some(self.typesetter()), reader: self.reader().map(|r| r as &dyn TextReader) };
        }
        c
    }

    /// BRISQUE's LIVE model, if installed.
    pub fn quality(&self) -> Option<&'static Brisque> {
        QUALITY
            .get_or_init(|| {
                Brisque::open_installed()
                    .inspect_err(|e| tracing::warn!(error = %e, "no BRISQUE model: the quality check says \"not checked\""))
                    .ok()
            })
            .as_ref()
    }

    /// The typesetter over the system's fonts.
    pub fn typesetter(&self) -> &'static Typesetter {
        TYPESETTER.get_or_init(Typesetter::new)
    }

    /// The CLIP model named by [`InstalledChecks::with_clip`], if any and if it loads.
    pub fn clip(&self) -> Option<&ClipScorer> {
        self.load_clip().ok().flatten()
    }

    /// The CLIP model named by [`InstalledChecks::with_clip`] (None when none is named), or why
    /// it did not load.
    pub fn load_clip(&self) -> Result<Option<&ClipScorer>, String> {
        let Some(dir) = self.clip_dir.as_ref() else { return Ok(None) };
        let loaded = self.clip.get_or_init(|| {
            ClipScorer::open(dir, &RuntimeOptions::default()).map_err(|e| {
                tracing::warn!(error = %e, dir = %dir.display(), "the CLIP model did not load: adherence is \"not checked\"");
                format!("the CLIP model in {} did not load: {e}", dir.display())
            })
        });
        loaded.as_ref().map(Some).map_err(Clone::clone)
    }

    /// PP-OCRv4 (and through it Tesseract), if installed.
    pub fn reader(&self) -> Option<&'static PpOcr> {
        self.load_reader().ok()
    }

    /// PP-OCRv4, or why it is not there.
    pub fn load_reader(&self) -> Result<&'static PpOcr, String> {
        let loaded = OCR.get_or_init(|| {
            PpOcr::open_installed().map_err(|e| {
                tracing::warn!(error = %e, "no OCR models: the text check says \"not checked\"");
                e.to_string()
            })
        });
        loaded.as_ref().map_err(Clone::clone)
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

/// CLIP's cosine of the picture and the text ([`plantain_engine::clip_score::ClipScorer`]).
impl AdherenceScorer for ClipScorer {
    fn cosine(&self, image: &RgbImage, text: &str) -> Result<f32, String> {
        self.score(image, text).map_err(|e| e.to_string())
    }
}
