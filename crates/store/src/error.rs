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
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
