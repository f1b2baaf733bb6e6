//! Load benchmark (not a test): `rapport seed` fills a fresh PostgreSQL
//! database, a release `rapport serve` runs against it, and `wrk` (Debian's
//! package) drives two POST /graphql loads on the same server: the inbox
//! (first 50 open conversations by priority, with author and SLA) and the
//! floor, a bare `{ __typename }` through the same stack. A Lua script
//! counts a response as good only when it is a 200 whose body has no
//! `errors`. Prints requests/s, p50/p99 latency, both ratios, and the CPU
//! one request costs the server and PostgreSQL (read from /proc), which
//! bounds what two cores can serve at any concurrency.
//!
//!     cargo bench --bench load
//!
//! Knobs (environment): BENCH_AGENCIES (100), BENCH_WORKSPACES_PER_AGENCY
//! (10), BENCH_MESSAGES (1,000,000), BENCH_SECONDS (20 per load),
//! BENCH_CONNECTIONS (16; a comma list such as `16,4` measures each in
//! turn on the same seeded data), BENCH_CHURN (writes per second to the
//! measured agency during a further inbox load, comma-separated; default
//! `100`; empty for none): one conversation of the agency updated by SQL
//! at that rate, so the API's response cache (on by default on
//! PostgreSQL; `RAPPORT_RESPONSE_CACHE_MS=0` turns it off for the served
//! process) drops the agency's answers each time.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    bench_on_local_postgres();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

const LUA: &str = r#"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
wrk.body = os.getenv("BENCH_BODY")
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) good = 0; bad = 0 end
function response(status, headers, body)
  if status == 200 and not string.find(body, '"errors"', 1, true) then good = good + 1 else bad = bad + 1 end
