//! SLA timer benchmark (not a test): a PostgreSQL database with many open
//! conversations across many workspaces, every one with a first-response
//! deadline falling within a few minutes, timers in the Redis sorted set,
//! and separate `rapport worker` processes firing them. Prints timers fired
//! per second, breach lateness p50/p99/max (fire time minus deadline, from
//! the sla_events rows), the workers' peak memory, and what a claim costs
//! with everything scheduled.
//!
//!     cargo bench --bench sla_timers
//!
//! Knobs (environment): BENCH_CONVERSATIONS (default 1,000,000),
//! BENCH_AGENCIES (100), BENCH_WORKSPACES_PER_AGENCY (10), BENCH_SPREAD_SECS
//! (deadlines spread over this many seconds, 300), BENCH_LEAD_SECS (first
//! deadline this long after seeding starts, 240), BENCH_WORKERS (3).

#[path = "../tests/common/mod.rs"]
mod common;

use chrono::{DateTime, Utc};
use common::*;
use rapport_domain::sla::Target;
use rapport_store::sla::{self, Timer};
use sea_orm::{ConnectionTrait, Statement};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

fn main() {
    bench_on_local_postgres();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

async fn scalar(db: &sea_orm::DatabaseConnection, sql: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(
            sea_orm::DbBackend::Postgres,
            sql.to_string(),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

async fn run() {
    let total = env_usize("BENCH_CONVERSATIONS", 1_000_000);
    let agencies = env_usize("BENCH_AGENCIES", 100);
    let per_agency = env_usize("BENCH_WORKSPACES_PER_AGENCY", 10);
    let spread = env_usize("BENCH_SPREAD_SECS", 300) as i64;
    let lead = env_usize("BENCH_LEAD_SECS", 240) as i64;
    let workers = env_usize("BENCH_WORKERS", 3);
    let workspaces = agencies * per_agency;
    let per_ws = total.div_ceil(workspaces);
    let total = per_ws * workspaces;

    let app = TestApp::start().await;
    let db = &app.state.db;
    let started = Instant::now();
    let first_due: DateTime<Utc> = Utc::now() + chrono::Duration::seconds(lead);
    println!(
        "seeding {total} open conversations in {workspaces} workspaces of {agencies} agencies; deadlines from {first_due} over {spread} s"
    );
    exec(db, &format!(
        "INSERT INTO agencies (id, name, created_at) SELECT gen_random_uuid(), 'Agency ' || g, now() FROM generate_series(1, {agencies}) g;
         INSERT INTO workspaces (id, agency_id, name, timezone, brand_keywords, banned_phrases, urgency_keywords, created_at, updated_at)
           SELECT gen_random_uuid(), a.id, a.name || ' brand ' || g, 'UTC', '[]', '[]', '[]', now(), now()
           FROM agencies a, generate_series(1, {per_agency}) g;
         INSERT INTO channels (id, agency_id, workspace_id, kind, name, external_account_id, status, state, created_at, updated_at)
           SELECT gen_random_uuid(), w.agency_id, w.id, 'GENERIC', 'bench', w.id::text, 'ACTIVE', '{{}}', now(), now() FROM workspaces w;
         INSERT INTO authors (id, agency_id, platform, external_id, handle, follower_count, verified, created_at, updated_at)
           SELECT gen_random_uuid(), w.agency_id, 'GENERIC', w.id::text, 'customer', 100, false, now(), now() FROM workspaces w;"
    ))
    .await;
    let snapshot = format!(
        r#"{{"policyId":"{}","minutes":{{"firstResponse":60}},"warnAtPercent":100,"calendarId":null}}"#,
        Uuid::nil()
    );
    // A breakdown as ingestion stores it: the column is read into its type.
    let breakdown = serde_json::to_string(&rapport_domain::priority::Breakdown {
        sentiment: 0.1,
        reach: 0.1,
        visibility: 0.1,
        urgency: 0.0,
        urgency_matches: Vec::new(),
        score: 0.3,
        level: rapport_domain::priority::PriorityLevel::Normal,
    })
    .unwrap();
    // One statement per workspace batch keeps memory flat.
    let first = first_due.to_rfc3339();
    let chunk = (200_000 / per_ws).max(1);
    let mut offset = 0;
    while offset < workspaces {
        exec(db, &format!(
            "INSERT INTO conversations (id, agency_id, workspace_id, channel_id, author_id, status, visibility, priority,
                priority_score, priority_breakdown, sla_targets, first_response_due_at, due_at,
                last_customer_message_at, recovered, created_at, updated_at)
             SELECT gen_random_uuid(), w.agency_id, w.id, c.id, a.id, 'OPEN', 'PUBLIC', 'NORMAL', 0.3, '{breakdown}', '{snapshot}',
                d.due, d.due, now(), false, now(), now()
             FROM (SELECT * FROM workspaces ORDER BY id LIMIT {chunk} OFFSET {offset}) w
             JOIN channels c ON c.workspace_id = w.id
             JOIN authors a ON a.external_id = w.id::text
             CROSS JOIN LATERAL (
               SELECT timestamptz '{first}' + (random() * {spread}) * interval '1 second' AS due
               FROM generate_series(1, {per_ws}) g WHERE w.id IS NOT NULL) d"
        ))
        .await;
        offset += chunk;
        let done = offset.min(workspaces) * per_ws;
        eprint!("\r  {done}/{total} conversations");
    }
    eprintln!();
    exec(db, "ANALYZE").await;
    println!("  seeded in {:.1} s", started.elapsed().as_secs_f64());

    // Timers: what ingestion would have scheduled, read back in pages.
    let t = Instant::now();
    let mut after = Uuid::nil();
    let mut scheduled = 0;
    loop {
        let rows = db
            .query_all_raw(Statement::from_string(
                sea_orm::DbBackend::Postgres,
                format!(
                    "SELECT id, first_response_due_at FROM conversations WHERE id > '{after}' ORDER BY id LIMIT 20000"
                ),
            ))
            .await
            .unwrap();
        let Some(last) = rows.last() else { break };
        after = last.try_get_by_index::<Uuid>(0).unwrap();
        let timers: Vec<(Timer, DateTime<Utc>)> = rows
            .iter()
            .map(|r| {
                let due: DateTime<Utc> = r.try_get_by_index(1).unwrap();
                (
                    Timer {
                        conversation: r.try_get_by_index(0).unwrap(),
                        target: Target::FirstResponse,
                        breach: true,
                        cycle: 0,
                        deadline: due,
                    },
                    due,
                )
            })
            .collect();
        sla::schedule(&app.state.kv, &timers).await.unwrap();
        scheduled += timers.len();
    }
    println!(
        "  {scheduled} timers scheduled in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // What a scan costs with everything scheduled and nothing due yet.
    let probe = Instant::now();
    let mut claimed = 0;
    for _ in 0..100 {
        claimed += sla::claim_due(&app.state.kv, Utc::now(), 1000, 30_000)
            .await
            .unwrap()
            .len();
    }
    println!(
        "  claim with {scheduled} scheduled, none due: {:.3} ms per call ({claimed} claimed)",
        probe.elapsed().as_secs_f64() * 10.0
    );
    // Workers start in a steady state: the periodic rebuild already ran.
    let _: () = redis::cmd("SET")
        .arg(app.state.kv.key("sla:rebuild"))
        .arg("bench")
        .arg("EX")
        .arg(3600)
        .query_async(&mut app.state.kv.conn())
        .await
        .unwrap();
    if Utc::now() >= first_due {
        panic!("seeding took longer than BENCH_LEAD_SECS={lead}; raise it");
    }
    let mut procs: Vec<Child> = (0..workers).map(|_| spawn_worker(&app)).collect();
    println!(
        "  {workers} worker processes started; first deadline in {:.0} s",
        (first_due - Utc::now()).num_milliseconds() as f64 / 1000.0
    );

    let deadline_end = first_due + chrono::Duration::seconds(spread);
    let mut peak_kb = 0;
    let mut samples: Vec<(Instant, i64)> = Vec::new();
    let give_up = deadline_end + chrono::Duration::seconds(spread.max(120));
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for c in &procs {
            peak_kb = peak_kb.max(status_kb(c.id(), "VmHWM:"));
        }
        let n = scalar(db, "SELECT count(*)::bigint FROM sla_events").await;
        samples.push((Instant::now(), n));
        if n as usize >= total || Utc::now() > give_up {
            break;
        }
    }
    for c in &mut procs {
        let _ = c.kill();
        let _ = c.wait();
    }
    let fired = samples.last().map(|s| s.1).unwrap_or(0);
    // Figures of a run that did not fire everything would mislead (a
    // seeding bug once left every timer failing to fire, unseen).
    assert_eq!(
        fired as usize, total,
        "only {fired} of {total} timers fired in time (the workers' warnings above say why)"
    );
    // Rate while deadlines were falling: first event to last.
    let start = samples.iter().find(|s| s.1 > 0).map(|s| s.0);
    let end = samples.iter().find(|s| s.1 == fired).map(|s| s.0);
    let rate = match (start, end) {
        (Some(a), Some(b)) if b > a => fired as f64 / (b - a).as_secs_f64(),
        _ => 0.0,
    };
    let lateness = |p: &str| {
        format!(
            "SELECT (percentile_disc({p}) WITHIN GROUP (ORDER BY lateness_ms))::bigint FROM sla_events"
        )
    };
    let p50 = scalar(db, &lateness("0.5")).await;
    let p99 = scalar(db, &lateness("0.99")).await;
    let max = scalar(db, "SELECT max(lateness_ms)::bigint FROM sla_events").await;
    let dupes = scalar(
        db,
        "SELECT count(*)::bigint FROM (SELECT conversation_id FROM sla_events GROUP BY conversation_id, target, kind, cycle HAVING count(*) > 1) d",
    )
    .await;
    println!("results ({workers} workers, {total} conversations, deadlines over {spread} s):");
    println!(
        "  timers fired:        {fired} of {total} ({:.0}/s offered)",
        total as f64 / spread as f64
    );
    println!("  fired per second:    {rate:.0} (first event to last)");
    println!("  breach lateness:     p50 {p50} ms, p99 {p99} ms, max {max} ms");
    println!("  duplicate events:    {dupes}");
    println!(
        "  worker peak memory:  {:.1} MiB (largest VmHWM)",
        peak_kb as f64 / 1024.0
    );
}

fn spawn_worker(app: &TestApp) -> Child {
    app.rapport("worker")
        // Warnings too: a batch that fails to fire says why.
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit())
        .spawn()
        .expect("rapport worker")
}
