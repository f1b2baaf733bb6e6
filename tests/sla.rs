//! Response-time promises: calendars and policies through GraphQL,
//! deadlines given to new conversations (and kept when policies change),
//! and warnings and breaches fired exactly once, surviving a Redis flush
//! and a crashed worker.

mod common;

use common::*;
use rapport_store::entities::{conversation, sla_event};
use rapport_store::sla;
use rapport_worker::sla::{Fired, SlaConfig};
use sea_orm::{ActiveModelTrait, EntityTrait, IntoActiveModel, PaginatorTrait, QueryOrder, Set};
use serde_json::{Value, json};

const POLICY: &str = "mutation($i: CreateSlaPolicyInput!) { createSlaPolicy(input: $i) { id name position isDefault targets { urgent { firstResponseMinutes } } } }";

async fn import(app: &TestApp, s: &Session, ws: &str, id: &str, followers: u64) {
    app.import_events(s, ws, json!([{ "id": id, "text": "my order is late, not happy", "published_at": "2026-11-20T09:00:00Z",
                 "author": { "id": format!("author-{id}"), "followers": followers } }])).await;
}

async fn convs(app: &TestApp, s: &Session, ws: &str) -> Vec<Value> {
    let d = app
        .ok(
            Some(&s.access),
            "query($w: ID!) { conversations(workspaceId: $w, orderBy: NEWEST, first: 50) { edges { node {
                id createdAt dueAt author { handle } sla { policy { name } firstResponseDue resolutionDue status remainingMinutes } } } } }",
            json!({ "w": ws }),
        )
        .await;
    edges(&d["conversations"])
        .into_iter()
        .map(|e| e["node"].clone())
        .collect()
}

/// The workspace's one conversation, its first response due `ago` in the
/// past (as time would have it), as stored then.
async fn first_response_overdue(app: &TestApp, ago: chrono::Duration) -> conversation::Model {
    let c = conversation::Entity::find()
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    let mut am = c.into_active_model();
    am.first_response_due_at = Set(Some(chrono::Utc::now() - ago));
    am.update(&app.state.db).await.unwrap()
}

