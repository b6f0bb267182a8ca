//! Tesseract on pictures of known text drawn with DejaVu Sans. Needs `bash scripts/setup-ocr.sh`
//! (Tesseract and its language packs; PP-OCR for `verify`): without them these tests fail,
//! saying so.

mod common;

use image::{Rgb, RgbImage};
use plantain_ocr::{OcrError, PageSegmentation, Reader, Tesseract, verify};

/// Fails, naming the set-up script, when Tesseract or a language pack is missing.
fn require(languages: &[&str]) {
    let installed = Tesseract::languages()
        .unwrap_or_else(|e| panic!("Tesseract is not usable: {e}; run `bash scripts/setup-ocr.sh` (as root, with apt-get)"));
    for language in languages {
        assert!(
            installed.iter().any(|l| l == language),
            "Tesseract lacks the `{language}` pack (has {installed:?}); run `bash scripts/setup-ocr.sh`"
        );
    }
}

#[test]
fn reads_an_english_line_exactly() {
    require(&["eng"]);
    assert!(Tesseract::available() && Tesseract::version().unwrap().starts_with("tesseract"));
    for text in ["plantain 2026", "HELLO WORLD", "Edit images with open models"] {
        let image = common::line(text, 32.0, 12);
        assert_eq!(Tesseract::read(&image, "eng").unwrap(), text);
        assert_eq!(Tesseract::read_with(&image, "eng", PageSegmentation::Line).unwrap(), text);
    }
}

#[test]
fn lines_come_with_boxes_in_order() {
    require(&["eng"]);
    let lines = ["plantain 2026", "HELLO WORLD", "Edit images with open models"];
    let image = common::page(1024, 512, &lines, 40.0, 50.0);
    let read = Tesseract::read_lines(&image, "eng", PageSegmentation::Auto).unwrap();
    assert_eq!(read.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(), lines);
    for (i, line) in read.iter().enumerate() {
        let baseline = 50.0 + 40.0 + 64.0 * i as f32;
        let (x0, y0, x1, y1) = line.bbox;
        assert!((48..56).contains(&x0), "{:?}", line.bbox);
        assert!((x1 as f32 - 50.0 - common::text_width(lines[i], 40.0)).abs() < 8.0, "{:?}", line.bbox);
        assert!((y0 as f32) < baseline - 25.0 && (y1 as f32) > baseline - 2.0 && (y1 as f32) < baseline + 12.0, "{:?}", line.bbox);
        assert!(line.confidence > 0.8, "{}", line.confidence);
    }
}

#[test]
fn verify_uses_tesseract_for_cyrillic_and_greek() {
    require(&["rus", "ell", "eng"]);
    for (text, language) in [("Съешь же ещё этих мягких булок", "rus"), ("Καλημέρα κόσμε", "ell"), ("Привет PDF мир", "rus+eng")]
    {
        let image = common::line(text, 36.0, 12);
        let verdict = verify(common::ppocr(), &image, text).unwrap();
        assert_eq!(verdict.reader, Reader::Tesseract { language: language.into() });
        assert!(verdict.matches, "{verdict:?}");
        let other = verify(common::ppocr(), &image, "Καλημέρα κόσμο").unwrap();
        assert!(!other.matches, "{other:?}");
    }
}

#[test]
fn verify_reads_text_on_a_panel_over_a_busy_picture() {
    require(&["rus", "ell", "heb"]);
    // Blocks of colour, a pale panel 8 px in from the edges, dark text on it: as a typeset text
    // cut from a photograph. Tesseract 5.3 on the whole picture reads the panel's edges as `|`;
    // verify reads the lines PP-OCR's detector finds.
    let mut image = RgbImage::from_fn(400, 80, |x, y| {
        let v = ((x / 9).wrapping_mul(2_654_435_761) ^ (y / 9).wrapping_mul(40_503)) >> 3;
        Rgb([(v % 200) as u8 + 30, (v / 7 % 200) as u8 + 30, (v / 49 % 200) as u8 + 30])
    });
    for y in 8..72 {
        for x in 8..392 {
            image.put_pixel(x, y, Rgb([235, 232, 220]));
        }
    }
    // Hebrew is drawn right to left: its letters reversed (the test rasteriser has no bidi).
    for (text, drawn) in [
        ("Свежий хлеб", "Свежий хлеб".to_string()),
        ("Καλή όρεξη", "Καλή όρεξη".into()),
        ("שלום עולם", "שלום עולם".chars().rev().collect()),
    ] {
        let mut picture = image.clone();
        common::draw_text(&mut picture, &drawn, 40.0, (20.0, 54.0), Rgb([20, 20, 30]));
        let verdict = verify(common::ppocr(), &picture, text).unwrap();
        assert!(verdict.matches && verdict.read == text, "{verdict:?}");
    }
}

#[test]
fn verify_reads_accented_latin_with_european_packs() {
    require(&["eng", "deu", "fra", "spa"]);
    let text = "Él está en Sevilla, garçon";
    let verdict = verify(common::ppocr(), &common::line(text, 36.0, 12), text).unwrap();
    assert!(verdict.matches && verdict.reader == Reader::Tesseract { language: "fra+spa".into() }, "{verdict:?}");
}

#[test]
fn missing_packs_and_bad_pictures_are_errors() {
    require(&["eng"]);
    let image = common::line("HELLO", 32.0, 8);
    match Tesseract::read(&image, "eng+xyz") {
        Err(OcrError::LanguageMissing { language, installed }) => {
            assert_eq!(language, "xyz");
            assert!(installed.iter().any(|l| l == "eng"));
        }
        other => panic!("{other:?}"),
    }
    let message = Tesseract::read(&image, "xyz").unwrap_err().to_string();
    assert!(message.contains("scripts/setup-ocr.sh") && message.contains("tesseract-ocr-xyz"), "{message}");
    assert!(matches!(Tesseract::read(&RgbImage::new(5, 0), "eng"), Err(OcrError::EmptyImage { .. })));
    // A 1×1 picture and a blank one: no text, no failure.
    for blank in [RgbImage::new(1, 1), RgbImage::from_pixel(300, 100, Rgb([255, 255, 255]))] {
        assert_eq!(Tesseract::read(&blank, "eng").unwrap(), "");
        assert!(Tesseract::read_lines(&blank, "eng", PageSegmentation::Auto).unwrap().is_empty());
    }
}

#[test]
fn words_come_with_their_own_boxes() {
    require(&["eng"]);
    let image = common::line("HELLO BRAVE WORLD", 40.0, 20);
    let words = Tesseract::read_words(&image, "eng", PageSegmentation::Line).unwrap();
    assert_eq!(words.iter().map(|w| w.text.as_str()).collect::<Vec<_>>(), ["HELLO", "BRAVE", "WORLD"]);
    let brave_start = 20.0 + common::text_width("HELLO ", 40.0);
    let brave_end = 20.0 + common::text_width("HELLO BRAVE", 40.0);
    let (x0, _, x1, _) = words[1].bbox;
    assert!(
        (x0 as f32 - brave_start).abs() < 6.0 && (x1 as f32 - brave_end).abs() < 6.0,
        "{:?} vs {brave_start}..{brave_end}",
        words[1].bbox
    );
    assert!(words[0].bbox.2 < words[1].bbox.0 && words[1].bbox.2 < words[2].bbox.0);
}
