//! Rapport as third-party tools see it: the GraphQL-over-HTTP server audits
//! of the `graphql-http` package, a `graphql-ws` client, and GraphiQL run
//! in headless Chromium through `playwright-core`, all from npm
//! (`conformance/`, installed from its lockfile with `npm ci --prefix
//! conformance`; `.ci/run` does it), run by Node.js against a live server.

mod common;

use common::*;
use rapport_worker::sla::{SlaConfig, SlaEngine};
use serde_json::json;
use std::path::Path;
use std::process::Command;

fn node(script: &str, args: &[&str], env: &[(&str, String)]) -> (bool, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance");
    assert!(
        ["graphql-http", "graphql-ws", "playwright-core", "eslint"]
            .iter()
            .all(|p| dir.join("node_modules").join(p).exists()),
        "conformance packages missing: run `npm ci --prefix conformance`"
    );
    let mut cmd = Command::new("node");
    cmd.current_dir(&dir).arg(script).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .expect("Node.js is needed for the conformance suites");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_http_server_audits_pass() {
    let app = TestApp::start().await;
    let url = format!("{}/graphql", app.base);
    let (ok, out) = tokio::task::spawn_blocking(move || node("audit.mjs", &[&url], &[]))
        .await
        .unwrap();
    assert!(ok, "graphql-http audits failed:\n{out}");
    assert!(out.contains(" 0 SHOULD warnings, 0 MUST errors"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graphql_ws_client_gets_events_caused_by_a_webhook() {
    let app = TestApp::start().await.with_worker().await;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let engine = SlaEngine {
        db: app.state.db.clone(),
        kv: app.state.kv.clone(),
        cfg: SlaConfig {
            tick: std::time::Duration::from_millis(100),
            ..Default::default()
        },
    };
    tokio::spawn(engine.run(rx));
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let other = app.sign_up("Rival", "owner@rival.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    // A 1-minute promise warned at 5 %: the warning comes 3 s after receipt.
    app.default_policy(
        &s,
        &ws,
        json!({ "firstResponseMinutes": 1 }),
        json!({ "name": "Fast", "warnAtPercent": 5 }),
    )
    .await;
    let secret = "ws-client-secret-1";
    let hook = app
        .ok(
            Some(&s.access),
            "mutation($i: ConnectChannelInput!) { connectChannel(input: $i) { webhookUrl } }",
            json!({ "i": { "workspaceId": ws, "kind": "GENERIC", "name": "alerts", "secret": secret } }),
        )
        .await["connectChannel"]["webhookUrl"]
        .as_str()
        .unwrap()
        .to_string();
    let env = vec![
        (
            "RAPPORT_WS_URL",
            format!("{}/graphql", app.base.replacen("http", "ws", 1)),
        ),
        ("RAPPORT_TOKEN", s.access.clone()),
        ("RAPPORT_OTHER_TOKEN", other.access.clone()),
        ("RAPPORT_WORKSPACE_ID", ws.clone()),
        ("RAPPORT_WEBHOOK_URL", hook),
        ("RAPPORT_WEBHOOK_SECRET", secret.to_string()),
        ("RAPPORT_REDIS_URL", redis_url()),
        ("RAPPORT_LIVE_CHANNELS", {
            let id =
                rapport_domain::GlobalId::decode(rapport_domain::Kind::Workspace, &ws).unwrap();
            format!(
                "{},{}",
                app.state.kv.channel(Topic::Conversations, id),
                app.state.kv.channel(Topic::Sla, id)
            )
        }),
    ];
    let (ok, out) = tokio::task::spawn_blocking(move || node("ws.mjs", &[], &env))
        .await
        .unwrap();
    let _ = tx.send(true);
    assert!(ok, "graphql-ws client failed:\n{out}");
    assert!(out.contains("graphql-ws: ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphiql_loads_offline_and_runs_a_query_in_chromium() {
    let app = TestApp::start().await;
    let url = format!("{}/graphql", app.base);
    let shot = std::env::temp_dir().join(format!("rapport-graphiql-{}.png", uuid::Uuid::new_v4()));
    let path = shot.to_string_lossy().to_string();
    let (ok, out) = tokio::task::spawn_blocking(move || node("graphiql.mjs", &[&url, &path], &[]))
        .await
        .unwrap();
    assert!(ok, "GraphiQL did not run the query:\n{out}");
    let png = std::fs::read(&shot).expect("a screenshot was written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (1200, 800));
    assert!(png.len() > 20_000, "a rendered page, not a blank one");
    if let Ok(keep) = std::env::var("RAPPORT_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
    let _ = std::fs::remove_file(&shot);
}

#[test]
fn schema_graphql_passes_the_relay_rules_of_graphql_eslint() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // ESLint lints files under its folder only: a copy goes there.
    let copy = root.join("conformance/schema.lint.graphql");
    std::fs::copy(root.join("schema.graphql"), &copy).unwrap();
    let (ok, out) = node(
        "node_modules/eslint/bin/eslint.js",
        &["--format", "stylish", "schema.lint.graphql"],
        &[],
    );
    let _ = std::fs::remove_file(&copy);
    // Exit status 1 on any error, a missing description included.
    assert!(ok, "graphql-eslint found errors:\n{out}");
}
