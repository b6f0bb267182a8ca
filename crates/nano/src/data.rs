//! Training batches drawn from the synthetic world: rendered scenes and their captions, at the
//! aspect-ratio buckets the engine will ask the model to draw.

use candle_core::{Device, Result, Tensor};
use plantain_core::{AspectRatio, native_canvas};
use plantain_tokenizer::ClipTokenizer;
use plantain_world::{Caption, Scene, Split, caption_detailed, render, sample_scene};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::config::NanoConfig;
use crate::parse::ParseTarget;

/// The training canvases (width, height), one per aspect ratio of the API table
/// ([`native_canvas`]: the ratio kept within 3%, area near the native square, sides multiples of
/// the model's pixel multiple). The engine draws at `plantain_core::canvas_for` of the output
/// size, which favours the area and differs from these for some ratios (issue 21's notes).
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
    /// 1 where an object covers the pixel, else 0, `[B, 1, H, W]` (the scene rendered without
    /// its objects differs there).
    pub object_masks: Tensor,
    pub scenes: Vec<Scene>,
    pub captions: Vec<String>,
    /// Each caption's end-of-text position in `ids`.
    pub eos: Vec<usize>,
    /// What each caption states, for the parse loss (None where the caption was dropped).
    pub targets: Vec<Option<ParseTarget>>,
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
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        let scene = sample_scene(rng, Split::Train);
        let caption = if rng.random_bool(drop_caption) { None } else { Some(caption_detailed(&scene, rng)) };
        items.push((scene, caption));
    }
    assemble(tokenizer, items, (width, height), max_len)
}

/// A scene as the trainer sees it at `width`x`height`: planar RGB pixels in [-1, 1], and its
/// object mask (1 where the scene rendered without its objects differs, else 0).
pub fn render_for_training(scene: &Scene, width: u32, height: u32) -> (Vec<f32>, Vec<f32>) {
    let img = render(scene, width, height);
    let mut pixels = Vec::with_capacity(3 * (width * height) as usize);
    for c in 0..3 {
        pixels.extend(img.pixels().map(|p| p.0[c] as f32 / 127.5 - 1.0));
    }
    let bare = render(&Scene { objects: Vec::new(), relations: Vec::new(), ..scene.clone() }, width, height);
    let mask = img
        .pixels()
        .zip(bare.pixels())
        .map(|(a, b)| if a.0.iter().zip(b.0.iter()).any(|(x, y)| x.abs_diff(*y) > 8) { 1f32 } else { 0f32 })
        .collect();
    (pixels, mask)
}

/// Renders and tokenizes scenes with their captions (None: dropped, the empty caption).
fn assemble(tokenizer: &ClipTokenizer, items: Vec<(Scene, Option<Caption>)>, (width, height): (u32, u32), max_len: usize) -> Result<Batch> {
    let n = items.len();
    let mut pixels = Vec::with_capacity(n * 3 * (width * height) as usize);
    let mut ids = Vec::with_capacity(n * max_len);
    let mut scenes = Vec::with_capacity(n);
    let mut captions = Vec::with_capacity(n);
    let mut masks = Vec::with_capacity(n * (width * height) as usize);
    let mut eos = Vec::with_capacity(n);
    let mut targets = Vec::with_capacity(n);
    for (scene, caption) in items {
        let (text, target) = match caption {
            None => (String::new(), None),
            Some(c) => {
                let target = ParseTarget::new(&scene, &c.stated);
                (c.text, Some(target))
            }
        };
        let (px, mask) = render_for_training(&scene, width, height);
        pixels.extend(px);
        masks.extend(mask);
        let encoded = tokenizer.encode_for_model(&text, max_len);
        ids.extend(encoded.ids);
        eos.push(encoded.kept_tokens - 1);
        targets.push(target);
        scenes.push(scene);
        captions.push(text);
    }
    let images = Tensor::from_vec(pixels, (n, 3, height as usize, width as usize), &Device::Cpu)?;
    let ids = Tensor::from_vec(ids, (n, max_len), &Device::Cpu)?;
    let object_masks = Tensor::from_vec(masks, (n, 1, height as usize, width as usize), &Device::Cpu)?;
    Ok(Batch { images, ids, object_masks, scenes, captions, eos, targets })
}

