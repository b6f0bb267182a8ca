//! Taking letters out of a box and rebuilding the ground behind them, with no model.
//!
//! The ground is modelled from a ring of pixels around the box: a least-squares quadratic in x
//! and y per channel (a plane or a constant when the ring does not surround the box), refitted
//! twice without the ring pixels it explains worst (other text, edges), so that flat colours
//! and gradients come back exact. Inside the box, the pixels that differ from that ground by
//! more than the ring's own spread are the letters; they and a thin band around them (the
//! antialiased rim) are filled by harmonic inpainting of the residual from the ground model,
//! so the surrounding texture's low frequencies carry in and a flat ground stays flat. The
//! other pixels of the box keep their bytes.

use image::{GrayImage, Luma, Rgb, RgbImage};
use plantain_imageio::composite;

use super::frame::Frame;

/// What a removal did.
#[derive(Clone, Debug)]
pub(super) struct Removal {
    /// The whole picture with the letters of the box taken out.
    pub plate: RgbImage,
    /// Pixels rebuilt.
    pub filled: u64,
    /// The ground model: 6 (quadratic), 3 (plane) or 1 (constant) terms.
    pub terms: usize,
    /// The ring's spread around the model (robust, per channel level).
    pub sigma: f32,
}

/// A window of the picture around the box: its origin and size.
struct Window {
    x0: u32,
    y0: u32,
    w: u32,
    h: u32,
}

impl Window {
    fn around(frame: &Frame, pad: u32, (width, height): (u32, u32)) -> Window {
        let (x0, y0, x1, y1) = frame.bounds(width, height);
        let (x0, y0) = (x0.saturating_sub(pad), y0.saturating_sub(pad));
        let (x1, y1) = ((x1 + pad).min(width), (y1 + pad).min(height));
        Window { x0, y0, w: x1 - x0, h: y1 - y0 }
    }

    fn index(&self, x: u32, y: u32) -> usize {
        (y * self.w + x) as usize
    }
}

/// A sample of the ground: position (picture pixels) and colour.
type Sample = ([f64; 2], [f64; 3]);

/// Removes the letters of the box `tight` from `image`: the ink inside `outer` (the box grown
/// by a margin: detectors' boxes can be tight to the ink or cut it) connected to ink in
/// `tight` (or just above or below it: accents), so that other text reaching into the margin
/// stays.
pub(super) fn remove_letters(image: &RgbImage, tight: &Frame, outer: &Frame) -> Removal {
    let ring = (0.15 * outer.height).round().clamp(3.0, 24.0) as u32;
    let win = Window::around(outer, ring + 1, image.dimensions());
    let inside = GrayImage::from_fn(win.w, win.h, |x, y| Luma([if outer.contains_pixel(win.x0 + x, win.y0 + y) { 255 } else { 0 }]));
    let dist = composite::distance_to(&inside);
    let pixel = |x: u32, y: u32| image.get_pixel(win.x0 + x, win.y0 + y).0.map(f64::from);
    let at = |x: u32, y: u32| [f64::from(win.x0 + x) + 0.5, f64::from(win.y0 + y) + 0.5];
    let coords = || (0..win.h).flat_map(|y| (0..win.w).map(move |x| (x, y)));
    let mut samples: Vec<Sample> =
        coords().filter(|&(x, y)| (0.5..=ring as f32).contains(&dist[win.index(x, y)])).map(|(x, y)| (at(x, y), pixel(x, y))).collect();
    if samples.len() < 4 {
        // The box covers the picture: its own pixels are all there is.
        samples = coords().map(|(x, y)| (at(x, y), pixel(x, y))).collect();
    }
    let ground = Ground::fit_robust(&samples, outer);
    let tol = (4.0 * ground.sigma).max(28.0);
    let residual = |x: u32, y: u32| norm(sub3(pixel(x, y), ground.at(at(x, y))));
    let ink: Vec<bool> = coords().map(|(x, y)| dist[win.index(x, y)] == 0.0 && residual(x, y) > tol).collect();
    let seed = |x: u32, y: u32| {
        let (u, v) = tight.coords([(win.x0 + x) as f32 + 0.5, (win.y0 + y) as f32 + 0.5]);
        (0.0..=tight.width).contains(&u) && (-0.2 * tight.height..=1.2 * tight.height).contains(&v)
    };
    let letters = connected(&ink, &win, seed);
    let rim = (0.04 * outer.height).max(1.5);
    let near = composite::distance_to(&letters);
    let unknown: Vec<bool> = (0..(win.w * win.h) as usize).map(|i| dist[i] == 0.0 && near[i] <= rim).collect();
    let mut res: Vec<[f64; 3]> =
        coords().map(|(x, y)| if unknown[win.index(x, y)] { [0.0; 3] } else { sub3(pixel(x, y), ground.at(at(x, y))) }).collect();
    harmonic(&mut res, &unknown, &win);
    let mut plate = image.clone();
    let mut filled = 0;
    for (x, y) in coords().filter(|&(x, y)| unknown[win.index(x, y)]) {
        let g = ground.at(at(x, y));
        let e = res[win.index(x, y)];
        plate.put_pixel(win.x0 + x, win.y0 + y, Rgb(std::array::from_fn(|c| (g[c] + e[c]).round().clamp(0.0, 255.0) as u8)));
        filled += 1;
    }
    Removal { plate, filled, terms: ground.terms, sigma: ground.sigma as f32 }
}

