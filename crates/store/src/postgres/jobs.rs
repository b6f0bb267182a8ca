//! Issue 27's shared job queue in PostgreSQL (what `plantain serve --role api|worker` use; the
//! all-in-one default queues in-process): API nodes enqueue validated jobs; workers on any
//! machine claim jobs for the models they have loaded, under a lease they renew (the
//! heartbeat), and finish them only while they hold the lease.
//!
//! - A claim takes one job with `FOR UPDATE SKIP LOCKED`: concurrent workers never take the same
//!   job, and never wait on each other. A job whose lease ran out (its worker died) is taken
//!   again; `attempts` counts the claims.
//! - Order: previews before finals, but a waiting final goes after [`PREVIEW_BURST`] previews of
//!   its model in a row (`job_lanes`, counted across every worker), as in the in-process queue;
//!   within a lane, round-robin between callers — the caller served longest ago (or never)
//!   first, across every worker (`job_turns`); then oldest first.
//! - Backpressure ([`PgStore::offer_job`]): a lane of a model holds at most `capacity` waiting
//!   jobs, a caller at most `per_caller` of them — counted and inserted under a transaction-scoped
//!   advisory lock per model and lane, so that API nodes enqueueing at once never overfill it.
//! - Workers announce the models they serve ([`PgStore::announce_worker`], a row renewed like a
//!   lease): an API node refuses a job no live worker can take, and a queued job nobody took in
//!   time is failed ([`PgStore::expire_unclaimed_job`]) rather than left waiting.
//! - Enqueueing notifies `LISTEN`ers in the same transaction ([`JobWaker`]), so idle workers wake
//!   at once instead of polling; they still poll now and then for expired leases.
//! - Cancelling a queued job settles it; a running one is flagged, and its worker learns it from
//!   its next heartbeat ([`Heartbeat::CancelRequested`]) and stops between steps.
//! - What a running job reports (progress, partial images) and its outputs are rows of
//!   `job_events`, written only while the writer holds the lease; a `NOTIFY` on the events
//!   channel names the job ([`JobEvents`]), never carries the bytes. The outputs are written
//!   in the transaction that settles the job: a job's outputs exist once, or not at all.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgRow};
use sqlx::{AssertSqlSafe, Connection, Row};

use super::{PgStore, json_col, state_col};
use crate::error::Result;
use crate::now;
use crate::records::{JobLane, JobState, Lease};

/// A job for the queue: its payload is the validated job (opaque to storage).
#[derive(Clone, Debug, PartialEq)]
pub struct NewJob {
    pub id: String,
    pub model: String,
    pub lane: JobLane,
    /// Whom fairness is counted for (a key id, or one anonymous caller).
    pub caller: String,
    pub payload: serde_json::Value,
}

/// A job as the queue holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct QueuedJob {
    pub id: String,
    pub model: String,
    pub lane: JobLane,
    pub caller: String,
    pub payload: serde_json::Value,
    pub state: JobState,
    /// How many times a worker took it (more than 1: a worker died holding it).
    pub attempts: i32,
    pub cancel_requested: bool,
    pub result: Option<serde_json::Value>,
    /// Who holds (or last held) its lease.
    pub lease_owner: Option<String>,
}

/// What a heartbeat learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heartbeat {
    /// The lease is extended: go on.
    Held,
    /// The lease is extended, but the client cancelled: stop between steps and finish the job
    /// as cancelled.
    CancelRequested,
    /// The job is no longer this worker's (its lease ran out and another took it, or it was
    /// settled): drop the work, write nothing.
    Lost,
}

/// After this many preview jobs of a model in a row a waiting final job goes first (no
/// starvation): the in-process queue's rule.
pub const PREVIEW_BURST: i32 = 4;

/// The backpressure of one lane of a model's queue: at most `capacity` jobs waiting, at most
/// `per_caller` of them one caller's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimits {
    pub capacity: usize,
    pub per_caller: usize,
}

