//! How well a `--object-probe` run's probe head names objects' shapes from the UNet's last
//! features, by noise level: at t = 999 (zero terminal SNR: pure noise) only the caption can say
//! the shape, so accuracy there shows whether the UNet carries the shape word to the object.
//! Reads the raw (not EMA) weights of a checkpoint folder.
//!
//!     cargo run --release -p plantain-nano --example probe_check -- WORK_DIR [scenes]
use std::path::Path;

use candle_core::{Device, Tensor};
use plantain_nano::NanoConfig;
use plantain_nano::data::render_for_training;
use plantain_nano::nn::Store;
use plantain_nano::probe::{ObjectProbe, shape_accuracy};
use plantain_tokenizer::ClipTokenizer;
use plantain_world::{Split, caption, sample_scene};
use rand::{Rng, SeedableRng};

fn main() -> plantain_nano::Result<()> {
    let mut args = std::env::args().skip(1);
    let work = args.next().expect("usage: probe_check WORK_DIR [scenes]");
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let work = Path::new(&work);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(work.join("state.json")).expect("state.json")).expect("state.json is JSON");
    let cfg: NanoConfig = serde_json::from_value(state["config"].clone()).expect("state.json has the config");
    let scale = state["latent_scale"].as_f64().expect("state.json has the latent scale");
    let mut s = Store::load(&work.join("vae.safetensors"), 0)?;
    let vae = plantain_nano::vae::Vae::new(&mut s, &cfg.vae)?;
    let mut s = Store::load(&work.join("text_encoder.safetensors"), 0)?;
    let text = plantain_nano::text::TextEncoder::new(&mut s, &cfg.text)?;
    let mut s = Store::load(&work.join("unet.safetensors"), 0)?;
    let unet = plantain_nano::unet::UNet::new(&mut s, &cfg.unet)?;
    let mut s = Store::load(&work.join("object_probe.safetensors"), 0)?;
    let probe = ObjectProbe::new(&mut s, cfg.unet.block_out_channels[0])?;
    let tokenizer = ClipTokenizer::embedded_default();
    let alphas = plantain_nano::config::alphas_cumprod(true);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let scenes: Vec<_> = (0..n).map(|_| sample_scene(&mut rng, Split::Train)).collect();
    let mut px = Vec::new();
    let mut ids = Vec::new();
    for scene in &scenes {
        px.extend(render_for_training(scene, 64, 64).0);
        ids.extend(tokenizer.encode_for_model(&caption(scene, &mut rng), cfg.text.max_positions).ids);
    }
    let images = Tensor::from_vec(px, (n, 3, 64, 64), &Device::Cpu)?;
    let z = (vae.encode(&images)?.0 * scale)?;
    let ctx = text.forward(&Tensor::from_vec(ids, (n, cfg.text.max_positions), &Device::Cpu)?)?;
    let noise: Vec<f32> = (0..z.elem_count()).map(|_| rng.sample(rand_distr::StandardNormal)).collect();
    let noise = Tensor::from_vec(noise, z.dims(), &Device::Cpu)?;
    println!("{n} training scenes with varied captions; the probe's shape accuracy (chance 12.5%):");
    for t in [0usize, 250, 500, 750, 999] {
        let (sa, sb) = (alphas[t].sqrt(), (1.0 - alphas[t]).sqrt());
        let noisy = ((&z * sa)? + (&noise * sb)?)?;
        let (_, features) = unet.forward_with_features(&noisy, &vec![t as f32; n], &ctx)?;
        println!("t = {t}: {:.1}%", 100.0 * shape_accuracy(&probe, &features, &scenes, (64, 64))?);
    }
    Ok(())
}
