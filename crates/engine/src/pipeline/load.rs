//! Finding a model's parts on disk: the diffusers folder layout and single-file checkpoints.

use std::path::{Path, PathBuf};

use plantain_core::KLEIN_CLASS;
use plantain_schedulers::SchedulerConfig;
use plantain_tokenizer::ClipTokenizer;
use serde_json::Value as Json;

use crate::error::{EngineError, Result};
use crate::models::clip::ClipTextConfig;
use crate::models::unet::UNetConfig;
use crate::models::vae::VaeConfig;
use crate::models::{Family, presets};
use crate::weights::TensorIndex;
use crate::weights::lora::{self, LoraSpec};

/// Where a model comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// A folder with `model_index.json`, `unet/`, `vae/`, `text_encoder/`, …
    Diffusers(PathBuf),
    /// One `.safetensors` checkpoint with the original (CompVis / Stability) key names.
    /// `config_dir` optionally points at a diffusers folder whose configs describe it; without
    /// one the standard configs of the detected family are used.
    SingleFile { file: PathBuf, config_dir: Option<PathBuf> },
}

impl ModelSource {
    /// A diffusers folder or a single `.safetensors` file, decided by what is on disk.
    pub fn detect(path: &Path) -> Result<Self> {
        if path.is_dir() {
            if path.join("model_index.json").is_file() {
                return Ok(Self::Diffusers(path.to_path_buf()));
            }
            return Err(EngineError::MissingFile {
                what: format!("{} is a folder but not a diffusers model", path.display()),
                looked_for: vec![path.join("model_index.json")],
            });
        }
        if path.is_file() {
            return match path.extension().and_then(|e| e.to_str()) {
                Some("safetensors") => Ok(Self::SingleFile { file: path.to_path_buf(), config_dir: None }),
                Some("ckpt" | "pt" | "pth" | "bin") => Err(EngineError::Unsupported(format!(
                    "{}: PyTorch pickle checkpoints are not loaded (they can run code); convert it to .safetensors first",
                    path.display()
                ))),
                _ => Err(EngineError::Unsupported(format!("{}: expected a .safetensors checkpoint or a diffusers folder", path.display()))),
            };
        }
        Err(EngineError::MissingFile { what: "model".into(), looked_for: vec![path.to_path_buf()] })
    }
}

/// Whether a diffusers folder holds FLUX.2 [klein] (its `model_index.json` says so).
pub(crate) fn is_klein(dir: &Path) -> Result<bool> {
    let index = read_json(&dir.join("model_index.json"))?;
    Ok(index.get("_class_name").and_then(Json::as_str) == Some(KLEIN_CLASS))
}

/// A text encoder's parts.
pub(crate) struct TextEncoderParts {
    pub config: ClipTextConfig,
    pub weights: TensorIndex,
    pub tokenizer: ClipTokenizer,
}

/// Everything a pipeline is built from.
pub(crate) struct Parts {
    pub family: Family,
    pub pipeline_class: String,
    pub text_encoder: TextEncoderParts,
    pub text_encoder_2: Option<TextEncoderParts>,
    pub unet: (UNetConfig, TensorIndex),
    pub vae: (VaeConfig, TensorIndex),
    pub scheduler: SchedulerConfig,
    pub force_zeros_for_empty_prompt: bool,
    pub notes: Vec<String>,
}

fn read_json(path: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| EngineError::bad_config(path, e))
}

fn config_file(dir: &Path, component: &str, name: &str) -> Result<PathBuf> {
    let p = dir.join(component).join(name);
    if p.is_file() { Ok(p) } else { Err(EngineError::MissingFile { what: format!("{component} config"), looked_for: vec![p] }) }
}

