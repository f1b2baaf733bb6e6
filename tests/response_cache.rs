//! The response cache (PostgreSQL only): a session's query answered again
//! from memory until anything of its agency changes, whoever changed it.
//! On SQLite there is no cache, and these tests check that answers follow
//! the rows all the same.

mod common;

use common::*;
use rapport_domain::{GlobalId, Kind};
use serde_json::{Value, json};

const LIST: &str = "{ workspaces(first: 10) { nodes { id name } } }";

fn names(d: &Value) -> Vec<String> {
    d["workspaces"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect()
}

fn hits(metrics: &str) -> u64 {
    metric_value(metrics, "rapport_response_cache_total{outcome=\"hit\"}")
}

/// Waits until the cache's listener has connected: until then it keeps
/// nothing (a fresh connection takes a while in a debug build).
async fn cache_listening(app: &TestApp) {
    let cache = app.state.response_cache.clone().expect("on PostgreSQL");
    app.eventually("the response cache listening", async || {
        (cache.answers.is_live() && cache.confirmed().await).then_some(())
    })
    .await;
}

/// Runs `sql` (an UPDATE of workspaces) with that table's change
/// notification off: only a kept answer can then hide the change.
async fn update_unnotified(app: &TestApp, sql: &str) {
    let db = &app.state.db;
    exec(
        db,
        "ALTER TABLE workspaces DISABLE TRIGGER rapport_changes_update",
    )
    .await;
    exec(db, sql).await;
    exec(
        db,
        "ALTER TABLE workspaces ENABLE TRIGGER rapport_changes_update",
    )
    .await;
}

async fn rename_in_sql(app: &TestApp, ws: &str, name: &str) {
    let id = GlobalId::decode(Kind::Workspace, ws).unwrap();
    exec(
        &app.state.db,
        &format!("UPDATE workspaces SET name = '{name}' WHERE id = '{id}'"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_answer_is_served_until_the_agency_changes_whoever_writes() {
    let app = TestApp::start().await;
    let a = app.sign_up("A", "a@cache.test").await;
    let ws = app.create_workspace(&a, "First").await;
    assert_eq!(
        names(&app.ok(Some(&a.access), LIST, json!({})).await),
        ["First"]
    );

    // A mutation through the API is seen by the very next request.
    app.create_workspace(&a, "Second").await;
    assert_eq!(
        names(&app.ok(Some(&a.access), LIST, json!({})).await),
        ["First", "Second"]
    );
    if !is_postgres() {
        return;
    }
    cache_listening(&app).await;
    // And a write outside the API (here plain SQL, as the worker or an
    // operator would).
    rename_in_sql(&app, &ws, "Renamed").await;
    assert_eq!(
        names(&app.ok(Some(&a.access), LIST, json!({})).await),
        ["Renamed", "Second"]
    );
    // The answer is really kept: with the change feed's trigger off, a
    // change goes unseen until the answer expires. (Settings' TTL: 500 ms.)
    let before = hits(&app.metrics().await);
    app.ok(Some(&a.access), LIST, json!({})).await;
    update_unnotified(
        &app,
        "UPDATE workspaces SET name = 'Unseen' WHERE name = 'Renamed'",
    )
    .await;
    let served = names(&app.ok(Some(&a.access), LIST, json!({})).await);
    assert_eq!(served, ["Renamed", "Second"], "served from memory");
    assert!(hits(&app.metrics().await) > before, "counted as a hit");
    // After the TTL the rows are read again.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(
        names(&app.ok(Some(&a.access), LIST, json!({})).await),
        ["Unseen", "Second"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_never_shared_between_sessions_or_agencies() {
    let app = TestApp::start().await;
    let a = app.sign_up("A", "a@share.test").await;
    let b = app.sign_up("B", "b@share.test").await;
    let a1 = app.create_workspace(&a, "A1").await;
    app.create_workspace(&a, "A2").await;
    app.create_workspace(&b, "B1").await;
    let (viewer, _) = app
        .add_member(&a, "v@share.test", "CLIENT_VIEWER", Some(vec![a1]))
        .await;
    for _ in 0..2 {
        assert_eq!(
            names(&app.ok(Some(&a.access), LIST, json!({})).await),
            ["A1", "A2"]
        );
        assert_eq!(
            names(&app.ok(Some(&b.access), LIST, json!({})).await),
            ["B1"]
        );
        assert_eq!(
            names(&app.ok(Some(&viewer.access), LIST, json!({})).await),
            ["A1"]
        );
    }
    // The same body asking for the other media type gets its own answer.
    let resp = app
        .client
        .post(format!("{}/graphql", app.base))
        .header("content-type", "application/json")
        .header("accept", "application/graphql-response+json")
        .bearer_auth(&a.access)
        .body(serde_json::to_vec(&json!({ "query": LIST, "variables": {} })).unwrap())
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/graphql-response+json")
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(names(&body["data"]), ["A1", "A2"]);

    // A revoked session is refused, not answered from memory.
    app.ok(Some(&b.access), "mutation { logout }", json!({}))
        .await;
    let r = app.gql(Some(&b.access), LIST, json!({})).await;
    assert_eq!(code(&r), Some("UNAUTHENTICATED"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutations_and_errors_are_never_answered_from_memory() {
    let app = TestApp::start().await;
    let a = app.sign_up("A", "a@mut.test").await;
    let create = "mutation { createWorkspace(input: {name: \"Same\", timezone: \"UTC\"}) { id } }";
    app.ok(Some(&a.access), create, json!({})).await;
    // Run again, not answered from memory: the name is taken now.
    let again = app.gql(Some(&a.access), create, json!({})).await;
    assert_eq!(code(&again), Some("BAD_USER_INPUT"), "{again}");
    if is_postgres() {
        // A document with a query and a mutation, running the query: the
        // answer is not kept (the next run could pick the mutation). With
        // the change unnotified, only a kept answer would hide it.
        cache_listening(&app).await;
        let both = "query Q { workspaces(first: 5) { nodes { name } } } \
                    mutation M { createWorkspace(input: {name: \"Other\", timezone: \"UTC\"}) { id } }";
        let body = serde_json::to_vec(&json!({ "query": both, "operationName": "Q" })).unwrap();
        for _ in 0..2 {
            let r: Value = app
                .post_raw(Some(&a.access), body.clone())
                .await
                .json()
                .await
                .unwrap();
            assert_eq!(names(&r["data"]), ["Same"]);
        }
        update_unnotified(&app, "UPDATE workspaces SET name = 'Changed'").await;
        let r: Value = app
            .post_raw(Some(&a.access), body)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(names(&r["data"]), ["Changed"], "not answered from memory");
    }

    // An error is never kept.
    let missing = "query($id: ID!) { workspace(id: $id) { name } }";
    let id = GlobalId::encode(Kind::Workspace, uuid::Uuid::new_v4());
    for _ in 0..2 {
        let r = app.gql(Some(&a.access), missing, json!({ "id": id })).await;
        assert_eq!(code(&r), Some("NOT_FOUND"), "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tenant_table_and_users_notify_their_changes() {
    if !is_postgres() {
        return;
    }
    let app = TestApp::start().await;
    use sea_orm::{ConnectionTrait, Statement};
    // Every table holding agency rows (sessions aside: authentication reads
    // them before the cache), the agencies and the users.
    let rows = app
        .state
        .db
        .query_all_raw(Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT c.table_name::text AS t FROM information_schema.columns c \
             JOIN information_schema.tables t USING (table_schema, table_name) \
             WHERE c.table_schema = current_schema() AND c.column_name = 'agency_id' \
             AND t.table_type = 'BASE TABLE' AND c.table_name <> 'sessions' \
             UNION SELECT 'agencies' UNION SELECT 'users'",
        ))
        .await
        .unwrap();
    assert!(rows.len() > 20, "{} tables", rows.len());
    for r in rows {
        let table: String = r.try_get("", "t").unwrap();
        let row = app
            .state
            .db
            .query_one_raw(Statement::from_string(
                sea_orm::DbBackend::Postgres,
                format!(
                    "SELECT count(*)::bigint AS n FROM pg_trigger \
                     WHERE tgrelid = '{table}'::regclass AND tgname LIKE 'rapport_changes_%'"
                ),
            ))
            .await
            .unwrap()
            .unwrap();
        let n: i64 = row.try_get("", "n").unwrap();
        assert_eq!(n, 4, "{table}: insert, update, delete and truncate notify");
    }
    // TRUNCATE forgets every agency's answers.
    cache_listening(&app).await;
    let a = app.sign_up("A", "a@trunc.test").await;
    app.create_workspace(&a, "Kept").await;
    assert_eq!(
        names(&app.ok(Some(&a.access), LIST, json!({})).await),
        ["Kept"]
    );
    exec(&app.state.db, "TRUNCATE membership_workspaces").await;
    update_unnotified(&app, "UPDATE workspaces SET name = 'Seen'").await;
    // The rename alone notified nothing; the TRUNCATE before it did.
    assert_eq!(
        names(&app.ok(Some(&a.access), LIST, json!({})).await),
        ["Seen"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_raw_event_notifies_nothing_and_a_dead_letter_does() {
    if !is_postgres() {
        return;
    }
    use sea_orm::sqlx::postgres::PgListener;
    let app = TestApp::start().await;
    let s = app.sign_up("A", "a@raw.test").await;
    let ws = app.create_workspace(&s, "W").await;
    let d = app
        .ok(
            Some(&s.access),
            "mutation($i: ConnectChannelInput!) { connectChannel(input: $i) { webhookUrl } }",
            json!({ "i": { "workspaceId": ws, "kind": "GENERIC", "name": "g", "secret": "generic-secret" } }),
        )
        .await;
    let url = d["connectChannel"]["webhookUrl"]
        .as_str()
        .unwrap()
        .to_string();
    let mut listener = PgListener::connect_with(app.state.db.get_postgres_connection_pool())
        .await
        .unwrap();
    listener
        .listen(rapport_store::CHANGE_CHANNEL)
        .await
        .unwrap();

    // No worker runs: the delivery leaves one PENDING raw event, and the
    // receiver's commit notifies nothing (no notification lock taken).
    app.deliver_generic(
        &url,
        json!([{ "id": "e1", "text": "hi", "author": { "id": "a" } }]),
    )
    .await;
    // The API's own listener probes and marks on the same channel: only
    // agency IDs are changes.
    async fn next_change(listener: &mut PgListener, within: std::time::Duration) -> Option<String> {
        tokio::time::timeout(within, async {
            loop {
                let n = listener.recv().await.unwrap();
                if uuid::Uuid::parse_str(n.payload()).is_ok() {
                    return n.payload().to_string();
                }
            }
        })
        .await
        .ok()
    }
    let quiet = next_change(&mut listener, std::time::Duration::from_millis(300)).await;
    assert_eq!(quiet, None, "a PENDING raw event notified");

    // Turning it into a dead letter (which `deadLetters` shows) notifies.
    exec(&app.state.db, "UPDATE raw_events SET status = 'FAILED'").await;
    let agency = GlobalId::decode(Kind::Agency, &s.agency_id).unwrap();
    assert_eq!(
        next_change(&mut listener, std::time::Duration::from_secs(5)).await,
        Some(agency.to_string())
    );
}

/// The gauge `/metrics` shows for PostgreSQL's notification queue (read
/// at most once a second per process), or None when absent.
async fn queue_usage(app: &TestApp) -> Option<f64> {
    app.metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix("rapport_pg_notification_queue_usage "))
        .map(|v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_how_full_the_notification_queue_is() {
    let app = TestApp::start().await;
    if !is_postgres() {
        assert_eq!(queue_usage(&app).await, None, "SQLite has no such queue");
        return;
    }
    use sea_orm::sqlx::{AssertSqlSafe, raw_sql};
    // A listener that stopped reading: a backend inside a transaction
    // takes no notifications until it ends, so the queue keeps them.
    let pool = app.state.db.get_postgres_connection_pool();
    let channel = format!("stalled_{}", uuid::Uuid::new_v4().simple());
    let mut stalled = pool.acquire().await.unwrap();
    // Two round trips: a LISTEN takes effect when its transaction commits.
    raw_sql(AssertSqlSafe(format!("LISTEN {channel}")))
        .execute(&mut *stalled)
        .await
        .unwrap();
    raw_sql("BEGIN").execute(&mut *stalled).await.unwrap();
    // Other tests' listeners read theirs at once; ours holds the tail back
    // (the queue is the server's), past a page of 8 kB.
    for _ in 0..20 {
        exec(
            &app.state.db,
            &format!("SELECT pg_notify('{channel}', repeat('x', 4000))"),
        )
        .await;
    }
    let held = app
        .eventually("the queue's usage above zero", async || {
            queue_usage(&app).await.filter(|u| *u > 0.0)
        })
        .await;
    assert!(held < 0.01, "a few pages of the queue's million: {held}");

    // Reading again (the transaction ends) frees the queue. PostgreSQL
    // moves the queue's tail when the last listener leaves, or when later
    // notifications fill pages: the loop sends some.
    raw_sql("COMMIT; UNLISTEN *")
        .execute(&mut *stalled)
        .await
        .unwrap();
    app.eventually("the queue emptied", async || {
        exec(
            &app.state.db,
            &format!("SELECT pg_notify('{channel}', repeat('x', 4000))"),
        )
        .await;
        queue_usage(&app).await.filter(|u| *u < held)
    })
    .await;
}
