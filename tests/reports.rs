//! Client reporting checked against hand-computed fixtures (rows placed at
//! known instants), business time, empty buckets, the drill-down, the
//! agency overview, the shared printable report and the CSV exports.

mod common;

use chrono::{DateTime, Utc};
use common::*;
use rapport_store::entities::{conversation, message, report_share_link, sla_event};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, Set};
use serde_json::{Value, json};
use uuid::Uuid;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn import(app: &TestApp, s: &Session, ws: &str, who: &str, text: &str) {
    app.import_events(
        s,
        ws,
        json!([{ "id": format!("m-{who}"), "text": text, "published_at": "2026-11-20T09:00:00Z",
                 "author": { "id": who, "handle": who } }]),
    )
    .await;
}

/// Where a fixture conversation's times and feelings are moved.
struct Fixture<'a> {
    created: &'a str,
    responded: Option<&'a str>,
    resolved: Option<&'a str>,
    opening: f64,
    recovered: bool,
    platform_lag_secs: i64,
}

/// The conversation of `handle`, then its times moved to the fixture's.
async fn place(app: &TestApp, handle: &str, f: Fixture<'_>) -> Uuid {
    let Fixture {
        created,
        responded,
        resolved,
        opening,
        recovered,
        platform_lag_secs,
    } = f;
    let author = rapport_store::entities::author::Entity::find()
        .filter(rapport_store::entities::author::Column::Handle.eq(handle))
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    let c = conversation::Entity::find()
        .filter(conversation::Column::AuthorId.eq(author.id))
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    let id = c.id;
    let mut am = c.into_active_model();
    am.created_at = Set(at(created));
    am.first_responded_at = Set(responded.map(at));
    am.resolved_at = Set(resolved.map(at));
    am.status = Set(if resolved.is_some() {
        "RESOLVED"
    } else {
        "OPEN"
    }
    .into());
    am.opening_sentiment = Set(Some(opening));
    am.recovered = Set(recovered);
    am.update(&app.state.db).await.unwrap();
    let m = message::Entity::find()
        .filter(message::Column::ConversationId.eq(id))
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    let mut am = m.into_active_model();
    am.received_at = Set(at(created));
    am.published_at = Set(at(created) - chrono::Duration::seconds(platform_lag_secs));
    am.sentiment = Set(Some(opening));
    am.update(&app.state.db).await.unwrap();
    id
}

async fn event(app: &TestApp, conv: Uuid, kind: &str, deadline: &str, fired: &str) {
    let c = conversation::Entity::find_by_id(conv)
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    sla_event::ActiveModel {
        id: Set(Uuid::now_v7()),
        agency_id: Set(c.agency_id),
        workspace_id: Set(c.workspace_id),
        conversation_id: Set(conv),
        kind: Set(kind.into()),
        target: Set("FIRST_RESPONSE".into()),
        cycle: Set(0),
        deadline_at: Set(at(deadline)),
        fired_at: Set(at(fired)),
        lateness_ms: Set(0),
        created_at: Set(at(fired)),
    }
    .insert(&app.state.db)
    .await
    .unwrap();
}

const REPORT: &str = "query($w: ID!, $from: DateTime!, $to: DateTime!, $g: ReportGranularity, $tz: String) {
  workspaceReport(workspaceId: $w, from: $from, to: $to, granularity: $g, timezone: $tz) {
    timezone
    total { ...F }
    buckets { from to label figures { ...F } }
    firstResponseDistribution { key count }
    agents { name repliesSent cannedRefused overrides assigned resolved }
    breaches { edges { node { conversationId kind } } }
  }
}
fragment F on ReportFigures {
  inbound inboundBySentiment { key count } inboundByChannel { key count } conversationsOpened
  firstResponse { calendar { count p50Seconds p90Seconds meanSeconds } business { count p50Seconds p90Seconds } }
  resolution { calendar { count p50Seconds } }
  sla { target met breached compliancePercent }
  repliesSent cannedRefused overrides negativeConversations recovered
  platformDelay { count meanSeconds maxSeconds }
}";

