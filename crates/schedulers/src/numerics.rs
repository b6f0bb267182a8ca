//! Bit-level re-implementations of the numpy / torch primitives diffusers uses
//! to build its schedules, so that timesteps and sigmas match exactly.
//!
//! Precision notes (all checked against fixtures):
//! - `torch.linspace(.., dtype=float32)` on CPU evaluates `start + step * i`
//!   (first half) / `end - step * (n - 1 - i)` (second half) in f32 with a
//!   fused multiply-add.
//! - `torch.cumprod` on CPU accumulates in f64 and rounds each output to f32.
//! - numpy `linspace`, `arange`, `interp`, `round` work in f64; `round` is
//!   round-half-to-even.

/// `torch.linspace(start, end, steps, dtype=torch.float32)` on CPU.
pub(crate) fn torch_linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    if steps == 0 {
        return Vec::new();
    }
    let s = start as f32;
    let e = end as f32;
    if steps == 1 {
        return vec![s];
    }
    let step = (e - s) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps).map(|i| if i < halfway { step.mul_add(i as f32, s) } else { (-step).mul_add((steps - i - 1) as f32, e) }).collect()
}

/// `numpy.linspace(start, stop, num, endpoint)` in f64.
pub(crate) fn np_linspace(start: f64, stop: f64, num: usize, endpoint: bool) -> Vec<f64> {
    let div = if endpoint { num.saturating_sub(1) } else { num };
    let delta = stop - start;
    let mut y: Vec<f64> = (0..num).map(|i| i as f64).collect();
    if div > 0 {
        let step = delta / div as f64;
        if step == 0.0 {
            for v in &mut y {
                *v = *v / div as f64 * delta;
            }
        } else {
            for v in &mut y {
                *v *= step;
            }
        }
    } else {
        for v in &mut y {
            *v *= delta;
        }
    }
    for v in &mut y {
        *v += start;
    }
    if endpoint && num > 1 {
        y[num - 1] = stop;
    }
    y
}

/// `numpy.arange(start, stop, step)` for float arguments: the first two
/// elements are `start` and `start + step`, the rest `start + i * delta` with
/// `delta = (start + step) - start`.
pub(crate) fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 {
        return Vec::new();
    }
    let len = len as usize;
    let mut out = Vec::with_capacity(len);
    out.push(start);
    if len > 1 {
        let next = start + step;
        out.push(next);
        let delta = next - start;
        for i in 2..len {
            out.push(start + i as f64 * delta);
        }
    }
    out
}

/// `numpy.interp(x, arange(len(fp)), fp)` for one point.
pub(crate) fn np_interp_grid(x: f64, fp: &[f32]) -> f64 {
    let n = fp.len();
    if n == 0 || x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return fp[0] as f64;
    }
    let last = (n - 1) as f64;
    if x >= last {
        return fp[n - 1] as f64;
    }
    let j = x.floor() as usize;
    if j as f64 == x {
        return fp[j] as f64;
    }
    let (y0, y1) = (fp[j] as f64, fp[j + 1] as f64);
    let slope = (y1 - y0) / 1.0;
    let r = slope * (x - j as f64) + y0;
    if r.is_nan() {
        let r2 = slope * (x - (j + 1) as f64) + y1;
        if r2.is_nan() && y0 == y1 {
            return y0;
        }
        return r2;
    }
    r
}

/// diffusers' `_sigma_to_t`: invert the sigma table in log space.
///
/// `log_sigmas` is the f32 `np.log` of the training sigmas; `low - high` is
/// evaluated in f32 exactly as numpy does with two `float32` scalars.
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let n = log_sigmas.len();
    if n < 2 {
        return 0.0;
    }
    let log_sigma = sigma.max(1e-10).ln();
    // argmax(cumsum(dists >= 0)) == index of the last `true`, or 0 if none.
    let mut low_idx = 0usize;
    for (i, &ls) in log_sigmas.iter().enumerate() {
        if log_sigma - ls as f64 >= 0.0 {
            low_idx = i;
        }
    }
    let low_idx = low_idx.min(n - 2);
    let high_idx = low_idx + 1;
    let low = log_sigmas[low_idx];
    let high = log_sigmas[high_idx];
    let w = (low as f64 - log_sigma) / (low - high) as f64;
    let w = w.clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// Karras et al. (2022) rho=7 sigma ramp, in f64 like diffusers.
pub(crate) fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0f64;
    let min_inv_rho = sigma_min.powf(1.0 / rho);
    let max_inv_rho = sigma_max.powf(1.0 / rho);
    np_linspace(0.0, 1.0, n, true).into_iter().map(|r| (max_inv_rho + r * (min_inv_rho - max_inv_rho)).powf(rho)).collect()
}

/// `torch.cumprod` of an f32 tensor on CPU (f64 accumulator).
pub(crate) fn cumprod_f32(values: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    values
        .iter()
        .map(|&v| {
            acc *= v as f64;
            acc as f32
        })
        .collect()
}

/// `((1 - a) / a) ** 0.5` in f32, the Karras-style sigma of each train step.
pub(crate) fn sigma_from_alpha_cumprod(a: f32) -> f32 {
    ((1.0 - a) / a).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arange_matches_numpy_shapes() {
        assert_eq!(np_arange(1000.0, 0.0, -250.0), vec![1000.0, 750.0, 500.0, 250.0]);
        assert_eq!(np_arange(1000.0, 0.0, -1000.0), vec![1000.0]);
        assert_eq!(np_arange(0.0, 0.0, -1.0), Vec::<f64>::new());
        assert_eq!(np_arange(1000.0, 0.0, -1000.0 / 3.0).len(), 3);
    }

    #[test]
    fn linspace_endpoints() {
        assert_eq!(np_linspace(0.0, 1.0, 1, true), vec![0.0]);
        assert_eq!(np_linspace(0.0, 999.0, 3, true), vec![0.0, 499.5, 999.0]);
        assert_eq!(np_linspace(0.0, 50.0, 4, false), vec![0.0, 12.5, 25.0, 37.5]);
        let t = torch_linspace_f32(0.1, 0.2, 5);
        assert_eq!(t[0], 0.1f32);
        assert_eq!(t[4], 0.2f32);
    }

    #[test]
    fn interp_clamps_and_hits_knots() {
        let fp = [1.0f32, 3.0, 7.0];
        assert_eq!(np_interp_grid(-1.0, &fp), 1.0);
        assert_eq!(np_interp_grid(1.0, &fp), 3.0);
        assert_eq!(np_interp_grid(1.5, &fp), 5.0);
        assert_eq!(np_interp_grid(9.0, &fp), 7.0);
    }

    #[test]
    fn sigma_to_t_inverts_table() {
        let sig: Vec<f32> = (1..=10).map(|i| i as f32).collect();
        let logs: Vec<f32> = sig.iter().map(|s| s.ln()).collect();
        assert!((sigma_to_t(4.0, &logs) - 3.0).abs() < 1e-6);
        assert_eq!(sigma_to_t(0.5, &logs), 0.0);
        assert_eq!(sigma_to_t(20.0, &logs), 9.0);
    }
}
