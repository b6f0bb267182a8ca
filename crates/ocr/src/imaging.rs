//! Pixels in and out of the networks: resizing, bands, straightened crops, and input tensors.

use std::borrow::Cow;

use image::imageops::{self, FilterType};
use image::{Rgb, RgbImage};
use ndarray::Array4;

use crate::geometry::{Homography, Point, distance};

/// The height of the recogniser's and classifier's input.
pub(crate) const LINE_HEIGHT: u32 = 48;

/// The image at `(width, height)` (bilinear, averaging when shrinking), or itself if already so.
pub(crate) fn resized(image: &RgbImage, (width, height): (u32, u32)) -> Cow<'_, RgbImage> {
    if image.dimensions() == (width, height) {
        Cow::Borrowed(image)
    } else {
        Cow::Owned(imageops::resize(image, width, height, FilterType::Triangle))
    }
}

/// The image with `pad` black rows above and below.
pub(crate) fn banded(image: RgbImage, pad: u32) -> RgbImage {
    if pad == 0 {
        return image;
    }
    let mut out = RgbImage::new(image.width(), image.height() + 2 * pad);
    imageops::replace(&mut out, &image, 0, i64::from(pad));
    out
}

/// The picture enlarged (Catmull-Rom) to `height` if it is lower, keeping its shape.
pub(crate) fn at_least_high(image: RgbImage, height: u32) -> RgbImage {
    if image.height() >= height || image.height() == 0 {
        return image;
    }
    let width = (f64::from(image.width()) * f64::from(height) / f64::from(image.height())).round().max(1.0) as u32;
    imageops::resize(&image, width, height, FilterType::CatmullRom)
}

/// The picture with `border` pixels of its background colour ([`background`]) on every side.
pub(crate) fn bordered(image: RgbImage, border: u32) -> RgbImage {
    if border == 0 {
        return image;
    }
    let mut out = RgbImage::from_pixel(image.width() + 2 * border, image.height() + 2 * border, background(&image));
    imageops::replace(&mut out, &image, i64::from(border), i64::from(border));
    out
}

/// The network input for `image`: 1×3×H×`width`, channels in BGR order (PaddleOCR's models
/// were trained on OpenCV's BGR), each byte `v` as `(v / 255 - 0.5) / 0.5`; columns past the
/// image's width stay 0.
pub(crate) fn to_tensor(image: &RgbImage, width: u32) -> Array4<f32> {
    let (w, h) = image.dimensions();
    let mut input = Array4::<f32>::zeros((1, 3, h as usize, width.max(w) as usize));
    for (x, y, pixel) in image.enumerate_pixels() {
        for (plane, channel) in [2, 1, 0].into_iter().enumerate() {
            input[[0, plane, y as usize, x as usize]] = (f32::from(pixel[channel]) / 255.0 - 0.5) / 0.5;
        }
    }
    input
}

/// A text line as the recogniser or classifier takes it: resized to `LINE_HEIGHT` keeping its
/// shape (at most `width` wide), then padded with zeros to `width`.
pub(crate) fn line_tensor(line: &RgbImage, width: u32) -> Array4<f32> {
    let ratio = f64::from(line.width()) / f64::from(line.height());
    let resized_width = ((f64::from(LINE_HEIGHT) * ratio).ceil() as u32).clamp(1, width);
    to_tensor(&resized(line, (resized_width, LINE_HEIGHT)), width)
}

/// The line with a margin of `fraction` of its height added on every side, filled with its
/// background colour ([`background`]).
pub(crate) fn with_margin(line: RgbImage, fraction: f32) -> RgbImage {
    let margin = (f64::from(line.height()) * f64::from(fraction.max(0.0))).round() as u32;
    if margin == 0 || line.width() == 0 || line.height() == 0 {
        return line;
    }
    let mut out = RgbImage::from_pixel(line.width() + 2 * margin, line.height() + 2 * margin, background(&line));
    imageops::replace(&mut out, &line, i64::from(margin), i64::from(margin));
    out
}

/// The per-channel median of the picture's edge pixels: the background of a cut-out line.
fn background(line: &RgbImage) -> Rgb<u8> {
    let (w, h) = line.dimensions();
    let mut edge: Vec<Rgb<u8>> =
        line.enumerate_pixels().filter(|&(x, y, _)| x == 0 || y == 0 || x + 1 == w || y + 1 == h).map(|(_, _, p)| *p).collect();
    if edge.is_empty() {
        return Rgb([255, 255, 255]);
    }
    Rgb(std::array::from_fn(|c| {
        edge.sort_unstable_by_key(|p| p[c]);
        edge[edge.len() / 2][c]
    }))
}

