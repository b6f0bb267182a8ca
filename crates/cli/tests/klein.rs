//! `plantain generate` and `plantain edit` with FLUX.2 [klein] (the tiny random-weight fixture,
//! a folder like any model): the model's own defaults (4 steps, its sampler), exact output
//! sizes, the same picture for the same seed, a local edit that leaves every pixel outside its
//! region as it was, signed credentials on every output, and clear refusals before any work.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use image::{GrayImage, Luma, Rgb, RgbImage};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn klein() -> String {
    repo().join("fixtures/tiny/flux2-klein").display().to_string()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("plantain-cli-klein-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn plantain(home: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_plantain"));
    cmd.args(args)
        .env("PLANTAIN_HOME", home)
        .env("HOME", home)
        .env("PLANTAIN_CACHE", home.join("cache"))
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("XDG_DATA_HOME")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("PLANTAIN_LOG");
    let ort = repo().join(".ort/libonnxruntime.so.1.31.1");
    if std::env::var_os("ORT_DYLIB_PATH").is_none() && ort.exists() {
        cmd.env("ORT_DYLIB_PATH", ort);
    }
    cmd.output().expect("running plantain")
}

fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "plantain failed:\n{err}");
    format!("{}{err}", String::from_utf8_lossy(&o.stdout))
}

fn pixels(p: &Path) -> RgbImage {
    image::open(p).unwrap().to_rgb8()
}

