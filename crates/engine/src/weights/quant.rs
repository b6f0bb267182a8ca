//! Weight-only 8- and 4-bit linear layers: float weights quantised at load, and GGUF blocks
//! repacked, into ONNX Runtime's `MatMulNBits` layout ([`PackedLinear`]); and, for `w8a8`,
//! 8-bit codes per output channel for `DynamicQuantizeMatMul` ([`ColumnQuant`], see
//! [`QuantLayout`]).
//!
//! The scheme is symmetric, block-wise along the input axis, one f32 scale per block and no zero
//! points, exactly ggml's `Q8_0` and `Q4_0` (4-bit: the signed value of largest magnitude maps to
//! -8, so all 16 codes are used; 8-bit: `round(x / (max|x| / 127))`). Symmetric because GGUF
//! `Q4_0`/`Q8_0` files are, so both sources share one representation and one kernel path;
//! because diffusion-transformer and Qwen3 weights are centred on zero, so a zero point buys
//! little; and because it saves the zero-point tensor. Norms, embeddings, biases and the VAE
//! stay f32: only the `[out, in]` matrices of linear layers are packed.
//!
//! Packed bytes are written to a scratch file beside the runtime cache (4 KiB-aligned per
//! tensor) that ONNX Runtime reads as external data, like a checkpoint; the file is deleted when
//! the graphs and indexes using it are dropped. Nothing is cached across runs: quantising the
//! whole [klein] transformer takes a few seconds per GiB of bf16 weights.

use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::LinearWeight;
use crate::error::{EngineError, Result};
use crate::graph::{ChannelQuant, ColumnQuant, DType, PackedLinear, ScratchFile, StoredTensor};

/// How the linear layers of a network are stored for inference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WeightBits {
    /// As in the checkpoint, converted to f32 (f16/bf16 checkpoints are widened).
    #[default]
    F32,
    /// 8-bit codes, one scale per block (ggml `Q8_0`).
    Int8,
    /// 4-bit codes, one scale per block (ggml `Q4_0`).
    Int4,
    /// 8-bit codes, one scale per output channel, and activations quantised to 8 bits per tensor
    /// as each layer runs (ONNX Runtime's `DynamicQuantizeMatMul`, whose VNNI kernel is the
    /// fastest int8 product it has on a CPU): faster than [`WeightBits::Int8`], with a larger
    /// error where a layer's inputs have outliers (one scale for the whole tensor).
    W8A8,
}

impl WeightBits {
    pub fn bits(self) -> Option<u8> {
        match self {
            WeightBits::F32 => None,
            WeightBits::Int8 | WeightBits::W8A8 => Some(8),
            WeightBits::Int4 => Some(4),
        }
    }
}

impl std::str::FromStr for WeightBits {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float" => Ok(WeightBits::F32),
            "int8" | "q8" | "8" => Ok(WeightBits::Int8),
            "int4" | "q4" | "4" => Ok(WeightBits::Int4),
            "w8a8" | "int8-dynamic" => Ok(WeightBits::W8A8),
            other => Err(format!("weight precision `{other}` is not one of f32, int8, int4, w8a8")),
        }
    }
}

/// The block size ggml uses for `Q4_0`/`Q8_0`, and the default here.
pub const DEFAULT_BLOCK: usize = 32;

/// A quantisation setting: code width and block length along the input axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantSpec {
    pub bits: u8,
    /// A power of two ≥ 16 (what `MatMulNBits` accepts).
    pub block_size: usize,
    /// `MatMulNBits`' `accuracy_level`: 4 computes with int8 activations where ONNX Runtime has
    /// such a kernel (the fast CPU path), 1 keeps activations f32.
    pub accuracy_level: i64,
    /// How float weights are laid out and multiplied.
    pub layout: QuantLayout,
}

/// The two int8 kernels a quantised linear layer can run on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QuantLayout {
    /// `MatMulNBits`: blocks along the input axis, activations as `accuracy_level` says.
    #[default]
    Blocks,
    /// `DynamicQuantizeMatMul`: 8-bit codes with one scale per output channel, activations
    /// quantised per tensor as the layer runs ([`WeightBits::W8A8`]).
    Channels,
}

