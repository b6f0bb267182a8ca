//! Single-file checkpoints with the original (CompVis / Stability) key names, presented as
//! diffusers-named [`TensorIndex`]es so the graph builders need no second naming scheme.
//!
//! The block layout (layers per block, which output blocks hold attention or an upsampler) is
//! read from the keys, so real SD 1.x / 2.x / SDXL files map as well as the tiny test ones.

use std::collections::BTreeSet;
use std::path::Path;

use super::TensorIndex;
use crate::error::{EngineError, Result};
use crate::models::Family;

const UNET: &str = "model.diffusion_model.";
const VAE: &str = "first_stage_model.";
const SD1_TEXT: &str = "cond_stage_model.transformer.";
const SD2_TEXT: &str = "cond_stage_model.model.";
const SDXL_TEXT: &str = "conditioner.embedders.0.transformer.";
const SDXL_TEXT_2: &str = "conditioner.embedders.1.model.";

/// A single-file checkpoint split into its components, with diffusers names.
#[derive(Debug)]
pub struct SingleFile {
    pub family: Family,
    pub unet: TensorIndex,
    pub vae: TensorIndex,
    /// CLIP text encoder: `text_model.*` names.
    pub text_encoder: TensorIndex,
    /// SDXL's OpenCLIP bigG encoder: `text_model.*` plus `text_projection` stored `[width, proj]`.
    pub text_encoder_2: Option<TensorIndex>,
}

/// Which family a checkpoint's keys belong to.
pub fn detect_family(index: &TensorIndex) -> Result<Family> {
    let has = |prefix: &str| index.names().any(|n| n.starts_with(prefix));
    if !has(UNET) || !has(VAE) {
        return Err(EngineError::Unsupported(format!(
            "not a Stable Diffusion checkpoint: expected `{UNET}*` (UNet) and `{VAE}*` (VAE) tensors; \
             files with only a UNet or LoRA weights cannot be loaded on their own"
        )));
    }
    if has(SDXL_TEXT_2) {
        Ok(Family::Sdxl)
    } else if has(SD2_TEXT) {
        Ok(Family::Sd2)
    } else if has(SD1_TEXT) {
        Ok(Family::Sd1)
    } else {
        Err(EngineError::Unsupported(format!(
            "checkpoint has a UNet and VAE but no text encoder this loader knows (`{SD1_TEXT}`, `{SD2_TEXT}`, `{SDXL_TEXT_2}`)"
        )))
    }
}

/// Opens and splits a single-file checkpoint.
pub fn open(path: &Path) -> Result<SingleFile> {
    let index = TensorIndex::open(path)?;
    let family = detect_family(&index)?;
    let unet = map_unet(&index.strip_prefix(UNET))?;
    let vae = map_vae(&index.strip_prefix(VAE));
    let (text_encoder, text_encoder_2) = match family {
        Family::Sd1 => (map_hf_clip(&index.strip_prefix(SD1_TEXT)), None),
        Family::Sd2 => (map_openclip(&index.strip_prefix(SD2_TEXT), path)?, None),
        Family::Sdxl => (map_hf_clip(&index.strip_prefix(SDXL_TEXT)), Some(map_openclip(&index.strip_prefix(SDXL_TEXT_2), path)?)),
    };
    Ok(SingleFile { family, unet, vae, text_encoder, text_encoder_2 })
}

/// Replaces the first matching prefix of `rest` per `table` (longest entries first).
fn rename(rest: &str, table: &[(&str, &str)]) -> String {
    for (from, to) in table {
        if let Some(tail) = rest.strip_prefix(from) {
            return format!("{to}{tail}");
        }
    }
    rest.to_string()
}

const RESNET: &[(&str, &str)] = &[
    ("in_layers.0.", "norm1."),
    ("in_layers.2.", "conv1."),
    ("emb_layers.1.", "time_emb_proj."),
    ("out_layers.0.", "norm2."),
    ("out_layers.3.", "conv2."),
    ("skip_connection.", "conv_shortcut."),
];

/// Indices `i` for which some key starts with `{prefix}{i}.`.
fn indices(index: &TensorIndex, prefix: &str) -> BTreeSet<usize> {
    index.names().filter_map(|n| n.strip_prefix(prefix)?.split('.').next()?.parse().ok()).collect()
}

fn split_index(name: &str) -> Option<(usize, &str)> {
    let (i, rest) = name.split_once('.')?;
    Some((i.parse().ok()?, rest))
}

fn map_unet(src: &TensorIndex) -> Result<TensorIndex> {
    let bad = |m: String| EngineError::Unsupported(format!("UNet layout not recognised: {m}"));
    // Layers per block: the first downsampler (`input_blocks.N.0.op`) sits at N = layers + 1.
    let first_down = src
        .names()
        .filter_map(|n| {
            let rest = n.strip_prefix("input_blocks.")?;
            let (i, tail) = split_index(rest)?;
            tail.starts_with("0.op.").then_some(i)
        })
        .min()
        .ok_or_else(|| bad("no downsampler (`input_blocks.N.0.op`)".into()))?;
    let layers = first_down - 1;
    let mut out = TensorIndex::default();
    for (name, t) in src.iter() {
        let new = unet_name_from_ldm(name, layers).ok_or_else(|| bad(name.clone()))?;
        out.insert(new, t.clone());
    }
    Ok(out)
}

