//! `plantain edit … "upscale to 2K"` (Real-ESRGAN through the edit planner),
//! `plantain edit … "remove the background"` (a transparent cut-out) and `plantain upscale`
//! (stamped like every output): the real binary on a scikit-image photograph, with a temporary
//! `PLANTAIN_HOME` so the user's keys are never touched.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("plantain-cli-edit-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn plantain(home: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_plantain"));
    cmd.args(args).env("PLANTAIN_HOME", home).env("HOME", home).env("PLANTAIN_CACHE", home.join("cache")).env_remove("PLANTAIN_LOG");
    let ort = repo().join(".ort/libonnxruntime.so.1.31.1");
    if std::env::var_os("ORT_DYLIB_PATH").is_none() && ort.exists() {
        cmd.env("ORT_DYLIB_PATH", ort);
    }
    cmd.output().expect("running plantain")
}

fn ok(o: &Output) -> String {
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{all}");
    all
}

/// A 256x256 centre of the astronaut photograph (installed by scripts/setup.sh).
fn photo(dir: &Path) -> PathBuf {
    let img = image::open(repo().join(".assets/photos/astronaut.png")).expect("scripts/setup.sh installs the photographs").to_rgb8();
    let small = image::imageops::resize(&img, 256, 256, image::imageops::FilterType::Lanczos3);
    let p = dir.join("astronaut.png");
    small.save(&p).unwrap();
    p
}

#[test]
fn an_upscale_edit_enlarges_to_the_tables_pixels_and_is_stamped() {
    let d = scratch("upscale");
    let input = photo(&d);
    let out = d.join("big.png");
    let (i, o) = (input.display().to_string(), out.display().to_string());
    let log = ok(&plantain(
        &d,
        &["edit", &i, "upscale it", "--size", "1K", "--upscaler", "animevideov3", "--explain", "--threads", "2", "-o", &o],
    ));
    assert!(log.contains("operation: upscale") && log.contains("shrunk back to 256x256"), "{log}");
    // 1K asks nothing larger than 2K: an upscale without 2K or 4K goes to 2K.
    let big = image::open(&out).unwrap();
    assert_eq!((big.width(), big.height()), plantain_core::output_pixels(plantain_core::AspectRatio::R1x1, plantain_core::ImageSize::S2K));
    let v = ok(&plantain(&d, &["verify", &o]));
    assert!(v.contains("edited") || v.contains("Edited") || v.contains("c2pa.edited"), "{v}");
}

#[test]
fn removing_the_background_writes_a_transparent_png_and_refuses_jpeg() {
    let d = scratch("cutout");
    let input = photo(&d);
    let (i, o) = (input.display().to_string(), d.join("cut.png").display().to_string());
    ok(&plantain(&d, &["edit", &i, "remove the background", "-o", &o]));
    let cut = image::open(&o).unwrap();
    assert!(cut.color().has_alpha(), "{:?}", cut.color());
    let rgba = cut.to_rgba8();
    let transparent = rgba.pixels().filter(|p| p.0[3] == 0).count();
    let opaque = rgba.pixels().filter(|p| p.0[3] == 255).count();
    assert!(transparent > 1000 && opaque > 1000, "{transparent} transparent, {opaque} opaque of 65536");
    // The background's colours are gone from the file: its pixels are cleared to black (plus
    // the watermark's few levels, which go inside the edit's region like every edit's).
    let src = image::open(&input).unwrap().to_rgb8();
    let (mut left, mut before) = (0u64, 0u64);
    for (x, y, p) in rgba.enumerate_pixels().filter(|(_, _, p)| p.0[3] == 0) {
        left += p.0[..3].iter().map(|&v| u64::from(v)).sum::<u64>();
        before += src.get_pixel(x, y).0.iter().map(|&v| u64::from(v)).sum::<u64>();
    }
    assert!(left * 20 < before, "the cleared pixels keep {left} of the background's {before} levels");
    let jpg = d.join("cut.jpg").display().to_string();
    let e = plantain(&d, &["edit", &i, "remove the background", "-o", &jpg]);
    assert!(!e.status.success());
    assert!(String::from_utf8_lossy(&e.stderr).contains("cannot be JPEG"), "{}", String::from_utf8_lossy(&e.stderr));
    assert!(!Path::new(&jpg).exists(), "nothing written");
}

#[test]
fn plantain_upscale_stamps_its_output() {
    let d = scratch("plain");
    let input = photo(&d);
    let (i, o) = (input.display().to_string(), d.join("x2.png").display().to_string());
    ok(&plantain(&d, &["upscale", &i, "--scale", "2", "--model", "animevideov3", "-o", &o]));
    assert_eq!(image::image_dimensions(&o).unwrap(), (512, 512));
    let v = ok(&plantain(&d, &["verify", &o]));
    assert!(v.to_lowercase().contains("signature"), "{v}");
}

#[test]
fn generate_at_2k_enlarges_with_the_super_resolution_model_unless_told_lanczos() {
    let d = scratch("generate2k");
    let (sr, lz) = (d.join("sr.png"), d.join("lanczos.png"));
    let args = |out: &Path, upscaler: Option<&str>| {
        let mut v =
            vec!["generate", "a red circle on a blue background", "--size", "2K", "--seed", "3", "--attempts", "1", "--threads", "2"];
        if let Some(u) = upscaler {
            v.extend(["--upscaler", u]);
        }
        v.extend(["-o", out.to_str().unwrap()]);
        v.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| plantain(&d, &a.iter().map(String::as_str).collect::<Vec<_>>());
    let said = ok(&run(args(&sr, None)));
    assert!(said.contains("enlarging") && said.contains("to 2048x2048"), "{said}");
    ok(&run(args(&lz, Some("lanczos"))));
    let (a, b) = (image::open(&sr).unwrap().to_rgb8(), image::open(&lz).unwrap().to_rgb8());
    assert_eq!((a.dimensions(), b.dimensions()), ((2048, 2048), (2048, 2048)));
    assert_ne!(a, b, "the super-resolution model and Lanczos3 must enlarge differently");
    let bad = d.join("bad.png");
    let e = run(args(&bad, Some("x8")));
    assert!(!e.status.success() && String::from_utf8_lossy(&e.stderr).contains("unknown upscaler"), "{e:?}");
    assert!(!bad.exists());
}