/// A channel differing from the background by more than this marks ink.
const INK_CONTRAST: u8 = 64;

/// The picture cut to the box of its ink (pixels far from the [`background`]), or itself when
/// it has none or all of it is ink.
pub(crate) fn tightened(line: &RgbImage) -> Cow<'_, RgbImage> {
    let bg = background(line);
    let ink = |p: &Rgb<u8>| (0..3).any(|c| p[c].abs_diff(bg[c]) > INK_CONTRAST);
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (x, y, p) in line.enumerate_pixels() {
        if ink(p) {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
        }
    }
    if x0 == u32::MAX || (x1 - x0, y1 - y0) == line.dimensions() {
        return Cow::Borrowed(line);
    }
    Cow::Owned(imageops::crop_imm(line, x0, y0, x1 - x0, y1 - y0).to_image())
}

/// The quadrilateral `quad` (top-left first, clockwise) cut out and straightened into a
/// rectangle as wide as its longer horizontal side and as high as its longer vertical side,
/// sampled bilinearly with edge pixels repeated outside the image; turned a quarter counter-
/// clockwise when it is at least 1.5 times higher than wide (vertical text), as RapidOCR does.
/// `None` when it is less than a pixel across.
pub(crate) fn crop_quad(image: &RgbImage, quad: &[Point; 4]) -> Option<RgbImage> {
    let width = distance(quad[0], quad[1]).max(distance(quad[2], quad[3])) as u32;
    let height = distance(quad[0], quad[3]).max(distance(quad[1], quad[2])) as u32;
    if width == 0 || height == 0 || image.width() == 0 || image.height() == 0 {
        return None;
    }
    let (w, h) = (f64::from(width), f64::from(height));
    let map = Homography::between(&[[0.0, 0.0], [w, 0.0], [w, h], [0.0, h]], quad)?;
    let crop = RgbImage::from_fn(width, height, |x, y| sample(image, map.apply([f64::from(x), f64::from(y)])));
    Some(if f64::from(height) / f64::from(width) >= 1.5 { imageops::rotate270(&crop) } else { crop })
}

