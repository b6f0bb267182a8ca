//! `pull` without a usable network must fail fast with a helpful error, never hang or panic.
//! None of these tests can start a real download: they use dead local endpoints, or a repo
//! id that does not exist on the real hub.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use plantain_hub::*;

mod common;
use common::*;

fn opts(cache: &std::path::Path, endpoint: &str) -> PullOptions {
    PullOptions { cache_dir: cache.to_path_buf(), endpoint: Some(endpoint.into()), ..Default::default() }
}

/// A port nothing listens on: bind, read the port, close.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn refused_connection_fails_fast() {
    let tmp = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let mut events = Vec::new();
    let t = Instant::now();
    let err = pull("sd-turbo", &opts(tmp.path(), &endpoint), |e| events.push(e.clone())).unwrap_err();
    let took = t.elapsed();
    eprintln!("refused: {took:?}: {err}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(matches!(err, HubError::Unreachable { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&endpoint) && msg.contains("--model /path/to/folder"), "{msg}");
    assert!(matches!(events.first(), Some(PullEvent::Connecting { .. })), "{events:?}");
}

#[test]
fn silent_server_hits_probe_timeout() {
    // Accepts TCP connections but never answers, like a broken proxy.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let mut o = opts(tmp.path(), &endpoint);
    o.probe_timeout = Duration::from_secs(2);
    let t = Instant::now();
    let err = pull("stabilityai/sd-turbo", &o, |_| {}).unwrap_err();
    let took = t.elapsed();
    eprintln!("silent server: {took:?}: {err}");
    assert!(matches!(err, HubError::Unreachable { .. }), "{err}");
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(4), "took {took:?}");
    drop(listener);
}

/// The real default endpoint (or HF_ENDPOINT). Here the hub is unreachable, so this is the
/// real offline case; with network it meets a repo that does not exist and fails just as fast.
#[test]
fn real_hub_endpoint_fails_fast() {
    let tmp = tempfile::tempdir().unwrap();
    let o = PullOptions { cache_dir: tmp.path().to_path_buf(), ..Default::default() };
    let t = Instant::now();
    let err = pull("plantain-test-nobody/does-not-exist-7f3a", &o, |_| {}).unwrap_err();
    let took = t.elapsed();
    eprintln!("real endpoint: {took:?}: {err}");
    assert!(took < Duration::from_secs(11), "took {took:?}");
    assert!(matches!(err, HubError::Unreachable { .. } | HubError::RepoNotFound { .. } | HubError::AccessDenied { .. }), "{err}");
    let dns_works = std::net::ToSocketAddrs::to_socket_addrs(&("huggingface.co", 443)).is_ok();
    if !dns_works {
        assert!(matches!(err, HubError::Unreachable { .. }), "{err}");
    }
}

#[test]
fn blocking_pull_works_inside_a_runtime() {
    // The CLI is sync but the server is async: pull must not panic with
    // "cannot start a runtime from within a runtime".
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let err = rt.block_on(async { pull("sd15", &opts(tmp.path(), &endpoint), |_| {}) }).unwrap_err();
    assert!(matches!(err, HubError::Unreachable { .. }), "{err}");
}

#[test]
fn nothing_to_pull_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let o = opts(tmp.path(), "http://127.0.0.1:9");
    assert!(matches!(pull("plantain-nano", &o, |_| {}), Err(HubError::NotPullable { .. })));
    assert!(matches!(pull("/some/folder", &o, |_| {}), Err(HubError::NotPullable { .. })));
    let e = pull("sd-turob", &o, |_| {}).unwrap_err();
    assert!(e.to_string().contains("did you mean sd-turbo?"), "{e}");
}

#[test]
fn black_hole_address_is_bounded_by_probe_timeout() {
    // 10.255.255.1 is normally unroutable: packets vanish, or the route is refused at once, or
    // (as on the machine these tests were written on) an intercepting proxy answers 404 pages.
    let tmp = tempfile::tempdir().unwrap();
    let mut o = opts(tmp.path(), "http://10.255.255.1");
    o.connect_timeout = Duration::from_secs(2);
    o.probe_timeout = Duration::from_secs(3);
    let t = Instant::now();
    let err = pull("sd-turbo", &o, |_| {}).unwrap_err();
    let took = t.elapsed();
    eprintln!("black hole: {took:?}: {err}");
    assert!(matches!(err, HubError::Unreachable { .. }), "{err}");
    assert!(took < Duration::from_secs(4), "took {took:?}");
}

#[test]
fn unreachable_hub_falls_back_to_complete_cached_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let snap = hf_snapshot(tmp.path(), "stabilityai/sd-turbo", &sha('a'), &["main"], &pipeline_files(Arch::Sd2Turbo, &[Some("fp16")]));
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let mut events = Vec::new();
    let path = pull("sd-turbo", &opts(tmp.path(), &endpoint), |e| events.push(e.clone())).unwrap();
    assert_eq!(path, snap);
    assert!(events.iter().any(|e| matches!(e, PullEvent::Note(n) if n.contains("unreachable"))), "{events:?}");
    // Not cached at that revision: the error stands.
    let err = pull("sd-turbo@v2", &opts(tmp.path(), &endpoint), |_| {}).unwrap_err();
    assert!(matches!(err, HubError::Unreachable { .. }), "{err}");
}
