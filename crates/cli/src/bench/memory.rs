//! `plantain bench --only memory`: what each way of holding a Stable Diffusion model's weights
//! costs and keeps. For SD-Turbo, SD 1.5 and SDXL at full size (random fp16 weights) and the
//! shipped plantain-nano, each weight mode (`--memory-modes`: f32, int8, int4, each loaded or
//! `-lean`) loads and draws in a process of its own (`--only memory:<model>:<mode>`), so each
//! peak RSS is that pipeline's alone: load time, one picture's time, peak RSS, and the picture's
//! PSNR against the first mode's (f32) from the same seed.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};
use plantain_engine::models::presets;
use plantain_engine::pipeline::{GenerateRequest, LoadOptions, ModelSource, Pipeline, WeightOptions};
use plantain_engine::runtime::RuntimeOptions;
use plantain_engine::weights::quant::WeightBits;

use super::checkpoint::FolderSpec;
use super::{Args, Bench, Row, peak_rss_gib, random_folder};

fn mode_options(mode: &str) -> Result<WeightOptions> {
    let (bits, lean) = match mode.strip_suffix("-lean") {
        Some(b) => (b, true),
        None => (mode, false),
    };
    Ok(WeightOptions { weights: bits.parse::<WeightBits>().map_err(anyhow::Error::msg)?, lean, ..Default::default() })
}

/// The model's folder and the request it draws: 1 step without guidance for the full-size
/// models (SD-Turbo's use; SD 1.5 the same, to compare weights, not samplers), the shipped
/// defaults for plantain-nano.
fn model(root: &Path, name: &str, size: usize) -> Result<(PathBuf, GenerateRequest)> {
    let (dir, side) = match name {
        "turbo" => (random_folder(root, "turbo", "SD-Turbo", FolderSpec::from(presets::SD_TURBO))?, size as u32),
        "sd15" => (random_folder(root, "sd15", "SD 1.5", FolderSpec::from(presets::SD15))?, size as u32),
        "sdxl" => (random_folder(root, "sdxl", "SDXL", FolderSpec::from(presets::SDXL))?, size as u32),
        "nano" => (plantain_hub::resolve("plantain-nano", &crate::hubcmd::resolve_options())?.path, 64),
        other => anyhow::bail!("unknown model `{other}` for memory (turbo, sd15, sdxl, nano)"),
    };
    let mut req = GenerateRequest::new("a red star above a blue circle on a yellow background", side, side);
    req.seed = 1;
    if name == "nano" {
        req.steps = 20;
    } else {
        req.steps = 1;
        req.guidance = 0.0;
    }
    Ok((dir, req))
}

/// `memory:<model>:<mode>`: this process loads the model in that mode and draws; the picture
/// goes to `<root>/memory-<model>-<mode>.png` for the parent to compare.
pub fn one(spec: &str, root: &Path, rt: &RuntimeOptions, b: &mut Bench, size: usize) -> Result<()> {
    let (name, mode) = spec.split_once(':').context("memory:<model>:<mode>")?;
    let (dir, req) = model(root, name, size)?;
    let opts = LoadOptions { runtime: rt.clone(), weights: mode_options(mode)?, ..Default::default() };
    let t = Instant::now();
    let p = Pipeline::load(&ModelSource::Diffusers(dir), &opts)?;
    let load = t.elapsed().as_secs_f64();
    b.rows.push(Row {
        key: format!("memory_{name}_{mode}_load"),
        label: format!("{name} {mode} load"),
        times: vec![load],
        peak_rss_gib: peak_rss_gib(),
    });
    let mut image = None;
    b.measure(&format!("memory_{name}_{mode}"), &format!("{name} {mode}: one picture ({} steps)", req.steps), || {
        image = Some(p.generate(&req, &mut |_| ControlFlow::Continue(()))?.image);
        Ok(())
    })?;
    image.context("no picture")?.save(root.join(format!("memory-{name}-{mode}.png")))?;
    Ok(())
}

/// PSNR (dB) of two same-sized RGB pictures.
fn psnr(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    let n = a.as_raw().len() as f64;
    let mse = a.as_raw().iter().zip(b.as_raw()).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum::<f64>() / n;
    if mse == 0.0 { f64::INFINITY } else { 10.0 * (255.0f64.powi(2) / mse).log10() }
}

/// The f32 bytes of every weight of the folder's text encoder(s), UNet and VAE.
fn f32_weight_gib(dir: &Path) -> Result<f64> {
    let mut elements = 0usize;
    for sub in ["text_encoder", "text_encoder_2", "unet", "vae"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else { continue };
        for e in entries.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "safetensors")) {
            let index = plantain_engine::weights::TensorIndex::open(&e.path())?;
            elements += index.iter().map(|(_, t)| t.numel()).sum::<usize>();
        }
    }
    Ok(elements as f64 * 4.0 / (1u64 << 30) as f64)
}

/// `memory`: every model and mode in a child process of this binary; one table.
pub fn all(a: &Args, root: &Path, b: &mut Bench) -> Result<()> {
    std::fs::create_dir_all(root)?;
    for name in &a.memory_models {
        let (dir, _) = model(root, name, a.size)?;
        let weights = f32_weight_gib(&dir)?;
        println!();
        println!("{name}: weights {weights:.2} GiB in f32; each mode in its own process");
        println!("| mode | load (s) | one picture, median (s) | peak RSS (GiB) | peak / f32 weights | PSNR vs f32 (dB) |");
        println!("|---|---|---|---|---|---|");
        let mut reference = None;
        for mode in a.memory_modes.iter().map(String::as_str) {
            let json = root.join(format!("memory-{name}-{mode}.json"));
            let status = Command::new(std::env::current_exe()?)
                .args(["bench", "--only", &format!("memory:{name}:{mode}"), "--dir"])
                .arg(root)
                .args(["--size", &a.size.to_string(), "--repeats", &b.repeats.to_string(), "--threads", &a.threads.to_string(), "--json"])
                .arg(&json)
                .stdout(Stdio::null())
                .status()?;
            anyhow::ensure!(status.success(), "memory bench of {name} {mode} failed");
            let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json)?)?;
            let r = &doc["results"][format!("memory_{name}_{mode}")];
            let load = doc["results"][format!("memory_{name}_{mode}_load")]["median_s"].as_f64().context("load time")?;
            let times: Vec<f64> = r["times_s"].as_array().context("times_s")?.iter().filter_map(|t| t.as_f64()).collect();
            let peak = doc["peak_rss_gb"].as_f64().context("peak RSS")?;
            let picture = image::open(root.join(format!("memory-{name}-{mode}.png")))?.to_rgb8();
            let db = match reference.as_ref().map(|f| psnr(&picture, f)) {
                None => "— (reference)".to_string(),
                Some(db) if db.is_finite() => format!("{db:.1}"),
                Some(_) => "identical".to_string(),
            };
            reference.get_or_insert(picture);
            let row = Row { key: format!("memory_{name}_{mode}"), label: format!("{name} {mode}"), times, peak_rss_gib: peak };
            println!("| {mode} | {load:.1} | {:.2} | {peak:.2} | {:.2} | {} |", row.median(), peak / weights, db);
            b.rows.push(row);
        }
    }
    Ok(())
}
