//! GGUF files (version 2 and 3) as stable-diffusion.cpp and ComfyUI-GGUF users have them, and
//! FLUX.2 transformers in BFL naming from either a GGUF or a single safetensors file.
//!
//! A short reader of our own: only the header, the metadata keys (skipped but for
//! `general.alignment`) and the tensor infos are read; tensor data stays on disk. `F32`, `F16`
//! and `BF16` tensors are read in place like safetensors; `Q8_0` and `Q4_0` blocks are repacked
//! into `MatMulNBits`' layout when a graph asks for them ([`PackSource::Ggml`]). The crates that
//! read GGUF are parts of whole inference stacks (candle, llama.cpp bindings); the format needs
//! a hundred lines.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::TensorIndex;
use super::bfl::{self, RowSel};
use super::quant::{GgmlBlocks, PackSource, Packer};
use crate::error::{EngineError, Result};
use crate::graph::{DType, StoredTensor};

/// ggml's tensor type ids (`enum ggml_type`).
const GGML_TYPES: &[(u32, &str)] = &[
    (0, "F32"),
    (1, "F16"),
    (2, "Q4_0"),
    (3, "Q4_1"),
    (6, "Q5_0"),
    (7, "Q5_1"),
    (8, "Q8_0"),
    (9, "Q8_1"),
    (10, "Q2_K"),
    (11, "Q3_K"),
    (12, "Q4_K"),
    (13, "Q5_K"),
    (14, "Q6_K"),
    (15, "Q8_K"),
    (16, "IQ2_XXS"),
    (17, "IQ2_XS"),
    (18, "IQ3_XXS"),
    (19, "IQ1_S"),
    (20, "IQ4_NL"),
    (21, "IQ3_S"),
    (22, "IQ2_S"),
    (23, "IQ4_XS"),
    (24, "I8"),
    (25, "I16"),
    (26, "I32"),
    (27, "I64"),
    (28, "F64"),
    (29, "IQ1_M"),
    (30, "BF16"),
    (34, "TQ1_0"),
    (35, "TQ2_0"),
    (39, "MXFP4"),
];

/// A tensor's stored form, as far as plantain can use it.
#[derive(Clone, Debug, PartialEq)]
pub enum Stored {
    Float(StoredTensor),
    /// Raw ggml blocks of a `[n, k]` matrix.
    Blocks {
        data: StoredTensor,
        blocks: GgmlBlocks,
        n: usize,
        k: usize,
    },
}

/// One tensor of a GGUF file.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTensor {
    pub name: String,
    /// PyTorch order (outermost first; GGUF stores the innermost first).
    pub shape: Vec<usize>,
    /// ggml type id.
    pub ggml_type: u32,
    /// Absolute byte offset of its data in the file.
    pub offset: u64,
}

impl GgufTensor {
    pub fn type_name(&self) -> String {
        GGML_TYPES.iter().find(|(id, _)| *id == self.ggml_type).map_or(format!("ggml type {}", self.ggml_type), |(_, n)| n.to_string())
    }

    /// How plantain reads it; an error names the file, the tensor and its type.
    pub fn stored(&self, file: &Arc<PathBuf>) -> Result<Stored> {
        let float = |dtype| Ok(Stored::Float(StoredTensor { file: file.clone(), offset: self.offset, dtype, shape: self.shape.clone() }));
        let blocks = match self.ggml_type {
            0 => return float(DType::F32),
            1 => return float(DType::F16),
            30 => return float(DType::BF16),
            2 => GgmlBlocks::Q4_0,
            8 => GgmlBlocks::Q8_0,
            _ => {
                return Err(EngineError::Unsupported(format!(
                    "{}: tensor `{}` is stored as {}; plantain reads GGUF tensors in F32, F16, BF16, Q8_0 and Q4_0",
                    file.display(),
                    self.name,
                    self.type_name()
                )));
            }
        };
        match self.shape[..] {
            [n, k] if k.is_multiple_of(GgmlBlocks::BLOCK) => {
                let bytes = n * k / GgmlBlocks::BLOCK * blocks.block_bytes();
                let data = StoredTensor { file: file.clone(), offset: self.offset, dtype: DType::U8, shape: vec![bytes] };
                Ok(Stored::Blocks { data, blocks, n, k })
            }
            _ => Err(EngineError::Unsupported(format!(
                "{}: tensor `{}` of shape {:?} is {}; only matrices with rows of whole 32-value blocks can be",
                file.display(),
                self.name,
                self.shape,
                self.type_name()
            ))),
        }
    }
}

/// The tensor infos of a GGUF file.
#[derive(Clone, Debug)]
pub struct GgufFile {
    pub path: Arc<PathBuf>,
    pub tensors: Vec<GgufTensor>,
}

/// Whether `path` starts with GGUF's magic.
pub fn is_gguf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == b"GGUF"
}

struct Reader<R> {
    r: R,
    pos: u64,
}

