//! Single-file checkpoints (original CompVis / Stability key names): the tiny fixtures give the
//! same network outputs as diffusers, real-size layouts map onto the standard configs, and broken
//! or foreign files are clear errors.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use common::{Refs, assert_close, repo, runtime, tiny};
use plantain_engine::EngineError;
use plantain_engine::models::Family;
use plantain_engine::models::clip::{self, ClipOutputs, ClipTextConfig};
use plantain_engine::models::presets;
use plantain_engine::models::unet::{self, UNetConfig};
use plantain_engine::models::vae::{self, VaeConfig};
use plantain_engine::runtime::{Input, Network};
use plantain_engine::weights::TensorIndex;
use plantain_engine::weights::single_file::{self, SingleFile};

const TOL: f32 = 1e-4;

fn checkpoint(arch: &str) -> PathBuf {
    repo().join("fixtures/tiny").join(format!("{arch}.safetensors"))
}

fn open(arch: &str) -> SingleFile {
    single_file::open(&checkpoint(arch)).unwrap_or_else(|e| panic!("{arch}: {e}"))
}

fn te_config(arch: &str, sub: &str) -> ClipTextConfig {
    ClipTextConfig::from_file(&tiny(arch).join(sub).join("config.json")).unwrap()
}

fn unet_config(arch: &str) -> UNetConfig {
    UNetConfig::from_file(&tiny(arch).join("unet/config.json")).unwrap()
}

fn vae_config(arch: &str) -> VaeConfig {
    VaeConfig::from_file(&tiny(arch).join("vae/config.json")).unwrap()
}

fn run_te(arch: &str, sub: &str, idx: &TensorIndex, projection: bool, ids: &str, refs: &Refs) -> HashMap<String, ndarray::ArrayD<f32>> {
    let graph = clip::build(&te_config(arch, sub), idx, ClipOutputs { projection }).unwrap();
    let net = Network::new(&graph, &format!("sf-{arch}-{sub}"), &runtime()).unwrap();
    net.run(vec![("input_ids", Input::I64(refs.i(ids)))]).unwrap()
}

fn check_unet(arch: &str, sf: &SingleFile, refs: &Refs) {
    let mut inputs = vec![
        ("sample", Input::F32(refs.f("unet_in_sample"))),
        ("timestep", Input::F32(refs.f("unet_in_t"))),
        ("encoder_hidden_states", Input::F32(refs.f("unet_in_ctx"))),
    ];
    if arch == "sdxl" {
        inputs.push(("text_embeds", Input::F32(refs.f("unet_in_text_embeds"))));
        inputs.push(("time_ids", Input::F32(refs.f("unet_in_time_ids"))));
    }
    let graph = unet::build(&unet_config(arch), &sf.unet).unwrap();
    let out = Network::new(&graph, &format!("sf-{arch}-unet"), &runtime()).unwrap().run(inputs).unwrap();
    assert_close(&format!("{arch} single-file unet"), &out["out_sample"], &refs.f("unet_out"), TOL);
}

fn check_vae(arch: &str, sf: &SingleFile, refs: &Refs) {
    let cfg = vae_config(arch);
    let dec = Network::new(&vae::build_decoder(&cfg, &sf.vae).unwrap(), &format!("sf-{arch}-vae-dec"), &runtime()).unwrap();
    let out = dec.run(vec![("latent", Input::F32(refs.f("vae_dec_in")))]).unwrap();
    assert_close(&format!("{arch} single-file vae decode"), &out["sample"], &refs.f("vae_dec_out"), TOL);
    let enc = Network::new(&vae::build_encoder(&cfg, &sf.vae).unwrap(), &format!("sf-{arch}-vae-enc"), &runtime()).unwrap();
    let out = enc.run(vec![("sample", Input::F32(refs.f("vae_enc_in")))]).unwrap();
    assert_close(&format!("{arch} single-file vae mean"), &out["mean"], &refs.f("vae_enc_mean"), TOL);
    let logvar = out["logvar"].mapv(|v| v.clamp(-30.0, 20.0));
    assert_close(&format!("{arch} single-file vae logvar"), &logvar, &refs.f("vae_enc_logvar"), TOL);
}

