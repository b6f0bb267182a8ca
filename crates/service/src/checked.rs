//! Every picture through the plan → check → correct loop, in the service's terms: each attempt
//! is a job that runs without being published (its quota reservation is released when it is
//! dropped); per image, the best attempt is published, with every attempt's checks in its record
//! (`params.checks`). Text to image is planned from the prompt; an edit is checked by its own
//! checks (locality, the asked change, quality), and retried with a new seed only when a model
//! painted it (exact image maths gives the same answer every time). Streaming answers get each
//! attempt's progress, partial images and verdicts as [`LoopEvent`]s.

use std::sync::Arc;

use image::RgbImage;
use plantain_director::generate::{Budget, Examined, Looper, Paint, Plan, Settings, asked_of, edit_checks, examine};
use tokio::sync::mpsc;

use crate::Service;
use crate::error::{ErrorKind, ServiceError};
use crate::job::{Job, JobEvent, JobSpec, Output, Ran, RequestCtx};

/// What a checked run reports while it runs. `image` and `attempt` count from 0.
#[derive(Debug)]
pub enum LoopEvent {
    /// Denoising step `step` of `total` of an attempt.
    Progress { image: usize, attempt: usize, step: usize, total: usize },
    /// A partial image of an attempt, stamped, in the job's format; `index` counts this
    /// attempt's partial images.
    Partial { image: usize, attempt: usize, index: usize, bytes: Vec<u8> },
    /// An attempt was checked: its line for the user ("attempt 1: score 0.71 — scene FAILED …").
    Checked { image: usize, attempt: usize, line: String },
}

/// Where a run's events go (None: nobody streams them).
pub type LoopEvents = Option<mpsc::Sender<LoopEvent>>;

/// How one image's loop plans and checks its attempts.
enum Mode {
    /// Text to image: the prompt's plan, its checks, local repaints.
    Text,
    /// An edit: the edit plan's checks; `retry` when a model paints it.
    Edit { retry: bool },
    /// Anything else (image variations): one job, as asked.
    Plain,
}

/// A checked run whose first job is queued: errors up to there (quota, a full queue) came
/// before any answer was sent, so streaming answers can still give them as plain HTTP errors.
pub struct CheckedRun {
    svc: Arc<Service>,
    ctx: RequestCtx,
    spec: JobSpec,
    plan: Arc<Plan>,
    mode: Mode,
    budget: Budget,
    first: Settings,
    first_job: Option<Job>,
}

impl Service {
    /// Runs `spec` through the loop with the configured budget, image by image, and publishes
    /// the best attempt of each. Returns the published outputs; each one's loop record is in
    /// its `params.checks` ([`plantain_director::generate::Outcome::from_record`]).
    pub async fn generate_checked(
        self: &Arc<Self>,
        ctx: &RequestCtx,
        spec: JobSpec,
        events: LoopEvents,
    ) -> Result<Vec<Output>, ServiceError> {
        self.start_checked(ctx, spec).await?.finish(events).await
    }

    /// Plans the run and queues its first job.
    pub async fn start_checked(self: &Arc<Self>, ctx: &RequestCtx, spec: JobSpec) -> Result<CheckedRun, ServiceError> {
        let mode = match &spec.edit {
            Some(plan) => Mode::Edit { retry: plan.paint_request().is_some() },
            None if spec.images.is_empty() => Mode::Text,
            None => Mode::Plain,
        };
        let plan = Arc::new(match &spec.edit {
            Some(edit) => asked_of(edit),
            None => Plan::new(&spec.prompt, spec.negative.as_deref(), spec.width, spec.height),
        });
        let mut budget = self.config.checks.budget();
        if let Mode::Edit { retry: false } = mode {
            budget = Budget { attempts: 1, ..budget };
        }
        let d = spec.model.defaults;
        let first = Settings {
            seed: spec.seed.unwrap_or_else(rand::random),
            steps: spec.steps.unwrap_or(d.steps).max(1),
            guidance: spec.guidance.unwrap_or(d.guidance),
        };
        let first_spec = match mode {
            Mode::Plain => spec.clone(),
            _ => one_attempt(&spec, &plan, &mode, &Paint { settings: first, repaint: None }),
        };
        let first_job = Some(self.submit(ctx, first_spec).await?);
        Ok(CheckedRun { svc: self.clone(), ctx: ctx.clone(), spec, plan, mode, budget, first, first_job })
    }
}

impl CheckedRun {
    /// Runs the loop to its end and publishes the best attempt of each image.
    pub async fn finish(mut self, events: LoopEvents) -> Result<Vec<Output>, ServiceError> {
        let svc = self.svc.clone();
        let mut first_job = self.first_job.take();
        if let Mode::Plain = self.mode {
            let job = first_job.ok_or_else(|| ServiceError::internal("the run has no job"))?;
            let ran = svc.drive(job, 0, 0, &events, &|p| p).await?;
            return svc.publish(ran).await;
        }
        let mut out = Vec::new();
        for i in 0..self.spec.count as usize {
            let first = Settings { seed: self.first.seed.wrapping_add(i as u64), ..self.first };
            let best = svc.one_image(&self, first, i, first_job.take(), &events).await?;
            out.extend(svc.publish(best).await?);
        }
        Ok(out)
    }
}

