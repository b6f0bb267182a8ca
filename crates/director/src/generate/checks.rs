//! The checks an attempt goes through. Each says pass, fail or "not checked, because …", with
//! a score in [0, 1] (how much of it was right) and a line for the report.

use image::RgbImage;
use plantain_world::check;
use serde::{Deserialize, Serialize};

use super::plan::Plan;
use crate::edit::regions::FoundBy;
use crate::edit::words::Operation;
use crate::edit::{EditPlan, PlanReport};

/// What a check looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// The output has exactly the pixels asked for.
    Size,
    /// Not blank, flat or broken (no model output that is one colour).
    NotBlank,
    /// The synthetic world's scene checker against the plan's scene.
    Scene,
    /// Quoted text read back by OCR, compared exactly.
    Text,
    /// No-reference image quality (BRISQUE).
    Quality,
    /// Prompt adherence by an image–text score (CLIP).
    Adherence,
    /// An edit: no pixel changed outside the region its plan allowed.
    Locality,
    /// An edit: what it asked the model to paint is there (the synthetic world's analysis).
    AskedChange,
}

impl CheckKind {
    pub fn name(self) -> &'static str {
        match self {
            CheckKind::Size => "exact size",
            CheckKind::NotBlank => "not blank",
            CheckKind::Scene => "scene",
            CheckKind::Text => "text",
            CheckKind::Quality => "quality",
            CheckKind::Adherence => "prompt adherence",
            CheckKind::Locality => "edit locality",
            CheckKind::AskedChange => "asked change",
        }
    }
}

/// A check's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// Not checked, and why (no model for it, nothing to check).
    NotChecked {
        because: String,
    },
}

/// One check of one attempt.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Check {
    pub kind: CheckKind,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// How much was right, 0..1 (1 for a pass; 0 for a not-checked, which the score ignores).
    pub score: f32,
    pub detail: String,
}

impl Check {
    pub fn pass(kind: CheckKind, detail: impl Into<String>) -> Check {
        Check { kind, verdict: Verdict::Pass, score: 1.0, detail: detail.into() }
    }
    pub fn fail(kind: CheckKind, score: f32, detail: impl Into<String>) -> Check {
        Check { kind, verdict: Verdict::Fail, score: score.clamp(0.0, 1.0), detail: detail.into() }
    }
    pub fn not_checked(kind: CheckKind, because: impl Into<String>) -> Check {
        let because = because.into();
        Check { kind, verdict: Verdict::NotChecked { because: because.clone() }, score: 0.0, detail: because }
    }
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Pass
    }
    pub fn failed(&self) -> bool {
        self.verdict == Verdict::Fail
    }
    /// "scene: fail (2 of 3 objects right; …)".
    pub fn line(&self) -> String {
        let v = match &self.verdict {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::NotChecked { .. } => "not checked",
        };
        format!("{}: {v} — {}", self.kind.name(), self.detail)
    }
}

/// A model that scores image quality (lower = better, BRISQUE's scale) — plugged in by the
/// front end when one is installed.
pub trait QualityScorer: Send + Sync {
    fn score(&self, image: &RgbImage) -> Result<f32, String>;
}

/// An image–text adherence scorer (CLIP): the cosine similarity of the picture's and the
/// text's embeddings, in [-1, 1].
pub trait AdherenceScorer: Send + Sync {
    fn cosine(&self, image: &RgbImage, text: &str) -> Result<f32, String>;
}

/// What the checks can use besides the picture.
pub struct Checkers<'a> {
    pub quality: Option<&'a dyn QualityScorer>,
    /// BRISQUE score above which quality fails.
    pub quality_limit: f32,
    /// CLIP, when the user has a model.
    pub adherence: Option<&'a dyn AdherenceScorer>,
    /// The cosine below which adherence fails.
    pub adherence_limit: f32,
    /// Why there is no scorer when one was asked for (a model that did not load).
    pub adherence_unavailable: Option<String>,
    /// Typesetting and OCR for quoted text.
    pub text: super::text::TextTools<'a>,
}

