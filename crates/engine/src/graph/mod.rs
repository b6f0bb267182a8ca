//! A small, backend-neutral tensor graph.
//!
//! Every network (CLIP text, UNet, VAE, TAESD) is described once, as code that calls this
//! builder. The graph refers to weights by *where they are stored* (a byte range of a
//! safetensors file) rather than copying them, so exporting it to ONNX costs nothing and ONNX
//! Runtime reads the user's checkpoint directly. Layout fix-ups that checkpoints need
//! (transposing linear weights, 1x1-conv vs linear attention weights, fp16/bf16 → f32) are graph
//! nodes over initializers, which ONNX Runtime constant-folds once at session creation.

pub mod onnx;
pub mod onnx_proto;

use std::path::PathBuf;
use std::sync::Arc;

/// Element types a graph value or stored weight can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    I64,
    /// Raw bytes (packed low-bit weights); used as is, never cast.
    U8,
    /// Signed 8-bit codes (per-channel quantised weights); used as is, never cast.
    I8,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I64 => 8,
            DType::U8 | DType::I8 => 1,
        }
    }
}

/// Where a weight's bytes live: a contiguous little-endian range of a file.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredTensor {
    pub file: Arc<PathBuf>,
    pub offset: u64,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl StoredTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn byte_len(&self) -> u64 {
        (self.numel() * self.dtype.size()) as u64
    }
    /// Rows `start..end` of the leading axis, still a contiguous byte range (used to split the
    /// fused q/k/v projections of OpenCLIP checkpoints without copying).
    pub fn rows(&self, start: usize, end: usize) -> StoredTensor {
        let row: usize = self.shape[1..].iter().product::<usize>() * self.dtype.size();
        let mut shape = self.shape.clone();
        shape[0] = end - start;
        StoredTensor { file: self.file.clone(), offset: self.offset + (start * row) as u64, dtype: self.dtype, shape }
    }
}

/// A symbolic or fixed dimension of a graph input.
#[derive(Clone, Debug, PartialEq)]
pub enum Dim {
    Fixed(i64),
    Named(&'static str),
}

/// A handle to the (single) output of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Value(pub(crate) usize);

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Input {
        name: String,
        dtype: DType,
        dims: Vec<Dim>,
    },
    /// A stored weight, converted to f32 on use.
    Weight(StoredTensor),
    ConstF32 {
        shape: Vec<usize>,
        data: Vec<f32>,
    },
    ConstI64 {
        shape: Vec<usize>,
        data: Vec<i64>,
    },
    Conv {
        stride: i64,
        pads: [i64; 4],
    },
    MatMul,
    Add,
    Sub,
    Mul,
    Div,
    Sigmoid,
    Relu,
    Tanh,
    Gelu,
    Sin,
    Cos,
    Exp,
    Sqrt,
    Softmax {
        axis: i64,
    },
    LayerNorm {
        eps: f32,
    },
    InstanceNorm {
        eps: f32,
    },
    /// Target shape as a value (ONNX semantics: 0 copies the input dim, -1 is inferred).
    Reshape,
    Transpose {
        perm: Vec<i64>,
    },
    Concat {
        axis: i64,
    },
    Slice {
        axis: i64,
        start: i64,
        end: i64,
    },
    Unsqueeze {
        axes: Vec<i64>,
    },
    Gather {
        axis: i64,
    },
    /// ONNX `GatherND` with `batch_dims = 1`: row `indices[b]` of batch item `b`.
    GatherNdBatch1,
    ArgMax {
        axis: i64,
    },
    Shape,
    CastF32,
    ResizeNearest2x,
    /// ONNX `SpaceToDepth` (output channel `(dy * b + dx) * C + c`).
    SpaceToDepth {
        block: i64,
    },
    /// ONNX `DepthToSpace`, DCR mode (the inverse of `SpaceToDepth`).
    DepthToSpace {
        block: i64,
    },
    Pad {
        pads: Vec<i64>,
    },
    /// ONNX Runtime's `com.microsoft.MultiHeadAttention` over `[B, S, heads*dim]` queries, keys
    /// and values, scaled by `1/sqrt(dim)`, no mask: fused kernels (flash attention on CPU and
    /// CUDA) that do not materialise the full score matrix.
    MultiHeadAttention {
        heads: i64,
    },
    /// ONNX Runtime's `com.microsoft.MatMulNBits`: `A [.., K] @ dequant(B)^T` for weights `B`
    /// stored as `[N, K/block, block*bits/8]` bytes with one f32 scale per block (inputs: A, B,
    /// scales; no zero points, so the implicit zero point `2^(bits-1)` makes them symmetric).
    MatMulNBits {
        k: i64,
        n: i64,
        bits: i64,
        block_size: i64,
        accuracy_level: i64,
    },
    /// ONNX Runtime's `com.microsoft.DynamicQuantizeMatMul`: `A [.., K]` quantised to 8 bits per
    /// tensor as it runs, times int8 `B [K, N]` with one scale per column (inputs: A, B,
    /// b_scale; no zero point: symmetric weights), in f32.
    DynamicQuantizeMatMul,
    /// ONNX `DequantizeLinear` along axis 0: `codes [N, ..]` (I8) times `scales [N]`, as f32
    /// (inputs: codes, scales; zero point 0).
    DequantizeAxis0,
    /// Mean over one axis, kept as size 1.
    ReduceMean {
        axis: i64,
    },
    /// `x` where positive, else `slope * x`; the slope (second input) broadcasts.
    PRelu,
    LeakyRelu {
        alpha: f32,
    },
    /// PyTorch's `pixel_shuffle` (ONNX `DepthToSpace`, mode CRD).
    PixelShuffle {
        block: i64,
    },
    /// Resampling of the two spatial axes by constant factors (output size `floor(in * scale)`).
    Resize {
        mode: ResizeMode,
        scale_h: f32,
        scale_w: f32,
    },
}

