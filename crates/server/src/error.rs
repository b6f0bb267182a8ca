//! Errors: one API error type rendered as the Gemini or the OpenAI envelope.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use plantain_service::{ErrorKind, ServiceError};
use serde_json::json;

/// An error answered to an API client. `status` is the Google RPC status name, which also
/// picks the OpenAI `type`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{http} {status}: {message}")]
pub struct ApiError {
    pub http: StatusCode,
    pub status: &'static str,
    pub message: String,
    /// OpenAI's `param` (which field was wrong), when known.
    pub param: Option<String>,
    /// Seconds, sent as `Retry-After` (429 and 503).
    pub retry_after: Option<u64>,
    /// The request body was left partly unread: the connection is closed after this answer
    /// (`Connection: close`), so a client never sends its next request down a socket the
    /// server is about to drop.
    pub close: bool,
}

impl ApiError {
    pub fn new(http: StatusCode, status: &'static str, message: impl Into<String>) -> Self {
        ApiError { http, status, message: message.into(), param: None, retry_after: None, close: false }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message)
    }
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "PERMISSION_DENIED", message)
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        ApiError { close: true, ..Self::new(StatusCode::PAYLOAD_TOO_LARGE, "INVALID_ARGUMENT", message) }
    }
    pub fn exhausted(message: impl Into<String>, retry_after: u64) -> Self {
        ApiError { retry_after: Some(retry_after.max(1)), ..Self::new(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED", message) }
    }
    pub fn unavailable(message: impl Into<String>, retry_after: u64) -> Self {
        ApiError { retry_after: Some(retry_after.max(1)), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", message) }
    }
    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, "UNIMPLEMENTED", message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "ABORTED", message)
    }
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "FAILED_PRECONDITION", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", message)
    }
    pub fn with_param(mut self, p: &str) -> Self {
        self.param = Some(p.to_string());
        self
    }

    /// `{"error":{"code":400,"message":…,"status":"INVALID_ARGUMENT"}}`.
    pub fn gemini_body(&self) -> serde_json::Value {
        json!({"error": {"code": self.http.as_u16(), "message": self.message, "status": self.status}})
    }

    /// `{"error":{"message":…,"type":…,"param":…,"code":…}}`.
    pub fn openai_body(&self) -> serde_json::Value {
        let (ty, code) = match self.status {
            "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "NOT_FOUND" => ("invalid_request_error", None),
            "UNAUTHENTICATED" => ("invalid_request_error", Some("invalid_api_key")),
            "PERMISSION_DENIED" => ("invalid_request_error", Some("permission_denied")),
            "RESOURCE_EXHAUSTED" => ("rate_limit_error", Some("rate_limit_exceeded")),
            "UNAVAILABLE" => ("server_error", Some("server_overloaded")),
            "UNIMPLEMENTED" => ("invalid_request_error", Some("unsupported")),
            "ABORTED" => ("invalid_request_error", Some("conflict")),
            _ => ("server_error", None),
        };
        let code = match (self.status, self.http) {
            ("NOT_FOUND", _) => Some("not_found"),
            (_, StatusCode::PAYLOAD_TOO_LARGE) => Some("payload_too_large"),
            _ => code,
        };
        json!({"error": {"message": self.message, "type": ty, "param": self.param, "code": code}})
    }

    fn respond(&self, body: serde_json::Value) -> Response {
        let mut r = (self.http, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if self.close {
            r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r.extensions_mut().insert(self.clone());
        r
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let mut a = match e.kind {
            ErrorKind::InvalidArgument => ApiError::invalid(e.message),
            ErrorKind::NotFound => ApiError::not_found(e.message),
            ErrorKind::FailedPrecondition => ApiError::failed_precondition(e.message),
            ErrorKind::Unauthenticated => ApiError::unauthenticated(e.message),
            ErrorKind::Exhausted => ApiError::exhausted(e.message, 1),
            ErrorKind::Unavailable => ApiError::unavailable(e.message, 1),
            ErrorKind::Cancelled => ApiError::new(StatusCode::from_u16(499).unwrap_or_default(), "CANCELLED", e.message),
            ErrorKind::Internal => ApiError::internal(e.message),
        };
        if e.retry_after.is_some() {
            a.retry_after = e.retry_after;
        }
        a
    }
}

impl From<plantain_store::StoreError> for ApiError {
    fn from(e: plantain_store::StoreError) -> Self {
        ServiceError::from(e).into()
    }
}

impl From<plantain_imageio::InputError> for ApiError {
    fn from(e: plantain_imageio::InputError) -> Self {
        ApiError::invalid(e.0)
    }
}

/// An [`ApiError`] in the Gemini envelope.
#[derive(Debug)]
pub struct GeminiError(pub ApiError);

/// An [`ApiError`] in the OpenAI envelope.
#[derive(Debug)]
pub struct OpenAiError(pub ApiError);

macro_rules! envelope_from {
    ($t:ty) => {
        impl From<ApiError> for $t {
            fn from(e: ApiError) -> Self {
                Self(e)
            }
        }
        impl From<ServiceError> for $t {
            fn from(e: ServiceError) -> Self {
                Self(e.into())
            }
        }
        impl From<plantain_store::StoreError> for $t {
            fn from(e: plantain_store::StoreError) -> Self {
                Self(e.into())
            }
        }
    };
}
envelope_from!(GeminiError);
envelope_from!(OpenAiError);

impl IntoResponse for GeminiError {
    /// A too-large body is HTTP 400 INVALID_ARGUMENT here, as Google answers it (the google.rpc
    /// codes have no 413); the OpenAI envelope keeps 413.
    fn into_response(self) -> Response {
        let mut e = self.0;
        if e.http == StatusCode::PAYLOAD_TOO_LARGE {
            e.http = StatusCode::BAD_REQUEST;
        }
        e.respond(e.gemini_body())
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        self.0.respond(self.0.openai_body())
    }
}

/// Which envelope errors are written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Gemini,
    OpenAi,
}

impl Flavor {
    pub fn render(self, e: ApiError) -> Response {
        match self {
            Flavor::Gemini => GeminiError(e).into_response(),
            Flavor::OpenAi => OpenAiError(e).into_response(),
        }
    }
}
