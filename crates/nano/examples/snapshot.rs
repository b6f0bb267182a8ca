//! A training checkpoint's EMA weights as a model folder, to measure a run before it ends:
//! copies MODEL_DIR (an exported model of the same architecture: configs, tokenizer, autoencoder)
//! to OUT and replaces its text encoder and UNet weights with WORK_DIR's `ema.safetensors`
//! (f32; the engine and the examples read either precision). With `-` for MODEL_DIR (a run
//! whose architecture has no exported model yet) it exports the folder afresh from WORK_DIR:
//! its architecture, autoencoder and latent scale, the EMA weights, and a card of the run so far.
//!
//!     cargo run --release -p plantain-nano --example snapshot -- WORK_DIR MODEL_DIR|- OUT
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
    let ema: BTreeMap<String, Tensor> = candle_core::safetensors::load(work.join("ema.safetensors"), &Device::Cpu)?.into_iter().collect();
    if model == Path::new("-") {
        return export_afresh(work, &ema, out);
    }
    copy_dir(model, out).map_err(|e| plantain_nano::NanoError::io(out, e))?;
    for part in ["unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"] {
        plantain_nano::nn::save_tensors(&pick(&ema, &model.join(part))?, &out.join(part))?;
    }
    println!("{}: the EMA weights of {} in the layout of {}", out.display(), work.display(), model.display());
    Ok(())
}

/// The EMA weights named in `file` (the checkpoint's raw weights of one network).
fn pick(ema: &BTreeMap<String, Tensor>, file: &Path) -> plantain_nano::Result<BTreeMap<String, Tensor>> {
    let names = candle_core::safetensors::load(file, &Device::Cpu)?;
    Ok(names.keys().map(|name| (name.clone(), ema.get(name).unwrap_or_else(|| panic!("{name} is not in the EMA")).clone())).collect())
}

fn export_afresh(work: &Path, ema: &BTreeMap<String, Tensor>, out: &Path) -> plantain_nano::Result<()> {
    let (cfg, scale) = plantain_nano::train::checkpoint_config(work)?;
    let scale = scale.expect("the autoencoder phase has finished");
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(work.join("state.json")).expect("state.json")).expect("JSON");
    let text = pick(ema, &work.join("text_encoder.safetensors"))?;
    let unet = pick(ema, &work.join("unet.safetensors"))?;
    let vae: BTreeMap<String, Tensor> = candle_core::safetensors::load(work.join("vae.safetensors"), &Device::Cpu)?.into_iter().collect();
    let params = [&text, &unet, &vae].iter().flat_map(|m| m.values()).map(|t| t.elem_count()).sum();
    let info = plantain_nano::export::ExportInfo {
        options: serde_json::from_value(state["options"].clone()).expect("state.json's options"),
        vae_loss: state["vae_loss"].as_f64().unwrap_or(f64::NAN),
        loss: state["loss"].as_f64().unwrap_or(f64::NAN),
        seconds: state["seconds"].as_f64().unwrap_or(f64::NAN),
        params,
    };
    plantain_nano::export::export(out, &cfg, &text, &unet, &vae, scale, &info, candle_core::DType::F32)?;
    println!("{}: the EMA weights of {} at diffusion step {}, exported afresh", out.display(), work.display(), state["step"]);
    Ok(())
}
