//! Finding a quoted text in a picture: PP-OCRv4's detector finds the lines; each line is cut out
//! upright and read by the reader for the text's script, keeping where each character is
//! (PP-OCR: the recogniser's CTC time steps mapped back to the line's pixels; Tesseract: its
//! word boxes, the characters spread evenly over each word). Where the text is part of a
//! longer line, the cut between its characters and their neighbours is snapped to the nearest
//! column without ink, so the box holds the word's letters and none of its neighbours'.

use image::RgbImage;
use plantain_ocr::{PageSegmentation, PpOcr, Reader, Script, Tesseract, normalize};

use super::frame::{Frame, Point};
use crate::edit::EditError;

/// One place the text was found.
#[derive(Clone, Debug)]
pub(super) struct Hit {
    /// Its box (top-left, top-right, bottom-right, bottom-left), with a margin of ground.
    pub quad: [Point; 4],
    /// The line it was read in.
    pub line: String,
    /// Within a longer line: the span along the box's frame a new text may take without
    /// coming closer to the neighbouring words than the old text was.
    pub room: Option<(f32, f32)>,
}

/// What a search found, and what the picture reads.
#[derive(Clone, Debug)]
pub(super) struct Search {
    pub hits: Vec<Hit>,
    /// Every line read, in reading order.
    pub read: Vec<String>,
    pub reader: Reader,
    /// How loosely it matched.
    pub matched: Match,
}

/// How a text was matched: readers drop accents (Tesseract reads "Müller" as "Muller" about
/// half the time), so an exact match is looked for first, then one ignoring case, then one
/// ignoring accents as well.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Match {
    Exact,
    IgnoringCase,
    IgnoringCaseAndAccents,
}

/// A character read and where along its line: `x0..x1` in the upright line's pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Glyph {
    c: char,
    x0: f32,
    x1: f32,
}

/// A line found and read.
struct Line {
    frame: Frame,
    crop: RgbImage,
    glyphs: Vec<Glyph>,
}

pub(super) fn ocr_error(e: plantain_ocr::OcrError) -> EditError {
    EditError::NoReader(format!("reading the picture's text failed: {e}"))
}

/// Every place the picture shows `old`: exact matches (after Unicode normalisation, spacing
/// ignored, at word boundaries unless the script is written without spaces), else matches
/// ignoring case.
pub(super) fn find(image: &RgbImage, old: &str, ocr: &PpOcr) -> Result<Search, EditError> {
    let reader = Reader::for_text(old).map_err(|e| EditError::Invalid(e.to_string()))?;
    let unspaced = Script::of(old).is_some_and(Script::unspaced);
    let want: Vec<char> = normalize(old, unspaced).chars().filter(|c| !c.is_whitespace()).collect();
    if want.is_empty() {
        return Err(EditError::Invalid("the text to find is empty".into()));
    }
    let mut lines = Vec::new();
    for found in ocr.find_lines(image).map_err(ocr_error)? {
        let box_frame = Frame::of_quad(&found.line.quad);
        // Vertical lines (turned a quarter) are not handled.
        if box_frame.width < 2.0 || box_frame.height < 2.0 || box_frame.height > 1.5 * box_frame.width {
            continue;
        }
        // The detector's box can be tight to the letters' bodies: a margin keeps accents,
        // cedillas and tildes in the reader's view.
        let m = LINE_MARGIN * box_frame.height;
        let frame = box_frame.sub_box(-m, -m, box_frame.width + m, box_frame.height + m);
        let crop = frame.straighten(image);
        let glyphs = read_glyphs(&crop, &reader, ocr)?;
        lines.push(Line { frame, crop, glyphs });
    }
    let read: Vec<String> = lines.iter().map(|l| l.text().trim().to_string()).filter(|t| !t.is_empty()).collect();
    for matched in [Match::Exact, Match::IgnoringCase, Match::IgnoringCaseAndAccents] {
        let hits: Vec<Hit> = lines.iter().flat_map(|l| l.hits(&want, matched, unspaced)).collect();
        if !hits.is_empty() {
            return Ok(Search { hits, read, reader, matched });
        }
    }
    Ok(Search { hits: vec![], read, reader, matched: Match::Exact })
}

