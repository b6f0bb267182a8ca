//! Token counts of training captions (with start and end tokens): how long the text encoder's
//! context must be.
use plantain_tokenizer::ClipTokenizer;
use plantain_world::{Split, caption, sample_scene};
use rand::SeedableRng;

fn main() {
    let tok = ClipTokenizer::embedded_default();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut counts = vec![0usize; 100];
    let mut longest = (0, String::new());
    for _ in 0..200_000 {
        let scene = sample_scene(&mut rng, Split::Train);
        let text = caption(&scene, &mut rng);
        let n = tok.encode(&text).len();
        counts[n.min(99)] += 1;
        if n > longest.0 {
            longest = (n, text);
        }
    }
    let total: usize = counts.iter().sum();
    let mut acc = 0;
    for (n, c) in counts.iter().enumerate().filter(|(_, c)| **c > 0) {
        acc += c;
        println!("{n:3} tokens: {c:6} captions, cumulative {:.3}%", 100.0 * acc as f64 / total as f64);
    }
    println!("longest ({} tokens): {}", longest.0, longest.1);
}
