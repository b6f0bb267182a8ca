//! Two API nodes — two `plantain-server` processes — on one PostgreSQL and one S3 store
//! (`[storage] backend = "postgres"`): keys, quotas, idempotency records and blobs written
//! through one node are what the other reads. Needs the real servers, like the store's
//! PostgreSQL tests: `eval "$(bash scripts/services.sh start DIR)"`, then `--ignored`.

mod common;

use base64::Engine as _;
use common::cluster::*;
use common::*;
use plantain_store::{PostgresConfig, S3Config, Stores, blob_address};
use serde_json::{Value, json};

/// Starts a node with its own data dir (provenance, signature key) and the shared storage.
async fn node(dir: &std::path::Path, name: &str, schema: &str, prefix: &str) -> Node {
    role_node(dir, name, schema, prefix, "[limits]\nimages_per_day = 2\n[storage]\n", "").await
}

/// The image bytes of a generateContent answer.
fn image_of(answer: &str) -> Vec<u8> {
    let v: Value = serde_json::from_str(answer).unwrap();
    let parts = v["candidates"][0]["content"]["parts"].as_array().unwrap();
    let data = parts.iter().find_map(|p| p["inlineData"]["data"].as_str()).expect("an image part");
    B64.decode(data).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and S3: scripts/services.sh"]
async fn two_api_nodes_share_postgres_and_s3() {
    let dir = tempfile::tempdir().unwrap();
    let (schema, prefix) = unique_names("server");
    let a = node(dir.path(), "a", &schema, &prefix).await;
    let b = node(dir.path(), "b", &schema, &prefix).await;
    // What the nodes share, opened here as a third process would.
    let pg = PostgresConfig { schema: Some(schema.clone()), ..PostgresConfig::new(&service_env("PLANTAIN_TEST_PG_URL")) };
    let s3 = S3Config {
        bucket: service_env("PLANTAIN_TEST_S3_BUCKET"),
        endpoint: Some(service_env("PLANTAIN_TEST_S3_ENDPOINT")),
        access_key_id: service_env("PLANTAIN_TEST_S3_ACCESS_KEY_ID"),
        secret_access_key: service_env("PLANTAIN_TEST_S3_SECRET_ACCESS_KEY"),
        prefix: prefix.clone(),
        ..S3Config::default()
    };
    let stores = Stores::open_scaleout(&pg, &s3).await.unwrap();

    // A key created in the shared database is required, and accepted, by both nodes.
    let (key_id, secret) = plantain_service::keys::create_key(&stores, "shared").await.unwrap();
    let http = reqwest::Client::new();
    for n in [&a, &b] {
        assert_eq!(http.get(format!("{}/v1beta/models", n.url)).send().await.unwrap().status(), 401);
        assert_eq!(http.get(format!("{}/v1beta/models", n.url)).bearer_auth(&secret).send().await.unwrap().status(), 200);
    }

    // An answer stored through node a is replayed by node b for the same Idempotency-Key.
    let body = json!({"contents": [{"parts": [{"text": "a lighthouse"}]}], "generationConfig": {"imageConfig": {"imageSize": "512"}}});
    let send = |n: &Node, k: &str| {
        http.post(format!("{}/v1beta/models/tiny:generateContent", n.url))
            .header("x-goog-api-key", &secret)
            .header("idempotency-key", k)
            .json(&body)
            .send()
    };
    let r1 = send(&a, "one").await.unwrap();
    assert_eq!(r1.status(), 200);
    let t1 = r1.text().await.unwrap();
    let r2 = send(&b, "one").await.unwrap();
    assert_eq!(r2.status(), 200);
    assert_eq!(r2.headers()["idempotent-replayed"], "true", "node b replays node a's answer");
    assert_eq!(r2.text().await.unwrap(), t1);

    // The image is a blob in S3 and a record in PostgreSQL.
    let image = image_of(&t1);
    assert_eq!(stores.blobs.get(&blob_address(&image)).await.unwrap(), Some(image.clone()), "the answer's bytes are in S3");
    assert_eq!(stores.meta.images_since(Some(&key_id), 0).await.unwrap(), 1);

    // The daily quota (2) counts both nodes' images.
    assert_eq!(send(&b, "two").await.unwrap().status(), 200);
    let r3 = send(&a, "three").await.unwrap();
    assert_eq!(r3.status(), 429, "{}", r3.text().await.unwrap());
    assert_eq!(stores.meta.images_since(Some(&key_id), 0).await.unwrap(), 2);

    // A resumable upload started on node a, its first chunk to a and the rest to b: the file is
    // the whole image (the parts are kept in PostgreSQL, not on either node's disk).
    let r = http
        .post(format!("{}/upload/v1beta/files", a.url))
        .bearer_auth(&secret)
        .header("x-goog-upload-protocol", "resumable")
        .header("x-goog-upload-command", "start")
        .header("x-goog-upload-header-content-length", image.len().to_string())
        .header("x-goog-upload-header-content-type", "image/png")
        .json(&json!({"file": {"displayName": "across"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let upload_url = r.headers()["x-goog-upload-url"].to_str().unwrap().to_string();
    let half = image.len() / 2;
    let chunk = |n: &Node, off: usize, cmd: &'static str, data: Vec<u8>| {
        http.post(upload_url.replace(&a.url, &n.url))
            .bearer_auth(&secret)
            .header("x-goog-upload-command", cmd)
            .header("x-goog-upload-offset", off.to_string())
            .body(data)
            .send()
    };
    assert_eq!(chunk(&a, 0, "upload", image[..half].to_vec()).await.unwrap().status(), 200);
    let r = chunk(&b, half, "upload, finalize", image[half..].to_vec()).await.unwrap();
    assert_eq!(r.status(), 200);
    let f: Value = r.json().await.unwrap();
    assert_eq!(f["file"]["state"], "ACTIVE", "{f}");
    let stored = stores.meta.file(f["file"]["name"].as_str().unwrap()).await.unwrap().unwrap();
    assert_eq!(stored.sha256.as_deref(), Some(blob_address(&image).as_str()), "the whole image, in order");
}

/// Issue 27's roles: two `--role api` nodes (no model loaded) and two `--role worker` nodes on
/// one PostgreSQL and one S3 store. A request to either API node is run by a worker process and
/// answered by the API node; progress reaches the API node holding the stream; two workers
/// never run the same job; a worker killed with SIGKILL mid-job loses it when its lease runs out
/// and the other worker finishes it — one answer, one artefact; a client that goes away cancels
/// its job on the worker between steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and S3: scripts/services.sh"]
async fn api_and_worker_roles_share_jobs_through_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let (schema, prefix) = unique_names("roles");
    let steps = std::env::var("PLANTAIN_TEST_ROLES_STEPS").unwrap_or_else(|_| "10".into());
    let model = format!("steps = {steps}\n");
    let head = |role: &str, name: &str| {
        format!("[checks]\nattempts = 1\n[storage]\nrole = \"{role}\"\njob_lease_secs = 2\nnode_name = \"{name}\"\n")
    };
    let w1 = role_node(dir.path(), "w1", &schema, &prefix, &head("worker", "w1"), &model).await;
    let w2 = role_node(dir.path(), "w2", &schema, &prefix, &head("worker", "w2"), &model).await;
    let mut workers = [Some(w1), Some(w2)];
    let a = role_node(dir.path(), "a", &schema, &prefix, &head("api", "a"), &model).await;
    let b = role_node(dir.path(), "b", &schema, &prefix, &head("api", "b"), &model).await;
    let q = shared_queue(&schema).await;
    let http = reqwest::Client::new();
    // A worker serves no API.
    let w1_url = workers[0].as_ref().unwrap().url.clone();
    assert_eq!(http.get(format!("{w1_url}/v1beta/models")).send().await.unwrap().status(), 404);
    assert_eq!(http.get(format!("{w1_url}/healthz")).send().await.unwrap().status(), 200);

    let body = |p: &str| json!({"contents": [{"parts": [{"text": p}]}], "generationConfig": {"imageConfig": {"imageSize": "512"}}});
    let generate = |n: &Node, p: &str| http.post(format!("{}/v1beta/models/tiny:generateContent", n.url)).json(&body(p)).send();

    // One request through each API node, and four at once: each job run once, by a worker.
    // What one API node published, the other verifies as its own: the nodes share one watermark
    // key and one signing identity through PostgreSQL (each made its own at start). The signer is
    // trusted, and both nodes read the watermark alike — the same detection, bit for bit, which
    // two different keys never give (whether the tiny model's noisy picture holds a detectable
    // watermark at all depends on the picture: the provenance crate's tests cover detection).
    for (n, other) in [(&a, &b), (&b, &a)] {
        let r = generate(n, "a lighthouse").await.unwrap();
        assert_eq!(r.status(), 200);
        let image = image_of(&r.text().await.unwrap());
        let verify = |node: &Node| http.post(format!("{}/v1/verify", node.url)).body(image.clone()).send();
        let theirs: Value = verify(other).await.unwrap().json().await.unwrap();
        let own: Value = verify(n).await.unwrap().json().await.unwrap();
        assert_eq!(theirs["manifest"]["trusted"], true, "{theirs}");
        assert_eq!(theirs["watermark"], own["watermark"], "one key on both nodes");
        assert!(theirs["watermark"]["best_guess"].is_object(), "{theirs}");
    }
    let many: Vec<_> = (0..4).map(|i| generate(if i % 2 == 0 { &a } else { &b }, "a harbour")).collect();
    for r in futures_join(many).await {
        assert_eq!(r.unwrap().status(), 200);
    }
    let jobs = q.jobs().await.unwrap();
    assert_eq!(jobs.len(), 6);
    for j in &jobs {
        assert_eq!((j.state, j.attempts), (plantain_store::JobState::Succeeded, 1), "{j:?}");
        let owner = j.lease_owner.as_deref().unwrap();
        assert!(owner.starts_with("w1/") || owner.starts_with("w2/"), "run by a worker: {owner}");
    }

    // Progress reaches the API node that holds the stream (the worker is another process).
    let r = http.post(format!("{}/v1beta/models/tiny:streamGenerateContent?alt=sse", b.url)).json(&body("a boat")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let events: Vec<Value> = text.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect();
    let thoughts: Vec<&str> = events
        .iter()
        .filter(|e| e["candidates"][0]["content"]["parts"][0]["thought"] == true)
        .filter_map(|e| e["candidates"][0]["content"]["parts"][0]["text"].as_str())
        .filter(|t| t.starts_with("step "))
        .collect();
    assert_eq!(thoughts.len(), steps.parse::<usize>().unwrap(), "a progress event per step: {thoughts:?}");
    assert!(image_parts_of(events.last().unwrap()));

    // Kill -9 the worker running a job: after its lease (2 s) the other worker runs it again,
    // and the client gets one answer; the job has one set of outputs, one artefact.
    let before = q.jobs().await.unwrap().into_iter().map(|j| j.id).collect::<Vec<_>>();
    let images_before = artefact_count(&q).await;
    let waiting = tokio::spawn(generate(&a, "a windmill"));
    let j = running_job(&q, &before).await;
    let owner = j.lease_owner.clone().unwrap();
    let victim = usize::from(owner.starts_with("w2/"));
    let mut dead = workers[victim].take().unwrap();
    dead.child.kill().unwrap(); // SIGKILL
    dead.child.wait().unwrap();
    let r = waiting.await.unwrap().unwrap();
    assert_eq!(r.status(), 200, "the other worker finished the job");
    assert!(!image_of(&r.text().await.unwrap()).is_empty());
    let j = q.job(&j.id).await.unwrap().unwrap();
    assert_eq!((j.state, j.attempts), (plantain_store::JobState::Succeeded, 2), "{j:?}");
    let survivor = if victim == 0 { "w2/" } else { "w1/" };
    assert!(j.lease_owner.as_deref().unwrap().starts_with(survivor), "{j:?}");
    assert_eq!(artefact_count(&q).await, images_before + 1, "one artefact, not two");

    // A client that goes away cancels its job between steps, on the worker.
    let before = q.jobs().await.unwrap().into_iter().map(|j| j.id).collect::<Vec<_>>();
    let stream = http.post(format!("{}/v1beta/models/tiny:streamGenerateContent?alt=sse", a.url)).json(&body("a kite")).send();
    let client = tokio::spawn(async move {
        let mut r = stream.await.unwrap();
        while r.chunk().await.unwrap().is_some() {}
    });
    let j = running_job(&q, &before).await;
    client.abort();
    let j = job_reaches(&q, &j.id, plantain_store::JobState::Cancelled).await;
    assert!(j.cancel_requested, "{j:?}");
    // The surviving worker is free again.
    let r = generate(&b, "a lighthouse again").await.unwrap();
    assert_eq!(r.status(), 200);
}

/// Runs the requests concurrently.
async fn futures_join<F: std::future::Future + Send + 'static>(fs: Vec<F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// The shared queue's backpressure is the one-node server's, counted across API nodes: with a
/// lane of 2 and a share of 1 per key (and the only worker stopped, so nothing leaves the
/// queue), a key's second job through the other API node gets 429 RESOURCE_EXHAUSTED, a third
/// key's job 503 UNAVAILABLE "queue is full" (Gemini's and OpenAI's envelopes, Retry-After) and
/// nothing is queued for them; a model no worker serves is refused at once with 503 naming it;
/// jobs no worker takes within `job_unclaimed_secs` end in 503 "retry later"; once the worker
/// runs again, requests succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and S3: scripts/services.sh"]
async fn shared_queue_backpressure_and_unserved_models_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let (schema, prefix) = unique_names("limits");
    let model = format!("steps = 2\nqueue = 2\nqueue_per_key = 1\n[[models]]\nname = \"ghost\"\nsource = \"{}\"\n", tiny_model());
    let w = role_node(dir.path(), "w", &schema, &prefix, "[storage]\nrole = \"worker\"\njob_lease_secs = 60\n", "steps = 2\n").await;
    let api = "[storage]\nrole = \"api\"\njob_unclaimed_secs = 4\n";
    let a = role_node(dir.path(), "a", &schema, &prefix, api, &model).await;
    let b = role_node(dir.path(), "b", &schema, &prefix, api, &model).await;
    let q = shared_queue(&schema).await;
    let pg = PostgresConfig { schema: Some(schema.clone()), ..PostgresConfig::new(&service_env("PLANTAIN_TEST_PG_URL")) };
    let s3 = S3Config {
        bucket: service_env("PLANTAIN_TEST_S3_BUCKET"),
        endpoint: Some(service_env("PLANTAIN_TEST_S3_ENDPOINT")),
        access_key_id: service_env("PLANTAIN_TEST_S3_ACCESS_KEY_ID"),
        secret_access_key: service_env("PLANTAIN_TEST_S3_SECRET_ACCESS_KEY"),
        prefix,
        ..S3Config::default()
    };
    let stores = Stores::open_scaleout(&pg, &s3).await.unwrap();
    let mut keys = Vec::new();
    for k in ["k1", "k2", "k3"] {
        keys.push(plantain_service::keys::create_key(&stores, k).await.unwrap().1);
    }
    let http = reqwest::Client::new();
    let body = json!({"contents": [{"parts": [{"text": "a lighthouse"}]}], "generationConfig": {"imageConfig": {"imageSize": "512"}}});
    let gemini = |n: &Node, m: &str, key: &str| {
        http.post(format!("{}/v1beta/models/{m}:generateContent", n.url)).header("x-goog-api-key", key).json(&body).send()
    };

    // A model no worker serves: 503 at once, naming it; nothing queued.
    let r = gemini(&a, "ghost", &keys[0]).await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["status"], "UNAVAILABLE", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("model ghost") && v["error"]["message"].as_str().unwrap().contains("no worker"),
        "{v}"
    );
    assert!(q.jobs().await.unwrap().is_empty());

    // Nothing leaves the queue while the worker is stopped (its announcement still holds).
    signal(&w, "STOP");
    let first = tokio::spawn(gemini(&a, "tiny", &keys[0]));
    queued_jobs(&q, 1).await;
    // Key 1's second job, through the other node: past its share.
    let r = gemini(&b, "tiny", &keys[0]).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("its share"), "{v}");
    let second = tokio::spawn(gemini(&b, "tiny", &keys[1]));
    queued_jobs(&q, 2).await;
    // The lane holds 2: a third key is turned away, on either node and either API.
    let r = gemini(&a, "tiny", &keys[2]).await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["status"], "UNAVAILABLE", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("queue is full"), "{v}");
    let r = http
        .post(format!("{}/v1/images/generations", b.url))
        .bearer_auth(&keys[2])
        .json(&json!({"model": "tiny", "prompt": "a fox", "size": "256x256"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("queue is full") && v["error"]["type"].is_string(), "{v}");
    assert_eq!(q.jobs().await.unwrap().len(), 2, "refused jobs are not queued");

    // No worker takes them within job_unclaimed_secs (4 s): 503, retry later.
    for waiting in [first, second] {
        let r = waiting.await.unwrap().unwrap();
        assert_eq!(r.status(), 503);
        let v: Value = r.json().await.unwrap();
        assert!(v["error"]["message"].as_str().unwrap().contains("no worker took this job"), "{v}");
    }
    assert!(q.jobs().await.unwrap().iter().all(|j| j.state == plantain_store::JobState::Failed && j.attempts == 0));

    // The worker runs again: requests through both nodes succeed.
    signal(&w, "CONT");
    for (n, k) in [(&a, &keys[0]), (&b, &keys[2])] {
        let r = gemini(n, "tiny", k).await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
}

/// `kill -9` of the API node holding a client's stream: the job it queued still runs on a worker
/// but nobody publishes it; the client's retry with the same `Idempotency-Key` on the other API
/// node succeeds, and a second retry is a replay — one image in the ledger, its bytes in S3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and S3: scripts/services.sh"]
async fn a_killed_api_node_s_client_retries_on_the_other_node_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let (schema, prefix) = unique_names("apikill");
    let model = "steps = 12\n";
    let _w = role_node(dir.path(), "w", &schema, &prefix, "[storage]\nrole = \"worker\"\njob_lease_secs = 4\n", model).await;
    let mut a = role_node(dir.path(), "a", &schema, &prefix, "[storage]\nrole = \"api\"\n", model).await;
    let b = role_node(dir.path(), "b", &schema, &prefix, "[storage]\nrole = \"api\"\n", model).await;
    let q = shared_queue(&schema).await;
    let http = reqwest::Client::new();
    let body = json!({"contents": [{"parts": [{"text": "a lighthouse"}]}], "generationConfig": {"imageConfig": {"imageSize": "512"}}});
    let stream = |n: &Node| {
        http.post(format!("{}/v1beta/models/tiny:streamGenerateContent?alt=sse", n.url))
            .header("idempotency-key", "retry-me")
            .json(&body)
            .send()
    };
    // The stream has started (its job runs on the worker) when node a dies.
    let mut r = stream(&a).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.chunk().await.unwrap().is_some(), "the first event arrives");
    let orphan = running_job(&q, &[]).await;
    a.child.kill().unwrap(); // SIGKILL
    a.child.wait().unwrap();
    // The stream is cut before its image: the client retries on the other node.
    let mut rest = Vec::new();
    while let Ok(Some(c)) = r.chunk().await {
        rest.extend_from_slice(&c);
    }
    assert!(!String::from_utf8_lossy(&rest).contains("inlineData"), "the cut stream had no image");
    let retry = stream(&b).await.unwrap();
    assert_eq!(retry.status(), 200);
    let text = retry.text().await.unwrap();
    let events: Vec<Value> = text.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect();
    assert!(image_parts_of(events.last().unwrap()), "the retry gets the image");
    let again = stream(&b).await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.text().await.unwrap(), text, "a replay, not a new image");
    // The dead node's job ran to its end on the worker, but nobody published it.
    job_reaches(&q, &orphan.id, plantain_store::JobState::Succeeded).await;
    assert_eq!(artefact_count(&q).await, 1, "one image in the ledger");
    let data = events.last().unwrap()["candidates"][0]["content"]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|p| p["inlineData"]["data"].as_str())
        .map(|d| B64.decode(d).unwrap())
        .unwrap();
    let s3 = S3Config {
        bucket: service_env("PLANTAIN_TEST_S3_BUCKET"),
        endpoint: Some(service_env("PLANTAIN_TEST_S3_ENDPOINT")),
        access_key_id: service_env("PLANTAIN_TEST_S3_ACCESS_KEY_ID"),
        secret_access_key: service_env("PLANTAIN_TEST_S3_SECRET_ACCESS_KEY"),
        prefix,
        ..S3Config::default()
    };
    let blobs = plantain_store::S3Blobs::open(&s3).unwrap();
    use plantain_store::BlobStore;
    assert_eq!(blobs.get(&blob_address(&data)).await.unwrap(), Some(data), "its bytes are in S3");
}