impl Service {
    /// One image's loop (its first job, when queued already): its attempts, checked; the best
    /// one, its picture and record set, not yet published.
    async fn one_image(
        self: &Arc<Self>,
        run: &CheckedRun,
        first: Settings,
        image: usize,
        mut queued: Option<Job>,
        events: &LoopEvents,
    ) -> Result<Ran, ServiceError> {
        let (spec, plan, budget) = (&run.spec, &run.plan, run.budget);
        let mut looper = Looper::new(plan, first, budget);
        let mut ran: Vec<Ran> = Vec::new();
        while let Some(paint) = looper.next_attempt() {
            let attempt = ran.len();
            let job = match queued.take() {
                Some(job) => job,
                None => match self.submit(&run.ctx, one_attempt(spec, plan, &run.mode, &paint)).await {
                    Ok(job) => job,
                    // A later attempt that cannot be queued (the queue full, the day's quota
                    // spent by the attempts held) ends the loop: the best so far is the answer.
                    Err(e) if !ran.is_empty() && matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Exhausted) => {
                        tracing::info!(error = %e, attempts = ran.len(), "the loop stops early: no room for another attempt");
                        looper.stop_early();
                        break;
                    }
                    Err(e) => return Err(e),
                },
            };
            let done = self.drive(job, image, attempt, events, &|p| looper.drawn(p)).await?;
            let made = done.made.first().ok_or_else(|| ServiceError::internal("an attempt made no picture"))?;
            let drawn = looper.drawn(made.image.clone());
            let examined = match (&spec.edit, &made.edit) {
                (Some(edit), Some(report)) => {
                    let (edit, report, tools, plan) = (edit.clone(), report.clone(), self.checks.clone(), plan.clone());
                    blocking(move || {
                        let checks = edit_checks(&edit, &plan, &report, &drawn, &tools.checkers(&plan));
                        Examined { image: drawn.clone(), drawn, checks }
                    })
                    .await?
                }
                _ => {
                    let (plan, tools) = (plan.clone(), self.checks.clone());
                    blocking(move || examine(&plan, drawn, &tools.checkers(&plan))).await?
                }
            };
            looper.record_examined(examined);
            ran.push(done);
            send_checked(events, &looper, image, attempt, budget).await?;
        }
        let outcome = looper.finish().ok_or_else(|| ServiceError::internal("the loop made no attempt"))?;
        let mut best = ran.swap_remove(outcome.best);
        // The picture as checked (a repaint pasted back, its text set), the user's prompt and
        // settings on the record.
        if let Some(m) = best.made.first_mut() {
            m.image = outcome.best().image.clone();
        }
        best.job.spec.prompt = spec.prompt.clone();
        best.job.spec.repaint = None;
        best.job.spec.checks = Some(serde_json::to_value(&outcome).map_err(|e| ServiceError::internal(e.to_string()))?);
        Ok(best)
    }

    /// Runs a job to its end, sending its progress and (pasted back by `paste`, stamped) its
    /// partial images as `events` when someone listens. A listener that went away cancels it.
    async fn drive(
        &self,
        mut job: Job,
        image: usize,
        attempt: usize,
        events: &LoopEvents,
        paste: &(dyn Fn(RgbImage) -> RgbImage + Sync),
    ) -> Result<Ran, ServiceError> {
        if let Some(tx) = events {
            while let Some(ev) = job.next().await {
                let out = match ev {
                    JobEvent::Progress(p) => LoopEvent::Progress { image, attempt, step: p.step, total: p.total },
                    JobEvent::Partial(mut p) => {
                        p.picture = paste(p.picture);
                        let index = p.index;
                        LoopEvent::Partial { image, attempt, index, bytes: job.stamp_partial(self, p).await? }
                    }
                };
                if tx.send(out).await.is_err() {
                    return Err(gone());
                }
            }
        }
        job.run().await
    }
}

fn gone() -> ServiceError {
    ServiceError::new(ErrorKind::Cancelled, "the client went away")
}

/// The last attempt's verdict line as an event.
async fn send_checked(events: &LoopEvents, looper: &Looper<'_>, image: usize, attempt: usize, budget: Budget) -> Result<(), ServiceError> {
    let (Some(tx), Some(a)) = (events, looper.attempts().last()) else { return Ok(()) };
    let failed: Vec<&str> = a.checks.iter().filter(|c| c.failed()).map(|c| c.kind.name()).collect();
    let verdict = if failed.is_empty() { "every check that ran passed".to_string() } else { format!("FAILED: {}", failed.join(", ")) };
    let line = format!("attempt {} of up to {} ({}): score {:.2}, {verdict}", attempt + 1, budget.attempts, a.why, a.score);
    tx.send(LoopEvent::Checked { image, attempt, line }).await.map_err(|_| gone())
}

/// Checks on a blocking thread (typesetting, OCR and BRISQUE take a second or so at 1K).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ServiceError::internal(format!("the checks failed: {e}")))
}

/// One attempt of one image: the request with the attempt's settings. A new picture is drawn
/// without its quoted text (that is typeset afterwards); a repaint redraws a region of an
/// earlier attempt; an edit keeps its plan and gets the attempt's seed.
fn one_attempt(spec: &JobSpec, plan: &Plan, mode: &Mode, p: &Paint) -> JobSpec {
    let mut one = spec.clone();
    if let Mode::Text = mode {
        one.prompt = plan.draw_prompt.clone();
    }
    one.count = 1;
    let s = p.settings;
    (one.seed, one.steps, one.guidance) = (Some(s.seed), Some(s.steps), Some(s.guidance));
    one.repaint = p.repaint.clone().map(Arc::new);
    one
}
