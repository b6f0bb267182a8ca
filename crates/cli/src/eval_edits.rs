//! `plantain eval edits`: every kind of edit the synthetic world can express, on rendered
//! scenes, judged by the world's scene checker — did the asked change happen, is every object
//! not named unchanged, and did any pixel outside the plan's region move (must be none).
//! Wordings come in two sets: those the planner was written against ("dev") and phrasings
//! written afterwards for this evaluation only ("held-out").

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use plantain_director::edit::{EditOptions, EditPlan, Edited, plan};
use plantain_engine::pipeline::{GenerateRequest, Pipeline};
use plantain_world::{Background, ColorName, HPos, Object, Scene, Shape, Split, VPos, analyse, check, render, sample_scene};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::generate::{LoadSpec, generate_with_bar, load_pipeline, resolve_model};

#[derive(clap::Args)]
pub struct Args {
    /// The model that paints (add, outpaint).
    #[arg(long, short, default_value = "plantain-nano")]
    pub model: String,
    /// Scenes per operation and wording set.
    #[arg(long, default_value_t = 20)]
    pub scenes: usize,
    /// Side of the rendered scenes, pixels.
    #[arg(long, default_value_t = 384)]
    pub size: u32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Only the operations whose name contains this ("add", "fuse", …).
    #[arg(long)]
    pub only: Option<String>,
    /// Write each input and output here (PNG).
    #[arg(long)]
    pub save: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Recolor,
    Remove,
    Background,
    Warmer,
    Cooler,
    Add,
    Fuse,
    Outpaint,
}

const OPS: [Op; 8] = [Op::Recolor, Op::Remove, Op::Background, Op::Warmer, Op::Cooler, Op::Add, Op::Fuse, Op::Outpaint];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Recolor => "recolour an object",
            Op::Remove => "remove an object",
            Op::Background => "background colour",
            Op::Warmer => "warmer light",
            Op::Cooler => "cooler light",
            Op::Add => "add an object (colour and place)",
            Op::Fuse => "fuse an object from a second scene",
            Op::Outpaint => "outpaint to 16:9",
        }
    }

    /// (dev wordings, held-out wordings); {c} colour, {s} shape, {n} new colour, {p} place.
    fn wordings(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Op::Recolor => (
                &["make the {c} {s} {n}", "turn the {c} {s} {n}"],
                &["could you paint the {c} {s} {n}?", "change the colour of the {c} {s} to {n}", "recolor the {c} {s} in {n}"],
            ),
            Op::Remove => (
                &["remove the {c} {s}", "delete the {c} {s}"],
                &["get rid of the {c} {s}", "erase that {c} {s} please", "take away the {c} {s}"],
            ),
            Op::Background => (
                &["make the background {n}", "change the background to {n}"],
                &["I want a {n} backdrop", "swap the background for a plain {n} one", "set the background to {n}"],
            ),
            Op::Warmer => (
                &["make it warmer", "make the lighting warmer"],
                &["warm up the lighting", "give it a cozier, warm tone", "a warmer look please"],
            ),
            Op::Cooler => (
                &["make it cooler", "make the lighting cooler"],
                &["cool the colours down", "a colder look please", "make the light feel chilly"],
            ),
            Op::Add => (
                &["add a {n} {s} at the {p}", "put a {n} {s} at the {p}"],
                &["place a {n} {s} in the {p}", "could you draw a {n} {s} at the {p}?", "insert a {n} {s} on the {p}"],
            ),
            Op::Fuse => (
                &["put the subject of image 1 into the scene of image 2, on the {p}"],
                &[
                    "place the object from image 1 into image 2 on the {p}",
                    "move image 1's shape onto image 2, {p}",
                    "bring the thing in the first image into the second image at the {p}",
                ],
            ),
            Op::Outpaint => (&["extend the scene"], &["widen the picture", "zoom out and extend the background", "expand the canvas"]),
        }
    }
}

/// The place words for a cell.
fn place(h: HPos, v: VPos) -> &'static str {
    match (v, h) {
        (VPos::Top, HPos::Left) => "top left",
        (VPos::Top, HPos::Center) => "top",
        (VPos::Top, HPos::Right) => "top right",
        (VPos::Middle, HPos::Left) => "left",
        (VPos::Middle, HPos::Center) => "centre",
        (VPos::Middle, HPos::Right) => "right",
        (VPos::Bottom, HPos::Left) => "bottom left",
        (VPos::Bottom, HPos::Center) => "bottom",
        (VPos::Bottom, HPos::Right) => "bottom right",
    }
}

