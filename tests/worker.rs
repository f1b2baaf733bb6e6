//! The worker's consumer loop against real Redis: jobs run once per
//! delivery and are acknowledged, failures are retried and then
//! dead-lettered, orphans of a crashed worker are claimed, and shutdown is
//! graceful.

mod common;

use common::*;
use rapport_store::jobs::{self, DEAD_LETTERS, GROUP, STREAM};
use rapport_worker::{Registry, Worker, WorkerConfig};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::watch;

fn config(name: &str) -> WorkerConfig {
    WorkerConfig {
        consumer: name.into(),
        block: Duration::from_millis(100),
        batch: 16,
        claim_idle: Duration::from_millis(300),
        max_deliveries: 3,
        concurrency: 4,
        group: 4,
        group_concurrency: 4,
        linger: Duration::ZERO,
    }
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

async fn xlen(kv: &rapport_store::Kv, key: &str) -> usize {
    redis::cmd("XLEN")
        .arg(kv.key(key))
        .query_async(&mut kv.conn())
        .await
        .unwrap()
}

/// Jobs read and not yet acknowledged; none before the worker has created
/// its consumer group.
async fn pending(kv: &rapport_store::Kv) -> usize {
    let v: redis::RedisResult<redis::Value> = redis::cmd("XPENDING")
        .arg(kv.key(STREAM))
        .arg(GROUP)
        .query_async(&mut kv.conn())
        .await;
    let v = match v {
        Err(e) if e.code() == Some("NOGROUP") => return 0,
        v => v.unwrap(),
    };
    match v {
        redis::Value::Array(parts) => match parts.first() {
            Some(redis::Value::Int(n)) => *n as usize,
            _ => 0,
        },
        _ => 0,
    }
}

type Groups = Arc<std::sync::Mutex<Vec<Vec<u64>>>>;

/// A registry taking `sum` jobs together; it records each group's `n`s and
/// refuses the job whose `n` is `refused`.
fn recording_sums(refused: Option<u64>) -> (Registry, Groups) {
    let groups = Groups::default();
    let seen = groups.clone();
    let registry = Registry::new().on_many("sum", move |payloads| {
        let seen = seen.clone();
        async move {
            let ns: Vec<u64> = payloads.iter().map(|p| p["n"].as_u64().unwrap()).collect();
            seen.lock().unwrap().push(ns.clone());
            ns.iter()
                .map(|&n| match refused {
                    Some(r) if r == n => Err(anyhow::anyhow!("{n} refused")),
                    _ => Ok(()),
                })
                .collect()
        }
    });
    (registry, groups)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_handled_retried_dead_lettered_and_shutdown_is_graceful() {
    let redis = TestRedis::new();
    let kv = redis.kv().await;
    let seen = Arc::new(AtomicUsize::new(0));
    let flaky_calls = Arc::new(AtomicUsize::new(0));
    let registry = {
        let seen = seen.clone();
        let flaky_calls = flaky_calls.clone();
        Registry::new()
            .on("count", move |p| {
                let seen = seen.clone();
                async move {
                    seen.fetch_add(p["n"].as_u64().unwrap() as usize, Ordering::SeqCst);
                    Ok(())
                }
            })
            .on("always-fails", move |_| {
                let calls = flaky_calls.clone();
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    anyhow::bail!("platform said no")
                }
            })
    };
    let (tx, rx) = watch::channel(false);
    let handle = tokio::spawn(Worker::new(kv.clone(), registry, config("w1")).run(rx));

    for n in [1, 10, 100] {
        jobs::enqueue(&kv, "count", &json!({ "n": n }))
            .await
            .unwrap();
    }
    jobs::enqueue(&kv, "always-fails", &json!({}))
        .await
        .unwrap();
    jobs::enqueue(&kv, "no-such-kind", &json!({}))
        .await
        .unwrap();

    eventually("three count jobs", async || {
        seen.load(Ordering::SeqCst) == 111
    })
    .await;
    // The dead letter is written just before the job is acknowledged:
    // wait for both.
    eventually("two dead letters, all acknowledged", async || {
        xlen(&kv, DEAD_LETTERS).await == 2 && pending(&kv).await == 0
    })
    .await;
    assert_eq!(
        xlen(&kv, jobs::STREAM).await,
        0,
        "jobs done with leave the stream"
    );
    assert_eq!(
        flaky_calls.load(Ordering::SeqCst),
        3,
        "retried up to max_deliveries"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 111, "each job ran once");

    tx.send(true).unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(5), handle).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "worker stops on shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_a_kind_are_handed_over_together_and_settled_one_by_one() {
    let redis = TestRedis::new();
    let kv = redis.kv().await;
    // Queued before the worker starts: read in one batch of 16, an
    // unreadable job among them.
    for n in 0..10 {
        if n == 6 {
            let _: () = redis::cmd("XADD")
                .arg(kv.key(STREAM))
                .arg("*")
                .arg("kind")
                .arg("sum")
                .arg("payload")
                .arg("not json")
                .query_async(&mut kv.conn())
                .await
                .unwrap();
        }
        jobs::enqueue(&kv, "sum", &json!({ "n": n })).await.unwrap();
    }
    let (registry, groups) = recording_sums(Some(7));
    let (tx, rx) = watch::channel(false);
    let handle = tokio::spawn(Worker::new(kv.clone(), registry, config("w3")).run(rx));
    // The failing job is retried alone until max_deliveries; the
    // unreadable one is dead at once; the others are acknowledged.
    eventually("two dead letters, all acknowledged", async || {
        xlen(&kv, DEAD_LETTERS).await == 2 && pending(&kv).await == 0
    })
    .await;
    assert_eq!(
        xlen(&kv, jobs::STREAM).await,
        0,
        "jobs done with leave the stream"
    );
    tx.send(true).unwrap();
    handle.await.unwrap().unwrap();
    let groups = groups.lock().unwrap().clone();
    // Chunks of `group` (4) jobs in stream order, the unreadable one left
    // out of its chunk; the failed job alone on each retry.
    let mut first = groups[..3].to_vec();
    first.sort();
    assert_eq!(
        first,
        [vec![0, 1, 2, 3], vec![4, 5, 6], vec![7, 8, 9]],
        "{groups:?}"
    );
    assert_eq!(groups[3..], [vec![7], vec![7]], "only the failed job again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickle_of_jobs_waits_the_linger_time_to_be_handled_together() {
    let redis = TestRedis::new();
    let kv = redis.kv().await;
    let (registry, groups) = recording_sums(None);
    let (tx, rx) = watch::channel(false);
    // A linger far longer than the test needs between its two jobs (and
    // a claim time long enough not to cut it short).
    let cfg = WorkerConfig {
        linger: Duration::from_secs(3),
        claim_idle: Duration::from_secs(20),
        ..config("w-linger")
    };
    let handle = tokio::spawn(Worker::new(kv.clone(), registry, cfg).run(rx));
    jobs::enqueue(&kv, "sum", &json!({ "n": 1 })).await.unwrap();
    // The first job is read (pending on the worker) and not yet handled:
    // the second, enqueued now, joins it.
    eventually("the first job read", async || pending(&kv).await == 1).await;
    assert!(groups.lock().unwrap().is_empty());
    jobs::enqueue(&kv, "sum", &json!({ "n": 2 })).await.unwrap();
    eventually("both acknowledged", async || {
        !groups.lock().unwrap().is_empty() && pending(&kv).await == 0
    })
    .await;
    tx.send(true).unwrap();
    handle.await.unwrap().unwrap();
    assert_eq!(*groups.lock().unwrap(), [vec![1, 2]], "handled together");
}

/// Handles each of `n` `slow` jobs in 100 ms (in groups of 4 when
/// `together`) and returns the most handler calls running at the same time,
/// once all `n` queued before the worker started are done.
async fn most_at_once(cfg: WorkerConfig, together: bool, n: usize) -> usize {
    let redis = TestRedis::new();
    let kv = redis.kv().await;
    for i in 0..n {
        jobs::enqueue(&kv, "slow", &json!({ "i": i }))
            .await
            .unwrap();
    }
    let (now, most, done) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let slow = {
        let (now, most, done) = (now.clone(), most.clone(), done.clone());
        move |jobs: usize| {
            let (now, most, done) = (now.clone(), most.clone(), done.clone());
            async move {
                let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(running, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                done.fetch_add(jobs, Ordering::SeqCst);
            }
        }
    };
    let registry = if together {
        Registry::new().on_many("slow", move |payloads| {
            let slow = slow.clone();
            async move {
                slow(payloads.len()).await;
                payloads.iter().map(|_| Ok(())).collect()
            }
        })
    } else {
        Registry::new().on("slow", move |_| {
            let slow = slow.clone();
            async move {
                slow(1).await;
                Ok(())
            }
        })
    };
    let cfg = WorkerConfig {
        claim_idle: Duration::from_secs(20),
        ..cfg
    };
    let (tx, rx) = watch::channel(false);
    let handle = tokio::spawn(Worker::new(kv.clone(), registry, cfg).run(rx));
    eventually("every job handled", async || {
        done.load(Ordering::SeqCst) == n && pending(&kv).await == 0
    })
    .await;
    tx.send(true).unwrap();
    handle.await.unwrap().unwrap();
    most.load(Ordering::SeqCst)
}

/// `RAPPORT_WORKER_CONCURRENCY`: the jobs of one read run this many at a
/// time, no more (each holds a database connection in production); one
/// group at a time for groups does not hold them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reads_jobs_run_at_most_concurrency_at_a_time() {
    let at = |concurrency| WorkerConfig {
        concurrency,
        group_concurrency: 1,
        ..config("w-concurrency")
    };
    // Twelve jobs fit one read (batch 16).
    assert_eq!(most_at_once(at(1), false, 12).await, 1, "one at a time");
    assert_eq!(most_at_once(at(3), false, 12).await, 3, "three at a time");
}

/// `RAPPORT_INGEST_CONCURRENCY`: groups (ingestion's transactions) run this
/// many at a time, within the concurrency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_run_at_most_group_concurrency_at_a_time() {
    let at = |group_concurrency| WorkerConfig {
        concurrency: 4,
        group_concurrency,
        ..config("w-groups")
    };
    // Twelve jobs, one read, three groups of four.
    assert_eq!(
        most_at_once(at(1), true, 12).await,
        1,
        "one group at a time"
    );
    assert_eq!(most_at_once(at(2), true, 12).await, 2, "two at a time");
    assert_eq!(
        most_at_once(at(4), true, 12).await,
        3,
        "every group at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_workers_jobs_are_claimed_by_another() {
    let redis = TestRedis::new();
    let kv = redis.kv().await;
    // A consumer that reads a job and dies without acknowledging it.
    let mut conn = kv.conn();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(kv.key(STREAM))
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await
        .unwrap();
    jobs::enqueue(&kv, "count", &json!({ "n": 5 }))
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg("crashed")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(kv.key(STREAM))
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(pending(&kv).await, 1);

    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    let registry = Registry::new().on("count", move |p| {
        let s = s.clone();
        async move {
            s.fetch_add(p["n"].as_u64().unwrap() as usize, Ordering::SeqCst);
            Ok(())
        }
    });
    let (tx, rx) = watch::channel(false);
    let handle = tokio::spawn(Worker::new(kv.clone(), registry, config("w2")).run(rx));
    eventually("orphan claimed and run", async || {
        seen.load(Ordering::SeqCst) == 5
    })
    .await;
    eventually("orphan acknowledged", async || pending(&kv).await == 0).await;
    tx.send(true).unwrap();
    handle.await.unwrap().unwrap();
}

/// A job that runs longer than `claim_idle` (a big batch, a slow database)
/// stays claimed by the worker running it: another worker looking for a
/// crashed one's jobs does not take it and run it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_job_is_not_taken_for_an_orphan() {
    let redis = TestRedis::new();
    let kv = redis.kv().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let registry = || {
        let runs = runs.clone();
        Registry::new().on("slow", move |_| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                // Three times `claim_idle`.
                tokio::time::sleep(Duration::from_secs(3)).await;
                Ok(())
            }
        })
    };
    // Claims renewed every 333 ms, taken by another after a second idle:
    // room for a loaded machine's stalls.
    let config = |name: &str| WorkerConfig {
        claim_idle: Duration::from_secs(1),
        ..config(name)
    };
    let (tx, rx) = watch::channel(false);
    let first = tokio::spawn(Worker::new(kv.clone(), registry(), config("w1")).run(rx.clone()));
    jobs::enqueue(&kv, "slow", &json!({})).await.unwrap();
    eventually("the job started", async || runs.load(Ordering::SeqCst) == 1).await;
    let second = tokio::spawn(Worker::new(kv.clone(), registry(), config("w2")).run(rx));
    eventually("the job done", async || pending(&kv).await == 0).await;
    // The second worker had two seconds past the first's claim time.
    assert_eq!(runs.load(Ordering::SeqCst), 1, "run once");
    tx.send(true).unwrap();
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
}