// ---- parity with diffusers on the tiny fixtures ------------------------------------------------

#[test]
fn sd1_single_file_matches_diffusers() {
    let refs = Refs::load("sd1");
    let sf = open("sd1");
    assert_eq!(sf.family, Family::Sd1);
    assert!(sf.text_encoder_2.is_none());
    let out = run_te("sd1", "text_encoder", &sf.text_encoder, false, "prompt_ids", &refs);
    assert_close("sd1 single-file last_hidden_state", &out["last_hidden_state"], &refs.f("te1_last_hidden"), TOL);
    assert_close("sd1 single-file pooled", &out["pooled"], &refs.f("te1_pooled"), TOL);
    check_unet("sd1", &sf, &refs);
    check_vae("sd1", &sf, &refs);
}

#[test]
fn sd2_single_file_matches_diffusers() {
    // fp16 file; OpenCLIP text tower with fused q/k/v and one resblock more than SD 2 uses.
    let refs = Refs::load("sd2");
    let sf = open("sd2");
    assert_eq!(sf.family, Family::Sd2);
    assert_eq!(single_file::text_layers(&sf.text_encoder), 3, "the index keeps every OpenCLIP resblock");
    assert_eq!(te_config("sd2", "text_encoder").num_hidden_layers, 2);
    let out = run_te("sd2", "text_encoder", &sf.text_encoder, false, "prompt_ids", &refs);
    assert_close("sd2 single-file last_hidden_state", &out["last_hidden_state"], &refs.f("te1_last_hidden"), TOL);
    check_unet("sd2", &sf, &refs);
    check_vae("sd2", &sf, &refs);
}

#[test]
fn sdxl_single_file_matches_diffusers() {
    // bf16 file; embedders.0 is transformers-style CLIP, embedders.1 OpenCLIP with text_projection.
    let refs = Refs::load("sdxl");
    let sf = open("sdxl");
    assert_eq!(sf.family, Family::Sdxl);
    let te2 = sf.text_encoder_2.as_ref().expect("SDXL has a second text encoder");
    let o1 = run_te("sdxl", "text_encoder", &sf.text_encoder, false, "prompt_ids", &refs);
    let o2 = run_te("sdxl", "text_encoder_2", te2, true, "prompt_ids_2", &refs);
    assert_close("sdxl single-file te2 penultimate", &o2["penultimate"], &refs.f("te2_penultimate"), TOL);
    assert_close("sdxl single-file te2 text_embeds", &o2["text_embeds"], &refs.f("te2_text_embeds"), TOL);
    let cond = ndarray::concatenate(ndarray::Axis(2), &[o1["penultimate"].view(), o2["penultimate"].view()]).unwrap();
    assert_close("sdxl single-file cond", &cond, &refs.f("cond"), TOL);
    check_unet("sdxl", &sf, &refs);
    check_vae("sdxl", &sf, &refs);
}

#[test]
fn single_file_indexes_hold_the_same_tensors_as_the_diffusers_folders() {
    // Every UNet / VAE / text-encoder weight of the diffusers folder is found under its
    // diffusers name, with the same element count and stored dtype.
    for arch in ["sd1", "sd2", "sdxl"] {
        let sf = open(arch);
        let mut parts: Vec<(&str, &TensorIndex, PathBuf)> = vec![
            ("unet", &sf.unet, tiny(arch).join("unet/diffusion_pytorch_model.safetensors")),
            ("vae", &sf.vae, tiny(arch).join("vae/diffusion_pytorch_model.safetensors")),
            ("text_encoder", &sf.text_encoder, tiny(arch).join("text_encoder/model.safetensors")),
        ];
        if let Some(te2) = &sf.text_encoder_2 {
            parts.push(("text_encoder_2", te2, tiny(arch).join("text_encoder_2/model.safetensors")));
        }
        for (what, idx, folder_file) in parts {
            let folder = TensorIndex::open(&folder_file).unwrap();
            let mut checked = 0;
            for (name, want) in folder.iter() {
                if name.ends_with("position_ids") {
                    continue;
                }
                // OpenCLIP keeps `text_projection` as [width, proj] under its own name.
                let got = idx.get(name).or_else(|| name.strip_suffix(".weight").and_then(|n| idx.get(n)));
                let got = got.unwrap_or_else(|| panic!("{arch} {what}: `{name}` not in the single-file index"));
                assert_eq!(got.numel(), want.numel(), "{arch} {what}: `{name}` size");
                assert_eq!(got.dtype, want.dtype, "{arch} {what}: `{name}` dtype");
                checked += 1;
            }
            assert!(checked > 10, "{arch} {what}: only {checked} tensors");
        }
    }
}

