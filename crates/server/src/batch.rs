//! Gemini batch jobs (`:batchGenerateContent` with inline requests or a JSONL file from the
//! Files API; `GET/DELETE batches/{name}`, `GET batches`, `POST batches/{name}:cancel`),
//! durable across restarts and `kill -9`.
//!
//! A JSONL input (`inputConfig.fileName`) holds one `{"key": …, "request": {…}}` per line; a
//! line that cannot be read becomes a FAILED item with its own error, the others run. When the
//! batch is done its results are written, in input order, as a JSONL file
//! (`{"key": …, "response": {…}}` or `{"key": …, "error": {…}}` per line) named
//! `files/batch-ID`, reported as `output.responsesFile` and downloadable from the Files API.
//!
//! The batch and its requests are stored in one transaction before the answer is sent. A runner
//! takes pending items oldest first, each under a lease it renews while the item runs (so two
//! runners never hold one item, and an item whose runner died is taken again once the lease
//! runs out), and runs each through the same path as `generateContent`, with the request id
//! `batches/ID/INDEX`; an item's images are recorded in one transaction, then its result. After
//! a crash an item without a result runs again, and if its images were already recorded they
//! are reused instead of generated again — so no item is lost or duplicated. A failing item
//! records its error and the batch goes on.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use plantain_service::worker::ModelState;
use plantain_service::{Caller, ErrorKind, RequestCtx};
use plantain_store::{BatchItem, BatchRecord, BatchState, FileRecord, FileSource, FileState, ItemState, Lease, NewItem, now};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{Admitted, Gemini};
use crate::error::{ApiError, GeminiError};
use crate::files::rfc3339;
use crate::gemini::{GenerateContentRequest, prepare, response_json};

/// How long a runner holds an item before it must renew its lease.
const LEASE_SECS: i64 = 20;
/// How long an item that meets 503s (storage or workers unavailable) is tried again before it
/// fails with that error.
const TRANSIENT_RETRY: Duration = Duration::from_secs(120);
/// How often a running item's lease is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(5);

/// The Gemini API's name for a batch state.
fn state_name(s: BatchState) -> &'static str {
    match s {
        BatchState::Pending => "BATCH_STATE_PENDING",
        BatchState::Running => "BATCH_STATE_RUNNING",
        BatchState::Succeeded => "BATCH_STATE_SUCCEEDED",
        BatchState::Failed => "BATCH_STATE_FAILED",
        BatchState::Cancelled => "BATCH_STATE_CANCELLED",
    }
}

/// Most requests in one batch (inline or JSONL lines).
pub const MAX_REQUESTS: usize = 1000;

pub fn routes() -> Router<Arc<AppState>> {
    let mut r = Router::new();
    for v in ["v1beta", "v1"] {
        r = r
            .route(&format!("/{v}/batches"), get(list))
            .route(&format!("/{v}/batches/{{name}}"), get(get_batch).delete(delete_batch).post(cancel));
    }
    r
}

fn batch_json(b: &BatchRecord, items: &[BatchItem]) -> Value {
    let done = !b.state.is_open();
    let ok = items.iter().filter(|i| i.state == ItemState::Succeeded).count();
    let failed = items.iter().filter(|i| i.state == ItemState::Failed).count();
    let pending = items.iter().filter(|i| i.state.is_open()).count();
    let mut meta = json!({
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch",
        "name": b.name,
        "model": format!("models/{}", b.model),
        "state": state_name(b.state),
        "createTime": rfc3339(b.created_at),
        "updateTime": rfc3339(b.updated_at),
        "batchStats": {
            "requestCount": items.len().to_string(),
            "successfulRequestCount": ok.to_string(),
            "failedRequestCount": failed.to_string(),
            "pendingRequestCount": pending.to_string(),
        },
    });
    if let Some(d) = &b.display_name {
        meta["displayName"] = json!(d);
    }
    if let Some(t) = b.ended_at {
        meta["endTime"] = json!(rfc3339(t));
    }
    if let Some(f) = &b.output_file {
        meta["output"] = json!({"responsesFile": f});
    } else if done {
        let responses: Vec<Value> = items
            .iter()
            .map(|i| {
                let mut v = match &i.result {
                    Some(r) => r.clone(),
                    None => json!({"error": {"code": 499, "message": "cancelled before it ran", "status": "CANCELLED"}}),
                };
                if let Some(m) = &i.metadata {
                    v["metadata"] = m.clone();
                }
                v
            })
            .collect();
        meta["output"] = json!({"inlinedResponses": {"inlinedResponses": responses}});
    }
    if let Some(f) = &b.input_file {
        meta["inputConfig"] = json!({"fileName": f});
    }
    json!({"name": b.name, "metadata": meta, "done": done})
}

