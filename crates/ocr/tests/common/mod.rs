//! Pictures with known text, drawn with DejaVu Sans (Debian's fonts-dejavu-core), and the
//! installed readers. Shared by the tests and the examples.
#![allow(dead_code)]

use std::sync::OnceLock;

use ab_glyph::{Font, FontVec, PxScale, ScaleFont, point};
use image::{Rgb, RgbImage};
use plantain_ocr::PpOcr;

pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

pub fn font() -> &'static FontVec {
    static FONT_DATA: OnceLock<FontVec> = OnceLock::new();
    FONT_DATA.get_or_init(|| {
        let bytes = std::fs::read(FONT).unwrap_or_else(|e| panic!("{FONT}: {e}; install Debian's fonts-dejavu-core"));
        FontVec::try_from_vec(bytes).unwrap_or_else(|e| panic!("{FONT}: {e}"))
    })
}

/// The installed PP-OCR, loaded once; fails, naming the set-up script, when it is not installed.
pub fn ppocr() -> &'static PpOcr {
    static PPOCR: OnceLock<PpOcr> = OnceLock::new();
    PPOCR.get_or_init(|| PpOcr::open_installed().unwrap_or_else(|e| panic!("PP-OCR is not usable: {e}")))
}

/// Width in pixels of `text` at `px` pixels per em in DejaVu Sans.
pub fn text_width(text: &str, px: f32) -> f32 {
    text_width_in(font(), text, px)
}

/// Width in pixels of `text` at `px` pixels per em in `font` (no shaping: glyphs and kerning).
pub fn text_width_in(font: &FontVec, text: &str, px: f32) -> f32 {
    let font = font.as_scaled(PxScale::from(px));
    let mut width = 0.0;
    let mut previous = None;
    for c in text.chars() {
        let id = font.glyph_id(c);
        if let Some(p) = previous {
            width += font.kern(p, id);
        }
        width += font.h_advance(id);
        previous = Some(id);
    }
    width
}

/// Draws `text` in DejaVu Sans with its baseline's left end at `(x, baseline)`, in `color`.
pub fn draw_text(image: &mut RgbImage, text: &str, px: f32, origin: (f32, f32), color: Rgb<u8>) {
    draw_text_in(font(), image, text, px, origin, color);
}

/// Draws `text` in `font`, glyph after glyph (no shaping: fine for alphabets, Chinese,
/// kana and hangul syllables; not for Arabic or Devanagari), over what is there.
pub fn draw_text_in(font: &FontVec, image: &mut RgbImage, text: &str, px: f32, (x, baseline): (f32, f32), color: Rgb<u8>) {
    let font = font.as_scaled(PxScale::from(px));
    let mut caret = x;
    let mut previous = None;
    for c in text.chars() {
        let id = font.glyph_id(c);
        if let Some(p) = previous {
            caret += font.kern(p, id);
        }
        let glyph = id.with_scale_and_position(px, point(caret, baseline));
        caret += font.h_advance(id);
        previous = Some(id);
        if let Some(outline) = font.outline_glyph(glyph) {
            let bounds = outline.px_bounds();
            outline.draw(|gx, gy, coverage| {
                let (px_x, px_y) = (bounds.min.x as i64 + i64::from(gx), bounds.min.y as i64 + i64::from(gy));
                blend(image, px_x, px_y, color, coverage);
            });
        }
    }
}

/// Mixes `color` into the pixel at `(x, y)` by `coverage`, if it is in the picture.
fn blend(image: &mut RgbImage, x: i64, y: i64, color: Rgb<u8>, coverage: f32) {
    if x < 0 || y < 0 || x >= i64::from(image.width()) || y >= i64::from(image.height()) {
        return;
    }
    let pixel = image.get_pixel_mut(x as u32, y as u32);
    for c in 0..3 {
        let (under, over) = (f32::from(pixel[c]), f32::from(color[c]));
        pixel[c] = (under + (over - under) * coverage.clamp(0.0, 1.0)).round() as u8;
    }
}

/// A white picture with each line of `lines` drawn in black at `px` pixels per em, left-aligned
/// at `margin`, the first baseline at `margin + px`, lines `1.6 px` apart.
pub fn page(width: u32, height: u32, lines: &[&str], px: f32, margin: f32) -> RgbImage {
    let mut image = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    for (i, line) in lines.iter().enumerate() {
        draw_text(&mut image, line, px, (margin, margin + px + i as f32 * 1.6 * px), Rgb([0, 0, 0]));
    }
    image
}

/// One line of text in DejaVu Sans, framed with `pad` pixels of white around it.
pub fn line(text: &str, px: f32, pad: u32) -> RgbImage {
    line_in(font(), text, px, pad)
}

/// One line of text in `font`, framed with `pad` pixels of white around it.
pub fn line_in(font: &FontVec, text: &str, px: f32, pad: u32) -> RgbImage {
    let width = text_width_in(font, text, px).ceil() as u32 + 2 * pad;
    let height = (px * 1.2).ceil() as u32 + 2 * pad;
    let mut image = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    draw_text_in(font, &mut image, text, px, (pad as f32, pad as f32 + px * 0.95), Rgb([0, 0, 0]));
    image
}
