//! Export a [`Graph`] as an ONNX model whose weights stay in the checkpoint files.
//!
//! Each stored weight becomes an initializer with `data_location = EXTERNAL` pointing at its byte
//! range inside the safetensors file (safetensors data is raw little-endian, exactly what ONNX
//! external data expects). The model file is written next to a symlink to each checkpoint file,
//! because ONNX Runtime only resolves external data relative to the model's own folder.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;

use super::onnx_proto::*;
use super::{DType, Dim, Graph, Op, ResizeMode, StoredTensor, Value};

/// ONNX IR version and default-domain opset we target (ONNX Runtime 1.31 supports both).
const IR_VERSION: i64 = 9;
const OPSET: i64 = 20;

/// ONNX Runtime's contrib operator domain.
const MS_DOMAIN: &str = "com.microsoft";

/// The default-domain opset, plus ONNX Runtime's contrib domain when a node uses it.
fn opsets(graph: &Graph) -> Vec<OperatorSetIdProto> {
    let mut sets = vec![OperatorSetIdProto { domain: String::new(), version: OPSET }];
    if graph.nodes.iter().any(|n| matches!(n.op, Op::MultiHeadAttention { .. } | Op::MatMulNBits { .. } | Op::DynamicQuantizeMatMul)) {
        sets.push(OperatorSetIdProto { domain: MS_DOMAIN.into(), version: 1 });
    }
    sets
}

fn name(v: Value) -> String {
    format!("v{}", v.0)
}

