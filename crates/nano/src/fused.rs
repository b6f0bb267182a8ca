//! Fused CPU kernels with hand-written backward passes, as candle custom ops.
//!
//! Composed from candle's generic ops, a convolution's im2col (nine shifted views and a cat),
//! a group norm and a softmax each cost a dozen full passes over memory and as many
//! allocations, forward and backward; training time went there rather than into matmuls. Each op
//! here is one pass forward and one pass backward. The tests check every backward against
//! the composed-op version it replaces.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

/// Runs `f` on the tensor's f32 values (contiguous row-major), without copying when it is
/// already contiguous.
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(v)), Some((start, end))) => f(&v[start..end]),
        _ => candle_core::bail!("fused ops need contiguous f32 tensors on the CPU"),
    }
}

fn cpu_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((start, end))) => Ok(&v[start..end]),
        _ => candle_core::bail!("fused ops need contiguous f32 tensors on the CPU"),
    }
}

/// The geometry of one convolution's im2col.
#[derive(Clone, Copy, Debug)]
struct Im2Col {
    batch: usize,
    channels: usize,
    h: usize,
    w: usize,
    kernel: usize,
    stride: usize,
    /// Zero padding before (top, left) and after (bottom, right).
    pad_lo: usize,
    pad_hi: usize,
    /// Appends a row of ones so a bias can ride in the weight matrix's last column.
    ones_row: bool,
}

impl Im2Col {
    fn out_hw(&self) -> (usize, usize) {
        let ho = (self.h + self.pad_lo + self.pad_hi - self.kernel) / self.stride + 1;
        let wo = (self.w + self.pad_lo + self.pad_hi - self.kernel) / self.stride + 1;
        (ho, wo)
    }

    fn rows(&self) -> usize {
        self.channels * self.kernel * self.kernel + self.ones_row as usize
    }

    /// Source pixel of output position `o` along an axis of length `n`, for kernel tap `i`.
    fn src(&self, o: usize, i: usize, n: usize) -> Option<usize> {
        let p = (o * self.stride + i).checked_sub(self.pad_lo)?;
        (p < n).then_some(p)
    }
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "plantain-im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(storage, layout)?;
        let (ho, wo) = self.out_hw();
        let (k, c, h, w) = (self.kernel, self.channels, self.h, self.w);
        let rows = self.rows();
        let mut out = vec![0f32; self.batch * rows * ho * wo];
        out.par_chunks_mut(rows * ho * wo).enumerate().for_each(|(b, ob)| {
            let xb = &x[b * c * h * w..(b + 1) * c * h * w];
            for ch in 0..c {
                let xc = &xb[ch * h * w..(ch + 1) * h * w];
                for i in 0..k {
                    for j in 0..k {
                        let row = &mut ob[((ch * k + i) * k + j) * ho * wo..][..ho * wo];
                        for oy in 0..ho {
                            let Some(sy) = self.src(oy, i, h) else { continue };
                            let dst = &mut row[oy * wo..(oy + 1) * wo];
                            for (ox, d) in dst.iter_mut().enumerate() {
                                if let Some(sx) = self.src(ox, j, w) {
                                    *d = xc[sy * w + sx];
                                }
                            }
                        }
                    }
                }
            }
            if self.ones_row {
                ob[(rows - 1) * ho * wo..].fill(1.0);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((self.batch, rows, ho * wo))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.apply_op1_no_bwd(&Col2Im(*self))?))
    }
}