/// The ink pixels 8-connected to an ink pixel where `seed` holds, as a mask of the window.
fn connected(ink: &[bool], win: &Window, seed: impl Fn(u32, u32) -> bool) -> GrayImage {
    let mut reached = GrayImage::new(win.w, win.h);
    let mut stack: Vec<(u32, u32)> =
        (0..win.h).flat_map(|y| (0..win.w).map(move |x| (x, y))).filter(|&(x, y)| ink[win.index(x, y)] && seed(x, y)).collect();
    while let Some((x, y)) = stack.pop() {
        if reached.get_pixel(x, y).0[0] > 0 {
            continue;
        }
        reached.put_pixel(x, y, Luma([255]));
        for (dx, dy) in [(-1i64, -1i64), (0, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (0, 1), (1, 1)] {
            let (nx, ny) = (i64::from(x) + dx, i64::from(y) + dy);
            if nx >= 0 && ny >= 0 && nx < i64::from(win.w) && ny < i64::from(win.h) {
                let (nx, ny) = (nx as u32, ny as u32);
                if ink[win.index(nx, ny)] && reached.get_pixel(nx, ny).0[0] == 0 {
                    stack.push((nx, ny));
                }
            }
        }
    }
    reached
}

fn sub3(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

/// Gauss–Seidel with over-relaxation: each unknown value becomes the mean of its four
/// neighbours in the window, the known ones fixed.
fn harmonic(values: &mut [[f64; 3]], unknown: &[bool], win: &Window) {
    let cells: Vec<(u32, u32)> =
        (0..win.h).flat_map(|y| (0..win.w).map(move |x| (x, y))).filter(|&(x, y)| unknown[win.index(x, y)]).collect();
    const OMEGA: f64 = 1.8;
    const SWEEPS: usize = 250;
    for _ in 0..SWEEPS {
        for &(x, y) in &cells {
            let mut sum = [0.0; 3];
            let mut n = 0.0;
            let neighbours = [(x.wrapping_sub(1), y), (x + 1, y), (x, y.wrapping_sub(1)), (x, y + 1)];
            for (nx, ny) in neighbours.into_iter().filter(|&(nx, ny)| nx < win.w && ny < win.h) {
                let v = values[win.index(nx, ny)];
                (0..3).for_each(|c| sum[c] += v[c]);
                n += 1.0;
            }
            if n > 0.0 {
                let i = win.index(x, y);
                (0..3).for_each(|c| values[i][c] += OMEGA * (sum[c] / n - values[i][c]));
            }
        }
    }
}

/// A smooth colour field: per channel, a polynomial in x and y of 1, 3 or 6 terms.
struct Ground {
    coef: [Vec<f64>; 3],
    terms: usize,
    centre: [f64; 2],
    scale: f64,
    sigma: f64,
}

impl Ground {
    fn basis(&self, p: [f64; 2]) -> [f64; 6] {
        basis(p, self.centre, self.scale)
    }

    fn at(&self, p: [f64; 2]) -> [f64; 3] {
        let b = self.basis(p);
        std::array::from_fn(|c| self.coef[c].iter().zip(b).map(|(k, v)| k * v).sum())
    }

    /// The richest model the ring supports (a quadratic needs ground on every side of the
    /// box), refitted twice without the samples beyond three robust spreads.
    fn fit_robust(samples: &[Sample], frame: &Frame) -> Ground {
        let c = frame.point(frame.width / 2.0, frame.height / 2.0);
        let centre = [f64::from(c[0]), f64::from(c[1])];
        let scale = f64::from(frame.width.max(frame.height).max(1.0));
        let sides = [0usize, 1].map(|axis| {
            let lo = samples.iter().filter(|(p, _)| p[axis] < centre[axis] - f64::from(frame.height) * 0.5).count();
            let hi = samples.iter().filter(|(p, _)| p[axis] > centre[axis] + f64::from(frame.height) * 0.5).count();
            lo.min(hi)
        });
        let preferred = if sides.iter().all(|&n| n >= 3) { 6 } else { 3 };
        let mut kept: Vec<Sample> = samples.to_vec();
        let mut ground = fit_terms(&kept, centre, scale, preferred);
        for _ in 0..2 {
            let errors: Vec<f64> = samples.iter().map(|(p, v)| norm(sub3(*v, ground.at(*p)))).collect();
            let sigma = 1.4826 * median(errors.clone());
            let limit = (3.0 * sigma).max(6.0);
            kept = samples.iter().zip(&errors).filter(|(_, e)| **e <= limit).map(|(s, _)| *s).collect();
            ground = fit_terms(&kept, centre, scale, preferred);
        }
        let errors: Vec<f64> = kept.iter().map(|(p, v)| norm(sub3(*v, ground.at(*p)))).collect();
        ground.sigma = 1.4826 * median(errors) / 3f64.sqrt();
        ground
    }
}

fn norm(v: [f64; 3]) -> f64 {
    (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt()
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn basis(p: [f64; 2], centre: [f64; 2], scale: f64) -> [f64; 6] {
    let (x, y) = ((p[0] - centre[0]) / scale, (p[1] - centre[1]) / scale);
    [1.0, x, y, x * x, x * y, y * y]
}

/// Least squares with `terms` terms, or fewer when the samples cannot pin them down.
fn fit_terms(samples: &[Sample], centre: [f64; 2], scale: f64, terms: usize) -> Ground {
    for k in [terms, 3, 1].into_iter().filter(|&k| k <= terms) {
        let rows: Vec<[f64; 6]> = samples.iter().map(|(p, _)| basis(*p, centre, scale)).collect();
        let solved: Option<Vec<Vec<f64>>> = (0..3).map(|c| solve_normal(&rows, samples.iter().map(|(_, v)| v[c]), k)).collect();
        if let Some(coef) = solved.filter(|_| samples.len() >= k) {
            let coef: [Vec<f64>; 3] = std::array::from_fn(|c| coef[c].clone());
            return Ground { coef, terms: k, centre, scale, sigma: 0.0 };
        }
    }
    Ground { coef: std::array::from_fn(|_| vec![128.0]), terms: 1, centre, scale, sigma: 0.0 }
}

/// The least-squares coefficients of the first `k` basis terms for the values `b`, by the
/// normal equations and Gaussian elimination with partial pivoting; `None` when singular.
fn solve_normal(rows: &[[f64; 6]], b: impl Iterator<Item = f64>, k: usize) -> Option<Vec<f64>> {
    let mut a = vec![vec![0.0; k + 1]; k];
    for (row, v) in rows.iter().zip(b) {
        for i in 0..k {
            for j in 0..k {
                a[i][j] += row[i] * row[j];
            }
            a[i][k] += row[i] * v;
        }
    }
    for col in 0..k {
        let pivot = (col..k).max_by(|&r, &s| a[r][col].abs().total_cmp(&a[s][col].abs()))?;
        if a[pivot][col].abs() < 1e-10 {
            return None;
        }
        a.swap(col, pivot);
        let pivot_row = a[col].clone();
        for (_, row) in a.iter_mut().enumerate().filter(|(r, _)| *r != col) {
            let f = row[col] / pivot_row[col];
            row.iter_mut().zip(&pivot_row).skip(col).for_each(|(v, p)| *v -= f * p);
        }
    }
    Some((0..k).map(|i| a[i][k] / a[i][i]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A diagonal gradient with a dark block of "letters" in the box.
    fn gradient_with_block() -> (RgbImage, Frame) {
        let ground = |x: u32, y: u32| Rgb([(40 + x) as u8, (30 + y * 2) as u8, (200 - x / 2) as u8]);
        let mut image = RgbImage::from_fn(160, 90, ground);
        for y in 35..50 {
            for x in 50..100 {
                if (x / 6) % 2 == 0 {
                    image.put_pixel(x, y, Rgb([10, 10, 10]));
                }
            }
        }
        (image, Frame::upright(40.0, 25.0, 70.0, 35.0))
    }

    #[test]
    fn letters_on_a_gradient_come_out_exactly() {
        let (image, frame) = gradient_with_block();
        let removal = remove_letters(&image, &frame, &frame.sub_box(-6.0, -6.0, frame.width + 6.0, frame.height + 6.0));
        assert_eq!(removal.terms, 6);
        assert!(removal.filled > 300, "{}", removal.filled);
        let worst = (25..60)
            .flat_map(|y| (40..110).map(move |x| (x, y)))
            .map(|(x, y)| {
                let want = [(40 + x) as i32, (30 + y * 2) as i32, (200 - x / 2) as i32];
                let got = removal.plate.get_pixel(x, y).0;
                (0..3).map(|c| (i32::from(got[c]) - want[c]).abs()).max().unwrap()
            })
            .max()
            .unwrap();
        assert!(worst <= 2, "worst error {worst}");
        let outside = composite::changed_outside(&image, &removal.plate, &frame.mask(160, 90));
        assert_eq!(outside, 0);
    }

    #[test]
    fn letters_reaching_past_a_tight_box_go_and_other_ink_in_the_margin_stays() {
        let mut image = RgbImage::from_pixel(120, 80, Rgb([200, 200, 200]));
        // A "letter" from x 30 to 70, the box only 35..65; another mark at 76..80 apart from it.
        for y in 30..50 {
            for x in (30..70).chain(76..80) {
                image.put_pixel(x, y, Rgb([0, 0, 0]));
            }
        }
        let tight = Frame::upright(35.0, 28.0, 30.0, 24.0);
        let outer = tight.sub_box(-12.0, -6.0, 42.0, 30.0);
        let removal = remove_letters(&image, &tight, &outer);
        assert_eq!(removal.plate.get_pixel(31, 40).0, [200, 200, 200], "the letter's end outside the box is gone");
        assert!(outer.contains_pixel(76, 40));
        assert_eq!(removal.plate.get_pixel(76, 40).0, [0, 0, 0], "the other mark stays");
    }

    #[test]
    fn least_squares_recovers_a_plane() {
        let rows: Vec<[f64; 6]> = (0..20).map(|i| basis([f64::from(i % 5), f64::from(i / 5)], [0.0, 0.0], 1.0)).collect();
        let values = rows.iter().map(|r| 3.0 + 2.0 * r[1] - r[2]);
        let coef = solve_normal(&rows, values, 3).unwrap();
        assert!((coef[0] - 3.0).abs() < 1e-9 && (coef[1] - 2.0).abs() < 1e-9 && (coef[2] + 1.0).abs() < 1e-9, "{coef:?}");
        assert!(solve_normal(&rows[..1], [1.0].into_iter(), 3).is_none());
    }
}
