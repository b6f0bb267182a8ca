//! Measuring the checker (shared by the crate's tests and `examples/world_check_eval.rs`):
//! degradations of rendered images (blur, noise), mutations of scenes (wrong images) and
//! per-attribute tallies.

use std::fmt;

use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::check::{CheckReport, check};
use crate::render::render;
use crate::sample::{Split, color_fits_background, sample_scene, validate};
use crate::scene::{Background, ColorName, HPos, Scene, Shape, VPos};

/// What is done to a rendered image before checking it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Degradation {
    None,
    /// Gaussian blur (sigma 0.7 px at a 64 px short side, growing gently with size) and Gaussian
    /// noise (sigma 6 per channel): roughly what a small diffusion model's output looks like.
    BlurNoise,
    /// Worse than a decent model's output: a smooth geometric wobble (up to ~1 px at 64 px),
    /// blur sigma 1.1 px, a colour cast of up to 15 per channel and noise sigma 10.
    Strong,
}

/// Applies the degradation (deterministic for the seed).
pub fn degrade(image: &RgbImage, degradation: Degradation, seed: u64) -> RgbImage {
    match degradation {
        Degradation::None => image.clone(),
        Degradation::BlurNoise => {
            let short = image.width().min(image.height()) as f32;
            let sigma = 0.7 * (short / 64.0).max(1.0).powf(0.25);
            let mut out = blur(image, sigma);
            add_noise(&mut out, 6.0, seed);
            out
        }
        Degradation::Strong => {
            let short = image.width().min(image.height()) as f32;
            let scale = (short / 64.0).max(1.0);
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
            let mut out = wobble(image, 1.0 * scale, &mut rng);
            out = blur(&out, 1.1 * scale.powf(0.25));
            let cast: [f32; 3] = std::array::from_fn(|_| rng.random_range(-15.0..=15.0));
            for p in out.pixels_mut() {
                for (c, shift) in p.0.iter_mut().zip(cast) {
                    *c = (*c as f32 + shift).round().clamp(0.0, 255.0) as u8;
                }
            }
            add_noise(&mut out, 10.0, seed);
            out
        }
    }
}

/// Resamples the image through a smooth random displacement field of the given amplitude
/// (pixels): shapes keep their identity but lose their exact geometry.
fn wobble(image: &RgbImage, amplitude: f32, rng: &mut impl Rng) -> RgbImage {
    let (w, h) = image.dimensions();
    let waves: Vec<[f32; 4]> = (0..4)
        .map(|_| {
            [
                rng.random_range(1.0..3.0),
                rng.random_range(1.0..3.0),
                rng.random_range(0.0..std::f32::consts::TAU),
                rng.random_range(0.0..std::f32::consts::TAU),
            ]
        })
        .collect();
    let field = |x: f32, y: f32, k: usize| {
        let [fx, fy, px, py] = waves[k];
        let (u, v) = (x / w as f32 * std::f32::consts::TAU, y / h as f32 * std::f32::consts::TAU);
        amplitude * 0.5 * ((fx * v + px).sin() + (fy * u + py).sin())
    };
    let sample = |x: f32, y: f32, ch: usize| {
        let (x, y) = (x.clamp(0.0, w as f32 - 1.0), y.clamp(0.0, h as f32 - 1.0));
        let (x0, y0) = (x.floor() as u32, y.floor() as u32);
        let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
        let (ax, ay) = (x - x0 as f32, y - y0 as f32);
        let g = |x, y| image.get_pixel(x, y).0[ch] as f32;
        (g(x0, y0) * (1.0 - ax) + g(x1, y0) * ax) * (1.0 - ay) + (g(x0, y1) * (1.0 - ax) + g(x1, y1) * ax) * ay
    };
    RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32, y as f32);
        let (dx, dy) = (field(fx, fy, 0) + field(fx, fy, 2), field(fx, fy, 1) + field(fx, fy, 3));
        image::Rgb(std::array::from_fn(|ch| sample(fx + dx, fy + dy, ch).round().clamp(0.0, 255.0) as u8))
    })
}

/// Gaussian blur of every channel (separable; edges clamp).
pub fn blur(image: &RgbImage, sigma: f32) -> RgbImage {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let channels: Vec<Vec<f32>> =
        (0..3).map(|ch| crate::check::gaussian_blur(&image.pixels().map(|p| p.0[ch] as f32).collect::<Vec<_>>(), w, h, sigma)).collect();
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let i = y as usize * w + x as usize;
        image::Rgb(std::array::from_fn(|ch| channels[ch][i].round().clamp(0.0, 255.0) as u8))
    })
}

