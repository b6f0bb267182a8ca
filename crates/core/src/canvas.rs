//! Canvas maths: the size a diffusion model draws at for an output size, before the picture is
//! resized to the output's exact pixels. Models draw well only on a grid (sides multiples of
//! the VAE factor times the UNet's down-sampling, 64 for SD) and near the square they were
//! trained at (their native side).

use crate::AspectRatio;

/// How far past the native area an on-grid output is still drawn as is: 1.5 times the native
/// side in each direction.
const MAX_AREA_OVER_NATIVE: f64 = 2.25;

/// The canvas a model with native side `native` and grid `multiple` draws a `width`x`height`
/// output at, what the engine uses for every generation: the output itself when both sides are
/// multiples of `multiple` and the area is at most 1.5² times the native one; otherwise the grid
/// size of the same shape whose area is closest to the native square (lowest
/// `|ln(area error)| + 4*|ln(ratio error)|`; the picture is then resized to the exact output).
///
/// Unlike [`native_canvas`] this favours the area over an exact ratio and takes any shape.
/// `width`, `height` and `multiple` must be at least 1.
pub fn canvas_for(width: u32, height: u32, native: u32, multiple: u32) -> (u32, u32) {
    let m = multiple;
    let native = f64::from(native);
    let max_area = native * native * MAX_AREA_OVER_NATIVE;
    if width.is_multiple_of(m) && height.is_multiple_of(m) && f64::from(width) * f64::from(height) <= max_area {
        return (width, height);
    }
    let ratio = f64::from(width) / f64::from(height);
    let mf = f64::from(m);
    let mut best = (m, m, f64::INFINITY);
    let h0 = (native * native / ratio).sqrt();
    let lo = ((h0 / mf / 2.0).floor() as u32).max(1);
    let hi = (h0 / mf * 2.0).ceil() as u32 + 1;
    for kh in lo..=hi {
        let h = f64::from(kh) * mf;
        let kw = ((h * ratio / mf).round() as u32).max(1);
        for kw in [kw.saturating_sub(1).max(1), kw, kw + 1] {
            let w = f64::from(kw) * mf;
            let cost = ((w * h) / (native * native)).ln().abs() + 4.0 * ((w / h) / ratio).ln().abs();
            if cost < best.2 {
                best = (kw * m, kh * m, cost);
            }
        }
    }
    (best.0, best.1)
}

/// Largest relative aspect-ratio error [`native_canvas`] accepts when any candidate meets it.
pub const NATIVE_RATIO_TOLERANCE: f64 = 0.03;

