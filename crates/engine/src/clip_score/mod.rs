//! Image–text adherence with CLIP: how well a picture matches a prompt.
//!
//! [`ClipScorer::open`] loads a transformers `CLIPModel` folder, e.g. a local copy of
//! `openai/clip-vit-large-patch14`: `config.json` (`text_config`, `vision_config`,
//! `projection_dim`), `model.safetensors` (`vision_model.*`, `visual_projection.weight`,
//! `text_model.*`, `text_projection.weight`, `logit_scale`; sharded or `model.*.safetensors`
//! variants too), optionally `preprocessor_config.json` and the tokenizer files (`vocab.json` +
//! `merges.txt` or `tokenizer.json`; without them the built-in copy of CLIP's vocabulary is
//! used, which is the one every OpenAI CLIP ships).
//!
//! - [`ClipScorer::score`]`(&image, "prompt")` is the **cosine similarity** of the normalised
//!   image and text embeddings, in [-1, 1] (about 0.15–0.35 for real pictures and captions
//!   with ViT-L/14).
//! - [`clip_score`] turns a cosine into the CLIPScore convention of Hessel et al. (2021) as
//!   torchmetrics reports it: `max(100 · cos, 0)`. (The paper's own CLIP-S uses 2.5 · cos.)
//! - [`ClipScorer::similarities`] scores every picture against every text in one batch per
//!   tower; [`ClipScorer::embed_images`] / [`ClipScorer::embed_texts`] give the raw projected
//!   embeddings (`image_embeds`/`text_embeds` of transformers' `get_*_features`, unnormalised)
//!   for callers that cache one side, and [`cosine_similarities`] combines them.
//!
//! The networks are graphs like the rest of the engine ([`crate::models::clip_vision`],
//! [`crate::models::clip`]); preprocessing is [`ImageProcessor`], a bit-exact copy of
//! `CLIPImageProcessor` (Pillow's bicubic resize of the shortest side, centre crop, rescale,
//! OpenAI mean/std). Texts longer than the 77-token context are truncated as transformers does
//! (end token kept); [`ClipScorer::tokenize`] says whether that happened. Parity with
//! transformers is checked by `crates/engine/tests/parity_clip.rs` on the tiny random model of
//! `fixtures/tiny/clip` (figures in `fixtures/ref/README.md`).

mod preprocess;

use std::path::{Path, PathBuf};

use image::RgbImage;
use ndarray::{Array2, ArrayD, Axis, Ix2, IxDyn};
use plantain_tokenizer::{ClipTokenizer, PaddedEncoding};
use serde_json::Value as Json;

pub use preprocess::{ImageProcessor, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, pil_bicubic};

use crate::error::{EngineError, Result};
use crate::graph::StoredTensor;
use crate::models::clip::{self, ClipOutputs, ClipTextConfig};
use crate::models::clip_vision::{self, ClipVisionConfig};
use crate::pipeline::component_weights;
use crate::runtime::{Input, Network, RuntimeOptions};
use crate::weights::TensorIndex;

/// The CLIPScore convention: `max(100 · cosine, 0)`.
pub fn clip_score(cosine: f32) -> f32 {
    (100.0 * cosine).max(0.0)
}

/// Cosine similarity of every row of `image_embeds` `[N, D]` with every row of `text_embeds`
/// `[M, D]`: `[N, M]`. Rows are L2-normalised first (a zero row scores 0, not NaN).
pub fn cosine_similarities(image_embeds: &Array2<f32>, text_embeds: &Array2<f32>) -> Array2<f32> {
    normalised(image_embeds).dot(&normalised(text_embeds).t())
}

fn normalised(x: &Array2<f32>) -> Array2<f32> {
    let mut x = x.clone();
    for mut row in x.rows_mut() {
        let norm = row.dot(&row).sqrt().max(f32::MIN_POSITIVE);
        row /= norm;
    }
    x
}

/// transformers' `CLIPConfig`: the two towers and the shared embedding width.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipModelConfig {
    /// `text_config`, with `projection_dim` set to the model's.
    pub text: ClipTextConfig,
    pub vision: ClipVisionConfig,
    pub projection_dim: usize,
    /// `text_config.eos_token_id`. transformers pools the text at `argmax(input_ids)` when it is
    /// 2 (the legacy value of the OpenAI configs), else at the first token with this id.
    pub eos_token_id: Option<u32>,
}

