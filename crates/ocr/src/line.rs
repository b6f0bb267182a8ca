//! What a reader returns for each line of text.

/// One line (or word group) of text found in a picture.
#[derive(Clone, Debug, PartialEq)]
pub struct TextLine {
    /// The text as read.
    pub text: String,
    /// Bounding box `(x0, y0, x1, y1)` in the picture's pixels, the ends exclusive. PP-OCR's
    /// boxes include the detector's margin (its "unclip", about a third of the text height on
    /// each side), clipped to the picture.
    pub bbox: (u32, u32, u32, u32),
    /// Corners `[x, y]` top-left, top-right, bottom-right, bottom-left: PP-OCR's box may be
    /// turned; Tesseract's is the upright `bbox`.
    pub quad: [[f32; 2]; 4],
    /// The reader's confidence, 0 to 1: PP-OCR's mean probability of the characters read;
    /// Tesseract's mean word confidence / 100.
    pub confidence: f32,
}

impl TextLine {
    /// A line from its corners, with the bounding box they span within `(width, height)`.
    pub(crate) fn from_quad(text: String, quad: [[f64; 2]; 4], confidence: f32, (width, height): (u32, u32)) -> TextLine {
        let (xs, ys) = (quad.map(|p| p[0]), quad.map(|p| p[1]));
        let low = |v: [f64; 4], limit: u32| (v.iter().copied().fold(f64::MAX, f64::min).floor().max(0.0) as u32).min(limit);
        let high = |v: [f64; 4], limit: u32| (v.iter().copied().fold(f64::MIN, f64::max).ceil().max(0.0) as u32).min(limit);
        let bbox = (low(xs, width), low(ys, height), high(xs, width), high(ys, height));
        TextLine { text, bbox, quad: quad.map(|[x, y]| [x as f32, y as f32]), confidence }
    }

    /// Centre of the bounding box.
    pub fn center(&self) -> (f32, f32) {
        let (x0, y0, x1, y1) = self.bbox;
        ((x0 + x1) as f32 / 2.0, (y0 + y1) as f32 / 2.0)
    }
}

/// One symbol a recogniser read and where along its line: `x0..x1` in the line picture's
/// pixels, the span of the recogniser's time steps that gave it (CTC steps are 8 pixels of the
/// recogniser's 48-pixel-high input; a symbol's steps lie within its glyph, not always across
/// all of it).
#[derive(Clone, Debug, PartialEq)]
pub struct CharSpan {
    pub text: String,
    pub x0: f32,
    pub x1: f32,
}

/// A line read with where each symbol is ([`crate::PpOcr::recognize_spans`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SpannedText {
    /// The symbols in order; their texts joined are the line's text (spaces included, not trimmed).
    pub chars: Vec<CharSpan>,
    /// The mean probability of the symbols read (0 when none).
    pub confidence: f32,
}

impl SpannedText {
    pub fn text(&self) -> String {
        self.chars.iter().map(|c| c.text.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bbox_spans_the_quad_within_the_picture() {
        let line = TextLine::from_quad("a".into(), [[3.5, 2.0], [40.2, 1.0], [41.0, 12.7], [3.0, 13.0]], 0.9, (40, 100));
        assert_eq!(line.bbox, (3, 1, 40, 13));
        assert_eq!(line.quad[1], [40.2, 1.0]);
        assert_eq!(line.center(), (21.5, 7.0));
    }
}
