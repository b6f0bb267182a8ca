//! plantain studio: the browser editor served at `/` (static files compiled into the binary),
//! and the small API it needs beyond the Gemini and OpenAI routes — the image settings table
//! and conversations read from the versions ledger. The studio uses only public routes: what
//! it does, any client can do.
//!
//! Routes:
//! - `GET /`, `GET /studio/{file}`: the page and its modules (no key needed; they hold no data).
//! - `GET /v1/image-settings`: aspect ratios, sizes and their exact pixels, models, limits.
//! - `GET /v1/conversations?limit=&offset=`: the caller's conversations (root versions), newest first.
//! - `GET /v1/conversations/{id}`: the whole version tree holding `{id}` — a version's id or the
//!   `responseId` of the answer that made it.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use plantain_core::{AspectRatio, ImageSize, output_pixels};
use plantain_service::worker::ModelState;
use plantain_store::Artefact;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{Admitted, Gemini};
use crate::error::{ApiError, GeminiError};
use crate::ops::base_url;
use crate::signature::Signed;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(index))
        .route("/studio/{file}", get(asset))
        .route("/v1/image-settings", get(image_settings))
        .route("/v1/conversations", get(list_conversations))
        .route("/v1/conversations/{id}", get(get_conversation))
}

// ---------------------------------------------------------------------------------------------
// The page: a handful of files, compiled in (no CDN, nothing fetched at run time).

/// The studio's files: name, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("../studio/index.html")),
    ("studio.css", "text/css; charset=utf-8", include_bytes!("../studio/studio.css")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../studio/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_bytes!("../studio/api.js")),
    ("mask.js", "text/javascript; charset=utf-8", include_bytes!("../studio/mask.js")),
    ("compare.js", "text/javascript; charset=utf-8", include_bytes!("../studio/compare.js")),
    ("icon.svg", "image/svg+xml", include_bytes!("../studio/icon.svg")),
];

/// Only this origin's scripts, styles and API; images also from `data:` and `blob:` URLs
/// (previews, uploads, the mask). Nothing else can be loaded or framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; \
                   font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn serve_asset(name: &str) -> Option<Response> {
    let (_, ctype, bytes) = ASSETS.iter().find(|(n, _, _)| *n == name)?;
    let mut r = (StatusCode::OK, *bytes).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    // Revalidated on each load: a new binary serves new files at the same names.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    Some(r)
}