impl Default for Checkers<'_> {
    fn default() -> Self {
        Checkers {
            quality: None,
            quality_limit: DEFAULT_QUALITY_LIMIT,
            adherence: None,
            adherence_limit: DEFAULT_ADHERENCE_LIMIT,
            adherence_unavailable: None,
            text: Default::default(),
        }
    }
}

impl<'a> Checkers<'a> {
    /// The checks with a quality scorer, when one is installed.
    pub fn with_quality(quality: Option<&'a dyn QualityScorer>) -> Self {
        Checkers { quality, ..Default::default() }
    }
}

/// The BRISQUE score above which a picture fails the quality check (LIVE's scale: clean
/// photographs score about 10–40, heavy noise or blur 60 and more).
pub const DEFAULT_QUALITY_LIMIT: f32 = 60.0;

/// The CLIP cosine below which a picture fails the adherence check (CLIPScore 18). With
/// ViT-L/14, pictures and the captions they were made from score about 0.22–0.35, unrelated
/// pairs about 0.05–0.15: a floor that catches a picture of something else, not a ranking.
pub const DEFAULT_ADHERENCE_LIMIT: f32 = 0.18;

/// Runs every check on `image` for `plan`.
pub fn run_checks(plan: &Plan, image: &RgbImage, checkers: &Checkers<'_>) -> Vec<Check> {
    let mut out = vec![size(plan, image), not_blank(image), scene(plan, image)];
    out.push(quality(plan, image, checkers));
    out.push(adherence(plan, image, checkers));
    out
}

fn size(plan: &Plan, image: &RgbImage) -> Check {
    let (w, h) = image.dimensions();
    if (w, h) == plan.size {
        Check::pass(CheckKind::Size, format!("{w}x{h}"))
    } else {
        Check::fail(CheckKind::Size, 0.0, format!("{w}x{h}, asked {}x{}", plan.size.0, plan.size.1))
    }
}

/// Standard deviation of the luminance below which a picture counts as flat (8-bit levels).
const FLAT_STD: f64 = 2.0;

fn not_blank(image: &RgbImage) -> Check {
    let n = image.pixels().len().max(1) as f64;
    let luma = |p: &image::Rgb<u8>| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]);
    let mean = image.pixels().map(luma).sum::<f64>() / n;
    let std = (image.pixels().map(|p| (luma(p) - mean).powi(2)).sum::<f64>() / n).sqrt();
    if std >= FLAT_STD {
        Check::pass(CheckKind::NotBlank, format!("luminance spread {std:.1} levels"))
    } else {
        Check::fail(CheckKind::NotBlank, 0.0, format!("flat picture (luminance spread {std:.2} levels, mean {mean:.0})"))
    }
}

fn scene(plan: &Plan, image: &RgbImage) -> Check {
    let Some(world) = &plan.world else {
        return Check::not_checked(
            CheckKind::Scene,
            "the prompt is not in the synthetic world's words (the scene checker judges only those)",
        );
    };
    let report = check(&world.scene, image);
    let s = &world.stated;
    let objects = &report.objects;
    let mut right = u32::from(report.background) + u32::from(report.count);
    let mut total = 2u32;
    for (i, o) in objects.iter().enumerate() {
        let position_stated = s.absolute.get(i).copied().unwrap_or(true);
        right += u32::from(o.found && o.color) + u32::from(o.found && o.shape) + u32::from(position_stated && o.found && o.position);
        total += 2 + u32::from(position_stated);
    }
    right += s.relations.iter().filter(|&&r| report.relations.get(r).copied().unwrap_or(false)).count() as u32;
    total += s.relations.len() as u32;
    let detail = format!("{right} of {total} stated attributes right ({})", describe_misses(plan, &report));
    if report.satisfies(s) {
        Check::pass(CheckKind::Scene, format!("{right} of {total} stated attributes right"))
    } else {
        Check::fail(CheckKind::Scene, right as f32 / total as f32, detail)
    }
}

