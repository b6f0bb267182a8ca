//! Storage behind two traits: [`MetaStore`] (artefacts, keys, idempotency records; SQLite by
//! default) and [`BlobStore`] (content-addressed bytes; a folder by default), so that
//! Postgres and S3 can follow without touching the handlers.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::error::StoreError;

/// Content-addressed bytes: the address is the sha256 (hex) of the content.
pub trait BlobStore: Send + Sync {
    fn put(&self, bytes: &[u8]) -> Result<String, StoreError>;
    fn get(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn delete(&self, hash: &str) -> Result<(), StoreError>;
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
    pub params: serde_json::Value,
    pub seed: u64,
    pub timings: serde_json::Value,
    pub usage: serde_json::Value,
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
#[derive(Clone, Debug)]
pub struct IdempotentResponse {
    pub request_hash: String,
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// Metadata.
pub trait MetaStore: Send + Sync {
    fn insert_artefact(&self, a: &Artefact) -> Result<(), StoreError>;
    fn artefact(&self, id: &str) -> Result<Option<Artefact>, StoreError>;
    /// Images recorded for `key_id` (None: anonymous) since `since` (unix seconds).
    fn images_since(&self, key_id: Option<&str>, since: i64) -> Result<u64, StoreError>;
    /// Deletes the key's artefacts; returns the output hashes no other artefact uses.
    fn delete_artefacts_of_key(&self, key_id: &str) -> Result<Vec<String>, StoreError>;
    /// Deletes artefacts created before `before`; returns now-unreferenced output hashes.
    fn delete_artefacts_before(&self, before: i64) -> Result<Vec<String>, StoreError>;

    fn create_key(&self, id: &str, name: &str, hash: &str) -> Result<(), StoreError>;
    fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError>;
    /// Returns false when no such active key.
    fn revoke_key(&self, id: &str) -> Result<bool, StoreError>;
    /// The active key with this hash.
    fn key_by_hash(&self, hash: &str) -> Result<Option<KeyRecord>, StoreError>;
    fn active_keys(&self) -> Result<u64, StoreError>;

    fn idempotent(&self, scope: &str, key: &str) -> Result<Option<IdempotentResponse>, StoreError>;
    fn put_idempotent(&self, scope: &str, key: &str, r: &IdempotentResponse) -> Result<(), StoreError>;

    /// Inserts all artefacts of one request in one transaction (all or none).
    fn insert_artefacts(&self, a: &[Artefact]) -> Result<(), StoreError>;
    /// The artefacts recorded for a request id, in insertion order.
    fn artefacts_of_request(&self, request_id: &str) -> Result<Vec<Artefact>, StoreError>;

    fn put_file(&self, f: &FileRecord) -> Result<(), StoreError>;
    fn file(&self, name: &str) -> Result<Option<FileRecord>, StoreError>;
    fn file_by_upload(&self, upload_id: &str) -> Result<Option<FileRecord>, StoreError>;
    fn list_files(&self, key_id: Option<&str>) -> Result<Vec<FileRecord>, StoreError>;
    /// Every key's files whose 48 hours are over at `now`.
    fn expired_files(&self, now: i64) -> Result<Vec<FileRecord>, StoreError>;
    /// Deletes the record; returns its blob address when no other file uses it.
    fn delete_file(&self, name: &str) -> Result<Option<String>, StoreError>;

    /// Writes the batch and all its items in one transaction.
    fn create_batch(&self, b: &BatchRecord, items: &[NewItem]) -> Result<(), StoreError>;
    fn batch(&self, name: &str) -> Result<Option<BatchRecord>, StoreError>;
    fn list_batches(&self, key_id: Option<&str>) -> Result<Vec<BatchRecord>, StoreError>;
    fn batch_items(&self, name: &str) -> Result<Vec<BatchItem>, StoreError>;
    fn set_batch_state(&self, name: &str, state: &str, ended: bool) -> Result<(), StoreError>;
    /// Moves a pending or running batch to the final `state` and, in the same transaction,
    /// records its output file (file-input batches). Returns false (and writes nothing) when
    /// the batch was no longer pending or running.
    fn complete_batch(&self, name: &str, state: &str, output: Option<&FileRecord>) -> Result<bool, StoreError>;
    /// Pending or running batches with no pending or running item left: done but not yet
    /// completed (the runner completes them, also after a crash between the last item and the
    /// completion).
    fn settled_batches(&self) -> Result<Vec<BatchRecord>, StoreError>;
    /// The oldest unfinished (pending, or running when a crash interrupted it) item of a
    /// pending or running batch.
    fn next_batch_item(&self) -> Result<Option<(BatchRecord, BatchItem)>, StoreError>;
    /// Marks a pending item running; false when it is no longer pending (cancelled or deleted
    /// meanwhile), and then it must not run.
    fn start_batch_item(&self, batch: &str, idx: i64) -> Result<bool, StoreError>;
    fn finish_batch_item(&self, batch: &str, idx: i64, state: &str, result: &serde_json::Value) -> Result<(), StoreError>;
    /// Marks pending items of a batch cancelled (a running item is left to finish); returns
    /// whether an item is still running.
    fn cancel_batch_items(&self, batch: &str) -> Result<bool, StoreError>;
    /// Deletes the batch, its items and its results file; returns the results file's blob
    /// hash when nothing else uses it any more (the caller deletes the blob).
    fn delete_batch(&self, name: &str) -> Result<Option<String>, StoreError>;
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// SQLite metadata in one file.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
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
    /// `PROCESSING` while uploading, `ACTIVE` when usable.
    pub state: String,
    pub upload_id: Option<String>,
    pub received: i64,
    pub created_at: i64,
    pub expires_at: i64,
    /// `UPLOADED` (Files API) or `GENERATED` (a batch's output).
    pub source: String,
}

/// A batch job.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct BatchRecord {
    /// `batches/abc123`.
    pub name: String,
    pub key_id: Option<String>,
    pub model: String,
    pub display_name: Option<String>,
    /// `BATCH_STATE_PENDING`, `_RUNNING`, `_SUCCEEDED`, `_FAILED`, `_CANCELLED`.
    pub state: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub ended_at: Option<i64>,
    /// `files/…` the requests were read from (JSONL input); None for inline requests.
    pub input_file: Option<String>,
    /// `files/…` the results were written to, once a file-input batch is done.
    pub output_file: Option<String>,
}

/// An item of a batch being created: its request, its `metadata` (inline) or `{"key": …}`
/// (JSONL line), and `failed` when the item was refused before it could run (a malformed
/// JSONL line): it is stored as FAILED with that error.
#[derive(Clone, Debug, PartialEq)]
pub struct NewItem {
    pub request: serde_json::Value,
    pub metadata: Option<serde_json::Value>,
    pub failed: Option<serde_json::Value>,
}

/// One request of a batch; `result` is `{"response": …}` or `{"error": …}` once done.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchItem {
    pub batch: String,
    pub idx: i64,
    pub request: serde_json::Value,
    pub metadata: Option<serde_json::Value>,
    pub state: String,
    pub result: Option<serde_json::Value>,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(|e| StoreError::Io(d.to_path_buf(), e))?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        // Columns added after the first release: databases written before get them here.
        add_column(&conn, "files", "source", "TEXT NOT NULL DEFAULT 'UPLOADED'")?;
        add_column(&conn, "batches", "input_file", "TEXT")?;
        add_column(&conn, "batches", "output_file", "TEXT")?;
        Ok(SqliteStore { conn: Mutex::new(conn) })
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn add_column(conn: &Connection, table: &str, column: &str, decl: &str) -> Result<(), StoreError> {
    let has: bool = conn.prepare(&format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"))?.exists([column])?;
    if !has {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
    }
    Ok(())
}

fn json_col(s: String) -> serde_json::Value {
    serde_json::from_str(&s).unwrap_or(serde_json::Value::Null)
}

fn artefact_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Artefact> {
    Ok(Artefact {
        id: r.get(0)?,
        version: r.get(1)?,
        request_id: r.get(2)?,
        key_id: r.get(3)?,
        model: r.get(4)?,
        prompt_hash: r.get(5)?,
        params: json_col(r.get(6)?),
        seed: r.get::<_, i64>(7)? as u64,
        timings: json_col(r.get(8)?),
        usage: json_col(r.get(9)?),
        output_hash: r.get(10)?,
        mime: r.get(11)?,
        width: r.get(12)?,
        height: r.get(13)?,
        parent_id: r.get(14)?,
        created_at: r.get(15)?,
    })
}

/// `Some(hash)` when no file and no artefact uses the blob any more (the caller deletes it).
fn unused_blob(conn: &Connection, hash: String) -> Result<Option<String>, StoreError> {
    let users: i64 = conn.query_row(
        "SELECT (SELECT COUNT(*) FROM files WHERE sha256 = ?1) + (SELECT COUNT(*) FROM artefacts WHERE output_hash = ?1)",
        [&hash],
        |r| r.get(0),
    )?;
    Ok((users == 0).then_some(hash))
}

fn unreferenced(conn: &Connection, hashes: Vec<String>) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for h in hashes {
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM artefacts WHERE output_hash = ?1", [&h], |r| r.get(0))?;
        if n == 0 && !out.contains(&h) {
            out.push(h);
        }
    }
    Ok(out)
}

fn file_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRecord> {
    Ok(FileRecord {
        name: r.get(0)?,
        key_id: r.get(1)?,
        display_name: r.get(2)?,
        mime_type: r.get(3)?,
        size_bytes: r.get(4)?,
        sha256: r.get(5)?,
        state: r.get(6)?,
        upload_id: r.get(7)?,
        received: r.get(8)?,
        created_at: r.get(9)?,
        expires_at: r.get(10)?,
        source: r.get(11)?,
    })
}

fn batch_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BatchRecord> {
    Ok(BatchRecord {
        name: r.get(0)?,
        key_id: r.get(1)?,
        model: r.get(2)?,
        display_name: r.get(3)?,
        state: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
        ended_at: r.get(7)?,
        input_file: r.get(8)?,
        output_file: r.get(9)?,
    })
}

fn item_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BatchItem> {
    Ok(BatchItem {
        batch: r.get(0)?,
        idx: r.get(1)?,
        request: json_col(r.get(2)?),
        metadata: r.get::<_, Option<String>>(3)?.map(json_col),
        state: r.get(4)?,
        result: r.get::<_, Option<String>>(5)?.map(json_col),
    })
}

const FILE_COLS: &str =
    "name, key_id, display_name, mime_type, size_bytes, sha256, state, upload_id, received, created_at, expires_at, source";
const BATCH_COLS: &str = "name, key_id, model, display_name, state, created_at, updated_at, ended_at, input_file, output_file";
const ITEM_COLS: &str = "batch, idx, request, metadata, state, result";

fn put_file_on(conn: &Connection, f: &FileRecord) -> Result<(), StoreError> {
    conn.execute(
        &format!("INSERT OR REPLACE INTO files ({FILE_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)"),
        params![
            f.name,
            f.key_id,
            f.display_name,
            f.mime_type,
            f.size_bytes,
            f.sha256,
            f.state,
            f.upload_id,
            f.received,
            f.created_at,
            f.expires_at,
            f.source
        ],
    )?;
    Ok(())
}

fn insert_artefact_on(conn: &Connection, a: &Artefact) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO artefacts VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16)",
        params![
            a.id,
            a.version,
            a.request_id,
            a.key_id,
            a.model,
            a.prompt_hash,
            a.params.to_string(),
            a.seed as i64,
            a.timings.to_string(),
            a.usage.to_string(),
            a.output_hash,
            a.mime,
            a.width,
            a.height,
            a.parent_id,
            a.created_at
        ],
    )?;
    Ok(())
}