/// transformers' `CLIPTextConfig` defaults, for old configs that leave fields out.
const TEXT_DEFAULTS: &str = r#"{"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
    "num_attention_heads": 8, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}"#;

impl ClipModelConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
        Self::from_json(&text).map_err(|e| match e {
            ConfigError::Bad(r) => EngineError::bad_config(path, r),
            ConfigError::NotClip(r) => EngineError::Unsupported(format!("{}: {r}", path.display())),
        })
    }

    fn from_json(text: &str) -> std::result::Result<Self, ConfigError> {
        let json: Json = serde_json::from_str(text).map_err(|e| ConfigError::Bad(e.to_string()))?;
        match json.get("model_type").and_then(Json::as_str) {
            None | Some("clip") => {}
            Some(other) => {
                return Err(ConfigError::NotClip(format!(
                    "model_type `{other}` is not a CLIPModel (needs `clip`: both towers and projections)"
                )));
            }
        }
        let section = |key: &str| json.get(key).or_else(|| json.get(format!("{key}_dict").as_str())).cloned().unwrap_or(Json::Null);
        let mut text_json: Json = serde_json::from_str(TEXT_DEFAULTS).expect("valid defaults");
        if let (Some(t), Some(given)) = (text_json.as_object_mut(), section("text_config").as_object()) {
            t.extend(given.clone());
        }
        let bad = |what: &str, e: serde_json::Error| ConfigError::Bad(format!("{what}: {e}"));
        let projection_dim = json.get("projection_dim").and_then(Json::as_u64).unwrap_or(512) as usize;
        let mut text: ClipTextConfig = serde_json::from_value(text_json.clone()).map_err(|e| bad("text_config", e))?;
        text.projection_dim = Some(projection_dim);
        let vision_json = match section("vision_config") {
            Json::Null => Json::Object(Default::default()),
            v => v,
        };
        let vision = serde_json::from_value(vision_json).map_err(|e| bad("vision_config", e))?;
        let eos_token_id = text_json.get("eos_token_id").and_then(Json::as_u64).map(|v| v as u32);
        Ok(Self { text, vision, projection_dim, eos_token_id })
    }
}

#[derive(Debug)]
enum ConfigError {
    Bad(String),
    NotClip(String),
}

/// A loaded CLIP model that embeds pictures and texts and scores how well they match.
/// `Send + Sync`: share it behind an `Arc`; calls run one at a time per tower.
pub struct ClipScorer {
    config: ClipModelConfig,
    processor: ImageProcessor,
    tokenizer: ClipTokenizer,
    vision: Network,
    text: Network,
    logit_scale: Option<f32>,
}

impl std::fmt::Debug for ClipScorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipScorer").field("config", &self.config).field("processor", &self.processor).finish_non_exhaustive()
    }
}

