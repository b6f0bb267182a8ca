//! PP-OCRv4 on ONNX Runtime: DB text detection, the PP-OCR direction classifier, and SVTR-LCNet
//! recognition with greedy CTC decoding, with RapidOCR 1.4.4's pre- and post-processing.
//!
//! The recogniser is PaddleOCR's Chinese model, whose 6,623 symbols are simplified and common
//! traditional Chinese, ASCII letters, digits and punctuation, full-width forms and a few dozen
//! other symbols; it has no other alphabet (6 Cyrillic and 10 Greek letters, 4 katakana, 1
//! hiragana, some accented Latin letters).

use std::path::{Path, PathBuf};

use image::RgbImage;
use image::imageops;
use ndarray::{Ix3, s};

use crate::detect::{BoxParams, Candidate, Plan, RAPIDOCR_MIN_SIDE, boxes, reading_order};
use crate::error::OcrError;
use crate::geometry::Point;
use crate::imaging::{LINE_HEIGHT, banded, bordered, crop_quad, line_tensor, resized, tightened, to_tensor, with_margin};
use crate::line::{CharSpan, SpannedText, TextLine};
use crate::model::Model;
use crate::recognize::Charset;

/// The models `scripts/setup-ocr.sh` installs, in the folder `ppocr/` of the models folder.
pub const DETECTOR_FILE: &str = "ch_PP-OCRv4_det_infer.onnx";
pub const RECOGNIZER_FILE: &str = "ch_PP-OCRv4_rec_infer.onnx";
pub const CLASSIFIER_FILE: &str = "ch_ppocr_mobile_v2.0_cls_infer.onnx";
const INSTALLED_DIR: &str = "ppocr";

/// The recogniser's input is padded to at least this width (RapidOCR `rec_img_shape`)...
const MIN_LINE_WIDTH: u32 = 320;
/// ...and squeezed to at most this (ours: a line 100 times longer than high is read at this
/// width rather than at 4,800 pixels).
pub const MAX_LINE_WIDTH: u32 = 3200;
/// The direction classifier's input width (`cls_image_shape`) and its threshold (`cls_thresh`).
const CLASSIFIER_WIDTH: u32 = 192;
const CLASSIFIER_THRESHOLD: f32 = 0.9;

/// How PP-OCR reads. The defaults are RapidOCR 1.4.4's except for four choices measured on
/// rendered text (see the README): pictures are not enlarged for the detector but framed by a
/// border, lines get a margin before recognition, and a line the classifier calls upside down
/// is read both ways.
/// [`PpOcrOptions::rapidocr`] gives RapidOCR's own settings.
#[derive(Clone, Debug, PartialEq)]
pub struct PpOcrOptions {
    /// The detector sees the picture enlarged until its shorter side is at least this (0: never
    /// enlarged; RapidOCR: 736). Its input is always rounded to multiples of 32 and at most
    /// 3,200 on its longer side.
    pub detector_min_side: u32,
    /// A detected box is kept when its mean text probability is at least this (`box_thresh`, 0.5).
    pub box_threshold: f32,
    /// Detected regions are grown by `area × ratio / perimeter` on each side (`unclip_ratio`, 1.6).
    pub unclip_ratio: f32,
    /// The picture is framed, for the detector, by a border of this fraction of its shorter side
    /// (at most 32 pixels) in its edges' colour (0.25; RapidOCR: none). Text touching the
    /// picture's edge, as in a tight crop, otherwise loses its first or last letters.
    pub border: f32,
    /// Each line is given a margin of this fraction of its height on every side, in its
    /// background colour, before recognition (0.2; RapidOCR: none). Tight crops make the
    /// recogniser drop spaces between words.
    pub line_margin: f32,
    /// A line is returned when its recognition confidence is at least this (`text_score`, 0.5).
    pub min_confidence: f32,
    /// Run the direction classifier on each line; when it calls the line upside down (with
    /// probability over 0.9), read it both ways and keep the more confident reading (RapidOCR
    /// turns the line and reads it once; the classifier is often wrong on long Latin lines).
    pub classify_direction: bool,
}