/// Adds Gaussian noise of standard deviation `sigma` to every channel.
pub fn add_noise(image: &mut RgbImage, sigma: f32, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for p in image.pixels_mut() {
        for c in p.0.iter_mut() {
            // Box–Muller.
            let (u1, u2): (f32, f32) = (rng.random_range(f32::EPSILON..1.0), rng.random());
            let n = (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
            *c = (*c as f32 + sigma * n).round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// Correct / total for each checked attribute.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub scenes: usize,
    pub background: (usize, usize),
    pub count: (usize, usize),
    pub found: (usize, usize),
    pub color: (usize, usize),
    pub shape: (usize, usize),
    pub position: (usize, usize),
    pub relations: (usize, usize),
    /// Scenes with everything right.
    pub all: (usize, usize),
    /// A line per scene with anything wrong.
    pub failures: Vec<String>,
}

fn add(slot: &mut (usize, usize), ok: bool) {
    slot.0 += ok as usize;
    slot.1 += 1;
}

fn ratio(slot: (usize, usize)) -> f64 {
    if slot.1 == 0 { 1.0 } else { slot.0 as f64 / slot.1 as f64 }
}

impl Tally {
    pub fn record(&mut self, scene: &Scene, report: &CheckReport) {
        self.scenes += 1;
        add(&mut self.background, report.background);
        add(&mut self.count, report.count);
        for o in &report.objects {
            add(&mut self.found, o.found);
            add(&mut self.color, o.color);
            add(&mut self.shape, o.shape);
            add(&mut self.position, o.position);
        }
        for &r in &report.relations {
            add(&mut self.relations, r);
        }
        add(&mut self.all, report.all_correct());
        if !report.all_correct() {
            self.failures.push(describe_failure(scene, report));
        }
    }

    /// (name, accuracy) for every attribute.
    pub fn accuracies(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("background", ratio(self.background)),
            ("count", ratio(self.count)),
            ("found", ratio(self.found)),
            ("color", ratio(self.color)),
            ("shape", ratio(self.shape)),
            ("position", ratio(self.position)),
            ("relations", ratio(self.relations)),
        ]
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} scenes:", self.scenes)?;
        for (name, acc) in self.accuracies() {
            write!(f, " {name} {:.1}%", 100.0 * acc)?;
        }
        write!(f, " | all {:.1}%", 100.0 * ratio(self.all))
    }
}

fn describe_failure(scene: &Scene, report: &CheckReport) -> String {
    let objects: Vec<String> =
        scene.objects.iter().map(|o| format!("{:?} {:?} {:?} {:?}/{:?}", o.size, o.color, o.shape, o.h, o.v)).collect();
    let found: Vec<String> = report
        .components
        .iter()
        .map(|c| format!("{:?} {:?} {:?} rgb {:?} (margin {:.1})", c.color, c.shape, c.cell, c.rgb, c.shape_margin))
        .collect();
    format!("scene {:?} [{}] -> detected {:?} [{}]", scene.background, objects.join("; "), report.detected_background, found.join("; "))
}

/// Renders `scenes` sampled scenes (train and held-out alternately) at `width` x `height`,
/// degrades them and tallies the checker's verdicts.
pub fn evaluate_ground_truth(scenes: usize, width: u32, height: u32, degradation: Degradation, seed: u64) -> Tally {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut tally = Tally::default();
    for i in 0..scenes {
        let split = if i % 2 == 0 { Split::Train } else { Split::HeldOut };
        let scene = sample_scene(&mut rng, split);
        let image = degrade(&render(&scene, width, height), degradation, seed ^ i as u64);
        tally.record(&scene, &check(&scene, &image));
    }
    tally
}

/// A deliberate error in a rendered scene.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    Background,
    Color(usize),
    Shape(usize),
    Move(usize),
    Remove(usize),
    Extra,
}

impl Mutation {
    /// Whether the report flags this mutation where it should.
    pub fn flagged_by(self, report: &CheckReport) -> bool {
        match self {
            Mutation::Background => !report.background,
            Mutation::Color(i) => !report.objects[i].color,
            Mutation::Shape(i) => !report.objects[i].shape,
            Mutation::Move(i) => !report.objects[i].position,
            Mutation::Remove(_) | Mutation::Extra => !report.count,
        }
    }
}

