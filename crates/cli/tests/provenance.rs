//! `plantain generate` stamps its outputs (watermark + signed C2PA + labels) and `plantain verify`
//! reports them: fresh outputs in each format, metadata stripped, re-encoded JPEG, tampered
//! files, unrelated images, garbage, img2img ingredients, and the `--no-watermark` / `--no-c2pa`
//! switches. Runs the real binary on the tiny random-weight SD1 model decoded by the tiny TAESD
//! fixture at 512x512, with a temporary `PLANTAIN_HOME` (and `HOME`) so the user's keys and
//! caches are never touched. (Decoded by the tiny model's own random VAE, the output is noise so
//! busy that 96 watermark bits do not fit into it at 40 dB; the TAESD fixture's output is
//! smoother, closer to the pictures the watermark is for.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use plantain_provenance::testimages::scene;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A scratch directory for one test, removed first if a previous run left it.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("plantain-cli-prov-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `plantain ARGS` with `home` as PLANTAIN_HOME (and HOME, and the graph cache under it).
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

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn fixture(name: &str) -> String {
    repo().join("fixtures/tiny").join(name).display().to_string()
}

/// `plantain generate` on the tiny model; panics with its stderr when it fails.
fn generate(home: &Path, out: &Path, extra: &[&str]) -> Output {
    let out_s = out.display().to_string();
    let (model, taesd) = (fixture("sd1"), fixture("taesd"));
    let mut args = vec!["generate", "a lighthouse", "--model", &model, "--tiny-vae", &taesd, "--steps", "2"];
    args.extend(["--seed", "11", "--threads", "1", "-o", &out_s]);
    args.extend(extra);
    let o = plantain(home, &args);
    assert!(o.status.success(), "generate failed:\n{}", text(&o.stderr));
    assert!(out.exists());
    o
}

/// `plantain verify --json FILES`: exit success and the array of per-file results.
fn verify_json(home: &Path, files: &[&Path]) -> (bool, Vec<Value>) {
    let mut args = vec!["verify".to_string(), "--json".to_string()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let o = plantain(home, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!text(&o.stderr).contains("panicked"), "{}", text(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&o.stdout), text(&o.stderr)));
    (o.status.success(), v.as_array().unwrap().clone())
}

/// The report of one readable file.
fn report(home: &Path, file: &Path) -> Value {
    let (ok, v) = verify_json(home, &[file]);
    assert!(ok, "{v:?}");
    assert_eq!(v.len(), 1);
    v[0]["report"].clone()
}

/// One installation with a text-to-image PNG output shared by several tests.
struct Fresh {
    home: PathBuf,
    png: PathBuf,
    stderr: String,
}

fn fresh() -> &'static Fresh {
    static F: OnceLock<Fresh> = OnceLock::new();
    F.get_or_init(|| {
        let home = scratch("shared");
        let png = home.join("out.png");
        let o = generate(&home, &png, &[]);
        Fresh { home, png, stderr: text(&o.stderr) }
    })
}

fn verdict(r: &Value) -> &str {
    r["verdict"].as_str().unwrap()
}

fn manifest_ok(r: &Value) {
    let m = &r["manifest"];
    assert_eq!(m["signature_valid"], true, "{m}");
    assert_eq!(m["hash_valid"], true, "{m}");
    assert_eq!(m["trusted"], true, "{m}");
    assert_eq!(m["claim_generator"].as_str(), Some(concat!("plantain/", env!("CARGO_PKG_VERSION"))));
}

fn watermark_payload(r: &Value) -> Option<String> {
    let w = &r["watermark"];
    if w["present"] != true {
        return None;
    }
    Some(serde_json::from_value::<plantain_provenance::Payload>(w["payload"].clone()).expect("a present watermark has a payload").to_hex())
}

/// Encodes pixels with the `image` crate (no metadata survives).
fn write_image(img: &image::RgbImage, path: &Path, jpeg_quality: Option<u8>) {
    let mut buf = Vec::new();
    match jpeg_quality {
        Some(q) => image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, q).encode_image(img).unwrap(),
        None => img.write_to(&mut std::io::Cursor::new(&mut buf), image::ImageFormat::Png).unwrap(),
    }
    std::fs::write(path, buf).unwrap();
}

