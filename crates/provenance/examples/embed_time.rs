//! Times embedding at 4K and 8K (median of runs), for profiling the embedder:
//!
//!     cargo run --release -p plantain-provenance --example embed_time [runs]
use std::time::Instant;

use plantain_provenance::testimages::scene;
use plantain_provenance::watermark::{self, Payload, WatermarkKey};

fn main() {
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let key = WatermarkKey::from_passphrase("timing");
    let p = Payload::from_u64(0x504c_0000_1234_5678);
    for (w, h) in [(3840, 2160), (7680, 4320)] {
        let img = scene(w, h, 7);
        let mut times: Vec<f64> = (0..runs)
            .map(|_| {
                let t0 = Instant::now();
                std::hint::black_box(watermark::embed(&img, &p, &key));
                t0.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!("{w}x{h}: median {:.3} s over {runs} runs (min {:.3}, max {:.3})", times[runs / 2], times[0], times[runs - 1]);
    }
}
