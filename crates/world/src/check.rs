//! The scene checker: does an image show the scene? No ML, only measurement:
//!
//! 1. the background is estimated from the border pixels: the sky colour from the top edge, the
//!    ground colour from the bottom edge, the horizon from the side edges, and for each a linear
//!    colour ramp (which absorbs the lighting's gradient and tint);
//! 2. pixels far from the expected background form connected components; specks are dropped
//!    and tiny fragments merged into their neighbour;
//! 3. each component gets a colour (nearest palette colour of its most saturated pixels), a
//!    soft coverage map (how much of each pixel is object rather than background, so blur does
//!    not change its area), shape features (hole at the centre, convex-hull solidity, fill of
//!    its box, row/column profiles, harmonics of its radial profile) and a grid cell (its
//!    centroid);
//! 4. the shape is the class whose feature distribution, measured on reference renderings of
//!    every shape at the same pixel size (sharp and blurred), explains the features best;
//! 5. components are matched to the scene's objects by the assignment with the fewest
//!    mismatches, and every attribute is reported.

use std::sync::OnceLock;

use image::RgbImage;
use serde::{Deserialize, Serialize};
use tiny_skia::{FillRule, Paint, Pixmap, Transform};

use crate::caption::Stated;
use crate::render::shape_path;
use crate::scene::{Background, ColorName, HPos, Scene, Shape, VPos};

mod locate;
pub use locate::{Located, locate};

/// Per-object verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectCheck {
    /// A component was matched to this object.
    pub found: bool,
    pub color: bool,
    pub shape: bool,
    pub position: bool,
}

/// One object found in the image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Component {
    pub color: ColorName,
    pub shape: Shape,
    pub cell: (HPos, VPos),
    /// Centroid as fractions of the image's width and height.
    pub centroid: (f32, f32),
    /// Soft area as a fraction of the short side squared.
    pub area: f32,
    /// Mean colour of its most object-like pixels.
    pub rgb: [u8; 3],
    /// How much better the chosen shape explains the features than the runner-up (>= 0).
    pub shape_margin: f32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    pub background: bool,
    /// As many objects found in the image as the scene has.
    pub count: bool,
    /// One per scene object.
    pub objects: Vec<ObjectCheck>,
    /// One per `scene.relations`: the matched components' cells satisfy it.
    pub relations: Vec<bool>,
    /// The background as read from the image.
    pub detected_background: Background,
    /// Every object-sized component found, largest first.
    pub components: Vec<Component>,
    /// Per scene object: the index of its component in `components`.
    pub assignment: Vec<Option<usize>>,
}

impl CheckReport {
    /// Every checked attribute is right.
    pub fn all_correct(&self) -> bool {
        self.background
            && self.count
            && self.objects.iter().all(|o| o.found && o.color && o.shape && o.position)
            && self.relations.iter().all(|&r| r)
    }

    /// Everything a caption stated is right (positions only where stated absolutely, relations
    /// only those stated).
    pub fn satisfies(&self, stated: &Stated) -> bool {
        self.background
            && self.count
            && self
                .objects
                .iter()
                .enumerate()
                .all(|(i, o)| o.found && o.color && o.shape && (o.position || !stated.absolute.get(i).copied().unwrap_or(true)))
            && stated.relations.iter().all(|&r| self.relations.get(r).copied().unwrap_or(false))
    }
}

/// Larger images are shrunk to this short side first: every feature is measured well by then.
const ANALYSIS_SHORT_SIDE: u32 = 160;
/// Border pixels farther than this (RGB) from every palette colour do not vote on the background.
const BORDER_PURITY: f32 = 70.0;
/// A pixel this far (RGB) from the expected background is part of some object.
const FOREGROUND_DISTANCE: f32 = 40.0;
/// Coverage below this counts as none (noise and faint blur halos).
const COVERAGE_FLOOR: f32 = 0.1;

/// Checks an image against the scene.
pub fn check(scene: &Scene, image: &RgbImage) -> CheckReport {
    let analysis = analyse(image);
    let n = scene.objects.len();
    let m = analysis.components.len().min(MAX_MATCHED_COMPONENTS);
    let cost = |i: usize, j: usize| {
        let o = &scene.objects[i];
        let c = &analysis.components[j];
        let mismatches = (o.color != c.color) as u32 + (o.shape != c.shape) as u32 + (o.cell() != c.cell) as u32;
        // Ties (e.g. two identical objects) go to the nearer component.
        let expected = o.center_px(1000, 1000);
        let aspect_free = ((expected.0 / 1000.0 - c.centroid.0).powi(2) + (expected.1 / 1000.0 - c.centroid.1).powi(2)).sqrt();
        mismatches as f32 + 0.1 * aspect_free
    };
    let assignment = best_assignment(n, m, &cost);
    let objects = (0..n)
        .map(|i| match assignment[i] {
            None => ObjectCheck { found: false, color: false, shape: false, position: false },
            Some(j) => {
                let (o, c) = (&scene.objects[i], &analysis.components[j]);
                ObjectCheck { found: true, color: o.color == c.color, shape: o.shape == c.shape, position: o.cell() == c.cell }
            }
        })
        .collect();
    let relations = scene
        .relations
        .iter()
        .map(|&(a, r, b)| match (assignment.get(a).copied().flatten(), assignment.get(b).copied().flatten()) {
            (Some(ja), Some(jb)) => r.holds(analysis.components[ja].cell, analysis.components[jb].cell),
            _ => false,
        })
        .collect();
    CheckReport {
        background: analysis.background == scene.background,
        count: analysis.components.len() == n,
        objects,
        relations,
        detected_background: analysis.background,
        components: analysis.components,
        assignment,
    }
}

/// At most this many components (the largest) take part in matching.
const MAX_MATCHED_COMPONENTS: usize = 8;
/// Leaving an object unmatched costs more than any mismatch of a matched one.
const UNMATCHED_COST: f32 = 4.0;