impl MetaStore for SqliteStore {
    fn insert_artefacts(&self, a: &[Artefact]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for x in a {
            insert_artefact_on(&tx, x)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn artefacts_of_request(&self, request_id: &str) -> Result<Vec<Artefact>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare("SELECT * FROM artefacts WHERE request_id = ?1 ORDER BY rowid")?;
        let rows = st.query_map([request_id], artefact_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn put_file(&self, f: &FileRecord) -> Result<(), StoreError> {
        put_file_on(&self.conn(), f)
    }

    fn file(&self, name: &str) -> Result<Option<FileRecord>, StoreError> {
        Ok(self.conn().query_row(&format!("SELECT {FILE_COLS} FROM files WHERE name = ?1"), [name], file_row).optional()?)
    }

    fn file_by_upload(&self, upload_id: &str) -> Result<Option<FileRecord>, StoreError> {
        Ok(self.conn().query_row(&format!("SELECT {FILE_COLS} FROM files WHERE upload_id = ?1"), [upload_id], file_row).optional()?)
    }

    fn list_files(&self, key_id: Option<&str>) -> Result<Vec<FileRecord>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!("SELECT {FILE_COLS} FROM files WHERE key_id IS ?1 ORDER BY created_at DESC, name"))?;
        let rows = st.query_map([key_id], file_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn expired_files(&self, now: i64) -> Result<Vec<FileRecord>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!("SELECT {FILE_COLS} FROM files WHERE expires_at <= ?1 ORDER BY expires_at, name"))?;
        let rows = st.query_map([now], file_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn delete_file(&self, name: &str) -> Result<Option<String>, StoreError> {
        let conn = self.conn();
        let hash: Option<Option<String>> = conn.query_row("SELECT sha256 FROM files WHERE name = ?1", [name], |r| r.get(0)).optional()?;
        conn.execute("DELETE FROM files WHERE name = ?1", [name])?;
        let Some(Some(h)) = hash else { return Ok(None) };
        unused_blob(&conn, h)
    }

    fn create_batch(&self, b: &BatchRecord, items: &[NewItem]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            &format!("INSERT INTO batches ({BATCH_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)"),
            params![
                b.name,
                b.key_id,
                b.model,
                b.display_name,
                b.state,
                b.created_at,
                b.updated_at,
                b.ended_at,
                b.input_file,
                b.output_file
            ],
        )?;
        for (i, it) in items.iter().enumerate() {
            tx.execute(
                &format!("INSERT INTO batch_items ({ITEM_COLS}) VALUES (?1,?2,?3,?4,?5,?6)"),
                params![
                    b.name,
                    i as i64,
                    it.request.to_string(),
                    it.metadata.as_ref().map(|m| m.to_string()),
                    if it.failed.is_some() { "FAILED" } else { "PENDING" },
                    it.failed.as_ref().map(|e| e.to_string())
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn batch(&self, name: &str) -> Result<Option<BatchRecord>, StoreError> {
        Ok(self.conn().query_row(&format!("SELECT {BATCH_COLS} FROM batches WHERE name = ?1"), [name], batch_row).optional()?)
    }

    fn list_batches(&self, key_id: Option<&str>) -> Result<Vec<BatchRecord>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!("SELECT {BATCH_COLS} FROM batches WHERE key_id IS ?1 ORDER BY created_at DESC, name"))?;
        let rows = st.query_map([key_id], batch_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn batch_items(&self, name: &str) -> Result<Vec<BatchItem>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!("SELECT {ITEM_COLS} FROM batch_items WHERE batch = ?1 ORDER BY idx"))?;
        let rows = st.query_map([name], item_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn set_batch_state(&self, name: &str, state: &str, ended: bool) -> Result<(), StoreError> {
        let t = now();
        self.conn().execute(
            "UPDATE batches SET state = ?2, updated_at = ?3, ended_at = CASE WHEN ?4 THEN ?3 ELSE ended_at END WHERE name = ?1",
            params![name, state, t, ended],
        )?;
        Ok(())
    }

    fn complete_batch(&self, name: &str, state: &str, output: Option<&FileRecord>) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let t = now();
        let n = tx.execute(
            "UPDATE batches SET state = ?2, updated_at = ?3, ended_at = ?3, output_file = ?4 \
             WHERE name = ?1 AND state IN ('BATCH_STATE_PENDING', 'BATCH_STATE_RUNNING')",
            params![name, state, t, output.map(|f| f.name.as_str())],
        )?;
        if n == 0 {
            return Ok(false); // dropping `tx` rolls back
        }
        if let Some(f) = output {
            put_file_on(&tx, f)?;
        }
        tx.commit()?;
        Ok(true)
    }

    fn settled_batches(&self) -> Result<Vec<BatchRecord>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {BATCH_COLS} FROM batches WHERE state IN ('BATCH_STATE_PENDING', 'BATCH_STATE_RUNNING') \
             AND NOT EXISTS (SELECT 1 FROM batch_items i WHERE i.batch = batches.name AND i.state IN ('PENDING', 'RUNNING')) \
             ORDER BY created_at, name"
        ))?;
        let rows = st.query_map([], batch_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn next_batch_item(&self) -> Result<Option<(BatchRecord, BatchItem)>, StoreError> {
        let conn = self.conn();
        let b = conn
            .query_row(
                &format!(
                    "SELECT {BATCH_COLS} FROM batches WHERE state IN ('BATCH_STATE_PENDING', 'BATCH_STATE_RUNNING') \
                     AND EXISTS (SELECT 1 FROM batch_items i WHERE i.batch = batches.name AND i.state IN ('PENDING', 'RUNNING')) \
                     ORDER BY created_at, name LIMIT 1"
                ),
                [],
                batch_row,
            )
            .optional()?;
        let Some(b) = b else { return Ok(None) };
        let item = conn.query_row(
            &format!("SELECT {ITEM_COLS} FROM batch_items WHERE batch = ?1 AND state IN ('PENDING', 'RUNNING') ORDER BY idx LIMIT 1"),
            [&b.name],
            item_row,
        )?;
        Ok(Some((b, item)))
    }

    fn finish_batch_item(&self, batch: &str, idx: i64, state: &str, result: &serde_json::Value) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE batch_items SET state = ?3, result = ?4 WHERE batch = ?1 AND idx = ?2",
            params![batch, idx, state, result.to_string()],
        )?;
        Ok(())
    }

    fn start_batch_item(&self, batch: &str, idx: i64) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE batch_items SET state = 'RUNNING' WHERE batch = ?1 AND idx = ?2 AND state IN ('PENDING', 'RUNNING')",
            params![batch, idx],
        )?;
        Ok(n > 0)
    }

