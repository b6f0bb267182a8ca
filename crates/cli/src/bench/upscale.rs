//! `plantain bench --only upscale --size 1024`: 1K → 4K (4x of `--size`) with each Real-ESRGAN model, against the ncnn
//! runtime's CPU run of the same files (scripts/bench_ncnn_upscale.py, same tiles) in the same
//! benchmark. Each model runs in a process of its own (`--only upscale:<model>`, and one Python
//! process per model for ncnn), so each peak RSS is that model's alone.

use std::ops::ControlFlow;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use plantain_engine::runtime::RuntimeOptions;
use plantain_engine::upscale::{TileOptions, UpscaleModel, Upscaler};

use super::{Args, Bench, Row, peak_rss_gib};

/// `upscale:<model>`: this process times one model (no warm-up run: the session is built when
/// the model loads, and the first of the tiles absorbs what is left of a warm-up).
pub fn one(name: &str, side: u32, rt: &RuntimeOptions, b: &mut Bench, photo: &Path) -> Result<()> {
    let model = UpscaleModel::parse(name)?;
    let image = crate::io::read_rgb(photo)?;
    let image = image::imageops::resize(&image, side, side, image::imageops::FilterType::Lanczos3);
    let t = Instant::now();
    let up = Upscaler::load(model, 4, rt)?;
    eprintln!("{name}: model load {:.1} s", t.elapsed().as_secs_f32());
    let mut times = Vec::with_capacity(b.repeats);
    for _ in 0..b.repeats {
        let t = Instant::now();
        let out = up.upscale(&image, &mut |_, _| ControlFlow::Continue(()))?;
        times.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(out.dimensions() == (4 * side, 4 * side), "unexpected output size {:?}", out.dimensions());
    }
    let label = format!("Real-ESRGAN {name} {side}x{side} -> {0}x{0} (plantain)", 4 * side);
    let row = Row { key: format!("upscale_{name}"), label, times, peak_rss_gib: peak_rss_gib() };
    eprintln!("  {}: median {:.2} s, peak RSS {:.2} GiB", row.label, row.median(), row.peak_rss_gib);
    b.rows.push(row);
    Ok(())
}

/// The median seconds and peak RSS (GiB) a JSON report of `key` gives.
fn read_report(path: &Path, key: &str) -> Result<(f64, f64, Vec<f64>)> {
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)?;
    let r = &doc["results"][key];
    let times: Vec<f64> = r["times_s"].as_array().context("times_s")?.iter().filter_map(|t| t.as_f64()).collect();
    let peak = r["peak_rss_gb_so_far"].as_f64().or_else(|| doc["peak_rss_gb"].as_f64()).context("peak RSS")?;
    Ok((r["median_s"].as_f64().context("median_s")?, peak, times))
}

/// `upscale`: every model in a child process of this binary, then in ncnn's; one table.
pub fn all(a: &Args, b: &mut Bench) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("plantain-bench-upscale-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let tiles = TileOptions::default();
    let mut rows = Vec::new();
    let side = a.size as u32;
    for name in &a.upscale_models {
        let name = UpscaleModel::parse(name)?.name();
        let ours = dir.join(format!("{name}-plantain.json"));
        let status = Command::new(std::env::current_exe()?)
            .args(["bench", "--only"])
            .arg(format!("upscale:{name}"))
            .arg("--size")
            .arg(side.to_string())
            .arg("--repeats")
            .arg(b.repeats.to_string())
            .arg("--threads")
            .arg(a.threads.to_string())
            .arg("--photo")
            .arg(&a.photo)
            .arg("--json")
            .arg(&ours)
            .status()?;
        anyhow::ensure!(status.success(), "plantain upscale bench of {name} failed");
        let (_, peak, times) = read_report(&ours, &format!("upscale_{name}"))?;
        rows.push(Row {
            key: format!("upscale_{name}"),
            label: format!("{name} {side} -> {}, plantain", 4 * side),
            times,
            peak_rss_gib: peak,
        });
        let peer = dir.join(format!("{name}-ncnn.json"));
        let status = Command::new(&python)
            .args(["scripts/bench_ncnn_upscale.py", "--model", name, "--side"])
            .arg(side.to_string())
            .arg("--repeats")
            .arg(b.repeats.to_string())
            .arg("--threads")
            .arg(a.threads.to_string())
            .arg("--tile")
            .arg(tiles.tile.to_string())
            .arg("--overlap")
            .arg(tiles.overlap.to_string())
            .arg("--photo")
            .arg(&a.photo)
            .arg("--json")
            .arg(&peer)
            .status()
            .with_context(|| format!("running {python} scripts/bench_ncnn_upscale.py (set PYTHON to a venv with ncnn)"))?;
        anyhow::ensure!(status.success(), "ncnn upscale bench of {name} failed");
        let (_, peak, times) = read_report(&peer, &format!("upscale_{name}"))?;
        rows.push(Row {
            key: format!("upscale_{name}_ncnn"),
            label: format!("{name} {side} -> {}, ncnn CPU (peer)", 4 * side),
            times,
            peak_rss_gib: peak,
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!();
    println!(
        "| model, {side}x{side} -> {0}x{0} | plantain median (s) | ncnn median (s) | plantain / ncnn | peak RSS plantain / ncnn (GiB) |",
        4 * side
    );
    println!("|---|---|---|---|---|");
    for pair in rows.chunks(2) {
        if let [ours, peer] = pair {
            println!(
                "| {} | {:.1} | {:.1} | {:.2} | {:.2} / {:.2} |",
                ours.key.trim_start_matches("upscale_"),
                ours.median(),
                peer.median(),
                ours.median() / peer.median(),
                ours.peak_rss_gib,
                peer.peak_rss_gib
            );
        }
    }
    b.rows.extend(rows);
    Ok(())
}