// ---- family detection ---------------------------------------------------------------------------

#[test]
fn families_of_the_fixture_checkpoints() {
    assert_eq!(open("sd1").family, Family::Sd1);
    assert_eq!(open("sd2").family, Family::Sd2);
    assert_eq!(open("sdxl").family, Family::Sdxl);
    assert_eq!(Family::Sd1.to_string(), "SD 1.x");
    assert_eq!(Family::Sd2.to_string(), "SD 2.x");
    assert_eq!(Family::Sdxl.to_string(), "SDXL");
}

/// A real safetensors file holding one f32 scalar-ish tensor per key.
fn keys_file(dir: &Path, keys: &[&str]) -> PathBuf {
    let data = [0u8; 4];
    let views: Vec<(String, safetensors::tensor::TensorView)> = keys
        .iter()
        .map(|k| (k.to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &data).unwrap()))
        .collect();
    let path = dir.join("keys.safetensors");
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

fn detect(keys: &[&str]) -> Result<Family, EngineError> {
    let tmp = tempfile::tempdir().unwrap();
    single_file::detect_family(&TensorIndex::open(&keys_file(tmp.path(), keys)).unwrap())
}

#[test]
fn family_detection_from_keys() {
    let unet = "model.diffusion_model.input_blocks.0.0.weight";
    let vae = "first_stage_model.decoder.conv_in.weight";
    let sd1 = detect(&[unet, vae, "cond_stage_model.transformer.text_model.final_layer_norm.weight"]).unwrap();
    assert_eq!(sd1, Family::Sd1);
    // Old SD 1.x files lack the `text_model.` level.
    assert_eq!(detect(&[unet, vae, "cond_stage_model.transformer.final_layer_norm.weight"]).unwrap(), Family::Sd1);
    let sd2 = detect(&[unet, vae, "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"]).unwrap();
    assert_eq!(sd2, Family::Sd2);
    let xl = detect(&[
        unet,
        vae,
        "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight",
        "conditioner.embedders.1.model.ln_final.weight",
    ])
    .unwrap();
    assert_eq!(xl, Family::Sdxl);
}

#[test]
fn files_that_are_not_sd_checkpoints_say_what_was_expected() {
    // A LoRA-like file.
    let e = detect(&["lora_unet_down_blocks_0.alpha"]).unwrap_err().to_string();
    assert!(e.contains("not a Stable Diffusion checkpoint") && e.contains("model.diffusion_model."), "{e}");
    // UNet and VAE but no text encoder this loader knows.
    let e = detect(&["model.diffusion_model.input_blocks.0.0.weight", "first_stage_model.decoder.conv_in.weight"]).unwrap_err();
    assert!(matches!(e, EngineError::Unsupported(_)), "{e:?}");
    assert!(e.to_string().contains("cond_stage_model"), "{e}");
    // A diffusers component file handed over as a checkpoint.
    let e = single_file::open(&tiny("sd1").join("vae/diffusion_pytorch_model.safetensors")).unwrap_err();
    assert!(e.to_string().contains("not a Stable Diffusion checkpoint"), "{e}");
}

// ---- broken files -------------------------------------------------------------------------------

#[test]
fn corrupt_header_is_a_corrupt_weights_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("broken.safetensors");
    let mut bytes = std::fs::read(checkpoint("sd1")).unwrap();
    bytes[8..16].copy_from_slice(b"{garbage");
    std::fs::write(&path, bytes).unwrap();
    let e = single_file::open(&path).unwrap_err();
    assert!(matches!(e, EngineError::CorruptWeights { .. }), "{e:?}");
    assert!(e.to_string().contains("broken.safetensors"), "{e}");
}

