//! Numerical parity with diffusers, from fixtures recorded by
//! `scripts/scheduler_fixtures.py`. Tolerance: see `common::TOL`.

mod common;

use common::{Stats, TOL, assert_timesteps, fixture, floats, opt_floats, replay_file, scaled_error};
use plantain_schedulers::{SchedulerConfig, SchedulerKind, alphas_cumprod, build};

#[test]
fn alphas_cumprod_match_diffusers() {
    let data = fixture("alphas_cumprod.json");
    for (label, entry) in data["schedules"].as_object().unwrap() {
        let kind: SchedulerKind = entry["kind"].as_str().unwrap().parse().unwrap();
        let cfg = SchedulerConfig::from_json_str(&entry["config"].to_string()).unwrap();
        let got = alphas_cumprod(kind, &cfg).unwrap();
        let want = floats(&entry["alphas_cumprod"]);
        // The plain schedules are bit-exact. Zero-SNR rescaling goes
        // through torch's CPU sqrt, which is up to 1 ulp off correct rounding;
        // the cancellation in `sqrt(a) - sqrt(a_T)` amplifies that to ~1e-6
        // relative, so those tables get a relative 1e-5 check.
        let zero_snr = label.contains("zero_snr");
        assert_eq!(got.len(), want.len(), "{label}");
        let mut worst_ulps = 0u32;
        let mut worst_rel = 0.0f32;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let ulps = (g.to_bits() as i64 - w.to_bits() as i64).unsigned_abs() as u32;
            let rel = if *w == 0.0 { g.abs() } else { (g - w).abs() / w.abs() };
            worst_ulps = worst_ulps.max(ulps);
            worst_rel = worst_rel.max(rel);
            if zero_snr {
                assert!(rel <= TOL, "{label}[{i}]: {g:e} vs {w:e} (rel {rel:e})");
            } else {
                assert_eq!(ulps, 0, "{label}[{i}]: {g:e} vs {w:e}");
            }
        }
        println!("alphas_cumprod {label}: max {worst_ulps} ulp, rel {worst_rel:e}");
    }
}

#[test]
fn schedules_match_diffusers() {
    let data = fixture("schedules.json");
    let mut worst_sigma = 0.0f32;
    let mut worst_t = 0.0f32;
    let mut checked = 0;
    for sweep in data["sweeps"].as_array().unwrap() {
        let name = sweep["name"].as_str().unwrap();
        let kind: SchedulerKind = sweep["kind"].as_str().unwrap().parse().unwrap();
        let cfg = SchedulerConfig::from_json_str(&sweep["config"].to_string()).unwrap();
        let strength = sweep["strength"].as_f64();
        for entry in sweep["entries"].as_array().unwrap() {
            let n = entry["steps"].as_u64().unwrap() as usize;
            let ctx = format!("{name} n={n}");
            let mut sched = build(kind, &cfg).unwrap();
            let result = match strength {
                None => sched.set_timesteps(n),
                Some(s) => sched.set_timesteps_img2img(n, s).map(|b| assert_eq!(b, 0)),
            };
            if let Some(msg) = entry.get("error") {
                assert!(result.is_err(), "{ctx}: diffusers raised `{msg}` but we accepted");
                continue;
            }
            result.unwrap_or_else(|e| panic!("{ctx}: {e}"));
            worst_t = worst_t.max(assert_timesteps(&ctx, sched.timesteps(), &floats(&entry["timesteps"])));
            match (sched.sigmas(), opt_floats(&entry["sigmas"])) {
                (Some(g), Some(w)) => {
                    // Sigmas reach 2e4 for the cosine schedule; compare relatively there.
                    for (a, b) in g.iter().zip(&w) {
                        let err = (a - b).abs() / b.abs().max(1.0);
                        worst_sigma = worst_sigma.max(err);
                    }
                    assert_eq!(g.len(), w.len(), "{ctx}");
                    assert!(g.iter().zip(&w).all(|(a, b)| (a - b).abs() <= TOL * b.abs().max(1.0)), "{ctx}: sigmas {g:?} vs {w:?}");
                }
                (None, None) => {}
                (g, w) => panic!("{ctx}: sigma presence {g:?} vs {w:?}"),
            }
            let ins = entry["init_noise_sigma"].as_f64().unwrap() as f32;
            let got = sched.init_noise_sigma();
            assert!((got - ins).abs() <= TOL * ins.abs().max(1.0), "{ctx}: init_noise_sigma {got} vs {ins}");
            checked += 1;
        }
    }
    println!("schedules: {checked} schedules; max rel sigma err {worst_sigma:e}, max timestep err {worst_t:e}");
}

fn report(label: &str, stats: Stats) {
    stats.report(label);
    assert!(stats.steps_checked > 0);
}

#[test]
fn euler_trajectories_match_diffusers() {
    report("euler", replay_file("euler.json"));
}

#[test]
fn euler_ancestral_and_turbo_trajectories_match_diffusers() {
    report("euler-a/turbo", replay_file("euler_ancestral.json"));
}

#[test]
fn dpm_trajectories_match_diffusers() {
    report("dpm++2m/sde", replay_file("dpm.json"));
}

#[test]
fn ddim_trajectories_match_diffusers() {
    report("ddim", replay_file("ddim.json"));
}

#[test]
fn lcm_trajectories_match_diffusers() {
    report("lcm", replay_file("lcm.json"));
}

/// The fixtures must actually exercise the stochastic paths and multistep
/// history; guard against a regenerated fixture silently losing them.
#[test]
fn fixtures_cover_noise_and_second_order() {
    let dpm = fixture("dpm.json");
    let long = dpm["cases"].as_array().unwrap().iter().find(|c| c["name"] == "dpm/sd15-20").unwrap();
    assert_eq!(long["steps"].as_array().unwrap().len(), 20);
    for (file, case) in [
        ("euler_ancestral.json", "euler-a/sd15-20"),
        ("ddim.json", "ddim/eta-0.5-4"),
        ("lcm.json", "lcm/4"),
        ("dpm.json", "dpm-sde/karras-8"),
    ] {
        let data = fixture(file);
        let c = data["cases"].as_array().unwrap().iter().find(|c| c["name"] == case).unwrap_or_else(|| panic!("{case} missing"));
        let with_noise = c["steps"].as_array().unwrap().iter().filter(|s| !s["noise"].is_null()).count();
        assert!(with_noise > 0, "{case}: no recorded noise");
    }
    // Sanity of the comparison itself: perturbations beyond TOL must register.
    let v = [1.0f32, 2.0];
    assert!(scaled_error(&[1.0, 2.0 + 5.0 * TOL], &v) > TOL);
    assert!(scaled_error(&[1.0 + 2.0 * TOL, 2.0], &v) > TOL);
    assert!(scaled_error(&[1.0 + 0.5 * TOL, 2.0], &v) <= TOL);
}
