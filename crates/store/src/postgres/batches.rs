//! Batch jobs in PostgreSQL: items are claimed with `FOR UPDATE SKIP LOCKED` under a lease, so
//! runners on any number of nodes each take a different item without waiting on one another.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};

use super::{PgStore, json_col, put_file_on, state_col, unused_blob};
use crate::Batches;
use crate::error::Result;
use crate::now;
use crate::records::*;

const BATCH_COLS: &str = "name, key_id, model, display_name, state, created_at, updated_at, ended_at, input_file, output_file";
const ITEM_COLS: &str = "batch, idx, request, metadata, state, result";

fn batch_row(r: &PgRow) -> Result<BatchRecord> {
    Ok(BatchRecord {
        name: r.try_get("name")?,
        key_id: r.try_get("key_id")?,
        model: r.try_get("model")?,
        display_name: r.try_get("display_name")?,
        state: state_col(r, "state")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        ended_at: r.try_get("ended_at")?,
        input_file: r.try_get("input_file")?,
        output_file: r.try_get("output_file")?,
    })
}

fn item_row(r: &PgRow) -> Result<BatchItem> {
    Ok(BatchItem {
        batch: r.try_get("batch")?,
        idx: r.try_get("idx")?,
        request: json_col(r.try_get("request")?),
        metadata: r.try_get::<Option<String>, _>("metadata")?.map(json_col),
        state: state_col(r, "state")?,
        result: r.try_get::<Option<String>, _>("result")?.map(json_col),
    })
}

