//! The embedded metadata backend: SQLite in one file (WAL), statements on the blocking pool.

mod batches;
mod conversations;
mod schema;

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};

use crate::error::{Result, StoreError};
use crate::records::*;
use crate::{Artefacts, Files, Idempotency, IdempotencyScope, Keys, now};

/// SQLite metadata in one file.
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

/// Reservations a crashed request left behind stop counting after this long.
const RESERVATION_TTL_SECS: i64 = 3600;

impl SqliteStore {
    /// Opens (creating and migrating as needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(|e| StoreError::Io(d.to_path_buf(), e))?;
        }
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        schema::migrate(&mut conn)?;
        Ok(SqliteStore { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Runs `f` on the connection on the blocking pool.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static) -> Result<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut c)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

/// An immediate (write-locking) transaction: a read-then-write inside it is atomic across
/// processes too.
fn write_tx(conn: &mut Connection) -> Result<Transaction<'_>> {
    Ok(conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
}

/// Every row `sql` returns, each read by `row`.
pub(crate) fn all_rows<T>(
    c: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
    row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut st = c.prepare(sql)?;
    let rows = st.query_map(p, row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn json_col(s: String) -> serde_json::Value {
    serde_json::from_str(&s).unwrap_or(serde_json::Value::Null)
}

fn typed_col<T: serde::de::DeserializeOwned + Default>(s: String) -> T {
    serde_json::from_str(&s).unwrap_or_default()
}

/// `Some(hash)` when no file and no artefact uses the blob any more (the caller deletes it).
/// The one place that decides whether a blob is still used.
pub(crate) fn unused_blob(conn: &Connection, hash: &str) -> Result<Option<String>> {
    let users: i64 = conn.query_row(
        "SELECT (SELECT COUNT(*) FROM files WHERE sha256 = ?1) + (SELECT COUNT(*) FROM artefacts WHERE output_hash = ?1)",
        [hash],
        |r| r.get(0),
    )?;
    Ok((users == 0).then(|| hash.to_string()))
}

/// The hashes among `hashes` nothing uses any more, each once.
pub(crate) fn unused_blobs(conn: &Connection, hashes: Vec<String>) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for h in hashes {
        if !out.contains(&h)
            && let Some(h) = unused_blob(conn, &h)?
        {
            out.push(h);
        }
    }
    Ok(out)
}

pub(crate) const ARTEFACT_COLS: &str = "id, version, request_id, key_id, model, prompt_hash, params, seed, timings, usage, output_hash, mime, \
                             width, height, parent_id, created_at";

pub(crate) fn artefact_row(r: &Row<'_>) -> rusqlite::Result<Artefact> {
    Ok(Artefact {
        id: r.get("id")?,
        version: r.get("version")?,
        request_id: r.get("request_id")?,
        key_id: r.get("key_id")?,
        model: r.get("model")?,
        prompt_hash: r.get("prompt_hash")?,
        params: json_col(r.get("params")?),
        seed: r.get::<_, i64>("seed")? as u64,
        timings: typed_col(r.get("timings")?),
        usage: typed_col(r.get("usage")?),
        output_hash: r.get("output_hash")?,
        mime: r.get("mime")?,
        width: r.get("width")?,
        height: r.get("height")?,
        parent_id: r.get("parent_id")?,
        created_at: r.get("created_at")?,
    })
}

fn insert_artefact_on(conn: &Connection, a: &Artefact) -> Result<()> {
    conn.execute(
        &format!("INSERT INTO artefacts ({ARTEFACT_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16)"),
        params![
            a.id,
            a.version,
            a.request_id,
            a.key_id,
            a.model,
            a.prompt_hash,
            a.params.to_string(),
            a.seed as i64,
            json_text(&a.timings),
            json_text(&a.usage),
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

/// A record serialised into a JSON column.
fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// Images recorded for `key_id` since `since`.
fn images_recorded(conn: &Connection, key_id: Option<&str>, since: i64) -> Result<u64> {
    let n: i64 =
        conn.query_row("SELECT COUNT(*) FROM artefacts WHERE key_id IS ?1 AND created_at >= ?2", params![key_id, since], |r| r.get(0))?;
    Ok(n as u64)
}

/// Images recorded plus live reservations for `key_id` in the window from `since`.
fn images_used(conn: &Connection, key_id: Option<&str>, since: i64, now: i64) -> Result<u64> {
    let reserved: i64 = conn.query_row(
        "SELECT COALESCE(SUM(images), 0) FROM quota_reservations WHERE key_id IS ?1 AND expires_at > ?2",
        params![key_id, now],
        |r| r.get(0),
    )?;
    Ok(images_recorded(conn, key_id, since)? + reserved as u64)
}

#[async_trait]
impl Artefacts for SqliteStore {
    async fn insert_artefacts(&self, a: &[Artefact], reservation: Option<&str>) -> Result<()> {
        let (a, reservation) = (a.to_vec(), reservation.map(str::to_string));
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            for x in &a {
                insert_artefact_on(&tx, x)?;
            }
            if let Some(r) = reservation {
                tx.execute("DELETE FROM quota_reservations WHERE id = ?1", [r])?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn artefact(&self, id: &str) -> Result<Option<Artefact>> {
        let id = id.to_string();
        self.run(move |c| {
            Ok(c.query_row(&format!("SELECT {ARTEFACT_COLS} FROM artefacts WHERE id = ?1"), [id], artefact_row).optional()?)
        })
        .await
    }

    async fn artefacts_of_request(&self, request_id: &str) -> Result<Vec<Artefact>> {
        let id = request_id.to_string();
        self.run(move |c| {
            all_rows(c, &format!("SELECT {ARTEFACT_COLS} FROM artefacts WHERE request_id = ?1 ORDER BY rowid"), [id], artefact_row)
        })
        .await
    }

    async fn images_since(&self, key_id: Option<&str>, since: i64) -> Result<u64> {
        let key = key_id.map(str::to_string);
        self.run(move |c| images_recorded(c, key.as_deref(), since)).await
    }

    async fn reserve_images(&self, key_id: Option<&str>, since: i64, wanted: u64, limit: u64) -> Result<Reservation> {
        let key = key_id.map(str::to_string);
        self.run(move |conn| {
            let t = now();
            let tx = write_tx(conn)?;
            tx.execute("DELETE FROM quota_reservations WHERE expires_at <= ?1", [t])?;
            let used = images_used(&tx, key.as_deref(), since, t)?;
            if used + wanted > limit {
                return Ok(Reservation::Exceeded { used });
            }
            let id = hex::encode(rand::random::<[u8; 16]>());
            tx.execute(
                "INSERT INTO quota_reservations (id, key_id, images, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, key, wanted as i64, t, t + RESERVATION_TTL_SECS],
            )?;
            tx.commit()?;
            Ok(Reservation::Held(id))
        })
        .await
    }

    async fn release_reservation(&self, id: &str) -> Result<()> {
        let id = id.to_string();
        self.run(move |c| {
            c.execute("DELETE FROM quota_reservations WHERE id = ?1", [id])?;
            Ok(())
        })
        .await
    }

    async fn delete_artefacts_before(&self, before: i64) -> Result<Vec<String>> {
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let hashes: Vec<String> = all_rows(&tx, "SELECT output_hash FROM artefacts WHERE created_at < ?1", [before], |r| r.get(0))?;
            tx.execute("DELETE FROM artefacts WHERE created_at < ?1", [before])?;
            let unused = unused_blobs(&tx, hashes)?;
            tx.commit()?;
            Ok(unused)
        })
        .await
    }
}

fn key_row(r: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    Ok(KeyRecord { id: r.get("id")?, name: r.get("name")?, created_at: r.get("created_at")?, revoked_at: r.get("revoked_at")? })
}

/// Hashes of the blobs a key's records point at, then the records deleted.
fn delete_key_rows(tx: &Transaction<'_>, key_id: &str) -> Result<Vec<String>> {
    let mut hashes: Vec<String> = all_rows(tx, "SELECT output_hash FROM artefacts WHERE key_id = ?1", [key_id], |r| r.get(0))?;
    let files: Vec<Option<String>> = all_rows(tx, "SELECT sha256 FROM files WHERE key_id = ?1", [key_id], |r| r.get(0))?;
    hashes.extend(files.into_iter().flatten());
    tx.execute("DELETE FROM artefacts WHERE key_id = ?1", [key_id])?;
    tx.execute("DELETE FROM files WHERE key_id = ?1", [key_id])?;
    tx.execute("DELETE FROM batch_items WHERE batch IN (SELECT name FROM batches WHERE key_id = ?1)", [key_id])?;
    tx.execute("DELETE FROM batches WHERE key_id = ?1", [key_id])?;
    tx.execute("DELETE FROM idempotency WHERE key_id = ?1", [key_id])?;
    tx.execute("DELETE FROM quota_reservations WHERE key_id = ?1", [key_id])?;
    Ok(hashes)
}

#[async_trait]
impl Keys for SqliteStore {
    async fn create_key(&self, id: &str, name: &str, hash: &str) -> Result<()> {
        let (id, name, hash) = (id.to_string(), name.to_string(), hash.to_string());
        self.run(move |c| {
            c.execute("INSERT INTO api_keys (id, name, hash, created_at) VALUES (?1, ?2, ?3, ?4)", params![id, name, hash, now()])?;
            Ok(())
        })
        .await
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>> {
        self.run(|c| all_rows(c, "SELECT id, name, created_at, revoked_at FROM api_keys ORDER BY created_at, id", [], key_row)).await
    }

    async fn revoke_key(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.run(
            move |c| Ok(c.execute("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL", params![id, now()])? > 0),
        )
        .await
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyRecord>> {
        let hash = hash.to_string();
        self.run(move |c| {
            Ok(c.query_row("SELECT id, name, created_at, revoked_at FROM api_keys WHERE hash = ?1 AND revoked_at IS NULL", [hash], key_row)
                .optional()?)
        })
        .await
    }

    async fn active_keys(&self) -> Result<u64> {
        self.run(|c| {
            let n: i64 = c.query_row("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL", [], |r| r.get(0))?;
            Ok(n as u64)
        })
        .await
    }

    async fn delete_key_data(&self, key_id: &str) -> Result<Vec<String>> {
        let key = key_id.to_string();
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let hashes = delete_key_rows(&tx, &key)?;
            let unused = unused_blobs(&tx, hashes)?;
            tx.commit()?;
            Ok(unused)
        })
        .await
    }
}

#[async_trait]
impl Idempotency for SqliteStore {
    async fn idempotent(&self, at: &IdempotencyScope<'_>, now: i64) -> Result<Option<IdempotentResponse>> {
        let (scope, key) = (at.scope.to_string(), at.key.to_string());
        self.run(move |c| {
            Ok(c.query_row(
                "SELECT request_hash, status, content_type, body FROM idempotency \
                 WHERE scope = ?1 AND idem_key = ?2 AND expires_at > ?3",
                params![scope, key, now],
                |r| {
                    Ok(IdempotentResponse {
                        request_hash: r.get("request_hash")?,
                        status: r.get("status")?,
                        content_type: r.get("content_type")?,
                        body: r.get("body")?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    async fn put_idempotent(&self, at: &IdempotencyScope<'_>, r: &IdempotentResponse, expires_at: i64) -> Result<()> {
        let (scope, key, key_id, r) = (at.scope.to_string(), at.key.to_string(), at.key_id.map(str::to_string), r.clone());
        self.run(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO idempotency \
                 (scope, idem_key, request_hash, status, content_type, body, created_at, key_id, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![scope, key, r.request_hash, r.status, r.content_type, r.body, now(), key_id, expires_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn purge_idempotency(&self, now: i64) -> Result<usize> {
        self.run(move |c| Ok(c.execute("DELETE FROM idempotency WHERE expires_at <= ?1", [now])?)).await
    }
}

const FILE_COLS: &str =
    "name, key_id, display_name, mime_type, size_bytes, sha256, state, upload_id, received, created_at, expires_at, source";

fn file_row(r: &Row<'_>) -> rusqlite::Result<FileRecord> {
    Ok(FileRecord {
        name: r.get("name")?,
        key_id: r.get("key_id")?,
        display_name: r.get("display_name")?,
        mime_type: r.get("mime_type")?,
        size_bytes: r.get("size_bytes")?,
        sha256: r.get("sha256")?,
        state: r.get("state")?,
        upload_id: r.get("upload_id")?,
        received: r.get("received")?,
        created_at: r.get("created_at")?,
        expires_at: r.get("expires_at")?,
        source: r.get("source")?,
    })
}

pub(crate) fn put_file_on(conn: &Connection, f: &FileRecord) -> Result<()> {
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

fn files_where(c: &Connection, cond: &str, p: impl rusqlite::Params) -> Result<Vec<FileRecord>> {
    all_rows(c, &format!("SELECT {FILE_COLS} FROM files WHERE {cond}"), p, file_row)
}

#[async_trait]
impl Files for SqliteStore {
    async fn put_file(&self, f: &FileRecord) -> Result<()> {
        let f = f.clone();
        self.run(move |c| put_file_on(c, &f)).await
    }

    async fn file(&self, name: &str) -> Result<Option<FileRecord>> {
        let name = name.to_string();
        self.run(move |c| Ok(files_where(c, "name = ?1", [name])?.pop())).await
    }

    async fn file_by_upload(&self, upload_id: &str) -> Result<Option<FileRecord>> {
        let id = upload_id.to_string();
        self.run(move |c| Ok(files_where(c, "upload_id = ?1", [id])?.pop())).await
    }

    async fn list_files(&self, key_id: Option<&str>) -> Result<Vec<FileRecord>> {
        let key = key_id.map(str::to_string);
        self.run(move |c| files_where(c, "key_id IS ?1 ORDER BY created_at DESC, name", [key])).await
    }

    async fn expired_files(&self, now: i64) -> Result<Vec<FileRecord>> {
        self.run(move |c| files_where(c, "expires_at <= ?1 ORDER BY name", [now])).await
    }

    async fn delete_file(&self, name: &str) -> Result<Option<String>> {
        let name = name.to_string();
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let hash: Option<Option<String>> =
                tx.query_row("SELECT sha256 FROM files WHERE name = ?1", [&name], |r| r.get(0)).optional()?;
            tx.execute("DELETE FROM files WHERE name = ?1", [&name])?;
            let unused = match hash.flatten() {
                Some(h) => unused_blob(&tx, &h)?,
                None => None,
            };
            tx.commit()?;
            Ok(unused)
        })
        .await
    }
}

#[cfg(test)]
mod tests;
