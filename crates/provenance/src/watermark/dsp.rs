//! Plain-array image helpers: luma, box filters, area downscaling, bilinear sampling, 2-D FFTs.

use rustfft::FftPlanner;
use rustfft::num_complex::Complex32;

/// A single-channel f32 plane, row-major.
#[derive(Clone, Debug)]
pub struct Plane {
    pub w: usize,
    pub h: usize,
    pub data: Vec<f32>,
}

impl Plane {
    pub fn new(w: usize, h: usize) -> Self {
        Plane { w, h, data: vec![0.0; w * h] }
    }

    /// BT.601 luma of an RGB image.
    pub fn luma(img: &image::RgbImage) -> Self {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let data =
            img.as_raw().chunks_exact(3).map(|p| 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])).collect();
        Plane { w, h, data }
    }

    /// The projection of every RGB pixel on `wts`.
    pub fn project(img: &image::RgbImage, wts: [f32; 3]) -> Self {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let data =
            img.as_raw().chunks_exact(3).map(|p| wts[0] * f32::from(p[0]) + wts[1] * f32::from(p[1]) + wts[2] * f32::from(p[2])).collect();
        Plane { w, h, data }
    }

    #[inline]
    pub fn at(&self, x: usize, y: usize) -> f32 {
        self.data[y * self.w + x]
    }

    /// Bilinear sample with the point outside the plane returning `None`.
    #[inline]
    pub fn sample(&self, x: f32, y: f32) -> Option<f32> {
        if !(x >= 0.0 && y >= 0.0) {
            return None;
        }
        let (x0, y0) = (x as usize, y as usize);
        if x0 + 1 >= self.w || y0 + 1 >= self.h {
            return None;
        }
        let (fx, fy) = (x - x0 as f32, y - y0 as f32);
        let i = y0 * self.w + x0;
        let d = &self.data;
        let top = d[i] + (d[i + 1] - d[i]) * fx;
        let bot = d[i + self.w] + (d[i + self.w + 1] - d[i + self.w]) * fx;
        Some(top + (bot - top) * fy)
    }

    /// Mean over a (2r+1)² box, edges clamped; separable running sums, O(1) per pixel.
    pub fn box_blur(&self, r: usize) -> Plane {
        let tmp = box_1d(&self.data, self.w, self.h, r, true);
        Plane { w: self.w, h: self.h, data: box_1d(&tmp, self.w, self.h, r, false) }
    }

    /// Mean over a (2r+1)² box with wrap-around (for spectra).
    pub fn box_blur_cyclic(&self, r: usize) -> Plane {
        let (w, h) = (self.w, self.h);
        let norm = 1.0 / (2 * r + 1) as f32;
        let mut tmp = vec![0f32; w * h];
        for y in 0..h {
            let row = &self.data[y * w..(y + 1) * w];
            let mut acc: f32 = (0..=2 * r).map(|k| row[(k + w - r % w) % w]).sum();
            for x in 0..w {
                tmp[y * w + x] = acc * norm;
                acc += row[(x + r + 1) % w] - row[(x + w - r % w) % w];
            }
        }
        let mut out = vec![0f32; w * h];
        for x in 0..w {
            let mut acc: f32 = (0..=2 * r).map(|k| tmp[((k + h - r % h) % h) * w + x]).sum();
            for y in 0..h {
                out[y * w + x] = acc * norm;
                acc += tmp[((y + r + 1) % h) * w + x] - tmp[((y + h - r % h) % h) * w + x];
            }
        }
        Plane { w, h, data: out }
    }

    /// Area-average downscale by the real factor `g >= 1`.
    pub fn downscale(&self, g: f32) -> Plane {
        if g <= 1.0 {
            return self.clone();
        }
        let nw = ((self.w as f32 / g).round() as usize).max(1);
        let nh = ((self.h as f32 / g).round() as usize).max(1);
        let cols = area_weights(self.w, nw);
        let rows = area_weights(self.h, nh);
        // Horizontal pass.
        let mut tmp = vec![0f32; nw * self.h];
        for y in 0..self.h {
            let src = &self.data[y * self.w..(y + 1) * self.w];
            for (nx, ws) in cols.iter().enumerate() {
                tmp[y * nw + nx] = ws.iter().map(|&(i, wt)| src[i] * wt).sum();
            }
        }
        let mut out = Plane::new(nw, nh);
        for (ny, ws) in rows.iter().enumerate() {
            let dst = &mut out.data[ny * nw..(ny + 1) * nw];
            for &(i, wt) in ws {
                for (d, s) in dst.iter_mut().zip(&tmp[i * nw..(i + 1) * nw]) {
                    *d += s * wt;
                }
            }
        }
        out
    }
}

