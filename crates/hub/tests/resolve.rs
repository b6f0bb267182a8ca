//! Resolution and cache listing against fake caches in temp dirs (no network).

mod common;

use std::fs;
use std::path::PathBuf;

use common::*;
use plantain_hub::*;

fn opts(cache: &std::path::Path) -> ResolveOptions {
    ResolveOptions::with_hf_cache(cache)
}

#[test]
fn short_name_resolves_from_hf_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let snap = hf_snapshot(&cache, "stabilityai/sd-turbo", &sha('a'), &["main"], &pipeline_files(Arch::Sd2Turbo, &[Some("fp16"), None]));
    let m = resolve("sd-turbo", &opts(&cache)).unwrap();
    assert_eq!(m.path, snap);
    assert_eq!(m.origin, Origin::HfCache);
    assert_eq!(m.display_name, "sd-turbo");
    assert_eq!(m.repo_id.as_deref(), Some("stabilityai/sd-turbo"));
    assert_eq!(m.revision.as_deref(), Some(sha('a').as_str()));
    assert_eq!(m.layout, Layout::Diffusers);
    assert_eq!(m.family, Some(Family::Sd2));
    assert_eq!((m.defaults.steps, m.defaults.guidance, m.defaults.resolution), (1, 0.0, 512));
    assert!(m.licence.unwrap().contains("Non-Commercial"));
    let unet = m.components.iter().find(|c| c.name == "unet").unwrap();
    assert_eq!(unet.variants, vec!["fp16".to_string(), "fp32".to_string()]);
    assert!(m.size_bytes > 0);
    // Case and separators do not matter.
    assert_eq!(resolve("SD_Turbo", &opts(&cache)).unwrap().path, snap);
}

#[test]
fn repo_id_with_and_without_revision() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let files = pipeline_files(Arch::Sd2, &[None]);
    let main = hf_snapshot(&cache, "someone/my-sd2", &sha('1'), &["main"], &files);
    let v2 = hf_snapshot(&cache, "someone/my-sd2", &sha('2'), &["v2", "refs/pr/3"], &files);
    let o = opts(&cache);

    let m = resolve("someone/my-sd2", &o).unwrap();
    assert_eq!(m.path, main);
    assert_eq!(m.display_name, "someone/my-sd2");
    // Not in the table: family and defaults come from the configs.
    assert_eq!(m.family, Some(Family::Sd2));
    assert_eq!(m.defaults.resolution, 768);
    assert_eq!(m.defaults.prediction, Prediction::VPrediction);
    assert!(m.licence.is_none());

    assert_eq!(resolve("someone/my-sd2@v2", &o).unwrap().path, v2);
    assert_eq!(resolve("someone/my-sd2@refs/pr/3", &o).unwrap().path, v2);
    assert_eq!(resolve(&format!("someone/my-sd2@{}", sha('2')), &o).unwrap().path, v2);
    let err = resolve("someone/my-sd2@v9", &o).unwrap_err();
    assert!(matches!(err, HubError::NotCached { .. }), "{err}");
    assert!(err.to_string().contains("@ v9"), "{err}");
}

#[test]
fn missing_refs_main_falls_back_to_snapshot_with_note() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let snap = hf_snapshot(&cache, "stabilityai/sdxl-turbo", &sha('c'), &[], &pipeline_files(Arch::Sdxl, &[Some("fp16")]));
    let m = resolve("sdxl-turbo", &opts(&cache)).unwrap();
    assert_eq!(m.path, snap);
    assert_eq!(m.family, Some(Family::Sdxl));
    assert_eq!((m.defaults.steps, m.defaults.resolution), (1, 512));
    assert!(m.notes.iter().any(|n| n.contains("no refs/main")), "{:?}", m.notes);
}

#[test]
fn not_cached_says_how_to_get_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let err = resolve("sdxl", &opts(&cache)).unwrap_err();
    assert!(matches!(err, HubError::NotCached { .. }));
    let msg = err.to_string();
    assert!(msg.contains("plantain pull sdxl"), "{msg}");
    assert!(msg.contains("stabilityai/stable-diffusion-xl-base-1.0"), "{msg}");
    assert!(msg.contains("--model /path/to/folder"), "{msg}");
    assert!(msg.contains(&cache.display().to_string()), "{msg}");
}

