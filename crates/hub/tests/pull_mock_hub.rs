//! End-to-end `pull` against a tiny in-process imitation of the hub's HTTP API (repo info,
//! tree listing, resolve HEAD/GET). The real hub is not reachable from CI; this checks the
//! hf-hub calls, file selection, cache layout, refs and the stall watchdog for real.

mod common;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use plantain_hub::*;

const REPO: &str = "owner/tiny-sd";

struct MockHub {
    endpoint: String,
    requests: Arc<Mutex<Vec<String>>>,
}

/// Serve `files` for REPO at commit `sha`. Requests for `stall` send headers and a few bytes, then hang.
fn start(files: BTreeMap<String, Vec<u8>>, sha: String, stall: Option<String>) -> MockHub {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let files = Arc::new(files);
    let log = Arc::clone(&requests);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (files, sha, log, stall) = (Arc::clone(&files), sha.clone(), Arc::clone(&log), stall.clone());
            std::thread::spawn(move || serve(conn, &files, &sha, &log, stall.as_deref()));
        }
    });
    MockHub { endpoint, requests }
}

fn etag(bytes: &[u8]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    format!("{:016x}{:08x}", h.finish(), bytes.len())
}

fn serve(conn: TcpStream, files: &BTreeMap<String, Vec<u8>>, sha: &str, log: &Mutex<Vec<String>>, stall: Option<&str>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let mut auth = String::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("authorization")
        {
            auth = format!(" auth={}", v.trim());
        }
    }
    log.lock().unwrap().push(format!("{method} {target}{auth}"));
    let path = target.split('?').next().unwrap_or("");
    let mut out = conn;
    let respond = |out: &mut TcpStream, status: &str, headers: &[(String, String)], body: &[u8], send_body: bool| {
        // Like the real hub, every answer carries a request id, and API 404s an error code.
        let mut s = format!("HTTP/1.1 {status}\r\nConnection: close\r\nX-Request-Id: mock-1\r\nContent-Length: {}\r\n", body.len());
        if status.starts_with("404") && target.starts_with("/api/") {
            s.push_str("X-Error-Code: RepoNotFound\r\n");
        }
        for (k, v) in headers {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        s.push_str("\r\n");
        let _ = out.write_all(s.as_bytes());
        if send_body {
            let _ = out.write_all(body);
        }
    };
    let api = format!("/api/models/{REPO}");
    let json = [("Content-Type".to_string(), "application/json".to_string())];
    if path == api || path.starts_with(&format!("{api}/revision/")) {
        let body = serde_json::to_vec(&serde_json::json!({"id": REPO, "sha": sha})).unwrap();
        return respond(&mut out, "200 OK", &json, &body, true);
    }
    if path.starts_with(&format!("{api}/tree/")) {
        let mut entries: Vec<serde_json::Value> = Vec::new();
        let mut dirs = std::collections::BTreeSet::new();
        for (p, b) in files {
            if let Some((d, _)) = p.split_once('/') {
                dirs.insert(d.to_string());
            }
            entries.push(serde_json::json!({"type": "file", "oid": etag(b), "size": b.len(), "path": p}));
        }
        for d in dirs {
            entries.push(serde_json::json!({"type": "directory", "oid": "0", "path": d}));
        }
        return respond(&mut out, "200 OK", &json, &serde_json::to_vec(&entries).unwrap(), true);
    }
    let prefix = format!("/{REPO}/resolve/{sha}/");
    if let Some(file) = path.strip_prefix(&prefix) {
        let Some(bytes) = files.get(file) else {
            return respond(&mut out, "404 Not Found", &[("X-Repo-Commit".into(), sha.into())], b"", method == "GET");
        };
        let headers = vec![("ETag".to_string(), format!("\"{}\"", etag(bytes))), ("X-Repo-Commit".to_string(), sha.to_string())];
        if method == "GET" && stall == Some(file) {
            let head =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: \"{}\"\r\nX-Repo-Commit: {sha}\r\n\r\n", bytes.len(), etag(bytes));
            let _ = out.write_all(head.as_bytes());
            let _ = out.write_all(&bytes[..4]);
            let _ = out.flush();
            std::thread::sleep(Duration::from_secs(60));
            return;
        }
        return respond(&mut out, "200 OK", &headers, bytes, method == "GET");
    }
    respond(&mut out, "404 Not Found", &[], b"", method == "GET")
}

/// A repo like the real SD ones: fp16 + fp32 weights, pickles, flax, a root checkpoint.
fn repo_files() -> BTreeMap<String, Vec<u8>> {
    let mut files: BTreeMap<String, Vec<u8>> = pipeline_files(Arch::Sd2Turbo, &[Some("fp16"), None]).into_iter().collect();
    // Distinct bytes: blobs are content-addressed, identical dummies would share one download.
    files.insert("unet/diffusion_pytorch_model.fp16.safetensors".into(), safetensors(&["unet.fp16", "x", "y"]));
    files.insert("unet/diffusion_pytorch_model.bin".into(), b"pickle".to_vec());
    files.insert("text_encoder/flax_model.msgpack".into(), b"flax".to_vec());
    files.insert("sd_turbo.safetensors".into(), safetensors(&["big"]));
    files.insert("README.md".into(), b"# card".to_vec());
    files
}

fn opts(cache: &std::path::Path, endpoint: &str) -> PullOptions {
    PullOptions { cache_dir: cache.to_path_buf(), endpoint: Some(endpoint.into()), token: Some("hf_test".into()), ..Default::default() }
}

