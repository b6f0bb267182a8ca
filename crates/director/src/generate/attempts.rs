//! The loop: generate, check, correct, until an attempt passes every check that ran or the
//! budget (attempts, time) is spent; the best attempt is the answer.
//!
//! **Score** (documented, used to choose the best attempt): 0 when the size, not-blank or (an
//! edit) locality check fails; otherwise the mean, over the checks that ran (not the "not checked" ones), of their
//! score — 1 for a pass, the share of what was right for a fail (e.g. 7 of 9 scene attributes).
//! Ties go to the earlier attempt.
//!
//! **Corrections** (what a failure changes for the next attempt): a flat picture → a new seed and
//! half as many steps again; a failed scene → a new seed, and from the second scene failure on
//! one more unit of guidance every other attempt (at most 2 over the first); failed adherence
//! (CLIP) → one more unit of guidance (same cap); failed quality → half as many steps again (at
//! most twice the first). A wrong reading of quoted text is corrected inside the attempt (the
//! text is set again differently). A new seed is always drawn, since the same settings give the
//! same picture.
//!
//! **Local repaint**: when the best picture so far fails the scene check only in some of its
//! objects (the background right), the next attempt repaints just those objects' region of that
//! picture ([`super::repaint`]) instead of drawing a new one — at most [`MAX_REPAINTS_IN_A_ROW`]
//! times from the same picture, then a whole new picture.

use std::time::{Duration, Instant};

use image::RgbImage;
use plantain_engine::pipeline::GenerateRequest;
use serde::{Deserialize, Serialize};

use super::checks::{Check, CheckKind, Checkers, run_checks};
use super::plan::Plan;
use super::repaint::{Repaint, RepaintRecord, RepaintRequest, plan_repaint};

/// What one attempt runs with.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub seed: u64,
    pub steps: usize,
    pub guidance: f32,
}

/// How much the loop may spend.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// At most this many attempts (1 = no loop: one picture, checked and reported).
    pub attempts: usize,
    /// No new attempt starts once this much time has gone (the first always runs).
    pub time: Duration,
}

impl Budget {
    /// The default: a small loop.
    pub const DEFAULT: Budget = Budget { attempts: 3, time: Duration::from_secs(120) };
}

/// What the painter is asked for one attempt: a picture with these settings, or (a local
/// repaint) the request's picture with its mask's region redrawn (inpainting, strength 1).
#[derive(Clone, Debug)]
pub struct Paint {
    pub settings: Settings,
    pub repaint: Option<RepaintRequest>,
}

impl Paint {
    /// The answer when there is nothing for a model to paint (a repaint that only erased extra
    /// blobs): painters return it as it is.
    pub fn exact_answer(&self) -> Option<&RgbImage> {
        self.repaint.as_ref().filter(|r| r.exact()).map(|r| &r.image)
    }

    /// `template` (the request's size and model settings) made this attempt's engine request:
    /// the plan's drawing prompt with these settings, or the repaint.
    pub fn request(&self, plan: &Plan, template: &GenerateRequest) -> GenerateRequest {
        let mut r = template.clone();
        r.prompt = plan.draw_prompt.clone();
        (r.seed, r.steps, r.guidance) = (self.settings.seed, self.settings.steps, self.settings.guidance);
        if let Some(rep) = &self.repaint {
            rep.apply(&mut r);
        }
        r
    }
}

/// One attempt: its settings, why they were chosen, its checks and score.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Attempt {
    pub settings: Settings,
    /// Why these settings ("first attempt", "scene failed: new seed, guidance 8.5").
    pub why: String,
    /// A local repaint of an earlier attempt's picture, when this attempt was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repaint: Option<RepaintRecord>,
    pub checks: Vec<Check>,
    pub score: f32,
    #[serde(serialize_with = "secs", deserialize_with = "from_secs")]
    pub elapsed: Duration,
    /// The picture (not part of the record).
    #[serde(skip)]
    pub image: RgbImage,
    /// The picture as the model drew it, before quoted text was set (what a repaint starts from).
    #[serde(skip)]
    pub drawn: RgbImage,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

fn from_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = f64::deserialize(d)?;
    Ok(Duration::try_from_secs_f64(s).unwrap_or_default())
}

