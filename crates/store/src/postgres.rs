//! The scale-out metadata backend: PostgreSQL through a `sqlx` connection pool, with the same
//! semantics as [`crate::SqliteStore`], made safe for many processes on many machines:
//!
//! - quota reservations take a per-key transaction-scoped advisory lock, then count and insert
//!   in the same transaction — concurrent reservations for one key are serialised, across
//!   connections and nodes;
//! - batch items are claimed with `FOR UPDATE SKIP LOCKED` under a lease (an owner and a time),
//!   so concurrent runners each take a different item without waiting on each other; lease
//!   renewal and results are conditional on the owner still holding the item;
//! - the schema is versioned ([`schema`]) and migrated at open.
//!
//! Times are unix seconds from the caller's clock, as with SQLite: the nodes sharing a database
//! must keep their clocks in sync (NTP) for leases and expiries to mean the same on each.

mod batches;
mod conversations;
mod jobs;
mod rates;
mod schema;
mod uploads;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, Row};

use crate::error::{Result, StoreError};
use crate::records::*;
use crate::{Artefacts, Files, Idempotency, IdempotencyScope, Keys, now};

pub use jobs::{Heartbeat, JobEventRow, JobEvents, JobWaker, NewJob, OUTPUT_EVENT, Offer, PREVIEW_BURST, QueueLimits, QueuedJob};
pub use rates::RateCount;

/// Reservations a crashed request left behind stop counting after this long.
const RESERVATION_TTL_SECS: i64 = 3600;

/// Where the PostgreSQL database is.
#[derive(Clone)]
pub struct PostgresConfig {
    /// `postgres://user[:password]@host:port/database` (libpq URL form; `sslmode` etc. as query
    /// parameters). Never logged: it may hold a password.
    pub url: String,
    /// A schema to keep plantain's tables in (created when missing); None: the database's
    /// default search path (normally `public`). Letters, digits and `_` only.
    pub schema: Option<String>,
    /// Connections in this process's pool.
    pub max_connections: u32,
    /// How long opening the store, or waiting for a free connection, may take.
    pub connect_timeout: Duration,
}

impl PostgresConfig {
    pub fn new(url: &str) -> Self {
        PostgresConfig { url: url.to_string(), schema: None, max_connections: 10, connect_timeout: Duration::from_secs(10) }
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact_url(&self.url))
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// `url` with the password (if any) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else { return "<unparsed url>".into() };
    let rest = &url[start..];
    let Some(at) = rest.rfind('@') else { return url.to_string() };
    match rest[..at].find(':') {
        Some(colon) => format!("{}{}:***{}", &url[..start], &rest[..colon], &rest[at..]),
        None => url.to_string(),
    }
}

/// PostgreSQL metadata: a pool of connections to one database (and schema).
pub struct PgStore {
    pool: PgPool,
    /// The `NOTIFY` channel for enqueued jobs (one per schema: channels are database-wide).
    jobs_channel: String,
    /// The `NOTIFY` channel naming jobs that reported something (events, or their end).
    events_channel: String,
}