/// The injective assignment of objects to components (or to nothing) with the least total
/// cost; exhaustive over all (m + 1)^n choices, since there are at most 3 objects and 8
/// components.
fn best_assignment(n: usize, m: usize, cost: &dyn Fn(usize, usize) -> f32) -> Vec<Option<usize>> {
    let choices = m + 1; // component index, or m for "none"
    let mut best = (f32::INFINITY, vec![None; n]);
    let total_choices = choices.pow(n as u32);
    for code in 0..total_choices {
        let picks: Vec<usize> = (0..n).map(|i| code / choices.pow(i as u32) % choices).collect();
        let injective = picks.iter().enumerate().all(|(i, &a)| a == m || picks[..i].iter().all(|&b| b != a));
        if !injective {
            continue;
        }
        let total: f32 = picks.iter().enumerate().map(|(i, &j)| if j == m { UNMATCHED_COST } else { cost(i, j) }).sum();
        if total < best.0 {
            best = (total, picks.iter().map(|&j| (j < m).then_some(j)).collect());
        }
    }
    best.1
}

/// What the image shows, independent of any scene.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub background: Background,
    /// Object-sized components, largest first.
    pub components: Vec<Component>,
}

/// An image as f32 RGB.
struct Rgb32 {
    w: usize,
    h: usize,
    px: Vec<[f32; 3]>,
}

impl Rgb32 {
    fn from_image(image: &RgbImage) -> Rgb32 {
        let (w, h) = image.dimensions();
        let full = Rgb32 { w: w as usize, h: h as usize, px: image.pixels().map(|p| p.0.map(|c| c as f32)).collect() };
        let short = w.min(h);
        if short <= ANALYSIS_SHORT_SIDE {
            return full;
        }
        let scale = ANALYSIS_SHORT_SIDE as f32 / short as f32;
        let (nw, nh) = (((w as f32 * scale).round() as usize).max(1), ((h as f32 * scale).round() as usize).max(1));
        full.box_resized(nw, full.h).transposed().box_resized(nh, nw).transposed()
    }

    /// Shrinks the width to `nw` by averaging the pixels each output pixel covers (weighted by
    /// how much of them it covers).
    fn box_resized(&self, nw: usize, h: usize) -> Rgb32 {
        let ratio = self.w as f32 / nw as f32;
        let mut px = vec![[0f32; 3]; nw * h];
        for x in 0..nw {
            let (start, end) = (x as f32 * ratio, (x + 1) as f32 * ratio);
            let mut weights = Vec::new();
            let mut sx = start.floor() as usize;
            while (sx as f32) < end && sx < self.w {
                let overlap = (end.min(sx as f32 + 1.0) - start.max(sx as f32)).max(0.0);
                weights.push((sx, overlap / ratio));
                sx += 1;
            }
            for y in 0..h {
                let mut acc = [0f32; 3];
                for &(sx, wgt) in &weights {
                    let p = self.px[y * self.w + sx];
                    for ch in 0..3 {
                        acc[ch] += p[ch] * wgt;
                    }
                }
                px[y * nw + x] = acc;
            }
        }
        Rgb32 { w: nw, h, px }
    }

    fn transposed(&self) -> Rgb32 {
        let mut px = vec![[0f32; 3]; self.w * self.h];
        for y in 0..self.h {
            for x in 0..self.w {
                px[x * self.h + y] = self.px[y * self.w + x];
            }
        }
        Rgb32 { w: self.h, h: self.w, px }
    }

    fn at(&self, x: usize, y: usize) -> [f32; 3] {
        self.px[y * self.w + x]
    }
}

