//! AdamW with its moments kept in the checkpoint, so a resumed run continues exactly.
//!
//! The update runs in place, one pass over each parameter: composed tensor ops took a dozen
//! full passes and allocations per parameter, which cost more than the networks' own
//! backward pass at plantain-nano's size (9.0 M parameters, most of them the token table).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use candle_core::{CpuStorage, Device, InplaceOp2, Layout, Result, Storage, Tensor, Var, backprop::GradStore, bail};

/// First and second moments read back from a checkpoint, each possibly missing.
type PartialMoments = (Option<Vec<f32>>, Option<Vec<f32>>);

pub struct AdamW {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub step: u64,
    /// First and second moments per parameter, flat in the parameter's (contiguous) order.
    moments: BTreeMap<String, (Vec<f32>, Vec<f32>)>,
}

/// Runs `f` on a tensor's f32 elements (contiguous only: parameters and gradients are).
pub fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(data)) = &*storage else { bail!("expected an f32 CPU tensor") };
    let Some((start, end)) = layout.contiguous_offsets() else { bail!("expected a contiguous tensor") };
    Ok(f(&data[start..end]))
}

fn f32_slices<'a>(dst: &'a mut CpuStorage, dst_l: &Layout, src: &'a CpuStorage, src_l: &Layout) -> Result<(&'a mut [f32], &'a [f32])> {
    let (CpuStorage::F32(d), CpuStorage::F32(s)) = (dst, src) else { bail!("expected f32 tensors") };
    let (Some((d0, d1)), Some((s0, s1))) = (dst_l.contiguous_offsets(), src_l.contiguous_offsets()) else {
        bail!("expected contiguous tensors")
    };
    if d1 - d0 != s1 - s0 {
        bail!("element counts differ: {} and {}", d1 - d0, s1 - s0);
    }
    Ok((&mut d[d0..d1], &s[s0..s1]))
}

/// One AdamW update of a parameter from its gradient (the op's second input).
struct Update<'a> {
    moments: Mutex<(&'a mut [f32], &'a mut [f32])>,
    grad_scale: f32,
    b1: f32,
    b2: f32,
    /// Bias corrections 1 - β^t.
    c1: f32,
    c2: f32,
    lr: f32,
    decay: f32,
    eps: f32,
}

impl InplaceOp2 for Update<'_> {
    fn name(&self) -> &'static str {
        "adamw-update"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
        let (param, grad) = f32_slices(s1, l1, s2, l2)?;
        let mut guard = self.moments.lock().expect("moments lock");
        let (m, v) = &mut *guard;
        if m.len() != param.len() || v.len() != param.len() {
            bail!("moments hold {} values for a parameter of {}", m.len(), param.len());
        }
        for i in 0..param.len() {
            let g = grad[i] * self.grad_scale;
            m[i] = self.b1 * m[i] + (1.0 - self.b1) * g;
            v[i] = self.b2 * v[i] + (1.0 - self.b2) * g * g;
            let update = (m[i] / self.c1) / ((v[i] / self.c2).sqrt() + self.eps);
            param[i] = param[i] * self.decay - self.lr * update;
        }
        Ok(())
    }
}

/// `ema = decay · ema + (1 - decay) · param`, in place on the EMA tensor.
struct EmaUpdate {
    decay: f32,
}

impl InplaceOp2 for EmaUpdate {
    fn name(&self) -> &'static str {
        "ema-update"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
        let (ema, param) = f32_slices(s1, l1, s2, l2)?;
        for (e, p) in ema.iter_mut().zip(param) {
            *e = self.decay * *e + (1.0 - self.decay) * p;
        }
        Ok(())
    }
}

/// Moves `ema` towards `param` in place (both f32, contiguous, same size; `ema` must own its
/// storage, e.g. a copy).
pub fn ema_update(ema: &Tensor, param: &Tensor, decay: f64) -> Result<()> {
    ema.inplace_op2(param, &EmaUpdate { decay: decay as f32 })
}

impl AdamW {
    pub fn new(lr: f64, weight_decay: f64) -> Self {
        Self { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay, step: 0, moments: BTreeMap::new() }
    }

    /// The global gradient norm over `vars` (before clipping).
    pub fn grad_norm(vars: &BTreeMap<String, Var>, grads: &GradStore) -> Result<f64> {
        let mut total = 0.0;
        for v in vars.values() {
            if let Some(g) = grads.get(v) {
                total += with_f32(g, |x| x.iter().map(|&a| (a as f64) * (a as f64)).sum::<f64>())?;
            }
        }
        Ok(total.sqrt())
    }