#[test]
fn truncated_checkpoint_is_corrupt_not_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("cut.safetensors");
    let bytes = std::fs::read(checkpoint("sd2")).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let e = single_file::open(&path).unwrap_err();
    assert!(matches!(e, EngineError::CorruptWeights { .. }), "{e:?}");
}

/// Copies a checkpoint, dropping `drop` and giving `reshape`'s tensor a new shape (taking the
/// leading bytes of its data).
fn edited_copy(arch: &str, out: &Path, drop: Option<&str>, reshape: Option<(&str, Vec<usize>)>) {
    let bytes = std::fs::read(checkpoint(arch)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut views = Vec::new();
    for (name, view) in st.tensors() {
        if Some(name.as_str()) == drop {
            continue;
        }
        let view = match &reshape {
            Some((n, shape)) if *n == name => {
                let len = shape.iter().product::<usize>() * view.dtype().bitsize() / 8;
                safetensors::tensor::TensorView::new(view.dtype(), shape.clone(), &view.data()[..len]).unwrap()
            }
            _ => view,
        };
        views.push((name, view));
    }
    safetensors::serialize_to_file(views, None, out).unwrap();
}

#[test]
fn a_missing_unet_tensor_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("missing.safetensors");
    // up block 1 (CrossAttnUp), layer 1: output_blocks.4 with layers_per_block 2.
    edited_copy("sd1", &path, Some("model.diffusion_model.output_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"), None);
    let sf = single_file::open(&path).unwrap();
    let e = unet::build(&unet_config("sd1"), &sf.unet).unwrap_err();
    match &e {
        EngineError::MissingWeight { component: "unet", name } => {
            assert!(name.contains("up_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k.weight"), "{e}")
        }
        other => panic!("expected a missing unet weight, got {other:?}"),
    }
}

#[test]
fn a_unet_tensor_of_the_wrong_shape_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("reshaped.safetensors");
    // sd1 proj_in is a 1x1 conv [16, 16, 1, 1] in down block 0, layer 0.
    edited_copy("sd1", &path, None, Some(("model.diffusion_model.input_blocks.1.1.proj_in.weight", vec![16, 8, 1, 1])));
    let sf = single_file::open(&path).unwrap();
    let e = unet::build(&unet_config("sd1"), &sf.unet).unwrap_err();
    match &e {
        EngineError::ShapeMismatch { component: "unet", name, expected, found } => {
            assert!(name.contains("down_blocks.0.attentions.0.proj_in.weight"), "{e}");
            assert_eq!(expected, &vec![16, 16, 1, 1]);
            assert_eq!(found, &vec![16, 8, 1, 1]);
        }
        other => panic!("expected a unet shape mismatch, got {other:?}"),
    }
}

#[test]
fn a_checkpoint_without_its_vae_is_not_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("novae.safetensors");
    let bytes = std::fs::read(checkpoint("sd1")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<_> = st.tensors().into_iter().filter(|(n, _)| !n.starts_with("first_stage_model.")).collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
    let e = single_file::open(&path).unwrap_err().to_string();
    assert!(e.contains("first_stage_model."), "{e}");
}

// ---- real-size layouts --------------------------------------------------------------------------
//
// A checkpoint with the key names and shapes of a real SD 1.5 / SD 2.1 / SDXL file is written as a
// sparse file (header only, the data is a hole), opened, and every graph is built against the
// standard configs: building checks every weight's name and shape, no data is read. The original
// names come from an independent port of the diffusers -> original mapping that
// scripts/make_fixtures.py uses (`unet_key_to_ldm`, `vae_key_to_ldm`, `openclip_from_hf`).

const RESNET_TO_LDM: &[(&str, &str)] = &[
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("time_emb_proj.", "emb_layers.1."),
    ("conv_shortcut.", "skip_connection."),
];