/// The adjoint of [`Im2Col`]: sums every column entry back onto the pixel it was copied from.
struct Col2Im(Im2Col);

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "plantain-col2im"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = cpu_slice(storage, layout)?;
        let p = self.0;
        let (ho, wo) = p.out_hw();
        let (k, c, h, w) = (p.kernel, p.channels, p.h, p.w);
        let rows = p.rows();
        let mut out = vec![0f32; p.batch * c * h * w];
        out.par_chunks_mut(h * w).enumerate().for_each(|(bc, xc)| {
            let (b, ch) = (bc / c, bc % c);
            let gb = &g[b * rows * ho * wo..];
            for i in 0..k {
                for j in 0..k {
                    let row = &gb[((ch * k + i) * k + j) * ho * wo..][..ho * wo];
                    for oy in 0..ho {
                        let Some(sy) = p.src(oy, i, h) else { continue };
                        for ox in 0..wo {
                            if let Some(sx) = p.src(ox, j, w) {
                                xc[sy * w + sx] += row[oy * wo + ox];
                            }
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((p.batch, c, h, w))))
    }
}

/// `[B, C, H, W]` → `[B, C*k*k (+1), Ho*Wo]`, rows ordered (channel, ky, kx) like a conv
/// weight `[O, C, k, k]` flattened; with `ones_row` a last row of ones for the bias.
pub fn im2col(x: &Tensor, kernel: usize, stride: usize, pad_lo: usize, pad_hi: usize, ones_row: bool) -> Result<Tensor> {
    let (batch, channels, h, w) = x.dims4()?;
    let op = Im2Col { batch, channels, h, w, kernel, stride, pad_lo, pad_hi, ones_row };
    x.contiguous()?.apply_op1(op)
}

/// Group normalisation with a per-channel affine map, optionally followed by SiLU (every
/// resnet does `silu(group_norm(x))`, so fusing the two saves another pass each way).
#[derive(Clone, Copy, Debug)]
struct GroupNormOp {
    groups: usize,
    eps: f32,
    silu: bool,
}

#[derive(Clone, Copy)]
struct Dims {
    channels: usize,
    spatial: usize,
}

impl GroupNormOp {
    fn dims(x: &Layout) -> Result<Dims> {
        let d = x.dims();
        if d.len() < 2 {
            candle_core::bail!("group norm wants [B, C, ...], got {d:?}");
        }
        Ok(Dims { channels: d[1], spatial: d[2..].iter().product() })
    }
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "plantain-group-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, weight, bias) = (cpu_slice(s1, l1)?, cpu_slice(s2, l2)?, cpu_slice(s3, l3)?);
        let d = Self::dims(l1)?;
        let per_group = d.channels / self.groups;
        let len = per_group * d.spatial;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(len).zip(x.par_chunks(len)).enumerate().for_each(|(bg, (o, xs))| {
            let g = bg % self.groups;
            let (mean, rstd) = mean_rstd(xs, self.eps);
            for (ci, (oc, xc)) in o.chunks_mut(d.spatial).zip(xs.chunks(d.spatial)).enumerate() {
                let ch = g * per_group + ci;
                let (a, b) = (rstd * weight[ch], bias[ch] - mean * rstd * weight[ch]);
                for (ov, &xv) in oc.iter_mut().zip(xc) {
                    let y = xv * a + b;
                    *ov = if self.silu { y * sigmoid(y) } else { y };
                }
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = Self::dims(x.layout())?;
        let per_group = d.channels / self.groups;
        let len = per_group * d.spatial;
        let (dx, dw, db) = with_f32(x, |xv| {
            with_f32(weight, |wv| {
                with_f32(bias, |bv| {
                    with_f32(grad, |gv| {
                        let mut dx = vec![0f32; xv.len()];
                        // Per (batch, group): the affine parameters' gradients, summed after.
                        let partial: Vec<(Vec<f32>, Vec<f32>)> = dx
                            .par_chunks_mut(len)
                            .zip(xv.par_chunks(len).zip(gv.par_chunks(len)))
                            .enumerate()
                            .map(|(bg, (dxs, (xs, gs)))| {
                                let g = bg % self.groups;
                                let (mean, rstd) = mean_rstd(xs, self.eps);
                                let mut dw = vec![0f32; per_group];
                                let mut db = vec![0f32; per_group];
                                // dL/dxhat, and its mean and its mean times xhat over the group.
                                let (mut sum_d, mut sum_dx) = (0f64, 0f64);
                                for ci in 0..per_group {
                                    let ch = g * per_group + ci;
                                    for s in 0..d.spatial {
                                        let i = ci * d.spatial + s;
                                        let xhat = (xs[i] - mean) * rstd;
                                        let mut dy = gs[i];
                                        if self.silu {
                                            let y = xhat * wv[ch] + bv[ch];
                                            let sg = sigmoid(y);
                                            dy *= sg * (1.0 + y * (1.0 - sg));
                                        }
                                        dw[ci] += dy * xhat;
                                        db[ci] += dy;
                                        let dxhat = dy * wv[ch];
                                        dxs[i] = dxhat;
                                        sum_d += dxhat as f64;
                                        sum_dx += (dxhat * xhat) as f64;
                                    }
                                }
                                let n = len as f64;
                                let (md, mdx) = ((sum_d / n) as f32, (sum_dx / n) as f32);
                                for (v, &xv) in dxs.iter_mut().zip(xs) {
                                    let xhat = (xv - mean) * rstd;
                                    *v = rstd * (*v - md - xhat * mdx);
                                }
                                (dw, db)
                            })
                            .collect();
                        let mut dw = vec![0f32; d.channels];
                        let mut db = vec![0f32; d.channels];
                        for (bg, (pw, pb)) in partial.iter().enumerate() {
                            let g = bg % self.groups;
                            for ci in 0..per_group {
                                dw[g * per_group + ci] += pw[ci];
                                db[g * per_group + ci] += pb[ci];
                            }
                        }
                        Ok((dx, dw, db))
                    })
                })
            })
        })?;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, weight.shape(), dev)?),
            Some(Tensor::from_vec(db, bias.shape(), dev)?),
        ))
    }
}