impl QuantSpec {
    /// `bits` (4 or 8) in blocks of `block_size`, with int8 activations where possible.
    pub fn new(bits: u8, block_size: usize) -> Result<Self> {
        if bits != 4 && bits != 8 {
            return Err(EngineError::Unsupported(format!("{bits}-bit weights: only 4 and 8 are supported")));
        }
        if block_size < 16 || !block_size.is_power_of_two() {
            return Err(EngineError::Unsupported(format!("quantisation block size {block_size}: must be a power of two ≥ 16")));
        }
        Ok(Self { bits, block_size, accuracy_level: 4, layout: QuantLayout::Blocks })
    }
    /// The spec for `w` at the default block size (`None` for f32).
    pub fn for_bits(w: WeightBits) -> Option<Self> {
        let layout = if w == WeightBits::W8A8 { QuantLayout::Channels } else { QuantLayout::Blocks };
        w.bits().map(|b| Self { bits: b, block_size: DEFAULT_BLOCK, accuracy_level: 4, layout })
    }
    fn blob(&self) -> usize {
        self.block_size * self.bits as usize / 8
    }
}

/// Blocks of ggml quantisation types that map directly onto [`PackedLinear`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlBlocks {
    /// 32 values: f16 scale, then 16 bytes, value `j` in the low nibble of byte `j` and value
    /// `j + 16` in its high nibble, code offset 8.
    Q4_0,
    /// 32 values: f16 scale, then 32 signed bytes.
    Q8_0,
}

impl GgmlBlocks {
    pub const BLOCK: usize = 32;
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlBlocks::Q4_0 => 18,
            GgmlBlocks::Q8_0 => 34,
        }
    }
    fn spec(self) -> QuantSpec {
        let bits = match self {
            GgmlBlocks::Q4_0 => 4,
            GgmlBlocks::Q8_0 => 8,
        };
        QuantSpec { bits, block_size: Self::BLOCK, accuracy_level: 4, layout: QuantLayout::Blocks }
    }
}

/// Where a packed linear's data comes from before it is written to the scratch file.
#[derive(Clone, Debug, PartialEq)]
pub enum PackSource {
    /// Rows of a ggml-quantised `[n_total, k]` matrix (`data` is its raw bytes), in order: each
    /// range of rows is appended (so `[a..b, c..d]` reorders or splits fused weights).
    Ggml { data: StoredTensor, blocks: GgmlBlocks, k: usize, rows: Vec<std::ops::Range<usize>> },
    /// Random codes for an `[n, k]` weight of PyTorch's default scale (±1/sqrt(k)): full-size
    /// benchmarks without a checkpoint.
    Random { n: usize, k: usize, spec: QuantSpec, seed: u64 },
}

impl PackSource {
    /// The `[out, in]` shape of the weight it makes.
    pub fn shape(&self) -> [usize; 2] {
        match self {
            PackSource::Ggml { k, rows, .. } => [rows.iter().map(|r| r.len()).sum(), *k],
            PackSource::Random { n, k, .. } => [*n, *k],
        }
    }
}

/// Writes packed weights to a scratch file; shared by every index of one load.
#[derive(Debug)]
pub struct Packer {
    /// How float weights are quantised (`None`: only pre-quantised sources are packed).
    pub spec: Option<QuantSpec>,
    file: Arc<ScratchFile>,
    out: Mutex<BufWriter<File>>,
    /// f32 copies already written by [`Packer::widen`], by source file and offset.
    widened: Mutex<std::collections::HashMap<(Arc<PathBuf>, u64), StoredTensor>>,
}

static SCRATCH_COUNTER: AtomicUsize = AtomicUsize::new(0);

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> EngineError + '_ {
    move |e| EngineError::io(path, e)
}

