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
//! The batch and its requests are written to SQLite in one transaction before the answer is
//! sent. One runner task takes pending items oldest first and runs each through the same path
//! as `generateContent`, with the request id `batches/ID/INDEX`; an item's images are recorded
//! in one transaction, then its result. After a crash an item without a result runs again, and
//! if its images were already recorded they are reused instead of generated again — so no item
//! is lost or duplicated. A failing item records its error and the batch goes on.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::error::{ApiError, GeminiError};
use crate::files::rfc3339;
use crate::gemini::{GenerateContentRequest, prepare, response_json};
use crate::generate::{self, Output, RequestCtx};
use crate::ops::admit;
use crate::store::{BatchItem, BatchRecord, FileRecord, NewItem, now};
use crate::{AppState, RequestId};

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
    let done = matches!(b.state.as_str(), "BATCH_STATE_SUCCEEDED" | "BATCH_STATE_FAILED" | "BATCH_STATE_CANCELLED");
    let ok = items.iter().filter(|i| i.state == "SUCCEEDED").count();
    let failed = items.iter().filter(|i| i.state == "FAILED").count();
    let pending = items.iter().filter(|i| matches!(i.state.as_str(), "PENDING" | "RUNNING")).count();
    let mut meta = json!({
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch",
        "name": b.name,
        "model": format!("models/{}", b.model),
        "state": b.state,
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
pub fn create(state: &AppState, ctx: &RequestCtx, requested: &str, model: &str, body: &[u8]) -> Result<Value, ApiError> {
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
            let (items, name) = items_from_file(state, f, &ctx.caller.key_id)?;
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
        state: "BATCH_STATE_PENDING".into(),
        created_at: t,
        updated_at: t,
        ended_at: None,
        input_file,
        output_file: None,
    };
    state.store.create_batch(&rec, &items)?;
    state.batch_notify.notify_one();
    tracing::info!(request_id = %ctx.request_id, key_id = %ctx.caller.label(), batch = %rec.name, model = requested, items = items.len(), "batch created");
    let items = state.store.batch_items(&rec.name)?;
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
fn items_from_file(state: &AppState, name: &str, key: &Option<String>) -> Result<(Vec<NewItem>, String), ApiError> {
    let name = name.trim();
    let short = name.rsplit_once("files/").map(|(_, n)| n).unwrap_or(name);
    let f = crate::files::visible(state, short, key)?;
    let bytes = crate::files::file_bytes(state, &f)?;
    if let Some(m) = crate::media::sniff(&bytes) {
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
fn complete(state: &AppState, b: &BatchRecord, final_state: &str) -> Result<bool, ApiError> {
    let output = match &b.input_file {
        None => None,
        Some(_) => {
            let bytes = output_jsonl(&state.store.batch_items(&b.name)?);
            let hash = state.blobs.put(&bytes)?;
            let t = now();
            let id = b.name.strip_prefix("batches/").unwrap_or(&b.name);
            Some(FileRecord {
                name: format!("files/batch-{id}"),
                key_id: b.key_id.clone(),
                display_name: Some(format!("results of {}", b.name)),
                mime_type: "application/jsonl".into(),
                size_bytes: bytes.len() as i64,
                sha256: Some(hash),
                state: "ACTIVE".into(),
                upload_id: None,
                received: bytes.len() as i64,
                created_at: t,
                expires_at: t + crate::files::TTL_SECS,
                source: "GENERATED".into(),
            })
        }
    };
    let done = state.store.complete_batch(&b.name, final_state, output.as_ref())?;
    if done {
        tracing::info!(batch = %b.name, state = final_state, output = ?output.as_ref().map(|f| &f.name), "batch completed");
    }
    Ok(done)
}

fn visible(state: &AppState, name: &str, key: &Option<String>) -> Result<BatchRecord, ApiError> {
    let name = if name.starts_with("batches/") { name.to_string() } else { format!("batches/{name}") };
    match state.store.batch(&name)? {
        Some(b) if &b.key_id == key => Ok(b),
        _ => Err(ApiError::not_found(format!("{name} not found"))),
    }
}

async fn list(State(state): State<Arc<AppState>>, rid: axum::Extension<RequestId>, req: Request) -> Result<Response, GeminiError> {
    let ctx = admit(&state, &rid, req.headers(), req.uri().query())?;
    let mut ops = Vec::new();
    for b in state.store.list_batches(ctx.caller.key_id.as_deref())? {
        ops.push(batch_json(&b, &state.store.batch_items(&b.name)?));
    }
    Ok(axum::Json(json!({"operations": ops})).into_response())
}

async fn get_batch(
    State(state): State<Arc<AppState>>,
    rid: axum::Extension<RequestId>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, GeminiError> {
    let ctx = admit(&state, &rid, req.headers(), req.uri().query())?;
    let b = visible(&state, &name, &ctx.caller.key_id)?;
    Ok(axum::Json(batch_json(&b, &state.store.batch_items(&b.name)?)).into_response())
}

/// `POST batches/{name}:cancel`: pending items are not run; a running item finishes and keeps
/// its result, and the runner then completes the batch as cancelled.
async fn cancel(
    State(state): State<Arc<AppState>>,
    rid: axum::Extension<RequestId>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, GeminiError> {
    let ctx = admit(&state, &rid, req.headers(), req.uri().query())?;
    let Some(name) = name.strip_suffix(":cancel") else {
        return Err(ApiError::not_found(format!("POST batches/{name}: only :cancel is a method here")).into());
    };
    let b = visible(&state, name, &ctx.caller.key_id)?;
    // With an item still running, the runner completes the batch once that item is done.
    if matches!(b.state.as_str(), "BATCH_STATE_PENDING" | "BATCH_STATE_RUNNING") && !state.store.cancel_batch_items(&b.name)? {
        complete(&state, &b, "BATCH_STATE_CANCELLED")?;
    }
    Ok(axum::Json(json!({})).into_response())
}

async fn delete_batch(
    State(state): State<Arc<AppState>>,
    rid: axum::Extension<RequestId>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, GeminiError> {
    let ctx = admit(&state, &rid, req.headers(), req.uri().query())?;
    let b = visible(&state, &name, &ctx.caller.key_id)?;
    if let Some(h) = state.store.delete_batch(&b.name)? {
        state.blobs.delete(&h)?;
    }
    Ok(axum::Json(json!({"name": b.name, "done": true})).into_response())
}

/// Runs batch items one after another, forever (started by the server).
pub async fn runner(state: Arc<AppState>) {
    loop {
        // Batches whose last item is done (also after a crash right after it) are completed.
        match state.store.settled_batches() {
            Ok(v) => {
                for b in v {
                    // A batch with cancelled items was cancelled while an item ran.
                    let cancelled = state.store.batch_items(&b.name).map(|items| items.iter().any(|i| i.state == "CANCELLED"));
                    let final_state = if matches!(cancelled, Ok(true)) { "BATCH_STATE_CANCELLED" } else { "BATCH_STATE_SUCCEEDED" };
                    if let Err(e) = complete(&state, &b, final_state) {
                        tracing::error!(batch = %b.name, error = %e, "batch runner: could not complete the batch");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "batch runner: storage error"),
        }
        let next = match state.store.next_batch_item() {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "batch runner: storage error");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        let Some((b, item)) = next else {
            tokio::select! {
                _ = state.batch_notify.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
            continue;
        };
        match state.store.start_batch_item(&b.name, item.idx) {
            Ok(true) => {}
            Ok(false) => continue, // cancelled or deleted since it was picked
            Err(e) => {
                tracing::error!(error = %e, "batch runner: storage error");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        }
        if b.state == "BATCH_STATE_PENDING"
            && let Err(e) = state.store.set_batch_state(&b.name, "BATCH_STATE_RUNNING", false)
        {
            tracing::error!(error = %e, "batch runner: storage error");
        }
        let (item_state, result) = match run_item(&state, &b, &item).await {
            Ok(v) => ("SUCCEEDED", json!({"response": v})),
            Err(e) => ("FAILED", e.gemini_body()),
        };
        tracing::info!(batch = %b.name, item = item.idx, state = item_state, "batch item done");
        // The batch itself is completed at the top of the loop once no item is pending.
        if let Err(e) = state.store.finish_batch_item(&b.name, item.idx, item_state, &result) {
            tracing::error!(error = %e, "batch runner: storage error");
        }
    }
}

async fn run_item(state: &Arc<AppState>, b: &BatchRecord, item: &BatchItem) -> Result<Value, ApiError> {
    let ctx = RequestCtx { request_id: format!("{}/{}", b.name, item.idx), caller: crate::auth::Caller { key_id: b.key_id.clone() } };
    let worker = state.model(&b.model).ok_or_else(|| ApiError::not_found(format!("model {} is no longer configured", b.model)))?;
    let req: GenerateContentRequest =
        serde_json::from_value(item.request.clone()).map_err(|e| ApiError::invalid(format!("Invalid JSON payload received: {e}")))?;
    let p = prepare(state, worker, &req, &b.key_id)?;
    // Already generated before a crash: reuse, never generate twice.
    let done = state.store.artefacts_of_request(&ctx.request_id)?;
    if !done.is_empty() {
        let mut outs = Vec::new();
        for a in done {
            let bytes = state.blobs.get(&a.output_hash)?.ok_or_else(|| ApiError::internal(format!("blob of {} is missing", a.id)))?;
            outs.push(Output { artefact: a, bytes: Arc::new(bytes) });
        }
        tracing::info!(batch = %b.name, item = item.idx, "batch item: reusing images recorded before a restart");
        return Ok(response_json(state, &ctx, &b.model, &p, &outs));
    }
    let pending = loop {
        match generate::start(state, &ctx, crate::gemini::clone_spec(&p.spec), false) {
            Ok(p) => break p,
            // A full queue is backpressure, not failure: batch work waits its turn.
            Err(e) if e.status == "UNAVAILABLE" && matches!(p.spec.worker.state(), crate::worker::ModelState::Ready { .. }) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let outs = pending.finish(state).await?;
    Ok(response_json(state, &ctx, &b.model, &p, &outs))
}
