//! The job path every image takes, whichever wire format or tool asked:
//! admit (quota) → queue (the model's worker) → run (the engine), then — a separate step —
//! publish (stamp, store, meter). A job can run without being published, so a caller that
//! tries several candidates publishes only the one it keeps.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use image::{GrayImage, RgbImage};
use plantain_director::edit::{EditPlan, PlanReport};
use plantain_director::generate::RepaintRequest;
use plantain_engine::error::EngineError;
use plantain_engine::pipeline::{GenerateRequest, Generated, Timings as EngineTimings};
use plantain_imageio::{InputImage, MediaFormat};
use plantain_store::{Artefact, Reservation};
use tokio::sync::mpsc;

use crate::Service;
use crate::error::{ErrorKind, ServiceError};
use crate::keys::Caller;
use crate::worker::{EngineJob, EnlargeJob, Lane, PreviewEvent, ProgressEvent, Worker, WorkerEvent};

/// Who asked, for records and logs.
#[derive(Clone, Debug)]
pub struct RequestCtx {
    /// Also the artefacts' `request_id` (a batch item's is `batches/ID/INDEX`).
    pub request_id: String,
    pub caller: Caller,
}

/// How an input image takes part in a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageRole {
    /// The picture being changed (img2img / inpaint source).
    Edit,
    /// A reference the job was given (recorded as a C2PA ingredient).
    Reference,
}

/// One generation, in the service's terms: what every API and tool turns its request into.
#[derive(Clone)]
pub struct JobSpec {
    pub model: Arc<Worker>,
    pub prompt: String,
    pub negative: Option<String>,
    /// Exact output pixels.
    pub width: u32,
    pub height: u32,
    /// For metrics and records: `512`, `1K`, … or `WxH`.
    pub size_label: String,
    pub count: u32,
    pub seed: Option<u64>,
    /// Every input image with its role (only hashes of them are recorded).
    pub images: Vec<(ImageRole, InputImage)>,
    /// Inpainting mask, white = repaint (needs an `Edit` image).
    pub mask: Option<GrayImage>,
    /// How far an edit may move from its input; None: the model's default.
    pub strength: Option<f32>,
    /// Denoising steps; None: the model's configured steps.
    pub steps: Option<usize>,
    /// Guidance scale; None: the model's configured guidance.
    pub guidance: Option<f32>,
    /// The checks the loop ran to choose this picture, recorded with it (`params.checks`).
    pub checks: Option<serde_json::Value>,
    pub format: MediaFormat,
    /// The stored version this job edits, when the request named one.
    pub parent: Option<Artefact>,
    /// The request's settings as its API named them (recorded with each image).
    pub params: serde_json::Value,
    pub prompt_tokens: u32,
    /// Output tokens per image (usage ledger).
    pub tokens_per_image: u32,
    /// Partial images per image to make while the engine runs; 0: none.
    pub partial_images: usize,
    /// Send progress events.
    pub progress: bool,
    /// A planned edit: the engine (if the plan needs a model) paints its request, and the
    /// result is pasted back into the input outside the plan's region.
    pub edit: Option<Arc<EditPlan>>,
    /// The loop's local repaint of an earlier attempt (inpainting of its region; the loop
    /// pastes the answer back).
    pub repaint: Option<Arc<RepaintRequest>>,
}

impl JobSpec {
    /// The image being edited, if any.
    pub fn edit_image(&self) -> Option<&InputImage> {
        self.images.iter().find(|(r, _)| *r == ImageRole::Edit).map(|(_, i)| i)
    }

    fn engine_requests(&self, steps: usize, seeds: &[u64]) -> Vec<GenerateRequest> {
        let d = self.model.defaults;
        if let Some(paint) = self.edit.as_ref().and_then(|p| p.paint_request()) {
            let guidance = self.guidance.unwrap_or(d.guidance);
            return seeds.iter().map(|&seed| paint.engine_request(seed, steps, guidance)).collect();
        }
        let init = self.edit_image().map(InputImage::rgb);
        seeds
            .iter()
            .map(|&seed| {
                let mut r = GenerateRequest::new(self.prompt.clone(), self.width, self.height);
                r.negative_prompt = self.negative.clone();
                r.steps = steps;
                r.guidance = self.guidance.unwrap_or(d.guidance);
                r.seed = seed;
                r.init_image = init.clone();
                r.strength = self.strength.unwrap_or(d.strength);
                r.mask = self.mask.clone();
                if let Some(rep) = &self.repaint {
                    rep.apply(&mut r);
                }
                r
            })
            .collect()
    }
}