impl ClipScorer {
    /// Loads the model folder `dir` (see the module docs) and builds both towers. A missing
    /// folder, config or weight file is [`EngineError::MissingFile`]; a config that is not a
    /// two-tower CLIP, or preprocessing this does not implement, [`EngineError::Unsupported`];
    /// weights that disagree with the config, [`EngineError::MissingWeight`] /
    /// [`EngineError::ShapeMismatch`].
    pub fn open(dir: &Path, rt: &RuntimeOptions) -> Result<Self> {
        if !dir.is_dir() {
            return Err(EngineError::MissingFile { what: "CLIP model folder".into(), looked_for: vec![dir.to_path_buf()] });
        }
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(EngineError::MissingFile { what: "CLIP model config".into(), looked_for: vec![config_path] });
        }
        let config = ClipModelConfig::from_file(&config_path)?;
        let processor = processor(dir, &config.vision)?;
        let tokenizer = tokenizer(dir)?;
        check_pooling(&config, &tokenizer)?;
        let weights = TensorIndex::open_all(&weight_files(dir)?)?;
        let logit_scale = weights.get("logit_scale").map(read_scalar).transpose()?;
        let vision = Network::new(&clip_vision::build(&config.vision, Some(config.projection_dim), &weights)?, "clip-vision", rt)?;
        let text = Network::new(&clip::build(&config.text, &weights, ClipOutputs { projection: true })?, "clip-text", rt)?;
        Ok(Self { config, processor, tokenizer, vision, text, logit_scale })
    }

    pub fn config(&self) -> &ClipModelConfig {
        &self.config
    }
    pub fn processor(&self) -> &ImageProcessor {
        &self.processor
    }

    /// `exp(logit_scale)`, the factor transformers applies to cosines to get `logits_per_image`
    /// (100 for the OpenAI models); `None` if the checkpoint has no `logit_scale`.
    pub fn logit_scale(&self) -> Option<f32> {
        self.logit_scale.map(f32::exp)
    }

    /// The preprocessed `pixel_values` `[N, 3, S, S]` of `images`.
    pub fn pixel_values(&self, images: &[RgbImage]) -> Result<ArrayD<f32>> {
        let each = images.iter().map(|im| self.processor.pixel_values(im)).collect::<Result<Vec<_>>>()?;
        let views: Vec<_> = each.iter().map(|a| a.view()).collect();
        ndarray::concatenate(Axis(0), &views).map_err(|e| EngineError::InvalidRequest(format!("no pictures to embed: {e}")))
    }

    /// `image_embeds` `[N, projection_dim]` (unnormalised) of preprocessed `pixel_values`.
    pub fn embed_pixels(&self, pixel_values: ArrayD<f32>) -> Result<Array2<f32>> {
        let out = self.vision.run(vec![("pixel_values", Input::F32(pixel_values))])?;
        two_d(out, "image_embeds")
    }

    /// `image_embeds` `[N, projection_dim]` (unnormalised) of `images`, one batch.
    pub fn embed_images(&self, images: &[RgbImage]) -> Result<Array2<f32>> {
        self.embed_pixels(self.pixel_values(images)?)
    }

    /// The token ids the text tower sees for `text`, padded to the context length; says whether
    /// the text was truncated.
    pub fn tokenize(&self, text: &str) -> PaddedEncoding {
        self.tokenizer.encode_for_model(text, self.config.text.max_position_embeddings)
    }

    /// `text_embeds` `[M, projection_dim]` (unnormalised) of token ids `[M, context]`.
    pub fn embed_ids(&self, input_ids: ArrayD<i64>) -> Result<Array2<f32>> {
        let out = self.text.run(vec![("input_ids", Input::I64(input_ids))])?;
        two_d(out, "text_embeds")
    }

    /// `text_embeds` `[M, projection_dim]` (unnormalised) of `texts`, one batch.
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Array2<f32>> {
        if texts.is_empty() {
            return Err(EngineError::InvalidRequest("no texts to embed".into()));
        }
        let seq = self.config.text.max_position_embeddings;
        let ids: Vec<i64> = texts.iter().flat_map(|t| self.tokenize(t).ids).map(i64::from).collect();
        let ids = ArrayD::from_shape_vec(IxDyn(&[texts.len(), seq]), ids).map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        self.embed_ids(ids)
    }

    /// Cosine similarity of every picture with every text, `[images, texts]`.
    pub fn similarities(&self, images: &[RgbImage], texts: &[&str]) -> Result<Array2<f32>> {
        Ok(cosine_similarities(&self.embed_images(images)?, &self.embed_texts(texts)?))
    }

    /// Cosine similarity of the normalised image and text embeddings (see [`clip_score`] for
    /// the ×100 convention).
    pub fn score(&self, image: &RgbImage, text: &str) -> Result<f32> {
        Ok(self.similarities(std::slice::from_ref(image), &[text])?[[0, 0]])
    }
}

fn two_d(mut out: std::collections::HashMap<String, ArrayD<f32>>, name: &str) -> Result<Array2<f32>> {
    let a = out.remove(name).ok_or_else(|| EngineError::Runtime(format!("CLIP: no `{name}` output")))?;
    a.into_dimensionality::<Ix2>().map_err(|e| EngineError::Runtime(format!("CLIP `{name}`: {e}")))
}

fn processor(dir: &Path, vision: &ClipVisionConfig) -> Result<ImageProcessor> {
    let side = vision.image_size as u32;
    let path = dir.join("preprocessor_config.json");
    let p = if path.is_file() { ImageProcessor::from_file(&path, side)? } else { ImageProcessor::openai(side) };
    if p.crop != (side, side) {
        return Err(EngineError::Unsupported(format!(
            "{}: crop {:?} differs from the model's {side}x{side} input (position embeddings are not interpolated)",
            path.display(),
            p.crop
        )));
    }
    Ok(p)
}

