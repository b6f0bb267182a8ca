//! Rewriting (or removing) a text the picture shows: "replace the text 'SALE' with 'SOLDES'".
//!
//! ```text
//! find (OCR: lines, then the word within its line) ─▶ remove (ground rebuilt, no model)
//!   ─▶ measure (size, weight, colour, angle, baseline of the old letters)
//!   ─▶ set (typeset upright, drawn turned into place) ─▶ read back (OCR on the new box)
//! ```
//! Every occurrence of the exact text is rewritten (users of such tools expect an exact
//! phrase replaced wherever it appears; quoting more of a line picks one). When no occurrence
//! matches exactly, case is ignored; when none does either, the answer is `NotFound` naming
//! what the picture reads. All of it is exact image maths: the region is the old boxes and
//! the new text's pixels, and every other byte is the input's.

mod fill;
mod find;
mod frame;
mod set;

use image::{GrayImage, RgbImage};
use plantain_imageio::composite;
use plantain_ocr::{PpOcr, Script, normalize};
use plantain_typeset::Typesetter;
use serde::Serialize;

use super::EditError;
use super::plan::{Builder, EditPlan};
use super::words::{Instruction, Operation};
pub use find::Match;
use frame::Frame;

/// What finding, reading back and setting text needs.
#[derive(Clone, Copy)]
pub struct TextTools<'a> {
    pub reader: &'a PpOcr,
    pub typesetter: &'a Typesetter,
}

/// The installed PP-OCR models (and through them Tesseract) and the system's fonts, loaded
/// once per process on first use (shared with the loop's checks).
pub fn installed_tools() -> Result<TextTools<'static>, EditError> {
    let installed = crate::generate::InstalledChecks::new();
    let reader = installed.load_reader().map_err(|e| EditError::NoReader(format!("editing a picture's text needs the OCR models: {e}")))?;
    Ok(TextTools { reader, typesetter: installed.typesetter() })
}

/// A text edit as done.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TextEdit {
    pub old: String,
    /// `None`: the text was removed.
    pub new: Option<String>,
    /// The reader that found the old text ("PP-OCRv4", "Tesseract (rus)").
    pub found_by: String,
    /// How loosely the old text matched what was read.
    pub matched: find::Match,
    pub occurrences: Vec<Occurrence>,
}

impl TextEdit {
    /// Every occurrence passed its read-back.
    pub fn passed(&self) -> bool {
        !self.occurrences.is_empty() && self.occurrences.iter().all(|o| o.read_back.passed)
    }
}

/// One place the text was rewritten.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Occurrence {
    /// The line it was read in.
    pub line: String,
    /// Its box (top-left, top-right, bottom-right, bottom-left), in picture pixels.
    pub quad: [[f32; 2]; 4],
    /// The text's direction, degrees clockwise from horizontal.
    pub angle_deg: f32,
    /// Pixels rebuilt where the old letters were.
    pub filled: u64,
    /// The ground model's terms (6 quadratic, 3 plane, 1 constant) and the ring's spread.
    pub ground_terms: usize,
    pub ground_sigma: f32,
    /// How the new text was set (None when the text was removed).
    pub set: Option<SetAs>,
    pub read_back: ReadBack,
}

/// How a new text was set.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SetAs {
    pub size_px: f32,
    pub bold: bool,
    pub colour: [u8; 3],
    /// The new ink's box in picture pixels (corners as [`Occurrence::quad`]).
    pub quad: [[f32; 2]; 4],
    /// How far it was moved along the text to stay inside the picture.
    pub moved_px: f32,
    /// Pixels of the new text outside the old box (the region grew by them).
    pub grew_px: u64,
    /// Its width as a share of its natural width: below 1 when it was condensed to fit
    /// between the neighbouring words of its line.
    pub squeeze: f32,
}

/// The check of one occurrence by OCR.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReadBack {
    /// What should be read: the new text, or nothing of the old one.
    pub expected: String,
    pub read: String,
    pub reader: String,
    /// Replacement: read exactly as `expected`; removal: the old text is no longer read.
    pub passed: bool,
}

