//! The shared job queue (issue 27): how `--role api` nodes and `--role worker` nodes hand jobs
//! over through PostgreSQL ([`plantain_store::PgStore`]'s `jobs` and `job_events`).
//!
//! - An API node's model is a [`SharedQueue`]: [`SharedQueue::submit`] enqueues the engine
//!   requests (the validated job; input images as PNG) and relays what the job reports —
//!   progress, partial images, then its pictures — to the waiting request, from `job_events`
//!   rows a `NOTIFY` names ([`EventHub`]: one `LISTEN` connection per node). A client that goes
//!   away cancels the job in the queue; its worker learns it at its next heartbeat and stops
//!   between steps.
//! - A worker node runs [`serve_worker`]: per loaded model, claim a job (previews first, callers
//!   round-robin — see the store), run it on the model's thread, heartbeat its lease, record
//!   progress and partial images, and settle it with its outputs. A worker killed mid-job stops
//!   heartbeating; once the lease runs out another worker claims the job and runs it again.
//!
//! Publishing (stamping, storing, metering) stays on the API node, as in the one-node mode:
//! a worker only runs the engine.

use std::collections::HashMap;
use std::io::Cursor;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use image::{ImageFormat, RgbImage};
use plantain_director::edit::Painter;
use plantain_engine::error::EngineError;
use plantain_engine::pipeline::{Decoder, GenerateRequest, Generated, Timings};
use plantain_schedulers::SchedulerKind;
use plantain_store::{Heartbeat, JobLane, JobState, Lease, NewJob, OUTPUT_EVENT, Offer, PgStore, QueueLimits, QueuedJob};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use crate::error::ServiceError;
use crate::worker::{EngineJob, EnlargeJob, Lane, ModelState, PreviewEvent, ProgressEvent, Refused, Worker, WorkerEvent, refusal};

/// How often a waiting request looks at its job without a notification (a lost `NOTIFY`
/// only delays it this long).
const POLL: Duration = Duration::from_millis(500);

/// Wakes the requests waiting on jobs when a notification names their job.
#[derive(Default)]
pub struct EventHub {
    waiting: Mutex<HashMap<String, Arc<Notify>>>,
}