fn first_sla(f: &Value) -> Value {
    f["sla"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_figures_match_hand_computed_fixtures() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    for who in ["ana", "bob", "cem"] {
        import(&app, &s, &ws, who, "hello").await;
    }
    let a = place(
        &app,
        "ana",
        Fixture {
            created: "2026-11-02T10:00:00Z",
            responded: Some("2026-11-02T10:10:00Z"),
            resolved: Some("2026-11-02T12:00:00Z"),
            opening: -0.6,
            recovered: true,
            platform_lag_secs: 30,
        },
    )
    .await;
    let _b = place(
        &app,
        "bob",
        Fixture {
            created: "2026-11-02T11:00:00Z",
            responded: Some("2026-11-02T11:30:00Z"),
            resolved: None,
            opening: 0.5,
            recovered: false,
            platform_lag_secs: 90,
        },
    )
    .await;
    let c = place(
        &app,
        "cem",
        Fixture {
            created: "2026-11-03T09:00:00Z",
            responded: Some("2026-11-03T11:00:00Z"),
            resolved: None,
            opening: -0.3,
            recovered: false,
            platform_lag_secs: 60,
        },
    )
    .await;
    event(
        &app,
        a,
        "SLA_MET",
        "2026-11-02T11:00:00Z",
        "2026-11-02T10:10:00Z",
    )
    .await;
    event(
        &app,
        c,
        "SLA_BREACHED",
        "2026-11-03T10:00:00Z",
        "2026-11-03T10:00:00Z",
    )
    .await;

    let d = app
        .ok(
            Some(&s.access),
            REPORT,
            json!({ "w": ws, "from": "2026-11-02T00:00:00Z", "to": "2026-11-05T00:00:00Z", "g": "DAY", "tz": "UTC" }),
        )
        .await;
    let r = &d["workspaceReport"];
    let t = &r["total"];
    assert_eq!(t["inbound"], 3);
    assert_eq!(
        t["inboundBySentiment"],
        json!([{ "key": "NEGATIVE", "count": 2 }, { "key": "POSITIVE", "count": 1 }])
    );
    assert_eq!(
        t["inboundByChannel"],
        json!([{ "key": "GENERIC", "count": 3 }])
    );
    assert_eq!(t["conversationsOpened"], 3);
    // 600, 1800, 7200 s: nearest-rank p50 1800, p90 7200, mean 3200.
    assert_eq!(
        t["firstResponse"]["calendar"],
        json!({ "count": 3, "p50Seconds": 1800.0, "p90Seconds": 7200.0, "meanSeconds": 3200.0 })
    );
    // No business calendar: business time equals calendar time.
    assert_eq!(t["firstResponse"]["business"]["p90Seconds"], 7200.0);
    assert_eq!(
        t["resolution"]["calendar"],
        json!({ "count": 1, "p50Seconds": 7200.0 })
    );
    assert_eq!(
        first_sla(t),
        json!({ "target": "FIRST_RESPONSE", "met": 1, "breached": 1, "compliancePercent": 50.0 })
    );
    assert_eq!(t["negativeConversations"], 2);
    assert_eq!(t["recovered"], 1);
    assert_eq!(
        t["platformDelay"],
        json!({ "count": 3, "meanSeconds": 60.0, "maxSeconds": 90.0 })
    );
    let buckets = r["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 3);
    assert_eq!(buckets[0]["label"], "2026-11-02");
    assert_eq!(
        buckets[0]["figures"]["firstResponse"]["calendar"],
        json!({ "count": 2, "p50Seconds": 600.0, "p90Seconds": 1800.0, "meanSeconds": 1200.0 })
    );
    assert_eq!(buckets[1]["figures"]["inbound"], 1);
    assert_eq!(first_sla(&buckets[1]["figures"])["breached"], 1);
    // The empty day is there, with nothing measured.
    let empty = &buckets[2]["figures"];
    assert_eq!(empty["inbound"], 0);
    assert_eq!(
        empty["firstResponse"]["calendar"],
        json!({ "count": 0, "p50Seconds": null, "p90Seconds": null, "meanSeconds": null })
    );
    assert_eq!(first_sla(empty)["compliancePercent"], Value::Null);
    assert_eq!(
        r["firstResponseDistribution"],
        json!([{ "key": "< 5 min", "count": 0 }, { "key": "5-15 min", "count": 1 }, { "key": "15-60 min", "count": 1 },
               { "key": "1-4 h", "count": 1 }, { "key": "4-24 h", "count": 0 }, { "key": "> 24 h", "count": 0 }])
    );
    // Drill-down: the breach and its conversation.
    let b = edges(&r["breaches"]);
    assert_eq!(b.len(), 1);
    assert_eq!(
        b[0]["node"]["conversationId"],
        rapport_domain::GlobalId::encode(rapport_domain::Kind::Conversation, c)
    );

    // A month by hour (720 buckets; SQLite refuses a compound SELECT of
    // more than 500 terms), in UTC and in a zone with a 45-minute offset
    // (no bucket on a whole rollup slot).
    for tz in ["UTC", "Asia/Kathmandu"] {
        let d = app
            .ok(
                Some(&s.access),
                REPORT,
                json!({ "w": ws, "from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z", "g": "HOUR", "tz": tz }),
            )
            .await;
        let r = &d["workspaceReport"];
        let buckets = r["buckets"].as_array().unwrap();
        assert!(buckets.len() >= 720, "{tz}: {}", buckets.len());
        let t = &r["total"];
        assert_eq!(t["inbound"], 3, "{tz}");
        assert_eq!(t["conversationsOpened"], 3, "{tz}");
        assert_eq!(t["firstResponse"]["calendar"]["count"], 3, "{tz}");
        assert_eq!(
            first_sla(t),
            json!({ "target": "FIRST_RESPONSE", "met": 1, "breached": 1, "compliancePercent": 50.0 }),
            "{tz}"
        );
        let busy: usize = buckets
            .iter()
            .map(|b| b["figures"]["inbound"].as_u64().unwrap() as usize)
            .sum();
        assert_eq!(busy, 3, "{tz}: every message in one bucket");
    }

    // Days in another time zone move the boundaries: at UTC+14 all three
    // (Nov 2 10:00Z and 11:00Z, Nov 3 09:00Z) fall on local Nov 3.
    let d = app
        .ok(
            Some(&s.access),
            REPORT,
            json!({ "w": ws, "from": "2026-11-01T10:00:00Z", "to": "2026-11-03T10:00:00Z", "g": "DAY", "tz": "Pacific/Kiritimati" }),
        )
        .await;
    let b = d["workspaceReport"]["buckets"].as_array().unwrap().clone();
    assert_eq!(d["workspaceReport"]["timezone"], "Pacific/Kiritimati");
    assert_eq!(
        b.iter().map(|x| x["label"].clone()).collect::<Vec<_>>(),
        vec![json!("2026-11-02"), json!("2026-11-03")]
    );
    assert_eq!(
        b.iter()
            .map(|x| x["figures"]["inbound"].clone())
            .collect::<Vec<_>>(),
        vec![json!(0), json!(3)]
    );

    // Bad periods are refused.
    for (from, to, g) in [
        ("2026-11-05T00:00:00Z", "2026-11-02T00:00:00Z", "DAY"),
        ("2025-01-01T00:00:00Z", "2026-11-02T00:00:00Z", "DAY"),
        ("2026-01-01T00:00:00Z", "2026-11-02T00:00:00Z", "HOUR"),
    ] {
        let r = app
            .gql(
                Some(&s.access),
                REPORT,
                json!({ "w": ws, "from": from, "to": to, "g": g }),
            )
            .await;
        assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn business_time_counts_only_open_hours() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let week: Vec<Value> = ["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY"]
        .iter()
        .map(|d| json!({ "day": d, "opens": "09:00", "closes": "17:00" }))
        .collect();
    let cal = app
        .ok(
            Some(&s.access),
            "mutation($i: CreateBusinessCalendarInput!) { createBusinessCalendar(input: $i) { id } }",
            json!({ "i": { "workspaceId": ws, "name": "Office", "timezone": "UTC", "weeklyHours": week } }),
        )
        .await["createBusinessCalendar"]["id"]
        .clone();
    let policy = app
        .default_policy(
            &s,
            &ws,
            json!({ "firstResponseMinutes": 60 }),
            json!({ "name": "Office hours", "businessHours": true, "calendarId": cal }),
        )
        .await;
    import(&app, &s, &ws, "dee", "hello").await;
    // Friday 16:30 to Monday 09:30: 64 h on the wall, 1 h of open time.
    place(
        &app,
        "dee",
        Fixture {
            created: "2026-11-06T16:30:00Z",
            responded: Some("2026-11-09T09:30:00Z"),
            resolved: None,
            opening: 0.0,
            recovered: false,
            platform_lag_secs: 0,
        },
    )
    .await;
    let two_weeks = async || {
        app.ok(
            Some(&s.access),
            REPORT,
            json!({ "w": ws, "from": "2026-11-02T00:00:00Z", "to": "2026-11-16T00:00:00Z", "g": "WEEK", "tz": "UTC" }),
        )
        .await
    };
    let d = two_weeks().await;
    let fr = &d["workspaceReport"]["total"]["firstResponse"];
    assert_eq!(fr["calendar"]["p50Seconds"], 234_000.0);
    assert_eq!(fr["business"]["p50Seconds"], 3_600.0);
    let weeks = d["workspaceReport"]["buckets"].as_array().unwrap();
    assert_eq!(weeks.len(), 2);
    assert_eq!(weeks[0]["figures"]["conversationsOpened"], 1);
    assert_eq!(weeks[1]["figures"]["conversationsOpened"], 0);

    // The policy deleted: its conversations still count on its calendar
    // (the placed figures carry no stored business time, so the report
    // computes it from the deleted policy's clock).
    app.ok(
        Some(&s.access),
        "mutation($i: DeleteSlaPolicyInput!) { deleteSlaPolicy(input: $i) { __typename } }",
        json!({ "i": { "id": policy } }),
    )
    .await;
    let d = two_weeks().await;
    let fr = &d["workspaceReport"]["total"]["firstResponse"];
    assert_eq!(fr["business"]["p50Seconds"], 3_600.0, "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_refusals_overrides_and_agents_are_counted_live() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    for who in ["ana", "bob"] {
        import(&app, &s, &ws, who, "my latte arrived cold").await;
    }
    let d = app
        .ok(
            Some(&s.access),
            "query($w: ID!) { conversations(workspaceId: $w) { edges { node { id author { handle } } } } }",
            json!({ "w": ws }),
        )
        .await;
    let ids: Vec<String> = edges(&d["conversations"])
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_string())
        .collect();
    let send = "mutation($i: SendReplyInput!) { sendReply(input: $i) { id } }";
    let text =
        "So sorry the latte arrived cold this morning, a fresh one is on us at the counter today";
    app.ok(
        Some(&s.access),
        send,
        json!({ "i": { "conversationId": ids[0], "text": text, "visibility": "PUBLIC" } }),
    )
    .await;
    let r = app
        .gql(
            Some(&s.access),
            send,
            json!({ "i": { "conversationId": ids[1], "text": text, "visibility": "PUBLIC" } }),
        )
        .await;
    assert_eq!(code(&r), Some("CANNED_REPLY"));
    app.ok(
        Some(&s.access),
        send,
        json!({ "i": { "conversationId": ids[1], "text": text, "visibility": "PUBLIC", "overrideReason": "Same incident, same store, agreed with the client" } }),
    )
    .await;
    let now = Utc::now();
    let d = app
        .ok(
            Some(&s.access),
            REPORT,
            json!({ "w": ws, "from": (now - chrono::Duration::hours(1)).to_rfc3339(), "to": (now + chrono::Duration::hours(1)).to_rfc3339(), "g": "HOUR" }),
        )
        .await;
    let t = &d["workspaceReport"]["total"];
    assert_eq!(t["repliesSent"], 2);
    assert_eq!(t["cannedRefused"], 1);
    assert_eq!(t["overrides"], 1);
    assert_eq!(t["firstResponse"]["calendar"]["count"], 2);
    let agents = d["workspaceReport"]["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["repliesSent"], 2);
    assert_eq!(agents[0]["cannedRefused"], 1);
    assert_eq!(agents[0]["overrides"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_ranks_workspaces_by_trouble_within_the_agency() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let calm = app.create_workspace(&s, "Calm Co").await;
    let hot = app.create_workspace(&s, "Hot Co").await;
    let other = app.sign_up("Rival", "owner@rival.test").await;
    app.create_workspace(&other, "Rival Co").await;
    import(&app, &s, &hot, "zed", "still waiting").await;
    let author = rapport_store::entities::author::Entity::find()
        .filter(rapport_store::entities::author::Column::Handle.eq("zed"))
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    let c = conversation::Entity::find()
        .filter(conversation::Column::AuthorId.eq(author.id))
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    let id = c.id;
    let mut am = c.into_active_model();
    am.due_at = Set(Some(Utc::now() - chrono::Duration::minutes(5)));
    am.update(&app.state.db).await.unwrap();
    let now = Utc::now().to_rfc3339();
    event(&app, id, "SLA_BREACHED", &now, &now).await;
    let d = app
        .ok(
            Some(&s.access),
            "query($f: DateTime!, $t: DateTime!) { agencyOverview(from: $f, to: $t) { workspace { id name } breaches overdue atRisk } }",
            json!({ "f": (Utc::now() - chrono::Duration::days(1)).to_rfc3339(), "t": (Utc::now() + chrono::Duration::minutes(1)).to_rfc3339() }),
        )
        .await;
    let o = d["agencyOverview"].as_array().unwrap();
    assert_eq!(o.len(), 2, "only this agency's workspaces: {o:?}");
    assert_eq!(o[0]["workspace"]["id"], hot);
    assert_eq!(o[0]["breaches"], 1);
    assert_eq!(o[0]["overdue"], 1);
    assert_eq!(o[1]["workspace"]["id"], calm);
    assert_eq!(o[1]["breaches"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_reports_open_without_login_until_revoked_or_expired() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew <Co>").await;
    import(&app, &s, &ws, "ana", "hello").await;
    place(
        &app,
        "ana",
        Fixture {
            created: "2026-11-02T10:00:00Z",
            responded: Some("2026-11-02T10:10:00Z"),
            resolved: None,
            opening: -0.5,
            recovered: false,
            platform_lag_secs: 10,
        },
    )
    .await;
    const CREATE: &str = "mutation($i: CreateReportShareLinkInput!) { createReportShareLink(input: $i) { id url expiresAt } }";
    let input = |expires: DateTime<Utc>| json!({ "i": { "workspaceId": ws, "from": "2026-11-01T00:00:00Z", "to": "2026-11-08T00:00:00Z", "expiresAt": expires.to_rfc3339() } });
    let r = app
        .gql(
            Some(&s.access),
            CREATE,
            input(Utc::now() - chrono::Duration::hours(1)),
        )
        .await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"));
    let link = app
        .ok(
            Some(&s.access),
            CREATE,
            input(Utc::now() + chrono::Duration::days(7)),
        )
        .await["createReportShareLink"]
        .clone();
    let url = link["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&format!("{}/reports/shared/", app.base)));

    let get = |u: String| {
        let client = app.client.clone();
        async move {
            let r = client.get(u).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };
    let (status, html) = get(url.clone()).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Brew &lt;Co&gt;"), "escaped name");
    for chart in [
        "response-time-distribution",
        "volume-by-sentiment",
        "sla-compliance",
    ] {
        assert!(html.contains(&format!("id=\"{chart}\"")), "{chart}");
    }
    assert!(!html.contains("<script"));
    // Altered: one character of the signature changed, or another id.
    let mut altered = url.clone();
    let last = altered.pop().unwrap();
    altered.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(get(altered).await.0, 404);
    let forged = url.replacen(&url[url.rfind('/').unwrap() + 1..][..4], "ffff", 1);
    assert_eq!(get(forged).await.0, 404);
    assert_eq!(
        get(format!("{}/reports/shared/garbage", app.base)).await.0,
        404
    );

    // Revoked: gone at once.
    app.ok(
        Some(&s.access),
        "mutation($i: RevokeReportShareLinkInput!) { revokeReportShareLink(input: $i) { revokedAt } }",
        json!({ "i": { "id": link["id"] } }),
    )
    .await;
    assert_eq!(get(url).await.0, 410);

    // Expired: the link's expiry moved into the past (the signed token
    // covers the expiry, so the link is signed again for it).
    let soon = app
        .ok(
            Some(&s.access),
            CREATE,
            input(Utc::now() + chrono::Duration::days(1)),
        )
        .await["createReportShareLink"]
        .clone();
    assert_eq!(get(soon["url"].as_str().unwrap().into()).await.0, 200);
    let id = rapport_domain::GlobalId::decode(
        rapport_domain::Kind::ReportShareLink,
        soon["id"].as_str().unwrap(),
    )
    .unwrap();
    let mut am = report_share_link::Entity::find_by_id(id)
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap()
        .into_active_model();
    am.expires_at = Set(Utc::now() - chrono::Duration::minutes(1));
    let expired = am.update(&app.state.db).await.unwrap();
    let (status, html) = get(rapport_api::share::url(&app.state, &expired)).await;
    assert_eq!(status, 410, "{html}");
    assert!(html.contains("expired"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_exports_stream_for_members_and_clients_only() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let events: Vec<Value> = (0..1200)
        .map(|i| json!({ "id": format!("e{i}"), "text": "hello", "published_at": "2026-11-20T09:00:00Z",
                         "author": { "id": format!("u{i}"), "handle": if i == 0 { "=cmd()".to_string() } else { format!("u{i}") } } }))
        .collect();
    for half in events.chunks(600) {
        app.import_events(&s, &ws, json!(half)).await;
    }
    let (viewer, _) = app
        .add_member(
            &s,
            "client@brew.test",
            "CLIENT_VIEWER",
            Some(vec![ws.clone()]),
        )
        .await;
    let now = Utc::now();
    let range = format!(
        "from={}&to={}",
        urlencode(&(now - chrono::Duration::hours(1)).to_rfc3339()),
        urlencode(&(now + chrono::Duration::hours(1)).to_rfc3339())
    );
    let url = format!(
        "{}/export/workspaces/{ws}/conversations.csv?{range}",
        app.base
    );
    let r = app
        .client
        .get(&url)
        .bearer_auth(&viewer.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let body = r.text().await.unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(
        lines.len(),
        1201,
        "header and every conversation, across pages"
    );
    assert!(lines[0].starts_with("id,created_at,status"));
    assert!(body.contains(",'=cmd(),"), "formulas defused");
    let r = app.client.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let other = app.sign_up("Rival", "owner@rival.test").await;
    let r = app
        .client
        .get(&url)
        .bearer_auth(&other.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let garbled = format!(
        "{}/export/workspaces/{ws}/conversations.csv?from=x&to=y",
        app.base
    );
    let r = app
        .client
        .get(&garbled)
        .bearer_auth(&s.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        e["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{e}"
    );
    // Without a token, the parameters are not judged: 401 first.
    let r = app.client.get(&garbled).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);

    let r = app
        .client
        .get(format!(
            "{}/export/workspaces/{ws}/report.csv?{range}&granularity=hour&timezone=UTC",
            app.base
        ))
        .bearer_auth(&s.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body = r.text().await.unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert!(lines[0].starts_with("bucket,from,to,inbound"));
    let total = lines.last().unwrap();
    assert!(total.starts_with("total,"), "{total}");
    assert_eq!(total.split(',').nth(3), Some("1200"));
    assert!(lines.len() >= 4, "two or three hours and the total");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_export_stops_when_the_viewer_logs_out_or_loses_the_workspace() {
    use futures_util::StreamExt;
    use rapport_api::auth::viewer::{Auth, authenticate};
    use rapport_api::export::{Cut, Range, conversation_rows};
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let other = app.create_workspace(&s, "Bean Bros").await;
    import(&app, &s, &ws, "ana", "my latte arrived cold").await;
    let ws_id = rapport_domain::GlobalId::decode(rapport_domain::Kind::Workspace, &ws).unwrap();
    let range = Range {
        from: Utc::now() - chrono::Duration::hours(1),
        to: Utc::now() + chrono::Duration::hours(1),
        granularity: None,
        timezone: None,
    };
    let state = std::sync::Arc::new(app.state.clone());
    let viewer_of = |token: String| {
        let state = state.clone();
        async move {
            match authenticate(&state, Some(&format!("Bearer {token}"))).await {
                Ok(Auth::Member(v)) => *v,
                _ => panic!("not a member"),
            }
        }
    };
    let text = |b: Option<Result<actix_web::web::Bytes, Cut>>| {
        String::from_utf8(b.expect("a chunk").expect("not cut").to_vec()).unwrap()
    };

    // Untouched, the export runs to its end.
    let v = viewer_of(s.access.clone()).await;
    let mut rows = Box::pin(conversation_rows(state.clone(), v, ws_id, range.clone()));
    assert!(text(rows.next().await).starts_with("id,"));
    assert_eq!(text(rows.next().await).lines().count(), 1);
    assert!(rows.next().await.is_none());

    // A client viewer whose workspaces change mid-export.
    let (client, member) = app
        .add_member(
            &s,
            "client@brew.test",
            "CLIENT_VIEWER",
            Some(vec![ws.clone()]),
        )
        .await;
    let v = viewer_of(client.access.clone()).await;
    let mut rows = Box::pin(conversation_rows(state.clone(), v, ws_id, range.clone()));
    assert!(text(rows.next().await).starts_with("id,"));
    app.ok(
        Some(&s.access),
        "mutation($i: UpdateMemberRoleInput!) { updateMemberRole(input: $i) { id } }",
        json!({ "i": { "memberId": member, "role": "CLIENT_VIEWER", "workspaceIds": [other] } }),
    )
    .await;
    assert_eq!(
        rows.next().await.map(|r| r.err()),
        Some(Some(Cut::AccessEnded))
    );

    // Logged out after the header: the next page is refused.
    let v = viewer_of(s.access.clone()).await;
    let mut rows = Box::pin(conversation_rows(state.clone(), v, ws_id, range));
    assert!(text(rows.next().await).starts_with("id,"));
    app.ok(Some(&s.access), "mutation { logout }", json!({}))
        .await;
    assert_eq!(
        rows.next().await.map(|r| r.err()),
        Some(Some(Cut::AccessEnded))
    );
    assert!(rows.next().await.is_none(), "and it ends there");
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

/// Every figure of a report, by hour, for comparing two readings.
const REPORT_ALL: &str = "query($w: ID!, $from: DateTime!, $to: DateTime!) {
  workspaceReport(workspaceId: $w, from: $from, to: $to, granularity: HOUR, timezone: \"UTC\") {
    total { ...F } buckets { from figures { ...F } } agents { name repliesSent assigned resolved }
  }
}
fragment F on ReportFigures {
  inbound inboundBySentiment { key count } inboundByChannel { key count } conversationsOpened
  conversationsByPriority { key count }
  firstResponse { calendar { count p50Seconds p90Seconds meanSeconds } business { count p50Seconds p90Seconds meanSeconds } }
  resolution { calendar { count p50Seconds p90Seconds meanSeconds } business { count p50Seconds } }
  sla { target met breached warned compliancePercent }
  repliesSent cannedRefused overrides negativeConversations recovered
  platformDelay { count meanSeconds maxSeconds }
}";

/// Whole 15-minute slots are read from the rollups the database keeps and
/// a bucket's edges from the rows: both agree to the microsecond with a
/// count made here, and a message moved to another time moves its count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollup_slots_and_row_edges_agree() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let times = [
        "2026-11-02T10:14:59.999999Z",
        "2026-11-02T10:15:00Z",
        "2026-11-02T10:29:59.5Z",
        "2026-11-02T10:30:00.000001Z",
        "2026-11-02T10:59:59.999Z",
        "2026-11-02T11:00:00Z",
        "2026-11-02T11:44:10.25Z",
    ];
    for (i, t) in times.iter().enumerate() {
        let who = format!("edge{i}");
        import(&app, &s, &ws, &who, "hello").await;
        let author = rapport_store::entities::author::Entity::find()
            .filter(rapport_store::entities::author::Column::Handle.eq(who.as_str()))
            .one(&app.state.db)
            .await
            .unwrap()
            .unwrap();
        let m = message::Entity::find()
            .filter(message::Column::AuthorId.eq(author.id))
            .one(&app.state.db)
            .await
            .unwrap()
            .unwrap();
        let mut am = m.into_active_model();
        am.received_at = Set(at(t));
        // 2.5005 s of platform delay: counted as 2,500 ms.
        am.published_at = Set(at(t) - chrono::Duration::microseconds(2_500_500));
        am.update(&app.state.db).await.unwrap();
    }
    const Q: &str = "query($w: ID!, $from: DateTime!, $to: DateTime!) {
      workspaceReport(workspaceId: $w, from: $from, to: $to, granularity: HOUR, timezone: \"UTC\") {
        total { inbound platformDelay { meanSeconds maxSeconds } }
        buckets { from figures { inbound } } } }";
    let periods = [
        ("2026-11-02T10:00:00Z", "2026-11-02T12:00:00Z"),
        ("2026-11-02T10:14:59.999999Z", "2026-11-02T10:30:00Z"),
        ("2026-11-02T10:15:00.000001Z", "2026-11-02T11:44:10.25Z"),
        ("2026-11-02T10:05:00.5Z", "2026-11-02T11:44:10.250001Z"),
        ("2026-11-02T10:29:59.5Z", "2026-11-02T10:30:00.000001Z"),
    ];
    for (from, to) in periods {
        let d = app
            .ok(
                Some(&s.access),
                Q,
                json!({ "w": ws, "from": from, "to": to }),
            )
            .await;
        let r = &d["workspaceReport"];
        let inside = |lo: DateTime<Utc>, hi: DateTime<Utc>| {
            times.iter().filter(|t| at(t) >= lo && at(t) < hi).count()
        };
        let expected = inside(at(from), at(to));
        assert_eq!(r["total"]["inbound"], expected, "{from} .. {to}");
        for b in r["buckets"].as_array().unwrap() {
            let lo = at(b["from"].as_str().unwrap()).max(at(from));
            let hi = (lo + chrono::Duration::hours(1)).min(at(to)).min(
                at(b["from"].as_str().unwrap())
                    .date_naive()
                    .and_hms_opt(
                        chrono::Timelike::hour(&at(b["from"].as_str().unwrap())) + 1,
                        0,
                        0,
                    )
                    .map(|t| t.and_utc())
                    .unwrap_or(at(to)),
            );
            assert_eq!(
                b["figures"]["inbound"],
                inside(lo, hi),
                "bucket {lo} of {from} .. {to}"
            );
        }
        if expected > 0 {
            assert_eq!(r["total"]["platformDelay"]["maxSeconds"], 2.5);
            assert_eq!(r["total"]["platformDelay"]["meanSeconds"], 2.5);
        }
    }

    // Compaction (PostgreSQL keeps a row per insert statement and key)
    // folds each slot's rows into one and changes no figure.
    let now = Utc::now();
    let windows = [
        json!({ "w": ws, "from": "2026-11-02T10:00:00Z", "to": "2026-11-02T12:00:00Z" }),
        // The conversations, opened at import.
        json!({ "w": ws, "from": now - chrono::Duration::hours(1), "to": now + chrono::Duration::hours(1) }),
    ];
    let mut before = Vec::new();
    for w in &windows {
        before.push(app.ok(Some(&s.access), REPORT_ALL, w.clone()).await);
    }
    assert_eq!(
        before[1]["workspaceReport"]["total"]["conversationsOpened"],
        7
    );
    let folded = rapport_worker::rollups::compact_once(&app.state.db)
        .await
        .unwrap();
    // One figure from PostgreSQL (the rollup tables exist only there).
    let count = async |sql: &str| -> i64 {
        use sea_orm::ConnectionTrait;
        app.state
            .db
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                format!("SELECT CAST(({sql}) AS BIGINT) AS n"),
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get::<i64>("", "n")
            .unwrap()
    };
    if is_postgres() {
        assert!(folded > 0, "fresh slots folded");
        assert_eq!(
            count("SELECT COUNT(*) FROM report_message_slots WHERE NOT compacted").await,
            0
        );
        assert_eq!(
            count("SELECT COUNT(*) - COUNT(DISTINCT (workspace_id, slot, direction, channel_id, sentiment, member_id)) FROM report_message_slots").await,
            0
        );
        assert_eq!(count("SELECT COUNT(*) FROM report_dirty_slots").await, 0);
        assert_eq!(
            count("SELECT SUM(opened) FROM report_conversation_slots").await,
            7
        );
    }
    for (w, b) in windows.iter().zip(&before) {
        assert_eq!(&app.ok(Some(&s.access), REPORT_ALL, w.clone()).await, b);
    }

    // A slot counted before and changed since is counted again: its rows
    // replaced, not added to (this once failed on the primary key).
    if is_postgres() {
        use rapport_store::entities::conversation;
        let c = conversation::Entity::find()
            .one(&app.state.db)
            .await
            .unwrap()
            .unwrap();
        let mut am = c.clone().into_active_model();
        am.priority = Set(if c.priority == "URGENT" {
            "LOW"
        } else {
            "URGENT"
        }
        .into());
        am.update(&app.state.db).await.unwrap();
        let folded = rapport_worker::rollups::compact_once(&app.state.db)
            .await
            .unwrap();
        assert!(folded > 0, "the changed slot counted again");
        assert_eq!(
            (
                count("SELECT COUNT(*) FROM report_dirty_slots").await,
                count("SELECT COALESCE(SUM(opened), 0) FROM report_conversation_slots").await
            ),
            (0, 7)
        );
        assert_eq!(
            count("SELECT COALESCE(SUM(opened), 0) FROM report_conversation_slots WHERE priority = 'URGENT'").await,
            count("SELECT COUNT(*) FROM conversations WHERE priority = 'URGENT'").await
        );
    }

    // Moved away: the old slot is empty, the new one counts it.
    let m = message::Entity::find()
        .filter(message::Column::ReceivedAt.eq(at(times[1])))
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    let mut am = m.into_active_model();
    am.received_at = Set(at("2026-11-02T13:00:00Z"));
    am.update(&app.state.db).await.unwrap();
    let count = |from: &'static str, to: &'static str| {
        let (app, s, ws) = (&app, &s, &ws);
        async move {
            app.ok(
                Some(&s.access),
                Q,
                json!({ "w": ws, "from": from, "to": to }),
            )
            .await["workspaceReport"]["total"]["inbound"]
                .as_i64()
                .unwrap()
        }
    };
    assert_eq!(
        count("2026-11-02T10:15:00Z", "2026-11-02T10:30:00Z").await,
        1
    );
    assert_eq!(
        count("2026-11-02T13:00:00Z", "2026-11-02T14:00:00Z").await,
        1
    );
}

/// Deadlines due in the period that still run now: counted while the
/// period lasts, none before they fall due in it, none once it is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_deadlines_count_what_still_runs() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    app.default_policy(&s, &ws, json!({ "firstResponseMinutes": 60 }), json!({}))
        .await;
    for who in ["ana", "bob"] {
        import(&app, &s, &ws, who, "my order never arrived").await;
    }
    let now = Utc::now();
    let open = |from: DateTime<Utc>, to: DateTime<Utc>| {
        let (app, s, ws) = (&app, &s, &ws);
        async move {
            app.ok(
                Some(&s.access),
                "query($w: ID!, $from: DateTime!, $to: DateTime!) {
                   workspaceReport(workspaceId: $w, from: $from, to: $to, granularity: HOUR) {
                     openDeadlines { firstResponse nextResponse resolution } } }",
                json!({ "w": ws, "from": from, "to": to }),
            )
            .await["workspaceReport"]["openDeadlines"]
                .clone()
        }
    };
    let h = chrono::Duration::hours(1);
    assert_eq!(
        open(now - h, now + h + h).await,
        json!({ "firstResponse": 2, "nextResponse": 0, "resolution": 0 })
    );
    assert_eq!(open(now - h, now + h / 2).await["firstResponse"], 0);
    assert_eq!(open(now - h - h - h, now - h).await["firstResponse"], 0);

    // Waiting on the customer, a deadline does not run (it moves when the
    // conversation opens again): not counted.
    let d = app
        .ok(
            Some(&s.access),
            "query($w: ID!) { conversations(workspaceId: $w, first: 1) { edges { node { id } } } }",
            json!({ "w": ws }),
        )
        .await;
    let id = edges(&d["conversations"])[0]["node"]["id"].clone();
    app.ok(
        Some(&s.access),
        "mutation($i: SetConversationStatusInput!) { setConversationStatus(input: $i) { id } }",
        json!({ "i": { "conversationId": id, "status": "PENDING_CUSTOMER" } }),
    )
    .await;
    assert_eq!(open(now - h, now + h + h).await["firstResponse"], 1);
}

/// A private thread `takeOffline` opened continues the public
/// conversation: it is no conversation the customer opened, and its
/// stand-in "first response" (the public invitation) is no response time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_opened_by_take_offline_is_no_conversation_opened() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    import(&app, &s, &ws, "ana", "my parcel is lost and nobody answers").await;
    import(&app, &s, &ws, "bob", "where is my order").await;
    let ana = app.conversation_of(&s, &ws, "ana").await;
    let (_, agent) = app.add_member(&s, "agent@acme.test", "AGENT", None).await;
    app.ok(
        Some(&s.access),
        "mutation($i: AssignConversationInput!) { assignConversation(input: $i) { id } }",
        json!({ "i": { "conversationId": ana, "memberId": agent } }),
    )
    .await;
    let d = app
        .ok(
            Some(&s.access),
            "mutation($i: TakeOfflineInput!) { takeOffline(input: $i) { privateConversation { id } } }",
            json!({ "i": { "conversationId": ana,
                    "text": "Ana, a lost parcel is stressful: send us your order number privately and we trace it today." } }),
        )
        .await;
    assert!(d["takeOffline"]["privateConversation"]["id"].is_string());
    let now = Utc::now();
    let (from, to) = (
        (now - chrono::Duration::days(1)).to_rfc3339(),
        (now + chrono::Duration::minutes(1)).to_rfc3339(),
    );
    const Q: &str = "query($w: ID!, $from: DateTime!, $to: DateTime!) {
      workspaceReport(workspaceId: $w, from: $from, to: $to, granularity: DAY, timezone: \"UTC\") {
        total { conversationsOpened negativeConversations firstResponse { calendar { count } business { count } } }
        agents { assigned } } }";
    let check = async || {
        let d = app
            .ok(
                Some(&s.access),
                Q,
                json!({ "w": ws, "from": from, "to": to }),
            )
            .await;
        let r = &d["workspaceReport"];
        assert_eq!(r["total"]["conversationsOpened"], 2, "{r}");
        assert_eq!(r["total"]["firstResponse"]["calendar"]["count"], 1, "{r}");
        assert_eq!(r["total"]["firstResponse"]["business"]["count"], 1, "{r}");
        let assigned: i64 = r["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["assigned"].as_i64().unwrap())
            .sum();
        assert_eq!(assigned, 1, "the public conversation only: {r}");
    };
    check().await;
    // PostgreSQL: counted again by the rollup, the same.
    rapport_worker::rollups::compact_once(&app.state.db)
        .await
        .unwrap();
    check().await;
}

/// Recovery counts the customer's own turn: another person's happy reply
/// in their thread recovers nothing; the customer's happy words do, in
/// public or in the private thread `takeOffline` opened (the playbook's
/// usual end), where it is the public conversation that recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_is_the_customers_own_turn_in_public_or_in_private() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let event = |id: &str, who: &str, text: &str, reply_to: Option<&str>, private: bool| {
        let mut e = json!({ "id": id, "text": text, "published_at": chrono::Utc::now().to_rfc3339(),
                            "author": { "id": who, "handle": who } });
        if let Some(p) = reply_to {
            e["in_reply_to"] = json!(p);
        }
        if private {
            e["visibility"] = json!("private");
        }
        e
    };
    let figures = async || {
        let now = Utc::now();
        let d = app
            .ok(
                Some(&s.access),
                "query($w: ID!, $from: DateTime!, $to: DateTime!) { workspaceReport(workspaceId: $w, from: $from, to: $to) { total { negativeConversations recovered } } }",
                json!({ "w": ws, "from": (now - chrono::Duration::hours(1)).to_rfc3339(), "to": (now + chrono::Duration::hours(1)).to_rfc3339() }),
            )
            .await;
        let t = &d["workspaceReport"]["total"];
        (
            t["negativeConversations"].as_i64().unwrap(),
            t["recovered"].as_i64().unwrap(),
        )
    };
    app.import_events(
        &s,
        &ws,
        json!([event(
            "a1",
            "ana",
            "my machine broke after a week, awful",
            None,
            false
        )]),
    )
    .await;
    app.import_events(
        &s,
        &ws,
        json!([event(
            "b1",
            "bob",
            "love mine, works great!",
            Some("a1"),
            false
        )]),
    )
    .await;
    assert_eq!(
        figures().await,
        (1, 0),
        "a bystander's joy recovers nothing"
    );
    app.import_events(
        &s,
        &ws,
        json!([event(
            "a2",
            "ana",
            "fixed now, great support, thank you!",
            Some("a1"),
            false
        )]),
    )
    .await;
    assert_eq!(figures().await, (1, 1), "the customer's own words do");

    // In private: the public complaint, taken offline, recovers when the
    // customer's happy message arrives in the private thread.
    app.import_events(
        &s,
        &ws,
        json!([event(
            "c1",
            "cem",
            "terrible service, my order is lost",
            None,
            false
        )]),
    )
    .await;
    let cem = app.conversation_of(&s, &ws, "cem").await;
    app.ok(
        Some(&s.access),
        "mutation($i: TakeOfflineInput!) { takeOffline(input: $i) { privateConversation { id } } }",
        json!({ "i": { "conversationId": cem,
            "text": "Cem, so sorry your order is lost. Please message us privately with the order number and we will trace it today." } }),
    )
    .await;
    assert_eq!(figures().await, (2, 1));
    app.import_events(
        &s,
        &ws,
        json!([event(
            "c2",
            "cem",
            "found it, thank you so much, great help!",
            None,
            true
        )]),
    )
    .await;
    assert_eq!(figures().await, (2, 2), "the public conversation recovered");
}
