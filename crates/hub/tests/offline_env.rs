//! `HF_HUB_OFFLINE=1` from the real environment. One test in its own binary, because it
//! sets process-wide environment variables.

mod common;

use std::time::{Duration, Instant};

use common::*;
use plantain_hub::*;

#[test]
fn hf_hub_offline_returns_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    // SAFETY: the only test in this binary; no other thread reads the environment yet.
    unsafe {
        std::env::set_var("HF_HUB_OFFLINE", "1");
        std::env::set_var("HF_HUB_CACHE", &cache);
        // Would be used if the offline flag were ignored: a black hole.
        std::env::set_var("HF_ENDPOINT", "http://10.255.255.1");
    }
    let o = PullOptions::from_env();
    assert!(o.offline);
    assert_eq!(o.cache_dir, cache);

    let t = Instant::now();
    let err = pull("sd-turbo", &o, |_| {}).unwrap_err();
    let took = t.elapsed();
    eprintln!("HF_HUB_OFFLINE, not cached: {took:?}: {err}");
    assert!(took < Duration::from_millis(500), "took {took:?}");
    assert!(matches!(err, HubError::Offline { .. }), "{err}");
    assert!(err.to_string().contains("HF_HUB_OFFLINE"));

    // Already complete in the cache: offline pull is a no-op that returns the snapshot.
    let snap = hf_snapshot(&cache, "stabilityai/sd-turbo", &sha('a'), &["main"], &pipeline_files(Arch::Sd2Turbo, &[None]));
    let mut events = Vec::new();
    let path = pull("sd-turbo", &o, |e| events.push(e.clone())).unwrap();
    assert_eq!(path, snap);
    assert!(matches!(events.last(), Some(PullEvent::Finished { .. })));

    // resolve() reads the same env-derived cache.
    assert_eq!(resolve("sd-turbo", &ResolveOptions::from_env()).unwrap().path, snap);

    // HF_HUB_OFFLINE=0 goes online, and HF_ENDPOINT (read by hf-hub) decides where to.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{port}");
    // SAFETY: still the only thread using the environment.
    unsafe {
        std::env::set_var("HF_HUB_OFFLINE", "0");
        std::env::set_var("HF_ENDPOINT", &endpoint);
    }
    let o = PullOptions::from_env();
    assert!(!o.offline);
    let err = pull("sdxl", &o, |_| {}).unwrap_err();
    assert!(matches!(err, HubError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains(&endpoint), "{err}");
}
