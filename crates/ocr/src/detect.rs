//! Text detection with DB (Differentiable Binarization, Liao et al. 2020) as PP-OCRv4 runs it:
//! the sizes the picture goes through, and the probability map turned into text boxes. The
//! constants are RapidOCR 1.4.4's (`config.yaml` and `ch_ppocr_det/utils.py`).

use ndarray::ArrayView2;

use crate::geometry::{Point, RotatedRect, convex_hull, distance, inside_convex, min_area_rect, order_corners};

/// A picture whose longer side is over this is first shrunk to it (RapidOCR `max_side_len`).
const MAX_SIDE: f64 = 2000.0;
/// A picture whose shorter side is under this is first enlarged to it (`min_side_len`).
const MIN_SIDE: f64 = 30.0;
/// Pictures this low, or wider than `WIDTH_HEIGHT_RATIO` times their height, get black bands
/// above and below before detection (`min_height`, `width_height_ratio`).
const MIN_HEIGHT: u32 = 30;
const WIDTH_HEIGHT_RATIO: f64 = 8.0;
/// RapidOCR enlarges pictures for the detector until their shorter side is this
/// (`limit_side_len`, `limit_type: min`); [`Plan::for_size`] takes the side as a parameter.
pub(crate) const RAPIDOCR_MIN_SIDE: u32 = 736;
/// Our addition: the detector's input is at most this on its longer side. RapidOCR pads wide
/// pictures but not tall ones, so a 30×2000 strip would otherwise reach 736×49,056.
pub(crate) const MAX_DETECTOR_SIDE: f64 = 3200.0;
/// The widest border [`Plan::for_size`] adds.
pub(crate) const MAX_BORDER: u32 = 32;

/// Probability above which a pixel is text (`thresh`).
const PIXEL_THRESHOLD: f32 = 0.3;
/// At most this many regions are turned into boxes (`max_candidates`).
const MAX_CANDIDATES: usize = 1000;
/// Regions whose rectangle has a side under this are dropped; after unclipping, under this + 2.
const MIN_SIZE: f64 = 3.0;

/// The sizes a picture goes through before the detector sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The picture resized for detection and cropping (often its own size).
    pub working: (u32, u32),
    /// Pixels of the picture's background colour added on every side of the working picture.
    pub border: u32,
    /// Black rows added above and below the working picture and its border.
    pub pad: u32,
    /// The detector's input size, both multiples of 32.
    pub detector: (u32, u32),
}

/// `(w, h)` scaled by `ratio`, truncated, then each rounded to a multiple of 32 (ties to even,
/// as Python's `round`), at least 32.
fn scaled_to_32((w, h): (u32, u32), ratio: f64) -> (u32, u32) {
    let side = |v: u32| (((f64::from(v) * ratio).trunc() / 32.0).round_ties_even() as u32 * 32).max(32);
    (side(w), side(h))
}

impl Plan {
    /// The sizes for a `width`×`height` picture, enlarged for the detector until its shorter
    /// side is `min_side` (0: not enlarged, only rounded to multiples of 32).
    /// A border of `border` times the working picture's shorter side (at most [`MAX_BORDER`])
    /// is added on every side before the letterbox (0: none, as RapidOCR).
    pub fn for_size(width: u32, height: u32, min_side: u32, border: f32) -> Plan {
        let mut working = (width.max(1), height.max(1));
        let longer = f64::from(working.0.max(working.1));
        if longer > MAX_SIDE {
            working = scaled_to_32(working, MAX_SIDE / longer);
        }
        let shorter = f64::from(working.0.min(working.1));
        if shorter < MIN_SIDE {
            working = scaled_to_32(working, MIN_SIDE / shorter);
        }
        let border = ((f64::from(working.0.min(working.1)) * f64::from(border.max(0.0))).round() as u32).min(MAX_BORDER);
        let framed = (working.0 + 2 * border, working.1 + 2 * border);
        let pad = letterbox(framed);
        let padded = (framed.0, framed.1 + 2 * pad);
        let shorter = f64::from(padded.0.min(padded.1));
        let limit = f64::from(min_side);
        let mut detector = scaled_to_32(padded, if shorter < limit { limit / shorter } else { 1.0 });
        let longer = f64::from(detector.0.max(detector.1));
        if longer > MAX_DETECTOR_SIDE {
            detector = scaled_to_32(detector, MAX_DETECTOR_SIDE / longer);
        }
        Plan { working, border, pad, detector }
    }

    /// The picture the detector's map covers: working picture, border and bands.
    pub fn padded(&self) -> (u32, u32) {
        (self.working.0 + 2 * self.border, self.working.1 + 2 * self.border + 2 * self.pad)
    }

