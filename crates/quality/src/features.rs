//! The 36 BRISQUE features as OpenCV's `ComputeBrisqueFeature` (qualitybrisque.cpp) computes
//! them: at two scales (the picture, then a bicubic half-size copy), the MSCN coefficients
//! (local mean and deviation over a 7x7 Gaussian of sigma 7/6, replicated border, C = 1/255),
//! a generalised Gaussian fit to them (2 features) and an asymmetric one to their products with
//! the horizontal, vertical and two diagonal neighbours (4 features each).

use std::sync::OnceLock;

use crate::plane::{Plane, gaussian_blur7, gaussian_kernel, resize_cubic};

/// Features per picture: 18 per scale, 2 scales.
pub const FEATURE_COUNT: usize = 36;

/// The neighbour each coefficient is multiplied with, as (row, column) offsets: H, V, D1, D2.
const SHIFTS: [(isize, isize); 4] = [(0, 1), (1, 0), (1, 1), (-1, 1)];

/// The parameters of an asymmetric generalised Gaussian fit.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Aggd {
    left: f64,
    right: f64,
    gamma: f64,
}

/// Sums over a set of samples in the order OpenCV visits them (row by row), in `f64`.
#[derive(Debug, Default)]
struct Moments {
    positive: u64,
    negative: u64,
    positive_squares: f64,
    negative_squares: f64,
    absolute: f64,
}

impl Moments {
    /// Adds one sample; zeros and NaN count only in the total, as in OpenCV's `AGGDfit`.
    #[inline]
    fn add(&mut self, sample: f32) {
        let pt = f64::from(sample);
        if pt > 0.0 {
            self.positive += 1;
            self.positive_squares += pt * pt;
            self.absolute += pt;
        } else if pt < 0.0 {
            self.negative += 1;
            self.negative_squares += pt * pt;
            self.absolute -= pt;
        }
    }

    /// OpenCV's `AGGDfit` over `total` samples (zeros included).
    fn fit(&self, total: usize) -> Aggd {
        let total = total as f64;
        let left = (self.negative_squares / self.negative as f64).powf(0.5);
        let right = (self.positive_squares / self.positive as f64).powf(0.5);
        let gammahat = left / right;
        let rhat = (self.absolute / total).powf(2.0) / ((self.negative_squares + self.positive_squares) / total);
        let rhatnorm = rhat * (gammahat.powf(3.0) + 1.0) * (gammahat + 1.0) / (gammahat.powf(2.0) + 1.0).powf(2.0);
        Aggd { left, right, gamma: search_gamma(rhatnorm) }
    }
}

/// `tgamma(2/g)^2 / (tgamma(1/g) * tgamma(3/g))` for g = 0.2, 0.201, ... < 10, the gammas summed
/// up in `f64` step by step as OpenCV's loop does.
fn gamma_table() -> &'static [(f64, f64)] {
    static TABLE: OnceLock<Vec<(f64, f64)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = Vec::with_capacity(9801);
        let mut gam = 0.2f64;
        while gam < 10.0 {
            let r = libm::tgamma(2.0 / gam) * libm::tgamma(2.0 / gam) / (libm::tgamma(1.0 / gam) * libm::tgamma(3.0 / gam));
            table.push((gam, r));
            gam += 0.001;
        }
        table
    })
}

/// The first gamma of the table at which the distance to `rhatnorm` stops falling (OpenCV's
/// search, break included). A NaN `rhatnorm` never breaks and so gives the last gamma.
fn search_gamma(rhatnorm: f64) -> f64 {
    let mut best = 0.0;
    let mut previous = 1e10;
    for &(gam, r) in gamma_table() {
        let diff = (r - rhatnorm).abs();
        if diff > previous {
            break;
        }
        previous = diff;
        best = gam;
    }
    best
}

/// The MSCN coefficients (the image less its local mean, over its local deviation plus 1/255).
fn mscn(img: &Plane, kernel: &[f32; 7]) -> Plane {
    let mu = gaussian_blur7(img, kernel);
    let sigma = gaussian_blur7(&img.map(|v| v * v), kernel);
    let c = (1.0f64 / 255.0) as f32;
    let data = img
        .data
        .iter()
        .zip(&mu.data)
        .zip(&sigma.data)
        .map(|((&v, &m), &s)| {
            let deviation = (s - m * m).sqrt() + c;
            (v - m) / deviation
        })
        .collect();
    Plane::new(img.width, img.height, data)
}

