//! Reading input images safely and writing outputs atomically.

use std::path::Path;

use anyhow::{Context, Result};

/// Inputs larger than this on a side are refused before decoding.
pub const MAX_INPUT_SIDE: u32 = 8192;
/// Decoder memory cap: stops decompression bombs whose header lies about nothing.
const MAX_DECODE_BYTES: u64 = 512 * 1024 * 1024;

fn reader(path: &Path) -> Result<image::ImageReader<std::io::BufReader<std::fs::File>>> {
    let mut r = image::ImageReader::open(path).with_context(|| format!("opening {}", path.display()))?.with_guessed_format()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_INPUT_SIDE);
    limits.max_image_height = Some(MAX_INPUT_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    r.limits(limits);
    Ok(r)
}

pub fn read_rgb(path: &Path) -> Result<image::RgbImage> {
    let img = reader(path)?
        .decode()
        .with_context(|| format!("decoding {} (PNG, JPEG or WebP up to {MAX_INPUT_SIDE}px a side)", path.display()))?;
    Ok(img.to_rgb8())
}

pub fn read_mask(path: &Path) -> Result<image::GrayImage> {
    let img = reader(path)?.decode().with_context(|| format!("decoding mask {}", path.display()))?;
    Ok(img.to_luma8())
}

/// Writes `bytes` (an encoded, stamped image) next to its destination and renames it into
/// place, so a failure never leaves a half-written file.
pub fn write_atomic(bytes: &[u8], path: &Path) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp-{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("out"), std::process::id()));
    let result = (|| {
        std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("moving the image to {}", path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_declared_images_are_refused_before_decoding() {
        // A valid PNG header claiming 100000x100000 pixels: the limits stop it.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bomb.png");
        let img = image::RgbImage::new(1, 1);
        let mut buf = std::io::Cursor::new(Vec::new());
        img.write_to(&mut buf, image::ImageFormat::Png).unwrap();
        let mut bytes = buf.into_inner();
        // IHDR width/height live at bytes 16..24.
        bytes[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bytes[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        std::fs::write(&p, bytes).unwrap();
        assert!(read_rgb(&p).is_err());
    }

    #[test]
    fn nothing_is_left_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_atomic(b"x", &dir.path().join("missing/x.png")).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        write_atomic(b"x", &dir.path().join("x.png")).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(std::fs::read(dir.path().join("x.png")).unwrap(), b"x");
    }
}