    /// Where the working picture's top-left pixel is in the padded one.
    pub fn offset(&self) -> (u32, u32) {
        (self.border, self.border + self.pad)
    }
}

/// Rows of black added above and below a low or very wide picture.
fn letterbox((w, h): (u32, u32)) -> u32 {
    if h > MIN_HEIGHT && f64::from(w) / f64::from(h) <= WIDTH_HEIGHT_RATIO {
        return 0;
    }
    let target = ((f64::from(w) / WIDTH_HEIGHT_RATIO) as u32).max(MIN_HEIGHT) * 2;
    target.abs_diff(h) / 2
}

/// A text box found by the detector.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Candidate {
    /// Corners, top-left first and clockwise, in the coordinates given to [`boxes`].
    pub quad: [Point; 4],
    /// Mean text probability inside the box before unclipping.
    pub score: f32,
}

/// Post-processing knobs (RapidOCR's defaults: 0.5 and 1.6).
#[derive(Clone, Copy, Debug)]
pub(crate) struct BoxParams {
    pub box_threshold: f32,
    pub unclip_ratio: f32,
}

/// Text boxes from the detector's probability map, in the coordinates of a picture of size
/// `dest` (the map covers it whole), clipped to it and with sides over 3 pixels.
pub(crate) fn boxes(prob: ArrayView2<f32>, dest: (u32, u32), params: BoxParams) -> Vec<Candidate> {
    let (height, width) = prob.dim();
    if width == 0 || height == 0 {
        return Vec::new();
    }
    let bitmap = dilate(&prob.map(|&p| p > PIXEL_THRESHOLD), width, height);
    regions(&bitmap, width, height)
        .into_iter()
        .take(MAX_CANDIDATES)
        .filter_map(|hull| candidate(prob, &hull, params))
        .filter_map(|(rect, score)| to_dest(rect, (width, height), dest).map(|quad| Candidate { quad, score }))
        .collect()
}

/// One region's box: its minimum rectangle, scored on the map, then grown (unclipped).
fn candidate(prob: ArrayView2<f32>, hull: &[Point], params: BoxParams) -> Option<(RotatedRect, f32)> {
    let rect = min_area_rect(hull);
    if rect.short_side() < MIN_SIZE {
        return None;
    }
    let score = mean_inside(prob, &rect.corners());
    if score < params.box_threshold {
        return None;
    }
    let grown = rect.expanded(rect.area() * f64::from(params.unclip_ratio) / rect.perimeter());
    (grown.short_side() >= MIN_SIZE + 2.0).then_some((grown, score))
}

/// The rectangle scaled from the map's size to `dest`, rounded and clipped as RapidOCR does;
/// `None` when it ends up 3 pixels or less across.
fn to_dest(rect: RotatedRect, (width, height): (usize, usize), (dw, dh): (u32, u32)) -> Option<[Point; 4]> {
    let (sx, sy) = (f64::from(dw) / width as f64, f64::from(dh) / height as f64);
    let scaled = rect.corners().map(|[x, y]| [(x * sx).round().clamp(0.0, f64::from(dw)), (y * sy).round().clamp(0.0, f64::from(dh))]);
    let quad = order_corners(scaled).map(|[x, y]| [x.min(f64::from(dw) - 1.0).trunc(), y.min(f64::from(dh) - 1.0).trunc()]);
    let (w, h) = (distance(quad[0], quad[1]).trunc(), distance(quad[0], quad[3]).trunc());
    (w > 3.0 && h > 3.0).then_some(quad)
}

/// OpenCV's dilation by a 2×2 block (anchor at its centre): a pixel is set when it or its
/// left, upper or upper-left neighbour is.
fn dilate(bitmap: &ndarray::Array2<bool>, width: usize, height: usize) -> Vec<bool> {
    let mut out = vec![false; width * height];
    for y in 0..height {
        for x in 0..width {
            let (x0, y0) = (x.saturating_sub(1), y.saturating_sub(1));
            out[y * width + x] = bitmap[[y, x]] || bitmap[[y0, x]] || bitmap[[y, x0]] || bitmap[[y0, x0]];
        }
    }
    out
}

/// The convex hull of each 8-connected region of `bitmap`, in raster order of the regions'
/// first pixels. Each region contributes only its leftmost and rightmost pixel of every row,
/// which have the same hull as the whole region.
fn regions(bitmap: &[bool], width: usize, height: usize) -> Vec<Vec<Point>> {
    let mut seen = vec![false; width * height];
    let mut hulls = Vec::new();
    let mut stack = Vec::new();
    for start in 0..width * height {
        if seen[start] || !bitmap[start] {
            continue;
        }
        let mut rows: std::collections::BTreeMap<usize, (usize, usize)> = Default::default();
        seen[start] = true;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % width, i / width);
            let row = rows.entry(y).or_insert((x, x));
            *row = (row.0.min(x), row.1.max(x));
            for n in neighbours(x, y, width, height) {
                if !seen[n] && bitmap[n] {
                    seen[n] = true;
                    stack.push(n);
                }
            }
        }
        let points = rows.iter().flat_map(|(&y, &(x0, x1))| [[x0 as i64, y as i64], [x1 as i64, y as i64]]).collect();
        hulls.push(convex_hull(points));
    }
    hulls
}

