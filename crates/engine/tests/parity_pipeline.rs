//! Whole pipelines against diffusers: prompt encoding, the denoising loop with each model's
//! scheduler and guidance, and the decoded image (fixtures/ref, made by scripts/make_fixtures.py).

mod common;

use std::ops::ControlFlow;

use common::{Refs, assert_close, runtime, tiny};
use ndarray::ArrayD;
use plantain_engine::pipeline::{
    Conditioning, Decoder, DenoiseInput, DiffEditOptions, InstructInput, LoadOptions, LoraSpec, ModelSource, SdPipeline as Pipeline,
};
use rand::SeedableRng;

const PROMPT: &str = "a red star above a blue circle, 35mm photo";
const TOL: f32 = 1e-4;

fn guidance(arch: &str) -> f32 {
    if arch == "sdxl" { 5.0 } else { 7.5 }
}

fn load(arch: &str) -> Pipeline {
    load_from(&ModelSource::Diffusers(tiny(arch)))
}

fn load_from(source: &ModelSource) -> Pipeline {
    let opts = LoadOptions { runtime: runtime(), ..Default::default() };
    Pipeline::load(source, &opts).unwrap()
}

/// The single-file checkpoint with the folder's configs (the tiny models have no presets).
fn single_file(arch: &str) -> ModelSource {
    ModelSource::SingleFile { file: tiny(&format!("{arch}.safetensors")), config_dir: Some(tiny(arch)) }
}

fn vec_of(a: &ArrayD<f32>) -> Vec<f32> {
    a.iter().copied().collect()
}

fn image_as_tensor(img: &image::RgbImage) -> ArrayD<f32> {
    let (w, h) = img.dimensions();
    ArrayD::from_shape_fn(ndarray::IxDyn(&[1, 3, h as usize, w as usize]), |i| img.get_pixel(i[3] as u32, i[2] as u32)[i[1]] as f32 / 255.0)
}

/// Decoded pixels are rounded to 8 bits, so they match to half a level plus the float error.
fn assert_image_close(what: &str, img: &image::RgbImage, want: &ArrayD<f32>) {
    let got = image_as_tensor(img);
    let d = common::max_abs_diff(what, &got, want);
    eprintln!("{what}: max abs diff {d:.3e} (8-bit)");
    assert!(d <= 0.5 / 255.0 + 1e-4, "{what}: {d}");
}

fn run_t2i(arch: &str, negative: Option<&str>, final_name: &str, image_name: &str) {
    run_t2i_on(&load(arch), arch, negative, final_name, image_name);
}

/// What the reference run fed the loop besides the conditioning.
#[derive(Default)]
struct LoopInputs {
    noise: Vec<f32>,
    init_latents: Option<Vec<f32>>,
    strength: f32,
    mask: Option<Vec<f32>>,
    masked_image_latents: Option<Vec<f32>>,
    instruct: Option<InstructInput>,
}

/// Runs 4 denoising steps with the model's own scheduler on 8x8 latents; returns the latents
/// and the (step, total, timestep) reported after each step.
fn denoise(p: &Pipeline, cond: &Conditioning, guidance: f32, i: LoopInputs) -> (Vec<f32>, Vec<(usize, usize, f32)>) {
    let (scheduler, _, _) = p.scheduler_for(None).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut seen = Vec::new();
    let out = p
        .denoise(
            cond,
            DenoiseInput {
                latent_size: (8, 8),
                steps: 4,
                guidance,
                guidance_rescale: 0.0,
                scheduler,
                noise: i.noise,
                init_latents: i.init_latents,
                strength: i.strength,
                mask: i.mask,
                masked_image_latents: i.masked_image_latents,
                instruct: i.instruct,
                rng: &mut rng,
            },
            &mut |pr| {
                seen.push((pr.step, pr.total, pr.timestep));
                ControlFlow::Continue(())
            },
        )
        .unwrap();
    (out, seen)
}

