//! Tesseract, run as a program (`tesseract IMAGE stdout -l LANG --psm N`) on a temporary PNG:
//! no C bindings. It reads the scripts PP-OCRv4 cannot, given their language packs.

use std::io::ErrorKind;
use std::process::{Command, Output};

use image::{ImageFormat, RgbImage};

use crate::error::OcrError;
use crate::line::TextLine;

/// How Tesseract splits the picture into text (its `--psm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSegmentation {
    /// Finds blocks, paragraphs and lines itself (`--psm 3`, Tesseract's default).
    Auto = 3,
    /// One block of text, lines of one size (`--psm 6`).
    Block = 6,
    /// One line of text (`--psm 7`).
    Line = 7,
    /// One word (`--psm 8`): reads short Arabic words `--psm 7` returns nothing for.
    Word = 8,
    /// As much text as it can find, in no particular order (`--psm 11`).
    Sparse = 11,
}

/// The `tesseract` program on `PATH`.
#[derive(Clone, Copy, Debug)]
pub struct Tesseract;

impl Tesseract {
    /// Whether `tesseract` runs.
    pub fn available() -> bool {
        Tesseract::version().is_ok()
    }

    /// The first line of `tesseract --version`, e.g. "tesseract 5.3.0".
    pub fn version() -> Result<String, OcrError> {
        let output = run(Command::new("tesseract").arg("--version"))?;
        let text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
        Ok(text.lines().next().unwrap_or_default().trim().to_string())
    }

    /// The installed language packs (`eng`, `chi_sim`, ...; `osd` is the orientation model).
    pub fn languages() -> Result<Vec<String>, OcrError> {
        let output = run(Command::new("tesseract").arg("--list-langs"))?;
        let text = String::from_utf8_lossy(&output.stdout);
        Ok(text.lines().skip(1).map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect())
    }

    /// The text of the picture (lines separated by newlines) with `language` (a pack name, or
    /// several joined by `+`, e.g. `rus+eng`), letting Tesseract find the blocks and lines.
    pub fn read(image: &RgbImage, language: &str) -> Result<String, OcrError> {
        Tesseract::read_with(image, language, PageSegmentation::Auto)
    }

    /// [`Tesseract::read`] with a chosen page segmentation.
    pub fn read_with(image: &RgbImage, language: &str, segmentation: PageSegmentation) -> Result<String, OcrError> {
        let output = recognize(image, language, segmentation, None)?;
        Ok(String::from_utf8_lossy(&output.stdout).trim_end().to_string())
    }

    /// The lines of the picture with their boxes and confidences (from Tesseract's TSV output).
    pub fn read_lines(image: &RgbImage, language: &str, segmentation: PageSegmentation) -> Result<Vec<TextLine>, OcrError> {
        let output = recognize(image, language, segmentation, Some("tsv"))?;
        Ok(lines_from_tsv(&String::from_utf8_lossy(&output.stdout), image.dimensions()))
    }

    /// Each word of the picture with its box and confidence, in Tesseract's order.
    pub fn read_words(image: &RgbImage, language: &str, segmentation: PageSegmentation) -> Result<Vec<TextLine>, OcrError> {
        let output = recognize(image, language, segmentation, Some("tsv"))?;
        Ok(words_from_tsv(&String::from_utf8_lossy(&output.stdout), image.dimensions()).into_iter().map(Gathered::into_line).collect())
    }
}

/// Runs `tesseract` on the picture, saved as a temporary PNG, after checking the language packs.
fn recognize(image: &RgbImage, language: &str, segmentation: PageSegmentation, config: Option<&str>) -> Result<Output, OcrError> {
    let (width, height) = image.dimensions();
    if width == 0 || height == 0 {
        return Err(OcrError::EmptyImage { width, height });
    }
    check_languages(language)?;
    let file = tempfile::Builder::new()
        .prefix("plantain-ocr-")
        .suffix(".png")
        .tempfile()
        .map_err(|e| OcrError::Tesseract(format!("cannot create a temporary file: {e}")))?;
    image.save_with_format(file.path(), ImageFormat::Png).map_err(|e| OcrError::Tesseract(format!("cannot write the picture: {e}")))?;
    let mut command = Command::new("tesseract");
    command.arg(file.path()).arg("stdout").args(["-l", language, "--psm"]).arg((segmentation as u8).to_string());
    // One thread: Tesseract's OpenMP threads cost more than they give on small pictures.
    command.args(config).env("OMP_THREAD_LIMIT", "1");
    run(&mut command)
}

/// Every pack in `language` (`a+b+...`) is installed.
fn check_languages(language: &str) -> Result<(), OcrError> {
    let installed = Tesseract::languages()?;
    for wanted in language.split('+') {
        if wanted.is_empty() || !installed.iter().any(|l| l == wanted) {
            return Err(OcrError::LanguageMissing { language: wanted.to_string(), installed });
        }
    }
    Ok(())
}