fn rename(rest: &str, table: &[(&str, &str)]) -> String {
    for (a, b) in table {
        if let Some(t) = rest.strip_prefix(a) {
            return format!("{b}{t}");
        }
    }
    panic!("no rename for `{rest}`")
}

fn unet_to_ldm(key: &str, cfg: &UNetConfig) -> String {
    let l = cfg.layers_per_block;
    for (a, b) in [
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("add_embedding.linear_1.", "label_emb.0.0."),
        ("add_embedding.linear_2.", "label_emb.0.2."),
        ("conv_in.", "input_blocks.0.0."),
        ("conv_norm_out.", "out.0."),
        ("conv_out.", "out.2."),
    ] {
        if let Some(t) = key.strip_prefix(a) {
            return format!("{b}{t}");
        }
    }
    let p: Vec<&str> = key.split('.').collect();
    let num = |i: usize| p[i].parse::<usize>().unwrap();
    let tail = |from: usize| p[from..].join(".");
    match (p[0], p[2]) {
        ("down_blocks", "resnets") => format!("input_blocks.{}.0.{}", num(1) * (l + 1) + num(3) + 1, rename(&tail(4), RESNET_TO_LDM)),
        ("down_blocks", "attentions") => format!("input_blocks.{}.1.{}", num(1) * (l + 1) + num(3) + 1, tail(4)),
        ("down_blocks", "downsamplers") => format!("input_blocks.{}.0.op.{}", (num(1) + 1) * (l + 1), tail(5)),
        ("up_blocks", "resnets") => format!("output_blocks.{}.0.{}", num(1) * (l + 1) + num(3), rename(&tail(4), RESNET_TO_LDM)),
        ("up_blocks", "attentions") => format!("output_blocks.{}.1.{}", num(1) * (l + 1) + num(3), tail(4)),
        ("up_blocks", "upsamplers") => {
            let pos = if cfg.up_attention[num(1)] { 2 } else { 1 };
            format!("output_blocks.{}.{pos}.{}", num(1) * (l + 1) + l, tail(4))
        }
        ("mid_block", _) if p[1] == "resnets" => format!("middle_block.{}.{}", 2 * num(2), rename(&tail(3), RESNET_TO_LDM)),
        ("mid_block", _) if p[1] == "attentions" => format!("middle_block.1.{}", tail(3)),
        _ => panic!("unexpected unet key {key}"),
    }
}

/// diffusers VAE key -> original key, and whether the original stores it as a 1x1 conv.
fn vae_to_ldm(key: &str, n_blocks: usize) -> (String, bool) {
    let p: Vec<&str> = key.split('.').collect();
    if matches!(p[0], "quant_conv" | "post_quant_conv") || matches!(p[1], "conv_in" | "conv_out") {
        return (key.to_string(), false);
    }
    let side = p[0];
    let tail = |from: usize| p[from..].join(".");
    let resnet: &[(&str, &str)] =
        &[("norm1.", "norm1."), ("conv1.", "conv1."), ("norm2.", "norm2."), ("conv2.", "conv2."), ("conv_shortcut.", "nin_shortcut.")];
    match p[1] {
        "conv_norm_out" => (format!("{side}.norm_out.{}", tail(2)), false),
        "mid_block" if p[2] == "resnets" => {
            (format!("{side}.mid.block_{}.{}", p[3].parse::<usize>().unwrap() + 1, rename(&tail(4), resnet)), false)
        }
        "mid_block" => {
            let attn: &[(&str, &str)] =
                &[("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out.")];
            let sub = rename(&tail(4), attn);
            let conv = sub.ends_with("weight") && !sub.starts_with("norm.");
            (format!("{side}.mid.attn_1.{sub}"), conv)
        }
        "down_blocks" if p[3] == "resnets" => (format!("{side}.down.{}.block.{}.{}", p[2], p[4], rename(&tail(5), resnet)), false),
        "down_blocks" => (format!("{side}.down.{}.downsample.{}", p[2], tail(5)), false),
        "up_blocks" => {
            let i = n_blocks - 1 - p[2].parse::<usize>().unwrap();
            if p[3] == "resnets" {
                (format!("{side}.up.{i}.block.{}.{}", p[4], rename(&tail(5), resnet)), false)
            } else {
                (format!("{side}.up.{i}.upsample.{}", tail(5)), false)
            }
        }
        _ => panic!("unexpected vae key {key}"),
    }
}

