//! The anti-aliased renderer (tiny-skia): background, shapes, then the lighting over the whole
//! picture. Deterministic; any size from 32 px to 4096 px a side, any aspect ratio.

use image::RgbImage;
use tiny_skia::{FillRule, Paint, Path, PathBuilder, Pixmap, Rect, Transform};

use crate::scene::{Background, ColorName, LightDir, Lighting, Object, Scene, Shape};

/// Brightness change at the lit / far edge of the picture (+-6 %).
pub const LIGHT_GRADIENT: f32 = 0.06;
/// Red is raised and blue lowered by this much (0..255 scale) at warmth 1 (the reverse at -1).
pub const WARMTH_SHIFT: f32 = 12.0;

/// Renders the scene at `width` x `height` pixels.
///
/// Objects sit at the centres of the canvas's 3x3 grid cells plus their jitter; their size is
/// relative to the canvas's short side. A split background's horizon is the pixel row
/// `round(height / 2)`.
pub fn render(scene: &Scene, width: u32, height: u32) -> RgbImage {
    let mut pixmap = Pixmap::new(width.max(1), height.max(1)).expect("canvas size within tiny-skia's limits");
    paint_background(&mut pixmap, scene.background);
    for object in &scene.objects {
        paint_object(&mut pixmap, object, width, height);
    }
    let mut image = RgbImage::new(width, height);
    for (pixel, out) in pixmap.pixels().iter().zip(image.pixels_mut()) {
        // Every paint is opaque, so the premultiplied values are the colour itself.
        out.0 = [pixel.red(), pixel.green(), pixel.blue()];
    }
    apply_lighting(&mut image, scene.lighting);
    image
}

/// The pixel row where the ground of a split background starts.
pub fn horizon_row(height: u32) -> u32 {
    (height as f32 * Background::HORIZON).round() as u32
}

fn solid_paint(color: ColorName) -> Paint<'static> {
    let [r, g, b] = color.rgb();
    let mut paint = Paint::default();
    paint.set_color_rgba8(r, g, b, 255);
    paint.anti_alias = true;
    paint
}

fn paint_background(pixmap: &mut Pixmap, background: Background) {
    let (w, h) = (pixmap.width(), pixmap.height());
    match background {
        Background::Solid(c) => {
            let [r, g, b] = c.rgb();
            pixmap.fill(tiny_skia::Color::from_rgba8(r, g, b, 255));
        }
        Background::Split { sky, ground } => {
            let [r, g, b] = sky.rgb();
            pixmap.fill(tiny_skia::Color::from_rgba8(r, g, b, 255));
            let top = horizon_row(h);
            if top < h {
                let rect = Rect::from_xywh(0.0, top as f32, w as f32, (h - top) as f32).expect("non-empty ground");
                pixmap.fill_rect(rect, &solid_paint(ground), Transform::identity(), None);
            }
        }
    }
}

fn paint_object(pixmap: &mut Pixmap, object: &Object, width: u32, height: u32) {
    let (cx, cy) = object.center_px(width, height);
    let extent = object.extent_px(width, height);
    if let Some(path) = shape_path(object.shape, cx, cy, extent) {
        let rule = if object.shape == Shape::Ring { FillRule::EvenOdd } else { FillRule::Winding };
        pixmap.fill_path(&path, &solid_paint(object.color), rule, Transform::identity(), None);
    }
}

/// Inner / outer radius of a ring: thick enough to stay a ring at 10 px, with a clear hole.
pub const RING_INNER_RATIO: f32 = 0.54;
/// Inner / outer radius of the star's five points.
pub const STAR_INNER_RATIO: f32 = 0.45;

