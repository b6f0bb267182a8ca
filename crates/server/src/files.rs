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

use crate::error::{ApiError, GeminiError};
use crate::media::{B64, sniff};
use crate::ops::{admit, read_body};
use crate::store::{FileRecord, now};
use crate::{AppState, RequestId};

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

/// RFC 3339 UTC from unix seconds (civil-from-days, no time zone database needed).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(u) = &state.config.public_url {
        return u.trim_end_matches('/').to_string();
    }
    let host = headers.get(axum::http::header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("127.0.0.1");
    format!("http://{host}")
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
        "state": f.state,
        "source": f.source,
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

pub(crate) fn uploads_dir(state: &AppState) -> std::path::PathBuf {
    state.config.data_dir.join("uploads")
}

/// `POST /upload/v1beta/files`: `X-Goog-Upload-Command: start` creates the file and answers
/// the upload URL; `upload[, finalize]` with `X-Goog-Upload-Offset` appends bytes.
async fn upload(State(state): State<Arc<AppState>>, rid: axum::Extension<RequestId>, req: Request) -> Result<Response, GeminiError> {
    let (parts, body) = req.into_parts();
    let ctx = admit(&state, &rid, &parts.headers, parts.uri.query())?;
    let h = &parts.headers;
    let command = header(h, "x-goog-upload-command").unwrap_or("").to_ascii_lowercase();
    let query = parts.uri.query().unwrap_or("");
    let upload_id = query.split('&').find_map(|kv| kv.strip_prefix("upload_id=")).map(str::to_string);
    let body = read_body(&state, body).await?;
    let base = base_url(&state, h);

    if command == "start" {
        if header(h, "x-goog-upload-protocol") != Some("resumable") {
            return Err(ApiError::invalid("only resumable uploads are supported (X-Goog-Upload-Protocol: resumable)").into());
        }
        let size: i64 = header(h, "x-goog-upload-header-content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ApiError::invalid("X-Goog-Upload-Header-Content-Length is required"))?;
        if size < 0 || size as usize > state.config.limits.max_body_bytes {
            return Err(ApiError::too_large(format!(
                "file of {size} bytes is over the limit of {} bytes",
                state.config.limits.max_body_bytes
            ))
            .into());
        }
        let meta: Value = if body.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(&body).map_err(|e| ApiError::invalid(format!("Invalid JSON payload received: {e}")))?
        };
        let file = meta.get("file").cloned().unwrap_or(json!({}));
        // The SDKs send camelCase or snake_case field names depending on version.
        let field = |camel: &str, snake: &str| file.get(camel).or_else(|| file.get(snake)).and_then(Value::as_str).map(str::to_string);
        let mime = header(h, "x-goog-upload-header-content-type")
            .map(str::to_string)
            .or_else(|| field("mimeType", "mime_type"))
            .unwrap_or_else(|| "application/octet-stream".into());
        let name = match file.get("name").and_then(Value::as_str) {
            Some(n) => {
                let n = n.strip_prefix("files/").unwrap_or(n);
                if n.is_empty() || n.len() > 40 || !n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
                    return Err(ApiError::invalid("file name: up to 40 characters a-z, 0-9 and -").into());
                }
                if state.store.file(&format!("files/{n}"))?.is_some() {
                    return Err(
                        ApiError::new(axum::http::StatusCode::CONFLICT, "ALREADY_EXISTS", format!("files/{n} already exists")).into()
                    );
                }
                format!("files/{n}")
            }
            None => format!("files/{}", &crate::signature::new_id()[..12]),
        };
        let upload_id = crate::signature::new_id();
        let t = now();
        let rec = FileRecord {
            name,
            key_id: ctx.caller.key_id.clone(),
            display_name: field("displayName", "display_name"),
            mime_type: mime,
            size_bytes: size,
            sha256: None,
            state: "PROCESSING".into(),
            upload_id: Some(upload_id.clone()),
            received: 0,
            created_at: t,
            expires_at: t + TTL_SECS,
            source: "UPLOADED".into(),
        };
        state.store.put_file(&rec)?;
        let mut r = axum::Json(json!({})).into_response();
        let url = format!("{base}/upload/v1beta/files?upload_id={upload_id}&upload_protocol=resumable");
        r.headers_mut().insert("x-goog-upload-url", HeaderValue::from_str(&url).map_err(|e| ApiError::internal(e.to_string()))?);
        r.headers_mut().insert("x-goog-upload-status", HeaderValue::from_static("active"));
        return Ok(r);
    }

    if !command.starts_with("upload") {
        return Err(ApiError::invalid(format!("X-Goog-Upload-Command {command:?}: use start, then upload / upload, finalize")).into());
    }
    let Some(upload_id) = upload_id.filter(|u| u.len() == 32 && u.bytes().all(|b| b.is_ascii_hexdigit())) else {
        return Err(ApiError::invalid("upload_id is missing or malformed").into());
    };
    let mut rec = state.store.file_by_upload(&upload_id)?.ok_or_else(|| ApiError::not_found("no such upload"))?;
    if rec.key_id != ctx.caller.key_id {
        return Err(ApiError::not_found("no such upload").into());
    }
    let offset: i64 = header(h, "x-goog-upload-offset").and_then(|v| v.parse().ok()).unwrap_or(rec.received);
    if offset != rec.received {
        return Err(ApiError::invalid(format!("X-Goog-Upload-Offset is {offset}, expected {}", rec.received)).into());
    }
    if rec.received + body.len() as i64 > rec.size_bytes {
        return Err(ApiError::invalid(format!("more bytes than the declared {}", rec.size_bytes)).into());
    }
    let dir = uploads_dir(&state);
    std::fs::create_dir_all(&dir).map_err(|e| ApiError::internal(format!("uploads folder: {e}")))?;
    let part = dir.join(&upload_id);
    {
        use std::io::Write;
        let mut f =
            std::fs::OpenOptions::new().create(true).append(true).open(&part).map_err(|e| ApiError::internal(format!("upload: {e}")))?;
        f.write_all(&body).map_err(|e| ApiError::internal(format!("upload: {e}")))?;
    }
    rec.received += body.len() as i64;
    let finalize = command.contains("finalize");
    if finalize {
        if rec.received != rec.size_bytes {
            return Err(ApiError::invalid(format!("finalized after {} of {} bytes", rec.received, rec.size_bytes)).into());
        }
        let bytes = std::fs::read(&part).map_err(|e| ApiError::internal(format!("upload: {e}")))?;
        // The declared type of an image is checked against its bytes, as for inline data.
        if rec.mime_type.starts_with("image/")
            && let Some(actual) = sniff(&bytes)
            && actual != rec.mime_type.replace("image/jpg", "image/jpeg")
        {
            let _ = std::fs::remove_file(&part);
            state.store.delete_file(&rec.name)?;
            return Err(ApiError::invalid(format!("mimeType says {} but the data is {actual}", rec.mime_type)).into());
        }
        rec.sha256 = Some(state.blobs.put(&bytes)?);
        rec.state = "ACTIVE".into();
        rec.upload_id = None;
        let _ = std::fs::remove_file(&part);
    }
    state.store.put_file(&rec)?;
    let mut r = axum::Json(json!({"file": file_json(&rec, &base)})).into_response();
    r.headers_mut().insert("x-goog-upload-status", HeaderValue::from_static(if finalize { "final" } else { "active" }));
    Ok(r)
}

