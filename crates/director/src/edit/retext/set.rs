//! Setting the new text where the old one was, as the old one was set.
//!
//! - **Ink and colour**: the old letters are the pixels where the picture and its rebuilt
//!   ground ([`super::fill`]) differ, seen upright in the box's frame; their colour is the
//!   median of the most different of them (the glyph cores, not the antialiased rims).
//! - **Size, weight, baseline**: the old text itself is typeset by plantain-typeset (Noto, bold
//!   and regular) and compared: the size is the one at which its ink is as high as the old ink
//!   (so capitals, descenders and accents count as they did), the weight the one whose ink
//!   covers its box about as densely, the baseline where that rendering puts it.
//! - **Angle**: the new text is typeset upright on a scratch canvas (white on black, so its
//!   coverage can be read back) and drawn through the box's frame, turned as the old text was,
//!   centred where the old ink was, in linear light.

use image::{GrayImage, Luma, Rgb, RgbImage};
use plantain_typeset::{MIN_SIZE_PX, Placement, TextSpec, Typesetter};

use super::frame::Frame;
use crate::edit::EditError;

/// How the old text was set, in its box's frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Style {
    pub size_px: f32,
    pub bold: bool,
    pub colour: Rgb<u8>,
    /// The middle of the old ink along the text.
    pub centre_u: f32,
    /// The old text's baseline across it.
    pub baseline_v: f32,
    /// The span along the text the new one may take (between neighbouring words), if bounded.
    pub room: Option<(f32, f32)>,
}

/// A new text wider than its room is condensed, down to this share of its width.
pub(super) const MIN_SQUEEZE: f32 = 0.6;

/// The old ink, seen upright: its box in frame pixels, colour and density.
struct OldInk {
    u0: f32,
    v0: f32,
    u1: f32,
    v1: f32,
    colour: Rgb<u8>,
    /// Share of the ink box the letters cover (coverage estimated from the difference).
    density: f32,
}

/// The old ink in the frame: where `original` and `plate` differ.
fn old_ink(original: &RgbImage, plate: &RgbImage, frame: &Frame) -> Option<OldInk> {
    let (a, b) = (frame.straighten(original), frame.straighten(plate));
    let diff: Vec<f32> =
        a.pixels().zip(b.pixels()).map(|(p, q)| (0..3).map(|c| (f32::from(p[c]) - f32::from(q[c])).powi(2)).sum::<f32>().sqrt()).collect();
    let mut sorted = diff.clone();
    sorted.sort_by(f32::total_cmp);
    let strong = sorted[(sorted.len() * 98 / 100).min(sorted.len() - 1)];
    if strong < 24.0 {
        return None;
    }
    let w = a.width() as usize;
    let inked: Vec<usize> = (0..diff.len()).filter(|&i| diff[i] > (0.5 * strong).max(20.0)).collect();
    let (xs, ys) = (inked.iter().map(|i| i % w), inked.iter().map(|i| i / w));
    let (u0, u1) = (xs.clone().min()? as f32, xs.max()? as f32 + 1.0);
    let (v0, v1) = (ys.clone().min()? as f32, ys.max()? as f32 + 1.0);
    let mut core: Vec<[u8; 3]> =
        (0..diff.len()).filter(|&i| diff[i] >= 0.8 * strong).map(|i| a.as_raw()[i * 3..i * 3 + 3].try_into().unwrap_or([0; 3])).collect();
    let colour = Rgb(std::array::from_fn(|c| {
        core.sort_unstable_by_key(|p| p[c]);
        core[core.len() / 2][c]
    }));
    let in_box = |i: usize| ((u0 as usize)..(u1 as usize)).contains(&(i % w)) && ((v0 as usize)..(v1 as usize)).contains(&(i / w));
    let covered: f32 = (0..diff.len()).filter(|&i| in_box(i)).map(|i| (diff[i] / strong).min(1.0)).sum();
    let density = covered / ((u1 - u0) * (v1 - v0)).max(1.0);
    Some(OldInk { u0, v0, u1, v1, colour, density })
}

/// The size at which calibration renderings are made.
const CALIBRATION_PX: f32 = 64.0;

/// How `old` was set inside `frame`: `original` has it, `plate` has it taken out.
pub(super) fn measure(original: &RgbImage, plate: &RgbImage, frame: &Frame, old: &str, ts: &Typesetter) -> Result<Style, EditError> {
    let Some(ink) = old_ink(original, plate, frame) else {
        return Err(EditError::NotFound(format!("the letters of \"{old}\" could not be told from their ground")));
    };
    let mut best: Option<(f32, bool, Rendered)> = None;
    for bold in [true, false] {
        let r = render(ts, old, CALIBRATION_PX, bold)?;
        let miss = (r.density() - ink.density).abs();
        if best.as_ref().is_none_or(|(m, _, _)| miss < *m) {
            best = Some((miss, bold, r));
        }
    }
    let (_, bold, r) = best.expect("two renderings");
    let (_, ry0, _, ry1) = r.ink;
    let scale = (ink.v1 - ink.v0) / (ry1 - ry0).max(1.0);
    Ok(Style {
        size_px: CALIBRATION_PX * scale,
        bold,
        colour: ink.colour,
        centre_u: (ink.u0 + ink.u1) / 2.0,
        baseline_v: ink.v0 + (r.baseline - ry0) * scale,
        room: None,
    })
}