fn run_t2i_on(p: &Pipeline, arch: &str, negative: Option<&str>, final_name: &str, image_name: &str) {
    let refs = Refs::load(arch);
    let g = guidance(arch);
    let cond = p.encode_prompt(PROMPT, negative, g).unwrap();
    if negative.is_some() {
        let both = ndarray::concatenate(ndarray::Axis(0), &[refs.f("neg_cond").view(), refs.f("cond").view()]).unwrap();
        assert_close(&format!("{arch} conditioning"), &cond.hidden.clone().into_dyn(), &both, TOL);
    }
    let (out, steps_seen) = denoise(p, &cond, g, LoopInputs { noise: vec_of(&refs.f("t2i_latents")), strength: 1.0, ..Default::default() });
    let want_t: Vec<f32> = refs.f("t2i_timesteps").iter().copied().collect();
    assert_eq!(steps_seen.iter().map(|s| s.2).collect::<Vec<_>>(), want_t, "{arch} timesteps");
    assert_eq!(steps_seen.last().map(|s| (s.0, s.1)), Some((4, 4)));
    let out = ArrayD::from_shape_vec(ndarray::IxDyn(&[1, 4, 8, 8]), out).unwrap();
    assert_close(&format!("{arch} t2i final latents"), &out, &refs.f(final_name), TOL);
    let img = p.decode(out.as_slice().unwrap(), (8, 8), Decoder::Full).unwrap();
    assert_image_close(&format!("{arch} t2i image"), &img, &refs.f(image_name));
}

#[test]
fn sd1_txt2img_matches_diffusers() {
    run_t2i("sd1", Some(""), "t2i_final_latents", "t2i_image");
}

#[test]
fn sd2_txt2img_matches_diffusers() {
    run_t2i("sd2", Some(""), "t2i_final_latents", "t2i_image");
}

#[test]
fn sdxl_txt2img_matches_diffusers() {
    run_t2i("sdxl", Some(""), "t2i_final_latents", "t2i_image");
}

#[test]
fn single_file_checkpoints_give_the_same_txt2img_as_diffusers() {
    for arch in ["sd1", "sd2", "sdxl"] {
        run_t2i_on(&load_from(&single_file(arch)), arch, Some(""), "t2i_final_latents", "t2i_image");
    }
}

#[test]
fn sdxl_without_negative_prompt_uses_zero_conditioning_like_diffusers() {
    run_t2i("sdxl", None, "t2i_negnone_final_latents", "t2i_negnone_image");
}

fn run_i2i(arch: &str) {
    let refs = Refs::load(arch);
    let p = load(arch);
    let g = guidance(arch);
    let cond = p.encode_prompt(PROMPT, Some(""), g).unwrap();
    let inputs = LoopInputs {
        noise: vec_of(&refs.f("i2i_noise")),
        init_latents: Some(vec_of(&refs.f("i2i_init_latents"))),
        strength: 0.6,
        ..Default::default()
    };
    let (out, seen) = denoise(&p, &cond, g, inputs);
    let seen: Vec<f32> = seen.iter().map(|s| s.2).collect();
    assert_eq!(seen, refs.f("i2i_timesteps").iter().copied().collect::<Vec<_>>(), "{arch} img2img timesteps");
    let img = p.decode(&out, (8, 8), Decoder::Full).unwrap();
    assert_image_close(&format!("{arch} img2img image"), &img, &refs.f("i2i_image_out"));
}

#[test]
fn sd1_img2img_matches_diffusers() {
    run_i2i("sd1");
}

#[test]
fn sd2_img2img_matches_diffusers() {
    run_i2i("sd2");
}

#[test]
fn sdxl_img2img_matches_diffusers() {
    run_i2i("sdxl");
}