#[test]
fn pull_downloads_only_needed_files_into_hf_cache() {
    let sha = sha('7');
    let hub = start(repo_files(), sha.clone(), None);
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let mut events = Vec::new();
    let path = pull(REPO, &opts(&cache, &hub.endpoint), |e| events.push(e.clone())).unwrap();
    assert_eq!(path, cache.join("models--owner--tiny-sd/snapshots").join(&sha));
    assert_eq!(std::fs::read_to_string(cache.join("models--owner--tiny-sd/refs/main")).unwrap(), sha);

    let mut got = Vec::new();
    collect(&path, &path, &mut got);
    got.sort();
    assert_eq!(
        got,
        vec![
            "model_index.json",
            "scheduler/scheduler_config.json",
            "text_encoder/config.json",
            "text_encoder/model.fp16.safetensors",
            "tokenizer/merges.txt",
            "tokenizer/tokenizer_config.json",
            "tokenizer/vocab.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.fp16.safetensors",
        ]
    );
    // Snapshot entries are symlinks into blobs/, as huggingface_hub makes them.
    #[cfg(unix)]
    assert!(std::fs::symlink_metadata(path.join("unet/config.json")).unwrap().file_type().is_symlink());
    let reqs = hub.requests.lock().unwrap().clone();
    assert!(!reqs.iter().any(|r| r.contains(".bin") || r.contains(".msgpack") || r.contains("sd_turbo.safetensors")), "{reqs:#?}");
    // The token goes to the hub's API.
    assert!(reqs.iter().any(|r| r.starts_with("GET /api/models/owner/tiny-sd") && r.ends_with("auth=Bearer hf_test")), "{reqs:#?}");
    assert!(matches!(events.first(), Some(PullEvent::Connecting { .. })));
    assert!(events.iter().any(|e| matches!(e, PullEvent::Resolved { commit, .. } if *commit == sha)));
    assert!(events.iter().any(|e| matches!(e, PullEvent::Planned { files: 11, .. })));
    assert!(matches!(events.last(), Some(PullEvent::Finished { .. })));

    // What was pulled resolves, with the table's defaults when the repo is known.
    let m = resolve(REPO, &ResolveOptions::with_hf_cache(&cache)).unwrap();
    assert_eq!((m.path.clone(), m.family, m.revision.as_deref()), (path.clone(), Some(Family::Sd2), Some(sha.as_str())));
    assert!(list_cached(&CacheDirs { hf_cache: cache.clone(), models_dir: None })[0].complete);

    // A second pull finds everything cached and downloads nothing.
    let before = hub.requests.lock().unwrap().len();
    let again = pull(REPO, &opts(&cache, &hub.endpoint), |_| {}).unwrap();
    assert_eq!(again, path);
    let new: Vec<String> = hub.requests.lock().unwrap()[before..].to_vec();
    assert!(!new.iter().any(|r| r.starts_with("GET /owner/tiny-sd/resolve/")), "{new:#?}");
}

#[test]
fn pull_fp32_variant_and_revision() {
    let sha = sha('8');
    let hub = start(repo_files(), sha.clone(), None);
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let mut o = opts(&cache, &hub.endpoint);
    o.variant = Variant::Fp32;
    let path = pull(&format!("{REPO}@v1.0"), &o, |_| {}).unwrap();
    assert!(path.join("unet/diffusion_pytorch_model.safetensors").is_file());
    assert!(!path.join("unet/diffusion_pytorch_model.fp16.safetensors").exists());
    assert_eq!(std::fs::read_to_string(cache.join("models--owner--tiny-sd/refs/v1.0")).unwrap(), sha);
    assert!(!cache.join("models--owner--tiny-sd/refs/main").exists());
    let m = resolve(&format!("{REPO}@v1.0"), &ResolveOptions::with_hf_cache(&cache)).unwrap();
    assert_eq!(m.path, path);
}

#[test]
fn unknown_repo_and_non_diffusers_repo() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = start(repo_files(), sha('9'), None);
    let err = pull("owner/other", &opts(tmp.path(), &hub.endpoint), |_| {}).unwrap_err();
    assert!(matches!(err, HubError::RepoNotFound { .. }), "{err}");

    let mut files = BTreeMap::new();
    files.insert("config.json".to_string(), b"{}".to_vec());
    files.insert("model.safetensors".to_string(), safetensors(&["x"]));
    let hub = start(files, sha('9'), None);
    let err = pull(REPO, &opts(tmp.path(), &hub.endpoint), |_| {}).unwrap_err();
    assert!(matches!(err, HubError::NotDiffusers { .. }), "{err}");
}

#[test]
fn stalled_download_is_aborted() {
    let hub = start(repo_files(), sha('6'), Some("unet/diffusion_pytorch_model.fp16.safetensors".into()));
    let tmp = tempfile::tempdir().unwrap();
    let mut o = opts(&tmp.path().join("hub"), &hub.endpoint);
    o.stall_timeout = Duration::from_secs(2);
    let t = Instant::now();
    let err = pull(REPO, &o, |_| {}).unwrap_err();
    let took = t.elapsed();
    eprintln!("stall: {took:?}: {err}");
    assert!(matches!(err, HubError::Stalled { .. }), "{err}");
    assert!(took < Duration::from_secs(6), "took {took:?}");
}

fn collect(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(root, &p, out);
        } else {
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
        }
    }
}