/// How [`Op::Resize`] interpolates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeMode {
    /// Source pixel `floor(dst / scale)`.
    Nearest,
    /// Half-pixel centres.
    Bilinear,
    /// Half-pixel centres, Keys cubic with a = -0.75 (OpenCV's and ncnn's bicubic).
    Bicubic,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<Value>,
}

/// A finished graph: nodes in topological order plus named outputs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub outputs: Vec<(String, Value)>,
    /// Files written at load (packed weights) that the graph's weights point into; they are
    /// deleted when the last graph or index holding them is dropped.
    pub scratch: Vec<Arc<ScratchFile>>,
}

/// A file of weights written at load time, deleted when dropped. ONNX Runtime reads it while a
/// session is created; on Unix a session that mapped it keeps its pages after the deletion.
#[derive(Debug, PartialEq)]
pub struct ScratchFile {
    pub path: Arc<PathBuf>,
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path.as_path());
    }
}

/// A linear layer's weight `[n, k]` quantised to `bits` in blocks of `block_size` along `k`,
/// in [`Op::MatMulNBits`]' layout: `b` is `U8 [n, ceil(k/block), block*bits/8]` (element `2i`
/// of a 4-bit block in the low nibble of byte `i`), `scales` is `F32 [n * ceil(k/block)]`, and
/// a stored code `q` means `(q - 2^(bits-1)) * scale`.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedLinear {
    pub n: usize,
    pub k: usize,
    pub bits: u8,
    pub block_size: usize,
    pub b: StoredTensor,
    pub scales: StoredTensor,
    /// The file `b` and `scales` live in, when written at load.
    pub scratch: Option<Arc<ScratchFile>>,
}

/// A weight `[n, ..]` quantised to signed 8 bits with one f32 scale per leading index (per
/// output channel of a convolution): element `q` of row `r` means `q * scales[r]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelQuant {
    /// `I8`, the weight's own shape.
    pub codes: StoredTensor,
    /// `F32 [n]`.
    pub scales: StoredTensor,
    pub scratch: Arc<ScratchFile>,
}