fn dist(a: [f32; 3], b: [f32; 3]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

fn palette_f32(c: ColorName) -> [f32; 3] {
    c.rgb().map(|v| v as f32)
}

/// A colour that varies linearly over the image: c(u, v) = a + b u + c v per channel, u and v
/// in [0, 1] across the width and height.
#[derive(Clone, Copy, Debug)]
struct Ramp {
    coef: [[f32; 3]; 3],
}

impl Ramp {
    fn at(&self, u: f32, v: f32) -> [f32; 3] {
        std::array::from_fn(|ch| self.coef[ch][0] + self.coef[ch][1] * u + self.coef[ch][2] * v)
    }

    /// Least squares over samples ((u, v), colour); a constant when they do not span a plane.
    fn fit(samples: &[((f32, f32), [f32; 3])], fallback: [f32; 3]) -> Ramp {
        if samples.is_empty() {
            return Ramp { coef: std::array::from_fn(|ch| [fallback[ch], 0.0, 0.0]) };
        }
        let mut ata = [[0f64; 3]; 3];
        let mut atb = [[0f64; 3]; 3];
        let mut mean = [0f64; 3];
        for &((u, v), c) in samples {
            let row = [1.0, u as f64, v as f64];
            for i in 0..3 {
                for j in 0..3 {
                    ata[i][j] += row[i] * row[j];
                }
                for ch in 0..3 {
                    atb[ch][i] += row[i] * c[ch] as f64;
                }
            }
            for ch in 0..3 {
                mean[ch] += c[ch] as f64 / samples.len() as f64;
            }
        }
        let constant = Ramp { coef: std::array::from_fn(|ch| [mean[ch] as f32, 0.0, 0.0]) };
        let mut coef = [[0f32; 3]; 3];
        for ch in 0..3 {
            match solve3(ata, atb[ch]) {
                Some(x) => coef[ch] = x.map(|v| v as f32),
                None => return constant,
            }
        }
        // A ramp is only trusted as far as lighting goes: a steep one means the samples were
        // too few or one-sided, so fall back to the mean.
        let ramp = Ramp { coef };
        let steep = (0..3).any(|ch| coef[ch][1].abs() > 60.0 || coef[ch][2].abs() > 60.0);
        if steep { constant } else { ramp }
    }
}

fn solve3(a: [[f64; 3]; 3], b: [f64; 3]) -> Option<[f64; 3]> {
    let mut m = [[0f64; 4]; 3];
    for i in 0..3 {
        m[i][..3].copy_from_slice(&a[i]);
        m[i][3] = b[i];
    }
    for col in 0..3 {
        let pivot = (col..3).max_by(|&x, &y| m[x][col].abs().total_cmp(&m[y][col].abs()))?;
        if m[pivot][col].abs() < 1e-9 * (1.0 + m[0][0].abs()) {
            return None;
        }
        m.swap(col, pivot);
        let pivot_row = m[col];
        for (row, values) in m.iter_mut().enumerate() {
            if row != col {
                let f = values[col] / pivot_row[col];
                for (v, p) in values.iter_mut().zip(pivot_row).skip(col) {
                    *v -= f * p;
                }
            }
        }
    }
    Some([m[0][3] / m[0][0], m[1][3] / m[1][1], m[2][3] / m[2][2]])
}

/// The background as measured: colours, horizon row and the colour ramps.
struct BackgroundModel {
    background: Background,
    /// First ground row (== height for a solid background).
    horizon: f32,
    /// Half-height of the band around the horizon where sky and ground blend.
    band: f32,
    sky: Ramp,
    ground: Ramp,
    w: usize,
    h: usize,
}

impl BackgroundModel {
    fn estimate(img: &Rgb32) -> BackgroundModel {
        let (w, h) = (img.w, img.h);
        let thickness = if w.min(h) >= 128 { 2 } else { 1 };
        let label = |x: usize, y: usize| {
            let p = img.at(x, y);
            let c = ColorName::nearest(p);
            (dist(p, palette_f32(c)) <= BORDER_PURITY).then_some(c)
        };
        let mode = |pixels: &mut dyn Iterator<Item = (usize, usize)>| {
            let mut votes = [0usize; 11];
            for (x, y) in pixels {
                if let Some(c) = label(x, y) {
                    votes[c as usize] += 1;
                }
            }
            let best = (0..11).max_by_key(|&i| (votes[i], std::cmp::Reverse(i))).unwrap_or(0);
            ColorName::ALL[best]
        };
        let sky = mode(&mut (0..thickness).flat_map(|y| (0..w).map(move |x| (x, y))));
        let ground = mode(&mut (h - thickness..h).flat_map(|y| (0..w).map(move |x| (x, y))));
        let sides: Vec<(usize, usize)> = (0..h).flat_map(|y| (0..thickness).flat_map(move |t| [(t, y), (w - 1 - t, y)])).collect();

        let (background, horizon) = if sky == ground {
            (Background::Solid(sky), h as f32)
        } else {
            // The horizon: the row that best splits the side columns into sky above and ground
            // below.
            let mut sky_above = vec![0i64; h + 1];
            let mut not_ground_below = vec![0i64; h + 1];
            for &(x, y) in &sides {
                let l = label(x, y);
                sky_above[y + 1] += (l != Some(sky)) as i64;
                not_ground_below[y] += (l != Some(ground)) as i64;
            }
            for y in 0..h {
                sky_above[y + 1] += sky_above[y];
            }
            for y in (0..h).rev() {
                not_ground_below[y] += not_ground_below[y + 1];
            }
            let best = (1..h).min_by_key(|&y| (sky_above[y] + not_ground_below[y], (y as i64 - h as i64 / 2).abs())).unwrap_or(h / 2);
            (Background::Split { sky, ground }, best as f32)
        };
        let band = 2.0 + 0.01 * h as f32;

        let border: Vec<(usize, usize)> = (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .filter(|&(x, y)| x < thickness || y < thickness || x >= w - thickness || y >= h - thickness)
            .collect();
        let samples_for = |color: ColorName, rows: &dyn Fn(f32) -> bool| -> Vec<((f32, f32), [f32; 3])> {
            border
                .iter()
                .filter(|&&(x, y)| rows(y as f32 + 0.5) && label(x, y) == Some(color))
                .map(|&(x, y)| (((x as f32 + 0.5) / w as f32, (y as f32 + 0.5) / h as f32), img.at(x, y)))
                .collect()
        };
        let sky_ramp = Ramp::fit(&samples_for(sky, &|y| y < horizon - band), palette_f32(sky));
        let ground_ramp =
            if sky == ground { sky_ramp } else { Ramp::fit(&samples_for(ground, &|y| y > horizon + band), palette_f32(ground)) };
        BackgroundModel { background, horizon, band, sky: sky_ramp, ground: ground_ramp, w, h }
    }

    /// The background colour expected under pixel (x, y) that best explains `pixel`: on the
    /// horizon any blend of sky and ground.
    fn expected(&self, x: usize, y: usize, pixel: [f32; 3]) -> [f32; 3] {
        let (u, v) = ((x as f32 + 0.5) / self.w as f32, (y as f32 + 0.5) / self.h as f32);
        let yc = y as f32 + 0.5;
        if yc < self.horizon - self.band {
            self.sky.at(u, v)
        } else if yc > self.horizon + self.band {
            self.ground.at(u, v)
        } else {
            closest_on_segment(pixel, self.sky.at(u, v), self.ground.at(u, v))
        }
    }
}

fn closest_on_segment(p: [f32; 3], a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    let ab = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
    let len2 = ab[0] * ab[0] + ab[1] * ab[1] + ab[2] * ab[2];
    if len2 <= 0.0 {
        return a;
    }
    let t = (((p[0] - a[0]) * ab[0] + (p[1] - a[1]) * ab[1] + (p[2] - a[2]) * ab[2]) / len2).clamp(0.0, 1.0);
    [a[0] + t * ab[0], a[1] + t * ab[1], a[2] + t * ab[2]]
}

/// Reads the background and the objects from an image.
pub fn analyse(image: &RgbImage) -> Analysis {
    let parts = analyse_parts(image);
    Analysis { background: parts.model.background, components: parts.found.into_iter().map(|(c, _)| c).collect() }
}

/// What [`analyse`] measured, at the analysis resolution, for [`locate`].
struct Parts {
    img: Rgb32,
    model: BackgroundModel,
    /// Components, largest first, each with its piece's box (inclusive, analysis pixels).
    found: Vec<(Component, (usize, usize, usize, usize))>,
}

fn analyse_parts(image: &RgbImage) -> Parts {
    let img = Rgb32::from_image(image);
    let (w, h) = (img.w, img.h);
    let model = BackgroundModel::estimate(&img);
    let mut expected = vec![[0f32; 3]; w * h];
    let mut distance = vec![0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            let p = img.at(x, y);
            let e = model.expected(x, y, p);
            expected[y * w + x] = e;
            distance[y * w + x] = dist(p, e);
        }
    }
    let labels = label_components(w, h, &|i| distance[i] > FOREGROUND_DISTANCE);
    let mut pieces = pieces_of(&labels, w);
    let short = w.min(h) as f32;
    // A real object is never this small: the smallest (a small star) covers ~0.009 short^2.
    let min_object_area = (0.003 * short * short).max(4.0);
    merge_fragments(&mut pieces, min_object_area, w);

    let mut found: Vec<(Component, (usize, usize, usize, usize))> = pieces
        .iter()
        .filter(|p| p.pixels.len() as f32 >= min_object_area)
        .filter_map(|piece| Some((describe(piece, &img, &expected, &distance, &pieces, &model, w, h)?, piece.bbox)))
        .collect();
    found.sort_by(|a, b| b.0.area.total_cmp(&a.0.area));
    Parts { img, model, found }
}

/// 8-connected components of the pixels where `is_on` holds: a label per pixel (0 = none).
fn label_components(w: usize, h: usize, is_on: &dyn Fn(usize) -> bool) -> Vec<u32> {
    let mut labels = vec![0u32; w * h];
    let mut next = 0u32;
    let mut stack = Vec::new();
    for start in 0..w * h {
        if labels[start] != 0 || !is_on(start) {
            continue;
        }
        next += 1;
        labels[start] = next;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = ((i % w) as i64, (i / w) as i64);
            for dy in -1..=1 {
                for dx in -1..=1 {
                    let (nx, ny) = (x + dx, y + dy);
                    if nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                        continue;
                    }
                    let j = ny as usize * w + nx as usize;
                    if labels[j] == 0 && is_on(j) {
                        labels[j] = next;
                        stack.push(j);
                    }
                }
            }
        }
    }
    labels
}