impl Attempt {
    /// Every check that ran passed.
    pub fn passed(&self) -> bool {
        !self.checks.iter().any(Check::failed)
    }
}

/// Why the loop stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// An attempt passed every check that ran.
    Passed,
    /// The attempts were spent.
    Attempts,
    /// The time budget was spent.
    Time,
    /// No room for another attempt (the model's queue full, or the day's image quota held by
    /// the attempts already made).
    NoRoom,
}

/// The loop's result: every attempt, the best one's index and why it stopped. Its JSON (the
/// pictures left out) is the record kept with the published picture ([`Outcome::from_record`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outcome {
    pub attempts: Vec<Attempt>,
    /// The index of the attempt that is the answer.
    #[serde(rename = "chosen")]
    pub best: usize,
    pub stopped: Stop,
}

impl Outcome {
    pub fn best(&self) -> &Attempt {
        &self.attempts[self.best]
    }

    /// The record as kept (`params.checks`), without pictures; None when it is not one.
    pub fn from_record(v: &serde_json::Value) -> Option<Outcome> {
        let o: Outcome = serde_json::from_value(v.clone()).ok()?;
        (o.best < o.attempts.len()).then_some(o)
    }

    /// One line: which checks the answer passed, failed or could not run, and which attempt
    /// it is ("checks passed: exact size, not blank, scene; not checked: quality — attempt 2
    /// of 3 kept").
    pub fn summary(&self) -> String {
        let best = self.best();
        let names = |f: &dyn Fn(&Check) -> bool| best.checks.iter().filter(|c| f(c)).map(|c| c.kind.name()).collect::<Vec<_>>().join(", ");
        let groups = [
            ("passed", names(&|c| c.passed())),
            ("FAILED", names(&|c| c.failed())),
            ("not checked", names(&|c| !c.passed() && !c.failed())),
        ];
        let parts: Vec<String> = groups.iter().filter(|(_, n)| !n.is_empty()).map(|(k, n)| format!("{k}: {n}")).collect();
        format!("checks {} — attempt {} of {} kept", parts.join("; "), self.best + 1, self.attempts.len())
    }

    /// The report in words: each attempt's checks, and which one is the answer.
    pub fn report(&self) -> String {
        let mut lines = Vec::new();
        for (i, a) in self.attempts.iter().enumerate() {
            let mark = if i == self.best { " ← answer" } else { "" };
            let what = match &a.repaint {
                Some(r) => format!("repaint of attempt {}: {}, ", r.from_attempt, r.describe()),
                None => String::new(),
            };
            lines.push(format!(
                "attempt {} ({what}seed {}, {} steps, guidance {}; {}): score {:.2}{mark}",
                i + 1,
                a.settings.seed,
                a.settings.steps,
                a.settings.guidance,
                a.why,
                a.score
            ));
            lines.extend(a.checks.iter().map(|c| format!("  {}", c.line())));
        }
        let stop = match self.stopped {
            Stop::Passed => "an attempt passed every check that ran",
            Stop::Attempts => "the attempts were spent",
            Stop::Time => "the time budget was spent",
            Stop::NoRoom => "no room for another attempt (the queue was full or the quota spent)",
        };
        lines.push(format!("stopped: {stop}"));
        lines.join("\n")
    }
}

/// At most this many repaints in a row start from the same picture; then a new one is drawn.
pub const MAX_REPAINTS_IN_A_ROW: usize = 6;

/// An attempt handed out and not yet recorded.
struct Pending {
    settings: Settings,
    why: String,
    repaint: Option<Repaint>,
    started: Instant,
}

/// The loop as steps, for callers that cannot hand it a blocking painter (an async server):
/// ask [`Looper::next_attempt`] what to paint, paint it, give the picture to [`Looper::record`],
/// until it says stop; then [`Looper::finish`].
pub struct Looper<'p> {
    plan: &'p Plan,
    first: Settings,
    budget: Budget,
    started: Instant,
    attempts: Vec<Attempt>,
    stopped: Option<Stop>,
    pending: Option<Pending>,
}