/// `POST models/{model}:batchGenerateContent`.
pub async fn create(state: &AppState, ctx: &RequestCtx, requested: &str, model: &str, body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("Invalid JSON payload received: {e}")))?;
    let batch = v.get("batch").ok_or_else(|| ApiError::invalid("the body needs a batch object"))?;
    let input =
        batch.get("inputConfig").or_else(|| batch.get("input_config")).ok_or_else(|| ApiError::invalid("batch.inputConfig is required"))?;
    let file_name = match input.get("fileName").or_else(|| input.get("file_name")) {
        None | Some(Value::Null) => None,
        Some(Value::String(f)) => Some(f.as_str()),
        Some(_) => return Err(ApiError::invalid("batch.inputConfig.fileName must be a string (files/NAME)")),
    };
    let (items, input_file) = match file_name {
        Some(f) => {
            if input.get("requests").is_some() {
                return Err(ApiError::invalid("batch.inputConfig takes either fileName or requests, not both"));
            }
            let (items, name) = items_from_file(state, f, &ctx.caller.key_id).await?;
            (items, Some(name))
        }
        None => (inline_items(input)?, None),
    };
    let t = now();
    let rec = BatchRecord {
        name: format!("batches/{}", &crate::signature::new_id()[..16]),
        key_id: ctx.caller.key_id.clone(),
        model: model.to_string(),
        display_name: batch.get("displayName").or_else(|| batch.get("display_name")).and_then(Value::as_str).map(str::to_string),
        state: BatchState::Pending,
        created_at: t,
        updated_at: t,
        ended_at: None,
        input_file,
        output_file: None,
    };
    let meta = &state.svc.stores.meta;
    meta.create_batch(&rec, &items).await?;
    state.batch_notify.notify_one();
    tracing::info!(request_id = %ctx.request_id, key_id = %ctx.caller.label(), batch = %rec.name, model = requested, items = items.len(), "batch created");
    let items = meta.batch_items(&rec.name).await?;
    Ok(batch_json(&rec, &items))
}

fn inline_items(input: &Value) -> Result<Vec<NewItem>, ApiError> {
    let reqs = input
        .get("requests")
        .and_then(|r| r.get("requests"))
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid("batch.inputConfig needs requests.requests (a list) or fileName"))?;
    if reqs.is_empty() || reqs.len() > MAX_REQUESTS {
        return Err(ApiError::invalid(format!("a batch holds 1 to {MAX_REQUESTS} requests, got {}", reqs.len())));
    }
    let mut items = Vec::with_capacity(reqs.len());
    for (i, r) in reqs.iter().enumerate() {
        let req = r.get("request").cloned().ok_or_else(|| ApiError::invalid(format!("requests[{i}].request is required")))?;
        // Shape errors are refused now; everything else (bad sizes, images) fails its item only.
        serde_json::from_value::<GenerateContentRequest>(req.clone())
            .map_err(|e| ApiError::invalid(format!("requests[{i}].request: Invalid JSON payload received: {e}")))?;
        items.push(NewItem { request: req, metadata: r.get("metadata").cloned(), failed: None });
    }
    Ok(items)
}

