//! The shared report as a browser shows it: headless Chromium (Debian's
//! `chromium` package, installed by `.ci/run`; `RAPPORT_CHROMIUM` names
//! another binary) opens the signed URL, takes a screenshot, and dumps the
//! rendered DOM, which must hold the three charts with their marks.

mod common;

use common::*;
use serde_json::json;
use std::process::Command;

fn chromium() -> String {
    std::env::var("RAPPORT_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// Runs headless Chromium with `args` then `url`; returns stdout.
fn browse(args: &[&str], url: &str) -> String {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1000,2200",
        ])
        .args(args)
        .arg(url)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "headless Chromium is needed (apt-get install chromium, or set RAPPORT_CHROMIUM): {e}"
            )
        });
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_report_renders_its_charts_in_chromium() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let events: Vec<_> = [
        ("a", "This is the worst service ever, I am furious"),
        ("b", "Love the new seasonal blend, great job"),
        ("c", "Is the shop open on Sunday?"),
        ("d", "My order is late again and nobody answers"),
    ]
    .iter()
    .map(|(who, text)| json!({ "id": who, "text": text, "published_at": "2026-11-20T09:00:00Z", "author": { "id": who, "handle": who } }))
    .collect();
    app.import_events(&s, &ws, json!(events)).await;
    let convs = app
        .ok(
            Some(&s.access),
            "query($w: ID!) { conversations(workspaceId: $w) { edges { node { id } } } }",
            json!({ "w": ws }),
        )
        .await;
    let first = edges(&convs["conversations"])[0]["node"]["id"].clone();
    app.ok(
        Some(&s.access),
        "mutation($i: SendReplyInput!) { sendReply(input: $i) { id } }",
        json!({ "i": { "conversationId": first, "visibility": "PUBLIC",
                 "text": "We hear you, and we are sorry: an agent is looking at your order right now." } }),
    )
    .await;
    let now = chrono::Utc::now();
    let url = app
        .ok(
            Some(&s.access),
            "mutation($i: CreateReportShareLinkInput!) { createReportShareLink(input: $i) { url } }",
            json!({ "i": { "workspaceId": ws, "granularity": "HOUR", "timezone": "UTC",
                     "from": (now - chrono::Duration::hours(6)).to_rfc3339(),
                     "to": (now + chrono::Duration::hours(1)).to_rfc3339(),
                     "expiresAt": (now + chrono::Duration::days(1)).to_rfc3339() } }),
        )
        .await["createReportShareLink"]["url"]
        .as_str()
        .unwrap()
        .to_string();

    // Chromium runs blocking; the server keeps serving on the runtime.
    let shot = std::env::temp_dir().join(format!("rapport-report-{}.png", uuid::Uuid::new_v4()));
    let shot_arg = format!("--screenshot={}", shot.display());
    let u = url.clone();
    tokio::task::spawn_blocking(move || browse(&[&shot_arg], &u))
        .await
        .unwrap();
    let png = std::fs::read(&shot).expect("a screenshot was written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (1000, 2200));
    assert!(png.len() > 20_000, "a page with content, not a blank one");
    if let Ok(keep) = std::env::var("RAPPORT_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
    let _ = std::fs::remove_file(&shot);

    let dom = tokio::task::spawn_blocking(move || browse(&["--dump-dom"], &url))
        .await
        .unwrap();
    for chart in [
        "response-time-distribution",
        "volume-by-sentiment",
        "sla-compliance",
    ] {
        assert!(dom.contains(&format!("id=\"{chart}\"")), "{chart} rendered");
    }
    assert!(dom.matches("class=\"bar\"").count() >= 3, "bars drawn");
    assert!(dom.contains("Brew Co"));
    assert!(
        dom.contains("Inbound messages</td><td>4</td>"),
        "figures shown"
    );
}