fn onnx_dtype(d: DType) -> i32 {
    match d {
        DType::F32 => data_type::FLOAT,
        DType::F16 => data_type::FLOAT16,
        DType::BF16 => data_type::BFLOAT16,
        DType::I64 => data_type::INT64,
        DType::U8 => data_type::UINT8,
        DType::I8 => data_type::INT8,
    }
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto { name: name.into(), i, r#type: attr_type::INT, ..Default::default() }
}
fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto { name: name.into(), f, r#type: attr_type::FLOAT, ..Default::default() }
}
fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), ints: ints.to_vec(), r#type: attr_type::INTS, ..Default::default() }
}
fn attr_str(name: &str, s: &str) -> AttributeProto {
    AttributeProto { name: name.into(), s: s.as_bytes().to_vec(), r#type: attr_type::STRING, ..Default::default() }
}
fn i64_tensor(name: String, data: &[i64]) -> TensorProto {
    TensorProto {
        name,
        dims: vec![data.len() as i64],
        data_type: data_type::INT64,
        raw_data: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// The element type of every value, needed to declare graph outputs.
pub fn value_dtypes(graph: &Graph) -> Vec<DType> {
    let mut out: Vec<DType> = Vec::with_capacity(graph.nodes.len());
    for node in &graph.nodes {
        let first = node.inputs.first().map(|v| out[v.0]);
        out.push(match &node.op {
            Op::Input { dtype, .. } => *dtype,
            Op::ConstI64 { .. } | Op::Shape | Op::ArgMax { .. } => DType::I64,
            Op::Weight(stored) if matches!(stored.dtype, DType::U8 | DType::I8) => stored.dtype,
            Op::Reshape
            | Op::Transpose { .. }
            | Op::Concat { .. }
            | Op::Slice { .. }
            | Op::Unsqueeze { .. }
            | Op::Gather { .. }
            | Op::GatherNdBatch1 => first.unwrap_or(DType::F32),
            _ => DType::F32,
        });
    }
    out
}

/// Builds the ONNX model; `file_name` maps each checkpoint path to the location written in the
/// model (relative to the model's folder).
pub fn to_model_proto(graph: &Graph, file_name: &dyn Fn(&Path) -> String) -> ModelProto {
    let mut proto = ProtoGraph { file_name, nodes: Vec::new(), initializers: Vec::new(), inputs: Vec::new(), aux: 0 };
    for (idx, node) in graph.nodes.iter().enumerate() {
        proto.add(idx, &node.op, node.inputs.iter().map(|v| name(*v)).collect());
    }
    let dtypes = value_dtypes(graph);
    let mut outputs = Vec::new();
    for (out_name, v) in &graph.outputs {
        proto.nodes.push(NodeProto {
            input: vec![name(*v)],
            output: vec![out_name.clone()],
            name: format!("out_{out_name}"),
            op_type: "Identity".into(),
            ..Default::default()
        });
        outputs.push(value_info(out_name, dtypes[v.0], None));
    }
    let ProtoGraph { nodes, initializers, inputs, .. } = proto;
    ModelProto {
        ir_version: IR_VERSION,
        producer_name: "plantain".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(GraphProto { node: nodes, name: "plantain".into(), initializer: initializers, input: inputs, output: outputs }),
        opset_import: opsets(graph),
        metadata_props: vec![],
    }
}

/// An ONNX graph being built from a [`Graph`]'s nodes, in order: its nodes, initializers and
/// inputs so far, and a counter that names the auxiliary constants some ops need.
struct ProtoGraph<'a> {
    /// Maps each checkpoint path to the location written in the model.
    file_name: &'a dyn Fn(&Path) -> String,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    aux: usize,
}

impl ProtoGraph<'_> {
    /// Adds node `idx` (op `op` on the values named `ins`), whose output is named after it.
    fn add(&mut self, idx: usize, op: &Op, ins: Vec<String>) {
        let out = name(Value(idx));
        match op {
            Op::Input { name: input_name, dtype, dims } => {
                self.inputs.push(value_info(input_name, *dtype, Some(dims)));
                self.node(idx, "Identity", vec![input_name.clone()], vec![]);
            }
            Op::Weight(stored) => self.weight(idx, stored),
            Op::ConstF32 { shape, data } => self.initializers.push(TensorProto {
                name: out,
                dims: shape.iter().map(|&d| d as i64).collect(),
                data_type: data_type::FLOAT,
                raw_data: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ..Default::default()
            }),
            Op::ConstI64 { shape, data } => {
                let mut t = i64_tensor(out, data);
                t.dims = shape.iter().map(|&d| d as i64).collect();
                self.initializers.push(t);
            }
            Op::Conv { stride, pads } => {
                self.node(idx, "Conv", ins, vec![attr_ints("strides", &[*stride, *stride]), attr_ints("pads", pads)])
            }
            Op::MatMul => self.node(idx, "MatMul", ins, vec![]),
            Op::Add => self.node(idx, "Add", ins, vec![]),
            Op::Sub => self.node(idx, "Sub", ins, vec![]),
            Op::Mul => self.node(idx, "Mul", ins, vec![]),
            Op::Div => self.node(idx, "Div", ins, vec![]),
            Op::Sigmoid => self.node(idx, "Sigmoid", ins, vec![]),
            Op::Relu => self.node(idx, "Relu", ins, vec![]),
            Op::Tanh => self.node(idx, "Tanh", ins, vec![]),
            Op::Gelu => self.node(idx, "Gelu", ins, vec![]),
            Op::Sin => self.node(idx, "Sin", ins, vec![]),
            Op::Cos => self.node(idx, "Cos", ins, vec![]),
            Op::Exp => self.node(idx, "Exp", ins, vec![]),
            Op::Sqrt => self.node(idx, "Sqrt", ins, vec![]),
            Op::MultiHeadAttention { heads } => {
                self.node(idx, "MultiHeadAttention", ins, vec![attr_int("num_heads", *heads)]);
                if let Some(n) = self.nodes.last_mut() {
                    n.domain = MS_DOMAIN.into();
                }
            }
            Op::MatMulNBits { k, n, bits, block_size, accuracy_level } => {
                let attrs = vec![
                    attr_int("K", *k),
                    attr_int("N", *n),
                    attr_int("bits", *bits),
                    attr_int("block_size", *block_size),
                    attr_int("accuracy_level", *accuracy_level),
                ];
                self.node(idx, "MatMulNBits", ins, attrs);
                if let Some(n) = self.nodes.last_mut() {
                    n.domain = MS_DOMAIN.into();
                }
            }
            Op::DynamicQuantizeMatMul => {
                self.node(idx, "DynamicQuantizeMatMul", ins, vec![]);
                if let Some(n) = self.nodes.last_mut() {
                    n.domain = MS_DOMAIN.into();
                }
            }
            Op::DequantizeAxis0 => self.node(idx, "DequantizeLinear", ins, vec![attr_int("axis", 0)]),
            Op::Softmax { axis } => self.node(idx, "Softmax", ins, vec![attr_int("axis", *axis)]),
            Op::LayerNorm { eps } => self.node(idx, "LayerNormalization", ins, vec![attr_int("axis", -1), attr_float("epsilon", *eps)]),
            Op::InstanceNorm { eps } => self.node(idx, "InstanceNormalization", ins, vec![attr_float("epsilon", *eps)]),
            Op::Reshape => self.node(idx, "Reshape", ins, vec![]),
            Op::Transpose { perm } => self.node(idx, "Transpose", ins, vec![attr_ints("perm", perm)]),
            Op::Concat { axis } => self.node(idx, "Concat", ins, vec![attr_int("axis", *axis)]),
            Op::Slice { axis, start, end } => {
                let (s, e, a) = (self.aux_i64("starts", &[*start]), self.aux_i64("ends", &[*end]), self.aux_i64("axes", &[*axis]));
                self.node(idx, "Slice", vec![ins[0].clone(), s, e, a], vec![]);
            }
            Op::Unsqueeze { axes } => {
                let a = self.aux_i64("axes", axes);
                self.node(idx, "Unsqueeze", vec![ins[0].clone(), a], vec![]);
            }
            Op::Gather { axis } => self.node(idx, "Gather", ins, vec![attr_int("axis", *axis)]),
            Op::GatherNdBatch1 => self.node(idx, "GatherND", ins, vec![attr_int("batch_dims", 1)]),
            Op::ArgMax { axis } => self.node(idx, "ArgMax", ins, vec![attr_int("axis", *axis), attr_int("keepdims", 0)]),
            Op::Shape => self.node(idx, "Shape", ins, vec![]),
            Op::CastF32 => self.node(idx, "Cast", ins, vec![attr_int("to", data_type::FLOAT as i64)]),
            Op::ResizeNearest2x => self.resize_nearest_2x(idx, &ins[0]),
            Op::SpaceToDepth { block } => self.node(idx, "SpaceToDepth", ins, vec![attr_int("blocksize", *block)]),
            // ONNX's default mode is DCR, the inverse of SpaceToDepth.
            Op::DepthToSpace { block } => self.node(idx, "DepthToSpace", ins, vec![attr_int("blocksize", *block)]),
            Op::Pad { pads } => {
                let p = self.aux_i64("pads", pads);
                self.node(idx, "Pad", vec![ins[0].clone(), p], vec![]);
            }
            Op::ReduceMean { axis } => {
                let a = self.aux_i64("axes", &[*axis]);
                self.node(idx, "ReduceMean", vec![ins[0].clone(), a], vec![attr_int("keepdims", 1)]);
            }
            Op::PRelu => self.node(idx, "PRelu", ins, vec![]),
            Op::LeakyRelu { alpha } => self.node(idx, "LeakyRelu", ins, vec![attr_float("alpha", *alpha)]),
            Op::PixelShuffle { block } => self.node(idx, "DepthToSpace", ins, vec![attr_int("blocksize", *block), attr_str("mode", "CRD")]),
            Op::Resize { mode, scale_h, scale_w } => self.resize(idx, &ins[0], *mode, [*scale_h, *scale_w]),
        }
    }

    /// Appends an `op` node for graph node `idx`, with its output named after it.
    fn node(&mut self, idx: usize, op: &str, inputs: Vec<String>, attrs: Vec<AttributeProto>) {
        self.nodes.push(NodeProto {
            input: inputs,
            output: vec![name(Value(idx))],
            name: format!("n{idx}"),
            op_type: op.into(),
            attribute: attrs,
            domain: String::new(),
        });
    }

    /// Adds an auxiliary i64 constant (an op's axes, pads, …) as an initializer; returns its name.
    fn aux_i64(&mut self, what: &str, data: &[i64]) -> String {
        self.aux += 1;
        let aux_name = format!("{what}_{}", self.aux);
        self.initializers.push(i64_tensor(aux_name.clone(), data));
        aux_name
    }

    /// A stored weight: an external-data initializer read in place from its checkpoint file,
    /// cast to f32 when it is stored in another float type (raw bytes stay as they are).
    fn weight(&mut self, idx: usize, stored: &StoredTensor) {
        let as_is = matches!(stored.dtype, DType::F32 | DType::U8 | DType::I8);
        let init_name = if as_is { name(Value(idx)) } else { format!("w{idx}") };
        self.initializers.push(TensorProto {
            name: init_name.clone(),
            dims: stored.shape.iter().map(|&d| d as i64).collect(),
            data_type: onnx_dtype(stored.dtype),
            external_data: vec![
                entry("location", &(self.file_name)(&stored.file)),
                entry("offset", &stored.offset.to_string()),
                entry("length", &stored.byte_len().to_string()),
            ],
            data_location: 1,
            ..Default::default()
        });
        if !as_is {
            self.node(idx, "Cast", vec![init_name], vec![attr_int("to", data_type::FLOAT as i64)]);
        }
    }

    /// Nearest-neighbour 2x upsampling of `input` as a Resize with constant scales.
    fn resize_nearest_2x(&mut self, idx: usize, input: &str) {
        self.aux += 1;
        let scales = format!("scales_{}", self.aux);
        self.initializers.push(TensorProto {
            name: scales.clone(),
            dims: vec![4],
            data_type: data_type::FLOAT,
            raw_data: [1f32, 1.0, 2.0, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect(),
            ..Default::default()
        });
        // mode "nearest", coordinate_transformation_mode "half_pixel" and nearest_mode
        // "round_prefer_floor" are the defaults; for an exact 2x scale they pick the same
        // source pixel as torch's nearest (floor(dst / 2)).
        self.node(idx, "Resize", vec![input.to_string(), String::new(), scales], vec![]);
    }

    /// A Resize of the spatial axes by constant `scales` (height, width), as ncnn's `Interp`
    /// computes it: nearest takes source pixel `floor(dst / scale)`; (bi)linear and cubic sample
    /// at half-pixel centres, cubic with Keys' a = -0.75.
    fn resize(&mut self, idx: usize, input: &str, mode: ResizeMode, scales: [f32; 2]) {
        self.aux += 1;
        let scales_name = format!("scales_{}", self.aux);
        self.initializers.push(TensorProto {
            name: scales_name.clone(),
            dims: vec![4],
            data_type: data_type::FLOAT,
            raw_data: [1f32, 1.0, scales[0], scales[1]].iter().flat_map(|x| x.to_le_bytes()).collect(),
            ..Default::default()
        });
        let attrs = match mode {
            ResizeMode::Nearest => vec![
                attr_str("mode", "nearest"),
                attr_str("coordinate_transformation_mode", "asymmetric"),
                attr_str("nearest_mode", "floor"),
            ],
            ResizeMode::Bilinear => vec![attr_str("mode", "linear")],
            ResizeMode::Bicubic => vec![attr_str("mode", "cubic"), attr_float("cubic_coeff_a", -0.75)],
        };
        self.node(idx, "Resize", vec![input.to_string(), String::new(), scales_name], attrs);
    }
}

fn entry(key: &str, value: &str) -> StringStringEntryProto {
    StringStringEntryProto { key: key.into(), value: value.into() }
}

fn value_info(name: &str, dtype: DType, dims: Option<&Vec<Dim>>) -> ValueInfoProto {
    let shape = dims.map(|dims| TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => Dimension { dim_value: Some(*n), dim_param: None },
                Dim::Named(s) => Dimension { dim_value: None, dim_param: Some((*s).to_string()) },
            })
            .collect(),
    });
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto { tensor_type: Some(TypeProtoTensor { elem_type: onnx_dtype(dtype), shape }) }),
    }
}

/// Serialises `graph` as an ONNX model whose weights are external data read in place from the
/// checkpoint files. Each location is the file's canonical path relative to `/`: the session is
/// created from memory with `/` as its external-data folder (ONNX Runtime refuses locations that
/// escape that folder, which rules out symlinks from a cache folder).
pub fn model_bytes(graph: &Graph) -> io::Result<Vec<u8>> {
    let mut locations: HashMap<Arc<PathBuf>, String> = HashMap::new();
    for node in &graph.nodes {
        if let Op::Weight(stored) = &node.op
            && !locations.contains_key(&stored.file)
        {
            let canonical = std::fs::canonicalize(stored.file.as_path())?;
            let rel = canonical.strip_prefix("/").map(Path::to_path_buf).unwrap_or(canonical);
            locations.insert(stored.file.clone(), rel.to_string_lossy().into_owned());
        }
    }
    let lookup = |p: &Path| locations.iter().find(|(k, _)| k.as_path() == p).map(|(_, v)| v.clone()).unwrap_or_default();
    Ok(to_model_proto(graph, &lookup).encode_to_vec())
}
