//! FLUX.2 [klein] with 8- and 4-bit weights (`MatMulNBits`), from the diffusers folder
//! quantised at load and from single files in BFL naming (GGUF Q8_0/Q4_0, safetensors) made by
//! `scripts/klein_gguf_fixtures.py` from the tiny fixture's transformer.
//!
//! Differences against f32 are printed (`cargo test -p plantain-engine --test klein_quant --
//! --nocapture`); the bounds asserted are the measured figures with margin.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::{Refs, assert_close, max_abs_diff, runtime, tiny};
use ndarray::{ArrayD, IxDyn};
use plantain_engine::EngineError;
use plantain_engine::models::flux2::{self, Flux2Config};
use plantain_engine::pipeline::WeightOptions;
use plantain_engine::pipeline::klein::KleinPipeline;
use plantain_engine::runtime::{Input, Network};
use plantain_engine::weights::TensorIndex;
use plantain_engine::weights::gguf;
use plantain_engine::weights::quant::{Packer, QuantSpec, WeightBits, scratch_dir};

fn dir() -> PathBuf {
    tiny("flux2-klein")
}

fn single(name: &str) -> PathBuf {
    tiny("flux2-klein-single").join(name)
}

fn packer(w: WeightBits) -> Arc<Packer> {
    Arc::new(Packer::new(&scratch_dir(&runtime().cache_dir), QuantSpec::for_bits(w)).unwrap())
}

fn folder_index(w: WeightBits) -> TensorIndex {
    let idx = TensorIndex::open(&dir().join("transformer/diffusion_pytorch_model.safetensors")).unwrap();
    if w == WeightBits::F32 { idx } else { idx.with_packer(packer(w)) }
}

fn ids(a: &ArrayD<i64>) -> Vec<[i64; 4]> {
    a.as_slice().unwrap().chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]).collect()
}

fn table(v: Vec<f32>, d: usize) -> Input {
    let n = v.len() / d;
    Input::F32(ArrayD::from_shape_vec(IxDyn(&[n, d]), v).unwrap())
}

/// The transformer built from `index`, run on the reference inputs.
fn transformer_out(index: &TensorIndex, label: &str) -> ArrayD<f32> {
    let refs = Refs::load("klein");
    let cfg = Flux2Config::from_file(&dir().join("transformer/config.json")).unwrap();
    let net = Network::new(&flux2::build(&cfg, index).unwrap(), label, &runtime()).unwrap();
    let d = cfg.attention_head_dim;
    let (tc, ts) = flux2::rope_tables(&ids(&refs.i("dit_txt_ids")), &cfg);
    let (ic, is) = flux2::rope_tables(&ids(&refs.i("dit_img_ids")), &cfg);
    let mut out = net
        .run(vec![
            ("hidden_states", Input::F32(refs.f("dit_in_hidden"))),
            ("encoder_hidden_states", Input::F32(refs.f("dit_in_ctx"))),
            ("timestep", Input::F32(refs.f("dit_in_t"))),
            ("txt_cos", table(tc, d)),
            ("txt_sin", table(ts, d)),
            ("img_cos", table(ic, d)),
            ("img_sin", table(is, d)),
        ])
        .unwrap();
    out.remove("sample").unwrap()
}

/// Max abs difference relative to the reference's largest magnitude.
fn relative(what: &str, got: &ArrayD<f32>, want: &ArrayD<f32>) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let r = max_abs_diff(what, got, want) / scale;
    eprintln!("{what}: max abs diff {:.3e} = {r:.4} of the output's largest magnitude {scale:.3}", r * scale);
    r
}

/// PSNR in dB of images in [0, 1].
fn psnr(what: &str, got: &ArrayD<f32>, want: &ArrayD<f32>) -> f32 {
    let mse = got.iter().zip(want.iter()).map(|(a, b)| (a - b) * (a - b)).sum::<f32>() / got.len() as f32;
    let p = 10.0 * (1.0 / mse).log10();
    eprintln!("{what}: max abs {:.4}, PSNR {p:.1} dB", max_abs_diff(what, got, want));
    p
}

