//! The parts of resumable uploads, kept in PostgreSQL when nodes share it: a client's chunks may
//! reach different API nodes (no session affinity), so no node's disk can hold the partial file.

use super::PgStore;
use crate::error::{Result, StoreError};

impl PgStore {
    /// Stores the chunk of upload `id` that starts at `offset` (a retried chunk replaces itself).
    pub async fn put_upload_part(&self, id: &str, offset: i64, bytes: &[u8]) -> Result<()> {
        sqlx::query(
            "INSERT INTO upload_parts (upload_id, start, data) VALUES ($1, $2, $3) \
             ON CONFLICT (upload_id, start) DO UPDATE SET data = EXCLUDED.data",
        )
        .bind(id)
        .bind(offset)
        .bind(bytes)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The bytes of upload `id`, its parts in order; an error if they do not join up (a part
    /// missing or overlapping).
    pub async fn upload_bytes(&self, id: &str) -> Result<Vec<u8>> {
        let parts: Vec<(i64, Vec<u8>)> = sqlx::query_as("SELECT start, data FROM upload_parts WHERE upload_id = $1 ORDER BY start")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::new();
        for (start, data) in parts {
            if start != out.len() as i64 {
                return Err(StoreError::Corrupt(format!("upload {id}: a part starts at {start}, expected {}", out.len())));
            }
            out.extend_from_slice(&data);
        }
        Ok(out)
    }

    /// Deletes the parts of upload `id` (none is fine).
    pub async fn delete_upload_parts(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM upload_parts WHERE upload_id = $1").bind(id).execute(&self.pool).await?;
        Ok(())
    }
}