/// Reads a JSONL batch input from the caller's files: one item per non-blank line. A line that
/// is not JSON, has no `request` or a request of the wrong shape becomes a FAILED item (its
/// error names the line); the file as a whole is refused only when it cannot be a batch input
/// (missing, not the caller's, still uploading, an image, no lines, too many lines).
async fn items_from_file(state: &AppState, name: &str, key: &Option<String>) -> Result<(Vec<NewItem>, String), ApiError> {
    let name = name.trim();
    let short = name.rsplit_once("files/").map(|(_, n)| n).unwrap_or(name);
    let f = crate::files::visible(state, short, key).await?;
    let bytes = crate::files::file_bytes(state, &f).await?;
    if let Some(m) = plantain_imageio::sniff(&bytes) {
        return Err(ApiError::invalid(format!("{} is an image ({m}), not a JSONL batch input", f.name)));
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<(usize, &str)> = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty()).collect();
    if lines.is_empty() || lines.len() > MAX_REQUESTS {
        return Err(ApiError::invalid(format!("{}: a batch holds 1 to {MAX_REQUESTS} requests (lines), got {}", f.name, lines.len())));
    }
    let items = lines
        .into_iter()
        .map(|(ln, line)| {
            let fail = |key: Option<Value>, msg: String| NewItem {
                request: Value::Null,
                metadata: key.map(|k| json!({"key": k})),
                failed: Some(ApiError::invalid(format!("{} line {ln}: {msg}", f.name)).gemini_body()),
            };
            let v: Value = match serde_json::from_str(line) {
                Ok(v @ Value::Object(_)) => v,
                Ok(_) => return fail(None, "expected a JSON object {\"key\": …, \"request\": {…}}".into()),
                Err(e) => return fail(None, format!("Invalid JSON: {e}")),
            };
            let key = v.get("key").cloned();
            let Some(req) = v.get("request").cloned() else {
                return fail(key, "request is required".into());
            };
            if let Err(e) = serde_json::from_value::<GenerateContentRequest>(req.clone()) {
                return fail(key, format!("request: Invalid JSON payload received: {e}"));
            }
            NewItem { request: req, metadata: key.map(|k| json!({"key": k})), failed: None }
        })
        .collect();
    Ok((items, f.name))
}

