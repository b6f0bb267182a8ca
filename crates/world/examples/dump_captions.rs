//! Prints N sampled scenes as JSON lines {caption, scene}, for `scripts/nano_text_probe.py`:
//! `dump_captions N [held]` (training split, or held-out combinations with a second argument).
use plantain_world::{Split, caption, sample_scene};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
fn main() {
    let n: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(1000);
    let held = std::env::args().nth(2).is_some();
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    for _ in 0..n {
        let s = sample_scene(&mut rng, if held { Split::HeldOut } else { Split::Train });
        let c = caption(&s, &mut rng);
        println!("{}", serde_json::json!({"caption": c, "scene": s}));
    }
}