fn tokenizer(dir: &Path) -> Result<ClipTokenizer> {
    if dir.join("vocab.json").is_file() || dir.join("tokenizer.json").is_file() {
        return ClipTokenizer::from_dir(dir).map_err(|e| EngineError::Tokenizer(format!("{}: {e}", dir.display())));
    }
    tracing::info!(dir = %dir.display(), "no CLIP tokenizer files: using the built-in CLIP vocabulary");
    Ok(ClipTokenizer::embedded_default())
}

/// The text graph pools at the first maximum of the ids; transformers pools there when
/// `eos_token_id` is 2, else at the first end-of-text token. They agree when the tokenizer's end
/// token is also the largest id it produces, as in CLIP's vocabulary.
fn check_pooling(config: &ClipModelConfig, tok: &ClipTokenizer) -> Result<()> {
    let eos = tok.eos_id();
    match config.eos_token_id {
        None | Some(2) => Ok(()),
        Some(id) if id == eos && tok.vocab_size() as u32 == eos + 1 => Ok(()),
        Some(id) => Err(EngineError::Unsupported(format!(
            "CLIP text_config.eos_token_id {id}: pooling at it is not supported (the tokenizer ends texts with {eos} of {} ids)",
            tok.vocab_size()
        ))),
    }
}

fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    component_weights(dir, "", "model", None).map_err(|e| match e {
        EngineError::MissingFile { looked_for, .. } => EngineError::MissingFile { what: "CLIP weights".into(), looked_for },
        other => other,
    })
}

/// The value of a one-element stored tensor (`logit_scale`).
fn read_scalar(t: &StoredTensor) -> Result<f32> {
    if t.numel() != 1 {
        return Err(EngineError::Unsupported(format!("logit_scale has shape {:?}, expected a scalar", t.shape)));
    }
    Ok(crate::weights::quant::read_f32(t).map_err(|e| EngineError::io(t.file.as_path(), e))?[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_score_is_a_hundred_cosines_floored_at_zero() {
        assert_eq!(clip_score(0.31), 31.0);
        assert_eq!(clip_score(-0.2), 0.0);
    }

    #[test]
    fn cosines_ignore_length_and_survive_zero_rows() {
        let a = Array2::from_shape_vec((2, 2), vec![3.0, 0.0, 0.0, 0.0]).unwrap();
        let b = Array2::from_shape_vec((2, 2), vec![1.0, 1.0, -5.0, 0.0]).unwrap();
        let c = cosine_similarities(&a, &b);
        assert!((c[[0, 0]] - 0.5f32.sqrt()).abs() < 1e-6 && (c[[0, 1]] + 1.0).abs() < 1e-6);
        assert_eq!((c[[1, 0]], c[[1, 1]]), (0.0, 0.0));
    }

    #[test]
    fn configs_take_transformers_defaults_and_the_shared_projection() {
        let cfg = ClipModelConfig::from_json(
            r#"{"model_type": "clip", "projection_dim": 768,
            "text_config": {"hidden_size": 768, "eos_token_id": 2}, "vision_config": {"patch_size": 14}}"#,
        )
        .unwrap();
        assert_eq!((cfg.text.hidden_size, cfg.text.num_hidden_layers, cfg.text.projection_dim), (768, 12, Some(768)));
        assert_eq!((cfg.vision.hidden_size, cfg.vision.patch_size, cfg.eos_token_id), (768, 14, Some(2)));
        assert!(matches!(ClipModelConfig::from_json(r#"{"model_type": "siglip"}"#), Err(ConfigError::NotClip(_))));
        let l14 = ClipModelConfig::from_json(crate::models::presets::CLIP_VIT_L14).unwrap();
        let v = &l14.vision;
        assert_eq!((v.num_hidden_layers, v.hidden_size, v.patch_size, v.image_size, v.grid()), (24, 1024, 14, 224, 16));
        assert_eq!((l14.text.num_hidden_layers, l14.text.hidden_size, l14.projection_dim), (12, 768, 768));
        assert!(matches!(ClipModelConfig::from_json(r#"{"text_config": {"hidden_size": "wide"}}"#), Err(ConfigError::Bad(_))));
    }
}
