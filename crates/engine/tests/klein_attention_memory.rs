//! The klein transformer's attention never holds a whole score matrix: a long sequence (8704
//! tokens, where one [heads, S, S] f32 score tensor is 606 MB) runs within a fraction of that.
//! Alone in its binary, so the process's peak RSS is this test's.

mod common;
use common::{runtime, tiny};
use ndarray::{ArrayD, IxDyn};
use plantain_engine::models::flux2::{self, Flux2Config};
use plantain_engine::runtime::{Input, Network};
use plantain_engine::weights::TensorIndex;

fn hwm_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let l = s.lines().find(|l| l.starts_with("VmHWM")).unwrap();
    l.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() / 1024.0
}

#[test]
fn klein_attention_does_not_materialise_the_score_matrix() {
    let dir = tiny("flux2-klein");
    let cfg = Flux2Config::from_file(&dir.join("transformer/config.json")).unwrap();
    let idx = TensorIndex::open(&dir.join("transformer/diffusion_pytorch_model.safetensors")).unwrap();
    let net = Network::new(&flux2::build(&cfg, &idx).unwrap(), "klein-dit-long", &runtime()).unwrap();
    let (n, l, d) = (8192usize, 512usize, cfg.attention_head_dim);
    let ids: Vec<[i64; 4]> = (0..n as i64).map(|i| [0, i / 128, i % 128, 0]).collect();
    let tids: Vec<[i64; 4]> = (0..l as i64).map(|i| [0, 0, 0, i]).collect();
    let (ic, is) = flux2::rope_tables(&ids, &cfg);
    let (tc, ts) = flux2::rope_tables(&tids, &cfg);
    let t = |v: Vec<f32>| Input::F32(ArrayD::from_shape_vec(IxDyn(&[v.len() / d, d]), v).unwrap());
    let before = hwm_mb();
    let start = std::time::Instant::now();
    let out = net
        .run(vec![
            ("hidden_states", Input::F32(ArrayD::from_elem(IxDyn(&[1, n, cfg.in_channels]), 0.1))),
            ("encoder_hidden_states", Input::F32(ArrayD::from_elem(IxDyn(&[1, l, cfg.joint_attention_dim]), 0.1))),
            ("timestep", Input::F32(ArrayD::from_elem(IxDyn(&[1]), 0.5))),
            ("txt_cos", t(tc)),
            ("txt_sin", t(ts)),
            ("img_cos", t(ic)),
            ("img_sin", t(is)),
        ])
        .unwrap();
    let full = 2.0 * (n + l) as f64 * (n + l) as f64 * 4.0 / 1e6;
    let after = hwm_mb();
    eprintln!(
        "{} tokens: peak RSS {before:.0} -> {after:.0} MB in {:.1}s; one score tensor is {full:.0} MB",
        n + l,
        start.elapsed().as_secs_f32()
    );
    assert_eq!(out["sample"].shape(), &[1, n, cfg.out_channels()]);
    assert!(after - before < full / 3.0, "peak RSS grew by {:.0} MB (a score tensor is {full:.0} MB)", after - before);
}