/// For each output sample, the input samples it averages and their weights (summing to 1).
fn area_weights(n_in: usize, n_out: usize) -> Vec<Vec<(usize, f32)>> {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|o| {
            let (a, b) = (o as f64 * scale, (o + 1) as f64 * scale);
            let mut v = Vec::new();
            let mut i = a.floor() as usize;
            while (i as f64) < b && i < n_in {
                let lo = a.max(i as f64);
                let hi = b.min(i as f64 + 1.0);
                if hi > lo {
                    v.push((i, ((hi - lo) / scale) as f32));
                }
                i += 1;
            }
            v
        })
        .collect()
}

fn box_1d(src: &[f32], w: usize, h: usize, r: usize, horizontal: bool) -> Vec<f32> {
    let mut out = vec![0f32; w * h];
    let norm = 1.0 / (2 * r + 1) as f32;
    if horizontal {
        let clampi = |k: isize| k.clamp(0, w as isize - 1) as usize;
        for (row, dst) in src.chunks_exact(w).zip(out.chunks_exact_mut(w)) {
            let mut acc = 0f32;
            for k in -(r as isize)..=(r as isize) {
                acc += row[clampi(k)];
            }
            for (k, d) in dst.iter_mut().enumerate() {
                *d = acc * norm;
                acc += row[clampi(k as isize + r as isize + 1)] - row[clampi(k as isize - r as isize)];
            }
        }
    } else {
        // Down the columns a whole row at a time (running sums per column, the same additions in
        // the same order as one column at a time, but reading memory in order).
        let clampi = |k: isize| k.clamp(0, h as isize - 1) as usize;
        let row = |y: usize| &src[y * w..(y + 1) * w];
        let mut acc = vec![0f32; w];
        for k in -(r as isize)..=(r as isize) {
            acc.iter_mut().zip(row(clampi(k))).for_each(|(a, s)| *a += s);
        }
        for (y, dst) in out.chunks_exact_mut(w).enumerate() {
            dst.iter_mut().zip(&acc).for_each(|(d, a)| *d = a * norm);
            let (add, sub) = (row(clampi(y as isize + r as isize + 1)), row(clampi(y as isize - r as isize)));
            for ((a, p), m) in acc.iter_mut().zip(add).zip(sub) {
                *a += p - m;
            }
        }
    }
    out
}

/// The smallest integer >= n whose only prime factors are 2, 3 and 5 (fast FFT sizes).
pub fn fft_size(n: usize) -> usize {
    let mut m = n.max(1);
    loop {
        let mut k = m;
        for p in [2, 3, 5] {
            while k.is_multiple_of(p) {
                k /= p;
            }
        }
        if k == 1 {
            return m;
        }
        m += 1;
    }
}

/// In-place 2-D FFT of a row-major `w x h` complex array.
pub fn fft2(data: &mut [Complex32], w: usize, h: usize, inverse: bool) {
    let mut planner = FftPlanner::<f32>::new();
    let (fw, fh) = if inverse {
        (planner.plan_fft_inverse(w), planner.plan_fft_inverse(h))
    } else {
        (planner.plan_fft_forward(w), planner.plan_fft_forward(h))
    };
    fw.process(data);
    let mut col = vec![Complex32::new(0.0, 0.0); h];
    for x in 0..w {
        for y in 0..h {
            col[y] = data[y * w + x];
        }
        fh.process(&mut col);
        for y in 0..h {
            data[y * w + x] = col[y];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vertical_box_pass_is_the_horizontal_one_transposed() {
        // Edges clamp on both axes and the radius exceeds the short side, so every branch runs.
        let (w, h, r) = (13, 6, 7);
        let src: Vec<f32> = (0..w * h).map(|i| ((i * 37 % 101) as f32).sin() * 50.0).collect();
        let transposed: Vec<f32> = (0..w * h).map(|i| src[(i % h) * w + i / h]).collect();
        let down = box_1d(&src, w, h, r, false);
        let across = box_1d(&transposed, h, w, r, true);
        for y in 0..h {
            for x in 0..w {
                assert_eq!(down[y * w + x], across[x * h + y], "({x}, {y})");
            }
        }
    }

    #[test]
    fn box_blur_keeps_constants_and_downscale_averages() {
        let p = Plane { w: 7, h: 5, data: vec![3.0; 35] };
        assert!(p.box_blur(2).data.iter().all(|v| (v - 3.0).abs() < 1e-5));
        let q = Plane { w: 4, h: 2, data: vec![0.0, 2.0, 4.0, 6.0, 0.0, 2.0, 4.0, 6.0] };
        let d = q.downscale(2.0);
        assert_eq!((d.w, d.h), (2, 1));
        assert!((d.data[0] - 1.0).abs() < 1e-5 && (d.data[1] - 5.0).abs() < 1e-5);
        assert_eq!(fft_size(1025), 1080);
    }
}