/// What became of a job offered to the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// The lane already has `capacity` jobs waiting: nothing was queued.
    LaneFull,
    /// The caller already has `per_caller` jobs waiting in the lane: nothing was queued.
    CallerShare,
}

const JOB_COLS: &str = "id, model, lane, caller, payload, state, attempts, cancel_requested, result, lease_owner";

fn job_row(r: &PgRow) -> Result<QueuedJob> {
    Ok(QueuedJob {
        id: r.try_get("id")?,
        model: r.try_get("model")?,
        lane: state_col(r, "lane")?,
        caller: r.try_get("caller")?,
        payload: json_col(r.try_get("payload")?),
        state: state_col(r, "state")?,
        attempts: r.try_get("attempts")?,
        cancel_requested: r.try_get("cancel_requested")?,
        result: r.try_get::<Option<String>, _>("result")?.map(json_col),
        lease_owner: r.try_get("lease_owner")?,
    })
}

/// One thing a running job reported, or one of its outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct JobEventRow {
    /// Increasing across the whole table: read a job's events after the last one seen.
    pub seq: i64,
    pub kind: String,
    pub body: serde_json::Value,
    pub data: Option<Vec<u8>>,
}

/// The kind of the rows that hold a finished job's outputs.
pub const OUTPUT_EVENT: &str = "output";

/// Tells an API node which jobs reported something (`LISTEN` on the events channel).
pub struct JobEvents {
    listener: PgListener,
}

impl JobEvents {
    /// The id of the next job that reported something or ended. After a lost connection the
    /// listener reconnects by itself, and notifications sent meanwhile are lost: readers also
    /// look now and then without one.
    pub async fn recv(&mut self) -> Result<String> {
        Ok(self.listener.recv().await?.payload().to_string())
    }
}

/// Wakes an idle worker when a job is enqueued (PostgreSQL `LISTEN`), on a connection of its own.
pub struct JobWaker {
    listener: PgListener,
}

impl JobWaker {
    /// The model of the next job enqueued, or None when `timeout` passes first (then look for
    /// expired leases anyway). A notification may name a job another worker took already: claim,
    /// and wait again when the claim finds nothing.
    pub async fn wait(&mut self, timeout: Duration) -> Result<Option<String>> {
        match tokio::time::timeout(timeout, self.listener.recv()).await {
            Ok(n) => Ok(Some(n?.payload().to_string())),
            Err(_) => Ok(None),
        }
    }
}

impl PgStore {
    /// Queues a job and, when the transaction commits, wakes the workers listening (no limits).
    pub async fn enqueue_job(&self, job: &NewJob) -> Result<()> {
        self.offer_job(job, None).await.map(|_| ())
    }

    /// Queues a job unless its lane is full or its caller has its share of the lane waiting
    /// (`limits`; None: no limit), atomically across every node; wakes the workers listening
    /// when it commits.
    pub async fn offer_job(&self, job: &NewJob, limits: Option<QueueLimits>) -> Result<Offer> {
        let mut tx = self.pool.begin().await?;
        if let Some(l) = limits {
            // One enqueuer at a time per model and lane (advisory locks are database-wide: the
            // channel's name carries the schema).
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(format!("{}:{}:{}", self.jobs_channel, job.model, job.lane.as_str()))
                .execute(&mut *tx)
                .await?;
            let (waiting, mine): (i64, i64) = sqlx::query_as(
                "SELECT count(*), count(*) FILTER (WHERE caller = $3) FROM jobs \
                 WHERE model = $1 AND lane = $2 AND state = 'queued'",
            )
            .bind(&job.model)
            .bind(job.lane.as_str())
            .bind(&job.caller)
            .fetch_one(&mut *tx)
            .await?;
            if waiting as usize >= l.capacity {
                return Ok(Offer::LaneFull);
            }
            if mine as usize >= l.per_caller {
                return Ok(Offer::CallerShare);
            }
        }
        sqlx::query("INSERT INTO jobs (id, model, lane, caller, payload, state, enqueued_at) VALUES ($1, $2, $3, $4, $5, 'queued', $6)")
            .bind(&job.id)
            .bind(&job.model)
            .bind(job.lane.as_str())
            .bind(&job.caller)
            .bind(job.payload.to_string())
            .bind(now())
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT pg_notify($1, $2)").bind(&self.jobs_channel).bind(&job.model).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Offer::Queued)
    }

