//! `plantain bench --only lora`: what a LoRA costs on full-size SD-Turbo (random weights): the
//! UNet's session build and step with and without a rank-32 LoRA on every attention and
//! feed-forward projection, and the peak memory after each.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use plantain_engine::models::unet::{self, UNetConfig};
use plantain_engine::runtime::{Network, RuntimeOptions};
use plantain_engine::weights::TensorIndex;
use plantain_engine::weights::lora::{self, LoraSpec};

use super::checkpoint::write_random_safetensors;
use super::{Bench, random};

const RANK: usize = 32;
const TARGETS: &[&str] = &[".to_q.weight", ".to_k.weight", ".to_v.weight", ".to_out.0.weight", ".ff.net.0.proj.weight", ".ff.net.2.weight"];

/// Writes a random diffusers/PEFT-named LoRA for every targeted UNet weight; returns its modules.
fn write_lora(unet: &TensorIndex, path: &Path) -> Result<usize> {
    let mut tensors = Vec::new();
    let mut names: Vec<&String> = unet.names().filter(|n| TARGETS.iter().any(|t| n.ends_with(t))).collect();
    names.sort();
    for name in &names {
        let shape = &unet.get(name).expect("listed").shape;
        let module = name.trim_end_matches(".weight");
        tensors.push((format!("unet.{module}.lora_A.weight"), vec![RANK, shape[1..].iter().product()]));
        tensors.push((format!("unet.{module}.lora_B.weight"), vec![shape[0], RANK]));
    }
    write_random_safetensors(path, &tensors, 77)?;
    Ok(names.len())
}

pub fn lora(dir: &Path, rt: &RuntimeOptions, b: &mut Bench, size: usize) -> Result<()> {
    let cfg = UNetConfig::from_file(&dir.join("unet/config.json"))?;
    let base = TensorIndex::open(&dir.join("unet/diffusion_pytorch_model.safetensors"))?;
    let file = dir.join("bench-lora.safetensors");
    let modules = write_lora(&base, &file)?;
    eprintln!("SD-Turbo UNet with a rank-{RANK} LoRA on {modules} projections ({:.0} MB)", std::fs::metadata(&file)?.len() as f64 / 1e6);
    let h = size / 8;
    let (latent, ctx) = (random(&[1, 4, h, h], 1), random(&[1, 77, cfg.cross_attention_dim], 3));
    for with_lora in [false, true] {
        let mut w = base.clone();
        let mut te = TensorIndex::default();
        if with_lora {
            let parts =
                lora::Components { unet: &mut w, text_encoder: &mut te, text_encoder_2: None, layers_per_block: cfg.layers_per_block };
            lora::apply(parts, &[LoraSpec { path: file.clone(), scale: 1.0 }])?;
        }
        let (key, what) = if with_lora { ("lora", "with the LoRA") } else { ("base", "without a LoRA") };
        let t = Instant::now();
        let un = Network::new(&unet::build(&cfg, &w)?, &format!("turbo-unet-{key}"), rt)?;
        eprintln!("  session built {what} in {:.1} s", t.elapsed().as_secs_f32());
        b.measure(&format!("lora_{key}_unet_step"), &format!("SD-Turbo UNet step {what} ({size}x{size}, batch 1)"), || {
            super::unet_step(&un, &latent, &ctx)
        })?;
    }
    Ok(())
}