impl Default for PpOcrOptions {
    fn default() -> Self {
        PpOcrOptions {
            detector_min_side: 0,
            box_threshold: 0.5,
            unclip_ratio: 1.6,
            border: 0.25,
            line_margin: 0.2,
            min_confidence: 0.5,
            classify_direction: true,
        }
    }
}

impl PpOcrOptions {
    /// RapidOCR 1.4.4's settings (but for the two-way reading of lines called upside down).
    pub fn rapidocr() -> PpOcrOptions {
        PpOcrOptions { detector_min_side: RAPIDOCR_MIN_SIDE, border: 0.0, line_margin: 0.0, ..PpOcrOptions::default() }
    }
}

/// A line of text the detector found, not yet read.
#[derive(Clone, Debug)]
pub struct FoundLine {
    /// Where it is: `text` empty, `confidence` the detector's mean text probability in the box.
    pub line: TextLine,
    /// The line cut out and straightened.
    pub image: RgbImage,
}

/// PP-OCRv4 (detection + recognition) and the PP-OCR v2.0 direction classifier, loaded once
/// (`Send + Sync`; each network's runs are serialised).
#[derive(Debug)]
pub struct PpOcr {
    detector: Model,
    recognizer: Model,
    classifier: Model,
    charset: Charset,
    options: PpOcrOptions,
}

impl PpOcr {
    /// The installed models: `$PLANTAIN_OCR_DIR/ppocr/` if that variable is set, else
    /// `.models/ppocr/` in the nearest ancestor of the executable's folder or of the current
    /// directory that has the recogniser (where `scripts/setup-ocr.sh` puts them).
    pub fn open_installed() -> Result<PpOcr, OcrError> {
        if let Some(dir) = std::env::var_os("PLANTAIN_OCR_DIR") {
            return PpOcr::open(&PathBuf::from(dir).join(INSTALLED_DIR));
        }
        let relative = Path::new(".models").join(INSTALLED_DIR);
        match plantain_engine::runtime::find_installed(&relative, |d| d.join(RECOGNIZER_FILE).is_file()) {
            Ok(dir) => PpOcr::open(&dir),
            Err(roots) => Err(OcrError::NotInstalled(format!(
                "the PP-OCR models (.models/{INSTALLED_DIR}/{RECOGNIZER_FILE}, ...) were not found in any ancestor of {roots} (or set $PLANTAIN_OCR_DIR)"
            ))),
        }
    }

    /// Loads the three networks from `dir` (named as the set-up script installs them) and the
    /// recogniser's alphabet from its `character` metadata.
    pub fn open(dir: &Path) -> Result<PpOcr, OcrError> {
        let detector = Model::open(&dir.join(DETECTOR_FILE), "detection")?;
        let recognizer = Model::open(&dir.join(RECOGNIZER_FILE), "recognition")?;
        let classifier = Model::open(&dir.join(CLASSIFIER_FILE), "direction")?;
        let charset = read_charset(&recognizer)?;
        tracing::info!(dir = %dir.display(), symbols = charset.len(), "PP-OCR ready");
        Ok(PpOcr { detector, recognizer, classifier, charset, options: PpOcrOptions::default() })
    }

    pub fn with_options(mut self, options: PpOcrOptions) -> PpOcr {
        self.options = options;
        self
    }

    pub fn options(&self) -> &PpOcrOptions {
        &self.options
    }

    /// Every line of text in the picture, in reading order (top to bottom; left to right
    /// within 10 pixels of height). An empty picture is an error; one without text gives no lines.
    pub fn read(&self, image: &RgbImage) -> Result<Vec<TextLine>, OcrError> {
        let mut lines = Vec::new();
        for found in self.find_lines(image)? {
            let (text, confidence) = self.recognize(found.image)?;
            if confidence >= self.options.min_confidence {
                lines.push(TextLine { text, confidence, ..found.line });
            }
        }
        Ok(lines)
    }