/// `silu?(group_norm(x) * weight + bias)` for `x: [B, C, ...]`, `weight, bias: [C]`.
pub fn group_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, groups: usize, eps: f64, silu: bool) -> Result<Tensor> {
    let c = x.dim(1)?;
    if c % groups != 0 {
        candle_core::bail!("group norm: {c} channels do not split into {groups} groups");
    }
    x.contiguous()?.apply_op3(weight, bias, GroupNormOp { groups, eps: eps as f32, silu })
}

/// Layer normalisation over the last dimension (the affine map runs along that dimension,
/// not along channels as in [`GroupNormOp`]).
#[derive(Clone, Copy, Debug)]
struct LayerNormOp {
    eps: f32,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "plantain-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, weight, bias) = (cpu_slice(s1, l1)?, cpu_slice(s2, l2)?, cpu_slice(s3, l3)?);
        let dim = weight.len();
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(dim).zip(x.par_chunks(dim)).for_each(|(o, xs)| {
            let (mean, rstd) = mean_rstd(xs, self.eps);
            for i in 0..dim {
                o[i] = (xs[i] - mean) * rstd * weight[i] + bias[i];
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dim = weight.elem_count();
        let (dx, dw, db) = with_f32(x, |xv| {
            with_f32(weight, |wv| {
                with_f32(grad, |gv| {
                    let mut dx = vec![0f32; xv.len()];
                    let mut dw = vec![0f32; dim];
                    let mut db = vec![0f32; dim];
                    for ((dxs, xs), gs) in dx.chunks_mut(dim).zip(xv.chunks(dim)).zip(gv.chunks(dim)) {
                        let (mean, rstd) = mean_rstd(xs, self.eps);
                        let (mut sum_d, mut sum_dx) = (0f32, 0f32);
                        for i in 0..dim {
                            let xhat = (xs[i] - mean) * rstd;
                            dw[i] += gs[i] * xhat;
                            db[i] += gs[i];
                            let dxhat = gs[i] * wv[i];
                            dxs[i] = dxhat;
                            sum_d += dxhat;
                            sum_dx += dxhat * xhat;
                        }
                        let (md, mdx) = (sum_d / dim as f32, sum_dx / dim as f32);
                        for i in 0..dim {
                            let xhat = (xs[i] - mean) * rstd;
                            dxs[i] = rstd * (dxs[i] - md - xhat * mdx);
                        }
                    }
                    Ok((dx, dw, db))
                })
            })
        })?;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, weight.shape(), dev)?),
            Some(Tensor::from_vec(db, bias.shape(), dev)?),
        ))
    }
}

