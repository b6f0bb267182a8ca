//! Which reader can check a text, by its script, and the check itself.

use image::RgbImage;
use unicode_normalization::UnicodeNormalization;
use unicode_script::{Script as Ucd, UnicodeScript};

use crate::error::OcrError;
use crate::imaging::{at_least_high, with_margin};
use crate::ppocr::PpOcr;
use crate::tesseract::{PageSegmentation, Tesseract};

/// The writing systems this crate can read, each with one reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Script {
    Latin,
    Cyrillic,
    Greek,
    Arabic,
    Hebrew,
    Devanagari,
    Thai,
    /// Chinese characters (simplified and common traditional).
    Han,
    /// Kana, with any kanji among them.
    Japanese,
    Hangul,
}

impl Script {
    pub const ALL: [Script; 10] = [
        Script::Latin,
        Script::Cyrillic,
        Script::Greek,
        Script::Arabic,
        Script::Hebrew,
        Script::Devanagari,
        Script::Thai,
        Script::Han,
        Script::Japanese,
        Script::Hangul,
    ];

    /// The script of most of the letters of `text`; text with any kana is Japanese (its kanji
    /// count with it). `None` when no letter is in one of these scripts (digits, punctuation,
    /// other scripts).
    pub fn of(text: &str) -> Option<Script> {
        let counts = letter_counts(text);
        if counts.kana > 0 {
            return Some(Script::Japanese);
        }
        Script::ALL.into_iter().zip(counts.by_script).filter(|&(_, n)| n > 0).max_by_key(|&(_, n)| n).map(|(s, _)| s)
    }

    /// Whether the script is written without spaces between words: Tesseract puts spaces
    /// between its characters where PP-OCR does not, so [`verify`] ignores spaces there.
    pub fn unspaced(self) -> bool {
        matches!(self, Script::Han | Script::Japanese | Script::Thai)
    }

    fn of_char(c: char) -> Option<Script> {
        Some(match c.script() {
            Ucd::Latin => Script::Latin,
            Ucd::Cyrillic => Script::Cyrillic,
            Ucd::Greek => Script::Greek,
            Ucd::Arabic => Script::Arabic,
            Ucd::Hebrew => Script::Hebrew,
            Ucd::Devanagari => Script::Devanagari,
            Ucd::Thai => Script::Thai,
            Ucd::Han => Script::Han,
            Ucd::Hiragana | Ucd::Katakana => Script::Japanese,
            Ucd::Hangul => Script::Hangul,
            _ => return None,
        })
    }
}

/// Letters of `text` by script (in [`Script::ALL`]'s order), kana, and letters of other scripts.
struct Counts {
    by_script: [usize; 10],
    kana: usize,
    other: usize,
}

fn letter_counts(text: &str) -> Counts {
    let mut counts = Counts { by_script: [0; 10], kana: 0, other: 0 };
    for c in text.chars() {
        match (Script::of_char(c), c.script()) {
            (_, Ucd::Common | Ucd::Inherited | Ucd::Unknown) => {}
            (Some(Script::Japanese), _) => counts.kana += 1,
            (Some(s), _) => counts.by_script[s as usize] += 1,
            (None, _) => counts.other += 1,
        }
    }
    counts
}

/// The reader that checks text in a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reader {
    /// PP-OCRv4 (Chinese model): Chinese characters, ASCII letters, digits, punctuation.
    PpOcr,
    /// Tesseract with these language packs (`+`-joined).
    Tesseract { language: String },
}

impl Reader {
    /// PP-OCRv4 for Latin and Han; Tesseract for the others: `rus`, `ell`, `ara`, `heb`, `hin`,
    /// `tha`, `jpn`, `kor`.
    pub fn for_script(script: Script) -> Reader {
        match script {
            Script::Latin | Script::Han => Reader::PpOcr,
            _ => Reader::Tesseract { language: tesseract_language(script).to_string() },
        }
    }