/// The diffusers name of an original (CompVis / Stability) UNet tensor, for a UNet with
/// `layers` resnets per down block; `None` for a name outside that layout.
pub(crate) fn unet_name_from_ldm(name: &str, layers: usize) -> Option<String> {
    let per = layers + 1;
    Some(if let Some(rest) = name.strip_prefix("input_blocks.") {
        let (i, tail) = split_index(rest)?;
        if i == 0 {
            rename(tail, &[("0.", "conv_in.")])
        } else {
            let (b, j) = ((i - 1) / per, (i - 1) % per);
            if j == layers {
                rename(tail, &[("0.op.", &format!("down_blocks.{b}.downsamplers.0.conv."))])
            } else if let Some(r) = tail.strip_prefix("0.") {
                format!("down_blocks.{b}.resnets.{j}.{}", rename(r, RESNET))
            } else if let Some(r) = tail.strip_prefix("1.") {
                format!("down_blocks.{b}.attentions.{j}.{r}")
            } else {
                return None;
            }
        }
    } else if let Some(rest) = name.strip_prefix("middle_block.") {
        let (i, tail) = split_index(rest)?;
        match i {
            0 => format!("mid_block.resnets.0.{}", rename(tail, RESNET)),
            1 => format!("mid_block.attentions.0.{tail}"),
            2 => format!("mid_block.resnets.1.{}", rename(tail, RESNET)),
            _ => return None,
        }
    } else if let Some(rest) = name.strip_prefix("output_blocks.") {
        let (i, tail) = split_index(rest)?;
        let (b, j) = (i / per, i % per);
        let (k, r) = split_index(tail)?;
        match k {
            0 => format!("up_blocks.{b}.resnets.{j}.{}", rename(r, RESNET)),
            // Position 1 is attention, unless the block has none and 1 is the upsampler.
            1 | 2 if r.starts_with("conv.") => format!("up_blocks.{b}.upsamplers.0.{r}"),
            1 => format!("up_blocks.{b}.attentions.{j}.{r}"),
            _ => return None,
        }
    } else {
        rename(
            name,
            &[
                ("time_embed.0.", "time_embedding.linear_1."),
                ("time_embed.2.", "time_embedding.linear_2."),
                ("label_emb.0.0.", "add_embedding.linear_1."),
                ("label_emb.0.2.", "add_embedding.linear_2."),
                ("out.0.", "conv_norm_out."),
                ("out.2.", "conv_out."),
            ],
        )
    })
}

fn map_vae(src: &TensorIndex) -> TensorIndex {
    let ups = indices(src, "decoder.up.");
    let n_up = ups.iter().max().map_or(0, |m| m + 1);
    let resnet = &[("nin_shortcut.", "conv_shortcut.")];
    let mut out = TensorIndex::default();
    for (name, t) in src.iter() {
        let (side, rest) = match name.split_once('.') {
            Some((s @ ("encoder" | "decoder"), r)) => (s, r),
            _ => {
                out.insert(name.clone(), t.clone());
                continue;
            }
        };
        let new = if let Some(r) = rest.strip_prefix("down.").and_then(split_index) {
            let (i, tail) = r;
            match tail.strip_prefix("block.").and_then(split_index) {
                Some((j, tt)) => format!("down_blocks.{i}.resnets.{j}.{}", rename(tt, resnet)),
                None => rename(tail, &[("downsample.", &format!("down_blocks.{i}.downsamplers.0."))]),
            }
        } else if let Some((i, tail)) = rest.strip_prefix("up.").and_then(split_index) {
            // The original counts decoder blocks from the lowest resolution's end.
            let b = n_up - 1 - i;
            match tail.strip_prefix("block.").and_then(split_index) {
                Some((j, tt)) => format!("up_blocks.{b}.resnets.{j}.{}", rename(tt, resnet)),
                None => rename(tail, &[("upsample.", &format!("up_blocks.{b}.upsamplers.0."))]),
            }
        } else if let Some(r) = rest.strip_prefix("mid.") {
            rename(
                r,
                &[
                    ("block_1.", "mid_block.resnets.0."),
                    ("block_2.", "mid_block.resnets.1."),
                    ("attn_1.norm.", "mid_block.attentions.0.group_norm."),
                    ("attn_1.q.", "mid_block.attentions.0.to_q."),
                    ("attn_1.k.", "mid_block.attentions.0.to_k."),
                    ("attn_1.v.", "mid_block.attentions.0.to_v."),
                    ("attn_1.proj_out.", "mid_block.attentions.0.to_out.0."),
                ],
            )
        } else {
            rename(rest, &[("norm_out.", "conv_norm_out.")])
        };
        out.insert(format!("{side}.{new}"), t.clone());
    }
    out
}

