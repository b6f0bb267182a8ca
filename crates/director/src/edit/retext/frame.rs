//! A text box's own frame: `u` along the text, `v` down across it, in pixels of the picture
//! (pixel `(x, y)` covers `[x, x+1) × [y, y+1)`), so that turned text is measured, cut out and
//! drawn upright.

use image::{GrayImage, Luma, Rgb, RgbImage};

pub(super) type Point = [f32; 2];

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Frame {
    origin: Point,
    u: Point,
    v: Point,
    pub width: f32,
    pub height: f32,
}

fn sub(a: Point, b: Point) -> Point {
    [a[0] - b[0], a[1] - b[1]]
}

fn dot(a: Point, b: Point) -> f32 {
    a[0] * b[0] + a[1] * b[1]
}

impl Frame {
    /// The frame of a quadrilateral (top-left, top-right, bottom-right, bottom-left): `u` along
    /// the mean of its top and bottom edges, its size the mean of its opposite sides.
    pub fn of_quad(q: &[Point; 4]) -> Frame {
        let (top, bottom) = (sub(q[1], q[0]), sub(q[2], q[3]));
        let sum = [top[0] + bottom[0], top[1] + bottom[1]];
        let norm = dot(sum, sum).sqrt();
        let u = if norm > 0.0 { [sum[0] / norm, sum[1] / norm] } else { [1.0, 0.0] };
        let v = [-u[1], u[0]];
        let width = (dot(top, u) + dot(bottom, u)) / 2.0;
        let height = (dot(sub(q[3], q[0]), v) + dot(sub(q[2], q[1]), v)) / 2.0;
        Frame { origin: q[0], u, v, width: width.max(0.0), height: height.max(0.0) }
    }

    /// A frame at `origin` turned `angle_deg` clockwise (y points down), of no size.
    pub fn turned(origin: Point, angle_deg: f32) -> Frame {
        let (sin, cos) = angle_deg.to_radians().sin_cos();
        Frame { origin, u: [cos, sin], v: [-sin, cos], width: 0.0, height: 0.0 }
    }

    /// An upright box: x, y, width, height.
    #[cfg(test)]
    pub fn upright(x: f32, y: f32, width: f32, height: f32) -> Frame {
        Frame { origin: [x, y], u: [1.0, 0.0], v: [0.0, 1.0], width, height }
    }

    /// The angle of the text's direction, in degrees clockwise from the x axis (y points down).
    pub fn angle_deg(&self) -> f32 {
        self.u[1].atan2(self.u[0]).to_degrees()
    }

    /// The picture point at frame coordinates `(u, v)`.
    pub fn point(&self, u: f32, v: f32) -> Point {
        [self.origin[0] + u * self.u[0] + v * self.v[0], self.origin[1] + u * self.u[1] + v * self.v[1]]
    }

    /// The frame coordinates of a picture point.
    pub fn coords(&self, p: Point) -> (f32, f32) {
        let d = sub(p, self.origin);
        (dot(d, self.u), dot(d, self.v))
    }

    /// The frame of the sub-box `[u0, u1] × [v0, v1]` (it may reach past this one).
    pub fn sub_box(&self, u0: f32, v0: f32, u1: f32, v1: f32) -> Frame {
        Frame { origin: self.point(u0, v0), width: (u1 - u0).max(0.0), height: (v1 - v0).max(0.0), ..*self }
    }

    /// Corners: top-left, top-right, bottom-right, bottom-left.
    pub fn corners(&self) -> [Point; 4] {
        let (w, h) = (self.width, self.height);
        [self.point(0.0, 0.0), self.point(w, 0.0), self.point(w, h), self.point(0.0, h)]
    }

    /// The pixels the box touches, clipped to a `w` × `h` picture: `(x0, y0, x1, y1)`, ends
    /// exclusive (empty when it lies outside).
    pub fn bounds(&self, w: u32, h: u32) -> (u32, u32, u32, u32) {
        let cs = self.corners();
        let fold = |f: fn(f32, f32) -> f32, i: usize, init: f32| cs.iter().map(|c| c[i]).fold(init, f);
        let clip = |v: f32, max: u32| (v.max(0.0) as u32).min(max);
        let (x0, y0) = (clip(fold(f32::min, 0, f32::MAX).floor(), w), clip(fold(f32::min, 1, f32::MAX).floor(), h));
        let (x1, y1) = (clip(fold(f32::max, 0, f32::MIN).ceil(), w), clip(fold(f32::max, 1, f32::MIN).ceil(), h));
        (x0, y0, x1.max(x0), y1.max(y0))
    }

