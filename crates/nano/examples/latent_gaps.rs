//! How far apart, in the autoencoder's latent space, are two scenes that differ in one
//! attribute of one object? The diffusion loss is a squared error on these latents, so a
//! difference the latents barely show is one the UNet is barely taught. For single-object
//! training scenes it changes the object's shape, colour or cell and prints the mean squared
//! difference of the (scaled) latents and of the pixels, over the whole picture.
//!
//!     cargo run --release -p plantain-nano --example latent_gaps -- WORK/vae.safetensors LATENT_SCALE [scenes]
use candle_core::{Device, Tensor};
use plantain_nano::NanoConfig;
use plantain_nano::data::render_for_training;
use plantain_nano::nn::Store;
use plantain_world::{ColorName, HPos, Scene, Shape, Split, sample_scene};
use rand::{Rng, SeedableRng};

fn mse(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum::<f64>() / a.len() as f64
}

fn main() -> plantain_nano::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: latent_gaps VAE.safetensors LATENT_SCALE [scenes]");
    let scale: f32 = args.next().and_then(|a| a.parse().ok()).expect("the latent scale (state.json's latent_scale)");
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    // The architecture is the run's (state.json beside the weights), else the standard one.
    let work = std::path::Path::new(&path).parent().unwrap_or(std::path::Path::new("."));
    let cfg = plantain_nano::train::checkpoint_config(work).map(|(c, _)| c).unwrap_or_else(|_| NanoConfig::standard());
    let mut store = Store::load(std::path::Path::new(&path), 0)?;
    let vae = plantain_nano::vae::Vae::new(&mut store, &cfg.vae)?;
    // Loss weights as the trainer puts them on the base scene's cells: none, and the
    // recipe's object weight.
    let weightings = [0.0, 8.0];
    let weights_of = |mask: Vec<f32>| -> plantain_nano::Result<Vec<Vec<f32>>> {
        let mask = Tensor::from_vec(mask, (1, 1, 64, 64), &Device::Cpu)?;
        let f = cfg.vae.scale_factor();
        weightings.iter().map(|&object| Ok(plantain_nano::train::cell_weights(&mask, f, object)?.flatten_all()?.to_vec1()?)).collect()
    };
    // Mean over channels and cells of weight x squared difference.
    let weighted = |w: &[f32], a: &[f32], b: &[f32]| -> f64 {
        let cells = w.len();
        a.iter().zip(b).enumerate().map(|(i, (x, y))| f64::from(w[i % cells]) * f64::from(x - y).powi(2)).sum::<f64>() / a.len() as f64
    };
    let latent = |px: &[f32]| -> plantain_nano::Result<Vec<f32>> {
        let x = Tensor::from_vec(px.to_vec(), (1, 3, 64, 64), &Device::Cpu)?;
        let (mean, _) = vae.encode(&x)?;
        Ok((mean * f64::from(scale))?.flatten_all()?.to_vec1()?)
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    // (latent gap, pixel gap) sums per changed attribute.
    let names = ["shape", "colour", "cell (column)"];
    let mut sums = [(0f64, 0f64); 3];
    let mut weighted_sums = [[0f64; 2]; 3];
    let mut done = 0;
    while done < n {
        let scene = sample_scene(&mut rng, Split::Train);
        if scene.objects.len() != 1 {
            continue;
        }
        let (base_px, base_mask) = render_for_training(&scene, 64, 64);
        let base = latent(&base_px)?;
        let base_weights = weights_of(base_mask)?;
        let o = scene.objects[0];
        let other_shape = loop {
            let s = Shape::ALL[rng.random_range(0..Shape::ALL.len())];
            if s != o.shape {
                break s;
            }
        };
        let other_color = loop {
            let c = ColorName::ALL[rng.random_range(0..ColorName::ALL.len())];
            if c != o.color && plantain_world::sample::color_fits_background(c, scene.background, o.v) {
                break c;
            }
        };
        let other_h = loop {
            let h = HPos::ALL[rng.random_range(0..HPos::ALL.len())];
            if h != o.h {
                break h;
            }
        };
        let variants = [
            plantain_world::Object { shape: other_shape, ..o },
            plantain_world::Object { color: other_color, ..o },
            plantain_world::Object { h: other_h, ..o },
        ];
        for (k, v) in variants.iter().enumerate() {
            let changed = Scene { objects: vec![*v], ..scene.clone() };
            let (px, _) = render_for_training(&changed, 64, 64);
            let changed_latent = latent(&px)?;
            sums[k].0 += mse(&base, &changed_latent);
            for (j, w) in base_weights.iter().enumerate() {
                weighted_sums[k][j] += weighted(w, &base, &changed_latent);
            }
            sums[k].1 += mse(&base_px, &px);
        }
        done += 1;
    }
    println!("{n} single-object training scenes, one attribute changed; mean squared difference over the whole picture:");
    println!("| changed | scaled latents | pixels ([-1, 1]) |");
    println!("|---|---:|---:|");
    for (k, name) in names.iter().enumerate() {
        println!("| {name} | {:.5} | {:.5} |", sums[k].0 / n as f64, sums[k].1 / n as f64);
    }
    println!();
    println!("The same latent differences under the diffusion loss's cell weights (object weight k):");
    let heads: Vec<String> = weightings.iter().map(|k| format!("k {k}")).collect();
    println!("| changed | {} |", heads.join(" | "));
    println!("|---|{}", "---:|".repeat(weightings.len()));
    for (k, name) in names.iter().enumerate() {
        let cells: Vec<String> = weighted_sums[k].iter().map(|v| format!("{:.4}", v / n as f64)).collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    let ratios: Vec<String> = (0..weightings.len()).map(|j| format!("{:.2}", weighted_sums[0][j] / weighted_sums[1][j])).collect();
    println!("| shape / colour | {} |", ratios.join(" | "));
    Ok(())
}