/// Mean and 1/sqrt(variance + eps) of one normalisation group (sums in f64: groups hold up
/// to tens of thousands of values).
fn mean_rstd(xs: &[f32], eps: f32) -> (f32, f32) {
    let n = xs.len() as f64;
    let mean = xs.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = xs.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean as f32, 1.0 / (var as f32 + eps).sqrt())
}

/// `layer_norm(x) * weight + bias` over the last dimension.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op3(weight, bias, LayerNormOp { eps: eps as f32 })
}

/// Softmax over the last dimension.
struct SoftmaxOp;

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "plantain-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(storage, layout)?;
        let dim = *layout.dims().last().unwrap_or(&1);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(dim).zip(x.par_chunks(dim)).for_each(|(o, xs)| {
            let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for (ov, &xv) in o.iter_mut().zip(xs) {
                *ov = (xv - max).exp();
                sum += *ov;
            }
            let inv = 1.0 / sum;
            o.iter_mut().for_each(|v| *v *= inv);
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dim = res.dim(candle_core::D::Minus1)?;
        let dx = with_f32(res, |yv| {
            with_f32(grad, |gv| {
                let mut dx = vec![0f32; yv.len()];
                dx.par_chunks_mut(dim).zip(yv.par_chunks(dim).zip(gv.par_chunks(dim))).for_each(|(d, (ys, gs))| {
                    let dot: f32 = ys.iter().zip(gs).map(|(y, g)| y * g).sum();
                    for i in 0..dim {
                        d[i] = ys[i] * (gs[i] - dot);
                    }
                });
                Ok(dx)
            })
        })?;
        Ok(Some(Tensor::from_vec(dx, res.shape(), res.device())?))
    }
}

pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(SoftmaxOp)
}

#[cfg(test)]
mod tests {
    use candle_core::{D, Device, Var};

