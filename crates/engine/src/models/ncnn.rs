//! Networks stored in ncnn's format (a `.param` text file listing the layers, a `.bin` file with
//! their weights), read into a [`Graph`] whose weights are read in place from the `.bin`.
//!
//! Only the subset the Real-ESRGAN files use is read: `Input`, `Split`, `Convolution` (with a fused
//! ReLU / leaky ReLU / sigmoid), `PReLU`, `ReLU`, `Concat`, `Eltwise`, `BinaryOp`, `Interp`
//! (nearest, bilinear, bicubic by constant factors) and `PixelShuffle`. Anything else is refused
//! with the layer named, as are fp32/fp16 weights in other encodings (ncnn's int8 and 8-bit
//! table quantisation).
//!
//! The `.param` format: a magic line (`7767517`), a line `<layers> <blobs>`, then one line per
//! layer: `<type> <name> <inputs> <outputs> <input blobs…> <output blobs…> <k=v…>`. A key `k ≥ 0`
//! holds one number; a key `-23300 - k` holds an array `n,v1,…,vn` for key `k`.
//!
//! The `.bin` format: the layers' weights in layer order. A convolution's kernel starts with a
//! 4-byte tag (0 = raw fp32 follows, 0x01306B47 = fp16 follows, padded to 4 bytes); biases and
//! PReLU slopes are raw fp32 without a tag.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{EngineError, Result};
use crate::graph::{DType, Dim, Graph, GraphBuilder, ResizeMode, StoredTensor, Value};

const MAGIC: &str = "7767517";
const TAG_FP16: u32 = 0x0130_6B47;

/// One layer of a `.param` file.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub kind: String,
    pub name: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    params: HashMap<i32, Vec<f32>>,
}

