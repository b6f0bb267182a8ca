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
    let cfg = dir.join(format!("{name}.toml"));
    let toml = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{data}\"\nlog = \"warn\"\n\
         [limits]\nimages_per_day = 2\n\
         [storage]\nbackend = \"postgres\"\n[storage.postgres]\nschema = \"{schema}\"\n\
         [storage.s3]\nbucket = \"{bucket}\"\nendpoint = \"{endpoint}\"\nprefix = \"{prefix}\"\n\
         [[models]]\nname = \"tiny\"\nsource = \"{model}\"\nsteps = 2\nthreads = 1\n",
        data = dir.join(name).display(),
        bucket = service_env("PLANTAIN_TEST_S3_BUCKET"),
        endpoint = service_env("PLANTAIN_TEST_S3_ENDPOINT"),
        model = tiny_model(),
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