/// The weight files of one component: `{base}.{variant}.safetensors`, `{base}.safetensors`,
/// any other `{base}.*.safetensors` variant (fp16), or a sharded `{base}.safetensors.index.json`.
pub(crate) fn component_weights(dir: &Path, component: &str, base: &str, variant: Option<&str>) -> Result<Vec<PathBuf>> {
    let folder = dir.join(component);
    let mut candidates = Vec::new();
    if let Some(v) = variant {
        candidates.push(folder.join(format!("{base}.{v}.safetensors")));
    }
    candidates.push(folder.join(format!("{base}.safetensors")));
    for c in &candidates {
        if c.is_file() {
            return Ok(vec![c.clone()]);
        }
    }
    let index = folder.join(format!("{base}.safetensors.index.json"));
    if index.is_file() {
        let json = read_json(&index)?;
        let map = json.get("weight_map").and_then(Json::as_object).ok_or_else(|| EngineError::bad_config(&index, "no `weight_map`"))?;
        let mut files: Vec<PathBuf> = map.values().filter_map(Json::as_str).map(|f| folder.join(f)).collect();
        files.sort();
        files.dedup();
        return Ok(files);
    }
    // Repos that ship only a variant (e.g. fp16) without the caller asking for it.
    if let Ok(entries) = std::fs::read_dir(&folder) {
        let mut variants: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.starts_with(&format!("{base}.")) && name.ends_with(".safetensors")
            })
            .collect();
        variants.sort();
        if let Some(first) = variants.into_iter().next() {
            return Ok(vec![first]);
        }
        let bin = folder.join(format!("{base}.bin"));
        if bin.is_file() {
            return Err(EngineError::Unsupported(format!(
                "{}: PyTorch pickle weights are not loaded (they can run code); this model needs .safetensors weights",
                bin.display()
            )));
        }
    }
    candidates.push(index);
    Err(EngineError::MissingFile { what: format!("{component} weights"), looked_for: candidates })
}

fn open_weights(dir: &Path, component: &str, base: &str, variant: Option<&str>) -> Result<TensorIndex> {
    TensorIndex::open_all(&component_weights(dir, component, base, variant)?)
}

fn tokenizer(dir: &Path, component: &str, openclip_default: bool, notes: &mut Vec<String>) -> Result<ClipTokenizer> {
    let folder = dir.join(component);
    if folder.is_dir() {
        return ClipTokenizer::from_dir(&folder).map_err(|e| EngineError::Tokenizer(format!("{}: {e}", folder.display())));
    }
    notes.push(format!("no {component}/ folder: using the built-in CLIP tokenizer"));
    Ok(if openclip_default { ClipTokenizer::embedded_default_openclip() } else { ClipTokenizer::embedded_default() })
}

/// Reads a diffusers folder. `variant` prefers e.g. `fp16` weight files when present.
/// Applies the LoRA files to the UNet and text encoders (before any graph is built, so a file
/// that does not fit fails at once).
pub(crate) fn apply_loras(parts: &mut Parts, specs: &[LoraSpec]) -> Result<()> {
    if specs.is_empty() {
        return Ok(());
    }
    let components = lora::Components {
        unet: &mut parts.unet.1,
        text_encoder: &mut parts.text_encoder.weights,
        text_encoder_2: parts.text_encoder_2.as_mut().map(|t| &mut t.weights),
        layers_per_block: parts.unet.0.layers_per_block,
    };
    let adapted = lora::apply(components, specs)?;
    parts.notes.push(format!("{} LoRA file(s) adapt {adapted} weights", specs.len()));
    Ok(())
}