/// The characters of an upright line and where they are.
fn read_glyphs(crop: &RgbImage, reader: &Reader, ocr: &PpOcr) -> Result<Vec<Glyph>, EditError> {
    match reader {
        Reader::PpOcr => {
            let spans = ocr.recognize_spans(crop).map_err(ocr_error)?;
            Ok(spans.chars.iter().flat_map(|s| s.text.chars().map(|c| Glyph { c, x0: s.x0, x1: s.x1 })).collect())
        }
        Reader::Tesseract { language } => tesseract_glyphs(crop, language),
    }
}

/// The margin added around each line the detector finds, as a share of its height.
const LINE_MARGIN: f32 = 0.2;

/// Tesseract reads small text poorly: lines are enlarged to at least this height.
const TESSERACT_HEIGHT: u32 = 64;

/// Tesseract's words of the line (read as one line), their characters spread over each word's
/// box, a space between words spanning the gap.
fn tesseract_glyphs(crop: &RgbImage, language: &str) -> Result<Vec<Glyph>, EditError> {
    let scale = (TESSERACT_HEIGHT as f32 / crop.height() as f32).max(1.0);
    let (w, h) = ((crop.width() as f32 * scale).round() as u32, (crop.height() as f32 * scale).round() as u32);
    let big = image::imageops::resize(crop, w.max(1), h.max(1), image::imageops::FilterType::CatmullRom);
    let margin = (h / 4).max(4);
    let mut framed = RgbImage::from_pixel(w + 2 * margin, h + 2 * margin, edge_colour(crop));
    image::imageops::replace(&mut framed, &big, i64::from(margin), i64::from(margin));
    let words = Tesseract::read_words(&framed, language, PageSegmentation::Line).map_err(|e| match e {
        plantain_ocr::OcrError::TesseractMissing(_) | plantain_ocr::OcrError::LanguageMissing { .. } => {
            EditError::NoReader(format!("reading this script needs Tesseract: {e}"))
        }
        e => ocr_error(e),
    })?;
    let back = |x: u32| ((x as f32 - margin as f32) / scale).clamp(0.0, crop.width() as f32);
    let mut glyphs: Vec<Glyph> = Vec::new();
    for word in words {
        let (x0, x1) = (back(word.bbox.0), back(word.bbox.2));
        if let Some(last) = glyphs.last().copied() {
            glyphs.push(Glyph { c: ' ', x0: last.x1, x1: x0.max(last.x1) });
        }
        let chars: Vec<char> = word.text.chars().collect();
        let step = (x1 - x0) / chars.len().max(1) as f32;
        glyphs.extend(chars.iter().enumerate().map(|(i, &c)| Glyph { c, x0: x0 + step * i as f32, x1: x0 + step * (i + 1) as f32 }));
    }
    Ok(glyphs)
}

/// The per-channel median of the picture's border pixels.
fn edge_colour(image: &RgbImage) -> image::Rgb<u8> {
    let (w, h) = image.dimensions();
    let mut edge: Vec<[u8; 3]> =
        image.enumerate_pixels().filter(|&(x, y, _)| x == 0 || y == 0 || x + 1 == w || y + 1 == h).map(|(_, _, p)| p.0).collect();
    image::Rgb(std::array::from_fn(|c| {
        edge.sort_unstable_by_key(|p| p[c]);
        edge.get(edge.len() / 2).map_or(255, |p| p[c])
    }))
}

impl Line {
    fn text(&self) -> String {
        self.glyphs.iter().map(|g| g.c).collect()
    }

    /// Each match of `want` (no whitespace) in this line, as a box.
    fn hits(&self, want: &[char], matched: Match, unspaced: bool) -> Vec<Hit> {
        let ranges = find_runs(&self.glyphs, want, matched, unspaced);
        let ink = ink_columns(&self.crop);
        ranges
            .into_iter()
            .map(|(i, j)| {
                let first_solid = self.glyphs.iter().position(|g| !g.c.is_whitespace());
                let last_solid = self.glyphs.iter().rposition(|g| !g.c.is_whitespace());
                let (quad, room) = if Some(i) == first_solid && Some(j) == last_solid {
                    (self.frame.corners(), None)
                } else {
                    let ((a, b), (r0, r1)) = self.cut(i, j, &ink);
                    (self.frame.sub_box(a, 0.0, b, self.frame.height).corners(), Some((r0 - a, r1 - a)))
                };
                Hit { quad, line: self.text().trim().to_string(), room }
            })
            .collect()
    }