fn minutes_between(a: &Value, b: &Value) -> i64 {
    let p = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    (p(b) - p(a)).num_seconds() / 60
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_give_new_conversations_deadlines_and_changes_apply_forward() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let all = |m: i64| json!({ "firstResponseMinutes": m, "resolutionMinutes": m * 8 });
    let targets =
        |m: i64| json!({ "urgent": all(m), "high": all(m), "normal": all(m), "low": all(m) });
    let d = app.ok(Some(&s.access), POLICY, json!({ "i": { "workspaceId": ws, "name": "Standard", "isDefault": true, "targets": targets(60) } })).await;
    let default_id = d["createSlaPolicy"]["id"].as_str().unwrap().to_string();
    app.ok(
        Some(&s.access),
        POLICY,
        json!({ "i": { "workspaceId": ws, "name": "VIP", "conditions": { "authorMinFollowers": 10000 }, "targets": targets(15) } }),
    )
    .await;

    import(&app, &s, &ws, "quiet", 10).await;
    import(&app, &s, &ws, "loud", 50_000).await;
    let cs = convs(&app, &s, &ws).await;
    let by = |h: &str| {
        cs.iter()
            .find(|c| c["author"]["handle"] == format!("author-{h}"))
            .unwrap()
            .clone()
    };
    let (quiet, loud) = (by("quiet"), by("loud"));
    assert_eq!(quiet["sla"]["policy"]["name"], "Standard");
    assert_eq!(loud["sla"]["policy"]["name"], "VIP");
    assert_eq!(
        minutes_between(&quiet["createdAt"], &quiet["sla"]["firstResponseDue"]),
        60
    );
    assert_eq!(
        minutes_between(&loud["createdAt"], &loud["sla"]["firstResponseDue"]),
        15
    );
    assert_eq!(
        minutes_between(&loud["createdAt"], &loud["sla"]["resolutionDue"]),
        120
    );
    assert_eq!(loud["sla"]["status"], "ON_TRACK");
    assert!(loud["sla"]["remainingMinutes"].as_f64().unwrap() > 14.0);
    assert_eq!(loud["dueAt"], loud["sla"]["firstResponseDue"]);

    // A changed policy applies to conversations opened afterwards only.
    app.ok(
        Some(&s.access),
        "mutation($i: UpdateSlaPolicyInput!) { updateSlaPolicy(input: $i) { id } }",
        json!({ "i": { "id": default_id, "targets": targets(30) } }),
    )
    .await;
    import(&app, &s, &ws, "later", 10).await;
    let cs = convs(&app, &s, &ws).await;
    let by = |h: &str| {
        cs.iter()
            .find(|c| c["author"]["handle"] == format!("author-{h}"))
            .unwrap()
            .clone()
    };
    assert_eq!(
        minutes_between(
            &by("quiet")["createdAt"],
            &by("quiet")["sla"]["firstResponseDue"]
        ),
        60
    );
    assert_eq!(
        minutes_between(
            &by("later")["createdAt"],
            &by("later")["sla"]["firstResponseDue"]
        ),
        30
    );

    // Order, delete, list.
    let list = "query($w: ID!) { slaPolicies(workspaceId: $w) { name isDefault } }";
    let names = app.ok(Some(&s.access), list, json!({ "w": ws })).await;
    assert_eq!(
        names["slaPolicies"],
        json!([{ "name": "VIP", "isDefault": false }, { "name": "Standard", "isDefault": true }])
    );
    let r = app
        .gql(Some(&s.access), POLICY, json!({ "i": { "workspaceId": ws, "name": "Bad", "targets": { "urgent": { "firstResponseMinutes": 0 } } } }))
        .await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"));
    let r = app
        .gql(Some(&s.access), POLICY, json!({ "i": { "workspaceId": ws, "name": "Hours", "businessHours": true, "targets": targets(5) } }))
        .await;
    assert_eq!(
        code(&r),
        Some("BAD_USER_INPUT"),
        "business hours need a calendar"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn business_calendars_are_validated_and_count_only_open_hours() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let q = "mutation($i: CreateBusinessCalendarInput!) { createBusinessCalendar(input: $i) { id timezone weeklyHours { day opens closes } holidays { date month day } } }";
    let week: Vec<Value> = ["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY"]
        .iter()
        .map(|d| json!({ "day": d, "opens": "09:00", "closes": "17:00" }))
        .collect();
    for (field, bad) in [
        (
            "timezone",
            json!({ "workspaceId": ws, "name": "x", "timezone": "Nowhere/City", "weeklyHours": week }),
        ),
        (
            "weeklyHours",
            json!({ "workspaceId": ws, "name": "x", "timezone": "UTC", "weeklyHours": [{ "day": "MONDAY", "opens": "9am", "closes": "17:00" }] }),
        ),
        (
            "weeklyHours",
            json!({ "workspaceId": ws, "name": "x", "timezone": "UTC", "weeklyHours": [{ "day": "FUNDAY", "opens": "09:00", "closes": "17:00" }] }),
        ),
        (
            "holidays",
            json!({ "workspaceId": ws, "name": "x", "timezone": "UTC", "weeklyHours": week, "holidays": [{ "month": 2, "day": 30 }] }),
        ),
        // Never open: a business-hours policy on it gave no deadline at all.
        (
            "weeklyHours",
            json!({ "workspaceId": ws, "name": "x", "timezone": "UTC", "weeklyHours": [] }),
        ),
        (
            "holidays",
            json!({ "workspaceId": ws, "name": "x", "timezone": "UTC", "weeklyHours": week,
                    "holidays": [{ "month": 1, "day": 1, "name": "x".repeat(5000) }] }),
        ),
    ] {
        let r = app.gql(Some(&s.access), q, json!({ "i": bad })).await;
        assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{field}: {r}");
        assert_eq!(r["errors"][0]["extensions"]["field"], field);
    }
    // Every day closed except one minute-long window far away: a 60-minute
    // target on business hours lands well beyond 60 wall-clock minutes.
    let d = app
        .ok(Some(&s.access), q, json!({ "i": { "workspaceId": ws, "name": "Office", "timezone": "Europe/Berlin", "weeklyHours": week,
             "holidays": [{ "date": "2026-12-25", "name": "Christmas" }, { "month": 1, "day": 1 }] } }))
        .await;
    let cal = d["createBusinessCalendar"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        d["createBusinessCalendar"]["holidays"][1],
        json!({ "date": null, "month": 1, "day": 1 })
    );
    app.default_policy(
        &s,
        &ws,
        json!({ "firstResponseMinutes": 60 }),
        json!({ "name": "Office hours", "businessHours": true, "calendarId": cal }),
    )
    .await;
    import(&app, &s, &ws, "c1", 10).await;
    let c = convs(&app, &s, &ws).await.remove(0);
    let due = chrono::DateTime::parse_from_rfc3339(c["sla"]["firstResponseDue"].as_str().unwrap())
        .unwrap();
    let berlin = due.with_timezone(&chrono_tz::Europe::Berlin);
    use chrono::Datelike;
    assert!(
        berlin.weekday().num_days_from_monday() < 5,
        "due on a weekday: {berlin}"
    );
    // After opening (to the second: imported between 16:00 and 16:01 it is
    // due at 09:00:xx the next working day), not after closing.
    let t = berlin.time();
    assert!(
        t > chrono::NaiveTime::from_hms_opt(9, 0, 0).unwrap()
            && t <= chrono::NaiveTime::from_hms_opt(17, 0, 0).unwrap(),
        "due within opening hours: {berlin}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_and_breaches_fire_exactly_once_even_after_a_redis_flush_or_a_crash() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let t = json!({ "firstResponseMinutes": 60, "resolutionMinutes": 600 });
    app.default_policy(&s, &ws, t, json!({})).await;
    import(&app, &s, &ws, "late", 10).await;
    import(&app, &s, &ws, "fine", 10).await;

    // Move the first conversation's first-response deadline into the past,
    // as time would, keeping its warning before it.
    let mut rows = conversation::Entity::find()
        .all(&app.state.db)
        .await
        .unwrap();
    rows.sort_by_key(|c| c.created_at);
    let late = rows[0].clone();
    let past = chrono::Utc::now() - chrono::Duration::seconds(90);
    let mut snap: sla::Snapshot = late.sla_targets.clone().unwrap();
    snap.warn.insert(
        "FIRST_RESPONSE".into(),
        past - chrono::Duration::minutes(15),
    );
    let mut am = late.clone().into_active_model();
    am.first_response_due_at = Set(Some(past));
    am.sla_targets = Set(Some(snap));
    am.update(&app.state.db).await.unwrap();

    let engine = |lease_ms: u64| {
        app.sla_engine_with(SlaConfig {
            lease: std::time::Duration::from_millis(lease_ms),
            ..Default::default()
        })
    };
    let e = engine(30_000);
    assert!(
        e.rebuild().await.unwrap() >= 4,
        "timers rebuilt from the database"
    );
    e.tick().await.unwrap();
    let events = || async { sla_event::Entity::find().all(&app.state.db).await.unwrap() };
    let fired = events().await;
    let mut kinds: Vec<(String, String)> = fired
        .iter()
        .map(|e| (e.kind.clone(), e.target.clone()))
        .collect();
    kinds.sort();
    // Both timers were due at once (as after workers were down): the
    // warning, caught up after its deadline, warns of nothing and is
    // dropped; the breach says it.
    assert_eq!(kinds, [("SLA_BREACHED".into(), "FIRST_RESPONSE".into())]);
    let breach = fired.iter().find(|e| e.kind == "SLA_BREACHED").unwrap();
    assert!(
        breach.lateness_ms >= 30_000,
        "lateness measured: {}",
        breach.lateness_ms
    );

    // Redis loses everything; the rebuild brings the timers back, and
    // firing them again records nothing new.
    let _: () = redis::cmd("DEL")
        .arg(app.state.kv.key(sla::TIMERS))
        .query_async(&mut app.state.kv.conn())
        .await
        .unwrap();
    e.rebuild().await.unwrap();
    // Neither the recorded breach nor the warning too late to send is
    // scheduled again (they would be locked and dropped at every rebuild).
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(app.state.kv.key(sla::TIMERS))
        .arg(0)
        .arg(-1)
        .query_async(&mut app.state.kv.conn())
        .await
        .unwrap();
    let of_late: Vec<&String> = members
        .iter()
        .filter(|m| m.starts_with(&format!("{}|FIRST_RESPONSE|", late.id)))
        .collect();
    assert!(of_late.is_empty(), "{of_late:?}");
    e.tick().await.unwrap();
    assert_eq!(events().await.len(), 1, "exactly once");
    let timer = sla::Timer {
        conversation: late.id,
        target: rapport_domain::sla::Target::FirstResponse,
        breach: true,
        cycle: 0,
        deadline: past,
    };
    assert_eq!(e.fire(&timer).await.unwrap(), Fired::AlreadyRecorded);

    // A worker that claims a timer and dies: the lease runs out, another fires it.
    let _: () = redis::cmd("DEL")
        .arg(app.state.kv.key(sla::TIMERS))
        .query_async(&mut app.state.kv.conn())
        .await
        .unwrap();
    sla_event::Entity::delete_many()
        .exec(&app.state.db)
        .await
        .unwrap();
    e.rebuild().await.unwrap();
    let claimed = sla::claim_due(&app.state.kv, chrono::Utc::now(), 100, 60_000)
        .await
        .unwrap();
    assert_eq!(
        claimed.len(),
        1,
        "the crashed worker took the due breach (the warning, too late, is not scheduled)"
    );
    assert_eq!(
        engine(200).tick().await.unwrap(),
        0,
        "claimed timers are not fired twice"
    );
    // The crashed worker's lease runs out (its claims' expiry moved into
    // the past rather than waited for): the next tick fires them.
    for member in &claimed {
        let _: () = redis::cmd("ZADD")
            .arg(app.state.kv.key(sla::CLAIMED))
            .arg("XX")
            .arg(chrono::Utc::now().timestamp_millis() - 1)
            .arg(member)
            .query_async(&mut app.state.kv.conn())
            .await
            .unwrap();
    }
    engine(30_000).tick().await.unwrap();
    assert_eq!(events().await.len(), 1, "fired later, not never");

    // The API lists them.
    let d = app
        .ok(Some(&s.access), "query($w: ID!) { slaEvents(workspaceId: $w) { edges { node { kind target conversationId latenessMs } } } }", json!({ "w": ws }))
        .await;
    assert_eq!(edges(&d["slaEvents"]).len(), 1);
    assert_eq!(
        sla_event::Entity::find()
            .count(&app.state.db)
            .await
            .unwrap(),
        1
    );
    let status = convs(&app, &s, &ws).await;
    assert!(
        status.iter().any(|c| c["sla"]["status"] == "BREACHED"),
        "{status:?}"
    );
    assert!(status.iter().any(|c| c["sla"]["status"] == "ON_TRACK"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_inbox_across_workspaces_in_due_order_without_weakening_isolation() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let other = app.sign_up("Other", "o@other.test").await;
    let w1 = app.create_workspace(&s, "Brew Co").await;
    let w2 = app.create_workspace(&s, "Bean Bros").await;
    let w3 = app.create_workspace(&other, "Elsewhere").await;
    let targets = |m: i64| {
        let t = json!({ "firstResponseMinutes": m });
        json!({ "urgent": t, "high": t, "normal": t, "low": t })
    };
    app.ok(Some(&s.access), POLICY, json!({ "i": { "workspaceId": w1, "name": "Slow", "isDefault": true, "targets": targets(240) } })).await;
    app.ok(Some(&s.access), POLICY, json!({ "i": { "workspaceId": w2, "name": "Fast", "isDefault": true, "targets": targets(15) } })).await;
    import(&app, &s, &w1, "one", 10).await;
    import(&app, &s, &w2, "two", 10).await;
    import(&app, &other, &w3, "three", 10).await;
    let q =
        "{ inbox(first: 10) { edges { node { author { handle } workspace { name } dueAt } } } }";
    let names = |d: &Value| -> Vec<String> {
        edges(&d["inbox"])
            .iter()
            .map(|e| e["node"]["workspace"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let d = app.ok(Some(&s.access), q, json!({})).await;
    assert_eq!(
        names(&d),
        ["Bean Bros", "Brew Co"],
        "the earliest deadline first, across brands"
    );
    let (agent, _) = app
        .add_member(&s, "agent@acme.test", "AGENT", Some(vec![w1.clone()]))
        .await;
    assert_eq!(
        names(&app.ok(Some(&agent.access), q, json!({})).await),
        ["Brew Co"]
    );
    assert_eq!(
        names(&app.ok(Some(&other.access), q, json!({})).await),
        ["Elsewhere"]
    );
    let d = app
        .ok(
            Some(&s.access),
            "{ inbox(orderBy: PRIORITY, filter: { search: \"late\" }) { edges { cursor } } }",
            json!({}),
        )
        .await;
    assert_eq!(edges(&d["inbox"]).len(), 2);

    // A page reads the JSON columns (breakdown, SLA snapshot) only when a
    // field asks for them, through `edges`, `nodes` or a fragment; what it
    // shows matches the conversation read whole.
    let full = "id priority priorityScore dueAt author { handle }
        priorityBreakdown { sentiment reach visibility urgency urgencyMatches score level }
        sla { status firstResponseDue nextResponseDue resolutionDue remainingMinutes }";
    let d = app
        .ok(
            Some(&s.access),
            &format!(
                "{{ a: inbox(orderBy: PRIORITY) {{ nodes {{ ...F }} }}
                    b: inbox(orderBy: PRIORITY) {{ edges {{ node {{ id priority author {{ handle }} }} }} }}
                    c: inbox(orderBy: PRIORITY) {{ edges {{ node {{ sla {{ status }} }} }} }} }}
                 fragment F on Conversation {{ {full} }}"
            ),
            json!({}),
        )
        .await;
    let listed = d["a"]["nodes"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    for (c, light) in listed.iter().zip(edges(&d["b"])) {
        let one = app
            .ok(
                Some(&s.access),
                &format!("query($id: ID!) {{ conversation(id: $id) {{ {full} }} }}"),
                json!({ "id": c["id"] }),
            )
            .await;
        let mut one = one["conversation"].clone();
        let mut c = c.clone();
        // The time left moves between the two reads.
        for x in [&mut one, &mut c] {
            assert!(x["sla"]["remainingMinutes"].as_f64().unwrap() > 0.0, "{x}");
            x["sla"]["remainingMinutes"] = Value::Null;
        }
        assert_eq!(c, one);
        assert!(
            c["priorityBreakdown"]["score"].as_f64().unwrap() > 0.0,
            "{c}"
        );
        assert_eq!(light["node"]["id"], c["id"]);
        assert_eq!(light["node"]["author"], c["author"]);
    }
    let statuses = |nodes: Vec<&Value>| -> Vec<Value> {
        nodes.iter().map(|n| n["sla"]["status"].clone()).collect()
    };
    let with_sla_only = edges(&d["c"]);
    assert_eq!(
        statuses(with_sla_only.iter().map(|e| &e["node"]).collect()),
        statuses(listed.iter().collect()),
    );
    assert!(
        with_sla_only
            .iter()
            .all(|e| e["node"]["sla"]["status"] == "ON_TRACK")
    );
    // Each page read what its fields needed: nothing was read twice (in
    // this whole test process, where no test should cause a re-read).
    let metrics = app.metrics().await;
    assert!(
        !metrics.contains("rapport_conversation_rereads_total"),
        "{metrics}"
    );
}

/// A receiver that fails the first `fail` requests, then accepts; records
/// (delivery id, signature valid, status answered).
#[derive(Clone, Default)]
struct Receiver {
    fail: usize,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, bool, u16)>>>,
}

impl Receiver {
    fn start(&self, secret: &'static str) -> String {
        use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
        let me = self.clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let server = HttpServer::new(move || {
            let me = me.clone();
            App::new().route(
                "/hook",
                web::post().to(move |req: HttpRequest, body: web::Bytes| {
                    let me = me.clone();
                    async move {
                        let sig = req
                            .headers()
                            .get("x-rapport-signature")
                            .and_then(|v| v.to_str().ok());
                        let valid = rapport_domain::ingest::signature::verify_generic(
                            secret.as_bytes(),
                            &body,
                            sig,
                            chrono::Utc::now().timestamp(),
                        )
                        .is_ok();
                        let id = req
                            .headers()
                            .get("x-rapport-delivery")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let mut seen = me.seen.lock().unwrap();
                        let status = if seen.len() < me.fail { 503 } else { 200 };
                        seen.push((id, valid, status));
                        if status == 200 {
                            HttpResponse::Ok().finish()
                        } else {
                            HttpResponse::ServiceUnavailable().finish()
                        }
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaches_are_delivered_signed_to_webhooks_with_retries() {
    use rapport_store::entities::webhook_delivery;
    use rapport_worker::deliveries::{Deliverer, DeliveryConfig};
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let t = json!({ "firstResponseMinutes": 60 });
    app.default_policy(&s, &ws, t, json!({})).await;
    let receiver = Receiver {
        fail: 2,
        ..Default::default()
    };
    let url = receiver.start("hook-secret-123");
    let bad = app
        .gql(Some(&s.access), "mutation($i: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $i) { id } }",
             json!({ "i": { "workspaceId": ws, "url": url, "events": ["SLA_EXPLODED"], "secret": "hook-secret-123" } }))
        .await;
    assert_eq!(code(&bad), Some("BAD_USER_INPUT"));
    app.ok(
        Some(&s.access),
        "mutation($i: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $i) { id } }",
        json!({ "i": { "workspaceId": ws, "url": url, "events": ["SLA_BREACHED"], "secret": "hook-secret-123" } }),
    )
    .await;
    import(&app, &s, &ws, "late", 10).await;
    first_response_overdue(&app, chrono::Duration::seconds(5)).await;
    let engine = app.sla_engine();
    engine.rebuild().await.unwrap();
    engine.tick().await.unwrap();
    engine.rebuild().await.unwrap();
    engine.tick().await.unwrap();
    assert_eq!(
        webhook_delivery::Entity::find()
            .count(&app.state.db)
            .await
            .unwrap(),
        1,
        "one breach, one delivery (warnings not subscribed)"
    );

    let cfg = DeliveryConfig {
        backoff: rapport_domain::retry::Backoff {
            base: std::time::Duration::from_millis(50),
            max: std::time::Duration::from_secs(1),
            max_attempts: 10,
        },
        allow_private: true,
        ..Default::default()
    };
    let deliverer = Deliverer::new(app.state.db.clone(), app.state.secrets.clone(), cfg).unwrap();
    for _ in 0..100 {
        deliverer.tick().await.unwrap();
        let d = webhook_delivery::Entity::find()
            .one(&app.state.db)
            .await
            .unwrap()
            .unwrap();
        if d.status == "DELIVERED" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    let seen = receiver.seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter().map(|s| s.2).collect::<Vec<_>>(),
        [503, 503, 200],
        "delivered on the third try"
    );
    assert!(
        seen.iter().all(|s| s.1),
        "every request carries a valid signature"
    );
    assert!(
        seen.iter().all(|s| s.0 == seen[0].0),
        "the same delivery id on retries"
    );
    deliverer.tick().await.unwrap();
    assert_eq!(
        receiver.seen.lock().unwrap().len(),
        3,
        "nothing sent after delivery"
    );
    let log = app
        .ok(Some(&s.access), "query($w: ID!) { webhookSubscriptions(workspaceId: $w) { deliveries { edges { node { status attempts eventType payload } } } } }", json!({ "w": ws }))
        .await;
    let d = &edges(&log["webhookSubscriptions"][0]["deliveries"])[0]["node"];
    assert_eq!(d["status"], "DELIVERED");
    assert_eq!(d["attempts"], 3);
    assert_eq!(d["payload"]["type"], "SLA_BREACHED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_on_the_customer_pauses_resolving_meets_and_reopening_restarts() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let t = json!({ "firstResponseMinutes": 60, "resolutionMinutes": 600 });
    app.default_policy(&s, &ws, t, json!({})).await;
    import(&app, &s, &ws, "x", 10).await;
    let c0 = convs(&app, &s, &ws).await.remove(0);
    let id = c0["id"].as_str().unwrap().to_string();
    let set = "mutation($i: SetConversationStatusInput!) { setConversationStatus(input: $i) { status dueAt sla { status firstResponseDue resolutionDue } } }";

    let p = app
        .ok(
            Some(&s.access),
            set,
            json!({ "i": { "conversationId": id, "status": "PENDING_CUSTOMER" } }),
        )
        .await;
    assert_eq!(p["setConversationStatus"]["sla"]["status"], "PAUSED");
    assert!(
        p["setConversationStatus"]["dueAt"].is_null(),
        "paused conversations have no running deadline"
    );

    // Thirty minutes pass while paused; then the customer answers.
    let row = conversation::Entity::find()
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    let mut snap = sla::Snapshot::of(&row).unwrap();
    snap.paused_at = Some(snap.paused_at.unwrap() - chrono::Duration::minutes(30));
    let mut am = row.into_active_model();
    am.sla_targets = Set(Some(snap));
    am.update(&app.state.db).await.unwrap();
    app.import_events(&s, &ws, json!([{ "id": "x-2", "text": "here is my order number", "published_at": "2026-11-20T09:05:00Z", "author": { "id": "author-x" } }])).await;
    let c1 = convs(&app, &s, &ws).await.remove(0);
    assert_eq!(c1["id"], c0["id"], "the answer joins the conversation");
    assert_eq!(c1["sla"]["status"], "ON_TRACK");
    let shifted = minutes_between(
        &c0["sla"]["firstResponseDue"],
        &c1["sla"]["firstResponseDue"],
    );
    assert!(
        (29..=31).contains(&shifted),
        "the deadline moved by the paused time: {shifted} min"
    );

    // Resolving in time meets the resolution target, once.
    let r = app
        .ok(
            Some(&s.access),
            set,
            json!({ "i": { "conversationId": id, "status": "RESOLVED" } }),
        )
        .await;
    assert_eq!(r["setConversationStatus"]["sla"]["status"], "MET");
    app.ok(
        Some(&s.access),
        set,
        json!({ "i": { "conversationId": id, "status": "RESOLVED" } }),
    )
    .await;
    let events = app
        .ok(
            Some(&s.access),
            "query($w: ID!) { slaEvents(workspaceId: $w) { edges { node { kind target } } } }",
            json!({ "w": ws }),
        )
        .await;
    assert_eq!(edges(&events["slaEvents"]).len(), 1);
    assert_eq!(
        edges(&events["slaEvents"])[0]["node"],
        json!({ "kind": "SLA_MET", "target": "RESOLUTION" })
    );

    // Reopening restarts the resolution clock from now, in a new cycle.
    let o = app
        .ok(
            Some(&s.access),
            set,
            json!({ "i": { "conversationId": id, "status": "OPEN" } }),
        )
        .await;
    let due = chrono::DateTime::parse_from_rfc3339(
        o["setConversationStatus"]["sla"]["resolutionDue"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let from_now = (due.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_minutes();
    assert!((598..=600).contains(&from_now), "{from_now}");
    let row = conversation::Entity::find()
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        sla::Snapshot::of(&row)
            .unwrap()
            .cycle(rapport_domain::sla::Target::Resolution),
        1
    );
    let timers: usize = redis::cmd("ZCARD")
        .arg(app.state.kv.key(sla::TIMERS))
        .query_async(&mut app.state.kv.conn())
        .await
        .unwrap();
    assert!(timers >= 2, "new timers scheduled");
    // The new cycle's timers carry it: its breach is a new event.
    let resolution = sla::timers_of(&row)
        .into_iter()
        .find(|(t, _)| t.breach && t.target == rapport_domain::sla::Target::Resolution)
        .unwrap()
        .0;
    assert_eq!(resolution.cycle, 1);

    // Client viewers cannot change it.
    let (viewer, _) = app
        .add_member(&s, "v@client.test", "CLIENT_VIEWER", Some(vec![ws.clone()]))
        .await;
    let r = app
        .gql(
            Some(&viewer.access),
            set,
            json!({ "i": { "conversationId": id, "status": "CLOSED" } }),
        )
        .await;
    assert_eq!(code(&r), Some("FORBIDDEN"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breach_escalates_priority_and_assignment_per_policy() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let other = app.sign_up("Other", "o@other.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let (_, agent) = app.add_member(&s, "agent@acme.test", "AGENT", None).await;
    let (_, outsider) = app.add_member(&other, "x@other.test", "AGENT", None).await;
    let t = json!({ "firstResponseMinutes": 60 });
    let targets = json!({ "urgent": t, "high": t, "normal": t, "low": t });
    let r = app
        .gql(Some(&s.access), POLICY, json!({ "i": { "workspaceId": ws, "name": "Esc", "isDefault": true, "targets": targets, "escalation": { "assignToMemberId": outsider } } }))
        .await;
    assert_eq!(code(&r), Some("NOT_FOUND"), "another agency's member");
    let (_, client) = app
        .add_member(
            &s,
            "client@brew.test",
            "CLIENT_VIEWER",
            Some(vec![ws.clone()]),
        )
        .await;
    let r = app
        .gql(Some(&s.access), POLICY, json!({ "i": { "workspaceId": ws, "name": "Esc", "isDefault": true, "targets": targets, "escalation": { "assignToMemberId": client } } }))
        .await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"), "a read-only client: {r}");
    app.ok(
        Some(&s.access),
        POLICY,
        json!({ "i": { "workspaceId": ws, "name": "Esc", "isDefault": true, "targets": targets,
                 "escalation": { "raisePriorityTo": "URGENT", "assignToMemberId": agent } } }),
    )
    .await;
    import(&app, &s, &ws, "calm", 0).await;
    let c = conversation::Entity::find()
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(c.priority, "URGENT");
    let ws_uuid = c.workspace_id;
    let mut am = c.into_active_model();
    am.first_response_due_at = Set(Some(chrono::Utc::now() - chrono::Duration::seconds(1)));
    am.update(&app.state.db).await.unwrap();
    let engine = app.sla_engine();
    // Live views hear of the escalation (it re-ranks the inbox).
    let mut pubsub = redis::Client::open(redis_url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub
        .subscribe(app.state.kv.channel(Topic::Conversations, ws_uuid))
        .await
        .unwrap();
    engine.rebuild().await.unwrap();
    engine.tick().await.unwrap();
    let evs = sla_event::Entity::find().all(&app.state.db).await.unwrap();
    assert!(evs.iter().any(|e| e.kind == "SLA_BREACHED"), "{evs:?}");
    let msg = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        futures_util::StreamExt::next(&mut pubsub.on_message()),
    )
    .await
    .expect("an update for the escalated conversation")
    .unwrap();
    let live: Value = serde_json::from_str(&msg.get_payload::<String>().unwrap()).unwrap();
    assert_eq!(live["event"], "updated", "{live}");
    let d = app
        .ok(Some(&s.access), "query($w: ID!) { conversations(workspaceId: $w) { edges { node { id priority priorityScore assignee { id } } } } }", json!({ "w": ws }))
        .await;
    let node = &edges(&d["conversations"])[0]["node"];
    assert_eq!(live["conversationId"], node["id"]);
    assert_eq!(node["priority"], "URGENT");
    assert!(node["priorityScore"].as_f64().unwrap() >= 0.6);
    assert_eq!(node["assignee"]["id"], agent.as_str());
}

/// The workspace's default policy (first response in 60 minutes), its
/// breaches raised to URGENT and assigned to `member`.
async fn escalating_policy(app: &TestApp, s: &Session, ws: &str, member: &str) {
    let t = json!({ "firstResponseMinutes": 60 });
    let targets = json!({ "urgent": t, "high": t, "normal": t, "low": t });
    app.ok(
        Some(&s.access),
        POLICY,
        json!({ "i": { "workspaceId": ws, "name": "Esc", "isDefault": true, "targets": targets,
                 "escalation": { "raisePriorityTo": "URGENT", "assignToMemberId": member } } }),
    )
    .await;
}

/// A policy's escalation is read at the breach: a policy deleted while its
/// conversations run escalates nothing (their deadlines still run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_policy_escalates_nothing() {
    use rapport_store::entities::sla_policy;
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let (_, agent) = app.add_member(&s, "agent@acme.test", "AGENT", None).await;
    escalating_policy(&app, &s, &ws, &agent).await;
    import(&app, &s, &ws, "calm", 0).await;
    let c = first_response_overdue(&app, chrono::Duration::seconds(1)).await;
    // Deleted as `deleteSlaPolicy` marks it (a default cannot be, through
    // the API, while it is the default).
    let mut p: sla_policy::ActiveModel = sla_policy::Entity::find_by_id(c.sla_policy_id.unwrap())
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap()
        .into();
    p.deleted_at = Set(Some(chrono::Utc::now()));
    p.update(&app.state.db).await.unwrap();
    let engine = app.sla_engine();
    engine.rebuild().await.unwrap();
    engine.tick().await.unwrap();
    let evs = sla_event::Entity::find().all(&app.state.db).await.unwrap();
    assert!(evs.iter().any(|e| e.kind == "SLA_BREACHED"), "{evs:?}");
    let after = conversation::Entity::find_by_id(c.id)
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.assignee_membership_id, None);
    assert_ne!(after.priority, "URGENT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breach_goes_to_the_least_loaded_member_of_the_team() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let elsewhere = app.create_workspace(&s, "Bean Bros").await;
    let (_, busy) = app.add_member(&s, "busy@acme.test", "AGENT", None).await;
    let (_, free) = app.add_member(&s, "free@acme.test", "AGENT", None).await;
    // Idle, but cannot see the workspace: never chosen.
    let (_, blind) = app
        .add_member(&s, "blind@acme.test", "AGENT", Some(vec![elsewhere]))
        .await;
    let (agent_session, _) = app.add_member(&s, "x@acme.test", "AGENT", None).await;
    const TEAM: &str =
        "mutation($i: CreateTeamInput!) { createTeam(input: $i) { id name members { id } } }";
    let r = app
        .gql(
            Some(&agent_session.access),
            TEAM,
            json!({ "i": { "name": "Tier 2", "memberIds": [busy] } }),
        )
        .await;
    assert_eq!(code(&r), Some("FORBIDDEN"));
    let team = app
        .ok(
            Some(&s.access),
            TEAM,
            json!({ "i": { "name": "Tier 2", "memberIds": [busy, free, blind, busy] } }),
        )
        .await["createTeam"]
        .clone();
    assert_eq!(team["members"].as_array().unwrap().len(), 3);
    let r = app
        .gql(Some(&s.access), TEAM, json!({ "i": { "name": "Tier 2" } }))
        .await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"), "names are unique: {r}");
    let t = json!({ "firstResponseMinutes": 60 });
    let targets = json!({ "urgent": t, "high": t, "normal": t, "low": t });
    let p = app
        .ok(
            Some(&s.access),
            POLICY,
            json!({ "i": { "workspaceId": ws, "name": "Esc", "isDefault": true, "targets": targets,
                     "escalation": { "assignToTeamId": team["id"] } } }),
        )
        .await;
    assert!(p["createSlaPolicy"]["id"].is_string());

    // `busy` already holds two open conversations, `free` none.
    for (i, id) in ["b1", "b2", "late"].iter().enumerate() {
        import(&app, &s, &ws, id, i as u64).await;
    }
    let mut convs = conversation::Entity::find()
        .order_by_asc(conversation::Column::Id)
        .all(&app.state.db)
        .await
        .unwrap();
    let late = convs.pop().unwrap();
    let busy_id = rapport_domain::GlobalId::decode(rapport_domain::Kind::Member, &busy).unwrap();
    for c in convs {
        let mut am = c.into_active_model();
        am.assignee_membership_id = Set(Some(busy_id));
        am.update(&app.state.db).await.unwrap();
    }
    let mut am = late.into_active_model();
    am.first_response_due_at = Set(Some(chrono::Utc::now() - chrono::Duration::seconds(1)));
    am.update(&app.state.db).await.unwrap();
    let engine = app.sla_engine();
    engine.rebuild().await.unwrap();
    engine.tick().await.unwrap();
    let d = app
        .ok(
            Some(&s.access),
            "query($w: ID!) { conversations(workspaceId: $w) { edges { node { assignee { id } } } } }",
            json!({ "w": ws }),
        )
        .await;
    let assignees: Vec<Value> = edges(&d["conversations"])
        .iter()
        .map(|e| e["node"]["assignee"]["id"].clone())
        .collect();
    assert_eq!(
        assignees.iter().filter(|a| **a == json!(free)).count(),
        1,
        "{assignees:?}"
    );
    assert!(!assignees.contains(&json!(blind)));

    // A later breach of the same conversation (say its resolution) keeps
    // it with the team member working on it, even when the loads now tie
    // (busy down to one, free holding this one) and busy joined first.
    let all = conversation::Entity::find()
        .order_by_asc(conversation::Column::Id)
        .all(&app.state.db)
        .await
        .unwrap();
    let mut am = all[0].clone().into_active_model();
    am.assignee_membership_id = Set(None);
    am.update(&app.state.db).await.unwrap();
    let late = all.last().unwrap().clone();
    let free_id = rapport_domain::GlobalId::decode(rapport_domain::Kind::Member, &free).unwrap();
    assert_eq!(late.assignee_membership_id, Some(free_id));
    sla::escalate(&app.state.db, &late).await.unwrap();
    let again = conversation::Entity::find_by_id(late.id)
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.assignee_membership_id,
        Some(free_id),
        "not moved to busy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_after_a_deadline_no_timer_fired_records_the_breach_once() {
    // No worker runs: the breach timer never fires (as after a restart or
    // while timers are rebuilt). The late reply itself records the breach.
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let t = json!({ "firstResponseMinutes": 60, "resolutionMinutes": 600 });
    app.default_policy(
        &s,
        &ws,
        t,
        json!({ "escalation": { "raisePriorityTo": "URGENT" } }),
    )
    .await;
    import(&app, &s, &ws, "x", 10).await;
    let ws_id = rapport_domain::GlobalId::decode(rapport_domain::Kind::Workspace, &ws).unwrap();
    let mut alerts = Box::pin(
        app.state
            .kv
            .subscribe(&app.state.kv.channel(Topic::Sla, ws_id))
            .await
            .unwrap(),
    );
    let row = conversation::Entity::find()
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    let due = chrono::Utc::now() - chrono::Duration::minutes(5);
    let mut am = row.clone().into_active_model();
    am.first_response_due_at = Set(Some(due));
    am.due_at = Set(Some(due));
    let before = am.update(&app.state.db).await.unwrap();
    let id = convs(&app, &s, &ws).await.remove(0)["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.ok(
        Some(&s.access),
        "mutation($i: SendReplyInput!) { sendReply(input: $i) { id } }",
        json!({ "i": { "conversationId": id, "visibility": "PUBLIC",
                       "text": "so sorry your order is late, it left our kitchen a few minutes ago" } }),
    )
    .await;
    let events = sla_event::Entity::find().all(&app.state.db).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].kind.as_str(), events[0].target.as_str()),
        ("SLA_BREACHED", "FIRST_RESPONSE")
    );
    assert_eq!(events[0].deadline_at.timestamp(), due.timestamp());
    assert!(
        events[0].lateness_ms >= 5 * 60 * 1000,
        "{}",
        events[0].lateness_ms
    );
    // Streamed live, as a timer's breach is, and escalated as one is.
    use futures_util::StreamExt;
    let alert = tokio::time::timeout(std::time::Duration::from_secs(10), alerts.next())
        .await
        .expect("a live alert")
        .unwrap();
    let alert: Value = serde_json::from_str(&alert).unwrap();
    assert_eq!(alert["type"], "SLA_BREACHED", "{alert}");
    let after = conversation::Entity::find_by_id(row.id)
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.priority, "URGENT", "escalated by the late reply");
    // The timer firing afterwards (late) records nothing more.
    let engine = app.sla_engine();
    let (breach, _) = sla::timers_of(&before)
        .into_iter()
        .find(|(t, _)| t.breach && t.target == rapport_domain::sla::Target::FirstResponse)
        .unwrap();
    assert_eq!(engine.fire_batch(&[breach]).await.unwrap(), [Fired::Stale]);
    assert_eq!(
        sla_event::Entity::find()
            .count(&app.state.db)
            .await
            .unwrap(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breach_is_not_assigned_to_a_member_restricted_away_since_the_policy_was_saved() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let other_ws = app.create_workspace(&s, "Tea Co").await;
    let (_, agent) = app.add_member(&s, "agent@acme.test", "AGENT", None).await;
    escalating_policy(&app, &s, &ws, &agent).await;
    // Later the agent is moved to the other workspace only.
    app.ok(
        Some(&s.access),
        "mutation($i: UpdateMemberRoleInput!) { updateMemberRole(input: $i) { id } }",
        json!({ "i": { "memberId": agent, "role": "AGENT", "workspaceIds": [other_ws] } }),
    )
    .await;
    import(&app, &s, &ws, "calm", 0).await;
    let c = conversation::Entity::find()
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    let mut am = c.into_active_model();
    am.first_response_due_at = Set(Some(chrono::Utc::now() - chrono::Duration::seconds(1)));
    am.update(&app.state.db).await.unwrap();
    let engine = app.sla_engine();
    engine.rebuild().await.unwrap();
    engine.tick().await.unwrap();
    let c = conversation::Entity::find()
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.priority, "URGENT", "the rest of the escalation stands");
    assert_eq!(
        c.assignee_membership_id, None,
        "not someone who cannot see it"
    );
}

/// A webhook receiver that answers every request 200 at once; its URL.
async fn answering_receiver() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    url
}

/// A webhook receiver that reads each request and never answers: every
/// attempt runs into the deliverer's timeout. Records the delivery ids.
async fn hanging_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).to_lowercase();
                if let Some(id) = text
                    .lines()
                    .find_map(|l| l.strip_prefix("x-rapport-delivery:"))
                {
                    log.lock().unwrap().push(id.trim().to_string());
                }
                // Hold the connection open, unanswered.
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            });
        }
    });
    (url, seen)
}

/// A subscription of workspace `ws` to SLA breaches at `url`: its global ID
/// and its row.
async fn subscribe(
    app: &TestApp,
    s: &Session,
    ws: &str,
    url: &str,
) -> (Value, rapport_store::entities::webhook_subscription::Model) {
    let id = app
        .ok(
            Some(&s.access),
            "mutation($i: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $i) { id } }",
            json!({ "i": { "workspaceId": ws, "url": url, "events": ["SLA_BREACHED"], "secret": "hook-secret-123" } }),
        )
        .await["createWebhookSubscription"]["id"]
        .clone();
    let uuid = rapport_domain::GlobalId::decode(
        rapport_domain::Kind::WebhookSubscription,
        id.as_str().unwrap(),
    )
    .unwrap();
    let row = rapport_store::entities::webhook_subscription::Entity::find_by_id(uuid)
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    (id, row)
}

/// `n` deliveries of `sub`, due a second ago.
async fn pending_deliveries(
    app: &TestApp,
    sub: &rapport_store::entities::webhook_subscription::Model,
    n: usize,
) {
    use rapport_store::entities::webhook_delivery;
    let due = chrono::Utc::now() - chrono::Duration::seconds(1);
    for i in 0..n {
        webhook_delivery::ActiveModel {
            id: Set(uuid::Uuid::now_v7()),
            agency_id: Set(sub.agency_id),
            subscription_id: Set(sub.id),
            event_type: Set("SLA_BREACHED".into()),
            idempotency_key: Set(format!("event-{i}")),
            payload: Set(json!({ "n": i })),
            status: Set("PENDING".into()),
            attempts: Set(0),
            next_attempt_at: Set(due),
            last_error: Set(None),
            delivered_at: Set(None),
            created_at: Set(due),
        }
        .insert(&app.state.db)
        .await
        .unwrap();
    }
}

/// A deleted subscription receives nothing more: its pending deliveries
/// fail at their next attempt, without a request or retries, and it is
/// still listed on request, with its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_subscription_gets_nothing_more_and_keeps_its_log() {
    use rapport_store::entities::webhook_delivery;
    use rapport_worker::deliveries::{Deliverer, DeliveryConfig};
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let (url, seen) = hanging_receiver().await;
    let (id, sub) = subscribe(&app, &s, &ws, &url).await;
    pending_deliveries(&app, &sub, 2).await;
    app.ok(
        Some(&s.access),
        "mutation($i: DeleteWebhookSubscriptionInput!) { deleteWebhookSubscription(input: $i) { deletedSubscriptionId } }",
        json!({ "i": { "id": id } }),
    )
    .await;
    let deliverer = Deliverer::new(
        app.state.db.clone(),
        app.state.secrets.clone(),
        DeliveryConfig {
            allow_private: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(deliverer.tick().await.unwrap(), 2);
    for d in webhook_delivery::Entity::find()
        .all(&app.state.db)
        .await
        .unwrap()
    {
        assert_eq!((d.status.as_str(), d.attempts), ("FAILED", 1), "{d:?}");
        assert!(d.last_error.unwrap().contains("no longer exists"));
    }
    assert!(seen.lock().unwrap().is_empty(), "no request was made");
    let list = "query($w: ID!, $all: Boolean) { webhookSubscriptions(workspaceId: $w, includeDeleted: $all) { id active } }";
    let listed = app
        .ok(Some(&s.access), list, json!({ "w": ws, "all": false }))
        .await;
    assert_eq!(listed["webhookSubscriptions"], json!([]));
    let listed = app
        .ok(Some(&s.access), list, json!({ "w": ws, "all": true }))
        .await;
    assert_eq!(
        listed["webhookSubscriptions"],
        json!([{ "id": id, "active": false }])
    );
}

/// One agency's backlog to an endpoint that never answers holds back no
/// one else's deliveries: subscriptions take turns, at most ten of one per
/// pass, sent several at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoints_backlog_does_not_hold_back_other_subscriptions() {
    use rapport_store::entities::webhook_delivery;
    use rapport_worker::deliveries::{Deliverer, DeliveryConfig, PER_SUBSCRIPTION};
    use sea_orm::{ColumnTrait, QueryFilter};
    let app = TestApp::start().await;
    let subscriber = async |name: &str, url: &str| {
        let s = app.sign_up(name, &format!("owner@{name}.test")).await;
        let ws = app.create_workspace(&s, "Brand").await;
        subscribe(&app, &s, &ws, url).await.1
    };
    let (dead_url, dead_seen) = hanging_receiver().await;
    let good_url = answering_receiver().await;
    let dead = subscriber("dead", &dead_url).await;
    let good = subscriber("good", &good_url).await;
    // The dead endpoint's backlog is older and larger than a whole pass.
    pending_deliveries(&app, &dead, 60).await;
    pending_deliveries(&app, &good, 1).await;
    let deliverer = Deliverer::new(
        app.state.db.clone(),
        app.state.secrets.clone(),
        DeliveryConfig {
            // The good endpoint answers well within it on a loaded machine.
            timeout: std::time::Duration::from_secs(3),
            allow_private: true,
            ..Default::default()
        },
    )
    .unwrap();
    let attempted = deliverer.tick().await.unwrap();
    assert_eq!(attempted, PER_SUBSCRIPTION as usize + 1);
    let delivered = webhook_delivery::Entity::find()
        .filter(webhook_delivery::Column::SubscriptionId.eq(good.id))
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delivered.status, "DELIVERED", "{delivered:?}");
    // The dead endpoint's ten were sent together, not one after another.
    assert_eq!(dead_seen.lock().unwrap().len(), PER_SUBSCRIPTION as usize);
}

/// An agency whose backlog spreads over more subscriptions than a pass
/// takes (each failing) holds back no other agency: agencies take turns
/// before their subscriptions do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_with_many_failing_subscriptions_does_not_hold_back_another() {
    use rapport_store::entities::{webhook_delivery, webhook_subscription};
    use sea_orm::{ColumnTrait, QueryFilter};
    let app = TestApp::start().await;
    // Nothing listens there: each attempt fails at once.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", l.local_addr().unwrap())
    };
    let s = app.sign_up("Busy", "owner@busy.test").await;
    let ws = app.create_workspace(&s, "Brand").await;
    let (_, first) = subscribe(&app, &s, &ws, &closed).await;
    let mut busy = vec![first.clone()];
    for _ in 1..60 {
        let mut am: webhook_subscription::ActiveModel = first.clone().into();
        am.id = Set(uuid::Uuid::now_v7());
        busy.push(
            sea_orm::ActiveModelTrait::insert(am, &app.state.db)
                .await
                .unwrap(),
        );
    }
    for sub in &busy {
        pending_deliveries(&app, sub, 2).await;
    }
    let good_url = answering_receiver().await;
    let g = app.sign_up("Good", "owner@good.test").await;
    let gws = app.create_workspace(&g, "Brand").await;
    let (_, good) = subscribe(&app, &g, &gws, &good_url).await;
    // Newer than the whole backlog.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    pending_deliveries(&app, &good, 1).await;
    let deliverer = rapport_worker::deliveries::Deliverer::new(
        app.state.db.clone(),
        app.state.secrets.clone(),
        rapport_worker::deliveries::DeliveryConfig {
            allow_private: true,
            // Sixty due subscriptions are more than a pass squared.
            batch: 5,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(deliverer.tick().await.unwrap(), 5, "a full pass");
    let delivered = webhook_delivery::Entity::find()
        .filter(webhook_delivery::Column::SubscriptionId.eq(good.id))
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delivered.status, "DELIVERED", "{delivered:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_batch_keeps_its_claims_so_two_deliverers_never_send_one_delivery_at_once() {
    use rapport_store::entities::webhook_delivery;
    use rapport_worker::deliveries::{Deliverer, DeliveryConfig};
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let (url, seen) = hanging_receiver().await;
    let (_, sub) = subscribe(&app, &s, &ws, &url).await;
    pending_deliveries(&app, &sub, 5).await;
    // Each attempt times out after 1 s, so one tick over the five, one at
    // a time, takes 5 s, past the 3 s lease of its first claim.
    let cfg = DeliveryConfig {
        concurrency: 1,
        timeout: std::time::Duration::from_secs(1),
        backoff: rapport_domain::retry::Backoff {
            base: std::time::Duration::from_secs(60),
            max: std::time::Duration::from_secs(60),
            max_attempts: 10,
        },
        allow_private: true,
        ..Default::default()
    };
    let a = Deliverer::new(app.state.db.clone(), app.state.secrets.clone(), cfg.clone()).unwrap();
    let b = Deliverer::new(app.state.db.clone(), app.state.secrets.clone(), cfg).unwrap();
    let first = tokio::spawn(async move { a.tick().await.unwrap() });
    // A second worker's tick while the first is still on its batch: by
    // then the first has claimed its last delivery (at about 4 s) and is
    // waiting on it; a lease counted from the start of its tick (3 s)
    // would have run out already.
    tokio::time::sleep(std::time::Duration::from_millis(4400)).await;
    let second = b.tick().await.unwrap();
    let first = first.await.unwrap();
    let mut ids = seen.lock().unwrap().clone();
    ids.sort();
    let sent = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), 5, "every delivery attempted");
    assert_eq!(
        sent, 5,
        "none sent twice at once (first {first}, second {second})"
    );
    for d in webhook_delivery::Entity::find()
        .all(&app.state.db)
        .await
        .unwrap()
    {
        assert_eq!((d.status.as_str(), d.attempts), ("PENDING", 1), "{d:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fired_timers_are_not_rebuilt_and_a_flush_is_noticed_at_once() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let t = json!({ "firstResponseMinutes": 60, "resolutionMinutes": 600 });
    app.default_policy(&s, &ws, t, json!({})).await;
    import(&app, &s, &ws, "late", 10).await;
    let c = first_response_overdue(&app, chrono::Duration::seconds(30)).await;
    let engine = || {
        app.sla_engine_with(SlaConfig {
            tick: std::time::Duration::from_millis(50),
            rebuild_every: std::time::Duration::from_secs(3600),
            ..Default::default()
        })
    };
    let e = engine();
    e.rebuild().await.unwrap();
    e.tick().await.unwrap();
    let breaches = || async {
        sla_event::Entity::find()
            .all(&app.state.db)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "SLA_BREACHED")
            .count()
    };
    assert_eq!(breaches().await, 1);
    // Still open and unanswered: the next rebuild does not schedule the
    // breach again (the resolution's timers, still to come, it does).
    let breach = sla::timers_of(&c)
        .into_iter()
        .find(|(t, _)| t.breach && t.target == rapport_domain::sla::Target::FirstResponse)
        .unwrap()
        .0;
    e.rebuild().await.unwrap();
    let score = |member: String| {
        let kv = app.state.kv.clone();
        async move {
            let s: Option<f64> = redis::cmd("ZSCORE")
                .arg(kv.key(sla::TIMERS))
                .arg(member)
                .query_async(&mut kv.conn())
                .await
                .unwrap();
            s
        }
    };
    assert_eq!(score(breach.member()).await, None, "fired already");
    let resolution = sla::timers_of(&c)
        .into_iter()
        .find(|(t, _)| t.breach && t.target == rapport_domain::sla::Target::Resolution)
        .unwrap()
        .0;
    assert!(score(resolution.member()).await.is_some());

    // A running engine whose next rebuild is an hour away notices a flush
    // at its next pass and brings the timers back.
    let (tx, rx) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(engine().run(rx));
    // Its first pass rebuilds at once; the flush comes after it.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut conn = app.state.kv.conn();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(app.state.kv.key("*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();
    app.eventually_within(10, "the timers back after the flush", async || {
        score(resolution.member()).await.map(|_| ())
    })
    .await;
    tx.send(true).unwrap();
    running.await.unwrap();
    assert_eq!(breaches().await, 1, "and nothing fired twice");
}

/// A flush in the middle of a rebuild pass takes the pages it scheduled so
/// far: that pass must not mark the timers as present, or none would be
/// rebuilt until the next periodic pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_during_a_rebuild_pass_leaves_the_timers_marked_missing() {
    let app = TestApp::start().await;
    let e = app.sla_engine_with(SlaConfig::default());
    let kv = app.state.kv.clone();
    let marked = async || {
        let m: bool = redis::cmd("EXISTS")
            .arg(kv.key("sla:rebuilt"))
            .query_async(&mut kv.conn())
            .await
            .unwrap();
        m
    };
    let pass = e.begin_rebuild().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(kv.key("*"))
        .query_async(&mut kv.conn())
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut kv.conn())
        .await
        .unwrap();
    assert!(!e.end_rebuild(&pass).await.unwrap());
    assert!(!marked().await, "the next pass must rebuild");
    // An undisturbed pass marks them.
    let pass = e.begin_rebuild().await.unwrap();
    assert!(e.end_rebuild(&pass).await.unwrap());
    assert!(marked().await);
}

/// The match order is whole: a reorder that leaves a policy out would have
/// two share a place (and the engine pick between them by chance), and a
/// policy that stops being the default goes last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_are_reordered_whole_and_never_share_a_place() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let t = json!({ "firstResponseMinutes": 60 });
    let policy = async |name: &str, default: bool| {
        app.default_policy(
            &s,
            &ws,
            t.clone(),
            json!({ "name": name, "isDefault": default }),
        )
        .await
    };
    let d = policy("D", true).await;
    let (a, b, c) = (
        policy("A", false).await,
        policy("B", false).await,
        policy("C", false).await,
    );
    let reorder =
        "mutation($i: ReorderSlaPoliciesInput!) { reorderSlaPolicies(input: $i) { name } }";
    let listed = async || {
        let d = app
            .ok(
                Some(&s.access),
                "query($w: ID!) { slaPolicies(workspaceId: $w) { name position isDefault } }",
                json!({ "w": ws }),
            )
            .await;
        d["slaPolicies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["position"].as_i64().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    for ids in [json!([c, a]), json!([c, a, b, d]), json!([c, a, a])] {
        let r = app
            .gql(
                Some(&s.access),
                reorder,
                json!({ "i": { "workspaceId": ws, "policyIds": ids } }),
            )
            .await;
        assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{ids}: {r}");
        assert_eq!(r["errors"][0]["extensions"]["field"], "policyIds");
    }
    app.ok(
        Some(&s.access),
        reorder,
        json!({ "i": { "workspaceId": ws, "policyIds": [c, a, b] } }),
    )
    .await;
    let order = listed().await;
    assert_eq!(
        order.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["C", "A", "B", "D"]
    );
    // D stops being the default: it goes after B, on no one's place.
    app.ok(
        Some(&s.access),
        "mutation($i: UpdateSlaPolicyInput!) { updateSlaPolicy(input: $i) { id } }",
        json!({ "i": { "id": d, "isDefault": false } }),
    )
    .await;
    let order = listed().await;
    assert_eq!(
        order.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["C", "A", "B", "D"]
    );
    let mut places: Vec<i64> = order.iter().map(|(_, p)| *p).collect();
    places.dedup();
    assert_eq!(places.len(), 4, "no two share a place: {order:?}");

    // A new default demotes the old one, which goes last among the
    // ordered ones: kept on its first place, its empty conditions would
    // match every conversation before A.
    let ws2 = app.create_workspace(&s, "Tea Co").await;
    let in_ws2 = async |name: &str, default: bool| {
        app.default_policy(
            &s,
            &ws2,
            t.clone(),
            json!({ "name": name, "isDefault": default }),
        )
        .await
    };
    in_ws2("D2", true).await;
    in_ws2("A2", false).await;
    in_ws2("E2", true).await;
    let d = app
        .ok(
            Some(&s.access),
            "query($w: ID!) { slaPolicies(workspaceId: $w) { name isDefault } }",
            json!({ "w": ws2 }),
        )
        .await;
    assert_eq!(
        d["slaPolicies"],
        json!([{ "name": "A2", "isDefault": false }, { "name": "D2", "isDefault": false },
               { "name": "E2", "isDefault": true }])
    );

    // A team deleted after a policy named it reads as no one, not as an ID
    // that answers NOT_FOUND when sent back.
    let team = app
        .ok(
            Some(&s.access),
            "mutation { createTeam(input: { name: \"Night shift\" }) { id } }",
            json!({}),
        )
        .await["createTeam"]["id"]
        .clone();
    app.ok(
        Some(&s.access),
        "mutation($i: UpdateSlaPolicyInput!) { updateSlaPolicy(input: $i) { id } }",
        json!({ "i": { "id": a, "escalation": { "raisePriorityTo": "URGENT", "assignToTeamId": team } } }),
    )
    .await;
    let escalation = async || {
        app.ok(
            Some(&s.access),
            "query($w: ID!) { slaPolicies(workspaceId: $w) { name escalation { raisePriorityTo assignToTeamId } } }",
            json!({ "w": ws }),
        )
        .await["slaPolicies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "A")
            .unwrap()["escalation"]
            .clone()
    };
    assert_eq!(escalation().await["assignToTeamId"], team);
    app.ok(
        Some(&s.access),
        "mutation($i: DeleteTeamInput!) { deleteTeam(input: $i) }",
        json!({ "i": { "id": team } }),
    )
    .await;
    assert_eq!(
        escalation().await,
        json!({ "raisePriorityTo": "URGENT", "assignToTeamId": null })
    );
}

/// Under business hours a clock restarted while closed gets the deadline
/// of the cycle before it (the next opening plus the target): the cycle,
/// not the deadline, tells the old cycle's timer from the new one's, so a
/// next response answered in time is never also breached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_restarted_while_closed_is_not_fired_for_the_cycle_before() {
    use chrono::Datelike;
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    // Open one day a week, three days from now: closed all test long.
    let day = (chrono::Utc::now() + chrono::Duration::days(3)).weekday();
    let day = [
        "MONDAY",
        "TUESDAY",
        "WEDNESDAY",
        "THURSDAY",
        "FRIDAY",
        "SATURDAY",
        "SUNDAY",
    ][day.num_days_from_monday() as usize];
    let cal = app
        .ok(
            Some(&s.access),
            "mutation($i: CreateBusinessCalendarInput!) { createBusinessCalendar(input: $i) { id } }",
            json!({ "i": { "workspaceId": ws, "name": "Office", "timezone": "UTC",
                           "weeklyHours": [{ "day": day, "opens": "09:00", "closes": "17:00" }] } }),
        )
        .await["createBusinessCalendar"]["id"]
        .clone();
    app.default_policy(
        &s,
        &ws,
        json!({ "firstResponseMinutes": 60, "nextResponseMinutes": 30, "resolutionMinutes": 480 }),
        json!({ "businessHours": true, "calendarId": cal }),
    )
    .await;
    import(&app, &s, &ws, "c", 10).await;
    let id = convs(&app, &s, &ws).await.remove(0)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let reply = async |text: &str| {
        app.ok(
            Some(&s.access),
            "mutation($i: SendReplyInput!) { sendReply(input: $i) { id } }",
            json!({ "i": { "conversationId": id, "visibility": "PUBLIC", "text": text } }),
        )
        .await;
    };
    let customer = async |n: u32| {
        app.import_events(
            &s,
            &ws,
            json!([{ "id": format!("c-{n}"), "text": "still waiting for the refund",
            "published_at": format!("2026-11-20T09:0{n}:00Z"), "author": { "id": "author-c" } }]),
        )
        .await;
    };
    let row = async || {
        conversation::Entity::find()
            .one(&app.state.db)
            .await
            .unwrap()
            .unwrap()
    };
    reply("so sorry about the order, we are looking into it right now").await;
    customer(1).await;
    let first = row().await;
    let cycle = sla::Snapshot::of(&first)
        .unwrap()
        .cycle(rapport_domain::sla::Target::NextResponse);
    let due = first.next_response_due_at.expect("a next response is owed");
    reply("the refund went out this morning and shows within two days").await;
    customer(2).await;
    let second = row().await;
    assert_eq!(
        second.next_response_due_at,
        Some(due),
        "restarted while closed: the same deadline"
    );
    assert_eq!(
        sla::Snapshot::of(&second)
            .unwrap()
            .cycle(rapport_domain::sla::Target::NextResponse),
        cycle + 1
    );
    let e = app.sla_engine();
    let old = |breach: bool| sla::Timer {
        conversation: second.id,
        target: rapport_domain::sla::Target::NextResponse,
        breach,
        cycle,
        deadline: due,
    };
    assert_eq!(e.fire(&old(true)).await.unwrap(), Fired::Stale);
    let events = sla_event::Entity::find().all(&app.state.db).await.unwrap();
    assert!(
        events.iter().all(|e| e.kind != "SLA_BREACHED"),
        "answered in time, never breached: {events:?}"
    );
    // The current cycle's timer still fires, once; its warning, caught up
    // well after the deadline (workers were down), warns of nothing.
    let current = |breach: bool, deadline| sla::Timer {
        cycle: cycle + 1,
        deadline,
        ..old(breach)
    };
    let mut am = second.clone().into_active_model();
    let past = chrono::Utc::now() - chrono::Duration::seconds(90);
    am.next_response_due_at = Set(Some(past));
    am.update(&app.state.db).await.unwrap();
    assert_eq!(e.fire(&current(false, past)).await.unwrap(), Fired::Stale);
    assert_eq!(e.fire(&current(true, past)).await.unwrap(), Fired::Recorded);
    let events = sla_event::Entity::find().all(&app.state.db).await.unwrap();
    let breaches: Vec<_> = events.iter().filter(|e| e.kind != "SLA_MET").collect();
    assert_eq!(breaches.len(), 1, "{events:?}");
    assert_eq!(breaches[0].kind, "SLA_BREACHED");
    assert_eq!(breaches[0].cycle, cycle + 1);
}

/// A conversation closed after its first response was due, unanswered,
/// reads BREACHED, as its events have it, though its resolution deadline
/// was far off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_unanswered_after_the_first_response_was_due_reads_breached() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let t = json!({ "firstResponseMinutes": 60, "resolutionMinutes": 6000 });
    app.default_policy(&s, &ws, t, json!({})).await;
    import(&app, &s, &ws, "x", 10).await;
    first_response_overdue(&app, chrono::Duration::minutes(5)).await;
    let id = convs(&app, &s, &ws).await.remove(0)["id"].clone();
    let r = app
        .ok(
            Some(&s.access),
            "mutation($i: SetConversationStatusInput!) { setConversationStatus(input: $i) { sla { status } } }",
            json!({ "i": { "conversationId": id, "status": "CLOSED" } }),
        )
        .await;
    assert_eq!(
        r["setConversationStatus"]["sla"]["status"], "BREACHED",
        "{r}"
    );
    let kinds: Vec<String> = sla_event::Entity::find()
        .all(&app.state.db)
        .await
        .unwrap()
        .into_iter()
        .map(|e| format!("{} {}", e.kind, e.target))
        .collect();
    assert_eq!(kinds, ["SLA_BREACHED FIRST_RESPONSE"]);
}

/// A conversation resolved in time without a reply met its promise; a
/// follow-up asked after the deadline (closing the loop) does not turn its
/// status into BREACHED: a reply after resolving meets or breaches nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_after_the_deadline_leaves_a_resolved_conversation_met() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    app.default_policy(&s, &ws, json!({ "firstResponseMinutes": 60 }), json!({}))
        .await;
    import(&app, &s, &ws, "m1", 10).await;
    let c = conversation::Entity::find()
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    let id = rapport_domain::GlobalId::encode(rapport_domain::Kind::Conversation, c.id);
    app.ok(
        Some(&s.access),
        "mutation($c: ID!) { resolveConversation(conversationId: $c) { status } }",
        json!({ "c": id }),
    )
    .await;
    // As time would have it: resolved ten minutes ago, due five minutes
    // ago.
    let c = conversation::Entity::find_by_id(c.id)
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    let now = chrono::Utc::now();
    let mut snap: sla::Snapshot = c.sla_targets.clone().unwrap();
    snap.stopped_at = Some(now - chrono::Duration::minutes(10));
    let mut am = c.into_active_model();
    am.resolved_at = Set(Some(now - chrono::Duration::minutes(10)));
    am.first_response_due_at = Set(Some(now - chrono::Duration::minutes(5)));
    am.sla_targets = Set(Some(snap));
    am.update(&app.state.db).await.unwrap();
    let status = async || convs(&app, &s, &ws).await[0]["sla"]["status"].clone();
    assert_eq!(status().await, "MET");
    app.ok(
        Some(&s.access),
        "mutation($i: RequestFollowUpInput!) { requestFollowUp(input: $i) { id } }",
        json!({ "i": { "conversationId": id,
            "text": "Did the new order reach you in the end? Tell us how it went." } }),
    )
    .await;
    assert_eq!(status().await, "MET", "the follow-up answered nothing late");
}
