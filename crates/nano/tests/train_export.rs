//! The trainer on the tiny architecture: determinism, exact resume, and an export that the
//! engine loads and computes the same as the trainer's own modules.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device, Tensor};
use ndarray::ArrayD;
use plantain_engine::models::clip::{self, ClipOutputs, ClipTextConfig};
use plantain_engine::models::unet::{self as engine_unet, UNetConfig as EngineUNetConfig};
use plantain_engine::models::vae::{self as engine_vae, VaeConfig as EngineVaeConfig};
use plantain_engine::runtime::{Input, Network, RuntimeOptions};
use plantain_engine::weights::TensorIndex;
use plantain_nano::nn::Store;
use plantain_nano::{NanoConfig, Phase, TrainOptions, train};

fn runtime() -> RuntimeOptions {
    let dir = std::env::temp_dir().join(format!("plantain-nano-test-cache-{}", std::process::id()));
    RuntimeOptions { threads: 1, cache_dir: dir, cuda: false }
}

fn run(work: &Path, out: &Path, cancel_at: Option<u64>) -> plantain_nano::Result<plantain_nano::train::Summary> {
    run_until(work, out, cancel_at.map(|s| (Phase::Diffusion, s)))
}

fn run_until(work: &Path, out: &Path, cancel_at: Option<(Phase, u64)>) -> plantain_nano::Result<plantain_nano::train::Summary> {
    let cancel = AtomicBool::new(false);
    train(&NanoConfig::tiny(), &TrainOptions::smoke(), work, out, &cancel, &mut |p| {
        if Some((p.phase, p.step)) == cancel_at {
            cancel.store(true, Ordering::Relaxed);
        }
    })
}

fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn training_is_deterministic_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let sa = run(&a.join("work"), &a.join("model"), None).unwrap();
    assert!(sa.loss.is_finite() && sa.vae_loss.is_finite());
    let (config, scale) = train::checkpoint_config(&a.join("work")).unwrap();
    assert_eq!((config, scale), (NanoConfig::tiny(), Some(sa.latent_scale)));
    assert!(train::checkpoint_config(&a.join("model")).is_err(), "a model folder is no checkpoint folder");

    // Stopped after diffusion step 3 of 3's predecessor checkpoint, then resumed.
    let err = run(&b.join("work"), &b.join("model"), Some(2)).err().expect("cancelled");
    assert!(matches!(err, plantain_nano::NanoError::Cancelled), "{err}");
    assert!(!b.join("model").exists(), "no model is written before training ends");
    let sb = run(&b.join("work"), &b.join("model"), None).unwrap();
    assert_eq!(sa.loss, sb.loss);
    // Stopped in the text-parse phase, then resumed.
    let c = tmp.path().join("c");
    let err = run_until(&c.join("work"), &c.join("model"), Some((Phase::Text, 2))).err().expect("cancelled");
    assert!(matches!(err, plantain_nano::NanoError::Cancelled), "{err}");
    let sc = run(&c.join("work"), &c.join("model"), None).unwrap();
    assert_eq!(sa.loss, sc.loss);

    for file in ["unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors", "vae/diffusion_pytorch_model.safetensors"] {
        assert!(read(a.join("model").join(file)) == read(b.join("model").join(file)), "{file} differs after resume");
        assert!(read(a.join("model").join(file)) == read(c.join("model").join(file)), "{file} differs after a resume in the text phase");
    }
    for file in ["model_index.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt", "README.md"] {
        assert!(a.join("model").join(file).is_file(), "{file} missing");
    }
}

#[test]
fn another_configuration_refuses_the_checkpoint_folder() {
    let tmp = tempfile::tempdir().unwrap();
    run(&tmp.path().join("work"), &tmp.path().join("model"), None).unwrap();
    let mut other = TrainOptions::smoke();
    other.seed = 7;
    let err = train(&NanoConfig::tiny(), &other, &tmp.path().join("work"), &tmp.path().join("m2"), &AtomicBool::new(false), &mut |_| {})
        .err()
        .expect("refused");
    assert!(err.to_string().contains("another configuration"), "{err}");
}

