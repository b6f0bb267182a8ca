//! The Gemini Files API, as the SDKs use it: resumable upload (`start`, then `upload,
//! finalize` with offsets), get, list, delete. Uploaded images can then be sent as `fileData`
//! parts; JSONL files feed batches (`inputConfig.fileName`), whose results come back as a
//! GENERATED file. Any file of the caller can be downloaded (`GET files/{name}:download?alt=media`,
//! also under `/download/v1beta/`). Files expire after 48 hours, as Google's do.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Value, json};

use plantain_imageio::{B64, sniff};
use plantain_store::{FileRecord, FileSource, FileState, now};

use crate::AppState;
use crate::auth::{Admitted, Gemini};
use crate::error::{ApiError, GeminiError};
use crate::ops::{base_url, read_body};

pub const TTL_SECS: i64 = 48 * 3600;

pub fn routes() -> Router<Arc<AppState>> {
    let mut r = Router::new();
    for v in ["v1beta", "v1"] {
        r = r
            .route(&format!("/upload/{v}/files"), post(upload))
            .route(&format!("/{v}/files"), get(list))
            .route(&format!("/{v}/files/{{name}}"), get(get_file).delete(delete_file))
            .route(&format!("/download/{v}/files/{{name}}"), get(get_file));
    }
    r
}

pub use plantain_core::time::rfc3339;

/// The Files API's name for a file state.
fn state_name(s: FileState) -> &'static str {
    match s {
        FileState::Uploading => "PROCESSING",
        FileState::Active => "ACTIVE",
    }
}

/// The Files API's name for where a file came from.
fn source_name(s: FileSource) -> &'static str {
    match s {
        FileSource::Uploaded => "UPLOADED",
        FileSource::Generated => "GENERATED",
    }
}

pub fn file_json(f: &FileRecord, base: &str) -> Value {
    let mut v = json!({
        "name": f.name,
        "mimeType": f.mime_type,
        "sizeBytes": f.size_bytes.to_string(),
        "createTime": rfc3339(f.created_at),
        "updateTime": rfc3339(f.created_at),
        "expirationTime": rfc3339(f.expires_at),
        "uri": format!("{base}/v1beta/{}", f.name),
        "downloadUri": format!("{base}/download/v1beta/{}:download?alt=media", f.name),
        "state": state_name(f.state),
        "source": source_name(f.source),
    });
    if let Some(d) = &f.display_name {
        v["displayName"] = json!(d);
    }
    if let Some(h) = &f.sha256 {
        v["sha256Hash"] = json!(B64.encode(h.as_bytes()));
    }
    v
}

fn header<'a>(h: &'a HeaderMap, k: &str) -> Option<&'a str> {
    h.get(k).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// `POST /upload/v1beta/files`: `X-Goog-Upload-Command: start` creates the file and answers
/// the upload URL; `upload[, finalize]` with `X-Goog-Upload-Offset` appends bytes.
async fn upload(State(state): State<Arc<AppState>>, Admitted { ctx, .. }: Admitted<Gemini>, req: Request) -> Result<Response, GeminiError> {
    let (parts, body) = req.into_parts();
    let command = header(&parts.headers, "x-goog-upload-command").unwrap_or("").to_ascii_lowercase();
    let body = read_body(&state, body).await?;
    if command == "start" {
        return Ok(start_upload(&state, &ctx.caller.key_id, &parts.headers, &body).await?);
    }
    if !command.starts_with("upload") {
        return Err(ApiError::invalid(format!("X-Goog-Upload-Command {command:?}: use start, then upload / upload, finalize")).into());
    }
    let query = parts.uri.query().unwrap_or("");
    let upload_id = query.split('&').find_map(|kv| kv.strip_prefix("upload_id=")).unwrap_or("");
    let finalize = command.contains("finalize");
    Ok(append_upload(&state, &ctx.caller.key_id, &parts.headers, upload_id, body.to_vec(), finalize).await?)
}

/// The name a new file asks for (`files/…`), or a fresh one.
async fn new_file_name(state: &AppState, file: &Value) -> Result<String, ApiError> {
    let Some(n) = file.get("name").and_then(Value::as_str) else {
        return Ok(format!("files/{}", &crate::signature::new_id()[..12]));
    };
    let n = n.strip_prefix("files/").unwrap_or(n);
    if n.is_empty() || n.len() > 40 || !n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err(ApiError::invalid("file name: up to 40 characters a-z, 0-9 and -"));
    }
    if state.svc.stores.meta.file(&format!("files/{n}")).await?.is_some() {
        return Err(ApiError::new(axum::http::StatusCode::CONFLICT, "ALREADY_EXISTS", format!("files/{n} already exists")));
    }
    Ok(format!("files/{n}"))
}