impl<R: Read> Reader<R> {
    fn bytes(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        let mut b = vec![0u8; n];
        self.r.read_exact(&mut b)?;
        self.pos += n as u64;
        Ok(b)
    }
    fn u32(&mut self) -> std::io::Result<u32> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> std::io::Result<u64> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().expect("8 bytes")))
    }
    fn string(&mut self) -> std::io::Result<String> {
        let n = self.u64()?;
        if n > 1 << 24 {
            return Err(invalid(format!("a string of {n} bytes")));
        }
        String::from_utf8(self.bytes(n as usize)?).map_err(|e| invalid(e.to_string()))
    }
    /// Skips a metadata value of type `t`; returns it when it is an integer.
    fn value(&mut self, t: u32) -> std::io::Result<Option<u64>> {
        let fixed = match t {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => {
                self.string()?;
                return Ok(None);
            }
            9 => {
                let (et, n) = (self.u32()?, self.u64()?);
                for _ in 0..n {
                    self.value(et)?;
                }
                return Ok(None);
            }
            _ => return Err(invalid(format!("metadata value type {t}"))),
        };
        let b = self.bytes(fixed)?;
        let mut v = [0u8; 8];
        v[..fixed].copy_from_slice(&b);
        Ok((t != 6 && t != 12).then_some(u64::from_le_bytes(v)))
    }
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

impl GgufFile {
    /// Reads the header, metadata and tensor infos.
    pub fn open(path: &Path) -> Result<Self> {
        let corrupt = |reason: String| EngineError::CorruptWeights { path: path.to_path_buf(), reason: format!("GGUF: {reason}") };
        let f = File::open(path).map_err(|e| EngineError::io(path, e))?;
        let file_len = f.metadata().map_err(|e| EngineError::io(path, e))?.len();
        let mut r = Reader { r: BufReader::new(f), pos: 0 };
        let read = |r: &mut Reader<BufReader<File>>| -> std::io::Result<(Vec<GgufTensor>, u64)> {
            if r.bytes(4)? != b"GGUF" {
                return Err(invalid("no GGUF magic".into()));
            }
            let version = r.u32()?;
            if !(2..=3).contains(&version) {
                return Err(invalid(format!("version {version} (2 and 3 are read)")));
            }
            let (n_tensors, n_kv) = (r.u64()?, r.u64()?);
            let mut alignment = 32u64;
            for _ in 0..n_kv {
                let key = r.string()?;
                let t = r.u32()?;
                let v = r.value(t)?;
                if key == "general.alignment" {
                    alignment = v.filter(|a| *a > 0).ok_or_else(|| invalid("general.alignment is not a positive integer".into()))?;
                }
            }
            let mut tensors = Vec::new();
            for _ in 0..n_tensors {
                let name = r.string()?;
                let n_dims = r.u32()?;
                if n_dims > 4 {
                    return Err(invalid(format!("tensor `{name}` has {n_dims} dimensions")));
                }
                let mut shape = (0..n_dims).map(|_| r.u64().map(|d| d as usize)).collect::<std::io::Result<Vec<_>>>()?;
                shape.reverse();
                let (ggml_type, offset) = (r.u32()?, r.u64()?);
                tensors.push(GgufTensor { name, shape, ggml_type, offset });
            }
            Ok((tensors, r.pos.div_ceil(alignment) * alignment))
        };
        let (mut tensors, data_start) = read(&mut r).map_err(|e| corrupt(e.to_string()))?;
        for t in &mut tensors {
            t.offset += data_start;
            if t.offset > file_len {
                return Err(corrupt(format!("tensor `{}` starts past the end of the file (cut short?)", t.name)));
            }
        }
        Ok(Self { path: Arc::new(path.to_path_buf()), tensors })
    }
}

/// Every tensor of a single-file transformer (GGUF, or safetensors in BFL naming), with its
/// original name.
fn single_file_tensors(path: &Path) -> Result<Vec<(String, Stored)>> {
    if is_gguf(path) {
        let f = GgufFile::open(path)?;
        return f.tensors.iter().map(|t| Ok((t.name.clone(), t.stored(&f.path)?))).collect();
    }
    let index = TensorIndex::open(path)?;
    Ok(index.iter().map(|(n, t)| (n.clone(), Stored::Float(t.clone()))).collect())
}

/// A FLUX.2 transformer from one file in BFL naming (GGUF or safetensors), indexed by diffusers
/// names: fused weights split, the final modulation's halves swapped (float ones copied into
/// `packer`'s scratch file; ggml blocks repacked there when a graph asks for them). Tensors
/// FLUX.2 does not use are ignored; an unsupported tensor type is an error at once.
pub fn flux2_transformer(path: &Path, packer: Arc<Packer>) -> Result<TensorIndex> {
    if !path.is_file() {
        return Err(EngineError::MissingFile { what: "FLUX.2 transformer file".into(), looked_for: vec![path.to_path_buf()] });
    }
    let mut index = TensorIndex::default();
    for (name, stored) in single_file_tensors(path)? {
        for (diffusers, sel) in bfl::to_diffusers(bfl::strip_prefix(&name)) {
            match &stored {
                Stored::Float(t) => {
                    let t = match sel {
                        RowSel::All => t.clone(),
                        RowSel::Third(_) => {
                            let r = sel.ranges(t.shape[0]).remove(0);
                            t.rows(r.start, r.end)
                        }
                        RowSel::SwapHalves => packer.copy_rows(t, &sel.ranges(t.shape[0]))?,
                    };
                    index.insert(diffusers, t);
                }
                Stored::Blocks { data, blocks, n, k } => {
                    let src = PackSource::Ggml { data: data.clone(), blocks: *blocks, k: *k, rows: sel.ranges(*n) };
                    index.insert_packed(diffusers, src);
                }
            }
        }
    }
    if index.names().next().is_none() {
        return Err(EngineError::Unsupported(format!(
            "{}: no tensor has a FLUX.2 transformer name (double_blocks.N.img_attn.qkv.weight, …)",
            path.display()
        )));
    }
    Ok(index.with_packer(packer))
}
