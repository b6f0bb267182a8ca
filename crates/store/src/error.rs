//! Storage errors.

use std::path::PathBuf;

/// What can go wrong reading or writing storage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("blob store {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("storage task failed: {0}")]
    Task(String),
    /// The storage configuration cannot be used (a malformed PostgreSQL URL, an S3 bucket
    /// without a name…). The message never holds a password or secret key.
    #[error("storage configuration: {0}")]
    Config(String),
    /// PostgreSQL could not be reached, or refused the connection, when the store was opened.
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(#[source] sqlx::Error),
    /// A PostgreSQL statement failed.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] sqlx::Error),
    /// The PostgreSQL schema could not be brought to this version.
    #[error("PostgreSQL migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// An S3-compatible blob store answered with an error (or could not be reached).
    #[error("S3 blob store: {0}")]
    S3(#[from] object_store::Error),
}

impl StoreError {
    /// The store could not be reached or is shutting down (a network error, a pool or request
    /// timed out, a server error from S3): the same request may succeed later, so callers answer
    /// "unavailable, retry" rather than "internal error". Errors in what was asked (a constraint
    /// violated, a corrupt record, a bad configuration) are not.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Connect(_) => true,
            StoreError::Postgres(e) => match e {
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => true,
                // Class 08 (connection exception), 57P01-57P03 (the server is shutting down or
                // starting), 40001/40P01 (serialisation failure, deadlock: retry the transaction).
                sqlx::Error::Database(d) => {
                    d.code().is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03" | "40001" | "40P01"))
                }
                _ => false,
            },
            // Retries with backoff already ran out (connection refused, timeouts, 5xx).
            StoreError::S3(e) => matches!(e, object_store::Error::Generic { .. }),
            StoreError::Db(_) | StoreError::Io(..) | StoreError::Corrupt(_) | StoreError::Task(_) => false,
            StoreError::Config(_) | StoreError::Migrate(_) => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
