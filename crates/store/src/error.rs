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

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