/// What a job reports while it runs.
#[derive(Debug)]
pub enum JobEvent {
    Progress(ProgressEvent),
    Partial(PreviewEvent),
}

/// A stored, stamped output.
#[derive(Clone)]
pub struct Output {
    pub artefact: Artefact,
    pub bytes: Arc<Vec<u8>>,
}

/// Sets the job's cancel flag when dropped (client gone) unless disarmed.
struct CancelOnDrop {
    flag: Arc<AtomicBool>,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.flag.store(true, Ordering::Relaxed);
        }
    }
}

/// A quota reservation, released if the job ends without publishing.
struct Held {
    svc: Arc<Service>,
    id: Option<String>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(id) = self.id.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let svc = self.svc.clone();
            rt.spawn(async move {
                if let Err(e) = svc.stores.meta.release_reservation(&id).await {
                    tracing::warn!(error = %e, "could not release a quota reservation (it expires on its own)");
                }
            });
        }
    }
}

/// A queued job: its events, then its result. Dropping it cancels the job between steps.
pub struct Job {
    pub spec: JobSpec,
    pub ctx: RequestCtx,
    /// The denoising steps the engine runs.
    pub steps: usize,
    pub seeds: Vec<u64>,
    events: mpsc::UnboundedReceiver<WorkerEvent>,
    result: Option<Result<Vec<Generated>, ServiceError>>,
    guard: CancelOnDrop,
    quota: Held,
    queued: Instant,
}

/// One finished picture, not yet stamped or stored.
pub struct Made {
    pub image: RgbImage,
    pub seed: u64,
    /// Denoising steps run (0 for an edit done as exact image maths).
    pub steps_run: usize,
    pub timings: EngineTimings,
    /// What the edit did, when the job was an edit.
    pub edit: Option<PlanReport>,
}

/// A job the engine finished: its pictures, not yet stamped or stored.
pub struct Ran {
    pub job: Job,
    pub made: Vec<Made>,
}

/// The engine's pictures as made pictures: pasted back into the input by the job's edit plan.
fn made_of(spec: &JobSpec, generated: Vec<Generated>, seeds: &[u64]) -> Result<Vec<Made>, ServiceError> {
    let Some(plan) = &spec.edit else {
        return Ok(generated
            .into_iter()
            .map(|g| Made { image: g.image, seed: g.seed, steps_run: g.steps_run, timings: g.timings, edit: None })
            .collect());
    };
    let finish = |painted: Option<RgbImage>| plan.finish(painted).map_err(|e| ServiceError::internal(format!("finishing the edit: {e}")));
    if plan.paint_request().is_none() && plan.enlarge_request().is_none() {
        let edited = finish(None)?;
        let seed = seeds.first().copied().unwrap_or_default();
        return Ok(vec![Made { image: edited.image, seed, steps_run: 0, timings: EngineTimings::default(), edit: Some(edited.report) }]);
    }
    generated
        .into_iter()
        .map(|g| {
            let mut edited = finish(Some(g.image))?;
            // What the engine had to say (an upscale without its model) belongs to the report.
            edited.report.notes.extend(g.warnings);
            Ok(Made { image: edited.image, seed: g.seed, steps_run: g.steps_run, timings: g.timings, edit: Some(edited.report) })
        })
        .collect()
}

fn engine_error(e: EngineError) -> ServiceError {
    match e {
        EngineError::InvalidRequest(m) => ServiceError::invalid(m),
        EngineError::Unsupported(m) => ServiceError::new(ErrorKind::FailedPrecondition, m),
        EngineError::Cancelled => ServiceError::new(ErrorKind::Cancelled, "cancelled"),
        other => ServiceError::internal(format!("generation failed: {other}")),
    }
}

