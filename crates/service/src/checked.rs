//! Text to image through the plan → check → correct loop, in the service's terms: every
//! attempt is a job that runs without being published (its quota reservation is released when
//! it is dropped); per image, the best attempt is published, with every attempt's checks in
//! its record (`params.checks`).

use std::sync::Arc;

use plantain_director::generate::{Checkers, Looper, Outcome, Plan, Settings};

use crate::Service;
use crate::error::ServiceError;
use crate::job::{JobSpec, Output, Ran, RequestCtx};

/// Published images and what the loop did for each.
pub struct Checked {
    pub outputs: Vec<Output>,
    /// The plan, in words.
    pub plan: String,
    /// Per image: every attempt and its checks, in words.
    pub reports: Vec<String>,
    /// Per image: one line on what was checked.
    pub summaries: Vec<String>,
}

impl Service {
    /// Runs `spec` (text to image: no input images, no edit) through the loop with the
    /// configured budget, image by image, and publishes the best attempt of each.
    pub async fn generate_checked(self: &Arc<Self>, ctx: &RequestCtx, spec: JobSpec) -> Result<Checked, ServiceError> {
        let plan = Plan::new(&spec.prompt, spec.negative.as_deref(), spec.width, spec.height);
        let budget = self.config.checks.budget();
        let base_seed = spec.seed.unwrap_or_else(rand::random);
        let d = spec.model.defaults;
        let mut out = Checked { outputs: Vec::new(), plan: plan.explain(), reports: Vec::new(), summaries: Vec::new() };
        for i in 0..u64::from(spec.count) {
            let first = Settings { seed: base_seed.wrapping_add(i), steps: spec.steps.unwrap_or(d.steps).max(1), guidance: spec.guidance.unwrap_or(d.guidance) };
            let mut looper = Looper::new(&plan, first, budget);
            let mut ran: Vec<Ran> = Vec::new();
            while let Some(s) = looper.next() {
                let attempt = self.submit(ctx, one_attempt(&spec, &s)).await?.run().await?;
                let image = attempt.made.first().map(|m| m.image.clone()).ok_or_else(|| ServiceError::internal("an attempt made no picture"))?;
                looper.record(image, &Checkers::default());
                ran.push(attempt);
            }
            let outcome = looper.finish().ok_or_else(|| ServiceError::internal("the loop made no attempt"))?;
            let mut best = ran.swap_remove(outcome.best);
            best.job.spec.checks = Some(record(&outcome));
            out.outputs.extend(self.publish(best).await?);
            out.summaries.push(summary(&outcome));
            out.reports.push(outcome.report());
        }
        Ok(out)
    }
}

/// One attempt of one image: the request with the attempt's settings.
fn one_attempt(spec: &JobSpec, s: &Settings) -> JobSpec {
    let mut one = spec.clone();
    one.count = 1;
    one.seed = Some(s.seed);
    one.steps = Some(s.steps);
    one.guidance = Some(s.guidance);
    one
}

/// The record of the loop kept with the published picture.
fn record(o: &Outcome) -> serde_json::Value {
    serde_json::json!({"attempts": o.attempts, "chosen": o.best, "stopped": o.stopped})
}

/// "checked: exact size, not blank, scene passed; quality not checked (…) — attempt 2 of 3".
fn summary(o: &Outcome) -> String {
    let best = o.best();
    let names = |f: &dyn Fn(&plantain_director::generate::Check) -> bool| {
        best.checks.iter().filter(|c| f(c)).map(|c| c.kind.name()).collect::<Vec<_>>().join(", ")
    };
    let (passed, failed, skipped) = (names(&|c| c.passed()), names(&|c| c.failed()), names(&|c| !c.passed() && !c.failed()));
    let mut parts = Vec::new();
    if !passed.is_empty() {
        parts.push(format!("passed: {passed}"));
    }
    if !failed.is_empty() {
        parts.push(format!("FAILED: {failed}"));
    }
    if !skipped.is_empty() {
        parts.push(format!("not checked: {skipped}"));
    }
    format!("checks {} (attempt {} of {} kept)", parts.join("; "), o.best + 1, o.attempts.len())
}