    use super::*;

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        Tensor::from_vec((0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect::<Vec<_>>(), shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Value and gradients of `f` and `g` (a reference) agree on random inputs, with a random
    /// upstream gradient so no term cancels by symmetry.
    fn same_grads(inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Tensor, g: impl Fn(&[Tensor]) -> Tensor) {
        let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let (a, b) = (f(&ts), g(&ts));
        assert!(max_diff(&a, &b) < 1e-4, "values differ by {}", max_diff(&a, &b));
        let up = rand(a.dims(), 7);
        let ga = (&a * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (&b * &up).unwrap().sum_all().unwrap().backward().unwrap();
        for (i, v) in vars.iter().enumerate() {
            let (x, y) = (ga.get(v).unwrap(), gb.get(v).unwrap());
            assert!(max_diff(x, y) < 1e-4, "gradient of input {i} differs by {}", max_diff(x, y));
        }
    }

    fn reference_conv_cols(x: &Tensor, k: usize, stride: usize, lo: usize, hi: usize) -> Tensor {
        let (b, c, _, _) = x.dims4().unwrap();
        let xp = x.pad_with_zeros(2, lo, hi).unwrap().pad_with_zeros(3, lo, hi).unwrap();
        let (hp, wp) = (xp.dim(2).unwrap(), xp.dim(3).unwrap());
        let (ho, wo) = ((hp - k) / stride + 1, (wp - k) / stride + 1);
        let mut views = Vec::new();
        for i in 0..k {
            for j in 0..k {
                let mut rows = Vec::new();
                for oy in 0..ho {
                    let mut px = Vec::new();
                    for ox in 0..wo {
                        px.push(xp.narrow(2, oy * stride + i, 1).unwrap().narrow(3, ox * stride + j, 1).unwrap());
                    }
                    rows.push(Tensor::cat(&px, 3).unwrap());
                }
                views.push(Tensor::cat(&rows, 2).unwrap().unsqueeze(2).unwrap());
            }
        }
        Tensor::cat(&views, 2).unwrap().reshape((b, c * k * k, ho * wo)).unwrap()
    }

    #[test]
    fn im2col_matches_shifted_views_forward_and_backward() {
        for &(k, s, lo, hi, h, w) in &[(3, 1, 1, 1, 5, 6), (3, 2, 0, 1, 6, 6), (1, 1, 0, 0, 4, 3), (3, 2, 1, 1, 5, 4)] {
            let x = rand(&[2, 3, h, w], 1);
            same_grads(&[x], |t| im2col(&t[0], k, s, lo, hi, false).unwrap(), |t| reference_conv_cols(&t[0], k, s, lo, hi));
        }
        let ones = im2col(&rand(&[1, 2, 3, 3], 2), 3, 1, 1, 1, true).unwrap();
        assert_eq!(ones.dims(), &[1, 19, 9]);
        assert_eq!(ones.narrow(1, 18, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![1.0; 9]);
    }

    fn reference_group_norm(x: &Tensor, w: &Tensor, b: &Tensor, groups: usize, eps: f64, silu: bool) -> Tensor {
        let (n, c, h, wd) = x.dims4().unwrap();
        let g = x.reshape((n, groups, (c / groups) * h * wd)).unwrap();
        let mean = g.mean_keepdim(2).unwrap();
        let centred = g.broadcast_sub(&mean).unwrap();
        let var = centred.sqr().unwrap().mean_keepdim(2).unwrap();
        let normed = centred.broadcast_div(&(var + eps).unwrap().sqrt().unwrap()).unwrap().reshape((n, c, h, wd)).unwrap();
        let y = normed.broadcast_mul(&w.reshape((1, c, 1, 1)).unwrap()).unwrap().broadcast_add(&b.reshape((1, c, 1, 1)).unwrap()).unwrap();
        if silu { y.silu().unwrap() } else { y }
    }

    #[test]
    fn group_norm_matches_composed_ops_forward_and_backward() {
        for silu in [false, true] {
            let inputs = [rand(&[2, 6, 3, 4], 3), rand(&[6], 4), rand(&[6], 5)];
            same_grads(
                &inputs,
                |t| group_norm(&t[0], &t[1], &t[2], 3, 1e-5, silu).unwrap(),
                |t| reference_group_norm(&t[0], &t[1], &t[2], 3, 1e-5, silu),
            );
        }
    }

    #[test]
    fn layer_norm_and_softmax_match_composed_ops() {
        let inputs = [rand(&[2, 3, 8], 6), rand(&[8], 8), rand(&[8], 9)];
        same_grads(
            &inputs,
            |t| layer_norm(&t[0], &t[1], &t[2], 1e-5).unwrap(),
            |t| {
                let mean = t[0].mean_keepdim(D::Minus1).unwrap();
                let centred = t[0].broadcast_sub(&mean).unwrap();
                let var = centred.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
                let normed = centred.broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap()).unwrap();
                normed.broadcast_mul(&t[1]).unwrap().broadcast_add(&t[2]).unwrap()
            },
        );
        same_grads(
            &[(rand(&[2, 3, 5], 10) * 4.0).unwrap()],
            |t| softmax_last_dim(&t[0]).unwrap(),
            |t| candle_nn::ops::softmax(&t[0], D::Minus1).unwrap(),
        );
    }
}