impl Packer {
    /// A packer writing into a new scratch file in `dir` (created if needed).
    pub fn new(dir: &Path, spec: Option<QuantSpec>) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let n = SCRATCH_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("packed-{}-{n}.bin", std::process::id()));
        let f = File::create(&path).map_err(io_err(&path))?;
        let file = Arc::new(ScratchFile { path: Arc::new(path) });
        Ok(Self { spec, file, out: Mutex::new(BufWriter::new(f)), widened: Mutex::default() })
    }

    pub fn path(&self) -> &Path {
        self.file.path.as_path()
    }
    /// The scratch file, for graphs that read from it.
    pub fn scratch(&self) -> &Arc<ScratchFile> {
        &self.file
    }

    /// Appends `bytes` at the next 4 KiB boundary; returns their offset.
    fn append(&self, bytes: &[u8]) -> Result<u64> {
        let path = self.path().to_path_buf();
        let mut out = self.out.lock().map_err(|_| EngineError::Runtime("packer poisoned by an earlier panic".into()))?;
        let pos = out.stream_position().map_err(io_err(&path))?;
        let start = pos.div_ceil(4096) * 4096;
        out.write_all(&vec![0u8; (start - pos) as usize]).map_err(io_err(&path))?;
        out.write_all(bytes).map_err(io_err(&path))?;
        out.flush().map_err(io_err(&path))?;
        Ok(start)
    }

    /// Writes one packed matrix and describes it.
    fn store(&self, spec: QuantSpec, n: usize, k: usize, codes: &[u8], scales: &[f32]) -> Result<PackedLinear> {
        let blocks = k.div_ceil(spec.block_size);
        debug_assert_eq!(codes.len(), n * blocks * spec.blob());
        debug_assert_eq!(scales.len(), n * blocks);
        let b_off = self.append(codes)?;
        let scale_bytes: Vec<u8> = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
        let s_off = self.append(&scale_bytes)?;
        let file = self.file.path.clone();
        Ok(PackedLinear {
            n,
            k,
            bits: spec.bits,
            block_size: spec.block_size,
            b: StoredTensor { file: file.clone(), offset: b_off, dtype: DType::U8, shape: vec![n, blocks, spec.blob()] },
            scales: StoredTensor { file, offset: s_off, dtype: DType::F32, shape: vec![n * blocks] },
            scratch: Some(self.file.clone()),
        })
    }

    /// Quantises a float `[n, k]` weight with this packer's spec.
    pub fn quantise(&self, w: &StoredTensor, n: usize, k: usize) -> Result<PackedLinear> {
        let spec = self.spec.ok_or_else(|| EngineError::Runtime("packer has no quantisation spec".into()))?;
        let data = read_f32(w).map_err(io_err(w.file.as_path()))?;
        let (codes, scales) = quantise_rows(&data, n, k, spec);
        self.store(spec, n, k, &codes, &scales)
    }

    /// An f32 copy of an f16/bf16 weight in the scratch file (once per source tensor). ONNX
    /// Runtime reads f32 external data as it is, while a half-precision weight cast in the graph
    /// is held twice while the cast is folded (the half copy beside the f32 result): widened
    /// here, a model's peak at load stays near its f32 weights.
    pub fn widen(&self, t: &StoredTensor) -> Result<StoredTensor> {
        let key = (t.file.clone(), t.offset);
        let poisoned = || EngineError::Runtime("packer poisoned by an earlier panic".into());
        if let Some(done) = self.widened.lock().map_err(|_| poisoned())?.get(&key) {
            return Ok(done.clone());
        }
        let data = read_f32(t).map_err(io_err(t.file.as_path()))?;
        let offset = self.append(&data.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())?;
        let wide = StoredTensor { file: self.file.path.clone(), offset, dtype: DType::F32, shape: t.shape.clone() };
        self.widened.lock().map_err(|_| poisoned())?.insert(key, wide.clone());
        Ok(wide)
    }

    /// Quantises a float weight `[n, ..]` (a convolution's) to signed 8 bits, one scale per
    /// output channel (`max|w| / 127` of the channel).
    pub fn quantise_channels(&self, w: &StoredTensor) -> Result<ChannelQuant> {
        let data = read_f32(w).map_err(io_err(w.file.as_path()))?;
        let n = w.shape[0];
        let (codes, scales) = quantise_channels(&data, n);
        let c_off = self.append(&codes.iter().map(|&c| c as u8).collect::<Vec<u8>>())?;
        let s_off = self.append(&scales.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>())?;
        let file = self.file.path.clone();
        Ok(ChannelQuant {
            codes: StoredTensor { file: file.clone(), offset: c_off, dtype: DType::I8, shape: w.shape.clone() },
            scales: StoredTensor { file, offset: s_off, dtype: DType::F32, shape: vec![n] },
            scratch: self.file.clone(),
        })
    }

    /// Quantises a float linear weight `[n, k]` for `DynamicQuantizeMatMul`: signed 8-bit codes
    /// with one scale per output channel (`max|w| / 127` of its row), stored transposed `[k, n]`.
    pub fn quantise_columns(&self, w: &StoredTensor, n: usize, k: usize) -> Result<ColumnQuant> {
        let data = read_f32(w).map_err(io_err(w.file.as_path()))?;
        let (codes, scales) = quantise_channels(&data, n);
        let mut transposed = vec![0u8; n * k];
        for (r, row) in codes.chunks_exact(k).enumerate() {
            for (c, &q) in row.iter().enumerate() {
                transposed[c * n + r] = q as u8;
            }
        }
        self.store_columns(n, k, &transposed, &scales)
    }

    fn store_columns(&self, n: usize, k: usize, codes: &[u8], scales: &[f32]) -> Result<ColumnQuant> {
        let c_off = self.append(codes)?;
        let s_off = self.append(&scales.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>())?;
        let file = self.file.path.clone();
        Ok(ColumnQuant {
            k,
            n,
            codes: StoredTensor { file: file.clone(), offset: c_off, dtype: DType::I8, shape: vec![k, n] },
            scales: StoredTensor { file, offset: s_off, dtype: DType::F32, shape: vec![n] },
            scratch: self.file.clone(),
        })
    }

    /// A pre-quantised source as the layer it runs as: random codes in the spec's layout (for
    /// benchmarks), GGUF blocks always as `MatMulNBits` (the file's own blocks).
    pub fn repack_linear(&self, src: &PackSource) -> Result<LinearWeight> {
        match src {
            PackSource::Random { n, k, spec, seed } if spec.layout == QuantLayout::Channels => {
                use rand::{RngCore, SeedableRng};
                let mut codes = vec![0u8; n * k];
                rand_chacha::ChaCha8Rng::seed_from_u64(*seed).fill_bytes(&mut codes);
                let step = 1.0 / (*k as f32).sqrt() / 128.0;
                Ok(LinearWeight::Columns(self.store_columns(*n, *k, &codes, &vec![step; *n])?))
            }
            _ => Ok(LinearWeight::Packed(self.repack(src)?)),
        }
    }

    /// Copies row ranges of a stored tensor, in order, into the scratch file (a reordered
    /// float weight, e.g. swapped modulation halves).
    pub fn copy_rows(&self, t: &StoredTensor, rows: &[std::ops::Range<usize>]) -> Result<StoredTensor> {
        let path = t.file.as_path();
        let row_bytes = t.shape[1..].iter().product::<usize>() * t.dtype.size();
        let file = File::open(path).map_err(io_err(path))?;
        let mut bytes = Vec::new();
        for r in rows {
            let start = bytes.len();
            bytes.resize(start + r.len() * row_bytes, 0);
            file.read_exact_at(&mut bytes[start..], t.offset + (r.start * row_bytes) as u64).map_err(io_err(path))?;
        }
        let offset = self.append(&bytes)?;
        let mut shape = t.shape.clone();
        shape[0] = rows.iter().map(|r| r.len()).sum();
        Ok(StoredTensor { file: self.file.path.clone(), offset, dtype: t.dtype, shape })
    }

    /// Repacks a pre-quantised source.
    pub fn repack(&self, src: &PackSource) -> Result<PackedLinear> {
        match src {
            PackSource::Ggml { data, blocks, k, rows } => {
                let path = data.file.as_path();
                let per_row = k.div_ceil(GgmlBlocks::BLOCK) * blocks.block_bytes();
                let file = File::open(path).map_err(io_err(path))?;
                let spec = blocks.spec();
                let n: usize = rows.iter().map(|r| r.len()).sum();
                let (mut codes, mut scales) = (Vec::with_capacity(n * per_row), Vec::with_capacity(n * k.div_ceil(32)));
                let mut raw = Vec::new();
                for r in rows {
                    raw.resize(r.len() * per_row, 0);
                    file.read_exact_at(&mut raw, data.offset + (r.start * per_row) as u64).map_err(io_err(path))?;
                    ggml_to_nbits(*blocks, &raw, &mut codes, &mut scales);
                }
                self.store(spec, n, *k, &codes, &scales)
            }
            PackSource::Random { n, k, spec, seed } => {
                use rand::{RngCore, SeedableRng};
                let blocks = k.div_ceil(spec.block_size);
                let mut codes = vec![0u8; n * blocks * spec.blob()];
                rand_chacha::ChaCha8Rng::seed_from_u64(*seed).fill_bytes(&mut codes);
                let step = 1.0 / (*k as f32).sqrt() / (1u32 << (spec.bits - 1)) as f32;
                self.store(*spec, *n, *k, &codes, &vec![step; n * blocks])
            }
        }
    }
}

