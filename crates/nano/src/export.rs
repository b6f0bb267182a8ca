//! Writes a trained model as a standard diffusers folder (what the engine and diffusers load).

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Tensor};
use plantain_tokenizer::ClipTokenizer;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::{NanoConfig, model_index_json, scheduler_json, text_encoder_json, unet_json, vae_json};
use crate::train::TrainOptions;
use crate::{NanoError, Result};

/// Facts about the run that the model card reports (kept in the folder's `training.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportInfo {
    pub options: TrainOptions,
    pub vae_loss: f64,
    pub loss: f64,
    pub seconds: f64,
    pub params: usize,
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| NanoError::io(parent, e))?;
    }
    std::fs::write(path, bytes).map_err(|e| NanoError::io(path, e))
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).expect("json serialises");
    text.push('\n');
    write(path, text.as_bytes())
}

fn save_weights(path: &Path, weights: &BTreeMap<String, Tensor>, dtype: DType) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| NanoError::io(parent, e))?;
    }
    let converted: BTreeMap<String, Tensor> =
        weights.iter().map(|(k, t)| Ok((k.clone(), t.to_dtype(dtype)?))).collect::<candle_core::Result<_>>()?;
    Ok(crate::nn::save_tensors(&converted, path)?)
}

/// Writes `out` (replacing it only once everything is written).
#[allow(clippy::too_many_arguments)]
pub fn export(
    out: &Path,
    cfg: &NanoConfig,
    text: &BTreeMap<String, Tensor>,
    unet: &BTreeMap<String, Tensor>,
    vae: &BTreeMap<String, Tensor>,
    latent_scale: f32,
    info: &ExportInfo,
    dtype: DType,
) -> Result<()> {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "plantain-nano".into());
    let tmp = out.with_file_name(format!(".{name}.partial"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| NanoError::io(&tmp, e))?;
    }
    write_json(&tmp.join("model_index.json"), &model_index_json())?;
    write_json(&tmp.join("scheduler/scheduler_config.json"), &scheduler_json(info.options.v_prediction, info.options.zero_terminal_snr))?;
    write_json(&tmp.join("text_encoder/config.json"), &text_encoder_json(&cfg.text))?;
    write_json(&tmp.join("unet/config.json"), &unet_json(&cfg.unet))?;
    write_json(&tmp.join("vae/config.json"), &vae_json(&cfg.vae, latent_scale))?;
    let (vocab, merges) = ClipTokenizer::embedded_files();
    write(&tmp.join("tokenizer/vocab.json"), vocab.as_bytes())?;
    write(&tmp.join("tokenizer/merges.txt"), merges.as_bytes())?;
    write_json(
        &tmp.join("tokenizer/tokenizer_config.json"),
        &json!({
            "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>",
            "model_max_length": cfg.text.max_positions,
            "pad_token": "<|endoftext|>",
            "tokenizer_class": "CLIPTokenizer",
            "unk_token": "<|endoftext|>"
        }),
    )?;
    write_json(
        &tmp.join("tokenizer/special_tokens_map.json"),
        &json!({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}),
    )?;
    save_weights(&tmp.join("text_encoder/model.safetensors"), text, dtype)?;
    save_weights(&tmp.join("unet/diffusion_pytorch_model.safetensors"), unet, dtype)?;
    save_weights(&tmp.join("vae/diffusion_pytorch_model.safetensors"), vae, dtype)?;
    write(&tmp.join("README.md"), model_card(cfg, info).as_bytes())?;
    write_json(&tmp.join("training.json"), &training_json(cfg, info, latent_scale))?;
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(|e| NanoError::io(out, e))?;
    }
    std::fs::rename(&tmp, out).map_err(|e| NanoError::io(out, e))
}

fn training_json(cfg: &NanoConfig, info: &ExportInfo, latent_scale: f32) -> serde_json::Value {
    json!({ "config": cfg, "latent_scale": latent_scale, "run": info })
}

/// An exported folder's `training.json`: its architecture and how it was trained.
pub fn read_training(dir: &Path) -> Result<(NanoConfig, ExportInfo)> {
    let path = dir.join("training.json");
    let bytes = std::fs::read(&path).map_err(|e| NanoError::io(&path, e))?;
    #[derive(Deserialize)]
    struct Training {
        config: NanoConfig,
        run: ExportInfo,
    }
    let t: Training = serde_json::from_slice(&bytes).map_err(|e| NanoError::Checkpoint(format!("{}: {e}", path.display())))?;
    Ok((t.config, t.run))
}