/// The CLIP score of the picture against what the model was asked to draw (the prompt without
/// its quoted text, which is typeset and read back instead).
fn adherence(plan: &Plan, image: &RgbImage, checkers: &Checkers<'_>) -> Check {
    let Some(clip) = checkers.adherence else {
        if let Some(why) = &checkers.adherence_unavailable {
            return Check::not_checked(CheckKind::Adherence, why.clone());
        }
        return Check::not_checked(
            CheckKind::Adherence,
            "no CLIP model is configured ([checks] clip_model or --clip-model: a local copy of openai/clip-vit-large-patch14)",
        );
    };
    if plan.draw_prompt.trim().is_empty() {
        return Check::not_checked(CheckKind::Adherence, "the prompt has nothing to draw besides its quoted text");
    }
    match clip.cosine(image, &plan.draw_prompt) {
        Ok(cos) if cos >= checkers.adherence_limit => {
            Check::pass(CheckKind::Adherence, format!("CLIP cosine {cos:.3} ≥ {:.2}", checkers.adherence_limit))
        }
        Ok(cos) => Check::fail(
            CheckKind::Adherence,
            (cos / checkers.adherence_limit).clamp(0.0, 1.0),
            format!("CLIP cosine {cos:.3} < {:.2}", checkers.adherence_limit),
        ),
        Err(e) => Check::not_checked(CheckKind::Adherence, format!("the CLIP model failed: {e}")),
    }
}

/// "background wrong; red star: shape, position".
fn describe_misses(plan: &Plan, r: &plantain_world::CheckReport) -> String {
    let Some(world) = &plan.world else { return String::new() };
    let mut misses = Vec::new();
    if !r.background {
        misses.push("background wrong".to_string());
    }
    if !r.count {
        misses.push(format!("{} objects found, {} asked", r.components.len(), world.scene.objects.len()));
    }
    for (o, c) in world.scene.objects.iter().zip(&r.objects) {
        let mut what = Vec::new();
        if !c.found {
            what.push("not found");
        } else {
            if !c.color {
                what.push("colour");
            }
            if !c.shape {
                what.push("shape");
            }
        }
        if !what.is_empty() {
            misses.push(format!("{} {}: {}", o.color.word(), o.shape.word(), what.join(", ")));
        }
    }
    if misses.is_empty() { "positions or relations".into() } else { misses.join("; ") }
}

fn quality(plan: &Plan, image: &RgbImage, c: &Checkers<'_>) -> Check {
    if plan.world.is_some() {
        return Check::not_checked(
            CheckKind::Quality,
            "BRISQUE judges natural photographs; the synthetic world's flat pictures are outside what it was trained on",
        );
    }
    let Some(q) = c.quality else {
        return Check::not_checked(CheckKind::Quality, "no BRISQUE model is installed (scripts/setup.sh installs it)");
    };
    match q.score(image) {
        Ok(s) if s <= c.quality_limit => Check::pass(CheckKind::Quality, format!("BRISQUE {s:.1} (limit {:.0})", c.quality_limit)),
        Ok(s) => {
            Check::fail(CheckKind::Quality, (c.quality_limit / s).clamp(0.0, 1.0), format!("BRISQUE {s:.1}, over {:.0}", c.quality_limit))
        }
        Err(e) => Check::not_checked(CheckKind::Quality, format!("BRISQUE could not score the picture: {e}")),
    }
}