/// A text typeset upright, as coverage (0 to 1) over its ink box.
pub(super) struct Rendered {
    cov: Vec<f32>,
    /// The ink box on the scratch canvas, `(x0, y0, x1, y1)`; `cov` covers it.
    ink: (f32, f32, f32, f32),
    baseline: f32,
    size: f32,
}

impl Rendered {
    fn width(&self) -> usize {
        (self.ink.2 - self.ink.0) as usize
    }

    /// Coverage at a scratch point, bilinear, 0 outside.
    fn at(&self, x: f32, y: f32) -> f32 {
        let (w, h) = (self.width() as i64, (self.ink.3 - self.ink.1) as i64);
        let (fx, fy) = (x - self.ink.0 - 0.5, y - self.ink.1 - 0.5);
        let (x0, y0) = (fx.floor() as i64, fy.floor() as i64);
        let (tx, ty) = (fx - x0 as f32, fy - y0 as f32);
        let get = |px: i64, py: i64| if px < 0 || py < 0 || px >= w || py >= h { 0.0 } else { self.cov[(py * w + px) as usize] };
        let top = get(x0, y0) * (1.0 - tx) + get(x0 + 1, y0) * tx;
        let bottom = get(x0, y0 + 1) * (1.0 - tx) + get(x0 + 1, y0 + 1) * tx;
        top * (1.0 - ty) + bottom * ty
    }

    fn density(&self) -> f32 {
        self.cov.iter().sum::<f32>() / self.cov.len().max(1) as f32
    }
}

/// `text` typeset upright at `size` (at least [`MIN_SIZE_PX`]; [`draw`] scales it down) in
/// white on a black scratch canvas, its coverage read back.
pub(super) fn render(ts: &Typesetter, text: &str, size: f32, bold: bool) -> Result<Rendered, EditError> {
    let size = size.max(MIN_SIZE_PX);
    let chars = text.chars().count() as f32;
    let (w, h) = ((size * (1.6 * chars + 2.0)).ceil() as u32 + 8, (size * 3.0).ceil() as u32 + 8);
    let canvas = RgbImage::new(w, h);
    let spec = TextSpec {
        placement: Placement::Box(0, 0, w, h),
        max_lines: 1,
        size: Some(size),
        colour: Some(Rgb([255, 255, 255])),
        language: None,
        bold,
        ..TextSpec::default()
    };
    let set = ts.set(&canvas, text, &spec).map_err(|e| EditError::Invalid(format!("cannot set \"{text}\": {e}")))?;
    let (x, y, iw, ih) = set.text_bbox;
    let baseline = set.glyphs.first().map_or((y + ih) as f32, |g| g.baseline);
    let cov =
        (y..y + ih).flat_map(|py| (x..x + iw).map(move |px| (px, py))).map(|(px, py)| to_linear(set.image.get_pixel(px, py)[1])).collect();
    Ok(Rendered { cov, ink: (x as f32, y as f32, (x + iw) as f32, (y + ih) as f32), baseline, size })
}

/// The new text drawn.
pub(super) struct Drawn {
    pub image: RgbImage,
    /// The pixels it changed may include (255).
    pub mask: GrayImage,
    /// Its ink box, in the picture.
    pub ink: Frame,
    /// How far it was moved along the text to stay in its room and in the picture (pixels).
    pub moved: f32,
    /// Its width as a share of its natural width (condensed to fit between neighbours).
    pub squeeze: f32,
}