/// Appends ggml blocks as `MatMulNBits` codes and scales.
fn ggml_to_nbits(kind: GgmlBlocks, raw: &[u8], codes: &mut Vec<u8>, scales: &mut Vec<f32>) {
    for blk in raw.chunks_exact(kind.block_bytes()) {
        scales.push(half::f16::from_le_bytes([blk[0], blk[1]]).to_f32());
        let q = &blk[2..];
        match kind {
            // ggml: value j = low nibble of q[j], value j+16 = high nibble of q[j].
            // MatMulNBits: value 2i = low nibble of byte i, value 2i+1 = its high nibble.
            GgmlBlocks::Q4_0 => {
                let v = |j: usize| if j < 16 { q[j] & 0x0f } else { q[j - 16] >> 4 };
                codes.extend((0..16).map(|i| v(2 * i) | (v(2 * i + 1) << 4)));
            }
            // Signed codes, zero point 0 → unsigned codes, zero point 128.
            GgmlBlocks::Q8_0 => codes.extend(q.iter().map(|&b| b ^ 0x80)),
        }
    }
}

/// Quantises `n` rows of `k` values: `MatMulNBits` codes `[n, blocks, blob]` and scales
/// `[n * blocks]` (the last block of a row zero-padded).
pub fn quantise_rows(w: &[f32], n: usize, k: usize, spec: QuantSpec) -> (Vec<u8>, Vec<f32>) {
    let bs = spec.block_size;
    let blocks = k.div_ceil(bs);
    let mut codes = Vec::with_capacity(n * blocks * spec.blob());
    let mut scales = Vec::with_capacity(n * blocks);
    let mut block = vec![0f32; bs];
    for row in w.chunks_exact(k).take(n) {
        for b in 0..blocks {
            block.fill(0.0);
            let src = &row[b * bs..((b + 1) * bs).min(k)];
            block[..src.len()].copy_from_slice(src);
            scales.push(quantise_block(&block, spec.bits, &mut codes));
        }
    }
    (codes, scales)
}

