//! FLUX.2 [klein]'s prompt tokenisation: the prompt as one user message in Qwen3's chat template
//! with thinking disabled, tokenised by the model's own `tokenizer/tokenizer.json` (Hugging Face
//! `tokenizers`), truncated and padded to the spec's length with the tokenizer's pad token.

use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use serde_json::Value as Json;
use tokenizers::Tokenizer;

use crate::error::{EngineError, Result};
use crate::models::presets::FLUX2_KLEIN;

/// What Qwen3's chat template renders for `[{"role": "user", "content": prompt}]` with
/// `add_generation_prompt=True, enable_thinking=False`.
pub fn chat_prompt(prompt: &str) -> String {
    format!("<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")
}

/// The tokenizer of a klein folder.
pub struct KleinTokenizer {
    inner: Tokenizer,
    pad_id: u32,
    pad_left: bool,
}

impl KleinTokenizer {
    /// Reads `tokenizer.json` and, when present, the pad token and padding side of
    /// `tokenizer_config.json` (Qwen3's pad token `<|endoftext|>`, right padding by default).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let file = dir.join("tokenizer.json");
        if !file.is_file() {
            return Err(EngineError::MissingFile { what: "klein tokenizer".into(), looked_for: vec![file] });
        }
        let inner = Tokenizer::from_file(&file).map_err(|e| EngineError::Tokenizer(format!("{}: {e}", file.display())))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: Json = match std::fs::read_to_string(&cfg_path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| EngineError::bad_config(&cfg_path, e))?,
            Err(_) => Json::Null,
        };
        let pad = match cfg.get("pad_token") {
            Some(Json::String(s)) => s.clone(),
            Some(Json::Object(o)) => o.get("content").and_then(Json::as_str).unwrap_or("<|endoftext|>").to_string(),
            _ => "<|endoftext|>".to_string(),
        };
        let pad_id = inner
            .token_to_id(&pad)
            .ok_or_else(|| EngineError::Tokenizer(format!("{}: pad token `{pad}` is not in the vocabulary", file.display())))?;
        let pad_left = cfg.get("padding_side").and_then(Json::as_str) == Some("left");
        Ok(Self { inner, pad_id, pad_left })
    }

    /// `input_ids` and `attention_mask`, each `[1, text_len]` int64.
    pub fn encode(&self, prompt: &str) -> Result<(ArrayD<i64>, ArrayD<i64>)> {
        let len = FLUX2_KLEIN.text_len;
        let enc = self.inner.encode(chat_prompt(prompt), true).map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        let mut ids: Vec<i64> = enc.get_ids().iter().take(len).map(|&i| i as i64).collect();
        let real = ids.len();
        let pad = std::iter::repeat_n(self.pad_id as i64, len - real);
        let mut mask = vec![1i64; real];
        if self.pad_left {
            ids = pad.chain(ids).collect();
            mask = std::iter::repeat_n(0, len - real).chain(mask).collect();
        } else {
            ids.extend(pad);
            mask.resize(len, 0);
        }
        let shape = IxDyn(&[1, len]);
        let bad = |e: ndarray::ShapeError| EngineError::Tokenizer(e.to_string());
        Ok((ArrayD::from_shape_vec(shape.clone(), ids).map_err(bad)?, ArrayD::from_shape_vec(shape, mask).map_err(bad)?))
    }
}
