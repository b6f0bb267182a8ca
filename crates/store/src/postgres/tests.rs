//! The PostgreSQL job queue (PostgreSQL only: the embedded mode queues in-process). These need
//! the real server, as the conformance suite's PostgreSQL tests do (`--ignored`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::conformance::pg_test_config;

async fn open_two() -> (Arc<PgStore>, Arc<PgStore>) {
    let cfg = pg_test_config();
    let a = PgStore::open(&cfg).await.unwrap_or_else(|e| panic!("opening PostgreSQL: {e}"));
    let b = PgStore::open(&cfg).await.unwrap_or_else(|e| panic!("opening PostgreSQL again: {e}"));
    (Arc::new(a), Arc::new(b))
}

fn job(id: &str, model: &str, lane: JobLane, caller: &str) -> NewJob {
    NewJob { id: id.into(), model: model.into(), lane, caller: caller.into(), payload: serde_json::json!({"prompt": id}) }
}

fn lease(owner: &str, secs: i64) -> Lease {
    Lease { owner: owner.into(), until: now() + secs }
}

fn models(m: &[&str]) -> Vec<String> {
    m.iter().map(|s| s.to_string()).collect()
}

/// Eight workers on two pools (two nodes), some with one model and some with two, race for 60
/// jobs: each job is taken exactly once, only by a worker that has its model, and all are done.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL and S3: scripts/services.sh"]
async fn jobs_are_taken_once_by_workers_with_the_model() {
    let (a, b) = open_two().await;
    for i in 0..60 {
        let model = if i % 3 == 0 { "m2" } else { "m1" };
        a.enqueue_job(&job(&format!("j{i}"), model, JobLane::Preview, &format!("c{}", i % 4))).await.unwrap();
    }
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let s = if w % 2 == 0 { a.clone() } else { b.clone() };
            let have = if w < 4 { models(&["m1"]) } else { models(&["m1", "m2"]) };
            tokio::spawn(async move {
                let l = lease(&format!("w{w}"), 300);
                let mut mine = Vec::new();
                while let Some(j) = s.claim_job(&have, &l).await.unwrap() {
                    assert!(have.contains(&j.model), "worker {w} took a {} job", j.model);
                    assert!(s.finish_job(&j.id, &l.owner, JobState::Succeeded, &serde_json::json!(w)).await.unwrap());
                    mine.push(j.id);
                }
                mine
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for w in workers {
        for id in w.await.unwrap() {
            assert!(seen.insert(id.clone()), "{id} was taken twice");
        }
    }
    assert_eq!(seen.len(), 60, "every job was taken");
    assert_eq!(a.job("j0").await.unwrap().unwrap().state, JobState::Succeeded);
}

/// Previews before finals, but a waiting final after 4 previews in a row (counted across nodes);
/// within a lane, callers take turns (the one served longest ago first), whoever enqueued more.
#[tokio::test]
#[ignore = "needs PostgreSQL and S3: scripts/services.sh"]
async fn previews_first_and_callers_take_turns() {
    let (s, other) = open_two().await;
    s.enqueue_job(&job("final", "m", JobLane::Final, "c")).await.unwrap();
    for i in 0..5 {
        s.enqueue_job(&job(&format!("a{i}"), "m", JobLane::Preview, "a")).await.unwrap();
    }
    s.enqueue_job(&job("b0", "m", JobLane::Preview, "b")).await.unwrap();
    s.enqueue_job(&job("b1", "m", JobLane::Preview, "b")).await.unwrap();
    let mut order = Vec::new();
    for i in 0..8 {
        // Alternating nodes: the turns are shared, not per process.
        let node = if i % 2 == 0 { &s } else { &other };
        order.push(node.claim_job(&models(&["m"]), &lease("w", 60)).await.unwrap().unwrap().id);
    }
    assert_eq!(order, ["a0", "b0", "a1", "b1", "final", "a2", "a3", "a4"]);
    assert!(s.claim_job(&models(&["m"]), &lease("w", 60)).await.unwrap().is_none());
    // The count goes on across claims: one more preview, then a final waits its turn again.
    for i in 0..3 {
        s.enqueue_job(&job(&format!("f{i}"), "m", JobLane::Final, "c")).await.unwrap();
        s.enqueue_job(&job(&format!("p{i}"), "m", JobLane::Preview, "c")).await.unwrap();
    }
    let mut order = Vec::new();
    while let Some(j) = other.claim_job(&models(&["m"]), &lease("w", 60)).await.unwrap() {
        order.push(j.id);
    }
    // 3 previews in a row so far (a2..a4): p0 makes 4, then a final, then the rest.
    assert_eq!(order, ["p0", "f0", "p1", "p2", "f1", "f2"]);
}

/// A worker that died loses its job when its lease runs out; the job is taken again (attempt 2)
/// and the dead worker can neither heartbeat nor finish it. Cancelling reaches a queued job at
/// once and a running one through its worker's heartbeat.
#[tokio::test]
#[ignore = "needs PostgreSQL and S3: scripts/services.sh"]
async fn leases_heartbeats_and_cancellation() {
    let (s, _) = open_two().await;
    let m = models(&["m"]);
    s.enqueue_job(&job("j", "m", JobLane::Preview, "c")).await.unwrap();
    let j = s.claim_job(&m, &lease("dead", 60)).await.unwrap().unwrap();
    assert_eq!((j.state, j.attempts), (JobState::Running, 1));
    assert_eq!(s.heartbeat_job("j", &lease("dead", 60)).await.unwrap(), Heartbeat::Held);
    assert!(s.claim_job(&m, &lease("w2", 60)).await.unwrap().is_none(), "a held lease holds");
    // The worker dies: its lease runs out.
    assert_eq!(s.heartbeat_job("j", &lease("dead", -1)).await.unwrap(), Heartbeat::Held);
    let again = s.claim_job(&m, &lease("w2", 60)).await.unwrap().unwrap();
    assert_eq!((again.id.as_str(), again.attempts), ("j", 2));
    assert_eq!(s.heartbeat_job("j", &lease("dead", 60)).await.unwrap(), Heartbeat::Lost);
    assert!(!s.finish_job("j", "dead", JobState::Succeeded, &serde_json::json!(1)).await.unwrap());
    // The client goes away: the running job's worker learns it at its next heartbeat.
    assert_eq!(s.cancel_job("j").await.unwrap(), Some(JobState::Running));
    assert_eq!(s.heartbeat_job("j", &lease("w2", 60)).await.unwrap(), Heartbeat::CancelRequested);
    assert!(s.finish_job("j", "w2", JobState::Cancelled, &serde_json::json!(null)).await.unwrap());
    assert_eq!(s.job("j").await.unwrap().unwrap().state, JobState::Cancelled);
    // A queued job is cancelled at once and never taken; a running one whose worker died after
    // the cancel is settled, not taken again.
    s.enqueue_job(&job("q", "m", JobLane::Preview, "c")).await.unwrap();
    assert_eq!(s.cancel_job("q").await.unwrap(), Some(JobState::Queued));
    assert_eq!(s.job("q").await.unwrap().unwrap().state, JobState::Cancelled);
    s.enqueue_job(&job("r", "m", JobLane::Preview, "c")).await.unwrap();
    assert_eq!(s.claim_job(&m, &lease("w3", -1)).await.unwrap().unwrap().id, "r");
    assert_eq!(s.cancel_job("r").await.unwrap(), Some(JobState::Running));
    assert!(s.claim_job(&m, &lease("w4", 60)).await.unwrap().is_none());
    assert_eq!(s.job("r").await.unwrap().unwrap().state, JobState::Cancelled);
    assert_eq!(s.cancel_job("nope").await.unwrap(), None);
}

/// An idle worker waiting on its waker wakes when another node enqueues, and not otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and S3: scripts/services.sh"]
async fn enqueueing_wakes_an_idle_worker() {
    let (api, worker) = open_two().await;
    let mut waker = worker.job_waker().await.unwrap();
    assert_eq!(waker.wait(Duration::from_millis(300)).await.unwrap(), None, "nothing enqueued, nothing heard");
    let waiting = tokio::spawn(async move { waker.wait(Duration::from_secs(10)).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(200)).await;
    api.enqueue_job(&job("j", "m7", JobLane::Final, "c")).await.unwrap();
    assert_eq!(waiting.await.unwrap().as_deref(), Some("m7"));
    assert_eq!(worker.claim_job(&models(&["m7"]), &lease("w", 60)).await.unwrap().unwrap().id, "j");
}

/// What a running job reports reaches another node: rows only its lease holder may write, a
/// notification naming the job (never the bytes), and outputs written with the job's end, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and S3: scripts/services.sh"]
async fn job_events_reach_another_node_and_only_the_lease_holder_writes() {
    let (api, worker) = open_two().await;
    let mut events = api.job_events_listener().await.unwrap();
    api.enqueue_job(&job("e", "m", JobLane::Preview, "c")).await.unwrap();
    let m = models(&["m"]);
    worker.claim_job(&m, &lease("dead", -1)).await.unwrap().unwrap();
    let big = vec![7u8; 100_000]; // far past NOTIFY's 8000-byte payload limit
    let body = serde_json::json!({"step": 1});
    assert!(worker.add_job_event("e", "dead", "partial", &body, Some(&big)).await.unwrap());
    assert_eq!(tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap(), "e");
    // The lease ran out and w2 took the job: the dead worker writes nothing more.
    worker.claim_job(&m, &lease("w2", 60)).await.unwrap().unwrap();
    assert!(!worker.add_job_event("e", "dead", "progress", &body, None).await.unwrap());
    assert!(!worker.finish_job_with("e", "dead", JobState::Succeeded, &body, &[(body.clone(), vec![1])]).await.unwrap());
    assert!(worker.add_job_event("e", "w2", "progress", &serde_json::json!({"step": 2}), None).await.unwrap());
    let seen = api.job_events("e", 0).await.unwrap();
    assert_eq!(seen.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["partial", "progress"]);
    assert_eq!(seen[0].data.as_deref(), Some(&big[..]));
    assert_eq!(api.job_events("e", seen[0].seq).await.unwrap().len(), 1, "read after a seq");
    let outputs = [(serde_json::json!({"i": 0}), vec![1u8, 2]), (serde_json::json!({"i": 1}), vec![3u8])];
    assert!(worker.finish_job_with("e", "w2", JobState::Succeeded, &serde_json::json!({"outputs": 2}), &outputs).await.unwrap());
    let all = api.job_events("e", 0).await.unwrap();
    let outs: Vec<_> = all.iter().filter(|e| e.kind == OUTPUT_EVENT).map(|e| (e.body.clone(), e.data.clone().unwrap())).collect();
    assert_eq!(outs, outputs.to_vec(), "the outputs, once, in order");
    assert_eq!(api.job("e").await.unwrap().unwrap().state, JobState::Succeeded);
    assert!(!worker.finish_job_with("e", "w2", JobState::Succeeded, &body, &outputs).await.unwrap(), "settled once");
    api.delete_job_events("e").await.unwrap();
    assert!(api.job_events("e", 0).await.unwrap().is_empty());
}

/// Backpressure across nodes: eight enqueuers on two pools offer 40 jobs at once to a lane of 5
/// with a share of 2 per caller; exactly 5 are queued, no caller has more than 2, and every
/// refusal says why. A running job frees its place; lanes and models are counted apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL and S3: scripts/services.sh"]
async fn offered_jobs_respect_lane_capacity_and_caller_shares_across_nodes() {
    let (a, b) = open_two().await;
    let limits = Some(QueueLimits { capacity: 5, per_caller: 2 });
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let s = if t % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 0..5 {
                    let j = job(&format!("t{t}-{i}"), "m", JobLane::Preview, &format!("c{}", t % 4));
                    out.push(s.offer_job(&j, limits).await.unwrap());
                }
                out
            })
        })
        .collect();
    let mut offers = Vec::new();
    for t in tasks {
        offers.extend(t.await.unwrap());
    }
    assert_eq!(offers.iter().filter(|o| **o == Offer::Queued).count(), 5, "{offers:?}");
    assert!(offers.iter().all(|o| matches!(o, Offer::Queued | Offer::LaneFull | Offer::CallerShare)));
    let jobs = a.jobs().await.unwrap();
    assert_eq!(jobs.len(), 5, "refused offers queue nothing");
    for c in 0..4 {
        assert!(jobs.iter().filter(|j| j.caller == format!("c{c}")).count() <= 2, "c{c}: {jobs:?}");
    }
    // A caller at its share is told so while the lane has room.
    let (s, _) = open_two().await;
    let l = Some(QueueLimits { capacity: 3, per_caller: 1 });
    assert_eq!(s.offer_job(&job("x0", "m", JobLane::Preview, "x"), l).await.unwrap(), Offer::Queued);
    assert_eq!(s.offer_job(&job("x1", "m", JobLane::Preview, "x"), l).await.unwrap(), Offer::CallerShare);
    assert_eq!(s.offer_job(&job("x2", "m", JobLane::Final, "x"), l).await.unwrap(), Offer::Queued, "shares are per lane");
    assert_eq!(s.offer_job(&job("x3", "m2", JobLane::Preview, "x"), l).await.unwrap(), Offer::Queued, "and per model");
    assert_eq!(s.offer_job(&job("y0", "m", JobLane::Preview, "y"), l).await.unwrap(), Offer::Queued);
    assert_eq!(s.offer_job(&job("z0", "m", JobLane::Preview, "z"), l).await.unwrap(), Offer::Queued);
    assert_eq!(s.offer_job(&job("v0", "m", JobLane::Preview, "v"), l).await.unwrap(), Offer::LaneFull);
    // A job taken by a worker no longer waits: x may queue again.
    assert_eq!(s.claim_job(&models(&["m"]), &lease("w", 60)).await.unwrap().unwrap().id, "x0");
    assert_eq!(s.offer_job(&job("x4", "m", JobLane::Preview, "x"), l).await.unwrap(), Offer::Queued);
    assert!(s.job("x1").await.unwrap().is_none() && s.job("v0").await.unwrap().is_none());
}