/// The results of a file-input batch as JSONL, in input order.
fn output_jsonl(items: &[BatchItem]) -> Vec<u8> {
    let mut out = Vec::new();
    for i in items {
        let mut line = match &i.result {
            Some(r) => r.clone(),
            None => json!({"error": {"code": 499, "message": "cancelled before it ran", "status": "CANCELLED"}}),
        };
        if let Some(k) = i.metadata.as_ref().and_then(|m| m.get("key")) {
            line["key"] = k.clone();
        }
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

/// Moves a batch whose items are all settled (or that is being cancelled) to `final_state`;
/// a file-input batch gets its output file in the same transaction. Safe to repeat (the
/// output's name is the batch's, and only a pending or running batch is completed).
async fn complete(state: &AppState, b: &BatchRecord, final_state: BatchState) -> Result<bool, ApiError> {
    let meta = &state.svc.stores.meta;
    let output = match &b.input_file {
        None => None,
        Some(_) => {
            let bytes = output_jsonl(&meta.batch_items(&b.name).await?);
            let hash = state.svc.stores.blobs.put(&bytes).await?;
            let t = now();
            let id = b.name.strip_prefix("batches/").unwrap_or(&b.name);
            Some(FileRecord {
                name: format!("files/batch-{id}"),
                key_id: b.key_id.clone(),
                display_name: Some(format!("results of {}", b.name)),
                mime_type: "application/jsonl".into(),
                size_bytes: bytes.len() as i64,
                sha256: Some(hash),
                state: FileState::Active,
                upload_id: None,
                received: bytes.len() as i64,
                created_at: t,
                expires_at: t + crate::files::TTL_SECS,
                source: FileSource::Generated,
            })
        }
    };
    let done = meta.complete_batch(&b.name, final_state, output.as_ref()).await?;
    if done {
        tracing::info!(batch = %b.name, state = state_name(final_state), output = ?output.as_ref().map(|f| &f.name), "batch completed");
    }
    Ok(done)
}

async fn visible(state: &AppState, name: &str, key: &Option<String>) -> Result<BatchRecord, ApiError> {
    let name = if name.starts_with("batches/") { name.to_string() } else { format!("batches/{name}") };
    match state.svc.stores.meta.batch(&name).await? {
        Some(b) if &b.key_id == key => Ok(b),
        _ => Err(ApiError::not_found(format!("{name} not found"))),
    }
}

async fn list(State(state): State<Arc<AppState>>, Admitted { ctx, .. }: Admitted<Gemini>) -> Result<Response, GeminiError> {
    let meta = &state.svc.stores.meta;
    let mut ops = Vec::new();
    for b in meta.list_batches(ctx.caller.key_id.as_deref()).await? {
        ops.push(batch_json(&b, &meta.batch_items(&b.name).await?));
    }
    Ok(axum::Json(json!({"operations": ops})).into_response())
}

async fn get_batch(
    State(state): State<Arc<AppState>>,
    Admitted { ctx, .. }: Admitted<Gemini>,
    Path(name): Path<String>,
) -> Result<Response, GeminiError> {
    let b = visible(&state, &name, &ctx.caller.key_id).await?;
    Ok(axum::Json(batch_json(&b, &state.svc.stores.meta.batch_items(&b.name).await?)).into_response())
}

/// `POST batches/{name}:cancel`: pending items are not run; a running item finishes and keeps
/// its result, and the runner then completes the batch as cancelled.
async fn cancel(
    State(state): State<Arc<AppState>>,
    Admitted { ctx, .. }: Admitted<Gemini>,
    Path(name): Path<String>,
) -> Result<Response, GeminiError> {
    let Some(name) = name.strip_suffix(":cancel") else {
        return Err(ApiError::not_found(format!("POST batches/{name}: only :cancel is a method here")).into());
    };
    let b = visible(&state, name, &ctx.caller.key_id).await?;
    // With an item still running, the runner completes the batch once that item is done.
    if b.state.is_open() && !state.svc.stores.meta.cancel_batch_items(&b.name).await? {
        complete(&state, &b, BatchState::Cancelled).await?;
    }
    Ok(axum::Json(json!({})).into_response())
}

async fn delete_batch(
    State(state): State<Arc<AppState>>,
    Admitted { ctx, .. }: Admitted<Gemini>,
    Path(name): Path<String>,
) -> Result<Response, GeminiError> {
    let b = visible(&state, &name, &ctx.caller.key_id).await?;
    if let Some(h) = state.svc.stores.meta.delete_batch(&b.name).await? {
        state.svc.stores.blobs.delete(&h).await?;
    }
    Ok(axum::Json(json!({"name": b.name, "done": true})).into_response())
}

/// Runs batch items one after another, forever (started by the server). Several runners (in
/// one process or many) can share a store: items are taken under leases.
pub async fn runner(state: Arc<AppState>) {
    let owner = format!("runner-{}", plantain_service::new_id());
    loop {
        complete_settled(&state).await;
        let lease = Lease { owner: owner.clone(), until: now() + LEASE_SECS };
        match state.svc.stores.meta.claim_batch_item(&lease).await {
            Ok(Some((b, item))) => run_claimed(&state, &owner, &b, &item).await,
            Ok(None) => {
                tokio::select! {
                    _ = state.batch_notify.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "batch runner: storage error");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

/// Completes batches whose last item is done (also after a crash right after it).
async fn complete_settled(state: &AppState) {
    let meta = &state.svc.stores.meta;
    let settled = match meta.settled_batches().await {
        Ok(v) => v,
        Err(e) => return tracing::error!(error = %e, "batch runner: storage error"),
    };
    for b in settled {
        // A batch with cancelled items was cancelled while an item ran.
        let cancelled = meta.batch_items(&b.name).await.map(|items| items.iter().any(|i| i.state == ItemState::Cancelled));
        let final_state = if matches!(cancelled, Ok(true)) { BatchState::Cancelled } else { BatchState::Succeeded };
        if let Err(e) = complete(state, &b, final_state).await {
            tracing::error!(batch = %b.name, error = %e, "batch runner: could not complete the batch");
        }
    }
}

/// Runs one claimed item, renewing its lease meanwhile, and records its result.
async fn run_claimed(state: &Arc<AppState>, owner: &str, b: &BatchRecord, item: &BatchItem) {
    let meta = &state.svc.stores.meta;
    let run = async {
        let started = std::time::Instant::now();
        loop {
            match run_item(state, b, item).await {
                // Storage that cannot be reached for a while (PostgreSQL restarting, S3 down) or
                // a job no worker took: run the item again rather than fail it (images it had
                // already published are reused).
                Err(e) if e.http == axum::http::StatusCode::SERVICE_UNAVAILABLE && started.elapsed() < TRANSIENT_RETRY => {
                    tracing::warn!(batch = %b.name, item = item.idx, error = %e.message, "batch item: unavailable; trying again");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                r => break r,
            }
        }
    };
    tokio::pin!(run);
    let mut renew = tokio::time::interval(RENEW_EVERY);
    let result = loop {
        tokio::select! {
            r = &mut run => break r,
            _ = renew.tick() => {
                let lease = Lease { owner: owner.to_string(), until: now() + LEASE_SECS };
                if let Err(e) = meta.renew_lease(&b.name, item.idx, &lease).await {
                    tracing::warn!(error = %e, "batch runner: could not renew a lease");
                }
            }
        }
    };
    let (item_state, result) = match result {
        Ok(v) => (ItemState::Succeeded, json!({"response": v})),
        Err(e) => (ItemState::Failed, e.gemini_body()),
    };
    tracing::info!(batch = %b.name, item = item.idx, state = item_state.as_str(), "batch item done");
    // The batch itself is completed once no item is open.
    match meta.finish_batch_item(&b.name, item.idx, owner, item_state, &result).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(batch = %b.name, item = item.idx, "batch item: lease lost; its result was not recorded"),
        Err(e) => tracing::error!(error = %e, "batch runner: storage error"),
    }
}

async fn run_item(state: &Arc<AppState>, b: &BatchRecord, item: &BatchItem) -> Result<Value, ApiError> {
    let ctx = RequestCtx { request_id: format!("{}/{}", b.name, item.idx), caller: Caller { key_id: b.key_id.clone() } };
    let worker = state.svc.model(&b.model).ok_or_else(|| ApiError::not_found(format!("model {} is no longer configured", b.model)))?;
    let req: GenerateContentRequest =
        serde_json::from_value(item.request.clone()).map_err(|e| ApiError::invalid(format!("Invalid JSON payload received: {e}")))?;
    let p = prepare(state, worker.clone(), &req, &b.key_id).await?;
    if let Some(text) = &p.answer {
        return Ok(crate::edit::no_image_json(&b.model, &ctx.request_id, &p, text));
    }
    // Already generated before a crash: reuse, never generate twice.
    let done = state.svc.outputs_of_request(&ctx.request_id).await?;
    if !done.is_empty() {
        tracing::info!(batch = %b.name, item = item.idx, "batch item: reusing images recorded before a restart");
        return Ok(response_json(state, &ctx, &b.model, &p, &done));
    }
    let run = loop {
        match state.svc.start_checked(&ctx, p.spec.clone()).await {
            Ok(j) => break j,
            // A full queue is backpressure, not failure: batch work waits its turn.
            Err(e) if e.kind == ErrorKind::Unavailable && matches!(worker.state(), ModelState::Ready { .. }) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let outs = run.finish(None).await?;
    Ok(response_json(state, &ctx, &b.model, &p, &outs))
}