/// A linear layer's weight `[n, k]` for [`Op::DynamicQuantizeMatMul`]: signed 8-bit codes stored
/// transposed, `codes` `I8 [k, n]`, with one f32 scale per output channel, `scales` `F32 [n]`;
/// code `q` at `[c, r]` means `q * scales[r]` for weight element `[r, c]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnQuant {
    pub k: usize,
    pub n: usize,
    pub codes: StoredTensor,
    pub scales: StoredTensor,
    pub scratch: Arc<ScratchFile>,
}

/// Builds a [`Graph`]. Methods mirror the handful of operators diffusion networks need.
#[derive(Default)]
pub struct GraphBuilder {
    graph: Graph,
}

impl GraphBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, op: Op, inputs: &[Value]) -> Value {
        self.graph.nodes.push(Node { op, inputs: inputs.to_vec() });
        Value(self.graph.nodes.len() - 1)
    }

    pub fn finish(mut self, outputs: &[(&str, Value)]) -> Graph {
        self.graph.outputs = outputs.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        self.graph
    }

    pub fn input(&mut self, name: &str, dtype: DType, dims: Vec<Dim>) -> Value {
        self.push(Op::Input { name: name.into(), dtype, dims }, &[])
    }
    /// Keeps a scratch file that weights of this graph are read from alive as long as the graph.
    pub fn keep(&mut self, file: &Arc<ScratchFile>) {
        if !self.graph.scratch.iter().any(|s| Arc::ptr_eq(s, file)) {
            self.graph.scratch.push(file.clone());
        }
    }
    pub fn weight(&mut self, stored: StoredTensor) -> Value {
        self.push(Op::Weight(stored), &[])
    }
    pub fn const_f32(&mut self, shape: &[usize], data: Vec<f32>) -> Value {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        self.push(Op::ConstF32 { shape: shape.to_vec(), data }, &[])
    }
    pub fn scalar(&mut self, v: f32) -> Value {
        self.const_f32(&[], vec![v])
    }
    pub fn const_i64(&mut self, data: &[i64]) -> Value {
        self.push(Op::ConstI64 { shape: vec![data.len()], data: data.to_vec() }, &[])
    }

    pub fn conv2d(&mut self, x: Value, w: Value, b: Option<Value>, stride: i64, pad: i64) -> Value {
        self.conv2d_pads(x, w, b, stride, [pad; 4])
    }
    /// `pads` is ONNX order: top, left, bottom, right.
    pub fn conv2d_pads(&mut self, x: Value, w: Value, b: Option<Value>, stride: i64, pads: [i64; 4]) -> Value {
        let mut inputs = vec![x, w];
        inputs.extend(b);
        self.push(Op::Conv { stride, pads }, &inputs)
    }
    pub fn matmul(&mut self, a: Value, b: Value) -> Value {
        self.push(Op::MatMul, &[a, b])
    }
    pub fn add(&mut self, a: Value, b: Value) -> Value {
        self.push(Op::Add, &[a, b])
    }
    pub fn sub(&mut self, a: Value, b: Value) -> Value {
        self.push(Op::Sub, &[a, b])
    }
    pub fn mul(&mut self, a: Value, b: Value) -> Value {
        self.push(Op::Mul, &[a, b])
    }
    pub fn div(&mut self, a: Value, b: Value) -> Value {
        self.push(Op::Div, &[a, b])
    }
    pub fn mul_scalar(&mut self, a: Value, s: f32) -> Value {
        let c = self.scalar(s);
        self.mul(a, c)
    }
    pub fn sigmoid(&mut self, x: Value) -> Value {
        self.push(Op::Sigmoid, &[x])
    }
    pub fn relu(&mut self, x: Value) -> Value {
        self.push(Op::Relu, &[x])
    }
    pub fn tanh(&mut self, x: Value) -> Value {
        self.push(Op::Tanh, &[x])
    }
    /// Exact (erf) GELU.
    pub fn gelu(&mut self, x: Value) -> Value {
        self.push(Op::Gelu, &[x])
    }
    pub fn silu(&mut self, x: Value) -> Value {
        let s = self.sigmoid(x);
        self.mul(x, s)
    }
    /// CLIP's `quick_gelu`: x * sigmoid(1.702 x).
    pub fn quick_gelu(&mut self, x: Value) -> Value {
        let k = self.mul_scalar(x, 1.702);
        let s = self.sigmoid(k);
        self.mul(x, s)
    }
    pub fn sin(&mut self, x: Value) -> Value {
        self.push(Op::Sin, &[x])
    }
    pub fn cos(&mut self, x: Value) -> Value {
        self.push(Op::Cos, &[x])
    }
    pub fn exp(&mut self, x: Value) -> Value {
        self.push(Op::Exp, &[x])
    }
    pub fn sqrt(&mut self, x: Value) -> Value {
        self.push(Op::Sqrt, &[x])
    }
    pub fn softmax(&mut self, x: Value, axis: i64) -> Value {
        self.push(Op::Softmax { axis }, &[x])
    }
    /// Layer norm over the last axis.
    pub fn layer_norm(&mut self, x: Value, gamma: Value, beta: Value, eps: f32) -> Value {
        self.push(Op::LayerNorm { eps }, &[x, gamma, beta])
    }
    /// Group norm of an NC... tensor with per-channel affine `gamma`/`beta` of length `channels`.
    pub fn group_norm(&mut self, x: Value, groups: usize, channels: usize, gamma: Value, beta: Value, eps: f32) -> Value {
        // InstanceNorm over [N, groups, rest] is exactly group norm without the affine part.
        let shape = self.shape(x);
        let flat_shape = self.const_i64(&[0, groups as i64, -1]);
        let flat = self.reshape(x, flat_shape);
        let ones = self.const_f32(&[groups], vec![1.0; groups]);
        let zeros = self.const_f32(&[groups], vec![0.0; groups]);
        let normed = self.push(Op::InstanceNorm { eps }, &[flat, ones, zeros]);
        let y = self.reshape(normed, shape);
        let affine_shape = self.const_i64(&[channels as i64, 1, 1]);
        let g = self.reshape(gamma, affine_shape);
        let b = self.reshape(beta, affine_shape);
        let y = self.mul(y, g);
        self.add(y, b)
    }
    pub fn reshape(&mut self, x: Value, shape: Value) -> Value {
        self.push(Op::Reshape, &[x, shape])
    }
    pub fn reshape_to(&mut self, x: Value, shape: &[i64]) -> Value {
        let s = self.const_i64(shape);
        self.reshape(x, s)
    }
    pub fn transpose(&mut self, x: Value, perm: &[i64]) -> Value {
        self.push(Op::Transpose { perm: perm.to_vec() }, &[x])
    }
    pub fn concat(&mut self, xs: &[Value], axis: i64) -> Value {
        self.push(Op::Concat { axis }, xs)
    }
    pub fn slice(&mut self, x: Value, axis: i64, start: i64, end: i64) -> Value {
        self.push(Op::Slice { axis, start, end }, &[x])
    }
    pub fn unsqueeze(&mut self, x: Value, axes: &[i64]) -> Value {
        self.push(Op::Unsqueeze { axes: axes.to_vec() }, &[x])
    }
    pub fn gather(&mut self, data: Value, indices: Value, axis: i64) -> Value {
        self.push(Op::Gather { axis }, &[data, indices])
    }
    pub fn gather_nd_batch1(&mut self, data: Value, indices: Value) -> Value {
        self.push(Op::GatherNdBatch1, &[data, indices])
    }
    /// Index of the first maximum along `axis` (keepdims = 0).
    pub fn argmax(&mut self, x: Value, axis: i64) -> Value {
        self.push(Op::ArgMax { axis }, &[x])
    }
    pub fn shape(&mut self, x: Value) -> Value {
        self.push(Op::Shape, &[x])
    }
    pub fn cast_f32(&mut self, x: Value) -> Value {
        self.push(Op::CastF32, &[x])
    }
    /// Nearest-neighbour 2x upsampling of the two spatial axes (torch `interpolate(scale_factor=2)`).
    pub fn upsample_nearest2x(&mut self, x: Value) -> Value {
        self.push(Op::ResizeNearest2x, &[x])
    }
    pub fn space_to_depth(&mut self, x: Value, block: i64) -> Value {
        self.push(Op::SpaceToDepth { block }, &[x])
    }
    pub fn depth_to_space(&mut self, x: Value, block: i64) -> Value {
        self.push(Op::DepthToSpace { block }, &[x])
    }
    /// Zero padding; `pads` in ONNX order (all begins, then all ends).
    pub fn pad(&mut self, x: Value, pads: &[i64]) -> Value {
        self.push(Op::Pad { pads: pads.to_vec() }, &[x])
    }
    /// Fused scaled dot-product attention (see [`Op::MultiHeadAttention`]).
    pub fn multi_head_attention(&mut self, q: Value, k: Value, v: Value, heads: usize) -> Value {
        self.push(Op::MultiHeadAttention { heads: heads as i64 }, &[q, k, v])
    }
    /// Mean along `axis`, which stays in the shape with size 1.
    pub fn reduce_mean(&mut self, x: Value, axis: i64) -> Value {
        self.push(Op::ReduceMean { axis }, &[x])
    }
    pub fn prelu(&mut self, x: Value, slope: Value) -> Value {
        self.push(Op::PRelu, &[x, slope])
    }
    pub fn leaky_relu(&mut self, x: Value, alpha: f32) -> Value {
        self.push(Op::LeakyRelu { alpha }, &[x])
    }
    /// PyTorch's `pixel_shuffle` (see [`Op::PixelShuffle`]).
    pub fn pixel_shuffle(&mut self, x: Value, block: i64) -> Value {
        self.push(Op::PixelShuffle { block }, &[x])
    }
    pub fn resize(&mut self, x: Value, mode: ResizeMode, scale_h: f32, scale_w: f32) -> Value {
        self.push(Op::Resize { mode, scale_h, scale_w }, &[x])
    }
    /// `x [.., k] → [.., n]` through a weight-only quantised linear layer (activations stay f32;
    /// `accuracy_level` 4 lets ONNX Runtime quantise activations to int8 per block where it has
    /// such a kernel, 1 keeps them f32). Any network can use it instead of `matmul` with a dense
    /// transposed weight.
    pub fn linear_nbits(&mut self, x: Value, w: &PackedLinear, accuracy_level: i64) -> Value {
        if let Some(f) = &w.scratch {
            self.keep(f);
        }
        let b = self.weight(w.b.clone());
        let scales = self.weight(w.scales.clone());
        let op = Op::MatMulNBits { k: w.k as i64, n: w.n as i64, bits: w.bits as i64, block_size: w.block_size as i64, accuracy_level };
        self.push(op, &[x, b, scales])
    }

    /// `x [.., k] → [.., n]` through an 8-bit linear layer whose activations are quantised per
    /// tensor as it runs ([`Op::DynamicQuantizeMatMul`]).
    pub fn linear_dynamic_int8(&mut self, x: Value, w: &ColumnQuant) -> Value {
        self.keep(&w.scratch);
        let b = self.weight(w.codes.clone());
        let scales = self.weight(w.scales.clone());
        self.push(Op::DynamicQuantizeMatMul, &[x, b, scales])
    }

    /// The f32 weight of `w`, dequantised when the network runs, just before `consumer_input` is
    /// used: the scales are reshaped by a shape computed from that value's (dynamic) batch size,
    /// so ONNX Runtime can neither fold the weight into an f32 constant at load nor compute it
    /// early and hold every dequantised weight at once. Only the one being used is ever f32.
    pub fn dequantized(&mut self, w: &ChannelQuant, consumer_input: Value) -> Value {
        self.keep(&w.scratch);
        let codes = self.weight(w.codes.clone());
        let scales = self.weight(w.scales.clone());
        let shape = self.shape(consumer_input);
        let batch = self.slice(shape, 0, 0, 1);
        let zero = self.const_i64(&[0]);
        let nothing = self.mul(batch, zero);
        let rows = self.const_i64(&[w.codes.shape[0] as i64]);
        let target = self.add(nothing, rows);
        let scales = self.reshape(scales, target);
        self.push(Op::DequantizeAxis0, &[codes, scales])
    }
}
