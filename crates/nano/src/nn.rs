//! Trainable building blocks on candle's autograd, named like diffusers / transformers modules
//! so the saved tensors load unchanged in the engine and in diffusers.
//!
//! Only ops with a backward pass in candle 0.11 are used (its fused softmax / layer-norm kernels
//! have none), and every weight is initialised from a seed and its own name, so a model is the
//! same whatever order its parts are built in.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{D, DType, Device, Result, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// How a new weight starts.
#[derive(Clone, Copy, Debug)]
pub enum Init {
    /// Uniform in ±1/sqrt(fan_in) (PyTorch's default for linear and conv layers).
    FanIn(usize),
    Normal(f32),
    Const(f32),
}

/// The trainable tensors of one model, by their checkpoint names.
pub struct Store {
    vars: BTreeMap<String, Var>,
    seed: u64,
    device: Device,
}

impl Store {
    pub fn new(seed: u64) -> Self {
        Self { vars: BTreeMap::new(), seed, device: Device::Cpu }
    }

    /// A store pre-filled from a safetensors file (a checkpoint or an exported model).
    pub fn load(path: &Path, seed: u64) -> Result<Self> {
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
        let mut store = Self::new(seed);
        for (name, t) in tensors {
            store.vars.insert(name, Var::from_tensor(&t.to_dtype(DType::F32)?)?);
        }
        Ok(store)
    }

    /// The weight `name`, created with `init` unless it was loaded.
    pub fn get(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        if let Some(v) = self.vars.get(name) {
            if v.dims() != shape {
                candle_core::bail!("{name}: checkpoint has shape {:?}, the model wants {shape:?}", v.dims());
            }
            return Ok(v.as_tensor().clone());
        }
        let n: usize = shape.iter().product();
        let mut hasher = Sha256::new();
        hasher.update(self.seed.to_le_bytes());
        hasher.update(name.as_bytes());
        let digest = hasher.finalize();
        let mut rng = ChaCha8Rng::from_seed(digest.into());
        let values: Vec<f32> = match init {
            Init::FanIn(fan_in) => {
                let bound = 1.0 / (fan_in as f32).sqrt();
                (0..n).map(|_| rng.random_range(-bound..bound)).collect()
            }
            Init::Normal(std) => {
                let normal = rand_distr::Normal::new(0.0f32, std).expect("positive std");
                (0..n).map(|_| rng.sample(normal)).collect()
            }
            Init::Const(c) => vec![c; n],
        };
        let var = Var::from_tensor(&Tensor::from_vec(values, shape, &self.device)?)?;
        let t = var.as_tensor().clone();
        self.vars.insert(name.to_string(), var);
        Ok(t)
    }

    pub fn vars(&self) -> &BTreeMap<String, Var> {
        &self.vars
    }

    pub fn param_count(&self) -> usize {
        self.vars.values().map(|v| v.elem_count()).sum()
    }

    /// Writes every tensor (f32) to a safetensors file, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let map: BTreeMap<String, Tensor> = self.vars.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
        save_tensors(&map, path)
    }
}

/// Writes named tensors to a safetensors file atomically (a `.partial` file renamed into place).
pub fn save_tensors(map: &BTreeMap<String, Tensor>, path: &Path) -> Result<()> {
    let tmp = path.with_extension("safetensors.partial");
    let owned: std::collections::HashMap<String, Tensor> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    candle_core::safetensors::save(&owned, &tmp)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn new(s: &mut Store, name: &str, inp: usize, out: usize, bias: bool) -> Result<Self> {
        let weight = s.get(&format!("{name}.weight"), &[out, inp], Init::FanIn(inp))?;
        let bias = if bias { Some(s.get(&format!("{name}.bias"), &[out], Init::FanIn(inp))?) } else { None };
        Ok(Self { weight, bias })
    }

    /// `x`: `[..., inp]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let inp = dims[dims.len() - 1];
        let rows = x.elem_count() / inp;
        let y = x.reshape((rows, inp))?.matmul(&self.weight.t()?)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out_dims = dims;
        *out_dims.last_mut().expect("rank >= 1") = y.dim(1)?;
        y.reshape(out_dims)
    }
}

