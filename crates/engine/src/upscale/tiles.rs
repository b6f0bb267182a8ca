//! Tiled inference: where the tiles go, how much each output pixel of a tile counts, and the
//! band of output rows in which overlapping tiles are blended before being written out.

use image::RgbImage;

/// Start offsets of tiles of length `min(tile, len)` that cover `0..len`, neighbours sharing at
/// least `overlap` pixels, spread evenly (the last one ends at `len`).
pub fn starts(len: u32, tile: u32, overlap: u32) -> Vec<u32> {
    if len <= tile {
        return vec![0];
    }
    let step = tile.saturating_sub(overlap).max(1);
    let n = (len - overlap).div_ceil(step).max(2);
    let span = (len - tile) as u64;
    (0..n).map(|i| ((i as u64 * span + (n as u64 - 1) / 2) / (n as u64 - 1)) as u32).collect()
}

/// Blend weight of each output pixel along one axis of a tile of `out_len` output pixels: a
/// linear ramp over `ramp` pixels from each side that borders another tile (`open_start`,
/// `open_end`), 1 elsewhere. Where two tiles overlap by exactly `ramp`, the two ramps sum to 1
/// (a cross-fade); pixels next to a tile's inner edge, which saw the least context, count least.
pub fn ramp(out_len: usize, ramp: usize, open_start: bool, open_end: bool) -> Vec<f32> {
    let ramp = ramp.max(1) as f32;
    (0..out_len)
        .map(|u| {
            let d0 = if open_start { (u as f32 + 0.5) / ramp } else { 1.0 };
            let d1 = if open_end { ((out_len - u) as f32 - 0.5) / ramp } else { 1.0 };
            d0.min(d1).min(1.0)
        })
        .collect()
}

/// Output rows being blended: weighted RGB sums and weight sums for rows `top..` of an image
/// `width` wide. Rows are written to the picture (and dropped) once no later tile reaches them,
/// so the band never holds more than about one row of tiles.
pub struct Band {
    width: usize,
    top: u32,
    /// `[r, g, b, weight]` per pixel, row after row.
    sums: Vec<[f32; 4]>,
}

impl Band {
    pub fn new(width: u32) -> Self {
        Self { width: width as usize, top: 0, sums: Vec::new() }
    }

    /// Adds a tile's output `rgb` (planar `[3, h, w]`, values in [0, 1]) at `(x0, y0)`, each
    /// pixel weighted by `wy[row] * wx[col]`.
    pub fn add(&mut self, x0: u32, y0: u32, rgb: &[f32], wx: &[f32], wy: &[f32]) {
        let (w, h) = (wx.len(), wy.len());
        let rows_needed = (y0 - self.top) as usize + h;
        if self.sums.len() < rows_needed * self.width {
            self.sums.resize(rows_needed * self.width, [0.0; 4]);
        }
        let plane = w * h;
        for (r, &ky) in wy.iter().enumerate() {
            let row = ((y0 - self.top) as usize + r) * self.width + x0 as usize;
            for (c, &kx) in wx.iter().enumerate() {
                let k = ky * kx;
                let i = r * w + c;
                let s = &mut self.sums[row + c];
                s[0] += rgb[i] * k;
                s[1] += rgb[plane + i] * k;
                s[2] += rgb[2 * plane + i] * k;
                s[3] += k;
            }
        }
    }

    /// Writes rows `top..until` into `out` (weighted means, rounded to 8 bits) and drops them.
    pub fn flush(&mut self, until: u32, out: &mut RgbImage) {
        let rows = until.saturating_sub(self.top) as usize;
        let n = (rows * self.width).min(self.sums.len());
        for (i, s) in self.sums[..n].iter().enumerate() {
            let (x, y) = ((i % self.width) as u32, self.top + (i / self.width) as u32);
            let px = |v: f32| ((v / s[3].max(f32::MIN_POSITIVE)).clamp(0.0, 1.0) * 255.0).round() as u8;
            out.put_pixel(x, y, image::Rgb([px(s[0]), px(s[1]), px(s[2])]));
        }
        self.sums.drain(..n);
        self.top += rows as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_axis_with_the_asked_overlap() {
        assert_eq!(starts(100, 192, 24), vec![0]);
        assert_eq!(starts(192, 192, 24), vec![0]);
        for (len, tile, overlap) in [(193, 192, 24), (1024, 192, 24), (1000, 128, 32), (4097, 200, 16)] {
            let s = starts(len, tile, overlap);
            assert_eq!(s[0], 0);
            assert_eq!(*s.last().unwrap() + tile, len, "{len} {tile} {overlap}: {s:?}");
            for pair in s.windows(2) {
                assert!(pair[1] > pair[0] && pair[0] + tile >= pair[1] + overlap, "{len} {tile} {overlap}: {s:?}");
            }
        }
    }

    #[test]
    fn ramps_cross_fade_to_one_and_spare_image_edges() {
        let a = ramp(40, 8, false, true);
        let b = ramp(40, 8, true, false);
        // Tile b starts 32 pixels after tile a: their 8 shared pixels sum to 1.
        for u in 0..8 {
            assert!((a[32 + u] + b[u] - 1.0).abs() < 1e-6);
        }
        assert_eq!(a[0], 1.0);
        assert_eq!(b[39], 1.0);
        assert!(a[39] < 0.1 && b[0] < 0.1);
    }

    #[test]
    fn band_blends_weighted_means_and_writes_rows_once_final() {
        let mut out = RgbImage::new(4, 2);
        let mut band = Band::new(4);
        let ones = vec![1.0f32; 3 * 2 * 3];
        let zeros = vec![0.0f32; 3 * 2 * 3];
        band.add(0, 0, &ones, &[1.0, 1.0, 0.5], &[1.0, 1.0]);
        band.add(1, 0, &zeros, &[0.5, 1.0, 1.0], &[1.0, 1.0]);
        band.flush(2, &mut out);
        let row: Vec<u8> = (0..4).map(|x| out.get_pixel(x, 1)[0]).collect();
        // x=1: 1*1 + 0*0.5 over 1.5; x=2: (0.5*1 + 1*0) / 1.5.
        assert_eq!(row, vec![255, 170, 85, 0]);
        assert!(band.sums.is_empty());
    }
}