#[test]
fn fresh_output_has_valid_credentials_and_watermark() {
    let f = fresh();
    assert!(f.stderr.contains("created a local signing identity"), "{}", f.stderr);
    assert!(f.stderr.contains("NOT trusted by public validators"), "{}", f.stderr);
    assert!(f.stderr.contains("provenance: watermark "), "{}", f.stderr);
    assert!(f.home.join("provenance/watermark.key").exists());
    assert!(f.home.join("provenance/c2pa/local-ca.pem").exists());

    let r = report(&f.home, &f.png);
    manifest_ok(&r);
    let m = &r["manifest"];
    assert_eq!(m["actions"], serde_json::json!(["c2pa.created"]));
    assert!(m["digital_source_type"].as_str().unwrap().ends_with("/trainedAlgorithmicMedia"), "{m}");
    assert_eq!(m["model"], "sd1", "a local model is recorded by its folder name, not its path: {m}");
    let payload = watermark_payload(&r).expect("watermark present");
    assert_eq!(r["soft_binding_matches"], true);
    assert!(verdict(&r).starts_with("VALID Content Credentials") && verdict(&r).contains("plantain watermark present"), "{}", verdict(&r));
    assert!(verdict(&r).contains(&payload));
    // The plain labels.
    let bytes = std::fs::read(&f.png).unwrap();
    assert!(text(&bytes).contains("AI generated by plantain"));
    assert!(text(&bytes).contains("trainedAlgorithmicMedia"));

    // The human-readable report: the verdict line first, then the details.
    let o = plantain(&f.home, &["verify", f.png.to_str().unwrap()]);
    assert!(o.status.success());
    let out = text(&o.stdout);
    let first = out.lines().next().unwrap();
    assert_eq!(first, format!("{}: {}", f.png.display(), verdict(&r)));
    assert!(out.contains("signature valid; hash binding valid"), "{out}");
    assert!(out.contains("claim generator: plantain/"), "{out}");
    assert!(out.contains("actions: c2pa.created (digital source type trainedAlgorithmicMedia)"), "{out}");
    assert!(out.contains(&format!("watermark: present; payload {payload}")), "{out}");
}

#[test]
fn jpeg_and_webp_outputs_are_stamped_too() {
    let f = fresh();
    for name in ["out.jpg", "out.webp"] {
        let path = f.home.join(name);
        generate(&f.home, &path, &[]);
        let bytes = std::fs::read(&path).unwrap();
        let expected = if name.ends_with("jpg") { plantain_provenance::MediaFormat::Jpeg } else { plantain_provenance::MediaFormat::WebP };
        assert_eq!(plantain_provenance::MediaFormat::sniff(&bytes), Some(expected));
        let r = report(&f.home, &path);
        manifest_ok(&r);
        assert!(watermark_payload(&r).is_some(), "{name}: {r}");
        assert!(verdict(&r).starts_with("VALID Content Credentials"), "{name}: {}", verdict(&r));
    }
}

#[test]
fn stripped_metadata_leaves_the_watermark() {
    let f = fresh();
    let fresh_payload = watermark_payload(&report(&f.home, &f.png)).unwrap();
    let pixels = image::open(&f.png).unwrap().to_rgb8();
    let stripped = scratch("stripped").join("stripped.png");
    write_image(&pixels, &stripped, None);
    let r = report(&f.home, &stripped);
    assert!(r["manifest"].is_null(), "{r}");
    assert_eq!(watermark_payload(&r).as_deref(), Some(fresh_payload.as_str()));
    assert!(verdict(&r).starts_with("No Content Credentials, but plantain watermark present"), "{}", verdict(&r));
    assert!(!text(&std::fs::read(&stripped).unwrap()).contains("AI generated by plantain"));
}

#[test]
fn reencoded_jpeg_keeps_the_watermark() {
    let f = fresh();
    let fresh_payload = watermark_payload(&report(&f.home, &f.png)).unwrap();
    let pixels = image::open(&f.png).unwrap().to_rgb8();
    let jpeg = scratch("reencoded").join("reencoded.jpg");
    write_image(&pixels, &jpeg, Some(85));
    let r = report(&f.home, &jpeg);
    assert!(r["manifest"].is_null(), "{r}");
    assert_eq!(watermark_payload(&r).as_deref(), Some(fresh_payload.as_str()), "{r}");
}

/// The PNG's chunks as (type, data).
fn png_chunks(bytes: &[u8]) -> Vec<([u8; 4], Vec<u8>)> {
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
    let mut at = 8;
    let mut out = Vec::new();
    while at + 12 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let kind: [u8; 4] = bytes[at + 4..at + 8].try_into().unwrap();
        out.push((kind, bytes[at + 8..at + 8 + len].to_vec()));
        at += 12 + len;
    }
    out
}