impl Service {
    /// Admits a job (reserving its images against the caller's daily quota, atomically) and
    /// queues it on its model (Unavailable when the model's lane is full). Errors here come
    /// before any answer is sent, so they reach a client as plain errors even for streams.
    pub async fn submit(self: &Arc<Self>, ctx: &RequestCtx, spec: JobSpec) -> Result<Job, ServiceError> {
        let quota = Held { svc: self.clone(), id: self.reserve_quota(&ctx.caller, spec.count).await? };
        let steps = spec.steps.unwrap_or(spec.model.defaults.steps).max(1);
        let base_seed = spec.seed.unwrap_or_else(rand::random);
        let seeds: Vec<u64> = (0..u64::from(spec.count)).map(|i| base_seed.wrapping_add(i)).collect();
        let lane = Lane::for_output(spec.width, spec.height);
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::unbounded_channel();
        let enlarge = spec
            .edit
            .as_ref()
            .and_then(|p| p.enlarge_request())
            .map(|r| Box::new(EnlargeJob { image: r.image.clone(), width: r.width, height: r.height }));
        let exact_edit = enlarge.is_none() && spec.edit.as_ref().is_some_and(|p| p.paint_request().is_none());
        let result = exact_edit.then(|| Ok(Vec::new()));
        if !exact_edit {
            let requests = if enlarge.is_some() { Vec::new() } else { spec.engine_requests(steps, &seeds) };
            spec.model
                .submit(EngineJob {
                    requests,
                    enlarge,
                    caller: ctx.caller.label().to_string(),
                    lane,
                    cancel: cancel.clone(),
                    progress: spec.progress,
                    previews: spec.partial_images,
                    events: tx,
                })
                .await?;
        }
        Ok(Job {
            spec,
            ctx: ctx.clone(),
            steps,
            seeds,
            events: rx,
            result,
            guard: CancelOnDrop { flag: cancel, armed: true },
            quota,
            queued: Instant::now(),
        })
    }

    /// The reservation for `wanted` images under the daily quota (None when unlimited).
    async fn reserve_quota(&self, caller: &Caller, wanted: u32) -> Result<Option<String>, ServiceError> {
        let per_day = self.config.limits.images_per_day;
        if per_day == 0 {
            return Ok(None);
        }
        let (start, left) = crate::keys::utc_day_bounds(plantain_store::now());
        match self.stores.meta.reserve_images(caller.key_id.as_deref(), start, u64::from(wanted), u64::from(per_day)).await? {
            Reservation::Held(id) => Ok(Some(id)),
            Reservation::Exceeded { used } => Err(ServiceError::exhausted(
                format!(
                    "daily image quota reached for {}: {used} of {per_day} images used today (UTC); {wanted} more asked",
                    caller.label()
                ),
                left as u64,
            )),
        }
    }
}

impl Job {
    /// The next progress or partial-image event; `None` once the engine has answered.
    pub async fn next(&mut self) -> Option<JobEvent> {
        if self.result.is_some() {
            return None;
        }
        match self.events.recv().await {
            Some(WorkerEvent::Progress(p)) => Some(JobEvent::Progress(p)),
            Some(WorkerEvent::Partial(mut p)) => {
                // An edit's partial image is pasted back like its final one: outside the
                // region it shows the input, not the painter's canvas.
                if let Some(edited) = self.spec.edit.as_ref().and_then(|plan| plan.finish(Some(p.picture.clone())).ok()) {
                    p.picture = edited.image;
                }
                Some(JobEvent::Partial(p))
            }
            Some(WorkerEvent::Done(r)) => {
                self.result = Some(r.map_err(engine_error));
                None
            }
            Some(WorkerEvent::Refused(e)) => {
                self.result = Some(Err(e));
                None
            }
            None => {
                self.result = Some(Err(engine_error(EngineError::Cancelled)));
                None
            }
        }
    }

    /// Waits for the engine (skipping events nobody asked to see); nothing is stamped or stored.
    pub async fn run(mut self) -> Result<Ran, ServiceError> {
        while self.next().await.is_some() {}
        match self.result.take() {
            Some(Ok(generated)) => {
                let made = made_of(&self.spec, generated, &self.seeds)?;
                Ok(Ran { job: self, made })
            }
            Some(Err(e)) => Err(e),
            None => Err(engine_error(EngineError::Cancelled)),
        }
    }

    /// Runs, then publishes every image.
    pub async fn finish(self, svc: &Service) -> Result<Vec<Output>, ServiceError> {
        let ran = self.run().await?;
        svc.publish(ran).await
    }

    pub(crate) fn queued_for(&self) -> std::time::Duration {
        self.queued.elapsed()
    }

    /// The job was published: dropping it cancels nothing, and its reservation became records.
    pub(crate) fn settle(&mut self) {
        self.guard.armed = false;
        self.quota.id = None;
    }

    /// The quota reservation it holds (turned into records on publish).
    pub(crate) fn reservation(&self) -> Option<&str> {
        self.quota.id.as_deref()
    }
}
