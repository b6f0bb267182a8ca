//! Stable Diffusion with 8-/4-bit weights (`LoadOptions::weights`): the UNet's and text
//! encoders' linear layers through `MatMulNBits`, the UNet's convolutions as per-channel int8
//! dequantised as they run, the VAE in f32; and lean text encoders (a session per prompt).
//!
//! Differences against f32 are printed (`cargo test -p plantain-engine --test sd_weights --
//! --nocapture`); the bounds asserted are the measured figures with margin.

mod common;

use std::ops::ControlFlow;

use common::{runtime, tiny};
use plantain_engine::EngineError;
use plantain_engine::pipeline::{GenerateRequest, LoadOptions, LoraSpec, ModelSource, Pipeline, WeightOptions};
use plantain_engine::weights::quant::WeightBits;

fn load(arch: &str, weights: WeightOptions, loras: Vec<LoraSpec>) -> plantain_engine::Result<Pipeline> {
    let opts = LoadOptions { runtime: runtime(), weights, loras, ..Default::default() };
    Pipeline::load(&ModelSource::Diffusers(tiny(arch)), &opts)
}

/// Three Euler steps at 64x64 from a fixed seed, as RGB bytes in [0, 1].
fn draw(p: &Pipeline) -> Vec<f32> {
    let mut r = GenerateRequest::new("a lighthouse at dusk, 35mm photo", 64, 64);
    r.steps = 3;
    r.seed = 11;
    let g = p.generate(&r, &mut |_| ControlFlow::Continue(())).unwrap();
    g.image.as_raw().iter().map(|&b| b as f32 / 255.0).collect()
}

fn psnr(what: &str, got: &[f32], want: &[f32]) -> f32 {
    let mse = got.iter().zip(want).map(|(a, b)| (a - b) * (a - b)).sum::<f32>() / got.len() as f32;
    let p = if mse == 0.0 { f32::INFINITY } else { 10.0 * (1.0 / mse).log10() };
    eprintln!("{what}: PSNR {p:.1} dB");
    p
}

fn with(weights: WeightBits, lean: bool) -> WeightOptions {
    WeightOptions { weights, lean, ..Default::default() }
}

#[test]
fn quantised_weights_draw_close_to_f32_in_every_family() {
    for arch in ["sd1", "sd2", "sdxl"] {
        let want = draw(&load(arch, WeightOptions::default(), vec![]).unwrap());
        let p8 = load(arch, with(WeightBits::Int8, false), vec![]).unwrap();
        assert!(p8.notes().iter().any(|n| n.starts_with("8-bit weights")), "{arch}: {:?}", p8.notes());
        let int8 = draw(&p8);
        assert_ne!(int8, want, "{arch}: int8 weights must change the picture (were they quantised?)");
        let db8 = psnr(&format!("{arch} int8 vs f32"), &int8, &want);
        assert!(db8 > P8_MIN, "{arch}: int8 {db8} dB");
        // Lean changes only which sessions are held, never the numbers.
        let lean = draw(&load(arch, with(WeightBits::Int8, true), vec![]).unwrap());
        assert_eq!(lean, int8, "{arch}: a lean int8 load must draw what int8 draws");
        let db4 = psnr(&format!("{arch} int4 vs f32"), &draw(&load(arch, with(WeightBits::Int4, false), vec![]).unwrap()), &want);
        assert!(db4 > P4_MIN && db4 < db8 + 1.0, "{arch}: int4 {db4} dB, int8 {db8} dB");
    }
}

/// `w8a8` (linear layers' inputs int8 per tensor as they run, convolutions as int8): close to
/// f32 in every family, and not the block-wise int8 picture.
#[test]
fn per_tensor_int8_activations_draw_close_to_f32_in_every_family() {
    for arch in ["sd1", "sd2", "sdxl"] {
        let want = draw(&load(arch, WeightOptions::default(), vec![]).unwrap());
        let p = load(arch, with(WeightBits::W8A8, false), vec![]).unwrap();
        assert!(p.notes().iter().any(|n| n.contains("8 bits per tensor")), "{arch}: {:?}", p.notes());
        let got = draw(&p);
        let db = psnr(&format!("{arch} w8a8 vs f32"), &got, &want);
        assert!(db > PW8A8_MIN, "{arch}: w8a8 {db} dB");
        assert_ne!(got, draw(&load(arch, with(WeightBits::Int8, false), vec![]).unwrap()), "{arch}: another kernel");
    }
}

#[test]
fn w8a8_is_refused_on_cuda_before_anything_loads() {
    let rt = plantain_engine::runtime::RuntimeOptions { cuda: true, ..runtime() };
    let opts = LoadOptions { runtime: rt, weights: with(WeightBits::W8A8, false), ..Default::default() };
    let e = Pipeline::load(&ModelSource::Diffusers(tiny("sd1")), &opts).unwrap_err().to_string();
    assert!(e.contains("CPU only") && e.contains("DynamicQuantizeMatMul"), "{e}");
}

/// Measured on the tiny models: 50.7 / 35.9 / 52.2 dB (sd1, sd2, sdxl; int8: 51.8 / 37.8 /
/// 55.3); bound with margin. Random weights have no outlier channels, which per-tensor
/// activations suffer from.
const PW8A8_MIN: f32 = 31.0;

/// Measured on the tiny models: int8 51.8 / 37.8 / 55.3 dB (sd1, sd2, sdxl), int4 37.7 / 30.8 /
/// 46.1 dB, sd1 + LoRA int8 45.6 dB; bounds with margin.
const P8_MIN: f32 = 33.0;
const P4_MIN: f32 = 25.0;

#[test]
fn lean_f32_text_encoders_draw_exactly_what_loaded_ones_draw() {
    let want = draw(&load("sdxl", WeightOptions::default(), vec![]).unwrap());
    assert_eq!(draw(&load("sdxl", with(WeightBits::F32, true), vec![]).unwrap()), want);
}

#[test]
fn a_lora_on_quantised_weights_still_changes_the_picture() {
    let lora = || vec![LoraSpec { path: tiny("lora").join("sd1-peft.safetensors"), scale: 1.0 }];
    let plain = draw(&load("sd1", with(WeightBits::Int8, false), vec![]).unwrap());
    let adapted = draw(&load("sd1", with(WeightBits::Int8, false), lora()).unwrap());
    let f32_adapted = draw(&load("sd1", WeightOptions::default(), lora()).unwrap());
    assert_ne!(adapted, plain, "the LoRA must still apply to a quantised model");
    assert!(psnr("sd1 + LoRA, int8 vs f32", &adapted, &f32_adapted) > P8_MIN);
}

#[test]
fn a_transformer_file_is_refused_by_stable_diffusion() {
    let opts = WeightOptions { transformer_file: Some(tiny("flux2-klein-single").join("q8_0.gguf")), ..Default::default() };
    match load("sd1", opts, vec![]) {
        Err(EngineError::Unsupported(m)) => assert!(m.contains("FLUX.2 [klein]"), "{m}"),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}