/// The (width, height) a diffusion model should draw at for `ratio`: both multiples of
/// `multiple` (8 for SD latents, 64 common), the aspect ratio as close as possible, and the
/// area close to `target_area` (512*512 for SD 1.5, 1024*1024 for SDXL). Used to pick training
/// buckets; the engine itself draws at [`canvas_for`] of the output size.
///
/// The shape is the hard constraint and the area the soft one, because a wrong shape distorts
/// the picture while a wrong area only changes detail: among grid points whose ratio is within
/// [`NATIVE_RATIO_TOLERANCE`] it picks the lowest `|ln(area error)| + 4*|ln(ratio error)|`
/// (so 16:9 at 1024² on a 64 grid is SDXL's 1344x768). Coarse grids on small areas can force a
/// smaller canvas: 3:4 at 512² on a 64 grid is 384x512. If no candidate is within tolerance
/// (only for areas of a few grid cells) the closest ratio wins. A `multiple` of 0 counts as 1;
/// each side is at least one `multiple`.
pub fn native_canvas(ratio: AspectRatio, target_area: u32, multiple: u32) -> (u32, u32) {
    let m = f64::from(multiple.max(1));
    let r = ratio.value();
    let area = f64::from(target_area.max(1));
    // Never below one multiple per side: for tiny areas grow the ideal until the short side fits.
    let short = (area / r).sqrt().min((area * r).sqrt());
    let ideal_h = (area / r).sqrt() * (m / short).max(1.0);
    let kh = (ideal_h / m).round().max(1.0);

    // (within tolerance, cost, ratio error, w, h); compared lexicographically below.
    let mut best: Option<(bool, f64, f64, f64, f64)> = None;
    let lo = (kh / 2.0).floor().max(1.0) as u64;
    let hi = (kh * 2.0).ceil() as u64 + 2;
    for k in lo..=hi {
        let h = k as f64 * m;
        let kw = (h * r / m).round();
        for dw in [-1.0, 0.0, 1.0] {
            let w = (kw + dw).max(1.0) * m;
            let ratio_err = (w / h / r).ln().abs();
            let ok = (w / h / r - 1.0).abs() < NATIVE_RATIO_TOLERANCE;
            let cost = (w * h / area).ln().abs() + 4.0 * ratio_err;
            let better = match best {
                None => true,
                Some((b_ok, b_cost, b_err, ..)) => match (ok, b_ok) {
                    (true, false) => true,
                    (false, true) => false,
                    (true, true) => cost < b_cost - 1e-12,
                    (false, false) => ratio_err < b_err - 1e-12,
                },
            };
            if better {
                best = Some((ok, cost, ratio_err, w, h));
            }
        }
    }
    let (_, _, _, w, h) = best.unwrap_or((true, 0.0, 0.0, m, m));
    // Sides are whole multiples near sqrt(u32 area * ratio); saturate rather than wrap if a
    // side ever passes u32::MAX.
    let to_u32 = |x: f64| {
        if x >= f64::from(u32::MAX) { u32::MAX } else { x as u32 }
    };
    (to_u32(w), to_u32(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_canvases_keep_the_ratio() {
        for multiple in [8, 16, 64] {
            for area in [512 * 512, 768 * 768, 1024 * 1024] {
                for ratio in AspectRatio::ALL {
                    let (w, h) = native_canvas(ratio, area, multiple);
                    assert_eq!((w % multiple, h % multiple), (0, 0));
                    let ratio_err = (f64::from(w) / f64::from(h) / ratio.value() - 1.0).abs();
                    assert!(ratio_err < 0.03, "{ratio} {area} /{multiple}: {w}x{h}");
                    // Area is the soft goal: within 30% even on a 64 grid at 512².
                    let area_err = (f64::from(w * h) / f64::from(area) - 1.0).abs();
                    assert!(area_err < 0.3, "{ratio} {area} /{multiple}: {w}x{h} area");
                    if multiple == 8 {
                        assert!(area_err < 0.05, "{ratio} {area} /8: {w}x{h} area");
                    }
                }
            }
        }
    }

    #[test]
    fn native_canvas_known_values() {
        assert_eq!(native_canvas(AspectRatio::R1x1, 512 * 512, 8), (512, 512));
        assert_eq!(native_canvas(AspectRatio::R1x1, 1024 * 1024, 64), (1024, 1024));
        assert_eq!(native_canvas(AspectRatio::R16x9, 1024 * 1024, 64), (1344, 768));
        assert_eq!(native_canvas(AspectRatio::R3x2, 1024 * 1024, 64), (1280, 832));
        assert_eq!(native_canvas(AspectRatio::R3x4, 512 * 512, 64), (384, 512));
        assert_eq!(native_canvas(AspectRatio::R21x9, 512 * 512, 8), (784, 336));
        assert_eq!(native_canvas(AspectRatio::R8x1, 512 * 512, 64), (1536, 192));
        // Degenerate inputs give a valid canvas instead of panicking.
        assert_eq!(native_canvas(AspectRatio::R1x1, 0, 0), (1, 1));
        assert_eq!(native_canvas(AspectRatio::R1x8, 1, 64), (64, 512));
        let (w, h) = native_canvas(AspectRatio::R8x1, u32::MAX, 8);
        assert!(w > h && w % 8 == 0);
    }

    #[test]
    fn canvas_for_keeps_grid_sizes_up_to_the_area_limit() {
        assert_eq!(canvas_for(512, 256, 512, 64), (512, 256));
        assert_eq!(canvas_for(768, 768, 512, 64), (768, 768));
        // Past 1.5x the native side per direction: drawn near the native area instead.
        assert_eq!(canvas_for(832, 832, 512, 64), (512, 512));
        assert_eq!(canvas_for(4096, 4096, 512, 64), (512, 512));
    }

    #[test]
    fn canvas_for_maps_other_sizes_onto_the_grid_near_the_native_area() {
        // The values the engine has drawn at since the rule was written (outputs depend on them).
        assert_eq!(canvas_for(688, 384, 512, 64), (704, 384));
        assert_eq!(canvas_for(1376, 768, 1024, 64), (1344, 768));
        assert_eq!(canvas_for(896, 1200, 512, 64), (448, 576));
        assert_eq!(canvas_for(80, 48, 64, 16), (80, 48));
        for (w, h) in [(688, 384), (100, 70), (5056, 3392), (1, 1), (16_384, 1)] {
            for (native, m) in [(512, 64), (1024, 64), (64, 16), (64, 8)] {
                let (cw, ch) = canvas_for(w, h, native, m);
                assert!(cw >= m && ch >= m && cw % m == 0 && ch % m == 0, "{w}x{h} at {native}/{m}: {cw}x{ch}");
            }
        }
    }
}
