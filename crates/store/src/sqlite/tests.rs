use super::*;
use crate::{Batches, BlobStore, FsBlobs, Lease};

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
        timings: Timings { denoise_s: 1.5, ..Timings::default() },
        usage: Usage { prompt_tokens: 3, output_tokens: 1290 },
        output_hash: hash.into(),
        mime: "image/png".into(),
        width: 1,
        height: 1,
        parent_id: None,
        created_at: at,
    }
}

fn file(name: &str, key: Option<&str>, hash: &str) -> FileRecord {
    FileRecord {
        name: name.into(),
        key_id: key.map(Into::into),
        display_name: None,
        mime_type: "image/png".into(),
        size_bytes: 3,
        sha256: Some(hash.into()),
        state: FileState::Active,
        upload_id: None,
        received: 3,
        created_at: now(),
        expires_at: now() + 3600,
        source: FileSource::Uploaded,
    }
}

fn open() -> (tempfile::TempDir, SqliteStore, FsBlobs) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("db.sqlite")).unwrap();
    let b = FsBlobs::open(&dir.path().join("blobs")).unwrap();
    (dir, s, b)
}

#[tokio::test]
async fn artefacts_keys_and_deletion() {
    let (_d, s, b) = open();
    let h1 = b.put(b"one").await.unwrap();
    let h2 = b.put(b"two").await.unwrap();
    s.insert_artefacts(&[artefact("a1", Some("k1"), &h1, 100), artefact("a2", Some("k1"), &h2, 200)], None).await.unwrap();
    s.insert_artefacts(&[artefact("a3", Some("k2"), &h2, 300)], None).await.unwrap();
    assert_eq!(s.artefact("a1").await.unwrap().unwrap(), artefact("a1", Some("k1"), &h1, 100), "typed timings and usage round-trip");
    assert_eq!(s.images_since(Some("k1"), 150).await.unwrap(), 1);
    assert_eq!(s.images_since(None, 0).await.unwrap(), 0);
    // h2 is still used by k2's artefact, so only h1 is free to delete.
    assert_eq!(s.delete_key_data("k1").await.unwrap(), vec![h1.clone()]);
    b.delete(&h1).await.unwrap();
    assert_eq!(b.get(&h1).await.unwrap(), None);
    assert_eq!(b.get(&h2).await.unwrap().unwrap(), b"two");
    assert_eq!(s.delete_artefacts_before(1000).await.unwrap(), vec![h2]);
    assert!(b.get("../../etc/passwd").await.unwrap().is_none());

    s.create_key("k1", "ci", "hash1").await.unwrap();
    assert_eq!(s.active_keys().await.unwrap(), 1);
    assert!(s.key_by_hash("hash1").await.unwrap().is_some());
    assert!(s.revoke_key("k1").await.unwrap());
    assert!(!s.revoke_key("k1").await.unwrap());
    assert!(s.key_by_hash("hash1").await.unwrap().is_none());
    assert_eq!(s.active_keys().await.unwrap(), 0);
}

/// Issue 21, bug 1: an output re-uploaded through the Files API shares its blob; retention and
/// key deletion must not delete bytes the file still uses.
#[tokio::test]
async fn retention_and_key_deletion_keep_blobs_that_files_use() {
    let (_d, s, b) = open();
    let h = b.put(b"an output, re-uploaded for editing").await.unwrap();
    s.insert_artefacts(&[artefact("a1", Some("k1"), &h, 100)], None).await.unwrap();
    s.put_file(&file("files/up", Some("k2"), &h)).await.unwrap();
    assert_eq!(s.delete_artefacts_before(1000).await.unwrap(), Vec::<String>::new(), "the file still uses the blob");
    s.insert_artefacts(&[artefact("a2", Some("k1"), &h, 100)], None).await.unwrap();
    assert_eq!(s.delete_key_data("k1").await.unwrap(), Vec::<String>::new(), "another key's file still uses the blob");
    assert_eq!(s.delete_file("files/up").await.unwrap(), Some(h), "now nothing uses it");
}

/// Issue 21, bug 2: idempotency records expire, and go with their key's data.
#[tokio::test]
async fn idempotency_records_expire_and_go_with_their_key() {
    let (_d, s, _b) = open();
    let r = IdempotentResponse { request_hash: "h".into(), status: 200, content_type: "application/json".into(), body: b"{}".to_vec() };
    let mine = IdempotencyScope { key_id: Some("k1"), scope: "k1|route", key: "abc" };
    let other = IdempotencyScope { key_id: Some("k2"), scope: "k2|route", key: "abc" };
    s.put_idempotent(&mine, &r, now() + 100).await.unwrap();
    s.put_idempotent(&other, &r, now() + 100).await.unwrap();
    assert_eq!(s.idempotent(&mine, now()).await.unwrap(), Some(r.clone()));
    assert_eq!(s.idempotent(&mine, now() + 101).await.unwrap(), None, "expired records are not replayed");
    s.delete_key_data("k1").await.unwrap();
    assert_eq!(s.idempotent(&mine, now()).await.unwrap(), None, "deleted with the key's data");
    assert!(s.idempotent(&other, now()).await.unwrap().is_some());
    assert_eq!(s.purge_idempotency(now() + 101).await.unwrap(), 1);
}

