//! Operations routes (`/healthz`, `/readyz`, `/metrics`, `/v1/verify`, blob URLs) and the
//! helpers every API route shares: body limit, authentication and rate limit, idempotency.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use plantain_service::RequestCtx;
use plantain_service::worker::ModelState;
use plantain_store::{IdempotencyScope, IdempotentResponse, now};

use crate::AppState;
use crate::auth::{Admitted, Gemini};
use crate::error::{ApiError, Flavor, GeminiError, OpenAiError};
use crate::signature::{BLOB_URL_TTL_SECS, BlobUrlError};

/// Health, readiness and metrics: what a `--role worker` node serves.
pub fn health_routes() -> Router<Arc<AppState>> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).route("/metrics", get(metrics))
}

pub fn routes() -> Router<Arc<AppState>> {
    health_routes().route("/v1/verify", post(verify)).route("/v1/blobs/{name}", get(blob))
}

/// Reads the whole body, refusing more than the configured limit with 413.
pub async fn read_body(state: &AppState, body: Body) -> Result<bytes_alias::Bytes, ApiError> {
    let limit = state.config().limits.max_body_bytes;
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_big =
            std::error::Error::source(&e).is_some_and(|s| s.to_string().contains("length limit")) || e.to_string().contains("length limit");
        if too_big {
            ApiError::too_large(format!("request body is over the limit of {limit} bytes"))
        } else {
            ApiError::invalid(format!("could not read the request body: {e}"))
        }
    })
}

/// Where this server is reached from outside: `public_url`, else `http://` + the Host header.
pub fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(u) = &state.config().public_url {
        return u.trim_end_matches('/').to_string();
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// Re-exported so the handlers need no direct `bytes` dependency.
pub mod bytes_alias {
    pub use axum::body::Bytes;
}

struct InflightGuard {
    state: Arc<AppState>,
    key: String,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.state.idem_inflight.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
    }
}

/// Runs `f` once per `Idempotency-Key` (per caller and route): a repeat with the same body gets
/// the stored response (header `idempotent-replayed: true`); the same key with another body
/// is refused (400), and a repeat while the first is still running gets 409. Only successful
/// responses are stored, so a failed request can be retried under the same key.
///
/// Streams (`text/event-stream`) pass through as they are made and are stored once they end
/// well (their last event is not an `error`); a client that leaves early stores nothing, and
/// the key counts as running until the stream ends.
pub async fn idempotent<Fut>(
    state: &Arc<AppState>,
    ctx: &RequestCtx,
    route: &str,
    headers: &HeaderMap,
    body: &[u8],
    flavor: Flavor,
    f: Fut,
) -> Response
where
    Fut: Future<Output = Response>,
{
    let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::trim).filter(|k| !k.is_empty()) else {
        return f.await;
    };
    if key.len() > 255 {
        return flavor.render(ApiError::invalid("Idempotency-Key is longer than 255 characters"));
    }
    let scope = format!("{}|{route}", ctx.caller.label());
    let body_hash = plantain_store::blob_address(body);
    let at = IdempotencyScope { key_id: ctx.caller.key_id.as_deref(), scope: &scope, key };
    match state.svc.stores.meta.idempotent(&at, now()).await {
        Ok(Some(stored)) => {
            if stored.request_hash != body_hash {
                return flavor.render(ApiError::invalid("this Idempotency-Key was used with a different request body"));
            }
            let mut r = Response::new(Body::from(stored.body));
            *r.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
            if let Ok(v) = HeaderValue::from_str(&stored.content_type) {
                r.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            r.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            return r;
        }
        Ok(None) => {}
        Err(e) => return flavor.render(e.into()),
    }
    let inflight_key = format!("{scope}|{key}");
    if !state.idem_inflight.lock().unwrap_or_else(|p| p.into_inner()).insert(inflight_key.clone()) {
        return flavor.render(ApiError::conflict("a request with this Idempotency-Key is still running"));
    }
    let guard = InflightGuard { state: state.clone(), key: inflight_key };
    let res = f.await;
    if !res.status().is_success() {
        return res;
    }
    let (parts, body) = res.into_parts();
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json").to_string();
    if content_type.starts_with("text/event-stream") {
        let tee = SseTee {
            inner: body.into_data_stream(),
            seen: Vec::new(),
            record: Some(Pending {
                guard,
                key_id: ctx.caller.key_id.clone(),
                scope,
                key: key.to_string(),
                response: IdempotentResponse { request_hash: body_hash, status: parts.status.as_u16(), content_type, body: Vec::new() },
            }),
        };
        let stream = futures::stream::unfold(tee, |mut t| async move {
            use futures::StreamExt;
            match t.inner.next().await {
                Some(Ok(chunk)) => {
                    t.seen.extend_from_slice(&chunk);
                    Some((Ok(chunk), t))
                }
                Some(Err(e)) => {
                    t.record = None;
                    Some((Err(e), t))
                }
                None => {
                    if let Some(mut p) = t.record.take()
                        && sse_ended_well(&t.seen)
                    {
                        p.response.body = std::mem::take(&mut t.seen);
                        p.store().await;
                    }
                    None
                }
            }
        });
        return Response::from_parts(parts, Body::from_stream(stream));
    }
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return flavor.render(ApiError::internal(format!("reading the response: {e}"))),
    };
    let rec = IdempotentResponse { request_hash: body_hash, status: parts.status.as_u16(), content_type, body: bytes.to_vec() };
    Pending { guard, key_id: ctx.caller.key_id.clone(), scope, key: key.to_string(), response: rec }.store().await;
    Response::from_parts(parts, Body::from(bytes))
}