/// The pixels of one connected component.
struct Piece {
    pixels: Vec<usize>,
    bbox: (usize, usize, usize, usize), // x0, y0, x1, y1 inclusive
}

fn pieces_of(labels: &[u32], w: usize) -> Vec<Piece> {
    let count = labels.iter().copied().max().unwrap_or(0) as usize;
    let mut pieces: Vec<Piece> = (0..count).map(|_| Piece { pixels: Vec::new(), bbox: (usize::MAX, usize::MAX, 0, 0) }).collect();
    for (i, &l) in labels.iter().enumerate() {
        if l > 0 {
            let p = &mut pieces[l as usize - 1];
            p.pixels.push(i);
            let (x, y) = (i % w, i / w);
            p.bbox = (p.bbox.0.min(x), p.bbox.1.min(y), p.bbox.2.max(x), p.bbox.3.max(y));
        }
    }
    pieces
}

/// Fragments smaller than any object join the largest piece within 2 px (a star tip cut off by
/// the threshold); the rest are specks and are dropped later.
fn merge_fragments(pieces: &mut [Piece], min_object_area: f32, w: usize) {
    const REACH: usize = 2;
    let mut order: Vec<usize> = (0..pieces.len()).collect();
    order.sort_by_key(|&i| pieces[i].pixels.len());
    for i in order {
        if pieces[i].pixels.is_empty() || pieces[i].pixels.len() as f32 >= min_object_area {
            continue;
        }
        let near = |a: &Piece, b: &Piece| {
            let (ax0, ay0, ax1, ay1) = a.bbox;
            let (bx0, by0, bx1, by1) = b.bbox;
            if ax0 > bx1 + REACH || bx0 > ax1 + REACH || ay0 > by1 + REACH || by0 > ay1 + REACH {
                return false;
            }
            a.pixels.iter().any(|&p| {
                let (x, y) = (p % w, p / w);
                b.pixels.iter().any(|&q| (q % w).abs_diff(x) <= REACH && (q / w).abs_diff(y) <= REACH)
            })
        };
        let target = (0..pieces.len())
            .filter(|&j| j != i && pieces[j].pixels.len() > pieces[i].pixels.len() && near(&pieces[i], &pieces[j]))
            .max_by_key(|&j| pieces[j].pixels.len());
        if let Some(j) = target {
            let moved = std::mem::take(&mut pieces[i].pixels);
            let (x0, y0, x1, y1) = pieces[i].bbox;
            let t = &mut pieces[j];
            t.pixels.extend(moved);
            t.bbox = (t.bbox.0.min(x0), t.bbox.1.min(y0), t.bbox.2.max(x1), t.bbox.3.max(y1));
        }
    }
}