/// A colour no object or background part of `scene` uses and none is confused with.
fn free_color(scene: &Scene, rng: &mut impl Rng) -> ColorName {
    let used: Vec<ColorName> = scene.objects.iter().map(|o| o.color).chain([scene.background.sky(), scene.background.ground()]).collect();
    let free: Vec<ColorName> =
        ColorName::ALL.into_iter().filter(|c| used.iter().all(|u| u != c && !u.confusable_with(*c) && !c.confusable_with(*u))).collect();
    free[rng.random_range(0..free.len())]
}

/// A free cell of the 3x3 grid.
fn free_cell(scene: &Scene, rng: &mut impl Rng) -> (HPos, VPos) {
    let cells: Vec<(HPos, VPos)> = HPos::ALL
        .into_iter()
        .flat_map(|h| VPos::ALL.into_iter().map(move |v| (h, v)))
        .filter(|c| scene.objects.iter().all(|o| o.cell() != *c))
        .collect();
    cells[rng.random_range(0..cells.len())]
}

fn with_objects(scene: &Scene, objects: Vec<Object>) -> Scene {
    let relations = Scene::relations_from_cells(&objects);
    Scene { objects, relations, ..scene.clone() }
}

/// One case: the pictures, the words, and the scene the result must show.
struct Case {
    images: Vec<image::RgbImage>,
    text: String,
    want: Scene,
    /// Index in `want.objects` of the object the edit names (added / recoloured), if any.
    named: Option<usize>,
}

fn fill(template: &str, c: ColorName, s: Shape, n: ColorName, p: &str) -> String {
    template.replace("{c}", c.word()).replace("{s}", s.word()).replace("{n}", n.word()).replace("{p}", p)
}

fn make_case(op: Op, template: &str, rng: &mut ChaCha8Rng, size: u32) -> Option<Case> {
    let scene = sample_scene(rng, Split::Train);
    let image = render(&scene, size, size);
    let o = scene.objects.first().copied()?;
    // The named object must be the only one of its colour and shape.
    if scene.objects.iter().filter(|x| x.color == o.color && x.shape == o.shape).count() > 1 {
        return None;
    }
    let n = free_color(&scene, rng);
    let (h, v) = free_cell(&scene, rng);
    let text = fill(template, o.color, o.shape, n, place(h, v));
    let case = |images, want, named| Some(Case { images, text: text.clone(), want, named });
    match op {
        Op::Recolor => {
            let mut objects = scene.objects.clone();
            objects[0].color = n;
            case(vec![image], with_objects(&scene, objects), Some(0))
        }
        Op::Remove => case(vec![image], with_objects(&scene, scene.objects[1..].to_vec()), None),
        Op::Background => case(vec![image], Scene { background: Background::Solid(n), ..scene.clone() }, None),
        Op::Warmer | Op::Cooler | Op::Outpaint => case(vec![image], scene.clone(), None),
        Op::Add => {
            let mut objects = scene.objects.clone();
            objects.push(Object { shape: o.shape, color: n, h, v, jitter: (0.0, 0.0), ..o });
            let named = objects.len() - 1;
            case(vec![image], with_objects(&scene, objects), Some(named))
        }
        Op::Fuse => {
            let donor = sample_scene(rng, Split::Train);
            let d = donor.objects.iter().max_by(|a, b| a.size.extent().total_cmp(&b.size.extent())).copied()?;
            // An object the colour of the scene's background would be invisible there.
            let behind = [scene.background.sky(), scene.background.ground()];
            if behind.iter().any(|b| *b == d.color || b.confusable_with(d.color) || d.color.confusable_with(*b)) {
                return None;
            }
            // Nor may it look like one of the scene's own objects.
            if scene.objects.iter().any(|x| x.color == d.color && x.shape == d.shape) {
                return None;
            }
            let donor_image = render(&Scene { objects: vec![d], relations: vec![], ..donor.clone() }, size, size);
            let mut objects = scene.objects.clone();
            objects.push(Object { h, v, jitter: (0.0, 0.0), ..d });
            let named = objects.len() - 1;
            Some(Case { images: vec![donor_image, image], text, want: with_objects(&scene, objects), named: Some(named) })
        }
    }
}

/// The verdicts on one output.
struct Verdict {
    done: bool,
    others_unchanged: bool,
    outside_changed: u64,
}

