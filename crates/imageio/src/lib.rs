//! plantain-imageio: input images — base64, MIME type checked against the bytes, size and
//! pixel limits (no decompression bombs), decoding — masks, and the output formats plantain
//! writes ([`MediaFormat`], [`encode`], [`decode`]). Errors are typed and their
//! messages name the input, so a server can hand them to its client as they are.

pub mod composite;

use std::io::Cursor;

use base64::Engine as _;
use image::{GrayImage, RgbImage, RgbaImage};
use sha2::{Digest, Sha256};

/// What an input image may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded image, bytes.
    pub max_image_bytes: usize,
    /// Largest image in decoded pixels (width x height): decompression bombs stop here.
    pub max_input_pixels: u64,
    /// Longest image side.
    pub max_input_side: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_image_bytes: 7_000_000, max_input_pixels: 40_000_000, max_input_side: 8192 }
    }
}

/// A refused input image; the message names the input (`what`) and says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

impl InputError {
    fn new(m: impl Into<String>) -> Self {
        InputError(m.into())
    }
}

pub const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A decoded, checked input image.
#[derive(Clone)]
pub struct InputImage {
    /// The bytes as received (for C2PA ingredients: only their hash goes into the manifest).
    pub bytes: Vec<u8>,
    pub rgba: RgbaImage,
    pub mime: &'static str,
    /// sha256 of `bytes`, hex.
    pub hash: String,
}

impl std::fmt::Debug for InputImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InputImage({} {}x{} sha256:{})", self.mime, self.rgba.width(), self.rgba.height(), &self.hash[..12])
    }
}

impl InputImage {
    pub fn rgb(&self) -> RgbImage {
        image::DynamicImage::ImageRgba8(self.rgba.clone()).to_rgb8()
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Decodes base64 (standard or URL-safe alphabet, padding optional, whitespace ignored).
pub fn decode_base64(data: &str, what: &str) -> Result<Vec<u8>, InputError> {
    let cleaned: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let url = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new().with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    lenient.decode(&cleaned).or_else(|_| url.decode(&cleaned)).map_err(|e| InputError::new(format!("{what}: invalid base64 data: {e}")))
}

/// A picture that could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("not an image plantain can read: {0} bytes that are not PNG, JPEG or WebP")]
    NotAnImage(usize),
    #[error("not an image plantain can read: {0}")]
    Decode(String),
    #[error("encoding the output: {0}")]
    Encode(String),
}

/// The file formats plantain writes and signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum MediaFormat {
    Png,
    Jpeg,
    WebP,
}

impl MediaFormat {
    pub fn mime(self) -> &'static str {
        match self {
            MediaFormat::Png => "image/png",
            MediaFormat::Jpeg => "image/jpeg",
            MediaFormat::WebP => "image/webp",
        }
    }

    /// Recognises the format from the first bytes (see [`sniff`]).
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        match sniff(bytes)? {
            "image/png" => Some(MediaFormat::Png),
            "image/jpeg" => Some(MediaFormat::Jpeg),
            "image/webp" => Some(MediaFormat::WebP),
            _ => None,
        }
    }

    /// From a file extension (`png`, `jpg`/`jpeg`, `webp`).
    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext.to_ascii_lowercase().as_str() {
            "png" => Some(MediaFormat::Png),
            "jpg" | "jpeg" => Some(MediaFormat::Jpeg),
            "webp" => Some(MediaFormat::WebP),
            _ => None,
        }
    }
}

/// Largest image side [`decode`] accepts, and its decoded pixels budget.
pub const MAX_SIDE: u32 = 16384;
const MAX_ALLOC: u64 = 1 << 30;