/// The fit to the products of each coefficient with its neighbour at `shift` (zero past the edge).
fn pair_fit(s: &Plane, (dy, dx): (isize, isize)) -> Aggd {
    let (w, h) = (s.width as isize, s.height as isize);
    let mut moments = Moments::default();
    for y in 0..h {
        let ny = y + dy;
        for x in 0..w {
            let nx = x + dx;
            if ny >= 0 && ny < h && nx >= 0 && nx < w {
                moments.add(s.data[(y * w + x) as usize] * s.data[(ny * w + nx) as usize]);
            }
        }
    }
    moments.fit(s.data.len())
}

/// The 18 features of one scale, pushed onto `out`.
fn scale_features(img: &Plane, kernel: &[f32; 7], out: &mut Vec<f32>) {
    let structdis = mscn(img, kernel);
    let mut moments = Moments::default();
    structdis.data.iter().for_each(|&v| moments.add(v));
    let fit = moments.fit(structdis.data.len());
    out.push(fit.gamma as f32);
    out.push((fit.left * fit.left + fit.right * fit.right) as f32 / 2.0);
    for shift in SHIFTS {
        let fit = pair_fit(&structdis, shift);
        let g = fit.gamma;
        let constant = libm::tgamma(1.0 / g).sqrt() / libm::tgamma(3.0 / g).sqrt();
        let mean = (fit.right - fit.left) * (libm::tgamma(2.0 / g) / libm::tgamma(1.0 / g)) * constant;
        out.extend([g as f32, mean as f32, fit.left.powf(2.0) as f32, fit.right.powf(2.0) as f32]);
    }
}

/// The 36 features of a grey picture scaled to [0, 1]; at least 2x2 samples (the caller checks).
pub fn compute(img: &Plane) -> [f32; FEATURE_COUNT] {
    let kernel = gaussian_kernel(7.0 / 6.0);
    let mut out = Vec::with_capacity(FEATURE_COUNT);
    for scale in 0..2 {
        // OpenCV: int(cols / 2^scale), int(rows / 2^scale); scale 0 is a copy.
        let scaled = resize_cubic(img, img.width >> scale, img.height >> scale);
        scale_features(&scaled, &kernel, &mut out);
    }
    out.try_into().expect("18 features per scale")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ratio the table holds, for a gamma.
    fn ratio(g: f64) -> f64 {
        libm::tgamma(2.0 / g).powi(2) / (libm::tgamma(1.0 / g) * libm::tgamma(3.0 / g))
    }

    #[test]
    fn the_table_spans_opencvs_loop() {
        let t = gamma_table();
        // `for (double gam = 0.2; gam < 10; gam += 0.001)` runs 9801 times: the sum drifts below
        // 10 (a C program printing the loop's last value gives 9.999999999999897).
        assert_eq!(t.len(), 9801);
        assert_eq!(t[0].0, 0.2);
        assert_eq!(t[9800].0, 9.999999999999897);
    }

    #[test]
    fn the_search_finds_the_gamma_of_a_ratio() {
        // A Gaussian has gamma 2 and a Laplacian gamma 1.
        assert!((search_gamma(ratio(2.0)) - 2.0).abs() < 1.5e-3);
        assert!((search_gamma(ratio(1.0)) - 1.0).abs() < 1.5e-3);
        assert!((search_gamma(ratio(0.731)) - 0.731).abs() < 1.5e-3);
        // NaN never breaks: the last gamma, as OpenCV gives for a flat picture.
        assert_eq!(search_gamma(f64::NAN), gamma_table()[9800].0);
    }

    #[test]
    fn a_symmetric_two_point_sample_fits_both_sides() {
        let mut m = Moments::default();
        for v in [1.0f32, -1.0, 2.0, -2.0, 0.0] {
            m.add(v);
        }
        m.add(f32::NAN);
        let fit = m.fit(6);
        let expected = (2.5f64).sqrt();
        assert!((fit.left - expected).abs() < 1e-12 && (fit.right - expected).abs() < 1e-12, "{fit:?}");
    }

    #[test]
    fn mscn_of_a_flat_picture_is_zero_or_undefined() {
        // Rounding can make the local variance a hair below zero; its root is then NaN, in
        // OpenCV too.
        let flat = Plane::new(9, 9, vec![0.25; 81]);
        let s = mscn(&flat, &gaussian_kernel(7.0 / 6.0));
        assert!(s.data.iter().all(|&v| v.is_nan() || v.abs() < 1e-4), "{:?}", &s.data[..9]);
    }
}
