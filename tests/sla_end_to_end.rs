//! A response-time promise kept and broken, end to end through real
//! processes: mentions arrive by signed webhook, two `rapport worker`
//! processes ingest them and run the SLA timers, and the agency's webhook
//! receiver gets SLA_WARNING then SLA_BREACHED once each, signed, for the
//! conversation nobody answered, and SLA_MET (and nothing else) for the one
//! answered in time. Takes a little over a minute: the target is 1 minute.

mod common;

use common::*;
use rapport_domain::ingest::signature::{generic_sign, verify_generic};
use serde_json::{Value, json};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const HOOK_SECRET: &str = "agency-hook-secret-1";

/// (event type, signature valid, payload) per request.
type Seen = Arc<Mutex<Vec<(String, bool, Value)>>>;

fn receiver(seen: Seen) -> String {
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let server = HttpServer::new(move || {
        let seen = seen.clone();
        App::new().route(
            "/hook",
            web::post().to(move |req: HttpRequest, body: web::Bytes| {
                let seen = seen.clone();
                async move {
                    let header = |n: &str| {
                        req.headers()
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                    };
                    let valid = verify_generic(
                        HOOK_SECRET.as_bytes(),
                        &body,
                        header("x-rapport-signature").as_deref(),
                        chrono::Utc::now().timestamp(),
                    )
                    .is_ok();
                    seen.lock().unwrap().push((
                        header("x-rapport-event").unwrap_or_default(),
                        valid,
                        serde_json::from_slice(&body).unwrap_or(Value::Null),
                    ));
                    HttpResponse::Ok().finish()
                }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    url
}

struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_minute_promise_warns_breaches_and_is_met_through_real_workers() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    app.default_policy(
        &s,
        &ws,
        json!({ "firstResponseMinutes": 1 }),
        json!({ "name": "One minute", "warnAtPercent": 50 }),
    )
    .await;
    let seen: Seen = Arc::default();
    let url = receiver(seen.clone());
    app.ok(
        Some(&s.access),
        "mutation($i: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $i) { id } }",
        json!({ "i": { "workspaceId": ws, "url": url, "secret": HOOK_SECRET,
                 "events": ["SLA_WARNING", "SLA_BREACHED", "SLA_MET"] } }),
    )
    .await;
    let channel = app
        .ok(
            Some(&s.access),
            "mutation($i: ConnectChannelInput!) { connectChannel(input: $i) { webhookUrl } }",
            json!({ "i": { "workspaceId": ws, "kind": "GENERIC", "name": "reviews", "secret": "generic-secret-9",
                           "callbackUrl": "http://127.0.0.1:9/replies" } }),
        )
        .await["connectChannel"]["webhookUrl"]
        .as_str()
        .unwrap()
        .to_string();
    let _workers = Workers(
        (0..2)
            .map(|_| app.rapport("worker").spawn().unwrap())
            .collect(),
    );

    let body = serde_json::to_vec(&json!({ "events": [
        { "id": "ignored-1", "text": "Ordered a grinder three weeks ago and still nothing", "published_at": "2026-11-28T08:00:00Z",
          "author": { "id": "u-ignored", "handle": "ignored" } },
        { "id": "answered-1", "text": "Is the Main Street shop open on Sunday?", "published_at": "2026-11-28T08:00:00Z",
          "author": { "id": "u-answered", "handle": "answered" } }
    ] }))
    .unwrap();
    let sig = generic_sign(b"generic-secret-9", &body, chrono::Utc::now().timestamp());
    let r = app
        .client
        .post(&channel)
        .header("content-type", "application/json")
        .header("x-rapport-signature", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // Both conversations exist once a worker ingested them.
    let ids = app
        .eventually("two conversations", async || {
            let d = app
                .ok(
                    Some(&s.access),
                    "query($w: ID!) { conversations(workspaceId: $w) { edges { node { id author { handle } } } } }",
                    json!({ "w": ws }),
                )
                .await;
            let e = edges(&d["conversations"]);
            (e.len() == 2).then(|| {
                e.iter()
                    .map(|n| {
                        (
                            n["node"]["author"]["handle"].as_str().unwrap().to_string(),
                            n["node"]["id"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect::<std::collections::HashMap<_, _>>()
            })
        })
        .await;
    // Answered at once, well before the warning (30 s).
    app.ok(
        Some(&s.access),
        "mutation($i: SendReplyInput!) { sendReply(input: $i) { id } }",
        json!({ "i": { "conversationId": ids["answered"], "visibility": "PUBLIC",
                 "text": "Yes, Main Street is open on Sunday from 9 to 5, see you there!" } }),
    )
    .await;

    // The breach lands a minute after receipt, plus timer and delivery lag.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let got = seen.lock().unwrap().clone();
        if got.iter().any(|(k, _, _)| k == "SLA_BREACHED") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no breach delivered: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Anything still in flight (a duplicate would be) has time to arrive.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let got = seen.lock().unwrap().clone();
    assert!(got.iter().all(|(_, valid, _)| *valid), "{got:?}");
    let of = |conv: &str| -> Vec<String> {
        got.iter()
            .filter(|(_, _, p)| p["conversationId"] == conv)
            .map(|(k, _, _)| k.clone())
            .collect()
    };
    assert_eq!(of(&ids["ignored"]), vec!["SLA_WARNING", "SLA_BREACHED"]);
    assert_eq!(of(&ids["answered"]), vec!["SLA_MET"]);
    let breach = got.iter().find(|(k, _, _)| k == "SLA_BREACHED").unwrap();
    assert_eq!(breach.2["target"], "FIRST_RESPONSE");
    let late = chrono::DateTime::parse_from_rfc3339(breach.2["firedAt"].as_str().unwrap()).unwrap()
        - chrono::DateTime::parse_from_rfc3339(breach.2["deadline"].as_str().unwrap()).unwrap();
    assert!(
        late >= chrono::Duration::zero() && late < chrono::Duration::seconds(5),
        "fired {late} after the deadline"
    );
}