impl ReadBack {
    pub fn describe(&self, removal: bool) -> String {
        match (removal, self.passed) {
            (false, true) => format!("read back exactly by {}", self.reader),
            (false, false) => format!("read back as \"{}\" by {}: a misreading, not a pass", self.read, self.reader),
            (true, true) => format!("{} no longer reads it (reads \"{}\")", self.reader, self.read),
            (true, false) => format!("{} still reads it (\"{}\"): not a pass", self.reader, self.read),
        }
    }
}

/// Where and how [`draw_text`] sets a text.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Placing {
    /// Where the middle of the text's ink goes, in picture pixels.
    pub centre: [f32; 2],
    /// Degrees clockwise from horizontal.
    pub angle_deg: f32,
    pub size_px: f32,
    pub colour: [u8; 3],
    pub bold: bool,
}

/// Draws `text` as a text edit sets it (typeset upright by `ts`, drawn turned through its frame
/// in linear light), its ink centred at `at.centre`: for synthetic posters and tests. Returns
/// the picture and the ink's corners (top-left, top-right, bottom-right, bottom-left); pixels
/// away from the ink keep their bytes.
pub fn draw_text(ts: &Typesetter, image: &RgbImage, text: &str, at: Placing) -> Result<(RgbImage, [[f32; 2]; 4]), EditError> {
    if !(at.size_px.is_finite() && at.size_px > 0.0 && at.angle_deg.is_finite()) {
        return Err(EditError::Invalid(format!("bad size {} px or angle {}°", at.size_px, at.angle_deg)));
    }
    let rendered = set::render(ts, text, at.size_px, at.bold)?;
    let frame = Frame::turned(at.centre, at.angle_deg);
    let drawn = set::draw_centred(image, &frame, &rendered, at.size_px, image::Rgb(at.colour), at.bold);
    Ok((drawn.image, drawn.ink.corners()))
}

/// Plans "replace the text 'SALE' with 'SOLDES'" on `image` with explicit tools (for
/// evaluations and callers that hold their own models).
pub fn replace_text(image: &RgbImage, old: &str, new: Option<&str>, tools: TextTools<'_>) -> Result<EditPlan, EditError> {
    let (text, operation) = match new {
        Some(n) => (format!("replace the text \"{old}\" with \"{n}\""), Operation::ReplaceText { old: old.into(), new: n.into() }),
        None => (format!("remove the text \"{old}\""), Operation::RemoveText { old: old.into() }),
    };
    plan_text(Instruction { operation, keep: vec![], text }, image, tools)
}

/// The plan for a [`Operation::ReplaceText`] or [`Operation::RemoveText`] instruction.
pub(super) fn plan_text(instruction: Instruction, image: &RgbImage, tools: TextTools<'_>) -> Result<EditPlan, EditError> {
    let (old, new) = match &instruction.operation {
        Operation::ReplaceText { old, new } => (old.clone(), Some(new.clone())),
        Operation::RemoveText { old } => (old.clone(), None),
        other => return Err(EditError::Invalid(format!("not a text edit: {}", other.name()))),
    };
    if new.as_deref().is_some_and(|n| n.trim().is_empty()) {
        return Err(EditError::Invalid("the new text is empty; to take the text out say \"remove the text '…'\"".into()));
    }
    if image.width() == 0 || image.height() == 0 {
        return Err(EditError::Invalid("the picture is empty".into()));
    }
    let search = find::find(image, &old, tools.reader)?;
    if search.hits.is_empty() {
        return Err(EditError::NotFound(not_found(&old, &search)));
    }
    let mut current = image.clone();
    let mut region = GrayImage::new(image.width(), image.height());
    let mut occurrences = Vec::new();
    for hit in &search.hits {
        let (next, changed, occurrence) = rewrite(&current, hit, &old, new.as_deref(), tools)?;
        current = next;
        region = composite::union(&region, &changed);
        occurrences.push(occurrence);
    }
    let edit = TextEdit { old, new, found_by: search.reader.to_string(), matched: search.matched, occurrences };
    let mut b = Builder::new(instruction, image.clone());
    b.notes = notes(&edit, image.dimensions());
    b.target = Some(target(&edit));
    b.exact(current, &region, METHOD);
    let mut plan = b.build();
    plan.text = Some(edit);
    Ok(plan)
}

