//! Measures the checker: per-attribute accuracy on rendered ground truth (sharp, blurred,
//! noisy) at several sizes, and how often it flags deliberately wrong images.
//! `cargo run --release -p plantain-world --example world_check_eval -- [scenes]`

use plantain_world::testing::{Degradation, evaluate_ground_truth, evaluate_mutations};

fn main() {
    let scenes: usize = std::env::args().nth(1).map(|s| s.parse().expect("a count")).unwrap_or(300);
    for (w, h) in [(64, 64), (96, 48), (48, 96), (256, 256), (1024, 576)] {
        for degradation in [Degradation::None, Degradation::BlurNoise, Degradation::Strong] {
            let r = evaluate_ground_truth(scenes, w, h, degradation, 11);
            println!("{w}x{h} {degradation:?}: {r}");
            for f in r.failures.iter().take(4) {
                println!("   {f}");
            }
        }
    }
    for (w, h, degradation) in [(64, 64, Degradation::BlurNoise), (64, 64, Degradation::Strong), (256, 256, Degradation::BlurNoise)] {
        let r = evaluate_mutations(scenes, w, h, degradation, 12);
        println!("mutations {w}x{h} {degradation:?}: {r}");
        for f in r.failures.iter().take(6) {
            println!("   {f}");
        }
    }
}
