//! Training batches drawn from the synthetic world: rendered scenes and their captions, at the
//! aspect-ratio buckets the engine will ask the model to draw.

use candle_core::{Device, Result, Tensor};
use plantain_core::{AspectRatio, native_canvas};
use plantain_tokenizer::ClipTokenizer;
use plantain_world::{Caption, Scene, Shape, Split, caption_detailed, is_held_out, render, sample_scene};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::config::NanoConfig;
use crate::parse::ParseTarget;

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
/// probability `drop_caption`, which is what classifier-free guidance needs. Each scene is drawn
/// from the single-object ones with probability `single_object_share` (no extra draws at 0, so
/// the recipe's batches replay as before).
pub fn batch(
    tokenizer: &ClipTokenizer,
    n: usize,
    (width, height): (u32, u32),
    drop_caption: f64,
    single_object_share: f64,
    max_len: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Batch> {
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        let single = single_object_share > 0.0 && rng.random_bool(single_object_share.min(1.0));
        let mut scene = sample_scene(rng, Split::Train);
        while single && scene.objects.len() != 1 {
            scene = sample_scene(rng, Split::Train);
        }
        let caption = if rng.random_bool(drop_caption) { None } else { Some(caption_detailed(&scene, rng)) };
        items.push((scene, caption));
    }
    assemble(tokenizer, items, (width, height), max_len)
}

