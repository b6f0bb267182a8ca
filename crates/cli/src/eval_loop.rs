//! `plantain eval loop`: what the plan → check → correct loop buys on the synthetic world. The
//! held-out scenes' captions go through the loop with plantain-nano (the loop reads each caption
//! into its own plan: it never sees the true scene); the true scene's checker then judges the
//! answer. One run with the largest budget gives every smaller one exactly: the loop is
//! deterministic, so a budget of k attempts is the first k attempts of a longer run, answered by
//! the best of them under the same score.

use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use plantain_director::generate::{Budget, Checkers, Paint, Plan, Settings, best_of, run};
use plantain_engine::pipeline::GenerateRequest;
use plantain_nano::eval::Accuracy;
use plantain_world::{Split, caption_plain, check, sample_scene};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::generate::{LoadSpec, load_pipeline, resolve_model};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, short, default_value = "plantain-nano")]
    pub model: String,
    /// Held-out scenes.
    #[arg(long, default_value_t = 50)]
    pub scenes: usize,
    /// Attempt budgets to report (the largest is run; the others are its prefixes).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub attempts: Vec<usize>,
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Write a contact sheet here: per scene whose loop repainted a region (the first 8), the
    /// true scene, then every attempt, the kept one framed in green.
    #[arg(long)]
    pub sheet: Option<std::path::PathBuf>,
}

/// Per budget: the truth's tallies and the time each picture took.
struct Column {
    budget: usize,
    acc: Accuracy,
    secs: Vec<f64>,
    attempts_used: Vec<usize>,
}

pub fn run_eval(a: Args) -> Result<()> {
    let resolved = resolve_model(&a.model)?;
    let load = LoadSpec { threads: a.threads, ..Default::default() };
    let pipeline = load_pipeline(&resolved, &load)?;
    let native = pipeline.native_resolution();
    let max = a.attempts.iter().copied().max().context("give at least one budget")?.max(1);
    let mut cols: Vec<Column> =
        a.attempts.iter().map(|&b| Column { budget: b.max(1), acc: Accuracy::default(), secs: vec![], attempts_used: vec![] }).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(a.seed ^ 0x4e1d_0047);
    let bar = ProgressBar::new(a.scenes as u64).with_style(
        ProgressStyle::with_template("loop [{bar:30}] {pos}/{len} scenes, {elapsed} elapsed, eta {eta}")?.progress_chars("=> "),
    );
    let mut unread = 0;
    let mut rows: Vec<Vec<image::RgbImage>> = Vec::new();
    for i in 0..a.scenes {
        let scene = sample_scene(&mut rng, Split::HeldOut);
        let prompt = caption_plain(&scene);
        let plan = Plan::new(&prompt, None, native, native);
        unread += usize::from(plan.world.is_none());
        let first = Settings { seed: a.seed.wrapping_add(i as u64), steps: a.steps, guidance: resolved.defaults.guidance };
        let budget = Budget { attempts: max, time: Duration::from_secs(3600) };
        let template = GenerateRequest::new(plan.draw_prompt.clone(), native, native);
        let mut paint = |p: &Paint| -> Result<image::RgbImage> {
            if let Some(exact) = p.exact_answer() {
                return Ok(exact.clone());
            }
            let req = p.request(&plan, &template);
            Ok(pipeline.generate(&req, &mut |_| std::ops::ControlFlow::Continue(()))?.resized(&plantain_engine::resize::Lanczos3)?.image)
        };
        let outcome = run(&plan, first, budget, &Checkers::default(), &mut paint)?;
        for c in &mut cols {
            let prefix = &outcome.attempts[..c.budget.min(outcome.attempts.len())];
            let best = &prefix[best_of(prefix)];
            c.acc.record(&check(&scene, &best.image));
            c.secs.push(prefix.iter().map(|t| t.elapsed.as_secs_f64()).sum());
            c.attempts_used.push(prefix.len());
        }
        if a.sheet.is_some() && rows.len() < SHEET_ROWS && outcome.attempts.iter().any(|t| t.repaint.is_some()) {
            rows.push(sheet_row(&plantain_world::render(&scene, native, native), &outcome));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!("{}", table(&cols, a.scenes, native, a.steps));
    if let Some(path) = &a.sheet {
        crate::eval_photos::sheet(&rows, 128).save(path).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("contact sheet: {}", path.display());
    }
    if unread > 0 {
        println!("\n{unread} caption(s) were not read as world scenes by the planner (their scene check did not run).");
    }
    Ok(())
}

/// Scenes on the contact sheet.
const SHEET_ROWS: usize = 8;

/// The true scene, then each attempt's picture framed: green for the kept one, white else.
fn sheet_row(truth: &image::RgbImage, outcome: &plantain_director::generate::Outcome) -> Vec<image::RgbImage> {
    let framed = |im: &image::RgbImage, colour: [u8; 3]| {
        let mut f = image::RgbImage::from_pixel(im.width() + 6, im.height() + 6, image::Rgb(colour));
        image::imageops::replace(&mut f, im, 3, 3);
        f
    };
    let mut row = vec![framed(truth, [255, 255, 255])];
    for (k, t) in outcome.attempts.iter().enumerate() {
        row.push(framed(&t.image, if k == outcome.best { [0, 170, 60] } else { [255, 255, 255] }));
    }
    row
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn table(cols: &[Column], scenes: usize, size: u32, steps: usize) -> String {
    let mut out = format!(
        "plan → check → correct on {scenes} held-out scenes ({size}x{size}, {steps} steps, caption_plain prompts), judged against the true scene\n\n"
    );
    out.push_str("| attribute |");
    out.extend(cols.iter().map(|c| format!(" {} attempt{} |", c.budget, if c.budget == 1 { "" } else { "s" })));
    out.push_str("\n|---|");
    out.extend(cols.iter().map(|_| "---|"));
    for (k, (name, _)) in cols[0].acc.rows().iter().enumerate() {
        out.push_str(&format!("\n| {name} |"));
        for c in cols {
            let t = c.acc.rows()[k].1;
            out.push_str(&format!(" {:.1}% ({}/{}) |", t.percent(), t.correct, t.total));
        }
    }
    out.push_str("\n| attempts made, mean |");
    out.extend(
        cols.iter().map(|c| format!(" {:.2} |", c.attempts_used.iter().sum::<usize>() as f64 / c.attempts_used.len().max(1) as f64)),
    );
    out.push_str("\n| seconds per picture, median |");
    out.extend(cols.iter().map(|c| format!(" {:.2} |", median(&c.secs))));
    out.push_str("\n| seconds per picture, mean |");
    out.extend(cols.iter().map(|c| format!(" {:.2} |", c.secs.iter().sum::<f64>() / c.secs.len().max(1) as f64)));
    out
}