    fn cancel_batch_items(&self, batch: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("UPDATE batch_items SET state = 'CANCELLED' WHERE batch = ?1 AND state = 'PENDING'", [batch])?;
        let running: i64 =
            tx.query_row("SELECT COUNT(*) FROM batch_items WHERE batch = ?1 AND state = 'RUNNING'", [batch], |r| r.get(0))?;
        tx.commit()?;
        Ok(running > 0)
    }

    fn delete_batch(&self, name: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let output: Option<Option<String>> =
            tx.query_row("SELECT output_file FROM batches WHERE name = ?1", [name], |r| r.get(0)).optional()?;
        let mut hash = None;
        if let Some(Some(file)) = output {
            hash =
                tx.query_row("SELECT sha256 FROM files WHERE name = ?1", [&file], |r| r.get::<_, Option<String>>(0)).optional()?.flatten();
            tx.execute("DELETE FROM files WHERE name = ?1", [&file])?;
        }
        tx.execute("DELETE FROM batch_items WHERE batch = ?1", [name])?;
        tx.execute("DELETE FROM batches WHERE name = ?1", [name])?;
        let unused = match hash {
            Some(h) => unused_blob(&tx, h)?,
            None => None,
        };
        tx.commit()?;
        Ok(unused)
    }

    fn insert_artefact(&self, a: &Artefact) -> Result<(), StoreError> {
        insert_artefact_on(&self.conn(), a)
    }

