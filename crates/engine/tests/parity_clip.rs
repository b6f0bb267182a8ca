//! The CLIP adherence scorer against transformers' `CLIPModel` / `CLIPImageProcessor` on the
//! tiny random model of `fixtures/tiny/clip` (references from `scripts/make_fixtures.py --arch clip`).

mod common;

use common::{Refs, assert_close, max_abs_diff, runtime, tiny};
use image::RgbImage;
use ndarray::{ArrayD, Axis, IxDyn};
use plantain_engine::EngineError;
use plantain_engine::clip_score::{ClipScorer, ImageProcessor, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD};
use plantain_engine::models::clip_vision::{self, ClipVisionConfig};
use plantain_engine::runtime::{Input, Network};
use plantain_engine::weights::TensorIndex;

const TOL: f32 = 1e-4;
const IMAGES: usize = 3;
const TEXTS: [&str; 3] = ["a red star above a blue circle", "a lighthouse at dusk, 35mm photo", "blurry, low quality"];

fn scorer() -> ClipScorer {
    ClipScorer::open(&tiny("clip"), &runtime()).unwrap()
}

/// A reference picture stored as int64 `[H, W, 3]`.
fn picture(refs: &Refs, i: usize) -> RgbImage {
    let a = refs.i(&format!("image_{i}"));
    let (h, w) = (a.shape()[0] as u32, a.shape()[1] as u32);
    let bytes = a.iter().map(|&v| u8::try_from(v).expect("8-bit level")).collect();
    RgbImage::from_raw(w, h, bytes).expect("H*W*3 levels")
}

fn pictures(refs: &Refs) -> Vec<RgbImage> {
    (0..IMAGES).map(|i| picture(refs, i)).collect()
}

/// Normalised pixel values back to 8-bit levels.
fn levels(pv: &ArrayD<f32>) -> ArrayD<f32> {
    let mut out = pv.clone();
    for (mut chan, (m, s)) in out.axis_iter_mut(Axis(1)).zip(OPENAI_CLIP_MEAN.iter().zip(OPENAI_CLIP_STD)) {
        chan.mapv_inplace(|v| ((v * s + m) * 255.0).round());
    }
    out
}

#[test]
fn preprocessing_matches_clip_image_processor() {
    let refs = Refs::load("clip");
    let s = scorer();
    let got = s.pixel_values(&pictures(&refs)).unwrap();
    let want = refs.f("pixel_values");
    // The same 8-bit picture after Pillow's resize and the crop: no level differs.
    assert_eq!(max_abs_diff("8-bit levels", &levels(&got), &levels(&want)), 0.0);
    // What is left is the float rounding of rescale + normalise.
    assert_close("pixel_values (PIL backend)", &got, &want, 1e-5);
    assert_close("pixel_values (torchvision backend)", &got, &refs.f("pixel_values_torchvision"), 1e-5);
    assert_eq!(s.processor(), &ImageProcessor::openai(32));
}

#[test]
fn a_plain_bicubic_resize_would_not_match() {
    // Why the resize is Pillow's own: the image crate's Catmull-Rom (the same cubic, computed in
    // floats in the other order) moves levels. Measured here so the README figure stays true.
    let refs = Refs::load("clip");
    let p = ImageProcessor::openai(32);
    let mut worst = 0.0f32;
    for i in 0..IMAGES {
        let img = picture(&refs, i);
        let (w, h) = p.resized_size(img.width(), img.height());
        let float = image::imageops::resize(&img, w, h, image::imageops::FilterType::CatmullRom);
        let exact = plantain_engine::clip_score::pil_bicubic(&img, w, h);
        let d = float.pixels().zip(exact.pixels()).flat_map(|(a, b)| (0..3).map(move |c| (a[c] as f32 - b[c] as f32).abs()));
        worst = worst.max(d.fold(0.0, f32::max));
    }
    eprintln!("image crate Catmull-Rom vs Pillow bicubic: max {worst} levels");
    assert!(worst >= 1.0, "Catmull-Rom happens to match Pillow on the fixture pictures; the README's claim is stale");
}