/// Like [`batch`], but made of `n / 2` twin pairs (items 2i and 2i + 1): a scene, then the same
/// scene with one object's shape changed ([`shape_twin`]), captioned in the same words but for
/// the shape (both dropped, or neither).
pub fn twin_batch(
    tokenizer: &ClipTokenizer,
    n: usize,
    (width, height): (u32, u32),
    drop_caption: f64,
    max_len: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Batch> {
    let mut items = Vec::with_capacity(n);
    for _ in 0..n / 2 {
        let scene = sample_scene(rng, Split::Train);
        let twin = shape_twin(&scene, rng);
        if rng.random_bool(drop_caption) {
            items.push((scene, None));
            items.push((twin, None));
        } else {
            // The same draws word for word: only the shape's word differs.
            let mut twin_rng = rng.clone();
            let caption = caption_detailed(&scene, rng);
            let twin_caption = caption_detailed(&twin, &mut twin_rng);
            items.push((scene, Some(caption)));
            items.push((twin, Some(twin_caption)));
        }
    }
    assemble(tokenizer, items, (width, height), max_len)
}

/// The scene with one of its objects given another shape, never making a held-out combination
/// (the scene itself where no other shape is allowed).
pub fn shape_twin(scene: &Scene, rng: &mut ChaCha8Rng) -> Scene {
    for _ in 0..64 {
        let j = rng.random_range(0..scene.objects.len());
        let shape = Shape::ALL[rng.random_range(0..Shape::ALL.len())];
        if shape == scene.objects[j].shape {
            continue;
        }
        let mut twin = scene.clone();
        twin.objects[j].shape = shape;
        if !is_held_out(&twin) {
            return twin;
        }
    }
    scene.clone()
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

/// One `cw`x`ch` crop per picture, placed so that a pixel picked at random from the picture's
/// object mask lies inside it at least a quarter of the crop from its left/top edge (so the
/// object is mostly in view), corners on multiples of `f`. Pictures without objects get a random
/// crop.
pub fn object_crops(images: &Tensor, masks: &Tensor, (cw, ch): (u32, u32), f: u32, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    let (n, _, h, w) = images.dims4()?;
    let (cw, ch) = (cw as usize, ch as usize);
    let f = f.max(1) as usize;
    let mask: Vec<f32> = masks.flatten_all()?.to_vec1()?;
    let mut crops = Vec::with_capacity(n);
    for i in 0..n {
        let m = &mask[i * h * w..(i + 1) * h * w];
        let on: Vec<usize> = m.iter().enumerate().filter(|(_, v)| **v > 0.5).map(|(k, _)| k).collect();
        // Where the crop's corner may go: its last multiple of f still inside the picture.
        let (max_x, max_y) = ((w - cw) / f * f, (h - ch) / f * f);
        let (x0, y0) = if on.is_empty() {
            (rng.random_range(0..=max_x / f) * f, rng.random_range(0..=max_y / f) * f)
        } else {
            let k = on[rng.random_range(0..on.len())];
            let (ax, ay) = (k % w, k / w);
            let place = |a: usize, side: usize, max: usize, rng: &mut ChaCha8Rng| {
                let offset = rng.random_range(side / 4..=side - 1 - side / 4);
                (a.saturating_sub(offset).min(max) / f) * f
            };
            (place(ax, cw, max_x, rng), place(ay, ch, max_y, rng))
        };
        crops.push(images.narrow(0, i, 1)?.narrow(3, x0, cw)?.narrow(2, y0, ch)?);
    }
    Tensor::cat(&crops, 0)?.contiguous()
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
    fn twins_differ_in_one_shape_and_its_word_only() {
        let tok = ClipTokenizer::embedded_default();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let b = twin_batch(&tok, 24, (64, 64), 0.0, 77, &mut rng).unwrap();
        assert_eq!(b.scenes.len(), 24);
        let mut same_wording = 0;
        for pair in 0..12 {
            let (a, t) = (&b.scenes[2 * pair], &b.scenes[2 * pair + 1]);
            assert_eq!(a.objects.len(), t.objects.len());
            let changed: Vec<usize> = (0..a.objects.len()).filter(|&j| a.objects[j] != t.objects[j]).collect();
            assert_eq!(changed.len(), 1, "pair {pair}: one object changes");
            let j = changed[0];
            assert_ne!(a.objects[j].shape, t.objects[j].shape);
            assert_eq!(plantain_world::Object { shape: a.objects[j].shape, ..t.objects[j] }, a.objects[j], "only the shape");
            assert_eq!((a.background, &a.relations), (t.background, &t.relations));
            assert!(!is_held_out(t), "pair {pair}: the twin is a training scene");
            let (ca, ct) = (&b.captions[2 * pair], &b.captions[2 * pair + 1]);
            assert!(!ca.is_empty() && ca != ct, "pair {pair}: {ca} / {ct}");
            if ca.split(' ').count() == ct.split(' ').count() {
                same_wording += 1;
            }
        }
        assert!(same_wording >= 6, "most twin captions keep the wording: {same_wording}/12");
        // Dropped captions are dropped for both twins.
        let b = twin_batch(&tok, 4, (64, 64), 1.0, 77, &mut rng).unwrap();
        assert!(b.captions.iter().all(String::is_empty));
    }

    #[test]
    fn a_single_object_share_draws_single_object_scenes_and_zero_replays_the_mix() {
        let tok = ClipTokenizer::embedded_default();
        let singles = |share: f64| {
            let b = batch(&tok, 32, (64, 64), 0.0, share, 77, &mut ChaCha8Rng::seed_from_u64(4)).unwrap();
            (b.scenes.iter().filter(|s| s.objects.len() == 1).count(), b.captions)
        };
        let (all, _) = singles(1.0);
        assert_eq!(all, 32);
        let (mixed, captions) = singles(0.0);
        assert!(mixed < 24, "the world's own mix: {mixed}/32 single-object scenes");
        // At 0 the batch is exactly what it was before the option existed: no extra draws.
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let plain: Vec<String> = (0..32)
            .map(|_| {
                let scene = sample_scene(&mut rng, Split::Train);
                let _ = rng.random_bool(0.0);
                caption_detailed(&scene, &mut rng).text
            })
            .collect();
        assert_eq!(captions, plain);
    }

    #[test]
    fn object_masks_cover_the_objects_and_nothing_else() {
        let tok = ClipTokenizer::embedded_default();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let b = batch(&tok, 6, (64, 64), 0.0, 0.0, 77, &mut rng).unwrap();
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

    #[test]
    fn object_crops_keep_objects_in_view() {
        let tok = ClipTokenizer::embedded_default();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let b = batch(&tok, 16, (64, 64), 0.0, 0.0, 77, &mut rng).unwrap();
        let crops = object_crops(&b.images, &b.object_masks, (32, 32), 4, &mut rng).unwrap();
        assert_eq!(crops.dims(), &[16, 3, 32, 32]);
        // Every crop shows a real piece of the picture, and object pixels: with masks cropped
        // the same way (same rng state) every crop holds some, where random quarters of these
        // pictures often hold none.
        let mut rng_a = ChaCha8Rng::seed_from_u64(9);
        let mut rng_b = ChaCha8Rng::seed_from_u64(9);
        let img_crops = object_crops(&b.images, &b.object_masks, (32, 32), 4, &mut rng_a).unwrap();
        let mask_crops = object_crops(&b.object_masks, &b.object_masks, (32, 32), 4, &mut rng_b).unwrap();
        let m: Vec<f32> = mask_crops.flatten_all().unwrap().to_vec1().unwrap();
        for (i, c) in m.chunks(32 * 32).enumerate() {
            let share = c.iter().sum::<f32>() / (32.0 * 32.0);
            assert!(share > 0.02, "crop {i} shows only {share} object");
        }
        // The image crop is the picture at the same place: find it.
        let px: Vec<f32> = b.images.flatten_all().unwrap().to_vec1().unwrap();
        let cp: Vec<f32> = img_crops.flatten_all().unwrap().to_vec1().unwrap();
        for i in 0..16 {
            let found = (0..=32).step_by(4).any(|y0| {
                (0..=32).step_by(4).any(|x0| {
                    (0..3).all(|c| {
                        (0..32).all(|y| {
                            (0..32).all(|x| cp[i * 3072 + c * 1024 + y * 32 + x] == px[i * 3 * 4096 + c * 4096 + (y0 + y) * 64 + x0 + x])
                        })
                    })
                })
            });
            assert!(found, "crop {i} is not an aligned window of its picture");
        }
    }
}