async fn index() -> Response {
    serve_asset("index.html").unwrap_or_else(|| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn asset(Path(file): Path<String>) -> Result<Response, GeminiError> {
    serve_asset(&file).ok_or_else(|| ApiError::not_found(format!("GET /studio/{file} is not a file of the studio")).into())
}

// ---------------------------------------------------------------------------------------------
// The settings table.

/// `GET /v1/image-settings`: what a client may ask for, from the server's own table — every
/// aspect ratio with the exact pixels of each size, which sizes this server serves, the models
/// (with their state) and the input limits.
async fn image_settings(State(state): State<Arc<AppState>>, _: Admitted<Gemini>) -> Response {
    let cfg = state.config();
    let max = cfg.limits.max_image_size;
    let pixels: serde_json::Map<String, Value> = AspectRatio::ALL
        .iter()
        .map(|r| {
            let sizes: serde_json::Map<String, Value> =
                ImageSize::ALL.iter().map(|s| (s.as_str().to_string(), json!(output_pixels(*r, *s)))).collect();
            (r.as_str().to_string(), Value::Object(sizes))
        })
        .collect();
    let models: Vec<Value> = cfg
        .models
        .iter()
        .map(|m| {
            let st = state.svc.model(&m.name).map(|w| match w.state() {
                ModelState::Loading => "loading".to_string(),
                ModelState::Ready { .. } => "ready".to_string(),
                ModelState::Failed(e) => format!("failed: {e}"),
            });
            json!({"name": m.name, "state": st, "default": cfg.default_model.as_deref() == Some(m.name.as_str())})
        })
        .collect();
    let l = &cfg.limits;
    axum::Json(json!({
        "aspectRatios": AspectRatio::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "imageSizes": ImageSize::ALL.iter().map(|s| json!({"name": s.as_str(), "served": *s <= max})).collect::<Vec<_>>(),
        "defaultAspectRatio": AspectRatio::default().as_str(),
        "defaultImageSize": ImageSize::S1K.as_str(),
        "pixels": pixels,
        "models": models,
        "defaultModel": cfg.default_model,
        "outputMimeTypes": ["image/png", "image/jpeg", "image/webp"],
        "limits": {
            "maxImages": l.max_images, "maxImageBytes": l.max_image_bytes, "maxBodyBytes": l.max_body_bytes,
            "maxInputSide": l.max_input_side, "maxPromptChars": l.max_prompt_chars, "maxCandidates": l.max_candidates,
        },
    }))
    .into_response()
}

// ---------------------------------------------------------------------------------------------
// Conversations.

/// One version as the API shows it: the stored record's public fields (the 64-bit `seed` as a
/// decimal string), the image's URL and a
/// `thoughtSignature` to send with the image to edit this version (the new image becomes its child).
fn version_json(state: &AppState, base: &str, a: &Artefact) -> Value {
    json!({
        "id": a.id,
        "version": a.version,
        "parentId": a.parent_id,
        "createdAt": a.created_at,
        "model": a.model,
        // A string, as Google's JSON writes 64-bit integers: a JavaScript number loses digits past 2^53.
        "seed": a.seed.to_string(),
        "width": a.width,
        "height": a.height,
        "mimeType": a.mime,
        "url": crate::ops::blob_url(state, base, &a.output_hash, &a.mime),
        "thoughtSignature": state.signer.mint(&Signed::Image(a.id.clone())),
        "params": a.params,
    })
}

#[derive(Deserialize)]
struct Page {
    limit: Option<String>,
    offset: Option<String>,
}

fn page_number(v: Option<&str>, what: &str, default: u32, max: u32) -> Result<u32, ApiError> {
    let Some(s) = v else { return Ok(default) };
    match s.trim().parse::<u32>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(ApiError::invalid(format!("{what} must be a whole number from 0 to {max}, got {s:?}"))),
    }
}

/// `GET /v1/conversations`: the caller's root versions (a fresh picture, or the first edit of an
/// uploaded one), newest first, `limit` (1–200, default 50) from `offset`.
async fn list_conversations(
    State(state): State<Arc<AppState>>,
    Admitted { ctx, .. }: Admitted<Gemini>,
    headers: HeaderMap,
    Query(page): Query<Page>,
) -> Result<Response, GeminiError> {
    let limit = page_number(page.limit.as_deref(), "limit", 50, 200)?.max(1);
    let offset = page_number(page.offset.as_deref(), "offset", 0, u32::MAX)?;
    let roots = state.svc.stores.meta.conversation_roots(ctx.caller.key_id.as_deref(), limit, offset).await?;
    let base = base_url(&state, &headers);
    let next = (roots.len() as u32 == limit).then(|| offset.saturating_add(limit));
    let list: Vec<Value> = roots.iter().map(|a| version_json(&state, &base, a)).collect();
    Ok(axum::Json(json!({"conversations": list, "nextOffset": next})).into_response())
}

/// The artefact `id` names for this caller: a version's id, else the first image of the
/// response with that id. Another key's versions are not found.
async fn named_version(state: &AppState, id: &str, key_id: Option<&str>) -> Result<Artefact, ApiError> {
    let meta = &state.svc.stores.meta;
    let found = match meta.artefact(id).await? {
        Some(a) => Some(a),
        None => meta.artefacts_of_request(id).await?.into_iter().next(),
    };
    found
        .filter(|a| a.key_id.as_deref() == key_id)
        .ok_or_else(|| ApiError::not_found(format!("conversations/{id}: no version or response with this id")))
}

/// `GET /v1/conversations/{id}`: the tree holding `{id}`, from its root: every version the
/// caller made in it, oldest first, with `selected` (the version `{id}` named).
async fn get_conversation(
    State(state): State<Arc<AppState>>,
    Admitted { ctx, .. }: Admitted<Gemini>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, GeminiError> {
    let key = ctx.caller.key_id.as_deref();
    let selected = named_version(&state, &id, key).await?;
    let meta = &state.svc.stores.meta;
    // Up to the root (a bounded walk: a ledger is a forest, but a damaged one must not hang us).
    let mut root = selected.clone();
    for _ in 0..10_000 {
        let Some(p) = root.parent_id.clone() else { break };
        match meta.artefact(&p).await? {
            Some(a) if a.key_id.as_deref() == key => root = a,
            _ => break,
        }
    }
    let base = base_url(&state, &headers);
    let versions: Vec<Value> =
        meta.conversation(&root.id).await?.iter().filter(|a| a.key_id.as_deref() == key).map(|a| version_json(&state, &base, a)).collect();
    Ok(axum::Json(json!({"id": root.id, "selected": selected.id, "versions": versions})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_served_with_a_policy() {
        for (name, _, bytes) in ASSETS {
            assert!(!bytes.is_empty(), "{name} is empty");
            let r = serve_asset(name).unwrap();
            assert!(r.headers().get(header::CONTENT_SECURITY_POLICY).is_some());
        }
        assert!(serve_asset("../lib.rs").is_none());
    }

    #[test]
    fn pages_are_checked() {
        assert_eq!(page_number(None, "limit", 50, 200).unwrap(), 50);
        assert_eq!(page_number(Some("7"), "limit", 50, 200).unwrap(), 7);
        assert!(page_number(Some("201"), "limit", 50, 200).is_err());
        assert!(page_number(Some("-1"), "offset", 0, 9).is_err());
    }
}
