//! One conformance suite for every storage backend: each test is a function of a [`Backend`]
//! (`Arc<dyn Meta>` + `Arc<dyn BlobStore>`), run for SQLite + a folder in every `cargo test`, and
//! for PostgreSQL + S3 in `#[ignore]`d tests that need the real servers:
//!
//! ```text
//! bash scripts/setup-scaleout.sh
//! eval "$(bash scripts/services.sh start /tmp/plantain-services)"
//! cargo test -p plantain-store -- --ignored
//! bash scripts/services.sh stop /tmp/plantain-services
//! ```
//!
//! Run with `--ignored` but without the services' environment, the PostgreSQL + S3 tests fail
//! (they never pass without having run). Each PostgreSQL test works in a schema of its own and
//! each S3 test under a prefix of its own, so they run in parallel on one server.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::*;

/// The stores under test, and a second handle on the same metadata — another connection (SQLite)
/// or another pool (PostgreSQL), as a second node would have.
pub(crate) struct Backend {
    pub meta: Arc<dyn Meta>,
    pub other: Arc<dyn Meta>,
    pub blobs: Arc<dyn BlobStore>,
    _dir: Option<tempfile::TempDir>,
}

pub(crate) fn sqlite_backend() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite");
    Backend {
        meta: Arc::new(SqliteStore::open(&db).unwrap()),
        other: Arc::new(SqliteStore::open(&db).unwrap()),
        blobs: Arc::new(FsBlobs::open(&dir.path().join("blobs")).unwrap()),
        _dir: Some(dir),
    }
}

/// An environment variable `scripts/services.sh start` prints; its absence fails the test.
pub(crate) fn service_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: the PostgreSQL + S3 tests need the real servers. Run \
             `bash scripts/setup-scaleout.sh && eval \"$(bash scripts/services.sh start /tmp/plantain-services)\"` first \
             (see README, \"Scale-out storage\")"
        ),
    }
}

/// A fresh schema in the test database (a test's tables are its own).
pub(crate) fn pg_test_config() -> PostgresConfig {
    let url = service_env("PLANTAIN_TEST_PG_URL");
    PostgresConfig { schema: Some(format!("test_{}", hex::encode(rand::random::<[u8; 8]>()))), ..PostgresConfig::new(&url) }
}

pub(crate) fn s3_test_config() -> S3Config {
    S3Config {
        bucket: service_env("PLANTAIN_TEST_S3_BUCKET"),
        endpoint: Some(service_env("PLANTAIN_TEST_S3_ENDPOINT")),
        region: std::env::var("PLANTAIN_TEST_S3_REGION").unwrap_or_default(),
        access_key_id: service_env("PLANTAIN_TEST_S3_ACCESS_KEY_ID"),
        secret_access_key: service_env("PLANTAIN_TEST_S3_SECRET_ACCESS_KEY"),
        prefix: format!("test-{}", hex::encode(rand::random::<[u8; 8]>())),
        retry_timeout: Duration::from_secs(10),
    }
}

pub(crate) async fn postgres_backend() -> Backend {
    let pg = pg_test_config();
    let meta = PgStore::open(&pg).await.unwrap_or_else(|e| panic!("opening PostgreSQL {pg:?}: {e}"));
    let other = PgStore::open(&pg).await.unwrap_or_else(|e| panic!("opening PostgreSQL again {pg:?}: {e}"));
    let blobs = S3Blobs::open(&s3_test_config()).unwrap();
    Backend { meta: Arc::new(meta), other: Arc::new(other), blobs: Arc::new(blobs), _dir: None }
}

/// Each test below, for SQLite + a folder (always) and PostgreSQL + S3 (`--ignored`).
macro_rules! conformance_tests {
    ($($name:ident),+ $(,)?) => {
        mod sqlite_folder {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::sqlite_backend()).await
                }
            )+
        }
        mod postgres_s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                #[ignore = "needs PostgreSQL and S3: scripts/services.sh"]
                async fn $name() {
                    super::$name(super::postgres_backend().await).await
                }
            )+
        }
    };
}

conformance_tests!(
    blobs_are_content_addressed,
    artefacts_keys_and_deletion,
    retention_and_key_deletion_keep_blobs_that_files_use,
    idempotency_records_expire_and_go_with_their_key,
    files_round_trip,
    quota_reservations_are_atomic,
    quota_never_exceeded_under_concurrent_reservations,
    batch_lifecycle,
    batch_items_are_taken_under_a_lease,
    concurrent_claimers_never_share_an_item,
    conversations_are_roots_and_their_descendants,
);

