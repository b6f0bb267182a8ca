//! One worker thread owns each loaded model. Jobs wait in a bounded queue with two lanes
//! (previews ≤ 1K and finals 2K/4K), taken fairly across callers; a full lane answers 503.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use plantain_engine::error::EngineError;
use plantain_engine::pipeline::{GenerateRequest, Generated, LoadOptions, ModelSource, Pipeline};
use plantain_engine::runtime::RuntimeOptions;
use plantain_hub::{Layout, ResolveOptions, resolve};
use tokio::sync::{mpsc, oneshot};

use crate::config::ModelConfig;
use crate::error::ApiError;

/// Which lane a job waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// Outputs up to 1K: interactive previews.
    Preview = 0,
    /// 2K and 4K outputs.
    Final = 1,
}

/// Step `step` of `total` of image `image` (0-based) of a job.
#[derive(Clone, Copy, Debug)]
pub struct ProgressEvent {
    pub image: usize,
    pub step: usize,
    pub total: usize,
}

pub type JobResult = Result<Vec<Generated>, EngineError>;

/// A unit of work for a model: one or more engine requests run back to back.
pub struct EngineJob {
    pub requests: Vec<GenerateRequest>,
    /// Who asked (key id or client); the queue alternates between callers.
    pub caller: String,
    pub lane: Lane,
    /// Set when the client went away: the job stops between denoising steps.
    pub cancel: Arc<AtomicBool>,
    pub progress: Option<mpsc::UnboundedSender<ProgressEvent>>,
    pub reply: oneshot::Sender<JobResult>,
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
}

struct QueueInner {
    lanes: [VecDeque<EngineJob>; 2],
    last_caller: Option<String>,
    previews_in_row: u32,
    busy: bool,
    shutdown: bool,
}

struct Queue {
    inner: Mutex<QueueInner>,
    cv: Condvar,
    capacity: usize,
}