/// Decodes PNG/JPEG/WebP bytes with size limits (no decompression bombs).
pub fn decode(bytes: &[u8]) -> Result<RgbImage, CodecError> {
    let fmt = match MediaFormat::sniff(bytes) {
        Some(MediaFormat::Png) => image::ImageFormat::Png,
        Some(MediaFormat::Jpeg) => image::ImageFormat::Jpeg,
        Some(MediaFormat::WebP) => image::ImageFormat::WebP,
        None => return Err(CodecError::NotAnImage(bytes.len())),
    };
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), fmt);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    Ok(reader.decode().map_err(|e| CodecError::Decode(e.to_string()))?.to_rgb8())
}

/// Encodes pixels as PNG, JPEG (quality 92) or lossless WebP.
pub fn encode(img: &RgbImage, format: MediaFormat) -> Result<Vec<u8>, CodecError> {
    let mut buf = Cursor::new(Vec::new());
    let r = match format {
        MediaFormat::Png => img.write_to(&mut buf, image::ImageFormat::Png),
        MediaFormat::Jpeg => image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 92).encode_image(img),
        MediaFormat::WebP => img.write_to(&mut buf, image::ImageFormat::WebP),
    };
    r.map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(buf.into_inner())
}

/// `img` with `matte` as its alpha channel (255 = opaque), encoded as `format`: a transparent
/// cut-out. JPEG has no alpha channel and is refused.
pub fn encode_with_alpha(img: &RgbImage, matte: &image::GrayImage, format: MediaFormat) -> Result<Vec<u8>, CodecError> {
    if matte.dimensions() != img.dimensions() {
        return Err(CodecError::Encode(format!(
            "the alpha channel is {}x{}, the picture {}x{}",
            matte.width(),
            matte.height(),
            img.width(),
            img.height()
        )));
    }
    let rgba = image::RgbaImage::from_fn(img.width(), img.height(), |x, y| {
        let [r, g, b] = img.get_pixel(x, y).0;
        image::Rgba([r, g, b, matte.get_pixel(x, y).0[0]])
    });
    let mut buf = Cursor::new(Vec::new());
    let r = match format {
        MediaFormat::Png => rgba.write_to(&mut buf, image::ImageFormat::Png),
        MediaFormat::WebP => rgba.write_to(&mut buf, image::ImageFormat::WebP),
        MediaFormat::Jpeg => return Err(CodecError::Encode("JPEG has no transparency: write a cut-out as PNG or WebP".into())),
    };
    r.map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(buf.into_inner())
}

/// The usual file extension for an image MIME type (`png` for anything unknown).
pub fn file_extension(mime: &str) -> &'static str {
    match mime {
        "image/jpeg" => "jpg",
        "image/webp" => "webp",
        _ => "png",
    }
}

/// The image format the bytes really are, from their first bytes.
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() >= 12
        && &bytes[4..8] == b"ftyp"
        && (&bytes[8..12] == b"heic" || &bytes[8..12] == b"heix" || &bytes[8..12] == b"mif1")
    {
        Some("image/heic")
    } else {
        None
    }
}

fn normalise_mime(m: &str) -> String {
    let m = m.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match m.as_str() {
        "image/jpg" | "image/pjpeg" => "image/jpeg".into(),
        "image/x-png" => "image/png".into(),
        _ => m,
    }
}