    fn artefact(&self, id: &str) -> Result<Option<Artefact>, StoreError> {
        Ok(self.conn().query_row("SELECT * FROM artefacts WHERE id = ?1", [id], artefact_row).optional()?)
    }

    fn images_since(&self, key_id: Option<&str>, since: i64) -> Result<u64, StoreError> {
        let n: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM artefacts WHERE key_id IS ?1 AND created_at >= ?2",
            params![key_id, since],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    fn delete_artefacts_of_key(&self, key_id: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let hashes: Vec<String> = conn
            .prepare("SELECT output_hash FROM artefacts WHERE key_id = ?1")?
            .query_map([key_id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        conn.execute("DELETE FROM artefacts WHERE key_id = ?1", [key_id])?;
        unreferenced(&conn, hashes)
    }

    fn delete_artefacts_before(&self, before: i64) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let hashes: Vec<String> = conn
            .prepare("SELECT output_hash FROM artefacts WHERE created_at < ?1")?
            .query_map([before], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        conn.execute("DELETE FROM artefacts WHERE created_at < ?1", [before])?;
        unreferenced(&conn, hashes)
    }

    fn create_key(&self, id: &str, name: &str, hash: &str) -> Result<(), StoreError> {
        self.conn().execute("INSERT INTO api_keys (id, name, hash, created_at) VALUES (?1, ?2, ?3, ?4)", params![id, name, hash, now()])?;
        Ok(())
    }

    fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare("SELECT id, name, created_at, revoked_at FROM api_keys ORDER BY created_at, id")?;
        let rows = st.query_map([], |r| Ok(KeyRecord { id: r.get(0)?, name: r.get(1)?, created_at: r.get(2)?, revoked_at: r.get(3)? }))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn revoke_key(&self, id: &str) -> Result<bool, StoreError> {
        let n = self.conn().execute("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL", params![id, now()])?;
        Ok(n > 0)
    }

    fn key_by_hash(&self, hash: &str) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT id, name, created_at, revoked_at FROM api_keys WHERE hash = ?1 AND revoked_at IS NULL", [hash], |r| {
                Ok(KeyRecord { id: r.get(0)?, name: r.get(1)?, created_at: r.get(2)?, revoked_at: r.get(3)? })
            })
            .optional()?)
    }

    fn active_keys(&self) -> Result<u64, StoreError> {
        let n: i64 = self.conn().query_row("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    fn idempotent(&self, scope: &str, key: &str) -> Result<Option<IdempotentResponse>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT request_hash, status, content_type, body FROM idempotency WHERE scope = ?1 AND idem_key = ?2",
                [scope, key],
                |r| Ok(IdempotentResponse { request_hash: r.get(0)?, status: r.get(1)?, content_type: r.get(2)?, body: r.get(3)? }),
            )
            .optional()?)
    }

    fn put_idempotent(&self, scope: &str, key: &str, r: &IdempotentResponse) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO idempotency VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![scope, key, r.request_hash, r.status, r.content_type, r.body, now()],
        )?;
        Ok(())
    }
}

