//! SQLite-only tests; what every backend must do is in `crate::conformance`.

use super::*;
use crate::{Batches, Lease};

/// A database written before the schema had versions (Gemini state names in the rows) opens
/// with its rows in storage's own names.
#[tokio::test]
async fn version_1_databases_are_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch(schema_v1_for_tests()).unwrap();
        c.execute_batch(
            "INSERT INTO files VALUES ('files/a', NULL, NULL, 'image/png', 1, 'h', 'ACTIVE', NULL, 1, 0, 99999999999, 'GENERATED');
             INSERT INTO batches VALUES ('batches/b', NULL, 'm', NULL, 'BATCH_STATE_RUNNING', 0, 0, NULL, NULL, NULL);
             INSERT INTO batch_items VALUES ('batches/b', 0, '{}', NULL, 'RUNNING', NULL);",
        )
        .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    let f = s.file("files/a").await.unwrap().unwrap();
    assert_eq!((f.state, f.source), (FileState::Active, FileSource::Generated));
    assert_eq!(s.batch("batches/b").await.unwrap().unwrap().state, BatchState::Running);
    // An item left running by a crash before leases existed is taken again.
    let (_, it) = s.claim_batch_item(&Lease { owner: "x".into(), until: now() + 5 }).await.unwrap().unwrap();
    assert_eq!(it.idx, 0);
}

fn schema_v1_for_tests() -> &'static str {
    "CREATE TABLE files (name TEXT PRIMARY KEY, key_id TEXT, display_name TEXT, mime_type TEXT NOT NULL,
       size_bytes INTEGER NOT NULL, sha256 TEXT, state TEXT NOT NULL, upload_id TEXT UNIQUE,
       received INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
       source TEXT NOT NULL DEFAULT 'UPLOADED');
     CREATE TABLE batches (name TEXT PRIMARY KEY, key_id TEXT, model TEXT NOT NULL, display_name TEXT, state TEXT NOT NULL,
       created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, ended_at INTEGER, input_file TEXT, output_file TEXT);
     CREATE TABLE batch_items (batch TEXT NOT NULL, idx INTEGER NOT NULL, request TEXT NOT NULL, metadata TEXT,
       state TEXT NOT NULL, result TEXT, PRIMARY KEY (batch, idx));"
}