/// Symmetric 8-bit codes of `n` equal rows of `w`, one scale (`max|x| / 127`) per row.
pub fn quantise_channels(w: &[f32], n: usize) -> (Vec<i8>, Vec<f32>) {
    let per = w.len() / n.max(1);
    let mut codes = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(n);
    for row in w.chunks_exact(per.max(1)).take(n) {
        let d = row.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        codes.extend(row.iter().map(|v| (v * id).round().clamp(-127.0, 127.0) as i8));
        scales.push(d);
    }
    (codes, scales)
}

/// ggml's reference `Q4_0`/`Q8_0` rounding of one block; appends its codes, returns its scale.
fn quantise_block(x: &[f32], bits: u8, codes: &mut Vec<u8>) -> f32 {
    if bits == 4 {
        // The value of largest magnitude, with its sign, becomes code 0 (-8 · d).
        let max = x.iter().copied().fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let q = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
        codes.extend(x.chunks_exact(2).map(|p| q(p[0]) | (q(p[1]) << 4)));
        d
    } else {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        codes.extend(x.iter().map(|v| ((v * id).round() as i32 + 128).clamp(0, 255) as u8));
        d
    }
}

/// Every element of a stored float tensor as f32.
pub fn read_f32(t: &StoredTensor) -> std::io::Result<Vec<f32>> {
    let file = File::open(t.file.as_path())?;
    let mut raw = vec![0u8; t.byte_len() as usize];
    file.read_exact_at(&mut raw, t.offset)?;
    Ok(match t.dtype {
        DType::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        DType::F16 => raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        DType::BF16 => raw.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        DType::I64 => raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect(),
        DType::U8 => raw.iter().map(|&b| b as f32).collect(),
        DType::I8 => raw.iter().map(|&b| b as i8 as f32).collect(),
    })
}

