//! Inputs to latents and conditioning: the prompt through the text encoder(s), an image through
//! the VAE encoder. Shared by every task pipeline.

use image::RgbImage;
use ndarray::{Array2, Array3, ArrayD, Axis, IxDyn, concatenate};

use super::{SdPipeline, TextEncoder, images, take};
use crate::error::{EngineError, Result};
use crate::models::vae;
use crate::runtime::{Input, Network};

/// Text conditioning for the UNet: `[B, 77, C]` hidden states, and SDXL's pooled embeddings.
/// With guidance, row 0 is the negative prompt and row 1 the prompt.
#[derive(Clone, Debug)]
pub struct Conditioning {
    pub hidden: Array3<f32>,
    pub pooled: Option<Array2<f32>>,
    pub guided: bool,
    pub warnings: Vec<String>,
}

impl SdPipeline {
    /// Text conditioning for a prompt (and the negative branch when `guidance > 1`).
    pub fn encode_prompt(&self, prompt: &str, negative: Option<&str>, guidance: f32) -> Result<Conditioning> {
        let guided = guidance > 1.0;
        let mut warnings = Vec::new();
        let zero_negative = guided && negative.is_none() && self.force_zeros_for_empty_prompt;
        let mut texts = vec![prompt];
        if guided && !zero_negative {
            texts.insert(0, negative.unwrap_or(""));
        }
        let ids = |enc: &TextEncoder, warnings: &mut Vec<String>| -> Result<ArrayD<i64>> {
            let mut flat = Vec::new();
            for (i, t) in texts.iter().enumerate() {
                let e = enc.tokenizer.encode_for_model(t, enc.seq);
                if e.truncated() {
                    let which = if i + 1 == texts.len() { "prompt" } else { "negative prompt" };
                    warnings.push(format!("{which} is {} tokens; only the first {} are used", e.prompt_tokens, e.kept_tokens));
                }
                flat.extend(e.ids.iter().map(|&v| v as i64));
            }
            ArrayD::from_shape_vec(IxDyn(&[texts.len(), enc.seq]), flat).map_err(|e| EngineError::Runtime(e.to_string()))
        };
        let run = |enc: &TextEncoder, ids: ArrayD<i64>| enc.net.run(vec![("input_ids", Input::I64(ids))]);

        let out1 = run(&self.te1, ids(&self.te1, &mut warnings)?)?;
        let (mut hidden, pooled) = match &self.te2 {
            None => (take(out1, "last_hidden_state")?, None),
            Some(te2) => {
                let mut w2 = Vec::new();
                let out2 = run(te2, ids(te2, &mut w2)?)?;
                let h1 = take(out1, "penultimate")?;
                let mut out2 = out2;
                let pooled = out2.remove("text_embeds").ok_or_else(|| EngineError::Runtime("text encoder 2 gave no text_embeds".into()))?;
                let h2 = take(out2, "penultimate")?;
                let h = concatenate(Axis(2), &[h1.view(), h2.view()]).map_err(|e| EngineError::Runtime(e.to_string()))?;
                (h, Some(pooled))
            }
        };
        let mut pooled = pooled;
        if zero_negative {
            hidden = concatenate(Axis(0), &[ArrayD::zeros(hidden.raw_dim()).view(), hidden.view()])
                .map_err(|e| EngineError::Runtime(e.to_string()))?;
            if let Some(p) = pooled.take() {
                pooled = Some(
                    concatenate(Axis(0), &[ArrayD::zeros(p.raw_dim()).view(), p.view()])
                        .map_err(|e| EngineError::Runtime(e.to_string()))?,
                );
            }
        }
        let hidden = hidden.into_dimensionality().map_err(|e| EngineError::Runtime(e.to_string()))?;
        let pooled = pooled.map(|p| p.into_dimensionality()).transpose().map_err(|e| EngineError::Runtime(e.to_string()))?;
        Ok(Conditioning { hidden, pooled, guided, warnings })
    }

    /// VAE-encodes an image (its size must be a canvas size) to scaled latents, taking the
    /// distribution's mean so that the result depends on the image alone.
    pub fn encode_image(&self, img: &RgbImage) -> Result<Vec<f32>> {
        let (shift, scale) = (self.vae_cfg.shift_factor.unwrap_or(0.0), self.vae_cfg.scaling_factor);
        Ok(self.encode_image_unscaled(img)?.into_iter().map(|v| (v - shift) * scale).collect())
    }

    /// The VAE posterior's mean for an image, neither shifted nor scaled: what InstructPix2Pix
    /// UNets read beside their latents.
    pub fn encode_image_unscaled(&self, img: &RgbImage) -> Result<Vec<f32>> {
        let enc = self.vae_encoder.get(|| {
            Network::new(
                &vae::build_encoder(&self.vae_cfg, &self.vae_weights)?,
                &format!("{}-vae-enc", self.family.short_name()),
                &self.runtime,
            )
            .map(Network::releasing)
        })?;
        let out = enc.run(vec![("sample", Input::F32(images::to_tensor(img).into_dyn()))])?;
        let mean = out.get("mean").ok_or_else(|| EngineError::Runtime("VAE encoder gave no mean".into()))?;
        Ok(mean.iter().copied().collect())
    }
}
