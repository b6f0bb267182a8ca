//! Gemini batch jobs (`:batchGenerateContent` with inline requests; `GET/DELETE batches/{name}`,
//! `GET batches`, `POST batches/{name}:cancel`), durable across restarts and `kill -9`.
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
use crate::store::{BatchItem, BatchRecord, now};
use crate::{AppState, RequestId};

/// Most requests in one batch.
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
    let pending = items.iter().filter(|i| i.state == "PENDING").count();
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
    if done {
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
    json!({"name": b.name, "metadata": meta, "done": done})
}

/// `POST models/{model}:batchGenerateContent`.
pub fn create(state: &AppState, ctx: &RequestCtx, requested: &str, model: &str, body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("Invalid JSON payload received: {e}")))?;
    let batch = v.get("batch").ok_or_else(|| ApiError::invalid("the body needs a batch object"))?;
    let input =
        batch.get("inputConfig").or_else(|| batch.get("input_config")).ok_or_else(|| ApiError::invalid("batch.inputConfig is required"))?;
    if input.get("fileName").or_else(|| input.get("file_name")).is_some() {
        return Err(ApiError::unimplemented("batch input from a JSONL file is not built in this server yet; send inline requests"));
    }
    let reqs = input
        .get("requests")
        .and_then(|r| r.get("requests"))
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid("batch.inputConfig.requests.requests must be a list"))?;
    if reqs.is_empty() || reqs.len() > MAX_REQUESTS {
        return Err(ApiError::invalid(format!("a batch holds 1 to {MAX_REQUESTS} requests, got {}", reqs.len())));
    }
    let mut items = Vec::with_capacity(reqs.len());
    for (i, r) in reqs.iter().enumerate() {
        let req = r.get("request").cloned().ok_or_else(|| ApiError::invalid(format!("requests[{i}].request is required")))?;
        // Shape errors are refused now; everything else (bad sizes, images) fails its item only.
        serde_json::from_value::<GenerateContentRequest>(req.clone())
            .map_err(|e| ApiError::invalid(format!("requests[{i}].request: Invalid JSON payload received: {e}")))?;
        items.push((req, r.get("metadata").cloned()));
    }
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
    };
    state.store.create_batch(&rec, &items)?;
    state.batch_notify.notify_one();
    tracing::info!(request_id = %ctx.request_id, key_id = %ctx.caller.label(), batch = %rec.name, model = requested, items = items.len(), "batch created");
    let items = state.store.batch_items(&rec.name)?;
    Ok(batch_json(&rec, &items))
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

/// `POST batches/{name}:cancel`: pending items are not run; a running item finishes.
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
    if matches!(b.state.as_str(), "BATCH_STATE_PENDING" | "BATCH_STATE_RUNNING") {
        state.store.cancel_batch_items(&b.name)?;
        state.store.set_batch_state(&b.name, "BATCH_STATE_CANCELLED", true)?;
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
    state.store.cancel_batch_items(&b.name)?;
    state.store.delete_batch(&b.name)?;
    Ok(axum::Json(json!({"name": b.name, "done": true})).into_response())
}

/// Runs batch items one after another, forever (started by the server).
pub async fn runner(state: Arc<AppState>) {
    loop {
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
        let r = state.store.finish_batch_item(&b.name, item.idx, item_state, &result).and_then(|_| {
            let items = state.store.batch_items(&b.name)?;
            let cur = state.store.batch(&b.name)?;
            if cur.is_some_and(|c| c.state == "BATCH_STATE_RUNNING") && !items.iter().any(|i| i.state == "PENDING") {
                state.store.set_batch_state(&b.name, "BATCH_STATE_SUCCEEDED", true)?;
            }
            Ok(())
        });
        if let Err(e) = r {
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
