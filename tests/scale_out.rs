//! Scale-out for real: two `rapport serve` and three `rapport worker`
//! processes against one database and one Redis. Webhooks are spread over
//! both API processes while one worker is killed with SIGKILL mid-run;
//! every event is stored once, and both APIs answer the same queries.

mod common;

use common::*;
use rapport_domain::ingest::signature::generic_sign;
use rapport_store::entities::{message, raw_event};
use rapport_store::raw_events::PROCESSED;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use std::process::Child;
use std::time::Duration;

const REQUESTS: usize = 300;
const PER_REQUEST: usize = 10;

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn rapport(app: &TestApp, what: &str, bind: Option<&str>) -> Child {
    let mut cmd = app.rapport(what);
    cmd.env("RAPPORT_CLAIM_IDLE_SECS", "1");
    if let Some(b) = bind {
        cmd.env("RAPPORT_BIND", b)
            .env("RAPPORT_PUBLIC_URL", format!("http://{b}"));
    }
    cmd.spawn().expect("start rapport")
}

fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apis_and_three_workers_lose_and_duplicate_nothing_when_a_worker_dies() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let (_, url) = app.connect_generic(&s, &ws, "load", "generic-secret").await;
    let path = url.trim_start_matches(&app.base).to_string();
    let apis = [free_port(), free_port()];
    let mut procs = Procs(vec![
        rapport(&app, "serve", Some(&apis[0])),
        rapport(&app, "serve", Some(&apis[1])),
    ]);
    for _ in 0..3 {
        procs.0.push(rapport(&app, "worker", None));
    }
    for a in &apis {
        app.eventually(&format!("{a} ready"), async || {
            let r = app
                .client
                .get(format!("http://{a}/readyz"))
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())
        })
        .await;
    }

    let total = (REQUESTS * PER_REQUEST) as u64;
    for r in 0..REQUESTS {
        let events: Vec<Value> = (0..PER_REQUEST)
            .map(|i| {
                let n = r * PER_REQUEST + i;
                json!({ "id": format!("e{n}"), "text": format!("message {n}: where is my order"),
                        "published_at": "2026-11-20T09:00:00Z", "author": { "id": format!("a{}", n % 500) } })
            })
            .collect();
        let body = serde_json::to_vec(&json!({ "events": events })).unwrap();
        let sig = generic_sign(b"generic-secret", &body, chrono::Utc::now().timestamp());
        // Alternate API processes; the platform retries a request once.
        let api = &apis[r % 2];
        let resp = app
            .client
            .post(format!("http://{api}{path}"))
            .header("content-type", "application/json")
            .header("x-rapport-signature", sig)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        if r == REQUESTS / 3 {
            // SIGKILL: the worker gets no chance to finish or acknowledge.
            procs.0[2].kill().unwrap();
            procs.0[2].wait().unwrap();
        }
    }

    // The backlog after the last request, and the killed worker's jobs
    // reclaimed after their visibility timeout: up to two minutes on a busy
    // machine.
    let stored = app
        .eventually_within(120, "every event stored", async || {
            let n = message::Entity::find().count(&app.state.db).await.ok()?;
            (n == total).then_some(n)
        })
        .await;
    assert_eq!(stored, total);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        message::Entity::find().count(&app.state.db).await.unwrap(),
        total,
        "nothing stored twice after the reclaim"
    );
    let unprocessed = raw_event::Entity::find()
        .filter(raw_event::Column::Status.ne(PROCESSED))
        .count(&app.state.db)
        .await
        .unwrap();
    assert_eq!(unprocessed, 0);

    // Both API processes answer alike, with the same token.
    let now = chrono::Utc::now();
    let query = json!({
        "query": "query($w: ID!, $f: DateTime!, $t: DateTime!) { workspaceReport(workspaceId: $w, from: $f, to: $t) { total { inbound conversationsOpened } } }",
        "variables": { "w": ws, "f": (now - chrono::Duration::hours(1)).to_rfc3339(), "t": (now + chrono::Duration::hours(1)).to_rfc3339() }
    });
    let mut counts = Vec::new();
    for a in &apis {
        let v: Value = app
            .client
            .post(format!("http://{a}/graphql"))
            .bearer_auth(&s.access)
            .json(&query)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        counts.push(v["data"]["workspaceReport"]["total"].clone());
    }
    assert_eq!(counts[0], counts[1]);
    assert_eq!(
        counts[0],
        json!({ "inbound": total, "conversationsOpened": 500 }),
        "one conversation per author"
    );
}