#[test]
fn a_finished_autoencoder_serves_new_diffusion_settings_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let train_with = |opts: &TrainOptions, work: &Path| {
        train(&NanoConfig::tiny(), opts, work, &tmp.path().join("model"), &AtomicBool::new(false), &mut |_| {})
    };
    // Stopped during diffusion step 1, before its first checkpoint: the folder holds a
    // finished autoencoder and no diffusion state.
    let work = tmp.path().join("work");
    assert!(matches!(run(&work, &tmp.path().join("m"), Some(1)), Err(plantain_nano::NanoError::Cancelled)));
    let vae_before = read(work.join("vae.safetensors"));

    let mut autoencoder_changed = TrainOptions::smoke();
    autoencoder_changed.vae_lr *= 2.0;
    let err = train_with(&autoencoder_changed, &work).err().expect("refused");
    assert!(err.to_string().contains("another configuration"), "{err}");

    let mut diffusion_changed = TrainOptions::smoke();
    diffusion_changed.lr *= 0.5;
    diffusion_changed.steps = 2;
    train_with(&diffusion_changed, &work).unwrap();
    assert!(read(work.join("vae.safetensors")) == vae_before, "the autoencoder was not retrained");

    // Once diffusion has started, its settings are fixed too.
    let mut changed_again = diffusion_changed.clone();
    changed_again.lr *= 0.5;
    let err = train_with(&changed_again, &work).err().expect("refused");
    assert!(err.to_string().contains("another configuration"), "{err}");
}

fn to_nd(t: &Tensor) -> ArrayD<f32> {
    let shape = t.dims().to_vec();
    ArrayD::from_shape_vec(shape, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()).unwrap()
}

fn assert_close(what: &str, got: &ArrayD<f32>, want: &ArrayD<f32>) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
    let err = got.iter().zip(want.iter()).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(err <= 1e-4 * scale.max(1.0), "{what}: max error {err} (scale {scale})");
}

fn seeded(shape: &[usize], seed: u64) -> Tensor {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    plantain_nano::data::gaussian(shape, &mut rng).unwrap()
}