/// Checks and decodes one input image. `declared` is the client's MIME type (checked against
/// the bytes, never trusted); `what` names the input in error messages.
pub fn decode_input(bytes: Vec<u8>, declared: Option<&str>, limits: &Limits, what: &str) -> Result<InputImage, InputError> {
    if bytes.len() > limits.max_image_bytes {
        return Err(InputError::new(format!(
            "{what}: image is {} bytes, over the limit of {} bytes per image",
            bytes.len(),
            limits.max_image_bytes
        )));
    }
    let actual = sniff(&bytes);
    if let Some(d) = declared.filter(|d| !d.trim().is_empty()) {
        let d = normalise_mime(d);
        if !d.starts_with("image/") {
            return Err(InputError::new(format!("{what}: unsupported MIME type {d:?}; send image/png, image/jpeg or image/webp")));
        }
        if let Some(a) = actual
            && a != d
        {
            return Err(InputError::new(format!("{what}: mimeType says {d} but the data is {a}")));
        }
    }
    let (mime, fmt) = match actual {
        Some("image/png") => ("image/png", image::ImageFormat::Png),
        Some("image/jpeg") => ("image/jpeg", image::ImageFormat::Jpeg),
        Some("image/webp") => ("image/webp", image::ImageFormat::WebP),
        Some(other) => return Err(InputError::new(format!("{what}: {other} images are not supported; send PNG, JPEG or WebP"))),
        None => return Err(InputError::new(format!("{what}: the data is not a PNG, JPEG or WebP image"))),
    };
    // Dimensions from the header first: a bomb is refused before any pixel is allocated.
    let (w, h) = image::ImageReader::with_format(Cursor::new(&bytes), fmt)
        .into_dimensions()
        .map_err(|e| InputError::new(format!("{what}: unreadable {mime} image: {e}")))?;
    let pixels = u64::from(w) * u64::from(h);
    if w == 0 || h == 0 || w > limits.max_input_side || h > limits.max_input_side || pixels > limits.max_input_pixels {
        return Err(InputError::new(format!(
            "{what}: image is {w}x{h}; the limit is {} px per side and {} pixels",
            limits.max_input_side, limits.max_input_pixels
        )));
    }
    let mut reader = image::ImageReader::with_format(Cursor::new(&bytes), fmt);
    let mut l = image::Limits::default();
    l.max_image_width = Some(limits.max_input_side);
    l.max_image_height = Some(limits.max_input_side);
    l.max_alloc = Some(limits.max_input_pixels.saturating_mul(8).max(1 << 20));
    reader.limits(l);
    let img = reader.decode().map_err(|e| InputError::new(format!("{what}: could not decode the {mime} image: {e}")))?;
    let hash = sha256_hex(&bytes);
    Ok(InputImage { rgba: img.to_rgba8(), bytes, mime, hash })
}

/// OpenAI mask semantics → the engine's: fully transparent pixels (alpha 0) are where to edit,
/// which the engine wants white. A mask without an alpha channel is read as white = edit.
pub fn openai_mask(mask: &InputImage, has_alpha: bool) -> GrayImage {
    let (w, h) = mask.rgba.dimensions();
    GrayImage::from_fn(w, h, |x, y| {
        let p = mask.rgba.get_pixel(x, y).0;
        if has_alpha {
            image::Luma([if p[3] == 0 { 255 } else { 0 }])
        } else {
            let l = (u32::from(p[0]) * 299 + u32::from(p[1]) * 587 + u32::from(p[2]) * 114) / 1000;
            image::Luma([if l >= 128 { 255 } else { 0 }])
        }
    })
}

/// Whether a PNG/WebP carries transparency information worth reading as a mask.
pub fn has_alpha(img: &InputImage) -> bool {
    img.rgba.pixels().any(|p| p.0[3] != 255)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        RgbImage::new(w, h).write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn checks_mime_against_bytes() {
        let l = Limits::default();
        assert!(decode_input(png(4, 4), Some("image/png"), &l, "x").is_ok());
        let e = decode_input(png(4, 4), Some("image/jpeg"), &l, "x").unwrap_err();
        assert!(e.0.contains("image/png"), "{}", e.0);
        assert!(decode_input(b"hello".to_vec(), None, &l, "x").is_err());
        assert!(decode_input(png(4, 4), Some("text/plain"), &l, "x").is_err());
    }

    #[test]
    fn refuses_bombs_from_the_header() {
        let l = Limits { max_input_pixels: 100, ..Limits::default() };
        let e = decode_input(png(20, 20), None, &l, "x").unwrap_err();
        assert!(e.0.contains("20x20"), "{}", e.0);
    }

    #[test]
    fn base64_variants() {
        assert_eq!(decode_base64("aGk=", "x").unwrap(), b"hi");
        assert_eq!(decode_base64("aGk", "x").unwrap(), b"hi");
        assert!(decode_base64("@@@", "x").is_err());
    }
}