    /// One update of every var that has a gradient; gradients are scaled so their global norm
    /// is at most `clip`. Returns the norm before clipping.
    pub fn step(&mut self, vars: &BTreeMap<String, Var>, grads: &GradStore, lr: f64, clip: f64) -> Result<f64> {
        let norm = Self::grad_norm(vars, grads)?;
        let scale = if norm > clip { clip / norm } else { 1.0 };
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.beta1, self.beta2);
        for (name, var) in vars {
            let Some(g) = grads.get(var) else { continue };
            let g = if g.is_contiguous() { g.clone() } else { g.contiguous()? };
            let n = var.elem_count();
            let (m, v) = self.moments.entry(name.clone()).or_insert_with(|| (vec![0.0; n], vec![0.0; n]));
            let op = Update {
                moments: Mutex::new((m.as_mut_slice(), v.as_mut_slice())),
                grad_scale: scale as f32,
                b1: b1 as f32,
                b2: b2 as f32,
                c1: (1.0 - b1.powi(t)) as f32,
                c2: (1.0 - b2.powi(t)) as f32,
                lr: lr as f32,
                decay: (1.0 - lr * self.weight_decay) as f32,
                eps: self.eps as f32,
            };
            var.as_tensor().inplace_op2(&g, &op)?;
        }
        Ok(norm)
    }

    pub fn save(&self, path: &Path, vars: &BTreeMap<String, Var>) -> Result<()> {
        let mut map: BTreeMap<String, Tensor> = BTreeMap::new();
        for (name, (m, v)) in &self.moments {
            let shape = vars.get(name).map(|var| var.shape().clone()).unwrap_or_else(|| m.len().into());
            map.insert(format!("m.{name}"), Tensor::from_slice(m, shape.clone(), &Device::Cpu)?);
            map.insert(format!("v.{name}"), Tensor::from_slice(v, shape, &Device::Cpu)?);
        }
        map.insert("step".into(), Tensor::new(&[self.step as f32], &Device::Cpu)?);
        crate::nn::save_tensors(&map, path).map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    pub fn load(&mut self, path: &Path) -> Result<()> {
        let map = candle_core::safetensors::load(path, &Device::Cpu)?;
        let mut moments: BTreeMap<String, PartialMoments> = BTreeMap::new();
        for (key, t) in map {
            if key == "step" {
                self.step = t.to_vec1::<f32>()?[0] as u64;
            } else if let Some(name) = key.strip_prefix("m.") {
                moments.entry(name.to_string()).or_default().0 = Some(t.flatten_all()?.to_vec1()?);
            } else if let Some(name) = key.strip_prefix("v.") {
                moments.entry(name.to_string()).or_default().1 = Some(t.flatten_all()?.to_vec1()?);
            }
        }
        self.moments.clear();
        for (name, (m, v)) in moments {
            match (m, v) {
                (Some(m), Some(v)) => {
                    self.moments.insert(name, (m, v));
                }
                _ => candle_core::bail!("optimizer state for {name} is incomplete"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused update against the textbook formula written with tensor ops.
    #[test]
    fn fused_update_matches_composed_adamw() -> Result<()> {
        let p0 = Tensor::new(&[[0.5f32, -1.0, 2.0], [0.1, 0.0, -0.3]], &Device::Cpu)?;
        let var = Var::from_tensor(&p0)?;
        let vars: BTreeMap<String, Var> = [("w".to_string(), var.clone())].into();
        let mut opt = AdamW::new(0.1, 0.01);
        let (mut m, mut v) = (p0.zeros_like()?, p0.zeros_like()?);
        let mut expect = p0.clone();
        for step in 1..=3 {
            // loss = sum(w^3): gradient 3 w^2, large enough that clipping to 1 applies.
            let grads = var.as_tensor().powf(3.0)?.sum_all()?.backward()?;
            let g = grads.get(var.as_tensor()).unwrap().clone();
            let norm = g.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt() as f64;
            let g = (g * (1.0 / norm.max(1.0)))?;
            m = ((m * 0.9)? + (&g * 0.1)?)?;
            v = ((v * 0.999)? + (g.sqr()? * 0.001)?)?;
            let update = ((&m / (1.0 - 0.9f64.powi(step)))? / ((&v / (1.0 - 0.999f64.powi(step)))?.sqrt()? + 1e-8)?)?;
            expect = ((expect * (1.0 - 0.1 * 0.01))? - (update * 0.1)?)?;
            let got_norm = opt.step(&vars, &grads, 0.1, 1.0)?;
            assert!((got_norm - norm).abs() < 1e-4 * norm, "norm {got_norm} vs {norm}");
            let diff = (var.as_tensor() - &expect)?.abs()?.max_all()?.to_scalar::<f32>()?;
            // f32 update against composed ops with f64 scalars: rounding only (a wrong formula is off by 1e-2).
            assert!(diff < 1e-5, "step {step}: max diff {diff}");
        }
        Ok(())
    }

    #[test]
    fn moments_survive_save_and_load() -> Result<()> {
        let var = Var::from_tensor(&Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu)?)?;
        let vars: BTreeMap<String, Var> = [("w".to_string(), var.clone())].into();
        let mut opt = AdamW::new(0.01, 0.0);
        let grads = var.as_tensor().sqr()?.sum_all()?.backward()?;
        opt.step(&vars, &grads, 0.01, 10.0)?;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opt.safetensors");
        opt.save(&path, &vars)?;
        let mut back = AdamW::new(0.01, 0.0);
        back.load(&path)?;
        assert_eq!(back.step, 1);
        assert_eq!(back.moments, opt.moments);
        Ok(())
    }

    #[test]
    fn ema_moves_towards_the_parameter() -> Result<()> {
        let ema = Tensor::new(&[0f32, 10.0], &Device::Cpu)?.copy()?;
        ema_update(&ema, &Tensor::new(&[1f32, 0.0], &Device::Cpu)?, 0.75)?;
        assert_eq!(ema.to_vec1::<f32>()?, vec![0.25, 7.5]);
        Ok(())
    }
}