/// The engine's UNet graph on the folder `dir` (config.json + weights) computes what `unet`
/// computes on a seeded latent of `shape` and context.
fn assert_engine_unet_matches(dir: &Path, unet: &plantain_nano::unet::UNet, cross_attention_dim: usize, shape: &[usize], what: &str) {
    let x = seeded(shape, 1);
    let ctx = seeded(&[shape[0], 77, cross_attention_dim], 2);
    let steps: Vec<f32> = [999.0, 250.0].into_iter().cycle().take(shape[0]).collect();
    let want = unet.forward(&x, &steps, &ctx).unwrap();
    let ecfg = EngineUNetConfig::from_file(&dir.join("config.json")).unwrap();
    let idx = TensorIndex::open(&dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let net = Network::new(&engine_unet::build(&ecfg, &idx).unwrap(), what, &runtime()).unwrap();
    let t = ArrayD::from_shape_vec(vec![shape[0]], steps).unwrap();
    let got = net
        .run(vec![("sample", Input::F32(to_nd(&x))), ("timestep", Input::F32(t)), ("encoder_hidden_states", Input::F32(to_nd(&ctx)))])
        .unwrap();
    assert_close(what, &got["out_sample"], &to_nd(&want));
}

/// The engine's autoencoder graphs on the folder `dir` decode a seeded latent of `latent` and
/// encode a seeded picture of `picture` as `vae` does.
fn assert_engine_vae_matches(dir: &Path, vae: &plantain_nano::vae::Vae, latent: &[usize], picture: &[usize], what: &str) {
    let ecfg = EngineVaeConfig::from_file(&dir.join("config.json")).unwrap();
    let idx = TensorIndex::open(&dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let z = seeded(latent, 3);
    let dec = Network::new(&engine_vae::build_decoder(&ecfg, &idx).unwrap(), &format!("{what}-dec"), &runtime()).unwrap();
    let got = dec.run(vec![("latent", Input::F32(to_nd(&z)))]).unwrap();
    assert_close(&format!("{what} decode"), &got["sample"], &to_nd(&vae.decode(&z).unwrap()));
    let img = (seeded(picture, 4).tanh().unwrap()).to_dtype(DType::F32).unwrap();
    let (mean, _) = vae.encode(&img).unwrap();
    let enc = Network::new(&engine_vae::build_encoder(&ecfg, &idx).unwrap(), &format!("{what}-enc"), &runtime()).unwrap();
    let got = enc.run(vec![("sample", Input::F32(to_nd(&img)))]).unwrap();
    assert_close(&format!("{what} mean"), &got["mean"], &to_nd(&mean));
}

/// The exported folder, run by the engine's ONNX graphs, computes what the trainer's candle
/// modules compute with the same (fp16-rounded) weights.
#[test]
fn export_loads_in_the_engine_with_the_same_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    run(&tmp.path().join("work"), &model, None).unwrap();
    let cfg = NanoConfig::tiny();

    // Text encoder.
    let dir = model.join("text_encoder");
    let mut store = Store::load(&dir.join("model.safetensors"), 0).unwrap();
    let text = plantain_nano::text::TextEncoder::new(&mut store, &cfg.text).unwrap();
    let tok = plantain_tokenizer::ClipTokenizer::embedded_default();
    let ids: Vec<u32> = tok.encode_padded("a crimson star left of a small blue ring", 77);
    let want = text.forward(&Tensor::from_vec(ids.clone(), (1, 77), &Device::Cpu).unwrap()).unwrap();
    let ecfg = ClipTextConfig::from_file(&dir.join("config.json")).unwrap();
    let idx = TensorIndex::open(&dir.join("model.safetensors")).unwrap();
    let net = Network::new(&clip::build(&ecfg, &idx, ClipOutputs { projection: false }).unwrap(), "nano-te", &runtime()).unwrap();
    let ids64 = ArrayD::from_shape_vec(vec![1, 77], ids.iter().map(|&v| v as i64).collect()).unwrap();
    let got = net.run(vec![("input_ids", Input::I64(ids64))]).unwrap();
    assert_close("text encoder", &got["last_hidden_state"], &to_nd(&want));

    // UNet.
    let dir = model.join("unet");
    let mut store = Store::load(&dir.join("diffusion_pytorch_model.safetensors"), 0).unwrap();
    let unet = plantain_nano::unet::UNet::new(&mut store, &cfg.unet).unwrap();
    assert_engine_unet_matches(&dir, &unet, cfg.unet.cross_attention_dim, &[2, 4, 8, 12], "nano-unet");

    // Autoencoder.
    let dir = model.join("vae");
    let mut store = Store::load(&dir.join("diffusion_pytorch_model.safetensors"), 0).unwrap();
    let vae = plantain_nano::vae::Vae::new(&mut store, &cfg.vae).unwrap();
    assert_engine_vae_matches(&dir, &vae, &[1, 4, 6, 10], &[1, 3, 16, 32], "nano-vae");
}

#[test]
fn epsilon_on_a_zero_terminal_snr_schedule_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let opts = TrainOptions { v_prediction: false, ..TrainOptions::smoke() };
    let err = train(&NanoConfig::tiny(), &opts, &work, &tmp.path().join("m"), &AtomicBool::new(false), &mut |_| {}).err().expect("refused");
    assert!(matches!(err, plantain_nano::NanoError::Options(_)), "{err}");
    assert!(!work.exists());
}

#[test]
fn the_exported_scheduler_says_how_the_model_was_trained() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    run(&tmp.path().join("work"), &model, None).unwrap();
    let sched: serde_json::Value = serde_json::from_slice(&read(model.join("scheduler/scheduler_config.json"))).unwrap();
    assert_eq!(sched["prediction_type"], "v_prediction");
    assert_eq!(sched["rescale_betas_zero_snr"], true);
    assert_eq!(sched["timestep_spacing"], "trailing");
}

