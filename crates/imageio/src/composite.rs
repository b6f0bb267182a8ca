//! Pixel-exact compositing for edits: regions as masks (0 = keep, 255 = change), growing and
//! feathering them, pasting an edited picture back so that every pixel outside the region and
//! its feather band is the input's own byte, and counting what changed where it must not.

use image::{GrayImage, Luma, Rgb, RgbImage};

/// The widest feather band an edit may blend over: 16 px or 2% of the short side, whichever
/// is larger.
pub fn max_feather(width: u32, height: u32) -> u32 {
    16.max((width.min(height) as f32 * 0.02).round() as u32)
}

/// The feather band edits use: 1% of the short side, at least 2 px, within [`max_feather`].
pub fn default_feather(width: u32, height: u32) -> u32 {
    ((width.min(height) as f32 * 0.01).round() as u32).clamp(2, max_feather(width, height))
}

/// Pixels of the mask that are not zero.
pub fn area(mask: &GrayImage) -> u64 {
    mask.pixels().filter(|p| p.0[0] > 0).count() as u64
}

/// 255 where `mask >= level`, else 0.
pub fn threshold(mask: &GrayImage, level: u8) -> GrayImage {
    GrayImage::from_fn(mask.width(), mask.height(), |x, y| Luma([if mask.get_pixel(x, y).0[0] >= level { 255 } else { 0 }]))
}

/// Pixel-wise maximum (union) of two masks of one size.
pub fn union(a: &GrayImage, b: &GrayImage) -> GrayImage {
    GrayImage::from_fn(a.width(), a.height(), |x, y| Luma([a.get_pixel(x, y).0[0].max(b.get_pixel(x, y).0[0])]))
}

/// `a` with `b`'s non-zero pixels removed (a protected region cut out of an edit).
pub fn subtract(a: &GrayImage, b: &GrayImage) -> GrayImage {
    GrayImage::from_fn(a.width(), a.height(), |x, y| Luma([if b.get_pixel(x, y).0[0] > 0 { 0 } else { a.get_pixel(x, y).0[0] }]))
}

/// 255 - mask.
pub fn invert(mask: &GrayImage) -> GrayImage {
    GrayImage::from_fn(mask.width(), mask.height(), |x, y| Luma([255 - mask.get_pixel(x, y).0[0]]))
}

/// Distance (in pixels, chamfer 3-4 approximation of the Euclidean distance) from each pixel
/// to the nearest non-zero pixel of `mask`; `f32::INFINITY` when the mask is empty.
pub fn distance_to(mask: &GrayImage) -> Vec<f32> {
    let (w, h) = (mask.width() as usize, mask.height() as usize);
    let big = f32::INFINITY;
    let mut d: Vec<f32> = mask.pixels().map(|p| if p.0[0] > 0 { 0.0 } else { big }).collect();
    let (a, b) = (1.0f32, std::f32::consts::SQRT_2);
    let relax = |d: &mut Vec<f32>, x: usize, y: usize, dx: isize, dy: isize, cost: f32| {
        let (nx, ny) = (x as isize + dx, y as isize + dy);
        if nx >= 0 && ny >= 0 && (nx as usize) < w && (ny as usize) < h {
            let candidate = d[ny as usize * w + nx as usize] + cost;
            if candidate < d[y * w + x] {
                d[y * w + x] = candidate;
            }
        }
    };
    for y in 0..h {
        for x in 0..w {
            for (dx, dy, c) in [(-1, 0, a), (0, -1, a), (-1, -1, b), (1, -1, b)] {
                relax(&mut d, x, y, dx, dy, c);
            }
        }
    }
    for y in (0..h).rev() {
        for x in (0..w).rev() {
            for (dx, dy, c) in [(1, 0, a), (0, 1, a), (1, 1, b), (-1, 1, b)] {
                relax(&mut d, x, y, dx, dy, c);
            }
        }
    }
    d
}

/// The mask grown by `radius` pixels (binary: 255 within the radius of any non-zero pixel).
pub fn dilate(mask: &GrayImage, radius: f32) -> GrayImage {
    let d = distance_to(mask);
    let w = mask.width() as usize;
    GrayImage::from_fn(mask.width(), mask.height(), |x, y| Luma([if d[y as usize * w + x as usize] <= radius { 255 } else { 0 }]))
}

