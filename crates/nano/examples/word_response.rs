//! Does the UNet act on a caption's shape word as it does on its colour word? For single-object
//! training scenes, noised to timestep t, it predicts x0 from the scene's plain caption and from
//! the caption with one word changed (the object's shape, or its colour), and reports how much
//! of the true latent difference between the two scenes the change of word moves the prediction
//! by: <x0(changed caption) − x0(caption), z(changed scene) − z(scene)> / |z(changed scene) − z(scene)|².
//! 1 means the prediction moves all the way to the changed scene, 0 that the word is ignored.
//!
//!     cargo run --release -p plantain-nano --example word_response -- MODEL_DIR [scenes]
use std::path::Path;

use candle_core::{Device, Tensor};
use plantain_nano::NanoConfig;
use plantain_nano::data::render_for_training;
use plantain_nano::nn::Store;
use plantain_tokenizer::ClipTokenizer;
use plantain_world::{ColorName, Object, Scene, Shape, Split, caption_plain, sample_scene};
use rand::{Rng, SeedableRng};

fn pixels(scene: &Scene) -> Tensor {
    let (px, _) = render_for_training(scene, 64, 64);
    Tensor::from_vec(px, (1, 3, 64, 64), &Device::Cpu).expect("shape matches")
}

fn dot(a: &Tensor, b: &Tensor) -> plantain_nano::Result<f64> {
    Ok(f64::from((a * b)?.sum_all()?.to_scalar::<f32>()?))
}

fn main() -> plantain_nano::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: word_response MODEL_DIR [scenes]");
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(40);
    let dir = Path::new(&dir);
    let training: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("training.json")).expect("training.json")).expect("training.json is JSON");
    let cfg: NanoConfig = serde_json::from_value(training["config"].clone()).expect("training.json has the config");
    let scale = training["latent_scale"].as_f64().expect("training.json has the latent scale");
    let v_prediction = training["run"]["options"]["v_prediction"].as_bool().unwrap_or(true);
    let zero_snr = training["run"]["options"]["zero_terminal_snr"].as_bool().unwrap_or(true);
    let mut s = Store::load(&dir.join("vae/diffusion_pytorch_model.safetensors"), 0)?;
    let vae = plantain_nano::vae::Vae::new(&mut s, &cfg.vae)?;
    let mut s = Store::load(&dir.join("text_encoder/model.safetensors"), 0)?;
    let text = plantain_nano::text::TextEncoder::new(&mut s, &cfg.text)?;
    let mut s = Store::load(&dir.join("unet/diffusion_pytorch_model.safetensors"), 0)?;
    let unet = plantain_nano::unet::UNet::new(&mut s, &cfg.unet)?;
    let tokenizer = ClipTokenizer::embedded_default();
    let alphas = plantain_nano::config::alphas_cumprod(zero_snr);
    let latent = |scene: &Scene| -> plantain_nano::Result<Tensor> { Ok((vae.encode(&pixels(scene))?.0 * scale)?) };
    let context = |scene: &Scene| -> plantain_nano::Result<Tensor> {
        let ids = tokenizer.encode_for_model(&caption_plain(scene), cfg.text.max_positions).ids;
        Ok(text.forward(&Tensor::from_vec(ids, (1, cfg.text.max_positions), &Device::Cpu)?)?)
    };
    let timesteps = [250usize, 500, 750];
    let names = ["shape", "colour"];
    // Per (attribute, timestep): sum of responses, and of squared true gaps for the average.
    let mut sums = [[(0f64, 0usize); 3]; 2];
    // How far the text encoder's output moves when the word changes (relative to its size).
    let mut context_moves = [0f64; 2];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut done = 0;
    while done < n {
        let scene = sample_scene(&mut rng, Split::Train);
        if scene.objects.len() != 1 {
            continue;
        }
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
        let z = latent(&scene)?;
        let ctx = context(&scene)?;
        let noise: Vec<f32> = (0..z.elem_count()).map(|_| rng.sample(rand_distr::StandardNormal)).collect();
        let noise = Tensor::from_vec(noise, z.dims(), &Device::Cpu)?;
        for (k, changed) in [Object { shape: other_shape, ..o }, Object { color: other_color, ..o }].into_iter().enumerate() {
            let other = Scene { objects: vec![changed], ..scene.clone() };
            let gap = (latent(&other)? - &z)?;
            let gap2 = dot(&gap, &gap)?;
            let other_ctx = context(&other)?;
            let moved_ctx = (&other_ctx - &ctx)?;
            context_moves[k] += (dot(&moved_ctx, &moved_ctx)? / dot(&ctx, &ctx)?).sqrt();
            for (j, &t) in timesteps.iter().enumerate() {
                let (sa, sb) = (alphas[t].sqrt(), (1.0 - alphas[t]).sqrt());
                let noisy = ((&z * sa)? + (&noise * sb)?)?;
                let x0 = |c: &Tensor| -> plantain_nano::Result<Tensor> {
                    let out = unet.forward(&noisy, &[t as f32], c)?;
                    // v-prediction: x0 = α·x_t − σ·v; ε-prediction: x0 = (x_t − σ·ε) / α.
                    Ok(if v_prediction { ((&noisy * sa)? - (out * sb)?)? } else { ((&noisy - (out * sb)?)? / sa)? })
                };
                let moved = (x0(&other_ctx)? - x0(&ctx)?)?;
                sums[k][j].0 += dot(&moved, &gap)? / gap2;
                sums[k][j].1 += 1;
            }
        }
        done += 1;
    }
    println!("{n} single-object training scenes, plain captions; share of the true latent change that changing the word moves x0 by:");
    println!("| word changed | t = {} | t = {} | t = {} |", timesteps[0], timesteps[1], timesteps[2]);
    println!("|---|---:|---:|---:|");
    for (k, name) in names.iter().enumerate() {
        let cells: Vec<String> = sums[k].iter().map(|(s, c)| format!("{:.2}", s / *c as f64)).collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    let moves: Vec<String> = names.iter().zip(context_moves).map(|(name, m)| format!("{name} {:.3}", m / n as f64)).collect();
    println!("text encoder output moved by (|Δ| / |output|, all positions): {}", moves.join(", "));
    Ok(())
}
