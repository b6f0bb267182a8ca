//! Experiment: fine-tune only the autoencoder's decoder (encoder frozen, so the latent space a
//! UNet was trained on stays the same) on whole canvases, then save it for `vae_check`.
//!
//!     decoder_tune VAE_IN VAE_OUT [steps] [batch] [lr] [edge_gain]
use candle_core::Var;
use plantain_nano::NanoConfig;
use plantain_nano::adamw::AdamW;
use plantain_nano::data::{batch, buckets, edge_weights, gaussian, pick_bucket};
use plantain_nano::nn::Store;
use rand::SeedableRng;
use std::collections::BTreeMap;

fn main() -> plantain_nano::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let steps: u64 = a.get(2).and_then(|s| s.parse().ok()).unwrap_or(300);
    let bs: usize = a.get(3).and_then(|s| s.parse().ok()).unwrap_or(16);
    let lr: f64 = a.get(4).and_then(|s| s.parse().ok()).unwrap_or(1e-3);
    let gain: f32 = a.get(5).and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let cfg = NanoConfig::standard();
    let mut store = Store::load(std::path::Path::new(&a[0]), 0)?;
    let vae = plantain_nano::vae::Vae::new(&mut store, &cfg.vae)?;
    let vars: BTreeMap<String, Var> = store
        .vars()
        .iter()
        .filter(|(k, _)| k.starts_with("decoder.") || k.starts_with("post_quant_conv"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let tok = plantain_tokenizer::ClipTokenizer::embedded_default();
    let shapes = buckets(&cfg);
    let mut opt = AdamW::new(lr, 0.0);
    let started = std::time::Instant::now();
    let mut smooth = 0f64;
    for step in 0..steps {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1000 + step);
        let shape = pick_bucket(&shapes, 64, &mut rng);
        let b = batch(&tok, bs, shape, 0.0, 77, &mut rng)?;
        let (mean, logvar) = vae.encode(&b.images)?;
        let z = (&mean + ((&logvar * 0.5)?.exp()? * gaussian(mean.dims(), &mut rng)?)?)?.detach();
        let diff = (vae.decode(&z)? - &b.images)?;
        let w = edge_weights(&b.images, gain)?;
        let wmean = w.mean_all()?.to_scalar::<f32>()? as f64;
        let loss = ((diff.sqr()? + (diff.abs()? * 0.5)?)?.broadcast_mul(&w)?.mean_all()? / wmean)?;
        let grads = loss.backward()?;
        let p = step as f64 / steps as f64;
        let rate = lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()));
        opt.step(&vars, &grads, rate, 1.0)?;
        let l = loss.to_scalar::<f32>()? as f64;
        smooth = if step == 0 { l } else { 0.95 * smooth + 0.05 * l };
        if (step + 1) % 25 == 0 {
            eprintln!("step {}/{steps}: loss {smooth:.5}, {:.0}s", step + 1, started.elapsed().as_secs_f64());
        }
    }
    store.save(std::path::Path::new(&a[1]))?;
    Ok(())
}
