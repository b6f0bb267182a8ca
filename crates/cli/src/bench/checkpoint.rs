//! Writing full-size diffusers folders with random weights. Timing does not depend on the
//! weights, so a benchmark needs no download: the weight list comes from the engine's own graph
//! builders (a recording index), the values from a seeded generator with PyTorch-like scales.

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use plantain_engine::models::clip::{self, ClipOutputs, ClipTextConfig};
use plantain_engine::models::presets::Preset;
use plantain_engine::models::unet::{self, UNetConfig};
use plantain_engine::models::vae::{self, VaeConfig};
use plantain_engine::weights::TensorIndex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The parts of a diffusers folder, as config JSON text.
pub struct FolderSpec<'a> {
    pub model_index: &'a str,
    pub scheduler: &'a str,
    pub text_encoder: &'a str,
    /// SDXL's second text encoder (with its projection).
    pub text_encoder_2: Option<&'a str>,
    pub unet: &'a str,
    pub vae: &'a str,
}

impl From<Preset> for FolderSpec<'static> {
    fn from(p: Preset) -> Self {
        Self {
            model_index: p.model_index,
            scheduler: p.scheduler,
            text_encoder: p.text_encoder,
            text_encoder_2: p.text_encoder_2,
            unet: p.unet,
            vae: p.vae,
        }
    }
}

/// Writes `spec` under `dir` with random fp16 weights; returns the bytes written.
pub fn write_random_folder(dir: &Path, spec: &FolderSpec) -> Result<u64> {
    let put = |rel: &str, text: &str| -> Result<()> {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("relative path has a parent"))?;
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    };
    put("model_index.json", spec.model_index)?;
    put("scheduler/scheduler_config.json", spec.scheduler)?;
    put("text_encoder/config.json", spec.text_encoder)?;
    put("unet/config.json", spec.unet)?;
    put("vae/config.json", spec.vae)?;

    let te_cfg: ClipTextConfig = serde_json::from_str(spec.text_encoder)?;
    let rec = TensorIndex::recording();
    clip::build(&te_cfg, &rec, ClipOutputs { projection: false })?;
    let mut bytes = write_random_safetensors(&dir.join("text_encoder/model.safetensors"), &rec.recorded(), 1)?;
    if let Some(te2) = spec.text_encoder_2 {
        put("text_encoder_2/config.json", te2)?;
        let cfg: ClipTextConfig = serde_json::from_str(te2)?;
        let rec = TensorIndex::recording();
        clip::build(&cfg, &rec, ClipOutputs { projection: true })?;
        bytes += write_random_safetensors(&dir.join("text_encoder_2/model.safetensors"), &rec.recorded(), 4)?;
    }

    let unet_cfg = UNetConfig::from_json(spec.unet).map_err(anyhow::Error::msg)?;
    let rec = TensorIndex::recording();
    unet::build(&unet_cfg, &rec)?;
    bytes += write_random_safetensors(&dir.join("unet/diffusion_pytorch_model.safetensors"), &rec.recorded(), 2)?;

    let vae_cfg: VaeConfig = serde_json::from_str(spec.vae)?;
    let rec = TensorIndex::recording();
    vae::build_encoder(&vae_cfg, &rec)?;
    vae::build_decoder(&vae_cfg, &rec)?;
    bytes += write_random_safetensors(&dir.join("vae/diffusion_pytorch_model.safetensors"), &rec.recorded(), 3)?;
    Ok(bytes)
}

/// How random weights are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    F16,
    F32,
}

impl Store {
    fn size(self) -> usize {
        match self {
            Store::F16 => 2,
            Store::F32 => 4,
        }
    }
    fn push(self, buf: &mut Vec<u8>, v: f32) {
        match self {
            Store::F16 => buf.extend_from_slice(&half::f16::from_f32(v).to_le_bytes()),
            Store::F32 => buf.extend_from_slice(&v.to_le_bytes()),
        }
    }
}