/// Blobs in `root/ab/abcdef…` (sha256), written to a temporary file and renamed.
pub struct FsBlobs {
    root: PathBuf,
}

impl FsBlobs {
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(root).map_err(|e| StoreError::Io(root.to_path_buf(), e))?;
        Ok(FsBlobs { root: root.to_path_buf() })
    }

    fn path(&self, hash: &str) -> Option<PathBuf> {
        // Only well-formed addresses map to a path: nothing else can reach the file system.
        (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
            .then(|| self.root.join(&hash[..2]).join(hash))
    }
}

impl BlobStore for FsBlobs {
    fn put(&self, bytes: &[u8]) -> Result<String, StoreError> {
        let hash = crate::media::sha256_hex(bytes);
        let path = self.path(&hash).ok_or_else(|| StoreError::Corrupt("hash".into()))?;
        if path.exists() {
            return Ok(hash);
        }
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(dir.to_path_buf(), e))?;
        let tmp = dir.join(format!(".{hash}.{}.tmp", rand::random::<u64>()));
        std::fs::write(&tmp, bytes).map_err(|e| StoreError::Io(tmp.clone(), e))?;
        std::fs::rename(&tmp, &path).map_err(|e| StoreError::Io(path.clone(), e))?;
        Ok(hash)
    }

    fn get(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(path) = self.path(hash) else { return Ok(None) };
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io(path, e)),
        }
    }

    fn delete(&self, hash: &str) -> Result<(), StoreError> {
        let Some(path) = self.path(hash) else { return Ok(()) };
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::Io(path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artefact(id: &str, key: Option<&str>, hash: &str, at: i64) -> Artefact {
        Artefact {
            id: id.into(),
            version: 1,
            request_id: "r".into(),
            key_id: key.map(Into::into),
            model: "m".into(),
            prompt_hash: "p".into(),
            params: serde_json::json!({"a": 1}),
            seed: u64::MAX,
            timings: serde_json::json!({}),
            usage: serde_json::json!({}),
            output_hash: hash.into(),
            mime: "image/png".into(),
            width: 1,
            height: 1,
            parent_id: None,
            created_at: at,
        }
    }

    #[test]
    fn artefacts_keys_and_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("db.sqlite")).unwrap();
        let b = FsBlobs::open(&dir.path().join("blobs")).unwrap();
        let h1 = b.put(b"one").unwrap();
        let h2 = b.put(b"two").unwrap();
        s.insert_artefact(&artefact("a1", Some("k1"), &h1, 100)).unwrap();
        s.insert_artefact(&artefact("a2", Some("k1"), &h2, 200)).unwrap();
        s.insert_artefact(&artefact("a3", Some("k2"), &h2, 300)).unwrap();
        assert_eq!(s.artefact("a1").unwrap().unwrap(), artefact("a1", Some("k1"), &h1, 100));
        assert_eq!(s.images_since(Some("k1"), 150).unwrap(), 1);
        assert_eq!(s.images_since(None, 0).unwrap(), 0);
        // h2 is still used by k2's artefact, so only h1 is free to delete.
        assert_eq!(s.delete_artefacts_of_key("k1").unwrap(), vec![h1.clone()]);
        b.delete(&h1).unwrap();
        assert_eq!(b.get(&h1).unwrap(), None);
        assert_eq!(b.get(&h2).unwrap().unwrap(), b"two");
        assert_eq!(s.delete_artefacts_before(1000).unwrap(), vec![h2]);
        assert!(b.get("../../etc/passwd").unwrap().is_none());

        s.create_key("k1", "ci", "hash1").unwrap();
        assert_eq!(s.active_keys().unwrap(), 1);
        assert!(s.key_by_hash("hash1").unwrap().is_some());
        assert!(s.revoke_key("k1").unwrap());
        assert!(!s.revoke_key("k1").unwrap());
        assert!(s.key_by_hash("hash1").unwrap().is_none());
        assert_eq!(s.active_keys().unwrap(), 0);
    }
}