pub(crate) fn diffusers(dir: &Path, variant: Option<&str>) -> Result<Parts> {
    let index_path = dir.join("model_index.json");
    let index = read_json(&index_path)?;
    let class = index.get("_class_name").and_then(Json::as_str).unwrap_or("").to_string();
    const SUPPORTED: &[&str] = &[
        "StableDiffusionPipeline",
        "StableDiffusionImg2ImgPipeline",
        "StableDiffusionInpaintPipeline",
        "StableDiffusionInstructPix2PixPipeline",
        "StableDiffusionXLPipeline",
        "StableDiffusionXLImg2ImgPipeline",
        "StableDiffusionXLInpaintPipeline",
    ];
    if class == KLEIN_CLASS {
        return Err(EngineError::Unsupported(format!(
            "{}: FLUX.2 [klein] is not a Stable Diffusion model; load it with `Pipeline::load`",
            index_path.display()
        )));
    }
    if !SUPPORTED.contains(&class.as_str()) {
        return Err(EngineError::Unsupported(format!(
            "{}: pipeline `{class}` is not supported (supported: {})",
            index_path.display(),
            SUPPORTED.join(", ")
        )));
    }
    let xl = class.starts_with("StableDiffusionXL");
    let mut notes = Vec::new();

    let te_cfg = ClipTextConfig::from_file(&config_file(dir, "text_encoder", "config.json")?)?;
    let te_weights = open_weights(dir, "text_encoder", "model", variant)?;
    // OpenCLIP-trained encoders (SD 2.x) use gelu; OpenAI CLIP (SD 1.x) quick_gelu.
    let openclip = te_cfg.hidden_act == "gelu";
    let family = if xl {
        Family::Sdxl
    } else if openclip {
        Family::Sd2
    } else {
        Family::Sd1
    };
    let te_tok = tokenizer(dir, "tokenizer", openclip, &mut notes)?;
    let text_encoder = TextEncoderParts { config: te_cfg, weights: te_weights, tokenizer: te_tok };

    let text_encoder_2 = if xl {
        let config = ClipTextConfig::from_file(&config_file(dir, "text_encoder_2", "config.json")?)?;
        let weights = open_weights(dir, "text_encoder_2", "model", variant)?;
        let tokenizer = tokenizer(dir, "tokenizer_2", true, &mut notes)?;
        Some(TextEncoderParts { config, weights, tokenizer })
    } else {
        None
    };

    let unet_cfg = UNetConfig::from_file(&config_file(dir, "unet", "config.json")?)?;
    let unet_w = open_weights(dir, "unet", "diffusion_pytorch_model", variant)?;
    let vae_cfg = VaeConfig::from_file(&config_file(dir, "vae", "config.json")?)?;
    let vae_w = open_weights(dir, "vae", "diffusion_pytorch_model", variant)?;
    let sched_path = config_file(dir, "scheduler", "scheduler_config.json")?;
    let scheduler = SchedulerConfig::from_file(&sched_path).map_err(|e| EngineError::bad_config(&sched_path, e))?;
    let force_zeros_for_empty_prompt = index.get("force_zeros_for_empty_prompt").and_then(Json::as_bool).unwrap_or(xl);

    Ok(Parts {
        family,
        pipeline_class: class,
        text_encoder,
        text_encoder_2,
        unet: (unet_cfg, unet_w),
        vae: (vae_cfg, vae_w),
        scheduler,
        force_zeros_for_empty_prompt,
        notes,
    })
}