const METHOD: &str = "the old letters taken out and the ground behind them rebuilt (a robust quadratic fit of the ring around each box, \
the letters filled by harmonic inpainting), the new text typeset by plantain-typeset at the old size, weight, colour and angle, \
then read back by OCR (exact image maths, no model)";

/// One occurrence rewritten on `image`: the picture after, the pixels it may change, and what was done.
fn rewrite(
    image: &RgbImage,
    hit: &find::Hit,
    old: &str,
    new: Option<&str>,
    tools: TextTools<'_>,
) -> Result<(RgbImage, GrayImage, Occurrence), EditError> {
    let tight = Frame::of_quad(&hit.quad);
    // Detectors' boxes can be tight to the ink (or cut into it): the letters are looked for in
    // a margin around the box too.
    let grow = (0.25 * tight.height).max(2.0);
    let frame = tight.sub_box(-grow, -grow, tight.width + grow, tight.height + grow);
    let (w, h) = image.dimensions();
    let removal = fill::remove_letters(image, &tight, &frame);
    let old_box = composite::dilate(&frame.mask(w, h), 1.0);
    let mut occurrence = Occurrence {
        line: hit.line.clone(),
        quad: hit.quad,
        angle_deg: frame.angle_deg(),
        filled: removal.filled,
        ground_terms: removal.terms,
        ground_sigma: removal.sigma,
        set: None,
        read_back: ReadBack { expected: String::new(), read: String::new(), reader: String::new(), passed: false },
    };
    let Some(new) = new else {
        occurrence.read_back = read_back(&removal.plate, &frame, old, true, tools.reader)?;
        return Ok((removal.plate, old_box, occurrence));
    };
    let mut style = set::measure(image, &removal.plate, &frame, old, tools.typesetter)?;
    style.room = hit.room.map(|(a, b)| (a + grow, b + grow));
    let rendered = set::render(tools.typesetter, new, style.size_px, style.bold)?;
    let drawn = set::draw(&removal.plate, &frame, &style, &rendered);
    // The new box with a margin, kept clear of the neighbouring words.
    let margin = 0.35 * style.size_px;
    let u0 = frame.coords(drawn.ink.point(0.0, 0.0)).0;
    let (room0, room1) = style.room.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    let (left, right) = (margin.min(u0 - room0).max(0.0), margin.min(room1 - u0 - drawn.ink.width).max(0.0));
    let check = drawn.ink.sub_box(-left, -margin, drawn.ink.width + right, drawn.ink.height + margin);
    occurrence.read_back = read_back(&drawn.image, &check, new, false, tools.reader)?;
    occurrence.set = Some(SetAs {
        size_px: style.size_px,
        bold: style.bold,
        colour: style.colour.0,
        quad: drawn.ink.corners(),
        moved_px: drawn.moved,
        squeeze: drawn.squeeze,
        grew_px: composite::area(&composite::subtract(&drawn.mask, &old_box)),
    });
    Ok((drawn.image, composite::union(&old_box, &drawn.mask), occurrence))
}

/// A read-back that fails on a box lower than this is tried again on it enlarged to this height.
const READ_BACK_HEIGHT: u32 = 128;