#[test]
fn quantised_transformer_stays_near_f32() {
    let want = Refs::load("klein").f("dit_out");
    assert_close("f32 transformer", &transformer_out(&folder_index(WeightBits::F32), "f32"), &want, 1e-4);
    let r8 = relative("int8 transformer vs f32", &transformer_out(&folder_index(WeightBits::Int8), "int8"), &want);
    let r4 = relative("int4 transformer vs f32", &transformer_out(&folder_index(WeightBits::Int4), "int4"), &want);
    assert!(r8 < R8_MAX, "int8: {r8}");
    assert!(r4 < R4_MAX && r4 > r8, "int4: {r4} (int8 {r8})");
    // f32 activations (accuracy level 1) instead of int8 ones.
    let spec = QuantSpec { accuracy_level: 1, ..QuantSpec::for_bits(WeightBits::Int4).unwrap() };
    let idx = folder_index(WeightBits::F32).with_packer(Arc::new(Packer::new(&scratch_dir(&runtime().cache_dir), Some(spec)).unwrap()));
    let r4f = relative("int4 (f32 activations) transformer vs f32", &transformer_out(&idx, "int4-f32"), &want);
    assert!(r4f < R4_MAX, "int4, accuracy level 1: {r4f}");
}

/// Measured on the tiny model: 0.0093 (int8), 0.092 (int4), relative to the output's largest
/// magnitude; bounds with margin.
const R8_MAX: f32 = 0.02;
const R4_MAX: f32 = 0.15;

/// The 4-step text-to-image run from the reference noise, decoded to [0, 1].
fn image(opts: &WeightOptions) -> ArrayD<f32> {
    let refs = Refs::load("klein");
    let p = KleinPipeline::load_with(&dir(), &runtime(), opts).unwrap();
    let context = p.encode_prompt_ids(refs.i("prompt_ids"), refs.i("prompt_mask")).unwrap();
    let latents = p.denoise(&context, &refs.f("t2i_latents"), &[], 4, &mut |_, _| {}).unwrap();
    p.decode(latents).unwrap().mapv(|v| (v / 2.0 + 0.5).clamp(0.0, 1.0))
}

#[test]
fn quantised_pipeline_image_stays_near_f32() {
    let f32_image = image(&WeightOptions::default());
    assert_close("f32 image", &f32_image, &Refs::load("klein").f("t2i_image"), 1e-4);
    let p8 = psnr("int8 image vs f32", &image(&WeightOptions { weights: WeightBits::Int8, ..Default::default() }), &f32_image);
    let p4 = psnr("int4 image vs f32", &image(&WeightOptions { weights: WeightBits::Int4, ..Default::default() }), &f32_image);
    assert!(p8 > P8_MIN && p4 > P4_MIN && p8 > p4, "PSNR int8 {p8} dB, int4 {p4} dB");
}

/// `w8a8`: linear layers int8 per output channel, their inputs int8 per tensor as they run
/// (`DynamicQuantizeMatMul`): closer to f32 than int4, further than block-wise int8.
#[test]
fn per_tensor_int8_activations_stay_near_f32() {
    let want = Refs::load("klein").f("dit_out");
    let r = relative("w8a8 transformer vs f32", &transformer_out(&folder_index(WeightBits::W8A8), "w8a8"), &want);
    assert!(r < RW8A8_MAX, "w8a8: {r}");
    let f32_image = image(&WeightOptions::default());
    let w8a8 = image(&WeightOptions { weights: WeightBits::W8A8, ..Default::default() });
    assert_ne!(w8a8, image(&WeightOptions { weights: WeightBits::Int8, ..Default::default() }), "another kernel than int8's");
    let p = psnr("w8a8 image vs f32", &w8a8, &f32_image);
    assert!(p > PW8A8_MIN, "w8a8 PSNR {p} dB");
}