/// The blend weights of a paste-back: 255 on the region (every non-zero pixel of `mask`),
/// falling linearly to 0 across a band of `band` pixels outside it, 0 beyond.
pub fn feathered(mask: &GrayImage, band: u32) -> GrayImage {
    let d = distance_to(mask);
    let w = mask.width() as usize;
    let span = band as f32 + 1.0;
    GrayImage::from_fn(mask.width(), mask.height(), |x, y| {
        let dist = d[y as usize * w + x as usize];
        let v = if dist <= 0.0 { 255.0 } else { (255.0 * (1.0 - dist / span)).max(0.0) };
        Luma([v.round() as u8])
    })
}

/// The edited picture where `alpha` is 255, the original where it is 0 (byte for byte), and a
/// rounded blend between.
///
/// # Panics
/// Never for same-sized inputs; callers check sizes ([`CompositeError`] via [`paste_back`]).
fn blend(original: &RgbImage, edited: &RgbImage, alpha: &GrayImage) -> RgbImage {
    RgbImage::from_fn(original.width(), original.height(), |x, y| {
        let a = alpha.get_pixel(x, y).0[0];
        let (o, e) = (original.get_pixel(x, y), edited.get_pixel(x, y));
        match a {
            0 => *o,
            255 => *e,
            _ => {
                let t = f32::from(a) / 255.0;
                Rgb(std::array::from_fn(|c| (f32::from(o.0[c]) * (1.0 - t) + f32::from(e.0[c]) * t).round() as u8))
            }
        }
    })
}

/// Sizes that do not match.
#[derive(Debug, thiserror::Error)]
#[error("{what} is {got_w}x{got_h}; the picture is {want_w}x{want_h}")]
pub struct CompositeError {
    pub what: &'static str,
    pub got_w: u32,
    pub got_h: u32,
    pub want_w: u32,
    pub want_h: u32,
}

fn same_size(what: &'static str, got: (u32, u32), want: (u32, u32)) -> Result<(), CompositeError> {
    if got == want { Ok(()) } else { Err(CompositeError { what, got_w: got.0, got_h: got.1, want_w: want.0, want_h: want.1 }) }
}

/// Pastes `edited` into `original` with the blend weights `alpha` (see [`feathered`]): outside
/// the weights' support the result is the original, byte for byte.
pub fn paste_back(original: &RgbImage, edited: &RgbImage, alpha: &GrayImage) -> Result<RgbImage, CompositeError> {
    same_size("the edited picture", edited.dimensions(), original.dimensions())?;
    same_size("the mask", alpha.dimensions(), original.dimensions())?;
    Ok(blend(original, edited, alpha))
}

/// Pixels that differ between `a` and `b` where `allowed` is 0: what an edit changed outside
/// its region (must be 0). Pictures of different sizes differ everywhere.
pub fn changed_outside(a: &RgbImage, b: &RgbImage, allowed: &GrayImage) -> u64 {
    if a.dimensions() != b.dimensions() || a.dimensions() != allowed.dimensions() {
        return u64::from(a.width()) * u64::from(a.height());
    }
    a.enumerate_pixels().filter(|&(x, y, p)| allowed.get_pixel(x, y).0[0] == 0 && p != b.get_pixel(x, y)).count() as u64
}

/// Pixels that differ between two same-sized pictures (all of them when sizes differ).
pub fn changed(a: &RgbImage, b: &RgbImage) -> u64 {
    if a.dimensions() != b.dimensions() {
        return u64::from(a.width().max(b.width())) * u64::from(a.height().max(b.height()));
    }
    a.pixels().zip(b.pixels()).filter(|(p, q)| p != q).count() as u64
}

/// PSNR in dB between two same-sized RGB pictures over all 8-bit channels (infinite when
/// identical).
pub fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    let mse = a.as_raw().iter().zip(b.as_raw()).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum::<f64>()
        / a.as_raw().len().max(1) as f64;
    if mse == 0.0 { f64::INFINITY } else { 10.0 * (255.0 * 255.0 / mse).log10() }
}