fn png_from_chunks(chunks: &[([u8; 4], Vec<u8>)]) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in chunks {
        out.extend((data.len() as u32).to_be_bytes());
        out.extend(kind);
        out.extend(data);
        let mut crc_in = kind.to_vec();
        crc_in.extend(data);
        out.extend(crc32(&crc_in).to_be_bytes());
    }
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn tampered_pixels_fail_validation() {
    let f = fresh();
    let dir = scratch("tampered");

    // PNG: change a few pixels and splice the new image data into the signed file, keeping every
    // other chunk (the C2PA manifest, the labels) as it was.
    let signed = std::fs::read(&f.png).unwrap();
    let mut pixels = image::load_from_memory(&signed).unwrap().to_rgb8();
    for x in 0..8 {
        let p = pixels.get_pixel_mut(100 + x, 100);
        p.0 = [255 - p.0[0], 255 - p.0[1], 255 - p.0[2]];
    }
    let mut reencoded = Vec::new();
    pixels.write_to(&mut std::io::Cursor::new(&mut reencoded), image::ImageFormat::Png).unwrap();
    let new_idat: Vec<_> = png_chunks(&reencoded).into_iter().filter(|(k, _)| k == b"IDAT").collect();
    let mut chunks = Vec::new();
    let mut spliced = false;
    for c in png_chunks(&signed) {
        if &c.0 == b"IDAT" {
            if !spliced {
                chunks.extend(new_idat.iter().cloned());
                spliced = true;
            }
        } else {
            chunks.push(c);
        }
    }
    assert!(chunks.iter().any(|(k, _)| k == b"caBX"), "the signed PNG has a C2PA chunk");
    let tampered_png = dir.join("tampered.png");
    std::fs::write(&tampered_png, png_from_chunks(&chunks)).unwrap();
    assert_eq!(image::open(&tampered_png).unwrap().to_rgb8(), pixels);

    // JPEG: flip bits of one byte in the middle of the entropy-coded scan data.
    let jpg = dir.join("signed.jpg");
    generate(&f.home, &jpg, &[]);
    let mut j = std::fs::read(&jpg).unwrap();
    let sos = j.windows(2).rposition(|w| w == [0xFF, 0xDA]).expect("start of scan");
    let mut at = sos + (j.len() - sos) / 2;
    while j[at] == 0xFF || j[at - 1] == 0xFF || j[at] ^ 0x10 == 0xFF {
        at += 1;
    }
    j[at] ^= 0x10;
    let tampered_jpg = dir.join("tampered.jpg");
    std::fs::write(&tampered_jpg, &j).unwrap();

    for file in [&tampered_png, &tampered_jpg] {
        let r = report(&f.home, file);
        let m = &r["manifest"];
        assert_eq!(m["hash_valid"], false, "{}: {m}", file.display());
        assert_eq!(m["state"], "Invalid", "{m}");
        assert!(verdict(&r).starts_with("INVALID Content Credentials"), "{}", verdict(&r));
    }
    let o = plantain(&f.home, &["verify", tampered_png.to_str().unwrap()]);
    assert!(text(&o.stdout).contains("hash binding INVALID"), "{}", text(&o.stdout));
}

#[test]
fn unrelated_images_have_neither() {
    let f = fresh();
    let dir = scratch("unrelated");
    let photo_like = dir.join("scene.jpg");
    write_image(&scene(400, 300, 1234), &photo_like, Some(90));
    let noise = dir.join("noise.png");
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let img = image::RgbImage::from_fn(256, 256, |_, _| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        image::Rgb([state as u8, (state >> 8) as u8, (state >> 16) as u8])
    });
    write_image(&img, &noise, None);
    for file in [&photo_like, &noise] {
        let r = report(&f.home, file);
        assert!(r["manifest"].is_null(), "{r}");
        assert_eq!(r["watermark"]["present"], false, "{r}");
        assert_eq!(verdict(&r), "No Content Credentials; no plantain watermark found");
    }
}