/// Bilinear sample at `[x, y]` (pixel centres on integers), clamping to the border.
fn sample(image: &RgbImage, [x, y]: Point) -> Rgb<u8> {
    let (max_x, max_y) = (f64::from(image.width() - 1), f64::from(image.height() - 1));
    let (x, y) = (if x.is_finite() { x.clamp(0.0, max_x) } else { 0.0 }, if y.is_finite() { y.clamp(0.0, max_y) } else { 0.0 });
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let (x0, y0) = (x0 as u32, y0 as u32);
    let (x1, y1) = ((x0 + 1).min(image.width() - 1), (y0 + 1).min(image.height() - 1));
    let at = |px: u32, py: u32, c: usize| f64::from(image.get_pixel(px, py)[c]);
    Rgb(std::array::from_fn(|c| {
        let top = at(x0, y0, c) * (1.0 - fx) + at(x1, y0, c) * fx;
        let bottom = at(x0, y1, c) * (1.0 - fx) + at(x1, y1, c) * fx;
        (top * (1.0 - fy) + bottom * fy).round() as u8
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| Rgb([x as u8, y as u8, 7]))
    }

    #[test]
    fn tensors_are_bgr_normalised_and_padded() {
        let image = RgbImage::from_fn(2, 1, |x, _| if x == 0 { Rgb([255, 0, 51]) } else { Rgb([0, 255, 0]) });
        let t = to_tensor(&image, 4);
        assert_eq!(t.shape(), [1, 3, 1, 4]);
        // Plane 0 is blue, plane 2 red.
        assert_eq!([t[[0, 0, 0, 0]], t[[0, 1, 0, 0]], t[[0, 2, 0, 0]]], [-0.6, -1.0, 1.0]);
        assert_eq!([t[[0, 1, 0, 1]], t[[0, 1, 0, 2]], t[[0, 1, 0, 3]]], [1.0, 0.0, 0.0]);
    }

    #[test]
    fn line_tensors_keep_the_shape() {
        // 100×25 -> 192×48 fits under 320; 1000×10 is squeezed to the full width.
        let t = line_tensor(&gradient(100, 25), 320);
        assert_eq!(t.shape(), [1, 3, 48, 320]);
        assert!(t[[0, 0, 10, 191]] != 0.0 && t[[0, 0, 10, 192]] == 0.0);
        assert_eq!(line_tensor(&gradient(1000, 10), 320).shape(), [1, 3, 48, 320]);
        assert_eq!(line_tensor(&gradient(1, 1), 192).shape(), [1, 3, 48, 192]);
    }

    #[test]
    fn upright_crops_copy_pixels() {
        let image = gradient(50, 40);
        let crop = crop_quad(&image, &[[10.0, 5.0], [30.0, 5.0], [30.0, 15.0], [10.0, 15.0]]).unwrap();
        assert_eq!(crop.dimensions(), (20, 10));
        assert_eq!(*crop.get_pixel(0, 0), Rgb([10, 5, 7]));
        assert_eq!(*crop.get_pixel(19, 9), Rgb([29, 14, 7]));
        assert!(crop_quad(&image, &[[10.0, 5.0], [10.5, 5.0], [10.5, 15.0], [10.0, 15.0]]).is_none());
    }

    #[test]
    fn tall_crops_turn_and_outside_repeats_the_edge() {
        let image = gradient(50, 40);
        let crop = crop_quad(&image, &[[45.0, 0.0], [55.0, 0.0], [55.0, 30.0], [45.0, 30.0]]).unwrap();
        // 10 wide, 30 high: turned to 30×10; its bottom-left pixel was the top-left one.
        assert_eq!(crop.dimensions(), (30, 10));
        assert_eq!(*crop.get_pixel(0, 9), Rgb([45, 0, 7]));
        // Columns past x = 49 repeat the last one.
        assert_eq!(*crop.get_pixel(0, 0), Rgb([49, 0, 7]));
    }

    #[test]
    fn margins_take_the_background() {
        // A grey line with one dark pixel on its edge: the margin is grey.
        let mut line = RgbImage::from_pixel(10, 5, Rgb([200, 210, 220]));
        line.put_pixel(0, 0, Rgb([0, 0, 0]));
        line.put_pixel(5, 2, Rgb([0, 0, 0]));
        let out = with_margin(line.clone(), 0.4);
        assert_eq!(out.dimensions(), (14, 9));
        assert_eq!(*out.get_pixel(0, 0), Rgb([200, 210, 220]));
        assert_eq!(*out.get_pixel(2, 2), Rgb([0, 0, 0]));
        assert_eq!(*out.get_pixel(7, 4), Rgb([0, 0, 0]));
        assert_eq!(with_margin(line.clone(), 0.0), line);
    }

    #[test]
    fn tightening_cuts_to_the_ink() {
        let mut line = RgbImage::from_pixel(30, 20, Rgb([250, 250, 240]));
        for (x, y) in [(5, 4), (20, 12), (9, 8)] {
            line.put_pixel(x, y, Rgb([20, 30, 40]));
        }
        // A faint mark (within the contrast) is not ink.
        line.put_pixel(28, 18, Rgb([200, 200, 200]));
        assert_eq!(tightened(&line).dimensions(), (16, 9));
        assert_eq!(*tightened(&line).get_pixel(0, 0), Rgb([20, 30, 40]));
        let blank = RgbImage::from_pixel(7, 3, Rgb([9, 9, 9]));
        assert!(matches!(tightened(&blank), Cow::Borrowed(_)));
    }

    #[test]
    fn low_pictures_are_enlarged() {
        assert_eq!(at_least_high(gradient(30, 10), 64).dimensions(), (192, 64));
        assert_eq!(at_least_high(gradient(30, 80), 64).dimensions(), (30, 80));
        assert_eq!(bordered(gradient(4, 2), 2).dimensions(), (8, 6));
    }

    #[test]
    fn bands_are_black() {
        let out = banded(gradient(4, 2), 3);
        assert_eq!(out.dimensions(), (4, 8));
        assert_eq!(*out.get_pixel(3, 0), Rgb([0, 0, 0]));
        assert_eq!(*out.get_pixel(3, 4), Rgb([3, 1, 7]));
    }
}
