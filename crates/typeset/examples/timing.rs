//! Times the typesetter: loading the system fonts, then setting one line on a 1024 × 1024
//! picture (first call, then the median of 5), per script sample and background. Wall-clock
//! time, and on Linux the thread's CPU time too (from /proc/thread-self/schedstat), which a
//! busy machine inflates less.
//!
//!     cargo run --release -p plantain-typeset --example timing

use std::time::{Duration, Instant};

use image::{Rgb, RgbImage};
use plantain_typeset::{TextSpec, Typesetter};

const RUNS: usize = 5;

fn main() {
    let start = Instant::now();
    let typesetter = Typesetter::new();
    println!("Typesetter::new (load {}): {:.1} ms", plantain_typeset::FONT_DIR, ms(start.elapsed()));
    let pictures = [("photo-like", photo_like(1024, 1024)), ("noise", noise(1024, 1024))];
    for (name, picture) in &pictures {
        for text in ["Café déjà vu", "مرحبا بالعالم", "नमस्ते दुनिया", "你好世界"] {
            let set = || typesetter.set(picture, text, &TextSpec::default()).expect("set");
            let (first, _) = time(set);
            let mut runs: Vec<(Duration, Option<Duration>)> = (0..RUNS).map(|_| time(set)).collect();
            let median = |mut v: Vec<Duration>| {
                v.sort();
                v.get(RUNS / 2).map_or(f64::NAN, |d| ms(*d))
            };
            let wall = median(runs.iter().map(|r| r.0).collect());
            let cpu = median(runs.iter_mut().filter_map(|r| r.1).collect());
            println!("{name:>10} {text:<16} first {:>6.1} ms; median of {RUNS}: {wall:>6.1} ms wall, {cpu:>6.1} ms CPU", ms(first));
        }
    }
}

/// Wall-clock and (where the OS tells) CPU time of one call.
fn time<T>(f: impl FnOnce() -> T) -> (Duration, Option<Duration>) {
    let (start, cpu) = (Instant::now(), thread_cpu());
    f();
    let cpu = cpu.zip(thread_cpu()).map(|(a, b)| b.saturating_sub(a));
    (start.elapsed(), cpu)
}

/// The calling thread's time on a CPU so far (Linux).
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(stat.split_whitespace().next()?.parse().ok()?))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn photo_like(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let wave = ((y as f32 * 0.3 + (x as f32 * 0.02).sin() * 6.0).sin() + 1.0) / 2.0;
        let t = y as f32 / h as f32;
        Rgb([(60.0 + 150.0 * wave * t) as u8, (90.0 + 120.0 * wave) as u8, (200.0 - 120.0 * t) as u8])
    })
}

fn noise(w: u32, h: u32) -> RgbImage {
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    RgbImage::from_fn(w, h, |_, _| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let [r, g, b, ..] = s.to_le_bytes();
        Rgb([r, g, b])
    })
}