    /// Takes the next job for one of `models` (see the module's order) for `lease.owner` until
    /// `lease.until`; None when there is none to take.
    pub async fn claim_job(&self, models: &[String], lease: &Lease) -> Result<Option<QueuedJob>> {
        let t = now();
        let mut c = self.pool.acquire().await?;
        let mut tx = c.begin().await?;
        // A cancelled job whose worker died is settled, not taken again.
        sqlx::query(
            "UPDATE jobs SET state = 'cancelled', ended_at = $2 \
             WHERE model = ANY($1) AND cancel_requested AND state = 'running' AND lease_until < $2",
        )
        .bind(models)
        .bind(t)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "WITH next AS ( \
               SELECT j.id FROM jobs j LEFT JOIN job_turns t ON t.model = j.model AND t.caller = j.caller \
                 LEFT JOIN job_lanes l ON l.model = j.model \
               WHERE j.model = ANY($1) AND NOT j.cancel_requested \
                 AND (j.state = 'queued' OR (j.state = 'running' AND j.lease_until < $2)) \
               ORDER BY CASE WHEN COALESCE(l.previews_in_row, 0) >= {PREVIEW_BURST} THEN j.lane = 'preview' \
                 ELSE j.lane = 'final' END, COALESCE(t.turn, 0), j.seq LIMIT 1 \
               FOR UPDATE OF j SKIP LOCKED) \
             UPDATE jobs SET state = 'running', lease_owner = $3, lease_until = $4, attempts = attempts + 1 \
             FROM next WHERE jobs.id = next.id RETURNING {}",
            JOB_COLS.split(", ").map(|c| format!("jobs.{c}")).collect::<Vec<_>>().join(", ")
        )))
        .bind(models)
        .bind(t)
        .bind(&lease.owner)
        .bind(lease.until)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(job) = row.as_ref().map(job_row).transpose()? else {
            tx.commit().await?; // keeps the settled cancellations
            return Ok(None);
        };
        sqlx::query(
            "INSERT INTO job_turns (model, caller, turn) VALUES ($1, $2, nextval('job_turn_seq')) \
             ON CONFLICT (model, caller) DO UPDATE SET turn = EXCLUDED.turn",
        )
        .bind(&job.model)
        .bind(&job.caller)
        .execute(&mut *tx)
        .await?;
        // Previews in a row: one more, or none after a final.
        sqlx::query(
            "INSERT INTO job_lanes (model, previews_in_row) VALUES ($1, $2) \
             ON CONFLICT (model) DO UPDATE SET previews_in_row = CASE WHEN $2 = 0 THEN 0 ELSE job_lanes.previews_in_row + 1 END",
        )
        .bind(&job.model)
        .bind(i32::from(job.lane == JobLane::Preview))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(job))
    }

    /// Extends the lease `lease.owner` holds on job `id` (a worker's heartbeat).
    pub async fn heartbeat_job(&self, id: &str, lease: &Lease) -> Result<Heartbeat> {
        let cancel: Option<bool> = sqlx::query_scalar(
            "UPDATE jobs SET lease_until = $3 WHERE id = $1 AND lease_owner = $2 AND state = 'running' RETURNING cancel_requested",
        )
        .bind(id)
        .bind(&lease.owner)
        .bind(lease.until)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match cancel {
            None => Heartbeat::Lost,
            Some(true) => Heartbeat::CancelRequested,
            Some(false) => Heartbeat::Held,
        })
    }

    /// Settles a job `owner` holds; false (nothing written) when it no longer holds it.
    pub async fn finish_job(&self, id: &str, owner: &str, state: JobState, result: &serde_json::Value) -> Result<bool> {
        self.finish_job_with(id, owner, state, result, &[]).await
    }

    /// Settles a job `owner` holds with its outputs (each a description and its bytes, stored
    /// as [`OUTPUT_EVENT`] rows) in one transaction, and notifies the events channel; false
    /// (nothing written) when it no longer holds the job.
    pub async fn finish_job_with(
        &self,
        id: &str,
        owner: &str,
        state: JobState,
        result: &serde_json::Value,
        outputs: &[(serde_json::Value, Vec<u8>)],
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE jobs SET state = $3, result = $4, lease_until = NULL, ended_at = $5 \
             WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
        )
        .bind(id)
        .bind(owner)
        .bind(state.as_str())
        .bind(result.to_string())
        .bind(now())
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Ok(false); // dropping the transaction rolls it back
        }
        for (body, data) in outputs {
            sqlx::query("INSERT INTO job_events (job_id, kind, body, data, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(id)
                .bind(OUTPUT_EVENT)
                .bind(body.to_string())
                .bind(data.as_slice())
                .bind(now())
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("SELECT pg_notify($1, $2)").bind(&self.events_channel).bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records something job `id` reported (progress, a partial image's bytes in `data`) and
    /// notifies the events channel — only while `owner` holds the job (false otherwise).
    pub async fn add_job_event(&self, id: &str, owner: &str, kind: &str, body: &serde_json::Value, data: Option<&[u8]>) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "INSERT INTO job_events (job_id, kind, body, data, created_at) \
             SELECT $1, $3, $4, $5, $6 WHERE EXISTS \
               (SELECT 1 FROM jobs WHERE id = $1 AND lease_owner = $2 AND state = 'running')",
        )
        .bind(id)
        .bind(owner)
        .bind(kind)
        .bind(body.to_string())
        .bind(data)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("SELECT pg_notify($1, $2)").bind(&self.events_channel).bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Job `id`'s events after `after` (a `seq`; 0 for all), oldest first.
    pub async fn job_events(&self, id: &str, after: i64) -> Result<Vec<JobEventRow>> {
        let rows = sqlx::query("SELECT seq, kind, body, data FROM job_events WHERE job_id = $1 AND seq > $2 ORDER BY seq")
            .bind(id)
            .bind(after)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(JobEventRow {
                    seq: r.try_get("seq")?,
                    kind: r.try_get("kind")?,
                    body: json_col(r.try_get("body")?),
                    data: r.try_get("data")?,
                })
            })
            .collect()
    }

    /// Deletes job `id`'s events (its reader has them), keeping the job's row.
    pub async fn delete_job_events(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM job_events WHERE job_id = $1").bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// A connection listening for jobs that reported something or ended.
    pub async fn job_events_listener(&self) -> Result<JobEvents> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(&self.events_channel).await?;
        Ok(JobEvents { listener })
    }

    /// Cancels a job: a queued one at once, a running one at its worker's next heartbeat.
    /// Returns the state it was in (None: no such job).
    pub async fn cancel_job(&self, id: &str) -> Result<Option<JobState>> {
        let row = sqlx::query(
            "UPDATE jobs SET cancel_requested = TRUE, \
               state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END, \
               ended_at = CASE WHEN state = 'queued' THEN $2 ELSE ended_at END \
             WHERE id = $1 RETURNING (SELECT state FROM jobs old WHERE old.id = $1) AS before",
        )
        .bind(id)
        .bind(now())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(|r| state_col(r, "before")).transpose()
    }

    pub async fn job(&self, id: &str) -> Result<Option<QueuedJob>> {
        let row =
            sqlx::query(AssertSqlSafe(format!("SELECT {JOB_COLS} FROM jobs WHERE id = $1"))).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(job_row).transpose()
    }

    /// Every job in the queue's table, oldest first (for operators and tests).
    pub async fn jobs(&self) -> Result<Vec<QueuedJob>> {
        let rows = sqlx::query(AssertSqlSafe(format!("SELECT {JOB_COLS} FROM jobs ORDER BY seq"))).fetch_all(&self.pool).await?;
        rows.iter().map(job_row).collect()
    }

    /// Says that `owner` (one worker's loop for `model`, on node `node`) serves `model` until
    /// `until`; renewed like a lease while the worker runs. `kind` is what the loaded model is
    /// to the API nodes that plan its jobs (the edit planner's painter kind), which load nothing.
    pub async fn announce_worker(&self, owner: &str, node: &str, model: &str, kind: &str, until: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO job_workers (owner, node, model, alive_until, kind) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (owner) DO UPDATE SET node = $2, model = $3, alive_until = $4, kind = $5",
        )
        .bind(owner)
        .bind(node)
        .bind(model)
        .bind(until)
        .bind(kind)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// What the live workers of `model` announced it is (the latest announcement's `kind`).
    pub async fn announced_kind(&self, model: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT kind FROM job_workers WHERE model = $1 AND alive_until >= $2 AND kind IS NOT NULL ORDER BY alive_until DESC LIMIT 1",
        )
        .bind(model)
        .bind(now())
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A worker's loop going away: its row goes now rather than when it expires.
    pub async fn retire_worker(&self, owner: &str) -> Result<()> {
        sqlx::query("DELETE FROM job_workers WHERE owner = $1").bind(owner).execute(&self.pool).await?;
        Ok(())
    }

    /// The nodes whose workers serve `model` now (their announcement has not expired).
    pub async fn live_workers(&self, model: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT DISTINCT node FROM job_workers WHERE model = $1 AND alive_until >= $2 ORDER BY node")
            .bind(model)
            .bind(now())
            .fetch_all(&self.pool)
            .await?)
    }

    /// Fails job `id` with `result` if it is still queued (no worker took it); true when it did.
    pub async fn expire_unclaimed_job(&self, id: &str, result: &serde_json::Value) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query("UPDATE jobs SET state = 'failed', result = $2, ended_at = $3 WHERE id = $1 AND state = 'queued'")
            .bind(id)
            .bind(result.to_string())
            .bind(now())
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("SELECT pg_notify($1, $2)").bind(&self.events_channel).bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Housekeeping of the queue: fails the jobs queued before `queued_before` that no worker
    /// took (with `result`), then deletes the jobs settled before `ended_before` with their
    /// events, and expired workers' rows. Returns (jobs failed, jobs deleted).
    pub async fn sweep_jobs(&self, queued_before: i64, ended_before: i64, result: &serde_json::Value) -> Result<(u64, u64)> {
        let t = now();
        let mut tx = self.pool.begin().await?;
        let failed =
            sqlx::query("UPDATE jobs SET state = 'failed', result = $2, ended_at = $3 WHERE state = 'queued' AND enqueued_at < $1")
                .bind(queued_before)
                .bind(result.to_string())
                .bind(t)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        let settled = "SELECT id FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled') AND ended_at < $1";
        sqlx::query(AssertSqlSafe(format!("DELETE FROM job_events WHERE job_id IN ({settled})")))
            .bind(ended_before)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query(AssertSqlSafe(format!("DELETE FROM jobs WHERE id IN ({settled})")))
            .bind(ended_before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM job_workers WHERE alive_until < $1").bind(t - 3600).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok((failed, deleted))
    }

    /// A connection listening for enqueued jobs.
    pub async fn job_waker(&self) -> Result<JobWaker> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(&self.jobs_channel).await?;
        Ok(JobWaker { listener })
    }
}
