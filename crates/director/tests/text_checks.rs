//! The loop's text check with the installed fonts and OCR (scripts/setup.sh installs them): a
//! quoted text is typeset into a painted picture and read back by PP-OCRv4 or Tesseract, in
//! several scripts; a picture where the text was not set does not pass.

use image::{Rgb, RgbImage};
use plantain_director::generate::{CheckKind, InstalledChecks, Plan, examine};

/// A busy painted-looking picture: gradients and stripes the text has to stand out from.
fn painting(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let stripe = if (x / 23 + y / 31) % 2 == 0 { 40 } else { 0 };
        Rgb([(x * 255 / w) as u8, (y * 200 / h) as u8 + stripe, 120u8.wrapping_add((x ^ y) as u8 / 8)])
    })
}

fn installed() -> InstalledChecks {
    let c = InstalledChecks::new();
    assert!(c.reader().is_some(), "the OCR models are not installed: run scripts/setup.sh");
    c
}

fn text_check(c: &InstalledChecks, prompt: &str) -> plantain_director::generate::Check {
    let plan = Plan::new(prompt, None, 768, 512);
    assert_eq!(plan.texts.len(), 1, "{prompt}: {:?}", plan.texts);
    let examined = examine(&plan, painting(768, 512), &c.checkers(&plan));
    let (out, checks) = (examined.image, examined.checks);
    assert_ne!(out, painting(768, 512), "the text was drawn");
    checks.into_iter().find(|k| k.kind == CheckKind::Text).expect("a text check")
}

#[test]
fn quoted_text_is_read_back_by_the_reader_for_its_script() {
    let c = installed();
    let cases = [
        ("a poster of a beach with the words \"GRAND OPENING\" at the top", "PP-OCRv4"),
        ("a shop sign that says \"Bäckerei Müller\"", "Tesseract"),
        ("a banner reading \"ОТКРЫТО\"", "Tesseract (rus"),
        ("a label with the text \"新年快乐\"", ""),
    ];
    for (prompt, reader) in cases {
        let check = text_check(&c, prompt);
        assert!(check.passed(), "{prompt}: {}", check.line());
        assert!(check.detail.contains("read back exactly by") && check.detail.contains(reader), "{prompt}: {}", check.line());
    }
}

#[test]
fn text_that_is_not_in_the_picture_is_not_read() {
    let c = installed();
    let reader = c.reader().unwrap();
    let reading = plantain_director::generate::TextReader::verify(reader, &painting(300, 100), "SALE").unwrap();
    assert!(!reading.matches, "read {:?} from a picture without text", reading.read);
}

/// The scene checker judges what the model drew, not the letters set over it.
#[test]
fn the_scene_is_checked_before_the_text_is_set() {
    use plantain_world::{Background, ColorName, HPos, Lighting, Object, Scene, Shape, Size, VPos, render};
    let c = installed();
    let plan = Plan::new("a red circle in the center on a white background with the text \"SALE\" at the top", None, 256, 256);
    assert!(plan.world.is_some(), "the world part of the prompt is read: {plan:?}");
    let o = Object { shape: Shape::Circle, color: ColorName::Red, size: Size::Large, h: HPos::Center, v: VPos::Middle, jitter: (0.0, 0.0) };
    let scene = Scene { background: Background::Solid(ColorName::White), lighting: Lighting::NEUTRAL, objects: vec![o], relations: vec![] };
    let checks = examine(&plan, render(&scene, 256, 256), &c.checkers(&plan)).checks;
    for kind in [CheckKind::Scene, CheckKind::Text] {
        let k = checks.iter().find(|k| k.kind == kind).expect("the check ran");
        assert!(k.passed(), "{}", k.line());
    }
}