/// Colour, soft coverage, shape and cell of one piece.
#[allow(clippy::too_many_arguments)]
fn describe(
    piece: &Piece,
    img: &Rgb32,
    expected: &[[f32; 3]],
    distance: &[f32],
    pieces: &[Piece],
    model: &BackgroundModel,
    w: usize,
    h: usize,
) -> Option<Component> {
    let (color, mean) = object_color(piece, img, expected, distance, model);

    // Soft coverage over the piece's box grown by a margin, leaving out other pieces' pixels.
    let margin = 3;
    let (x0, y0) = (piece.bbox.0.saturating_sub(margin), piece.bbox.1.saturating_sub(margin));
    let (x1, y1) = ((piece.bbox.2 + margin).min(w - 1), (piece.bbox.3 + margin).min(h - 1));
    let (rw, rh) = (x1 - x0 + 1, y1 - y0 + 1);
    let mut foreign = vec![false; rw * rh];
    for other in pieces {
        if std::ptr::eq(other, piece) || other.pixels.len() < 4 {
            continue;
        }
        let (ox0, oy0, ox1, oy1) = other.bbox;
        if ox0 > x1 || ox1 < x0 || oy0 > y1 || oy1 < y0 {
            continue;
        }
        for &i in &other.pixels {
            let (x, y) = (i % w, i / w);
            if (x0..=x1).contains(&x) && (y0..=y1).contains(&y) {
                foreign[(y - y0) * rw + (x - x0)] = true;
            }
        }
    }
    let mut coverage = vec![0f32; rw * rh];
    for yy in 0..rh {
        for xx in 0..rw {
            if foreign[yy * rw + xx] {
                continue;
            }
            let i = (y0 + yy) * w + (x0 + xx);
            let (p, e) = (img.px[i], expected[i]);
            let axis = [mean[0] - e[0], mean[1] - e[1], mean[2] - e[2]];
            let len2 = axis[0] * axis[0] + axis[1] * axis[1] + axis[2] * axis[2];
            if len2 <= 1.0 {
                continue;
            }
            let t = ((p[0] - e[0]) * axis[0] + (p[1] - e[1]) * axis[1] + (p[2] - e[2]) * axis[2]) / len2;
            coverage[yy * rw + xx] = t.clamp(0.0, 1.0);
        }
    }
    // Shape features hardly change above ~24 px, so large components are measured at that
    // size (block averages of coverage are exactly a coarser rendering's anti-aliasing).
    let piece_size = (piece.bbox.2 - piece.bbox.0).max(piece.bbox.3 - piece.bbox.1) + 1;
    let factor = piece_size.div_ceil(MEASURE_SIZE).max(1);
    let map = CoverageMap::new(rw, rh, coverage).downsampled(factor);
    let features = map.features()?;
    let (shape, shape_margin) = classify_shape(&features);
    let (cx, cy) = (x0 as f32 + features.centroid.0 * factor as f32, y0 as f32 + features.centroid.1 * factor as f32);
    let cell = (
        HPos::from_index((cx / w as f32 * 3.0).floor().max(0.0) as usize),
        VPos::from_index((cy / h as f32 * 3.0).floor().max(0.0) as usize),
    );
    let short = w.min(h) as f32;
    Some(Component {
        color,
        shape,
        cell,
        centroid: (cx / w as f32, cy / h as f32),
        area: features.area / (short * short),
        rgb: mean.map(|c| c.round().clamp(0.0, 255.0) as u8),
        shape_margin,
    })
}

/// The palette colour that best explains a piece's pixels as blends of it with the background
/// behind them (blur and anti-aliasing mix the two; small blurred shapes never show their pure
/// colour), and the object's colour as it appears (lighting included).
fn object_color(piece: &Piece, img: &Rgb32, expected: &[[f32; 3]], distance: &[f32], model: &BackgroundModel) -> (ColorName, [f32; 3]) {
    let w = img.w;
    let rows = piece.pixels.iter().map(|&i| (i / w) as f32 + 0.5);
    let touches_sky = rows.clone().any(|y| y < model.horizon + model.band);
    let touches_ground = rows.clone().any(|y| y > model.horizon - model.band);
    let behind: Vec<ColorName> = match model.background {
        Background::Solid(c) => vec![c],
        Background::Split { sky, ground } => [(touches_sky, sky), (touches_ground, ground)].iter().filter(|x| x.0).map(|x| x.1).collect(),
    };
    let weight_total: f32 = piece.pixels.iter().map(|&i| distance[i]).sum::<f32>().max(1e-6);
    let mut best: Option<(f32, ColorName)> = None;
    for candidate in ColorName::ALL {
        if behind.contains(&candidate) {
            continue;
        }
        let k = palette_f32(candidate);
        let mut residual = 0f32;
        let mut reach: Vec<f32> = Vec::with_capacity(piece.pixels.len());
        let mut contrast = 0f32;
        for &i in &piece.pixels {
            let (p, e) = (img.px[i], expected[i]);
            let axis = [k[0] - e[0], k[1] - e[1], k[2] - e[2]];
            let len2 = (axis[0] * axis[0] + axis[1] * axis[1] + axis[2] * axis[2]).max(1.0);
            let t = (((p[0] - e[0]) * axis[0] + (p[1] - e[1]) * axis[1] + (p[2] - e[2]) * axis[2]) / len2).clamp(0.0, 1.0);
            let blend = [e[0] + t * axis[0], e[1] + t * axis[1], e[2] + t * axis[2]];
            residual += distance[i] * dist(p, blend);
            contrast += distance[i] * len2.sqrt();
            reach.push(t);
        }
        reach.sort_by(f32::total_cmp);
        let t90 = reach[(reach.len() * 9 / 10).min(reach.len() - 1)];
        // A solid shape's inside shows (nearly) its own colour: a candidate that the brightest
        // pixels only get part of the way to is a worse explanation.
        let score = residual / weight_total + (0.7 - t90).max(0.0) * contrast / weight_total;
        if best.is_none_or(|b| score < b.0) {
            best = Some((score, candidate));
        }
    }
    let color = best.map(|b| b.1).unwrap_or(ColorName::Gray);

    // The colour as it appears: extrapolated from the pixels that are mostly object.
    let k = palette_f32(color);
    let mut sum = [0f32; 3];
    let mut n = 0f32;
    for &i in &piece.pixels {
        let (p, e) = (img.px[i], expected[i]);
        let axis = [k[0] - e[0], k[1] - e[1], k[2] - e[2]];
        let len2 = (axis[0] * axis[0] + axis[1] * axis[1] + axis[2] * axis[2]).max(1.0);
        let t = ((p[0] - e[0]) * axis[0] + (p[1] - e[1]) * axis[1] + (p[2] - e[2]) * axis[2]) / len2;
        if t >= 0.85 {
            for ch in 0..3 {
                sum[ch] += e[ch] + (p[ch] - e[ch]) / t.min(1.0);
            }
            n += 1.0;
        }
    }
    let appearance = if n > 0.0 { sum.map(|v| v / n) } else { k };
    (color, appearance)
}

