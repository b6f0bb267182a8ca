//! Conversations in PostgreSQL (the studio's view of the artefacts table): roots, and a root's
//! descendants by a recursive query over `parent_id`.

use async_trait::async_trait;
use sqlx::AssertSqlSafe;

use super::{ARTEFACT_COLS, PgStore, artefact_row};
use crate::Conversations;
use crate::error::Result;
use crate::records::Artefact;

#[async_trait]
impl Conversations for PgStore {
    async fn conversation_roots(&self, key_id: Option<&str>, limit: u32, offset: u32) -> Result<Vec<Artefact>> {
        let sql = format!(
            "SELECT {ARTEFACT_COLS} FROM artefacts WHERE key_id IS NOT DISTINCT FROM $1 AND parent_id IS NULL \
             ORDER BY created_at DESC, seq DESC LIMIT $2 OFFSET $3"
        );
        let rows =
            sqlx::query(AssertSqlSafe(sql)).bind(key_id).bind(i64::from(limit)).bind(i64::from(offset)).fetch_all(&self.pool).await?;
        rows.iter().map(artefact_row).collect()
    }

    async fn conversation(&self, root_id: &str) -> Result<Vec<Artefact>> {
        let sql = format!(
            "WITH RECURSIVE tree(id) AS (SELECT id FROM artefacts WHERE id = $1 \
             UNION SELECT a.id FROM artefacts a JOIN tree t ON a.parent_id = t.id) \
             SELECT {ARTEFACT_COLS} FROM artefacts WHERE id IN (SELECT id FROM tree) ORDER BY created_at, seq"
        );
        let rows = sqlx::query(AssertSqlSafe(sql)).bind(root_id).fetch_all(&self.pool).await?;
        rows.iter().map(artefact_row).collect()
    }

    async fn artefact_by_output(&self, key_id: Option<&str>, output_hash: &str) -> Result<Option<Artefact>> {
        let sql = format!(
            "SELECT {ARTEFACT_COLS} FROM artefacts WHERE output_hash = $1 AND key_id IS NOT DISTINCT FROM $2 \
             ORDER BY created_at DESC, seq DESC LIMIT 1"
        );
        let row = sqlx::query(AssertSqlSafe(sql)).bind(output_hash).bind(key_id).fetch_optional(&self.pool).await?;
        row.as_ref().map(artefact_row).transpose()
    }
}
