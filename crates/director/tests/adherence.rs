//! The loop's adherence check: a CLIP model scores the picture against what the model was asked
//! to draw; a low score fails the check and the next attempt gets more guidance. Real scoring
//! with the tiny random CLIP fixture (its numbers mean nothing, the plumbing is real); pass and
//! fail with a stand-in scorer whose cosine is set.

use std::path::PathBuf;

use image::{Rgb, RgbImage};
use plantain_director::generate::{AdherenceScorer, Budget, CheckKind, Checkers, InstalledChecks, Paint, Plan, Settings, examine, run};

fn tiny_clip() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny/clip")
}

fn picture() -> RgbImage {
    RgbImage::from_fn(64, 64, |x, y| Rgb([(x * 4) as u8, (y * 4) as u8, 128]))
}

fn adherence(checks: &[plantain_director::generate::Check]) -> &plantain_director::generate::Check {
    checks.iter().find(|c| c.kind == CheckKind::Adherence).expect("an adherence check")
}

#[test]
fn a_clip_model_scores_the_picture_against_the_prompt() {
    let installed = InstalledChecks::with_clip(Some(tiny_clip()));
    let plan = Plan::new("a lighthouse on a cliff at dusk", None, 64, 64);
    let checks = examine(&plan, picture(), &installed.checkers(&plan)).checks;
    let c = adherence(&checks);
    assert!(c.passed() || c.failed(), "the check ran: {}", c.line());
    assert!(c.detail.contains("CLIP cosine"), "{}", c.line());
}

#[test]
fn without_a_model_or_with_a_broken_one_adherence_is_not_checked() {
    let plan = Plan::new("a lighthouse", None, 64, 64);
    let checks = examine(&plan, picture(), &InstalledChecks::new().checkers(&plan)).checks;
    let c = adherence(&checks);
    assert!(!c.passed() && !c.failed() && c.detail.contains("no CLIP model"), "{}", c.line());
    let broken = InstalledChecks::with_clip(Some(PathBuf::from("/nonexistent/clip")));
    assert!(broken.load_clip().is_err());
    let checks = examine(&plan, picture(), &broken.checkers(&plan)).checks;
    let c = adherence(&checks);
    assert!(!c.passed() && !c.failed() && c.detail.contains("did not load"), "{}", c.line());
}

/// A scorer that answers a fixed cosine.
struct Cosine(f32);
impl AdherenceScorer for Cosine {
    fn cosine(&self, _: &RgbImage, _: &str) -> Result<f32, String> {
        Ok(self.0)
    }
}

#[test]
fn low_adherence_fails_and_raises_guidance_high_adherence_passes() {
    let plan = Plan::new("a lighthouse on a cliff at dusk", None, 64, 64);
    let first = Settings { seed: 3, steps: 4, guidance: 5.0 };
    let mut paint = |_: &Paint| -> Result<RgbImage, String> { Ok(picture()) };
    let low = Cosine(0.05);
    let checkers = Checkers { adherence: Some(&low), ..Checkers::default() };
    let outcome = run(&plan, first, Budget { attempts: 2, ..Budget::DEFAULT }, &checkers, &mut paint).unwrap();
    assert!(adherence(&outcome.attempts[0].checks).failed());
    assert_eq!(outcome.attempts[1].settings.guidance, 6.0, "{}", outcome.attempts[1].why);
    let high = Cosine(0.3);
    let checkers = Checkers { adherence: Some(&high), ..Checkers::default() };
    let outcome = run(&plan, first, Budget::DEFAULT, &checkers, &mut paint).unwrap();
    assert!(adherence(&outcome.attempts[0].checks).passed());
}