pub fn visible(state: &AppState, name: &str, key: &Option<String>) -> Result<FileRecord, ApiError> {
    let name = if name.starts_with("files/") { name.to_string() } else { format!("files/{name}") };
    match state.store.file(&name)? {
        Some(f) if &f.key_id == key && f.expires_at > now() => Ok(f),
        _ => Err(ApiError::permission_denied(format!("You do not have permission to access the File {} or it may not exist.", &name[6..]))),
    }
}

async fn get_file(
    State(state): State<Arc<AppState>>,
    rid: axum::Extension<RequestId>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, GeminiError> {
    let ctx = admit(&state, &rid, req.headers(), req.uri().query())?;
    if let Some(name) = name.strip_suffix(":download") {
        // `files/{name}:download?alt=media`: the bytes (what `client.files.download` asks for).
        let f = visible(&state, name, &ctx.caller.key_id)?;
        let bytes = file_bytes(&state, &f)?;
        let mime = HeaderValue::from_str(&f.mime_type).unwrap_or(HeaderValue::from_static("application/octet-stream"));
        return Ok(([(axum::http::header::CONTENT_TYPE, mime)], bytes).into_response());
    }
    if req.uri().path().starts_with("/download/") {
        return Err(ApiError::not_found(format!("GET {}: only files/NAME:download is served here", req.uri().path())).into());
    }
    let f = visible(&state, &name, &ctx.caller.key_id)?;
    Ok(axum::Json(file_json(&f, &base_url(&state, req.headers()))).into_response())
}

/// The stored bytes of an ACTIVE file.
pub fn file_bytes(state: &AppState, f: &FileRecord) -> Result<Vec<u8>, ApiError> {
    if f.state != "ACTIVE" {
        return Err(ApiError::failed_precondition(format!("{} is still uploading", f.name)));
    }
    f.sha256
        .as_deref()
        .map(|h| state.blobs.get(h))
        .transpose()?
        .flatten()
        .ok_or_else(|| ApiError::not_found(format!("{} has no data", f.name)))
}

async fn list(State(state): State<Arc<AppState>>, rid: axum::Extension<RequestId>, req: Request) -> Result<Response, GeminiError> {
    let ctx = admit(&state, &rid, req.headers(), req.uri().query())?;
    let base = base_url(&state, req.headers());
    let t = now();
    let files: Vec<Value> =
        state.store.list_files(ctx.caller.key_id.as_deref())?.iter().filter(|f| f.expires_at > t).map(|f| file_json(f, &base)).collect();
    Ok(axum::Json(json!({ "files": files })).into_response())
}

async fn delete_file(
    State(state): State<Arc<AppState>>,
    rid: axum::Extension<RequestId>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, GeminiError> {
    let ctx = admit(&state, &rid, req.headers(), req.uri().query())?;
    let f = visible(&state, &name, &ctx.caller.key_id)?;
    if let Some(h) = state.store.delete_file(&f.name)? {
        state.blobs.delete(&h)?;
    }
    Ok(axum::Json(json!({})).into_response())
}

/// The bytes of an ACTIVE file named by a `fileUri` (`…/files/abc` or `files/abc`).
pub fn resolve_file_uri(state: &AppState, uri: &str, key: &Option<String>) -> Result<(Vec<u8>, String), ApiError> {
    let Some(i) = uri.rfind("files/") else {
        return Err(ApiError::invalid(format!("fileUri {uri:?} is not a file of this server (…/files/NAME)")));
    };
    let f = visible(state, &uri[i..], key)?;
    let bytes = file_bytes(state, &f)?;
    Ok((bytes, f.mime_type))
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
    }
}
