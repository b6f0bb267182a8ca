//! PP-OCRv4 on pictures of known text drawn with DejaVu Sans. Needs `bash scripts/setup-ocr.sh`
//! (ONNX Runtime from scripts/setup.sh, the models in .models/ppocr/): without them these tests
//! fail, saying so.

mod common;

use image::{Rgb, RgbImage, imageops};
use plantain_ocr::{OcrError, PpOcr, PpOcrOptions, Reader, verify};

fn texts(lines: &[plantain_ocr::TextLine]) -> Vec<&str> {
    lines.iter().map(|l| l.text.as_str()).collect()
}

#[test]
fn reads_single_lines_exactly() {
    for text in ["plantain 2026", "HELLO WORLD", "0123456789", "Edit images with open models", "Price: $12.50"] {
        for px in [20.0, 40.0] {
            let image = common::line(text, px, 10);
            let lines = common::ppocr().read(&image).unwrap();
            assert_eq!(texts(&lines), [text], "{px} px");
            assert!(lines[0].confidence > 0.8, "{text}: {}", lines[0].confidence);
        }
    }
}

#[test]
fn text_touching_the_edges_is_read_whole() {
    // No white at all around the text: its first and last letters touch the picture's edges.
    for text in ["plantain 2026", "Sale 50% off", "GRAND OPENING"] {
        let image = common::line(text, 32.0, 0);
        assert_eq!(texts(&common::ppocr().read(&image).unwrap()), [text]);
    }
}

#[test]
fn found_lines_are_cut_out_upright() {
    let image = common::page(800, 400, &["plantain 2026", "Edit images with open models"], 40.0, 40.0);
    let found = common::ppocr().find_lines(&image).unwrap();
    assert_eq!(found.len(), 2);
    for (line, text) in found.iter().zip(["plantain 2026", "Edit images with open models"]) {
        // Cut at the picture's own scale: about as wide as the text's advance, 30-70 px high.
        let width = common::text_width(text, 40.0);
        assert!((width - 20.0..width + 60.0).contains(&(line.image.width() as f32)), "{text}: {width} {:?}", line.image.dimensions());
        assert!((30..70).contains(&line.image.height()), "{text}: {:?}", line.image.dimensions());
        assert!(line.line.text.is_empty() && line.line.confidence > 0.5);
        assert_eq!(common::ppocr().recognize_line(&line.image).unwrap().0, text);
    }
}

#[test]
fn recognizes_cropped_lines_tight_or_loose() {
    for text in ["plantain 2026", "HELLO WORLD", "31415926"] {
        for pad in [0, 4, 30] {
            let (read, confidence) = common::ppocr().recognize_line(&common::line(text, 32.0, pad)).unwrap();
            assert_eq!(read, text, "pad {pad}");
            assert!(confidence > 0.8, "{text}, pad {pad}: {confidence}");
        }
    }
}

#[test]
fn page_lines_come_in_reading_order_with_their_boxes() {
    let lines = ["plantain 2026", "HELLO WORLD", "Edit images with open models", "0123456789"];
    let (px, margin) = (40.0, 60.0);
    let image = common::page(1024, 768, &lines, px, margin);
    let read = common::ppocr().read(&image).unwrap();
    assert_eq!(texts(&read), lines);
    for (i, (line, text)) in read.iter().zip(lines).enumerate() {
        // The text spans x from the margin to margin + its advance width; its baseline is at
        // margin + px + 1.6 px · i, the x-height above it.
        let (x0, y0, x1, y1) = line.bbox;
        let (left, right) = (margin, margin + common::text_width(text, px));
        let baseline = margin + px + 1.6 * px * i as f32;
        assert!((x0 as f32) <= left + 4.0 && (x0 as f32) >= left - 20.0, "{text}: {:?}", line.bbox);
        assert!((x1 as f32) >= right - 4.0 && (x1 as f32) <= right + 20.0, "{text}: {:?}", line.bbox);
        assert!(
            (y0 as f32) < baseline - 0.7 * px && (y1 as f32) > baseline && (y1 as f32) < baseline + 0.5 * px,
            "{text}: {:?}",
            line.bbox
        );
        // Upright text gives a quadrilateral in the box, its top edge within 2° of level (the
        // minimum rectangle of a region tilts a little with descenders at one end).
        assert!(line.quad.iter().all(|&[x, y]| (x0 as f32..=x1 as f32).contains(&x) && (y0 as f32..=y1 as f32).contains(&y)));
        let [[ax, ay], [bx, by], ..] = line.quad;
        assert!(((by - ay) / (bx - ax)).atan().abs() < 2f32.to_radians(), "{text}: {:?}", line.quad);
    }
    // Boxes of successive lines do not overlap.
    assert!(read.windows(2).all(|w| w[0].bbox.3 <= w[1].bbox.1 + 2), "{:?}", read.iter().map(|l| l.bbox).collect::<Vec<_>>());
}

#[test]
fn words_apart_on_one_line_read_left_to_right() {
    let mut image = RgbImage::from_pixel(900, 200, Rgb([255, 255, 255]));
    // The right word sits 6 px higher than the left one: still one line, left first.
    common::draw_text(&mut image, "LEFT", 40.0, (40.0, 110.0), Rgb([0, 0, 0]));
    common::draw_text(&mut image, "RIGHT", 40.0, (600.0, 104.0), Rgb([0, 0, 0]));
    assert_eq!(texts(&common::ppocr().read(&image).unwrap()), ["LEFT", "RIGHT"]);
}