impl PgStore {
    /// Connects, creates the schema when one is named and missing, and migrates it to this
    /// version. A malformed URL is [`StoreError::Config`]; a server that cannot be reached (or
    /// refuses us) is [`StoreError::Connect`].
    pub async fn open(config: &PostgresConfig) -> Result<Self> {
        if !(config.url.starts_with("postgres://") || config.url.starts_with("postgresql://")) {
            return Err(StoreError::Config(format!("PostgreSQL URL {}: not postgres://…", redact_url(&config.url))));
        }
        let mut opts = PgConnectOptions::from_str(&config.url)
            .map_err(|e| StoreError::Config(format!("PostgreSQL URL {}: {e}", redact_url(&config.url))))?
            .application_name("plantain");
        if let Some(schema) = &config.schema {
            if schema.is_empty() || !schema.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(StoreError::Config(format!("PostgreSQL schema {schema:?}: letters, digits and _ only")));
            }
            let mut c = tokio::time::timeout(config.connect_timeout, PgConnection::connect_with(&opts))
                .await
                .map_err(|_| StoreError::Connect(sqlx::Error::PoolTimedOut))?
                .map_err(StoreError::Connect)?;
            // Nodes starting at once would race on CREATE SCHEMA IF NOT EXISTS (a unique
            // violation in pg_namespace): one at a time, under a lock named after the schema.
            let mut tx = c.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(format!("plantain.schema:{schema}"))
                .execute(&mut *tx)
                .await?;
            sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))).execute(&mut *tx).await?;
            tx.commit().await?;
            c.close().await?;
            opts = opts.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(config.connect_timeout)
            .connect_with(opts)
            .await
            .map_err(StoreError::Connect)?;
        schema::migrator().run(&pool).await?;
        tracing::info!(url = %redact_url(&config.url), schema = ?config.schema, "PostgreSQL metadata store open");
        let jobs_channel = match &config.schema {
            Some(s) => format!("plantain_jobs_{s}"),
            None => "plantain_jobs".to_string(),
        };
        let events_channel = format!("{jobs_channel}_events");
        Ok(PgStore { pool, jobs_channel, events_channel })
    }

    /// The secret `name` every node sharing this database uses (e.g. the key that authenticates
    /// `thoughtSignature`s): `candidate` when none is stored yet (the first node to ask decides),
    /// else the stored one.
    pub async fn shared_secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>> {
        sqlx::query("INSERT INTO secrets (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(candidate)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query_scalar("SELECT value FROM secrets WHERE name = $1").bind(name).fetch_one(&self.pool).await?)
    }

    /// Closes every connection of the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn json_col(s: String) -> serde_json::Value {
    serde_json::from_str(&s).unwrap_or(serde_json::Value::Null)
}

fn typed_col<T: serde::de::DeserializeOwned + Default>(s: String) -> T {
    serde_json::from_str(&s).unwrap_or_default()
}

/// A record serialised into a JSON column.
fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// A stored state read back into its type.
fn state_col<T: FromStr<Err = StoreError>>(r: &PgRow, col: &str) -> Result<T> {
    r.try_get::<String, _>(col)?.parse()
}

fn u32_col(r: &PgRow, col: &str) -> Result<u32> {
    let v: i64 = r.try_get(col)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{col} {v}")))
}

/// `Some(hash)` when no file and no artefact uses the blob any more (the caller deletes it).
pub(crate) async fn unused_blob(c: &mut PgConnection, hash: &str) -> Result<Option<String>> {
    let users: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM files WHERE sha256 = $1) + (SELECT COUNT(*) FROM artefacts WHERE output_hash = $1)",
    )
    .bind(hash)
    .fetch_one(&mut *c)
    .await?;
    Ok((users == 0).then(|| hash.to_string()))
}

/// The hashes among `hashes` nothing uses any more, each once.
async fn unused_blobs(c: &mut PgConnection, hashes: Vec<String>) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for h in hashes {
        if !out.contains(&h)
            && let Some(h) = unused_blob(c, &h).await?
        {
            out.push(h);
        }
    }
    Ok(out)
}

const ARTEFACT_COLS: &str = "id, version, request_id, key_id, model, prompt_hash, params, seed, timings, usage, output_hash, mime, \
                             width, height, parent_id, created_at";

fn artefact_row(r: &PgRow) -> Result<Artefact> {
    Ok(Artefact {
        id: r.try_get("id")?,
        version: r.try_get("version")?,
        request_id: r.try_get("request_id")?,
        key_id: r.try_get("key_id")?,
        model: r.try_get("model")?,
        prompt_hash: r.try_get("prompt_hash")?,
        params: json_col(r.try_get("params")?),
        seed: r.try_get::<i64, _>("seed")? as u64,
        timings: typed_col(r.try_get("timings")?),
        usage: typed_col(r.try_get("usage")?),
        output_hash: r.try_get("output_hash")?,
        mime: r.try_get("mime")?,
        width: u32_col(r, "width")?,
        height: u32_col(r, "height")?,
        parent_id: r.try_get("parent_id")?,
        created_at: r.try_get("created_at")?,
    })
}

