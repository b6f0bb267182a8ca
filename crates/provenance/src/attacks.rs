//! The image manipulations the watermark benchmark applies (also used by the robustness tests).
//! One implementation serves both plantain's watermark and the `invisible-watermark` baseline.

use image::imageops::{self, FilterType};
use image::{ImageFormat, Rgb, RgbImage};

/// One attack.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Attack {
    None,
    Jpeg(u8),
    /// Lossy WebP at this quality (needs the `bench` feature: libwebp).
    WebP(u8),
    /// Resize to this fraction of each side; `back` resizes again to the original size.
    Resize {
        factor: f32,
        back: bool,
    },
    /// Remove this fraction of each side (60% of it on the left/top, 40% on the right/bottom).
    Crop(f32),
    /// Rotate by this many degrees about the centre, same canvas, black corners.
    Rotate(f32),
    /// Multiply every channel by this factor.
    Brightness(f32),
    /// Scale the distance from mid-grey (128) by this factor.
    Contrast(f32),
    /// Add Gaussian noise with this standard deviation (8-bit levels), fixed seed.
    Noise(f32),
    /// PNG → JPEG 85 → PNG, as when a screenshot is shared.
    Screenshot,
}

impl Attack {
    /// The attacks of the benchmark, in table order.
    pub fn all() -> Vec<Attack> {
        vec![
            Attack::None,
            Attack::Jpeg(90),
            Attack::Jpeg(70),
            Attack::Jpeg(50),
            Attack::WebP(80),
            Attack::Resize { factor: 0.75, back: false },
            Attack::Resize { factor: 0.75, back: true },
            Attack::Resize { factor: 0.5, back: false },
            Attack::Resize { factor: 0.5, back: true },
            Attack::Crop(0.10),
            Attack::Crop(0.25),
            Attack::Rotate(2.0),
            Attack::Rotate(-2.0),
            Attack::Brightness(1.2),
            Attack::Brightness(0.8),
            Attack::Contrast(1.3),
            Attack::Contrast(0.7),
            Attack::Noise(5.0),
            Attack::Screenshot,
        ]
    }

    pub fn name(&self) -> String {
        match *self {
            Attack::None => "none".into(),
            Attack::Jpeg(q) => format!("JPEG q{q}"),
            Attack::WebP(q) => format!("WebP q{q}"),
            Attack::Resize { factor, back: false } => format!("resize {}%", (factor * 100.0).round()),
            Attack::Resize { factor, back: true } => format!("resize {}% and back", (factor * 100.0).round()),
            Attack::Crop(f) => format!("crop {}% off the edges", (f * 100.0).round()),
            Attack::Rotate(d) => format!("rotate {d:+}°"),
            Attack::Brightness(f) => format!("brightness {:+}%", ((f - 1.0) * 100.0).round()),
            Attack::Contrast(f) => format!("contrast {:+}%", ((f - 1.0) * 100.0).round()),
            Attack::Noise(s) => format!("Gaussian noise σ={s}"),
            Attack::Screenshot => "PNG→JPEG 85→PNG".into(),
        }
    }

    /// Applies the attack. `Err` only for codec failures (or WebP without the `bench` feature).
    pub fn apply(&self, img: &RgbImage) -> Result<RgbImage, String> {
        let (w, h) = img.dimensions();
        Ok(match *self {
            Attack::None => img.clone(),
            Attack::Jpeg(q) => jpeg(img, q)?,
            Attack::WebP(q) => webp(img, q)?,
            Attack::Resize { factor, back } => {
                let nw = ((w as f32 * factor).round() as u32).max(1);
                let nh = ((h as f32 * factor).round() as u32).max(1);
                let small = imageops::resize(img, nw, nh, FilterType::CatmullRom);
                if back { imageops::resize(&small, w, h, FilterType::CatmullRom) } else { small }
            }
            Attack::Crop(f) => {
                let (cw, ch) = ((w as f32 * f).round() as u32, (h as f32 * f).round() as u32);
                let (x0, y0) = ((cw as f32 * 0.6) as u32, (ch as f32 * 0.6) as u32);
                imageops::crop_imm(img, x0, y0, w - cw, h - ch).to_image()
            }
            Attack::Rotate(deg) => rotate(img, deg),
            Attack::Brightness(f) => map(img, |v| v * f),
            Attack::Contrast(f) => map(img, |v| (v - 128.0) * f + 128.0),
            Attack::Noise(s) => noise(img, s),
            Attack::Screenshot => {
                let png = decode(&encode(img, ImageFormat::Png)?)?;
                decode(&encode(&jpeg(&png, 85)?, ImageFormat::Png)?)?
            }
        })
    }
}

