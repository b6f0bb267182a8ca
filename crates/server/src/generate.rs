//! The one path every image takes, whichever wire format asked: quota → queue → engine →
//! provenance stamp → blob + artefact record.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use image::{GrayImage, RgbImage};
use plantain_engine::error::EngineError;
use plantain_engine::pipeline::GenerateRequest;
use plantain_provenance::{Action, Ingredient, ManifestInfo, MediaFormat, Provenance};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::AppState;
use crate::auth::{Caller, check_quota};
use crate::error::ApiError;
use crate::media::{InputImage, sha256_hex};
use crate::signature::new_id;
use crate::store::{Artefact, now};
use crate::worker::{EngineJob, JobResult, Lane, PreviewEvent, PreviewRequest, ProgressEvent, Worker};

/// Who asked, for records and logs.
#[derive(Clone, Debug)]
pub struct RequestCtx {
    /// Also the artefacts' `request_id` (a batch item's is `batches/ID/INDEX`).
    pub request_id: String,
    pub caller: Caller,
}

/// A generation, in the server's own terms.
pub struct GenSpec {
    pub worker: Arc<Worker>,
    pub prompt: String,
    pub negative: Option<String>,
    pub width: u32,
    pub height: u32,
    /// For metrics and records: `512`, `1K`, … or `WxH`.
    pub size_label: String,
    pub count: u32,
    pub seed: Option<u64>,
    pub init: Option<InputImage>,
    pub mask: Option<GrayImage>,
    pub strength: Option<f32>,
    pub format: MediaFormat,
    pub parent: Option<Artefact>,
    /// Every input image (C2PA ingredients; only hashes go in).
    pub ingredients: Vec<InputImage>,
    /// Wire-level parameters worth recording.
    pub params: serde_json::Value,
    /// Output tokens per image (usage ledger).
    pub tokens_per_image: u32,
    /// Denoising steps; None: the model's configured `steps`.
    pub steps: Option<usize>,
    pub prompt_tokens: u32,
    /// Partial images (previews) per image to send while the engine runs (OpenAI
    /// `partial_images` with `stream`); 0: none.
    pub partial_images: usize,
}

/// A stored, stamped output.
#[derive(Clone)]
pub struct Output {
    pub artefact: Artefact,
    pub bytes: Arc<Vec<u8>>,
}

/// Sets the job's cancel flag when dropped (client gone) unless disarmed.
pub struct CancelOnDrop {
    flag: Arc<AtomicBool>,
    armed: bool,
}

impl CancelOnDrop {
    pub fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.flag.store(true, Ordering::Relaxed);
        }
    }
}

/// How a request's images are stamped (watermark, labels, C2PA): the same for its finished
/// images and its partial images.
#[derive(Clone)]
struct Stamper {
    prov: Arc<Provenance>,
    model: String,
    format: MediaFormat,
    action: Action,
    /// C2PA ingredients (title, bytes; only their hashes go in).
    ingredients: Arc<Vec<(String, Vec<u8>)>>,
    steps: usize,
}

impl Stamper {
    fn new(state: &AppState, spec: &GenSpec, steps: usize) -> Self {
        let action = match (&spec.init, spec.ingredients.len()) {
            (None, 0) => Action::Created,
            (_, n) if n > 1 => Action::Placed,
            _ => Action::Edited,
        };
        let ingredients =
            spec.ingredients.iter().enumerate().map(|(i, im)| (format!("input-{i}.{}", ext(im.mime)), im.bytes.clone())).collect();
        Stamper {
            prov: state.provenance.clone(),
            model: spec.worker.name.clone(),
            format: spec.format,
            action,
            ingredients: Arc::new(ingredients),
            steps,
        }
    }

    /// Blocking: watermark, encode, label and sign one picture.
    fn stamp(&self, img: &RgbImage, seed: u64, extra: &[(&str, serde_json::Value)]) -> Result<Vec<u8>, ApiError> {
        let mut info = ManifestInfo::created(&self.model);
        info.action = self.action;
        info.ingredients = self.ingredients.iter().map(|(t, b)| Ingredient { title: t.clone(), bytes: b }).collect();
        // As a string: C2PA's CBOR integers are i64 and seeds are u64.
        info.parameters.insert("seed".into(), json!(seed.to_string()));
        info.parameters.insert("steps".into(), json!(self.steps));
        for (k, v) in extra {
            info.parameters.insert((*k).into(), v.clone());
        }
        self.prov.stamp(img, self.format, &info).map(|s| s.bytes).map_err(|e| ApiError::internal(format!("provenance stamp failed: {e}")))
    }
}

