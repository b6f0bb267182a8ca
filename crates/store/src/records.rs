//! The records storage keeps, with typed states. Wire formats (Gemini's `BATCH_STATE_…`,
//! `ACTIVE`…) are the server's business: storage has its own names for states.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// A state stored as text: its storage name and back.
macro_rules! stored_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $v),+ }

        impl $name {
            /// The name stored in the database.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),+ }
            }
        }

        impl FromStr for $name {
            type Err = StoreError;
            fn from_str(s: &str) -> Result<Self, StoreError> {
                match s {
                    $($s => Ok(Self::$v),)+
                    other => Err(StoreError::Corrupt(format!("{} {other:?}", stringify!($name)))),
                }
            }
        }

        impl rusqlite::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                v.as_str()?.parse().map_err(|e: StoreError| rusqlite::types::FromSqlError::Other(Box::new(e)))
            }
        }
    };
}

stored_enum!(
    /// Where an uploaded file stands.
    FileState { Uploading = "uploading", Active = "active" }
);

stored_enum!(
    /// Who made a file.
    FileSource {
        /// A client uploaded it (Files API).
        Uploaded = "uploaded",
        /// The server wrote it (a batch's results).
        Generated = "generated",
    }
);

stored_enum!(
    /// A batch job's state.
    BatchState { Pending = "pending", Running = "running", Succeeded = "succeeded", Failed = "failed", Cancelled = "cancelled" }
);

stored_enum!(
    /// One batch item's state.
    ItemState { Pending = "pending", Running = "running", Succeeded = "succeeded", Failed = "failed", Cancelled = "cancelled" }
);

stored_enum!(
    /// A job's state in the shared queue (PostgreSQL).
    JobState { Queued = "queued", Running = "running", Succeeded = "succeeded", Failed = "failed", Cancelled = "cancelled" }
);

stored_enum!(
    /// Which lane a queued job waits in: previews (outputs up to 1K) are taken before finals.
    JobLane { Preview = "preview", Final = "final" }
);

impl BatchState {
    /// Still accepting work (not yet completed).
    pub fn is_open(self) -> bool {
        matches!(self, BatchState::Pending | BatchState::Running)
    }
}

impl ItemState {
    /// Not yet settled: waiting or running.
    pub fn is_open(self) -> bool {
        matches!(self, ItemState::Pending | ItemState::Running)
    }
}

/// Seconds a job spent in each stage (recorded with every image).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// From queueing to the engine's answer.
    pub queue_and_run_s: f64,
    pub text_s: f64,
    pub image_encode_s: f64,
    pub denoise_s: f64,
    pub decode_s: f64,
    /// Watermark, encode and sign.
    pub stamp_s: f64,
}

/// What a request used, in the API's tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub output_tokens: u32,
}

/// One generated image: a version in an edit history.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Artefact {
    pub id: String,
    /// 1 for a fresh image, parent's version + 1 for an edit of a stored image.
    pub version: i64,
    pub request_id: String,
    pub key_id: Option<String>,
    pub model: String,
    pub prompt_hash: String,
    /// The request's settings as the API named them (for the record; never read back into a job).
    pub params: serde_json::Value,
    pub seed: u64,
    pub timings: Timings,
    pub usage: Usage,
    pub output_hash: String,
    pub mime: String,
    pub width: u32,
    pub height: u32,
    pub parent_id: Option<String>,
    pub created_at: i64,
}

/// An API key's record (the key itself is never stored, only its sha256).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// A stored response for an `Idempotency-Key`.
#[derive(Clone, Debug, PartialEq)]
pub struct IdempotentResponse {
    pub request_hash: String,
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// A Files API record.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FileRecord {
    /// `files/abc123`.
    pub name: String,
    pub key_id: Option<String>,
    pub display_name: Option<String>,
    pub mime_type: String,
    pub size_bytes: i64,
    /// Blob address once the upload is complete.
    pub sha256: Option<String>,
    pub state: FileState,
    pub upload_id: Option<String>,
    pub received: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub source: FileSource,
}

/// A batch job.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct BatchRecord {
    /// `batches/abc123`.
    pub name: String,
    pub key_id: Option<String>,
    pub model: String,
    pub display_name: Option<String>,
    pub state: BatchState,
    pub created_at: i64,
    pub updated_at: i64,
    pub ended_at: Option<i64>,
    /// `files/…` the requests were read from (JSONL input); None for inline requests.
    pub input_file: Option<String>,
    /// `files/…` the results were written to, once a file-input batch is done.
    pub output_file: Option<String>,
}

/// An item of a batch being created: its request (opaque to storage), its metadata, and
/// `failed` when the item was refused before it could run (stored as FAILED with that error).
#[derive(Clone, Debug, PartialEq)]
pub struct NewItem {
    pub request: serde_json::Value,
    pub metadata: Option<serde_json::Value>,
    pub failed: Option<serde_json::Value>,
}

/// One request of a batch; `result` is set once it is done.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchItem {
    pub batch: String,
    pub idx: i64,
    pub request: serde_json::Value,
    pub metadata: Option<serde_json::Value>,
    pub state: ItemState,
    pub result: Option<serde_json::Value>,
}

/// A batch item a runner holds until `until` (unix seconds); it must renew the lease before
/// then or another runner may take the item.
#[derive(Clone, Debug, PartialEq)]
pub struct Lease {
    pub owner: String,
    pub until: i64,
}

/// The answer to a quota reservation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// Held under this id until the images are recorded or it is released.
    Held(String),
    /// Refused: this many images are already used or reserved in the window.
    Exceeded { used: u64 },
}
