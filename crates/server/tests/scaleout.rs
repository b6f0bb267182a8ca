//! Two API nodes — two `plantain-server` processes — on one PostgreSQL and one S3 store
//! (`[storage] backend = "postgres"`): keys, quotas, idempotency records and blobs written
//! through one node are what the other reads. Needs the real servers, like the store's
//! PostgreSQL tests: `eval "$(bash scripts/services.sh start DIR)"`, then `--ignored`.

mod common;

use std::process::Child;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use plantain_store::{PostgresConfig, S3Config, Stores, blob_address};
use serde_json::{Value, json};

fn service_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{name} is not set: start PostgreSQL and S3 first (`eval \"$(bash scripts/services.sh start DIR)\"`, see README)"),
    }
}

/// A server process, killed (by its pid) when the test ends, passed or not.
struct Node {
    child: Child,
    url: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_ready(url: &str) {
    for _ in 0..600 {
        if reqwest::get(format!("{url}/readyz")).await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} not ready");
}

/// Starts a node with its own data dir (provenance, signature key) and the shared storage.
async fn node(dir: &std::path::Path, name: &str, schema: &str, prefix: &str) -> Node {
    role_node(dir, name, schema, prefix, "[limits]\nimages_per_day = 2\n[storage]\n", "").await
}

/// A node with `head` (sections before and including `[storage]`'s first line) and model
/// settings `model` (extra lines of the model's section).
async fn role_node(dir: &std::path::Path, name: &str, schema: &str, prefix: &str, head: &str, model: &str) -> Node {
    let cfg = dir.join(format!("{name}.toml"));
    let toml = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{data}\"\nlog = \"warn\"\n\
         {head}backend = \"postgres\"\n[storage.postgres]\nschema = \"{schema}\"\n\
         [storage.s3]\nbucket = \"{bucket}\"\nendpoint = \"{endpoint}\"\nprefix = \"{prefix}\"\n\
         [[models]]\nname = \"tiny\"\nsource = \"{tiny}\"\nthreads = 1\n{model}",
        data = dir.join(name).display(),
        bucket = service_env("PLANTAIN_TEST_S3_BUCKET"),
        endpoint = service_env("PLANTAIN_TEST_S3_ENDPOINT"),
        tiny = tiny_model(),
        model = if model.is_empty() { "steps = 2\n" } else { model },
    );
    std::fs::write(&cfg, toml).unwrap();
    // Secrets only in the environment, as in production.
    let (child, url) = spawn_server_binary(&cfg, |c| {
        c.env("PLANTAIN_POSTGRES_URL", service_env("PLANTAIN_TEST_PG_URL"))
            .env("PLANTAIN_S3_ACCESS_KEY_ID", service_env("PLANTAIN_TEST_S3_ACCESS_KEY_ID"))
            .env("PLANTAIN_S3_SECRET_ACCESS_KEY", service_env("PLANTAIN_TEST_S3_SECRET_ACCESS_KEY"));
    });
    let node = Node { child, url };
    wait_ready(&node.url).await;
    node
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
    let tag = format!("{}_{}", std::process::id(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    let (schema, prefix) = (format!("server_{tag}"), format!("server-{tag}"));
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
    assert_eq!(stores.blobs.get(&blob_address(&image)).await.unwrap(), Some(image), "the answer's bytes are in S3");
    assert_eq!(stores.meta.images_since(Some(&key_id), 0).await.unwrap(), 1);

    // The daily quota (2) counts both nodes' images.
    assert_eq!(send(&b, "two").await.unwrap().status(), 200);
    let r3 = send(&a, "three").await.unwrap();
    assert_eq!(r3.status(), 429, "{}", r3.text().await.unwrap());
    assert_eq!(stores.meta.images_since(Some(&key_id), 0).await.unwrap(), 2);
}

/// What the nodes of a roles test share, opened here as a third process would.
async fn shared_queue(schema: &str) -> plantain_store::PgStore {
    let pg = PostgresConfig { schema: Some(schema.to_string()), ..PostgresConfig::new(&service_env("PLANTAIN_TEST_PG_URL")) };
    plantain_store::PgStore::open(&pg).await.unwrap()
}

/// Waits until a job of the shared queue is running (up to a minute) and returns it.
async fn running_job(q: &plantain_store::PgStore, not: &[String]) -> plantain_store::QueuedJob {
    for _ in 0..600 {
        let jobs = q.jobs().await.unwrap();
        if let Some(j) = jobs.into_iter().find(|j| j.state == plantain_store::JobState::Running && !not.contains(&j.id)) {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no job started running");
}

/// Waits until job `id` is in `state` (up to 30 s).
async fn job_reaches(q: &plantain_store::PgStore, id: &str, state: plantain_store::JobState) -> plantain_store::QueuedJob {
    for _ in 0..300 {
        let j = q.job(id).await.unwrap().unwrap();
        if j.state == state {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {id} never reached {state:?}: {:?}", q.job(id).await.unwrap());
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
    let tag = format!("{}_{}", std::process::id(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    let (schema, prefix) = (format!("roles_{tag}"), format!("roles-{tag}"));
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
    for n in [&a, &b] {
        let r = generate(n, "a lighthouse").await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(!image_of(&r.text().await.unwrap()).is_empty());
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

fn image_parts_of(event: &Value) -> bool {
    event["candidates"][0]["content"]["parts"].as_array().is_some_and(|ps| ps.iter().any(|p| p["inlineData"]["data"].is_string()))
}

/// Artefacts recorded in the shared store (every key and none).
async fn artefact_count(q: &plantain_store::PgStore) -> u64 {
    use plantain_store::Artefacts;
    q.images_since(None, 0).await.unwrap()
}