pub(crate) fn artefact(id: &str, key: Option<&str>, hash: &str, at: i64) -> Artefact {
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

async fn blobs_are_content_addressed(s: Backend) {
    let b = &s.blobs;
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let h = b.put(&big).await.unwrap();
    assert_eq!(h, blob_address(&big));
    assert_eq!(b.put(&big).await.unwrap(), h, "the same bytes, the same address");
    assert_eq!(b.get(&h).await.unwrap().as_deref(), Some(&big[..]));
    let missing = blob_address(b"never stored");
    assert_eq!(b.get(&missing).await.unwrap(), None, "a missing blob is Ok(None)");
    b.delete(&missing).await.unwrap();
    for bad in ["../../etc/passwd", "ABC", &h.to_uppercase(), ""] {
        assert_eq!(b.get(bad).await.unwrap(), None, "{bad:?} names no blob");
        b.delete(bad).await.unwrap();
    }
    b.delete(&h).await.unwrap();
    assert_eq!(b.get(&h).await.unwrap(), None);
    let empty = b.put(b"").await.unwrap();
    assert_eq!(b.get(&empty).await.unwrap(), Some(Vec::new()));
}

async fn artefacts_keys_and_deletion(st: Backend) {
    let (s, b) = (&st.meta, &st.blobs);
    let h1 = b.put(b"one").await.unwrap();
    let h2 = b.put(b"two").await.unwrap();
    s.insert_artefacts(&[artefact("a1", Some("k1"), &h1, 100), artefact("a2", Some("k1"), &h2, 200)], None).await.unwrap();
    s.insert_artefacts(&[artefact("a3", Some("k2"), &h2, 300)], None).await.unwrap();
    assert_eq!(s.artefact("a1").await.unwrap().unwrap(), artefact("a1", Some("k1"), &h1, 100), "typed timings and usage round-trip");
    assert_eq!(s.artefact("nope").await.unwrap(), None);
    let ids: Vec<_> = s.artefacts_of_request("r").await.unwrap().into_iter().map(|a| a.id).collect();
    assert_eq!(ids, ["a1", "a2", "a3"], "insertion order");
    assert!(s.insert_artefacts(&[artefact("a4", None, &h1, 1), artefact("a1", None, &h1, 1)], None).await.is_err());
    assert_eq!(s.artefact("a4").await.unwrap(), None, "a failed insert writes none of its artefacts");
    assert_eq!(s.images_since(Some("k1"), 150).await.unwrap(), 1);
    assert_eq!(s.images_since(None, 0).await.unwrap(), 0);
    // h2 is still used by k2's artefact, so only h1 is free to delete.
    assert_eq!(s.delete_key_data("k1").await.unwrap(), vec![h1.clone()]);
    b.delete(&h1).await.unwrap();
    assert_eq!(b.get(&h1).await.unwrap(), None);
    assert_eq!(b.get(&h2).await.unwrap().unwrap(), b"two");
    assert_eq!(s.delete_artefacts_before(1000).await.unwrap(), vec![h2]);

    s.create_key("k1", "ci", "hash1").await.unwrap();
    assert!(s.create_key("k9", "dup", "hash1").await.is_err(), "key hashes are unique");
    assert_eq!(s.active_keys().await.unwrap(), 1);
    assert_eq!(s.key_by_hash("hash1").await.unwrap().unwrap().name, "ci");
    assert!(s.revoke_key("k1").await.unwrap());
    assert!(!s.revoke_key("k1").await.unwrap());
    assert!(s.key_by_hash("hash1").await.unwrap().is_none());
    assert_eq!(s.active_keys().await.unwrap(), 0);
    let keys = s.list_keys().await.unwrap();
    assert_eq!((keys.len(), keys[0].revoked_at.is_some()), (1, true));
}

/// Issue 21, bug 1: an output re-uploaded through the Files API shares its blob; retention and
/// key deletion must not delete bytes the file still uses.
async fn retention_and_key_deletion_keep_blobs_that_files_use(st: Backend) {
    let (s, b) = (&st.meta, &st.blobs);
    let h = b.put(b"an output, re-uploaded for editing").await.unwrap();
    s.insert_artefacts(&[artefact("a1", Some("k1"), &h, 100)], None).await.unwrap();
    s.put_file(&file("files/up", Some("k2"), &h)).await.unwrap();
    assert_eq!(s.delete_artefacts_before(1000).await.unwrap(), Vec::<String>::new(), "the file still uses the blob");
    s.insert_artefacts(&[artefact("a2", Some("k1"), &h, 100)], None).await.unwrap();
    assert_eq!(s.delete_key_data("k1").await.unwrap(), Vec::<String>::new(), "another key's file still uses the blob");
    assert_eq!(s.delete_file("files/up").await.unwrap(), Some(h), "now nothing uses it");
    assert_eq!(s.delete_file("files/up").await.unwrap(), None);
}

/// Issue 21, bug 2: idempotency records expire, and go with their key's data.
async fn idempotency_records_expire_and_go_with_their_key(st: Backend) {
    let s = &st.meta;
    let r = IdempotentResponse { request_hash: "h".into(), status: 200, content_type: "application/json".into(), body: b"{}".to_vec() };
    let mine = IdempotencyScope { key_id: Some("k1"), scope: "k1|route", key: "abc" };
    let other = IdempotencyScope { key_id: Some("k2"), scope: "k2|route", key: "abc" };
    s.put_idempotent(&mine, &r, now() + 100).await.unwrap();
    s.put_idempotent(&other, &r, now() + 100).await.unwrap();
    assert_eq!(s.idempotent(&mine, now()).await.unwrap(), Some(r.clone()));
    // A second answer for the same key replaces the first (another node's view included).
    let r2 = IdempotentResponse { status: 409, body: vec![0, 159, 255], ..r.clone() };
    s.put_idempotent(&mine, &r2, now() + 100).await.unwrap();
    assert_eq!(st.other.idempotent(&mine, now()).await.unwrap(), Some(r2));
    assert_eq!(s.idempotent(&mine, now() + 101).await.unwrap(), None, "expired records are not replayed");
    s.delete_key_data("k1").await.unwrap();
    assert_eq!(s.idempotent(&mine, now()).await.unwrap(), None, "deleted with the key's data");
    assert!(s.idempotent(&other, now()).await.unwrap().is_some());
    assert_eq!(s.purge_idempotency(now() + 101).await.unwrap(), 1);
    assert_eq!(s.purge_idempotency(now() + 101).await.unwrap(), 0);
}

async fn files_round_trip(st: Backend) {
    let s = &st.meta;
    let mut up = file("files/a", Some("k1"), "h1");
    (up.state, up.sha256, up.upload_id, up.display_name) = (FileState::Uploading, None, Some("u1".into()), Some("ä.png".into()));
    s.put_file(&up).await.unwrap();
    assert_eq!(s.file_by_upload("u1").await.unwrap(), Some(up.clone()));
    up.state = FileState::Active;
    up.sha256 = Some("h1".into());
    s.put_file(&up).await.unwrap();
    assert_eq!(st.other.file("files/a").await.unwrap(), Some(up.clone()), "replaced in place");
    // A new record with the same upload id replaces the old one (INSERT OR REPLACE).
    let moved = FileRecord { name: "files/b".into(), ..up.clone() };
    s.put_file(&moved).await.unwrap();
    assert_eq!(s.file("files/a").await.unwrap(), None);
    let mut old = file("files/c", Some("k1"), "h2");
    (old.created_at, old.expires_at, old.source) = (1, 2, FileSource::Generated);
    s.put_file(&old).await.unwrap();
    s.put_file(&file("files/d", None, "h3")).await.unwrap();
    let names = |v: Vec<FileRecord>| v.into_iter().map(|f| f.name).collect::<Vec<_>>();
    assert_eq!(names(s.list_files(Some("k1")).await.unwrap()), ["files/b", "files/c"], "newest first");
    assert_eq!(names(s.list_files(None).await.unwrap()), ["files/d"], "anonymous files apart");
    assert_eq!(s.expired_files(now()).await.unwrap(), vec![old]);
    assert_eq!(s.file("files/nope").await.unwrap(), None);
}

/// Issue 21, bug 4: the quota check and the reservation are one step, so concurrent requests
/// cannot together pass the limit.
async fn quota_reservations_are_atomic(st: Backend) {
    let (s, b) = (st.meta.clone(), &st.blobs);
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
    assert!(matches!(s.reserve_images(None, 0, 5, 5).await.unwrap(), Reservation::Held(_)), "anonymous callers count apart");
}

/// Many reservations at once, from two handles (two nodes), for two keys: each key's total
/// never passes its limit, and every image the limit allows is handed out.
async fn quota_never_exceeded_under_concurrent_reservations(st: Backend) {
    let tasks: Vec<_> = (0..48)
        .map(|i| {
            let s = if i % 2 == 0 { st.meta.clone() } else { st.other.clone() };
            let key = if i % 4 < 2 { "k1" } else { "k2" };
            tokio::spawn(async move { (key, s.reserve_images(Some(key), 0, 1 + (i % 3) as u64, 20).await.unwrap()) })
        })
        .collect();
    let mut held: std::collections::HashMap<&str, u64> = Default::default();
    for (i, t) in tasks.into_iter().enumerate() {
        let (key, r) = t.await.unwrap();
        if let Reservation::Held(_) = r {
            *held.entry(key).or_default() += 1 + (i % 3) as u64;
        }
    }
    for key in ["k1", "k2"] {
        let n = held[key];
        assert!(n <= 20, "{key}: {n} images reserved past the limit of 20");
        assert!(n > 17, "{key}: only {n} of 20 images reserved: refused while room was left");
        assert_eq!(st.meta.reserve_images(Some(key), 0, 21 - n, 20).await.unwrap(), Reservation::Exceeded { used: n });
    }
}

async fn batch_lifecycle(st: Backend) {
    let s = &st.meta;
    let failed = NewItem { failed: Some(serde_json::json!({"code": 400})), metadata: Some(serde_json::json!({"k": "v"})), ..item() };
    let mut b = batch("batches/x");
    b.key_id = Some("k1".into());
    s.create_batch(&b, &[item(), failed, item()]).await.unwrap();
    assert!(s.create_batch(&b, &[item()]).await.is_err(), "batch names are unique");
    assert_eq!(s.batch("batches/x").await.unwrap(), Some(b.clone()));
    assert_eq!(s.list_batches(Some("k1")).await.unwrap(), vec![b.clone()]);
    assert_eq!(s.list_batches(None).await.unwrap(), vec![]);
    let items = s.batch_items("batches/x").await.unwrap();
    assert_eq!(items.iter().map(|i| i.state).collect::<Vec<_>>(), [ItemState::Pending, ItemState::Failed, ItemState::Pending]);
    assert_eq!(items[1].metadata, Some(serde_json::json!({"k": "v"})));
    assert_eq!(items[1].result, Some(serde_json::json!({"code": 400})));
    let lease = Lease { owner: "r".into(), until: now() + 60 };
    let (_, it) = s.claim_batch_item(&lease).await.unwrap().unwrap();
    assert_eq!((it.idx, it.state), (0, ItemState::Running));
    assert!(s.cancel_batch_items("batches/x").await.unwrap(), "item 0 still runs");
    assert!(s.claim_batch_item(&lease).await.unwrap().is_none(), "cancelled items are not taken");
    assert!(s.settled_batches().await.unwrap().is_empty());
    assert!(s.finish_batch_item("batches/x", 0, "r", ItemState::Succeeded, &serde_json::json!({"ok": 1})).await.unwrap());
    assert!(!s.cancel_batch_items("batches/x").await.unwrap());
    assert_eq!(s.settled_batches().await.unwrap().len(), 1);
    let h = st.blobs.put(b"results").await.unwrap();
    let out = FileRecord { source: FileSource::Generated, ..file("files/out", Some("k1"), &h) };
    assert!(st.other.complete_batch("batches/x", BatchState::Cancelled, Some(&out)).await.unwrap());
    let done = s.batch("batches/x").await.unwrap().unwrap();
    assert_eq!((done.state, done.output_file.as_deref(), done.ended_at.is_some()), (BatchState::Cancelled, Some("files/out"), true));
    assert_eq!(s.file("files/out").await.unwrap(), Some(out.clone()), "the output file is written with the completion");
    let other = FileRecord { name: "files/other".into(), ..file("files/out", Some("k1"), &h) };
    assert!(!s.complete_batch("batches/x", BatchState::Succeeded, Some(&other)).await.unwrap());
    assert_eq!(s.file("files/other").await.unwrap(), None, "nothing written for a batch no longer open");
    assert_eq!(s.batch_items("batches/x").await.unwrap()[0].result, Some(serde_json::json!({"ok": 1})));
    assert_eq!(s.delete_batch("batches/x").await.unwrap(), Some(h), "the results file went with it");
    assert_eq!(s.batch("batches/x").await.unwrap(), None);
    assert!(s.batch_items("batches/x").await.unwrap().is_empty());
    assert_eq!(s.file("files/out").await.unwrap(), None);
}

/// Two runners never hold the same item; an item whose runner died (lease over) is taken again,
/// and the dead runner can no longer renew it or write its result.
async fn batch_items_are_taken_under_a_lease(st: Backend) {
    let s = &st.meta;
    s.create_batch(&batch("batches/a"), &[item(), item()]).await.unwrap();
    let a = Lease { owner: "a".into(), until: now() + 60 };
    let b = Lease { owner: "b".into(), until: now() + 60 };
    let (ba, ia) = s.claim_batch_item(&a).await.unwrap().unwrap();
    let (_, ib) = st.other.claim_batch_item(&b).await.unwrap().unwrap();
    assert_eq!((ia.idx, ib.idx), (0, 1), "each runner gets its own item");
    assert_eq!(ba.state, BatchState::Running);
    assert!(s.claim_batch_item(&a).await.unwrap().is_none(), "nothing left to take");
    assert!(s.renew_lease("batches/a", 1, &Lease { owner: "b".into(), until: now() + 120 }).await.unwrap());
    assert!(!s.renew_lease("batches/a", 1, &Lease { owner: "a".into(), until: now() + 120 }).await.unwrap(), "not a's item");
    assert!(s.claim_batch_item(&a).await.unwrap().is_none(), "a renewed lease holds");
    // b's lease runs out (b died): a takes item 1; b can neither renew nor finish it.
    assert!(s.renew_lease("batches/a", 1, &Lease { owner: "b".into(), until: now() - 1 }).await.unwrap());
    let (_, again) = st.other.claim_batch_item(&a).await.unwrap().unwrap();
    assert_eq!(again.idx, 1, "an expired lease is taken again");
    assert!(!s.renew_lease("batches/a", 1, &b).await.unwrap(), "the runner that lost its lease cannot renew it");
    assert!(!s.finish_batch_item("batches/a", 1, "b", ItemState::Succeeded, &serde_json::json!({})).await.unwrap());
    assert!(s.finish_batch_item("batches/a", 1, "a", ItemState::Succeeded, &serde_json::json!({"by": "a"})).await.unwrap());
    assert!(!s.finish_batch_item("batches/a", 1, "a", ItemState::Failed, &serde_json::json!({})).await.unwrap(), "finished once");
    assert!(s.finish_batch_item("batches/a", 0, "a", ItemState::Failed, &serde_json::json!({})).await.unwrap());
    assert_eq!(s.batch_items("batches/a").await.unwrap()[1].result, Some(serde_json::json!({"by": "a"})));
    assert_eq!(s.settled_batches().await.unwrap().len(), 1);
    assert!(s.complete_batch("batches/a", BatchState::Succeeded, None).await.unwrap());
    assert!(!s.complete_batch("batches/a", BatchState::Succeeded, None).await.unwrap(), "completed once");
}

/// Many runners on two handles (two nodes) race on three batches: every item is taken exactly
/// once, and every item is taken.
async fn concurrent_claimers_never_share_an_item(st: Backend) {
    const BATCHES: usize = 3;
    const ITEMS: usize = 25;
    for n in 0..BATCHES {
        st.meta.create_batch(&batch(&format!("batches/{n}")), &vec![item(); ITEMS]).await.unwrap();
    }
    let runners: Vec<_> = (0..16)
        .map(|r| {
            let s = if r % 2 == 0 { st.meta.clone() } else { st.other.clone() };
            tokio::spawn(async move {
                let lease = Lease { owner: format!("runner-{r}"), until: now() + 300 };
                let mut mine = Vec::new();
                while let Some((_, it)) = s.claim_batch_item(&lease).await.unwrap() {
                    assert!(
                        s.finish_batch_item(&it.batch, it.idx, &lease.owner, ItemState::Succeeded, &serde_json::json!(r)).await.unwrap()
                    );
                    mine.push((it.batch, it.idx));
                    tokio::task::yield_now().await;
                }
                mine
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for r in runners {
        for claimed in r.await.unwrap() {
            assert!(seen.insert(claimed.clone()), "{claimed:?} was taken twice");
        }
    }
    assert_eq!(seen.len(), BATCHES * ITEMS, "every item was taken");
    assert_eq!(st.meta.settled_batches().await.unwrap().len(), BATCHES);
    for n in 0..BATCHES {
        for it in st.meta.batch_items(&format!("batches/{n}")).await.unwrap() {
            assert_eq!(it.state, ItemState::Succeeded);
        }
    }
}

/// Opening errors are typed, whatever the backend is given.
#[tokio::test]
async fn postgres_open_errors_are_typed() {
    let bad = PostgresConfig::new("not a url");
    let e = PgStore::open(&bad).await.err().unwrap();
    assert!(matches!(e, StoreError::Config(_)) && !e.is_unavailable(), "{e}");
    let secret = PostgresConfig::new("mysql://u:hunter2@127.0.0.1/x");
    let e = PgStore::open(&secret).await.err().unwrap();
    assert!(matches!(e, StoreError::Config(_)), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let bad_schema = PostgresConfig { schema: Some("x; DROP".into()), ..PostgresConfig::new("postgres://u@127.0.0.1:1/db") };
    assert!(matches!(PgStore::open(&bad_schema).await, Err(StoreError::Config(_))));
    // Nothing listens on port 1.
    let closed = PostgresConfig { connect_timeout: Duration::from_secs(2), ..PostgresConfig::new("postgres://u:hunter2@127.0.0.1:1/db") };
    let e = Stores::open_postgres(&closed, Arc::new(FsBlobs::open(tempfile::tempdir().unwrap().path()).unwrap())).await.err().unwrap();
    assert!(matches!(e, StoreError::Connect(_)), "{e}");
    assert!(e.is_unavailable(), "retry later: {e}");
    assert!(!format!("{e} {e:?} {closed:?}").contains("hunter2"));
}

#[tokio::test]
async fn s3_errors_are_typed_and_secrets_stay_out() {
    assert!(matches!(S3Blobs::open(&S3Config::default()), Err(StoreError::Config(_))));
    let cfg = S3Config {
        bucket: "b".into(),
        endpoint: Some("http://127.0.0.1:1".into()),
        access_key_id: "id".into(),
        secret_access_key: "hunter2".into(),
        retry_timeout: Duration::from_millis(200),
        ..S3Config::default()
    };
    assert!(!format!("{cfg:?}").contains("hunter2"));
    let s = S3Blobs::open(&cfg).unwrap();
    let e = s.get(&blob_address(b"x")).await.unwrap_err();
    assert!(matches!(e, StoreError::S3(_)), "{e}");
    assert!(e.is_unavailable(), "retry later: {e}");
    assert!(!format!("{e} {e:?} {s:?}").contains("hunter2"), "{e:?}");
    assert!(matches!(s.put(b"x").await, Err(StoreError::S3(_))));
}

#[test]
fn urls_are_redacted() {
    assert_eq!(redact_url("postgres://u:pw@h:5/db?x=1"), "postgres://u:***@h:5/db?x=1");
    assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    assert_eq!(redact_url("postgres://u:p@ss@h/db"), "postgres://u:***@h/db");
    assert_eq!(redact_url("nonsense"), "<unparsed url>");
}

/// Migrations run once, whatever the number of nodes opening a fresh database at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL and S3: scripts/services.sh"]
async fn postgres_migrations_run_once_under_concurrent_opens() {
    let pg = pg_test_config();
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let pg = pg.clone();
            tokio::spawn(async move { PgStore::open(&pg).await })
        })
        .collect();
    for o in opens {
        o.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
    }
    let s = PgStore::open(&pg).await.unwrap();
    s.create_key("k", "n", "h").await.unwrap();
    assert_eq!(s.active_keys().await.unwrap(), 1);
    let url = service_env("PLANTAIN_TEST_PG_URL");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {}._sqlx_migrations", pg.schema.unwrap())))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 6, "versions 1 to 6, once each");
}

async fn conversations_are_roots_and_their_descendants(st: Backend) {
    let s = &st.meta;
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
