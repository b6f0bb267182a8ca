//! Shared helpers for the diffusers parity tests.
//!
//! Fixtures are produced by `scripts/scheduler_fixtures.py` from the real
//! diffusers schedulers; nothing here computes expected values.

#![allow(dead_code)]

use std::path::PathBuf;

use plantain_schedulers::{Scheduler, SchedulerConfig, SchedulerKind, build};
use serde_json::Value;

/// Max abs error allowed on per-step latents. The Rust code mirrors
/// diffusers' f32 operation order; what remains is torch's CPU `sqrt`, `log`
/// and `exp` not being correctly rounded (up to 1 ulp off on AVX-512), so
/// results are ~1e-6 off, not bit-identical.
pub const TOL: f32 = 1e-5;

/// Timesteps are compared relative to their magnitude: fractional (Karras)
/// Euler timesteps near 1000 have an f32 ulp of 6e-5.
pub const TIMESTEP_REL_TOL: f32 = 1e-6;

pub fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/schedulers").join(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e} (run scripts/scheduler_fixtures.py)", path.display()));
    serde_json::from_str(&text).expect("fixture JSON")
}

pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap_or_else(|| panic!("expected array, got {v}")).iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

pub fn opt_floats(v: &Value) -> Option<Vec<f32>> {
    if v.is_null() { None } else { Some(floats(v)) }
}

/// Build the scheduler a fixture case describes.
pub fn build_case(case: &Value) -> Box<dyn Scheduler> {
    let kind: SchedulerKind = case["kind"].as_str().unwrap().parse().unwrap();
    let mut cfg = SchedulerConfig::from_json_str(&case["config"].to_string()).unwrap();
    if let Some(eta) = case.get("step_kwargs").and_then(|k| k.get("eta")) {
        cfg.eta = eta.as_f64();
    }
    build(kind, &cfg).unwrap_or_else(|e| panic!("{}: build failed: {e}", case["name"]))
}

/// Largest |a - b|, panicking with context on length mismatch or NaN.
pub fn max_abs_diff(ctx: &str, got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "{ctx}: length {} vs expected {}", got.len(), want.len());
    let mut worst = 0.0f32;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(g.is_finite(), "{ctx}: non-finite value {g} at {i}");
        worst = worst.max((g - w).abs());
    }
    worst
}

/// Assert `|got - want| <= TOL * max(1, |want|)` element-wise: absolute
/// 1e-5 for unit-scale values, relative 1e-5 above 1 (an f32 ulp is already
/// 4e-6 at 40 and 1e-3 at 8192, where zero-SNR latents live). Returns the
/// plain max abs error for reporting.
pub fn assert_close(ctx: &str, got: &[f32], want: &[f32]) -> f32 {
    let abs = max_abs_diff(ctx, got, want);
    let worst = scaled_error(got, want);
    assert!(worst <= TOL, "{ctx}: max scaled error {worst:e} > {TOL:e}\n got: {got:?}\nwant: {want:?}");
    abs
}

/// Largest `|got - want| / max(1, |want|)`.
pub fn scaled_error(got: &[f32], want: &[f32]) -> f32 {
    got.iter().zip(want).map(|(g, w)| (g - w).abs() / w.abs().max(1.0)).fold(0.0, f32::max)
}

/// Like [`assert_close`] but scaled by the step's input too:
/// `|got - want| <= TOL * max(1, |want|, |input|)`.
///
/// Used only for zero-SNR Euler schedules, whose first sigma is 4096: the
/// step cancels two ~1e4 terms down to ~5, so the 1-ulp difference in that
/// sigma (torch's CPU sqrt rounds sqrt(2^24 - 1) up to 4096) is amplified
/// ~2000x. That is f32 conditioning, not a porting error.
pub fn assert_close_to_operands(ctx: &str, got: &[f32], want: &[f32], input: &[f32]) -> f32 {
    let abs = max_abs_diff(ctx, got, want);
    let mut worst = 0.0f32;
    for ((g, w), x) in got.iter().zip(want).zip(input) {
        worst = worst.max((g - w).abs() / w.abs().max(x.abs()).max(1.0));
    }
    assert!(worst <= TOL, "{ctx}: max operand-scaled error {worst:e} > {TOL:e}");
    abs
}

pub fn assert_timesteps(ctx: &str, got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "{ctx}: timesteps {got:?} vs {want:?}");
    let mut worst = 0.0f32;
    for (g, w) in got.iter().zip(want) {
        let err = (g - w).abs();
        worst = worst.max(err);
        assert!(err <= TIMESTEP_REL_TOL * w.abs().max(1.0), "{ctx}: timesteps {got:?} vs {want:?}");
    }
    worst
}

/// Running maxima of the errors seen, printed per scheduler family.
#[derive(Default, Debug)]
pub struct Stats {
    pub timesteps: f32,
    pub sigmas: f32,
    pub scaled: f32,
    pub step: f32,
    pub free_run: f32,
    pub add_noise: f32,
    /// Max abs error of any kind in the zero-SNR (sigma 4096) cases.
    pub ill_conditioned: f32,
    pub steps_checked: usize,
}

impl Stats {
    fn merge(&mut self, o: &Stats, ill_conditioned: bool) {
        self.steps_checked += o.steps_checked;
        if ill_conditioned {
            let m = [o.timesteps, o.sigmas, o.scaled, o.step, o.free_run, o.add_noise];
            self.ill_conditioned = m.into_iter().fold(self.ill_conditioned, f32::max);
            return;
        }
        self.timesteps = self.timesteps.max(o.timesteps);
        self.sigmas = self.sigmas.max(o.sigmas);
        self.scaled = self.scaled.max(o.scaled);
        self.step = self.step.max(o.step);
        self.free_run = self.free_run.max(o.free_run);
        self.add_noise = self.add_noise.max(o.add_noise);
    }

