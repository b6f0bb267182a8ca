//! Text in pictures: the model draws the scene without the quoted text; the text is typeset
//! into it (shaped, sized to fit, coloured for contrast, on a panel when nothing else reaches
//! WCAG 4.5: `plantain-typeset`) and read back by OCR. A reading that differs from the text is
//! set again differently (on one line, then in the middle band, then in the regular weight); if it still differs the
//! check fails with what was read — never a wrong spelling reported as passed.

use image::RgbImage;
use plantain_typeset::{Face, Placement, TextSpec, Typesetter};

use super::checks::{Check, CheckKind};
use super::plan::{Plan, QuotedText};

/// An OCR engine that reads back a line of text.
pub trait TextReader: Send + Sync {
    /// Reads `crop` (the text's box) and says whether it reads as `expected` (after Unicode
    /// normalisation), with what was read and which reader read it.
    fn verify(&self, crop: &RgbImage, expected: &str) -> Result<Reading, String>;
}

/// What a reader read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    pub read: String,
    pub matches: bool,
    /// "PP-OCRv4", "Tesseract (ara)".
    pub reader: String,
}

/// The typesetter and reader the text check uses.
#[derive(Clone, Copy, Default)]
pub struct TextTools<'a> {
    pub typesetter: Option<&'a Typesetter>,
    pub reader: Option<&'a dyn TextReader>,
}

/// Sets every quoted text of `plan` into `image`; the picture with the text, and the check.
/// None when the plan quotes no text.
pub fn set_texts(plan: &Plan, image: RgbImage, tools: &TextTools<'_>) -> (RgbImage, Option<Check>) {
    if plan.texts.is_empty() {
        return (image, None);
    }
    let Some(ts) = tools.typesetter else {
        let why = "the quoted text cannot be set: no fonts are installed (scripts/setup.sh installs the Noto fonts)";
        return (image, Some(Check::fail(CheckKind::Text, 0.0, why)));
    };
    let mut image = image;
    let mut lines = Vec::new();
    let mut right = 0usize;
    let (mut unread, mut unset) = (false, false);
    for t in &plan.texts {
        match set_text(ts, tools.reader, &image, t) {
            Ok(SetText { image: out, reading: Some(r), .. }) => {
                image = out;
                right += usize::from(r.matches);
                lines.push(if r.matches {
                    format!("\"{}\" read back exactly by {}", t.text, r.reader)
                } else {
                    format!("\"{}\" read back as \"{}\" by {}", t.text, r.read, r.reader)
                });
            }
            Ok(SetText { image: out, reading: None, .. }) => {
                image = out;
                unread = true;
                lines.push(format!("\"{}\" set; not read back (no OCR model is installed)", t.text));
            }
            Err(e) => {
                unset = true;
                lines.push(format!("\"{}\" not set: {e}", t.text));
            }
        }
    }
    let detail = lines.join("; ");
    let n = plan.texts.len();
    let check = if right == n {
        Check::pass(CheckKind::Text, detail)
    } else if unset || !unread {
        Check::fail(CheckKind::Text, right as f32 / n as f32, detail)
    } else {
        Check::not_checked(CheckKind::Text, detail)
    };
    (image, Some(check))
}

/// One quoted text set into a picture and read back.
#[derive(Clone, Debug)]
pub struct SetText {
    pub image: RgbImage,
    /// The last reading (the one that matched, if any); None without a reader.
    pub reading: Option<Reading>,
    /// Ways of setting tried (1 = the first one read right or there was no reader).
    pub tries: usize,
    /// The text's box as drawn: x, y, width, height.
    pub bbox: (u32, u32, u32, u32),
}

