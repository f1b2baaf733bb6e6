//! End-to-end ingestion benchmark (not a test): signed GENERIC webhooks
//! through the real HTTP endpoint, Redis and a separate `rapport worker`
//! process into PostgreSQL. Prints sustained messages/second end to end,
//! webhook response-time percentiles, the worker's peak memory, and the CPU
//! PostgreSQL spends per message (the bound it sets on two cores).
//!
//!     cargo bench --bench ingest
//!
//! Knobs (environment): BENCH_REQUESTS (default 3000), BENCH_EVENTS_PER_REQUEST
//! (10), BENCH_CONCURRENCY (16), BENCH_WORKERS (1 worker process), BENCH_SETUP_SQL
//! (statements run after the migrations, separated by `;`, e.g. to disable
//! triggers and measure what they cost), BENCH_RATE (messages/s offered in
//! the steady phase, 5000), BENCH_SUSTAIN_SECONDS (its length, 60) and
//! BENCH_SLOW_MS (print the start time of every webhook request that took
//! at least this long, to line up with a sample of PostgreSQL's waits),
//! BENCH_HTTP_WORKERS (the API's HTTP worker threads, 1; `rapport serve`
//! starts one per core), BENCH_WORKER_NICE (start the worker processes
//! under `nice -n N`), BENCH_GENERATOR_PRIORITY=normal (the paced phase's
//! load generator without real-time scheduling, see `Generator`). The
//! worker processes take RAPPORT_* settings from the environment
//! (RAPPORT_WORKER_LINGER_MS, RAPPORT_INGEST_GROUP, RAPPORT_INGEST_CONCURRENCY,
//! RAPPORT_WORKER_CONCURRENCY).
//!
//! The figures print at the end; "phase 4 begins" and "phase 4 sent" go to
//! stderr as they happen, for tracing that phase from outside (BENCHMARKS.md,
//! sixteenth sitting).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use rapport_domain::ingest::signature::generic_sign;
use rapport_store::entities::{message, raw_event};
use rapport_store::raw_events::PENDING;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::json;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Each request's latency twice: from when it was due (an open loop's
/// honest figure: a late sender is not hidden) and from when the client
/// actually sent it (the server's answer alone; the difference is the
/// load generator's own delay on the shared cores).
#[derive(Default)]
struct Latencies {
    due: Vec<Duration>,
    sent: Vec<Duration>,
    /// A paced phase's p99 (from due) in each 10 s of arrivals, in order:
    /// shows where in the phase the tail came from.
    slice_p99: Vec<Duration>,
    /// The paced sender's scheduling, as obtained.
    priority: String,
}

/// Seconds of arrivals per slice in `Latencies::slice_p99`.
const SLICE_SECS: f64 = 10.0;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    bench_on_local_postgres();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

