//! The analysis carried to the image's own resolution, for editing: how much of each pixel
//! every found object covers, and the background plate (the picture without its objects).
//!
//! The background model is fitted at the analysis resolution, but its colour ramps are
//! functions of the relative position, so they hold at any size; only the horizon row is
//! re-measured at full size (on the side columns), since a row of the small picture spans
//! several of the large one.

use image::{GrayImage, Luma, Rgb, RgbImage};

use super::{Analysis, BackgroundModel, analyse_parts, closest_on_segment};
use crate::scene::Background;

/// An analysed picture at its own resolution.
#[derive(Clone, Debug)]
pub struct Located {
    pub analysis: Analysis,
    /// Per component of `analysis.components` (same order): how much of each pixel is that
    /// object, 0–255, at the image's size. Each pixel belongs to at most one component.
    pub coverage: Vec<GrayImage>,
    /// The background as it would be without any object, at the image's size.
    pub plate: RgbImage,
    /// First ground row of a split background at the image's size (the height when solid).
    pub horizon: u32,
}

/// Below this (of 255) a pixel is not counted as covered (noise and faint halos).
const COVERAGE_FLOOR: u8 = 20;
/// Rows around the horizon where sky and ground blend (anti-aliasing, blur).
const HORIZON_BAND: f32 = 2.0;

/// Analyses `image` and locates every component at full resolution.
pub fn locate(image: &RgbImage) -> Located {
    let parts = analyse_parts(image);
    let (fw, fh) = image.dimensions();
    let sx = fw as f32 / parts.img.w as f32;
    let sy = fh as f32 / parts.img.h as f32;
    let model = &parts.model;
    let horizon = refine_horizon(image, model, sy);
    let ramp = |x: u32, y: u32| {
        let (u, v) = ((x as f32 + 0.5) / fw as f32, (y as f32 + 0.5) / fh as f32);
        if y < horizon { model.sky.at(u, v) } else { model.ground.at(u, v) }
    };
    let plate = plate(image, model, horizon, &ramp);
    // The background expected under a pixel: on the horizon any blend of sky and ground.
    let expected = |x: u32, y: u32, p: [f32; 3]| {
        if (y as f32 + 0.5 - horizon as f32).abs() <= HORIZON_BAND && horizon < fh {
            let (u, v) = ((x as f32 + 0.5) / fw as f32, (y as f32 + 0.5) / fh as f32);
            closest_on_segment(p, model.sky.at(u, v), model.ground.at(u, v))
        } else {
            ramp(x, y)
        }
    };
    let mut coverage: Vec<GrayImage> = parts
        .found
        .iter()
        .map(|(component, bbox)| {
            let margin = 2.0;
            let x0 = ((bbox.0 as f32 - margin) * sx).floor().max(0.0) as u32;
            let y0 = ((bbox.1 as f32 - margin) * sy).floor().max(0.0) as u32;
            let x1 = (((bbox.2 + 1) as f32 + margin) * sx).ceil().min(fw as f32) as u32;
            let y1 = (((bbox.3 + 1) as f32 + margin) * sy).ceil().min(fh as f32) as u32;
            let object = component.rgb.map(f32::from);
            let mut map = GrayImage::new(fw, fh);
            for y in y0..y1 {
                for x in x0..x1 {
                    let p = image.get_pixel(x, y).0.map(f32::from);
                    let e = expected(x, y, p);
                    map.put_pixel(x, y, Luma([share_of(p, e, object)]));
                }
            }
            map
        })
        .collect();
    keep_strongest(&mut coverage);
    let analysis = Analysis { background: model.background, components: parts.found.into_iter().map(|(c, _)| c).collect() };
    Located { analysis, coverage, plate, horizon }
}

/// Largest correction (levels) the border may make to the fitted ramp: beyond it the border
/// pixel is taken to be an object touching the edge.
const BORDER_TRUST: f32 = 12.0;

/// The background without objects. The lighting is a gradient along one axis, so along the
/// other the background is constant: the plate takes its colours from the border pixels along
/// that axis (exact, even where the rendered picture clamped at 0 or 255, which a linear ramp
/// does not model) and from the fitted ramp where an object touches the border.
fn plate(image: &RgbImage, model: &BackgroundModel, horizon: u32, ramp: &dyn Fn(u32, u32) -> [f32; 3]) -> RgbImage {
    let (fw, fh) = image.dimensions();
    let slope = |axis: usize| (0..3).map(|ch| model.sky.coef[ch][axis].abs() + model.ground.coef[ch][axis].abs()).sum::<f32>();
    let (along_x, along_y) = (slope(1), slope(2));
    let border = |px: u32, py: u32| -> Option<[f32; 3]> {
        let seen = image.get_pixel(px, py).0.map(f32::from);
        let fitted = ramp(px, py);
        (0..3).all(|ch| (seen[ch] - fitted[ch]).abs() <= BORDER_TRUST).then_some(seen)
    };
    RgbImage::from_fn(fw, fh, |x, y| {
        let value = if along_x.max(along_y) < 1.0 {
            None
        } else if along_x >= along_y {
            // Colour depends on the column: read it on the top (sky) or bottom (ground) row.
            border(x, if y < horizon { 0 } else { fh - 1 })
        } else {
            // Colour depends on the row: the two side columns.
            match (border(0, y), border(fw - 1, y)) {
                (Some(l), Some(r)) => Some(std::array::from_fn(|ch| (l[ch] + r[ch]) / 2.0)),
                (one, other) => one.or(other),
            }
        };
        Rgb(value.unwrap_or_else(|| ramp(x, y)).map(|c| c.round().clamp(0.0, 255.0) as u8))
    })
}