fn judge(op: Op, case: &Case, out: &Edited) -> Verdict {
    let img = &out.image;
    let outside_changed = out.report.outside_changed.unwrap_or(u64::MAX);
    if op == Op::Outpaint {
        let a = analyse(img);
        let done = img.width() > img.height() && a.background == case.want.background && a.components.len() == case.want.objects.len();
        return Verdict { done, others_unchanged: a.components.len() == case.want.objects.len(), outside_changed };
    }
    let r = check(&case.want, img);
    let ok = |i: usize| r.objects.get(i).is_some_and(|o| o.found && o.color && o.shape && o.position);
    let others_unchanged = (0..case.want.objects.len()).filter(|&i| Some(i) != case.named).all(ok);
    let done = match op {
        Op::Recolor | Op::Fuse => case.named.is_some_and(ok),
        // Colour and place (plantain-nano draws shapes at chance).
        Op::Add => case.named.is_some_and(|i| r.objects.get(i).is_some_and(|o| o.found && o.color && o.position)),
        Op::Remove => r.count && r.background,
        Op::Background => r.background,
        Op::Warmer | Op::Cooler => {
            let before = warmth(&case.images[0]);
            let after = warmth(img);
            if op == Op::Warmer { after > before + 8.0 } else { after < before - 8.0 }
        }
        Op::Outpaint => unreachable!(),
    };
    Verdict { done, others_unchanged, outside_changed }
}

/// Mean red minus blue.
fn warmth(img: &image::RgbImage) -> f64 {
    img.pixels().map(|p| f64::from(p.0[0]) - f64::from(p.0[2])).sum::<f64>() / f64::from(img.width() * img.height())
}

fn paint(pipeline: &Pipeline, plan: &EditPlan, seed: u64) -> Result<Option<image::RgbImage>> {
    let Some(p) = plan.paint_request() else { return Ok(None) };
    let (w, h) = p.image.dimensions();
    let mut req = GenerateRequest::new(p.prompt.clone(), w, h);
    req.negative_prompt = p.negative.clone();
    req.steps = 20;
    req.guidance = 2.0;
    req.seed = seed;
    req.init_image = Some(p.image.clone());
    req.mask = p.mask.clone();
    req.strength = p.strength;
    Ok(Some(generate_with_bar(pipeline, &req)?.image))
}

#[derive(Default)]
struct Tally {
    n: usize,
    done: usize,
    others: usize,
    outside_bad: usize,
    refused: usize,
    ms: Vec<f64>,
}

pub fn run(a: Args) -> Result<()> {
    let resolved = resolve_model(&a.model)?;
    let pipeline = load_pipeline(&resolved, &LoadSpec { threads: a.threads, ..Default::default() })?;
    if let Some(d) = &a.save {
        std::fs::create_dir_all(d)?;
    }
    let opts = EditOptions { aspect: Some(plantain_core::AspectRatio::R16x9), ..Default::default() };
    println!(
        "| operation | wordings | cases | asked change done | objects not named unchanged | outputs with a pixel changed outside the region | refused | median time |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for op in OPS.into_iter().filter(|op| a.only.as_ref().is_none_or(|o| op.name().contains(o.as_str()))) {
        let (dev, held) = op.wordings();
        for (set, templates) in [("dev", dev), ("held-out", held)] {
            let mut rng = ChaCha8Rng::seed_from_u64(a.seed ^ (op as u64 * 7919) ^ (set.len() as u64 * 104_729));
            let mut t = Tally::default();
            while t.n < a.scenes {
                let template = templates[t.n % templates.len()];
                let Some(case) = make_case(op, template, &mut rng, a.size) else { continue };
                t.n += 1;
                let started = Instant::now();
                let edited = plan(&case.text, &case.images, &opts, None)
                    .map_err(anyhow::Error::from)
                    .and_then(|p| Ok(p.finish(paint(&pipeline, &p, a.seed + t.n as u64)?)?));
                t.ms.push(started.elapsed().as_secs_f64() * 1000.0);
                let Ok(out) = edited else {
                    t.refused += 1;
                    eprintln!("refused [{}] {:?}: {}", op.name(), case.text, edited.err().map(|e| e.to_string()).unwrap_or_default());
                    continue;
                };
                let v = judge(op, &case, &out);
                t.done += usize::from(v.done);
                t.others += usize::from(v.others_unchanged);
                t.outside_bad += usize::from(v.outside_changed > 0);
                if let Some(d) = &a.save {
                    let stem = format!("{}-{set}-{:03}-{}", op.name().replace(' ', "_"), t.n, if v.done { "ok" } else { "miss" });
                    out.image.save(d.join(format!("{stem}.png")))?;
                    case.images.last().expect("an input").save(d.join(format!("{stem}-in.png")))?;
                }
            }
            t.ms.sort_by(f64::total_cmp);
            let pct = |k: usize| 100.0 * k as f64 / t.n.max(1) as f64;
            println!(
                "| {} | {set} | {} | {:.0}% | {:.0}% | {} | {} | {:.0} ms |",
                op.name(),
                t.n,
                pct(t.done),
                pct(t.others),
                t.outside_bad,
                t.refused,
                t.ms.get(t.ms.len() / 2).copied().unwrap_or(0.0)
            );
        }
    }
    Ok(())
}
