//! FLUX.2 [klein]: each network, the 4-step text-to-image run and edits with one and two
//! references against diffusers on the tiny random model (fixtures/tiny/flux2-klein,
//! fixtures/ref/klein.safetensors).

mod common;

use std::path::Path;

use common::{Refs, assert_close, runtime, tiny};
use ndarray::{ArrayD, IxDyn};
use plantain_engine::EngineError;
use plantain_engine::models::flux2::{self, Flux2Config};
use plantain_engine::models::qwen3::{self, Qwen3Config};
use plantain_engine::models::vae::{self, VaeConfig};
use plantain_engine::pipeline::klein::KleinPipeline;
use plantain_engine::runtime::{Input, Network};
use plantain_engine::weights::TensorIndex;

const TOL: f32 = 1e-4;

fn dir() -> std::path::PathBuf {
    tiny("flux2-klein")
}

fn index(sub: &str, file: &str) -> TensorIndex {
    TensorIndex::open(&dir().join(sub).join(file)).unwrap()
}

#[test]
fn klein_text_encoder_matches_transformers() {
    let refs = Refs::load("klein");
    let cfg = Qwen3Config::from_file(&dir().join("text_encoder/config.json")).unwrap();
    let idx = index("text_encoder", "model.safetensors");
    let graph = qwen3::build(&cfg, &idx, 512, &[9, 18, 27]).unwrap();
    let net = Network::new(&graph, "klein-te", &runtime()).unwrap();
    let out =
        net.run(vec![("input_ids", Input::I64(refs.i("prompt_ids"))), ("attention_mask", Input::I64(refs.i("prompt_mask")))]).unwrap();
    assert_close("klein prompt_embeds", &out["hidden"], &refs.f("prompt_embeds"), TOL);
}

fn ids(a: &ArrayD<i64>) -> Vec<[i64; 4]> {
    a.as_slice().unwrap().chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]).collect()
}

fn table(v: Vec<f32>, d: usize) -> Input {
    let n = v.len() / d;
    Input::F32(ArrayD::from_shape_vec(IxDyn(&[n, d]), v).unwrap())
}

#[test]
fn klein_transformer_matches_diffusers() {
    let refs = Refs::load("klein");
    let cfg = Flux2Config::from_file(&dir().join("transformer/config.json")).unwrap();
    let idx = index("transformer", "diffusion_pytorch_model.safetensors");
    let net = Network::new(&flux2::build(&cfg, &idx).unwrap(), "klein-dit", &runtime()).unwrap();
    let d = cfg.attention_head_dim;
    let (tc, ts) = flux2::rope_tables(&ids(&refs.i("dit_txt_ids")), &cfg);
    let (ic, is) = flux2::rope_tables(&ids(&refs.i("dit_img_ids")), &cfg);
    let out = net
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
    assert_close("klein transformer", &out["sample"], &refs.f("dit_out"), TOL);
}

#[test]
fn klein_vae_matches_diffusers() {
    let refs = Refs::load("klein");
    let cfg = VaeConfig::from_file(&dir().join("vae/config.json")).unwrap();
    let idx = index("vae", "diffusion_pytorch_model.safetensors");
    let rt = runtime();
    let enc = Network::new(&vae::build_encoder(&cfg, &idx).unwrap(), "klein-vae-enc", &rt).unwrap();
    let out = enc.run(vec![("sample", Input::F32(refs.f("vae_enc_in")))]).unwrap();
    assert_close("klein vae mean", &out["mean"], &refs.f("vae_enc_mean"), TOL);
    assert_close("klein vae logvar", &out["logvar"], &refs.f("vae_enc_logvar"), TOL);
    let dec = Network::new(&vae::build_decoder(&cfg, &idx).unwrap(), "klein-vae-dec", &rt).unwrap();
    let out = dec.run(vec![("latent", Input::F32(refs.f("vae_dec_in")))]).unwrap();
    assert_close("klein vae decode", &out["sample"], &refs.f("vae_dec_out"), TOL);
    // Patchified and normalised, then packed row-major into tokens as the pipeline does.
    let enc = Network::new(&vae::build_flux2_encoder(&cfg, &idx).unwrap(), "klein-vae-enc2", &rt).unwrap();
    let lat = enc.run(vec![("sample", Input::F32(refs.f("vae_enc_in")))]).unwrap().remove("latent").unwrap();
    let (c, h, w) = (lat.shape()[1], lat.shape()[2], lat.shape()[3]);
    let tokens = lat.into_shape_with_order(IxDyn(&[1, c, h * w])).unwrap().permuted_axes(IxDyn(&[0, 2, 1])).as_standard_layout().to_owned();
    assert_close("klein vae reference tokens", &tokens, &refs.f("vae_enc_tokens"), TOL);
}