/// Workers announce their models; an announcement that is not renewed expires. A job no worker
/// took is failed (once, and never claimed after); housekeeping fails old queued jobs and
/// deletes settled jobs with their events.
#[tokio::test]
#[ignore = "needs PostgreSQL and S3: scripts/services.sh"]
async fn worker_announcements_unclaimed_jobs_and_sweeping() {
    let (s, other) = open_two().await;
    assert!(s.live_workers("m").await.unwrap().is_empty());
    s.announce_worker("w1/a", "w1", "m", "generative", now() + 60).await.unwrap();
    s.announce_worker("w2/a", "w2", "m", "instruct", now() - 1).await.unwrap(); // expired
    s.announce_worker("w2/b", "w2", "other", "instruct", now() + 60).await.unwrap();
    assert_eq!(other.live_workers("m").await.unwrap(), ["w1"]);
    assert_eq!(other.announced_kind("m").await.unwrap().as_deref(), Some("generative"), "live workers only");
    assert_eq!(other.announced_kind("none").await.unwrap(), None);
    s.announce_worker("w2/a", "w2", "m", "generative", now() + 60).await.unwrap(); // renewed
    assert_eq!(other.live_workers("m").await.unwrap(), ["w1", "w2"]);
    s.retire_worker("w1/a").await.unwrap();
    assert_eq!(other.live_workers("m").await.unwrap(), ["w2"]);

    let why = serde_json::json!({"error": {"kind": "unavailable", "message": "nobody came"}});
    s.enqueue_job(&job("u", "m", JobLane::Preview, "c")).await.unwrap();
    assert!(other.expire_unclaimed_job("u", &why).await.unwrap());
    assert!(!other.expire_unclaimed_job("u", &why).await.unwrap(), "once");
    let u = s.job("u").await.unwrap().unwrap();
    assert_eq!((u.state, u.result), (JobState::Failed, Some(why.clone())));
    assert!(s.claim_job(&models(&["m"]), &lease("w", 60)).await.unwrap().is_none(), "a failed job is not taken");
    // A job a worker took is not expired.
    s.enqueue_job(&job("t", "m", JobLane::Preview, "c")).await.unwrap();
    s.claim_job(&models(&["m"]), &lease("w", 60)).await.unwrap().unwrap();
    assert!(!s.expire_unclaimed_job("t", &why).await.unwrap());
    assert!(s.add_job_event("t", "w", "progress", &serde_json::json!({}), None).await.unwrap());
    assert!(s.finish_job("t", "w", JobState::Succeeded, &serde_json::json!({})).await.unwrap());
    s.enqueue_job(&job("old", "m", JobLane::Preview, "c")).await.unwrap();
    // Housekeeping: the queued job is failed; the settled ones ended before the cut are deleted
    // with their events.
    assert_eq!(s.sweep_jobs(now() + 1, now() - 60, &why).await.unwrap(), (1, 0), "ended too recently to delete");
    assert_eq!(s.job("old").await.unwrap().unwrap().state, JobState::Failed);
    assert_eq!(s.sweep_jobs(now() - 60, now() + 1, &why).await.unwrap(), (0, 3));
    assert!(s.jobs().await.unwrap().is_empty());
    assert!(s.job_events("t", 0).await.unwrap().is_empty());
}

