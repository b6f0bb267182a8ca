//! A contact sheet: one line per script, set automatically on varied backgrounds (gradient,
//! blocky noise, photo-like stripes, a hard light/dark split), each captioned with what the
//! typesetter chose.
//!
//!     cargo run -p plantain-typeset --example sheet -- out.png   (or out.jpg)

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{GenericImage, Rgb, RgbImage};
use plantain_typeset::{Placement, TextSpec, Typeset, Typesetter};

const TILE: (u32, u32) = (560, 315);
const CAPTION: u32 = 26;
const COLUMNS: u32 = 2;

const LINES: [(&str, &str); 10] = [
    ("Latin", "Café déjà vu"),
    ("Cyrillic", "Привет мир"),
    ("Greek", "Καλημέρα κόσμε"),
    ("Arabic", "مرحبا بالعالم"),
    ("Hebrew", "שלום עולם"),
    ("Devanagari", "नमस्ते दुनिया"),
    ("Thai", "สวัสดีชาวโลก"),
    ("Han", "你好世界"),
    ("Japanese", "こんにちは世界"),
    ("Hangul", "안녕하세요 세계"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args().nth(1).ok_or("usage: sheet OUT.png|OUT.jpg")?;
    let typesetter = Typesetter::new();
    let missing = typesetter.missing_families();
    if !missing.is_empty() {
        return Err(format!("fonts missing: {missing:?}; run scripts/setup-fonts.sh").into());
    }
    let rows = (LINES.len() as u32).div_ceil(COLUMNS);
    let mut sheet = RgbImage::from_pixel(TILE.0 * COLUMNS, (TILE.1 + CAPTION) * rows, Rgb([255; 3]));
    for (i, (script, text)) in LINES.iter().enumerate() {
        let background = background(i, TILE.0, TILE.1);
        let set = typesetter.set(&background, text, &TextSpec::default())?;
        let (x, y) = ((i as u32 % COLUMNS) * TILE.0, (i as u32 / COLUMNS) * (TILE.1 + CAPTION));
        sheet.copy_from(&set.image, x, y)?;
        let caption = caption(&typesetter, script, &set)?;
        sheet.copy_from(&caption, x, y + TILE.1)?;
    }
    save(&sheet, &out)?;
    println!("wrote {out}");
    Ok(())
}

/// Saves PNGs with the best compression (the sheet is committed), other formats by extension.
fn save(sheet: &RgbImage, out: &str) -> Result<(), Box<dyn std::error::Error>> {
    if !out.to_ascii_lowercase().ends_with(".png") {
        return Ok(sheet.save(out)?);
    }
    let file = std::io::BufWriter::new(std::fs::File::create(out)?);
    let encoder = PngEncoder::new_with_quality(file, CompressionType::Best, FilterType::Adaptive);
    Ok(sheet.write_with_encoder(encoder)?)
}

/// A white strip naming the script and what was chosen.
fn caption(typesetter: &Typesetter, script: &str, set: &Typeset) -> Result<RgbImage, Box<dyn std::error::Error>> {
    let strip = RgbImage::from_pixel(TILE.0, CAPTION, Rgb([255; 3]));
    let panel = set.panel.as_ref().map_or(String::new(), |p| format!(", panel {:.0}%", p.opacity * 100.0));
    let text =
        format!("{script}: {}, {:.0} px, {}, contrast {:.1}{panel}", set.fonts.join(" + "), set.size_px, set.placement, set.contrast,);
    let spec = TextSpec {
        placement: Placement::Box(6, 2, TILE.0 - 12, CAPTION - 4),
        max_lines: 1,
        size: Some(13.0),
        bold: false,
        ..TextSpec::default()
    };
    Ok(typesetter.set(&strip, &text, &spec)?.image)
}

fn background(i: usize, w: u32, h: u32) -> RgbImage {
    match i % 4 {
        0 => gradient(w, h),
        1 => blocky_noise(w, h, i as u64 + 1),
        2 => stripes(w, h),
        _ => split(w, h),
    }
}

/// A diagonal gradient from dusk blue to warm orange.
fn gradient(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let t = (x as f32 / w as f32 + y as f32 / h as f32) / 2.0;
        let mix = |a: f32, b: f32| (a + (b - a) * t) as u8;
        Rgb([mix(40.0, 250.0), mix(60.0, 160.0), mix(140.0, 60.0)])
    })
}

/// Noise in 6-pixel blocks over the whole colour range: no colour alone is legible on it.
fn blocky_noise(w: u32, h: u32, seed: u64) -> RgbImage {
    let hash = |bx: u32, by: u32| {
        let mut s = seed ^ ((bx as u64) << 32 | by as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        s ^= s >> 29;
        s = s.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        s ^= s >> 32;
        s.to_le_bytes()
    };
    RgbImage::from_fn(w, h, |x, y| {
        let [r, g, b, ..] = hash(x / 6, y / 6);
        Rgb([r, g, b])
    })
}

/// Photo-like: a smooth sky over a field of bright and dark rows.
fn stripes(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let t = y as f32 / h as f32;
        if t < 0.45 {
            let v = 1.0 - t;
            Rgb([(120.0 * v) as u8, (170.0 * v) as u8, (235.0 * v) as u8])
        } else {
            let wave = ((y as f32 * 0.35 + (x as f32 * 0.02).sin() * 6.0).sin() + 1.0) / 2.0;
            Rgb([(40.0 + 150.0 * wave) as u8, (80.0 + 140.0 * wave) as u8, (20.0 + 60.0 * wave) as u8])
        }
    })
}

/// Left half near-white, right half near-black, a soft gradient in each.
fn split(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let shade = (y * 30 / h) as u8;
        if x < w / 2 { Rgb([245 - shade, 240 - shade, 230 - shade]) } else { Rgb([15 + shade, 20 + shade, 30 + shade]) }
    })
}