/// How much of each pixel of a small window is object (0..1).
struct CoverageMap {
    w: usize,
    h: usize,
    t: Vec<f32>,
}

/// Number of shape features.
const FEATURES: usize = 17;

#[derive(Clone, Debug)]
struct Features {
    /// Soft area in pixels.
    area: f32,
    /// Centroid in window pixels.
    centroid: (f32, f32),
    /// The larger side of the binary (coverage >= 0.5) mask's box, in pixels: the scale that
    /// picks the reference renderings.
    size: f32,
    values: [f32; FEATURES],
}

impl CoverageMap {
    fn new(w: usize, h: usize, mut t: Vec<f32>) -> CoverageMap {
        for v in &mut t {
            if *v < COVERAGE_FLOOR {
                *v = 0.0;
            }
        }
        CoverageMap { w, h, t }
    }

    /// Averages `factor` x `factor` blocks (the last ones partial).
    fn downsampled(self, factor: usize) -> CoverageMap {
        if factor <= 1 {
            return self;
        }
        let (w, h) = (self.w.div_ceil(factor), self.h.div_ceil(factor));
        let mut t = vec![0f32; w * h];
        for y in 0..self.h {
            for x in 0..self.w {
                t[(y / factor) * w + x / factor] += self.t[y * self.w + x] / (factor * factor) as f32;
            }
        }
        CoverageMap::new(w, h, t)
    }

    /// Bilinear coverage at a continuous position (pixel centres at +0.5); 0 outside.
    fn sample(&self, x: f32, y: f32) -> f32 {
        let (fx, fy) = (x - 0.5, y - 0.5);
        let (ix, iy) = (fx.floor(), fy.floor());
        let (ax, ay) = (fx - ix, fy - iy);
        let get = |x: f32, y: f32| {
            if x < 0.0 || y < 0.0 || x >= self.w as f32 || y >= self.h as f32 { 0.0 } else { self.t[y as usize * self.w + x as usize] }
        };
        let (v00, v10, v01, v11) = (get(ix, iy), get(ix + 1.0, iy), get(ix, iy + 1.0), get(ix + 1.0, iy + 1.0));
        (v00 * (1.0 - ax) + v10 * ax) * (1.0 - ay) + (v01 * (1.0 - ax) + v11 * ax) * ay
    }

    fn features(&self) -> Option<Features> {
        let (w, h) = (self.w, self.h);
        let mut area = 0f32;
        let (mut sx, mut sy) = (0f32, 0f32);
        for y in 0..h {
            for x in 0..w {
                let t = self.t[y * w + x];
                area += t;
                sx += t * (x as f32 + 0.5);
                sy += t * (y as f32 + 0.5);
            }
        }
        if area < 2.0 {
            return None;
        }
        let (cx, cy) = (sx / area, sy / area);

        // Binary mask: its box, its row extremes (for the convex hull) and its pixel count.
        let inside = |x: usize, y: usize| self.t[y * w + x] >= 0.5;
        let (mut bx0, mut by0, mut bx1, mut by1) = (usize::MAX, usize::MAX, 0, 0);
        let mut hull_points = Vec::new();
        let mut mask_count = 0usize;
        for y in 0..h {
            let row: Vec<usize> = (0..w).filter(|&x| inside(x, y)).collect();
            if let (Some(&first), Some(&last)) = (row.first(), row.last()) {
                mask_count += row.len();
                bx0 = bx0.min(first);
                bx1 = bx1.max(last + 1);
                by0 = by0.min(y);
                by1 = by1.max(y + 1);
                for (px, py) in [(first, y), (first, y + 1), (last + 1, y), (last + 1, y + 1)] {
                    hull_points.push((px as f32, py as f32));
                }
            }
        }
        if mask_count < 3 {
            return None;
        }
        let (bw, bh) = ((bx1 - bx0) as f32, (by1 - by0) as f32);
        let hull = convex_hull_area(&mut hull_points).max(1.0);
        let solidity = mask_count as f32 / hull;
        let extent = area / (bw * bh);
        let aspect = (bw / bh).ln();

        // Is there a hole where the centre of mass is? (rings)
        let radius = (area / std::f32::consts::PI).sqrt();
        let mut centre = 0f32;
        let mut n = 0;
        for j in -2..=2 {
            for i in -2..=2 {
                if i * i + j * j <= 4 {
                    centre += self.sample(cx + i as f32 * 0.15 * radius, cy + j as f32 * 0.15 * radius);
                    n += 1;
                }
            }
        }
        let centre_fill = centre / n as f32;

        // How full the box is along three rows and three columns.
        let row_fill = |q: f32| {
            let y = by0 as f32 + q * bh;
            (bx0..bx1).map(|x| self.sample(x as f32 + 0.5, y)).sum::<f32>() / bw
        };
        let col_fill = |q: f32| {
            let x = bx0 as f32 + q * bw;
            (by0..by1).map(|y| self.sample(x, y as f32 + 0.5)).sum::<f32>() / bh
        };

        // Radial profile: coverage integrated along rays from the centroid, as a function of
        // the angle measured from straight up; its cosine harmonics describe points and corners
        // (3: triangle vs heart, 4: square vs diamond / cross, 5: star).
        const RAYS: usize = 72;
        let step = 0.5;
        // Far enough to leave the window from the centroid in any direction.
        let reach = cx.max(w as f32 - cx).hypot(cy.max(h as f32 - cy)) + 1.0;
        let mut profile = [0f32; RAYS];
        for (k, r) in profile.iter_mut().enumerate() {
            let angle = k as f32 / RAYS as f32 * std::f32::consts::TAU;
            // angle 0 = up (-y), increasing clockwise.
            let (dx, dy) = (angle.sin(), -angle.cos());
            let mut s = 0.0;
            while s < reach {
                *r += self.sample(cx + dx * s, cy + dy * s) * step;
                s += step;
            }
        }
        let mean_r = profile.iter().sum::<f32>() / RAYS as f32;
        let harmonic = |order: f32| {
            profile
                .iter()
                .enumerate()
                .map(|(k, r)| r / mean_r * (order * k as f32 / RAYS as f32 * std::f32::consts::TAU).cos())
                .sum::<f32>()
                / RAYS as f32
        };
        // Offset of the centroid from the box centre (triangles sit low, hearts high).
        let vertical_offset = (cy - (by0 as f32 + bh / 2.0)) / bh;

        let values = [
            centre_fill,
            solidity,
            extent,
            aspect,
            row_fill(0.2),
            row_fill(0.5),
            row_fill(0.8),
            col_fill(0.2),
            col_fill(0.5),
            col_fill(0.8),
            vertical_offset,
            harmonic(2.0),
            harmonic(3.0),
            harmonic(4.0),
            harmonic(5.0),
            harmonic(6.0),
            harmonic(8.0),
        ];
        Some(Features { area, centroid: (cx, cy), size: bw.max(bh), values })
    }
}