end
function done(summary, latency, requests)
  local g, b = 0, 0
  for _, t in ipairs(threads) do g = g + t:get("good"); b = b + t:get("bad") end
  io.write(string.format("GOOD %d BAD %d SECONDS %.3f P50 %.3f P99 %.3f\n", g, b,
    summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"#;

struct Load {
    good: f64,
    bad: f64,
    rps: f64,
    p50: f64,
    p99: f64,
    /// CPU milliseconds per request: the server's, and PostgreSQL's when
    /// it runs on this machine.
    api_ms: f64,
    pg_ms: Option<f64>,
}

/// One `wrk` load against the server `serve_pid`, with the CPU both the
/// server and PostgreSQL spent on it.
fn wrk(url: &str, token: &str, body: &Value, secs: usize, conns: usize, serve_pid: u32) -> Load {
    let (api0, pg0) = (cpu_ticks(serve_pid), postgres_cpu_ticks());
    let script = std::env::temp_dir().join(format!("rapport-wrk-{}.lua", std::process::id()));
    std::fs::write(&script, LUA).unwrap();
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "-s",
            script.to_str().unwrap(),
            url,
        ])
        .env("BENCH_TOKEN", token)
        .env("BENCH_BODY", body.to_string())
        .output()
        .expect("wrk is needed (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("GOOD"))
        .unwrap_or_else(|| panic!("wrk said: {text}"));
    let f: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let per_request = |ticks: u64| ticks as f64 * 10.0 / (f[0] + f[1]).max(1.0);
    Load {
        good: f[0],
        bad: f[1],
        rps: f[0] / f[2],
        p50: f[3],
        p99: f[4],
        api_ms: per_request(cpu_ticks(serve_pid) - api0),
        pg_ms: postgres_cpu_since(pg0).map(per_request),
    }
}

/// The served process's response-cache counters (hits, misses).
async fn cache_counts(client: &reqwest::Client, bind: &str) -> (u64, u64) {
    let text = client
        .get(format!("http://{bind}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |outcome: &str| {
        metric_value(
            &text,
            &format!("rapport_response_cache_total{{outcome=\"{outcome}\"}}"),
        )
    };
    (count("hit"), count("miss"))
}

fn hit_share(before: (u64, u64), after: (u64, u64)) -> String {
    let (h, m) = (after.0 - before.0, after.1 - before.1);
    if h + m == 0 {
        return "cache off or unused".into();
    }
    format!(
        "{:.1} % answered from memory",
        100.0 * h as f64 / (h + m) as f64
    )
}

async fn run() {
    let agencies = env_usize("BENCH_AGENCIES", 100);
    let per_agency = env_usize("BENCH_WORKSPACES_PER_AGENCY", 10);
    let messages = env_usize("BENCH_MESSAGES", 1_000_000);
    let secs = env_usize("BENCH_SECONDS", 20);
    let conn_list: Vec<usize> = std::env::var("BENCH_CONNECTIONS")
        .unwrap_or_else(|_| "16".into())
        .split(',')
        .map(|c| {
            c.trim()
                .parse()
                .expect("BENCH_CONNECTIONS: numbers, comma-separated")
        })
        .collect();
    let app = TestApp::start().await;
    let t = Instant::now();
    println!("seeding {agencies} agencies × {per_agency} workspaces, {messages} messages");
    let status = app
        .rapport("seed")
        .args([
            "--agencies",
            &agencies.to_string(),
            "--workspaces-per-agency",
            &per_agency.to_string(),
            "--messages",
            &messages.to_string(),
        ])
        .env("RUST_LOG", "error")
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .unwrap();
    assert!(status.success());
    println!("  seeded in {:.1} s", t.elapsed().as_secs_f64());
    // `rapport seed` ends with VACUUM (ANALYZE) on PostgreSQL.

    let bind = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let mut serve: Child = app
        .rapport("serve")
        .env("RAPPORT_BIND", &bind)
        .env("RUST_LOG", "error")
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let url = format!("http://{bind}/graphql");
    for _ in 0..100 {
        if app
            .client
            .get(format!("http://{bind}/readyz"))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The first agency's owner, signed in over HTTP.
    let owner: Value = app
        .client
        .post(&url)
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(owner["data"]["__typename"], "QueryRoot");
    let email: String = {
        use rapport_store::entities::user;
        use sea_orm::{EntityTrait, QueryOrder};
        user::Entity::find()
            .order_by_asc(user::Column::CreatedAt)
            .one(&app.state.db)
            .await
            .unwrap()
            .unwrap()
            .email
    };
    let login: Value = app
        .client
        .post(&url)
        .json(&json!({ "query": "mutation($i: LoginInput!) { login(input: $i) { accessToken } }",
                       "variables": { "i": { "email": email, "password": "rapport-demo-password" } } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["data"]["login"]["accessToken"]
        .as_str()
        .unwrap_or_else(|| panic!("{login}"))
        .to_string();
    let inbox = json!({ "query": "{ inbox(orderBy: PRIORITY, first: 50, filter: { status: [OPEN] }) { edges { node { id priority priorityScore
        author { handle followerCount } sla { status firstResponseDue remainingMinutes } } } pageInfo { hasNextPage endCursor } } }" });
    let check: Value = app
        .client
        .post(&url)
        .bearer_auth(&token)
        .json(&inbox)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let n = check["data"]["inbox"]["edges"]
        .as_array()
        .map(|e| e.len())
        .unwrap_or_else(|| panic!("{check}"));
    println!("  inbox answers {n} conversations; loading {secs} s each");
    let churn: Vec<u64> = std::env::var("BENCH_CHURN")
        .unwrap_or_else(|_| "100".into())
        .split(',')
        .filter(|c| !c.trim().is_empty())
        .map(|c| {
            c.trim()
                .parse()
                .expect("BENCH_CHURN: numbers, comma-separated")
        })
        .collect();
    // A conversation of the measured agency, for the churn loads.
    let churned: String = {
        use sea_orm::{ConnectionTrait, Statement};
        app.state
            .db
            .query_one_raw(Statement::from_sql_and_values(
                sea_orm::DbBackend::Postgres,
                "SELECT c.id::text AS id FROM conversations c \
                 JOIN memberships m ON m.agency_id = c.agency_id \
                 JOIN users u ON u.id = m.user_id WHERE u.email = $1 LIMIT 1",
                [email.clone().into()],
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get("", "id")
            .unwrap()
    };
    let mut results = Vec::new();
    let mut churned_results = Vec::new();
    let pid = serve.id();
    for &conns in &conn_list {
        let floor = json!({ "query": "{ __typename }" });
        let (u, tk) = (url.clone(), token.clone());
        let f = tokio::task::spawn_blocking(move || wrk(&u, &tk, &floor, secs, conns, pid))
            .await
            .unwrap();
        let (u, tk, body) = (url.clone(), token.clone(), inbox.clone());
        let before = cache_counts(&app.client, &bind).await;
        let i = tokio::task::spawn_blocking(move || wrk(&u, &tk, &body, secs, conns, pid))
            .await
            .unwrap();
        let share = hit_share(before, cache_counts(&app.client, &bind).await);
        results.push((conns, f, i, share));
        for &rate in &churn {
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let writer = {
                let (db, stop, id) = (app.state.db.clone(), stop.clone(), churned.clone());
                tokio::spawn(async move {
                    let sql = format!(
                        "UPDATE conversations SET priority_score = priority_score WHERE id = '{id}'"
                    );
                    let every = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
                    let mut tick = tokio::time::interval(every);
                    let mut writes = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        tick.tick().await;
                        exec(&db, &sql).await;
                        writes += 1;
                    }
                    writes
                })
            };
            let (u, tk, body) = (url.clone(), token.clone(), inbox.clone());
            let before = cache_counts(&app.client, &bind).await;
            let i = tokio::task::spawn_blocking(move || wrk(&u, &tk, &body, secs, conns, pid))
                .await
                .unwrap();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let writes = writer.await.unwrap();
            let share = hit_share(before, cache_counts(&app.client, &bind).await);
            churned_results.push((conns, rate, writes, i, share));
        }
    }
    let _ = serve.kill();
    let _ = serve.wait();
    for (conns, f, i, share) in &results {
        println!(
            "results (PostgreSQL, {agencies}×{per_agency} workspaces, {messages} messages, {conns} connections):"
        );
        for (name, l) in [("floor { __typename }", f), ("inbox (50 by priority)", i)] {
            println!(
                "  {name:24} {:8.0} req/s  p50 {:6.2} ms  p99 {:6.2} ms  ({} good, {} with errors or not 200)",
                l.rps, l.p50, l.p99, l.good, l.bad
            );
            // The CPU one request costs bounds throughput on two cores
            // whatever the concurrency: 2,000 ms of CPU per second.
            if let Some(pg) = l.pg_ms {
                println!(
                    "  {:24} CPU per request: rapport {:.3} ms, PostgreSQL {pg:.3} ms; at most {:.0} req/s on 2 cores, {:.0} for PostgreSQL alone",
                    "",
                    l.api_ms,
                    2000.0 / (l.api_ms + pg),
                    2000.0 / pg
                );
            }
        }
        println!(
            "  inbox / floor throughput: {:.1} % (inbox: {share})",
            100.0 * i.rps / f.rps
        );
        for (_, rate, writes, l, share) in churned_results.iter().filter(|r| r.0 == *conns) {
            println!(
                "  inbox, agency written {rate}/s ({writes} writes): {:8.0} req/s  p50 {:6.2} ms  p99 {:6.2} ms  ({} good, {} bad); {:.1} % of the floor; {share}",
                l.rps,
                l.p50,
                l.p99,
                l.good,
                l.bad,
                100.0 * l.rps / f.rps
            );
            if let Some(pg) = l.pg_ms {
                println!(
                    "  {:24} CPU per request: rapport {:.3} ms, PostgreSQL {pg:.3} ms",
                    "", l.api_ms
                );
            }
        }
    }
}