fn neighbours(x: usize, y: usize, width: usize, height: usize) -> impl Iterator<Item = usize> {
    let ys = y.saturating_sub(1)..=(y + 1).min(height - 1);
    ys.flat_map(move |ny| (x.saturating_sub(1)..=(x + 1).min(width - 1)).map(move |nx| ny * width + nx))
}

/// Mean of `prob` over the pixels inside the quadrilateral (corners truncated to integers, as
/// OpenCV's `fillPoly` takes them), within the map: RapidOCR's `box_score_fast`.
fn mean_inside(prob: ArrayView2<f32>, corners: &[Point; 4]) -> f32 {
    let (height, width) = prob.dim();
    let clip = |v: f64, len: usize| (v.max(0.0) as usize).min(len - 1);
    let xs = corners.iter().map(|p| p[0]);
    let ys = corners.iter().map(|p| p[1]);
    let (x0, x1) = (clip(xs.clone().fold(f64::MAX, f64::min).floor(), width), clip(xs.fold(f64::MIN, f64::max).ceil(), width));
    let (y0, y1) = (clip(ys.clone().fold(f64::MAX, f64::min).floor(), height), clip(ys.fold(f64::MIN, f64::max).ceil(), height));
    let poly = corners.map(|[x, y]| [(x - x0 as f64).trunc(), (y - y0 as f64).trunc()]);
    let (mut sum, mut count) = (0.0f64, 0usize);
    for y in y0..=y1 {
        for x in x0..=x1 {
            if inside_convex(&poly, [(x - x0) as f64, (y - y0) as f64]) {
                sum += f64::from(prob[[y, x]]);
                count += 1;
            }
        }
    }
    if count == 0 { 0.0 } else { (sum / count as f64) as f32 }
}