fn pipeline() -> KleinPipeline {
    KleinPipeline::load(&dir(), &runtime()).unwrap()
}

/// 8-bit levels `[H, W, 3]` → `[1, 3, H, W]` in [-1, 1] (the image processor's `x / 127.5 - 1`,
/// checked by the fixture script).
fn picture(levels: &ArrayD<i64>) -> ArrayD<f32> {
    let (h, w) = (levels.shape()[0], levels.shape()[1]);
    ArrayD::from_shape_fn(IxDyn(&[1, 3, h, w]), |i| levels[[i[2], i[3], i[1]]] as f32 / 127.5 - 1.0)
}

/// Runs the whole pipeline from the prompt ids; compares the final latents and the image.
fn check_run(name: &str, refs_names: &[&str]) {
    let refs = Refs::load("klein");
    let p = pipeline();
    let context = p.encode_prompt_ids(refs.i("prompt_ids"), refs.i("prompt_mask")).unwrap();
    let references: Vec<ArrayD<f32>> = refs_names.iter().map(|n| p.encode_reference(picture(&refs.i(n))).unwrap()).collect();
    let mut packed = None;
    let latents = p.denoise(&context, &refs.f(&format!("{name}_latents")), &references, 4, &mut |_, x| packed = Some(x.clone())).unwrap();
    assert_close(&format!("klein {name} final latents"), &packed.unwrap(), &refs.f(&format!("{name}_final_latents")), TOL);
    let image = p.decode(latents).unwrap().mapv(|v| (v / 2.0 + 0.5).clamp(0.0, 1.0));
    assert_close(&format!("klein {name} image"), &image, &refs.f(&format!("{name}_image")), TOL);
}

#[test]
fn klein_schedule_matches_diffusers() {
    let refs = Refs::load("klein");
    let s = plantain_schedulers::FlowMatchEuler::flux2(4, 16).unwrap();
    let got = ArrayD::from_shape_vec(IxDyn(&[5]), s.sigmas().to_vec()).unwrap();
    assert_close("klein sigmas", &got, &refs.f("t2i_sigmas"), 1e-6);
}

#[test]
fn klein_text_to_image_matches_diffusers() {
    check_run("t2i", &[]);
}

#[test]
fn klein_edit_with_one_reference_matches_diffusers() {
    check_run("edit1", &["edit_ref0"]);
}

