//! Editing what was asked, and only that.
//!
//! ```text
//! words ──read──▶ Instruction ──plan (regions)──▶ EditPlan ──[paint by a model]──▶ finish ──▶ Edited
//! ```
//! [`plan`] reads the instruction ([`words`]), finds its region ([`regions`]; a quoted text by
//! OCR, [`retext`]) and either does the work at once (light, colour, recolour, background
//! recolour, blur, removal from a known background, fusion, rewriting a text: exact image
//! maths) or says what a model must repaint
//! ([`PaintRequest`]: an image, a mask, a prompt). [`EditPlan::finish`] pastes the result back:
//! outside the plan's `alpha` (the region and its feather band) every pixel is the input's own
//! byte, which [`Edited::outside_changed`] counts (always 0; a test, not a hope).

pub mod adjust;
mod fuse;
pub mod named;
mod plan;
mod quoted;
pub mod regions;
pub mod retext;
pub mod words;

pub use named::{ModelFinder, painter_for};
pub use plan::{EditOptions, EditPlan, Edited, EnlargeRequest, PaintRequest, Painter, PlanReport, Work, explain, plan, upscaled_size};
pub use regions::{Candidate, FoundBy, LazySegmenter, Picture, SubjectFinder};
pub use retext::{Placing, TextEdit, TextTools, draw_text, installed_tools, replace_text};
pub use words::{Instruction, Operation, SUPPORTED, WordsError};

/// Why an edit cannot be made. `NotFound`, `Ambiguous` and `Words` are answers for the user
/// (Gemini: a text part and no image); the rest are request or set-up errors.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error(transparent)]
    Words(#[from] WordsError),
    /// The instruction names something the picture does not show.
    #[error("{0}")]
    NotFound(String),
    /// The instruction matches several things.
    #[error("{0}")]
    Ambiguous(String),
    /// The edit needs images or settings the request did not give.
    #[error("{0}")]
    Invalid(String),
    /// A photograph needs the segmentation model, which is not installed.
    #[error("finding regions in a photograph needs the ISNet segmentation model, which is not installed (run `bash scripts/setup.sh`)")]
    NoSegmenter,
    /// Editing a picture's text needs the OCR models (or Tesseract for its script).
    #[error("{0} (run `bash scripts/setup.sh`)")]
    NoReader(String),
    #[error("finding regions failed: {0}")]
    Region(String),
    /// The operation needs a model that paints, and none was given.
    #[error("{0}")]
    NeedsPainter(String),
    #[error(transparent)]
    Composite(#[from] plantain_imageio::composite::CompositeError),
}

impl EditError {
    /// The user's words could not be carried out on this picture (an answer, not a failure).
    pub fn is_answer(&self) -> bool {
        matches!(self, EditError::NotFound(_) | EditError::Ambiguous(_) | EditError::Words(_))
    }
}