/// The outline of `shape` centred at (cx, cy) inside a square box of side `extent` (pixels).
/// A ring is two circles, to be filled even-odd.
pub fn shape_path(shape: Shape, cx: f32, cy: f32, extent: f32) -> Option<Path> {
    let s = extent;
    // Unit-box coordinates (-0.5..0.5, y down) to pixels.
    let p = |x: f32, y: f32| (cx + x * s, cy + y * s);
    let mut pb = PathBuilder::new();
    match shape {
        Shape::Circle => pb.push_circle(cx, cy, 0.5 * s),
        Shape::Ring => {
            pb.push_circle(cx, cy, 0.5 * s);
            pb.push_circle(cx, cy, 0.5 * s * RING_INNER_RATIO);
        }
        Shape::Square => {
            let half = 0.43;
            polygon(&mut pb, &[p(-half, -half), p(half, -half), p(half, half), p(-half, half)]);
        }
        Shape::Diamond => polygon(&mut pb, &[p(0.0, -0.5), p(0.4, 0.0), p(0.0, 0.5), p(-0.4, 0.0)]),
        Shape::Triangle => {
            let h = 0.5 * 3f32.sqrt() / 2.0;
            polygon(&mut pb, &[p(0.0, -h), p(0.5, h), p(-0.5, h)]);
        }
        Shape::Cross => {
            let (a, t) = (0.48, 0.17);
            polygon(
                &mut pb,
                &[p(-t, -a), p(t, -a), p(t, -t), p(a, -t), p(a, t), p(t, t), p(t, a), p(-t, a), p(-t, t), p(-a, t), p(-a, -t), p(-t, -t)],
            );
        }
        Shape::Star => {
            // Outer radius so the star is `extent` wide; shifted down so its box is centred.
            let outer = 0.5 / (72f32.to_radians().sin());
            let shift = outer * (1.0 - 36f32.to_radians().cos()) / 2.0;
            let points: Vec<(f32, f32)> = (0..10)
                .map(|i| {
                    let r = if i % 2 == 0 { outer } else { outer * STAR_INNER_RATIO };
                    let angle = (-90.0 + 36.0 * i as f32).to_radians();
                    p(r * angle.cos(), r * angle.sin() + shift)
                })
                .collect();
            polygon(&mut pb, &points);
        }
        Shape::Heart => {
            // Two lobes meeting in a notch at the top, sides curving into a point at the bottom.
            let dy = 0.015;
            let q = |x: f32, y: f32| p(x, y + dy);
            let start = q(0.0, 0.43);
            pb.move_to(start.0, start.1);
            let mut cubic = |c1: (f32, f32), c2: (f32, f32), end: (f32, f32)| {
                let (c1, c2, end) = (q(c1.0, c1.1), q(c2.0, c2.1), q(end.0, end.1));
                pb.cubic_to(c1.0, c1.1, c2.0, c2.1, end.0, end.1);
            };
            cubic((-0.2, 0.27), (-0.5, 0.07), (-0.5, -0.17));
            cubic((-0.5, -0.37), (-0.37, -0.46), (-0.25, -0.46));
            cubic((-0.12, -0.46), (-0.03, -0.38), (0.0, -0.27));
            cubic((0.03, -0.38), (0.12, -0.46), (0.25, -0.46));
            cubic((0.37, -0.46), (0.5, -0.37), (0.5, -0.17));
            cubic((0.5, 0.07), (0.2, 0.27), (0.0, 0.43));
            pb.close();
        }
    }
    pb.finish()
}

fn polygon(pb: &mut PathBuilder, points: &[(f32, f32)]) {
    pb.move_to(points[0].0, points[0].1);
    for &(x, y) in &points[1..] {
        pb.line_to(x, y);
    }
    pb.close();
}

/// The brightness factor and the red/blue shift the lighting applies at pixel (x, y).
pub fn lighting_at(lighting: Lighting, x: u32, y: u32, width: u32, height: u32) -> (f32, f32) {
    let u = (x as f32 + 0.5) / width as f32;
    let v = (y as f32 + 0.5) / height as f32;
    // +1 at the lit edge, -1 at the far edge.
    let towards_light = match lighting.direction {
        None => 0.0,
        Some(LightDir::Left) => 1.0 - 2.0 * u,
        Some(LightDir::Right) => 2.0 * u - 1.0,
        Some(LightDir::Top) => 1.0 - 2.0 * v,
    };
    (1.0 + LIGHT_GRADIENT * towards_light, WARMTH_SHIFT * lighting.warmth.clamp(-1.0, 1.0))
}

