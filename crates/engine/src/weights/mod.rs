//! Finding weights: safetensors headers indexed by tensor name, without reading tensor data.

pub mod lora;
pub mod single_file;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{EngineError, Result};
use crate::graph::{DType, GraphBuilder, StoredTensor, Value};

/// Every tensor of one or more safetensors files, by name.
#[derive(Clone, Debug, Default)]
pub struct TensorIndex {
    tensors: HashMap<String, StoredTensor>,
    /// Set by [`TensorIndex::recording`]: every weight a graph builder asks for is noted here.
    recorder: Option<Arc<Mutex<Vec<NamedShape>>>>,
    /// LoRA updates added to weights, by weight name, in the order they were applied.
    patches: HashMap<String, Vec<lora::Patch>>,
}

/// A weight's name and shape.
pub type NamedShape = (String, Vec<usize>);

impl TensorIndex {
    /// Reads the header of a safetensors file. Data stays on disk; only names, dtypes, shapes and
    /// byte ranges are kept.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| EngineError::io(path, e))?;
        // SAFETY: the map is read-only and dropped before returning; a concurrent truncation
        // could fault, which is the usual caveat of memory-mapping model files.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| EngineError::io(path, e))?;
        let (header_len, meta) = safetensors::SafeTensors::read_metadata(&map[..])
            .map_err(|e| EngineError::CorruptWeights { path: path.to_path_buf(), reason: e.to_string() })?;
        let data_start = 8 + header_len as u64;
        // A file cut short (an interrupted download) must fail here, not when a kernel reads it.
        let data_end = meta.tensors().values().map(|i| i.data_offsets.1 as u64).max().unwrap_or(0);
        if data_start + data_end > map.len() as u64 {
            return Err(EngineError::CorruptWeights {
                path: path.to_path_buf(),
                reason: format!(
                    "the header describes {} bytes of tensor data but the file holds {}",
                    data_end,
                    map.len() as u64 - data_start
                ),
            });
        }
        let file_arc = Arc::new(path.to_path_buf());
        let mut tensors = HashMap::new();
        for (name, info) in meta.tensors() {
            let dtype = match info.dtype {
                safetensors::Dtype::F32 => DType::F32,
                safetensors::Dtype::F16 => DType::F16,
                safetensors::Dtype::BF16 => DType::BF16,
                safetensors::Dtype::I64 => DType::I64,
                other => {
                    // Non-float buffers (e.g. int position ids) are never weights we use.
                    tracing::debug!(tensor = %name, dtype = ?other, "skipping tensor of unsupported dtype");
                    continue;
                }
            };
            tensors.insert(
                name.clone(),
                StoredTensor { file: file_arc.clone(), offset: data_start + info.data_offsets.0 as u64, dtype, shape: info.shape.clone() },
            );
        }
        Ok(Self { tensors, ..Self::default() })
    }

    /// Opens every file and merges them (sharded checkpoints).
    pub fn open_all(paths: &[PathBuf]) -> Result<Self> {
        let mut index = Self::default();
        for p in paths {
            index.tensors.extend(Self::open(p)?.tensors);
        }
        Ok(index)
    }

    /// An empty index that accepts any weight and records its name and shape, to learn which
    /// tensors a network needs (e.g. to write random full-size checkpoints for benchmarks).
    pub fn recording() -> Self {
        Self { recorder: Some(Arc::default()), ..Self::default() }
    }

    /// What a [`recording`](Self::recording) index was asked for, in order, without repeats.
    pub fn recorded(&self) -> Vec<NamedShape> {
        let Some(r) = &self.recorder else { return Vec::new() };
        let list = r.lock().map(|l| l.clone()).unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        list.into_iter().filter(|(n, _)| seen.insert(n.clone())).collect()
    }

    /// Adds a LoRA update to the weight `name` (applied when a graph asks for that weight).
    pub fn add_patch(&mut self, name: String, patch: lora::Patch) {
        self.patches.entry(name).or_default().push(patch);
    }
    /// How many LoRA updates are applied to this index's weights.
    pub fn patch_count(&self) -> usize {
        self.patches.values().map(Vec::len).sum()
    }

    pub fn get(&self, name: &str) -> Option<&StoredTensor> {
        self.tensors.get(name)
    }
    pub fn insert(&mut self, name: String, t: StoredTensor) {
        self.tensors.insert(name, t);
    }
    pub fn len(&self) -> usize {
        self.tensors.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&String, &StoredTensor)> {
        self.tensors.iter()
    }
    /// The tensors whose name starts with `prefix`, with the prefix removed.
    pub fn strip_prefix(&self, prefix: &str) -> TensorIndex {
        TensorIndex {
            tensors: self.tensors.iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v.clone()))).collect(),
            recorder: None,
            patches: self.patches.iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v.clone()))).collect(),
        }
    }
}

/// `w + scale · up @ down`, the pair flattened to matrices and the product shaped like `w`.
fn add_low_rank(g: &mut GraphBuilder, w: Value, patch: &lora::Patch, dims: &[i64]) -> Value {
    let rank = patch.rank() as i64;
    let up = g.weight(patch.up.clone());
    let up = g.reshape_to(up, &[-1, rank]);
    let down = g.weight(patch.down.clone());
    let down = g.reshape_to(down, &[rank, -1]);
    let delta = g.matmul(up, down);
    let delta = g.reshape_to(delta, dims);
    let delta = g.mul_scalar(delta, patch.scale);
    g.add(w, delta)
}

/// Weight lookup for a model builder: names are relative to `prefix`, shapes are checked.
pub struct Params<'a> {
    index: &'a TensorIndex,
    component: &'static str,
}

impl<'a> Params<'a> {
    pub fn new(index: &'a TensorIndex, component: &'static str) -> Self {
        Self { index, component }
    }

    /// Adds the named weight to the graph as an f32 value of `shape`. A stored tensor with the
    /// same elements but extra or missing unit axes (1x1 conv vs linear) is reshaped in-graph.
    pub fn get(&self, g: &mut GraphBuilder, name: &str, shape: &[usize]) -> Result<Value> {
        if let Some(rec) = &self.index.recorder {
            if let Ok(mut list) = rec.lock() {
                list.push((name.to_string(), shape.to_vec()));
            }
            let placeholder = StoredTensor { file: Arc::new(PathBuf::new()), offset: 0, dtype: DType::F32, shape: shape.to_vec() };
            return Ok(g.weight(placeholder));
        }
        let stored =
            self.index.get(name).ok_or_else(|| EngineError::MissingWeight { component: self.component, name: name.to_string() })?;
        let same = stored.shape == shape;
        let squeezable = {
            let strip = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
            strip(&stored.shape) == strip(shape) && stored.numel() == shape.iter().product::<usize>()
        };
        if !same && !squeezable {
            return Err(EngineError::ShapeMismatch {
                component: self.component,
                name: name.to_string(),
                expected: shape.to_vec(),
                found: stored.shape.clone(),
            });
        }
        let v = g.weight(stored.clone());
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let mut v = if same { v } else { g.reshape_to(v, &dims) };
        for patch in self.index.patches.get(name).into_iter().flatten() {
            v = add_low_rank(g, v, patch, &dims);
        }
        Ok(v)
    }

    /// Shape of a stored tensor, for configs inferred from weights.
    pub fn shape_of(&self, name: &str) -> Option<&[usize]> {
        self.index.get(name).map(|t| t.shape.as_slice())
    }

    pub fn has(&self, name: &str) -> bool {
        self.index.get(name).is_some()
    }
}