/// transformers CLIP key -> OpenCLIP key and shape (q/k/v fuse into `in_proj_*`).
fn openclip_key(key: &str, shape: &[usize]) -> (String, Vec<usize>) {
    if key == "text_projection.weight" {
        return ("text_projection".into(), vec![shape[1], shape[0]]);
    }
    let k = key.strip_prefix("text_model.").unwrap();
    let simple = [
        ("embeddings.token_embedding.weight", "token_embedding.weight"),
        ("embeddings.position_embedding.weight", "positional_embedding"),
        ("final_layer_norm.weight", "ln_final.weight"),
        ("final_layer_norm.bias", "ln_final.bias"),
    ];
    if let Some((_, o)) = simple.iter().find(|(h, _)| *h == k) {
        return (o.to_string(), shape.to_vec());
    }
    let rest = k.strip_prefix("encoder.layers.").unwrap();
    let (n, t) = rest.split_once('.').unwrap();
    for x in ["q", "k", "v"] {
        if let Some(kind) = t.strip_prefix(&format!("self_attn.{x}_proj.")) {
            let mut s = shape.to_vec();
            s[0] *= 3;
            return (format!("transformer.resblocks.{n}.attn.in_proj_{kind}"), s);
        }
    }
    let t = rename(
        t,
        &[
            ("layer_norm1.", "ln_1."),
            ("layer_norm2.", "ln_2."),
            ("self_attn.out_proj.", "attn.out_proj."),
            ("mlp.fc1.", "mlp.c_fc."),
            ("mlp.fc2.", "mlp.c_proj."),
        ],
    );
    (format!("transformer.resblocks.{n}.{t}"), shape.to_vec())
}

/// The weights (diffusers names, shapes) a graph asks for.
fn recorded(build: impl FnOnce(&TensorIndex)) -> Vec<(String, Vec<usize>)> {
    let idx = TensorIndex::recording();
    build(&idx);
    idx.recorded()
}