    /// The lines of text the detector finds, in reading order, each cut out and straightened
    /// (at the resolution the picture is read at: at most 2,000 pixels on its longer side),
    /// not yet read: for another recogniser.
    pub fn find_lines(&self, image: &RgbImage) -> Result<Vec<FoundLine>, OcrError> {
        let size = non_empty(image)?;
        let plan = Plan::for_size(size.0, size.1, self.options.detector_min_side, self.options.border);
        let page = banded(bordered(resized(image, plan.working).into_owned(), plan.border), plan.pad);
        let mut found = Vec::new();
        for candidate in self.detect(&page, &plan)? {
            let Some(crop) = crop_quad(&page, &candidate.quad) else { continue };
            let line = TextLine::from_quad(String::new(), to_original(&plan, candidate.quad, size), candidate.score, size);
            found.push(FoundLine { line, image: crop });
        }
        Ok(found)
    }

    /// The text of a picture that is one line already, with its confidence. The picture is
    /// first cut to its ink (pixels far from the colour of its edges: the recogniser reads text
    /// that fills the height best), then read as the lines [`PpOcr::read`] finds are (margin,
    /// direction check). Leading and trailing spaces are dropped.
    pub fn recognize_line(&self, line: &RgbImage) -> Result<(String, f32), OcrError> {
        non_empty(line)?;
        self.recognize(tightened(line).into_owned())
    }

    /// The text of a picture that is one line, each symbol with where it is along the line
    /// (from the recogniser's CTC time steps, mapped back through the margin and the resizing),
    /// for finding a word within a line. Read as is: not cut to its ink, no direction check.
    pub fn recognize_spans(&self, line: &RgbImage) -> Result<SpannedText, OcrError> {
        let (w, _) = non_empty(line)?;
        let margined = with_margin(line.clone(), self.options.line_margin);
        let margin = f64::from(margined.width() - w) / 2.0;
        let ratio = f64::from(margined.width()) / f64::from(margined.height());
        let width = ((f64::from(LINE_HEIGHT) * ratio) as u32).clamp(MIN_LINE_WIDTH, MAX_LINE_WIDTH);
        let drawn = ((f64::from(LINE_HEIGHT) * ratio).ceil() as u32).clamp(1, width);
        let probs = self.recognizer_output(&margined, width)?;
        let steps = probs.shape()[0].max(1);
        let symbols = self.charset.decode_steps(probs.view());
        // Tensor columns per step, then line pixels per tensor column.
        let (per_step, scale) = (f64::from(width) / steps as f64, f64::from(margined.width()) / f64::from(drawn));
        let at = |step: usize| ((step as f64 * per_step * scale - margin).clamp(0.0, f64::from(w))) as f32;
        let confidence = if symbols.is_empty() { 0.0 } else { symbols.iter().map(|s| s.probability).sum::<f32>() / symbols.len() as f32 };
        let chars = symbols.into_iter().map(|s| CharSpan { x0: at(s.first), x1: at(s.last + 1), text: s.text }).collect();
        Ok(SpannedText { chars, confidence })
    }

    /// Text boxes in the banded working picture, in reading order.
    fn detect(&self, page: &RgbImage, plan: &Plan) -> Result<Vec<Candidate>, OcrError> {
        let input = to_tensor(&resized(page, plan.detector), plan.detector.0);
        let output = self.detector.run(input)?;
        let (dw, dh) = (plan.detector.0 as usize, plan.detector.1 as usize);
        if output.shape() != [1, 1, dh, dw] {
            return Err(OcrError::Runtime(format!("the detector gave a map of shape {:?}, expected [1, 1, {dh}, {dw}]", output.shape())));
        }
        let params = BoxParams { box_threshold: self.options.box_threshold, unclip_ratio: self.options.unclip_ratio };
        Ok(reading_order(boxes(output.slice(s![0, 0, .., ..]), plan.padded(), params)))
    }

    /// The line's text and confidence, with the margin and the direction check of the options.
    fn recognize(&self, line: RgbImage) -> Result<(String, f32), OcrError> {
        let flipped = self.options.classify_direction && self.upside_down(&line)?;
        let line = with_margin(line, self.options.line_margin);
        let read = self.recognize_as_is(&line)?;
        if !flipped {
            return Ok(read);
        }
        let turned = self.recognize_as_is(&imageops::rotate180(&line))?;
        Ok(if turned.1 > read.1 { turned } else { read })
    }