/// Measured on the tiny model: 0.0107 relative (int8: 0.0093), image 55.0 dB; bounds with
/// margin. Random weights have no outlier channels, which per-tensor activations suffer from.
const RW8A8_MAX: f32 = 0.02;
const PW8A8_MIN: f32 = 50.0;

/// Measured on the tiny model: 55.0 dB (int8), 39.1 dB (int4); bounds with margin.
const P8_MIN: f32 = 50.0;
const P4_MIN: f32 = 35.0;

#[test]
fn gguf_blocks_match_the_same_quantisation_in_graph() {
    for (file, w) in [("q8_0.gguf", WeightBits::Int8), ("q4_0.gguf", WeightBits::Int4)] {
        let from_gguf = transformer_out(&gguf::flux2_transformer(&single(file), packer(w)).unwrap(), file);
        let in_graph = transformer_out(&folder_index(w), "in-graph");
        // Same rounding (ggml's); only the scales' storage differs: f16 in the file, f32 in
        // graph. Q4_0's scale is the largest weight / -8, exact in f16 for the fixture's bf16
        // weights, so Q4_0 must match exactly (which also pins the nibble order); Q8_0's is
        // max|w| / 127, rounded to f16.
        let r = relative(&format!("{file} vs {w:?} quantised in graph"), &from_gguf, &in_graph);
        let bound = if w == WeightBits::Int4 { 1e-6 } else { Q8_GGUF_MAX };
        assert!(r <= bound, "{file}: {r}");
    }
}

/// Measured: 0.0033 of the output's largest magnitude.
const Q8_GGUF_MAX: f32 = 0.01;

#[test]
fn bfl_single_file_matches_the_folder() {
    let index = gguf::flux2_transformer(&single("bfl.safetensors"), packer(WeightBits::F32)).unwrap();
    assert_close("BFL single file", &transformer_out(&index, "bfl"), &Refs::load("klein").f("dit_out"), 1e-4);
}

fn load_error(file: &str) -> EngineError {
    let opts = WeightOptions { transformer_file: Some(single(file)), weights: WeightBits::Int4, ..Default::default() };
    KleinPipeline::load_with(&dir(), &runtime(), &opts).err().expect("must fail")
}

#[test]
fn an_unsupported_gguf_type_names_the_file_and_the_tensor() {
    let e = load_error("q5_k.gguf");
    let msg = e.to_string();
    assert!(matches!(e, EngineError::Unsupported(_)), "{e:?}");
    assert!(msg.contains("q5_k.gguf") && msg.contains("`time_in.in_layer.weight`") && msg.contains("Q5_K"), "{msg}");
}

#[test]
fn a_gguf_missing_a_tensor_names_it_as_the_file_does() {
    let e = load_error("no_linear2.gguf");
    let msg = e.to_string();
    assert!(matches!(e, EngineError::MissingTensor { .. }), "{e:?}");
    assert!(msg.contains("no_linear2.gguf") && msg.contains("`single_blocks.1.linear2.weight`"), "{msg}");
}

#[test]
fn a_gguf_transformer_runs_the_whole_pipeline() {
    let opts = WeightOptions { transformer_file: Some(single("q8_0.gguf")), ..Default::default() };
    let from_gguf = image(&opts);
    let p = psnr("Q8_0 GGUF image vs f32", &from_gguf, &image(&WeightOptions::default()));
    assert!(p > P8_MIN, "{p} dB");
}

#[test]
fn a_lean_pipeline_encodes_the_same_context() {
    let refs = Refs::load("klein");
    let opts = WeightOptions { lean: true, ..Default::default() };
    let p = KleinPipeline::load_with(&dir(), &runtime(), &opts).unwrap();
    for _ in 0..2 {
        let context = p.encode_prompt_ids(refs.i("prompt_ids"), refs.i("prompt_mask")).unwrap();
        assert_close("lean prompt_embeds", &context, &refs.f("prompt_embeds"), 1e-4);
    }
}