    /// The reader for `text`: PP-OCR when all its letters are Chinese characters or ASCII Latin
    /// letters (or it has none: digits, punctuation); else Tesseract with the language pack of
    /// every script it has letters of, the most used first (`rus+eng`). Latin letters beyond
    /// ASCII go to the Tesseract packs they belong to (`deu` for ä ö ü ß, `fra` for é è ç œ…,
    /// `spa` for ñ á ¿…; PP-OCR knows only a handful of accented letters and `eng` misreads
    /// them). Text with letters of scripts outside [`Script`]
    /// has no reader.
    pub fn for_text(text: &str) -> Result<Reader, OcrError> {
        let counts = letter_counts(text);
        if counts.other > 0 {
            return Err(OcrError::UnsupportedScript(text.to_string()));
        }
        let mut present: Vec<(Script, usize)> = Script::ALL.into_iter().zip(counts.by_script).filter(|&(_, n)| n > 0).collect();
        if counts.kana > 0 {
            let kanji = present.iter().find(|(s, _)| *s == Script::Han).map_or(0, |&(_, n)| n);
            present.retain(|(s, _)| *s != Script::Han);
            present.push((Script::Japanese, counts.kana + kanji));
        }
        let marked = |c: char| MARKED_LETTERS.iter().any(|(_, letters)| letters.contains(c));
        let ascii_latin = !text.chars().any(|c| !c.is_ascii() && (c.script() == Ucd::Latin || marked(c)));
        if present.iter().all(|&(s, _)| s == Script::Han || (s == Script::Latin && ascii_latin)) {
            return Ok(Reader::PpOcr);
        }
        present.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
        let pack = |s: Script| if s == Script::Latin && !ascii_latin { accented_latin(text) } else { tesseract_language(s).to_string() };
        let language = present.iter().map(|&(s, _)| pack(s)).collect::<Vec<_>>().join("+");
        Ok(Reader::Tesseract { language })
    }
}

/// "PP-OCRv4" or "Tesseract (rus+eng)".
impl std::fmt::Display for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reader::PpOcr => f.write_str("PP-OCRv4"),
            Reader::Tesseract { language } => write!(f, "Tesseract ({language})"),
        }
    }
}

/// Letters beyond ASCII that mark a language Tesseract has a pack for, in the packs
/// `setup-ocr.sh` installs. Packs joined (`eng+deu+fra+spa`) read worse than the one pack a
/// text's letters call for: with `eng` first Tesseract drops the marks (Bäckerei → Backerei,
/// Jalapeño → Jalapeno), measured by `plantain eval text`.
const MARKED_LETTERS: [(&str, &str); 3] = [("deu", "äöüßÄÖÜẞ"), ("fra", "àâçèéêëîïôùûœæÀÂÇÈÉÊËÎÏÔÙÛŒÆ"), ("spa", "áíñóúü¡¿ÁÍÑÓÚÜ")];

/// The packs for Latin text with letters beyond ASCII: the packs whose marked letters it has,
/// the most used first (`fra`, `deu+fra`); `eng+deu+fra+spa` when none is marked.
fn accented_latin(text: &str) -> String {
    let mut hits: Vec<(&str, usize)> = MARKED_LETTERS
        .iter()
        .map(|(pack, letters)| (*pack, text.chars().filter(|c| letters.contains(*c)).count()))
        .filter(|&(_, n)| n > 0)
        .collect();
    if hits.is_empty() {
        return "eng+deu+fra+spa".to_string();
    }
    hits.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
    hits.iter().map(|(p, _)| *p).collect::<Vec<_>>().join("+")
}

/// Tesseract's language pack for a script.
fn tesseract_language(script: Script) -> &'static str {
    match script {
        Script::Latin => "eng",
        Script::Cyrillic => "rus",
        Script::Greek => "ell",
        Script::Arabic => "ara",
        Script::Hebrew => "heb",
        Script::Devanagari => "hin",
        Script::Thai => "tha",
        Script::Han => "chi_sim",
        Script::Japanese => "jpn",
        Script::Hangul => "kor",
    }
}

/// The result of checking a picture against the text it should show.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// What the reader read, normalised as compared ([`normalize`]: NFC, whitespace runs as one
    /// space, trimmed; without spaces for Chinese, Japanese and Thai); PP-OCR's lines joined
    /// with spaces.
    pub read: String,
    /// Whether it equals `expected`, normalised the same way.
    pub matches: bool,
    pub reader: Reader,
}

