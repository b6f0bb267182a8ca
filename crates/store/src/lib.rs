//! plantain-store: what plantain keeps — generated images (artefacts), API keys, quota
//! reservations, idempotency records, Files API files, batch jobs — behind async repository
//! traits, and content-addressed bytes behind [`BlobStore`].
//!
//! The embedded default is SQLite in one file plus a folder of blobs ([`Stores::open_embedded`]).
//! For scale-out (many nodes sharing one store), PostgreSQL ([`PgStore`]) and an S3-compatible
//! object store ([`S3Blobs`]) implement the same object-safe async traits and reach callers the
//! same way, as `Arc<dyn Meta>` / `Arc<dyn BlobStore>` ([`Stores::open_postgres`]).
//!
//! The SQLite backend runs every statement on tokio's blocking pool (never on an async worker
//! thread), reads rows by named columns, and versions its schema (`PRAGMA user_version`). The
//! PostgreSQL backend versions its schema with sqlx's migrator (embedded, run at open), claims
//! batch items with `FOR UPDATE SKIP LOCKED` and serialises quota reservations per key with an
//! advisory lock, so its guarantees hold across processes and machines.
//!
//! Both backends pass one conformance suite (`src/conformance.rs`): SQLite + a folder in every
//! `cargo test`, PostgreSQL + S3 in the `#[ignore]`d tests that `scripts/services.sh` feeds
//! (see the README).

mod blobs;
#[cfg(test)]
mod conformance;
pub mod error;
mod postgres;
pub mod records;
mod s3;
mod sqlite;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

pub use blobs::FsBlobs;
pub use error::{Result, StoreError};
pub use postgres::{
    Heartbeat, JobEventRow, JobEvents, JobWaker, NewJob, OUTPUT_EVENT, Offer, PREVIEW_BURST, PgStore, PostgresConfig, QueueLimits,
    QueuedJob, RateCount, redact_url,
};
pub use records::*;
pub use s3::{S3Blobs, S3Config};
pub use sqlite::SqliteStore;

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The address of `bytes` in a [`BlobStore`]: their sha256, lowercase hex.
pub fn blob_address(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Content-addressed bytes: the address is [`blob_address`] of the content.
#[async_trait]
pub trait BlobStore: Send + Sync {
    async fn put(&self, bytes: &[u8]) -> Result<String>;
    async fn get(&self, hash: &str) -> Result<Option<Vec<u8>>>;
    async fn delete(&self, hash: &str) -> Result<()>;
}

/// Generated images and the daily quota they count against.
#[async_trait]
pub trait Artefacts: Send + Sync {
    /// Inserts all artefacts of one request in one transaction (all or none) and, in the same
    /// transaction, turns the quota reservation that admitted them (if any) into these records.
    async fn insert_artefacts(&self, a: &[Artefact], reservation: Option<&str>) -> Result<()>;
    async fn artefact(&self, id: &str) -> Result<Option<Artefact>>;
    /// The artefacts recorded for a request id, in insertion order.
    async fn artefacts_of_request(&self, request_id: &str) -> Result<Vec<Artefact>>;
    /// Images recorded for `key_id` (None: anonymous) since `since` (unix seconds).
    async fn images_since(&self, key_id: Option<&str>, since: i64) -> Result<u64>;
    /// Atomically checks that `wanted` more images stay within `limit` in the window starting at
    /// `since` (recorded images plus live reservations) and, if so, reserves them. Reservations
    /// not turned into artefacts or released expire after an hour (a crashed request).
    async fn reserve_images(&self, key_id: Option<&str>, since: i64, wanted: u64, limit: u64) -> Result<Reservation>;
    async fn release_reservation(&self, id: &str) -> Result<()>;
    /// Deletes artefacts created before `before`; returns the blob addresses nothing uses now.
    async fn delete_artefacts_before(&self, before: i64) -> Result<Vec<String>>;
}

/// API keys (hashed).
#[async_trait]
pub trait Keys: Send + Sync {
    async fn create_key(&self, id: &str, name: &str, hash: &str) -> Result<()>;
    async fn list_keys(&self) -> Result<Vec<KeyRecord>>;
    /// Returns false when no such active key.
    async fn revoke_key(&self, id: &str) -> Result<bool>;
    /// The active key with this hash.
    async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyRecord>>;
    async fn active_keys(&self) -> Result<u64>;
    /// Deletes everything recorded for a key — artefacts, files, batches, idempotency records,
    /// reservations — in one transaction; returns the blob addresses nothing uses now.
    async fn delete_key_data(&self, key_id: &str) -> Result<Vec<String>>;
}

/// Stored responses for `Idempotency-Key`.
#[derive(Clone, Debug)]
pub struct IdempotencyScope<'a> {
    /// Who asked (the key id, or None for anonymous callers): their records go with their data.
    pub key_id: Option<&'a str>,
    /// The route (and caller) the key is unique within.
    pub scope: &'a str,
    pub key: &'a str,
}

