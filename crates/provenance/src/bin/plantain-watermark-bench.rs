//! Watermark benchmark: embeds plantain's watermark and (through `scripts/watermark_baseline.py`)
//! invisible-watermark's dwtDct into the same cover images, applies the same attacks (one Rust
//! implementation, `plantain_provenance::attacks`) to both, and reports PSNR, payload bit accuracy
//! and detection rate per attack, false positives on unwatermarked images, and embedding time.
//!
//! ```sh
//! /work/pyvenv/bin/python scripts/watermark_baseline.py covers /tmp/wm/covers
//! cargo run --release -p plantain-provenance --features bench --bin plantain-watermark-bench -- \
//!     --covers /tmp/wm/covers --synthetic 20 --python /work/pyvenv/bin/python --out /tmp/wm/table.md
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use image::RgbImage;
use plantain_provenance::attacks::Attack;
use plantain_provenance::testimages::scene;
use plantain_provenance::watermark::{self, Payload, WatermarkKey};

struct Args {
    covers: Option<PathBuf>,
    synthetic: usize,
    python: Option<String>,
    out: Option<PathBuf>,
    work: PathBuf,
    attacks: Option<Vec<usize>>,
    skip_fp: bool,
    skip_timing: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        covers: None,
        synthetic: 20,
        python: None,
        out: None,
        work: std::env::temp_dir().join("plantain-wm-bench"),
        attacks: None,
        skip_fp: false,
        skip_timing: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--covers" => a.covers = Some(val()?.into()),
            "--synthetic" => a.synthetic = val()?.parse().map_err(|e| format!("--synthetic: {e}"))?,
            "--python" => a.python = Some(val()?),
            "--out" => a.out = Some(val()?.into()),
            "--work" => a.work = val()?.into(),
            "--attacks" => {
                a.attacks = Some(val()?.split(',').map(|s| s.parse().map_err(|e| format!("--attacks: {e}"))).collect::<Result<_, _>>()?)
            }
            "--skip-fp" => a.skip_fp = true,
            "--skip-timing" => a.skip_timing = true,
            "-h" | "--help" => {
                println!(
                    "plantain-watermark-bench [--covers DIR] [--synthetic N] [--python VENV_PYTHON] [--out FILE.md] [--work DIR] [--attacks 0,3,..] [--skip-fp] [--skip-timing]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn load_png_dir(dir: &Path) -> Result<Vec<(String, RgbImage)>, String> {
    let mut names: Vec<_> =
        std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    names.sort();
    let mut out = Vec::new();
    for p in names {
        if p.extension().is_some_and(|e| e == "png" || e == "jpg") {
            let img = image::open(&p).map_err(|e| format!("{}: {e}", p.display()))?.to_rgb8();
            out.push((p.file_name().unwrap().to_string_lossy().into_owned(), img));
        }
    }
    Ok(out)
}

/// Smallest number of matching bits out of 64 whose probability under chance is at most `p`.
fn binomial_threshold(n: u32, p: f64) -> u32 {
    let mut tail = 0f64;
    let total = 2f64.powi(n as i32);
    let mut choose = 1f64; // C(n, k) for k = n downwards
    for k in (0..=n).rev() {
        if k < n {
            choose = choose * f64::from(k + 1) / f64::from(n - k);
        }
        if tail + choose / total > p {
            return k + 1;
        }
        tail += choose / total;
    }
    0
}

#[derive(Default, Clone)]
struct Tally {
    n: usize,
    detected: usize,
    /// Detections among the photographs (the first covers) and their count.
    photo_n: usize,
    photo_detected: usize,
    wrong: usize,
    bits_ok: u64,
    bits: u64,
    secs: f64,
}

impl Tally {
    /// "all% (photographs% / rendered%)".
    fn split(&self) -> String {
        let pct = |a: usize, b: usize| if b == 0 { "—".to_string() } else { format!("{:.0}%", 100.0 * a as f64 / b as f64) };
        format!(
            "{} ({} / {})",
            pct(self.detected, self.n),
            pct(self.photo_detected, self.photo_n),
            pct(self.detected - self.photo_detected, self.n - self.photo_n)
        )
    }
    fn acc(&self) -> f64 {
        100.0 * self.bits_ok as f64 / self.bits.max(1) as f64
    }
}

/// The covers: the photographs in `--covers` (at least 256x256 px in area, which dwtDct needs)
/// then `--synthetic` rendered scenes; also how many are photographs.
fn load_covers(args: &Args) -> Result<(Vec<(String, RgbImage)>, usize), String> {
    let mut covers: Vec<(String, RgbImage)> = match &args.covers {
        Some(d) => load_png_dir(d)?,
        None => Vec::new(),
    };
    covers.retain(|(_, img)| img.width() * img.height() >= 256 * 256);
    let n_real = covers.len();
    let sizes = [(512, 512), (768, 512), (1024, 1024), (640, 960), (1376, 768)];
    for i in 0..args.synthetic {
        let (w, h) = sizes[i % sizes.len()];
        covers.push((format!("synthetic{i:03}.png"), scene(w, h, 1000 + i as u64)));
    }
    eprintln!("{} covers ({} photographs, {} synthetic)", covers.len(), n_real, args.synthetic);
    Ok((covers, n_real))
}

/// plantain's watermark on every cover, under every attack.
struct Ours {
    psnr: Vec<f64>,
    tallies: Vec<Tally>,
    missed_clean: Vec<String>,
}

fn run_ours(key: &WatermarkKey, covers: &[(String, RgbImage)], n_real: usize, attacks: &[Attack]) -> Result<Ours, String> {
    let mut psnr_ours = Vec::new();
    let mut ours: Vec<Tally> = vec![Tally::default(); attacks.len()];
    let mut missed_clean: Vec<String> = Vec::new();
    for (i, (name, img)) in covers.iter().enumerate() {
        let payload =
            Payload { generator: Payload::PLANTAIN, key_id: key.key_id(), nonce: 0x1234_5678 ^ (i as u32).wrapping_mul(0x9E37_79B9) };
        let wm = watermark::embed(img, &payload, key);
        psnr_ours.push(watermark::psnr(img, &wm));
        for (a, t) in attacks.iter().zip(ours.iter_mut()) {
            let attacked = a.apply(&wm)?;
            let t0 = Instant::now();
            let d = watermark::detect(&attacked, key);
            t.secs += t0.elapsed().as_secs_f64();
            t.n += 1;
            let ok = d.present && d.payload == Some(payload);
            if i < n_real {
                t.photo_n += 1;
                t.photo_detected += usize::from(ok);
            }
            if ok {
                t.detected += 1;
            } else if d.present {
                t.wrong += 1;
            }
            t.bits += 64;
            t.bits_ok += 64 - u64::from(d.best_guess.map_or(32, |g| g.bit_errors(payload)));
            if !ok {
                eprintln!("\r  not found: {name} after {}", a.name());
            }
            if !d.present && *a == Attack::None {
                missed_clean.push(name.clone());
            }
        }
        eprint!("\r  ours: {}/{}", i + 1, covers.len());
    }
    eprintln!();
    Ok(Ours { psnr: psnr_ours, tallies: ours, missed_clean })
}

/// The dwtDct baseline (Python), same covers and attacks: PSNR, tallies, marked images.
type Baseline = (Vec<f64>, Vec<Tally>, Vec<RgbImage>);

fn run_baseline(args: &Args, py: &str, covers: &[(String, RgbImage)], n_real: usize, attacks: &[Attack]) -> Result<Baseline, String> {
    let threshold = binomial_threshold(64, 1e-6);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/watermark_baseline.py");
    let (cdir, mdir, adir) = (args.work.join("covers"), args.work.join("marked"), args.work.join("attacked"));
    for d in [&cdir, &mdir, &adir] {
        let _ = std::fs::remove_dir_all(d);
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    for (name, img) in covers {
        img.save(cdir.join(name.replace(".jpg", ".png"))).map_err(|e| e.to_string())?;
    }
    let status = Command::new(py).arg(&script).arg("embed").arg(&cdir).arg(&mdir).status().map_err(|e| format!("{py}: {e}"))?;
    if !status.success() {
        return Err("baseline embed failed".into());
    }
    let payloads: BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(mdir.join("payloads.json")).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let mut psnr_base = Vec::new();
    let mut marked = Vec::new();
    for (name, img) in covers {
        let name = name.replace(".jpg", ".png");
        let wm = image::open(mdir.join(&name)).map_err(|e| e.to_string())?.to_rgb8();
        psnr_base.push(watermark::psnr(img, &wm));
        for (ai, a) in attacks.iter().enumerate() {
            let d = adir.join(ai.to_string());
            std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
            a.apply(&wm)?.save(d.join(&name)).map_err(|e| e.to_string())?;
        }
        marked.push(wm);
    }
    let out_json = args.work.join("decoded.json");
    let t0 = Instant::now();
    let status = Command::new(py).arg(&script).arg("decode").arg(&adir).arg(&out_json).status().map_err(|e| format!("{py}: {e}"))?;
    let decode_secs = t0.elapsed().as_secs_f64();
    if !status.success() {
        return Err("baseline decode failed".into());
    }
    let decoded: BTreeMap<String, Option<String>> =
        serde_json::from_str(&std::fs::read_to_string(&out_json).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let mut tallies = vec![Tally::default(); attacks.len()];
    for (ai, t) in tallies.iter_mut().enumerate() {
        for (ci, (name, _)) in covers.iter().enumerate() {
            let name = name.replace(".jpg", ".png");
            let truth = &payloads[&name];
            let got = decoded.get(&format!("{ai}/{name}")).cloned().flatten();
            let ok = got.map_or(32, |g| g.bytes().zip(truth.bytes()).filter(|(a, b)| a == b).count() as u32);
            t.n += 1;
            t.bits += 64;
            t.bits_ok += u64::from(ok);
            if ok >= threshold {
                t.detected += 1;
            }
            if ci < n_real {
                t.photo_n += 1;
                t.photo_detected += usize::from(ok >= threshold);
            }
            t.secs += decode_secs / (attacks.len() * covers.len()) as f64;
        }
    }
    Ok((psnr_base, tallies, marked))
}

/// Images that carry no watermark of this key: variants of the photographs, rendered scenes,
/// noise, flats and patterns, another key's marks, and the baseline's marked images.
fn negatives(covers: &[(String, RgbImage)], n_real: usize, base: Option<&Baseline>) -> Result<Vec<(String, RgbImage)>, String> {
    let mut negatives: Vec<(String, RgbImage)> = Vec::new();
    for (name, img) in covers.iter().take(n_real) {
        negatives.push((name.clone(), img.clone()));
        let (w, h) = img.dimensions();
        negatives.push((format!("{name} 50%"), image::imageops::resize(img, w / 2, h / 2, image::imageops::FilterType::Triangle)));
        negatives
            .push((format!("{name} 150%"), image::imageops::resize(img, w * 3 / 2, h * 3 / 2, image::imageops::FilterType::CatmullRom)));
        negatives.push((format!("{name} crop"), image::imageops::crop_imm(img, w / 7, h / 5, w / 2, h / 2).to_image()));
        negatives.push((format!("{name} jpeg60"), plantain_provenance::attacks::jpeg(img, 60)?));
        negatives.push((format!("{name} rot"), Attack::Rotate(1.0).apply(img)?));
    }
    let sides = [64u32, 100, 256, 384, 512, 700, 1024, 1536];
    for i in 0..120u64 {
        let (w, h) = (sides[i as usize % sides.len()], sides[(i as usize * 3 + 1) % sides.len()]);
        negatives.push((format!("scene {i}"), scene(w, h, 50_000 + i)));
    }
    for i in 0..40u32 {
        negatives.push((format!("noise/flat/pattern {i}"), plain_image(i)?));
    }
    let other = WatermarkKey::from_passphrase("some other operator");
    for (name, img) in covers.iter().take(20) {
        let p = Payload::new_random(&other);
        negatives.push((format!("{name} other key"), watermark::embed(img, &p, &other)));
    }
    if let Some((_, _, marked)) = base {
        for (i, img) in marked.iter().enumerate() {
            negatives.push((format!("dwtDct {i}"), img.clone()));
        }
    }
    Ok(negatives)
}

/// Noise, a noisy gradient, a flat colour or a pattern (`i % 4`), of a size that varies with `i`.
fn plain_image(i: u32) -> Result<RgbImage, String> {
    let (w, h) = (256 + 32 * i, 256 + 16 * (i % 7));
    let mut s = 0x2545_f491_4f6c_dd1du64 ^ u64::from(i);
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    Ok(match i % 4 {
        0 => RgbImage::from_fn(w, h, |_, _| image::Rgb([next() as u8, next() as u8, next() as u8])),
        1 => {
            let g = RgbImage::from_fn(w, h, |x, _| image::Rgb([(x * 255 / w) as u8; 3]));
            Attack::Noise(3.0 + i as f32).apply(&g)?
        }
        2 => RgbImage::from_pixel(w, h, image::Rgb([(i * 6) as u8, 128, 200])),
        _ => RgbImage::from_fn(w, h, |x, y| image::Rgb([((x / 8 + y / 8) % 2 * 255) as u8, (x % 256) as u8, (y % 256) as u8])),
    })
}

/// False positives: how many unwatermarked images are detected, as a report line.
fn false_positives(key: &WatermarkKey, covers: &[(String, RgbImage)], n_real: usize, base: Option<&Baseline>) -> Result<String, String> {
    let negatives = negatives(covers, n_real, base)?;
    let mut hits = 0;
    let mut max_fpp = 0f64;
    for (name, img) in &negatives {
        let d = watermark::detect(img, key);
        max_fpp = max_fpp.max(d.false_positive_probability);
        if d.present {
            hits += 1;
            eprintln!("FALSE POSITIVE: {name}: {d:?}");
        }
    }
    Ok(format!(
        "False positives: **{hits} of {}** unwatermarked images detected ({} scikit-image photographs x 6 variants, 120 rendered scenes of 64..1536 px, 40 noise/flat/pattern images, 20 images watermarked with another key{}). Bound per image from the code: {:.1e} (attempts x 2^-32).\n",
        negatives.len(),
        n_real,
        if base.is_some() { format!(", {} dwtDct-watermarked images", covers.len()) } else { String::new() },
        max_fpp
    ))
}

/// Embedding and detection times at 4K and 8K, and detection on 64x64 pictures, as a report line.
fn timing(key: &WatermarkKey) -> String {
    let big = scene(3840, 2160, 7);
    let p = Payload::new_random(key);
    let mut times = Vec::new();
    let mut wm = big.clone();
    for _ in 0..5 {
        let t0 = Instant::now();
        wm = watermark::embed(&big, &p, key);
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let t0 = Instant::now();
    let d = watermark::detect(&wm, key);
    let tdet = t0.elapsed().as_secs_f64();
    let huge = scene(7680, 4320, 8);
    let t0 = Instant::now();
    let wm8 = watermark::embed(&huge, &p, key);
    let t8 = t0.elapsed().as_secs_f64();
    let d8 = watermark::detect(&wm8, key);
    let smooth = RgbImage::from_fn(64, 64, |x, y| image::Rgb([(40 + x) as u8, (90 + y / 2) as u8, 160]));
    let d64 = watermark::detect(&watermark::embed(&smooth, &p, key), &key);
    let thumb = image::imageops::resize(&scene(512, 512, 9), 64, 64, image::imageops::FilterType::Triangle);
    let d64t = watermark::detect(&watermark::embed(&thumb, &p, key), &key);
    format!(
        "Single-threaded. Embedding 3840x2160: median {:.3} s (runs {:?}); detection {:.2} s (found: {}); PSNR {:.1} dB. 7680x4320: embed {:.2} s, found: {}. 64x64 smooth gradient: found: {}; 64x64 detailed thumbnail: found: {}.\n",
        times[2],
        times.iter().map(|t| (t * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
        tdet,
        d.present && d.payload == Some(p),
        watermark::psnr(&big, &wm),
        t8,
        d8.present && d8.payload == Some(p),
        d64.present && d64.payload == Some(p),
        d64t.present && d64t.payload == Some(p),
    )
}

/// The markdown report: covers, PSNR, the detection table, misses, false positives, timing.
#[allow(clippy::too_many_arguments)]
fn report(
    args: &Args,
    covers: &[(String, RgbImage)],
    n_real: usize,
    attacks: &[Attack],
    ours: &Ours,
    base: Option<&Baseline>,
    fp_report: &str,
    timing: &str,
) -> String {
    let threshold = binomial_threshold(64, 1e-6);
    let (psnr_ours, ours, missed_clean) = (&ours.psnr, &ours.tallies, &ours.missed_clean);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let mut md = String::new();
    md.push_str(&format!(
        "{} covers: {} scikit-image photographs (`skimage.data`, ≥256x256 px) and {} rendered scenes (512..1376 px). Payload 64 bits each. ours = plantain (blind detection with the key, 32-bit tag check); dwtDct = `invisible-watermark` 0.2.0 `dwtDct` with library defaults (as SDXL uses it), 64 bits, \"detected\" = at least {threshold}/64 bits equal to the embedded payload (chance ≤ 1e-6 with the payload known).\n\n",
        covers.len(),
        n_real,
        args.synthetic
    ));
    match base {
        Some((pb, _, _)) => md.push_str(&format!(
            "PSNR (dB, mean / min): ours {:.1} / {:.1}; dwtDct {:.1} / {:.1}.\n\n",
            mean(psnr_ours),
            min(psnr_ours),
            mean(pb),
            min(pb)
        )),
        None => md.push_str(&format!("PSNR (dB, mean / min): ours {:.1} / {:.1}; baseline not run.\n\n", mean(psnr_ours), min(psnr_ours))),
    }
    md.push_str("Detected: all covers (photographs / rendered scenes).\n\n");
    md.push_str("| attack | ours: detected | ours: bit accuracy | dwtDct: detected | dwtDct: bit accuracy | ours: s/detect |\n|---|---|---|---|---|---|\n");
    for (i, a) in attacks.iter().enumerate() {
        let o = &ours[i];
        let (bd, ba) = match base {
            Some((_, t, _)) => (t[i].split(), format!("{:.1}%", t[i].acc())),
            None => ("—".into(), "—".into()),
        };
        let wrong = if o.wrong > 0 { format!(" ({} wrong payloads!)", o.wrong) } else { String::new() };
        md.push_str(&format!(
            "| {} | {}{} | {:.1}% | {} | {} | {:.2} |\n",
            a.name(),
            o.split(),
            wrong,
            o.acc(),
            bd,
            ba,
            o.secs / o.n.max(1) as f64
        ));
    }
    md.push('\n');
    if !missed_clean.is_empty() {
        md.push_str(&format!("Covers where ours is not found even unattacked: {}.\n\n", missed_clean.join(", ")));
    }
    md.push_str(fp_report);
    md.push_str(timing);
    md
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let key = WatermarkKey::from_passphrase("plantain-watermark-bench");
    let (covers, n_real) = load_covers(&args)?;
    let all_attacks = Attack::all();
    let attacks: Vec<Attack> = match &args.attacks {
        Some(ix) => ix.iter().filter_map(|&i| all_attacks.get(i).copied()).collect(),
        None => all_attacks,
    };
    let ours = run_ours(&key, &covers, n_real, &attacks)?;
    let base = match &args.python {
        Some(py) => Some(run_baseline(&args, py, &covers, n_real, &attacks)?),
        None => None,
    };
    let fp_report = if args.skip_fp { String::new() } else { false_positives(&key, &covers, n_real, base.as_ref())? };
    let timing = if args.skip_timing { String::new() } else { timing(&key) };
    let md = report(&args, &covers, n_real, &attacks, &ours, base.as_ref(), &fp_report, &timing);
    println!("{md}");
    if let Some(out) = &args.out {
        std::fs::write(out, &md).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
