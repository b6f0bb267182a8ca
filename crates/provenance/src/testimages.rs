//! Deterministic synthetic test pictures (tests and the benchmark harness): a sky gradient, a
//! textured "ground" of multi-octave value noise, a few flat shapes and a flat panel, so that both
//! texture and flat areas are present.

use image::{Rgb, RgbImage};

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32) / (1u64 << 24) as f32
    }
}

fn hash2(x: i64, y: i64, seed: u64) -> f32 {
    let mut h = (x as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (y as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ seed.wrapping_mul(0x1656_67B1_9E37_79F9);
    h ^= h >> 31;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 29;
    ((h >> 40) as f32) / (1u64 << 24) as f32
}

fn value_noise(x: f32, y: f32, seed: u64) -> f32 {
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let (sx, sy) = (fx * fx * (3.0 - 2.0 * fx), fy * fy * (3.0 - 2.0 * fy));
    let (xi, yi) = (x0 as i64, y0 as i64);
    let a = hash2(xi, yi, seed);
    let b = hash2(xi + 1, yi, seed);
    let c = hash2(xi, yi + 1, seed);
    let d = hash2(xi + 1, yi + 1, seed);
    let top = a + (b - a) * sx;
    let bot = c + (d - c) * sx;
    top + (bot - top) * sy
}

/// A `w x h` picture that depends only on `seed`.
pub fn scene(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut rng = Lcg(seed ^ 0x5151_5151);
    let horizon = 0.35 + 0.3 * rng.next();
    let sky_top = [rng.next() * 80.0 + 40.0, rng.next() * 80.0 + 90.0, 200.0 + rng.next() * 50.0];
    let sky_bot = [200.0 + rng.next() * 50.0, 190.0 + rng.next() * 50.0, 180.0 + rng.next() * 60.0];
    let ground = [rng.next() * 120.0 + 40.0, rng.next() * 120.0 + 60.0, rng.next() * 80.0 + 20.0];
    let shapes: Vec<([f32; 4], [f32; 3], bool)> = (0..6)
        .map(|_| {
            (
                [rng.next(), rng.next(), 0.05 + 0.2 * rng.next(), 0.05 + 0.2 * rng.next()],
                [rng.next() * 255.0, rng.next() * 255.0, rng.next() * 255.0],
                rng.next() < 0.5,
            )
        })
        .collect();
    let scale = w.max(h) as f32 / 512.0;
    RgbImage::from_fn(w, h, |x, y| {
        let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
        let mut c = if v < horizon {
            let t = v / horizon;
            [0, 1, 2].map(|i| sky_top[i] + (sky_bot[i] - sky_top[i]) * t)
        } else {
            let (px, py) = (x as f32 / scale, y as f32 / scale);
            let mut n = 0.0;
            let mut amp = 1.0;
            let mut f = 1.0 / 64.0;
            for o in 0..5 {
                n += amp * (value_noise(px * f, py * f, seed + o) - 0.5);
                amp *= 0.6;
                f *= 2.0;
            }
            [0, 1, 2].map(|i| ground[i] * (1.0 + 1.2 * n))
        };
        for (r, col, round) in &shapes {
            let (dx, dy) = ((u - r[0]) / r[2], (v - r[1]) / r[3]);
            let inside = if *round { dx * dx + dy * dy < 1.0 } else { dx.abs() < 1.0 && dy.abs() < 1.0 };
            if inside {
                c = *col;
            }
        }
        Rgb(c.map(|v| v.clamp(0.0, 255.0) as u8))
    })
}