#[test]
#[cfg(unix)]
fn incomplete_snapshot_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let snap =
        hf_snapshot(&cache, "stable-diffusion-v1-5/stable-diffusion-v1-5", &sha('d'), &["main"], &pipeline_files(Arch::Sd1, &[None]));
    // An interrupted download: the UNet symlink points at a blob that never arrived.
    let link = snap.join("unet/diffusion_pytorch_model.safetensors");
    fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("missing-blob"), &link).unwrap();
    let err = resolve("sd15", &opts(&cache)).unwrap_err();
    assert!(matches!(err, HubError::Incomplete { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("unet weights"), "{msg}");
    assert!(msg.contains("plantain pull sd15"), "{msg}");
}

#[test]
fn local_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("my model");
    plain_pipeline(&dir, Arch::Sd1, &[None]);
    let m = resolve(dir.to_str().unwrap(), &opts(&tmp.path().join("hub"))).unwrap();
    assert_eq!(m.origin, Origin::LocalPath);
    assert_eq!(m.layout, Layout::Diffusers);
    assert_eq!(m.family, Some(Family::Sd1));
    assert_eq!((m.defaults.resolution, m.defaults.steps), (512, 25));
    // Relative paths resolve against base_dir.
    let mut o = opts(&tmp.path().join("hub"));
    o.base_dir = Some(tmp.path().to_path_buf());
    assert_eq!(resolve("./my model", &o).unwrap().path, tmp.path().join("./my model"));
}

#[test]
fn local_folder_named_like_repo_id_wins_unless_hf_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let snap = hf_snapshot(&cache, "stabilityai/sd-turbo", &sha('e'), &["main"], &pipeline_files(Arch::Sd2Turbo, &[None]));
    let work = tmp.path().join("work");
    plain_pipeline(&work.join("stabilityai/sd-turbo"), Arch::Sd2Turbo, &[None]);
    let mut o = opts(&cache);
    o.base_dir = Some(work.clone());

    let m = resolve("stabilityai/sd-turbo", &o).unwrap();
    assert_eq!(m.origin, Origin::LocalPath);
    assert_eq!(m.path, work.join("stabilityai/sd-turbo"));
    assert!(m.notes.iter().any(|n| n.contains("hf:stabilityai/sd-turbo")), "{:?}", m.notes);

    let m = resolve("hf:stabilityai/sd-turbo", &o).unwrap();
    assert_eq!((m.origin, m.path), (Origin::HfCache, snap.clone()));
    // With a revision it can only mean the hub.
    assert_eq!(resolve("stabilityai/sd-turbo@main", &o).unwrap().path, snap);
    // A same-named folder does not shadow a short name.
    plain_pipeline(&work.join("sd-turbo"), Arch::Sd1, &[None]);
    assert_eq!(resolve("sd-turbo", &o).unwrap().origin, Origin::HfCache);
    assert_eq!(resolve("./sd-turbo", &o).unwrap().origin, Origin::LocalPath);
}

#[test]
fn plantain_models_dir_wins_over_hf_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    hf_snapshot(&cache, "stabilityai/sd-turbo", &sha('f'), &["main"], &pipeline_files(Arch::Sd2Turbo, &[None]));
    let models = tmp.path().join("models");
    plain_pipeline(&models.join("sd-turbo"), Arch::Sd2Turbo, &[Some("fp16")]);
    let mut o = opts(&cache);
    o.dirs.models_dir = Some(models.clone());
    let m = resolve("sd-turbo", &o).unwrap();
    assert_eq!((m.origin, m.path.clone()), (Origin::ModelsDir, models.join("sd-turbo")));
    assert_eq!(m.repo_id.as_deref(), Some("stabilityai/sd-turbo"));
    assert_eq!(m.defaults.steps, 1);
    // A pinned revision skips the plain folder.
    assert_eq!(resolve("sd-turbo@main", &o).unwrap().origin, Origin::HfCache);
}