/// Runs a command, turning "not found" into [`OcrError::TesseractMissing`] and a failure into
/// [`OcrError::Tesseract`] with its error output.
fn run(command: &mut Command) -> Result<Output, OcrError> {
    let output = command.output().map_err(|e| match e.kind() {
        ErrorKind::NotFound => OcrError::TesseractMissing(e.to_string()),
        _ => OcrError::Tesseract(format!("cannot run it: {e}")),
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(OcrError::Tesseract(format!("{}: {}", output.status, stderr.trim())));
    }
    Ok(output)
}

/// One line of Tesseract's TSV as it is being gathered from its words.
struct Gathered {
    key: (u32, u32, u32, u32),
    words: Vec<String>,
    bbox: (u32, u32, u32, u32),
    confidence: f32,
}

/// Lines from Tesseract's TSV (`level page block paragraph line word left top width height
/// conf text`): the words (level 5) with text, grouped by page, block, paragraph and line.
fn lines_from_tsv(tsv: &str, size: (u32, u32)) -> Vec<TextLine> {
    let mut lines: Vec<Gathered> = Vec::new();
    for word in words_from_tsv(tsv, size) {
        match lines.last_mut() {
            Some(last) if last.key == word.key => last.push(word),
            _ => lines.push(word),
        }
    }
    lines.into_iter().map(Gathered::into_line).collect()
}

/// The words (level 5) with text of Tesseract's TSV, each with its line's key.
fn words_from_tsv(tsv: &str, (width, height): (u32, u32)) -> Vec<Gathered> {
    let mut words = Vec::new();
    for row in tsv.lines().skip(1) {
        let fields: Vec<&str> = row.splitn(12, '\t').collect();
        let [level, page, block, par, line, _, left, top, w, h, conf, text] = fields[..] else { continue };
        let numbers: Option<Vec<u32>> = [level, page, block, par, line, left, top, w, h].iter().map(|v| v.parse().ok()).collect();
        let (Some(n), Ok(conf)) = (numbers, conf.parse::<f32>()) else { continue };
        if n[0] != 5 || text.trim().is_empty() {
            continue;
        }
        let key = (n[1], n[2], n[3], n[4]);
        let bbox = (n[5].min(width), n[6].min(height), (n[5] + n[7]).min(width), (n[6] + n[8]).min(height));
        words.push(Gathered { key, words: vec![text.trim().to_string()], bbox, confidence: conf.max(0.0) / 100.0 });
    }
    words
}

impl Gathered {
    fn push(&mut self, word: Gathered) {
        let n = self.words.len() as f32;
        self.confidence = (self.confidence * n + word.confidence) / (n + 1.0);
        self.words.extend(word.words);
        let (a, b) = (self.bbox, word.bbox);
        self.bbox = (a.0.min(b.0), a.1.min(b.1), a.2.max(b.2), a.3.max(b.3));
    }

    fn into_line(self) -> TextLine {
        let (x0, y0, x1, y1) = self.bbox;
        let quad = [[x0, y0], [x1, y0], [x1, y1], [x0, y1]].map(|[x, y]| [x as f32, y as f32]);
        TextLine { text: self.words.join(" "), bbox: self.bbox, quad, confidence: self.confidence }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_words_group_into_lines() {
        let tsv = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n\
            1\t1\t0\t0\t0\t0\t0\t0\t300\t100\t-1\t\n\
            4\t1\t1\t1\t1\t0\t10\t10\t200\t20\t-1\t\n\
            5\t1\t1\t1\t1\t1\t10\t10\t80\t20\t96.5\tHello\n\
            5\t1\t1\t1\t1\t2\t100\t12\t110\t18\t91.5\tworld\n\
            5\t1\t1\t1\t2\t1\t10\t50\t40\t20\t80\t42\n\
            5\t1\t1\t1\t2\t2\t60\t50\t40\t20\t-1\t \n\
            5\t1\t2\t1\t1\t1\t250\t80\t90\t30\t50\tedge\n";
        let lines = lines_from_tsv(tsv, (300, 100));
        assert_eq!(lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(), ["Hello world", "42", "edge"]);
        assert_eq!(lines[0].bbox, (10, 10, 210, 30));
        assert!((lines[0].confidence - 0.94).abs() < 1e-6);
        // Boxes are clipped to the picture.
        assert_eq!(lines[2].bbox, (250, 80, 300, 100));
        assert_eq!(lines[2].quad[2], [300.0, 100.0]);
        assert!(lines_from_tsv("", (1, 1)).is_empty());
        let words: Vec<String> = words_from_tsv(tsv, (300, 100)).into_iter().map(|w| w.into_line().text).collect();
        assert_eq!(words, ["Hello", "world", "42", "edge"]);
    }

    #[test]
    fn empty_pictures_are_refused_before_running() {
        let err = Tesseract::read(&RgbImage::new(0, 3), "eng").unwrap_err();
        assert!(matches!(err, OcrError::EmptyImage { width: 0, height: 3 }), "{err:?}");
    }
}