/// Rewrites the model card of an exported folder from its `training.json`, with
/// `evaluation` (Markdown: what was measured, how, and the table) as its Evaluation section.
pub fn write_card(dir: &Path, evaluation: &str) -> Result<()> {
    let (config, run) = read_training(dir)?;
    let card = format!("{}\n\n## Evaluation\n\n{}\n", model_card(&config, &run).trim_end(), evaluation.trim_end());
    let out = dir.join("README.md");
    let tmp = dir.join(".README.md.partial");
    write(&tmp, card.as_bytes())?;
    std::fs::rename(&tmp, &out).map_err(|e| NanoError::io(&out, e))
}

/// The card without its evaluation (`plantain eval nano --write-card` adds that).
pub fn model_card(cfg: &NanoConfig, info: &ExportInfo) -> String {
    let native = cfg.native_resolution();
    format!(
        r#"---
license: apache-2.0
library_name: diffusers
pipeline_tag: text-to-image
---
# plantain-nano

A small text-to-image model of a **synthetic world of coloured shapes** — circles, squares,
triangles, stars, hearts, rings, crosses and diamonds on solid or two-tone backgrounds — made by
the plantain project so that plantain works out of the box with no download, and so that prompt
adherence, editing and self-checks can be measured against exact ground truth. It draws nothing
else: for photographs use a real model (`plantain pull sd-turbo`, `sdxl-turbo`, ...).

## Architecture (Stable Diffusion 1.x layout, diffusers format)
- Text encoder: CLIP text transformer ({tl} layers, width {tw}, {th} heads) with the real CLIP BPE tokenizer.
- UNet2DConditionModel: channels {uc:?}, cross-attention per level {ua:?}, {ul} resnet per level.
- AutoencoderKL: channels {vc:?}, {lat} latent channels, factor {vf}; latent scale {scale}.
- Native resolution {native}x{native}; other aspect ratios at canvases of about the same area
  (sides multiples of {mult}). Weights stored in fp16, computed in f32. {params} parameters.

## Data
Scenes sampled and rendered by `crates/world` (anti-aliased, exact ground truth), captions from
its grammar (synonyms, word order, positions, relations, lighting), 10% empty captions for
classifier-free guidance. Some attribute combinations are held out of training (see
`crates/world/src/sample.rs`) and used only for evaluation.

## Training (reproduce)
```
plantain train nano --out models/plantain-nano --work nano-train --seed {seed}{flag}
```
Candle autograd on the CPU. {autoencoder}{text_phase}Then
{diffused}: {steps} steps of batch {batch} (AdamW, lr {lr}, weight decay 0.01, {warmup} warm-up
steps then cosine decay, {objective}, {dropout:.0}% empty captions, EMA {ema}); {mins:.0} minutes
in all on the machine in BENCHMARKS.md. Final smoothed losses: autoencoder {vloss:.4}, diffusion
{loss:.4}. Deterministic from the seed; `--work` holds resumable checkpoints. Every option is in
`training.json`.

## Licence
Apache-2.0, like plantain. Trained only on procedurally generated images.
"#,
        tl = cfg.text.layers,
        tw = cfg.text.hidden_size,
        th = cfg.text.heads,
        uc = cfg.unet.block_out_channels,
        ua = cfg.unet.attention,
        ul = cfg.unet.layers_per_block,
        vc = cfg.vae.block_out_channels,
        lat = cfg.vae.latent_channels,
        vf = cfg.vae.scale_factor(),
        scale = latent_scale_text(cfg),
        mult = cfg.pixel_multiple(),
        params = info.params,
        seed = info.options.seed,
        autoencoder = autoencoder_text(&info.options),
        steps = info.options.steps,
        batch = info.options.batch,
        lr = info.options.lr,
        warmup = info.options.warmup,
        dropout = info.options.caption_dropout * 100.0,
        ema = info.options.ema_decay,
        mins = info.seconds / 60.0,
        vloss = info.vae_loss,
        loss = info.loss,
        flag = recipe_flags(cfg, &info.options),
        text_phase = text_phase_text(&info.options),
        diffused = if info.options.freeze_text { "the UNet (text encoder frozen)" } else { "text encoder + UNet together" },
        objective = objective_text(&info.options),
    )
}