/// Streams a safetensors file of fp16 values: norm scales 1, biases small, other weights
/// uniform in ±1/sqrt(fan_in) (PyTorch's default init), embeddings N(0, 0.02)-like.
pub fn write_random_safetensors(path: &Path, tensors: &[(String, Vec<usize>)], seed: u64) -> Result<u64> {
    write_random_safetensors_as(path, tensors, seed, Store::F16)
}

/// [`write_random_safetensors`] with the values stored as `store`.
pub fn write_random_safetensors_as(path: &Path, tensors: &[(String, Vec<usize>)], seed: u64, store: Store) -> Result<u64> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    let dtype = match store {
        Store::F16 => "F16",
        Store::F32 => "F32",
    };
    for (name, shape) in tensors {
        let len = shape.iter().product::<usize>() * store.size();
        header.insert(name.clone(), serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len]}));
        offset += len;
    }
    let mut head = serde_json::to_vec(&serde_json::Value::Object(header))?;
    // The format wants the data to start 8-byte aligned; pad the header with spaces.
    while head.len() % 8 != 0 {
        head.push(b' ');
    }
    let tmp = path.with_extension("safetensors.tmp");
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?);
    out.write_all(&(head.len() as u64).to_le_bytes())?;
    out.write_all(&head)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut buf = Vec::new();
    for (name, shape) in tensors {
        let n: usize = shape.iter().product();
        let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
        let is_norm_scale = shape.len() == 1 && name.ends_with(".weight") && name.contains("norm");
        // Biases and embeddings small; matrices and convolutions at PyTorch's default scale.
        let scale = if shape.len() == 1 || name.contains("embedding") { 0.02 } else { 1.0 / (fan_in as f32).sqrt() };
        buf.clear();
        buf.reserve(n * store.size());
        for _ in 0..n {
            let v = if is_norm_scale { 1.0 } else { (rng.random::<f32>() * 2.0 - 1.0) * scale };
            store.push(&mut buf, v);
        }
        out.write_all(&buf)?;
    }
    out.flush()?;
    drop(out);
    std::fs::rename(&tmp, path)?;
    Ok(8 + head.len() as u64 + offset as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_files_are_valid_safetensors_with_the_recorded_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        let tensors = vec![("a.weight".to_string(), vec![3, 5]), ("a.norm.weight".to_string(), vec![7])];
        let n = write_random_safetensors(&p, &tensors, 1).unwrap();
        assert_eq!(n, std::fs::metadata(&p).unwrap().len());
        let idx = TensorIndex::open(&p).unwrap();
        assert_eq!(idx.get("a.weight").unwrap().shape, vec![3, 5]);
        assert_eq!(idx.get("a.norm.weight").unwrap().shape, vec![7]);
        let bytes = std::fs::read(&p).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let norm = st.tensor("a.norm.weight").unwrap();
        assert!(norm.data().chunks(2).all(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32() == 1.0));
    }

    #[test]
    fn f32_files_hold_f32_values_and_scalars() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        let tensors = vec![("b.weight".to_string(), vec![4, 2]), ("logit_scale".to_string(), vec![])];
        let n = write_random_safetensors_as(&p, &tensors, 1, Store::F32).unwrap();
        assert_eq!(n, std::fs::metadata(&p).unwrap().len());
        let bytes = std::fs::read(&p).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let w = st.tensor("b.weight").unwrap();
        assert_eq!((w.dtype(), w.data().len()), (safetensors::Dtype::F32, 32));
        let values: Vec<f32> = w.data().chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        // uniform in ±1/sqrt(fan_in = 2), not all equal
        assert!(values.iter().all(|v| v.abs() <= 0.5f32.sqrt()) && values.iter().any(|v| *v != values[0]));
        assert_eq!(st.tensor("logit_scale").unwrap().shape(), &[] as &[usize]);
    }
}