impl<'p> Looper<'p> {
    pub fn new(plan: &'p Plan, first: Settings, budget: Budget) -> Self {
        Looper { plan, first, budget, started: Instant::now(), attempts: Vec::new(), stopped: None, pending: None }
    }

    /// What to paint next, or None when the loop is done.
    pub fn next_attempt(&mut self) -> Option<Paint> {
        if self.stopped.is_some() {
            return None;
        }
        let (settings, mut why) =
            if self.attempts.is_empty() { (self.first, "first attempt".to_string()) } else { correct(&self.attempts, &self.first) };
        let repaint = self.local_repaint();
        if let Some(r) = &repaint {
            why = format!("{why}; in attempt {}'s picture: {}", r.record.from_attempt, r.record.describe());
        }
        let paint = Paint { settings, repaint: repaint.as_ref().map(|r| r.request.clone()) };
        self.pending = Some(Pending { settings, why, repaint, started: Instant::now() });
        Some(paint)
    }

    /// A repaint of the best picture so far, when its scene fails only locally and it has not
    /// been the start of [`MAX_REPAINTS_IN_A_ROW`] repaints already.
    fn local_repaint(&self) -> Option<Repaint> {
        let best = best_of(&self.attempts);
        let a = self.attempts.get(best)?;
        if !a.checks.iter().any(|c| c.kind == CheckKind::Scene && c.failed()) {
            return None;
        }
        let in_a_row = self.attempts[best + 1..].iter().filter(|t| t.repaint.as_ref().is_some_and(|r| r.from_attempt == best + 1)).count();
        if in_a_row >= MAX_REPAINTS_IN_A_ROW {
            return None;
        }
        plan_repaint(self.plan, &a.drawn, best)
    }

    /// Checks the picture painted for what `next_attempt` asked, and decides whether to go on.
    pub fn record(&mut self, painted: RgbImage, checkers: &Checkers<'_>) {
        let drawn = self.drawn(painted);
        let examined = examine(self.plan, drawn, checkers);
        self.record_examined(examined);
    }

    /// The painter's answer as the attempt's drawing: a repaint's answer pasted back into the
    /// picture it repainted (outside its region and band, that picture's own bytes).
    pub fn drawn(&self, painted: RgbImage) -> RgbImage {
        match self.pending.as_ref().and_then(|p| p.repaint.as_ref()) {
            Some(r) => r.paste(&painted),
            None => painted,
        }
    }

    /// As [`Looper::record`], with the drawing ([`Looper::drawn`]) already [`examine`]d (on
    /// another thread: the checks read every pixel and run OCR and BRISQUE).
    pub fn record_examined(&mut self, examined: Examined) {
        let Some(p) = self.pending.take() else { return };
        let Examined { image, drawn, checks } = examined;
        let score = score(&checks);
        tracing::debug!(attempt = self.attempts.len() + 1, score, "attempt checked");
        let repaint = p.repaint.map(|r| r.record);
        let elapsed = p.started.elapsed();
        self.attempts.push(Attempt { settings: p.settings, why: p.why, repaint, checks, score, elapsed, image, drawn });
        let passed = self.attempts.last().is_some_and(Attempt::passed);
        let n = self.attempts.len();
        let per = self.started.elapsed() / n as u32;
        self.stopped = if passed {
            Some(Stop::Passed)
        } else if n >= self.budget.attempts.max(1) {
            Some(Stop::Attempts)
        } else if self.started.elapsed() + per > self.budget.time {
            Some(Stop::Time)
        } else {
            None
        };
    }

    /// Ends the loop before the attempt last handed out (it could not be made).
    pub fn stop_early(&mut self) {
        self.pending = None;
        self.stopped = Some(Stop::NoRoom);
    }

    /// The attempts recorded so far.
    pub fn attempts(&self) -> &[Attempt] {
        &self.attempts
    }

    /// The attempts made and the best one. None before any attempt was recorded.
    pub fn finish(self) -> Option<Outcome> {
        if self.attempts.is_empty() {
            return None;
        }
        let best = best_of(&self.attempts);
        Some(Outcome { best, stopped: self.stopped.unwrap_or(Stop::Attempts), attempts: self.attempts })
    }
}

