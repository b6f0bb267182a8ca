//! The PostgreSQL schema and its versions, embedded in the binary and applied in order at open by
//! sqlx's migrator: each version runs once, in its own transaction, recorded (with a checksum of
//! its SQL) in `_sqlx_migrations`; concurrent opens wait on an advisory lock. A version once
//! released is never edited — changes are a new version.

use std::borrow::Cow;

use sqlx::SqlStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// Version 1: the tables of the SQLite schema's version 2, with the same columns and meanings
/// (`seq` keeps artefacts' insertion order, as SQLite's rowid does).
const V1: &str = "
CREATE TABLE artefacts (
  seq BIGINT GENERATED ALWAYS AS IDENTITY, id TEXT PRIMARY KEY, version BIGINT NOT NULL,
  request_id TEXT NOT NULL, key_id TEXT, model TEXT NOT NULL, prompt_hash TEXT NOT NULL,
  params TEXT NOT NULL, seed BIGINT NOT NULL, timings TEXT NOT NULL, usage TEXT NOT NULL,
  output_hash TEXT NOT NULL, mime TEXT NOT NULL, width BIGINT NOT NULL, height BIGINT NOT NULL,
  parent_id TEXT, created_at BIGINT NOT NULL);
CREATE INDEX artefacts_key ON artefacts(key_id, created_at);
CREATE INDEX artefacts_hash ON artefacts(output_hash);
CREATE INDEX artefacts_request ON artefacts(request_id, seq);
CREATE TABLE api_keys (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, created_at BIGINT NOT NULL,
  revoked_at BIGINT);
CREATE TABLE idempotency (
  scope TEXT NOT NULL, idem_key TEXT NOT NULL, request_hash TEXT NOT NULL, status INTEGER NOT NULL,
  content_type TEXT NOT NULL, body BYTEA NOT NULL, created_at BIGINT NOT NULL, key_id TEXT,
  expires_at BIGINT NOT NULL, PRIMARY KEY (scope, idem_key));
CREATE INDEX idempotency_key ON idempotency(key_id);
CREATE INDEX idempotency_expiry ON idempotency(expires_at);
CREATE TABLE files (
  name TEXT PRIMARY KEY, key_id TEXT, display_name TEXT, mime_type TEXT NOT NULL,
  size_bytes BIGINT NOT NULL, sha256 TEXT, state TEXT NOT NULL, upload_id TEXT UNIQUE,
  received BIGINT NOT NULL DEFAULT 0, created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL,
  source TEXT NOT NULL);
CREATE INDEX files_hash ON files(sha256);
CREATE INDEX files_key ON files(key_id, created_at);
CREATE TABLE batches (
  name TEXT PRIMARY KEY, key_id TEXT, model TEXT NOT NULL, display_name TEXT, state TEXT NOT NULL,
  created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, ended_at BIGINT, input_file TEXT,
  output_file TEXT);
CREATE INDEX batches_open ON batches(created_at, name) WHERE state IN ('pending', 'running');
CREATE TABLE batch_items (
  batch TEXT NOT NULL REFERENCES batches(name) ON DELETE CASCADE, idx BIGINT NOT NULL,
  request TEXT NOT NULL, metadata TEXT, state TEXT NOT NULL, result TEXT, lease_owner TEXT,
  lease_until BIGINT, PRIMARY KEY (batch, idx));
CREATE TABLE quota_reservations (
  id TEXT PRIMARY KEY, key_id TEXT, images BIGINT NOT NULL, created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL);
CREATE INDEX quota_reservations_key ON quota_reservations(key_id);
";

/// Version 2: the shared job queue (see `jobs.rs`): jobs claimed under leases, and each
/// caller's last turn per model (round-robin between callers across every worker).
const V2: &str = "
CREATE TABLE jobs (
  seq BIGINT GENERATED ALWAYS AS IDENTITY, id TEXT PRIMARY KEY, model TEXT NOT NULL,
  lane TEXT NOT NULL, caller TEXT NOT NULL, payload TEXT NOT NULL, state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
  lease_owner TEXT, lease_until BIGINT, result TEXT, enqueued_at BIGINT NOT NULL,
  ended_at BIGINT);
