//! Trainable building blocks on candle's autograd, named like diffusers / transformers modules
//! so the saved tensors load unchanged in the engine and in diffusers.
//!
//! Only ops with a backward pass are used (candle 0.11's own fused softmax / layer-norm kernels
//! have none; [`crate::fused`] has ours), and every weight is initialised from a seed and its own name, so a model is the
//! same whatever order its parts are built in.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Result, Tensor, Var};
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

    /// Creates `name` with the given values unless it exists (a checkpoint was loaded), so
    /// a layer built afterwards picks them up instead of its default initialisation.
    pub fn preset(&mut self, name: &str, values: Tensor) -> Result<()> {
        if !self.vars.contains_key(name) {
            self.vars.insert(name.to_string(), Var::from_tensor(&values)?);
        }
        Ok(())
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
            // The bias enters as a rank-1 product (a column of ones times the bias row), so its
            // gradient is one matmul: a broadcast add's is candle's strided reduction over the
            // rows, one division per element (perf: a few % of a training step). Same values.
            Some(b) => {
                let out = b.dim(0)?;
                let ones = Tensor::ones((rows, 1), y.dtype(), y.device())?;
                y.add(&ones.matmul(&b.reshape((1, out))?)?)?
            }
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

    /// As im2col and one matmul with the bias as the weight matrix's last column: candle's CPU
    /// conv backward goes through a naive transposed convolution that is far too slow to train
    /// with; [`crate::fused::im2col`] has a one-pass backward.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_padded(x, self.padding, self.padding)
    }

    /// With `lo` zero rows/columns before and `hi` after (diffusers' VAE downsamplers pad
    /// only bottom and right).
    pub fn forward_padded(&self, x: &Tensor, lo: usize, hi: usize) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let (o, _, k, _) = self.weight.dims4()?;
        let s = self.stride;
        let ho = (h + lo + hi - k) / s + 1;
        let wo = (w + lo + hi - k) / s + 1;
        let cols = crate::fused::im2col(x, k, s, lo, hi, true)?;
        let wmat = Tensor::cat(&[self.weight.reshape((o, c * k * k))?, self.bias.reshape((o, 1))?], 1)?;
        wmat.broadcast_matmul(&cols)?.reshape((b, o, ho, wo))
    }
}

/// Nearest-neighbour 2x upsampling of `[B, C, H, W]` as a broadcast. candle's
/// `upsample_nearest2d` computes the same values, but its backward runs a naive convolution
/// (5% of a training step by perf); a broadcast's backward is a sum.
pub fn upsample_nearest_2x(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    x.reshape((b, c, h, 1, w, 1))?.broadcast_as((b, c, h, 2, w, 2))?.reshape((b, c, 2 * h, 2 * w))
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
        crate::fused::group_norm(x, &self.weight, &self.bias, self.groups, self.eps, false)
    }

    /// `silu(self.forward(x))` in one fused pass.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        crate::fused::group_norm(x, &self.weight, &self.bias, self.groups, self.eps, true)
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
        crate::fused::layer_norm(x, &self.weight, &self.bias, self.eps)
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
    let probs = crate::fused::softmax_last_dim(&scores)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        a.sub(b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn upsampling_matches_candle_forward_and_backward() {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 4, 5), &Device::Cpu).unwrap()).unwrap();
        let ours = upsample_nearest_2x(x.as_tensor()).unwrap();
        let candle = x.as_tensor().upsample_nearest2d(8, 10).unwrap();
        assert_eq!(max_diff(&ours, &candle), 0.0);
        // Weigh each output pixel differently so a wrong gradient cannot pass by symmetry.
        let w = Tensor::randn(0f32, 1.0, (2, 3, 8, 10), &Device::Cpu).unwrap();
        let g_ours = ours.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let g_candle = candle.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let (a, b) = (g_ours.get(&x).unwrap(), g_candle.get(&x).unwrap());
        assert!(max_diff(a, b) < 1e-5, "{}", max_diff(a, b));
    }

    #[test]
    fn linear_bias_as_a_product_gives_the_broadcast_sum_and_its_gradient() {
        let mut s = Store::new(3);
        let lin = Linear::new(&mut s, "l", 6, 4, true).unwrap();
        let bias = lin.bias.clone().unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 5, 6), &Device::Cpu).unwrap();
        let y = lin.forward(&x).unwrap();
        assert_eq!(y.dims(), &[2, 5, 4]);
        let plain = x.reshape((10, 6)).unwrap().matmul(&lin.weight.t().unwrap()).unwrap().broadcast_add(&bias).unwrap();
        assert_eq!(max_diff(&y.reshape((10, 4)).unwrap(), &plain), 0.0);
        let w = Tensor::randn(0f32, 1.0, (2, 5, 4), &Device::Cpu).unwrap();
        let grads = y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        // d/db of sum(w * y) is w summed over the rows.
        let expected = w.reshape((10, 4)).unwrap().sum(0).unwrap();
        let got = grads.get(&bias).expect("the bias has a gradient");
        assert!(max_diff(got, &expected) < 1e-5, "{}", max_diff(got, &expected));
    }
}