/// An attempt's drawing, checked: the picture with its quoted text set, the drawing, the checks.
pub struct Examined {
    pub image: RgbImage,
    pub drawn: RgbImage,
    pub checks: Vec<Check>,
}

/// Checks a drawing (what the model drew: the scene checker must not count the letters as
/// objects), then sets the plan's quoted text into it and checks the text.
pub fn examine(plan: &Plan, drawn: RgbImage, checkers: &Checkers<'_>) -> Examined {
    let mut checks = run_checks(plan, &drawn, checkers);
    let (image, text) = super::text::set_texts(plan, drawn.clone(), &checkers.text);
    checks.extend(text);
    Examined { image, drawn, checks }
}

/// Runs the loop: `paint` makes a picture (at the plan's exact size) for what it is asked.
pub fn run<E>(
    plan: &Plan,
    first: Settings,
    budget: Budget,
    checkers: &Checkers<'_>,
    paint: &mut dyn FnMut(&Paint) -> Result<RgbImage, E>,
) -> Result<Outcome, E> {
    let mut l = Looper::new(plan, first, budget);
    while let Some(s) = l.next_attempt() {
        let image = paint(&s)?;
        l.record(image, checkers);
    }
    Ok(l.finish().expect("the first attempt always runs"))
}

/// The documented score (see the module docs).
pub fn score(checks: &[Check]) -> f32 {
    let hard = checks.iter().any(|c| c.failed() && matches!(c.kind, CheckKind::Size | CheckKind::NotBlank | CheckKind::Locality));
    let ran: Vec<&Check> = checks.iter().filter(|c| c.passed() || c.failed()).collect();
    if hard || ran.is_empty() {
        return 0.0;
    }
    ran.iter().map(|c| c.score).sum::<f32>() / ran.len() as f32
}

/// The index of the best attempt by the documented score (ties: the earlier one).
pub fn best_of(attempts: &[Attempt]) -> usize {
    let mut best = 0;
    for (i, a) in attempts.iter().enumerate() {
        if a.score > attempts[best].score {
            best = i;
        }
    }
    best
}

/// A large odd step between attempt seeds.
const SEED_STEP: u64 = 0x9E37_79B9_7F4A_7C15;

/// The next attempt's settings from what failed so far (see the module docs).
fn correct(attempts: &[Attempt], first: &Settings) -> (Settings, String) {
    let last = attempts.last().expect("at least one attempt");
    let mut next = last.settings;
    next.seed = first.seed.wrapping_add(SEED_STEP.wrapping_mul(attempts.len() as u64));
    let failed = |k: CheckKind| last.checks.iter().any(|c| c.kind == k && c.failed());
    let mut why = Vec::new();
    let more_steps = |s: usize| (s + s.div_ceil(2)).min(first.steps * 2).max(s);
    if failed(CheckKind::NotBlank) || failed(CheckKind::Quality) {
        next.steps = more_steps(next.steps);
        why.push(format!("{} steps", next.steps));
    }
    let scene_failures = attempts.iter().filter(|a| a.checks.iter().any(|c| c.kind == CheckKind::Scene && c.failed())).count();
    let guidance_due = (failed(CheckKind::Scene) && scene_failures >= 2 && scene_failures % 2 == 0) || failed(CheckKind::Adherence);
    if guidance_due && next.guidance < first.guidance + 2.0 {
        next.guidance = (next.guidance + 1.0).min(first.guidance + 2.0);
        why.push(format!("guidance {}", next.guidance));
    }
    let failures: Vec<&str> = last.checks.iter().filter(|c| c.failed()).map(|c| c.kind.name()).collect();
    let mut text = format!("{} failed: new seed", failures.join(", "));
    if !why.is_empty() {
        text.push_str(", ");
        text.push_str(&why.join(", "));
    }
    (next, text)
}

#[cfg(test)]
mod tests {
    use plantain_world::{Background, ColorName, HPos, Lighting, Object, Scene, Shape, Size, VPos, render};

    use super::*;

    fn plan() -> Plan {
        Plan::new("a red circle in the center on a white background", None, 96, 96)
    }

