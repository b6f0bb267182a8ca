//! Batch jobs in SQLite: items are taken under a lease, so two runners never hold the same one.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{SqliteStore, all_rows, put_file_on, unused_blob, write_tx};
use crate::Batches;
use crate::error::Result;
use crate::now;
use crate::records::*;

const BATCH_COLS: &str = "name, key_id, model, display_name, state, created_at, updated_at, ended_at, input_file, output_file";
const ITEM_COLS: &str = "batch, idx, request, metadata, state, result";
/// An item a runner may take: waiting, or running under a lease that ran out (`?1` = now).
const RUNNABLE: &str = "(state = 'pending' OR (state = 'running' AND (lease_until IS NULL OR lease_until < ?1)))";

fn batch_row(r: &Row<'_>) -> rusqlite::Result<BatchRecord> {
    Ok(BatchRecord {
        name: r.get("name")?,
        key_id: r.get("key_id")?,
        model: r.get("model")?,
        display_name: r.get("display_name")?,
        state: r.get("state")?,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
        ended_at: r.get("ended_at")?,
        input_file: r.get("input_file")?,
        output_file: r.get("output_file")?,
    })
}

fn item_row(r: &Row<'_>) -> rusqlite::Result<BatchItem> {
    Ok(BatchItem {
        batch: r.get("batch")?,
        idx: r.get("idx")?,
        request: super::json_col(r.get("request")?),
        metadata: r.get::<_, Option<String>>("metadata")?.map(super::json_col),
        state: r.get("state")?,
        result: r.get::<_, Option<String>>("result")?.map(super::json_col),
    })
}

fn insert_batch(conn: &Connection, b: &BatchRecord, items: &[NewItem]) -> Result<()> {
    conn.execute(
        &format!("INSERT INTO batches ({BATCH_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)"),
        params![b.name, b.key_id, b.model, b.display_name, b.state, b.created_at, b.updated_at, b.ended_at, b.input_file, b.output_file],
    )?;
    for (i, it) in items.iter().enumerate() {
        let state = if it.failed.is_some() { ItemState::Failed } else { ItemState::Pending };
        conn.execute(
            &format!("INSERT INTO batch_items ({ITEM_COLS}) VALUES (?1,?2,?3,?4,?5,?6)"),
            params![
                b.name,
                i as i64,
                it.request.to_string(),
                it.metadata.as_ref().map(|m| m.to_string()),
                state,
                it.failed.as_ref().map(|e| e.to_string())
            ],
        )?;
    }
    Ok(())
}

fn batch_on(conn: &Connection, name: &str) -> Result<Option<BatchRecord>> {
    Ok(conn.query_row(&format!("SELECT {BATCH_COLS} FROM batches WHERE name = ?1"), [name], batch_row).optional()?)
}

/// The oldest runnable item of the oldest open batch that has one.
fn next_runnable(conn: &Connection, t: i64) -> Result<Option<(BatchRecord, BatchItem)>> {
    let b = conn
        .query_row(
            &format!(
                "SELECT {BATCH_COLS} FROM batches WHERE state IN ('pending', 'running') \
                 AND EXISTS (SELECT 1 FROM batch_items i WHERE i.batch = batches.name AND {RUNNABLE}) \
                 ORDER BY created_at, name LIMIT 1"
            ),
            [t],
            batch_row,
        )
        .optional()?;
    let Some(b) = b else { return Ok(None) };
    let item = conn.query_row(
        &format!("SELECT {ITEM_COLS} FROM batch_items WHERE batch = ?2 AND {RUNNABLE} ORDER BY idx LIMIT 1"),
        params![t, b.name],
        item_row,
    )?;
    Ok(Some((b, item)))
}

fn claim_on(conn: &mut Connection, lease: &Lease) -> Result<Option<(BatchRecord, BatchItem)>> {
    let t = now();
    let tx = write_tx(conn)?;
    let Some((mut b, mut item)) = next_runnable(&tx, t)? else { return Ok(None) };
    tx.execute(
        "UPDATE batch_items SET state = 'running', lease_owner = ?3, lease_until = ?4 WHERE batch = ?1 AND idx = ?2",
        params![b.name, item.idx, lease.owner, lease.until],
    )?;
    if b.state == BatchState::Pending {
        tx.execute("UPDATE batches SET state = 'running', updated_at = ?2 WHERE name = ?1", params![b.name, t])?;
        b.state = BatchState::Running;
    }
    tx.commit()?;
    item.state = ItemState::Running;
    Ok(Some((b, item)))
}

