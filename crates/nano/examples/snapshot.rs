//! A training checkpoint's EMA weights as a model folder, to measure a run before it ends:
//! copies MODEL_DIR (an exported model of the same architecture: configs, tokenizer, autoencoder)
//! to OUT and replaces its text encoder and UNet weights with WORK_DIR's `ema.safetensors`
//! (f32; the engine and the examples read either precision).
//!
//!     cargo run --release -p plantain-nano --example snapshot -- WORK_DIR MODEL_DIR OUT
use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor};

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

fn main() -> plantain_nano::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [work, model, out] = args.as_slice() else {
        panic!("usage: snapshot WORK_DIR MODEL_DIR OUT");
    };
    let (work, model, out) = (Path::new(work), Path::new(model), Path::new(out));
    if out.exists() {
        panic!("{} exists; pick a new folder", out.display());
    }
    copy_dir(model, out).map_err(|e| plantain_nano::NanoError::io(out, e))?;
    let ema: BTreeMap<String, Tensor> = candle_core::safetensors::load(work.join("ema.safetensors"), &Device::Cpu)?.into_iter().collect();
    for part in ["unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"] {
        let names = candle_core::safetensors::load(model.join(part), &Device::Cpu)?;
        let mut picked = BTreeMap::new();
        for name in names.keys() {
            let t = ema.get(name).unwrap_or_else(|| panic!("{name} is not in the checkpoint's EMA"));
            picked.insert(name.clone(), t.clone());
        }
        plantain_nano::nn::save_tensors(&picked, &out.join(part))?;
    }
    println!("{}: the EMA weights of {} in the layout of {}", out.display(), work.display(), model.display());
    Ok(())
}