    fn picture(color: ColorName) -> RgbImage {
        let o = Object { shape: Shape::Circle, color, size: Size::Large, h: HPos::Center, v: VPos::Middle, jitter: (0.0, 0.0) };
        render(
            &Scene { background: Background::Solid(ColorName::White), lighting: Lighting::NEUTRAL, objects: vec![o], relations: vec![] },
            96,
            96,
        )
    }

    #[test]
    fn the_loop_retries_until_the_scene_is_right_and_answers_the_best() {
        let mut seen = Vec::new();
        let mut paint = |p: &Paint| -> Result<RgbImage, ()> {
            seen.push(p.settings);
            // The third attempt draws the right colour.
            Ok(picture(if seen.len() == 3 { ColorName::Red } else { ColorName::Blue }))
        };
        let first = Settings { seed: 1, steps: 10, guidance: 5.0 };
        let out = run(&plan(), first, Budget { attempts: 5, time: Duration::from_secs(600) }, &Checkers::default(), &mut paint).unwrap();
        assert_eq!((out.attempts.len(), out.best, out.stopped), (3, 2, Stop::Passed));
        assert!(out.attempts[0].checks.iter().any(|c| c.kind == CheckKind::Scene && c.failed()));
        assert!(out.best().passed());
        // The blue circle is the only thing wrong: the later attempts repaint it in the first
        // attempt's picture, and keep the rest of that picture's bytes.
        for a in &out.attempts[1..] {
            let r = a.repaint.as_ref().expect("a local repaint");
            assert_eq!((r.from_attempt, r.objects.clone()), (1, vec!["red circle".to_string()]));
        }
        assert_eq!(out.best().image.get_pixel(0, 0), out.attempts[0].image.get_pixel(0, 0));
        assert!(out.report().contains("repaint of attempt 1: red circle repainted"), "{}", out.report());
        let seeds: std::collections::HashSet<u64> = seen.iter().map(|s| s.seed).collect();
        assert_eq!(seeds.len(), 3, "every attempt has its own seed");
        assert!(out.report().contains("← answer"));
        assert!(out.report().contains("quality: not checked"));
    }

    #[test]
    fn one_attempt_is_no_loop_and_a_flat_picture_scores_zero() {
        let mut paint = |_: &Paint| -> Result<RgbImage, ()> { Ok(RgbImage::from_pixel(96, 96, image::Rgb([9, 9, 9]))) };
        let first = Settings { seed: 1, steps: 10, guidance: 5.0 };
        let out = run(&plan(), first, Budget { attempts: 1, time: Duration::from_secs(600) }, &Checkers::default(), &mut paint).unwrap();
        assert_eq!((out.attempts.len(), out.stopped), (1, Stop::Attempts));
        assert_eq!(out.best().score, 0.0);
        let mut paint = |_: &Paint| -> Result<RgbImage, ()> { Ok(RgbImage::from_pixel(96, 96, image::Rgb([9, 9, 9]))) };
        let out = run(&plan(), first, Budget { attempts: 3, time: Duration::from_secs(600) }, &Checkers::default(), &mut paint).unwrap();
        assert_eq!(out.attempts[1].settings.steps, 15, "a flat picture gets more steps");
        assert_eq!(out.attempts[2].settings.steps, 20, "at most twice the first");
    }

    #[test]
    fn a_wrong_size_is_a_hard_failure_and_errors_stop_the_loop() {
        let mut paint = |_: &Paint| -> Result<RgbImage, ()> { Ok(picture(ColorName::Red)) };
        let p = Plan::new("a red circle in the center on a white background", None, 64, 96);
        let out = run(
            &p,
            Settings { seed: 0, steps: 4, guidance: 1.0 },
            Budget { attempts: 2, time: Duration::from_secs(60) },
            &Checkers::default(),
            &mut paint,
        )
        .unwrap();
        assert!(out.attempts.iter().all(|a| a.score == 0.0));
        let mut failing = |_: &Paint| -> Result<RgbImage, &'static str> { Err("engine down") };
        assert_eq!(
            run(&plan(), Settings { seed: 0, steps: 4, guidance: 1.0 }, Budget::DEFAULT, &Checkers::default(), &mut failing).unwrap_err(),
            "engine down"
        );
    }
}