/// The default folder for scratch files of packed weights: `packed/` under the runtime cache.
pub fn scratch_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("packed")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dequant(codes: &[u8], scales: &[f32], k: usize, spec: QuantSpec) -> Vec<f32> {
        let blocks = k.div_ceil(spec.block_size);
        let mut out = Vec::new();
        for (bi, s) in scales.iter().enumerate() {
            let blob = &codes[bi * spec.blob()..(bi + 1) * spec.blob()];
            let vals: Vec<i32> = if spec.bits == 4 {
                blob.iter().flat_map(|b| [(b & 15) as i32 - 8, (b >> 4) as i32 - 8]).collect()
            } else {
                blob.iter().map(|&b| b as i32 - 128).collect()
            };
            let take = if (bi + 1) % blocks == 0 { k - (blocks - 1) * spec.block_size } else { spec.block_size };
            out.extend(vals[..take].iter().map(|&q| q as f32 * s));
        }
        out
    }

    /// Within half a step, except that 4-bit (ggml's `Q4_0`) maps the largest magnitude to -8
    /// and clamps the opposite extreme to +7, a whole step short.
    #[test]
    fn quantised_rows_come_back_within_a_step() {
        let (n, k) = (3, 80);
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
        for bits in [4u8, 8] {
            let spec = QuantSpec::new(bits, 32).unwrap();
            let (codes, scales) = quantise_rows(&w, n, k, spec);
            assert_eq!(codes.len(), n * 3 * spec.blob());
            let back = dequant(&codes, &scales, k, spec);
            for (i, (a, b)) in w.iter().zip(&back).enumerate() {
                let s = scales[(i / k) * 3 + (i % k) / 32].abs();
                let bound = if bits == 4 { s } else { 0.5 * s };
                assert!((a - b).abs() <= bound + 1e-6, "bits {bits} element {i}: {a} vs {b} (step {s})");
            }
        }
    }

    #[test]
    fn ggml_blocks_repack_to_the_same_values() {
        // One Q4_0 block: scale 0.5, value j has code j % 16 (low nibbles 0..15, high 15..0).
        let mut q4 = half::f16::from_f32(0.5).to_le_bytes().to_vec();
        q4.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let (mut codes, mut scales) = (Vec::new(), Vec::new());
        ggml_to_nbits(GgmlBlocks::Q4_0, &q4, &mut codes, &mut scales);
        let back = dequant(&codes, &scales, 32, GgmlBlocks::Q4_0.spec());
        let want: Vec<f32> = (0..32).map(|j| if j < 16 { j as f32 - 8.0 } else { (31 - j) as f32 - 8.0 } * 0.5).collect();
        assert_eq!(back, want);
        let mut q8 = half::f16::from_f32(0.25).to_le_bytes().to_vec();
        q8.extend((0..32).map(|j| (j as i8 - 16) as u8));
        let (mut codes, mut scales) = (Vec::new(), Vec::new());
        ggml_to_nbits(GgmlBlocks::Q8_0, &q8, &mut codes, &mut scales);
        let back = dequant(&codes, &scales, 32, GgmlBlocks::Q8_0.spec());
        assert_eq!(back, (0..32).map(|j| (j as f32 - 16.0) * 0.25).collect::<Vec<_>>());
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(QuantSpec::new(3, 32).is_err());
        assert!(QuantSpec::new(4, 48).is_err());
        assert_eq!("int4".parse::<WeightBits>().unwrap(), WeightBits::Int4);
        assert!("int2".parse::<WeightBits>().is_err());
    }
}