    fn recognize_as_is(&self, line: &RgbImage) -> Result<(String, f32), OcrError> {
        let ratio = f64::from(line.width()) / f64::from(line.height());
        let width = ((f64::from(LINE_HEIGHT) * ratio) as u32).clamp(MIN_LINE_WIDTH, MAX_LINE_WIDTH);
        let probs = self.recognizer_output(line, width)?;
        let (text, confidence) = self.charset.decode(probs.view());
        Ok((text.trim().to_string(), confidence))
    }

    /// The recogniser's `steps × classes` probabilities for `line` drawn into an input `width` wide.
    fn recognizer_output(&self, line: &RgbImage, width: u32) -> Result<ndarray::Array2<f32>, OcrError> {
        let output = self.recognizer.run(line_tensor(line, width))?;
        let probs = output.into_dimensionality::<Ix3>().map_err(|e| OcrError::Runtime(format!("recogniser output: {e}")))?;
        if probs.shape()[0] != 1 || probs.shape()[2] != self.charset.len() {
            return Err(OcrError::Runtime(format!(
                "the recogniser gave shape {:?}, expected [1, T, {}]",
                probs.shape(),
                self.charset.len()
            )));
        }
        Ok(probs.slice(s![0, .., ..]).to_owned())
    }

    /// Whether the direction classifier is sure the line is upside down.
    fn upside_down(&self, line: &RgbImage) -> Result<bool, OcrError> {
        let output = self.classifier.run(line_tensor(line, CLASSIFIER_WIDTH))?;
        match output.as_slice().unwrap_or_default() {
            [upright, flipped] => Ok(flipped > upright && *flipped > CLASSIFIER_THRESHOLD),
            _ => Err(OcrError::Runtime(format!("the direction classifier gave shape {:?}, expected [1, 2]", output.shape()))),
        }
    }
}

/// The recogniser's alphabet, checked against its number of classes.
fn read_charset(recognizer: &Model) -> Result<Charset, OcrError> {
    let bad = |reason: String| OcrError::BadModel { path: recognizer.path().to_path_buf(), role: "recognition", reason };
    let character = recognizer.metadata("character")?.ok_or_else(|| bad("it has no `character` metadata (its alphabet)".into()))?;
    let charset = Charset::from_metadata(&character);
    match recognizer.output_shape() {
        [_, _, classes] if *classes < 0 || *classes as usize == charset.len() => Ok(charset),
        shape => Err(bad(format!("its output has shape {shape:?}; expected N×T×{} for its alphabet", charset.len()))),
    }
}

fn non_empty(image: &RgbImage) -> Result<(u32, u32), OcrError> {
    let (width, height) = image.dimensions();
    if width == 0 || height == 0 {
        return Err(OcrError::EmptyImage { width, height });
    }
    Ok((width, height))
}

/// A quadrilateral in the banded working picture, in the original picture's pixels.
fn to_original(plan: &Plan, quad: [Point; 4], (width, height): (u32, u32)) -> [Point; 4] {
    let (sx, sy) = (f64::from(width) / f64::from(plan.working.0), f64::from(height) / f64::from(plan.working.1));
    let (dx, dy) = plan.offset();
    quad.map(|[x, y]| [((x - f64::from(dx)) * sx).clamp(0.0, f64::from(width)), ((y - f64::from(dy)) * sy).clamp(0.0, f64::from(height))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppocr_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<PpOcr>();
    }

    #[test]
    fn missing_models_say_how_to_install() {
        let err = PpOcr::open(Path::new("/nonexistent/ppocr")).unwrap_err();
        assert!(matches!(err, OcrError::NotInstalled(_)), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("/nonexistent/ppocr/ch_PP-OCRv4_det_infer.onnx") && message.contains("bash scripts/setup-ocr.sh"),
            "{message}"
        );
    }

    #[test]
    fn boxes_map_back_through_bands_and_scale() {
        let plan = Plan { working: (1000, 50), border: 0, pad: 100, detector: (2944, 736) };
        let quad = [[10.0, 100.0], [500.0, 90.0], [1000.0, 150.0], [0.0, 160.0]];
        let back = to_original(&plan, quad, (2000, 100));
        assert_eq!(back, [[20.0, 0.0], [1000.0, 0.0], [2000.0, 100.0], [0.0, 100.0]]);
    }
}