#[test]
fn single_safetensors_file() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("sd_xl_base_1.0.safetensors");
    write(&f, &safetensors(&["conditioner.embedders.1.model.ln_final.weight", "model.diffusion_model.out.0.bias"]));
    let m = resolve(f.to_str().unwrap(), &opts(&tmp.path().join("hub"))).unwrap();
    assert_eq!(m.layout, Layout::SingleFile);
    assert_eq!(m.family, Some(Family::Sdxl));
    assert_eq!(m.defaults.resolution, 1024);

    let f1 = tmp.path().join("v1.safetensors");
    write(&f1, &safetensors(&["cond_stage_model.transformer.text_model.x"]));
    assert_eq!(resolve(f1.to_str().unwrap(), &opts(tmp.path())).unwrap().family, Some(Family::Sd1));

    let bad = tmp.path().join("broken.safetensors");
    write(&bad, b"\xff\xff\xff\xff\xff\xff\xff\xffjunk");
    let err = resolve(bad.to_str().unwrap(), &opts(tmp.path())).unwrap_err();
    assert!(matches!(err, HubError::BadConfig { .. }), "{err}");
}

#[test]
fn ckpt_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("v1-5-pruned.ckpt");
    write(&f, b"PK\x03\x04pickle");
    let err = resolve(f.to_str().unwrap(), &opts(tmp.path())).unwrap_err();
    assert!(matches!(err, HubError::PickleRejected { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("v1-5-pruned.ckpt") && msg.contains("safetensors") && msg.contains("arbitrary code"), "{msg}");
}

#[test]
fn missing_path() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("nope/model");
    let err = resolve(p.to_str().unwrap(), &opts(tmp.path())).unwrap_err();
    assert!(matches!(err, HubError::PathNotFound { .. }), "{err}");
    assert!(err.to_string().contains(&p.display().to_string()), "{err}");
    let err = resolve("/definitely/missing.safetensors", &opts(tmp.path())).unwrap_err();
    assert!(matches!(err, HubError::PathNotFound { .. }), "{err}");
}

#[test]
fn unknown_name_suggests() {
    let tmp = tempfile::tempdir().unwrap();
    let mut o = opts(tmp.path());
    o.base_dir = Some(tmp.path().to_path_buf());
    let err = resolve("sd-turob", &o).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("did you mean sd-turbo?"), "{msg}");
    assert!(msg.contains("sdxl-turbo"), "lists known names: {msg}");
    let err = resolve("midjourney", &o).unwrap_err();
    assert!(matches!(err, HubError::UnknownName { suggestion: None, .. }), "{err}");
}

#[test]
fn onnx_and_non_model_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let onnx = tmp.path().join("sd-onnx");
    write(&onnx.join("onnx/unet/model.onnx"), b"onnx");
    write(&onnx.join("onnx/vae_decoder/model.onnx"), b"onnx");
    let m = resolve(onnx.to_str().unwrap(), &opts(tmp.path())).unwrap();
    assert_eq!(m.layout, Layout::Onnx);
    assert_eq!(m.components.len(), 2);

    let empty = tmp.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let err = resolve(empty.to_str().unwrap(), &opts(tmp.path())).unwrap_err();
    assert!(matches!(err, HubError::NotAModelFolder { .. }), "{err}");

    // Pointing at an HF cache repo folder instead of a snapshot gets a hint.
    let cache = tmp.path().join("hub");
    hf_snapshot(&cache, "a/b", &sha('9'), &["main"], &pipeline_files(Arch::Sd1, &[None]));
    let err = resolve(cache.join("models--a--b").to_str().unwrap(), &opts(&cache)).unwrap_err();
    assert!(err.to_string().contains("snapshots/<revision>"), "{err}");
    // The snapshot path itself works, and knows its repo.
    let m = resolve(cache.join("models--a--b/snapshots").join(sha('9')).to_str().unwrap(), &opts(&cache)).unwrap();
    assert_eq!(m.repo_id.as_deref(), Some("a/b"));
}

#[test]
fn plantain_nano() {
    let tmp = tempfile::tempdir().unwrap();
    let mut o = opts(tmp.path());
    let err = resolve("plantain-nano", &o).unwrap_err();
    assert!(matches!(err, HubError::NanoNotFound { tried: None }), "{err}");
    assert!(err.to_string().contains("PLANTAIN_NANO_DIR"));

    let nano = tmp.path().join("nano");
    o.nano_dir = Some(nano.clone());
    assert!(matches!(resolve("plantain-nano", &o), Err(HubError::NanoNotFound { tried: Some(_) })));
    plain_pipeline(&nano, Arch::Sd1, &[None]);
    let m = resolve("plantain-nano", &o).unwrap();
    assert_eq!((m.origin, m.family), (Origin::Bundled, Some(Family::Sd1)));
    assert_eq!(m.display_name, "plantain-nano");
    assert!(matches!(resolve("plantain-nano@main", &o), Err(HubError::InvalidSpec { .. })));
}