impl EventHub {
    fn subscribe(&self, id: &str) -> Arc<Notify> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).entry(id.to_string()).or_default().clone()
    }

    fn unsubscribe(&self, id: &str) {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    fn wake(&self, id: &str) {
        if let Some(n) = self.waiting.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            n.notify_one();
        }
    }

    /// Listens on the store's events channel for as long as the process runs (reconnecting
    /// after errors), waking the jobs' waiters.
    pub async fn listen(self: Arc<Self>, store: Arc<PgStore>) {
        loop {
            match store.job_events_listener().await {
                Ok(mut l) => loop {
                    match l.recv().await {
                        Ok(id) => self.wake(&id),
                        Err(e) => {
                            tracing::warn!(error = %e, "job events listener failed; reconnecting");
                            break;
                        }
                    }
                },
                Err(e) => tracing::warn!(error = %e, "cannot listen for job events; retrying"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// The `kind` of a job's error when no worker took it in time (an API node's wait, or
/// housekeeping): the client gets 503 "retry later", not an engine failure.
const UNCLAIMED: &str = "unclaimed";

/// A model served by workers elsewhere: its jobs go into the shared queue.
pub struct SharedQueue {
    pub store: Arc<PgStore>,
    pub hub: Arc<EventHub>,
    /// A job no worker took within this long is failed, 503 "retry later" (`[storage]
    /// job_unclaimed_secs`).
    pub unclaimed: Duration,
}

/// The error a job gets when no worker took it in `secs` seconds.
pub fn unclaimed_error(model: &str, secs: u64) -> Value {
    let message = format!(
        "no worker took this job for model {model} within {secs} s (no worker with the model is running, or all are busy); retry later"
    );
    json!({"error": {"kind": UNCLAIMED, "message": message}})
}

impl SharedQueue {
    /// Enqueues `job` for `model` — unless no live worker serves the model (503 naming it), its
    /// lane is full (503) or the caller has its share of the lane waiting (429), counted across
    /// every API node — and relays what it reports to `job.events` until it ends.
    pub async fn submit(self: &Arc<Self>, model: &str, job: EngineJob, limits: QueueLimits) -> Result<(), ServiceError> {
        if self.store.live_workers(model).await?.is_empty() {
            return Err(ServiceError::unavailable(
                format!(
                    "model {model} is not available: no worker serving it is running (none has announced it to the shared queue); retry later"
                ),
                10,
            ));
        }
        let id = crate::new_id();
        let lane = if job.lane == Lane::Preview { JobLane::Preview } else { JobLane::Final };
        let payload = encode_job(&job).map_err(|e| ServiceError::internal(format!("encoding the job: {e}")))?;
        let new = NewJob { id: id.clone(), model: model.to_string(), lane, caller: job.caller.clone(), payload };
        // Subscribed before the job exists, so that no notification of it is missed.
        let notify = self.hub.subscribe(&id);
        let offered = self.store.offer_job(&new, Some(limits)).await;
        let refused = match offered {
            Ok(Offer::Queued) => None,
            Ok(Offer::LaneFull) => Some(refusal(model, job.lane, Refused::Full, limits.capacity, limits.per_caller)),
            Ok(Offer::CallerShare) => Some(refusal(model, job.lane, Refused::CallerShare, limits.capacity, limits.per_caller)),
            Err(e) => Some(e.into()),
        };
        if let Some(e) = refused {
            self.hub.unsubscribe(&id);
            return Err(e);
        }
        let me = self.clone();
        let model = model.to_string();
        tokio::spawn(async move {
            me.relay(&id, &model, &job, &notify).await;
            me.hub.unsubscribe(&id);
        });
        Ok(())
    }

    /// Forwards job `id`'s events, then its result, to whoever waits on `job`.
    async fn relay(&self, id: &str, model: &str, job: &EngineJob, notify: &Notify) {
        let mut after = 0;
        // Progress only moves forward: a job run again after its worker died reports its
        // first steps again; those are not sent twice.
        let mut reached: Option<(usize, usize)> = None;
        let mut cancelled_at: Option<std::time::Instant> = None;
        let queued_at = std::time::Instant::now();
        let mut expiry_checked = false;
        loop {
            if !expiry_checked && queued_at.elapsed() > self.unclaimed {
                // Still queued: nobody took it, fail it (once taken it is not failed here).
                match self.store.expire_unclaimed_job(id, &unclaimed_error(model, self.unclaimed.as_secs())).await {
                    Ok(expired) => {
                        expiry_checked = true;
                        if expired {
                            tracing::warn!(job = id, model, "no worker took the job in time: failed");
                        }
                    }
                    Err(e) => tracing::warn!(job = id, error = %e, "expiring an unclaimed job failed; retrying"),
                }
            }
            if job.abandoned() && cancelled_at.is_none() {
                tracing::info!(job = id, "client gone: cancelling the job in the shared queue");
                if let Err(e) = self.store.cancel_job(id).await {
                    tracing::warn!(job = id, error = %e, "cancelling a shared job failed");
                }
                cancelled_at = Some(std::time::Instant::now());
            }
            if cancelled_at.is_some_and(|t| t.elapsed() > Duration::from_secs(120)) {
                return; // nobody waits, and no worker settled it: leave it to the queue
            }
            match self.poll(id, job, &mut after, &mut reached).await {
                Ok(Some(end)) => {
                    let _ = job.events.send(end);
                    if let Err(e) = self.store.delete_job_events(id).await {
                        tracing::warn!(job = id, error = %e, "deleting a finished job's events failed");
                    }
                    return;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(job = id, error = %e, "reading a shared job failed; retrying"),
            }
            let _ = tokio::time::timeout(POLL, notify.notified()).await;
        }
    }

    /// One look at the job: forwards new events; its result once it has ended.
    async fn poll(
        &self,
        id: &str,
        job: &EngineJob,
        after: &mut i64,
        reached: &mut Option<(usize, usize)>,
    ) -> plantain_store::Result<Option<WorkerEvent>> {
        // The state first: outputs are written with it, so the events read next include them.
        let state = self.store.job(id).await?.map(|j| (j.state, j.result));
        let events = self.store.job_events(id, *after).await?;
        let mut outputs = Vec::new();
        for e in events {
            *after = e.seq;
            match e.kind.as_str() {
                OUTPUT_EVENT => outputs.push((e.body, e.data.unwrap_or_default())),
                "progress" | "partial" => {
                    let (image, step) = (num(&e.body, "image"), num(&e.body, "step"));
                    if reached.is_some_and(|r| (image, step) <= r) {
                        continue;
                    }
                    *reached = Some((image, step));
                    let total = num(&e.body, "total");
                    let ev = if e.kind == "progress" {
                        WorkerEvent::Progress(ProgressEvent { image, step, total })
                    } else {
                        match decode_rgb(e.data.as_deref().unwrap_or_default()) {
                            Ok(picture) => WorkerEvent::Partial(PreviewEvent { image, index: num(&e.body, "index"), step, total, picture }),
                            Err(err) => return Ok(Some(WorkerEvent::Done(Err(EngineError::Runtime(format!("a partial image: {err}")))))),
                        }
                    };
                    let _ = job.events.send(ev);
                }
                _ => {}
            }
        }
        Ok(match state {
            None => Some(Err(EngineError::Runtime("the job vanished from the shared queue".into()))),
            Some((JobState::Succeeded, _)) => Some(decode_outputs(outputs)),
            Some((JobState::Cancelled, _)) => Some(Err(EngineError::Cancelled)),
            Some((JobState::Failed, Some(r))) if r["error"]["kind"] == UNCLAIMED => {
                let m = r["error"]["message"].as_str().unwrap_or("no worker took this job in time; retry later");
                return Ok(Some(WorkerEvent::Refused(ServiceError::unavailable(m, 10))));
            }
            Some((JobState::Failed, result)) => Some(Err(decode_error(result.as_ref()))),
            Some(_) => None,
        }
        .map(WorkerEvent::Done))
    }
}

fn num(v: &Value, k: &str) -> usize {
    v[k].as_u64().unwrap_or(0) as usize
}

fn png(img: &image::DynamicImage) -> Result<Vec<u8>, image::ImageError> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png)?;
    Ok(out.into_inner())
}

fn decode_rgb(bytes: &[u8]) -> Result<RgbImage, image::ImageError> {
    Ok(image::load_from_memory_with_format(bytes, ImageFormat::Png)?.to_rgb8())
}

fn b64_png(img: image::DynamicImage) -> Result<String, image::ImageError> {
    Ok(B64.encode(png(&img)?))
}

/// The queue's payload for a job: its engine requests (images as base64 PNG) and what to report.
fn encode_job(job: &EngineJob) -> Result<Value, image::ImageError> {
    let mut reqs = Vec::with_capacity(job.requests.len());
    for r in &job.requests {
        reqs.push(json!({
            "prompt": r.prompt, "negative_prompt": r.negative_prompt, "width": r.width, "height": r.height,
            "steps": r.steps, "guidance": r.guidance, "guidance_rescale": r.guidance_rescale, "seed": r.seed.to_string(),
            "scheduler": r.scheduler.map(|s| s.to_string()),
            "init_image": r.init_image.clone().map(|i| b64_png(i.into())).transpose()?,
            "strength": r.strength,
            "mask": r.mask.clone().map(|m| b64_png(m.into())).transpose()?,
            "image_guidance": r.image_guidance,
            "decoder": if r.decoder == Decoder::Tiny { "tiny" } else { "full" },
            "references": r.references.iter().map(|i| b64_png(i.clone().into())).collect::<Result<Vec<_>, _>>()?,
        }));
    }
    let enlarge = match &job.enlarge {
        Some(e) => json!({"image": b64_png(e.image.clone().into())?, "width": e.width, "height": e.height}),
        None => Value::Null,
    };
    Ok(json!({"requests": reqs, "enlarge": enlarge, "progress": job.progress, "previews": job.previews}))
}

/// An upscale edit's work back from the queue's payload (`None`: a job of engine requests).
fn decode_enlarge(v: &Value) -> Result<Option<Box<EnlargeJob>>, String> {
    let e = &v["enlarge"];
    if e.is_null() {
        return Ok(None);
    }
    let bytes = B64.decode(e["image"].as_str().ok_or("enlarge.image missing")?).map_err(|e| e.to_string())?;
    let image = image::load_from_memory_with_format(&bytes, ImageFormat::Png).map_err(|e| e.to_string())?.to_rgb8();
    let side = |k: &str| e[k].as_u64().and_then(|x| u32::try_from(x).ok()).ok_or_else(|| format!("enlarge.{k} missing"));
    Ok(Some(Box::new(EnlargeJob { image, width: side("width")?, height: side("height")? })))
}

/// A job's engine requests back from the queue's payload.
fn decode_requests(v: &Value) -> Result<Vec<GenerateRequest>, String> {
    let image = |v: &Value| -> Result<Option<image::DynamicImage>, String> {
        match v.as_str() {
            None => Ok(None),
            Some(s) => {
                let bytes = B64.decode(s).map_err(|e| e.to_string())?;
                image::load_from_memory_with_format(&bytes, ImageFormat::Png).map(Some).map_err(|e| e.to_string())
            }
        }
    };
    let f = |r: &Value, k: &str| r[k].as_f64().map(|x| x as f32).ok_or_else(|| format!("{k} missing"));
    let u = |r: &Value, k: &str| r[k].as_u64().ok_or_else(|| format!("{k} missing"));
    let mut out = Vec::new();
    for r in v["requests"].as_array().ok_or("requests missing")? {
        let mut q = GenerateRequest::new(r["prompt"].as_str().unwrap_or_default(), u(r, "width")? as u32, u(r, "height")? as u32);
        q.negative_prompt = r["negative_prompt"].as_str().map(str::to_string);
        q.steps = u(r, "steps")? as usize;
        q.guidance = f(r, "guidance")?;
        q.guidance_rescale = f(r, "guidance_rescale")?;
        q.seed = r["seed"].as_str().and_then(|s| s.parse().ok()).ok_or("seed missing")?;
        q.scheduler = r["scheduler"].as_str().map(SchedulerKind::from_str).transpose().map_err(|e| e.to_string())?;
        q.init_image = image(&r["init_image"])?.map(|i| i.to_rgb8());
        q.strength = f(r, "strength")?;
        q.mask = image(&r["mask"])?.map(|m| m.to_luma8());
        q.image_guidance = f(r, "image_guidance")?;
        q.decoder = if r["decoder"] == "tiny" { Decoder::Tiny } else { Decoder::Full };
        for picture in r["references"].as_array().map_or(&[][..], Vec::as_slice) {
            q.references.push(image(picture)?.ok_or("a reference is not a picture")?.to_rgb8());
        }
        out.push(q);
    }
    Ok(out)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// One finished picture as an output row: its description and its PNG.
fn encode_output(g: &Generated) -> Result<(Value, Vec<u8>), image::ImageError> {
    let t = &g.timings;
    let body = json!({
        "seed": g.seed.to_string(), "canvas": [g.canvas.0, g.canvas.1], "requested": [g.requested.0, g.requested.1],
        "steps_run": g.steps_run, "scheduler": g.scheduler.to_string(), "guidance": g.guidance,
        "timings": [secs(t.text), secs(t.image_encode), secs(t.denoise), secs(t.decode)], "warnings": g.warnings,
    });
    Ok((body, png(&image::DynamicImage::ImageRgb8(g.image.clone()))?))
}

fn decode_outputs(rows: Vec<(Value, Vec<u8>)>) -> crate::worker::JobResult {
    let bad = |m: String| EngineError::Runtime(format!("a shared job's output: {m}"));
    rows.into_iter()
        .map(|(b, data)| {
            let pair = |k: &str| (b[k][0].as_u64().unwrap_or(0) as u32, b[k][1].as_u64().unwrap_or(0) as u32);
            let t = |i: usize| Duration::from_secs_f64(b["timings"][i].as_f64().unwrap_or(0.0).max(0.0));
            Ok(Generated {
                image: decode_rgb(&data).map_err(|e| bad(e.to_string()))?,
                seed: b["seed"].as_str().and_then(|s| s.parse().ok()).ok_or_else(|| bad("seed".into()))?,
                canvas: pair("canvas"),
                requested: pair("requested"),
                steps_run: num(&b, "steps_run"),
                scheduler: b["scheduler"].as_str().unwrap_or_default().parse().map_err(|e| bad(format!("{e}")))?,
                guidance: b["guidance"].as_f64().unwrap_or(0.0) as f32,
                timings: Timings { text: t(0), image_encode: t(1), denoise: t(2), decode: t(3) },
                warnings: b["warnings"].as_array().into_iter().flatten().filter_map(|w| w.as_str().map(str::to_string)).collect(),
            })
        })
        .collect()
}

fn encode_error(e: &EngineError) -> Value {
    let (kind, message) = match e {
        EngineError::InvalidRequest(m) => ("invalid", m.clone()),
        EngineError::Unsupported(m) => ("unsupported", m.clone()),
        EngineError::Cancelled => ("cancelled", String::new()),
        EngineError::Runtime(m) => ("runtime", m.clone()),
        other => ("runtime", other.to_string()),
    };
    json!({"error": {"kind": kind, "message": message}})
}

fn decode_error(v: Option<&Value>) -> EngineError {
    let e = v.map(|v| &v["error"]).cloned().unwrap_or(Value::Null);
    let m = e["message"].as_str().unwrap_or("the job failed on its worker").to_string();
    match e["kind"].as_str() {
        Some("invalid") => EngineError::InvalidRequest(m),
        Some("unsupported") => EngineError::Unsupported(m),
        Some("cancelled") => EngineError::Cancelled,
        _ => EngineError::Runtime(m),
    }
}

/// A worker node's part: for every model this process loaded, claims the shared queue's jobs
/// and runs them (until the process ends). `node` names this process in leases.
pub async fn serve_worker(workers: Vec<Arc<Worker>>, store: Arc<PgStore>, node: String, lease_secs: u64) {
    let lease_secs = lease_secs.max(1);
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|w| tokio::spawn(model_loop(w, store.clone(), node.clone(), format!("{node}/{}", crate::new_id()), lease_secs)))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// Claims and runs one model's jobs, one at a time (the model's thread runs one at a time).
async fn model_loop(worker: Arc<Worker>, store: Arc<PgStore>, node: String, owner: String, lease_secs: u64) {
    loop {
        match worker.state() {
            ModelState::Loading => tokio::time::sleep(Duration::from_millis(200)).await,
            ModelState::Ready { .. } => break,
            ModelState::Failed(e) => {
                tracing::error!(model = %worker.name, error = %e, "model not available: this worker takes none of its jobs");
                return;
            }
        }
    }
    tracing::info!(model = %worker.name, owner = %owner, "taking jobs from the shared queue");
    // Announced while this loop lives, so that API nodes take jobs for the model.
    let announcer = tokio::spawn(announce(store.clone(), node, owner.clone(), worker.clone(), lease_secs));
    let _stop_announcing = AbortOnDrop(announcer);
    let models = vec![worker.name.clone()];
    let mut waker = None;
    loop {
        if waker.is_none() {
            waker = store.job_waker().await.map_err(|e| tracing::warn!(error = %e, "cannot listen for new jobs; polling")).ok();
        }
        let lease = Lease { owner: owner.clone(), until: plantain_store::now() + lease_secs as i64 };
        match store.claim_job(&models, &lease).await {
            Ok(Some(job)) => run_claimed(&worker, &store, job, &owner, lease_secs).await,
            // Idle: wake on a new job, or look again after a while for leases that ran out.
            Ok(None) => match waker.as_mut() {
                Some(w) => {
                    if w.wait(Duration::from_secs(1)).await.is_err() {
                        waker = None;
                    }
                }
                None => tokio::time::sleep(Duration::from_secs(1)).await,
            },
            Err(e) => {
                tracing::warn!(model = %worker.name, error = %e, "claiming a job failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A worker's announced model kind: the edit planner's painter for it.
fn painter_name(p: Painter) -> &'static str {
    match p {
        Painter::Generative => "generative",
        Painter::Instruct => "instruct",
        Painter::References => "references",
    }
}

/// The painter an announced kind names (`None` for a kind this version does not know).
pub(crate) fn painter_from(kind: &str) -> Option<Painter> {
    [Painter::Generative, Painter::Instruct, Painter::References].into_iter().find(|p| painter_name(*p) == kind)
}

/// Renews this worker loop's announcement of `model` (lasting a lease) every third of a lease.
async fn announce(store: Arc<PgStore>, node: String, owner: String, worker: Arc<Worker>, lease_secs: u64) {
    let mut tick = tokio::time::interval(heartbeat_every(lease_secs));
    let kind = worker.pipeline().map_or(Painter::Generative, |p| plantain_director::edit::painter_for(&p));
    let model = worker.name.clone();
    loop {
        tick.tick().await;
        // One second more than the lease: times are whole seconds.
        let until = plantain_store::now() + lease_secs as i64 + 1;
        if let Err(e) = store.announce_worker(&owner, &node, &model, painter_name(kind), until).await {
            tracing::warn!(model = %model, error = %e, "announcing this worker failed; retrying");
        }
    }
}

/// How often a lease of `lease_secs` is renewed: every third of it.
fn heartbeat_every(lease_secs: u64) -> Duration {
    Duration::from_millis((lease_secs * 1000 / 3).clamp(200, 10_000))
}

/// Runs a claimed job on the model's thread: heartbeats, records what it reports, settles it.
async fn run_claimed(worker: &Worker, store: &PgStore, job: QueuedJob, owner: &str, lease_secs: u64) {
    let id = job.id.clone();
    tracing::info!(job = %id, model = %job.model, attempt = job.attempts, "running a shared job");
    let requests = match decode_requests(&job.payload).and_then(|r| Ok((r, decode_enlarge(&job.payload)?))) {
        Ok(r) => r,
        Err(e) => {
            let err = EngineError::InvalidRequest(format!("the queued job cannot be read: {e}"));
            let _ = store.finish_job(&id, owner, JobState::Failed, &encode_error(&err)).await;
            return;
        }
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (requests, enlarge) = requests;
    let engine_job = EngineJob {
        requests,
        enlarge,
        caller: job.caller.clone(),
        lane: if job.lane == JobLane::Preview { Lane::Preview } else { Lane::Final },
        cancel: cancel.clone(),
        progress: job.payload["progress"].as_bool().unwrap_or(false),
        previews: num(&job.payload, "previews"),
        events: tx,
    };
    if let Err(e) = worker.submit(engine_job).await {
        let err = EngineError::Runtime(e.message.clone());
        let _ = store.finish_job(&id, owner, JobState::Failed, &encode_error(&err)).await;
        return;
    }
    let mut beat = tokio::time::interval(heartbeat_every(lease_secs));
    let mut lost = false;
    let result = loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(WorkerEvent::Done(r)) => break r,
                Some(ev) => if !lost && !record_event(store, &id, owner, ev).await { lost = true; cancel.store(true, Ordering::Relaxed) },
                None => break Err(EngineError::Runtime("the model's thread stopped".into())),
            },
            _ = beat.tick() => {
                let lease = Lease { owner: owner.to_string(), until: plantain_store::now() + lease_secs as i64 };
                match store.heartbeat_job(&id, &lease).await {
                    Ok(Heartbeat::Held) => {}
                    Ok(Heartbeat::CancelRequested) => cancel.store(true, Ordering::Relaxed),
                    Ok(Heartbeat::Lost) => { lost = true; cancel.store(true, Ordering::Relaxed) }
                    Err(e) => tracing::warn!(job = %id, error = %e, "heartbeat failed"),
                }
            }
        }
    };
    if lost {
        tracing::warn!(job = %id, "lost the job's lease (another worker has it): its result is dropped");
        return;
    }
    settle(store, &id, owner, result).await;
}

/// Records a progress event or partial image; false when this worker no longer holds the job.
async fn record_event(store: &PgStore, id: &str, owner: &str, ev: WorkerEvent) -> bool {
    let r = match ev {
        WorkerEvent::Progress(p) => {
            store.add_job_event(id, owner, "progress", &json!({"image": p.image, "step": p.step, "total": p.total}), None).await
        }
        WorkerEvent::Partial(p) => {
            let body = json!({"image": p.image, "index": p.index, "step": p.step, "total": p.total});
            let bytes = match tokio::task::spawn_blocking(move || png(&image::DynamicImage::ImageRgb8(p.picture))).await {
                Ok(Ok(b)) => b,
                _ => return true, // a preview that cannot be encoded is skipped, the job goes on
            };
            store.add_job_event(id, owner, "partial", &body, Some(&bytes)).await
        }
        WorkerEvent::Done(_) | WorkerEvent::Refused(_) => return true,
    };
    r.unwrap_or_else(|e| {
        tracing::warn!(job = %id, error = %e, "recording a job's progress failed");
        true
    })
}

/// Settles a job with its outputs or its error.
async fn settle(store: &PgStore, id: &str, owner: &str, result: crate::worker::JobResult) {
    let done = match result {
        Ok(gens) => match tokio::task::spawn_blocking(move || gens.iter().map(encode_output).collect::<Result<Vec<_>, _>>()).await {
            Ok(Ok(outputs)) => store.finish_job_with(id, owner, JobState::Succeeded, &json!({"outputs": outputs.len()}), &outputs).await,
            Ok(Err(e)) => {
                let err = EngineError::Runtime(format!("encoding the outputs: {e}"));
                store.finish_job(id, owner, JobState::Failed, &encode_error(&err)).await
            }
            Err(e) => store.finish_job(id, owner, JobState::Failed, &encode_error(&EngineError::Runtime(e.to_string()))).await,
        },
        Err(EngineError::Cancelled) => store.finish_job(id, owner, JobState::Cancelled, &encode_error(&EngineError::Cancelled)).await,
        Err(e) => store.finish_job(id, owner, JobState::Failed, &encode_error(&e)).await,
    };
    match done {
        Ok(true) => tracing::info!(job = %id, "shared job settled"),
        Ok(false) => tracing::warn!(job = %id, "the job was no longer ours when it ended: result dropped"),
        Err(e) => tracing::warn!(job = %id, error = %e, "settling a shared job failed (its lease will run out and it runs again)"),
    }
}

#[cfg(test)]
mod tests {
    use image::GrayImage;

    use super::*;

    #[test]
    fn jobs_and_outputs_survive_the_queue_encoding() {
        let mut r = GenerateRequest::new("a red fox", 96, 64);
        r.negative_prompt = Some("blur".into());
        r.seed = u64::MAX - 3; // past 2^53: carried as a string
        r.scheduler = Some(SchedulerKind::from_str("euler").unwrap());
        r.init_image = Some(RgbImage::from_fn(96, 64, |x, y| image::Rgb([x as u8, y as u8, 7])));
        r.mask = Some(GrayImage::from_fn(96, 64, |x, _| image::Luma([if x > 40 { 255 } else { 0 }])));
        r.strength = 0.6;
        r.decoder = Decoder::Tiny;
        r.references = vec![RgbImage::from_fn(30, 50, |x, y| image::Rgb([y as u8, 9, x as u8]))];
        let (events, _) = mpsc::unbounded_channel();
        let job = EngineJob {
            requests: vec![r.clone()],
            enlarge: None,
            caller: "k".into(),
            lane: Lane::Preview,
            cancel: Arc::default(),
            progress: true,
            previews: 2,
            events,
        };
        let v = encode_job(&job).unwrap();
        let back = decode_requests(&v).unwrap();
        assert_eq!(back.len(), 1);
        let b = &back[0];
        assert_eq!(
            (b.prompt.as_str(), b.negative_prompt.as_deref(), b.width, b.height, b.seed),
            ("a red fox", Some("blur"), 96, 64, r.seed)
        );
        assert_eq!(
            (b.steps, b.guidance, b.strength, b.image_guidance, b.decoder),
            (r.steps, r.guidance, 0.6, r.image_guidance, Decoder::Tiny)
        );
        assert_eq!(b.scheduler, r.scheduler);
        assert_eq!(b.init_image, r.init_image, "inputs travel losslessly");
        assert_eq!(b.mask, r.mask);
        assert_eq!(b.references, r.references, "a fusion's further pictures travel, in order");
        assert!(decode_requests(&json!({"requests": [{"prompt": "x"}]})).unwrap_err().contains("missing"));
        assert!(decode_enlarge(&v).unwrap().is_none(), "a job of engine requests enlarges nothing");

        // An upscale edit's work travels too.
        let picture = RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8 * 5, y as u8 * 7, 3]));
        let (events, _) = mpsc::unbounded_channel();
        let enlarge = EnlargeJob { image: picture.clone(), width: 160, height: 120 };
        let job = EngineJob { requests: vec![], enlarge: Some(Box::new(enlarge)), events, ..job };
        let e = decode_enlarge(&encode_job(&job).unwrap()).unwrap().unwrap();
        assert_eq!((e.image, e.width, e.height), (picture, 160, 120));
        assert!(decode_enlarge(&json!({"enlarge": {"image": "AAAA", "width": 4}})).is_err());
        for p in [Painter::Generative, Painter::Instruct, Painter::References] {
            assert_eq!(painter_from(painter_name(p)), Some(p), "a worker's announced kind reads back");
        }
        assert_eq!(painter_from("inpaint-v9"), None, "a kind from a newer worker is not guessed at");

        let g = Generated {
            image: RgbImage::from_fn(8, 8, |x, y| image::Rgb([x as u8 * 9, y as u8, 1])),
            seed: u64::MAX,
            canvas: (8, 8),
            requested: (8, 8),
            steps_run: 2,
            scheduler: SchedulerKind::from_str("euler").unwrap(),
            guidance: 7.5,
            timings: Timings { denoise: Duration::from_millis(1500), ..Default::default() },
            warnings: vec!["w".into()],
        };
        let out = decode_outputs(vec![encode_output(&g).unwrap()]).unwrap();
        assert_eq!((out[0].seed, out[0].image.clone(), out[0].steps_run, out[0].warnings.clone()), (g.seed, g.image, 2, g.warnings));
        assert_eq!(out[0].timings.denoise, Duration::from_millis(1500));
        for e in [EngineError::InvalidRequest("bad".into()), EngineError::Cancelled, EngineError::Runtime("x".into())] {
            assert_eq!(decode_error(Some(&encode_error(&e))).to_string(), e.to_string());
        }
    }
}