/// Area of the convex hull of points (monotone chain); sorts the points.
fn convex_hull_area(points: &mut [(f32, f32)]) -> f32 {
    points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let cross = |o: (f32, f32), a: (f32, f32), b: (f32, f32)| (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0);
    let mut hull: Vec<(f32, f32)> = Vec::with_capacity(points.len() * 2);
    for pass in 0..2 {
        let start = hull.len();
        let iter: Box<dyn Iterator<Item = &(f32, f32)>> = if pass == 0 { Box::new(points.iter()) } else { Box::new(points.iter().rev()) };
        for &p in iter {
            while hull.len() >= start + 2 && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0 {
                hull.pop();
            }
            hull.push(p);
        }
        hull.pop();
    }
    let n = hull.len();
    if n < 3 {
        return 0.0;
    }
    (0..n).map(|i| hull[i].0 * hull[(i + 1) % n].1 - hull[(i + 1) % n].0 * hull[i].1).sum::<f32>().abs() / 2.0
}

/// Box sides (pixels) the reference shapes are rendered at, ~15 % apart; components are
/// measured at most [`MEASURE_SIZE`] px large.
const REFERENCE_EXTENTS: [f32; 13] = [7.0, 8.0, 9.2, 10.5, 12.0, 13.8, 15.8, 18.0, 20.7, 23.7, 27.0, 31.0, 35.6];
/// Components larger than this (pixels) are measured shrunk to at most this size.
const MEASURE_SIZE: usize = 24;
/// Blurs the references are rendered with (Gaussian sigma in pixels).
const REFERENCE_BLURS: [f32; 5] = [0.0, 0.5, 0.9, 1.3, 1.7];
/// Sub-pixel phases of the references along each axis.
const REFERENCE_PHASES: [f32; 3] = [0.0, 1.0 / 3.0, 2.0 / 3.0];
/// No feature is trusted to better than this (keeps a sharp reference from being too strict).
const FEATURE_STD_FLOOR: f32 = 0.03;

/// A reference rendering's features and the distance penalty of its kind.
type ReferenceSample = ([f32; FEATURES], f32);

/// The features of every shape rendered at one extent, in every phase and blur.
struct ReferenceScale {
    /// Per shape (in `Shape::ALL` order): mean measured size and the samples' features.
    /// Each sample carries the distance penalty of its kind (0 for exact renderings).
    shapes: Vec<(f32, Vec<ReferenceSample>)>,
    /// Per feature: its spread over all shapes (to weigh features against each other).
    spread: [f32; FEATURES],
}

fn reference_scale(index: usize) -> &'static ReferenceScale {
    static SCALES: [OnceLock<ReferenceScale>; REFERENCE_EXTENTS.len()] = [const { OnceLock::new() }; REFERENCE_EXTENTS.len()];
    SCALES[index].get_or_init(|| {
        let extent = REFERENCE_EXTENTS[index];
        let shapes: Vec<(f32, Vec<ReferenceSample>)> = Shape::ALL
            .iter()
            .map(|&shape| {
                let mut sizes = 0f32;
                let mut samples = Vec::new();
                let mut add = |map: CoverageMap, penalty: f32| {
                    if let Some(f) = map.features() {
                        sizes += f.size;
                        samples.push((f.values, penalty));
                    }
                };
                for &blur in &REFERENCE_BLURS {
                    for &px in &REFERENCE_PHASES {
                        for &py in &REFERENCE_PHASES {
                            add(reference_coverage(shape, extent, (px, py), blur, Transform::identity()), 0.0);
                        }
                    }
                }
                // Slightly rotated, squashed and sheared versions: what a generator draws when
                // it draws the shape imperfectly.
                for &distortion in &REFERENCE_DISTORTIONS {
                    for &blur in &[0.6, 1.2] {
                        for &phase in &REFERENCE_PHASES {
                            add(
                                reference_coverage(shape, extent, (phase, 1.0 - phase), blur, distortion_transform(distortion)),
                                DISTORTED_REFERENCE_PENALTY,
                            );
                        }
                    }
                }
                (sizes / samples.len().max(1) as f32, samples)
            })
            .collect();
        let all: Vec<&[f32; FEATURES]> = shapes.iter().flat_map(|s| s.1.iter().map(|x| &x.0)).collect();
        let n = all.len().max(1) as f32;
        let spread = std::array::from_fn(|k| {
            let mean = all.iter().map(|f| f[k]).sum::<f32>() / n;
            let var = all.iter().map(|f| (f[k] - mean).powi(2)).sum::<f32>() / n;
            (var + FEATURE_STD_FLOOR * FEATURE_STD_FLOOR).sqrt()
        });
        ReferenceScale { shapes, spread }
    })
}