#[test]
fn list_cached_reports_components_and_completeness() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    hf_snapshot(&cache, "stabilityai/sd-turbo", &sha('a'), &["main"], &pipeline_files(Arch::Sd2Turbo, &[Some("fp16"), None]));
    // Only fp16 for the UNet: the model as a whole offers fp16 only.
    let mut files = pipeline_files(Arch::Sdxl, &[Some("fp16")]);
    files.push(("vae/diffusion_pytorch_model.safetensors".into(), safetensors(&["w"])));
    hf_snapshot(&cache, "stabilityai/stable-diffusion-xl-base-1.0", &sha('b'), &["main"], &files);
    // Incomplete: no UNet weights at all.
    let partial: Vec<_> = pipeline_files(Arch::Sd1, &[None]).into_iter().filter(|(p, _)| !p.starts_with("unet/diffusion")).collect();
    hf_snapshot(&cache, "someone/partial", &sha('c'), &["main"], &partial);
    // An LLM in the same cache is not listed.
    hf_snapshot(&cache, "someone/llm", &sha('d'), &["main"], &[("config.json".into(), b"{}".to_vec())]);
    let models = tmp.path().join("models");
    plain_pipeline(&models.join("my-finetune"), Arch::Sd1, &[None]);
    write(&models.join("ckpts/x.safetensors"), &safetensors(&["cond_stage_model.transformer.a"]));
    write(&models.join("single.safetensors"), &safetensors(&["cond_stage_model.transformer.a"]));

    let list = list_cached(&CacheDirs { hf_cache: cache.clone(), models_dir: Some(models.clone()) });
    let names: Vec<&str> = list.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, vec!["someone/partial", "sd-turbo", "sdxl", "ckpts/x.safetensors", "my-finetune", "single.safetensors"]);

    let partial = &list[0];
    assert!(!partial.complete);
    assert_eq!(partial.missing, vec!["unet weights (.safetensors)".to_string()]);
    let sdxl = &list[2];
    assert!(sdxl.complete);
    assert_eq!(sdxl.variants, vec!["fp16".to_string()]);
    assert_eq!(sdxl.refs, vec!["main".to_string()]);
    assert_eq!(sdxl.revision.as_deref(), Some(sha('b').as_str()));
    assert_eq!(sdxl.kind, CacheKind::HfCache);
    let turbo = &list[1];
    assert_eq!(turbo.variants, vec!["fp16".to_string(), "fp32".to_string()]);
    assert_eq!(turbo.repo_id.as_deref(), Some("stabilityai/sd-turbo"));
    assert!(turbo.size_bytes > 0);
    let comps: Vec<&str> = turbo.components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(comps, vec!["scheduler", "text_encoder", "tokenizer", "unet", "vae"]);
    assert!(turbo.components.iter().all(|c| c.complete));
    let fin = &list[4];
    assert_eq!((fin.kind, fin.layout, fin.complete), (CacheKind::ModelsDir, Some(Layout::Diffusers), true));
    assert_eq!(list[5].layout, Some(Layout::SingleFile));
    assert_eq!((list[3].repo_id.as_deref(), list[3].layout), (None, Some(Layout::SingleFile)));
    assert!(list.iter().all(|m| m.path.exists()));
    let _: PathBuf = list[0].path.clone();
}

#[test]
fn incomplete_local_folder_advice() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("copy");
    plain_pipeline(&dir, Arch::Sd1, &[None]);
    fs::remove_file(dir.join("tokenizer/merges.txt")).unwrap();
    let err = resolve(dir.to_str().unwrap(), &opts(tmp.path())).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("tokenizer vocabulary files"), "{msg}");
    assert!(msg.contains("Copy or download the missing files again"), "{msg}");
    assert!(!msg.contains("plantain pull"), "{msg}");
}