/// Writes a safetensors header for `tensors` (f16) and extends the file to its full length
/// without writing data (a sparse file).
fn write_sparse(path: &Path, tensors: &BTreeMap<String, Vec<usize>>) {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in tensors {
        let len = shape.iter().product::<usize>() * 2;
        header.insert(name.clone(), serde_json::json!({"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + len]}));
        offset += len;
    }
    let mut text = serde_json::to_string(&header).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(&(text.len() as u64).to_le_bytes()).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.set_len((8 + text.len() + offset) as u64).unwrap();
}

fn check_full_size(preset: presets::Preset, family: Family, extra_openclip_layer: bool) {
    let unet_cfg = UNetConfig::from_json(preset.unet).unwrap();
    let vae_cfg: VaeConfig = serde_json::from_str(preset.vae).unwrap();
    let te_cfg: ClipTextConfig = serde_json::from_str(preset.text_encoder).unwrap();
    let te2_cfg: Option<ClipTextConfig> = preset.text_encoder_2.map(|t| serde_json::from_str(t).unwrap());

    let mut file: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (k, s) in recorded(|i| {
        unet::build(&unet_cfg, i).unwrap();
    }) {
        file.insert(format!("model.diffusion_model.{}", unet_to_ldm(&k, &unet_cfg)), s);
    }
    let n_vae = vae_cfg.block_out_channels.len();
    for (k, s) in recorded(|i| {
        vae::build_encoder(&vae_cfg, i).unwrap();
        vae::build_decoder(&vae_cfg, i).unwrap();
    }) {
        let (name, conv) = vae_to_ldm(&k, n_vae);
        let s = if conv { [s, vec![1, 1]].concat() } else { s };
        file.insert(format!("first_stage_model.{name}"), s);
    }
    let openclip = |cfg: &ClipTextConfig, prefix: &str, projection: bool, file: &mut BTreeMap<String, Vec<usize>>| {
        let mut cfg = cfg.clone();
        if extra_openclip_layer {
            cfg.num_hidden_layers += 1;
        }
        for (k, s) in recorded(|i| {
            clip::build(&cfg, i, ClipOutputs { projection }).unwrap();
        }) {
            let (name, shape) = openclip_key(&k, &s);
            file.insert(format!("{prefix}{name}"), shape);
        }
    };
    let hf_clip = |cfg: &ClipTextConfig, prefix: &str, file: &mut BTreeMap<String, Vec<usize>>| {
        for (k, s) in recorded(|i| {
            clip::build(cfg, i, ClipOutputs { projection: false }).unwrap();
        }) {
            file.insert(format!("{prefix}{k}"), s);
        }
    };
    match family {
        Family::Sd1 => hf_clip(&te_cfg, "cond_stage_model.transformer.", &mut file),
        Family::Sd2 => openclip(&te_cfg, "cond_stage_model.model.", false, &mut file),
        Family::Sdxl => {
            hf_clip(&te_cfg, "conditioner.embedders.0.transformer.", &mut file);
            openclip(te2_cfg.as_ref().unwrap(), "conditioner.embedders.1.model.", true, &mut file);
        }
    }

    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("full.safetensors");
    write_sparse(&path, &file);
    let sf = single_file::open(&path).unwrap_or_else(|e| panic!("{family}: {e}"));
    assert_eq!(sf.family, family);
    unet::build(&unet_cfg, &sf.unet).unwrap_or_else(|e| panic!("{family} unet: {e}"));
    vae::build_encoder(&vae_cfg, &sf.vae).unwrap_or_else(|e| panic!("{family} vae encoder: {e}"));
    vae::build_decoder(&vae_cfg, &sf.vae).unwrap_or_else(|e| panic!("{family} vae decoder: {e}"));
    clip::build(&te_cfg, &sf.text_encoder, ClipOutputs { projection: false }).unwrap_or_else(|e| panic!("{family} text encoder: {e}"));
    if let Some(cfg) = &te2_cfg {
        let te2 = sf.text_encoder_2.as_ref().expect("second text encoder");
        clip::build(cfg, te2, ClipOutputs { projection: true }).unwrap_or_else(|e| panic!("{family} text encoder 2: {e}"));
    }
    if extra_openclip_layer {
        let idx = if family == Family::Sdxl { sf.text_encoder_2.as_ref().unwrap() } else { &sf.text_encoder };
        let want = te2_cfg.as_ref().unwrap_or(&te_cfg).num_hidden_layers + 1;
        assert_eq!(single_file::text_layers(idx), want);
    }
}

#[test]
fn full_size_sd15_layout_maps_onto_the_sd15_configs() {
    check_full_size(presets::SD15, Family::Sd1, false);
}

#[test]
fn full_size_sd21_layout_maps_onto_the_sd21_configs() {
    // Real SD 2.x files hold all 24 OpenCLIP resblocks; diffusers' config keeps 23.
    check_full_size(presets::SD21, Family::Sd2, true);
}

#[test]
fn full_size_sdxl_layout_maps_onto_the_sdxl_configs() {
    check_full_size(presets::SDXL, Family::Sdxl, false);
}

#[test]
fn full_size_sdxl_unet_has_the_real_parameter_count() {
    // 2.567 G parameters in SDXL's UNet; catches a preset that parses but is not SDXL.
    let cfg = UNetConfig::from_json(presets::SDXL.unet).unwrap();
    let n: usize = recorded(|i| {
        unet::build(&cfg, i).unwrap();
    })
    .iter()
    .map(|(_, s)| s.iter().product::<usize>())
    .sum();
    assert_eq!(n, 2_567_463_684, "SDXL unet parameters");
    let cfg = UNetConfig::from_json(presets::SD15.unet).unwrap();
    let n: usize = recorded(|i| {
        unet::build(&cfg, i).unwrap();
    })
    .iter()
    .map(|(_, s)| s.iter().product::<usize>())
    .sum();
    assert_eq!(n, 859_520_964, "SD 1.5 unet parameters");
}