/// transformers-style CLIP under a prefix: already diffusers names, with or without the
/// `text_model.` level (older SD 1.x files lack it).
fn map_hf_clip(src: &TensorIndex) -> TensorIndex {
    let mut out = TensorIndex::default();
    for (name, t) in src.iter() {
        let new = if name.starts_with("text_model.") { name.clone() } else { format!("text_model.{name}") };
        out.insert(new, t.clone());
    }
    out
}

/// OpenCLIP text tower to transformers names; the fused q/k/v projection is split by rows
/// (still byte ranges of the file, nothing is copied). `text_projection` keeps its OpenCLIP
/// `[width, proj]` layout under that bare name, which the CLIP builder multiplies directly.
fn map_openclip(src: &TensorIndex, path: &Path) -> Result<TensorIndex> {
    let mut out = TensorIndex::default();
    for (name, t) in src.iter() {
        if let Some(rest) = name.strip_prefix("transformer.resblocks.") {
            let (i, tail) =
                split_index(rest).ok_or_else(|| EngineError::CorruptWeights { path: path.into(), reason: format!("odd key {name}") })?;
            let pre = format!("text_model.encoder.layers.{i}.");
            if let Some(kind) = tail.strip_prefix("attn.in_proj_") {
                let width = t.shape[0] / 3;
                if t.shape[0] != 3 * width {
                    return Err(EngineError::CorruptWeights {
                        path: path.into(),
                        reason: format!("{name} has {} rows, not 3 x width", t.shape[0]),
                    });
                }
                for (k, q) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                    out.insert(format!("{pre}self_attn.{q}.{kind}"), t.rows(k * width, (k + 1) * width));
                }
                continue;
            }
            let new = rename(
                tail,
                &[
                    ("ln_1.", "layer_norm1."),
                    ("ln_2.", "layer_norm2."),
                    ("attn.out_proj.", "self_attn.out_proj."),
                    ("mlp.c_fc.", "mlp.fc1."),
                    ("mlp.c_proj.", "mlp.fc2."),
                ],
            );
            out.insert(format!("{pre}{new}"), t.clone());
            continue;
        }
        let new = match name.as_str() {
            "token_embedding.weight" => "text_model.embeddings.token_embedding.weight".to_string(),
            "positional_embedding" => "text_model.embeddings.position_embedding.weight".to_string(),
            "text_projection" => "text_projection".to_string(),
            other => rename(other, &[("ln_final.", "text_model.final_layer_norm.")]),
        };
        out.insert(new, t.clone());
    }
    Ok(out)
}

/// Layers of an OpenCLIP / CLIP text tower in an index (`text_model.encoder.layers.N`).
pub fn text_layers(index: &TensorIndex) -> usize {
    indices(index, "text_model.encoder.layers.").iter().max().map_or(0, |m| m + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet_and_block_positions_map_like_diffusers() {
        let mut src = TensorIndex::default();
        let t = crate::graph::StoredTensor {
            file: std::sync::Arc::new(std::path::PathBuf::from("x")),
            offset: 0,
            dtype: crate::graph::DType::F32,
            shape: vec![1],
        };
        for k in [
            "input_blocks.0.0.weight",
            "input_blocks.1.0.in_layers.0.weight",
            "input_blocks.2.1.proj_in.weight",
            "input_blocks.3.0.op.weight",
            "input_blocks.4.0.skip_connection.weight",
            "output_blocks.2.1.conv.weight",
            "output_blocks.5.1.proj_out.weight",
            "output_blocks.5.2.conv.weight",
            "middle_block.2.out_layers.3.bias",
            "label_emb.0.2.weight",
        ] {
            src.insert(k.to_string(), t.clone());
        }
        let out = map_unet(&src).unwrap();
        for k in [
            "conv_in.weight",
            "down_blocks.0.resnets.0.norm1.weight",
            "down_blocks.0.attentions.1.proj_in.weight",
            "down_blocks.0.downsamplers.0.conv.weight",
            "down_blocks.1.resnets.0.conv_shortcut.weight",
            "up_blocks.0.upsamplers.0.conv.weight",
            "up_blocks.1.attentions.2.proj_out.weight",
            "up_blocks.1.upsamplers.0.conv.weight",
            "mid_block.resnets.1.conv2.bias",
            "add_embedding.linear_2.weight",
        ] {
            assert!(out.get(k).is_some(), "missing {k}; have {:?}", out.names().collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_file_without_a_unet_is_not_an_sd_checkpoint() {
        let mut idx = TensorIndex::default();
        let t = crate::graph::StoredTensor {
            file: std::sync::Arc::new(std::path::PathBuf::from("x")),
            offset: 0,
            dtype: crate::graph::DType::F32,
            shape: vec![1],
        };
        idx.insert("lora_unet_down.weight".into(), t);
        let e = detect_family(&idx).unwrap_err().to_string();
        assert!(e.contains("not a Stable Diffusion checkpoint"), "{e}");
    }
}
