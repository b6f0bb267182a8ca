//! The service's errors: a kind the wire layer maps to its own status, and a message written
//! for the client.

use plantain_store::StoreError;

/// What went wrong, as far as a client is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is wrong (the client's mistake).
    InvalidArgument,
    /// The request names something that does not exist (or is not the caller's).
    NotFound,
    /// The request is well formed but cannot be served in the present state.
    FailedPrecondition,
    /// No valid API key.
    Unauthenticated,
    /// A limit (rate, quota, a key's share of a queue) is reached; retry later.
    Exhausted,
    /// The model is loading, failed to load, or its queue is full; retry later.
    Unavailable,
    /// The client went away.
    Cancelled,
    /// Our fault.
    Internal,
}

/// An error of the job path.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ServiceError {
    pub kind: ErrorKind,
    pub message: String,
    /// Seconds until a retry may succeed (Exhausted, Unavailable).
    pub retry_after: Option<u64>,
}

impl ServiceError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ServiceError { kind, message: message.into(), retry_after: None }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    pub fn exhausted(message: impl Into<String>, retry_after: u64) -> Self {
        ServiceError { retry_after: Some(retry_after.max(1)), ..Self::new(ErrorKind::Exhausted, message) }
    }
    pub fn unavailable(message: impl Into<String>, retry_after: u64) -> Self {
        ServiceError { retry_after: Some(retry_after.max(1)), ..Self::new(ErrorKind::Unavailable, message) }
    }
}

impl From<StoreError> for ServiceError {
    /// A store that cannot be reached (PostgreSQL or S3 down, timed out) is "unavailable, retry";
    /// anything else is our fault.
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "storage error");
        if e.is_unavailable() {
            return ServiceError::unavailable("storage is unavailable; retry later", 5);
        }
        ServiceError::internal(format!("storage error: {e}"))
    }
}

impl From<plantain_imageio::InputError> for ServiceError {
    fn from(e: plantain_imageio::InputError) -> Self {
        ServiceError::invalid(e.0)
    }
}
