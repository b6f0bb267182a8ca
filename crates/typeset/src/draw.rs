//! Drawing on the picture: the text's coverage mask, the pixels around it, the backing panel
//! and the glyphs, all composited in linear light.

use image::{Rgb, RgbImage};

use crate::colour::{PanelPaint, relative_luminance, to_linear, to_srgb};
use crate::layout::{IRect, Laid};

/// The coverage of a whole text (0 to 1) over `rect`, in picture coordinates: glyphs that
/// overlap (joined Arabic letters, stacked marks) are united as a·b ↦ a + b − ab, so that each
/// pixel is composited once.
pub(crate) struct Coverage {
    pub rect: IRect,
    pub alpha: Vec<f32>,
}

impl Coverage {
    /// The coverage of `laid` shifted by `(dx, dy)`, clipped to a `width` × `height` picture.
    pub fn of(laid: &Laid, (dx, dy): (i32, i32), width: u32, height: u32) -> Coverage {
        let rect = laid.ink.translate(dx, dy).clip(width, height);
        let mut cov = Coverage { rect, alpha: vec![0.0; area(rect)] };
        for mask in &laid.masks {
            let m = mask.rect.translate(dx, dy);
            for y in m.y0.max(rect.y0)..m.y1.min(rect.y1) {
                for x in m.x0.max(rect.x0)..m.x1.min(rect.x1) {
                    let a = mask.coverage[((y - m.y0) * m.width() + x - m.x0) as usize];
                    let i = cov.index(x, y);
                    let c = &mut cov.alpha[i];
                    let a = a as f32 / 255.0;
                    *c = *c + a - *c * a;
                }
            }
        }
        cov
    }

    fn index(&self, x: i32, y: i32) -> usize {
        ((y - self.rect.y0) * self.rect.width() + x - self.rect.x0) as usize
    }

    fn at(&self, x: i32, y: i32) -> f32 {
        let r = self.rect;
        if x < r.x0 || y < r.y0 || x >= r.x1 || y >= r.y1 { 0.0 } else { self.alpha[self.index(x, y)] }
    }
}

fn area(r: IRect) -> usize {
    (r.width().max(0) * r.height().max(0)) as usize
}

/// The relative luminances of the pixels under the glyphs (coverage of at least a quarter) and
/// within `radius` pixels of them (a square neighbourhood): the ground the text is read against.
pub(crate) fn ground_luminances(image: &RgbImage, cov: &Coverage, radius: i32) -> Vec<f32> {
    let ground = cov.rect.pad(radius).clip(image.width(), image.height());
    let (w, h) = (ground.width().max(0) as usize, ground.height().max(0) as usize);
    // Dilate the inked pixels by `radius`, rows then columns.
    let inked: Vec<bool> = (0..w * h).map(|i| cov.at(ground.x0 + (i % w) as i32, ground.y0 + (i / w) as i32) >= 0.25).collect();
    let rows = dilate(&inked, w, h, radius as usize, 1, w);
    let near = dilate(&rows, h, w, radius as usize, w, 1);
    (0..w * h)
        .filter(|i| near[*i])
        .map(|i| {
            let (x, y) = (ground.x0 as u32 + (i % w) as u32, ground.y0 as u32 + (i / w) as u32);
            relative_luminance(*image.get_pixel(x, y))
        })
        .collect()
}

/// A one-dimensional maximum filter of radius `r` over a grid of `lines` lines of `len`
/// cells, cells `step` apart and lines `stride` apart.
fn dilate(cells: &[bool], len: usize, lines: usize, r: usize, step: usize, stride: usize) -> Vec<bool> {
    let mut out = vec![false; cells.len()];
    for line in 0..lines {
        let at = |i: usize| line * stride + i * step;
        let mut last_set: Option<usize> = None;
        // Forward: cells up to r after a set cell; backward: up to r before one.
        for i in 0..len {
            if cells[at(i)] {
                last_set = Some(i);
            }
            out[at(i)] = last_set.is_some_and(|s| i - s <= r);
        }
        let mut next_set: Option<usize> = None;
        for i in (0..len).rev() {
            if cells[at(i)] {
                next_set = Some(i);
            }
            out[at(i)] |= next_set.is_some_and(|s| s - i <= r);
        }
    }
    out
}