/// Captions alone, for teaching the text encoder to parse: token ids `[n, L]` cut to the
/// longest caption (the encoder is causal, so later padding cannot change these states),
/// end-of-text positions and targets.
pub fn caption_batch(
    tokenizer: &ClipTokenizer,
    n: usize,
    max_len: usize,
    rng: &mut ChaCha8Rng,
) -> Result<(Tensor, Vec<usize>, Vec<ParseTarget>)> {
    let mut rows = Vec::with_capacity(n);
    let mut targets = Vec::with_capacity(n);
    for _ in 0..n {
        let scene = sample_scene(rng, Split::Train);
        let c = caption_detailed(&scene, rng);
        targets.push(ParseTarget::new(&scene, &c.stated));
        rows.push(tokenizer.encode_for_model(&c.text, max_len));
    }
    let len = rows.iter().map(|r| r.kept_tokens).max().unwrap_or(2);
    let ids: Vec<u32> = rows.iter().flat_map(|r| r.ids[..len].iter().copied()).collect();
    let eos = rows.iter().map(|r| r.kept_tokens - 1).collect();
    Ok((Tensor::from_vec(ids, (n, len), &Device::Cpu)?, eos, targets))
}

/// Standard normal noise from a seeded generator (the trainer must be reproducible).
pub fn gaussian(shape: &[usize], rng: &mut ChaCha8Rng) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let normal = rand_distr::StandardNormal;
    let v: Vec<f32> = (0..n).map(|_| rng.sample::<f32, _>(normal)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
}

/// Per-pixel loss weights `[B, 1, H, W]` for the autoencoder: 1 on flat areas, up to
/// `1 + gain` on and next to edges. Backgrounds fill most of every picture, so with a plain
/// mean the autoencoder learns them first and small objects (the very thing the captions talk
/// about) stay blurred blobs for thousands of steps.
pub fn edge_weights(images: &Tensor, gain: f32) -> Result<Tensor> {
    let (b, c, h, w) = images.dims4()?;
    let px: Vec<f32> = images.flatten_all()?.to_vec1()?;
    let mut out = Vec::with_capacity(b * h * w);
    for img in px.chunks(c * h * w) {
        // The largest change to the right or below, over channels (pixels span [-1, 1]).
        let mut edge = vec![0f32; h * w];
        for ch in img.chunks(h * w) {
            for y in 0..h {
                for x in 0..w {
                    let v = ch[y * w + x];
                    let mut e = 0f32;
                    if x + 1 < w {
                        e = e.max((v - ch[y * w + x + 1]).abs());
                    }
                    if y + 1 < h {
                        e = e.max((v - ch[(y + 1) * w + x]).abs());
                    }
                    edge[y * w + x] = edge[y * w + x].max(e);
                }
            }
        }
        // Dilated by one pixel, so both sides of an edge count.
        for y in 0..h {
            for x in 0..w {
                let mut m = 0f32;
                for yy in y.saturating_sub(1)..(y + 2).min(h) {
                    for xx in x.saturating_sub(1)..(x + 2).min(w) {
                        m = m.max(edge[yy * w + xx]);
                    }
                }
                out.push(1.0 + gain * m.min(1.0));
            }
        }
    }
    Tensor::from_vec(out, (b, 1, h, w), &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_weights_are_one_on_flat_areas_and_high_at_edges() {
        // One 6x6 picture: left half black, right half white.
        let px: Vec<f32> = (0..3).flat_map(|_| (0..36).map(|i| if i % 6 < 3 { -1.0 } else { 1.0 })).collect();
        let img = Tensor::from_vec(px, (1, 3, 6, 6), &Device::Cpu).unwrap();
        let w: Vec<f32> = edge_weights(&img, 8.0).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        for y in 0..6 {
            assert_eq!(&w[y * 6..y * 6 + 6], &[1.0, 9.0, 9.0, 9.0, 1.0, 1.0], "row {y}");
        }
    }
}

#[cfg(test)]
mod mask_tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn object_masks_cover_the_objects_and_nothing_else() {
        let tok = ClipTokenizer::embedded_default();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let b = batch(&tok, 6, (64, 64), 0.0, 77, &mut rng).unwrap();
        let masks: Vec<f32> = b.object_masks.flatten_all().unwrap().to_vec1().unwrap();
        let px: Vec<f32> = b.images.flatten_all().unwrap().to_vec1().unwrap();
        for (i, scene) in b.scenes.iter().enumerate() {
            let m = &masks[i * 4096..(i + 1) * 4096];
            let share = m.iter().sum::<f32>() / 4096.0;
            assert!(share > 0.003 && share < 0.6, "scene {i}: object share {share}");
            // Off the mask the picture is the bare background.
            let bare = render(&Scene { objects: Vec::new(), relations: Vec::new(), ..scene.clone() }, 64, 64);
            for (k, p) in bare.pixels().enumerate() {
                if m[k] == 0.0 {
                    for c in 0..3 {
                        let v = px[i * 3 * 4096 + c * 4096 + k];
                        assert!((v - (p.0[c] as f32 / 127.5 - 1.0)).abs() <= 8.0 / 127.5 + 1e-6);
                    }
                }
            }
        }
    }
}