/// A response to store under an `Idempotency-Key` (the key counts as running until then).
struct Pending {
    guard: InflightGuard,
    key_id: Option<String>,
    scope: String,
    key: String,
    response: IdempotentResponse,
}

impl Pending {
    /// Stores the response for the configured lifetime, then clears the in-flight mark.
    async fn store(self) {
        let state = &self.guard.state;
        let at = IdempotencyScope { key_id: self.key_id.as_deref(), scope: &self.scope, key: &self.key };
        let expires = now() + state.config().limits.idempotency_ttl_secs;
        if let Err(e) = state.svc.stores.meta.put_idempotent(&at, &self.response, expires).await {
            tracing::warn!(error = %e, "could not store the idempotent response");
        }
    }
}

/// A stream passed through to the client and kept, to be stored when it ends well.
struct SseTee {
    inner: axum::body::BodyDataStream,
    seen: Vec<u8>,
    /// Dropped (with the in-flight mark) when the stream fails or the client leaves.
    record: Option<Pending>,
}

/// Whether an SSE body has events and its last event is not an error (`event: error`, or
/// data whose JSON has a top-level `error`: how both APIs report a failure mid-stream).
pub fn sse_ended_well(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    let Some(last) = text.split("\n\n").map(str::trim).filter(|e| e.lines().any(|l| l.starts_with("data:"))).last() else {
        return false;
    };
    if last.lines().any(|l| l.trim() == "event: error") {
        return false;
    }
    let data: String = last.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim_start).collect::<Vec<_>>().join("\n");
    !serde_json::from_str::<serde_json::Value>(&data).is_ok_and(|v| v.get("error").is_some())
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let models: serde_json::Map<String, serde_json::Value> = state
        .svc
        .workers()
        .map(|w| {
            let v = match w.state() {
                ModelState::Loading => json!({"state": "loading"}),
                ModelState::Ready { family } => json!({"state": "ready", "family": family}),
                ModelState::Failed(e) => json!({"state": "failed", "error": e}),
            };
            (w.name.clone(), v)
        })
        .collect();
    let ready = state.svc.default_model().is_some_and(|w| matches!(w.state(), ModelState::Ready { .. }));
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, axum::Json(json!({"ready": ready, "default_model": state.config().default_model, "models": models}))).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.svc.render_metrics()).into_response()
}

/// `POST /v1/verify`: the body is an image file; answers the provenance report (C2PA manifest,
/// watermark detection with this installation's key, one-line verdict).
async fn verify(State(state): State<Arc<AppState>>, _: Admitted<Gemini>, req: Request) -> Result<Response, GeminiError> {
    let bytes = read_body(&state, req.into_body()).await?;
    if plantain_imageio::sniff(&bytes).is_none() {
        return Err(ApiError::invalid("the body is not a PNG, JPEG or WebP image").into());
    }
    let report = state.svc.verify(bytes.to_vec()).await?;
    Ok(axum::Json(report).into_response())
}

/// The URL under which a client fetches a stored image: signed by this server's secret (shared
/// by every node of a cluster) and valid for [`BLOB_URL_TTL_SECS`].
pub fn blob_url(state: &AppState, base: &str, hash: &str, mime: &str) -> String {
    let name = format!("{hash}.{}", plantain_imageio::file_extension(mime));
    let query = state.signer.blob_query(&name, now() + BLOB_URL_TTL_SECS);
    format!("{base}/v1/blobs/{name}?{query}")
}

/// `GET /v1/blobs/{sha256}.{ext}?exp=…&sig=…`: images handed out as `url` (OpenAI
/// `response_format=url`, the studio). Fetching needs no key but a URL this server signed that
/// has not expired: the hashes in logs and ledgers do not open images.
async fn blob(State(state): State<Arc<AppState>>, Path(name): Path<String>, RawQuery(query): RawQuery) -> Result<Response, OpenAiError> {
    match state.signer.check_blob(&name, query.as_deref(), now()) {
        Ok(()) => {}
        Err(BlobUrlError::NotSigned) => {
            return Err(ApiError::permission_denied("this image URL was not issued by this server (it needs its exp and sig)").into());
        }
        Err(BlobUrlError::Expired(at)) => {
            return Err(ApiError::permission_denied(format!("this image URL expired at {at} (unix time); ask for the image again")).into());
        }
    }
    let hash = name.split('.').next().unwrap_or("");
    let bytes = state.svc.stores.blobs.get(hash).await?.ok_or_else(|| ApiError::not_found(format!("no image {name}")))?;
    let mime = plantain_imageio::sniff(&bytes).unwrap_or("application/octet-stream");
    Ok(([(header::CONTENT_TYPE, mime), (header::CACHE_CONTROL, "private, max-age=86400, immutable")], bytes).into_response())
}

/// Unknown paths: the OpenAI envelope under `/v1/images`, Gemini's elsewhere.
pub async fn not_found(req: Request) -> Response {
    let path = req.uri().path().to_string();
    let e = ApiError::not_found(format!("{} {path} is not a route of this server", req.method()));
    if path.starts_with("/v1/images") { Flavor::OpenAi.render(e) } else { Flavor::Gemini.render(e) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sse_success_is_judged_by_the_last_event() {
        use super::sse_ended_well as ok;
        assert!(ok(b"data: {\"candidates\":[]}\n\ndata: {\"candidates\":[1]}\n\n"));
        assert!(ok(b"event: image_generation.completed\ndata: {\"b64_json\":\"x\"}\n\n:\n\n"));
        assert!(!ok(b"data: {\"candidates\":[]}\n\ndata: {\"error\":{\"code\":500}}\n\n"));
        assert!(!ok(b"event: error\ndata: {\"message\":\"x\"}\n\n"));
        assert!(!ok(b""));
        assert!(!ok(b":keep-alive\n\n"));
    }
}
