//! Three `rapport worker` processes share the SLA timers: each due timer
//! fires exactly once.

mod common;

use common::*;
use rapport_store::entities::{conversation, sla_event};
use sea_orm::sea_query::Expr;
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::json;
use std::process::Child;
use std::time::Duration;

const N: usize = 300;

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
async fn three_worker_processes_fire_each_timer_exactly_once() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    app.default_policy(&s, &ws, json!({ "firstResponseMinutes": 60 }), json!({}))
        .await;
    let events: Vec<_> = (0..N)
        .map(|i| json!({ "id": format!("m{i}"), "text": "where is my order", "published_at": "2026-11-20T09:00:00Z", "author": { "id": format!("a{i}") } }))
        .collect();
    app.import_events(&s, &ws, json!(events)).await;
    // Every first-response deadline has just passed.
    let past = chrono::Utc::now() - chrono::Duration::seconds(2);
    conversation::Entity::update_many()
        .col_expr(conversation::Column::FirstResponseDueAt, Expr::value(past))
        .col_expr(conversation::Column::DueAt, Expr::value(past))
        .exec(&app.state.db)
        .await
        .unwrap();
    // No timers in Redis yet for these deadlines: the workers rebuild them
    // from the database at start, then race to fire them.
    let _: () = redis::cmd("DEL")
        .arg(app.state.kv.key(rapport_store::sla::TIMERS))
        .query_async(&mut app.state.kv.conn())
        .await
        .unwrap();
    let _workers = Workers(
        (0..3)
            .map(|_| app.rapport("worker").spawn().unwrap())
            .collect(),
    );
    let count = async || {
        sla_event::Entity::find()
            .count(&app.state.db)
            .await
            .unwrap()
    };
    let mut waited = 0;
    while count().await < N as u64 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
        // Up to 90 s: a batch that failed (a busy database) fires again
        // only once its 30 s lease runs out.
        assert!(waited < 900, "only {} of {N} breaches fired", count().await);
    }
    // Give any double-firing a chance to show, then count again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = sla_event::Entity::find().all(&app.state.db).await.unwrap();
    assert_eq!(all.len(), N, "each timer fired exactly once");
    assert!(
        all.iter()
            .all(|e| e.kind == "SLA_BREACHED" && e.target == "FIRST_RESPONSE")
    );
    let claimed: usize = redis::cmd("ZCARD")
        .arg(app.state.kv.key(rapport_store::sla::CLAIMED))
        .query_async(&mut app.state.kv.conn())
        .await
        .unwrap();
    assert_eq!(claimed, 0, "every claim released");
}