/// Reads the box upright: the new text must be read exactly; a removed text must not be read.
fn read_back(image: &RgbImage, frame: &Frame, text: &str, removal: bool, ocr: &PpOcr) -> Result<ReadBack, EditError> {
    let crop = frame.straighten(image);
    let mut verdict = plantain_ocr::verify(ocr, &crop, text).map_err(find::ocr_error)?;
    if !removal && !verdict.matches && crop.height() < READ_BACK_HEIGHT {
        // Readers drop small accents: the same pixels, enlarged, are read once more.
        let scale = READ_BACK_HEIGHT as f32 / crop.height() as f32;
        let w = (crop.width() as f32 * scale).round() as u32;
        let big = image::imageops::resize(&crop, w.max(1), READ_BACK_HEIGHT, image::imageops::FilterType::CatmullRom);
        let again = plantain_ocr::verify(ocr, &big, text).map_err(find::ocr_error)?;
        if again.matches {
            verdict = again;
        }
    }
    let unspaced = Script::of(text).is_some_and(Script::unspaced);
    let passed = if removal { !verdict.read.contains(&normalize(text, unspaced)) } else { verdict.matches };
    Ok(ReadBack {
        expected: if removal { String::new() } else { text.into() },
        read: verdict.read,
        reader: verdict.reader.to_string(),
        passed,
    })
}

fn not_found(old: &str, search: &find::Search) -> String {
    if search.read.is_empty() {
        return format!("no text \"{old}\" in the picture: {} finds no text in it", search.reader);
    }
    let read: Vec<String> = search.read.iter().take(12).map(|l| format!("\"{l}\"")).collect();
    format!("no text \"{old}\" in the picture; {} reads: {}", search.reader, read.join(", "))
}

fn target(edit: &TextEdit) -> String {
    let n = edit.occurrences.len();
    let times = if n == 1 { "1 occurrence".to_string() } else { format!("{n} occurrences") };
    match &edit.new {
        Some(new) => format!("the text \"{}\" ({times}) → \"{new}\"", edit.old),
        None => format!("the text \"{}\" ({times}), removed", edit.old),
    }
}

fn notes(edit: &TextEdit, (w, h): (u32, u32)) -> Vec<String> {
    let mut notes = vec![format!("found by {}", edit.found_by)];
    match edit.matched {
        find::Match::Exact => {}
        find::Match::IgnoringCase => notes.push(format!("\"{}\" was found only with another case; the new text is set as typed", edit.old)),
        find::Match::IgnoringCaseAndAccents => notes.push(format!(
            "\"{}\" was found only ignoring case and accents (the reader drops accents); the new text is set as typed",
            edit.old
        )),
    }
    if edit.occurrences.len() > 1 {
        notes.push(format!(
            "every occurrence of the exact text is rewritten ({}); quote more of its line to rewrite one",
            edit.occurrences.len()
        ));
    }
    for (k, o) in edit.occurrences.iter().enumerate() {
        let at = o.quad[0].map(|v| v.round() as i64);
        let mut line = format!("#{} in \"{}\" at ({}, {}), turned {:.1}°", k + 1, o.line, at[0], at[1], o.angle_deg);
        if let Some(s) = &o.set {
            let [r, g, b] = s.colour;
            let weight = if s.bold { "bold" } else { "regular" };
            line += &format!(": set at {:.1} px {weight}, #{r:02x}{g:02x}{b:02x}", s.size_px);
            let reaches = s.quad.iter().any(|p| p[0] < 0.0 || p[1] < 0.0 || p[0] > w as f32 || p[1] > h as f32);
            if reaches {
                line += " (it reaches past the picture's edge)";
            }
            if s.grew_px > 0 {
                line += &format!(" (wider than the old box: the region grows by {} px)", s.grew_px);
            }
            if s.squeeze < 1.0 {
                line += &format!(" (condensed to {:.0}% of its width to fit between its neighbours)", 100.0 * s.squeeze);
            }
            if s.moved_px.abs() >= 0.5 {
                line += &format!(" (moved {:.0} px along the line to fit)", s.moved_px);
            }
        }
        line += &format!("; {}", o.read_back.describe(o.set.is_none()));
        notes.push(line);
    }
    notes
}