/// `start`: records the file (uploading) and answers where to send the bytes.
async fn start_upload(state: &AppState, key_id: &Option<String>, h: &HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
    if header(h, "x-goog-upload-protocol") != Some("resumable") {
        return Err(ApiError::invalid("only resumable uploads are supported (X-Goog-Upload-Protocol: resumable)"));
    }
    let size: i64 = header(h, "x-goog-upload-header-content-length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ApiError::invalid("X-Goog-Upload-Header-Content-Length is required"))?;
    let max = state.config().limits.max_body_bytes;
    if size < 0 || size as usize > max {
        return Err(ApiError::too_large(format!("file of {size} bytes is over the limit of {max} bytes")));
    }
    let meta: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("Invalid JSON payload received: {e}")))?
    };
    let file = meta.get("file").cloned().unwrap_or(json!({}));
    // The SDKs send camelCase or snake_case field names depending on version.
    let field = |camel: &str, snake: &str| file.get(camel).or_else(|| file.get(snake)).and_then(Value::as_str).map(str::to_string);
    let mime = header(h, "x-goog-upload-header-content-type")
        .map(str::to_string)
        .or_else(|| field("mimeType", "mime_type"))
        .unwrap_or_else(|| "application/octet-stream".into());
    let upload_id = crate::signature::new_id();
    let t = now();
    let rec = FileRecord {
        name: new_file_name(state, &file).await?,
        key_id: key_id.clone(),
        display_name: field("displayName", "display_name"),
        mime_type: mime,
        size_bytes: size,
        sha256: None,
        state: FileState::Uploading,
        upload_id: Some(upload_id.clone()),
        received: 0,
        created_at: t,
        expires_at: t + TTL_SECS,
        source: FileSource::Uploaded,
    };
    state.svc.stores.meta.put_file(&rec).await?;
    let mut r = axum::Json(json!({})).into_response();
    let url = format!("{}/upload/v1beta/files?upload_id={upload_id}&upload_protocol=resumable", base_url(state, h));
    r.headers_mut().insert("x-goog-upload-url", HeaderValue::from_str(&url).map_err(|e| ApiError::internal(e.to_string()))?);
    r.headers_mut().insert("x-goog-upload-status", HeaderValue::from_static("active"));
    Ok(r)
}

/// `upload[, finalize]`: appends the bytes at the expected offset; on finalize the file's bytes
/// become a blob (an image's declared type checked against its bytes) and the file is active.
async fn append_upload(
    state: &AppState,
    key_id: &Option<String>,
    h: &HeaderMap,
    upload_id: &str,
    body: Vec<u8>,
    finalize: bool,
) -> Result<Response, ApiError> {
    if upload_id.len() != 32 || !upload_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::invalid("upload_id is missing or malformed"));
    }
    let meta = &state.svc.stores.meta;
    let mut rec =
        meta.file_by_upload(upload_id).await?.filter(|r| &r.key_id == key_id).ok_or_else(|| ApiError::not_found("no such upload"))?;
    let offset: i64 = header(h, "x-goog-upload-offset").and_then(|v| v.parse().ok()).unwrap_or(rec.received);
    if offset != rec.received {
        return Err(ApiError::invalid(format!("X-Goog-Upload-Offset is {offset}, expected {}", rec.received)));
    }
    if rec.received + body.len() as i64 > rec.size_bytes {
        return Err(ApiError::invalid(format!("more bytes than the declared {}", rec.size_bytes)));
    }
    let start = rec.received;
    rec.received += body.len() as i64;
    if finalize && rec.received != rec.size_bytes {
        return Err(ApiError::invalid(format!("finalized after {} of {} bytes", rec.received, rec.size_bytes)));
    }
    if let Some(bytes) = state.svc.append_upload(upload_id, start, body, finalize).await? {
        finish_upload(state, &mut rec, &bytes).await?;
        state.svc.remove_upload(upload_id).await?;
    }
    meta.put_file(&rec).await?;
    let mut r = axum::Json(json!({"file": file_json(&rec, &base_url(state, h))})).into_response();
    r.headers_mut().insert("x-goog-upload-status", HeaderValue::from_static(if finalize { "final" } else { "active" }));
    Ok(r)
}

