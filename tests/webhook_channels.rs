//! The receiver remembers the channels it took webhooks for and checks the
//! next delivery's signature without reading the channel first; the raw
//! event's insert reads it again. A channel changed since (a new secret, a
//! pause or a disconnection, through the API or behind its back) is read
//! afresh and answered as if nothing were remembered. One test in its own
//! process, so the lookup counters are this test's alone.

mod common;

use common::*;
use rapport_domain::ingest::signature::generic_sign;
use rapport_store::entities::{channel, raw_event};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::json;

/// (lookups answered from memory, lookups read from the database).
async fn lookups(app: &TestApp) -> (u64, u64) {
    let m = app.metrics().await;
    (
        metric_value(&m, "rapport_webhook_channel_lookups_total{from=\"memory\"}"),
        metric_value(
            &m,
            "rapport_webhook_channel_lookups_total{from=\"database\"}",
        ),
    )
}

async fn deliver(app: &TestApp, url: &str, secret: &str, id: &str) -> (u16, String) {
    let body = serde_json::to_vec(&json!({ "events": [{
        "id": id, "text": "where is my order?", "published_at": "2026-11-20T09:00:00Z",
        "author": { "id": "a1" } }] }))
    .unwrap();
    let r = app
        .client
        .post(url)
        .header("content-type", "application/json")
        .header(
            "x-rapport-signature",
            generic_sign(secret.as_bytes(), &body, chrono::Utc::now().timestamp()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v: serde_json::Value = r.json().await.unwrap();
    (status, v["status"].as_str().unwrap_or("").to_string())
}

async fn stored(app: &TestApp) -> u64 {
    raw_event::Entity::find()
        .count(&app.state.db)
        .await
        .unwrap()
}

async fn set_status_behind_the_apis_back(app: &TestApp, id: uuid::Uuid, status: &str) {
    channel::Entity::update_many()
        .col_expr(channel::Column::Status, Expr::value(status))
        .filter(channel::Column::Id.eq(id))
        .exec(&app.state.db)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_channel_is_checked_again_by_the_insert() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let (gid, url) = app.connect_generic(&s, &ws, "own", "old-secret").await;
    // The webhook URL ends with the channel's row id.
    let id: uuid::Uuid = url.rsplit('/').next().unwrap().parse().unwrap();

    // The first delivery reads the channel, the next is checked from memory
    // and stored under the channel's own agency and workspace.
    assert_eq!(
        deliver(&app, &url, "old-secret", "e1").await,
        (200, "accepted".into())
    );
    assert_eq!(lookups(&app).await, (0, 1));
    assert_eq!(
        deliver(&app, &url, "old-secret", "e2").await,
        (200, "accepted".into())
    );
    assert_eq!(
        lookups(&app).await,
        (1, 1),
        "the second delivery read nothing"
    );
    let rows = raw_event::Entity::find().all(&app.state.db).await.unwrap();
    let ch = channel::Entity::find_by_id(id)
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!(
            (r.agency_id, r.workspace_id, r.channel_id, r.status.as_str()),
            (ch.agency_id, ch.workspace_id, id, "PENDING")
        );
        assert!(r.headers.get("x-rapport-signature").is_some());
        assert!(r.headers.get("x-rapport-received-paused").is_none());
    }

    // A platform's retry: the insert stores nothing, the channel is read
    // and the stored event answered.
    assert_eq!(
        deliver(&app, &url, "old-secret", "e2").await,
        (200, "duplicate".into())
    );
    assert_eq!(lookups(&app).await, (2, 2));
    assert_eq!(stored(&app).await, 2);

    // A new secret: the remembered one no longer signs anything.
    app.ok(
        Some(&s.access),
        "mutation($i: UpdateChannelInput!) { updateChannel(input: $i) { hasSecret } }",
        json!({ "i": { "id": gid, "secret": "new-secret" } }),
    )
    .await;
    let before = lookups(&app).await;
    assert_eq!(deliver(&app, &url, "old-secret", "e3").await.0, 401);
    assert_eq!(stored(&app).await, 2, "nothing stored under the old secret");
    assert_eq!(
        deliver(&app, &url, "new-secret", "e3").await,
        (200, "accepted".into())
    );
    assert_eq!(
        lookups(&app).await,
        (before.0 + 2, before.1 + 1),
        "the channel read for the refused request is remembered with its new secret"
    );
    assert_eq!(
        deliver(&app, &url, "new-secret", "e4").await,
        (200, "accepted".into())
    );
    assert_eq!(stored(&app).await, 4);

    // Paused or disconnected behind the API's back (no mutation of this
    // process saw it): the remembered channel is not trusted.
    let before = lookups(&app).await;
    set_status_behind_the_apis_back(&app, id, "PAUSED").await;
    assert_eq!(deliver(&app, &url, "new-secret", "e5").await.0, 409);
    assert_eq!(stored(&app).await, 4, "nothing stored while paused");
    assert_eq!(lookups(&app).await, (before.0 + 1, before.1 + 1));
    set_status_behind_the_apis_back(&app, id, "ACTIVE").await;
    assert_eq!(
        deliver(&app, &url, "new-secret", "e5").await,
        (200, "accepted".into())
    );
    set_status_behind_the_apis_back(&app, id, "DISCONNECTED").await;
    assert_eq!(deliver(&app, &url, "new-secret", "e6").await.0, 410);
    assert_eq!(stored(&app).await, 5);
    let per_channel = raw_event::Entity::find()
        .filter(raw_event::Column::ChannelId.eq(id))
        .count(&app.state.db)
        .await
        .unwrap();
    assert_eq!(per_channel, 5);
}