/// The checks of an edit's output (`report` is what its plan says it did): exact size, not
/// blank, locality (every pixel outside the region the plan allowed is the input's own byte),
/// the asked change where the synthetic world can see it (an added object's colour, shape and
/// place), and BRISQUE and CLIP against what the model was asked to paint, as for a new picture.
/// `asked` is [`asked_of`] the edit (the loop's plan for it).
pub fn edit_checks(plan: &EditPlan, asked: &Plan, report: &PlanReport, image: &RgbImage, checkers: &Checkers<'_>) -> Vec<Check> {
    let mut out = vec![size(asked, image), not_blank(image), locality(report), asked_change(plan, report, image)];
    if plan.enlarge_request().is_some() {
        out.push(quality(asked, image, checkers));
    }
    if plan.paint_request().is_some() {
        out.push(quality(asked, image, checkers));
        out.push(adherence(asked, image, checkers));
    }
    out
}

/// The plan the loop checks an edit against: what its model is asked to paint (nothing for
/// exact image maths), at the edit's output size.
pub fn asked_of(edit: &EditPlan) -> Plan {
    let (w, h) = edit.report().output;
    Plan::new(edit.paint_request().map_or("", |r| r.prompt.as_str()), None, w, h)
}

fn locality(r: &PlanReport) -> Check {
    match r.outside_changed {
        Some(0) => Check::pass(
            CheckKind::Locality,
            format!("0 pixels changed outside the region ({} may change, {} changed)", r.may_change, r.changed.unwrap_or(0)),
        ),
        Some(n) => Check::fail(CheckKind::Locality, 0.0, format!("{n} pixels changed outside the region")),
        None => Check::not_checked(CheckKind::Locality, "the edit was not pasted back"),
    }
}

/// An upscale shrunk back to the input's size must be the input within this PSNR (dB).
pub const UPSCALE_FIDELITY_DB: f64 = 30.0;

/// An added object of the synthetic world: a component of the asked colour in the asked cell,
/// of the asked shape; an upscale: the input's picture, shrunk back. Other edits are exact
/// image maths, or pictures the world cannot read.
fn asked_change(plan: &EditPlan, report: &PlanReport, image: &RgbImage) -> Check {
    if let Some(db) = report.fidelity_db {
        let what = format!("shrunk back to {}x{}: {db:.1} dB PSNR against the input", report.input.0, report.input.1);
        return if db >= UPSCALE_FIDELITY_DB {
            Check::pass(CheckKind::AskedChange, format!("{what} (at least {UPSCALE_FIDELITY_DB})"))
        } else {
            Check::fail(CheckKind::AskedChange, (db / UPSCALE_FIDELITY_DB) as f32, format!("{what}, under {UPSCALE_FIDELITY_DB}"))
        };
    }
    let Operation::Add { color: Some(color), shape, position, .. } = &plan.instruction.operation else {
        return Check::not_checked(CheckKind::AskedChange, "checked for added objects of the synthetic world only");
    };
    if plan.found_by != Some(FoundBy::World) {
        return Check::not_checked(CheckKind::AskedChange, "not a picture of the synthetic world (no reader for what was added)");
    }
    let at = |c: &plantain_world::Component| {
        position.column.is_none_or(|x| usize::from(x) == c.cell.0.index())
            && position.row.is_none_or(|y| usize::from(y) == c.cell.1.index())
    };
    let grade =
        |c: &plantain_world::Component| u32::from(c.color == *color) + u32::from(at(c)) + u32::from(shape.is_none_or(|s| s == c.shape));
    let components = plantain_world::analyse(image).components;
    let best = components.iter().max_by_key(|c| grade(c));
    let what = format!("{} {}", color.word(), shape.map_or("object", |s| s.word()));
    match best {
        Some(c) if grade(c) == 3 => Check::pass(CheckKind::AskedChange, format!("a {what} found at the {}", position.describe())),
        Some(c) => Check::fail(
            CheckKind::AskedChange,
            grade(c) as f32 / 3.0,
            format!("asked a {what} at the {}; the nearest drawn is a {} {}", position.describe(), c.color.word(), c.shape.word()),
        ),
        None => Check::fail(CheckKind::AskedChange, 0.0, format!("asked a {what}; nothing was drawn")),
    }
}
