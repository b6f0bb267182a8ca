//! Config validation, kind resolution and call-contract tests.

use plantain_schedulers::{Scheduler, SchedulerConfig, SchedulerError, SchedulerKind, build, build_from_config, resolve_kind};

fn sd15() -> SchedulerConfig {
    SchedulerConfig::stable_diffusion_v1()
}

fn all_kinds() -> Vec<SchedulerKind> {
    SchedulerKind::NAMES.iter().map(|n| n.parse().unwrap()).collect()
}

fn cfg(json: &str) -> SchedulerConfig {
    SchedulerConfig::from_json_str(json).unwrap()
}

#[test]
fn zero_steps_is_an_error_for_every_kind() {
    for kind in all_kinds() {
        let mut s = build(kind, &sd15()).unwrap();
        assert!(matches!(s.set_timesteps(0), Err(SchedulerError::InvalidSteps(_))), "{kind}");
    }
}

#[test]
fn more_steps_than_training_timesteps_is_an_error() {
    for kind in all_kinds() {
        let mut s = build(kind, &sd15()).unwrap();
        assert!(matches!(s.set_timesteps(1001), Err(SchedulerError::InvalidSteps(_))), "{kind}");
    }
}

#[test]
fn lcm_rejects_more_steps_than_its_distillation_grid() {
    let mut s = build(SchedulerKind::Lcm, &sd15()).unwrap();
    assert!(s.set_timesteps(50).is_ok());
    assert!(s.set_timesteps(51).is_err());
    // img2img shrinks the grid: 50 * 0.3 = 15 usable timesteps.
    assert!(s.set_timesteps_img2img(15, 0.3).is_ok());
    assert!(s.set_timesteps_img2img(16, 0.3).is_err());
}

#[test]
fn ddim_rejects_timesteps_pushed_past_the_training_range() {
    // leading spacing with 1000 steps and steps_offset 1 would index t = 1000.
    let mut s = build(SchedulerKind::Ddim, &sd15()).unwrap();
    assert!(matches!(s.set_timesteps(1000), Err(SchedulerError::InvalidSteps(_))));
    assert!(s.set_timesteps(500).is_ok());
}

#[test]
fn bad_config_values_are_errors_not_panics() {
    let cases = [
        r#"{"beta_schedule": "cubic"}"#,
        r#"{"timestep_spacing": "sideways"}"#,
        r#"{"prediction_type": "noise"}"#,
        r#"{"num_train_timesteps": 0}"#,
        r#"{"num_train_timesteps": 1}"#,
        r#"{"beta_start": -0.1}"#,
        r#"{"beta_end": 1.5}"#,
        r#"{"trained_betas": [0.1, 0.2]}"#,
        r#"{"trained_betas": [1.0, 1.0, 1.0], "num_train_timesteps": 3}"#,
        r#"{"thresholding": true}"#,
        r#"{"use_exponential_sigmas": true}"#,
        r#"{"use_beta_sigmas": true}"#,
        r#"{"use_flow_sigmas": true}"#,
    ];
    for json in cases {
        for kind in all_kinds() {
            if kind == SchedulerKind::Turbo && json.contains("timestep_spacing") {
                continue; // turbo replaces the spacing with `trailing`
            }
            let err = build(kind, &cfg(json)).err();
            assert!(err.is_some(), "{kind} accepted {json}");
        }
    }
}

