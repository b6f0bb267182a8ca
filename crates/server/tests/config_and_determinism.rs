//! The shipped example config starts from any folder; the same request gives the same pixels;
//! quotas hold under concurrent requests; a too-large body gets each API's envelope.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};

const GEN: &str = "/v1beta/models/gemini-3.1-flash-image-preview:generateContent";

/// Issue 21, bug 7: `server.toml` as shipped, started from an unrelated folder, serves the
/// shipped model (found by its name) and keeps its data under PLANTAIN_HOME.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_config_starts_from_any_folder() {
    let elsewhere = tempfile::tempdir().unwrap();
    let (mut child, url) = spawn_server_binary(&repo_root().join("server.toml"), |cmd| {
        cmd.current_dir(elsewhere.path())
            .env("PLANTAIN_HOME", elsewhere.path().join("home"))
            .env("PLANTAIN_LISTEN", "127.0.0.1:0")
            .env_remove("PLANTAIN_NANO_DIR")
            .env_remove("PLANTAIN_MODELS");
    });
    let mut ready = Value::Null;
    for _ in 0..600 {
        let r = reqwest::get(format!("{url}/readyz")).await.unwrap();
        ready = r.json().await.unwrap();
        if ready["ready"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["models"]["plantain-nano"]["state"], "ready", "{ready}");
    assert!(elsewhere.path().join("home/server/plantain.sqlite").is_file(), "data under PLANTAIN_HOME/server");
    assert!(!elsewhere.path().join("plantain-data").exists(), "nothing written to the working folder");
}

fn pixels(resp: &Value) -> Vec<u8> {
    let data = resp["candidates"][0]["content"]["parts"][0]["inlineData"]["data"].as_str().unwrap();
    image::load_from_memory(&B64.decode(data).unwrap()).unwrap().to_rgb8().into_raw()
}

/// Issue 21, bug 8: the same job (model, prompt, seed, settings) gives the same pixels,
/// watermark included; another seed does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_gives_the_same_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(&dir)).await;
    let http = reqwest::Client::new();
    let post = async |seed: u64| -> Value {
        let body = json!({"contents": [{"parts": [{"text": "a red circle"}]}],
            "generationConfig": {"responseModalities": ["IMAGE"], "seed": seed, "imageConfig": {"imageSize": "512"}}});
        let r = http.post(format!("http://{}{GEN}", s.addr)).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    };
    let (a, b, c) = (post(7).await, post(7).await, post(8).await);
    assert_eq!(pixels(&a), pixels(&b), "same seed, same settings: the same pixels");
    assert_ne!(pixels(&a), pixels(&c), "another seed draws another picture");
    s.stop().await;
}

/// Issue 21, bug 4: the daily quota holds when requests arrive together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_quota_holds_under_concurrent_requests() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&dir);
    c.limits.images_per_day = 2;
    let s = start(c).await;
    let url = format!("http://{}{GEN}", s.addr);
    let body = json!({"contents": [{"parts": [{"text": "a blue square"}]}],
        "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": {"imageSize": "512"}}});
    let sends = (0..5).map(|_| {
        let (url, body) = (url.clone(), body.clone());
        tokio::spawn(async move { reqwest::Client::new().post(url).json(&body).send().await.unwrap().status().as_u16() })
    });
    let mut codes = Vec::new();
    for t in sends {
        codes.push(t.await.unwrap());
    }
    codes.sort();
    assert_eq!(codes, [200, 200, 429, 429, 429], "two images a day, whatever the timing");
    assert_eq!(s.state.svc.stores.meta.images_since(None, 0).await.unwrap(), 2);
    s.stop().await;
}

/// Issue 21, bug 10: a body over the limit is 400 INVALID_ARGUMENT in Gemini's envelope (as
/// Google answers it) and 413 with code `payload_too_large` in OpenAI's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_too_large_body_gets_each_apis_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&dir);
    c.limits.max_body_bytes = 1000;
    let s = start(c).await;
    let http = reqwest::Client::new();
    let big = vec![b' '; 5000];
    let r = http.post(format!("http://{}{GEN}", s.addr)).body(big.clone()).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["status"], "INVALID_ARGUMENT", "{v}");
    let r = http
        .post(format!("http://{}/v1/images/generations", s.addr))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "payload_too_large", "{v}");
    s.stop().await;
}
