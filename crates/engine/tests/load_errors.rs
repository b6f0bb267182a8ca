//! Loading failures are clear errors that name what is wrong.

mod common;

use std::path::Path;

use common::{runtime, tiny};
use plantain_engine::EngineError;
use plantain_engine::pipeline::{LoadOptions, ModelSource, Pipeline};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        // Follow symlinks (the tokenizer files point into assets/).
        if std::fs::metadata(e.path()).unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

fn load(dir: &Path) -> Result<Pipeline, EngineError> {
    Pipeline::load(&ModelSource::Diffusers(dir.to_path_buf()), &LoadOptions { runtime: runtime(), ..Default::default() })
}

#[test]
fn missing_unet_weights_name_the_files_looked_for() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny("sd1"), tmp.path());
    std::fs::remove_file(tmp.path().join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    let e = load(tmp.path()).unwrap_err();
    assert!(matches!(e, EngineError::MissingFile { .. }), "{e:?}");
    assert!(e.to_string().contains("unet weights not found"), "{e}");
}

#[test]
fn config_that_disagrees_with_the_weights_is_a_shape_error() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny("sd1"), tmp.path());
    let cfg_path = tmp.path().join("unet/config.json");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    let cfg = cfg.replace("\"cross_attention_dim\": 16", "\"cross_attention_dim\": 24");
    std::fs::write(&cfg_path, cfg).unwrap();
    let e = load(tmp.path()).unwrap_err();
    assert!(matches!(e, EngineError::ShapeMismatch { component: "unet", .. }), "{e:?}");
    assert!(e.to_string().contains("attn2"), "{e}");
}

#[test]
fn corrupt_safetensors_header_is_reported_with_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny("sd1"), tmp.path());
    let w = tmp.path().join("vae/diffusion_pytorch_model.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    bytes[8..16].copy_from_slice(b"{garbage");
    std::fs::write(&w, bytes).unwrap();
    let e = load(tmp.path()).unwrap_err();
    assert!(matches!(e, EngineError::CorruptWeights { .. }), "{e:?}");
    assert!(e.to_string().contains("diffusion_pytorch_model.safetensors"), "{e}");
}

#[test]
fn truncated_weights_file_is_corrupt_not_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny("sd1"), tmp.path());
    let w = tmp.path().join("text_encoder/model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let e = load(tmp.path()).unwrap_err();
    assert!(matches!(e, EngineError::CorruptWeights { .. }), "{e:?}");
}

#[test]
fn unsupported_pipeline_class_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny("sd1"), tmp.path());
    std::fs::write(tmp.path().join("model_index.json"), r#"{"_class_name": "FluxPipeline"}"#).unwrap();
    let e = load(tmp.path()).unwrap_err().to_string();
    assert!(e.contains("FluxPipeline") && e.contains("not supported"), "{e}");
}

#[test]
fn malformed_config_json_is_a_config_error() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny("sd1"), tmp.path());
    std::fs::write(tmp.path().join("vae/config.json"), "{ not json").unwrap();
    let e = load(tmp.path()).unwrap_err();
    assert!(matches!(e, EngineError::BadConfig { .. }), "{e:?}");
}