fn apply_lighting(image: &mut RgbImage, lighting: Lighting) {
    if lighting.direction.is_none() && lighting.warmth == 0.0 {
        return;
    }
    let (w, h) = image.dimensions();
    for (x, y, pixel) in image.enumerate_pixels_mut() {
        let (gain, shift) = lighting_at(lighting, x, y, w, h);
        let [r, g, b] = pixel.0.map(|c| c as f32 * gain);
        pixel.0 = [r + shift, g, b - shift].map(|c| c.round().clamp(0.0, 255.0) as u8);
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::sample::{Split, sample_scene};
    use crate::scene::{HPos, Size, VPos};

    fn close(a: [u8; 3], b: [u8; 3], tolerance: i32) -> bool {
        (0..3).all(|i| (a[i] as i32 - b[i] as i32).abs() <= tolerance)
    }

    #[test]
    fn rendering_is_deterministic() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        for _ in 0..10 {
            let scene = sample_scene(&mut rng, Split::Train);
            assert_eq!(render(&scene, 96, 64), render(&scene, 96, 64));
        }
    }

    #[test]
    fn objects_and_background_have_their_colours_at_every_size_and_aspect() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        // Lighting moves colours by at most ~6 % + 12.
        let tolerance = 30;
        for (w, h) in [(32, 32), (64, 64), (256, 32), (32, 256), (97, 41), (4096, 512), (512, 4096)] {
            let scene = sample_scene(&mut rng, Split::Train);
            let image = render(&scene, w, h);
            assert_eq!(image.dimensions(), (w, h));
            assert!(close(image.get_pixel(0, 0).0, scene.background.sky().rgb(), tolerance));
            assert!(close(image.get_pixel(w - 1, h - 1).0, scene.background.ground().rgb(), tolerance));
            for o in &scene.objects {
                // A ring is empty at its centre; every other shape is solid there.
                let (cx, cy) = o.center_px(w, h);
                let (x, y) = if o.shape == Shape::Ring { (cx + 0.38 * o.extent_px(w, h), cy) } else { (cx, cy) };
                let pixel = image.get_pixel(x as u32, y as u32).0;
                assert!(close(pixel, o.color.rgb(), tolerance), "{w}x{h} {o:?}: {pixel:?}");
            }
        }
    }

    #[test]
    fn edges_are_anti_aliased_and_shapes_scale_with_the_short_side() {
        let object = Object {
            shape: Shape::Circle,
            color: ColorName::Black,
            size: Size::Large,
            h: HPos::Center,
            v: VPos::Middle,
            jitter: (0.0, 0.0),
        };
        let scene = Scene {
            background: Background::Solid(ColorName::White),
            lighting: Lighting::NEUTRAL,
            objects: vec![object],
            relations: vec![],
        };
        let coverage = |w: u32, h: u32| {
            let image = render(&scene, w, h);
            let blends = image.pixels().filter(|p| p.0[0] > 40 && p.0[0] < 230).count();
            let dark: f32 = image.pixels().map(|p| (245.0 - p.0[0] as f32) / 220.0).sum();
            (blends, dark)
        };
        let (blends, area) = coverage(128, 128);
        assert!(blends > 20, "no anti-aliased rim: {blends}");
        let expected = std::f32::consts::PI * (0.5 * Size::Large.extent() * 128.0).powi(2);
        assert!((area - expected).abs() < 0.02 * expected, "{area} vs {expected}");
        // On a 8:1 canvas the circle keeps its size relative to the short side.
        let (_, wide) = coverage(1024, 128);
        assert!((wide - expected).abs() < 0.02 * expected, "{wide} vs {expected}");
    }

    #[test]
    fn lighting_is_a_subtle_gradient_and_tint() {
        let scene = Scene {
            background: Background::Solid(ColorName::Gray),
            lighting: Lighting { direction: Some(LightDir::Left), warmth: 1.0 },
            objects: vec![],
            relations: vec![],
        };
        let image = render(&scene, 100, 10);
        let (left, right) = (image.get_pixel(0, 5).0, image.get_pixel(99, 5).0);
        assert!(left[1] > right[1] + 10 && left[1] < right[1] + 25, "{left:?} {right:?}");
        assert!(left[0] > left[2] + 15, "warm light raises red over blue: {left:?}");
        let top_lit = Scene { lighting: Lighting { direction: Some(LightDir::Top), warmth: -1.0 }, ..scene };
        let image = render(&top_lit, 10, 100);
        assert!(image.get_pixel(5, 0).0[1] > image.get_pixel(5, 99).0[1] + 10);
        assert!(image.get_pixel(5, 50).0[2] > image.get_pixel(5, 50).0[0] + 15, "cool light raises blue");
    }
}

#[cfg(test)]
mod footprint_tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::sample::{Split, sample_scene};

    /// The pixels an object changes when drawn alone on the scene's background.
    fn footprint(scene: &Scene, object: usize, w: u32, h: u32) -> Vec<(i64, i64)> {
        let bare = Scene { objects: vec![], relations: vec![], ..scene.clone() };
        let alone = Scene { objects: vec![scene.objects[object]], relations: vec![], ..scene.clone() };
        let (a, b) = (render(&bare, w, h), render(&alone, w, h));
        a.enumerate_pixels().filter(|(x, y, p)| b.get_pixel(*x, *y) != *p).map(|(x, y, _)| (x as i64, y as i64)).collect()
    }

    #[test]
    fn objects_never_touch_at_any_size() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let mut pairs = 0;
        for i in 0..300 {
            let scene = sample_scene(&mut rng, if i % 2 == 0 { Split::Train } else { Split::HeldOut });
            if scene.objects.len() < 2 {
                continue;
            }
            let (w, h) = [(64, 64), (96, 48), (48, 96), (256, 32), (32, 256)][i % 5];
            // At least 2 untouched pixels between objects at a 64 px short side, 1 below.
            let required_gap = if w.min(h) >= 64 { 2 } else { 1 };
            let prints: Vec<_> = (0..scene.objects.len()).map(|k| footprint(&scene, k, w, h)).collect();
            for a in 0..prints.len() {
                for b in a + 1..prints.len() {
                    pairs += 1;
                    let gap = prints[a]
                        .iter()
                        .flat_map(|p| prints[b].iter().map(move |q| (p.0 - q.0).abs().max((p.1 - q.1).abs()) - 1))
                        .min()
                        .unwrap();
                    assert!(gap >= required_gap, "{w}x{h}: objects {a} and {b} only {gap} px apart: {}", scene.to_json());
                }
            }
            // The outermost pixels stay background (what the checker reads it from); at 32 px the
            // border gap is below a pixel.
            for (k, print) in prints.iter().enumerate().filter(|_| w.min(h) >= 48) {
                let inside = print.iter().all(|&(x, y)| x > 0 && y > 0 && x < w as i64 - 1 && y < h as i64 - 1);
                assert!(inside, "{w}x{h}: object {k} touches the border: {}", scene.to_json());
            }
        }
        assert!(pairs > 150);
    }
}