/// A caller's requests per minute are counted across API nodes: with a limit of 3, the fourth
/// request is refused (429, Retry-After) by whichever node gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and S3: scripts/services.sh"]
async fn rate_limits_are_shared_by_api_nodes_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let (schema, prefix) = unique_names("rates");
    let head = "[limits]\nrequests_per_minute = 3\n[storage]\n";
    let a = role_node(dir.path(), "a", &schema, &prefix, head, "").await;
    let b = role_node(dir.path(), "b", &schema, &prefix, head, "").await;
    let http = reqwest::Client::new();
    for n in [&a, &b, &a] {
        assert_eq!(http.get(format!("{}/v1beta/models", n.url)).send().await.unwrap().status(), 200);
    }
    let r = http.get(format!("{}/v1beta/models", b.url)).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=61).contains(&wait), "{wait}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("3 requests per minute"), "{v}");
}

/// "upscale to 2K" through an API node: the enlargement runs on the worker (the picture travels
/// in the job, the 2K result comes back as its output), the child is the table's 2K pixels and
/// the plan reports its fidelity; the job is recorded as run by the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and S3: scripts/services.sh"]
async fn an_upscale_edit_runs_on_a_worker_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let (schema, prefix) = unique_names("upscale");
    let head = |role: &str| format!("[storage]\nrole = \"{role}\"\nnode_name = \"{role}1\"\n");
    let _worker = role_node(dir.path(), "w", &schema, &prefix, &head("worker"), "").await;
    let api = role_node(dir.path(), "a", &schema, &prefix, &head("api"), "").await;
    let photo = image::open(repo_root().join(".assets/photos/astronaut.png")).expect("scripts/setup.sh installs the photographs").to_rgb8();
    let input = image::imageops::resize(&photo, 256, 256, image::imageops::FilterType::Lanczos3);
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(input).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    let body = json!({"contents": [{"parts": [{"text": "upscale to 2K"}, {"inlineData": {"mimeType": "image/png", "data": B64.encode(&png)}}]}],
                      "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]}});
    let r = reqwest::Client::new().post(format!("{}/v1beta/models/tiny:generateContent", api.url)).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let answer = r.text().await.unwrap();
    let out = image::load_from_memory(&image_of(&answer)).unwrap();
    assert_eq!((out.width(), out.height()), plantain_core::output_pixels(plantain_core::AspectRatio::R1x1, plantain_core::ImageSize::S2K));
    assert!(answer.contains("operation: upscale") && answer.contains("fidelity: shrunk back to 256x256"), "{answer}");
    let jobs = shared_queue(&schema).await.jobs().await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].state, plantain_store::JobState::Succeeded);
    assert!(jobs[0].lease_owner.as_deref().unwrap().starts_with("worker1/"), "{:?}", jobs[0].lease_owner);
}