async fn insert_artefact_on(c: &mut PgConnection, a: &Artefact) -> Result<()> {
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO artefacts ({ARTEFACT_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16)"
    )))
    .bind(&a.id)
    .bind(a.version)
    .bind(&a.request_id)
    .bind(&a.key_id)
    .bind(&a.model)
    .bind(&a.prompt_hash)
    .bind(a.params.to_string())
    .bind(a.seed as i64)
    .bind(json_text(&a.timings))
    .bind(json_text(&a.usage))
    .bind(&a.output_hash)
    .bind(&a.mime)
    .bind(i64::from(a.width))
    .bind(i64::from(a.height))
    .bind(&a.parent_id)
    .bind(a.created_at)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Images recorded for `key_id` since `since`.
async fn images_recorded(c: &mut PgConnection, key_id: Option<&str>, since: i64) -> Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM artefacts WHERE key_id IS NOT DISTINCT FROM $1 AND created_at >= $2")
        .bind(key_id)
        .bind(since)
        .fetch_one(&mut *c)
        .await?;
    Ok(n as u64)
}

/// The advisory-lock name that serialises quota reservations for one key.
fn quota_lock(key_id: Option<&str>) -> String {
    match key_id {
        Some(k) => format!("plantain.quota.key:{k}"),
        None => "plantain.quota.anonymous".into(),
    }
}

/// Checks and reserves in one transaction, under the key's advisory lock.
async fn reserve_on(c: &mut PgConnection, key: Option<&str>, since: i64, wanted: u64, limit: u64) -> Result<Reservation> {
    let t = now();
    let mut tx = c.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))").bind(quota_lock(key)).execute(&mut *tx).await?;
    // Reservations crashed requests left behind, any key's; rows another transaction holds are
    // left for later (SKIP LOCKED: two reservers never wait on each other here, nor deadlock).
    sqlx::query(
        "DELETE FROM quota_reservations WHERE id IN \
         (SELECT id FROM quota_reservations WHERE expires_at <= $1 FOR UPDATE SKIP LOCKED)",
    )
    .bind(t)
    .execute(&mut *tx)
    .await?;
    // One statement, one snapshot: an insert that consumes a reservation is seen whole or not.
    let used: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM artefacts WHERE key_id IS NOT DISTINCT FROM $1 AND created_at >= $2) \
         + (SELECT COALESCE(SUM(images), 0)::BIGINT FROM quota_reservations WHERE key_id IS NOT DISTINCT FROM $1 AND expires_at > $3)",
    )
    .bind(key)
    .bind(since)
    .bind(t)
    .fetch_one(&mut *tx)
    .await?;
    let used = used as u64;
    if used + wanted > limit {
        return Ok(Reservation::Exceeded { used }); // dropping `tx` rolls back
    }
    let id = hex::encode(rand::random::<[u8; 16]>());
    sqlx::query("INSERT INTO quota_reservations (id, key_id, images, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&id)
        .bind(key)
        .bind(wanted as i64)
        .bind(t)
        .bind(t + RESERVATION_TTL_SECS)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Reservation::Held(id))
}