#[test]
fn garbage_and_missing_files_are_clear_errors_and_the_rest_is_checked() {
    let f = fresh();
    let dir = scratch("garbage");
    let garbage = dir.join("garbage.png");
    std::fs::write(&garbage, b"this is not an image at all").unwrap();
    let truncated = dir.join("truncated.png");
    std::fs::write(&truncated, &std::fs::read(&f.png).unwrap()[..100]).unwrap();
    let missing = dir.join("missing.png");

    let (ok, v) = verify_json(&f.home, &[&garbage, &f.png, &truncated, &missing]);
    assert!(!ok, "verify must fail when a file cannot be read");
    assert_eq!(v.len(), 4);
    assert!(v[0]["error"].as_str().unwrap().contains("not PNG, JPEG or WebP"), "{}", v[0]);
    assert!(v[1]["report"]["verdict"].as_str().unwrap().starts_with("VALID"), "{}", v[1]);
    assert!(v[2]["error"].as_str().unwrap().contains("not an image plantain can read"), "{}", v[2]);
    assert!(v[3]["error"].as_str().unwrap().contains("missing.png"), "{}", v[3]);

    let o = plantain(&f.home, &["verify", garbage.to_str().unwrap(), f.png.to_str().unwrap(), missing.to_str().unwrap()]);
    assert!(!o.status.success());
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.contains(&format!("{}: ERROR: not an image plantain can read", garbage.display())), "{out}");
    assert!(out.contains(&format!("{}: VALID Content Credentials", f.png.display())), "{out}");
    assert!(err.contains("2 of 3 file(s) could not be verified"), "{err}");
}

#[test]
fn switches_turn_off_exactly_one_part() {
    let f = fresh();
    let dir = scratch("switches");

    let no_wm = dir.join("no-wm.png");
    let o = generate(&f.home, &no_wm, &["--no-watermark"]);
    assert!(text(&o.stderr).contains("watermark OFF"), "{}", text(&o.stderr));
    let r = report(&f.home, &no_wm);
    manifest_ok(&r);
    assert!(r["manifest"]["soft_binding"].is_null());
    assert_eq!(r["watermark"]["present"], false);
    assert!(verdict(&r).contains("no plantain watermark found"), "{}", verdict(&r));

    let no_c2pa = dir.join("no-c2pa.png");
    let o = generate(&f.home, &no_c2pa, &["--no-c2pa"]);
    assert!(text(&o.stderr).contains("C2PA OFF"), "{}", text(&o.stderr));
    let r = report(&f.home, &no_c2pa);
    assert!(r["manifest"].is_null(), "{r}");
    assert!(watermark_payload(&r).is_some(), "{r}");

    let neither = dir.join("neither.png");
    generate(&f.home, &neither, &["--no-watermark", "--no-c2pa"]);
    let r = report(&f.home, &neither);
    assert_eq!(verdict(&r), "No Content Credentials; no plantain watermark found");
    // The plain label stays: it is not a provenance proof, just honesty.
    assert!(text(&std::fs::read(&neither).unwrap()).contains("AI generated by plantain"));
}

#[test]
fn edits_name_the_input_as_an_ingredient() {
    let f = fresh();
    let dir = scratch("edit");
    let input = dir.join("holiday.png");
    write_image(&scene(256, 256, 77), &input, None);
    let out = dir.join("edited.png");
    let image_arg = input.display().to_string();
    let o = generate(&f.home, &out, &["--image", &image_arg, "--strength", "0.5"]);
    assert!(text(&o.stderr).contains("action edited"), "{}", text(&o.stderr));
    let r = report(&f.home, &out);
    manifest_ok(&r);
    let m = &r["manifest"];
    // C2PA 2.x: an edit opens its parent first, or validators call the manifest malformed.
    assert_eq!(m["actions"], serde_json::json!(["c2pa.opened", "c2pa.edited"]));
    assert_eq!(m["ingredients"], serde_json::json!(["holiday.png"]));
    assert!(m["digital_source_type"].as_str().unwrap().ends_with("/compositeWithTrainedAlgorithmicMedia"), "{m}");
}

#[test]
fn unknown_output_format_fails_before_any_work() {
    let home = scratch("badext");
    for name in ["out.gif", "out"] {
        let out = home.join(name);
        // A model that does not exist: the format error must come first.
        let o = plantain(&home, &["generate", "x", "--model", "/nonexistent/model", "-o", out.to_str().unwrap()]);
        assert!(!o.status.success());
        let err = text(&o.stderr);
        assert!(err.contains("unknown output format") && err.contains(".png, .jpg/.jpeg or .webp"), "{err}");
        assert!(!err.contains("nonexistent"), "{err}");
        assert!(!out.exists());
    }
    assert!(!home.join("provenance").exists(), "no keys are created for a refused command");
}
