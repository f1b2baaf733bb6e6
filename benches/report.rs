//! Report benchmark (not a test): the 30-day report of one workspace with
//! 1,000,000 messages on PostgreSQL, asked through the real GraphQL
//! endpoint. Prints latency percentiles over repeated runs.
//!
//!     cargo bench --bench report
//!
//! Knobs (environment): BENCH_MESSAGES (default 1,000,000; a quarter of
//! them conversations, one reply in four messages), BENCH_RUNS (30),
//! BENCH_GRANULARITY (DAY).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn main() {
    if std::env::var("RUST_LOG").is_ok() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    bench_on_local_postgres();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1].as_secs_f64()
        * 1000.0
}

async fn run() {
    let messages = env_usize("BENCH_MESSAGES", 1_000_000);
    let runs = env_usize("BENCH_RUNS", 30);
    let granularity = std::env::var("BENCH_GRANULARITY").unwrap_or_else(|_| "DAY".into());
    let conversations = messages / 4;
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let ws_id = rapport_domain::GlobalId::decode(rapport_domain::Kind::Workspace, &ws).unwrap();
    let db = &app.state.db;
    let end = chrono::Utc::now();
    let start = end - chrono::Duration::days(30);
    let t = Instant::now();
    println!("seeding {conversations} conversations and {messages} messages over 30 days");
    let (s0, span) = (start.to_rfc3339(), 30 * 86_400);
    exec(db, &format!(
        "INSERT INTO channels (id, agency_id, workspace_id, kind, name, external_account_id, status, state, created_at, updated_at)
           SELECT gen_random_uuid(), w.agency_id, w.id, k, k, k, 'ACTIVE', '{{}}', now(), now()
           FROM workspaces w, unnest(ARRAY['X','FACEBOOK','GENERIC']) k WHERE w.id = '{ws_id}';
         INSERT INTO authors (id, agency_id, platform, external_id, handle, follower_count, verified, created_at, updated_at)
           SELECT gen_random_uuid(), w.agency_id, 'X', 'a' || g, 'a' || g, (g * 37) % 50000, false, now(), now()
           FROM workspaces w, generate_series(1, 20000) g WHERE w.id = '{ws_id}';
         CREATE TEMP TABLE bench_authors AS SELECT id, row_number() OVER () AS n FROM authors;
         CREATE TEMP TABLE bench_channels AS SELECT id, row_number() OVER () AS n FROM channels;
         INSERT INTO conversations (id, agency_id, workspace_id, channel_id, author_id, status, visibility, priority,
             priority_score, priority_breakdown, opening_sentiment, sentiment, first_responded_at, resolved_at,
             first_response_business_s, resolution_business_s, last_customer_message_at, recovered, created_at, updated_at)
           SELECT gen_random_uuid(), w.agency_id, w.id, ch.id, au.id,
             CASE WHEN g % 10 < 7 THEN 'RESOLVED' ELSE 'OPEN' END, 'PUBLIC',
             (ARRAY['LOW','NORMAL','HIGH','URGENT'])[1 + g % 4], 0.3, '{{}}',
             (g % 200) / 100.0 - 1.0, 0.0,
             o.at + (g % 3600) * interval '1 second',
             CASE WHEN g % 10 < 7 THEN o.at + (g % 86400) * interval '1 second' END,
             g % 3600, CASE WHEN g % 10 < 7 THEN g % 86400 END,
             o.at, g % 13 = 0, o.at, o.at
           FROM workspaces w
           CROSS JOIN generate_series(1, {conversations}) g
           CROSS JOIN LATERAL (SELECT timestamptz '{s0}' + (g::float8 / {conversations} * {span}) * interval '1 second' AS at) o
           JOIN bench_authors au ON au.n = 1 + g % 20000
           JOIN bench_channels ch ON ch.n = 1 + g % 3
           WHERE w.id = '{ws_id}';
         INSERT INTO messages (id, agency_id, workspace_id, conversation_id, channel_id, author_id, external_id,
             direction, visibility, body, sentiment, published_at, received_at, sent_by_membership_id, created_at)
           SELECT gen_random_uuid(), c.agency_id, c.workspace_id, c.id, c.channel_id,
             CASE WHEN k = 4 THEN NULL ELSE c.author_id END, c.id::text || '-' || k,
             CASE WHEN k = 4 THEN 'OUTBOUND' ELSE 'INBOUND' END, 'PUBLIC', 'benchmark message',
             CASE WHEN k = 4 THEN NULL ELSE ((k * 7 + length(c.id::text)) % 200) / 100.0 - 1.0 END,
             c.created_at + (k * 600 - (k * 13) % 90) * interval '1 second',
             c.created_at + k * 600 * interval '1 second',
             CASE WHEN k = 4 THEN (SELECT id FROM memberships LIMIT 1) END, now()
           FROM conversations c CROSS JOIN generate_series(1, 4) k;
         INSERT INTO sla_events (id, agency_id, workspace_id, conversation_id, kind, target, cycle, deadline_at, fired_at, lateness_ms, created_at)
           SELECT gen_random_uuid(), c.agency_id, c.workspace_id, c.id,
             CASE WHEN c.recovered THEN 'SLA_BREACHED' ELSE 'SLA_MET' END, 'FIRST_RESPONSE', 0,
             c.created_at + interval '1 hour', c.first_responded_at, 0, now()
           FROM conversations c;
         ANALYZE;"
    ))
    .await;
    println!("  seeded in {:.1} s", t.elapsed().as_secs_f64());
    // What a running worker does within seconds of the writes: fold the
    // rollups and count the marked conversation slots again.
    let t = Instant::now();
    let mut slots = 0;
    loop {
        let n = rapport_worker::rollups::compact_once(db).await.unwrap();
        slots += n;
        if n == 0 {
            break;
        }
    }
    exec(db, "ANALYZE").await;
    println!(
        "  worker rollup pass: {slots} slots in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let query = "query($w: ID!, $f: DateTime!, $t: DateTime!, $g: ReportGranularity) {
      workspaceReport(workspaceId: $w, from: $f, to: $t, granularity: $g, timezone: \"UTC\") {
        total { inbound conversationsOpened firstResponse { calendar { p50Seconds p90Seconds meanSeconds } business { p50Seconds } }
                resolution { calendar { p50Seconds } } sla { target met breached compliancePercent } repliesSent recovered
                platformDelay { meanSeconds } }
        buckets { label figures { inbound firstResponse { calendar { p50Seconds } } sla { met breached } } }
        agents { repliesSent } } }";
    let vars = json!({ "w": ws, "f": start.to_rfc3339(), "t": end.to_rfc3339(), "g": granularity });
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs + 3 {
        let t = Instant::now();
        let d = app.ok(Some(&s.access), query, vars.clone()).await;
        let took = t.elapsed();
        if i == 0 {
            let total = &d["workspaceReport"]["total"];
            println!(
                "  report: {} inbound, {} conversations, {} buckets; first response p50 {} s",
                total["inbound"],
                total["conversationsOpened"],
                d["workspaceReport"]["buckets"].as_array().unwrap().len(),
                total["firstResponse"]["calendar"]["p50Seconds"]
            );
        }
        // The first three warm caches and plans.
        if i >= 3 {
            times.push(took);
        }
    }
    times.sort();
    println!(
        "results ({messages} messages, 30 days by {granularity}, {runs} runs, GraphQL over HTTP):"
    );
    println!(
        "  latency: p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        pct(&times, 0.5),
        pct(&times, 0.9),
        times.last().unwrap().as_secs_f64() * 1000.0
    );
}
