//! Times one training step of each network at the standard size (forward + backward).
use std::time::Instant;

use candle_core::{Device, Tensor};
use plantain_nano::NanoConfig;
use plantain_nano::nn::Store;

fn main() -> plantain_nano::Result<()> {
    // Usage: step_time [BATCH] [ATTENTION_SIDES, e.g. 16,8,4]; NANO_FINE_LATENTS=1 times
    // NanoConfig::fine_latents instead of the standard model.
    let batch: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(16);
    let mut cfg = if std::env::var_os("NANO_FINE_LATENTS").is_some() { NanoConfig::fine_latents() } else { NanoConfig::standard() };
    if let Some(sides) = std::env::args().nth(2) {
        let sides: Vec<usize> = sides.split(',').map(|s| s.parse().expect("attention sides: numbers like 16,8,4")).collect();
        cfg = cfg.with_attention_at(&sides).map_err(plantain_nano::NanoError::Options)?;
    }
    let mut s = Store::new(0);
    let vae = plantain_nano::vae::Vae::new(&mut s, &cfg.vae)?;
    let x = Tensor::randn(0f32, 1.0, (batch, 3, 64, 64), &Device::Cpu)?;
    for _ in 0..3 {
        let t = Instant::now();
        let (m, _) = vae.encode(&x)?;
        let r = vae.decode(&m)?;
        let t1 = t.elapsed();
        let g = r.sqr()?.mean_all()?.backward()?;
        println!(
            "vae batch {batch}: fwd {:.2}s, fwd+bwd {:.2}s ({} grads)",
            t1.as_secs_f64(),
            t.elapsed().as_secs_f64(),
            g.get_ids().count()
        );
    }
    let mut s = Store::new(0);
    let text = plantain_nano::text::TextEncoder::new(&mut s, &cfg.text)?;
    let unet = plantain_nano::unet::UNet::new(&mut s, &cfg.unet)?;
    let ids = Tensor::zeros((batch, 77), candle_core::DType::U32, &Device::Cpu)?;
    let side = cfg.unet.sample_size;
    let z = Tensor::randn(0f32, 1.0, (batch, cfg.unet.in_channels, side, side), &Device::Cpu)?;
    let ts: Vec<f32> = (0..batch).map(|i| (i * 37 % 1000) as f32).collect();
    for _ in 0..3 {
        let t = Instant::now();
        let ctx = text.forward(&ids)?;
        let y = unet.forward(&z, &ts, &ctx)?;
        let t1 = t.elapsed();
        let _g = y.sqr()?.mean_all()?.backward()?;
        println!("text+unet batch {batch}: fwd {:.2}s, fwd+bwd {:.2}s", t1.as_secs_f64(), t.elapsed().as_secs_f64());
    }
    // The text encoder frozen (TrainOptions::freeze_text): no backward pass through it.
    for _ in 0..3 {
        let t = Instant::now();
        let ctx = text.forward(&ids)?.detach();
        let y = unet.forward(&z, &ts, &ctx)?;
        let t1 = t.elapsed();
        let _g = y.sqr()?.mean_all()?.backward()?;
        println!("frozen text+unet batch {batch}: fwd {:.2}s, fwd+bwd {:.2}s", t1.as_secs_f64(), t.elapsed().as_secs_f64());
    }
    // One AdamW step (plus EMA) over each network's parameters.
    let grads_of = |names: &dyn Fn(&str) -> bool| -> plantain_nano::Result<(std::collections::BTreeMap<String, candle_core::Var>, candle_core::backprop::GradStore)> {
        let vars: std::collections::BTreeMap<_, _> = s.vars().iter().filter(|(k, _)| names(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        let ctx = text.forward(&ids)?;
        let g = unet.forward(&z, &ts, &ctx)?.sqr()?.mean_all()?.backward()?;
        Ok((vars, g))
    };
    for (name, filter) in [
        ("text encoder", &(|k: &str| k.starts_with("text_model")) as &dyn Fn(&str) -> bool),
        ("unet", &|k: &str| !k.starts_with("text_model")),
    ] {
        let (vars, grads) = grads_of(filter)?;
        let mut opt = plantain_nano::adamw::AdamW::new(1e-3, 0.01);
        let ema: Vec<Tensor> = vars.values().map(|v| v.as_tensor().copy()).collect::<candle_core::Result<_>>()?;
        for _ in 0..3 {
            let t = Instant::now();
            opt.step(&vars, &grads, 1e-3, 1.0)?;
            for (e, v) in ema.iter().zip(vars.values()) {
                plantain_nano::adamw::ema_update(e, v.as_tensor(), 0.995)?;
            }
            println!(
                "optimizer + EMA, {name} ({} parameters): {:.3}s",
                vars.values().map(|v| v.elem_count()).sum::<usize>(),
                t.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}