#[async_trait]
pub trait Idempotency: Send + Sync {
    /// The live (unexpired at `now`) response stored for this key.
    async fn idempotent(&self, at: &IdempotencyScope<'_>, now: i64) -> Result<Option<IdempotentResponse>>;
    async fn put_idempotent(&self, at: &IdempotencyScope<'_>, r: &IdempotentResponse, expires_at: i64) -> Result<()>;
    /// Deletes records expired at `now`; returns how many.
    async fn purge_idempotency(&self, now: i64) -> Result<usize>;
}

/// Files API records.
#[async_trait]
pub trait Files: Send + Sync {
    async fn put_file(&self, f: &FileRecord) -> Result<()>;
    async fn file(&self, name: &str) -> Result<Option<FileRecord>>;
    async fn file_by_upload(&self, upload_id: &str) -> Result<Option<FileRecord>>;
    async fn list_files(&self, key_id: Option<&str>) -> Result<Vec<FileRecord>>;
    /// Every key's files whose lifetime is over at `now`.
    async fn expired_files(&self, now: i64) -> Result<Vec<FileRecord>>;
    /// Deletes the record; returns its blob address when nothing else uses it.
    async fn delete_file(&self, name: &str) -> Result<Option<String>>;
}

/// Batch jobs and their items.
#[async_trait]
pub trait Batches: Send + Sync {
    /// Writes the batch and all its items in one transaction.
    async fn create_batch(&self, b: &BatchRecord, items: &[NewItem]) -> Result<()>;
    async fn batch(&self, name: &str) -> Result<Option<BatchRecord>>;
    async fn list_batches(&self, key_id: Option<&str>) -> Result<Vec<BatchRecord>>;
    async fn batch_items(&self, name: &str) -> Result<Vec<BatchItem>>;
    /// Moves an open batch to the final `state` and, in the same transaction, records its
    /// output file. Returns false (and writes nothing) when the batch was no longer open.
    async fn complete_batch(&self, name: &str, state: BatchState, output: Option<&FileRecord>) -> Result<bool>;
    /// Open batches with no open item left: done but not yet completed.
    async fn settled_batches(&self) -> Result<Vec<BatchRecord>>;
    /// Takes the oldest runnable item of an open batch — pending, or running under a lease that
    /// ran out (its runner died) — for `lease.owner` until `lease.until`, marking it (and a
    /// pending batch) running. Atomic: two runners never hold the same item.
    async fn claim_batch_item(&self, lease: &Lease) -> Result<Option<(BatchRecord, BatchItem)>>;
    /// Extends a held lease; false when the item is no longer this owner's.
    async fn renew_lease(&self, batch: &str, idx: i64, lease: &Lease) -> Result<bool>;
    /// Records an item's result; false (nothing written) when `owner` no longer holds it.
    async fn finish_batch_item(&self, batch: &str, idx: i64, owner: &str, state: ItemState, result: &serde_json::Value) -> Result<bool>;
    /// Marks pending items cancelled (a running item finishes); returns whether one still runs.
    async fn cancel_batch_items(&self, batch: &str) -> Result<bool>;
    /// Deletes the batch, its items and its results file; returns the results file's blob
    /// address when nothing else uses it any more.
    async fn delete_batch(&self, name: &str) -> Result<Option<String>>;
}

/// Conversations, as the studio lists them: a conversation is a root artefact (no parent) and
/// every artefact that descends from it through `parent_id`. Read-only views of the artefacts
/// table; a backend needs nothing more than its artefacts to answer them.
#[async_trait]
pub trait Conversations: Send + Sync {
    /// Root artefacts (`parent_id` is null) recorded for `key_id` (None: anonymous callers),
    /// newest first, skipping `offset` and returning at most `limit`.
    async fn conversation_roots(&self, key_id: Option<&str>, limit: u32, offset: u32) -> Result<Vec<Artefact>>;
    /// The artefact `root_id` and all its descendants (children, their children, …), oldest
    /// first; empty when there is no such artefact. Every key's descendants: the caller filters.
    async fn conversation(&self, root_id: &str) -> Result<Vec<Artefact>>;
    /// The newest artefact recorded for `key_id` (None: anonymous) whose image is the blob
    /// `output_hash`: an upload byte-identical to a stored version is that version.
    async fn artefact_by_output(&self, key_id: Option<&str>, output_hash: &str) -> Result<Option<Artefact>>;
}

/// Every metadata repository in one backend.
pub trait Meta: Artefacts + Keys + Idempotency + Files + Batches + Conversations {}
impl<T: Artefacts + Keys + Idempotency + Files + Batches + Conversations> Meta for T {}

/// A metadata backend and a blob backend: what the service is given.
#[derive(Clone)]
pub struct Stores {
    pub meta: Arc<dyn Meta>,
    pub blobs: Arc<dyn BlobStore>,
    /// The shared job queue (PostgreSQL's `jobs`), when the metadata is in PostgreSQL: what
    /// API and worker nodes hand jobs over by. None in the embedded mode.
    pub queue: Option<Arc<PgStore>>,
}

impl Stores {
    /// The embedded default: `DATA_DIR/plantain.sqlite` and `DATA_DIR/blobs/`.
    pub fn open_embedded(data_dir: &Path) -> Result<Stores> {
        let meta = SqliteStore::open(&data_dir.join("plantain.sqlite"))?;
        let blobs = FsBlobs::open(&data_dir.join("blobs"))?;
        Ok(Stores { meta: Arc::new(meta), blobs: Arc::new(blobs), queue: None })
    }

    /// Metadata in PostgreSQL (migrated at open) and blobs in `blobs` — for scale-out, an
    /// [`S3Blobs`]. See [`PgStore::open`] for the errors.
    pub async fn open_postgres(config: &PostgresConfig, blobs: Arc<dyn BlobStore>) -> Result<Stores> {
        let meta = Arc::new(PgStore::open(config).await?);
        Ok(Stores { meta: meta.clone(), blobs, queue: Some(meta) })
    }

    /// The scale-out pair: PostgreSQL metadata and S3-compatible blobs.
    pub async fn open_scaleout(pg: &PostgresConfig, s3: &S3Config) -> Result<Stores> {
        let blobs = S3Blobs::open(s3)?;
        Stores::open_postgres(pg, Arc::new(blobs)).await
    }

    /// Deletes blobs by address (those a repository said nothing uses any more).
    pub async fn delete_blobs(&self, hashes: &[String]) -> Result<()> {
        for h in hashes {
            self.blobs.delete(h).await?;
        }
        Ok(())
    }
}
