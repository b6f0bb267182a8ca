//! Authentication as an extractor: a handler that takes [`Admitted`] runs only for a caller
//! with a valid API key (when keys exist) within its rate limit; otherwise the request is
//! answered in the route's own error envelope.

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::Response;
use plantain_service::RequestCtx;

use crate::error::{ApiError, Flavor};
use crate::{AppState, RequestId};

/// The key a request carries: `x-goog-api-key`, `Authorization: Bearer`, or `?key=`.
pub fn presented_key(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(v) = headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_string());
    }
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer ") {
            return Some(v[7..].trim().to_string());
        }
    }
    query.and_then(|q| {
        q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == "key").then(|| v.to_string())
        })
    })
}

/// Which envelope an extractor's refusal is written in.
pub trait Envelope: Send + Sync + 'static {
    const FLAVOR: Flavor;
}

/// Gemini routes: `{"error": {"code", "message", "status"}}`.
pub struct Gemini;
/// OpenAI routes: `{"error": {"message", "type", "param", "code"}}`.
pub struct OpenAi;

impl Envelope for Gemini {
    const FLAVOR: Flavor = Flavor::Gemini;
}
impl Envelope for OpenAi {
    const FLAVOR: Flavor = Flavor::OpenAi;
}

/// An authenticated caller within its rate limit, with the request's id.
pub struct Admitted<E> {
    pub ctx: RequestCtx,
    envelope: PhantomData<E>,
}

impl<E: Envelope> FromRequestParts<Arc<AppState>> for Admitted<E> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Response> {
        let request_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone()).unwrap_or_else(plantain_service::new_id);
        let key = presented_key(&parts.headers, parts.uri.query());
        match state.svc.admit(key.as_deref()).await {
            Ok(caller) => Ok(Admitted { ctx: RequestCtx { request_id, caller }, envelope: PhantomData }),
            Err(e) => Err(E::FLAVOR.render(ApiError::from(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_sources() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h, Some("alt=sse&key=abc")), Some("abc".into()));
        h.insert("authorization", "Bearer xyz".parse().unwrap());
        assert_eq!(presented_key(&h, Some("key=abc")), Some("xyz".into()));
        h.insert("x-goog-api-key", "g".parse().unwrap());
        assert_eq!(presented_key(&h, None), Some("g".into()));
    }
}
