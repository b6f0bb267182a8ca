//! Each network against diffusers' outputs for the same tiny weights (fixtures/ref).

mod common;

use common::{Refs, assert_close, runtime, tiny};
use ndarray::ArrayD;
use plantain_engine::models::clip::{self, ClipOutputs, ClipTextConfig};
use plantain_engine::runtime::{Input, Network};
use plantain_engine::weights::TensorIndex;

const TOL: f32 = 1e-4;

fn text_encoder(arch: &str, sub: &str, projection: bool) -> Network {
    let dir = tiny(arch).join(sub);
    let cfg = ClipTextConfig::from_file(&dir.join("config.json")).unwrap();
    let idx = TensorIndex::open(&dir.join("model.safetensors")).unwrap();
    let graph = clip::build(&cfg, &idx, ClipOutputs { projection }).unwrap();
    Network::new(&graph, &format!("{arch}-{sub}"), &runtime()).unwrap()
}

fn ids(refs: &Refs, name: &str) -> Input {
    Input::I64(refs.i(name))
}

fn run_te(net: &Network, input: Input) -> std::collections::HashMap<String, ArrayD<f32>> {
    net.run(vec![("input_ids", input)]).unwrap()
}

#[test]
fn sd1_text_encoder_matches_diffusers() {
    let refs = Refs::load("sd1");
    let out = run_te(&text_encoder("sd1", "text_encoder", false), ids(&refs, "prompt_ids"));
    assert_close("sd1 last_hidden_state", &out["last_hidden_state"], &refs.f("te1_last_hidden"), TOL);
    assert_close("sd1 pooled", &out["pooled"], &refs.f("te1_pooled"), TOL);
}

#[test]
fn sd2_text_encoder_matches_diffusers() {
    let refs = Refs::load("sd2");
    let out = run_te(&text_encoder("sd2", "text_encoder", false), ids(&refs, "prompt_ids"));
    assert_close("sd2 last_hidden_state", &out["last_hidden_state"], &refs.f("te1_last_hidden"), TOL);
}

#[test]
fn sdxl_text_encoders_match_diffusers() {
    let refs = Refs::load("sdxl");
    let o1 = run_te(&text_encoder("sdxl", "text_encoder", false), ids(&refs, "prompt_ids"));
    let o2 = run_te(&text_encoder("sdxl", "text_encoder_2", true), ids(&refs, "prompt_ids_2"));
    assert_close("sdxl te2 penultimate", &o2["penultimate"], &refs.f("te2_penultimate"), TOL);
    assert_close("sdxl te2 text_embeds", &o2["text_embeds"], &refs.f("te2_text_embeds"), TOL);
    let cond = ndarray::concatenate(ndarray::Axis(2), &[o1["penultimate"].view(), o2["penultimate"].view()]).unwrap();
    let want = refs.f("cond");
    assert_close("sdxl cond", &cond, &want, TOL);
}

fn unet(arch: &str) -> Network {
    use plantain_engine::models::unet::{self, UNetConfig};
    let dir = tiny(arch).join("unet");
    let cfg = UNetConfig::from_file(&dir.join("config.json")).unwrap();
    let idx = TensorIndex::open(&dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    Network::new(&unet::build(&cfg, &idx).unwrap(), &format!("{arch}-unet"), &runtime()).unwrap()
}

fn check_unet(arch: &str) {
    let refs = Refs::load(arch);
    let mut inputs = vec![
        ("sample", Input::F32(refs.f("unet_in_sample"))),
        ("timestep", Input::F32(refs.f("unet_in_t"))),
        ("encoder_hidden_states", Input::F32(refs.f("unet_in_ctx"))),
    ];
    if arch == "sdxl" {
        inputs.push(("text_embeds", Input::F32(refs.f("unet_in_text_embeds"))));
        inputs.push(("time_ids", Input::F32(refs.f("unet_in_time_ids"))));
    }
    let out = unet(arch).run(inputs).unwrap();
    assert_close(&format!("{arch} unet"), &out["out_sample"], &refs.f("unet_out"), TOL);
}

#[test]
fn sd1_unet_matches_diffusers() {
    check_unet("sd1");
}

#[test]
fn sd2_unet_matches_diffusers() {
    check_unet("sd2");
}

#[test]
fn sdxl_unet_matches_diffusers() {
    check_unet("sdxl");
}

fn check_vae(arch: &str) {
    use plantain_engine::models::vae::{self, VaeConfig};
    let refs = Refs::load(arch);
    let dir = tiny(arch).join("vae");
    let cfg = VaeConfig::from_file(&dir.join("config.json")).unwrap();
    let idx = TensorIndex::open(&dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let dec = Network::new(&vae::build_decoder(&cfg, &idx).unwrap(), &format!("{arch}-vae-dec"), &runtime()).unwrap();
    let out = dec.run(vec![("latent", Input::F32(refs.f("vae_dec_in")))]).unwrap();
    assert_close(&format!("{arch} vae decode"), &out["sample"], &refs.f("vae_dec_out"), TOL);
    let enc = Network::new(&vae::build_encoder(&cfg, &idx).unwrap(), &format!("{arch}-vae-enc"), &runtime()).unwrap();
    let out = enc.run(vec![("sample", Input::F32(refs.f("vae_enc_in")))]).unwrap();
    assert_close(&format!("{arch} vae mean"), &out["mean"], &refs.f("vae_enc_mean"), TOL);
    let logvar = out["logvar"].mapv(|v| v.clamp(-30.0, 20.0));
    assert_close(&format!("{arch} vae logvar"), &logvar, &refs.f("vae_enc_logvar"), TOL);
}

#[test]
fn sd1_vae_matches_diffusers() {
    check_vae("sd1");
}

#[test]
fn sdxl_vae_matches_diffusers() {
    check_vae("sdxl");
}

#[test]
fn taesd_matches_diffusers() {
    use plantain_engine::models::taesd::{self, TaesdConfig};
    let refs = Refs::load("taesd");
    let dir = tiny("taesd");
    let cfg = TaesdConfig::from_file(&dir.join("config.json")).unwrap();
    let idx = TensorIndex::open(&dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let dec = Network::new(&taesd::build_decoder(&cfg, &idx).unwrap(), "taesd-dec", &runtime()).unwrap();
    let out = dec.run(vec![("latent", Input::F32(refs.f("dec_in")))]).unwrap();
    assert_close("taesd decode", &out["sample"], &refs.f("dec_out"), TOL);
    let enc = Network::new(&taesd::build_encoder(&cfg, &idx).unwrap(), "taesd-enc", &runtime()).unwrap();
    let out = enc.run(vec![("sample", Input::F32(refs.f("enc_in")))]).unwrap();
    assert_close("taesd encode", &out["latent"], &refs.f("enc_out"), TOL);
}