    /// Whether the centre of pixel `(x, y)` lies in the box.
    pub fn contains_pixel(&self, x: u32, y: u32) -> bool {
        let (u, v) = self.coords([x as f32 + 0.5, y as f32 + 0.5]);
        (0.0..=self.width).contains(&u) && (0.0..=self.height).contains(&v)
    }

    /// 255 on the pixels whose centres lie in the box, on a `w` × `h` mask.
    pub fn mask(&self, w: u32, h: u32) -> GrayImage {
        let mut mask = GrayImage::new(w, h);
        let (x0, y0, x1, y1) = self.bounds(w, h);
        for y in y0..y1 {
            for x in x0..x1 {
                if self.contains_pixel(x, y) {
                    mask.put_pixel(x, y, Luma([255]));
                }
            }
        }
        mask
    }

    /// The box cut out upright, one pixel per frame unit, sampled bilinearly (edge pixels
    /// repeated past the picture). At least 1 × 1.
    pub fn straighten(&self, image: &RgbImage) -> RgbImage {
        let (w, h) = ((self.width.round() as u32).max(1), (self.height.round() as u32).max(1));
        RgbImage::from_fn(w, h, |i, j| Rgb(sample(image, self.point(i as f32 + 0.5, j as f32 + 0.5)).map(|c| c.round() as u8)))
    }
}

/// Bilinear sample of the picture at a point (pixel centres at `x + 0.5`), clamped to its edges.
pub(super) fn sample(image: &RgbImage, p: Point) -> [f32; 3] {
    let (w, h) = image.dimensions();
    if w == 0 || h == 0 {
        return [0.0; 3];
    }
    let x = if p[0].is_finite() { (p[0] - 0.5).clamp(0.0, (w - 1) as f32) } else { 0.0 };
    let y = if p[1].is_finite() { (p[1] - 0.5).clamp(0.0, (h - 1) as f32) } else { 0.0 };
    let (x0, y0) = (x.floor() as u32, y.floor() as u32);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let at = |px: u32, py: u32, c: usize| f32::from(image.get_pixel(px, py)[c]);
    std::array::from_fn(|c| {
        let top = at(x0, y0, c) * (1.0 - fx) + at(x1, y0, c) * fx;
        let bottom = at(x0, y1, c) * (1.0 - fx) + at(x1, y1, c) * fx;
        top * (1.0 - fy) + bottom * fy
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turned_quads_have_their_angle_size_and_inverse() {
        let a = 30f32.to_radians();
        let (u, v) = ([a.cos(), a.sin()], [-a.sin(), a.cos()]);
        let o = [50.0, 20.0];
        let at = |s: f32, t: f32| [o[0] + s * u[0] + t * v[0], o[1] + s * u[1] + t * v[1]];
        let f = Frame::of_quad(&[at(0.0, 0.0), at(80.0, 0.0), at(80.0, 20.0), at(0.0, 20.0)]);
        assert!((f.angle_deg() - 30.0).abs() < 1e-3 && (f.width - 80.0).abs() < 1e-3 && (f.height - 20.0).abs() < 1e-3, "{f:?}");
        let (s, t) = f.coords(f.point(12.5, 7.0));
        assert!((s - 12.5).abs() < 1e-3 && (t - 7.0).abs() < 1e-3);
        let sub = f.sub_box(10.0, 0.0, 30.0, 20.0);
        assert!((sub.point(0.0, 0.0)[0] - at(10.0, 0.0)[0]).abs() < 1e-3);
    }

    #[test]
    fn upright_boxes_mask_and_straighten_their_pixels() {
        let image = RgbImage::from_fn(20, 10, |x, y| Rgb([x as u8 * 10, y as u8 * 10, 0]));
        let f = Frame::upright(5.0, 2.0, 4.0, 3.0);
        assert_eq!(f.bounds(20, 10), (5, 2, 9, 5));
        assert_eq!(imageproc_area(&f.mask(20, 10)), 12);
        let crop = f.straighten(&image);
        assert_eq!(crop.dimensions(), (4, 3));
        assert_eq!(crop.get_pixel(0, 0).0, [50, 20, 0]);
        assert_eq!(crop.get_pixel(3, 2).0, [80, 40, 0]);
        assert_eq!(Frame::upright(30.0, 30.0, 5.0, 5.0).bounds(20, 10), (20, 10, 20, 10));
    }

    fn imageproc_area(mask: &GrayImage) -> usize {
        mask.pixels().filter(|p| p.0[0] > 0).count()
    }
}
