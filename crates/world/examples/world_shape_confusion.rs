//! Which shapes the checker confuses, by size: renders sampled scenes at a given size and
//! counts (true shape, size) -> detected shape for every matched object.
//! `cargo run --release -p plantain-world --example world_shape_confusion -- [W] [H] [scenes]`

use std::collections::BTreeMap;

use plantain_world::testing::{Degradation, degrade};
use plantain_world::{Shape, Split, check, render, sample_scene};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let width: u32 = args.first().map(|s| s.parse().expect("width")).unwrap_or(96);
    let height: u32 = args.get(1).map(|s| s.parse().expect("height")).unwrap_or(48);
    let scenes: usize = args.get(2).map(|s| s.parse().expect("count")).unwrap_or(1000);
    for degradation in [Degradation::None, Degradation::BlurNoise, Degradation::Strong] {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut confusions: BTreeMap<String, usize> = BTreeMap::new();
        let mut per_shape: BTreeMap<Shape, (usize, usize)> = BTreeMap::new();
        for i in 0..scenes {
            let scene = sample_scene(&mut rng, if i % 2 == 0 { Split::Train } else { Split::HeldOut });
            let image = degrade(&render(&scene, width, height), degradation, i as u64);
            let report = check(&scene, &image);
            for (o, a) in scene.objects.iter().zip(&report.assignment) {
                let Some(j) = a else { continue };
                let c = &report.components[*j];
                let slot = per_shape.entry(o.shape).or_default();
                slot.1 += 1;
                if c.shape == o.shape {
                    slot.0 += 1;
                } else {
                    *confusions.entry(format!("{:?} {:?} -> {:?}", o.size, o.shape, c.shape)).or_default() += 1;
                }
            }
        }
        let (ok, n) = per_shape.values().fold((0, 0), |acc, v| (acc.0 + v.0, acc.1 + v.1));
        println!("{width}x{height} {degradation:?}: shapes right {ok}/{n} ({:.1}%)", 100.0 * ok as f64 / n as f64);
        for (s, (ok, n)) in &per_shape {
            println!("  {s:?}: {ok}/{n}");
        }
        let mut list: Vec<_> = confusions.into_iter().collect();
        list.sort_by_key(|entry| std::cmp::Reverse(entry.1));
        for (k, v) in list.iter().take(15) {
            println!("  {v:4} {k}");
        }
    }
}