/// Sets one text, reading it back after each way of setting it until one reads right: as
/// planned, then on one line, then on one line in the middle band, then there in the regular
/// weight (bold strokes can close up small marks: û read as ü), then there in serif faces, bold
/// and regular (other letter forms: a reader that misreads a sans letter may read its serif),
/// then with em spaces between its words.
pub fn set_text(ts: &Typesetter, reader: Option<&dyn TextReader>, image: &RgbImage, t: &QuotedText) -> Result<SetText, String> {
    let planned = t.placement.as_deref().and_then(|p| p.parse::<Placement>().ok()).unwrap_or(Placement::Auto);
    let ways = [
        TextSpec { placement: planned, ..TextSpec::default() },
        TextSpec { placement: planned, max_lines: 1, ..TextSpec::default() },
        TextSpec { placement: Placement::Centre, max_lines: 1, ..TextSpec::default() },
        TextSpec { placement: Placement::Centre, max_lines: 1, bold: false, ..TextSpec::default() },
        TextSpec { placement: Placement::Centre, max_lines: 1, face: Face::Serif, ..TextSpec::default() },
        TextSpec { placement: Placement::Centre, max_lines: 1, bold: false, face: Face::Serif, ..TextSpec::default() },
    ];
    // Last, for spaced text, wider word spaces (an em space): a reader may run two words
    // together across a narrow space (Korean "새 책" read as "새책").
    let wide = t.text.contains(' ').then(|| t.text.replace(' ', "\u{2003}"));
    let last_way = TextSpec { placement: Placement::Centre, max_lines: 1, ..TextSpec::default() };
    let ways = ways.iter().map(|w| (w, t.text.as_str())).chain(wide.as_deref().map(|w| (&last_way, w)));
    let mut last = None;
    for (i, (spec, text)) in ways.enumerate() {
        let set = match ts.set(image, text, spec) {
            Ok(set) => set,
            // A one-line way may not fit where two lines did: keep what was set before.
            Err(e) if last.is_some() => {
                tracing::debug!(error = %e, "a later way of setting the text did not fit");
                continue;
            }
            Err(e) => return Err(e.to_string()),
        };
        let Some(reader) = reader else {
            return Ok(SetText { image: set.image, reading: None, tries: 1, bbox: set.bbox });
        };
        let reading = reader.verify(&crop(&set.image, set.bbox), &t.text)?;
        let done = reading.matches;
        last = Some(SetText { image: set.image, reading: Some(reading), tries: i + 1, bbox: set.bbox });
        if done {
            break;
        }
    }
    last.ok_or_else(|| "no way of setting it was tried".into())
}

/// The box (x, y, w, h) with a small margin, clipped to the picture.
fn crop(image: &RgbImage, (x, y, w, h): (u32, u32, u32, u32)) -> RgbImage {
    let m = (h / 8).max(2);
    let (x0, y0) = (x.saturating_sub(m), y.saturating_sub(m));
    let x1 = (x + w + m).min(image.width());
    let y1 = (y + h + m).min(image.height());
    image::imageops::crop_imm(image, x0, y0, x1.saturating_sub(x0).max(1), y1.saturating_sub(y0).max(1)).to_image()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that reads what it is told to (to test the stage's logic without OCR).
    struct Says(&'static str);
    impl TextReader for Says {
        fn verify(&self, _: &RgbImage, expected: &str) -> Result<Reading, String> {
            Ok(Reading { read: self.0.into(), matches: self.0 == expected, reader: "stand-in".into() })
        }
    }

    fn fonts() -> Typesetter {
        let ts = Typesetter::new();
        assert!(ts.missing_families().is_empty() || !ts.missing_families().contains(&"Noto Sans"), "run scripts/setup.sh (fonts)");
        ts
    }

    #[test]
    fn text_is_set_and_a_wrong_reading_fails_the_check() {
        let ts = fonts();
        let plan = Plan::new("a poster with the text \"SALE\" at the top", None, 256, 192);
        let img = RgbImage::from_fn(256, 192, |x, y| image::Rgb([(x % 200) as u8, (y % 150) as u8, 90]));
        let (out, check) = set_texts(&plan, img.clone(), &TextTools { typesetter: Some(&ts), reader: Some(&Says("SALE")) });
        let check = check.unwrap();
        assert!(check.passed(), "{}", check.line());
        assert_ne!(out, img, "the text was drawn");
        let (_, check) = set_texts(&plan, img.clone(), &TextTools { typesetter: Some(&ts), reader: Some(&Says("SALF")) });
        let check = check.unwrap();
        assert!(check.failed() && check.detail.contains("\"SALF\""), "{}", check.line());
        let (_, check) = set_texts(&plan, img.clone(), &TextTools { typesetter: Some(&ts), reader: None });
        assert!(!check.unwrap().passed(), "without a reader the text is not reported as right");
        let (_, check) = set_texts(&plan, img, &TextTools::default());
        assert!(check.unwrap().failed(), "without fonts the text cannot be set");
    }
}