fn complete_on(conn: &mut Connection, name: &str, state: BatchState, output: Option<&FileRecord>) -> Result<bool> {
    let tx = write_tx(conn)?;
    let n = tx.execute(
        "UPDATE batches SET state = ?2, updated_at = ?3, ended_at = ?3, output_file = ?4 \
         WHERE name = ?1 AND state IN ('pending', 'running')",
        params![name, state, now(), output.map(|f| f.name.as_str())],
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

fn delete_on(conn: &mut Connection, name: &str) -> Result<Option<String>> {
    let tx = write_tx(conn)?;
    let output: Option<Option<String>> =
        tx.query_row("SELECT output_file FROM batches WHERE name = ?1", [name], |r| r.get(0)).optional()?;
    let mut hash = None;
    if let Some(file) = output.flatten() {
        hash = tx.query_row("SELECT sha256 FROM files WHERE name = ?1", [&file], |r| r.get::<_, Option<String>>(0)).optional()?.flatten();
        tx.execute("DELETE FROM files WHERE name = ?1", [&file])?;
    }
    tx.execute("DELETE FROM batch_items WHERE batch = ?1", [name])?;
    tx.execute("DELETE FROM batches WHERE name = ?1", [name])?;
    let unused = match hash {
        Some(h) => unused_blob(&tx, &h)?,
        None => None,
    };
    tx.commit()?;
    Ok(unused)
}

#[async_trait]
impl Batches for SqliteStore {
    async fn create_batch(&self, b: &BatchRecord, items: &[NewItem]) -> Result<()> {
        let (b, items) = (b.clone(), items.to_vec());
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            insert_batch(&tx, &b, &items)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn batch(&self, name: &str) -> Result<Option<BatchRecord>> {
        let name = name.to_string();
        self.run(move |c| batch_on(c, &name)).await
    }

    async fn list_batches(&self, key_id: Option<&str>) -> Result<Vec<BatchRecord>> {
        let key = key_id.map(str::to_string);
        self.run(move |c| {
            all_rows(c, &format!("SELECT {BATCH_COLS} FROM batches WHERE key_id IS ?1 ORDER BY created_at DESC, name"), [key], batch_row)
        })
        .await
    }

    async fn batch_items(&self, name: &str) -> Result<Vec<BatchItem>> {
        let name = name.to_string();
        self.run(move |c| all_rows(c, &format!("SELECT {ITEM_COLS} FROM batch_items WHERE batch = ?1 ORDER BY idx"), [name], item_row))
            .await
    }

    async fn complete_batch(&self, name: &str, state: BatchState, output: Option<&FileRecord>) -> Result<bool> {
        let (name, output) = (name.to_string(), output.cloned());
        self.run(move |c| complete_on(c, &name, state, output.as_ref())).await
    }

    async fn settled_batches(&self) -> Result<Vec<BatchRecord>> {
        self.run(|c| {
            let sql = format!(
                "SELECT {BATCH_COLS} FROM batches WHERE state IN ('pending', 'running') \
                 AND NOT EXISTS (SELECT 1 FROM batch_items i WHERE i.batch = batches.name AND i.state IN ('pending', 'running')) \
                 ORDER BY created_at, name"
            );
            all_rows(c, &sql, [], batch_row)
        })
        .await
    }

    async fn claim_batch_item(&self, lease: &Lease) -> Result<Option<(BatchRecord, BatchItem)>> {
        let lease = lease.clone();
        self.run(move |c| claim_on(c, &lease)).await
    }

    async fn renew_lease(&self, batch: &str, idx: i64, lease: &Lease) -> Result<bool> {
        let (batch, lease) = (batch.to_string(), lease.clone());
        self.run(move |c| {
            Ok(c.execute(
                "UPDATE batch_items SET lease_until = ?4 WHERE batch = ?1 AND idx = ?2 AND lease_owner = ?3 AND state = 'running'",
                params![batch, idx, lease.owner, lease.until],
            )? > 0)
        })
        .await
    }

    async fn finish_batch_item(&self, batch: &str, idx: i64, owner: &str, state: ItemState, result: &serde_json::Value) -> Result<bool> {
        let (batch, owner, result) = (batch.to_string(), owner.to_string(), result.to_string());
        self.run(move |c| {
            Ok(c.execute(
                "UPDATE batch_items SET state = ?4, result = ?5, lease_until = NULL \
                 WHERE batch = ?1 AND idx = ?2 AND lease_owner = ?3 AND state = 'running'",
                params![batch, idx, owner, state, result],
            )? > 0)
        })
        .await
    }

    async fn cancel_batch_items(&self, batch: &str) -> Result<bool> {
        let batch = batch.to_string();
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            tx.execute("UPDATE batch_items SET state = 'cancelled' WHERE batch = ?1 AND state = 'pending'", [&batch])?;
            let running: i64 =
                tx.query_row("SELECT COUNT(*) FROM batch_items WHERE batch = ?1 AND state = 'running'", [&batch], |r| r.get(0))?;
            tx.commit()?;
            Ok(running > 0)
        })
        .await
    }

    async fn delete_batch(&self, name: &str) -> Result<Option<String>> {
        let name = name.to_string();
        self.run(move |c| delete_on(c, &name)).await
    }
}