#[test]
fn klein_edit_with_two_references_matches_diffusers() {
    check_run("edit2", &["edit_ref0", "edit_ref1"]);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if std::fs::metadata(e.path()).unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[test]
fn klein_missing_tensor_names_the_file_and_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&dir(), tmp.path());
    let file = tmp.path().join("transformer/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let dropped = "single_transformer_blocks.1.attn.to_out.weight";
    let kept: Vec<(String, safetensors::tensor::TensorView)> = st.tensors().into_iter().filter(|(n, _)| n != dropped).collect();
    safetensors::serialize_to_file(kept, None, &file).unwrap();
    let e = KleinPipeline::load(tmp.path(), &runtime()).err().expect("a missing tensor must fail");
    assert!(matches!(e, EngineError::MissingTensor { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(dropped) && msg.contains("transformer/diffusion_pytorch_model.safetensors"), "{msg}");
}

#[test]
fn klein_rejects_a_stable_diffusion_folder() {
    let e = KleinPipeline::load(&tiny("sd1"), &runtime()).err().expect("an SD folder is not klein");
    assert!(matches!(&e, EngineError::BadConfig { path, .. } if path.ends_with("model_index.json")), "{e:?}");
    // An SD text encoder config under a klein index is named too.
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&dir(), tmp.path());
    std::fs::copy(tiny("sd1").join("text_encoder/config.json"), tmp.path().join("text_encoder/config.json")).unwrap();
    let e = KleinPipeline::load(tmp.path(), &runtime()).err().expect("a CLIP text encoder is not Qwen3");
    assert!(matches!(&e, EngineError::BadConfig { path, .. } if path.ends_with("text_encoder/config.json")), "{e:?}");
}

#[test]
fn klein_refuses_an_undistilled_model() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&dir(), tmp.path());
    let index =
        std::fs::read_to_string(tmp.path().join("model_index.json")).unwrap().replace("\"is_distilled\": true", "\"is_distilled\": false");
    std::fs::write(tmp.path().join("model_index.json"), index).unwrap();
    let e = KleinPipeline::load(tmp.path(), &runtime()).err().expect("base models need CFG");
    assert!(matches!(&e, EngineError::Unsupported(m) if m.contains("classifier-free guidance")), "{e:?}");
}

#[test]
fn klein_tokenizer_matches_transformers() {
    use plantain_engine::pipeline::klein_prompt::KleinTokenizer;
    let refs = Refs::load("klein");
    let tok = KleinTokenizer::from_dir(&dir().join("tokenizer")).unwrap();
    let texts = [
        "a red star above a blue circle, 35mm photo",
        "turn the star into a green square",
        "a lighthouse at dusk, 35mm photo",
        "Ünïcødé, 東京 & emoji 🌿!",
    ];
    let long = vec![texts[0]; 60].join(" ");
    let cases: Vec<(String, &str)> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), ["text0", "text1", "text2", "text3"][i]))
        .chain([(long, "text_long")])
        .collect();
    for (text, name) in cases {
        let (ids, mask) = tok.encode(&text).unwrap();
        assert_eq!(ids, refs.i(&format!("{name}_ids")), "{name} ids");
        assert_eq!(mask, refs.i(&format!("{name}_mask")), "{name} mask");
    }
}

#[test]
fn klein_prompt_to_context_matches_diffusers() {
    let refs = Refs::load("klein");
    let context = pipeline().encode_prompt("a red star above a blue circle, 35mm photo").unwrap();
    assert_close("klein encode_prompt", &context, &refs.f("text0_embeds"), TOL);
}

#[test]
fn pipeline_loads_a_klein_folder_as_klein_and_the_sd_loader_points_there() {
    use plantain_engine::pipeline::{LoadOptions, ModelKind, ModelSource, Pipeline, SdPipeline};
    let opts = LoadOptions { runtime: runtime(), ..Default::default() };
    let p = Pipeline::load(&ModelSource::Diffusers(dir()), &opts).unwrap();
    assert_eq!(p.kind(), ModelKind::Klein);
    assert!(p.klein().is_some() && p.sd().is_none() && p.family().is_none() && p.is_instruct_model());
    assert_eq!((p.native_resolution(), p.pixel_multiple()), (1024, 16));
    let Err(e) = SdPipeline::load(&ModelSource::Diffusers(dir()), &opts) else {
        panic!("a klein folder is not an SD pipeline");
    };
    assert!(matches!(&e, EngineError::Unsupported(m) if m.contains("Pipeline::load")), "{e}");
    let with_lora = LoadOptions { loras: vec![plantain_engine::pipeline::LoraSpec::parse("x.safetensors").unwrap()], ..opts };
    let e = Pipeline::load(&ModelSource::Diffusers(dir()), &with_lora).unwrap_err().to_string();
    assert!(e.contains("LoRA"), "{e}");
}