/// Boxes in reading order: by the top-left corner's y then x, then, as PaddleOCR does, a box
/// whose top-left is less than 10 pixels lower than its predecessor's but further left moves
/// before it (one line whose words sit at slightly different heights).
pub(crate) fn reading_order(mut boxes: Vec<Candidate>) -> Vec<Candidate> {
    boxes.sort_by(|a, b| a.quad[0][1].total_cmp(&b.quad[0][1]).then(a.quad[0][0].total_cmp(&b.quad[0][0])));
    for i in 0..boxes.len().saturating_sub(1) {
        for j in (0..=i).rev() {
            let (a, b) = (boxes[j].quad[0], boxes[j + 1].quad[0]);
            if (b[1] - a[1]).abs() < 10.0 && b[0] < a[0] {
                boxes.swap(j, j + 1);
            } else {
                break;
            }
        }
    }
    boxes
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    const PARAMS: BoxParams = BoxParams { box_threshold: 0.5, unclip_ratio: 1.6 };

    #[test]
    fn plans_follow_rapidocr() {
        // A 1024² page: no resizing, no bands, the detector sees it as it is.
        assert_eq!(
            Plan::for_size(1024, 1024, RAPIDOCR_MIN_SIDE, 0.0),
            Plan { working: (1024, 1024), border: 0, pad: 0, detector: (1024, 1024) }
        );
        // Small pictures are enlarged so the shorter side reaches 736 (rounded to 32).
        assert_eq!(Plan::for_size(400, 300, RAPIDOCR_MIN_SIDE, 0.0).detector, (992, 736));
        // Without enlarging, only rounded to multiples of 32 (12.5 -> 12, 9.375 -> 9).
        assert_eq!(Plan::for_size(400, 300, 0, 0.0).detector, (384, 288));
        assert_eq!(Plan::for_size(1, 1, 0, 0.0).detector, (32, 32));
        // A line wider than 8× its height gets bands: 400×40 -> 400×100 (2·max(400/8, 30)).
        assert_eq!(Plan::for_size(400, 40, RAPIDOCR_MIN_SIDE, 0.0), Plan { working: (400, 40), border: 0, pad: 30, detector: (2944, 736) });
        assert_eq!(Plan::for_size(200, 40, RAPIDOCR_MIN_SIDE, 0.0).pad, 0);
        // Large pictures are shrunk to 2000 first, then rounded to multiples of 32 with ties to
        // even (2000 / 32 = 62.5 -> 62).
        assert_eq!(Plan::for_size(4000, 3000, RAPIDOCR_MIN_SIDE, 0.0).working, (1984, 1504));
        // 1×1 is enlarged to 32×32; a 5000×1 strip is shrunk then banded, never zero.
        assert_eq!(Plan::for_size(1, 1, RAPIDOCR_MIN_SIDE, 0.0), Plan { working: (32, 32), border: 0, pad: 0, detector: (736, 736) });
        let strip = Plan::for_size(5000, 1, RAPIDOCR_MIN_SIDE, 0.0);
        assert_eq!((strip.working, strip.pad), ((1984, 32), 232));
        assert!(strip.pad > 0 && strip.detector.0 <= MAX_DETECTOR_SIDE as u32);
    }

    #[test]
    fn borders_frame_the_working_picture() {
        // A quarter of the shorter side, at most 32: 80×40 gets 10 on every side.
        let plan = Plan::for_size(80, 40, 0, 0.25);
        assert_eq!((plan.border, plan.padded(), plan.offset(), plan.detector), (10, (100, 60), (10, 10), (96, 64)));
        assert_eq!(Plan::for_size(1024, 768, 0, 0.25).padded(), (1088, 832));
        // The letterbox is reckoned on the framed picture: 400×40 -> 420×60, 7 times wider.
        assert_eq!(Plan::for_size(400, 40, 0, 0.25).pad, 0);
    }

    #[test]
    fn detector_size_is_capped() {
        for (w, h) in [(30, 2000), (2000, 30), (1, 100_000), (100_000, 1), (65_535, 65_535), (3, 7)] {
            let plan = Plan::for_size(w, h, RAPIDOCR_MIN_SIDE, 0.0);
            let (dw, dh) = plan.detector;
            assert!(dw % 32 == 0 && dh % 32 == 0 && dw >= 32 && dh >= 32, "{plan:?}");
            assert!(dw.max(dh) as f64 <= MAX_DETECTOR_SIDE && plan.working.0.max(plan.working.1) <= 2016, "{w}×{h}: {plan:?}");
        }
    }

    fn map_with(width: usize, height: usize, rects: &[(usize, usize, usize, usize, f32)]) -> Array2<f32> {
        let mut map = Array2::zeros((height, width));
        for &(x0, y0, x1, y1, v) in rects {
            map.slice_mut(ndarray::s![y0..y1, x0..x1]).fill(v);
        }
        map
    }

    #[test]
    fn boxes_are_unclipped_and_scaled() {
        // A 40×10 block of text probability 0.9 at (10, 20) on a 100×50 map.
        let map = map_with(100, 50, &[(10, 20, 50, 30, 0.9)]);
        let found = boxes(map.view(), (200, 100), PARAMS);
        assert_eq!(found.len(), 1);
        // Dilated to 41×11 pixels: rectangle 40×10 between pixel centres (x 10..50, y 20..30);
        // grown by 400·1.6/100 = 6.4 each side: x 3.6..56.4, y 13.6..36.4; doubled and rounded.
        let want = [[7.0, 27.0], [113.0, 27.0], [113.0, 73.0], [7.0, 73.0]];
        assert_eq!(found[0].quad, want);
        // Scored on the map over the 41×11 pixels of the rectangle: 400 at 0.9.
        assert!((found[0].score - 0.9 * 400.0 / 451.0).abs() < 1e-4, "{}", found[0].score);
    }

    #[test]
    fn weak_thin_and_empty_regions_are_dropped() {
        // Mean 0.4 is under the box threshold; a 1-pixel-high streak is too thin.
        let map = map_with(100, 50, &[(10, 10, 50, 20, 0.4), (10, 40, 90, 41, 0.9)]);
        assert!(boxes(map.view(), (100, 50), PARAMS).is_empty());
        assert!(boxes(Array2::zeros((0, 0)).view(), (10, 10), PARAMS).is_empty());
        let lower = BoxParams { box_threshold: 0.3, ..PARAMS };
        assert_eq!(boxes(map.view(), (100, 50), lower).len(), 1);
    }

    #[test]
    fn reading_order_sorts_lines_then_words() {
        let at = |x: f64, y: f64| Candidate { quad: [[x, y], [x + 10.0, y], [x + 10.0, y + 5.0], [x, y + 5.0]], score: 1.0 };
        // Second line; first line's right word, 4 px higher than its left word; first line's left word.
        let sorted = reading_order(vec![at(0.0, 50.0), at(60.0, 6.0), at(5.0, 10.0)]);
        let starts: Vec<_> = sorted.iter().map(|c| c.quad[0]).collect();
        assert_eq!(starts, [[5.0, 10.0], [60.0, 6.0], [0.0, 50.0]]);
    }
}
