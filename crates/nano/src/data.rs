//! Training batches drawn from the synthetic world: rendered scenes and their captions, at the
//! aspect-ratio buckets the engine will ask the model to draw.

use candle_core::{Device, Result, Tensor};
use plantain_core::{AspectRatio, native_canvas};
use plantain_tokenizer::ClipTokenizer;
use plantain_world::{Scene, Split, caption, render, sample_scene};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::config::NanoConfig;

/// The canvases (width, height) the engine draws at for every aspect ratio of the API table:
/// sides multiples of the model's pixel multiple, area near the native square.
pub fn buckets(cfg: &NanoConfig) -> Vec<(u32, u32)> {
    let native = cfg.native_resolution() as u32;
    let mut out: Vec<(u32, u32)> = Vec::new();
    for ratio in AspectRatio::ALL {
        let c = native_canvas(ratio, native * native, cfg.pixel_multiple() as u32);
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// Half the batches are square (most requests are), the rest spread over the other shapes.
pub fn pick_bucket(buckets: &[(u32, u32)], native: u32, rng: &mut ChaCha8Rng) -> (u32, u32) {
    if rng.random_bool(0.5) {
        return (native, native);
    }
    buckets[rng.random_range(0..buckets.len())]
}

pub struct Batch {
    /// Pixels in [-1, 1], `[B, 3, H, W]`.
    pub images: Tensor,
    /// Token ids `[B, 77]` (u32).
    pub ids: Tensor,
    pub scenes: Vec<Scene>,
    pub captions: Vec<String>,
}

/// `n` training scenes at `width`x`height`; each caption is dropped (replaced by "") with
/// probability `drop_caption`, which is what classifier-free guidance needs.
pub fn batch(
    tokenizer: &ClipTokenizer,
    n: usize,
    (width, height): (u32, u32),
    drop_caption: f64,
    max_len: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Batch> {
    let mut pixels = Vec::with_capacity(n * 3 * (width * height) as usize);
    let mut ids = Vec::with_capacity(n * max_len);
    let mut scenes = Vec::with_capacity(n);
    let mut captions = Vec::with_capacity(n);
    for _ in 0..n {
        let scene = sample_scene(rng, Split::Train);
        let text = if rng.random_bool(drop_caption) { String::new() } else { caption(&scene, rng) };
        let img = render(&scene, width, height);
        for c in 0..3 {
            pixels.extend(img.pixels().map(|p| p.0[c] as f32 / 127.5 - 1.0));
        }
        ids.extend(tokenizer.encode_padded(&text, max_len));
        scenes.push(scene);
        captions.push(text);
    }
    let images = Tensor::from_vec(pixels, (n, 3, height as usize, width as usize), &Device::Cpu)?;
    let ids = Tensor::from_vec(ids, (n, max_len), &Device::Cpu)?;
    Ok(Batch { images, ids, scenes, captions })
}

/// Standard normal noise from a seeded generator (the trainer must be reproducible).
pub fn gaussian(shape: &[usize], rng: &mut ChaCha8Rng) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let normal = rand_distr::StandardNormal;
    let v: Vec<f32> = (0..n).map(|_| rng.sample::<f32, _>(normal)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
}
