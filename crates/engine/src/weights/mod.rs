//! Finding weights: safetensors headers indexed by tensor name, without reading tensor data.

pub mod bfl;
pub mod gguf;
pub mod lora;
pub mod quant;
pub mod single_file;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{EngineError, Result};
use crate::graph::{ColumnQuant, DType, GraphBuilder, PackedLinear, StoredTensor, Value};
use quant::{PackSource, Packer};

/// Every tensor of one or more safetensors files, by name.
#[derive(Clone, Debug, Default)]
pub struct TensorIndex {
    tensors: HashMap<String, StoredTensor>,
    /// Set by [`TensorIndex::recording`]: every weight a graph builder asks for is noted here.
    recorder: Option<Arc<Mutex<Vec<NamedShape>>>>,
    /// Set with `recorder`: the weights asked for as linear layers' `[out, in]` matrices.
    linear_recorder: Option<Arc<Mutex<Vec<String>>>>,
    /// LoRA updates added to weights, by weight name, in the order they were applied.
    patches: HashMap<String, Vec<lora::Patch>>,
    /// Linear weights stored pre-quantised (GGUF), by weight name; packed when a graph asks.
    packed: HashMap<String, PackSource>,
    /// Writes packed weights, and quantises float linear weights when it has a spec.
    packer: Option<Arc<Packer>>,
    /// Set by [`TensorIndex::dry_run`]: graphs built from it check names and shapes only.
    dry: bool,
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
        Self { recorder: Some(Arc::default()), linear_recorder: Some(Arc::default()), ..Self::default() }
    }

    /// Which of the [`recorded`](Self::recorded) weights are linear layers' matrices (what
    /// [`quant`] packs).
    pub fn recorded_linears(&self) -> std::collections::HashSet<String> {
        self.linear_recorder.as_ref().and_then(|r| r.lock().ok().map(|l| l.iter().cloned().collect())).unwrap_or_default()
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

    /// Packs the linear weights that graphs ask for with `packer` (quantising float ones when it
    /// has a spec).
    pub fn with_packer(mut self, packer: Arc<Packer>) -> Self {
        self.packer = Some(packer);
        self
    }
    /// Adds a pre-quantised linear weight.
    pub fn insert_packed(&mut self, name: String, src: PackSource) {
        self.packed.insert(name, src);
    }
    /// A copy whose graphs only check that every tensor exists with the right shape: nothing is
    /// quantised or repacked, so a wrong checkpoint fails before any long work.
    pub fn dry_run(&self) -> Self {
        Self { dry: true, ..self.clone() }
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
    /// Names of the float tensors and of the pre-quantised linear weights.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys().chain(self.packed.keys())
    }
    pub fn iter(&self) -> impl Iterator<Item = (&String, &StoredTensor)> {
        self.tensors.iter()
    }
    /// The tensors whose name starts with `prefix`, with the prefix removed.
    pub fn strip_prefix(&self, prefix: &str) -> TensorIndex {
        fn strip<T: Clone>(m: &HashMap<String, T>, prefix: &str) -> HashMap<String, T> {
            m.iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v.clone()))).collect()
        }
        TensorIndex {
            tensors: strip(&self.tensors, prefix),
            recorder: None,
            linear_recorder: None,
            patches: strip(&self.patches, prefix),
            packed: strip(&self.packed, prefix),
            packer: self.packer.clone(),
            dry: self.dry,
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

/// A linear layer's `[out, in]` weight as a graph will use it.
pub enum LinearWeight {
    /// An f32 value of shape `[out, in]`.
    Dense(Value),
    /// Quantised codes and scales for [`GraphBuilder::linear_nbits`].
    Packed(PackedLinear),
    /// Per-channel 8-bit codes for [`GraphBuilder::linear_dynamic_int8`] ([`quant::WeightBits::W8A8`]).
    Columns(ColumnQuant),
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
        let stored = match &self.index.packer {
            Some(p) if matches!(stored.dtype, DType::F16 | DType::BF16) && !self.index.dry => &p.widen(stored)?,
            _ => stored,
        };
        if let Some(p) = &self.index.packer
            && Arc::ptr_eq(&stored.file, &p.scratch().path)
        {
            g.keep(p.scratch());
        }
        let v = g.weight(stored.clone());
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let mut v = if same { v } else { g.reshape_to(v, &dims) };
        for patch in self.index.patches.get(name).into_iter().flatten() {
            v = add_low_rank(g, v, patch, &dims);
        }
        Ok(v)
    }

    /// The `[out, inp]` weight `name` of a linear layer: packed when the index holds it
    /// pre-quantised or quantises float weights (unless a LoRA patches it, which keeps it f32),
    /// else dense.
    pub fn linear_weight(&self, g: &mut GraphBuilder, name: &str, out: usize, inp: usize) -> Result<LinearWeight> {
        let idx = self.index;
        if let Some(rec) = &idx.linear_recorder
            && let Ok(mut list) = rec.lock()
        {
            list.push(name.to_string());
        }
        if idx.recorder.is_none()
            && let Some(src) = idx.packed.get(name)
        {
            if src.shape() != [out, inp] {
                let (component, name, expected, found) = (self.component, name.to_string(), vec![out, inp], src.shape().to_vec());
                return Err(EngineError::ShapeMismatch { component, name, expected, found });
            }
            let packer = idx.packer.as_ref().filter(|_| !idx.dry);
            return Ok(match packer {
                Some(p) => p.repack_linear(src)?,
                None => {
                    let placeholder = StoredTensor { file: Arc::new(PathBuf::new()), offset: 0, dtype: DType::F32, shape: vec![out, inp] };
                    LinearWeight::Dense(g.weight(placeholder))
                }
            });
        }
        if let Some(p) = self.quantiser()
            && !idx.patches.contains_key(name)
            && let Some(stored) = idx.get(name).filter(|s| s.shape == [out, inp])
        {
            return Ok(match p.spec.map(|s| s.layout) {
                Some(quant::QuantLayout::Channels) => LinearWeight::Columns(p.quantise_columns(stored, out, inp)?),
                _ => LinearWeight::Packed(p.quantise(stored, out, inp)?),
            });
        }
        Ok(LinearWeight::Dense(self.get(g, name, &[out, inp])?))
    }

    /// A convolution's weight `name` of `shape` `[out, in, kh, kw]` as an f32 value for the
    /// convolution of `input`: per-channel 8-bit codes dequantised as the convolution runs
    /// ([`GraphBuilder::dequantized`]) when the index quantises float weights in blocks (and no
    /// LoRA patches this one), else the stored weight. `w8a8` (per-channel linear layers, a
    /// mode for speed) keeps convolutions f32: widening them as they run only costs time.
    pub fn conv_weight(&self, g: &mut GraphBuilder, name: &str, shape: &[usize], input: Value) -> Result<Value> {
        let idx = self.index;
        if let Some(p) = self.quantiser().filter(|p| p.spec.is_some_and(|s| s.layout == quant::QuantLayout::Blocks))
            && !idx.patches.contains_key(name)
            && let Some(stored) = idx.get(name).filter(|s| s.shape == shape)
        {
            let q = p.quantise_channels(stored)?;
            return Ok(g.dequantized(&q, input));
        }
        self.get(g, name, shape)
    }

    /// The packer that quantises this index's float weights, when it does (not while the
    /// graph is only checked or recorded).
    fn quantiser(&self) -> Option<&Arc<Packer>> {
        let idx = self.index;
        idx.packer.as_ref().filter(|p| p.spec.is_some() && !idx.dry && idx.recorder.is_none())
    }

    /// `MatMulNBits`' accuracy level for this index's packed weights.
    pub fn accuracy_level(&self) -> i64 {
        self.index.packer.as_ref().and_then(|p| p.spec).map_or(4, |s| s.accuracy_level)
    }

    /// Shape of a stored tensor, for configs inferred from weights.
    pub fn shape_of(&self, name: &str) -> Option<&[usize]> {
        self.index.get(name).map(|t| t.shape.as_slice())
    }

    pub fn has(&self, name: &str) -> bool {
        self.index.get(name).is_some()
    }
}
