//! Batch jobs survive `kill -9` and a restart with nothing lost or duplicated; the Files API
//! feeds `fileData` parts.

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::*;
use plantain_store::{FileSource, FileState, ItemState};
use serde_json::{Value, json};

/// Starts the `plantain-server` binary; returns the child and its base URL.
fn spawn_server(config: &std::path::Path) -> (Child, String) {
    spawn_server_binary(config, |_| {})
}

async fn wait_ready(url: &str) {
    for _ in 0..600 {
        if reqwest::get(format!("{url}/readyz")).await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not ready");
}

async fn batch_state(url: &str, name: &str) -> Value {
    reqwest::get(format!("{url}/v1beta/{name}")).await.unwrap().json().await.unwrap()
}

/// Polls a batch until it is done; fails the test after `limit`.
async fn wait_done(url: &str, name: &str, limit: Duration) -> Value {
    let t = Instant::now();
    loop {
        let v = batch_state(url, name).await;
        if v["done"] == true {
            return v;
        }
        assert!(t.elapsed() < limit, "batch did not finish: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Uploads `data` through the resumable Files API in one request; returns the file's name.
async fn upload_file(url: &str, data: &[u8], mime: &str) -> String {
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{url}/upload/v1beta/files"))
        .header("x-goog-upload-protocol", "resumable")
        .header("x-goog-upload-command", "start")
        .header("x-goog-upload-header-content-length", data.len().to_string())
        .header("x-goog-upload-header-content-type", mime)
        .json(&json!({"file": {"displayName": "input"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let upload_url = r.headers()["x-goog-upload-url"].to_str().unwrap().to_string();
    let r = http
        .post(&upload_url)
        .header("x-goog-upload-command", "upload, finalize")
        .header("x-goog-upload-offset", "0")
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let f: Value = r.json().await.unwrap();
    f["file"]["name"].as_str().unwrap().to_string()
}

fn jsonl_line(key: &str, text: &str, seed: u64) -> String {
    json!({"key": key, "request": {"contents": [{"parts": [{"text": text}]}],
        "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": {"imageSize": "512"}, "seed": seed}}})
    .to_string()
}

async fn create_file_batch(url: &str, file: &str) -> (u16, Value) {
    let body = json!({"batch": {"displayName": "from a file", "inputConfig": {"fileName": file}}});
    let r = reqwest::Client::new()
        .post(format!("{url}/v1beta/models/gemini-3.1-flash-image-preview:batchGenerateContent"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// Downloads a batch's output file and parses its lines.
async fn download_lines(url: &str, file: &str) -> Vec<Value> {
    let r = reqwest::get(format!("{url}/v1beta/{file}:download?alt=media")).await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_survives_kill_9_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("server.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nlog = \"warn\"\n[[models]]\nname = \"tiny\"\nsource = \"{}\"\nsteps = 12\nthreads = 1\n",
            dir.path().join("data").display(),
            tiny_model()
        ),
    )
    .unwrap();
    let (mut child, url) = spawn_server(&cfg);
    wait_ready(&url).await;

    const N: usize = 6;
    let mut requests: Vec<Value> = (0..N)
        .map(|i| {
            json!({"request": {"contents": [{"parts": [{"text": format!("item {i}")}]}],
                   "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": {"imageSize": "512"}, "seed": i}},
                   "metadata": {"key": format!("k{i}")}})
        })
        .collect();
    // One bad item: it fails alone, the others go on.
    requests[3]["request"]["generationConfig"]["imageConfig"]["aspectRatio"] = json!("7:7");
    let body = json!({"batch": {"displayName": "durable", "inputConfig": {"requests": {"requests": requests}}}});
    let r = reqwest::Client::new()
        .post(format!("{url}/v1beta/models/gemini-3.1-flash-image-preview:batchGenerateContent"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let created: Value = r.json().await.unwrap();
    let name = created["name"].as_str().unwrap().to_string();
    assert_eq!(created["metadata"]["state"], "BATCH_STATE_PENDING");
    // A second batch from a JSONL file: queued behind the first, so it is still pending at the kill.
    let jsonl = format!("{}\n{}\n", jsonl_line("f0", "file item 0", 7), jsonl_line("f1", "file item 1", 8));
    let input = upload_file(&url, jsonl.as_bytes(), "application/jsonl").await;
    let (st, fcreated) = create_file_batch(&url, &input).await;
    assert_eq!(st, 200, "{fcreated}");
    let fname = fcreated["name"].as_str().unwrap().to_string();

    // Kill -9 once some but not all items are done.
    let t = Instant::now();
    loop {
        let v = batch_state(&url, &name).await;
        let done: usize = v["metadata"]["batchStats"]["successfulRequestCount"].as_str().unwrap().parse().unwrap();
        if done >= 1 {
            assert!(done < N - 1, "the batch finished before the kill; make items slower");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(120));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let (mut child, url) = spawn_server(&cfg);
    wait_ready(&url).await;
    let t = Instant::now();
    let done = loop {
        let v = batch_state(&url, &name).await;
        if v["done"] == true {
            break v;
        }
        assert!(t.elapsed() < Duration::from_secs(300), "batch did not finish: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let fdone = loop {
        let v = batch_state(&url, &fname).await;
        if v["done"] == true {
            break v;
        }
        assert!(t.elapsed() < Duration::from_secs(300), "file batch did not finish: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(fdone["metadata"]["state"], "BATCH_STATE_SUCCEEDED", "{fdone}");
    let out_file = fdone["metadata"]["output"]["responsesFile"].as_str().unwrap().to_string();
    let lines = download_lines(&url, &out_file).await;
    assert_eq!(lines.iter().map(|l| l["key"].as_str().unwrap()).collect::<Vec<_>>(), ["f0", "f1"]);
    for l in &lines {
        let data = l["response"]["candidates"][0]["content"]["parts"][0]["inlineData"]["data"].as_str().unwrap();
        assert_eq!(dims(data), (512, 512));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    assert_eq!(done["metadata"]["state"], "BATCH_STATE_SUCCEEDED");
    let out = done["metadata"]["output"]["inlinedResponses"]["inlinedResponses"].as_array().unwrap();
    assert_eq!(out.len(), N);
    for (i, o) in out.iter().enumerate() {
        assert_eq!(o["metadata"]["key"], format!("k{i}"));
        if i == 3 {
            assert_eq!(o["error"]["status"], "INVALID_ARGUMENT", "{o}");
        } else {
            let data = o["response"]["candidates"][0]["content"]["parts"][0]["inlineData"]["data"].as_str().unwrap();
            assert_eq!(dims(data), (1024 / 2, 1024 / 2));
        }
    }
    assert_eq!(done["metadata"]["batchStats"]["failedRequestCount"], "1");
    // Exactly one recorded image per successful item: nothing lost, nothing generated twice.
    let store = plantain_store::Stores::open_embedded(&dir.path().join("data")).unwrap().meta;
    for i in 0..N {
        let n = store.artefacts_of_request(&format!("{name}/{i}")).await.unwrap().len();
        assert_eq!(n, usize::from(i != 3), "item {i}");
    }
    for i in 0..2 {
        assert_eq!(store.artefacts_of_request(&format!("{fname}/{i}")).await.unwrap().len(), 1, "file item {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_from_jsonl_file_writes_a_results_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(&dir)).await;
    let url = format!("http://{}", s.addr);

    // Five lines (and a blank one): two good, one not JSON, one without a request, one whose
    // request fails when it runs. Each failure is reported on its own line; the others run.
    let mut bad_ratio: Value = serde_json::from_str(&jsonl_line("bad-ratio", "x", 1)).unwrap();
    bad_ratio["request"]["generationConfig"]["imageConfig"]["aspectRatio"] = json!("7:7");
    let jsonl = [
        jsonl_line("a", "first", 1),
        "{not json".to_string(),
        String::new(),
        json!({"key": "no-request"}).to_string(),
        bad_ratio.to_string(),
        jsonl_line("b", "second", 2).replace("\"512\"", "\"512\",\"aspectRatio\":\"16:9\""),
    ]
    .join("\n");
    let input = upload_file(&url, jsonl.as_bytes(), "application/jsonl").await;
    let (st, created) = create_file_batch(&url, &input).await;
    assert_eq!(st, 200, "{created}");
    assert_eq!(created["metadata"]["inputConfig"]["fileName"], input.as_str());
    assert_eq!(created["metadata"]["batchStats"]["requestCount"], "5");
    let name = created["name"].as_str().unwrap().to_string();
    let done = wait_done(&url, &name, Duration::from_secs(120)).await;
    assert_eq!(done["metadata"]["state"], "BATCH_STATE_SUCCEEDED", "{done}");
    assert_eq!(done["metadata"]["batchStats"]["successfulRequestCount"], "2");
    assert_eq!(done["metadata"]["batchStats"]["failedRequestCount"], "3");
    assert!(done["metadata"]["output"].get("inlinedResponses").is_none(), "{done}");
    let out = done["metadata"]["output"]["responsesFile"].as_str().unwrap().to_string();
    assert!(out.starts_with("files/batch-"), "{out}");

    // The output is a GENERATED file of the caller, listed, downloadable under both paths.
    let f: Value = reqwest::get(format!("{url}/v1beta/{out}")).await.unwrap().json().await.unwrap();
    assert_eq!(f["source"], "GENERATED", "{f}");
    assert_eq!(f["mimeType"], "application/jsonl");
    let lines = download_lines(&url, &out).await;
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["key"], "a");
    assert_eq!(dims(lines[0]["response"]["candidates"][0]["content"]["parts"][0]["inlineData"]["data"].as_str().unwrap()), (512, 512));
    assert!(lines[1].get("key").is_none());
    assert_eq!(lines[1]["error"]["status"], "INVALID_ARGUMENT");
    assert!(lines[1]["error"]["message"].as_str().unwrap().contains("line 2"), "{}", lines[1]);
    assert_eq!(lines[2]["key"], "no-request");
    assert!(lines[2]["error"]["message"].as_str().unwrap().contains("line 4: request is required"), "{}", lines[2]);
    assert_eq!(lines[3]["key"], "bad-ratio");
    assert!(lines[3]["error"]["message"].as_str().unwrap().contains("aspectRatio"), "{}", lines[3]);
    assert_eq!(lines[4]["key"], "b");
    assert_eq!(dims(lines[4]["response"]["candidates"][0]["content"]["parts"][0]["inlineData"]["data"].as_str().unwrap()), (688, 384));
    let via_download = reqwest::get(format!("{url}{}", f["downloadUri"].as_str().unwrap().trim_start_matches(&url))).await.unwrap();
    assert_eq!(via_download.status(), 200);
    assert_eq!(via_download.text().await.unwrap().lines().count(), 5);

    // Inputs that cannot be a batch: the API's errors, no batch created.
    let img = upload_file(&url, &png_bytes(8, 8, [1, 2, 3]), "image/png").await;
    for (file, code, needle) in [(img.as_str(), 400, "not a JSONL"), ("files/nope", 403, "permission"), (input.as_str(), 200, "")] {
        let (st, v) = create_file_batch(&url, file).await;
        assert_eq!(st, code, "{v}");
        if code != 200 {
            assert!(v["error"]["message"].as_str().unwrap().contains(needle), "{v}");
        }
    }
    let empty = upload_file(&url, b"\n\n", "application/jsonl").await;
    let (st, v) = create_file_batch(&url, &empty).await;
    assert_eq!(st, 400, "{v}");
    let body = json!({"batch": {"inputConfig": {"fileName": input, "requests": {"requests": []}}}});
    let r = reqwest::Client::new().post(format!("{url}/v1beta/models/tiny:batchGenerateContent")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 400);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_upload_and_file_data_parts() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(&dir)).await;
    let base = format!("http://{}", s.addr);
    let http = reqwest::Client::new();
    let img = png_bytes(80, 60, [20, 120, 220]);
    let r = http
        .post(format!("{base}/upload/v1beta/files"))
        .header("x-goog-upload-protocol", "resumable")
        .header("x-goog-upload-command", "start")
        .header("x-goog-upload-header-content-length", img.len().to_string())
        .header("x-goog-upload-header-content-type", "image/png")
        .json(&json!({"file": {"displayName": "blue"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let upload_url = r.headers()["x-goog-upload-url"].to_str().unwrap().to_string();
    // Two chunks; a wrong offset is refused.
    let half = img.len() / 2;
    let put = |off: usize, cmd: &'static str, data: Vec<u8>| {
        http.post(&upload_url).header("x-goog-upload-command", cmd).header("x-goog-upload-offset", off.to_string()).body(data).send()
    };
    assert_eq!(put(0, "upload", img[..half].to_vec()).await.unwrap().headers()["x-goog-upload-status"], "active");
    assert_eq!(put(3, "upload, finalize", img[half..].to_vec()).await.unwrap().status(), 400);
    let r = put(half, "upload, finalize", img[half..].to_vec()).await.unwrap();
    assert_eq!(r.headers()["x-goog-upload-status"], "final");
    let f: Value = r.json().await.unwrap();
    let name = f["file"]["name"].as_str().unwrap().to_string();
    assert_eq!(f["file"]["state"], "ACTIVE");
    assert_eq!(f["file"]["sizeBytes"], img.len().to_string());

    let listed: Value = http.get(format!("{base}/v1beta/files")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["files"].as_array().unwrap().len(), 1);
    let got: Value = http.get(format!("{base}/v1beta/{name}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(got["displayName"], "blue");

    // fileData part → edit of the uploaded image, at its own size (a red tint: exact maths).
    let body = json!({"contents": [{"parts": [{"text": "make it red"}, {"fileData": {"mimeType": "image/png", "fileUri": got["uri"]}}]}],
        "generationConfig": {"imageConfig": {"imageSize": "512"}}});
    let r = http.post(format!("{base}/v1beta/models/tiny:generateContent")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let out = v["candidates"][0]["content"]["parts"][1]["inlineData"]["data"].as_str().unwrap();
    assert_eq!(dims(out), (80, 60));
    let px = image::load_from_memory(&base64::Engine::decode(&base64::engine::general_purpose::STANDARD, out).unwrap()).unwrap().to_rgb8();
    assert!(px.get_pixel(40, 30).0[0] > 60, "not redder: {:?}", px.get_pixel(40, 30));
    assert!(v["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap().contains("operation: adjust"), "{v}");

    // Delete removes the record and the blob.
    let hash = s.state.svc.stores.meta.file(&name).await.unwrap().unwrap().sha256.unwrap();
    assert!(s.state.svc.stores.blobs.get(&hash).await.unwrap().is_some());
    assert_eq!(http.delete(format!("{base}/v1beta/{name}")).send().await.unwrap().status(), 200);
    assert!(s.state.svc.stores.blobs.get(&hash).await.unwrap().is_none());
    assert_eq!(http.get(format!("{base}/v1beta/{name}")).send().await.unwrap().status(), 403);
    let r = http.post(format!("{base}/v1beta/models/tiny:generateContent")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 403);
    s.stop().await;
}

/// Cancelling a file batch while an item runs: the item finishes and its result is kept, the
/// items after it are cancelled, and only then is the batch CANCELLED with its results file.
/// Deleting the batch removes that file and its bytes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_keeps_the_running_item_and_delete_removes_the_results_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    cfg.models[0].steps = Some(30);
    let s = start(cfg).await;
    let url = format!("http://{}", s.addr);
    let jsonl = [jsonl_line("a", "first", 1), jsonl_line("b", "second", 2), jsonl_line("c", "third", 3)].join("\n");
    let input = upload_file(&url, jsonl.as_bytes(), "application/jsonl").await;
    let (st, created) = create_file_batch(&url, &input).await;
    assert_eq!(st, 200, "{created}");
    let name = created["name"].as_str().unwrap().to_string();

    // Wait until the first item is running, then cancel.
    let t = Instant::now();
    while !s.state.svc.stores.meta.batch_items(&name).await.unwrap().iter().any(|i| i.state == ItemState::Running) {
        assert!(t.elapsed() < Duration::from_secs(60), "no item started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = reqwest::Client::new().post(format!("{url}/v1beta/{name}:cancel")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let states: Vec<ItemState> = s.state.svc.stores.meta.batch_items(&name).await.unwrap().into_iter().map(|i| i.state).collect();
    assert_eq!(states, [ItemState::Running, ItemState::Cancelled, ItemState::Cancelled]);
    let v = batch_state(&url, &name).await;
    assert_eq!(v["done"], false, "the running item has not finished: {v}");

    let done = wait_done(&url, &name, Duration::from_secs(600)).await;
    assert_eq!(done["metadata"]["state"], "BATCH_STATE_CANCELLED", "{done}");
    assert_eq!(done["metadata"]["batchStats"]["successfulRequestCount"], "1");
    let out = done["metadata"]["output"]["responsesFile"].as_str().unwrap().to_string();
    let lines = download_lines(&url, &out).await;
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["key"], "a");
    assert_eq!(dims(lines[0]["response"]["candidates"][0]["content"]["parts"][0]["inlineData"]["data"].as_str().unwrap()), (512, 512));
    for l in &lines[1..] {
        assert_eq!(l["error"]["status"], "CANCELLED", "{l}");
    }
    let hash = s.state.svc.stores.meta.file(&out).await.unwrap().expect("results file recorded").sha256.expect("hashed");

    // Deleting the batch deletes its results file (and the file's bytes).
    let r = reqwest::Client::new().delete(format!("{url}/v1beta/{name}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(reqwest::get(format!("{url}/v1beta/{name}")).await.unwrap().status(), 404);
    assert_eq!(reqwest::get(format!("{url}/v1beta/{out}")).await.unwrap().status(), 403);
    assert!(s.state.svc.stores.meta.file(&out).await.unwrap().is_none());
    assert!(s.state.svc.stores.blobs.get(&hash).await.unwrap().is_none(), "the results file's bytes are gone");
    s.stop().await;
}

fn file_record(name: &str, hash: Option<String>, upload_id: Option<&str>, expires_at: i64) -> plantain_store::FileRecord {
    let now = plantain_store::now();
    plantain_store::FileRecord {
        name: name.into(),
        key_id: None,
        display_name: None,
        mime_type: "image/png".into(),
        size_bytes: 10,
        sha256: hash,
        state: if upload_id.is_some() { FileState::Uploading } else { FileState::Active },
        upload_id: upload_id.map(str::to_string),
        received: 0,
        created_at: now - 49 * 3600,
        expires_at,
        source: FileSource::Uploaded,
    }
}

/// Files past their 48 hours lose their records, their partial uploads and the blobs nothing
/// else uses; live files and blobs still in use stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_files_are_purged_with_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(&dir)).await;
    let url = format!("http://{}", s.addr);
    let now = plantain_store::now();
    let store = s.state.svc.stores.meta.clone();
    let old = s.state.svc.stores.blobs.put(b"expired bytes").await.unwrap();
    let shared = s.state.svc.stores.blobs.put(b"bytes a live file shares").await.unwrap();
    store.put_file(&file_record("files/old", Some(old.clone()), None, now - 1)).await.unwrap();
    store.put_file(&file_record("files/oldshared", Some(shared.clone()), None, now - 1)).await.unwrap();
    store.put_file(&file_record("files/live", Some(shared.clone()), None, now + 3600)).await.unwrap();
    let upload_id = "0123456789abcdef0123456789abcdef";
    store.put_file(&file_record("files/halfway", None, Some(upload_id), now - 1)).await.unwrap();
    let part = dir.path().join("uploads").join(upload_id);
    std::fs::create_dir_all(part.parent().unwrap()).unwrap();
    std::fs::write(&part, b"half an upload").unwrap();

    assert_eq!(s.state.svc.purge_expired_files().await.unwrap(), 3);
    for gone in ["files/old", "files/oldshared", "files/halfway"] {
        assert!(store.file(gone).await.unwrap().is_none(), "{gone}");
    }
    assert!(s.state.svc.stores.blobs.get(&old).await.unwrap().is_none(), "unused bytes are deleted");
    assert!(s.state.svc.stores.blobs.get(&shared).await.unwrap().is_some(), "bytes a live file uses stay");
    assert!(!part.exists(), "the partial upload is deleted");
    assert!(store.file("files/live").await.unwrap().is_some());
    assert_eq!(reqwest::get(format!("{url}/v1beta/files/live")).await.unwrap().status(), 200);
    assert_eq!(s.state.svc.purge_expired_files().await.unwrap(), 0, "nothing left to purge");
    s.stop().await;
}