async fn finish_upload(state: &AppState, rec: &mut FileRecord, bytes: &[u8]) -> Result<(), ApiError> {
    // The declared type of an image is checked against its bytes, as for inline data.
    if rec.mime_type.starts_with("image/")
        && let Some(actual) = sniff(bytes)
        && actual != rec.mime_type.replace("image/jpg", "image/jpeg")
    {
        state.svc.remove_upload(rec.upload_id.as_deref().unwrap_or_default()).await?;
        state.svc.stores.meta.delete_file(&rec.name).await?;
        return Err(ApiError::invalid(format!("mimeType says {} but the data is {actual}", rec.mime_type)));
    }
    rec.sha256 = Some(state.svc.stores.blobs.put(bytes).await?);
    rec.state = FileState::Active;
    rec.upload_id = None;
    Ok(())
}

/// The caller's unexpired file `name` (`files/…` or bare).
pub async fn visible(state: &AppState, name: &str, key: &Option<String>) -> Result<FileRecord, ApiError> {
    let name = if name.starts_with("files/") { name.to_string() } else { format!("files/{name}") };
    match state.svc.stores.meta.file(&name).await? {
        Some(f) if &f.key_id == key && f.expires_at > now() => Ok(f),
        _ => Err(ApiError::permission_denied(format!("You do not have permission to access the File {} or it may not exist.", &name[6..]))),
    }
}

async fn get_file(
    State(state): State<Arc<AppState>>,
    Admitted { ctx, .. }: Admitted<Gemini>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, GeminiError> {
    if let Some(name) = name.strip_suffix(":download") {
        // `files/{name}:download?alt=media`: the bytes (what `client.files.download` asks for).
        let f = visible(&state, name, &ctx.caller.key_id).await?;
        let bytes = file_bytes(&state, &f).await?;
        let mime = HeaderValue::from_str(&f.mime_type).unwrap_or(HeaderValue::from_static("application/octet-stream"));
        return Ok(([(axum::http::header::CONTENT_TYPE, mime)], bytes).into_response());
    }
    if req.uri().path().starts_with("/download/") {
        return Err(ApiError::not_found(format!("GET {}: only files/NAME:download is served here", req.uri().path())).into());
    }
    let f = visible(&state, &name, &ctx.caller.key_id).await?;
    Ok(axum::Json(file_json(&f, &base_url(&state, req.headers()))).into_response())
}

/// The stored bytes of an ACTIVE file.
pub async fn file_bytes(state: &AppState, f: &FileRecord) -> Result<Vec<u8>, ApiError> {
    if f.state != FileState::Active {
        return Err(ApiError::failed_precondition(format!("{} is still uploading", f.name)));
    }
    let Some(h) = f.sha256.as_deref() else { return Err(ApiError::not_found(format!("{} has no data", f.name))) };
    state.svc.stores.blobs.get(h).await?.ok_or_else(|| ApiError::not_found(format!("{} has no data", f.name)))
}

async fn list(
    State(state): State<Arc<AppState>>,
    Admitted { ctx, .. }: Admitted<Gemini>,
    headers: HeaderMap,
) -> Result<Response, GeminiError> {
    let base = base_url(&state, &headers);
    let t = now();
    let files = state.svc.stores.meta.list_files(ctx.caller.key_id.as_deref()).await?;
    let files: Vec<Value> = files.iter().filter(|f| f.expires_at > t).map(|f| file_json(f, &base)).collect();
    Ok(axum::Json(json!({ "files": files })).into_response())
}

async fn delete_file(
    State(state): State<Arc<AppState>>,
    Admitted { ctx, .. }: Admitted<Gemini>,
    Path(name): Path<String>,
) -> Result<Response, GeminiError> {
    let f = visible(&state, &name, &ctx.caller.key_id).await?;
    if let Some(h) = state.svc.stores.meta.delete_file(&f.name).await? {
        state.svc.stores.blobs.delete(&h).await?;
    }
    Ok(axum::Json(json!({})).into_response())
}

/// The bytes of an ACTIVE file named by a `fileUri` (`…/files/abc` or `files/abc`).
pub async fn resolve_file_uri(state: &AppState, uri: &str, key: &Option<String>) -> Result<(Vec<u8>, String), ApiError> {
    let Some(i) = uri.rfind("files/") else {
        return Err(ApiError::invalid(format!("fileUri {uri:?} is not a file of this server (…/files/NAME)")));
    };
    let f = visible(state, &uri[i..], key).await?;
    let bytes = file_bytes(state, &f).await?;
    Ok((bytes, f.mime_type))
}
