//! `plantain generate --lora FILE[:SCALE]` on the tiny random-weight SD1 model with the tiny
//! LoRA fixtures (scripts/lora_fixtures.py): a LoRA changes the picture, its scale matters, two
//! LoRAs stack, and a LoRA that does not fit the model stops before anything is drawn, naming
//! the file and its first key that does not fit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(name: &str) -> String {
    repo().join("fixtures/tiny").join(name).display().to_string()
}

/// Runs `plantain generate` on the tiny model into `dir/out`, with `extra` arguments.
fn generate(dir: &Path, out: &str, extra: &[&str]) -> Output {
    let out = dir.join(out).display().to_string();
    let model = fixture("sd1");
    let mut args = vec!["generate", "a lighthouse", "--model", &model, "--steps", "2", "--attempts", "1"];
    args.extend(["--seed", "11", "--threads", "1", "--no-watermark", "--no-c2pa", "-o", &out]);
    args.extend(extra);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_plantain"));
    cmd.args(&args).env("PLANTAIN_HOME", dir).env("HOME", dir).env("PLANTAIN_CACHE", dir.join("cache")).env("HF_HUB_OFFLINE", "1");
    let ort = repo().join(".ort/libonnxruntime.so.1.31.1");
    if std::env::var_os("ORT_DYLIB_PATH").is_none() && ort.exists() {
        cmd.env("ORT_DYLIB_PATH", ort);
    }
    cmd.output().expect("running plantain")
}

fn pixels(dir: &Path, name: &str) -> image::RgbImage {
    image::open(dir.join(name)).unwrap().to_rgb8()
}

fn differing(a: &image::RgbImage, b: &image::RgbImage) -> usize {
    a.pixels().zip(b.pixels()).filter(|(p, q)| p != q).count()
}

#[test]
fn loras_change_the_picture_and_misfits_are_refused_before_drawing() {
    let dir = std::env::temp_dir().join(format!("plantain-cli-lora-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (kohya, peft) = (fixture("lora/sd1-kohya.safetensors"), fixture("lora/sd1-peft.safetensors"));
    let runs: [(&str, Vec<String>); 5] = [
        ("base.png", vec![]),
        ("base-again.png", vec![]),
        ("kohya.png", vec!["--lora".into(), format!("{kohya}:0.8")]),
        ("kohya-half.png", vec!["--lora".into(), format!("{kohya}:0.4")]),
        ("both.png", vec!["--lora".into(), format!("{kohya}:0.8"), "--lora".into(), peft.clone()]),
    ];
    for (out, extra) in &runs {
        let o = generate(&dir, out, &extra.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(o.status.success(), "{out}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let base = pixels(&dir, "base.png");
    let total = (base.width() * base.height()) as usize;
    assert_eq!(differing(&base, &pixels(&dir, "base-again.png")), 0, "the same seed gives the same picture");
    for (other, what) in [("kohya.png", "a LoRA"), ("kohya-half.png", "half its scale"), ("both.png", "a second LoRA")] {
        let d = differing(&base, &pixels(&dir, other));
        assert!(d > total / 10, "{what} changed only {d} of {total} pixels");
    }
    assert!(differing(&pixels(&dir, "kohya.png"), &pixels(&dir, "kohya-half.png")) > total / 10, "the scale matters");
    assert!(differing(&pixels(&dir, "kohya.png"), &pixels(&dir, "both.png")) > total / 10, "LoRAs stack");

    let xl = fixture("lora/sdxl-kohya.safetensors");
    let o = generate(&dir, "misfit.png", &["--lora", &xl]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("sdxl-kohya.safetensors") && err.contains("does not fit the model"), "{err}");
    assert!(!dir.join("misfit.png").exists(), "nothing is written");
    let o = generate(&dir, "bad.png", &["--lora", "x.safetensors:inf"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("finite"));
    let _ = std::fs::remove_dir_all(&dir);
}
