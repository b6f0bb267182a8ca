//! One worker thread owns each loaded model. Jobs wait in a bounded queue with two lanes
//! (previews ≤ 1K and finals 2K/4K); within a lane callers (API keys) are served round-robin,
//! one job each in turn, so a caller that queued many jobs cannot starve one that queued one.
//! A full lane answers 503.

use std::collections::{HashMap, VecDeque};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Instant;

use image::RgbImage;
use plantain_core::{DEFAULT_GUIDANCE, DEFAULT_STEPS, DEFAULT_STRENGTH};
use plantain_engine::error::EngineError;
use plantain_engine::pipeline::WeightOptions;
use plantain_engine::pipeline::{GenerateRequest, Generated, LoadOptions, ModelSource, Pipeline, Progress, StepLatents};
use plantain_engine::resize::{Lanczos3, Resizer};
use plantain_engine::runtime::RuntimeOptions;
use plantain_engine::upscale::{SuperResolution, UpscaleModel, Upscaler};
use plantain_hub::{Layout, ResolveOptions, resolve};
use tokio::sync::mpsc;

use crate::config::ModelConfig;
use crate::error::ServiceError;
use crate::shared::SharedQueue;

/// Which lane a job waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// Outputs up to 1K: interactive previews.
    Preview = 0,
    /// 2K and 4K outputs.
    Final = 1,
}

impl Lane {
    /// The lane of an output of `width`x`height`: up to 1.6 megapixels (every 1K size) is a
    /// preview, anything larger (2K, 4K) a final.
    pub fn for_output(width: u32, height: u32) -> Lane {
        if u64::from(width) * u64::from(height) <= 1_600_000 { Lane::Preview } else { Lane::Final }
    }
}

/// Step `step` of `total` of image `image` (0-based) of a job.
#[derive(Clone, Copy, Debug)]
pub struct ProgressEvent {
    pub image: usize,
    pub step: usize,
    pub total: usize,
}

/// A partial image (preview) of image `image` (0-based) of a job, decoded from the model's
/// estimate of the finished picture after denoising step `step` of `total`; the output size.
#[derive(Debug)]
pub struct PreviewEvent {
    pub image: usize,
    /// 0-based among this image's previews.
    pub index: usize,
    pub step: usize,
    pub total: usize,
    pub picture: RgbImage,
}

/// What a running job reports, in order, on its one event stream: progress and partial images
/// while the engine runs (when asked for), then exactly one `Done` (or `Refused`).
#[derive(Debug)]
pub enum WorkerEvent {
    Progress(ProgressEvent),
    Partial(PreviewEvent),
    Done(JobResult),
    /// The job was not run, for a reason the client may retry on (the shared queue: no worker
    /// took it in time).
    Refused(ServiceError),
}

/// The steps (1-based, of `total`) at which `count` previews are made: evenly spaced inside
/// the run, `ceil(k * total / (m + 1))` for `k = 1..=m` with `m = min(count, total)` — at most
/// one per step, and the last step (the finished picture) only when there are no more steps
/// than previews.
pub fn preview_steps(count: usize, total: usize) -> Vec<usize> {
    let m = count.min(total);
    (1..=m).map(|k| (k * total).div_ceil(m + 1)).collect()
}

pub type JobResult = Result<Vec<Generated>, EngineError>;

/// An upscale edit's work: `image` enlarged to exactly `width`x`height` by the model's
/// super-resolution model (the `upscaler` of its config).
#[derive(Clone, Debug)]
pub struct EnlargeJob {
    pub image: RgbImage,
    pub width: u32,
    pub height: u32,
}

/// A unit of work for a model: one or more engine requests run back to back, or an
/// enlargement (then `requests` is empty).
pub struct EngineJob {
    pub requests: Vec<GenerateRequest>,
    pub enlarge: Option<Box<EnlargeJob>>,
    /// Who asked (key id or client); the queue alternates between callers.
    pub caller: String,
    pub lane: Lane,
    /// Set when the client went away: the job stops between denoising steps.
    pub cancel: Arc<AtomicBool>,
    /// Send progress events.
    pub progress: bool,
    /// Partial images to make per image, at evenly spaced steps ([`preview_steps`]).
    pub previews: usize,
    pub events: mpsc::UnboundedSender<WorkerEvent>,
}