async fn run() {
    let requests = env_usize("BENCH_REQUESTS", 3000);
    let per_request = env_usize("BENCH_EVENTS_PER_REQUEST", 10);
    let concurrency = env_usize("BENCH_CONCURRENCY", 16);
    let workers = env_usize("BENCH_WORKERS", 1);
    let rate = env_usize("BENCH_RATE", 5000) as f64;
    // 60 s: a steady state, with the host's periodic writeback of the
    // phase's own dirty pages (every 30 s) inside it, not only the
    // writeback that the flood phases before it leave (BENCHMARKS.md,
    // seventeenth sitting).
    let sustain_secs = env_usize("BENCH_SUSTAIN_SECONDS", 60) as f64;
    let total = (requests * per_request) as u64;
    let slow_ms = std::env::var("BENCH_SLOW_MS")
        .ok()
        .and_then(|v| v.parse::<u128>().ok());

    let http_workers = env_usize("BENCH_HTTP_WORKERS", 1);
    let app = TestApp::start_with(|s| s.http_workers = Some(http_workers)).await;
    if let Ok(t) = std::env::var("BENCH_SETUP_SQL") {
        use sea_orm::ConnectionTrait;
        for stmt in t.split(';').filter(|x| !x.is_empty()) {
            app.state.db.execute_unprepared(stmt).await.unwrap();
        }
    }
    let s = app.sign_up("Bench", "bench@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let (_, url) = app.connect_generic(&s, &ws, "load", "generic-secret").await;

    let mut children: Vec<Child> = Vec::new();

    let generator = Arc::new(Generator {
        url,
        per_request,
        concurrency,
        slow_ms,
        realtime: std::env::var("BENCH_GENERATOR_PRIORITY").as_deref() != Ok("normal"),
    });
    let send = async |offset: usize, n: usize, rate: Option<f64>| {
        let (g, (tx, rx)) = (generator.clone(), tokio::sync::oneshot::channel());
        // A thread of its own, not one of tokio's pooled ones: the pacer's
        // real-time priority ends with it.
        std::thread::spawn(move || tx.send(g.send(offset, n, rate)));
        rx.await.unwrap()
    };
    let stored = async || message::Entity::find().count(&app.state.db).await.unwrap();
    // Polls the pending raw events (an index probe), and counts the
    // messages only once none is left: counting every 50 ms cost
    // PostgreSQL a tenth of what the phase measures.
    let pending = async || {
        raw_event::Entity::find()
            .filter(raw_event::Column::Status.eq(PENDING))
            .one(&app.state.db)
            .await
            .unwrap()
            .is_some()
    };
    let wait_for = async |target: u64, children: &[Child], peak_kb: &mut u64| {
        loop {
            for c in children {
                *peak_kb = (*peak_kb).max(status_kb(c.id(), "VmHWM:"));
            }
            if !pending().await && stored().await >= target {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };

    // 0. Warm-up with the worker running, then ANALYZE, as autovacuum does
    //    on a live system (fresh tables have no statistics and get plans
    //    that scan whole indexes).
    let mut peak_kb = 0;
    children.extend((0..workers).map(|_| spawn_worker(&app)));
    let t = Instant::now();
    send(0, requests, None).await;
    wait_for(total, &children, &mut peak_kb).await;
    let cold = t.elapsed();
    {
        use sea_orm::ConnectionTrait;
        app.state.db.execute_unprepared("ANALYZE").await.unwrap();
    }
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    children.clear();

    // 1. The receiver alone (no worker): what platforms see.
    let t = Instant::now();
    let pg = postgres_cpu_ticks();
    let alone = send(total as usize, requests, None).await;
    let alone_rate = requests as f64 / t.elapsed().as_secs_f64();
    let pg_alone = postgres_cpu_since(pg);

    // 2. The worker alone draining that backlog.
    let t = Instant::now();
    let pg = postgres_cpu_ticks();
    children.extend((0..workers).map(|_| spawn_worker(&app)));
    wait_for(2 * total, &children, &mut peak_kb).await;
    let drain = t.elapsed();
    let pg_drain = postgres_cpu_since(pg);
    let cpu_ticks: u64 = children.iter().map(|c| cpu_ticks(c.id())).sum();

    // 3. Both at once, end to end.
    let t = Instant::now();
    let pg = postgres_cpu_ticks();
    let loaded = send(2 * total as usize, requests, None).await;
    wait_for(3 * total, &children, &mut peak_kb).await;
    let end_to_end = t.elapsed();
    let pg_end_to_end = postgres_cpu_since(pg);

    // 4. A steady arrival rate, as platforms deliver: do the workers keep
    //    up, and what do the webhooks answer in meanwhile?
    let sustained_requests = (rate * sustain_secs / per_request as f64).round() as usize;
    let sustained_total = (sustained_requests * per_request) as u64;
    // On stderr as it happens (the figures print at the end), for tools
    // that trace the phase from outside (perf, bpftrace).
    eprintln!("phase 4 begins");
    let t = Instant::now();
    let pg = postgres_cpu_ticks();
    let steady = send(
        3 * total as usize,
        sustained_requests,
        Some(rate / per_request as f64),
    )
    .await;
    let sent = t.elapsed();
    eprintln!("phase 4 sent");
    wait_for(3 * total + sustained_total, &children, &mut peak_kb).await;
    let sustained = t.elapsed();
    let pg_sustained = postgres_cpu_since(pg);
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "ingest benchmark: {requests} webhook requests x {per_request} events = {total} messages per phase, {concurrency} concurrent clients, {http_workers} HTTP worker thread(s), {workers} worker process(es), PostgreSQL, 2 cores shared by all"
    );
    // The webhook's tail depends on how the host writes dirty pages back
    // (BENCHMARKS.md, twelfth sitting): print it with the figures.
    let vm = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/vm/{name}"))
            .map_or_else(|_| "?".to_string(), |v| v.trim().to_string())
    };
    println!(
        "  host writeback: vm.dirty_background_bytes {}, vm.dirty_background_ratio {}, vm.dirty_expire_centisecs {}",
        vm("dirty_background_bytes"),
        vm("dirty_background_ratio"),
        vm("dirty_expire_centisecs")
    );
    println!(
        "  0. warm-up, fresh tables without statistics: {:.0} messages/s end to end",
        total as f64 / cold.as_secs_f64()
    );
    println!(
        "  1. receiver alone:   {alone_rate:.0} requests/s ({:.0} messages/s accepted); latency p50 {:.2} ms, p99 {:.2} ms",
        alone_rate * per_request as f64,
        ms(percentile(&alone.due, 0.5)),
        ms(percentile(&alone.due, 0.99))
    );
    println!(
        "  2. worker alone:     {:.0} messages/s stored ({total} in {:.1} s; worker CPU {:.1} s)",
        total as f64 / drain.as_secs_f64(),
        drain.as_secs_f64(),
        cpu_ticks as f64 / 100.0
    );
    println!(
        "  3. end to end:       {:.0} messages/s ({total} in {:.1} s); webhook latency under load p50 {:.2} ms, p99 {:.2} ms",
        total as f64 / end_to_end.as_secs_f64(),
        end_to_end.as_secs_f64(),
        ms(percentile(&loaded.due, 0.5)),
        ms(percentile(&loaded.due, 0.99))
    );
    println!(
        "  4. steady arrivals:  {rate:.0} messages/s offered for {:.1} s, {:.0} messages/s stored ({sustained_total} stored {:.2} s after the last was sent); webhook latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
        sent.as_secs_f64(),
        sustained_total as f64 / sustained.as_secs_f64(),
        (sustained - sent).as_secs_f64(),
        ms(percentile(&steady.due, 0.5)),
        ms(percentile(&steady.due, 0.9)),
        ms(percentile(&steady.due, 0.99))
    );
    println!(
        "                       p99 in each {SLICE_SECS:.0} s of arrivals: {} ms",
        steady
            .slice_p99
            .iter()
            .map(|d| format!("{:.2}", ms(*d)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("                       load generator: {}", steady.priority);
    println!(
        "                       the same requests timed from when the client sent them: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
        ms(percentile(&steady.sent, 0.5)),
        ms(percentile(&steady.sent, 0.9)),
        ms(percentile(&steady.sent, 0.99))
    );
    // What the webhook's own statement costs PostgreSQL (phase 1 stores
    // raw events only); phase 4's figure includes it.
    if let Some(ticks) = pg_alone {
        println!(
            "  PostgreSQL CPU in phase 1: {:.1} s, {:.3} ms per webhook request (raw events only)",
            ticks as f64 / 100.0,
            ticks as f64 * 10.0 / requests as f64
        );
    }
    // PostgreSQL's own CPU per message bounds the rate: with both cores
    // and nothing else running it could not store more than this.
    for (phase, ticks, messages) in [
        ("2", pg_drain, total),
        ("3", pg_end_to_end, total),
        ("4", pg_sustained, sustained_total),
    ] {
        if let Some(ticks) = ticks {
            let per_message_ms = ticks as f64 * 10.0 / messages as f64;
            println!(
                "  PostgreSQL CPU in phase {phase}: {:.1} s, {per_message_ms:.3} ms per message: at most {:.0} messages/s on 2 cores",
                ticks as f64 / 100.0,
                2000.0 / per_message_ms
            );
        }
    }
    println!(
        "  worker peak memory:  {:.1} MiB (VmHWM)",
        peak_kb as f64 / 1024.0
    );
}

fn spawn_worker(app: &TestApp) -> Child {
    let mut cmd = app.rapport("worker");
    cmd.env("RUST_LOG", "error");
    // BENCH_WORKER_NICE: run the worker processes at this lower CPU priority.
    let nice = env_usize("BENCH_WORKER_NICE", 0);
    if nice > 0 {
        let mut niced = std::process::Command::new("nice");
        niced
            .arg("-n")
            .arg(nice.to_string())
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd = niced;
    }
    cmd.spawn().expect("rapport worker")
}

/// The load generator, on threads of its own so that it does not wait for
/// a turn among the server's tasks: a pacer thread sleeps until each
/// request is due (to the microsecond, where tokio's timer rounds up to
/// the next millisecond) and hands it to a single-threaded runtime that
/// sends it and times the answer. For a paced (open-loop) phase both
/// threads ask for real-time scheduling (SCHED_FIFO), so a request goes
/// out when it is due and its answer is read when it arrives, as from a
/// client on another machine; the server still pays for the generator's
/// CPU on the shared cores. BENCH_GENERATOR_PRIORITY=normal turns that off.
struct Generator {
    url: String,
    per_request: usize,
    concurrency: usize,
    slow_ms: Option<u128>,
    realtime: bool,
}

const TEXTS: [&str; 4] = [
    "my order arrived cold and late, really disappointed",
    "thanks for the quick help yesterday!",
    "is the shop on Main Street open on Sunday?",
    "charged twice, I want a refund asap",
];

impl Generator {
    /// Sends `n` signed requests (event ids from `offset`); returns their
    /// latencies. Without a rate, `concurrency` clients send back to back;
    /// with one (requests/s), request i is due at start + i / rate whatever
    /// the answers so far (an open loop, as platforms send), and its latency
    /// counts from when it was due, so a late sender is not hidden.
    fn send(&self, offset: usize, n: usize, rate: Option<f64>) -> Latencies {
        let realtime = self.realtime && rate.is_some();
        let priority = if realtime {
            match realtime_priority() {
                Ok(()) => "real-time priority (SCHED_FIFO 1), requests paced to the microsecond"
                    .to_string(),
                Err(e) => format!("normal priority (real-time refused: {e})"),
            }
        } else {
            "normal priority".to_string()
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Vec<u8>, Option<Instant>)>();
        let limit = if rate.is_some() {
            256
        } else {
            self.concurrency
        };
        let (url, slow_ms) = (self.url.clone(), self.slow_ms);
        let sender = std::thread::spawn(move || {
            if realtime {
                let _ = realtime_priority();
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(limit)
                    .build()
                    .unwrap();
                let sem = Arc::new(tokio::sync::Semaphore::new(limit));
                let url = Arc::new(url);
                let mut tasks = Vec::new();
                while let Some((body, due)) = rx.recv().await {
                    let permit = sem.clone().acquire_owned().await.unwrap();
                    let (client, url) = (client.clone(), url.clone());
                    tasks.push(tokio::spawn(async move {
                        let sig =
                            generic_sign(b"generic-secret", &body, chrono::Utc::now().timestamp());
                        let sent = Instant::now();
                        let resp = client
                            .post(url.as_str())
                            .header("x-rapport-signature", sig)
                            .body(body)
                            .send()
                            .await
                            .unwrap();
                        let answered = sent.elapsed();
                        let took = due.map_or(answered, |d| d.elapsed());
                        assert_eq!(resp.status(), 200);
                        if slow_ms.is_some_and(|ms| took.as_millis() >= ms) {
                            // When it started, to line up with what
                            // PostgreSQL's backends were waiting on then.
                            let started = chrono::Utc::now() - took;
                            eprintln!(
                                "slow request: started {} took {:.1} ms",
                                started.format("%H:%M:%S%.3f"),
                                took.as_secs_f64() * 1e3
                            );
                        }
                        drop(permit);
                        (took, answered)
                    }));
                }
                let mut latencies = Latencies::default();
                for t in tasks {
                    let (took, answered) = t.await.unwrap();
                    latencies.due.push(took);
                    latencies.sent.push(answered);
                }
                latencies
            })
        });
        let start = Instant::now();
        for r in 0..n {
            let events: Vec<_> = (0..self.per_request)
                .map(|i| {
                    let n = offset + r * self.per_request + i;
                    json!({ "id": format!("ev-{n}"), "text": TEXTS[n % TEXTS.len()], "published_at": "2026-11-20T09:00:00Z",
                            "author": { "id": format!("author-{}", n % 20_000), "followers": (n * 37) % 100_000 } })
                })
                .collect();
            let body = serde_json::to_vec(&json!({ "events": events })).unwrap();
            let due = rate.map(|rate| start + Duration::from_secs_f64(r as f64 / rate));
            if let Some(due) = due {
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            tx.send((body, due)).unwrap();
        }
        drop(tx);
        let mut latencies = sender.join().unwrap();
        // Still in request order here: request r arrived r / rate s in.
        if let Some(rate) = rate {
            let per_slice = ((rate * SLICE_SECS).round() as usize).max(1);
            latencies.slice_p99 = latencies
                .due
                .chunks(per_slice)
                .map(|c| {
                    let mut c = c.to_vec();
                    c.sort();
                    percentile(&c, 0.99)
                })
                .collect();
        }
        latencies.due.sort();
        latencies.sent.sort();
        latencies.priority = priority;
        latencies
    }
}

/// Real-time scheduling for the calling thread (Linux: pid 0 is the
/// thread). Needs root or CAP_SYS_NICE.
fn realtime_priority() -> Result<(), std::io::Error> {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: a valid sched_param for the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
