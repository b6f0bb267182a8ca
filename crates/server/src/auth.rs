//! API keys (stored hashed), caller identification, per-key request rate limits and daily
//! image quotas.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use rand::RngCore;

use crate::error::ApiError;
use crate::media::sha256_hex;
use crate::store::MetaStore;

/// Who is calling: a key id (never the key) or, without keys, `anonymous`.
#[derive(Clone, Debug)]
pub struct Caller {
    pub key_id: Option<String>,
}

impl Caller {
    /// The label used in logs, metrics and queue fairness.
    pub fn label(&self) -> &str {
        self.key_id.as_deref().unwrap_or("anonymous")
    }
}

/// A new key: `(id, secret)`. Only the secret's sha256 is stored.
pub fn new_key() -> (String, String) {
    let mut id = [0u8; 6];
    let mut secret = [0u8; 24];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    (format!("key_{}", hex::encode(id)), format!("plk_{}", hex::encode(secret)))
}

pub fn hash_key(secret: &str) -> String {
    sha256_hex(secret.as_bytes())
}

/// The key a request carries: `x-goog-api-key`, `Authorization: Bearer`, or `?key=`.
pub fn presented_key(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(v) = headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_string());
    }
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer ") {
            return Some(v[7..].trim().to_string());
        }
    }
    query.and_then(|q| {
        q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == "key").then(|| v.to_string())
        })
    })
}

/// Checks the presented key. Keys are required as soon as one active key exists; without any,
/// every caller is `anonymous` (and the server binds loopback only).
pub fn authenticate(store: &dyn MetaStore, headers: &HeaderMap, query: Option<&str>) -> Result<Caller, ApiError> {
    if store.active_keys()? == 0 {
        return Ok(Caller { key_id: None });
    }
    let Some(key) = presented_key(headers, query).filter(|k| !k.is_empty()) else {
        return Err(ApiError::unauthenticated("no API key: send it in the x-goog-api-key header, as Authorization: Bearer, or as ?key="));
    };
    match store.key_by_hash(&hash_key(&key))? {
        Some(k) => Ok(Caller { key_id: Some(k.id) }),
        None => Err(ApiError::unauthenticated("API key not valid (unknown or revoked)")),
    }
}

/// Sliding one-minute window of request times per caller.
#[derive(Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimiter {
    /// Counts a request; 429 RESOURCE_EXHAUSTED with the seconds until a slot frees.
    pub fn check(&self, caller: &str, per_minute: u32) -> Result<(), ApiError> {
        if per_minute == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let window = Duration::from_secs(60);
        let mut m = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let q = m.entry(caller.to_string()).or_default();
        while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
            q.pop_front();
        }
        if q.len() >= per_minute as usize {
            let wait = q.front().map(|t| window.saturating_sub(now.duration_since(*t))).unwrap_or(window);
            return Err(ApiError::exhausted(
                format!("rate limit: {per_minute} requests per minute for {caller}; retry in {} s", wait.as_secs() + 1),
                wait.as_secs() + 1,
            ));
        }
        q.push_back(now);
        Ok(())
    }
}

/// Seconds since the start of the current UTC day, and until its end.
pub fn utc_day_bounds(now: i64) -> (i64, i64) {
    let start = now - now.rem_euclid(86_400);
    (start, start + 86_400 - now)
}

/// 429 when `wanted` more images would pass the caller's daily quota.
pub fn check_quota(store: &dyn MetaStore, caller: &Caller, per_day: u32, wanted: u32) -> Result<(), ApiError> {
    if per_day == 0 {
        return Ok(());
    }
    let now = crate::store::now();
    let (start, left) = utc_day_bounds(now);
    let used = store.images_since(caller.key_id.as_deref(), start)?;
    if used + u64::from(wanted) > u64::from(per_day) {
        return Err(ApiError::exhausted(
            format!("daily image quota reached for {}: {used} of {per_day} images used today (UTC); {wanted} more asked", caller.label()),
            left as u64,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_sources() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h, Some("alt=sse&key=abc")), Some("abc".into()));
        h.insert("authorization", "Bearer xyz".parse().unwrap());
        assert_eq!(presented_key(&h, Some("key=abc")), Some("xyz".into()));
        h.insert("x-goog-api-key", "g".parse().unwrap());
        assert_eq!(presented_key(&h, None), Some("g".into()));
    }

    #[test]
    fn rate_limit_window() {
        let r = RateLimiter::default();
        r.check("a", 2).unwrap();
        r.check("a", 2).unwrap();
        let e = r.check("a", 2).unwrap_err();
        assert_eq!(e.status, "RESOURCE_EXHAUSTED");
        assert!(e.retry_after.unwrap() >= 1);
        r.check("b", 2).unwrap();
    }

    #[test]
    fn day_bounds() {
        assert_eq!(utc_day_bounds(86_400 * 3 + 10), (86_400 * 3, 86_390));
    }
}