#[test]
fn a_frozen_text_encoder_keeps_its_parse_phase_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let mut opts = TrainOptions::smoke();
    opts.freeze_text = true;
    opts.parse_weight = 0.0;
    let cancel = AtomicBool::new(false);
    // Stopped at the first diffusion step: the parse phase is done and checkpointed.
    let stopped = train(&NanoConfig::tiny(), &opts, &work, &tmp.path().join("m"), &cancel, &mut |p| {
        if p.phase == Phase::Diffusion && p.step == 1 {
            cancel.store(true, Ordering::Relaxed);
        }
    });
    assert!(matches!(stopped, Err(plantain_nano::NanoError::Cancelled)));
    let text_after_parse = read(work.join("text_encoder.safetensors"));
    train(&NanoConfig::tiny(), &opts, &work, &tmp.path().join("m"), &AtomicBool::new(false), &mut |_| {}).unwrap();
    assert!(read(work.join("text_encoder.safetensors")) == text_after_parse, "the frozen text encoder changed");

    // The same run with the encoder trained moves it.
    let mut trained = opts.clone();
    trained.freeze_text = false;
    let work2 = tmp.path().join("work2");
    train(&NanoConfig::tiny(), &trained, &work2, &tmp.path().join("m2"), &AtomicBool::new(false), &mut |_| {}).unwrap();
    let parse_only = Store::load(&work.join("text_encoder.safetensors"), 0).unwrap();
    let moved = Store::load(&work2.join("text_encoder.safetensors"), 0).unwrap();
    let differs = parse_only.vars().iter().any(|(k, v)| {
        let d = (v.as_tensor() - moved.vars()[k].as_tensor()).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        d > 0.0
    });
    assert!(differs, "training the text encoder in the diffusion phase changed nothing");
}

#[test]
fn contradictory_text_options_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = TrainOptions::smoke();
    opts.freeze_text = true;
    let err = train(&NanoConfig::tiny(), &opts, &tmp.path().join("w"), &tmp.path().join("m"), &AtomicBool::new(false), &mut |_| {})
        .err()
        .expect("a parse loss on a frozen encoder is refused");
    assert!(err.to_string().contains("freeze_text"), "{err}");
    opts.parse_weight = 0.0;
    opts.text_steps = 0;
    let err = train(&NanoConfig::tiny(), &opts, &tmp.path().join("w"), &tmp.path().join("m"), &AtomicBool::new(false), &mut |_| {})
        .err()
        .expect("freezing random weights is refused");
    assert!(err.to_string().contains("random weights"), "{err}");
    let negative = TrainOptions { object_weight: -1.0, ..TrainOptions::smoke() };
    let err = train(&NanoConfig::tiny(), &negative, &tmp.path().join("w"), &tmp.path().join("m"), &AtomicBool::new(false), &mut |_| {})
        .err()
        .expect("a negative loss weight is refused");
    assert!(err.to_string().contains("object_weight -1"), "{err}");
    assert!(!tmp.path().join("w").exists(), "nothing is written for refused options");
}