#[test]
fn image_encoding_matches_the_vae_mean_scaled() {
    let refs = Refs::load("sd1");
    let p = load("sd1");
    let t = refs.f("vae_enc_in");
    let img = image::RgbImage::from_fn(64, 64, |x, y| {
        let px = |c: usize| ((t[[0, c, y as usize, x as usize]] + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8;
        image::Rgb([px(0), px(1), px(2)])
    });
    // The 8-bit image differs from the float reference by < 1/255; the encoder is smooth, so a
    // loose bound still catches a wrong scale or shift.
    let got = p.encode_image(&img).unwrap();
    let want: Vec<f32> = refs.f("vae_enc_mean").iter().map(|v| v * 0.18215).collect();
    let d = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(d < 2e-3, "encode_image differs by {d}");
}

#[test]
fn nine_channel_inpainting_matches_diffusers() {
    let refs = Refs::load("sd1-inpaint");
    let p = load("sd1-inpaint");
    assert!(p.is_inpainting_model());
    let cond = p.encode_prompt(PROMPT, Some(""), 7.5).unwrap();
    let inputs = LoopInputs {
        noise: vec_of(&refs.f("inpaint_latents")),
        strength: 1.0,
        mask: Some(vec_of(&refs.f("inpaint_mask_latent"))),
        masked_image_latents: Some(vec_of(&refs.f("inpaint_masked_latents"))),
        ..Default::default()
    };
    let (out, _) = denoise(&p, &cond, 7.5, inputs);
    let out = ArrayD::from_shape_vec(ndarray::IxDyn(&[1, 4, 8, 8]), out).unwrap();
    assert_close("sd1 inpaint final latents", &out, &refs.f("inpaint_final_latents"), TOL);
    let img = p.decode(out.as_slice().unwrap(), (8, 8), Decoder::Full).unwrap();
    assert_image_close("sd1 inpaint image", &img, &refs.f("inpaint_image"));
}

/// A `[1, 3, H, W]` tensor of 8-bit levels in [0, 1] as an RGB image.
fn tensor_as_image(t: &ArrayD<f32>) -> image::RgbImage {
    let (h, w) = (t.shape()[2], t.shape()[3]);
    image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
        image::Rgb(std::array::from_fn(|c| (t[[0, c, y as usize, x as usize]] * 255.0).round() as u8))
    })
}

#[test]
fn instruct_pix2pix_matches_diffusers() {
    let refs = Refs::load("sd1-pix2pix");
    let p = load("sd1-pix2pix");
    assert!(p.is_instruct_model() && !p.is_inpainting_model());
    let image = tensor_as_image(&refs.f("p2p_input"));
    let image_latents = p.encode_image_unscaled(&image).unwrap();
    let want = refs.f("p2p_image_latents");
    assert_close(
        "pix2pix image latents (unscaled mode)",
        &ArrayD::from_shape_vec(want.raw_dim(), image_latents.clone()).unwrap(),
        &want,
        2e-3,
    );
    let cond = p.encode_prompt("turn the star into a green square", Some(""), 7.5).unwrap();
    // Image guidance 1.5 guides by text and picture (three branches); 0.5 turns guidance off,
    // as diffusers does whenever the image scale is below 1.
    for (suffix, image_guidance) in [("", 1.5), ("_ig0", 0.5)] {
        let inputs = LoopInputs {
            noise: vec_of(&refs.f("p2p_latents")),
            strength: 1.0,
            instruct: Some(InstructInput { image_latents: vec_of(&want), image_guidance }),
            ..Default::default()
        };
        let (out, _) = denoise(&p, &cond, 7.5, inputs);
        let out = ArrayD::from_shape_vec(ndarray::IxDyn(&[1, 4, 8, 8]), out).unwrap();
        assert_close(&format!("pix2pix{suffix} final latents"), &out, &refs.f(&format!("p2p{suffix}_final_latents")), TOL);
        let img = p.decode(out.as_slice().unwrap(), (8, 8), Decoder::Full).unwrap();
        assert_image_close(&format!("pix2pix{suffix} image"), &img, &refs.f(&format!("p2p{suffix}_image")));
    }
}

#[test]
fn diffedit_mask_matches_diffusers() {
    let refs = Refs::load("sd1-diffedit");
    let p = load("sd1");
    let opts = DiffEditOptions { maps: 3, encode_strength: 0.5, threshold_ratio: 3.0, steps: 10, guidance: 7.5, seed: 0 };
    let source = p.encode_prompt(PROMPT, Some(""), opts.guidance).unwrap();
    let target = p.encode_prompt("a green square above a blue circle, 35mm photo", Some(""), opts.guidance).unwrap();
    let got = p
        .diffedit_map(&source, &target, &vec_of(&refs.f("diffedit_image_latents")), &vec_of(&refs.f("diffedit_noise")), (8, 8), &opts)
        .unwrap();
    assert_eq!(got.timestep as i64, refs.i("diffedit_timestep")[[0]], "the noise level");
    let map = ArrayD::from_shape_vec(ndarray::IxDyn(&[8, 8]), got.map.clone()).unwrap();
    assert_close("diffedit map", &map, &refs.f("diffedit_map"), TOL);
    let want: Vec<f32> = vec_of(&refs.f("diffedit_mask"));
    assert_eq!(got.mask, want, "the binary mask, cell for cell");
    assert!(got.coverage() > 0.0 && got.coverage() < 1.0, "a mask that is neither empty nor everything");
}

