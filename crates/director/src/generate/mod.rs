//! Making a picture from a prompt with a plan, checks and corrections: the prompt becomes a
//! [`Plan`] (its scene in the synthetic world's words when it is one, its quoted text, its exact
//! size), each attempt is checked ([`checks`]), a failed check changes what can fix it, and the
//! best attempt is the answer ([`attempts`]). Front ends supply the painter (a closure over the
//! engine); the check models installed ([`InstalledChecks`]: BRISQUE, fonts, OCR) are loaded on
//! first use; every attempt's checks are reported.

pub mod attempts;
pub mod checks;
pub mod installed;
pub mod plan;
pub mod repaint;
pub mod text;
pub mod world;

pub use attempts::{Attempt, Budget, Examined, Looper, Outcome, Paint, Settings, Stop, best_of, examine, run};
pub use checks::{
    AdherenceScorer, Check, CheckKind, Checkers, DEFAULT_ADHERENCE_LIMIT, DEFAULT_QUALITY_LIMIT, QualityScorer, Verdict, asked_of,
    edit_checks,
};
pub use installed::InstalledChecks;
pub use plan::{Plan, QuotedText};
pub use plantain_typeset::Typesetter;
pub use repaint::{RepaintRecord, RepaintRequest, plan_repaint};
pub use text::{Reading, SetText, TextReader, TextTools, set_text};
pub use world::{WorldPrompt, read_world_prompt};