/// The partial images of a queued generation, as the engine makes them.
pub struct Partials {
    rx: mpsc::UnboundedReceiver<PreviewEvent>,
    stamper: Stamper,
    seeds: Vec<u64>,
}

impl Partials {
    /// The next partial image; `None` once the job has ended.
    pub async fn next(&mut self) -> Option<PreviewEvent> {
        self.rx.recv().await
    }

    /// A partial image already made, without waiting.
    pub fn try_next(&mut self) -> Option<PreviewEvent> {
        self.rx.try_recv().ok()
    }

    /// Stamps a partial image like a finished one (invisible watermark, labels and signed C2PA
    /// Content Credentials, which record it as partial image `index` after step `step`).
    /// Partial images are not stored.
    pub async fn stamp(&self, ev: PreviewEvent) -> Result<Vec<u8>, ApiError> {
        let stamper = self.stamper.clone();
        let seed = self.seeds.get(ev.image).copied().unwrap_or_default();
        tokio::task::spawn_blocking(move || {
            let extra = [("partial_image", json!(ev.index)), ("partial_step", json!(ev.step)), ("partial_of_steps", json!(ev.total))];
            stamper.stamp(&ev.picture, seed, &extra)
        })
        .await
        .map_err(|e| ApiError::internal(format!("stamping task failed: {e}")))?
    }
}

/// A queued generation.
pub struct Pending {
    spec: GenSpec,
    ctx: RequestCtx,
    reply: oneshot::Receiver<JobResult>,
    pub progress: Option<mpsc::UnboundedReceiver<ProgressEvent>>,
    partials: Option<Partials>,
    stamper: Stamper,
    guard: CancelOnDrop,
    queued: Instant,
    seeds: Vec<u64>,
}

/// Checks quota and queues the job (503 when the model's lane is full). Errors here happen
/// before any response is sent, so they reach the client as HTTP errors even for streams.
pub fn start(state: &AppState, ctx: &RequestCtx, mut spec: GenSpec, want_progress: bool) -> Result<Pending, ApiError> {
    check_quota(state.store.as_ref(), &ctx.caller, state.config.limits.images_per_day, spec.count)?;
    let d = spec.worker.defaults;
    // The steps the engine runs are also recorded with every artefact.
    let steps = spec.steps.unwrap_or(d.steps).max(1);
    if let Some(p) = spec.params.as_object_mut() {
        p.insert("steps".into(), json!(steps));
    }
    let base_seed = spec.seed.unwrap_or_else(rand::random);
    let seeds: Vec<u64> = (0..u64::from(spec.count)).map(|i| base_seed.wrapping_add(i)).collect();
    let init_rgb = spec.init.as_ref().map(InputImage::rgb);
    let requests = seeds
        .iter()
        .map(|&seed| {
            let mut r = GenerateRequest::new(spec.prompt.clone(), spec.width, spec.height);
            r.negative_prompt = spec.negative.clone();
            r.steps = steps;
            r.guidance = d.guidance;
            r.seed = seed;
            r.init_image = init_rgb.clone();
            r.strength = spec.strength.unwrap_or(d.strength);
            r.mask = spec.mask.clone();
            r
        })
        .collect();
    let lane = if u64::from(spec.width) * u64::from(spec.height) <= 1_600_000 { Lane::Preview } else { Lane::Final };
    let cancel = Arc::new(AtomicBool::new(false));
    let (tx, rx) = oneshot::channel();
    let (ptx, prx) = if want_progress {
        let (a, b) = mpsc::unbounded_channel();
        (Some(a), Some(b))
    } else {
        (None, None)
    };
    let (previews, preview_rx) = if spec.partial_images > 0 {
        let (a, b) = mpsc::unbounded_channel();
        (Some(PreviewRequest { per_image: spec.partial_images, tx: a }), Some(b))
    } else {
        (None, None)
    };
    spec.worker.submit(EngineJob {
        requests,
        caller: ctx.caller.label().to_string(),
        lane,
        cancel: cancel.clone(),
        progress: ptx,
        previews,
        reply: tx,
    })?;
    let stamper = Stamper::new(state, &spec, steps);
    Ok(Pending {
        partials: preview_rx.map(|rx| Partials { rx, stamper: stamper.clone(), seeds: seeds.clone() }),
        stamper,
        spec,
        ctx: ctx.clone(),
        reply: rx,
        progress: prx,
        guard: CancelOnDrop { flag: cancel, armed: true },
        queued: Instant::now(),
        seeds,
    })
}

