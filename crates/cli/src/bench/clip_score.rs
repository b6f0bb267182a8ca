//! The CLIP adherence scorer at the size of openai/clip-vit-large-patch14 (vision ViT-L/14 at
//! 224x224: 24 layers, 1024 wide; text: 12 layers, 768 wide; projection 768), with random fp32
//! weights (as the real `model.safetensors` stores them) written to a folder: the time and memory
//! are real, the scores are not.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use image::RgbImage;
use plantain_engine::clip_score::{ClipModelConfig, ClipScorer};
use plantain_engine::models::clip::{self, ClipOutputs};
use plantain_engine::models::clip_vision;
use plantain_engine::models::presets::CLIP_VIT_L14;
use plantain_engine::runtime::RuntimeOptions;
use plantain_engine::weights::TensorIndex;

use super::Bench;
use super::checkpoint::{Store, write_random_safetensors_as};

const PROMPT: &str = "a lighthouse at dusk, 35mm photo, golden hour, dramatic sky";

/// A `CLIPModel` folder (config.json + model.safetensors, no tokenizer files: the built-in CLIP
/// vocabulary is used) with random weights, written on first use.
fn random_clip_folder(root: &Path) -> Result<PathBuf> {
    let dir = root.join("clip-vit-large-patch14");
    let weights = dir.join("model.safetensors");
    if weights.exists() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("config.json"), CLIP_VIT_L14)?;
    let cfg = ClipModelConfig::from_file(&dir.join("config.json"))?;
    let rec = TensorIndex::recording();
    clip_vision::build(&cfg.vision, Some(cfg.projection_dim), &rec)?;
    clip::build(&cfg.text, &rec, ClipOutputs { projection: true })?;
    let mut tensors = rec.recorded();
    tensors.push(("logit_scale".into(), vec![]));
    eprintln!("CLIP ViT-L/14: writing random fp32 weights to {}", dir.display());
    let t = Instant::now();
    let bytes = write_random_safetensors_as(&weights, &tensors, 4, Store::F32)?;
    eprintln!("  {:.2} GB in {:.1} s", bytes as f64 / 1e9, t.elapsed().as_secs_f32());
    Ok(dir)
}

/// A picture with some structure (gradients and a disc), `size` pixels square.
fn picture(size: u32) -> RgbImage {
    RgbImage::from_fn(size, size, |x, y| {
        let (fx, fy) = (x as f32 / size as f32, y as f32 / size as f32);
        let disc = (fx - 0.6).powi(2) + (fy - 0.4).powi(2) < 0.06;
        if disc { image::Rgb([230, 25, 50]) } else { image::Rgb([(50.0 + 150.0 * fx) as u8, (80.0 + 100.0 * fy) as u8, 140]) }
    })
}

/// Times one picture's embedding (preprocessing from `size`² included), one prompt's, and a whole
/// score (both towers and the cosine), after loading the scorer.
pub fn clip_score(root: &Path, rt: &RuntimeOptions, b: &mut Bench, size: usize) -> Result<()> {
    let dir = random_clip_folder(root)?;
    let t = Instant::now();
    let scorer = ClipScorer::open(&dir, rt)?;
    eprintln!("CLIP ViT-L/14 scorer (random weights): loaded in {:.1} s", t.elapsed().as_secs_f32());
    let img = picture(size as u32);
    b.measure("clip_preprocess", &format!("CLIP preprocessing ({size}x{size} -> 224x224, Pillow bicubic)"), || {
        scorer.pixel_values(std::slice::from_ref(&img))?;
        Ok(())
    })?;
    b.measure("clip_image_embed", &format!("CLIP ViT-L/14 image embed ({size}x{size} picture, preprocessing included)"), || {
        scorer.embed_images(std::slice::from_ref(&img))?;
        Ok(())
    })?;
    b.measure("clip_text_embed", "CLIP ViT-L/14 text embed (77 tokens)", || {
        scorer.embed_texts(&[PROMPT])?;
        Ok(())
    })?;
    b.measure("clip_score_total", &format!("CLIP score of one {size}x{size} picture and one prompt (both towers + cosine)"), || {
        let s = scorer.score(&img, PROMPT)?;
        anyhow::ensure!(s.is_finite(), "the score is not a number: {s}");
        Ok(())
    })
}