/// How much larger than its box side each shape measures (its binary box's larger side over
/// the extent it is drawn at), to pick the reference extent that matches a component.
fn size_factor(shape: Shape) -> f32 {
    match shape {
        Shape::Square => 0.86,
        Shape::Cross => 0.96,
        _ => 1.0,
    }
}

/// A distorted reference only wins where no exact one comes this close (in squared scaled
/// feature distance): exact shapes keep matching exact renderings.
const DISTORTED_REFERENCE_PENALTY: f32 = 0.5;
/// (rotation in degrees, x scale, y scale, shear) of the distorted references.
const REFERENCE_DISTORTIONS: [(f32, f32, f32, f32); 8] = [
    (7.0, 1.0, 1.0, 0.0),
    (-7.0, 1.0, 1.0, 0.0),
    (0.0, 1.12, 0.92, 0.0),
    (0.0, 0.92, 1.12, 0.0),
    (0.0, 1.0, 1.0, 0.12),
    (0.0, 1.0, 1.0, -0.12),
    (4.0, 1.08, 0.95, 0.06),
    (-4.0, 0.95, 1.08, -0.06),
];

fn distortion_transform((degrees, sx, sy, shear): (f32, f32, f32, f32)) -> Transform {
    let (sin, cos) = degrees.to_radians().sin_cos();
    // Rotation after shear after scale, about the origin (the shape's centre is moved there).
    Transform::from_row(sx, 0.0, shear * sy, sy, 0.0, 0.0).post_concat(Transform::from_row(cos, sin, -sin, cos, 0.0, 0.0))
}

/// The exact coverage of a shape rendered alone (white on black), optionally distorted (about
/// its centre) and blurred.
fn reference_coverage(shape: Shape, extent: f32, offset: (f32, f32), blur: f32, distortion: Transform) -> CoverageMap {
    let side = (extent * 1.2).ceil() as u32 + 8;
    let mut pixmap = Pixmap::new(side, side).expect("small reference canvas");
    let c = side as f32 / 2.0;
    let mut paint = Paint::default();
    paint.set_color_rgba8(255, 255, 255, 255);
    paint.anti_alias = true;
    let rule = if shape == Shape::Ring { FillRule::EvenOdd } else { FillRule::Winding };
    if let Some(path) = shape_path(shape, 0.0, 0.0, extent) {
        let placed = distortion.post_translate(c + offset.0, c + offset.1);
        pixmap.fill_path(&path, &paint, rule, placed, None);
    }
    let mut t: Vec<f32> = pixmap.pixels().iter().map(|p| p.red() as f32 / 255.0).collect();
    if blur > 0.0 {
        t = gaussian_blur(&t, side as usize, side as usize, blur);
    }
    CoverageMap::new(side as usize, side as usize, t)
}

/// Separable Gaussian blur of a single-channel map (edges clamp).
pub(crate) fn gaussian_blur(data: &[f32], w: usize, h: usize, sigma: f32) -> Vec<f32> {
    let radius = (sigma * 3.0).ceil() as usize;
    let kernel: Vec<f32> = (0..=2 * radius).map(|i| (-((i as f32 - radius as f32).powi(2)) / (2.0 * sigma * sigma)).exp()).collect();
    let total: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / total).collect();
    // One line at a time, padded by repeating its end values (plain loops: this also runs in
    // unoptimised test builds).
    let blur_line = |line: &[f32], out: &mut [f32], padded: &mut Vec<f32>| {
        padded.clear();
        padded.extend(std::iter::repeat_n(line[0], radius));
        padded.extend_from_slice(line);
        padded.extend(std::iter::repeat_n(line[line.len() - 1], radius));
        for (i, o) in out.iter_mut().enumerate() {
            let window = &padded[i..i + kernel.len()];
            let mut acc = 0.0;
            for (a, k) in window.iter().zip(&kernel) {
                acc += a * k;
            }
            *o = acc;
        }
    };
    let mut padded = Vec::with_capacity(w.max(h) + 2 * radius);
    let mut rows = vec![0f32; w * h];
    for y in 0..h {
        blur_line(&data[y * w..(y + 1) * w], &mut rows[y * w..(y + 1) * w], &mut padded);
    }
    let mut column = vec![0f32; h];
    let mut blurred = vec![0f32; h];
    let mut out = vec![0f32; w * h];
    for x in 0..w {
        for y in 0..h {
            column[y] = rows[y * w + x];
        }
        blur_line(&column, &mut blurred, &mut padded);
        for y in 0..h {
            out[y * w + x] = blurred[y];
        }
    }
    out
}

/// The shape whose reference renderings (at the extent that matches the component's size,
/// and the neighbouring extents) come nearest the features, in features scaled by their
/// spread; and its margin over the runner-up (difference of squared distances).
fn classify_shape(features: &Features) -> (Shape, f32) {
    let last = REFERENCE_EXTENTS.len() - 1;
    let mut scores: Vec<(f32, Shape)> = Shape::ALL
        .iter()
        .enumerate()
        .map(|(s, &shape)| {
            let extent = features.size / size_factor(shape);
            let nearest = (0..=last)
                .min_by(|&a, &b| {
                    (REFERENCE_EXTENTS[a].ln() - extent.ln()).abs().total_cmp(&(REFERENCE_EXTENTS[b].ln() - extent.ln()).abs())
                })
                .unwrap_or(0);
            let spread = reference_scale(nearest).spread;
            let mut best = f32::INFINITY;
            for index in nearest.saturating_sub(1)..=(nearest + 1).min(last) {
                for (sample, penalty) in &reference_scale(index).shapes[s].1 {
                    let d: f32 = penalty + (0..FEATURES).map(|k| ((features.values[k] - sample[k]) / spread[k]).powi(2)).sum::<f32>();
                    best = best.min(d);
                }
            }
            (best, shape)
        })
        .collect();
    scores.sort_by(|a, b| a.0.total_cmp(&b.0));
    (scores[0].1, scores[1].0 - scores[0].0)
}
