//! The SQLite schema and its versions (`PRAGMA user_version`), applied in order at open.

use rusqlite::Connection;

use crate::error::Result;

/// Version 1: the tables as the first releases wrote them (state names were the Gemini wire
/// names then).
const V1: &str = "
CREATE TABLE IF NOT EXISTS artefacts (
  id TEXT PRIMARY KEY, version INTEGER NOT NULL, request_id TEXT NOT NULL, key_id TEXT,
  model TEXT NOT NULL, prompt_hash TEXT NOT NULL, params TEXT NOT NULL, seed INTEGER NOT NULL,
  timings TEXT NOT NULL, usage TEXT NOT NULL, output_hash TEXT NOT NULL, mime TEXT NOT NULL,
  width INTEGER NOT NULL, height INTEGER NOT NULL, parent_id TEXT, created_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS artefacts_key ON artefacts(key_id, created_at);
CREATE INDEX IF NOT EXISTS artefacts_hash ON artefacts(output_hash);
CREATE TABLE IF NOT EXISTS api_keys (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL,
  revoked_at INTEGER);
CREATE TABLE IF NOT EXISTS idempotency (
  scope TEXT NOT NULL, idem_key TEXT NOT NULL, request_hash TEXT NOT NULL, status INTEGER NOT NULL,
  content_type TEXT NOT NULL, body BLOB NOT NULL, created_at INTEGER NOT NULL,
  PRIMARY KEY (scope, idem_key));
CREATE TABLE IF NOT EXISTS files (
  name TEXT PRIMARY KEY, key_id TEXT, display_name TEXT, mime_type TEXT NOT NULL,
  size_bytes INTEGER NOT NULL, sha256 TEXT, state TEXT NOT NULL, upload_id TEXT UNIQUE,
  received INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
  name TEXT PRIMARY KEY, key_id TEXT, model TEXT NOT NULL, display_name TEXT, state TEXT NOT NULL,
  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, ended_at INTEGER);
CREATE TABLE IF NOT EXISTS batch_items (
  batch TEXT NOT NULL, idx INTEGER NOT NULL, request TEXT NOT NULL, metadata TEXT,
  state TEXT NOT NULL, result TEXT, PRIMARY KEY (batch, idx));
";

/// Version 2: storage's own state names; idempotency records with an owner and an expiry;
/// batch item leases; quota reservations.
const V2: &str = "
UPDATE files SET state = CASE state WHEN 'PROCESSING' THEN 'uploading' WHEN 'ACTIVE' THEN 'active' ELSE state END;
UPDATE files SET source = lower(source);
UPDATE batches SET state = lower(substr(state, 13)) WHERE state LIKE 'BATCH_STATE_%';
UPDATE batch_items SET state = lower(state);
ALTER TABLE idempotency ADD COLUMN key_id TEXT;
ALTER TABLE idempotency ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0;
UPDATE idempotency SET expires_at = created_at + 86400;
CREATE INDEX IF NOT EXISTS idempotency_key ON idempotency(key_id);
ALTER TABLE batch_items ADD COLUMN lease_owner TEXT;
ALTER TABLE batch_items ADD COLUMN lease_until INTEGER;
CREATE TABLE IF NOT EXISTS quota_reservations (
  id TEXT PRIMARY KEY, key_id TEXT, images INTEGER NOT NULL, created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS files_hash ON files(sha256);
";

/// Version 3: conversations (a root artefact and its descendants) are read by `parent_id`.
const V3: &str = "
CREATE INDEX IF NOT EXISTS artefacts_parent ON artefacts(parent_id);
";

/// Brings the database to the newest version, one step per transaction.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version < 1 {
        let tx = conn.transaction()?;
        tx.execute_batch(V1)?;
        // Columns added to version 1 after its first release.
        add_column(&tx, "files", "source", "TEXT NOT NULL DEFAULT 'UPLOADED'")?;
        add_column(&tx, "batches", "input_file", "TEXT")?;
        add_column(&tx, "batches", "output_file", "TEXT")?;
        tx.execute_batch("PRAGMA user_version = 1")?;
        tx.commit()?;
    }
    if version < 2 {
        let tx = conn.transaction()?;
        tx.execute_batch(V2)?;
        tx.execute_batch("PRAGMA user_version = 2")?;
        tx.commit()?;
    }
    if version < 3 {
        let tx = conn.transaction()?;
        tx.execute_batch(V3)?;
        tx.execute_batch("PRAGMA user_version = 3")?;
        tx.commit()?;
    }
    Ok(())
}

fn add_column(conn: &Connection, table: &str, column: &str, decl: &str) -> Result<()> {
    let has: bool = conn.prepare(&format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"))?.exists([column])?;
    if !has {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
    }
    Ok(())
}