fn map(img: &RgbImage, f: impl Fn(f32) -> f32) -> RgbImage {
    let mut out = img.clone();
    out.as_mut().iter_mut().for_each(|v| *v = f(f32::from(*v)).round().clamp(0.0, 255.0) as u8);
    out
}

fn encode(img: &RgbImage, fmt: ImageFormat) -> Result<Vec<u8>, String> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, fmt).map_err(|e| e.to_string())?;
    Ok(buf.into_inner())
}

fn decode(bytes: &[u8]) -> Result<RgbImage, String> {
    Ok(image::load_from_memory(bytes).map_err(|e| e.to_string())?.to_rgb8())
}

/// JPEG at quality `q` (the image crate's encoder: IJG tables, 4:2:2), decoded again.
pub fn jpeg(img: &RgbImage, q: u8) -> Result<RgbImage, String> {
    let mut buf = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, q).encode_image(img).map_err(|e| e.to_string())?;
    decode(&buf)
}

#[cfg(feature = "bench")]
fn webp(img: &RgbImage, q: u8) -> Result<RgbImage, String> {
    let enc = webp::Encoder::from_rgb(img.as_raw(), img.width(), img.height());
    let bytes = enc.encode(f32::from(q));
    decode(&bytes)
}

#[cfg(not(feature = "bench"))]
fn webp(_img: &RgbImage, _q: u8) -> Result<RgbImage, String> {
    Err("lossy WebP needs the `bench` feature (libwebp)".into())
}

fn rotate(img: &RgbImage, deg: f32) -> RgbImage {
    let (w, h) = img.dimensions();
    let (c, s) = (deg.to_radians().cos(), deg.to_radians().sin());
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    RgbImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
        // Inverse rotation: where this output pixel comes from.
        let sx = c * dx + s * dy + cx - 0.5;
        let sy = -s * dx + c * dy + cy - 0.5;
        if sx < 0.0 || sy < 0.0 || sx > (w - 1) as f32 || sy > (h - 1) as f32 {
            return Rgb([0, 0, 0]);
        }
        let (x0, y0) = (sx.floor() as u32, sy.floor() as u32);
        let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
        let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
        let p = |x, y| img.get_pixel(x, y).0.map(f32::from);
        let (a, b, cc, d) = (p(x0, y0), p(x1, y0), p(x0, y1), p(x1, y1));
        Rgb([0, 1, 2].map(|i| {
            let top = a[i] + (b[i] - a[i]) * fx;
            let bot = cc[i] + (d[i] - cc[i]) * fx;
            (top + (bot - top) * fy).round().clamp(0.0, 255.0) as u8
        }))
    })
}

fn noise(img: &RgbImage, sigma: f32) -> RgbImage {
    let mut state = 0x853c_49e6_748f_ea9bu64;
    let mut uniform = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let mut out = img.clone();
    for v in out.as_mut().iter_mut() {
        let g = (-2.0 * uniform().ln()).sqrt() * (2.0 * std::f64::consts::PI * uniform()).cos();
        *v = (f64::from(*v) + g * f64::from(sigma)).round().clamp(0.0, 255.0) as u8;
    }
    out
}