fn load_with_loras(arch: &str, loras: Vec<LoraSpec>) -> plantain_engine::Result<Pipeline> {
    let opts = LoadOptions { runtime: runtime(), loras, ..Default::default() };
    Pipeline::load(&ModelSource::Diffusers(tiny(arch)), &opts)
}

fn lora_file(name: &str) -> std::path::PathBuf {
    tiny(&format!("lora/{name}.safetensors"))
}

/// kohya and diffusers/PEFT LoRA files (attention, feed-forward, a 3x3 resnet conv, the text
/// encoders) against diffusers' `load_lora_weights` + `fuse_lora(lora_scale)`; the run without
/// a LoRA is checked too, so a LoRA that changed nothing could not pass.
#[test]
fn lora_files_match_diffusers() {
    let refs = Refs::load("lora");
    let scale = refs.f("lora_scale")[[0]];
    for (arch, style) in [("sd1", "base"), ("sd1", "kohya"), ("sd1", "peft"), ("sdxl", "base"), ("sdxl", "kohya")] {
        let p = if style == "base" {
            load(arch)
        } else {
            load_with_loras(arch, vec![LoraSpec { path: lora_file(&format!("{arch}-{style}")), scale }]).unwrap()
        };
        let g = guidance(arch);
        let cond = p.encode_prompt(PROMPT, Some(""), g).unwrap();
        assert_close(
            &format!("{arch} {style} conditioning"),
            &cond.hidden.clone().into_dyn(),
            &refs.f(&format!("{arch}_{style}_cond")),
            TOL,
        );
        let noise = vec_of(&refs.f(&format!("{arch}_latents")));
        let (out, _) = denoise(&p, &cond, g, LoopInputs { noise, strength: 1.0, ..Default::default() });
        let out = ArrayD::from_shape_vec(ndarray::IxDyn(&[1, 4, 8, 8]), out).unwrap();
        assert_close(&format!("{arch} {style} final latents"), &out, &refs.f(&format!("{arch}_{style}_final_latents")), TOL);
    }
}

#[test]
fn a_lora_for_another_model_is_refused_naming_its_first_key() {
    let sd1_on_xl = load_with_loras("sdxl", vec![LoraSpec { path: lora_file("sd1-kohya"), scale: 1.0 }]).err().unwrap().to_string();
    assert!(sd1_on_xl.contains("sd1-kohya.safetensors") && sd1_on_xl.contains("does not fit the model"), "{sd1_on_xl}");
    // The first text encoder has SD 1.x's shape in both tiny models; the first key that does not
    // fit, in sorted order, is a UNet one (SDXL's first block has no attention).
    assert!(
        sd1_on_xl.contains("`lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k.alpha`")
            && sd1_on_xl.contains("no weight of the model's UNet has this name"),
        "{sd1_on_xl}"
    );
    let xl_on_sd1 = load_with_loras("sd1", vec![LoraSpec { path: lora_file("sdxl-kohya"), scale: 1.0 }]).err().unwrap().to_string();
    assert!(xl_on_sd1.contains("sdxl-kohya.safetensors") && xl_on_sd1.contains("does not fit"), "{xl_on_sd1}");
    let missing = load_with_loras("sd1", vec![LoraSpec { path: lora_file("nope"), scale: 1.0 }]).err().unwrap().to_string();
    assert!(missing.contains("LoRA file not found"), "{missing}");
    // A checkpoint is not a LoRA: its first tensor is named as such.
    let not_lora = load_with_loras("sd1", vec![LoraSpec { path: tiny("sd1.safetensors"), scale: 1.0 }]).err().unwrap().to_string();
    assert!(not_lora.contains("not a LoRA tensor"), "{not_lora}");
}