/// After this many preview jobs in a row a waiting final job goes first (no starvation).
const PREVIEW_BURST: u32 = 4;

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, job: EngineJob) -> Result<(), EngineJob> {
        let mut q = self.lock();
        if q.shutdown || q.lanes[job.lane as usize].len() >= self.capacity {
            return Err(job);
        }
        q.lanes[job.lane as usize].push_back(job);
        self.cv.notify_one();
        Ok(())
    }

    /// The next job: previews first (but a final after a burst of previews), and within a lane
    /// the first job from a caller other than the last one served, when there is one.
    fn pop(&self) -> Option<EngineJob> {
        let mut q = self.lock();
        loop {
            if q.shutdown {
                return None;
            }
            let lane = match (q.lanes[0].is_empty(), q.lanes[1].is_empty()) {
                (true, true) => {
                    q.busy = false;
                    q = self.cv.wait(q).unwrap_or_else(|p| p.into_inner());
                    continue;
                }
                (false, true) => 0,
                (true, false) => 1,
                (false, false) => usize::from(q.previews_in_row >= PREVIEW_BURST),
            };
            q.previews_in_row = if lane == 0 { q.previews_in_row + 1 } else { 0 };
            let last = q.last_caller.clone();
            let idx = q.lanes[lane].iter().position(|j| Some(&j.caller) != last.as_ref()).unwrap_or(0);
            let job = q.lanes[lane].remove(idx)?;
            q.last_caller = Some(job.caller.clone());
            q.busy = true;
            return Some(job);
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
    state: Arc<Mutex<ModelState>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Worker {
    /// Resolves the model (offline) and starts its thread, which loads it. Never fails: a model
    /// that cannot be found or loaded is reported by [`Worker::state`] and answers 503.
    pub fn spawn(cfg: &ModelConfig) -> Worker {
        let queue = Arc::new(Queue {
            inner: Mutex::new(QueueInner {
                lanes: [VecDeque::new(), VecDeque::new()],
                last_caller: None,
                previews_in_row: 0,
                busy: false,
                shutdown: false,
            }),
            cv: Condvar::new(),
            capacity: cfg.queue.max(1),
        });
        let spec = cfg.source.clone().unwrap_or_else(|| cfg.name.clone());
        let mut defaults = ModelDefaults {
            steps: cfg.steps.unwrap_or(25),
            guidance: cfg.guidance.unwrap_or(7.5),
            strength: cfg.strength.unwrap_or(0.75),
            native: 512,
        };
        let resolved = resolve(&spec, &ResolveOptions::from_env()).map_err(|e| e.to_string()).and_then(|r| {
            let source = match r.layout {
                Layout::Diffusers => ModelSource::Diffusers(r.path.clone()),
                Layout::SingleFile => ModelSource::SingleFile { file: r.path.clone(), config_dir: cfg.config_dir.clone() },
                Layout::Onnx => {
                    return Err(format!("{}: ONNX exports are not loaded; use the model's safetensors weights", r.path.display()));
                }
            };
            Ok((r, source))
        });
        let state = Arc::new(Mutex::new(ModelState::Loading));
        let source = match resolved {
            Ok((r, source)) => {
                defaults.steps = cfg.steps.unwrap_or(r.defaults.steps as usize).max(1);
                defaults.guidance = cfg.guidance.unwrap_or(r.defaults.guidance);
                defaults.native = r.defaults.resolution;
                Some(source)
            }
            Err(e) => {
                tracing::warn!(model = %cfg.name, error = %e, "model not available");
                *state.lock().unwrap_or_else(|p| p.into_inner()) = ModelState::Failed(e);
                None
            }
        };
        let opts = LoadOptions { runtime: RuntimeOptions { threads: cfg.threads, ..Default::default() }, ..Default::default() };
        let cancelled = Arc::new(AtomicU64::new(0));
        let (q, st, name, c) = (queue.clone(), state.clone(), cfg.name.clone(), cancelled.clone());
        let thread = std::thread::Builder::new()
            .name(format!("model-{}", cfg.name))
            .spawn(move || run_worker(&name, source, &opts, &q, &st, &c))
            .ok();
        Worker { name: cfg.name.clone(), defaults, cancelled, queue, state, thread: Mutex::new(thread) }
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

    /// Queues a job; 503 UNAVAILABLE when the model is not loaded or its lane is full.
    pub fn submit(&self, job: EngineJob) -> Result<(), ApiError> {
        if let ModelState::Failed(e) = self.state() {
            return Err(ApiError::unavailable(format!("model {} is not available: {e}", self.name), 60));
        }
        let lane = job.lane;
        self.queue.push(job).map_err(|_| {
            ApiError::unavailable(
                format!(
                    "model {} is busy: its {} queue is full ({} jobs); retry later",
                    self.name,
                    if lane == Lane::Preview { "preview" } else { "final" },
                    self.queue.capacity
                ),
                2,
            )
        })
    }

    /// Stops the thread after the running job (queued jobs are answered with an error).
    pub fn shutdown(&self) {
        let drained: Vec<EngineJob> = {
            let mut q = self.queue.lock();
            q.shutdown = true;
            let mut v: Vec<EngineJob> = q.lanes[0].drain(..).collect();
            v.extend(q.lanes[1].drain(..));
            v
        };
        self.queue.cv.notify_all();
        for j in drained {
            let _ = j.reply.send(Err(EngineError::Cancelled));
        }
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

fn run_worker(
    name: &str,
    source: Option<ModelSource>,
    opts: &LoadOptions,
    queue: &Queue,
    state: &Mutex<ModelState>,
    cancelled: &AtomicU64,
) {
    let set = |s: ModelState| *state.lock().unwrap_or_else(|p| p.into_inner()) = s;
    let pipeline = match source {
        None => None,
        Some(src) => {
            let t = Instant::now();
            match Pipeline::load(&src, opts) {
                Ok(p) => {
                    tracing::info!(model = name, family = %p.family(), secs = t.elapsed().as_secs_f32(), "model loaded");
                    set(ModelState::Ready { family: p.family().to_string() });
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
            let _ = job.reply.send(Err(EngineError::Unsupported(format!("model {name} is not loaded"))));
            continue;
        };
        if job.cancel.load(Ordering::Relaxed) || job.reply.is_closed() {
            tracing::info!(model = name, "job cancelled before it started (client gone)");
            cancelled.fetch_add(1, Ordering::Relaxed);
            let _ = job.reply.send(Err(EngineError::Cancelled));
            continue;
        }
        let result = run_job(p, &job);
        if matches!(result, Err(EngineError::Cancelled)) {
            tracing::info!(model = name, "job cancelled between steps (client gone)");
            cancelled.fetch_add(1, Ordering::Relaxed);
        }
        let _ = job.reply.send(result);
    }
}

fn run_job(p: &Pipeline, job: &EngineJob) -> JobResult {
    let mut out = Vec::with_capacity(job.requests.len());
    for (i, req) in job.requests.iter().enumerate() {
        let mut cb = |pr: &plantain_engine::pipeline::Progress| {
            if job.cancel.load(Ordering::Relaxed) || job.reply.is_closed() {
                return ControlFlow::Break(());
            }
            if let Some(tx) = &job.progress {
                let _ = tx.send(ProgressEvent { image: i, step: pr.step, total: pr.total });
            }
            ControlFlow::Continue(())
        };
        // A panic inside the engine must not take the worker (and the model) down.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.generate(req, &mut cb)))
            .unwrap_or_else(|_| Err(EngineError::Runtime("the engine panicked on this request".into())));
        if job.cancel.load(Ordering::Relaxed) {
            return Err(EngineError::Cancelled);
        }
        out.push(r?);
    }
    Ok(out)
}
