//! How well a trained autoencoder keeps what the checker measures: encodes and decodes rendered
//! scenes and reports the checker's verdicts and PSNR on the reconstructions.
//!
//!     cargo run --release -p plantain-nano --example vae_check -- nano-train/vae.safetensors [scenes]
use candle_core::{Device, Tensor};
use plantain_nano::NanoConfig;
use plantain_nano::nn::Store;
use plantain_world::{Split, check, render, sample_scene};
use rand::SeedableRng;

fn main() -> plantain_nano::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: vae_check VAE.safetensors [scenes]");
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(40);
    // The architecture is the run's (state.json beside the weights), else the standard one.
    let work = std::path::Path::new(&path).parent().unwrap_or(std::path::Path::new("."));
    let cfg = plantain_nano::train::checkpoint_config(work).map(|(c, _)| c).unwrap_or_else(|_| NanoConfig::standard());
    let mut store = Store::load(std::path::Path::new(&path), 0)?;
    let vae = plantain_nano::vae::Vae::new(&mut store, &cfg.vae)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    let mut psnr_sum = 0f64;
    let mut acc = plantain_nano::eval::Accuracy::default();
    let save = std::env::var_os("VAE_CHECK_SAVE").map(std::path::PathBuf::from);
    for _ in 0..n {
        let scene = sample_scene(&mut rng, Split::Train);
        let img = render(&scene, 64, 64);
        let mut px = Vec::with_capacity(3 * 64 * 64);
        for c in 0..3 {
            px.extend(img.pixels().map(|p| p.0[c] as f32 / 127.5 - 1.0));
        }
        let x = Tensor::from_vec(px.clone(), (1, 3, 64, 64), &Device::Cpu)?;
        let (mean, _) = vae.encode(&x)?;
        let y: Vec<f32> = vae.decode(&mean)?.flatten_all()?.to_vec1()?;
        let mse: f64 = px.iter().zip(&y).map(|(a, b)| ((a - b.clamp(-1.0, 1.0)) as f64 / 2.0).powi(2)).sum::<f64>() / px.len() as f64;
        psnr_sum += -10.0 * mse.log10();
        let out = image::RgbImage::from_fn(64, 64, |x, yy| {
            let i = (yy * 64 + x) as usize;
            let v = |c: usize| ((y[c * 4096 + i].clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
            image::Rgb([v(0), v(1), v(2)])
        });
        acc.record(&check(&scene, &out));
        if let Some(dir) = &save {
            let k = acc.all.total;
            std::fs::create_dir_all(dir).map_err(|e| plantain_nano::NanoError::io(dir, e))?;
            let _ = img.save(dir.join(format!("{k:03}-in.png")));
            let _ = out.save(dir.join(format!("{k:03}-out.png")));
        }
    }
    println!("{n} scenes: checker all-correct on reconstructions {}/{n}, mean PSNR {:.1} dB", acc.all.correct, psnr_sum / n as f64);
    for (name, t) in acc.rows() {
        println!("  {name}: {}/{}", t.correct, t.total);
    }
    Ok(())
}
