//! Processes of a scale-out set-up for the `…postgres…` tests: `plantain-server` nodes in any
//! role on the PostgreSQL and S3 servers of `scripts/services.sh` (the PLANTAIN_TEST_* variables).

use std::process::Child;
use std::time::Duration;

use plantain_store::{PostgresConfig, S3Config};
use serde_json::Value;

use super::{spawn_server_binary, tiny_model};

pub fn service_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{name} is not set: start PostgreSQL and S3 first (`eval \"$(bash scripts/services.sh start DIR)\"`, see README)"),
    }
}

/// A server process, killed (by its pid) when the test ends, passed or not.
pub struct Node {
    pub child: Child,
    pub url: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn wait_ready(url: &str) {
    for _ in 0..600 {
        if reqwest::get(format!("{url}/readyz")).await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} not ready");
}

/// A node with `head` (sections before and including `[storage]`'s first line) and model
/// settings `model` (extra lines of the model's section).
pub async fn role_node(dir: &std::path::Path, name: &str, schema: &str, prefix: &str, head: &str, model: &str) -> Node {
    role_node_with(dir, name, schema, prefix, head, model, "").await
}

/// As [`role_node`], with `s3` (extra lines of `[storage.s3]`).
pub async fn role_node_with(dir: &std::path::Path, name: &str, schema: &str, prefix: &str, head: &str, model: &str, s3: &str) -> Node {
    let cfg = dir.join(format!("{name}.toml"));
    let toml = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{data}\"\nlog = \"warn\"\n\
         {head}backend = \"postgres\"\n[storage.postgres]\nschema = \"{schema}\"\n\
         [storage.s3]\nbucket = \"{bucket}\"\nendpoint = \"{endpoint}\"\nprefix = \"{prefix}\"\n{s3}\
         [[models]]\nname = \"tiny\"\n{source}threads = 1\n{model}",
        data = dir.join(name).display(),
        bucket = service_env("PLANTAIN_TEST_S3_BUCKET"),
        endpoint = service_env("PLANTAIN_TEST_S3_ENDPOINT"),
        // `model` may name another source; the tiny model otherwise.
        source = if model.contains("source =") { String::new() } else { format!("source = \"{}\"\n", tiny_model()) },
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

/// What the nodes of a roles test share, opened here as a third process would.
pub async fn shared_queue(schema: &str) -> plantain_store::PgStore {
    plantain_store::PgStore::open(&pg_config(schema)).await.unwrap()
}

/// Waits until a job of the shared queue is running (up to a minute) and returns it.
pub async fn running_job(q: &plantain_store::PgStore, not: &[String]) -> plantain_store::QueuedJob {
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
pub async fn job_reaches(q: &plantain_store::PgStore, id: &str, state: plantain_store::JobState) -> plantain_store::QueuedJob {
    for _ in 0..300 {
        let j = q.job(id).await.unwrap().unwrap();
        if j.state == state {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {id} never reached {state:?}: {:?}", q.job(id).await.unwrap());
}

pub fn image_parts_of(event: &Value) -> bool {
    event["candidates"][0]["content"]["parts"].as_array().is_some_and(|ps| ps.iter().any(|p| p["inlineData"]["data"].is_string()))
}

/// Artefacts recorded in the shared store (every key and none).
pub async fn artefact_count(q: &plantain_store::PgStore) -> u64 {
    use plantain_store::Artefacts;
    q.images_since(None, 0).await.unwrap()
}

/// Sends SIGSTOP or SIGCONT to a node (a stopped worker holds its announcement but takes nothing).
pub fn signal(node: &Node, sig: &str) {
    let ok = std::process::Command::new("kill").arg(format!("-{sig}")).arg(node.child.id().to_string()).status().unwrap().success();
    assert!(ok, "kill -{sig}");
}

/// Waits until the shared queue holds `n` queued jobs (up to 30 s).
pub async fn queued_jobs(q: &plantain_store::PgStore, n: usize) {
    for _ in 0..300 {
        if q.jobs().await.unwrap().iter().filter(|j| j.state == plantain_store::JobState::Queued).count() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never {n} queued jobs: {:?}", q.jobs().await.unwrap());
}

/// The shared store's PostgreSQL settings for `schema`.
pub fn pg_config(schema: &str) -> PostgresConfig {
    PostgresConfig { schema: Some(schema.to_string()), ..PostgresConfig::new(&service_env("PLANTAIN_TEST_PG_URL")) }
}

/// The shared S3 store's settings for `prefix`.
pub fn s3_config(prefix: &str) -> S3Config {
    S3Config {
        bucket: service_env("PLANTAIN_TEST_S3_BUCKET"),
        endpoint: Some(service_env("PLANTAIN_TEST_S3_ENDPOINT")),
        access_key_id: service_env("PLANTAIN_TEST_S3_ACCESS_KEY_ID"),
        secret_access_key: service_env("PLANTAIN_TEST_S3_SECRET_ACCESS_KEY"),
        prefix: prefix.to_string(),
        ..S3Config::default()
    }
}

/// A schema / prefix name no other run uses.
pub fn unique(tag: &str) -> String {
    format!("{tag}_{}_{}", std::process::id(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
}

/// A PostgreSQL schema and an S3 prefix (the same name) no other test or run uses.
pub fn unique_names(tag: &str) -> (String, String) {
    let name = unique(tag);
    (name.clone(), name)
}