/// An InstructPix2Pix model served by a worker: the API node, which loads nothing, plans the
/// edit with the painter kind the worker announced — the whole picture edited after the user's
/// words, pasted back inside the plan's region (every pixel outside it the input's own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and S3: scripts/services.sh"]
async fn an_api_node_plans_with_the_kind_its_workers_announce_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let (schema, prefix) = unique_names("painter");
    let model = format!("source = \"{}\"\nsteps = 2\n", repo_root().join("fixtures/tiny/sd1-pix2pix").display());
    let head = |role: &str| format!("[storage]\nrole = \"{role}\"\nnode_name = \"{role}1\"\n");
    let _worker = role_node(dir.path(), "w", &schema, &prefix, &head("worker"), &model).await;
    let api = role_node(dir.path(), "a", &schema, &prefix, &head("api"), &model).await;
    let q = shared_queue(&schema).await;
    for _ in 0..100 {
        if q.announced_kind("tiny").await.unwrap().is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(q.announced_kind("tiny").await.unwrap().as_deref(), Some("instruct"));
    let img = image::RgbImage::from_fn(256, 192, |x, y| image::Rgb([30, (x / 2) as u8, if (x / 32 + y / 32) % 2 == 0 { 200 } else { 90 }]));
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(img.clone()).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    let body = json!({"contents": [{"parts": [{"text": "add a green square at the top left"}, {"inlineData": {"mimeType": "image/png", "data": B64.encode(&png)}}]}],
                      "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]}});
    let r = reqwest::Client::new().post(format!("{}/v1beta/models/tiny:generateContent", api.url)).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let answer = r.text().await.unwrap();
    assert!(answer.contains("instruction-following model"), "{answer}");
    let out = image::load_from_memory(&image_of(&answer)).unwrap().to_rgb8();
    let outside = out.enumerate_pixels().filter(|&(x, y, p)| (x > 110 || y > 85) && p != img.get_pixel(x, y)).count();
    assert_eq!(outside, 0, "pixels moved outside the top-left box and its band");
    assert_ne!(out, img, "the worker's model painted inside the box");
}