impl Layer {
    /// Scalar parameter `key`, or `default` when the line does not set it.
    fn get(&self, key: i32, default: f32) -> f32 {
        self.params.get(&key).and_then(|v| v.first().copied()).unwrap_or(default)
    }
    fn int(&self, key: i32, default: i64) -> i64 {
        self.get(key, default as f32) as i64
    }
    fn array(&self, key: i32) -> &[f32] {
        self.params.get(&key).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// Parses a `.param` file's text. `path` names the file in errors.
pub fn parse_param(text: &str, path: &Path) -> Result<Vec<Layer>> {
    let bad = |reason: String| EngineError::CorruptNcnn { path: path.to_path_buf(), reason };
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some(MAGIC) {
        return Err(bad(format!("not an ncnn .param file (its first line is not the magic number {MAGIC})")));
    }
    let counts = lines.next().ok_or_else(|| bad("the layer/blob count line is missing".into()))?;
    let layer_count: usize =
        counts.split_whitespace().next().and_then(|n| n.parse().ok()).ok_or_else(|| bad(format!("bad count line `{counts}`")))?;
    let mut layers = Vec::with_capacity(layer_count);
    for (i, line) in lines.enumerate() {
        layers.push(parse_layer(line).map_err(|e| bad(format!("layer line {}: {e}", i + 1)))?);
    }
    if layers.len() != layer_count {
        return Err(bad(format!("the header announces {layer_count} layers but the file lists {}", layers.len())));
    }
    Ok(layers)
}

fn parse_layer(line: &str) -> std::result::Result<Layer, String> {
    let mut words = line.split_whitespace();
    let mut next = |what: &str| words.next().map(str::to_string).ok_or_else(|| format!("`{line}` lacks its {what}"));
    let kind = next("type")?;
    let name = next("name")?;
    let n_in: usize = next("input count")?.parse().map_err(|_| format!("`{line}`: bad input count"))?;
    let n_out: usize = next("output count")?.parse().map_err(|_| format!("`{line}`: bad output count"))?;
    let inputs = (0..n_in).map(|_| next("input blob")).collect::<std::result::Result<Vec<_>, _>>()?;
    let outputs = (0..n_out).map(|_| next("output blob")).collect::<std::result::Result<Vec<_>, _>>()?;
    let mut params = HashMap::new();
    for kv in words {
        let (k, v) = kv.split_once('=').ok_or_else(|| format!("parameter `{kv}` is not k=v"))?;
        let k: i32 = k.parse().map_err(|_| format!("parameter key `{k}` is not an integer"))?;
        let num = |s: &str| s.parse::<f32>().map_err(|_| format!("parameter value `{s}` is not a number"));
        if k <= -23300 {
            let mut items = v.split(',');
            let n: usize = items.next().unwrap_or("").parse().map_err(|_| format!("array `{kv}` lacks its length"))?;
            let vals = items.map(num).collect::<std::result::Result<Vec<_>, _>>()?;
            if vals.len() != n {
                return Err(format!("array `{kv}` announces {n} values but has {}", vals.len()));
            }
            params.insert(-23300 - k, vals);
        } else {
            params.insert(k, vec![num(v)?]);
        }
    }
    Ok(Layer { kind, name, inputs, outputs, params })
}

/// The weights one layer reads from the `.bin`.
#[derive(Clone, Debug, PartialEq)]
enum LayerWeights {
    None,
    Conv { kernel: StoredTensor, bias: Option<StoredTensor> },
    PRelu { slope: StoredTensor },
}

/// An ncnn network: its layers and where each layer's weights lie in the `.bin`.
#[derive(Clone, Debug)]
pub struct NcnnNet {
    pub param: PathBuf,
    layers: Vec<(Layer, LayerWeights)>,
}

/// Reads `bin` from `offset`: the tagged kernel of `n` values (fp32 or fp16).
fn tagged(bin: &[u8], file: &Arc<PathBuf>, offset: &mut u64, shape: Vec<usize>) -> std::result::Result<StoredTensor, String> {
    let n: usize = shape.iter().product();
    let at = *offset as usize;
    let tag = bin.get(at..at + 4).ok_or("the file ends before a kernel's tag")?;
    let tag = u32::from_le_bytes([tag[0], tag[1], tag[2], tag[3]]);
    let (dtype, len) = match tag {
        0 => (DType::F32, n * 4),
        TAG_FP16 => (DType::F16, (n * 2).div_ceil(4) * 4),
        other => {
            return Err(format!(
                "kernel tag {other:#010x} at byte {at} is neither raw fp32 (0) nor fp16 ({TAG_FP16:#010x}): a .bin of another \
                 network, or a quantised one (not supported)"
            ));
        }
    };
    let t = StoredTensor { file: file.clone(), offset: *offset + 4, dtype, shape };
    *offset += 4 + len as u64;
    Ok(t)
}

/// Reads `n` raw fp32 values at `offset`, shaped `shape`.
fn raw(file: &Arc<PathBuf>, offset: &mut u64, shape: Vec<usize>) -> StoredTensor {
    let t = StoredTensor { file: file.clone(), offset: *offset, dtype: DType::F32, shape };
    *offset += t.byte_len();
    t
}

/// The weights `layer` reads at `offset` of `bin` (moving `offset` past them).
fn layer_weights(layer: &Layer, bin: &[u8], file: &Arc<PathBuf>, offset: &mut u64) -> std::result::Result<LayerWeights, String> {
    match layer.kind.as_str() {
        "Convolution" => {
            let out = layer.int(0, 0) as usize;
            let (kw, size) = (layer.int(1, 0) as usize, layer.int(6, 0) as usize);
            let kh = layer.int(11, kw as i64) as usize;
            if out == 0 || kw == 0 || kh == 0 || size % (out * kw * kh) != 0 {
                return Err(format!("{}: weight size {size} does not fit {out} outputs of {kh}x{kw}", layer.name));
            }
            let kernel = tagged(bin, file, offset, vec![out, size / (out * kw * kh), kh, kw])?;
            let bias = (layer.int(5, 0) != 0).then(|| raw(file, offset, vec![out]));
            Ok(LayerWeights::Conv { kernel, bias })
        }
        "PReLU" => {
            let n = layer.int(0, 0) as usize;
            let shape = if n == 1 { vec![1] } else { vec![n, 1, 1] };
            Ok(LayerWeights::PRelu { slope: raw(file, offset, shape) })
        }
        "Input" | "Split" | "ReLU" | "Concat" | "Eltwise" | "BinaryOp" | "Interp" | "PixelShuffle" => Ok(LayerWeights::None),
        other => Err(format!("{}: layer type {other} is not supported", layer.name)),
    }
}

impl NcnnNet {
    /// Reads the `.param` file and lays its layers' weights over the `.bin` file (whose size
    /// must be exactly what the layers need: another network's `.bin` is refused here).
    pub fn open(param: &Path, bin: &Path) -> Result<Self> {
        let bytes = std::fs::read(param).map_err(|e| EngineError::io(param, e))?;
        let text = String::from_utf8(bytes).map_err(|_| EngineError::CorruptNcnn {
            path: param.to_path_buf(),
            reason: "not an ncnn .param file (it is not text)".into(),
        })?;
        let layers = parse_param(&text, param)?;
        let bytes = std::fs::read(bin).map_err(|e| EngineError::io(bin, e))?;
        let file = Arc::new(bin.to_path_buf());
        let mut offset = 0u64;
        let mut out = Vec::with_capacity(layers.len());
        for layer in layers {
            let w = layer_weights(&layer, &bytes, &file, &mut offset)
                .map_err(|reason| EngineError::CorruptNcnn { path: bin.to_path_buf(), reason })?;
            out.push((layer, w));
        }
        if offset != bytes.len() as u64 {
            return Err(EngineError::CorruptNcnn {
                path: bin.to_path_buf(),
                reason: format!(
                    "holds {} bytes but the layers of {} need {offset} (a .bin of another network?)",
                    bytes.len(),
                    param.display()
                ),
            });
        }
        Ok(Self { param: param.to_path_buf(), layers: out })
    }

    /// How many times larger than its input the output of blob `output` is, per side (from
    /// the strides, pixel shuffles and resizes on the way); `None` if the blob is unknown.
    pub fn scale(&self, output: &str) -> Option<f32> {
        let mut scales: HashMap<&str, f32> = HashMap::new();
        for (l, _) in &self.layers {
            let s_in = l.inputs.first().and_then(|b| scales.get(b.as_str()).copied()).unwrap_or(1.0);
            let s = match l.kind.as_str() {
                "Convolution" => s_in / l.int(3, 1) as f32,
                "PixelShuffle" => s_in * l.int(0, 1) as f32,
                "Interp" => s_in * l.get(1, 1.0),
                _ => s_in,
            };
            for o in &l.outputs {
                scales.insert(o, s);
            }
        }
        scales.get(output).copied()
    }

    /// The network as a graph from input blob `input` (`[1, C, H, W]`, any size) to `output`;
    /// both keep their ncnn names.
    pub fn build(&self, input: &str, output: &str) -> Result<Graph> {
        let mut g = GraphBuilder::new();
        let mut blobs: HashMap<&str, Value> = HashMap::new();
        for (layer, weights) in &self.layers {
            let fail = |reason: String| EngineError::bad_config(&self.param, format!("layer {}: {reason}", layer.name));
            let ins = layer
                .inputs
                .iter()
                .map(|b| blobs.get(b.as_str()).copied().ok_or_else(|| fail(format!("blob `{b}` is used before it is made"))))
                .collect::<Result<Vec<_>>>()?;
            let y = if layer.kind == "Input" {
                let dims = vec![Dim::Fixed(1), Dim::Named("channels"), Dim::Named("height"), Dim::Named("width")];
                if layer.outputs.first().map(String::as_str) != Some(input) {
                    continue;
                }
                g.input(input, DType::F32, dims)
            } else {
                emit(&mut g, layer, weights, &ins).map_err(fail)?
            };
            for o in &layer.outputs {
                blobs.insert(o, y);
            }
        }
        let missing = |b: &str| EngineError::bad_config(&self.param, format!("the network has no blob `{b}`"));
        if !blobs.contains_key(input) {
            return Err(missing(input));
        }
        let y = *blobs.get(output).ok_or_else(|| missing(output))?;
        Ok(g.finish(&[(output, y)]))
    }
}

/// The graph nodes of one layer (not `Input`) on its input values.
fn emit(g: &mut GraphBuilder, l: &Layer, w: &LayerWeights, ins: &[Value]) -> std::result::Result<Value, String> {
    let x = *ins.first().ok_or("the layer has no input")?;
    Ok(match (l.kind.as_str(), w) {
        ("Split", _) => x,
        ("Convolution", LayerWeights::Conv { kernel, bias }) => {
            if l.int(2, 1) != 1 || l.int(7, 1) != 1 || l.int(8, 0) != 0 {
                return Err("dilated, grouped or int8 convolutions are not supported".into());
            }
            if l.int(3, 1) != l.int(13, l.int(3, 1)) {
                return Err("unequal strides are not supported".into());
            }
            let left = l.int(4, 0);
            let (top, right) = (l.int(14, left), l.int(15, left));
            let bottom = l.int(16, top);
            if left < 0 || top < 0 {
                return Err("automatic ('same') padding is not supported".into());
            }
            let k = g.weight(kernel.clone());
            let b = bias.clone().map(|b| g.weight(b));
            let y = g.conv2d_pads(x, k, b, l.int(3, 1), [top, left, bottom, right]);
            activation(g, y, l.int(9, 0), l.array(10))?
        }
        ("PReLU", LayerWeights::PRelu { slope }) => {
            let s = g.weight(slope.clone());
            g.prelu(x, s)
        }
        ("ReLU", _) => match l.get(0, 0.0) {
            0.0 => g.relu(x),
            slope => g.leaky_relu(x, slope),
        },
        ("Concat", _) => g.concat(ins, channel_axis(l.int(0, 0))?),
        ("Eltwise", _) => eltwise(g, l, ins)?,
        ("BinaryOp", _) => binary(g, l, ins)?,
        ("Interp", _) => {
            let mode = match l.int(0, 0) {
                1 => ResizeMode::Nearest,
                2 => ResizeMode::Bilinear,
                3 => ResizeMode::Bicubic,
                t => return Err(format!("Interp resize type {t} is not supported")),
            };
            if l.int(3, 0) != 0 || l.int(4, 0) != 0 || l.int(5, 0) != 0 || l.int(6, 0) != 0 {
                return Err("Interp to a fixed size, dynamic size or with aligned corners is not supported".into());
            }
            g.resize(x, mode, l.get(1, 1.0), l.get(2, 1.0))
        }
        ("PixelShuffle", _) => {
            if l.int(1, 0) != 0 {
                return Err("PixelShuffle mode 1 is not supported".into());
            }
            g.pixel_shuffle(x, l.int(0, 1))
        }
        (kind, _) => return Err(format!("layer type {kind} is not supported")),
    })
}

/// ncnn's axis over `[C, H, W]` as the graph's axis over `[N, C, H, W]`.
fn channel_axis(axis: i64) -> std::result::Result<i64, String> {
    match axis {
        0..=2 => Ok(axis + 1),
        -3..=-1 => Ok(axis),
        _ => Err(format!("axis {axis} is not supported")),
    }
}

/// A convolution's fused activation (`9=` type, `10=` parameters).
fn activation(g: &mut GraphBuilder, y: Value, kind: i64, params: &[f32]) -> std::result::Result<Value, String> {
    Ok(match kind {
        0 => y,
        1 => g.relu(y),
        2 => g.leaky_relu(y, params.first().copied().unwrap_or(0.0)),
        4 => g.sigmoid(y),
        other => return Err(format!("fused activation {other} is not supported")),
    })
}

/// `Eltwise`: product, sum (with optional coefficients) of its inputs.
fn eltwise(g: &mut GraphBuilder, l: &Layer, ins: &[Value]) -> std::result::Result<Value, String> {
    let coeffs = l.array(1);
    if !coeffs.is_empty() && coeffs.len() != ins.len() {
        return Err(format!("{} coefficients for {} inputs", coeffs.len(), ins.len()));
    }
    let op = l.int(0, 1);
    let mut acc: Option<Value> = None;
    for (i, &x) in ins.iter().enumerate() {
        let x = match coeffs.get(i) {
            Some(&c) if op == 1 && c != 1.0 => g.mul_scalar(x, c),
            _ => x,
        };
        acc = Some(match (acc, op) {
            (None, _) => x,
            (Some(a), 0) => g.mul(a, x),
            (Some(a), 1) => g.add(a, x),
            (Some(_), other) => return Err(format!("Eltwise operation {other} is not supported")),
        });
    }
    acc.ok_or_else(|| "Eltwise without inputs".into())
}

/// `BinaryOp`: add, sub, mul or div of two blobs, or of a blob and a constant.
fn binary(g: &mut GraphBuilder, l: &Layer, ins: &[Value]) -> std::result::Result<Value, String> {
    let a = ins[0];
    let b = if l.int(1, 0) != 0 { g.scalar(l.get(2, 0.0)) } else { *ins.get(1).ok_or("BinaryOp needs two inputs or a scalar")? };
    Ok(match l.int(0, 0) {
        0 => g.add(a, b),
        1 => g.sub(a, b),
        2 => g.mul(a, b),
        3 => g.div(a, b),
        other => return Err(format!("BinaryOp operation {other} is not supported")),
    })
}

#[cfg(test)]
mod tests;
