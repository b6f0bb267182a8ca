//! Fake model folders and HF cache layouts made of tiny files.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;

pub fn write(p: &Path, bytes: &[u8]) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

/// Minimal valid safetensors file holding one f32 tensor per key.
pub fn safetensors(keys: &[&str]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    for (i, k) in keys.iter().enumerate() {
        header.insert(k.to_string(), json!({"dtype": "F32", "shape": [1], "data_offsets": [i * 4, i * 4 + 4]}));
    }
    let h = serde_json::to_vec(&header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(vec![0u8; keys.len() * 4]);
    out
}

#[derive(Clone, Copy)]
pub enum Arch {
    /// SD 1.5-like: cross 768, 64 latent → 512 px, epsilon.
    Sd1,
    /// SD 2.1-like: cross 1024, 96 latent → 768 px, v-prediction.
    Sd2,
    /// sd-turbo-like: SD2 wiring, 64 latent → 512 px, epsilon.
    Sd2Turbo,
    /// SDXL-like.
    Sdxl,
}

/// Files (relative path, bytes) of a small fake diffusers pipeline.
pub fn pipeline_files(arch: Arch, variants: &[Option<&str>]) -> Vec<(String, Vec<u8>)> {
    let (class, cross, sample, pred, hidden) = match arch {
        Arch::Sd1 => ("StableDiffusionPipeline", 768, 64, "epsilon", 768),
        Arch::Sd2 => ("StableDiffusionPipeline", 1024, 96, "v_prediction", 1024),
        Arch::Sd2Turbo => ("StableDiffusionPipeline", 1024, 64, "epsilon", 1024),
        Arch::Sdxl => ("StableDiffusionXLPipeline", 2048, 128, "epsilon", 768),
    };
    let mut index = json!({
        "_class_name": class,
        "_diffusers_version": "0.25.0",
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "safety_checker": [null, null],
        "feature_extractor": [null, null]
    });
    let mut models = vec![("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"), ("text_encoder", "model")];
    if matches!(arch, Arch::Sdxl) {
        index["text_encoder_2"] = json!(["transformers", "CLIPTextModelWithProjection"]);
        index["tokenizer_2"] = json!(["transformers", "CLIPTokenizer"]);
        models.push(("text_encoder_2", "model"));
    }
    let mut files = vec![
        ("model_index.json".to_string(), serde_json::to_vec(&index).unwrap()),
        ("unet/config.json".into(), serde_json::to_vec(&json!({"cross_attention_dim": cross, "sample_size": sample})).unwrap()),
        ("vae/config.json".into(), b"{}".to_vec()),
        ("text_encoder/config.json".into(), serde_json::to_vec(&json!({"hidden_size": hidden})).unwrap()),
        ("scheduler/scheduler_config.json".into(), serde_json::to_vec(&json!({"prediction_type": pred})).unwrap()),
        ("tokenizer/vocab.json".into(), b"{}".to_vec()),
        ("tokenizer/merges.txt".into(), b"#".to_vec()),
        ("tokenizer/tokenizer_config.json".into(), b"{}".to_vec()),
    ];
    if matches!(arch, Arch::Sdxl) {
        files.push(("text_encoder_2/config.json".into(), b"{}".to_vec()));
        files.push(("tokenizer_2/vocab.json".into(), b"{}".to_vec()));
        files.push(("tokenizer_2/merges.txt".into(), b"#".to_vec()));
    }
    for (comp, base) in models {
        for v in variants {
            let name = match v {
                Some(v) => format!("{comp}/{base}.{v}.safetensors"),
                None => format!("{comp}/{base}.safetensors"),
            };
            files.push((name, safetensors(&["w"])));
        }
    }
    files
}

/// Write a pipeline as a plain folder.
pub fn plain_pipeline(root: &Path, arch: Arch, variants: &[Option<&str>]) {
    for (rel, bytes) in pipeline_files(arch, variants) {
        write(&root.join(rel), &bytes);
    }
}

/// Write a pipeline into an HF cache the way huggingface_hub does: content in `blobs/`,
/// snapshot entries as symlinks, `refs/<name>` holding the commit. Returns the snapshot dir.
pub fn hf_snapshot(cache: &Path, repo_id: &str, commit: &str, refs: &[&str], files: &[(String, Vec<u8>)]) -> PathBuf {
    let repo = cache.join(format!("models--{}", repo_id.replace('/', "--")));
    let snap = repo.join("snapshots").join(commit);
    for (i, (rel, bytes)) in files.iter().enumerate() {
        let blob = repo.join("blobs").join(format!("{commit}-{i:04}"));
        write(&blob, bytes);
        let link = snap.join(rel);
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&blob, &link).unwrap();
        #[cfg(not(unix))]
        fs::copy(&blob, &link).unwrap();
    }
    for r in refs {
        write(&repo.join("refs").join(r), commit.as_bytes());
    }
    snap
}

pub fn sha(c: char) -> String {
    std::iter::repeat_n(c, 40).collect()
}