/// Every node gets the same shared secret: the first one stored.
#[tokio::test]
#[ignore = "needs PostgreSQL and S3: scripts/services.sh"]
async fn nodes_share_one_secret() {
    let (a, b) = open_two().await;
    assert_eq!(a.shared_secret("k", b"first").await.unwrap(), b"first");
    assert_eq!(b.shared_secret("k", b"second").await.unwrap(), b"first");
    assert_eq!(b.shared_secret("other", b"x").await.unwrap(), b"x");
}

/// A caller's rate limit holds across nodes: three requests a minute through two pools, racing,
/// count three; the fourth waits for the oldest to leave the window; other callers are apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL and S3: scripts/services.sh"]
async fn rate_limits_are_counted_across_nodes() {
    let (a, b) = open_two().await;
    let t = 1_000_000;
    let tries: Vec<_> = (0..8)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { s.count_request("c", 3, 60_000, t + i).await.unwrap() })
        })
        .collect();
    let mut counted = 0;
    for h in tries {
        if h.await.unwrap() == RateCount::Counted {
            counted += 1;
        }
    }
    assert_eq!(counted, 3, "three of eight racing requests are admitted");
    match b.count_request("c", 3, 60_000, t + 10_000).await.unwrap() {
        RateCount::Full { wait_ms } => assert!((50_000..=50_007).contains(&wait_ms), "waits for the oldest: {wait_ms}"),
        other => panic!("the window is full: {other:?}"),
    }
    assert_eq!(a.count_request("other", 3, 60_000, t).await.unwrap(), RateCount::Counted);
    // A minute after the first three, the window has room again.
    assert_eq!(a.count_request("c", 3, 60_000, t + 60_008).await.unwrap(), RateCount::Counted);
}