/// The `train nano` flags that reproduce a run: its recipe, then the switches on top of it.
fn recipe_flags(cfg: &NanoConfig, o: &TrainOptions) -> String {
    let recipes =
        [("", TrainOptions::standard()), (" --epsilon", TrainOptions::epsilon()), (" --frozen-text", TrainOptions::frozen_text())];
    // What `--init-from` changes on top of any recipe (the CLI's fine-tune settings).
    let fine_tune = |r: TrainOptions| match &o.init_from {
        Some(dir) => TrainOptions { init_from: Some(dir.clone()), vae_steps: 0, text_steps: 0, parse_weight: 0.0, ..r },
        None => r,
    };
    let recipes = recipes.map(|(flag, r)| (flag, fine_tune(r)));
    let recipe = recipes.into_iter().find(|(_, r)| {
        *o == TrainOptions {
            seed: o.seed,
            steps: o.steps,
            lr: o.lr,
            mid_noise_share: o.mid_noise_share,
            object_weight: o.object_weight,
            ..r.clone()
        }
    });
    let standard = NanoConfig::standard();
    let architecture = if *cfg == NanoConfig::tiny() {
        Some(" --tiny".to_string())
    } else if *cfg == standard {
        Some(String::new())
    } else if *cfg == NanoConfig::fine_latents() {
        Some(" --fine-latents".to_string())
    } else if let Ok(same) = standard.clone().with_attention_at(&cfg.attention_sides())
        && same == *cfg
    {
        let sides: Vec<String> = cfg.attention_sides().iter().map(|s| s.to_string()).collect();
        Some(format!(" --attention {}", sides.join(",")))
    } else {
        None
    };
    match (recipe, architecture) {
        (Some((flag, r)), Some(a)) => {
            let mid =
                if o.mid_noise_share != r.mid_noise_share { format!(" --mid-noise-share {}", o.mid_noise_share) } else { String::new() };
            let object = if o.object_weight != r.object_weight { format!(" --object-weight {}", o.object_weight) } else { String::new() };
            let init = o.init_from.as_ref().map(|d| format!(" --init-from {}", d.display())).unwrap_or_default();
            let steps = if o.steps != r.steps { format!(" --steps {}", o.steps) } else { String::new() };
            let lr = if o.lr != r.lr { format!(" --lr {}", o.lr) } else { String::new() };
            format!("{flag}{init}{steps}{lr}{mid}{object}{a}")
        }
        _ => "   # plus the non-default options and configuration in training.json".to_string(),
    }
}

fn crops_text(o: &TrainOptions) -> String {
    match o.vae_crop {
        0 => "whole canvases".to_string(),
        c => format!("random {c} px crops"),
    }
}

fn autoencoder_text(o: &TrainOptions) -> String {
    match &o.init_from {
        Some(dir) => format!(
            "Fine-tuned from the model in `{}` (`--init-from`): its autoencoder and latent scale kept, \
             its text encoder and UNet the starting point. ",
            dir.display()
        ),
        None => format!(
            "Autoencoder: {} steps of batch {}, {} (AdamW, lr {}, L2 + ½·L1 reconstruction with {}x extra \
             weight on edges, KL weight 1e-5). ",
            o.vae_steps,
            o.vae_batch,
            crops_text(o),
            o.vae_lr,
            o.vae_edge_weight
        ),
    }
}

fn text_phase_text(o: &TrainOptions) -> String {
    if o.text_steps == 0 {
        return String::new();
    }
    format!(
        "Then the text encoder alone learns to parse captions: {} steps of batch {} (AdamW, lr {}), a \
         linear head on the end-of-text state predicting the scene's background colours, object count, \
         (colour, shape) pairs and grid-cell contents (the head is not exported){}. ",
        o.text_steps,
        o.text_batch,
        o.text_lr,
        if o.parse_weight > 0.0 {
            format!("; the parse loss stays on, weight {}, while the UNet trains", o.parse_weight)
        } else {
            String::new()
        }
    )
}