/// Reads a single-file checkpoint; configs come from `config_dir` (a diffusers folder) when
/// given, else from the standard configs of the detected family. A config that does not fit
/// the weights fails when the graphs are built, naming the first tensor that disagrees.
pub(crate) fn single_file(file: &Path, config_dir: Option<&Path>) -> Result<Parts> {
    let sf = crate::weights::single_file::open(file)?;
    let mut notes = Vec::new();
    let (class, scheduler, te1_cfg, te2_cfg, unet_cfg, vae_cfg, force_zeros) = match config_dir {
        Some(dir) => {
            let index = read_json(&dir.join("model_index.json"))?;
            let class = index.get("_class_name").and_then(Json::as_str).unwrap_or("").to_string();
            let sched_path = config_file(dir, "scheduler", "scheduler_config.json")?;
            let scheduler = SchedulerConfig::from_file(&sched_path).map_err(|e| EngineError::bad_config(&sched_path, e))?;
            let te1 = ClipTextConfig::from_file(&config_file(dir, "text_encoder", "config.json")?)?;
            let te2 = match sf.family {
                Family::Sdxl => Some(ClipTextConfig::from_file(&config_file(dir, "text_encoder_2", "config.json")?)?),
                _ => None,
            };
            let unet = UNetConfig::from_file(&config_file(dir, "unet", "config.json")?)?;
            let vae = VaeConfig::from_file(&config_file(dir, "vae", "config.json")?)?;
            let fz = index.get("force_zeros_for_empty_prompt").and_then(Json::as_bool).unwrap_or(sf.family == Family::Sdxl);
            (class, scheduler, te1, te2, unet, vae, fz)
        }
        None => {
            let preset = match sf.family {
                Family::Sd1 => presets::SD15,
                Family::Sd2 => {
                    // The weights do not say whether a 2.x model predicts noise (2.x-base,
                    // SD-Turbo) or velocity (768 v); the file name usually does.
                    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("").to_ascii_lowercase();
                    if name.contains("turbo") || name.contains("base") {
                        notes.push("SD 2.x single file named turbo/base: using SD-Turbo's 512px epsilon configs".into());
                        presets::SD_TURBO
                    } else {
                        notes.push(
                            "SD 2.x single file: assuming the 768px v-prediction model (SD 2.1); for 2.x-base or SD-Turbo \
                             checkpoints pass --config-dir with that model's diffusers folder"
                                .into(),
                        );
                        presets::SD21
                    }
                }
                Family::Sdxl => presets::SDXL,
            };
            let file_cfg = |what: &str, text: &str| EngineError::bad_config(Path::new(what), text.to_string());
            let parse_clip =
                |t: &str| serde_json::from_str::<ClipTextConfig>(t).map_err(|e| file_cfg("preset text encoder", &e.to_string()));
            let scheduler = SchedulerConfig::from_json_str(preset.scheduler).map_err(|e| file_cfg("preset scheduler", &e.to_string()))?;
            let te1 = parse_clip(preset.text_encoder)?;
            let te2 = preset.text_encoder_2.map(parse_clip).transpose()?;
            let unet = UNetConfig::from_json(preset.unet).map_err(|e| file_cfg("preset unet", &e))?;
            let vae = serde_json::from_str::<VaeConfig>(preset.vae).map_err(|e| file_cfg("preset vae", &e.to_string()))?;
            let class = if sf.family == Family::Sdxl { "StableDiffusionXLPipeline" } else { "StableDiffusionPipeline" };
            (class.to_string(), scheduler, te1, te2, unet, vae, sf.family == Family::Sdxl)
        }
    };
    let tok = |sub: &str, openclip: bool, notes: &mut Vec<String>| match config_dir {
        Some(dir) => tokenizer(dir, sub, openclip, notes),
        None => Ok(if openclip { ClipTokenizer::embedded_default_openclip() } else { ClipTokenizer::embedded_default() }),
    };
    let te1_openclip = sf.family == Family::Sd2;
    let text_encoder =
        TextEncoderParts { tokenizer: tok("tokenizer", te1_openclip, &mut notes)?, config: te1_cfg, weights: sf.text_encoder };
    let text_encoder_2 = match (te2_cfg, sf.text_encoder_2) {
        (Some(config), Some(weights)) => Some(TextEncoderParts { tokenizer: tok("tokenizer_2", true, &mut notes)?, config, weights }),
        _ => None,
    };
    Ok(Parts {
        family: sf.family,
        pipeline_class: class,
        text_encoder,
        text_encoder_2,
        unet: (unet_cfg, sf.unet),
        vae: (vae_cfg, sf.vae),
        scheduler,
        force_zeros_for_empty_prompt: force_zeros,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pickle_checkpoints_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("model.ckpt");
        std::fs::write(&p, b"not really").unwrap();
        let e = ModelSource::detect(&p).unwrap_err().to_string();
        assert!(e.contains("pickle") && e.contains("safetensors"), "{e}");
    }

    #[test]
    fn a_plain_folder_is_not_a_model() {
        let dir = tempfile::tempdir().unwrap();
        let e = ModelSource::detect(dir.path()).unwrap_err().to_string();
        assert!(e.contains("model_index.json"), "{e}");
    }

    #[test]
    fn a_missing_path_says_so() {
        let e = ModelSource::detect(Path::new("/definitely/not/here")).unwrap_err().to_string();
        assert!(e.contains("not found") && e.contains("/definitely/not/here"), "{e}");
    }

    #[test]
    fn weights_prefer_the_requested_variant_then_plain_then_any() {
        let dir = tempfile::tempdir().unwrap();
        let unet = dir.path().join("unet");
        std::fs::create_dir_all(&unet).unwrap();
        std::fs::write(unet.join("diffusion_pytorch_model.fp16.safetensors"), b"x").unwrap();
        let got = component_weights(dir.path(), "unet", "diffusion_pytorch_model", None).unwrap();
        assert!(got[0].ends_with("diffusion_pytorch_model.fp16.safetensors"));
        std::fs::write(unet.join("diffusion_pytorch_model.safetensors"), b"x").unwrap();
        let got = component_weights(dir.path(), "unet", "diffusion_pytorch_model", None).unwrap();
        assert!(got[0].ends_with("diffusion_pytorch_model.safetensors"));
        let got = component_weights(dir.path(), "unet", "diffusion_pytorch_model", Some("fp16")).unwrap();
        assert!(got[0].ends_with("diffusion_pytorch_model.fp16.safetensors"));
    }

    #[test]
    fn missing_weights_list_where_we_looked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("vae")).unwrap();
        let e = component_weights(dir.path(), "vae", "diffusion_pytorch_model", None).unwrap_err().to_string();
        assert!(e.contains("vae weights not found") && e.contains("diffusion_pytorch_model.safetensors"), "{e}");
    }
}