/// Draws `r` onto `plate` in `frame` as `style` says: centred on the old ink along the text,
/// on the old baseline, turned with the frame; moved along the text when it would leave the
/// picture and can fit.
pub(super) fn draw(plate: &RgbImage, frame: &Frame, style: &Style, r: &Rendered) -> Drawn {
    let (width, height) = plate.dimensions();
    let k = style.size_px / r.size;
    let natural = (r.ink.2 - r.ink.0) * k;
    let squeeze = match style.room {
        Some((r0, r1)) if r1 > r0 && natural > r1 - r0 => ((r1 - r0) / natural).max(MIN_SQUEEZE),
        _ => 1.0,
    };
    let kx = k * squeeze;
    let cx = (r.ink.0 + r.ink.2) / 2.0;
    let box_of = |centre_u: f32| {
        let u0 = centre_u + (r.ink.0 - cx) * kx;
        let v0 = style.baseline_v + (r.ink.1 - r.baseline) * k;
        frame.sub_box(u0, v0, u0 + natural * squeeze, v0 + (r.ink.3 - r.ink.1) * k)
    };
    let in_room = within(style.centre_u, natural * squeeze, style.room);
    let centre_u = in_room + inward_shift(&box_of(in_room), frame, width as f32);
    let moved = centre_u - style.centre_u;
    let ink = box_of(centre_u);
    let colour = style.colour.0.map(to_linear);
    let mut image = plate.clone();
    let mut mask = GrayImage::new(width, height);
    let (x0, y0, x1, y1) = ink.sub_box(-2.0, -2.0, ink.width + 2.0, ink.height + 2.0).bounds(width, height);
    for y in y0..y1 {
        for x in x0..x1 {
            let (u, v) = frame.coords([x as f32 + 0.5, y as f32 + 0.5]);
            let a = r.at((u - centre_u) / kx + cx, (v - style.baseline_v) / k + r.baseline).clamp(0.0, 1.0);
            if a <= 0.002 {
                continue;
            }
            let px = image.get_pixel_mut(x, y);
            let under = px.0;
            px.0 = std::array::from_fn(|c| to_srgb(a * colour[c] + (1.0 - a) * to_linear(under[c])));
            mask.put_pixel(x, y, Luma([255]));
        }
    }
    Drawn { image, mask, ink, moved, squeeze }
}

/// The centre that keeps a text `width` wide inside `room` (when it fits), nearest `centre`.
fn within(centre: f32, width: f32, room: Option<(f32, f32)>) -> f32 {
    match room {
        Some((r0, r1)) if r1 - r0 >= width => centre.clamp(r0 + width / 2.0, r1 - width / 2.0),
        _ => centre,
    }
}

/// Draws `r` at `size_px` with its ink centred on the origin of `frame` (a turned frame of no
/// size), in `colour`.
pub(super) fn draw_centred(image: &RgbImage, frame: &Frame, r: &Rendered, size_px: f32, colour: Rgb<u8>, bold: bool) -> Drawn {
    let k = size_px / r.size;
    let baseline_v = (r.baseline - (r.ink.1 + r.ink.3) / 2.0) * k;
    draw(image, frame, &Style { size_px, bold, colour, centre_u: 0.0, baseline_v, room: None }, r)
}

/// The shift along the text that brings `ink` inside `[0, width]` across, when it fits.
fn inward_shift(ink: &Frame, frame: &Frame, width: f32) -> f32 {
    let xs = ink.corners().map(|p| p[0]);
    let (lo, hi) = (xs.iter().copied().fold(f32::MAX, f32::min), xs.iter().copied().fold(f32::MIN, f32::max));
    let ux = frame.point(1.0, 0.0)[0] - frame.point(0.0, 0.0)[0];
    if hi - lo > width || ux.abs() < 0.3 {
        return 0.0;
    }
    let dx = if lo < 0.0 {
        -lo
    } else if hi > width {
        width - hi
    } else {
        0.0
    };
    dx / ux
}

/// sRGB byte to linear light, 0 to 1.
fn to_linear(v: u8) -> f32 {
    let s = f32::from(v) / 255.0;
    if s <= 0.04045 { s / 12.92 } else { ((s + 0.055) / 1.055).powf(2.4) }
}

fn to_srgb(l: f32) -> u8 {
    let l = l.clamp(0.0, 1.0);
    let s = if l <= 0.003_130_8 { l * 12.92 } else { 1.055 * l.powf(1.0 / 2.4) - 0.055 };
    (s * 255.0).round() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_light_round_trips() {
        for v in [0u8, 1, 20, 128, 200, 255] {
            assert_eq!(to_srgb(to_linear(v)), v);
        }
    }

    #[test]
    fn shifts_bring_text_back_inside() {
        let frame = Frame::upright(0.0, 0.0, 100.0, 20.0);
        assert_eq!(inward_shift(&Frame::upright(-10.0, 0.0, 50.0, 20.0), &frame, 100.0), 10.0);
        assert_eq!(inward_shift(&Frame::upright(70.0, 0.0, 50.0, 20.0), &frame, 100.0), -20.0);
        assert_eq!(inward_shift(&Frame::upright(-10.0, 0.0, 150.0, 20.0), &frame, 100.0), 0.0, "too wide to fit");
        assert_eq!(within(50.0, 20.0, Some((45.0, 100.0))), 55.0);
        assert_eq!(within(50.0, 20.0, Some((0.0, 55.0))), 45.0);
        assert_eq!(within(50.0, 80.0, Some((0.0, 55.0))), 50.0, "no room: left as it was");
        assert_eq!(within(50.0, 20.0, Some((f32::NEG_INFINITY, 55.0))), 45.0);
        assert_eq!(within(50.0, 20.0, None), 50.0);
    }
}