/// Redis loses the stream and its consumer group under a running worker
/// (a flush, a restart without persistence): the worker's reads fail, and
/// it retries with backoff on a fresh connection, creating the group again,
/// instead of ending (before, `rapport dev` went on answering webhooks with
/// nobody consuming them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_outlives_the_loss_of_its_stream_and_group() {
    let redis = TestRedis::new();
    let kv = redis.kv().await;
    let seen = Arc::new(AtomicUsize::new(0));
    let registry = {
        let seen = seen.clone();
        Registry::new().on("count", move |p| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(p["n"].as_u64().unwrap() as usize, Ordering::SeqCst);
                Ok(())
            }
        })
    };
    let (tx, rx) = watch::channel(false);
    let handle = tokio::spawn(Worker::new(kv.clone(), registry, config("w5")).run(rx));
    jobs::enqueue(&kv, "count", &json!({ "n": 1 }))
        .await
        .unwrap();
    eventually("the first job", async || seen.load(Ordering::SeqCst) == 1).await;

    let _: () = redis::cmd("DEL")
        .arg(kv.key(STREAM))
        .query_async(&mut kv.conn())
        .await
        .unwrap();
    // The worker notices (its blocked read fails, or the next one does).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!handle.is_finished(), "the worker keeps running");
    jobs::enqueue(&kv, "count", &json!({ "n": 10 }))
        .await
        .unwrap();
    eventually("a job enqueued after the loss", async || {
        seen.load(Ordering::SeqCst) == 11
    })
    .await;
    tx.send(true).unwrap();
    handle.await.unwrap().unwrap();
}