/// Issue 21, bug 4: the quota check and the reservation are one step, so concurrent requests
/// cannot together pass the limit.
#[tokio::test]
async fn quota_reservations_are_atomic() {
    let (_d, s, b) = open();
    let s = std::sync::Arc::new(s);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.reserve_images(Some("k"), 0, 2, 5).await.unwrap() })
        })
        .collect();
    let mut held = Vec::new();
    for t in tasks {
        if let Reservation::Held(id) = t.await.unwrap() {
            held.push(id);
        }
    }
    assert_eq!(held.len(), 2, "5 images allow two requests of 2, never more");
    // Recording the images consumes the reservation in the same transaction.
    let h = b.put(b"x").await.unwrap();
    s.insert_artefacts(&[artefact("a", Some("k"), &h, now()), artefact("b", Some("k"), &h, now())], Some(&held[0])).await.unwrap();
    assert_eq!(s.reserve_images(Some("k"), 0, 2, 5).await.unwrap(), Reservation::Exceeded { used: 4 });
    s.release_reservation(&held[1]).await.unwrap();
    assert!(matches!(s.reserve_images(Some("k"), 0, 1, 5).await.unwrap(), Reservation::Held(_)));
}

fn batch(name: &str) -> BatchRecord {
    BatchRecord {
        name: name.into(),
        key_id: None,
        model: "m".into(),
        display_name: None,
        state: BatchState::Pending,
        created_at: now(),
        updated_at: now(),
        ended_at: None,
        input_file: None,
        output_file: None,
    }
}

fn item() -> NewItem {
    NewItem { request: serde_json::json!({"contents": []}), metadata: None, failed: None }
}

/// Two runners never hold the same item; an item whose runner died (lease over) is taken again,
/// and the dead runner can no longer write its result.
#[tokio::test]
async fn batch_items_are_taken_under_a_lease() {
    let (_d, s, _b) = open();
    s.create_batch(&batch("batches/a"), &[item(), item()]).await.unwrap();
    let a = Lease { owner: "a".into(), until: now() + 60 };
    let b = Lease { owner: "b".into(), until: now() + 60 };
    let (ba, ia) = s.claim_batch_item(&a).await.unwrap().unwrap();
    let (_, ib) = s.claim_batch_item(&b).await.unwrap().unwrap();
    assert_eq!((ia.idx, ib.idx), (0, 1), "each runner gets its own item");
    assert_eq!(ba.state, BatchState::Running);
    assert!(s.claim_batch_item(&a).await.unwrap().is_none(), "nothing left to take");
    // b's lease runs out (b died): a takes item 1; b's late result is refused.
    assert!(s.renew_lease("batches/a", 1, &Lease { owner: "b".into(), until: now() - 1 }).await.unwrap());
    let (_, again) = s.claim_batch_item(&a).await.unwrap().unwrap();
    assert_eq!(again.idx, 1);
    assert!(!s.finish_batch_item("batches/a", 1, "b", ItemState::Succeeded, &serde_json::json!({})).await.unwrap());
    assert!(s.finish_batch_item("batches/a", 1, "a", ItemState::Succeeded, &serde_json::json!({})).await.unwrap());
    assert!(s.finish_batch_item("batches/a", 0, "a", ItemState::Failed, &serde_json::json!({})).await.unwrap());
    assert_eq!(s.settled_batches().await.unwrap().len(), 1);
    assert!(s.complete_batch("batches/a", BatchState::Succeeded, None).await.unwrap());
    assert!(!s.complete_batch("batches/a", BatchState::Succeeded, None).await.unwrap(), "completed once");
}

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

#[tokio::test]
async fn conversations_are_roots_and_their_descendants() {
    use crate::Conversations;
    let (_d, s, _b) = open();
    let child = |id: &str, parent: &str, key: Option<&str>, at: i64| Artefact {
        parent_id: Some(parent.into()),
        version: 2,
        ..artefact(id, key, "h", at)
    };
    s.insert_artefacts(&[artefact("r1", Some("k"), "h", 100), artefact("r2", Some("k"), "h", 200)], None).await.unwrap();
    s.insert_artefacts(&[artefact("other", Some("k2"), "h", 150), artefact("anon", None, "h", 160)], None).await.unwrap();
    // r1 → c1 → g1, and a branch r1 → c2; r2 has no children.
    s.insert_artefacts(&[child("c1", "r1", Some("k"), 110), child("c2", "r1", Some("k"), 130)], None).await.unwrap();
    s.insert_artefacts(&[child("g1", "c1", Some("k"), 120)], None).await.unwrap();
    let ids = |v: Vec<Artefact>| v.into_iter().map(|a| a.id).collect::<Vec<_>>();
    assert_eq!(ids(s.conversation_roots(Some("k"), 10, 0).await.unwrap()), ["r2", "r1"], "roots only, newest first");
    assert_eq!(ids(s.conversation_roots(Some("k"), 1, 1).await.unwrap()), ["r1"]);
    assert_eq!(ids(s.conversation_roots(None, 10, 0).await.unwrap()), ["anon"], "anonymous callers see only anonymous roots");
    assert_eq!(ids(s.conversation("r1").await.unwrap()), ["r1", "c1", "g1", "c2"], "the whole tree, oldest first");
    assert_eq!(ids(s.conversation("c1").await.unwrap()), ["c1", "g1"]);
    assert!(s.conversation("nope").await.unwrap().is_empty());
    // By image: the newest of the key's artefacts with that blob; another key's are not found.
    s.insert_artefacts(&[artefact("h2a", Some("k"), "h2", 500), artefact("h2b", Some("k"), "h2", 600)], None).await.unwrap();
    assert_eq!(s.artefact_by_output(Some("k"), "h2").await.unwrap().unwrap().id, "h2b");
    assert!(s.artefact_by_output(Some("k2"), "h2").await.unwrap().is_none());
    assert!(s.artefact_by_output(None, "h2").await.unwrap().is_none());
}