/// `picture` placed on a larger canvas at (`left`, `top`), the new area filled by repeating
/// the nearest edge pixel (context for a painter), and the mask of the new area.
pub fn extend(picture: &RgbImage, width: u32, height: u32, left: u32, top: u32) -> Result<(RgbImage, GrayImage), CompositeError> {
    let (w, h) = picture.dimensions();
    if left + w > width || top + h > height {
        return Err(CompositeError { what: "the extended canvas", got_w: width, got_h: height, want_w: left + w, want_h: top + h });
    }
    let canvas = RgbImage::from_fn(width, height, |x, y| {
        let sx = x.saturating_sub(left).min(w - 1);
        let sy = y.saturating_sub(top).min(h - 1);
        *picture.get_pixel(sx, sy)
    });
    let inside = |x: u32, y: u32| x >= left && x < left + w && y >= top && y < top + h;
    let mask = GrayImage::from_fn(width, height, |x, y| Luma([if inside(x, y) { 0 } else { 255 }]));
    Ok((canvas, mask))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(w: u32, h: u32, x0: u32, y0: u32, s: u32) -> GrayImage {
        GrayImage::from_fn(w, h, |x, y| Luma([if (x0..x0 + s).contains(&x) && (y0..y0 + s).contains(&y) { 255 } else { 0 }]))
    }

    #[test]
    fn paste_back_keeps_every_byte_outside_the_band() {
        let original = RgbImage::from_fn(64, 48, |x, y| Rgb([x as u8 * 3, y as u8 * 5, 77]));
        let edited = RgbImage::from_pixel(64, 48, Rgb([1, 2, 3]));
        let region = square(64, 48, 20, 10, 10);
        let alpha = feathered(&region, 4);
        let out = paste_back(&original, &edited, &alpha).unwrap();
        assert_eq!(changed_outside(&original, &out, &alpha), 0);
        // Inside the region: the edit; 5 px away and beyond: the original.
        assert_eq!(out.get_pixel(25, 15), &Rgb([1, 2, 3]));
        assert_eq!(out.get_pixel(35, 15), original.get_pixel(35, 15));
        // In the band: between the two.
        let mid = out.get_pixel(31, 15).0[0];
        assert!(mid > 1 && mid < original.get_pixel(31, 15).0[0]);
        let grown = dilate(&region, 4.0);
        // 4 px along the axes, not the full square's corner (distance 4 * sqrt 2).
        assert_eq!(grown.get_pixel(16, 15).0[0], 255);
        assert_eq!(grown.get_pixel(33, 15).0[0], 255);
        assert_eq!(grown.get_pixel(34, 15).0[0], 0);
        assert_eq!(grown.get_pixel(16, 6).0[0], 0);
        assert!(paste_back(&original, &RgbImage::new(10, 10), &alpha).is_err());
    }

    #[test]
    fn feather_limits_and_masks() {
        assert_eq!(max_feather(512, 512), 16);
        assert_eq!(max_feather(4096, 2304), 46);
        assert_eq!(default_feather(512, 384), 4);
        assert_eq!(default_feather(100, 100), 2);
        let a = square(8, 8, 0, 0, 4);
        let b = square(8, 8, 2, 2, 4);
        assert_eq!(area(&union(&a, &b)), 28);
        assert_eq!(area(&subtract(&a, &b)), 12);
        assert_eq!(area(&invert(&a)), 48);
        assert!(distance_to(&GrayImage::new(3, 3)).iter().all(|d| d.is_infinite()));
    }

    #[test]
    fn extend_keeps_the_picture_and_masks_the_new_area() {
        let p = RgbImage::from_fn(10, 8, |x, y| Rgb([x as u8, y as u8, 9]));
        let (canvas, mask) = extend(&p, 16, 8, 3, 0).unwrap();
        for (x, y, px) in p.enumerate_pixels() {
            assert_eq!(canvas.get_pixel(x + 3, y), px);
            assert_eq!(mask.get_pixel(x + 3, y).0[0], 0);
        }
        assert_eq!(canvas.get_pixel(0, 5), p.get_pixel(0, 5));
        assert_eq!(area(&mask), 6 * 8);
        assert!(extend(&p, 12, 8, 3, 0).is_err());
    }
}
