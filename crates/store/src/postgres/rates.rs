//! Per-caller request rate limits shared by every API node: a sliding window of request times
//! per caller in `rate_hits`, counted and extended in one transaction under the caller's
//! advisory lock, so two nodes admitting the same caller at once never both take its last slot.

use sqlx::Connection;

use super::PgStore;
use crate::error::Result;

/// What counting one request found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateCount {
    /// Within the limit: the request was counted.
    Counted,
    /// The window is full: nothing was counted; a slot frees in `wait_ms`.
    Full { wait_ms: i64 },
}

/// The advisory-lock name that serialises one caller's rate counting.
fn rate_lock(caller: &str) -> String {
    format!("plantain.rate:{caller}")
}

impl PgStore {
    /// Counts a request of `caller` at `now_ms` (unix milliseconds) against `limit` requests per
    /// `window_ms`, unless the window ending now already holds `limit` of them.
    pub async fn count_request(&self, caller: &str, limit: u32, window_ms: i64, now_ms: i64) -> Result<RateCount> {
        let mut c = self.pool.acquire().await?;
        let mut tx = c.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))").bind(rate_lock(caller)).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM rate_hits WHERE caller = $1 AND at <= $2").bind(caller).bind(now_ms - window_ms).execute(&mut *tx).await?;
        let (held, oldest): (i64, Option<i64>) =
            sqlx::query_as("SELECT COUNT(*), MIN(at) FROM rate_hits WHERE caller = $1").bind(caller).fetch_one(&mut *tx).await?;
        if held >= i64::from(limit) {
            tx.commit().await?;
            let wait_ms = oldest.map_or(window_ms, |t| t + window_ms - now_ms).max(1);
            return Ok(RateCount::Full { wait_ms });
        }
        sqlx::query("INSERT INTO rate_hits (caller, at) VALUES ($1, $2)").bind(caller).bind(now_ms).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(RateCount::Counted)
    }
}