#[test]
fn scheduler_specific_bad_values() {
    let bad = [
        (SchedulerKind::Euler, r#"{"interpolation_type": "log_linear"}"#),
        (SchedulerKind::Euler, r#"{"final_sigmas_type": "one"}"#),
        (SchedulerKind::Euler, r#"{"timestep_type": "fractional"}"#),
        (SchedulerKind::EulerAncestral, r#"{"prediction_type": "sample"}"#),
        (SchedulerKind::Turbo, r#"{"prediction_type": "sample"}"#),
        (SchedulerKind::DpmPlusPlus2M { karras: false }, r#"{"solver_type": "rk4"}"#),
        (SchedulerKind::DpmPlusPlus2M { karras: false }, r#"{"variance_type": "learned_range"}"#),
        (SchedulerKind::DpmPlusPlus2M { karras: false }, r#"{"final_sigmas_type": "x"}"#),
        (SchedulerKind::Ddim, r#"{"eta": -1.0}"#),
        (SchedulerKind::Ddim, r#"{"clip_sample": true, "clip_sample_range": 0.0}"#),
        (SchedulerKind::Lcm, r#"{"original_inference_steps": 0}"#),
        (SchedulerKind::Lcm, r#"{"original_inference_steps": 2000}"#),
    ];
    for (kind, json) in bad {
        assert!(build(kind, &cfg(json)).is_err(), "{kind} accepted {json}");
    }
}

#[test]
fn dpm_from_file_rejects_unsupported_solver_settings() {
    for json in [
        r#"{"_class_name": "DPMSolverMultistepScheduler", "solver_order": 3}"#,
        r#"{"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver"}"#,
        r#"{"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver"}"#,
    ] {
        assert!(build_from_config(&cfg(json)).is_err(), "accepted {json}");
    }
    // An explicit kind overrides the file's order / algorithm.
    let c = cfg(r#"{"_class_name": "DPMSolverMultistepScheduler", "solver_order": 3}"#);
    assert!(build(SchedulerKind::DpmPlusPlus2M { karras: false }, &c).is_ok());
}

#[test]
fn malformed_json_is_an_error() {
    assert!(matches!(SchedulerConfig::from_json_str("{ not json"), Err(SchedulerError::Json(_))));
    assert!(matches!(SchedulerConfig::from_json_str(r#"{"num_train_timesteps": "many"}"#), Err(SchedulerError::Json(_))));
    assert!(matches!(SchedulerConfig::from_file("/nonexistent/scheduler_config.json"), Err(SchedulerError::Io { .. })));
}

#[test]
fn class_names_resolve_with_fallbacks() {
    let resolved = |json: &str| resolve_kind(&cfg(json));
    let r = resolved(r#"{"_class_name": "EulerDiscreteScheduler"}"#).unwrap();
    assert_eq!((r.kind, r.fallback_reason), (SchedulerKind::Euler, None));
    let r = resolved(r#"{"_class_name": "EulerAncestralDiscreteScheduler"}"#).unwrap();
    assert_eq!(r.kind, SchedulerKind::EulerAncestral);
    let r = resolved(r#"{"_class_name": "DPMSolverMultistepScheduler", "use_karras_sigmas": true}"#).unwrap();
    assert_eq!(r.kind, SchedulerKind::DpmPlusPlus2M { karras: true });
    let r = resolved(r#"{"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver++"}"#).unwrap();
    assert_eq!(r.kind, SchedulerKind::DpmPlusPlus2MSde { karras: false });
    assert_eq!(resolved(r#"{"_class_name": "DDIMScheduler"}"#).unwrap().kind, SchedulerKind::Ddim);
    assert_eq!(resolved(r#"{"_class_name": "LCMScheduler"}"#).unwrap().kind, SchedulerKind::Lcm);

    for fallback in ["PNDMScheduler", "UniPCMultistepScheduler", "LMSDiscreteScheduler"] {
        let r = resolved(&format!(r#"{{"_class_name": "{fallback}"}}"#)).unwrap();
        assert_eq!(r.kind, SchedulerKind::Euler);
        assert!(r.fallback_reason.unwrap().contains(fallback));
    }
    let r = resolved("{}").unwrap();
    assert_eq!(r.kind, SchedulerKind::Euler);
    assert!(r.fallback_reason.is_some());

    for unsupported in ["FlowMatchEulerDiscreteScheduler", "EDMEulerScheduler", "Nope"] {
        assert!(matches!(resolved(&format!(r#"{{"_class_name": "{unsupported}"}}"#)), Err(SchedulerError::UnsupportedClass(_))));
    }
}

#[test]
fn build_from_config_reports_kind() {
    let c = cfg(r#"{"_class_name": "EulerAncestralDiscreteScheduler", "timestep_spacing": "trailing",
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}"#);
    let (mut s, r) = build_from_config(&c).unwrap();
    assert_eq!(s.kind(), SchedulerKind::EulerAncestral);
    assert_eq!(r.kind, SchedulerKind::EulerAncestral);
    s.set_timesteps(1).unwrap();
    assert_eq!(s.timesteps(), &[999.0]);
}

#[test]
fn turbo_forces_trailing_spacing() {
    // SD1.5 file says "leading" (one step would sit at t = 1); turbo overrides.
    let mut s = build(SchedulerKind::Turbo, &sd15()).unwrap();
    s.set_timesteps(1).unwrap();
    assert_eq!(s.timesteps(), &[999.0]);
    assert_eq!(s.kind(), SchedulerKind::Turbo);
    let mut e = build(SchedulerKind::EulerAncestral, &sd15()).unwrap();
    e.set_timesteps(1).unwrap();
    assert_eq!(e.timesteps(), &[1.0]);
}

#[test]
fn kind_is_reported() {
    for kind in all_kinds() {
        let s = build(kind, &sd15()).unwrap();
        assert_eq!(s.kind(), kind);
    }
}

#[test]
fn step_contract_errors() {
    let x = vec![0.5f32; 8];
    let mut s = build(SchedulerKind::Euler, &sd15()).unwrap();
    // Before set_timesteps nothing is in range.
    assert!(matches!(s.step(&x, 0, &x, None), Err(SchedulerError::StepOutOfRange { index: 0, len: 0 })));
    s.set_timesteps(4).unwrap();
    assert!(matches!(s.step(&x, 4, &x, None), Err(SchedulerError::StepOutOfRange { .. })));
    assert!(matches!(s.step(&x[..7], 0, &x, None), Err(SchedulerError::LengthMismatch { what: "model_output", .. })));
    assert!(s.scale_model_input(&x, 4).is_err());
    assert!(matches!(s.add_noise(&x, &x[..3], 0), Err(SchedulerError::LengthMismatch { what: "noise", .. })));

    let mut a = build(SchedulerKind::EulerAncestral, &sd15()).unwrap();
    a.set_timesteps(4).unwrap();
    assert!(a.needs_noise(0));
    assert!(matches!(a.step(&x, 0, &x, None), Err(SchedulerError::MissingNoise(0))));
    assert!(matches!(a.step(&x, 0, &x, Some(&x[..2])), Err(SchedulerError::LengthMismatch { what: "noise", .. })));
    assert!(a.step(&x, 0, &x, Some(&x)).is_ok());
}

#[test]
fn needs_noise_per_kind() {
    let mut with_eta = sd15();
    with_eta.eta = Some(0.3);
    let expectations: [(SchedulerKind, &SchedulerConfig, [bool; 4]); 6] = [
        (SchedulerKind::Euler, &sd15(), [false; 4]),
        (SchedulerKind::EulerAncestral, &sd15(), [true; 4]),
        (SchedulerKind::DpmPlusPlus2M { karras: true }, &sd15(), [false; 4]),
        (SchedulerKind::DpmPlusPlus2MSde { karras: true }, &sd15(), [true; 4]),
        (SchedulerKind::Ddim, &with_eta, [true; 4]),
        // LCM re-noises between steps but not after the last one.
        (SchedulerKind::Lcm, &sd15(), [true, true, true, false]),
    ];
    for (kind, c, want) in expectations {
        let mut s = build(kind, c).unwrap();
        s.set_timesteps(4).unwrap();
        let got: Vec<bool> = (0..4).map(|i| s.needs_noise(i)).collect();
        assert_eq!(got, want, "{kind}");
    }
    let mut d = build(SchedulerKind::Ddim, &sd15()).unwrap();
    d.set_timesteps(4).unwrap();
    assert!(!d.needs_noise(0));
}

#[test]
fn img2img_strength_validation() {
    for kind in all_kinds() {
        let mut s = build(kind, &sd15()).unwrap();
        assert!(matches!(s.set_timesteps_img2img(10, 1.5), Err(SchedulerError::InvalidStrength(_))));
        assert!(s.set_timesteps_img2img(10, -0.5).is_err());
        assert!(s.set_timesteps_img2img(10, 0.0).is_err(), "{kind}: strength 0 leaves no steps");
    }
    let mut s = build(SchedulerKind::Euler, &sd15()).unwrap();
    assert_eq!(s.set_timesteps_img2img(20, 0.6).unwrap(), 8);
    assert_eq!(s.begin_index(), 8);
    assert_eq!(s.timesteps().len(), 20);
    // A plain set_timesteps afterwards starts from the top again.
    s.set_timesteps(20).unwrap();
    assert_eq!(s.begin_index(), 0);
}

/// Re-running a schedule must not leak DPM++ history between runs, and a
/// non-consecutive step index restarts the multistep history.
#[test]
fn dpm_history_restarts() {
    let n = 6;
    let sample: Vec<f32> = (0..16).map(|i| (i as f32 * 0.7).sin()).collect();
    let run = |s: &mut Box<dyn Scheduler>| {
        let mut x = sample.clone();
        for i in 0..n {
            let mo: Vec<f32> = x.iter().map(|v| 0.5 * v + 0.1 * i as f32).collect();
            x = s.step(&mo, i, &x, None).unwrap();
        }
        x
    };
    let mut s = build(SchedulerKind::DpmPlusPlus2M { karras: false }, &sd15()).unwrap();
    s.set_timesteps(n).unwrap();
    let first = run(&mut s);
    let second = run(&mut s); // no set_timesteps in between
    assert_eq!(first, second);

    // Step 3 alone (fresh history) is first-order and differs from step 3 in
    // sequence (second-order), which proves history is actually used.
    let mut seq = build(SchedulerKind::DpmPlusPlus2M { karras: false }, &sd15()).unwrap();
    seq.set_timesteps(n).unwrap();
    let mut x = sample.clone();
    let mut at3 = Vec::new();
    for i in 0..4 {
        let mo: Vec<f32> = x.iter().map(|v| 0.5 * v).collect();
        let input = x.clone();
        x = seq.step(&mo, i, &x, None).unwrap();
        if i == 3 {
            at3 = input;
        }
    }
    let mo: Vec<f32> = at3.iter().map(|v| 0.5 * v).collect();
    let mut lone = build(SchedulerKind::DpmPlusPlus2M { karras: false }, &sd15()).unwrap();
    lone.set_timesteps(n).unwrap();
    let alone = lone.step(&mo, 3, &at3, None).unwrap();
    assert_ne!(alone, x);
}

#[test]
fn sigma_space_and_alpha_space_views() {
    for kind in all_kinds() {
        let mut s = build(kind, &sd15()).unwrap();
        s.set_timesteps(4).unwrap();
        match s.sigmas() {
            Some(sig) => {
                assert_eq!(sig.len(), 5, "{kind}");
                assert_eq!(*sig.last().unwrap(), 0.0, "{kind}");
            }
            None => assert!(matches!(kind, SchedulerKind::Ddim | SchedulerKind::Lcm)),
        }
        assert_eq!(s.timesteps().len(), 4, "{kind}");
        assert!(s.init_noise_sigma() >= 1.0, "{kind}");
    }
}
