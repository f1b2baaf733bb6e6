//! A real `rapport worker` process is killed with SIGKILL in the middle of
//! its work and a new one started: over thousands of events nothing is
//! lost and nothing is stored twice.

mod common;

use common::*;
use rapport_domain::ingest::signature::generic_sign;
use rapport_store::entities::{message, raw_event};
use rapport_store::raw_events::PROCESSED;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::json;
use std::process::Child;
use std::time::Duration;

const REQUESTS: usize = 400;
const PER_REQUEST: usize = 10;

fn worker(app: &TestApp) -> Child {
    app.rapport("worker")
        .env("RAPPORT_CLAIM_IDLE_SECS", "1")
        .spawn()
        .expect("start rapport worker")
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn stored(app: &TestApp) -> u64 {
    message::Entity::find().count(&app.state.db).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_loses_and_duplicates_nothing() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let (_, url) = app.connect_generic(&s, &ws, "load", "generic-secret").await;
    for r in 0..REQUESTS {
        let events: Vec<_> = (0..PER_REQUEST)
            .map(|i| {
                let n = r * PER_REQUEST + i;
                json!({ "id": format!("ev-{n}"), "text": format!("message {n} about the order"),
                        "published_at": "2026-11-20T09:00:00Z", "author": { "id": format!("author-{}", n % 500) } })
            })
            .collect();
        let body = serde_json::to_vec(&json!({ "events": events })).unwrap();
        let sig = generic_sign(b"generic-secret", &body, chrono::Utc::now().timestamp());
        let resp = app
            .client
            .post(&url)
            .header("x-rapport-signature", sig)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let total = (REQUESTS * PER_REQUEST) as u64;

    // Kill the first worker once it is well into the stream.
    let mut first = Killed(worker(&app));
    let mut waited = 0;
    while stored(&app).await < total / 5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
        assert!(waited < 3000, "first worker made no progress");
    }
    first.0.kill().unwrap(); // SIGKILL: no chance to finish or acknowledge
    first.0.wait().unwrap();
    let at_kill = stored(&app).await;
    assert!(at_kill < total, "killed before the end ({at_kill}/{total})");

    let _second = Killed(worker(&app));
    let mut waited = 0;
    loop {
        let done = raw_event::Entity::find()
            .filter(raw_event::Column::Status.eq(PROCESSED))
            .count(&app.state.db)
            .await
            .unwrap();
        if done == REQUESTS as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
        assert!(
            waited < 2400,
            "second worker did not finish: {done}/{REQUESTS} events"
        );
    }
    assert_eq!(stored(&app).await, total, "every event stored exactly once");
}