/// The scene with one deliberate error; `None` when that error cannot be made valid (e.g. no
/// free cell).
pub fn mutate(scene: &Scene, mutation: Mutation, rng: &mut impl Rng) -> Option<Scene> {
    let pick_color = |rng: &mut dyn rand::RngCore| ColorName::ALL[rng.random_range(0..ColorName::ALL.len())];
    for _ in 0..50 {
        let mut out = scene.clone();
        match mutation {
            Mutation::Background => {
                out.background = match scene.background {
                    Background::Solid(_) => Background::Solid(pick_color(rng)),
                    Background::Split { sky, ground } => {
                        if rng.random_bool(0.5) {
                            Background::Split { sky: pick_color(rng), ground }
                        } else {
                            Background::Split { sky, ground: pick_color(rng) }
                        }
                    }
                };
                if out.background == scene.background {
                    continue;
                }
            }
            Mutation::Color(i) => {
                out.objects[i].color = pick_color(rng);
                if out.objects[i].color == scene.objects[i].color {
                    continue;
                }
            }
            Mutation::Shape(i) => {
                out.objects[i].shape = Shape::ALL[rng.random_range(0..Shape::ALL.len())];
                if out.objects[i].shape == scene.objects[i].shape {
                    continue;
                }
            }
            Mutation::Move(i) => {
                out.objects[i].h = HPos::ALL[rng.random_range(0..3)];
                out.objects[i].v = VPos::ALL[rng.random_range(0..3)];
                if out.objects[i].cell() == scene.objects[i].cell() {
                    continue;
                }
            }
            Mutation::Remove(i) => {
                out.objects.remove(i);
            }
            Mutation::Extra => {
                let mut extra = scene.objects[0];
                extra.h = HPos::ALL[rng.random_range(0..3)];
                extra.v = VPos::ALL[rng.random_range(0..3)];
                extra.shape = Shape::ALL[rng.random_range(0..Shape::ALL.len())];
                extra.color = pick_color(rng);
                extra.jitter = (0.0, 0.0);
                out.objects.push(extra);
            }
        }
        out.relations = Scene::relations_from_cells(&out.objects);
        let valid = match mutation {
            // The wrong image still has to be a fair picture: objects apart and visible.
            Mutation::Remove(_) => true,
            _ => out.objects.len() <= 3 && validate(&out).is_ok(),
        };
        let visible = out.objects.iter().all(|o| color_fits_background(o.color, out.background, o.v));
        if valid && visible {
            return Some(out);
        }
    }
    None
}

/// Per mutation kind: (flagged, total). Renders `scenes` scenes with one random mutation each
/// and checks them against the original scene.
pub fn evaluate_mutations(scenes: usize, width: u32, height: u32, degradation: Degradation, seed: u64) -> MutationTally {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut tally = MutationTally::default();
    let mut made = 0;
    while made < scenes {
        let scene = sample_scene(&mut rng, if made % 2 == 0 { Split::Train } else { Split::HeldOut });
        let n = scene.objects.len();
        let i = rng.random_range(0..n);
        let mutation = match made % 6 {
            0 => Mutation::Background,
            1 => Mutation::Color(i),
            2 => Mutation::Shape(i),
            3 => Mutation::Move(i),
            4 => Mutation::Remove(i),
            _ => Mutation::Extra,
        };
        let Some(wrong) = mutate(&scene, mutation, &mut rng) else { continue };
        let image = degrade(&render(&wrong, width, height), degradation, seed ^ made as u64);
        let report = check(&scene, &image);
        let flagged = mutation.flagged_by(&report);
        let slot = tally.kinds.iter_mut().find(|(k, _, _)| std::mem::discriminant(k) == std::mem::discriminant(&mutation));
        match slot {
            Some(s) => {
                s.1 += flagged as usize;
                s.2 += 1;
            }
            None => tally.kinds.push((mutation, flagged as usize, 1)),
        }
        if !flagged {
            tally.failures.push(format!("{mutation:?} not flagged: {}", describe_failure(&wrong, &report)));
        }
        made += 1;
    }
    tally
}

#[derive(Clone, Debug, Default)]
pub struct MutationTally {
    /// (a mutation of that kind, flagged, total).
    pub kinds: Vec<(Mutation, usize, usize)>,
    pub failures: Vec<String>,
}

impl MutationTally {
    pub fn flagged_ratio(&self) -> f64 {
        let (f, t) = self.kinds.iter().fold((0, 0), |acc, k| (acc.0 + k.1, acc.1 + k.2));
        if t == 0 { 1.0 } else { f as f64 / t as f64 }
    }
}

impl fmt::Display for MutationTally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flagged {:.1}% overall:", 100.0 * self.flagged_ratio())?;
        for (kind, flagged, total) in &self.kinds {
            let name = format!("{kind:?}");
            let name = name.split('(').next().unwrap_or("");
            write!(f, " {name} {flagged}/{total}")?;
        }
        Ok(())
    }
}