fn objective_text(o: &TrainOptions) -> String {
    let mut parts = Vec::new();
    if o.v_prediction {
        parts.push(format!("v-prediction with the x0 error weighted by min(snr + {}, 5)", o.x0_weight_floor));
    } else {
        parts.push("ε-prediction with min-SNR-5 weighting".to_string());
    }
    parts.push(if o.zero_terminal_snr {
        "SD's schedule rescaled to zero terminal SNR".into()
    } else {
        "SD's scaled-linear schedule".to_string()
    });
    if o.mid_noise_share > 0.0 {
        parts.push(format!("{:.0}% of timesteps drawn logit-normally (the rest uniformly)", o.mid_noise_share * 100.0));
    }
    if o.object_weight > 0.0 {
        parts.push(format!("latent cells weighted 1 + {} x their object share", o.object_weight));
    }
    if o.offset_noise > 0.0 {
        parts.push(format!("offset noise {}", o.offset_noise));
    }
    parts.join(", ")
}

fn latent_scale_text(_cfg: &NanoConfig) -> &'static str {
    "in vae/config.json (`scaling_factor`)"
}

#[cfg(test)]
mod card_tests {
    use super::*;
    use crate::config::UNetConfig;

    #[test]
    fn the_card_names_the_flags_that_reproduce_the_run() {
        let standard = NanoConfig::standard();
        let opts = TrainOptions { seed: 3, ..TrainOptions::standard() };
        assert_eq!(recipe_flags(&standard, &opts), "");
        let eighth_unet = standard.clone().with_attention_at(&[8]).unwrap();
        assert_eq!(recipe_flags(&eighth_unet, &opts), " --attention 8");
        let everywhere = standard.clone().with_attention_at(&[4, 16, 8]).unwrap();
        assert_eq!(recipe_flags(&everywhere, &opts), " --attention 16,8,4");
        let frozen = TrainOptions { seed: 3, ..TrainOptions::frozen_text() };
        assert_eq!(recipe_flags(&standard, &frozen), " --frozen-text");
        let uniform = TrainOptions { mid_noise_share: 0.0, ..opts.clone() };
        assert_eq!(recipe_flags(&standard, &uniform), " --mid-noise-share 0");
        let unweighted = TrainOptions { object_weight: 0.0, ..opts.clone() };
        assert_eq!(recipe_flags(&everywhere, &unweighted), " --object-weight 0 --attention 16,8,4");
        assert!(objective_text(&opts).contains("latent cells weighted 1 + 8 x their object share"));
        let epsilon = TrainOptions { seed: 3, ..TrainOptions::epsilon() };
        assert_eq!(recipe_flags(&standard, &epsilon), " --epsilon");
        let epsilon_mid = TrainOptions { mid_noise_share: 0.5, ..epsilon };
        assert_eq!(recipe_flags(&standard, &epsilon_mid), " --epsilon --mid-noise-share 0.5");
        assert!(standard.clone().with_attention_at(&[32]).is_err());
        assert_eq!(recipe_flags(&NanoConfig::fine_latents(), &uniform), " --mid-noise-share 0 --fine-latents");
        let wider = NanoConfig { unet: UNetConfig { heads: 8, ..standard.unet.clone() }, ..standard.clone() };
        assert!(recipe_flags(&wider, &opts).contains("training.json"));
        let odd = TrainOptions { warmup: 10, ..opts.clone() };
        assert!(recipe_flags(&standard, &odd).contains("training.json"));
        let longer = TrainOptions { steps: 3000, lr: 5e-4, ..opts.clone() };
        assert_eq!(recipe_flags(&standard, &longer), " --steps 3000 --lr 0.0005");
        let tuned = TrainOptions {
            init_from: Some("models/plantain-nano".into()),
            vae_steps: 0,
            text_steps: 0,
            parse_weight: 0.0,
            steps: 600,
            mid_noise_share: 0.25,
            ..opts.clone()
        };
        assert_eq!(recipe_flags(&standard, &tuned), " --init-from models/plantain-nano --steps 600 --mid-noise-share 0.25");
        assert!(
            model_card(&standard, &ExportInfo { options: tuned, vae_loss: 0.0, loss: 0.0, seconds: 60.0, params: 1 })
                .contains("Fine-tuned from the model in `models/plantain-nano`")
        );
        // A fine-tune that kept a parse loss is not what the CLI makes.
        let parsed = TrainOptions { init_from: Some("m".into()), vae_steps: 0, text_steps: 0, ..opts.clone() };
        assert!(recipe_flags(&standard, &parsed).contains("training.json"));
        assert_eq!(crops_text(&opts), "random 32 px crops");
    }
}
