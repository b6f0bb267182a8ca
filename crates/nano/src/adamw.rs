//! AdamW with its moments kept in the checkpoint, so a resumed run continues exactly.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Result, Tensor, Var, backprop::GradStore};

pub struct AdamW {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub step: u64,
    moments: BTreeMap<String, (Var, Var)>,
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
                total += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
        Ok(total.sqrt())
    }

    /// One update of every var that has a gradient; gradients are scaled so their global norm
    /// is at most `clip`.
    pub fn step(&mut self, vars: &BTreeMap<String, Var>, grads: &GradStore, lr: f64, clip: f64) -> Result<f64> {
        let norm = Self::grad_norm(vars, grads)?;
        let scale = if norm > clip { clip / norm } else { 1.0 };
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.beta1, self.beta2);
        let c1 = 1.0 - b1.powi(t);
        let c2 = 1.0 - b2.powi(t);
        for (name, var) in vars {
            let Some(g) = grads.get(var) else { continue };
            let g = (g * scale)?;
            let (m, v) = match self.moments.get(name) {
                Some(mv) => mv,
                None => {
                    let zeros = || Var::zeros(var.shape(), var.dtype(), var.device());
                    self.moments.insert(name.clone(), (zeros()?, zeros()?));
                    &self.moments[name]
                }
            };
            let m_new = ((m.as_tensor() * b1)? + (&g * (1.0 - b1))?)?;
            let v_new = ((v.as_tensor() * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let update = ((&m_new / c1)? / ((&v_new / c2)?.sqrt()? + self.eps)?)?;
            let decayed = (var.as_tensor() * (1.0 - lr * self.weight_decay))?;
            var.set(&(decayed - (update * lr)?)?)?;
            m.set(&m_new)?;
            v.set(&v_new)?;
        }
        Ok(norm)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut map: BTreeMap<String, Tensor> = BTreeMap::new();
        for (name, (m, v)) in &self.moments {
            map.insert(format!("m.{name}"), m.as_tensor().clone());
            map.insert(format!("v.{name}"), v.as_tensor().clone());
        }
        map.insert("step".into(), Tensor::new(&[self.step as f32], &Device::Cpu)?);
        crate::nn::save_tensors(&map, path)
    }

    pub fn load(&mut self, path: &Path) -> Result<()> {
        let map = candle_core::safetensors::load(path, &Device::Cpu)?;
        let mut moments: BTreeMap<String, (Option<Var>, Option<Var>)> = BTreeMap::new();
        for (key, t) in map {
            if key == "step" {
                self.step = t.to_vec1::<f32>()?[0] as u64;
            } else if let Some(name) = key.strip_prefix("m.") {
                moments.entry(name.to_string()).or_default().0 = Some(Var::from_tensor(&t)?);
            } else if let Some(name) = key.strip_prefix("v.") {
                moments.entry(name.to_string()).or_default().1 = Some(Var::from_tensor(&t)?);
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