pub struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    pub fn new(s: &mut Store, name: &str, inp: usize, out: usize, kernel: usize, stride: usize, padding: usize) -> Result<Self> {
        let fan_in = inp * kernel * kernel;
        let weight = s.get(&format!("{name}.weight"), &[out, inp, kernel, kernel], Init::FanIn(fan_in))?;
        let bias = s.get(&format!("{name}.bias"), &[out], Init::FanIn(fan_in))?;
        Ok(Self { weight, bias, stride, padding })
    }

    /// As im2col from shifted views and one matmul: candle's CPU conv backward goes through a
    /// naive transposed convolution that is far too slow to train with, while narrow, cat and
    /// matmul have fast backward passes.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let (o, _, k, _) = self.weight.dims4()?;
        let (p, s) = (self.padding, self.stride);
        let ho = (h + 2 * p - k) / s + 1;
        let wo = (w + 2 * p - k) / s + 1;
        let cols = if k == 1 && s == 1 && p == 0 {
            x.reshape((b, c, h * w))?
        } else {
            let xp = if p > 0 { x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)? } else { x.clone() };
            let mut views = Vec::with_capacity(k * k);
            for i in 0..k {
                for j in 0..k {
                    let v = if s == 1 {
                        xp.narrow(2, i, ho)?.narrow(3, j, wo)?
                    } else {
                        // Rows i, i+s, …: take s*ho rows and keep the first of every s.
                        let rows = (xp.dims()[2] - i).min(s * ho);
                        let cols = (xp.dims()[3] - j).min(s * wo);
                        let v = xp.narrow(2, i, rows)?.narrow(3, j, cols)?;
                        let v = if rows < s * ho || cols < s * wo {
                            v.pad_with_zeros(2, 0, s * ho - rows)?.pad_with_zeros(3, 0, s * wo - cols)?
                        } else {
                            v
                        };
                        v.reshape((b, c, ho, s, wo, s))?.narrow(3, 0, 1)?.narrow(5, 0, 1)?.reshape((b, c, ho, wo))?
                    };
                    views.push(v.unsqueeze(2)?);
                }
            }
            Tensor::cat(&views, 2)?.reshape((b, c * k * k, ho * wo))?
        };
        let wmat = self.weight.reshape((o, c * k * k))?;
        let y = wmat.broadcast_matmul(&cols)?.reshape((b, o, ho, wo))?;
        y.broadcast_add(&self.bias.reshape((1, (), 1, 1))?)
    }
}

pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    pub fn new(s: &mut Store, name: &str, groups: usize, channels: usize, eps: f64) -> Result<Self> {
        let weight = s.get(&format!("{name}.weight"), &[channels], Init::Const(1.0))?;
        let bias = s.get(&format!("{name}.bias"), &[channels], Init::Const(0.0))?;
        Ok(Self { weight, bias, groups, eps })
    }

    /// `x`: `[B, C, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let g = x.reshape((b, self.groups, (c / self.groups) * h * w))?;
        let mean = g.mean_keepdim(2)?;
        let centred = g.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(2)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?.reshape((b, c, h, w))?;
        normed.broadcast_mul(&self.weight.reshape((1, c, 1, 1))?)?.broadcast_add(&self.bias.reshape((1, c, 1, 1))?)
    }
}

pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(s: &mut Store, name: &str, dim: usize, eps: f64) -> Result<Self> {
        let weight = s.get(&format!("{name}.weight"), &[dim], Init::Const(1.0))?;
        let bias = s.get(&format!("{name}.bias"), &[dim], Init::Const(0.0))?;
        Ok(Self { weight, bias, eps })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        normed.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

/// Multi-head scaled dot-product attention on token tensors `[B, T, heads*dim]`, with an
/// optional additive mask `[T, S]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, mask: Option<&Tensor>) -> Result<Tensor> {
    let (b, t, c) = q.dims3()?;
    let s = k.dim(1)?;
    let d = c / heads;
    let split = |x: &Tensor, n: usize| x.reshape((b, n, heads, d))?.transpose(1, 2)?.contiguous();
    let (q, k, v) = (split(q, t)?, split(k, s)?, split(v, s)?);
    let scores = (q.matmul(&k.t()?)? * (1.0 / (d as f64).sqrt()))?;
    let scores = match mask {
        Some(m) => scores.broadcast_add(m)?,
        None => scores,
    };
    let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
    probs.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((b, t, c))
}

/// `[B, C, H, W]` → `[B, H*W, C]`.
pub fn to_tokens(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    x.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous()
}

/// `[B, H*W, C]` → `[B, C, H, W]`.
pub fn from_tokens(t: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (b, _, c) = t.dims3()?;
    t.transpose(1, 2)?.contiguous()?.reshape((b, c, h, w))
}

/// diffusers' sinusoidal timestep embedding, `[B]` → `[B, dim]` (cos first when `flip`).
pub fn timestep_embedding(timesteps: &[f32], dim: usize, flip_sin_to_cos: bool, freq_shift: f32) -> Result<Tensor> {
    let half = dim / 2;
    let mut out = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let args: Vec<f32> = (0..half).map(|i| t * (-(10000f32).ln() * i as f32 / (half as f32 - freq_shift)).exp()).collect();
        let (sin, cos): (Vec<f32>, Vec<f32>) = args.iter().map(|a| (a.sin(), a.cos())).unzip();
        if flip_sin_to_cos {
            out.extend(cos);
            out.extend(sin);
        } else {
            out.extend(sin);
            out.extend(cos);
        }
    }
    Tensor::from_vec(out, (timesteps.len(), dim), &Device::Cpu)
}

/// x * sigmoid(1.702 x), CLIP's activation, from ops that have a backward pass.
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    let sig = ((x * -1.702)?.exp()? + 1.0)?.recip()?;
    x * sig
}