#[test]
fn vision_tower_matches_transformers() {
    let refs = Refs::load("clip");
    let dir = tiny("clip");
    let cfg_json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let cfg: ClipVisionConfig = serde_json::from_value(cfg_json["vision_config"].clone()).unwrap();
    let idx = TensorIndex::open(&dir.join("model.safetensors")).unwrap();
    let net = Network::new(&clip_vision::build(&cfg, Some(24), &idx).unwrap(), "clip-vision", &runtime()).unwrap();
    let out = net.run(vec![("pixel_values", Input::F32(refs.f("pixel_values")))]).unwrap();
    assert_close("vision last_hidden_state", &out["last_hidden_state"], &refs.f("vision_last_hidden"), TOL);
    assert_close("vision pooled (post_layernorm)", &out["pooled"], &refs.f("vision_pooled"), TOL);
    assert_close("image_embeds (graph)", &out["image_embeds"], &refs.f("image_embeds"), TOL);
}

#[test]
fn image_and_text_embeds_match_transformers() {
    let refs = Refs::load("clip");
    let s = scorer();
    let image = s.embed_pixels(refs.f("pixel_values")).unwrap().into_dyn();
    assert_close("image_embeds", &image, &refs.f("image_embeds"), TOL);
    let ids = refs.i("input_ids");
    let ours: Vec<i64> = TEXTS.iter().flat_map(|t| s.tokenize(t).ids).map(i64::from).collect();
    assert_eq!(ours, ids.iter().copied().collect::<Vec<_>>(), "token ids");
    let text = s.embed_ids(ids).unwrap().into_dyn();
    assert_close("text_embeds", &text, &refs.f("text_embeds"), TOL);
    assert_close("text_embeds (from the texts)", &s.embed_texts(&TEXTS).unwrap().into_dyn(), &refs.f("text_embeds"), TOL);
}

#[test]
fn scores_from_pictures_and_texts_match_transformers() {
    let refs = Refs::load("clip");
    let s = scorer();
    let images = pictures(&refs);
    let cos = s.similarities(&images, &TEXTS).unwrap().into_dyn();
    assert_close("cosine (end to end, our preprocessing)", &cos, &refs.f("cosine"), TOL);
    let scale = s.logit_scale().expect("the fixture has a logit_scale");
    let want_scale = refs.f("logit_scale").iter().next().unwrap().exp();
    assert!((scale - want_scale).abs() < 1e-5, "logit scale {scale} vs {want_scale}");
    assert_close("logits_per_image", &cos.mapv(|c| c * scale), &refs.f("logits_per_image"), TOL);
    // One pair at a time gives the same number as the batch.
    let one = s.score(&images[1], TEXTS[2]).unwrap();
    assert!((one - cos[IxDyn(&[1, 2])]).abs() < 1e-6, "{one} vs {}", cos[IxDyn(&[1, 2])]);
}

#[test]
fn folders_that_are_not_clip_models_are_refused_with_the_reason() {
    let rt = runtime();
    let missing = tiny("no-such-clip");
    assert!(matches!(ClipScorer::open(&missing, &rt), Err(EngineError::MissingFile { .. })));
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(ClipScorer::open(dir.path(), &rt), Err(EngineError::MissingFile { what, .. }) if what.contains("config")));
    std::fs::copy(tiny("clip").join("config.json"), dir.path().join("config.json")).unwrap();
    assert!(matches!(ClipScorer::open(dir.path(), &rt), Err(EngineError::MissingFile { what, .. }) if what.contains("weights")));
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "clip_vision_model", "hidden_size": 32}"#).unwrap();
    let e = ClipScorer::open(dir.path(), &rt).unwrap_err();
    assert!(matches!(e, EngineError::Unsupported(_)), "{e}");
    // The SD text encoder alone is not a scorer: its weights lack the vision tower.
    let sd1 = tiny("sd1").join("text_encoder");
    std::fs::copy(tiny("clip").join("config.json"), dir.path().join("config.json")).unwrap();
    std::fs::copy(sd1.join("model.safetensors"), dir.path().join("model.safetensors")).unwrap();
    let e = ClipScorer::open(dir.path(), &rt).unwrap_err();
    assert!(matches!(e, EngineError::MissingWeight { .. }), "{e}");
}
