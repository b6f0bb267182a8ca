//! Conversations in SQLite (the studio's view of the artefacts table): roots, and a root's
//! descendants by a recursive query over `parent_id`.

use async_trait::async_trait;
use rusqlite::OptionalExtension;

use super::{ARTEFACT_COLS, SqliteStore, all_rows, artefact_row};
use crate::Conversations;
use crate::error::Result;
use crate::records::Artefact;

#[async_trait]
impl Conversations for SqliteStore {
    async fn conversation_roots(&self, key_id: Option<&str>, limit: u32, offset: u32) -> Result<Vec<Artefact>> {
        let key = key_id.map(str::to_string);
        self.run(move |c| {
            let sql = format!(
                "SELECT {ARTEFACT_COLS} FROM artefacts WHERE key_id IS ?1 AND parent_id IS NULL \
                 ORDER BY created_at DESC, rowid DESC LIMIT ?2 OFFSET ?3"
            );
            all_rows(c, &sql, rusqlite::params![key, limit, offset], artefact_row)
        })
        .await
    }

    async fn conversation(&self, root_id: &str) -> Result<Vec<Artefact>> {
        let id = root_id.to_string();
        self.run(move |c| {
            let sql = format!(
                "WITH RECURSIVE tree(id) AS (SELECT id FROM artefacts WHERE id = ?1 \
                 UNION SELECT a.id FROM artefacts a JOIN tree t ON a.parent_id = t.id) \
                 SELECT {ARTEFACT_COLS} FROM artefacts WHERE id IN (SELECT id FROM tree) ORDER BY created_at, rowid"
            );
            all_rows(c, &sql, [id], artefact_row)
        })
        .await
    }

    async fn artefact_by_output(&self, key_id: Option<&str>, output_hash: &str) -> Result<Option<Artefact>> {
        let (key, hash) = (key_id.map(str::to_string), output_hash.to_string());
        self.run(move |c| {
            let sql = format!(
                "SELECT {ARTEFACT_COLS} FROM artefacts WHERE output_hash = ?1 AND key_id IS ?2 ORDER BY created_at DESC, rowid DESC LIMIT 1"
            );
            Ok(c.query_row(&sql, rusqlite::params![hash, key], artefact_row).optional()?)
        })
        .await
    }
}