impl EngineJob {
    /// Whoever waits for this job is gone (or it was cancelled).
    pub(crate) fn abandoned(&self) -> bool {
        self.cancel.load(Ordering::Relaxed) || self.events.is_closed()
    }

    pub(crate) fn answer(&self, r: JobResult) {
        let _ = self.events.send(WorkerEvent::Done(r));
    }
}

/// Where a model stands.
#[derive(Clone, Debug)]
pub enum ModelState {
    Loading,
    Ready { family: String },
    Failed(String),
}

/// The defaults a model's requests start from.
#[derive(Clone, Copy, Debug)]
pub struct ModelDefaults {
    pub steps: usize,
    pub guidance: f32,
    pub strength: f32,
    pub native: u32,
    /// Known by its folder, before it loads, to be FLUX.2 [klein] (flow matching), which edits
    /// by the words and reads several pictures at once: edits plan for it from the start.
    pub reads_references: bool,
}

/// One lane: a FIFO per caller and the round-robin order of callers with waiting jobs.
#[derive(Default)]
struct LaneQueue {
    jobs: HashMap<String, VecDeque<EngineJob>>,
    /// Callers with at least one waiting job; the front one is served next.
    turn: VecDeque<String>,
    len: usize,
}

impl LaneQueue {
    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, job: EngineJob) {
        let q = self.jobs.entry(job.caller.clone()).or_default();
        if q.is_empty() {
            // A caller with nothing waiting joins at the back of the round.
            self.turn.push_back(job.caller.clone());
        }
        q.push_back(job);
        self.len += 1;
    }

    /// The oldest job of the caller whose turn it is; that caller goes to the back of the
    /// round if it has more waiting.
    fn pop(&mut self) -> Option<EngineJob> {
        let caller = self.turn.pop_front()?;
        let q = self.jobs.get_mut(&caller)?;
        let job = q.pop_front()?;
        if q.is_empty() {
            self.jobs.remove(&caller);
        } else {
            self.turn.push_back(caller);
        }
        self.len -= 1;
        Some(job)
    }

    fn drain(&mut self) -> Vec<EngineJob> {
        let mut v = Vec::with_capacity(self.len);
        while let Some(j) = self.pop() {
            v.push(j);
        }
        v
    }
}

struct QueueInner {
    lanes: [LaneQueue; 2],
    previews_in_row: u32,
    busy: bool,
    shutdown: bool,
}

struct Queue {
    inner: Mutex<QueueInner>,
    cv: Condvar,
    capacity: usize,
    /// Most jobs one caller may have waiting in a lane (at most `capacity`).
    per_caller: usize,
}

/// Why a job was not queued.
pub(crate) enum Refused {
    /// The lane is full (or the worker is shutting down).
    Full,
    /// The caller already has its share of the lane waiting.
    CallerShare,
}

/// After this many preview jobs in a row a waiting final job goes first (no starvation).
const PREVIEW_BURST: u32 = 4;

impl QueueInner {
    fn new() -> Self {
        QueueInner { lanes: [LaneQueue::default(), LaneQueue::default()], previews_in_row: 0, busy: false, shutdown: false }
    }

