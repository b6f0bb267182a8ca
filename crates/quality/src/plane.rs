//! A single-channel `f32` picture and the three OpenCV operations BRISQUE needs on it, each
//! written to round as OpenCV's does: the grey conversion (`cvtColor(BGR2GRAY)` on 8 bits, then
//! `convertTo(CV_32F, 1/255)`), the 7x7 Gaussian blur (`GaussianBlur`, replicated border) and the
//! bicubic resize (`resize(INTER_CUBIC)`).

use image::{GrayImage, RgbImage};

/// Rows of `width` samples, row after row.
#[derive(Debug, Clone, PartialEq)]
pub struct Plane {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl Plane {
    pub fn new(width: usize, height: usize, data: Vec<f32>) -> Plane {
        assert_eq!(data.len(), width * height, "plane data does not match its size");
        Plane { width, height, data }
    }

    fn row(&self, y: usize) -> &[f32] {
        &self.data[y * self.width..(y + 1) * self.width]
    }

    /// Each sample mapped through `f`.
    pub fn map(&self, f: impl Fn(f32) -> f32) -> Plane {
        Plane::new(self.width, self.height, self.data.iter().map(|&v| f(v)).collect())
    }
}

/// OpenCV's `cvtColor(COLOR_BGR2GRAY)` on 8 bits: the BT.601 weights in fixed point with 15
/// fraction bits (B 3735, G 19235, R 9798, summing to 32768), rounded half up. These are the
/// weights OpenCV 5.1 uses: they reproduce `cv2.cvtColor` on every pixel of a random picture,
/// where the 14-bit weights of older releases (1868, 9617, 4899) miss about 1 pixel in 35.
/// OpenCV reads the picture as B, G, R; the weights follow the colours, so an RGB picture gives
/// the same grey.
pub fn luma(img: &RgbImage) -> GrayImage {
    const R2Y: u32 = 9798;
    const G2Y: u32 = 19235;
    const B2Y: u32 = 3735;
    const SHIFT: u32 = 15;
    let (w, h) = img.dimensions();
    let data =
        img.pixels().map(|p| ((u32::from(p[0]) * R2Y + u32::from(p[1]) * G2Y + u32::from(p[2]) * B2Y + (1 << (SHIFT - 1))) >> SHIFT) as u8);
    GrayImage::from_raw(w, h, data.collect()).expect("one grey sample per pixel")
}

/// `convertTo(CV_32F, 1./255)`: each sample times `(float)(1/255)`, rounded once to `f32`.
pub fn unit(img: &GrayImage) -> Plane {
    let scale = (1.0f64 / 255.0) as f32;
    let (w, h) = img.dimensions();
    Plane::new(w as usize, h as usize, img.as_raw().iter().map(|&v| f32::from(v) * scale).collect())
}

/// The 7-tap Gaussian of `getGaussianKernel(7, sigma, CV_32F)`: computed in double, normalised,
/// then rounded to `f32`.
pub fn gaussian_kernel(sigma: f64) -> [f32; 7] {
    let scale = -0.5 / (sigma * sigma);
    let weights: Vec<f64> = (0..7).map(|i| (scale * ((i as f64 - 3.0).powi(2))).exp()).collect();
    let sum: f64 = weights.iter().sum();
    std::array::from_fn(|i| (weights[i] / sum) as f32)
}

/// `GaussianBlur(src, dst, Size(7, 7), sigma, 0, BORDER_REPLICATE)` on `f32`, rounded as
/// OpenCV's separable filter rounds on an x86-64 CPU with AVX2 (what `opencv-python` dispatches
/// to there): rows first, each output a chain of fused multiply-adds in the vector body; the
/// last `width % 8` outputs of a row come from its scalar loops, which the compiler fused only
/// in part (found by comparing with `cv2.GaussianBlur` bit for bit, see the crate README).
pub fn gaussian_blur7(src: &Plane, kernel: &[f32; 7]) -> Plane {
    let (w, h) = (src.width, src.height);
    let mut rows = vec![0f32; w * h];
    let mut padded = vec![0f32; w + 6];
    for y in 0..h {
        let line = src.row(y);
        for (i, p) in padded.iter_mut().enumerate() {
            *p = line[clamp_index(i as isize - 3, w)];
        }
        blur_row(&padded, kernel, &mut rows[y * w..(y + 1) * w]);
    }
    let mut data = vec![0f32; w * h];
    for (y, out) in data.chunks_exact_mut(w).enumerate() {
        let taps: [&[f32]; 7] = std::array::from_fn(|i| {
            let r = clamp_index(y as isize + i as isize - 3, h);
            &rows[r * w..(r + 1) * w]
        });
        blur_column(&taps, kernel, out);
    }
    Plane::new(w, h, data)
}

/// Where OpenCV's vector loops stop: they take 8 outputs at a time.
fn vector_end(width: usize) -> usize {
    width - width % 8
}

/// One row: `padded` holds the row with 3 replicated samples on each side.
fn blur_row(padded: &[f32], k: &[f32; 7], out: &mut [f32]) {
    let width = out.len();
    // The scalar loop of 4 (taken when 4 or more outputs are left) is fused throughout.
    let fused_end = if width % 8 >= 4 { vector_end(width) + 4 } else { vector_end(width) };
    for (x, o) in out.iter_mut().enumerate() {
        let p = &padded[x..x + 7];
        let mut s = p[0] * k[0];
        if x < fused_end {
            for i in 1..7 {
                s = p[i].mul_add(k[i], s);
            }
        } else {
            // The last scalar loop: four separate multiply-adds, then two fused ones.
            for i in 1..5 {
                s += p[i] * k[i];
            }
            s = p[5].mul_add(k[5], s);
            s = p[6].mul_add(k[6], s);
        }
        *o = s;
    }
}

/// One output row from the seven blurred rows around it (`taps[3]` is the centre), with the
/// symmetric taps paired: `k3*c + k4*(r1 + r-1) + ...`; fused in the vector body, separate
/// multiply and add in the scalar tail.
fn blur_column(taps: &[&[f32]; 7], k: &[f32; 7], out: &mut [f32]) {
    let fused_end = vector_end(out.len());
    for (x, o) in out.iter_mut().enumerate() {
        let mut s = taps[3][x] * k[3];
        for d in 1..=3 {
            let pair = taps[3 + d][x] + taps[3 - d][x];
            s = if x < fused_end { pair.mul_add(k[3 + d], s) } else { s + pair * k[3 + d] };
        }
        *o = s;
    }
}

#[inline]
fn clamp_index(i: isize, len: usize) -> usize {
    i.clamp(0, len as isize - 1) as usize
}

/// For each destination index: the first of its four source indices (clamped at the borders as
/// OpenCV's resize does) and the four cubic weights.
struct CubicTaps {
    index: Vec<[usize; 4]>,
    weight: Vec<[f32; 4]>,
}

impl CubicTaps {
    /// OpenCV's `resize` tables: `fx = (float)((dx + 0.5) * scale - 0.5)`, `sx = floor(fx)`,
    /// `scale = 1 / (dst / src)` in double.
    fn new(src: usize, dst: usize) -> CubicTaps {
        let scale = 1.0 / (dst as f64 / src as f64);
        let mut index = Vec::with_capacity(dst);
        let mut weight = Vec::with_capacity(dst);
        for d in 0..dst {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let s = f.floor();
            let sx = s as isize;
            index.push(std::array::from_fn(|k| clamp_index(sx - 1 + k as isize, src)));
            weight.push(cubic_weights(f - s));
        }
        CubicTaps { index, weight }
    }
}

/// `interpolateCubic` with A = -0.75, in `f32`.
fn cubic_weights(x: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let c0 = ((A * (x + 1.0) - 5.0 * A) * (x + 1.0) + 8.0 * A) * (x + 1.0) - 4.0 * A;
    let c1 = ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let c2 = ((A + 2.0) * (1.0 - x) - (A + 3.0)) * (1.0 - x) * (1.0 - x) + 1.0;
    [c0, c1, c2, 1.0 - c0 - c1 - c2]
}

/// `resize(src, dst, Size(width, height), 0, 0, INTER_CUBIC)` on `f32` as OpenCV's own code
/// computes it (rows then columns, a copy when the size does not change). `opencv-python` hands
/// this resize to Intel IPP where it can, which rounds differently (and, for odd sizes, maps the
/// coordinates a little differently); see the crate README for what that does to the features.
pub fn resize_cubic(src: &Plane, width: usize, height: usize) -> Plane {
    if (width, height) == (src.width, src.height) {
        return src.clone();
    }
    let xt = CubicTaps::new(src.width, width);
    let yt = CubicTaps::new(src.height, height);
    let mut rows = vec![0f32; width * src.height];
    for y in 0..src.height {
        let line = src.row(y);
        for (x, o) in rows[y * width..(y + 1) * width].iter_mut().enumerate() {
            let (i, c) = (&xt.index[x], &xt.weight[x]);
            *o = line[i[0]] * c[0] + line[i[1]] * c[1] + line[i[2]] * c[2] + line[i[3]] * c[3];
        }
    }
    let mut data = vec![0f32; width * height];
    for (y, out) in data.chunks_exact_mut(width).enumerate() {
        let (i, c) = (&yt.index[y], &yt.weight[y]);
        let r: [&[f32]; 4] = std::array::from_fn(|k| &rows[i[k] * width..(i[k] + 1) * width]);
        for (x, o) in out.iter_mut().enumerate() {
            // OpenCV's vertical pass adds the four products last to first.
            *o = r[3][x] * c[3] + r[2][x] * c[2] + r[1][x] * c[1] + r[0][x] * c[0];
        }
    }
    Plane::new(width, height, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luma_weights_follow_the_colours() {
        let img = RgbImage::from_raw(3, 1, vec![255, 0, 0, 0, 255, 0, 0, 0, 255]).unwrap();
        // 255 * 9798 / 32768 = 76.2, 255 * 19235 / 32768 = 149.7, 255 * 3735 / 32768 = 29.07
        assert_eq!(luma(&img).as_raw(), &vec![76, 150, 29]);
        // A pixel where the 14-bit weights of older OpenCV releases give 103.
        let px = RgbImage::from_raw(1, 1, vec![122, 100, 73]).unwrap();
        assert_eq!(luma(&px).as_raw(), &vec![104]);
        let white = RgbImage::from_pixel(2, 2, image::Rgb([255, 255, 255]));
        assert!(luma(&white).pixels().all(|p| p[0] == 255));
    }

    #[test]
    fn the_kernel_is_normalised_and_symmetric() {
        let k = gaussian_kernel(7.0 / 6.0);
        let sum: f32 = k.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6, "{sum}");
        for i in 0..3 {
            assert_eq!(k[i], k[6 - i]);
        }
        assert!(k[3] > 0.34 && k[3] < 0.35, "{k:?}");
    }

    #[test]
    fn blur_keeps_a_constant_and_spreads_an_impulse() {
        let k = gaussian_kernel(7.0 / 6.0);
        let flat = Plane::new(5, 4, vec![0.5; 20]);
        assert!(gaussian_blur7(&flat, &k).data.iter().all(|&v| (v - 0.5).abs() < 1e-6));
        let mut data = vec![0f32; 81];
        data[40] = 1.0;
        let out = gaussian_blur7(&Plane::new(9, 9, data), &k);
        assert!((out.data[40] - k[3] * k[3]).abs() < 1e-7);
        assert!((out.data[41] - k[3] * k[4]).abs() < 1e-7);
        assert_eq!(out.data[0], 0.0);
    }

    #[test]
    fn cubic_weights_sum_to_one_and_halve_evenly() {
        assert_eq!(cubic_weights(0.0), [0.0, 1.0, 0.0, 0.0]);
        assert_eq!(cubic_weights(0.5), [-0.09375, 0.59375, 0.59375, -0.09375]);
    }

    #[test]
    fn resize_halves_a_ramp_and_copies_at_the_same_size() {
        let ramp = Plane::new(8, 2, (0..16).map(|i| (i % 8) as f32).collect());
        assert_eq!(resize_cubic(&ramp, 8, 2), ramp);
        let half = resize_cubic(&ramp, 4, 1);
        // Inside, a cubic reproduces a linear ramp: sample 2x + 0.5.
        assert!((half.data[1] - 2.5).abs() < 1e-6, "{:?}", half.data);
        assert!((half.data[2] - 4.5).abs() < 1e-6, "{:?}", half.data);
    }
}