/// Reads `image` with the reader for `expected`'s script ([`Reader::for_text`]) and compares
/// ([`normalize`]). Each reader has more than one way to read; they are tried in turn until one
/// matches, and the verdict reports the first reading when none does:
///
/// - PP-OCR: [`PpOcr::read`]; then, where Tesseract is installed, Tesseract `eng` (`chi_sim`
///   for Chinese) as below.
/// - Tesseract: each line PP-OCR's detector finds, straightened, at least 64 pixels high and
///   with a margin, read as one line (`--psm 7`), then for one word as a word (`--psm 8`);
///   then the whole picture with Tesseract's own layout (`--psm 3`) and as one block
///   (`--psm 6`); then, for text with ASCII digits or signs, by lines with `eng` added; then
///   PP-OCR for Latin-only text.
///
/// Errors when the first reader is missing (Tesseract or its language pack) or fails.
pub fn verify(ppocr: &PpOcr, image: &RgbImage, expected: &str) -> Result<Verdict, OcrError> {
    let primary = Reader::for_text(expected)?;
    let unspaced = Script::of(expected).is_some_and(Script::unspaced);
    let want = normalize(expected, unspaced);
    let mut first: Option<Verdict> = None;
    for (i, attempt) in attempts(&primary, expected).into_iter().enumerate() {
        let read = match attempt.read(ppocr, image) {
            Ok(read) => normalize(&read, unspaced),
            Err(OcrError::TesseractMissing(_) | OcrError::LanguageMissing { .. }) if i > 0 => continue,
            Err(e) => return Err(e),
        };
        let verdict = Verdict { matches: read == want, read, reader: attempt.reader() };
        if verdict.matches {
            return Ok(verdict);
        }
        first.get_or_insert(verdict);
    }
    first.ok_or_else(|| OcrError::UnsupportedScript(expected.to_string()))
}

/// One way of reading a picture.
enum Attempt {
    PpOcr,
    /// Tesseract on each line PP-OCR's detector finds, each read as a line or a word.
    TesseractLines(String, PageSegmentation),
    TesseractPage(String, PageSegmentation),
}

/// The ways `verify` reads, in order, for text whose first reader is `primary`. Tesseract:
/// by lines, then (one word) each line as a word, then its own layout and one block, then
/// (ASCII digits or signs in another script's text: `50%`) by lines with `eng` added.
fn attempts(primary: &Reader, expected: &str) -> Vec<Attempt> {
    let one_word = !expected.trim().contains(char::is_whitespace);
    let tesseract = |language: &str| {
        let mut ways = vec![Attempt::TesseractLines(language.to_string(), PageSegmentation::Line)];
        ways.extend(one_word.then(|| Attempt::TesseractLines(language.to_string(), PageSegmentation::Word)));
        ways.push(Attempt::TesseractPage(language.to_string(), PageSegmentation::Auto));
        ways.push(Attempt::TesseractPage(language.to_string(), PageSegmentation::Block));
        let ascii_signs = expected.chars().any(|c| c.is_ascii_digit() || c.is_ascii_punctuation());
        if ascii_signs && !language.split('+').any(|l| l == "eng") {
            ways.push(Attempt::TesseractLines(format!("{language}+eng"), PageSegmentation::Line));
        }
        ways
    };
    match primary {
        Reader::PpOcr => {
            let language = if Script::of(expected) == Some(Script::Han) { "chi_sim" } else { "eng" };
            std::iter::once(Attempt::PpOcr).chain(tesseract(language)).collect()
        }
        Reader::Tesseract { language } => {
            let latin_only = letter_counts(expected).by_script.iter().enumerate().all(|(i, &n)| n == 0 || i == Script::Latin as usize);
            let mut ways = tesseract(language);
            ways.extend(latin_only.then_some(Attempt::PpOcr));
            ways
        }
    }
}

impl Attempt {
    fn reader(&self) -> Reader {
        match self {
            Attempt::PpOcr => Reader::PpOcr,
            Attempt::TesseractLines(language, _) | Attempt::TesseractPage(language, _) => Reader::Tesseract { language: language.clone() },
        }
    }

    fn read(&self, ppocr: &PpOcr, image: &RgbImage) -> Result<String, OcrError> {
        match self {
            Attempt::PpOcr => Ok(ppocr.read(image)?.into_iter().map(|l| l.text).collect::<Vec<_>>().join(" ")),
            Attempt::TesseractLines(language, segmentation) => tesseract_by_lines(ppocr, image, language, *segmentation),
            Attempt::TesseractPage(language, segmentation) => Tesseract::read_with(image, language, *segmentation),
        }
    }
}

/// A line crop for Tesseract is enlarged to at least this height (it reads small text poorly).
const TESSERACT_LINE_HEIGHT: u32 = 64;

/// Tesseract on each line PP-OCR's detector finds (read as `segmentation`: a line or a word),
/// joined with spaces; the whole picture so if the detector finds none.
fn tesseract_by_lines(ppocr: &PpOcr, image: &RgbImage, language: &str, segmentation: PageSegmentation) -> Result<String, OcrError> {
    let found = ppocr.find_lines(image)?;
    if found.is_empty() {
        return Tesseract::read_with(image, language, segmentation);
    }
    let mut parts = Vec::with_capacity(found.len());
    for line in found {
        let crop = with_margin(at_least_high(line.image, TESSERACT_LINE_HEIGHT), 0.25);
        parts.push(Tesseract::read_with(&crop, language, segmentation)?);
    }
    Ok(parts.join(" "))
}

