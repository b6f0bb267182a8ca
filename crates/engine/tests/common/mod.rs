//! Helpers shared by the parity tests: fixture paths and reference tensors.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use ndarray::{ArrayD, IxDyn};
use plantain_engine::runtime::RuntimeOptions;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn tiny(name: &str) -> PathBuf {
    repo().join("fixtures/tiny").join(name)
}

/// Runtime options with a per-test-binary cache so tests never touch the user's cache.
pub fn runtime() -> RuntimeOptions {
    let dir = std::env::temp_dir().join(format!("plantain-test-cache-{}", std::process::id()));
    RuntimeOptions { threads: 1, cache_dir: dir, cuda: false }
}

/// Reference tensors recorded by `scripts/make_fixtures.py`.
pub struct Refs {
    pub f32: HashMap<String, ArrayD<f32>>,
    pub i64: HashMap<String, ArrayD<i64>>,
}

impl Refs {
    pub fn load(arch: &str) -> Self {
        let path = repo().join("fixtures/ref").join(format!("{arch}.safetensors"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("reference file");
        let (mut f, mut i) = (HashMap::new(), HashMap::new());
        for (name, view) in st.tensors() {
            let shape = IxDyn(view.shape());
            let data = view.data();
            match view.dtype() {
                safetensors::Dtype::F32 => {
                    let v = data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
                    f.insert(name, ArrayD::from_shape_vec(shape, v).unwrap());
                }
                safetensors::Dtype::I64 => {
                    let v = data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
                    i.insert(name, ArrayD::from_shape_vec(shape, v).unwrap());
                }
                other => panic!("unexpected dtype {other:?} for {name}"),
            }
        }
        Self { f32: f, i64: i }
    }

    pub fn f(&self, name: &str) -> ArrayD<f32> {
        self.f32.get(name).unwrap_or_else(|| panic!("reference `{name}` missing")).clone()
    }
    pub fn i(&self, name: &str) -> ArrayD<i64> {
        self.i64.get(name).unwrap_or_else(|| panic!("reference `{name}` missing")).clone()
    }
}

/// Max abs difference; panics with context when shapes differ.
pub fn max_abs_diff(what: &str, got: &ArrayD<f32>, want: &ArrayD<f32>) -> f32 {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    got.iter().zip(want.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

/// Asserts `got` matches `want` to `tol` relative to the reference's scale (max(1, max|want|)).
pub fn assert_close(what: &str, got: &ArrayD<f32>, want: &ArrayD<f32>, tol: f32) {
    let d = max_abs_diff(what, got, want);
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    eprintln!("{what}: max abs diff {d:.3e} (scale {scale:.2})");
    assert!(d <= tol * scale, "{what}: max abs diff {d:e} > {tol:e} x {scale}");
}
