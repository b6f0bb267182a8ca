//! Writes one UNet evaluation of an exported plantain-nano folder (inputs and the trainer's
//! output) to a safetensors file, so `scripts/nano_diffusers_check.py --io FILE` can run
//! diffusers' UNet on the same inputs and compare numbers, not just weight names.
//!
//!     cargo run --release -p plantain-nano --example unet_io -- models/plantain-nano /tmp/unet-io.safetensors
use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Tensor;
use plantain_nano::NanoConfig;
use plantain_nano::nn::{Store, save_tensors};
use rand::SeedableRng;

fn main() -> plantain_nano::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(model), Some(out)) = (args.next(), args.next()) else {
        eprintln!("usage: unet_io MODEL_DIR OUT.safetensors");
        std::process::exit(2);
    };
    let model = Path::new(&model);
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("training.json")).map_err(|e| plantain_nano::NanoError::io(model, e))?)
            .expect("training.json is JSON");
    let cfg: NanoConfig = serde_json::from_value(info["config"].clone()).expect("training.json holds the configuration");
    let mut store = Store::load(&model.join("unet/diffusion_pytorch_model.safetensors"), 0)?;
    let unet = plantain_nano::unet::UNet::new(&mut store, &cfg.unet)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let side = cfg.unet.sample_size;
    let x = plantain_nano::data::gaussian(&[2, cfg.unet.in_channels, side, side], &mut rng)?;
    let ctx = plantain_nano::data::gaussian(&[2, 77, cfg.unet.cross_attention_dim], &mut rng)?;
    let timesteps = [999.0f32, 250.0];
    let y = unet.forward(&x, &timesteps, &ctx)?;
    let t = Tensor::new(&timesteps, x.device())?;
    let map = BTreeMap::from([
        ("sample".to_string(), x),
        ("encoder_hidden_states".into(), ctx),
        ("timestep".into(), t),
        ("out_sample".into(), y),
    ]);
    save_tensors(&map, Path::new(&out))?;
    println!("wrote {out}");
    Ok(())
}