/// `plantain verify --json FILE`: its manifest is signed and matches the pixels.
fn assert_credentials(home: &Path, file: &Path) {
    let o = plantain(home, &["verify", "--json", &file.display().to_string()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    let m = &v[0]["report"]["manifest"];
    assert!(m["signature_valid"] == true && m["hash_valid"] == true, "{v}");
}

fn generate(home: &Path, out: &Path, seed: &str, extra: &[&str]) -> Output {
    let (model, out) = (klein(), out.display().to_string());
    let mut args = vec!["generate", "a lighthouse at dusk", "--model", &model, "--seed", seed, "--attempts", "1", "--threads", "1"];
    args.extend(["-o", &out]);
    args.extend(extra);
    plantain(home, &args)
}

#[test]
fn generate_draws_with_the_models_defaults_at_the_exact_size() {
    let home = scratch("generate");
    let (a, b, c) = (home.join("a.png"), home.join("b.png"), home.join("c.png"));
    let said = ok(&generate(&home, &a, "5", &["--width", "192", "--height", "128"]));
    assert!(said.contains("192x128 (drawn at 192x128)") && said.contains("4 steps of flow-match-euler"), "{said}");
    assert!(said.contains("FLUX.2 [klein]"), "{said}");
    ok(&generate(&home, &b, "5", &["--width", "192", "--height", "128"]));
    ok(&generate(&home, &c, "6", &["--width", "192", "--height", "128"]));
    assert_eq!(pixels(&a).dimensions(), (192, 128));
    assert_eq!(pixels(&a), pixels(&b), "the same seed, the same picture");
    assert_ne!(pixels(&a), pixels(&c), "another seed, another picture");
    assert_credentials(&home, &a);

    // The size table's exact pixels: 3:2 at 512 is Gemini's 632x424, off klein's 16 px grid:
    // drawn at the grid canvas of that shape nearest its native area, resized exactly.
    let d = home.join("d.png");
    let said = ok(&generate(&home, &d, "5", &["--aspect", "3:2", "--size", "512"]));
    assert!(said.contains("632x424 (drawn at"), "{said}");
    assert_eq!(pixels(&d).dimensions(), plantain_core::output_pixels("3:2".parse().unwrap(), plantain_core::ImageSize::S512));

    // What klein cannot use is refused before anything is drawn.
    let e = generate(&home, &home.join("x.png"), "5", &["--width", "64", "--height", "64", "--scheduler", "euler"]);
    assert!(!e.status.success() && String::from_utf8_lossy(&e.stderr).contains("flow-matching"), "{}", String::from_utf8_lossy(&e.stderr));
    assert!(!home.join("x.png").exists());
}

/// A picture with structure to keep.
fn input() -> RgbImage {
    RgbImage::from_fn(128, 96, |x, y| Rgb([(x * 2) as u8, (y * 2) as u8, if (x / 16 + y / 16) % 2 == 0 { 220 } else { 40 }]))
}

fn edit(home: &Path, picture: &Path, words: &str, out: &Path, extra: &[&str]) -> Output {
    let (model, picture, out) = (klein(), picture.display().to_string(), out.display().to_string());
    let mut args = vec!["edit", &picture, words, "--model", &model, "--seed", "3", "--attempts", "1", "--threads", "1", "-o", &out];
    args.extend(extra);
    plantain(home, &args)
}

#[test]
fn edit_is_klein_kept_inside_the_region_and_repeats_for_a_seed() {
    let home = scratch("edit");
    let picture = home.join("in.png");
    input().save(&picture).unwrap();
    // A local edit: the user's mask is the region; klein edits the whole picture after the
    // words, and only the box (and its 2 px feather band) may differ from the input.
    let mask = home.join("mask.png");
    GrayImage::from_fn(128, 96, |x, y| Luma([if (40..88).contains(&x) && (24..72).contains(&y) { 255 } else { 0 }])).save(&mask).unwrap();
    let mask_arg = mask.display().to_string();
    let (a, b) = (home.join("a.png"), home.join("b.png"));
    let said = ok(&edit(&home, &picture, "a blue square", &a, &["--mask", &mask_arg, "--explain"]));
    assert!(said.contains("instruction-following model") && said.contains("0 outside the region"), "{said}");
    ok(&edit(&home, &picture, "a blue square", &b, &["--mask", &mask_arg]));
    let (out, before) = (pixels(&a), input());
    assert_eq!(out.dimensions(), (128, 96));
    assert_eq!(out, pixels(&b), "the same seed, the same edit");
    let near = |x: u32, y: u32| (37..91).contains(&x) && (21..75).contains(&y);
    for (x, y, p) in out.enumerate_pixels() {
        if !near(x, y) {
            assert_eq!(p, before.get_pixel(x, y), "({x}, {y}) is outside the region");
        }
    }
    assert!(out.enumerate_pixels().any(|(x, y, p)| near(x, y) && p != before.get_pixel(x, y)), "klein changed the region");
    assert_credentials(&home, &a);

    // "make it night": a whole-picture instruction for klein (not the exact maths an SD model
    // gets), at the input's size.
    let night = home.join("night.png");
    let said = ok(&edit(&home, &picture, "make it night", &night, &["--explain"]));
    assert!(said.contains("relit by the model"), "{said}");
    assert_eq!(pixels(&night).dimensions(), (128, 96));
}

/// `plantain fuse A B "words"` with klein: one pass of the model over both pictures (image 1 and
/// image 2, in the order given), drawn at the size of the picture the words put things into and
/// kept only where the model changed it; the credentials name both inputs.
#[test]
fn fuse_with_klein_reads_every_picture_in_one_pass() {
    let home = scratch("fuse");
    let (subject, scene) = (home.join("subject.png"), home.join("scene.png"));
    RgbImage::from_fn(64, 96, |x, y| Rgb([200, (x * 3) as u8, (y * 2) as u8])).save(&subject).unwrap();
    input().save(&scene).unwrap();
    let out = home.join("fused.png");
    let (model, a, b, o) = (klein(), subject.display().to_string(), scene.display().to_string(), out.display().to_string());
    let words = "put the subject of image 1 into the scene of image 2";
    let args = ["fuse", &a, &b, words, "--model", &model, "--seed", "5", "--attempts", "1", "--threads", "1", "--explain", "-o", &o];
    let said = ok(&plantain(&home, &args));
    assert!(said.contains("2 pictures fused in one pass by the multi-reference model"), "{said}");
    assert!(said.contains("drawn on image 2") && said.contains(", 0 outside the region"), "{said}");
    let fused = pixels(&out);
    assert_eq!(fused.dimensions(), (128, 96), "image 2's size");
    assert_ne!(fused, input(), "the model changed image 2");
    assert_credentials(&home, &out);
    let v: serde_json::Value = serde_json::from_slice(&plantain(&home, &["verify", "--json", &o]).stdout).unwrap();
    let text = v.to_string();
    assert!(text.contains("subject.png") && text.contains("scene.png"), "both inputs are ingredients: {text}");
}

#[test]
fn a_reference_too_large_for_klein_is_refused_before_it_loads() {
    let home = scratch("large");
    let picture = home.join("large.png");
    RgbImage::from_pixel(4100, 4100, Rgb([90, 120, 150])).save(&picture).unwrap();
    let o = edit(&home, &picture, "make it night", &home.join("out.png"), &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("4100x4100") && err.contains("FLUX.2 [klein]"), "{err}");
    assert!(!err.contains("loaded "), "refused before loading the model: {err}");
    assert!(!home.join("out.png").exists());
}

/// `--weights int8|int4` quantise klein's linear layers at load: a picture close to f32's at
/// the same seed, not the same bytes; an SD model refuses them, and a bad precision is a clear
/// error, both before anything is written.
#[test]
fn quantised_weights_draw_close_to_f32_and_sd_refuses_a_transformer_file() {
    let home = scratch("weights");
    let size = ["--width", "128", "--height", "128"];
    let (f32_out, int8_out) = (home.join("f32.png"), home.join("int8.png"));
    ok(&generate(&home, &f32_out, "3", &size));
    let said = ok(&generate(&home, &int8_out, "3", &[&size[..], &["--weights", "int8", "--lean"]].concat()));
    assert!(said.contains("FLUX.2 [klein]"), "{said}");
    let (a, b) = (pixels(&f32_out), pixels(&int8_out));
    assert_ne!(a, b, "8-bit weights are not the f32 weights");
    let mean = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| (i32::from(*x) - i32::from(*y)).unsigned_abs()).sum::<u32>() as f64
        / a.as_raw().len() as f64;
    assert!(mean < 12.0, "int8 strays {mean:.2} levels on average from f32");
    assert_credentials(&home, &int8_out);

    let sd = repo().join("fixtures/tiny/sd1").display().to_string();
    let x = home.join("sd.png").display().to_string();
    let file = repo().join("fixtures/tiny/flux2-klein-single/q8_0.gguf").display().to_string();
    let e = plantain(&home, &["generate", "a fox", "--model", &sd, "--transformer-file", &file, "--attempts", "1", "-o", &x]);
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(!e.status.success() && err.contains("a single-file transformer is for FLUX.2 [klein]"), "{err}");
    // Stable Diffusion takes 8-bit weights too.
    let sd8 = home.join("sd8.png");
    let said = ok(&plantain(
        &home,
        &[
            "generate",
            "a fox",
            "--model",
            &sd,
            "--weights",
            "int8",
            "--width",
            "64",
            "--height",
            "64",
            "--attempts",
            "1",
            "-o",
            &sd8.display().to_string(),
        ],
    ));
    assert!(said.contains("8-bit weights"), "{said}");
    assert_credentials(&home, &sd8);
    let e = generate(&home, &home.join("y.png"), "3", &["--weights", "int3"]);
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(!e.status.success() && err.contains("not one of f32, int8, int4"), "{err}");
    assert!(!home.join("sd.png").exists() && !home.join("y.png").exists());
}
