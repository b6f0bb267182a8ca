//! API keys (stored hashed), caller identification, per-caller request rate limits.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use plantain_store::{RateCount, Stores, blob_address};
use rand::RngCore;

use crate::Service;
use crate::error::{ErrorKind, ServiceError};

/// Who is calling: a key id (never the key) or, without keys, `anonymous`.
#[derive(Clone, Debug, PartialEq, Eq)]
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
fn new_key() -> (String, String) {
    let mut id = [0u8; 6];
    let mut secret = [0u8; 24];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    (format!("key_{}", hex::encode(id)), format!("plk_{}", hex::encode(secret)))
}

fn hash_key(secret: &str) -> String {
    blob_address(secret.as_bytes())
}

/// Creates a key: returns `(id, secret)`; only the secret's hash is stored.
pub async fn create_key(stores: &Stores, name: &str) -> Result<(String, String), ServiceError> {
    let (id, secret) = new_key();
    stores.meta.create_key(&id, name, &hash_key(&secret)).await?;
    Ok((id, secret))
}

/// Deletes everything recorded for a key (outputs, files, batches, idempotency records) and
/// the blobs nothing else uses; returns how many blobs were removed.
pub async fn delete_key_data(stores: &Stores, key_id: &str) -> Result<usize, ServiceError> {
    let hashes = stores.meta.delete_key_data(key_id).await?;
    stores.delete_blobs(&hashes).await?;
    Ok(hashes.len())
}

/// Seconds since the start of the current UTC day, and until its end.
pub fn utc_day_bounds(now: i64) -> (i64, i64) {
    let start = now - now.rem_euclid(86_400);
    (start, start + 86_400 - now)
}

/// The refusal of a request over the caller's per-minute limit; a slot frees in `wait`.
fn rate_limited(caller: &str, per_minute: u32, wait: Duration) -> ServiceError {
    let secs = wait.as_secs() + 1;
    ServiceError::exhausted(format!("rate limit: {per_minute} requests per minute for {caller}; retry in {secs} s"), secs)
}

/// Sliding one-minute window of request times per caller (one node; nodes sharing PostgreSQL
/// count in its `rate_hits`).
#[derive(Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimiter {
    /// Counts a request; Exhausted with the seconds until a slot frees.
    pub fn check(&self, caller: &str, per_minute: u32) -> Result<(), ServiceError> {
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
            return Err(rate_limited(caller, per_minute, wait));
        }
        q.push_back(now);
        Ok(())
    }
}

impl Service {
    /// Who presents `key`, then the per-caller rate limit. Keys are required as soon as one
    /// active key exists; without any, every caller is `anonymous` (and the server binds
    /// loopback only).
    pub async fn admit(&self, key: Option<&str>) -> Result<Caller, ServiceError> {
        let caller = self.authenticate(key).await?;
        let per_minute = self.config.limits.requests_per_minute;
        match &self.stores.queue {
            // Nodes sharing a database count each caller's requests together.
            Some(shared) if per_minute > 0 => {
                let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
                if let RateCount::Full { wait_ms } = shared.count_request(caller.label(), per_minute, 60_000, now_ms).await? {
                    return Err(rate_limited(caller.label(), per_minute, Duration::from_millis(wait_ms as u64)));
                }
            }
            _ => self.limiter.check(caller.label(), per_minute)?,
        }
        Ok(caller)
    }

    async fn authenticate(&self, key: Option<&str>) -> Result<Caller, ServiceError> {
        if self.stores.meta.active_keys().await? == 0 {
            return Ok(Caller { key_id: None });
        }
        let unauthenticated = |m: &str| ServiceError::new(ErrorKind::Unauthenticated, m);
        let Some(key) = key.filter(|k| !k.is_empty()) else {
            return Err(unauthenticated("no API key: send it in the x-goog-api-key header, as Authorization: Bearer, or as ?key="));
        };
        match self.stores.meta.key_by_hash(&hash_key(key)).await? {
            Some(k) => Ok(Caller { key_id: Some(k.id) }),
            None => Err(unauthenticated("API key not valid (unknown or revoked)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_window() {
        let r = RateLimiter::default();
        r.check("a", 2).unwrap();
        r.check("a", 2).unwrap();
        let e = r.check("a", 2).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Exhausted);
        assert!(e.retry_after.unwrap() >= 1);
        r.check("b", 2).unwrap();
    }

    #[test]
    fn day_bounds() {
        assert_eq!(utc_day_bounds(86_400 * 3 + 10), (86_400 * 3, 86_390));
    }
}