    /// The next job without waiting: previews first (but a final after a burst of previews);
    /// within the lane, the caller whose turn it is (round-robin).
    fn take(&mut self) -> Option<EngineJob> {
        let lane = match (self.lanes[0].is_empty(), self.lanes[1].is_empty()) {
            (true, true) => return None,
            (false, true) => 0,
            (true, false) => 1,
            (false, false) => usize::from(self.previews_in_row >= PREVIEW_BURST),
        };
        self.previews_in_row = if lane == 0 { self.previews_in_row + 1 } else { 0 };
        self.lanes[lane].pop()
    }
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, job: EngineJob) -> Result<(), (EngineJob, Refused)> {
        let mut q = self.lock();
        let lane = &q.lanes[job.lane as usize];
        if q.shutdown || lane.len() >= self.capacity {
            return Err((job, Refused::Full));
        }
        if lane.jobs.get(&job.caller).map_or(0, VecDeque::len) >= self.per_caller {
            return Err((job, Refused::CallerShare));
        }
        q.lanes[job.lane as usize].push(job);
        self.cv.notify_one();
        Ok(())
    }

    /// The next job, waiting for one: see [`QueueInner::take`].
    fn pop(&self) -> Option<EngineJob> {
        let mut q = self.lock();
        loop {
            if q.shutdown {
                return None;
            }
            if let Some(job) = q.take() {
                q.busy = true;
                return Some(job);
            }
            q.busy = false;
            q = self.cv.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// A model and the thread that owns it.
pub struct Worker {
    pub name: String,
    pub defaults: ModelDefaults,
    /// Jobs stopped because their client went away.
    pub cancelled: Arc<AtomicU64>,
    queue: Arc<Queue>,
    /// Set on `--role api` nodes: the model's jobs go to the shared queue, and workers
    /// elsewhere run them (`queue` stays empty, no thread loads the model here).
    shared: Option<Arc<SharedQueue>>,
    state: Arc<Mutex<ModelState>>,
    /// The loaded model, shared with the edit planner (DiffEdit lookups, the painter's kind).
    loaded: Arc<Mutex<Option<Arc<Pipeline>>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Worker {
    /// Resolves the model (offline) and starts its thread, which loads it. Never fails: a model
    /// that cannot be found or loaded is reported by [`Worker::state`] and answers 503.
    pub fn spawn(cfg: &ModelConfig) -> Worker {
        let (queue, defaults, resolved) = Self::prepare(cfg);
        let state = Arc::new(Mutex::new(ModelState::Loading));
        let source = match resolved {
            Ok(source) => Some(source),
            Err(e) => {
                tracing::warn!(model = %cfg.name, error = %e, "model not available");
                *state.lock().unwrap_or_else(|p| p.into_inner()) = ModelState::Failed(e);
                None
            }
        };
        let runtime = RuntimeOptions { threads: cfg.threads, cuda: cfg.device == crate::config::Device::Cuda, ..Default::default() };
        let enlarger = Enlarger { model: cfg.upscale_model(), runtime: runtime.clone(), loaded: OnceLock::new() };
        let weights =
            WeightOptions { weights: cfg.weights, transformer_file: cfg.transformer_file.clone(), lean: cfg.lean, ..Default::default() };
        let opts = LoadOptions { runtime, tiny_autoencoder: cfg.tiny_vae.clone(), loras: cfg.loras.clone(), weights, ..Default::default() };
        let cancelled = Arc::new(AtomicU64::new(0));
        let loaded = Arc::new(Mutex::new(None));
        let (q, st, name, c, l) = (queue.clone(), state.clone(), cfg.name.clone(), cancelled.clone(), loaded.clone());
        let thread = std::thread::Builder::new()
            .name(format!("model-{}", cfg.name))
            .spawn(move || run_worker(&name, source, &opts, &enlarger, &q, (&st, &l), &c))
            .ok();
        Worker { name: cfg.name.clone(), defaults, cancelled, queue, shared: None, state, loaded, thread: Mutex::new(thread) }
    }

    /// A model whose jobs the shared queue's workers run (`--role api`): nothing is loaded
    /// here. Its defaults come from the model's files when this node has them, else from the
    /// config and the shared defaults; it is ready at once (workers answer for the model).
    pub fn spawn_shared(cfg: &ModelConfig, shared: Arc<SharedQueue>) -> Worker {
        let (queue, defaults, resolved) = Self::prepare(cfg);
        if let Err(e) = resolved {
            tracing::info!(model = %cfg.name, note = %e, "model files not on this API node: config defaults apply");
        }
        Worker {
            name: cfg.name.clone(),
            defaults,
            cancelled: Arc::new(AtomicU64::new(0)),
            queue,
            shared: Some(shared),
            state: Arc::new(Mutex::new(ModelState::Ready { family: "shared queue".into() })),
            loaded: Arc::new(Mutex::new(None)),
            thread: Mutex::new(None),
        }
    }

    /// The in-process queue, the model's defaults, and where its weights are.
    fn prepare(cfg: &ModelConfig) -> (Arc<Queue>, ModelDefaults, Result<ModelSource, String>) {
        let capacity = cfg.queue.max(1);
        let per_caller = cfg.queue_per_key.unwrap_or(capacity).clamp(1, capacity);
        let queue = Arc::new(Queue { inner: Mutex::new(QueueInner::new()), cv: Condvar::new(), capacity, per_caller });
        let spec = cfg.source.clone().unwrap_or_else(|| cfg.name.clone());
        let mut defaults = ModelDefaults {
            steps: cfg.steps.unwrap_or(DEFAULT_STEPS),
            guidance: cfg.guidance.unwrap_or(DEFAULT_GUIDANCE),
            strength: cfg.strength.unwrap_or(DEFAULT_STRENGTH),
            native: 512,
            reads_references: false,
        };
        let resolved = resolve(&spec, &ResolveOptions::for_this_install()).map_err(|e| e.to_string()).and_then(|r| {
            let source = match r.layout {
                Layout::Diffusers => ModelSource::Diffusers(r.path.clone()),
                Layout::SingleFile => ModelSource::SingleFile { file: r.path.clone(), config_dir: cfg.config_dir.clone() },
                Layout::Onnx => {
                    return Err(format!("{}: ONNX exports are not loaded; use the model's safetensors weights", r.path.display()));
                }
            };
            defaults.steps = cfg.steps.unwrap_or(r.defaults.steps as usize).max(1);
            defaults.guidance = cfg.guidance.unwrap_or(r.defaults.guidance);
            defaults.native = r.defaults.resolution;
            defaults.reads_references = r.defaults.prediction == plantain_hub::Prediction::FlowMatching;
            Ok(source)
        });
        (queue, defaults, resolved)
    }

    /// The model, once loaded.
    pub fn pipeline(&self) -> Option<Arc<Pipeline>> {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The edit planner's painter for this model: the loaded model's kind (or, still loading,
    /// FLUX.2 [klein] known by its folder), or on an API node what the model's live workers
    /// announced (`None`: none is known).
    pub async fn painter(&self) -> Option<plantain_director::edit::Painter> {
        if let Some(p) = self.pipeline() {
            return Some(plantain_director::edit::painter_for(&p));
        }
        if self.defaults.reads_references {
            return Some(plantain_director::edit::Painter::References);
        }
        let shared = self.shared.as_ref()?;
        match shared.store.announced_kind(&self.name).await {
            Ok(kind) => kind.as_deref().and_then(crate::shared::painter_from),
            Err(e) => {
                tracing::warn!(model = %self.name, error = %e, "reading the workers' model kind failed; planning as for a text-to-image model");
                None
            }
        }
    }

    pub fn state(&self) -> ModelState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Jobs waiting (both lanes) and whether one is running.
    pub fn depth(&self) -> (usize, bool) {
        let q = self.queue.lock();
        (q.lanes[0].len() + q.lanes[1].len(), q.busy)
    }

    pub fn capacity(&self) -> usize {
        self.queue.capacity
    }

    /// Queues a job; 503 UNAVAILABLE when the model is not loaded or its lane is full, 429
    /// RESOURCE_EXHAUSTED when the caller already has its share of the lane waiting. On an API
    /// node the job goes to the shared queue instead ([`SharedQueue::submit`]).
    pub async fn submit(&self, job: EngineJob) -> Result<(), ServiceError> {
        if let Some(shared) = &self.shared {
            let limits = plantain_store::QueueLimits { capacity: self.queue.capacity, per_caller: self.queue.per_caller };
            return shared.submit(&self.name, job, limits).await;
        }
        if let ModelState::Failed(e) = self.state() {
            return Err(ServiceError::unavailable(format!("model {} is not available: {e}", self.name), 60));
        }
        let lane = job.lane;
        self.queue.push(job).map_err(|(_, why)| refusal(&self.name, lane, why, self.queue.capacity, self.queue.per_caller))
    }

    /// Stops the thread after the running job (queued jobs are answered with an error).
    pub fn shutdown(&self) {
        let drained: Vec<EngineJob> = {
            let mut q = self.queue.lock();
            q.shutdown = true;
            let mut v = q.lanes[0].drain();
            v.extend(q.lanes[1].drain());
            v
        };
        self.queue.cv.notify_all();
        for j in drained {
            j.answer(Err(EngineError::Cancelled));
        }
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

/// The answer to a job refused by a model's queue (in-process or shared: the same words and
/// statuses): 503 UNAVAILABLE when the lane is full, 429 RESOURCE_EXHAUSTED when the caller
/// already has its share of the lane waiting; both with a Retry-After.
pub(crate) fn refusal(model: &str, lane: Lane, why: Refused, capacity: usize, per_caller: usize) -> ServiceError {
    let lane = if lane == Lane::Preview { "preview" } else { "final" };
    match why {
        Refused::Full => {
            ServiceError::unavailable(format!("model {model} is busy: its {lane} queue is full ({capacity} jobs); retry later"), 2)
        }
        Refused::CallerShare => ServiceError::exhausted(
            format!(
                "this API key already has {per_caller} jobs waiting in model {model}'s {lane} queue (its share); retry when one has run"
            ),
            2,
        ),
    }
}

fn run_worker(
    name: &str,
    source: Option<ModelSource>,
    opts: &LoadOptions,
    enlarger: &Enlarger,
    queue: &Queue,
    (state, loaded): (&Mutex<ModelState>, &Mutex<Option<Arc<Pipeline>>>),
    cancelled: &AtomicU64,
) {
    let set = |s: ModelState| *state.lock().unwrap_or_else(|p| p.into_inner()) = s;
    let pipeline = match source {
        None => None,
        Some(src) => {
            let t = Instant::now();
            match Pipeline::load(&src, opts) {
                Ok(p) => {
                    tracing::info!(model = name, architecture = %p.architecture(), secs = t.elapsed().as_secs_f32(), "model loaded");
                    let p = Arc::new(p);
                    *loaded.lock().unwrap_or_else(|e| e.into_inner()) = Some(p.clone());
                    set(ModelState::Ready { family: p.architecture() });
                    Some(p)
                }
                Err(e) => {
                    tracing::error!(model = name, error = %e, "model failed to load");
                    set(ModelState::Failed(e.to_string()));
                    None
                }
            }
        }
    };
    while let Some(job) = queue.pop() {
        let Some(p) = &pipeline else {
            job.answer(Err(EngineError::Unsupported(format!("model {name} is not loaded"))));
            continue;
        };
        if job.abandoned() {
            tracing::info!(model = name, "job cancelled before it started (client gone)");
            cancelled.fetch_add(1, Ordering::Relaxed);
            job.answer(Err(EngineError::Cancelled));
            continue;
        }
        let result = match &job.enlarge {
            Some(e) => run_enlarge(enlarger, &job, e),
            None => run_job(p, enlarger, &job),
        };
        if matches!(result, Err(EngineError::Cancelled)) {
            tracing::info!(model = name, "job cancelled between steps (client gone)");
            cancelled.fetch_add(1, Ordering::Relaxed);
        }
        job.answer(result);
    }
}

/// What makes the sizes larger than the model's canvas (2K, 4K): a Real-ESRGAN model, loaded on
/// first use, then Lanczos3 to the exact pixels; Lanczos3 alone where none is configured or its
/// files are missing (said once in the log).
struct Enlarger {
    model: Option<UpscaleModel>,
    runtime: RuntimeOptions,
    loaded: OnceLock<Option<SuperResolution>>,
}

impl Enlarger {
    /// The resizer for a picture drawn at `canvas` and asked at `requested`: the upscaler for the
    /// 2K and 4K sizes (the final lane), Lanczos3 for the rest, as for partial images.
    fn resizer(&self, canvas: (u32, u32), requested: (u32, u32)) -> &dyn Resizer {
        let enlarged = requested.0 > canvas.0 || requested.1 > canvas.1;
        let final_size = Lane::for_output(requested.0, requested.1) == Lane::Final;
        if !(enlarged && final_size) {
            return &Lanczos3;
        }
        match self.model() {
            Some(sr) => sr as &dyn Resizer,
            None => &Lanczos3,
        }
    }

    /// The configured super-resolution model, loaded on first use (None: none is configured,
    /// or its files are missing).
    fn model(&self) -> Option<&SuperResolution> {
        let model = self.model?;
        self.loaded
            .get_or_init(|| match Upscaler::load(model, 4, &self.runtime) {
                Ok(upscaler) => Some(SuperResolution { upscaler }),
                Err(e) => {
                    tracing::warn!(upscaler = model.name(), error = %e, "upscaler unavailable: large sizes are resized with Lanczos3");
                    None
                }
            })
            .as_ref()
    }
}

/// An upscale edit: the super-resolution model tile by tile (progress per tile, cancelled
/// between tiles), or Lanczos3 where none is configured or installed (said in the warnings).
/// The picture comes back at the model's own factor; the edit's plan closes it onto the
/// exact pixels.
fn run_enlarge(enlarger: &Enlarger, job: &EngineJob, e: &EnlargeJob) -> JobResult {
    let started = Instant::now();
    let mut warnings = Vec::new();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match enlarger.model() {
        Some(sr) => sr.upscaler.upscale(&e.image, &mut |done, total| {
            if job.abandoned() {
                return ControlFlow::Break(());
            }
            if job.progress {
                let _ = job.events.send(WorkerEvent::Progress(ProgressEvent { image: 0, step: done, total }));
            }
            ControlFlow::Continue(())
        }),
        None => {
            warnings.push("no super-resolution model is configured or installed for this model: enlarged with Lanczos3".to_string());
            Lanczos3.resize(e.image.clone(), e.width, e.height)
        }
    }))
    .unwrap_or_else(|_| Err(EngineError::Runtime("the upscaler panicked on this picture".into())));
    if job.cancel.load(Ordering::Relaxed) {
        return Err(EngineError::Cancelled);
    }
    let image = r?;
    let timings = plantain_engine::pipeline::Timings { decode: started.elapsed(), ..Default::default() };
    Ok(vec![Generated::enlarged(image, (e.width, e.height), timings, warnings)])
}

fn run_job(p: &Pipeline, enlarger: &Enlarger, job: &EngineJob) -> JobResult {
    let mut out = Vec::with_capacity(job.requests.len());
    for (i, req) in job.requests.iter().enumerate() {
        let mut at: Vec<usize> = Vec::new();
        let mut made = 0;
        let mut preview_error = None;
        let mut cb = |pr: &Progress, st: &StepLatents<'_>| {
            if job.abandoned() {
                return ControlFlow::Break(());
            }
            if job.progress {
                let _ = job.events.send(WorkerEvent::Progress(ProgressEvent { image: i, step: pr.step, total: pr.total }));
            }
            if job.previews > 0 {
                if pr.step == 1 {
                    // The step count is known once the run starts (img2img runs part of it).
                    at = preview_steps(job.previews, pr.total);
                }
                if at.contains(&pr.step) {
                    match p.preview(st).and_then(|canvas| Lanczos3.resize(canvas, req.width, req.height)) {
                        Ok(picture) => {
                            let _ = job.events.send(WorkerEvent::Partial(PreviewEvent {
                                image: i,
                                index: made,
                                step: pr.step,
                                total: pr.total,
                                picture,
                            }));
                            made += 1;
                        }
                        Err(e) => {
                            // A partial image that cannot be made stops the job with that error
                            // rather than leaving the stream short of what was asked.
                            preview_error = Some(e);
                            return ControlFlow::Break(());
                        }
                    }
                }
            }
            ControlFlow::Continue(())
        };
        // A panic inside the engine must not take the worker (and the model) down.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let g = p.generate_with(req, &mut cb)?;
            let resizer = enlarger.resizer(g.canvas, g.requested);
            g.resized(resizer)
        }))
        .unwrap_or_else(|_| Err(EngineError::Runtime("the engine panicked on this request".into())));
        if job.cancel.load(Ordering::Relaxed) {
            return Err(EngineError::Cancelled);
        }
        if let Some(e) = preview_error {
            return Err(EngineError::Runtime(format!("making a partial image failed: {e}")));
        }
        out.push(r?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(caller: &str, lane: Lane, tag: usize) -> EngineJob {
        let (events, _) = mpsc::unbounded_channel();
        // The request's seed carries a tag, so the test can tell jobs apart.
        let mut r = GenerateRequest::new("x", 64, 64);
        r.seed = tag as u64;
        EngineJob {
            requests: vec![r],
            enlarge: None,
            caller: caller.into(),
            lane,
            cancel: Arc::new(AtomicBool::new(false)),
            progress: false,
            previews: 0,
            events,
        }
    }

    fn order(q: &mut QueueInner) -> Vec<(String, u64)> {
        std::iter::from_fn(|| q.take()).map(|j| (j.caller.clone(), j.requests[0].seed)).collect()
    }

    #[test]
    fn previews_are_evenly_spaced_and_at_most_one_per_step() {
        assert_eq!(preview_steps(0, 25), Vec::<usize>::new());
        assert_eq!(preview_steps(1, 25), [13]);
        assert_eq!(preview_steps(2, 4), [2, 3]);
        assert_eq!(preview_steps(3, 4), [1, 2, 3]);
        assert_eq!(preview_steps(3, 25), [7, 13, 19]);
        // No more steps than previews: one per step, the last one included.
        assert_eq!(preview_steps(3, 3), [1, 2, 3]);
        assert_eq!(preview_steps(3, 2), [1, 2]);
        assert_eq!(preview_steps(2, 1), [1]);
        for total in 1..40 {
            for count in 0..=3 {
                let s = preview_steps(count, total);
                assert_eq!(s.len(), count.min(total));
                assert!(s.windows(2).all(|w| w[0] < w[1]) && s.iter().all(|&k| (1..=total).contains(&k)), "{count} of {total}: {s:?}");
            }
        }
    }

    #[test]
    fn callers_are_served_round_robin_within_a_lane() {
        let mut q = QueueInner::new();
        // A queues 50 jobs, then B queues 1, then C queues 2, then A one more.
        for i in 0..50 {
            q.lanes[0].push(job("A", Lane::Preview, i));
        }
        q.lanes[0].push(job("B", Lane::Preview, 100));
        q.lanes[0].push(job("C", Lane::Preview, 200));
        q.lanes[0].push(job("C", Lane::Preview, 201));
        q.lanes[0].push(job("A", Lane::Preview, 50));
        assert_eq!(q.lanes[0].len(), 54);
        let got = order(&mut q);
        assert_eq!(got.len(), 54);
        // B's only job is second, C's two jobs come one round apart, A's keep their order.
        let first: Vec<(&str, u64)> = got[..6].iter().map(|(c, t)| (c.as_str(), *t)).collect();
        assert_eq!(first, [("A", 0), ("B", 100), ("C", 200), ("A", 1), ("C", 201), ("A", 2)]);
        let a: Vec<u64> = got.iter().filter(|(c, _)| c == "A").map(|(_, t)| *t).collect();
        assert_eq!(a, (0..=50).collect::<Vec<_>>());
        assert!(q.lanes[0].is_empty() && q.lanes[0].jobs.is_empty() && q.lanes[0].turn.is_empty());

        // A caller that comes back after its queue emptied joins the back of the round.
        q.lanes[0].push(job("A", Lane::Preview, 1));
        assert_eq!(q.take().map(|j| j.requests[0].seed), Some(1));
        q.lanes[0].push(job("B", Lane::Preview, 3));
        q.lanes[0].push(job("B", Lane::Preview, 5));
        q.lanes[0].push(job("A", Lane::Preview, 4));
        assert_eq!(order(&mut q), [("B".into(), 3), ("A".into(), 4), ("B".into(), 5)]);
    }

    #[test]
    fn finals_run_after_a_burst_of_previews_and_lanes_are_fair_separately() {
        let mut q = QueueInner::new();
        for i in 0..6 {
            q.lanes[0].push(job("A", Lane::Preview, i));
        }
        q.lanes[0].push(job("B", Lane::Preview, 10));
        q.lanes[1].push(job("A", Lane::Final, 20));
        q.lanes[1].push(job("A", Lane::Final, 21));
        q.lanes[1].push(job("C", Lane::Final, 30));
        let got: Vec<u64> = order(&mut q).into_iter().map(|(_, t)| t).collect();
        // 4 previews (A, B alternating while B has one), a final, 4 more previews... finals
        // alternate A, C.
        assert_eq!(got, [0, 10, 1, 2, 20, 3, 4, 5, 30, 21]);
    }

    #[test]
    fn a_full_lane_refuses_and_shutdown_drains_every_caller() {
        let queue = Queue { inner: Mutex::new(QueueInner::new()), cv: Condvar::new(), capacity: 3, per_caller: 3 };
        assert!(queue.push(job("A", Lane::Preview, 0)).is_ok());
        assert!(queue.push(job("A", Lane::Preview, 1)).is_ok());
        assert!(queue.push(job("B", Lane::Preview, 2)).is_ok());
        assert!(queue.push(job("C", Lane::Preview, 3)).is_err(), "the lane holds 3");
        assert!(queue.push(job("C", Lane::Final, 4)).is_ok(), "lanes are bounded separately");
        assert_eq!(queue.pop().map(|j| j.caller), Some("A".into()));
        assert_eq!(queue.pop().map(|j| j.caller), Some("B".into()));
        let mut q = queue.lock();
        let mut left: Vec<u64> = q.lanes[0].drain().into_iter().chain(q.lanes[1].drain()).map(|j| j.requests[0].seed).collect();
        left.sort();
        assert_eq!(left, [1, 4]);
        assert_eq!(q.lanes[0].len() + q.lanes[1].len(), 0);
    }

    #[test]
    fn a_caller_cannot_take_more_than_its_share_of_a_lane() {
        let queue = Queue { inner: Mutex::new(QueueInner::new()), cv: Condvar::new(), capacity: 4, per_caller: 2 };
        assert!(queue.push(job("A", Lane::Preview, 0)).is_ok());
        assert!(queue.push(job("A", Lane::Preview, 1)).is_ok());
        assert!(matches!(queue.push(job("A", Lane::Preview, 2)), Err((_, Refused::CallerShare))));
        assert!(queue.push(job("A", Lane::Final, 3)).is_ok(), "shares are per lane");
        assert!(queue.push(job("B", Lane::Preview, 4)).is_ok(), "another caller still gets in");
        assert!(queue.push(job("C", Lane::Preview, 5)).is_ok());
        assert!(matches!(queue.push(job("D", Lane::Preview, 6)), Err((_, Refused::Full))));
        // Once one of A's jobs has run, A may queue again.
        assert_eq!(queue.pop().map(|j| j.caller), Some("A".into()));
        assert!(matches!(queue.push(job("D", Lane::Preview, 7)), Ok(())));
        assert!(matches!(queue.push(job("A", Lane::Preview, 8)), Err((_, Refused::Full))));
    }
}