CREATE INDEX jobs_open ON jobs(model, lane, seq) WHERE state IN ('queued', 'running');
CREATE SEQUENCE job_turn_seq;
CREATE TABLE job_turns (
  model TEXT NOT NULL, caller TEXT NOT NULL, turn BIGINT NOT NULL, PRIMARY KEY (model, caller));
";

/// Version 3: conversations (a root artefact and its descendants) are read by `parent_id`.
const V3: &str = "
CREATE INDEX artefacts_parent ON artefacts(parent_id);
";

/// Version 4: what a running job reports to the API node that holds its client (progress, partial
/// images, then its outputs), as rows a `NOTIFY` names by job id — image bytes never go into a
/// notification (PostgreSQL caps their payload at 8000 bytes).
const V4: &str = "
CREATE TABLE job_events (
  seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, job_id TEXT NOT NULL, kind TEXT NOT NULL,
  body TEXT NOT NULL, data BYTEA, created_at BIGINT NOT NULL);
CREATE INDEX job_events_job ON job_events(job_id, seq);
";

/// Version 5: what the queue's backpressure and housekeeping need. `job_lanes`: how many
/// previews of a model were taken in a row (a waiting final goes after a burst of them);
/// `job_workers`: which worker serves which model, until when (a heartbeat: an API node refuses a
/// model no live worker has); `secrets`: values every node must share (the HMAC key of
/// `thoughtSignature`s); settled jobs found by their end for deletion.
const V5: &str = "
CREATE TABLE job_lanes (model TEXT PRIMARY KEY, previews_in_row INTEGER NOT NULL);
CREATE TABLE job_workers (
  owner TEXT PRIMARY KEY, node TEXT NOT NULL, model TEXT NOT NULL, alive_until BIGINT NOT NULL);
CREATE INDEX job_workers_model ON job_workers(model, alive_until);
CREATE TABLE secrets (name TEXT PRIMARY KEY, value BYTEA NOT NULL, created_at BIGINT NOT NULL);
CREATE INDEX jobs_settled ON jobs(ended_at) WHERE state IN ('succeeded', 'failed', 'cancelled');
CREATE INDEX job_events_created ON job_events(created_at);
";

/// Version 6: request rate limits shared by the API nodes (`rates.rs`): each counted request's
/// time in unix milliseconds, per caller, deleted once it leaves the window; and the parts of
/// resumable uploads (`uploads.rs`), whose chunks may reach different nodes; and what each
/// worker's model is (`job_workers.kind`), for API nodes that plan edits without loading it.
const V6: &str = "
ALTER TABLE job_workers ADD COLUMN kind TEXT;
CREATE TABLE rate_hits (caller TEXT NOT NULL, at BIGINT NOT NULL);
CREATE INDEX rate_hits_caller ON rate_hits(caller, at);
CREATE TABLE upload_parts (
  upload_id TEXT NOT NULL, start BIGINT NOT NULL, data BYTEA NOT NULL, PRIMARY KEY (upload_id, start));
";

fn version(v: i64, description: &'static str, sql: &'static str) -> Migration {
    Migration::new(v, Cow::Borrowed(description), MigrationType::Simple, SqlStr::from_static(sql), false)
}

/// Every version, oldest first.
pub fn migrator() -> Migrator {
    Migrator::with_migrations(vec![
        version(1, "plantain tables", V1),
        version(2, "job queue", V2),
        version(3, "conversations", V3),
        version(4, "job events", V4),
        version(5, "queue limits, workers, shared secrets", V5),
        version(6, "rate limits, upload parts", V6),
    ])
}