    /// The span along the line of glyphs `i..=j`: cut midway between them and their
    /// neighbours, snapped to columns without ink, with a margin of at most half the gap; and
    /// the room a new text has there (up to 40% of each gap into it; unbounded past the line's ends).
    fn cut(&self, i: usize, j: usize, ink: &[bool]) -> ((f32, f32), (f32, f32)) {
        let g = &self.glyphs;
        let a = if i > 0 { (g[i - 1].x1 + g[i].x0) / 2.0 } else { 0.0 };
        let b = if j + 1 < g.len() { (g[j].x1 + g[j + 1].x0) / 2.0 } else { self.crop.width() as f32 };
        let reach = self.frame.height * 0.5;
        let (l, r) = snap(ink, a, b, reach);
        let margin = 0.2 * self.frame.height;
        let gap_left = (0..l).rev().take_while(|&x| !ink[x]).count();
        let gap_right = (r..ink.len()).take_while(|&x| !ink[x]).count();
        let pad = |gap: usize, to_edge: bool| if to_edge { margin.min(gap as f32) } else { margin.min(gap as f32 / 2.0) };
        let (open_left, open_right) = (gap_left == l, r + gap_right == ink.len());
        let left = l as f32 - pad(gap_left, open_left);
        let right = r as f32 + pad(gap_right, open_right);
        let room_left = if open_left { f32::NEG_INFINITY } else { l as f32 - 0.4 * gap_left as f32 };
        let room_right = if open_right { f32::INFINITY } else { r as f32 + 0.4 * gap_right as f32 };
        ((left, right), (room_left, room_right))
    }
}

/// Matches of `want` among the glyphs, whitespace skipped: inclusive glyph index ranges. For
/// spaced scripts a match must not continue a word on either side.
fn find_runs(glyphs: &[Glyph], want: &[char], matched: Match, unspaced: bool) -> Vec<(usize, usize)> {
    let solid: Vec<usize> = (0..glyphs.len()).filter(|&k| !glyphs[k].c.is_whitespace()).collect();
    let same = |a: char, b: char| match matched {
        Match::Exact => a == b,
        Match::IgnoringCase => a.to_lowercase().eq(b.to_lowercase()),
        Match::IgnoringCaseAndAccents => base(a).to_lowercase().eq(base(b).to_lowercase()),
    };
    let word_char = |k: Option<&Glyph>| k.is_some_and(|g| g.c.is_alphanumeric());
    let mut runs = Vec::new();
    let mut s = 0;
    while s + want.len() <= solid.len() {
        let matched = want.iter().enumerate().all(|(k, &c)| same(glyphs[solid[s + k]].c, c));
        let (i, j) = (solid[s], solid[s + want.len() - 1]);
        let bounded = unspaced || (!word_char(i.checked_sub(1).and_then(|p| glyphs.get(p))) && !word_char(glyphs.get(j + 1)));
        if matched && bounded {
            runs.push((i, j));
            s += want.len();
        } else {
            s += 1;
        }
    }
    runs
}

/// A letter without its accents: the first character of its canonical decomposition.
fn base(c: char) -> char {
    use unicode_normalization::UnicodeNormalization;
    std::iter::once(c).nfd().next().unwrap_or(c)
}

/// Whether each column of an upright line crop has ink: a pixel that differs by more than 48
/// levels (in some channel) from both the column's top and bottom pixels, which are ground
/// (the detector's margin).
fn ink_columns(crop: &RgbImage) -> Vec<bool> {
    let (w, h) = crop.dimensions();
    (0..w)
        .map(|x| {
            let (top, bottom) = (crop.get_pixel(x, 0).0, crop.get_pixel(x, h - 1).0);
            let far = |p: [u8; 3], q: [u8; 3]| (0..3).any(|c| p[c].abs_diff(q[c]) > 48);
            (1..h.saturating_sub(1)).any(|y| {
                let p = crop.get_pixel(x, y).0;
                far(p, top) && far(p, bottom)
            })
        })
        .collect()
}