/// NFC, whitespace runs as one space, trimmed; with `unspaced`, no whitespace at all. Three
/// look-alikes the readers give for what the picture shows are folded first: full-width ASCII
/// forms (U+FF01–U+FF5E, PP-OCR's Chinese punctuation `，：（）`) to ASCII, the micro sign
/// `µ` (Tesseract's Greek pack) to the Greek `μ`, and Thai NIKHAHIT + SARA AA (Tesseract's Thai
/// pack) to SARA AM `ำ`, which is drawn the same.
pub fn normalize(text: &str, unspaced: bool) -> String {
    // Thai SARA AM as Tesseract writes it (NIKHAHIT + SARA AA: drawn the same).
    let text = text.replace("\u{0E4D}\u{0E32}", "\u{0E33}");
    let nfc: String = text.chars().map(fold_lookalike).nfc().collect();
    nfc.split_whitespace().collect::<Vec<_>>().join(if unspaced { "" } else { " " })
}

fn fold_lookalike(c: char) -> char {
    match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFF01 + 0x21).unwrap_or(c),
        '\u{B5}' => '\u{3BC}',
        _ => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_of_texts() {
        let cases = [
            ("plantain 2026", Some(Script::Latin)),
            ("Привет, мир", Some(Script::Cyrillic)),
            ("Καλημέρα", Some(Script::Greek)),
            ("مرحبا", Some(Script::Arabic)),
            ("שלום", Some(Script::Hebrew)),
            ("नमस्ते", Some(Script::Devanagari)),
            ("สวัสดี", Some(Script::Thai)),
            ("你好世界", Some(Script::Han)),
            ("東京へ行く", Some(Script::Japanese)),
            ("カタカナ", Some(Script::Japanese)),
            ("안녕하세요", Some(Script::Hangul)),
            ("Москва Moscow Russia", Some(Script::Latin)),
            ("12:30 — 4.5%", None),
            ("", None),
            ("გამარჯობა", None),
        ];
        for (text, want) in cases {
            assert_eq!(Script::of(text), want, "{text}");
        }
    }

    #[test]
    fn readers_for_scripts_and_texts() {
        assert_eq!(Reader::for_script(Script::Han), Reader::PpOcr);
        assert_eq!(Reader::for_script(Script::Hangul), Reader::Tesseract { language: "kor".into() });
        assert_eq!(Reader::for_script(Script::Latin).to_string(), "PP-OCRv4");
        assert_eq!(Reader::for_script(Script::Arabic).to_string(), "Tesseract (ara)");
        let tess = |l: &str| Some(Reader::Tesseract { language: l.into() });
        let for_text = |t: &str| Reader::for_text(t).ok();
        assert_eq!(for_text("HELLO WORLD"), Some(Reader::PpOcr));
        assert_eq!(for_text("2026-01-01"), Some(Reader::PpOcr));
        assert_eq!(for_text("中文 OCR"), Some(Reader::PpOcr));
        assert_eq!(for_text("Привет мир"), tess("rus"));
        assert_eq!(for_text("Привет мир PDF"), tess("rus+eng"));
        assert_eq!(for_text("Москва Moscow Russia"), tess("eng+rus"));
        assert_eq!(for_text("東京へ行きます Tokyo"), tess("jpn+eng"));
        assert_eq!(for_text("中文 Ελλάδα"), tess("ell+chi_sim"));
        assert_eq!(for_text("café crème"), tess("fra"));
        assert_eq!(for_text("Grüße, Привет"), tess("rus+deu+spa"));
        assert_eq!(for_text("Señor Müller à Paris"), tess("spa+deu+fra"));
        assert_eq!(for_text("¡Hola, amigo!"), tess("spa"));
        assert!(matches!(Reader::for_text("გამარჯობა"), Err(OcrError::UnsupportedScript(_))));
    }

    #[test]
    fn normalisation_composes_and_collapses() {
        // "é" as e + combining acute composes; runs of spaces, tabs and newlines become one space.
        assert_eq!(normalize("  cafe\u{301}\t\n  au   lait ", false), "caf\u{e9} au lait");
        assert_eq!(normalize("你 好\n世界", true), "你好世界");
        assert_ne!(normalize("HELLO", false), normalize("HELL0", false));
        // Full-width punctuation and the micro sign fold; other compatibility forms do not.
        assert_eq!(normalize("你好，世界！（１）", true), "你好,世界!(1)");
        assert_eq!(normalize("κόσµε", false), "κόσμε");
        assert_eq!(normalize("x² ﬁ", false), "x² ﬁ");
    }
}
