//! Text to image through the plan → check → correct loop, in the service's terms: every
//! attempt is a job that runs without being published (its quota reservation is released when
//! it is dropped); per image, the best attempt is published, with every attempt's checks in
//! its record (`params.checks`).

use std::sync::Arc;

use image::RgbImage;
use plantain_director::generate::{Check, Looper, Plan, Settings, examine};

use crate::Service;
use crate::error::ServiceError;
use crate::job::{JobSpec, Output, Ran, RequestCtx};

impl Service {
    /// Runs `spec` (text to image: no input images, no edit) through the loop with the
    /// configured budget, image by image, and publishes the best attempt of each.
    /// Returns the published outputs; each one's loop record is in its `params.checks`
    /// ([`plantain_director::generate::Outcome::from_record`]).
    pub async fn generate_checked(self: &Arc<Self>, ctx: &RequestCtx, spec: JobSpec) -> Result<Vec<Output>, ServiceError> {
        let plan = Arc::new(Plan::new(&spec.prompt, spec.negative.as_deref(), spec.width, spec.height));
        let budget = self.config.checks.budget();
        let base_seed = spec.seed.unwrap_or_else(rand::random);
        let d = spec.model.defaults;
        let mut out = Vec::new();
        for i in 0..u64::from(spec.count) {
            let first = Settings {
                seed: base_seed.wrapping_add(i),
                steps: spec.steps.unwrap_or(d.steps).max(1),
                guidance: spec.guidance.unwrap_or(d.guidance),
            };
            let mut looper = Looper::new(&plan, first, budget);
            let mut ran: Vec<Ran> = Vec::new();
            while let Some(s) = looper.next_attempt() {
                let attempt = self.submit(ctx, one_attempt(&spec, &plan, &s)).await?.run().await?;
                let image =
                    attempt.made.first().map(|m| m.image.clone()).ok_or_else(|| ServiceError::internal("an attempt made no picture"))?;
                let (image, checks) = self.examine(&plan, image).await?;
                looper.record_examined(image, checks);
                ran.push(attempt);
            }
            let outcome = looper.finish().ok_or_else(|| ServiceError::internal("the loop made no attempt"))?;
            let mut best = ran.swap_remove(outcome.best);
            // The picture with its text set, and the user's prompt on the record.
            if let Some(m) = best.made.first_mut() {
                m.image = outcome.best().image.clone();
            }
            best.job.spec.prompt = spec.prompt.clone();
            best.job.spec.checks = Some(serde_json::to_value(&outcome).map_err(|e| ServiceError::internal(e.to_string()))?);
            out.extend(self.publish(best).await?);
        }
        Ok(out)
    }
}

impl Service {
    /// Sets the plan's text into an attempt's picture and checks it, on a blocking thread
    /// (typesetting, OCR and BRISQUE take a second or so at 1K).
    async fn examine(&self, plan: &Arc<Plan>, image: RgbImage) -> Result<(RgbImage, Vec<Check>), ServiceError> {
        let (plan, tools) = (plan.clone(), self.checks.clone());
        tokio::task::spawn_blocking(move || examine(&plan, image, &tools.checkers(&plan)))
            .await
            .map_err(|e| ServiceError::internal(format!("the checks failed: {e}")))
    }
}

/// One attempt of one image: the request with the attempt's settings; the model draws the
/// plan's picture without its quoted text (that is typeset afterwards).
fn one_attempt(spec: &JobSpec, plan: &Plan, s: &Settings) -> JobSpec {
    let mut one = spec.clone();
    one.prompt = plan.draw_prompt.clone();
    one.count = 1;
    one.seed = Some(s.seed);
    one.steps = Some(s.steps);
    one.guidance = Some(s.guidance);
    one
}
