//! Times BRISQUE on a 1024x1024 picture (or on the pictures named on the command line):
//! the median of 5 runs each, with the score.
//!
//!     cargo run --release -p plantain-quality --example brisque_time [picture ...]

use std::time::Instant;

use image::RgbImage;
use plantain_quality::Brisque;

const RUNS: usize = 5;

/// A deterministic 1024x1024 picture with edges, gradients and texture.
fn synthetic() -> RgbImage {
    let mut state = 0x1234_5678_u32;
    RgbImage::from_fn(1024, 1024, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let noise = (state % 17) as f32 - 8.0;
        let ring = (((x as f32 - 512.0).hypot(y as f32 - 400.0) / 40.0).sin() * 60.0) + 128.0;
        let base = [ring, x as f32 / 4.0, y as f32 / 4.0];
        image::Rgb(base.map(|v| (v + noise).clamp(0.0, 255.0) as u8))
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let brisque = Brisque::open_installed()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pictures: Vec<(String, RgbImage)> = if args.is_empty() {
        vec![("synthetic 1024x1024".to_string(), synthetic())]
    } else {
        args.into_iter().map(|p| image::open(&p).map(|i| (p, i.to_rgb8()))).collect::<Result<_, _>>()?
    };
    for (name, img) in pictures {
        let mut times = Vec::with_capacity(RUNS);
        let mut score = 0.0;
        for _ in 0..RUNS {
            let start = Instant::now();
            score = brisque.score(&img)?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{name} ({}x{}): score {score:.3}, median {:.1} ms of {RUNS} (min {:.1}, max {:.1})",
            img.width(),
            img.height(),
            times[RUNS / 2],
            times[0],
            times[RUNS - 1]
        );
    }
    Ok(())
}