/// How far `p` lies from the background `e` towards the object's colour, 0–255.
fn share_of(p: [f32; 3], e: [f32; 3], object: [f32; 3]) -> u8 {
    let axis = [object[0] - e[0], object[1] - e[1], object[2] - e[2]];
    let len2 = axis[0] * axis[0] + axis[1] * axis[1] + axis[2] * axis[2];
    if len2 < 1.0 {
        return 0;
    }
    let t = ((p[0] - e[0]) * axis[0] + (p[1] - e[1]) * axis[1] + (p[2] - e[2]) * axis[2]) / len2;
    let v = (t.clamp(0.0, 1.0) * 255.0).round() as u8;
    if v < COVERAGE_FLOOR { 0 } else { v }
}

/// Where components' boxes overlap, a pixel stays with the one that explains it best.
fn keep_strongest(coverage: &mut [GrayImage]) {
    if coverage.len() < 2 {
        return;
    }
    let (w, h) = coverage[0].dimensions();
    for y in 0..h {
        for x in 0..w {
            let best = (0..coverage.len()).max_by_key(|&i| coverage[i].get_pixel(x, y).0[0]).unwrap_or(0);
            for (i, map) in coverage.iter_mut().enumerate() {
                if i != best {
                    map.put_pixel(x, y, Luma([0]));
                }
            }
        }
    }
}

/// The first ground row at full size: the row near the scaled estimate that best splits the
/// two side columns into sky above and ground below.
fn refine_horizon(image: &RgbImage, model: &BackgroundModel, sy: f32) -> u32 {
    let (fw, fh) = image.dimensions();
    if matches!(model.background, Background::Solid(_)) || fh < 2 {
        return fh;
    }
    let guess = (model.horizon * sy).round() as i64;
    let reach = (2.0 * sy).ceil() as i64 + 2;
    let (lo, hi) = ((guess - reach).max(1), (guess + reach).min(fh as i64 - 1));
    let is_ground = |x: u32, y: u32| {
        let p = image.get_pixel(x, y).0.map(f32::from);
        let v = (y as f32 + 0.5) / fh as f32;
        let u = (x as f32 + 0.5) / fw as f32;
        let d = |c: [f32; 3]| (0..3).map(|i| (p[i] - c[i]).powi(2)).sum::<f32>();
        d(model.ground.at(u, v)) < d(model.sky.at(u, v))
    };
    let cost = |row: i64| {
        (lo - reach..=hi + reach)
            .filter(|&y| y >= 0 && y < fh as i64)
            .map(|y| {
                let ground = [0, fw - 1].iter().filter(|&&x| is_ground(x, y as u32)).count() as i64;
                if y < row { ground } else { 2 - ground }
            })
            .sum::<i64>()
    };
    let best = (lo..=hi).min_by_key(|&row| (cost(row), (row - guess).abs())).unwrap_or(guess.clamp(1, fh as i64 - 1));
    best as u32
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::render::render;
    use crate::sample::{Split, sample_scene};

    #[test]
    fn coverage_holds_every_object_pixel_and_the_plate_is_the_empty_scene() {
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        for (w, h) in [(512, 384), (640, 640), (300, 500)] {
            for _ in 0..6 {
                let scene = sample_scene(&mut rng, Split::Train);
                let image = render(&scene, w, h);
                let empty = render(&crate::scene::Scene { objects: vec![], relations: vec![], ..scene.clone() }, w, h);
                let located = locate(&image);
                assert_eq!(located.coverage.len(), located.analysis.components.len());
                let mut covered_miss = 0;
                let mut object_px = 0;
                let mut plate_off = 0;
                for (x, y, p) in image.enumerate_pixels() {
                    let e = empty.get_pixel(x, y);
                    let differs = (0..3).any(|c| p.0[c].abs_diff(e.0[c]) > 24);
                    let covered = located.coverage.iter().any(|m| m.get_pixel(x, y).0[0] > 0);
                    if differs {
                        object_px += 1;
                        covered_miss += (!covered) as u32;
                    }
                    let plated = located.plate.get_pixel(x, y);
                    plate_off += (0..3).any(|c| plated.0[c].abs_diff(e.0[c]) > 3) as u32;
                }
                assert!(
                    object_px == 0 || covered_miss * 200 <= object_px,
                    "{covered_miss} of {object_px} object pixels uncovered ({w}x{h})"
                );
                assert!(
                    plate_off * 500 <= w * h,
                    "{plate_off} plate pixels off ({w}x{h}, {:?} {:?}): plate {:?} empty {:?} at corners",
                    scene.background,
                    scene.lighting,
                    [located.plate.get_pixel(0, 0), located.plate.get_pixel(w - 1, h - 1)],
                    [empty.get_pixel(0, 0), empty.get_pixel(w - 1, h - 1)]
                );
            }
        }
    }
}