/// Composites `colour` at opacity `a` (0 to 1) over one pixel, in linear light.
fn blend(px: &mut Rgb<u8>, colour: Rgb<u8>, a: f32) {
    if a <= 0.0 {
        return;
    }
    for (bg, fg) in px.0.iter_mut().zip(colour.0) {
        let mixed = a * to_linear(fg) + (1.0 - a) * to_linear(*bg);
        *bg = to_srgb(mixed);
    }
}

/// Draws the text's coverage in `colour`.
pub(crate) fn draw_text(image: &mut RgbImage, cov: &Coverage, colour: Rgb<u8>) {
    let r = cov.rect;
    for y in r.y0..r.y1 {
        for x in r.x0..r.x1 {
            blend(image.get_pixel_mut(x as u32, y as u32), colour, cov.at(x, y));
        }
    }
}

/// Draws a panel over `rect` (clipped to the picture) with corners rounded to `radius`,
/// antialiased.
pub(crate) fn draw_panel(image: &mut RgbImage, rect: IRect, radius: f32, paint: PanelPaint) {
    let r = rect.clip(image.width(), image.height());
    // At least half a pixel, so that the straight edges are whole pixels.
    let half = (rect.width().min(rect.height()) as f32 / 2.0).max(0.5);
    let radius = radius.clamp(0.5, half);
    for y in r.y0..r.y1 {
        for x in r.x0..r.x1 {
            let inside = rounded_coverage(rect, radius, x as f32 + 0.5, y as f32 + 0.5);
            blend(image.get_pixel_mut(x as u32, y as u32), paint.colour, paint.opacity * inside);
        }
    }
}

/// How much of the pixel centred at `(px, py)` lies inside `rect` with rounded corners, 0 to 1
/// (a one-pixel ramp across the corner arcs).
fn rounded_coverage(rect: IRect, radius: f32, px: f32, py: f32) -> f32 {
    let cx = px.clamp(rect.x0 as f32 + radius, rect.x1 as f32 - radius);
    let cy = py.clamp(rect.y0 as f32 + radius, rect.y1 as f32 - radius);
    let dist = ((px - cx).powi(2) + (py - cy).powi(2)).sqrt();
    (radius - dist + 0.5).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dilation_reaches_radius_and_no_further() {
        // One set cell in a 7 × 1 row, radius 2.
        let cells = [false, false, false, true, false, false, false];
        let out = dilate(&cells, 7, 1, 2, 1, 7);
        assert_eq!(out, [false, true, true, true, true, true, false]);
    }

    #[test]
    fn panel_is_opaque_inside_and_rounded_at_corners() {
        let mut img = RgbImage::from_pixel(20, 20, Rgb([255, 255, 255]));
        let rect = IRect { x0: 2, y0: 2, x1: 18, y1: 18 };
        draw_panel(&mut img, rect, 5.0, PanelPaint { colour: Rgb([0, 0, 0]), opacity: 1.0 });
        assert_eq!(img.get_pixel(10, 10).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(2, 10).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(2, 2).0, [255, 255, 255], "corner cut");
        assert_eq!(img.get_pixel(1, 10).0, [255, 255, 255], "outside");
    }

    #[test]
    fn blending_is_in_linear_light() {
        let mut px = Rgb([0, 0, 0]);
        blend(&mut px, Rgb([255, 255, 255]), 0.5);
        // Half of white in linear light is sRGB 188, not 128.
        assert_eq!(px.0, [188, 188, 188]);
    }
}
