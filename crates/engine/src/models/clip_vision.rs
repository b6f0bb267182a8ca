//! CLIP vision transformer (transformers' `CLIPVisionModelWithProjection`, the image half of
//! `CLIPModel`): patch embedding (a convolution without bias), the class token, learned position
//! embeddings, `pre_layrnorm` (transformers' spelling), pre-norm encoder layers without a mask,
//! `post_layernorm` on the class token and `visual_projection`.
//!
//! Weights are read by transformers' names: `vision_model.*` and `visual_projection.weight`, as
//! in a `CLIPModel` or `CLIPVisionModelWithProjection` `model.safetensors`.

use serde::Deserialize;

use super::clip::{EncoderShape, encoder_layer};
use super::nn::{conv, layer_norm, linear, to_tokens};
use crate::error::{EngineError, Result};
use crate::graph::{DType, Dim, Graph, GraphBuilder};
use crate::weights::{Params, TensorIndex};

/// transformers' `CLIPVisionConfig`; missing fields take its defaults (ViT-B/32).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ClipVisionConfig {
    #[serde(default = "default_hidden")]
    pub hidden_size: usize,
    #[serde(default = "default_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "default_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "default_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    #[serde(default = "default_image_size")]
    pub image_size: usize,
    #[serde(default = "default_patch")]
    pub patch_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f32,
}

fn default_hidden() -> usize {
    768
}
fn default_intermediate() -> usize {
    3072
}
fn default_layers() -> usize {
    12
}
fn default_heads() -> usize {
    12
}
fn default_channels() -> usize {
    3
}
fn default_image_size() -> usize {
    224
}
fn default_patch() -> usize {
    32
}
fn default_act() -> String {
    "quick_gelu".into()
}
fn default_eps() -> f32 {
    1e-5
}

impl ClipVisionConfig {
    /// Patches per side of the (square) input.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    fn check(&self) -> Result<()> {
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return Err(EngineError::Unsupported(format!(
                "CLIP vision: image size {} is not a multiple of the patch size {}",
                self.image_size, self.patch_size
            )));
        }
        Ok(())
    }
}

/// Builds the vision tower. Input `pixel_values` `[B, C, S, S]` (preprocessed, S = `image_size`).
/// Outputs: `last_hidden_state` `[B, 1 + grid², width]` (no final norm, as transformers),
/// `pooled` (`post_layernorm` of the class token) and, with `projection_dim`, `image_embeds`
/// (`visual_projection` of `pooled`, not normalised).
pub fn build(cfg: &ClipVisionConfig, projection_dim: Option<usize>, weights: &TensorIndex) -> Result<Graph> {
    cfg.check()?;
    let p = Params::new(weights, "vision_model");
    let g = &mut GraphBuilder::new();
    let (c, side, patch) = (cfg.hidden_size, cfg.image_size, cfg.patch_size);
    let tokens = cfg.grid() * cfg.grid() + 1;
    let dims = vec![Dim::Named("batch"), Dim::Fixed(cfg.num_channels as i64), Dim::Fixed(side as i64), Dim::Fixed(side as i64)];
    let pixels = g.input("pixel_values", DType::F32, dims);

    let x = conv(g, &p, "vision_model.embeddings.patch_embedding", pixels, cfg.num_channels, c, patch, patch as i64, 0, false)?;
    let x = to_tokens(g, x, c);
    // A zero row in front of the patches, then one add: row 0 gets the class embedding plus its
    // position embedding, the patches their positions (adding zeros is exact).
    let x = g.pad(x, &[0, 1, 0, 0, 0, 0]);
    let class = p.get(g, "vision_model.embeddings.class_embedding", &[c])?;
    let class = g.unsqueeze(class, &[0]);
    let zeros = g.const_f32(&[tokens - 1, c], vec![0.0; (tokens - 1) * c]);
    let class_row = g.concat(&[class, zeros], 0);
    let pos = p.get(g, "vision_model.embeddings.position_embedding.weight", &[tokens, c])?;
    let embed = g.add(pos, class_row);
    let mut x = g.add(x, embed);

    x = layer_norm(g, &p, "vision_model.pre_layrnorm", x, c, cfg.layer_norm_eps)?;
    let shape = EncoderShape {
        width: c,
        heads: cfg.num_attention_heads,
        intermediate: cfg.intermediate_size,
        act: cfg.hidden_act.clone(),
        eps: cfg.layer_norm_eps,
    };
    for l in 0..cfg.num_hidden_layers {
        x = encoder_layer(g, &p, &format!("vision_model.encoder.layers.{l}"), x, &shape, None)?;
    }
    let cls = g.slice(x, 1, 0, 1);
    let cls = g.reshape_to(cls, &[-1, c as i64]);
    let pooled = layer_norm(g, &p, "vision_model.post_layernorm", cls, c, cfg.layer_norm_eps)?;
    let mut outputs = vec![("last_hidden_state", x), ("pooled", pooled)];
    if let Some(proj) = projection_dim {
        outputs.push(("image_embeds", linear(g, &p, "visual_projection", pooled, c, proj, false)?));
    }
    let g = std::mem::take(g);
    Ok(g.finish(&outputs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_config_takes_transformers_defaults() {
        let cfg: ClipVisionConfig = serde_json::from_str("{}").unwrap();
        assert_eq!((cfg.hidden_size, cfg.num_hidden_layers, cfg.image_size, cfg.patch_size, cfg.grid()), (768, 12, 224, 32, 7));
    }

    #[test]
    fn records_every_weight_of_the_tower_by_transformers_name() {
        let cfg: ClipVisionConfig =
            serde_json::from_str(r#"{"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 12, "patch_size": 4}"#)
                .unwrap();
        let rec = TensorIndex::recording();
        build(&cfg, Some(6), &rec).unwrap();
        let names = rec.recorded();
        let shape = |n: &str| names.iter().find(|(k, _)| k == n).map(|(_, s)| s.clone());
        assert_eq!(shape("vision_model.embeddings.patch_embedding.weight"), Some(vec![8, 3, 4, 4]));
        assert_eq!(shape("vision_model.embeddings.position_embedding.weight"), Some(vec![10, 8]));
        assert_eq!(shape("visual_projection.weight"), Some(vec![6, 8]));
        assert!(shape("vision_model.embeddings.patch_embedding.bias").is_none());
        assert_eq!(names.iter().filter(|(k, _)| k.starts_with("vision_model.encoder.layers.1.")).count(), 16);
    }

    #[test]
    fn an_image_size_that_is_not_a_multiple_of_the_patch_is_refused() {
        let cfg: ClipVisionConfig = serde_json::from_str(r#"{"image_size": 30, "patch_size": 8}"#).unwrap();
        assert!(matches!(build(&cfg, None, &TensorIndex::recording()), Err(EngineError::Unsupported(_))));
    }
}