async fn insert_batch(c: &mut PgConnection, b: &BatchRecord, items: &[NewItem]) -> Result<()> {
    sqlx::query(AssertSqlSafe(format!("INSERT INTO batches ({BATCH_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)")))
        .bind(&b.name)
        .bind(&b.key_id)
        .bind(&b.model)
        .bind(&b.display_name)
        .bind(b.state.as_str())
        .bind(b.created_at)
        .bind(b.updated_at)
        .bind(b.ended_at)
        .bind(&b.input_file)
        .bind(&b.output_file)
        .execute(&mut *c)
        .await?;
    for (i, it) in items.iter().enumerate() {
        let state = if it.failed.is_some() { ItemState::Failed } else { ItemState::Pending };
        sqlx::query(AssertSqlSafe(format!("INSERT INTO batch_items ({ITEM_COLS}) VALUES ($1,$2,$3,$4,$5,$6)")))
            .bind(&b.name)
            .bind(i as i64)
            .bind(it.request.to_string())
            .bind(it.metadata.as_ref().map(|m| m.to_string()))
            .bind(state.as_str())
            .bind(it.failed.as_ref().map(|e| e.to_string()))
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

/// Takes the oldest runnable item of the oldest open batch that has one — pending, or running
/// under a lease that ran out — skipping items other runners are taking right now.
async fn claim_on(c: &mut PgConnection, lease: &Lease) -> Result<Option<(BatchRecord, BatchItem)>> {
    let t = now();
    let mut tx = c.begin().await?;
    let item = sqlx::query(
        "WITH next AS ( \
           SELECT i.batch, i.idx FROM batch_items i JOIN batches b ON b.name = i.batch \
           WHERE b.state IN ('pending', 'running') \
             AND (i.state = 'pending' OR (i.state = 'running' AND (i.lease_until IS NULL OR i.lease_until < $1))) \
           ORDER BY b.created_at, b.name, i.idx LIMIT 1 \
           FOR UPDATE OF i SKIP LOCKED) \
         UPDATE batch_items SET state = 'running', lease_owner = $2, lease_until = $3 FROM next \
         WHERE batch_items.batch = next.batch AND batch_items.idx = next.idx \
         RETURNING batch_items.batch, batch_items.idx, batch_items.request, batch_items.metadata, batch_items.state, batch_items.result",
    )
    .bind(t)
    .bind(&lease.owner)
    .bind(lease.until)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(item) = item.as_ref().map(item_row).transpose()? else { return Ok(None) };
    let b = sqlx::query(AssertSqlSafe(format!(
        "UPDATE batches SET state = CASE WHEN state = 'pending' THEN 'running' ELSE state END, \
         updated_at = CASE WHEN state = 'pending' THEN $2 ELSE updated_at END \
         WHERE name = $1 RETURNING {BATCH_COLS}"
    )))
    .bind(&item.batch)
    .bind(t)
    .fetch_one(&mut *tx)
    .await?;
    let b = batch_row(&b)?;
    tx.commit().await?;
    Ok(Some((b, item)))
}

async fn complete_on(c: &mut PgConnection, name: &str, state: BatchState, output: Option<&FileRecord>) -> Result<bool> {
    let mut tx = c.begin().await?;
    let n = sqlx::query(
        "UPDATE batches SET state = $2, updated_at = $3, ended_at = $3, output_file = $4 \
         WHERE name = $1 AND state IN ('pending', 'running')",
    )
    .bind(name)
    .bind(state.as_str())
    .bind(now())
    .bind(output.map(|f| f.name.as_str()))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 0 {
        return Ok(false); // dropping `tx` rolls back
    }
    if let Some(f) = output {
        put_file_on(&mut tx, f).await?;
    }
    tx.commit().await?;
    Ok(true)
}

async fn delete_on(c: &mut PgConnection, name: &str) -> Result<Option<String>> {
    let mut tx = c.begin().await?;
    // Items go with their batch (ON DELETE CASCADE).
    let output: Option<Option<String>> =
        sqlx::query_scalar("DELETE FROM batches WHERE name = $1 RETURNING output_file").bind(name).fetch_optional(&mut *tx).await?;
    let mut hash = None;
    if let Some(file) = output.flatten() {
        let h: Option<Option<String>> =
            sqlx::query_scalar("DELETE FROM files WHERE name = $1 RETURNING sha256").bind(&file).fetch_optional(&mut *tx).await?;
        hash = h.flatten();
    }
    let unused = match hash {
        Some(h) => unused_blob(&mut tx, &h).await?,
        None => None,
    };
    tx.commit().await?;
    Ok(unused)
}

#[async_trait]
impl Batches for PgStore {
    async fn create_batch(&self, b: &BatchRecord, items: &[NewItem]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        insert_batch(&mut tx, b, items).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn batch(&self, name: &str) -> Result<Option<BatchRecord>> {
        let row = sqlx::query(AssertSqlSafe(format!("SELECT {BATCH_COLS} FROM batches WHERE name = $1")))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(batch_row).transpose()
    }

    async fn list_batches(&self, key_id: Option<&str>) -> Result<Vec<BatchRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {BATCH_COLS} FROM batches WHERE key_id IS NOT DISTINCT FROM $1 ORDER BY created_at DESC, name"
        )))
        .bind(key_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(batch_row).collect()
    }

    async fn batch_items(&self, name: &str) -> Result<Vec<BatchItem>> {
        let rows = sqlx::query(AssertSqlSafe(format!("SELECT {ITEM_COLS} FROM batch_items WHERE batch = $1 ORDER BY idx")))
            .bind(name)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(item_row).collect()
    }

    async fn complete_batch(&self, name: &str, state: BatchState, output: Option<&FileRecord>) -> Result<bool> {
        let mut c = self.pool.acquire().await?;
        complete_on(&mut c, name, state, output).await
    }

    async fn settled_batches(&self) -> Result<Vec<BatchRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {BATCH_COLS} FROM batches WHERE state IN ('pending', 'running') \
             AND NOT EXISTS (SELECT 1 FROM batch_items i WHERE i.batch = batches.name AND i.state IN ('pending', 'running')) \
             ORDER BY created_at, name"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(batch_row).collect()
    }

    async fn claim_batch_item(&self, lease: &Lease) -> Result<Option<(BatchRecord, BatchItem)>> {
        let mut c = self.pool.acquire().await?;
        claim_on(&mut c, lease).await
    }

    async fn renew_lease(&self, batch: &str, idx: i64, lease: &Lease) -> Result<bool> {
        let r =
            sqlx::query("UPDATE batch_items SET lease_until = $4 WHERE batch = $1 AND idx = $2 AND lease_owner = $3 AND state = 'running'")
                .bind(batch)
                .bind(idx)
                .bind(&lease.owner)
                .bind(lease.until)
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn finish_batch_item(&self, batch: &str, idx: i64, owner: &str, state: ItemState, result: &serde_json::Value) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE batch_items SET state = $4, result = $5, lease_until = NULL \
             WHERE batch = $1 AND idx = $2 AND lease_owner = $3 AND state = 'running'",
        )
        .bind(batch)
        .bind(idx)
        .bind(owner)
        .bind(state.as_str())
        .bind(result.to_string())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn cancel_batch_items(&self, batch: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE batch_items SET state = 'cancelled' WHERE batch = $1 AND state = 'pending'")
            .bind(batch)
            .execute(&mut *tx)
            .await?;
        let running: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM batch_items WHERE batch = $1 AND state = 'running'")
            .bind(batch)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(running > 0)
    }

    async fn delete_batch(&self, name: &str) -> Result<Option<String>> {
        let mut c = self.pool.acquire().await?;
        delete_on(&mut c, name).await
    }
}
