//! `plantain bench --only sdxl`: SDXL at full size (random fp16 weights, both text encoders,
//! ≈ 13.9 GB in f32): the two text encoders, the UNet step at 512² and 1024², the VAE decode at
//! 1024², measured as scripts/bench_diffusers.py `--only sdxl` measures diffusers + torch. The
//! whole pipeline's picture and peak memory, f32 and lean, are `--only memory --memory-models
//! sdxl --size 1024`. Weights are bound as the pipeline binds them (half precision widened into
//! a scratch file, never cast in the graph).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use ndarray::{ArrayD, IxDyn};
use plantain_engine::models::clip::{self, ClipOutputs, ClipTextConfig};
use plantain_engine::models::presets;
use plantain_engine::models::unet::{self, UNetConfig};
use plantain_engine::models::vae::{self, VaeConfig};
use plantain_engine::runtime::{Input, Network, RuntimeOptions};
use plantain_engine::weights::TensorIndex;
use plantain_engine::weights::quant::{Packer, scratch_dir};

use super::checkpoint::FolderSpec;
use super::{Bench, random, random_folder, text_ids};

/// A component's weights, widened into a scratch file as the pipeline does.
fn weights(dir: &Path, file: &str, rt: &RuntimeOptions) -> Result<TensorIndex> {
    let packer = Arc::new(Packer::new(&scratch_dir(&rt.cache_dir), None)?);
    Ok(TensorIndex::open(&dir.join(file))?.with_packer(packer))
}

pub fn sdxl(root: &Path, rt: &RuntimeOptions, b: &mut Bench) -> Result<()> {
    let dir = random_folder(root, "sdxl", "SDXL", FolderSpec::from(presets::SDXL))?;
    eprintln!("SDXL");
    let te1_cfg = ClipTextConfig::from_file(&dir.join("text_encoder/config.json"))?;
    let te2_cfg = ClipTextConfig::from_file(&dir.join("text_encoder_2/config.json"))?;
    let te1 = Network::new(
        &clip::build(&te1_cfg, &weights(&dir, "text_encoder/model.safetensors", rt)?, ClipOutputs { projection: false })?,
        "sdxl-text",
        rt,
    )?;
    let te2 = Network::new(
        &clip::build(&te2_cfg, &weights(&dir, "text_encoder_2/model.safetensors", rt)?, ClipOutputs { projection: true })?,
        "sdxl-text2",
        rt,
    )?;
    b.measure("sdxl_text_encode", "SDXL text encode (CLIP ViT-L/14 + OpenCLIP bigG/14, 77 tokens)", || {
        te1.run(vec![("input_ids", text_ids())])?;
        te2.run(vec![("input_ids", text_ids())])?;
        Ok(())
    })?;
    drop((te1, te2));

    let unet_cfg = UNetConfig::from_file(&dir.join("unet/config.json"))?;
    let un = Network::new(&unet::build(&unet_cfg, &weights(&dir, "unet/diffusion_pytorch_model.safetensors", rt)?)?, "sdxl-unet", rt)?;
    let ctx = random(&[1, 77, 2048], 3);
    let pooled = random(&[1, 1280], 4);
    for side in [512usize, 1024] {
        let latent = random(&[1, 4, side / 8, side / 8], 1);
        let ids = ArrayD::from_shape_vec(IxDyn(&[1, 6]), vec![side as f32, side as f32, 0.0, 0.0, side as f32, side as f32])?;
        b.measure(&format!("sdxl_unet_step_{side}"), &format!("SDXL UNet step ({side}x{side}, batch 1, no CFG)"), || {
            un.run(vec![
                ("sample", Input::F32(latent.clone())),
                ("timestep", Input::F32(ArrayD::from_elem(IxDyn(&[1]), 999.0))),
                ("encoder_hidden_states", Input::F32(ctx.clone())),
                ("text_embeds", Input::F32(pooled.clone())),
                ("time_ids", Input::F32(ids.clone())),
            ])?;
            Ok(())
        })?;
    }
    drop(un);

    let vae_cfg = VaeConfig::from_file(&dir.join("vae/config.json"))?;
    let dec =
        Network::new(&vae::build_decoder(&vae_cfg, &weights(&dir, "vae/diffusion_pytorch_model.safetensors", rt)?)?, "sdxl-vae-dec", rt)?;
    let latent = random(&[1, 4, 128, 128], 1);
    b.measure("sdxl_vae_decode", "SDXL VAE decode [1,4,128,128] -> 1024x1024", || {
        dec.run(vec![("latent", Input::F32(latent.clone()))]).context("VAE decode")?;
        Ok(())
    })
}