#[async_trait]
impl Artefacts for PgStore {
    async fn insert_artefacts(&self, a: &[Artefact], reservation: Option<&str>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for x in a {
            insert_artefact_on(&mut tx, x).await?;
        }
        if let Some(r) = reservation {
            sqlx::query("DELETE FROM quota_reservations WHERE id = $1").bind(r).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn artefact(&self, id: &str) -> Result<Option<Artefact>> {
        let row = sqlx::query(AssertSqlSafe(format!("SELECT {ARTEFACT_COLS} FROM artefacts WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(artefact_row).transpose()
    }

    async fn artefacts_of_request(&self, request_id: &str) -> Result<Vec<Artefact>> {
        let rows = sqlx::query(AssertSqlSafe(format!("SELECT {ARTEFACT_COLS} FROM artefacts WHERE request_id = $1 ORDER BY seq")))
            .bind(request_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(artefact_row).collect()
    }

    async fn images_since(&self, key_id: Option<&str>, since: i64) -> Result<u64> {
        let mut c = self.pool.acquire().await?;
        images_recorded(&mut c, key_id, since).await
    }

    async fn reserve_images(&self, key_id: Option<&str>, since: i64, wanted: u64, limit: u64) -> Result<Reservation> {
        let mut c = self.pool.acquire().await?;
        reserve_on(&mut c, key_id, since, wanted, limit).await
    }

    async fn release_reservation(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM quota_reservations WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(())
    }

    async fn delete_artefacts_before(&self, before: i64) -> Result<Vec<String>> {
        let mut tx = self.pool.begin().await?;
        let hashes: Vec<String> = sqlx::query_scalar("DELETE FROM artefacts WHERE created_at < $1 RETURNING output_hash")
            .bind(before)
            .fetch_all(&mut *tx)
            .await?;
        let unused = unused_blobs(&mut tx, hashes).await?;
        tx.commit().await?;
        Ok(unused)
    }
}

fn key_row(r: &PgRow) -> Result<KeyRecord> {
    Ok(KeyRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

/// Hashes of the blobs a key's records point at, then the records deleted.
async fn delete_key_rows(c: &mut PgConnection, key_id: &str) -> Result<Vec<String>> {
    let mut hashes: Vec<String> =
        sqlx::query_scalar("DELETE FROM artefacts WHERE key_id = $1 RETURNING output_hash").bind(key_id).fetch_all(&mut *c).await?;
    let files: Vec<Option<String>> =
        sqlx::query_scalar("DELETE FROM files WHERE key_id = $1 RETURNING sha256").bind(key_id).fetch_all(&mut *c).await?;
    hashes.extend(files.into_iter().flatten());
    // Items go with their batch (ON DELETE CASCADE).
    for sql in [
        "DELETE FROM batches WHERE key_id = $1",
        "DELETE FROM idempotency WHERE key_id = $1",
        "DELETE FROM quota_reservations WHERE key_id = $1",
    ] {
        sqlx::query(sql).bind(key_id).execute(&mut *c).await?;
    }
    Ok(hashes)
}

#[async_trait]
impl Keys for PgStore {
    async fn create_key(&self, id: &str, name: &str, hash: &str) -> Result<()> {
        sqlx::query("INSERT INTO api_keys (id, name, hash, created_at) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(name)
            .bind(hash)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>> {
        let rows =
            sqlx::query("SELECT id, name, created_at, revoked_at FROM api_keys ORDER BY created_at, id").fetch_all(&self.pool).await?;
        rows.iter().map(key_row).collect()
    }

    async fn revoke_key(&self, id: &str) -> Result<bool> {
        let r = sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyRecord>> {
        let row = sqlx::query("SELECT id, name, created_at, revoked_at FROM api_keys WHERE hash = $1 AND revoked_at IS NULL")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_row).transpose()
    }

    async fn active_keys(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL").fetch_one(&self.pool).await?;
        Ok(n as u64)
    }

    async fn delete_key_data(&self, key_id: &str) -> Result<Vec<String>> {
        let mut tx = self.pool.begin().await?;
        let hashes = delete_key_rows(&mut tx, key_id).await?;
        let unused = unused_blobs(&mut tx, hashes).await?;
        tx.commit().await?;
        Ok(unused)
    }
}

#[async_trait]
impl Idempotency for PgStore {
    async fn idempotent(&self, at: &IdempotencyScope<'_>, now: i64) -> Result<Option<IdempotentResponse>> {
        let row = sqlx::query(
            "SELECT request_hash, status, content_type, body FROM idempotency WHERE scope = $1 AND idem_key = $2 AND expires_at > $3",
        )
        .bind(at.scope)
        .bind(at.key)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let status: i32 = r.try_get("status")?;
        Ok(Some(IdempotentResponse {
            request_hash: r.try_get("request_hash")?,
            status: u16::try_from(status).map_err(|_| StoreError::Corrupt(format!("status {status}")))?,
            content_type: r.try_get("content_type")?,
            body: r.try_get("body")?,
        }))
    }

    async fn put_idempotent(&self, at: &IdempotencyScope<'_>, r: &IdempotentResponse, expires_at: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO idempotency (scope, idem_key, request_hash, status, content_type, body, created_at, key_id, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (scope, idem_key) DO UPDATE SET request_hash = EXCLUDED.request_hash, status = EXCLUDED.status, \
             content_type = EXCLUDED.content_type, body = EXCLUDED.body, created_at = EXCLUDED.created_at, \
             key_id = EXCLUDED.key_id, expires_at = EXCLUDED.expires_at",
        )
        .bind(at.scope)
        .bind(at.key)
        .bind(&r.request_hash)
        .bind(i32::from(r.status))
        .bind(&r.content_type)
        .bind(&r.body)
        .bind(now())
        .bind(at.key_id)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn purge_idempotency(&self, now: i64) -> Result<usize> {
        let r = sqlx::query("DELETE FROM idempotency WHERE expires_at <= $1").bind(now).execute(&self.pool).await?;
        Ok(r.rows_affected() as usize)
    }
}

const FILE_COLS: &str =
    "name, key_id, display_name, mime_type, size_bytes, sha256, state, upload_id, received, created_at, expires_at, source";

fn file_row(r: &PgRow) -> Result<FileRecord> {
    Ok(FileRecord {
        name: r.try_get("name")?,
        key_id: r.try_get("key_id")?,
        display_name: r.try_get("display_name")?,
        mime_type: r.try_get("mime_type")?,
        size_bytes: r.try_get("size_bytes")?,
        sha256: r.try_get("sha256")?,
        state: state_col(r, "state")?,
        upload_id: r.try_get("upload_id")?,
        received: r.try_get("received")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        source: state_col(r, "source")?,
    })
}

/// Writes the record, replacing any with its name or its upload id (SQLite's `INSERT OR
/// REPLACE`). Run inside a transaction.
pub(crate) async fn put_file_on(c: &mut PgConnection, f: &FileRecord) -> Result<()> {
    sqlx::query("DELETE FROM files WHERE name = $1 OR (upload_id IS NOT NULL AND upload_id = $2)")
        .bind(&f.name)
        .bind(&f.upload_id)
        .execute(&mut *c)
        .await?;
    sqlx::query(AssertSqlSafe(format!("INSERT INTO files ({FILE_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)")))
        .bind(&f.name)
        .bind(&f.key_id)
        .bind(&f.display_name)
        .bind(&f.mime_type)
        .bind(f.size_bytes)
        .bind(&f.sha256)
        .bind(f.state.as_str())
        .bind(&f.upload_id)
        .bind(f.received)
        .bind(f.created_at)
        .bind(f.expires_at)
        .bind(f.source.as_str())
        .execute(&mut *c)
        .await?;
    Ok(())
}

impl PgStore {
    async fn files_where(&self, cond: &str, bind: Option<&str>) -> Result<Vec<FileRecord>> {
        let rows =
            sqlx::query(AssertSqlSafe(format!("SELECT {FILE_COLS} FROM files WHERE {cond}"))).bind(bind).fetch_all(&self.pool).await?;
        rows.iter().map(file_row).collect()
    }
}

#[async_trait]
impl Files for PgStore {
    async fn put_file(&self, f: &FileRecord) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        put_file_on(&mut tx, f).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn file(&self, name: &str) -> Result<Option<FileRecord>> {
        Ok(self.files_where("name = $1", Some(name)).await?.pop())
    }

    async fn file_by_upload(&self, upload_id: &str) -> Result<Option<FileRecord>> {
        Ok(self.files_where("upload_id = $1", Some(upload_id)).await?.pop())
    }

    async fn list_files(&self, key_id: Option<&str>) -> Result<Vec<FileRecord>> {
        self.files_where("key_id IS NOT DISTINCT FROM $1 ORDER BY created_at DESC, name", key_id).await
    }

    async fn expired_files(&self, now: i64) -> Result<Vec<FileRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!("SELECT {FILE_COLS} FROM files WHERE expires_at <= $1 ORDER BY name")))
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(file_row).collect()
    }

    async fn delete_file(&self, name: &str) -> Result<Option<String>> {
        let mut tx = self.pool.begin().await?;
        let hash: Option<Option<String>> =
            sqlx::query_scalar("DELETE FROM files WHERE name = $1 RETURNING sha256").bind(name).fetch_optional(&mut *tx).await?;
        let unused = match hash.flatten() {
            Some(h) => unused_blob(&mut tx, &h).await?,
            None => None,
        };
        tx.commit().await?;
        Ok(unused)
    }
}

#[cfg(test)]
mod tests;