fn engine_error(e: EngineError) -> ApiError {
    match e {
        EngineError::InvalidRequest(m) => ApiError::invalid(m),
        EngineError::Unsupported(m) => ApiError::failed_precondition(m),
        EngineError::Cancelled => ApiError::new(axum::http::StatusCode::from_u16(499).unwrap_or_default(), "CANCELLED", "cancelled"),
        other => ApiError::internal(format!("generation failed: {other}")),
    }
}

impl Pending {
    /// The partial images, when the spec asked for some (once; `finish` then ignores them).
    pub fn take_partials(&mut self) -> Option<Partials> {
        self.partials.take()
    }

    /// Waits for the engine, stamps, stores and records every image.
    pub async fn finish(mut self, state: &Arc<AppState>) -> Result<Vec<Output>, ApiError> {
        let result = (&mut self.reply).await.unwrap_or(Err(EngineError::Cancelled));
        let queued_for = self.queued.elapsed();
        let generated = match result {
            Ok(g) => g,
            Err(e) => return Err(engine_error(e)),
        };
        let spec = &self.spec;
        let model = spec.worker.name.clone();
        let format = spec.format;
        let t_stamp = Instant::now();
        let images: Vec<_> = generated.iter().map(|g| (g.image.clone(), g.seed)).collect();
        let stamper = self.stamper.clone();
        let stamped = tokio::task::spawn_blocking(move || {
            images.iter().map(|(img, seed)| stamper.stamp(img, *seed, &[])).collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| ApiError::internal(format!("stamping task failed: {e}")))??;
        let stamp_secs = t_stamp.elapsed().as_secs_f64();

        let prompt_hash = sha256_hex(spec.prompt.as_bytes());
        let mut outs = Vec::with_capacity(stamped.len());
        for (g, bytes) in generated.iter().zip(stamped) {
            let hash = state.blobs.put(&bytes)?;
            let a = Artefact {
                id: new_id(),
                version: spec.parent.as_ref().map(|p| p.version + 1).unwrap_or(1),
                request_id: self.ctx.request_id.clone(),
                key_id: self.ctx.caller.key_id.clone(),
                model: model.clone(),
                prompt_hash: prompt_hash.clone(),
                params: spec.params.clone(),
                seed: g.seed,
                timings: json!({
                    "queue_and_run_s": queued_for.as_secs_f64(),
                    "text_s": g.timings.text.as_secs_f64(),
                    "image_encode_s": g.timings.image_encode.as_secs_f64(),
                    "denoise_s": g.timings.denoise.as_secs_f64(),
                    "decode_s": g.timings.decode.as_secs_f64(),
                    "stamp_s": stamp_secs,
                }),
                usage: json!({"prompt_tokens": spec.prompt_tokens, "output_tokens": spec.tokens_per_image}),
                output_hash: hash,
                mime: format.mime().to_string(),
                width: g.image.width(),
                height: g.image.height(),
                parent_id: spec.parent.as_ref().map(|p| p.id.clone()),
                created_at: now(),
            };
            outs.push(Output { artefact: a, bytes: Arc::new(bytes) });
        }
        // All of a request's images are recorded together (a batch item re-run after a crash
        // finds all or none of them).
        state.store.insert_artefacts(&outs.iter().map(|o| o.artefact.clone()).collect::<Vec<_>>())?;
        self.guard.disarm();
        let secs = self.queued.elapsed().as_secs_f64();
        state.metrics.generation(&model, &spec.size_label, secs, outs.len() as u64);
        tracing::info!(
            request_id = %self.ctx.request_id,
            key_id = %self.ctx.caller.label(),
            model = %model,
            size = %spec.size_label,
            images = outs.len(),
            seeds = ?self.seeds,
            prompt_tokens = spec.prompt_tokens,
            output_tokens = spec.tokens_per_image * outs.len() as u32,
            latency_s = secs,
            outputs = ?outs.iter().map(|o| &o.artefact.output_hash[..16]).collect::<Vec<_>>(),
            "generated"
        );
        Ok(outs)
    }
}

pub fn ext(mime: &str) -> &'static str {
    match mime {
        "image/jpeg" => "jpg",
        "image/webp" => "webp",
        _ => "png",
    }
}