#[test]
fn coloured_text_on_a_coloured_ground() {
    let mut image = RgbImage::from_pixel(640, 160, Rgb([30, 60, 120]));
    common::draw_text(&mut image, "Open Models 42", 48.0, (30.0, 100.0), Rgb([250, 220, 90]));
    assert_eq!(texts(&common::ppocr().read(&image).unwrap()), ["Open Models 42"]);
}

#[test]
fn upside_down_lines_are_turned() {
    let upright = common::page(800, 300, &["plantain 2026", "HELLO WORLD"], 40.0, 40.0);
    let read = common::ppocr().read(&imageops::rotate180(&upright)).unwrap();
    // Turned half a turn, the bottom line comes first.
    assert_eq!(texts(&read), ["HELLO WORLD", "plantain 2026"]);
}

#[test]
fn blank_pictures_have_no_text() {
    for image in [RgbImage::from_pixel(512, 512, Rgb([255, 255, 255])), RgbImage::from_pixel(300, 40, Rgb([12, 80, 12]))] {
        assert!(common::ppocr().read(&image).unwrap().is_empty());
    }
}

#[test]
fn bad_sizes_give_errors_or_nothing_never_panics() {
    let ppocr = common::ppocr();
    for (w, h) in [(0, 0), (0, 10), (10, 0)] {
        let empty = RgbImage::new(w, h);
        assert!(matches!(ppocr.read(&empty), Err(OcrError::EmptyImage { .. })), "{w}×{h}");
        assert!(matches!(ppocr.recognize_line(&empty), Err(OcrError::EmptyImage { .. })), "{w}×{h}");
    }
    for (w, h) in [(1, 1), (2, 3), (1, 4000), (12_000, 2)] {
        let image = RgbImage::from_pixel(w, h, Rgb([90, 40, 200]));
        assert!(ppocr.read(&image).unwrap().is_empty(), "{w}×{h}");
        let (text, _) = ppocr.recognize_line(&image).unwrap();
        assert!(text.chars().count() <= 2, "{w}×{h}: {text:?}");
    }
}

#[test]
fn huge_pictures_are_shrunk_and_boxes_scaled_back() {
    // 6000×1500 is read at 1984×512 (RapidOCR's 2000 limit); the text is 180 px high.
    let mut image = RgbImage::from_pixel(6000, 1500, Rgb([255, 255, 255]));
    common::draw_text(&mut image, "plantain 2026", 180.0, (1000.0, 800.0), Rgb([0, 0, 0]));
    let read = common::ppocr().read(&image).unwrap();
    assert_eq!(texts(&read), ["plantain 2026"]);
    let (x0, y0, x1, y1) = read[0].bbox;
    let right = 1000.0 + common::text_width("plantain 2026", 180.0);
    assert!((900..1010).contains(&x0) && (x1 as f32 - right).abs() < 80.0, "{:?}", read[0].bbox);
    assert!((600..700).contains(&y0) && (800..900).contains(&y1), "{:?}", read[0].bbox);
}

#[test]
fn options_change_what_is_kept() {
    let image = common::line("HELLO WORLD", 32.0, 10);
    let strict = PpOcr::open_installed().unwrap().with_options(PpOcrOptions { min_confidence: 1.01, ..PpOcrOptions::default() });
    assert!(strict.read(&image).unwrap().is_empty());
    let rapid = PpOcr::open_installed().unwrap().with_options(PpOcrOptions::rapidocr());
    assert_eq!(rapid.options().detector_min_side, 736);
    assert!(rapid.read(&image).unwrap().iter().any(|l| l.text.contains("HELLO")));
}

#[test]
fn verify_compares_normalised_text() {
    let image = common::page(800, 300, &["plantain 2026", "HELLO   WORLD"], 40.0, 40.0);
    let verdict = verify(common::ppocr(), &image, " plantain 2026\nHELLO WORLD ").unwrap();
    assert!(verdict.matches, "{verdict:?}");
    assert_eq!((verdict.read.as_str(), &verdict.reader), ("plantain 2026 HELLO WORLD", &Reader::PpOcr));
    let wrong = verify(common::ppocr(), &image, "plantain 2025 HELLO WORLD").unwrap();
    assert!(!wrong.matches && wrong.read == "plantain 2026 HELLO WORLD", "{wrong:?}");
    assert!(matches!(verify(common::ppocr(), &image, "გამარჯობა"), Err(OcrError::UnsupportedScript(_))));
}

#[test]
fn a_missing_folder_names_the_setup_script() {
    let err = PpOcr::open(std::path::Path::new("/nonexistent/ppocr")).unwrap_err();
    assert!(err.to_string().contains("scripts/setup-ocr.sh"), "{err}");
}

#[test]
fn recognized_characters_lie_where_they_were_drawn() {
    let text = "BIG SUMMER SALE";
    let (px, pad) = (40.0, 10);
    let image = common::line(text, px, pad);
    let spans = common::ppocr().recognize_spans(&image).unwrap();
    assert_eq!(spans.text().trim(), text);
    assert!(spans.confidence > 0.8, "{}", spans.confidence);
    // Each letter's time steps lie within its advance (give or take a recogniser step).
    let solid: Vec<&plantain_ocr::CharSpan> = spans.chars.iter().filter(|c| c.text != " ").collect();
    for (k, (c, span)) in text.chars().filter(|c| *c != ' ').zip(&solid).enumerate() {
        let prefix: String = text.chars().take(text.char_indices().filter(|(_, ch)| *ch != ' ').nth(k).unwrap().0).collect();
        let start = pad as f32 + common::text_width(&prefix, px);
        let end = start + common::text_width(&c.to_string(), px);
        let middle = (span.x0 + span.x1) / 2.0;
        assert!(span.x0 <= span.x1 && (start - 8.0..end + 8.0).contains(&middle), "{c}: {span:?} not in {start}..{end}");
    }
}