#[test]
fn a_fine_tune_starts_from_the_exported_weights_keeps_the_autoencoder_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    run(&base.join("work"), &base.join("model"), None).unwrap();
    let model = base.join("model");
    let tune =
        TrainOptions { seed: 1, init_from: Some(model.clone()), vae_steps: 0, text_steps: 0, parse_weight: 0.0, ..TrainOptions::smoke() };
    let fine_tune = |name: &str, cancel_at: Option<u64>| {
        let dir = tmp.path().join(name);
        let cancel = AtomicBool::new(false);
        train(&NanoConfig::tiny(), &tune, &dir.join("work"), &dir.join("model"), &cancel, &mut |p| {
            assert_eq!(p.phase, Phase::Diffusion, "a fine-tune has no autoencoder or parse phase");
            if Some(p.step) == cancel_at {
                cancel.store(true, Ordering::Relaxed);
            }
        })
    };
    fine_tune("a", None).unwrap();
    // Stopped before its first checkpoint (step 2), and after it: both resume to the same bytes.
    for (name, stop) in [("b", 1), ("c", 2)] {
        assert!(matches!(fine_tune(name, Some(stop)), Err(plantain_nano::NanoError::Cancelled)));
        fine_tune(name, None).unwrap();
    }
    let weights = |name: &str, file: &str| read(tmp.path().join(name).join("model").join(file));
    let unet = "unet/diffusion_pytorch_model.safetensors";
    let vae = "vae/diffusion_pytorch_model.safetensors";
    for name in ["b", "c"] {
        assert!(weights("a", unet) == weights(name, unet), "a fine-tune stopped in run {name} resumed differently");
    }
    assert!(weights("a", vae) == read(model.join(vae)), "the fine-tune changed the autoencoder");
    assert!(weights("a", unet) != read(model.join(unet)), "the fine-tune did not move the UNet");
    let scale = |dir: &Path| -> f64 {
        let v: serde_json::Value = serde_json::from_slice(&read(dir.join("vae/config.json"))).unwrap();
        v["scaling_factor"].as_f64().unwrap()
    };
    assert_eq!(scale(&model), scale(&tmp.path().join("a").join("model")));
    let vae_loss = |dir: &Path| -> f64 {
        let v: serde_json::Value = serde_json::from_slice(&read(dir.join("training.json"))).unwrap();
        v["run"]["vae_loss"].as_f64().unwrap()
    };
    assert_eq!(vae_loss(&model), vae_loss(&tmp.path().join("a").join("model")), "the kept autoencoder keeps its loss");
    assert!(vae_loss(&model) > 0.0);
    let card = String::from_utf8(weights("a", "README.md")).unwrap();
    assert!(card.contains("Fine-tuned from the model in"), "{card}");

    // The model's own architecture only, and no autoencoder steps on top of its autoencoder.
    let other = NanoConfig::tiny().with_attention_at(&[]).unwrap();
    let err = train(&other, &tune, &tmp.path().join("w1"), &tmp.path().join("m1"), &AtomicBool::new(false), &mut |_| {})
        .err()
        .expect("another architecture is refused");
    assert!(err.to_string().contains("another architecture"), "{err}");
    let with_vae = TrainOptions { vae_steps: 3, ..tune.clone() };
    let err = train(&NanoConfig::tiny(), &with_vae, &tmp.path().join("w2"), &tmp.path().join("m2"), &AtomicBool::new(false), &mut |_| {})
        .err()
        .expect("autoencoder steps in a fine-tune are refused");
    assert!(err.to_string().contains("vae_steps must be 0"), "{err}");
    let missing = TrainOptions { init_from: Some(tmp.path().join("nowhere")), ..tune.clone() };
    let err = train(&NanoConfig::tiny(), &missing, &tmp.path().join("w3"), &tmp.path().join("m3"), &AtomicBool::new(false), &mut |_| {})
        .err()
        .expect("a missing model is refused");
    assert!(err.to_string().contains("training.json"), "{err}");
}

/// `NanoConfig::fine_latents` (a four-level UNet whose first two levels have no transformers,
/// a factor-2 autoencoder without mid-block attention) exports to configs the engine builds
/// the same networks from. Random weights, all of them perturbed so no zero-initialised layer
/// hides a difference.
#[test]
fn the_fine_latent_architecture_computes_the_same_in_the_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = NanoConfig::fine_latents();
    assert_eq!(cfg.native_resolution(), 64);
    assert_eq!(cfg.pixel_multiple(), NanoConfig::standard().pixel_multiple());
    let perturb = |store: &Store| {
        for (i, var) in store.vars().values().enumerate() {
            let noise = seeded(var.dims(), 100 + i as u64);
            var.set(&(var.as_tensor() + (noise * 0.05).unwrap()).unwrap()).unwrap();
        }
    };

    let mut store = Store::new(5);
    let unet = plantain_nano::unet::UNet::new(&mut store, &cfg.unet).unwrap();
    perturb(&store);
    let dir = tmp.path().join("unet");
    std::fs::create_dir_all(&dir).unwrap();
    store.save(&dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    std::fs::write(dir.join("config.json"), plantain_nano::config::unet_json(&cfg.unet).to_string()).unwrap();
    assert_engine_unet_matches(&dir, &unet, cfg.unet.cross_attention_dim, &[2, 4, 16, 24], "nano-fine-unet");

    let mut store = Store::new(6);
    let vae = plantain_nano::vae::Vae::new(&mut store, &cfg.vae).unwrap();
    assert!(!store.vars().keys().any(|k| k.contains("attentions")), "no mid-block attention");
    perturb(&store);
    let dir = tmp.path().join("vae");
    std::fs::create_dir_all(&dir).unwrap();
    store.save(&dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    std::fs::write(dir.join("config.json"), plantain_nano::config::vae_json(&cfg.vae, 0.5).to_string()).unwrap();
    assert_engine_vae_matches(&dir, &vae, &[1, 4, 8, 12], &[1, 3, 16, 32], "nano-fine-vae");
}
