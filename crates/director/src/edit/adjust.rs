//! Light and colour as exact image maths: no model, the same bytes every time, applied through
//! a weight map (255 = fully, 0 = not at all) so a change can be limited to the subject or the
//! background with soft edges.

use image::{GrayImage, Rgb, RgbImage};

use super::words::Adjustment;

/// Levels added to red (and taken from blue) by "warmer".
const WARM_SHIFT: f32 = 18.0;
const BRIGHT_GAIN: f32 = 1.18;
const DARK_GAIN: f32 = 0.8;
const CONTRAST_MORE: f32 = 1.3;
const CONTRAST_LESS: f32 = 0.7;
const SATURATION_MORE: f32 = 1.4;
const SATURATION_LESS: f32 = 0.55;
/// Standard deviation of film grain, in levels.
const GRAIN_SIGMA: f32 = 10.0;
/// How far a tint moves each pixel towards the colour.
const TINT: f32 = 0.35;
/// Darkening at the corners by the vignette.
const VIGNETTE_DEPTH: f32 = 0.45;

fn luma(p: [f32; 3]) -> f32 {
    0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
}

/// A repeatable value in [-1, 1] per pixel (integer hash), for grain.
fn hash_noise(x: u32, y: u32) -> f32 {
    let mut h = (u64::from(x) << 32 | u64::from(y)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= h >> 29;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 32;
    // Sum of two uniforms: a triangular distribution, close enough to grain.
    let a = (h & 0xFFFF) as f32 / 65535.0;
    let b = ((h >> 16) & 0xFFFF) as f32 / 65535.0;
    a + b - 1.0
}

/// The adjusted colour of one pixel at (x, y) of a `w` x `h` picture.
fn adjusted(a: Adjustment, p: [f32; 3], x: u32, y: u32, w: u32, h: u32) -> [f32; 3] {
    let l = luma(p);
    match a {
        Adjustment::Warmer => [p[0] + WARM_SHIFT, p[1] + WARM_SHIFT * 0.25, p[2] - WARM_SHIFT],
        Adjustment::Cooler => [p[0] - WARM_SHIFT, p[1], p[2] + WARM_SHIFT],
        Adjustment::Brighter => p.map(|v| v * BRIGHT_GAIN),
        Adjustment::Darker => p.map(|v| v * DARK_GAIN),
        Adjustment::MoreContrast => p.map(|v| 128.0 + (v - 128.0) * CONTRAST_MORE),
        Adjustment::LessContrast => p.map(|v| 128.0 + (v - 128.0) * CONTRAST_LESS),
        Adjustment::MoreSaturation => p.map(|v| l + (v - l) * SATURATION_MORE),
        Adjustment::LessSaturation => p.map(|v| l + (v - l) * SATURATION_LESS),
        Adjustment::BlackAndWhite => [l, l, l],
        Adjustment::Sepia => [
            0.393 * p[0] + 0.769 * p[1] + 0.189 * p[2],
            0.349 * p[0] + 0.686 * p[1] + 0.168 * p[2],
            0.272 * p[0] + 0.534 * p[1] + 0.131 * p[2],
        ],
        Adjustment::FilmGrain => {
            let n = hash_noise(x, y) * GRAIN_SIGMA * 1.7;
            p.map(|v| v + n)
        }
        Adjustment::Night => [p[0] * 0.45, p[1] * 0.5, p[2] * 0.62 + 18.0],
        Adjustment::Tint(c) => {
            let k = c.rgb().map(f32::from);
            std::array::from_fn(|i| p[i] + TINT * (k[i] - p[i]))
        }
        Adjustment::Vignette => {
            let (u, v) = ((x as f32 + 0.5) / w as f32 - 0.5, (y as f32 + 0.5) / h as f32 - 0.5);
            let r2 = (u * u + v * v) / 0.5;
            p.map(|c| c * (1.0 - VIGNETTE_DEPTH * r2))
        }
    }
}

/// `image` with `a` applied where `weight` says (None: everywhere).
pub fn apply(image: &RgbImage, a: Adjustment, weight: Option<&GrayImage>) -> RgbImage {
    let (w, h) = image.dimensions();
    RgbImage::from_fn(w, h, |x, y| {
        let original = *image.get_pixel(x, y);
        let k = weight.map_or(255, |m| m.get_pixel(x, y).0[0]);
        if k == 0 {
            return original;
        }
        let p = original.0.map(f32::from);
        let q = adjusted(a, p, x, y, w, h);
        let t = f32::from(k) / 255.0;
        Rgb(std::array::from_fn(|c| (p[c] + (q[c] - p[c]) * t).round().clamp(0.0, 255.0) as u8))
    })
}

/// The background blurred (a Gaussian of 1.5% of the short side), the subject kept:
/// `background` is the weight map of the background (255 = background).
pub fn blur_where(image: &RgbImage, background: &GrayImage) -> RgbImage {
    let sigma = (image.width().min(image.height()) as f32 * 0.015).max(1.5);
    let blurred = image::imageops::blur(image, sigma);
    RgbImage::from_fn(image.width(), image.height(), |x, y| {
        let k = background.get_pixel(x, y).0[0];
        let (o, b) = (image.get_pixel(x, y).0, blurred.get_pixel(x, y).0);
        match k {
            0 => Rgb(o),
            255 => Rgb(b),
            _ => {
                let t = f32::from(k) / 255.0;
                Rgb(std::array::from_fn(|c| (f32::from(o[c]) * (1.0 - t) + f32::from(b[c]) * t).round() as u8))
            }
        }
    })
}

/// Shifts the colour of the weighted pixels by `to - from` (each pixel in proportion to its
/// weight): a recolour that keeps shading, texture and anti-aliased edges.
pub fn shift_color(image: &RgbImage, weight: &GrayImage, from: [f32; 3], to: [f32; 3]) -> RgbImage {
    RgbImage::from_fn(image.width(), image.height(), |x, y| {
        let p = image.get_pixel(x, y).0;
        let k = weight.get_pixel(x, y).0[0];
        if k == 0 {
            return Rgb(p);
        }
        let t = f32::from(k) / 255.0;
        Rgb(std::array::from_fn(|c| (f32::from(p[c]) + (to[c] - from[c]) * t).round().clamp(0.0, 255.0) as u8))
    })
}

/// Mean colour of `image`, each pixel weighted by `weight` (None: all alike); black when the
/// weights are all zero.
pub fn mean_color(image: &RgbImage, weight: Option<&GrayImage>) -> [f32; 3] {
    let mut sum = [0f64; 3];
    let mut n = 0f64;
    for (x, y, p) in image.enumerate_pixels() {
        let k = weight.map_or(1.0, |m| f64::from(m.get_pixel(x, y).0[0]));
        if k > 0.0 {
            for (acc, v) in sum.iter_mut().zip(p.0) {
                *acc += f64::from(v) * k;
            }
            n += k;
        }
    }
    if n == 0.0 { [0.0; 3] } else { sum.map(|s| (s / n) as f32) }
}

#[cfg(test)]
mod tests {
    use image::Luma;

    use super::*;

    #[test]
    fn adjustments_move_the_right_way_and_respect_the_weight() {
        let img = RgbImage::from_fn(32, 32, |x, y| Rgb([100 + x as u8, 120, 90 + y as u8]));
        let half = GrayImage::from_fn(32, 32, |x, _| Luma([if x < 16 { 255 } else { 0 }]));
        let warm = apply(&img, Adjustment::Warmer, Some(&half));
        assert!(warm.get_pixel(3, 3).0[0] > img.get_pixel(3, 3).0[0]);
        assert!(warm.get_pixel(3, 3).0[2] < img.get_pixel(3, 3).0[2]);
        assert_eq!(warm.get_pixel(20, 3), img.get_pixel(20, 3));
        let bw = apply(&img, Adjustment::BlackAndWhite, None);
        assert!(bw.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]));
        let dark = apply(&img, Adjustment::Darker, None);
        assert!(dark.pixels().zip(img.pixels()).all(|(d, o)| d.0[1] < o.0[1]));
        assert_eq!(apply(&img, Adjustment::FilmGrain, None), apply(&img, Adjustment::FilmGrain, None));
        let v = apply(&img, Adjustment::Vignette, None);
        assert!(v.get_pixel(0, 0).0[1] < v.get_pixel(16, 16).0[1]);
    }

    #[test]
    fn shift_and_blur_keep_unweighted_pixels() {
        let img = RgbImage::from_fn(40, 30, |x, y| Rgb([(x * 6) as u8, (y * 8) as u8, 50]));
        let none = GrayImage::new(40, 30);
        assert_eq!(blur_where(&img, &none), img);
        assert_eq!(shift_color(&img, &none, [0.0; 3], [255.0; 3]), img);
        let all = GrayImage::from_pixel(40, 30, Luma([255]));
        let shifted = shift_color(&img, &all, [10.0, 10.0, 10.0], [20.0, 10.0, 0.0]);
        assert_eq!(shifted.get_pixel(5, 5).0, [40, 40, 40]);
    }
}