    pub fn report(&self, label: &str) {
        println!(
            "{label}: {} steps; max abs err: step {:e}, scale_model_input {:e}, add_noise {:e}, \
             timesteps {:e}, free-run final {:e}, sigmas {:e}; zero-SNR cases (any) {:e}",
            self.steps_checked, self.step, self.scaled, self.add_noise, self.timesteps, self.free_run, self.sigmas, self.ill_conditioned,
        );
    }
}

/// Replay every case of a trajectory fixture file against the Rust port.
///
/// Per step, the input sample is diffusers' previous output (so each step is
/// checked in isolation); a second, free-running pass feeds our own outputs
/// forward with the recorded model outputs and noise and checks the final
/// latents.
pub fn replay_file(file: &str) -> Stats {
    let data = fixture(file);
    let mut stats = Stats::default();
    for case in data["cases"].as_array().unwrap() {
        replay_case(case, &mut stats);
    }
    stats
}

fn set_up(case: &Value, sched: &mut dyn Scheduler) {
    let name = case["name"].as_str().unwrap();
    let n = case["num_inference_steps"].as_u64().unwrap() as usize;
    let begin = match case["strength"].as_f64() {
        None => {
            sched.set_timesteps(n).unwrap();
            0
        }
        Some(s) => sched.set_timesteps_img2img(n, s).unwrap(),
    };
    assert_eq!(begin, case["begin_index"].as_u64().unwrap() as usize, "{name}: begin index");
    assert_eq!(sched.begin_index(), begin, "{name}: begin_index()");
}

pub fn replay_case(case: &Value, all: &mut Stats) {
    let name = case["name"].as_str().unwrap();
    let mut sched = build_case(case);
    set_up(case, sched.as_mut());
    // Zero-SNR sigma-space schedules start at sigma 4096 (see
    // `assert_close_to_operands`); everything else uses the strict check.
    let ill_conditioned = sched.sigmas().is_some_and(|s| s[0] > 1000.0);
    let mut local = Stats::default();
    let stats = &mut local;

    stats.timesteps = stats.timesteps.max(assert_timesteps(&format!("{name} timesteps"), sched.timesteps(), &floats(&case["timesteps"])));
    match (sched.sigmas(), opt_floats(&case["sigmas"])) {
        (Some(got), Some(want)) => {
            stats.sigmas = stats.sigmas.max(assert_close(&format!("{name} sigmas"), got, &want));
        }
        (None, None) => {}
        (g, w) => panic!("{name}: sigmas presence differs: {g:?} vs {w:?}"),
    }
    let ins = case["init_noise_sigma"].as_f64().unwrap() as f32;
    stats.sigmas = stats.sigmas.max(assert_close(&format!("{name} init_noise_sigma"), &[sched.init_noise_sigma()], &[ins]));

    let begin = sched.begin_index();
    let initial = floats(&case["initial_latents"]);
    if let Some(an) = case.get("add_noise") {
        let got = sched.add_noise(&floats(&an["original"]), &floats(&an["noise"]), begin).unwrap();
        stats.add_noise = stats.add_noise.max(assert_close(&format!("{name} add_noise"), &got, &floats(&an["output"])));
        assert_eq!(floats(&an["output"]), initial, "{name}: fixture consistency");
    }

    let steps = case["steps"].as_array().unwrap();
    assert_eq!(steps.len(), sched.timesteps().len() - begin, "{name}: step count");

    // Pass 1: each step from diffusers' own input.
    let mut input = initial.clone();
    for rec in steps {
        let i = rec["step_index"].as_u64().unwrap() as usize;
        let ctx = format!("{name} step {i}");
        let scaled = sched.scale_model_input(&input, i).unwrap();
        match opt_floats(&rec["scaled"]) {
            Some(want) => stats.scaled = stats.scaled.max(assert_close(&format!("{ctx} scaled"), &scaled, &want)),
            None => assert_eq!(scaled, input, "{ctx}: scale_model_input must be the identity"),
        }
        let noise = opt_floats(&rec["noise"]);
        assert_eq!(sched.needs_noise(i), noise.is_some(), "{ctx}: needs_noise");
        let mo = floats(&rec["model_output"]);
        let out = sched.step(&mo, i, &input, noise.as_deref()).unwrap();
        let want = floats(&rec["prev_sample"]);
        let err = if ill_conditioned { assert_close_to_operands(&ctx, &out, &want, &input) } else { assert_close(&ctx, &out, &want) };
        stats.step = stats.step.max(err);
        stats.steps_checked += 1;
        input = want;
    }

    // Pass 2: free-running on a fresh scheduler.
    let mut sched = build_case(case);
    set_up(case, sched.as_mut());
    let mut latents = initial;
    for rec in steps {
        let i = rec["step_index"].as_u64().unwrap() as usize;
        let noise = opt_floats(&rec["noise"]);
        let _ = sched.scale_model_input(&latents, i).unwrap();
        latents = sched.step(&floats(&rec["model_output"]), i, &latents, noise.as_deref()).unwrap();
    }
    let last = steps.last().unwrap();
    let want = floats(&last["prev_sample"]);
    let ctx = format!("{name} free-running final");
    let err = if ill_conditioned {
        // The error enters at step 0, so scale by that step's input.
        assert_close_to_operands(&ctx, &latents, &want, &floats(&case["initial_latents"]))
    } else {
        assert_close(&ctx, &latents, &want)
    };
    stats.free_run = stats.free_run.max(err);
    println!("  {name}: {} steps, max abs err step {:e}, free-run {:e}", local.steps_checked, local.step, local.free_run);
    all.merge(&local, ill_conditioned);
}