/// The ink columns `[l, r)` of the word cut at `a..b`: a cut through a letter moves to the
/// nearer blank column (within `reach`, taking the letter in or leaving it out), a cut in a
/// gap moves in to the first ink; `(a, b)` rounded when there is no ink between.
fn snap(ink: &[bool], a: f32, b: f32, reach: f32) -> (usize, usize) {
    let n = ink.len();
    let (a, b) = ((a.max(0.0) as usize).min(n), (b.max(0.0).ceil() as usize).min(n));
    let reach = reach.max(1.0) as usize;
    let blank_left = |x: usize| (x.saturating_sub(reach)..=x).rev().find(|&k| !ink[k]).map(|k| x - k);
    let blank_right = |x: usize| (x..n.min(x + reach + 1)).find(|&k| !ink[k]).map(|k| k - x);
    // The left cut: inside a letter, go to the nearer blank side.
    let mut l = a;
    if a < n && ink[a] {
        match (blank_left(a), blank_right(a)) {
            (Some(dl), Some(dr)) if dr < dl => l = a + dr,
            (Some(dl), _) => l = a - dl + 1,
            (None, Some(dr)) => l = a + dr,
            (None, None) => {}
        }
    }
    let mut r = b;
    if b > 0 && b <= n && ink[b - 1] {
        match (blank_left(b - 1), blank_right(b - 1)) {
            (Some(dl), Some(dr)) if dl < dr => r = b - dl,
            (_, Some(dr)) => r = b - 1 + dr,
            (Some(dl), None) => r = b - dl,
            (None, None) => {}
        }
    }
    // Tighten to the ink between.
    let first = (l..r.min(n)).find(|&k| ink[k]);
    let last = (l..r.min(n)).rev().find(|&k| ink[k]);
    match (first, last) {
        (Some(f), Some(e)) => (f, e + 1),
        _ => (a, b.max(a)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glyphs(text: &str) -> Vec<Glyph> {
        text.chars().enumerate().map(|(i, c)| Glyph { c, x0: i as f32 * 10.0 + 3.0, x1: i as f32 * 10.0 + 6.0 }).collect()
    }

    #[test]
    fn matches_respect_words_case_and_spacing() {
        let line = glyphs("BIG SALE, WHOLESALE SALE");
        let want: Vec<char> = "SALE".chars().collect();
        assert_eq!(find_runs(&line, &want, Match::Exact, false), [(4, 7), (20, 23)]);
        assert!(find_runs(&glyphs("big sale"), &want, Match::Exact, false).is_empty());
        assert_eq!(find_runs(&glyphs("big sale"), &want, Match::IgnoringCase, false), [(4, 7)]);
        let two: Vec<char> = "BIGSALE".chars().collect();
        assert_eq!(find_runs(&glyphs("BIG  SALE"), &two, Match::Exact, false), [(0, 8)]);
        let han: Vec<char> = "大减价".chars().collect();
        assert_eq!(find_runs(&glyphs("今天大减价啦"), &han, Match::Exact, true), [(2, 4)]);
        let accented: Vec<char> = "Müller".chars().collect();
        assert!(find_runs(&glyphs("Herr Muller"), &accented, Match::IgnoringCase, false).is_empty());
        assert_eq!(find_runs(&glyphs("Herr Muller"), &accented, Match::IgnoringCaseAndAccents, false), [(5, 10)]);
    }

    #[test]
    fn cuts_snap_to_blank_columns() {
        // Ink: a letter at 2..6, a gap, the word at 10..20, a gap, a letter at 24..28.
        let ink: Vec<bool> = (0..30).map(|x| (2..6).contains(&x) || (10..20).contains(&x) || (24..28).contains(&x)).collect();
        assert_eq!(snap(&ink, 8.0, 22.0, 5.0), (10, 20), "cuts in the gaps tighten to the word");
        assert_eq!(snap(&ink, 11.0, 18.0, 5.0), (10, 20), "cuts just inside the word take its edge letters in");
        assert_eq!(snap(&ink, 5.0, 25.0, 5.0), (10, 20), "cuts just inside the neighbours leave them out");
        assert_eq!(snap(&[false; 10], 2.0, 6.0, 3.0), (2, 6), "no ink: the cut as it was");
    }
}
