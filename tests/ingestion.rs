//! Ingestion end to end: platform payloads in their documented formats,
//! signed as the platforms sign them, through the real webhook endpoint,
//! Redis and the worker into the database, and out through GraphQL.

mod common;

use common::*;
use rapport_domain::ingest::signature::{
    CrcToken, generic_sign, meta_sign, x_crc_response, x_sign,
};
use rapport_store::entities::conversation::StoredBreakdown;
use rapport_store::entities::{message, raw_event};
use rapport_store::pages::Wanted;
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::{Value, json};

/// Request headers: (name, value).
type Headers = Vec<(&'static str, String)>;

const X_FIXTURE: &[u8] = include_bytes!("fixtures/x_account_activity.json");
const META_FIXTURE: &[u8] = include_bytes!("fixtures/meta_page_feed.json");
const GENERIC_FIXTURE: &[u8] = include_bytes!("fixtures/generic_events.json");

async fn connect(app: &TestApp, s: &Session, input: Value) -> (String, String) {
    let d = app
        .ok(
            Some(&s.access),
            "mutation($i: ConnectChannelInput!) { connectChannel(input: $i) { id webhookUrl hasSecret status } }",
            json!({ "i": input }),
        )
        .await;
    let c = &d["connectChannel"];
    assert_eq!(c["status"], "ACTIVE");
    (
        c["id"].as_str().unwrap().into(),
        c["webhookUrl"].as_str().unwrap_or("").into(),
    )
}

async fn post(app: &TestApp, url: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, Value) {
    let mut req = app
        .client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Raw events the worker has not processed yet.
async fn pending_raw_events(app: &TestApp) -> u64 {
    use sea_orm::{ColumnTrait, QueryFilter};
    raw_event::Entity::find()
        .filter(raw_event::Column::Status.eq(rapport_store::raw_events::PENDING))
        .count(&app.state.db)
        .await
        .unwrap()
}

async fn conversations(app: &TestApp, s: &Session, ws: &str) -> Vec<Value> {
    let d = app
        .ok(
            Some(&s.access),
            "query($w: ID!) { conversations(workspaceId: $w, orderBy: PRIORITY, first: 10) { edges { node {
                id status visibility priority priorityScore sentiment
                priorityBreakdown { sentiment reach visibility urgency urgencyMatches score level }
                author { handle followerCount verified platform }
                messages(first: 10) { edges { node { externalId body direction publishedAt receivedAt } } } } } } }",
            json!({ "w": ws }),
        )
        .await;
    edges(&d["conversations"])
        .into_iter()
        .map(|e| e["node"].clone())
        .collect()
}

/// An agency's "Inbox" workspace (no brand keywords) and two brands' ("Brew
/// Co", "Bean Bros"), for keyword routing.
async fn brand_workspaces(app: &TestApp, s: &Session) -> (String, String, String) {
    let home = app.create_workspace(s, "Inbox").await;
    let brew = app.create_brand(s, "Brew Co", "brew co").await;
    let bean = app.create_brand(s, "Bean Bros", "bean bros").await;
    (home, brew, bean)
}

/// Pauses channel `id` (a global ID).
async fn pause_channel(app: &TestApp, s: &Session, id: Value) {
    app.ok(
        Some(&s.access),
        "mutation($i: ChannelIdInput!) { pauseChannel(input: $i) { status } }",
        json!({ "i": { "id": id } }),
    )
    .await;
}

async fn raw_count(app: &TestApp) -> u64 {
    raw_event::Entity::find()
        .count(&app.state.db)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_mentions_replies_and_dms_are_threaded_ranked_and_stored_once() {
    let app = TestApp::start().await.with_worker().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let secret = "x-consumer-secret-123";
    let (channel_id, url) = connect(
        &app,
        &s,
        json!({ "workspaceId": ws, "kind": "X", "name": "@BrewCo", "externalAccountId": "2244994945", "secret": secret }),
    )
    .await;
    assert!(
        url.starts_with(&app.base) && url.contains("/webhooks/"),
        "{url}"
    );

    // The CRC challenge.
    let crc: Value = app
        .client
        .get(format!("{url}?crc_token=challenge-abc"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        crc["response_token"],
        x_crc_response(
            secret.as_bytes(),
            &CrcToken::parse("challenge-abc").unwrap()
        )
    );
    // X signs bodies with the same HMAC and key as the CRC answer: a
    // payload sent as the token is refused, or its answer would be the
    // payload's valid signature.
    let forged = r#"{"for_user_id":"2244994945","tweet_create_events":[]}"#;
    let r = app
        .client
        .get(reqwest::Url::parse_with_params(&url, &[("crc_token", forged)]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let text = r.text().await.unwrap();
    assert!(!text.contains("sha256="), "{text}");

    // Delivered three times (platform retries): stored once.
    let sig = x_sign(secret.as_bytes(), X_FIXTURE);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (code, body) = post(
            &app,
            &url,
            &[("x-twitter-webhooks-signature", sig.clone())],
            X_FIXTURE,
        )
        .await;
        assert_eq!(code, 200, "{body}");
        statuses.push(body["status"].as_str().unwrap().to_string());
    }
    assert_eq!(statuses, ["accepted", "duplicate", "duplicate"]);

    let convs = app
        .eventually("two conversations", async || {
            let c = conversations(&app, &s, &ws).await;
            (c.len() == 2 && c.iter().map(|c| edges(&c["messages"]).len()).sum::<usize>() == 3)
                .then_some(c)
        })
        .await;
    // The angry public complaint with reach ranks first, with its reply threaded in.
    let top = &convs[0];
    assert_eq!(top["visibility"], "PUBLIC");
    assert_eq!(top["author"]["handle"], "angry_customer");
    assert_eq!(top["author"]["followerCount"], 48210);
    assert_eq!(top["author"]["verified"], true);
    // Ranked by its angriest message; `sentiment` follows the latest one.
    assert!(
        top["priorityBreakdown"]["sentiment"].as_f64().unwrap() > 0.1,
        "{top}"
    );
    assert_eq!(top["sentiment"], "NEUTRAL");
    assert!(
        ["HIGH", "URGENT"].contains(&top["priority"].as_str().unwrap()),
        "{top}"
    );
    assert_eq!(
        top["priorityBreakdown"]["urgencyMatches"],
        json!(["refund"])
    );
    let thread: Vec<String> = edges(&top["messages"])
        .iter()
        .map(|m| m["node"]["externalId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(thread, ["1050118621198921728", "1050118621198921999"]);
    let first = &edges(&top["messages"])[0]["node"];
    assert_eq!(first["publishedAt"], "2018-10-10T20:19:24+00:00");
    assert_ne!(
        first["receivedAt"], first["publishedAt"],
        "both times are kept"
    );
    let dm = &convs[1];
    assert_eq!(dm["visibility"], "PRIVATE");
    assert_eq!(dm["author"]["handle"], "furiouscamper");
    assert!(top["priorityScore"].as_f64() > dm["priorityScore"].as_f64());

    // The brand's own tweet and DM were not stored as customer messages.
    assert_eq!(
        message::Entity::find().count(&app.state.db).await.unwrap(),
        3
    );
    assert_eq!(raw_count(&app).await, 1);

    // Paused: deliveries are refused, but X's periodic CRC check is still
    // answered, or X would disable the webhook before the channel resumes.
    pause_channel(&app, &s, json!(channel_id)).await;
    let crc = app
        .client
        .get(format!("{url}?crc_token=while-paused"))
        .send()
        .await
        .unwrap();
    assert_eq!(crc.status(), 200);
    let crc: Value = crc.json().await.unwrap();
    assert_eq!(
        crc["response_token"],
        x_crc_response(secret.as_bytes(), &CrcToken::parse("while-paused").unwrap())
    );
    let (code, _) = post(
        &app,
        &url,
        &[("x-twitter-webhooks-signature", sig.clone())],
        X_FIXTURE,
    )
    .await;
    assert_eq!(code, 409);
}

/// X delivers a tweet naming two connected accounts once for each: in one
/// workspace it is stored once, and a reply delivered for the other
/// account joins its thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tweet_delivered_for_two_connected_accounts_is_stored_once() {
    let app = TestApp::start().await.with_worker().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let secret = "x-consumer-secret-123";
    let (_, url) = connect(&app, &s, json!({ "workspaceId": ws, "kind": "X", "name": "@BrewCo", "externalAccountId": "2244994945", "secret": secret })).await;
    connect(&app, &s, json!({ "workspaceId": ws, "kind": "X", "name": "@BrewCoHelp", "externalAccountId": "7777777777", "secret": secret })).await;
    let for_help = String::from_utf8(X_FIXTURE.to_vec()).unwrap().replace(
        "\"for_user_id\": \"2244994945\"",
        "\"for_user_id\": \"7777777777\"",
    );
    assert_ne!(for_help.as_bytes(), X_FIXTURE);
    for body in [X_FIXTURE, for_help.as_bytes()] {
        let sig = x_sign(secret.as_bytes(), body);
        let (code, _) = post(&app, &url, &[("x-twitter-webhooks-signature", sig)], body).await;
        assert_eq!(code, 200);
    }
    app.eventually("both deliveries processed", async || {
        (pending_raw_events(&app).await == 0 && raw_count(&app).await == 2).then_some(())
    })
    .await;
    assert_eq!(
        message::Entity::find().count(&app.state.db).await.unwrap(),
        3,
        "the mention, its reply and the DM, once each"
    );
    let convs = conversations(&app, &s, &ws).await;
    assert_eq!(convs.len(), 2);
    assert_eq!(edges(&convs[0]["messages"]).len(), 2);

    // A new reply to the mention, by another customer, delivered only for
    // the other account, joins the mention's thread.
    let mut only_reply: Value = serde_json::from_str(&for_help).unwrap();
    let mut reply = only_reply["tweet_create_events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id_str"] == "1050118621198921999")
        .unwrap()
        .clone();
    reply["id_str"] = json!("1050118621198922000");
    reply["text"] = json!("@BrewCoHelp same here, nothing from @BrewCo");
    // Another customer: only the thread, not an open conversation of the
    // author's, can bring it there.
    reply["user"] = json!({ "id_str": "5550001", "screen_name": "bystander", "name": "By Stander", "followers_count": 3 });
    reply["in_reply_to_status_id_str"] = json!("1050118621198921728");
    only_reply["tweet_create_events"] = json!([reply]);
    only_reply["direct_message_events"] = json!([]);
    let body = serde_json::to_vec(&only_reply).unwrap();
    let sig = x_sign(secret.as_bytes(), &body);
    post(&app, &url, &[("x-twitter-webhooks-signature", sig)], &body).await;
    app.eventually("the reply threaded", async || {
        let convs = conversations(&app, &s, &ws).await;
        (convs.len() == 2 && edges(&convs[0]["messages"]).len() == 3).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_are_refused_and_leave_nothing_behind() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let (x_id, x_url) = connect(&app, &s, json!({ "workspaceId": ws, "kind": "X", "name": "x", "externalAccountId": "1", "secret": "right-secret" })).await;
    let (_, fb_url) = connect(&app, &s, json!({ "workspaceId": ws, "kind": "FACEBOOK", "name": "fb", "externalAccountId": "104000000000001", "secret": "meta-app-secret", "verifyToken": "verify-me-please" })).await;
    let (g_id, g_url) = connect(&app, &s, json!({ "workspaceId": ws, "kind": "GENERIC", "name": "reviews", "secret": "generic-secret" })).await;

    let mut altered = META_FIXTURE.to_vec();
    let pos = altered.iter().position(|b| *b == b'T').unwrap();
    altered[pos] = b't';
    let now = chrono::Utc::now().timestamp();
    let cases: Vec<(&str, &str, Headers, Vec<u8>)> = vec![
        (
            "x wrong secret",
            &x_url,
            vec![(
                "x-twitter-webhooks-signature",
                x_sign(b"wrong-secret", X_FIXTURE),
            )],
            X_FIXTURE.to_vec(),
        ),
        ("x missing header", &x_url, vec![], X_FIXTURE.to_vec()),
        (
            "x malformed header",
            &x_url,
            vec![("x-twitter-webhooks-signature", "sha1=abc".into())],
            X_FIXTURE.to_vec(),
        ),
        (
            "meta altered body",
            &fb_url,
            vec![(
                "x-hub-signature-256",
                meta_sign(b"meta-app-secret", META_FIXTURE),
            )],
            altered,
        ),
        (
            "meta wrong secret",
            &fb_url,
            vec![("x-hub-signature-256", meta_sign(b"nope", META_FIXTURE))],
            META_FIXTURE.to_vec(),
        ),
        (
            "generic stale",
            &g_url,
            vec![(
                "x-rapport-signature",
                generic_sign(b"generic-secret", GENERIC_FIXTURE, now - 3600),
            )],
            GENERIC_FIXTURE.to_vec(),
        ),
        ("generic unsigned", &g_url, vec![], GENERIC_FIXTURE.to_vec()),
    ];
    for (what, url, headers, body) in cases {
        let (code, resp) = post(&app, url, &headers, &body).await;
        assert_eq!(code, 401, "{what}: {resp}");
    }
    assert_eq!(raw_count(&app).await, 0, "rejections store nothing");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("rapport_webhook_rejected_total{reason=\"signature_mismatch\"}"),
        "{metrics}"
    );

    // The emoji-and-accents body verifies on its raw bytes when signed right.
    let (code, _) = post(
        &app,
        &fb_url,
        &[(
            "x-hub-signature-256",
            meta_sign(b"meta-app-secret", META_FIXTURE),
        )],
        META_FIXTURE,
    )
    .await;
    assert_eq!(code, 200);

    // Meta's subscription check.
    let ok = app
        .client
        .get(format!(
            "{fb_url}?hub.mode=subscribe&hub.verify_token=verify-me-please&hub.challenge=1158201444"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "1158201444");
    let bad = app
        .client
        .get(format!(
            "{fb_url}?hub.mode=subscribe&hub.verify_token=guess&hub.challenge=1"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 403);

    // A secret that cannot be decrypted (the key changed) is never taken
    // for an empty key: a body "signed" with "" gets 503 (the platform
    // retries) and stores nothing; so does X's CRC check.
    let before = raw_count(&app).await;
    for gid in [g_id.as_str(), x_id.as_str()] {
        let id = rapport_domain::GlobalId::decode(rapport_domain::Kind::Channel, gid).unwrap();
        let mut c: rapport_store::entities::channel::ActiveModel =
            rapport_store::entities::channel::Entity::find_by_id(id)
                .one(&app.state.db)
                .await
                .unwrap()
                .unwrap()
                .into();
        c.secret_ciphertext = sea_orm::Set(Some(vec![7; 40]));
        sea_orm::ActiveModelTrait::update(c, &app.state.db)
            .await
            .unwrap();
    }
    let (code, resp) = post(
        &app,
        &g_url,
        &[(
            "x-rapport-signature",
            generic_sign(b"", GENERIC_FIXTURE, chrono::Utc::now().timestamp()),
        )],
        GENERIC_FIXTURE,
    )
    .await;
    assert_eq!(
        (code, resp["status"].as_str()),
        (503, Some("secret_unavailable")),
        "{resp}"
    );
    let (code, resp) = post(
        &app,
        &x_url,
        &[("x-twitter-webhooks-signature", x_sign(b"", X_FIXTURE))],
        X_FIXTURE,
    )
    .await;
    assert_eq!(code, 503, "{resp}");
    let crc = app
        .client
        .get(format!("{x_url}?crc_token=abc"))
        .send()
        .await
        .unwrap();
    assert_eq!(crc.status(), 503);
    assert_eq!(raw_count(&app).await, before, "nothing stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_states_sizes_and_malformed_payloads_get_their_documented_answers() {
    let app = TestApp::start_with(|s| s.max_webhook_bytes = 64 * 1024)
        .await
        .with_worker()
        .await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let (id, url) = connect(
        &app,
        &s,
        json!({ "workspaceId": ws, "kind": "GENERIC", "name": "own", "secret": "generic-secret" }),
    )
    .await;
    let sign = |body: &[u8]| {
        vec![(
            "x-rapport-signature",
            generic_sign(b"generic-secret", body, chrono::Utc::now().timestamp()),
        )]
    };

    let unknown = format!("{}/webhooks/{}", app.base, uuid::Uuid::now_v7());
    assert_eq!(post(&app, &unknown, &sign(b"{}"), b"{}").await.0, 404);
    assert_eq!(
        post(
            &app,
            &format!("{}/webhooks/not-a-uuid", app.base),
            &[],
            b"{}"
        )
        .await
        .0,
        404
    );

    let big = vec![b' '; 65 * 1024];
    assert_eq!(post(&app, &url, &sign(&big), &big).await.0, 413);

    // Signed but not JSON: accepted (it is the platform's body), then a
    // dead letter the agency can see, with its error.
    let junk = b"{\"events\": [ this is not json";
    let (code, _) = post(&app, &url, &sign(junk), junk).await;
    assert_eq!(code, 200);
    let dl = app
        .eventually("a dead letter", async || {
            let d = app
                .ok(Some(&s.access), "query($w: ID!) { deadLetters(workspaceId: $w) { edges { node { id error status body } } } }", json!({ "w": ws }))
                .await;
            edges(&d["deadLetters"]).first().map(|e| e["node"].clone())
        })
        .await;
    assert!(dl["error"].as_str().unwrap().contains("not JSON"), "{dl}");
    assert_eq!(dl["body"], String::from_utf8_lossy(junk).as_ref());
    // A member restricted to the workspace sees the error, not the body: a
    // delivery may carry other workspaces' messages.
    let (agent, _) = app
        .add_member(&s, "agent@acme.test", "AGENT", Some(vec![ws.clone()]))
        .await;
    let seen = app
        .ok(
            Some(&agent.access),
            "query($w: ID!) { deadLetters(workspaceId: $w) { edges { node { error body bodyHidden } } } }",
            json!({ "w": ws }),
        )
        .await;
    let node = &edges(&seen["deadLetters"])[0]["node"];
    assert_eq!(
        (node["body"].as_str(), node["bodyHidden"].as_bool()),
        (Some(""), Some(true))
    );
    assert!(node["error"].as_str().unwrap().contains("not JSON"));
    let retried = app
        .ok(
            Some(&s.access),
            "mutation($i: RetryDeadLetterInput!) { retryDeadLetter(input: $i) { status } }",
            json!({ "i": { "id": dl["id"] } }),
        )
        .await;
    assert_eq!(retried["retryDeadLetter"]["status"], "PENDING");

    // A valid event missing a field: dead letter naming the field.
    let partial = br#"{"events":[{"id":"e1","text":"hi","author":{"id":"a"}}]}"#;
    post(&app, &url, &sign(partial), partial).await;
    app.eventually("field named", async || {
        let d = app
            .ok(
                Some(&s.access),
                "query($w: ID!) { deadLetters(workspaceId: $w) { edges { node { error } } } }",
                json!({ "w": ws }),
            )
            .await;
        edges(&d["deadLetters"])
            .iter()
            .any(|e| {
                e["node"]["error"]
                    .as_str()
                    .unwrap()
                    .contains("published_at")
            })
            .then_some(())
    })
    .await;

    // Paused: 409 and nothing stored; disconnected: 410.
    let before = raw_count(&app).await;
    pause_channel(&app, &s, json!(id)).await;
    assert_eq!(
        post(&app, &url, &sign(GENERIC_FIXTURE), GENERIC_FIXTURE)
            .await
            .0,
        409
    );
    assert_eq!(raw_count(&app).await, before);
    app.ok(
        Some(&s.access),
        "mutation($i: ChannelIdInput!) { resumeChannel(input: $i) { status } }",
        json!({ "i": { "id": id } }),
    )
    .await;
    assert_eq!(
        post(&app, &url, &sign(GENERIC_FIXTURE), GENERIC_FIXTURE)
            .await
            .0,
        200
    );
    let d = app
        .ok(
            Some(&s.access),
            "mutation($i: ChannelIdInput!) { disconnectChannel(input: $i) { status hasSecret } }",
            json!({ "i": { "id": id } }),
        )
        .await;
    assert_eq!(
        d["disconnectChannel"],
        json!({ "status": "DISCONNECTED", "hasSecret": false })
    );
    assert_eq!(
        post(&app, &url, &sign(GENERIC_FIXTURE), GENERIC_FIXTURE)
            .await
            .0,
        410
    );
    // Gone for good: no new secret or token is stored on it.
    let r = app
        .gql(
            Some(&s.access),
            "mutation($i: UpdateChannelInput!) { updateChannel(input: $i) { hasSecret } }",
            json!({ "i": { "id": id, "secret": "a-brand-new-secret" } }),
        )
        .await;
    assert_eq!(common::code(&r), Some("BAD_USER_INPUT"), "{r}");
    let listed = app
        .ok(
            Some(&s.access),
            "query($w: ID!) { channels(workspaceId: $w) { edges { node { hasSecret } } } }",
            json!({ "w": ws }),
        )
        .await;
    assert_eq!(edges(&listed["channels"])[0]["node"]["hasSecret"], false);

    // An account connected again after its channel was disconnected gets
    // that channel back (its id, its webhook URL, its conversations);
    // connected twice, it is refused with a clear reason.
    let x = json!({ "workspaceId": ws, "kind": "X", "name": "@BrewCo", "externalAccountId": "2244994945",
                    "secret": "x-consumer-secret" });
    let (x_id, x_url) = connect(&app, &s, x.clone()).await;
    let twice = app
        .gql(
            Some(&s.access),
            "mutation($i: ConnectChannelInput!) { connectChannel(input: $i) { id } }",
            json!({ "i": x }),
        )
        .await;
    assert_eq!(common::code(&twice), Some("BAD_USER_INPUT"), "{twice}");
    assert_eq!(
        twice["errors"][0]["extensions"]["field"],
        "externalAccountId"
    );
    app.ok(
        Some(&s.access),
        "mutation($i: ChannelIdInput!) { disconnectChannel(input: $i) { status } }",
        json!({ "i": { "id": x_id } }),
    )
    .await;
    let mut again = x.clone();
    again["secret"] = json!("x-consumer-secret-2");
    let (back_id, back_url) = connect(&app, &s, again).await;
    assert_eq!(
        (back_id.as_str(), back_url.as_str()),
        (x_id.as_str(), x_url.as_str())
    );
    let d = app
        .ok(
            Some(&s.access),
            "query($w: ID!) { channels(workspaceId: $w) { edges { node { id status hasSecret } } } }",
            json!({ "w": ws }),
        )
        .await;
    let back = edges(&d["channels"])
        .into_iter()
        .find(|e| e["node"]["id"] == json!(x_id))
        .unwrap();
    assert_eq!(back["node"]["status"], "ACTIVE");
    assert_eq!(back["node"]["hasSecret"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_events_land_in_every_workspace_whose_brand_they_mention() {
    let app = TestApp::start().await.with_worker().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let (home, brew, bean) = brand_workspaces(&app, &s).await;
    let (_, url) = connect(&app, &s, json!({ "workspaceId": home, "kind": "GENERIC", "name": "alerts", "secret": "generic-secret",
        "externalAccountId": "agency-alerts-1", "callbackUrl": "https://hooks.acme.example/rapport" })).await;
    let body = serde_json::to_vec(&json!({ "events": [
        { "id": "1", "text": "Brew Co and Bean Bros both ignored me", "published_at": "2026-11-20T09:00:00Z", "author": { "id": "u1" } },
        { "id": "2", "text": "Bean Bros is great", "published_at": "2026-11-20T09:00:00Z", "author": { "id": "u2" } },
        { "id": "3", "text": "no brand named here", "published_at": "2026-11-20T09:00:00Z", "author": { "id": "u3" } }
    ] }))
    .unwrap();
    let sig = generic_sign(b"generic-secret", &body, chrono::Utc::now().timestamp());
    assert_eq!(
        post(&app, &url, &[("x-rapport-signature", sig)], &body)
            .await
            .0,
        200
    );
    let count = async |w: &str| conversations(&app, &s, w).await.len();
    app.eventually("routed", async || (count(&bean).await == 2).then_some(()))
        .await;
    assert_eq!(count(&brew).await, 1);
    assert_eq!(
        count(&home).await,
        1,
        "unmatched events stay in the channel's workspace"
    );
    // The brand's report counts them by the kind of channel they came
    // through, a channel of another workspace.
    let now = chrono::Utc::now();
    let report = app
        .ok(
            Some(&s.access),
            "query($w: ID!, $from: DateTime!, $to: DateTime!) { workspaceReport(workspaceId: $w, from: $from, to: $to) { total { inboundByChannel { key count } } } }",
            json!({ "w": bean, "from": (now - chrono::Duration::hours(1)).to_rfc3339(), "to": (now + chrono::Duration::hours(1)).to_rfc3339() }),
        )
        .await;
    assert_eq!(
        report["workspaceReport"]["total"]["inboundByChannel"],
        json!([{ "key": "GENERIC", "count": 2 }])
    );

    // The routed conversations name the channel of `home`: an agent
    // restricted to `bean` sees what it is, not its addresses.
    let channel_of = async |token: &str| {
        app.ok(
            Some(token),
            "query($w: ID!) { conversations(workspaceId: $w, first: 1) { edges { node { channel {
                kind name externalAccountId webhookUrl callbackUrl } } } } }",
            json!({ "w": bean }),
        )
        .await["conversations"]["edges"][0]["node"]["channel"]
            .clone()
    };
    let owner = channel_of(&s.access).await;
    assert_eq!(owner["callbackUrl"], "https://hooks.acme.example/rapport");
    assert_eq!(owner["externalAccountId"], "agency-alerts-1");
    assert!(owner["webhookUrl"].is_string());
    let (agent, _) = app
        .add_member(&s, "agent@acme.test", "AGENT", Some(vec![bean.clone()]))
        .await;
    let seen = channel_of(&agent.access).await;
    assert_eq!(
        seen,
        json!({ "kind": "GENERIC", "name": "alerts", "externalAccountId": "",
                "webhookUrl": null, "callbackUrl": null })
    );
}

/// One Meta app serves several client pages and calls one callback URL
/// for all of them: each page's entries land in the workspace of the
/// agency's channel for that page; a page with no channel of this agency
/// (even if another agency has one) is dropped, not stored here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_app_delivering_for_several_pages_lands_each_in_its_own_channel() {
    let app = TestApp::start().await.with_worker().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let other = app.sign_up("Other", "o@other.test").await;
    let brew = app.create_workspace(&s, "Brew Co").await;
    let bean = app.create_workspace(&s, "Bean Bros").await;
    let theirs = app.create_workspace(&other, "Theirs").await;
    let page = |ws: &str, id: &str| json!({ "workspaceId": ws, "kind": "FACEBOOK", "name": id, "externalAccountId": id, "secret": "shared-app-secret", "verifyToken": "verify-me-please" });
    let (_, url) = connect(&app, &s, page(&brew, "1001")).await;
    connect(&app, &s, page(&bean, "1002")).await;
    connect(&app, &other, page(&theirs, "1003")).await;
    let entry = |page: &str, n: u32, text: &str| {
        json!({ "id": page, "time": 1764300000 + n,
        "changes": [{ "field": "feed", "value": { "item": "comment", "verb": "add",
            "comment_id": format!("{page}_1_{n}"), "post_id": format!("{page}_1"), "created_time": 1764300000 + n,
            "message": text, "from": { "id": format!("70{n}"), "name": format!("Fan {n}") } } }] })
    };
    // Posts the entries to the one URL the app calls; it must take them.
    let deliver = async |entries: Vec<Value>| {
        let body = serde_json::to_vec(&json!({ "object": "page", "entry": entries })).unwrap();
        let sig = meta_sign(b"shared-app-secret", &body);
        let (code, resp) = post(&app, &url, &[("x-hub-signature-256", sig)], &body).await;
        assert_eq!(code, 200, "{resp}");
    };
    deliver(vec![
        entry("1001", 1, "the latte was cold"),
        entry("1002", 2, "beans arrived stale"),
        entry("1003", 3, "not for this agency"),
    ])
    .await;
    let texts = async |sess: &Session, ws: &str| -> Vec<String> {
        conversations(&app, sess, ws)
            .await
            .iter()
            .flat_map(|c| edges(&c["messages"]))
            .map(|m| m["node"]["body"].as_str().unwrap().to_string())
            .collect()
    };
    // Another page's entries commit in their own transaction, before the
    // receiving channel's: wait for both.
    app.eventually("each page's comment in its workspace", async || {
        (texts(&s, &bean).await == ["beans arrived stale"]
            && texts(&s, &brew).await == ["the latte was cold"])
        .then_some(())
    })
    .await;
    assert!(
        texts(&other, &theirs).await.is_empty(),
        "never across agencies"
    );
    assert_eq!(
        message::Entity::find().count(&app.state.db).await.unwrap(),
        2,
        "the unknown page's comment is dropped"
    );
    assert!(
        app.metrics()
            .await
            .contains("rapport_ingest_foreign_dropped_total")
    );

    // Another client's page, connected with its own app's secret: a body
    // signed with this app's secret vouches for nothing of it, whatever
    // page it names. Dropped; the same app's pages are served as before.
    let cup = app.create_workspace(&s, "Cup Co").await;
    connect(&app, &s, json!({ "workspaceId": cup, "kind": "FACEBOOK", "name": "1004", "externalAccountId": "1004", "secret": "cup-own-app-secret", "verifyToken": "verify-me-please" })).await;
    deliver(vec![
        entry("1004", 6, "forged into another client's inbox"),
        entry("1002", 7, "beans late again"),
    ])
    .await;
    app.eventually("the same app's page's comment, all processed", async || {
        (pending_raw_events(&app).await == 0
            && texts(&s, &bean)
                .await
                .contains(&"beans late again".to_string()))
        .then_some(())
    })
    .await;
    assert!(
        texts(&s, &cup).await.is_empty(),
        "never into a page under another secret"
    );

    // The page whose URL the app calls is paused: the other page's entries
    // still come in through it; the paused page's own are not taken in.
    let brew_channel = app
        .ok(
            Some(&s.access),
            "query($w: ID!) { channels(workspaceId: $w) { edges { node { id } } } }",
            json!({ "w": brew }),
        )
        .await["channels"]["edges"][0]["node"]["id"]
        .clone();
    pause_channel(&app, &s, json!(brew_channel)).await;
    deliver(vec![
        entry("1001", 4, "paused page comment"),
        entry("1002", 5, "beans still stale"),
    ])
    .await;
    app.eventually("the sibling's comment through the paused URL", async || {
        texts(&s, &bean)
            .await
            .contains(&"beans still stale".to_string())
            .then_some(())
    })
    .await;
    assert_eq!(texts(&s, &brew).await, ["the latte was cold"]);
    app.eventually("the raw event processed", async || {
        (pending_raw_events(&app).await == 0).then_some(())
    })
    .await;
    assert_eq!(texts(&s, &brew).await, ["the latte was cold"]);

    // With the app's other page paused too, the paused URL serves no page
    // of its app (Cup Co's is another app's): refused, as any paused one.
    let bean_channel = app
        .ok(
            Some(&s.access),
            "query($w: ID!) { channels(workspaceId: $w) { edges { node { id } } } }",
            json!({ "w": bean }),
        )
        .await["channels"]["edges"][0]["node"]["id"]
        .clone();
    pause_channel(&app, &s, bean_channel).await;
    let body = serde_json::to_vec(
        &json!({ "object": "page", "entry": [entry("1004", 8, "still not yours")] }),
    )
    .unwrap();
    let sig = meta_sign(b"shared-app-secret", &body);
    let (code, _) = post(&app, &url, &[("x-hub-signature-256", sig)], &body).await;
    assert_eq!(code, 409);
}

/// Deliveries accepted for another page wait while the channel that
/// received them changes: given another secret, then disconnected (its
/// secret wiped). The other page's entries are still stored: their stored
/// signature is checked again with that page's own secret, not compared
/// with the receiving channel's secret of the moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_pages_entries_waiting_while_the_receiving_channel_changes_are_stored() {
    use rapport_worker::ingest::Ingestor;
    let app = TestApp::start().await; // no worker: the deliveries wait
    let s = app.sign_up("Acme", "a@acme.test").await;
    let brew = app.create_workspace(&s, "Brew Co").await;
    let bean = app.create_workspace(&s, "Bean Bros").await;
    let page = |ws: &str, id: &str| json!({ "workspaceId": ws, "kind": "FACEBOOK", "name": id, "externalAccountId": id, "secret": "shared-app-secret", "verifyToken": "verify-me-please" });
    let (brew_channel, url) = connect(&app, &s, page(&brew, "1001")).await;
    connect(&app, &s, page(&bean, "1002")).await;
    for n in 1..=2 {
        let body = serde_json::to_vec(&json!({ "object": "page", "entry": [{ "id": "1002", "time": 1764300000 + n,
            "changes": [{ "field": "feed", "value": { "item": "comment", "verb": "add",
                "comment_id": format!("1002_1_{n}"), "post_id": "1002_1", "created_time": 1764300000 + n,
                "message": format!("beans stale, take {n}"), "from": { "id": format!("70{n}"), "name": "Fan" } } }] }] }))
        .unwrap();
        let sig = meta_sign(b"shared-app-secret", &body);
        let (code, resp) = post(&app, &url, &[("x-hub-signature-256", sig)], &body).await;
        assert_eq!(code, 200, "{resp}");
    }
    let mut raws = raw_event::Entity::find().all(&app.state.db).await.unwrap();
    raws.sort_by_key(|r| r.created_at);
    assert_eq!(raws.len(), 2);
    let job = |r: &raw_event::Model| json!({ "raw_event_id": r.id.to_string() });
    let ingestor = Ingestor {
        db: app.state.db.clone(),
        kv: app.state.kv.clone(),
        secrets: app.state.secrets.clone(),
    };
    let stored = async || message::Entity::find().count(&app.state.db).await.unwrap();

    app.ok(
        Some(&s.access),
        "mutation($i: UpdateChannelInput!) { updateChannel(input: $i) { hasSecret } }",
        json!({ "i": { "id": brew_channel, "secret": "brew-moved-to-its-own-app" } }),
    )
    .await;
    for r in ingestor.handle_many(vec![job(&raws[0])]).await {
        r.unwrap();
    }
    assert_eq!(stored().await, 1, "stored after the new secret");

    app.ok(
        Some(&s.access),
        "mutation($i: ChannelIdInput!) { disconnectChannel(input: $i) { status } }",
        json!({ "i": { "id": brew_channel } }),
    )
    .await;
    for r in ingestor.handle_many(vec![job(&raws[1])]).await {
        r.unwrap();
    }
    assert_eq!(stored().await, 2, "stored after the disconnect");
    let convs = conversations(&app, &s, &bean).await;
    assert_eq!(convs.len(), 2, "both in Bean Bros");
}

/// JSON may carry `\u0000`, which PostgreSQL's text refuses: the character
/// is dropped, not the payload (before, the whole delivery failed on every
/// retry and became a dead letter that no retry could mend).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_character_is_dropped_not_the_payload() {
    let app = TestApp::start().await.with_worker().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let (_, url) = connect(&app, &s, json!({ "workspaceId": ws, "kind": "GENERIC", "name": "reviews", "secret": "generic-secret" })).await;
    app.deliver_generic(&url,
        json!([
            { "id": "n\u{0}ul", "text": "cold\u{0} latte", "published_at": "2026-11-20T09:00:00Z", "author": { "id": "u\u{0}1", "handle": "ana\u{0}", "name": "A\u{0}na" } },
            { "id": "plain", "text": "fine coffee", "published_at": "2026-11-20T09:01:00Z", "author": { "id": "u2" } }
        ]),
    )
    .await;
    let all = app
        .eventually("both stored", async || {
            let c = conversations(&app, &s, &ws).await;
            (c.len() == 2).then_some(c)
        })
        .await;
    let ana = all.iter().find(|c| c["author"]["handle"] == "ana").unwrap();
    let m = &edges(&ana["messages"])[0]["node"];
    assert_eq!(
        (m["externalId"].as_str(), m["body"].as_str()),
        (Some("nul"), Some("cold latte"))
    );
    app.import_events(
        &s,
        &ws,
        json!([{ "id": "imp\u{0}", "text": "again\u{0}", "published_at": "2026-11-20T09:02:00Z", "author": { "id": "u3" } }]),
    )
    .await;
    assert_eq!(conversations(&app, &s, &ws).await.len(), 3);
}

/// A keyword-routed reply that names no brand follows its thread; a
/// message already stored stays where it was first put, whatever the
/// keywords say when it comes again; a private message answering a public
/// one opens a private conversation of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_replies_follow_their_thread_and_stored_messages_stay_put() {
    let app = TestApp::start().await.with_worker().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let (home, brew, bean) = brand_workspaces(&app, &s).await;
    let (_, url) = connect(&app, &s, json!({ "workspaceId": home, "kind": "GENERIC", "name": "alerts", "secret": "generic-secret" })).await;
    let event = |id: &str, reply_to: Option<&str>, text: &str, visibility: &str| {
        json!({ "id": id, "in_reply_to": reply_to, "text": text, "visibility": visibility,
                "published_at": "2026-11-20T09:00:00Z", "author": { "id": "ana" } })
    };
    let stored = async |n: u64| {
        app.eventually("messages stored", async || {
            (message::Entity::find().count(&app.state.db).await.unwrap() == n).then_some(())
        })
        .await
    };
    app.deliver_generic(
        &url,
        json!([event("p", None, "my Brew Co latte was cold", "public")]),
    )
    .await;
    stored(1).await;
    // The reply names no brand: it joins its thread in Brew Co, not the
    // channel's own workspace.
    app.deliver_generic(
        &url,
        json!([event(
            "r",
            Some("p"),
            "still waiting, three days now",
            "public"
        )]),
    )
    .await;
    stored(2).await;
    let count = async |w: &str| conversations(&app, &s, w).await.len();
    assert_eq!(count(&home).await, 0);
    let thread = conversations(&app, &s, &brew).await;
    assert_eq!(thread.len(), 1);
    assert_eq!(edges(&thread[0]["messages"]).len(), 2);

    // Brew Co's keyword goes; the source sends its first event again in a
    // new body with another: the old one is not stored again elsewhere.
    app.ok(
        Some(&s.access),
        "mutation($i: UpdateWorkspaceInput!) { updateWorkspace(input: $i) { id } }",
        json!({ "i": { "id": brew, "brandKeywords": [] } }),
    )
    .await;
    app.deliver_generic(
        &url,
        json!([
            event("p", None, "my Brew Co latte was cold", "public"),
            event("q", None, "Bean Bros beans were stale", "public"),
        ]),
    )
    .await;
    stored(3).await;
    assert_eq!(count(&home).await, 0);
    assert_eq!(count(&bean).await, 1);

    // A private message answering the public thread: a private
    // conversation of its own, in the thread's workspace.
    app.deliver_generic(
        &url,
        json!([event(
            "v",
            Some("p"),
            "sending my order number privately",
            "private"
        )]),
    )
    .await;
    stored(4).await;
    let convs = conversations(&app, &s, &brew).await;
    assert_eq!(convs.len(), 2, "{convs:?}");
    let public = convs.iter().find(|c| c["visibility"] == "PUBLIC").unwrap();
    assert_eq!(edges(&public["messages"]).len(), 2);

    // A reply whose thread is only in an archived workspace falls back to
    // the channel's own: stored, not dropped.
    app.ok(
        Some(&s.access),
        "mutation($i: ArchiveWorkspaceInput!) { archiveWorkspace(input: $i) { archived } }",
        json!({ "i": { "id": bean } }),
    )
    .await;
    app.deliver_generic(
        &url,
        json!([event("q2", Some("q"), "still stale a week on", "public")]),
    )
    .await;
    stored(5).await;
    assert_eq!(count(&home).await, 1);
}

/// Out of order: a reply naming no brand, stored before its parent (in the
/// channel's own workspace: nothing else was known), is not cut off from
/// it. The parent lands in its brand's workspace and in the reply's,
/// where it joins the reply's conversation, whether it comes in a later
/// delivery or later in the same one. The same event twice in one body,
/// edited in between to name a brand, is stored once, where the first copy
/// went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyword_routed_replies_stored_before_their_parents_keep_their_thread() {
    let app = TestApp::start().await.with_worker().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let (home, brew, _) = brand_workspaces(&app, &s).await;
    let (_, url) = connect(&app, &s, json!({ "workspaceId": home, "kind": "GENERIC", "name": "alerts", "secret": "generic-secret" })).await;
    let event = |id: &str, reply_to: Option<&str>, text: &str, author: &str| {
        json!({ "id": id, "in_reply_to": reply_to, "text": text,
                "published_at": "2026-11-20T09:00:00Z", "author": { "id": author } })
    };
    let settled = async |n: u64| {
        app.eventually("all processed", async || {
            (pending_raw_events(&app).await == 0).then_some(())
        })
        .await;
        assert_eq!(
            message::Entity::find().count(&app.state.db).await.unwrap(),
            n
        );
    };
    let threads = async |w: &str| -> Vec<Vec<String>> {
        let mut t: Vec<Vec<String>> = conversations(&app, &s, w)
            .await
            .iter()
            .map(|c| {
                let mut m: Vec<String> = edges(&c["messages"])
                    .iter()
                    .map(|m| m["node"]["body"].as_str().unwrap().to_string())
                    .collect();
                m.sort();
                m
            })
            .collect();
        t.sort();
        t
    };

    app.deliver_generic(
        &url,
        json!([event("r1", Some("p1"), "same here, twice this week", "bo")]),
    )
    .await;
    settled(1).await;
    app.deliver_generic(
        &url,
        json!([event("p1", None, "my Brew Co latte was cold", "ana")]),
    )
    .await;
    settled(3).await;
    assert_eq!(
        threads(&home).await,
        [["my Brew Co latte was cold", "same here, twice this week"]]
    );
    assert_eq!(threads(&brew).await, [["my Brew Co latte was cold"]]);

    app.deliver_generic(
        &url,
        json!([
            event("r2", Some("p2"), "mine leaked too", "cy"),
            event("p2", None, "Brew Co cups leak", "dee"),
        ]),
    )
    .await;
    settled(6).await;
    assert!(threads(&home).await.contains(&vec![
        "Brew Co cups leak".to_string(),
        "mine leaked too".to_string()
    ]));
    assert!(
        threads(&brew)
            .await
            .contains(&vec!["Brew Co cups leak".to_string()])
    );

    app.deliver_generic(
        &url,
        json!([
            event("e", None, "a plain complaint", "eve"),
            event("e", None, "a plain complaint, about Brew Co now", "eve"),
        ]),
    )
    .await;
    settled(7).await;
    assert!(
        threads(&home)
            .await
            .contains(&vec!["a plain complaint".to_string()])
    );
}

/// A resolved conversation reopened by its customer's reply is theirs
/// again: their new mention in the same payload joins it, as it would
/// arriving alone, rather than open a second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_reopened_earlier_in_a_payload_takes_the_authors_next_mention() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let event = |id: &str, reply_to: Option<&str>, text: &str| {
        json!({ "id": id, "in_reply_to": reply_to, "text": text,
                "published_at": "2026-11-20T09:00:00Z", "author": { "id": "ana" } })
    };
    app.import_events(&s, &ws, json!([event("1", None, "my latte was cold")]))
        .await;
    let c = conversations(&app, &s, &ws).await[0]["id"].clone();
    app.ok(
        Some(&s.access),
        "mutation($c: ID!) { resolveConversation(conversationId: $c) { status } }",
        json!({ "c": c }),
    )
    .await;
    app.import_events(
        &s,
        &ws,
        json!([
            event("2", Some("1"), "still cold today"),
            event("3", None, "and the new cup was cold too"),
        ]),
    )
    .await;
    let all = conversations(&app, &s, &ws).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["status"], "OPEN");
    assert_eq!(edges(&all[0]["messages"]).len(), 3);
}

/// One payload joining several known conversations (one of them resolved)
/// and refreshing their authors: on PostgreSQL all of it is written in one
/// statement per table, which must leave each row as its own update would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_payload_updates_each_joined_conversation_and_author() {
    use rapport_store::entities::{author, conversation};
    use sea_orm::{ColumnTrait, QueryFilter, QueryOrder};
    let app = TestApp::start().await.with_worker().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let (_, url) = connect(&app, &s, json!({ "workspaceId": ws, "kind": "GENERIC", "name": "alerts", "secret": "generic-secret" })).await;
    let deliver = async |events: Value| app.deliver_generic(&url, events).await;
    let stored = async |n: u64| {
        app.eventually("messages stored", async || {
            (message::Entity::find().count(&app.state.db).await.unwrap() == n).then_some(())
        })
        .await
    };
    let all_conversations = async || {
        conversation::Entity::find()
            .order_by_asc(conversation::Column::Id)
            .all(&app.state.db)
            .await
            .unwrap()
    };
    let event = |id: &str, author: &str, handle: &str, followers: u64, text: &str, at: &str| {
        json!({ "id": id, "text": text, "published_at": at,
                "author": { "id": author, "handle": handle, "followers": followers } })
    };
    deliver(json!([
        event(
            "1",
            "u1",
            "one",
            10,
            "what time do you open",
            "2026-11-20T09:00:00Z"
        ),
        event(
            "2",
            "u2",
            "two",
            20,
            "is there parking nearby",
            "2026-11-20T09:00:00Z"
        ),
        event(
            "3",
            "u3",
            "three",
            30,
            "do you sell gift cards",
            "2026-11-20T09:00:00Z"
        ),
    ]))
    .await;
    stored(3).await;
    let before = all_conversations().await;
    assert_eq!(before.len(), 3);
    let of = |external_id: &str, rows: &[conversation::Model], authors: &[author::Model]| {
        let a = authors
            .iter()
            .find(|a| a.external_id == external_id)
            .unwrap();
        rows.iter().find(|c| c.author_id == a.id).unwrap().clone()
    };
    let authors = author::Entity::find().all(&app.state.db).await.unwrap();
    let resolved = of("u2", &before, &authors);
    app.ok(
        Some(&s.access),
        "mutation($c: ID!) { resolveConversation(conversationId: $c) { status } }",
        json!({ "c": rapport_domain::GlobalId::encode(rapport_domain::Kind::Conversation, resolved.id) }),
    )
    .await;

    // One payload: an angry refund demand, a happy reply in the resolved
    // conversation, a neutral follow-up; every author's profile changed
    // (u3's reach kept, so its rank cannot rise).
    let mut reply = event(
        "5",
        "u2",
        "two",
        200,
        "Thanks, that was great help!",
        "2026-11-20T10:05:00Z",
    );
    reply["in_reply_to"] = json!("2");
    deliver(json!([
        event(
            "4",
            "u1",
            "one_renamed",
            100,
            "This is terrible, I want a refund now!",
            "2026-11-20T10:00:00.123456Z"
        ),
        reply,
        event("6", "u3", "three_new", 30, "ok", "2026-11-20T08:00:00Z"),
    ]))
    .await;
    stored(6).await;
    let after = all_conversations().await;
    assert_eq!(
        after.iter().map(|c| c.id).collect::<Vec<_>>(),
        before.iter().map(|c| c.id).collect::<Vec<_>>(),
        "every message joined its author's conversation"
    );
    let authors = author::Entity::find()
        .order_by_asc(author::Column::ExternalId)
        .all(&app.state.db)
        .await
        .unwrap();
    assert_eq!(
        authors
            .iter()
            .map(|a| (a.handle.as_str(), a.follower_count))
            .collect::<Vec<_>>(),
        [("one_renamed", 100), ("two", 200), ("three_new", 30)]
    );
    let ts = |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap().to_utc();

    let (old1, new1) = (of("u1", &before, &authors), of("u1", &after, &authors));
    assert!(new1.priority_score > old1.priority_score, "{new1:?}");
    assert_eq!(new1.priority_breakdown.0.urgency_matches, ["refund"]);
    assert!(new1.sentiment.unwrap() < -0.05, "{new1:?}");
    assert_eq!(new1.opening_sentiment, old1.opening_sentiment);
    assert_eq!(
        new1.last_customer_message_at,
        ts("2026-11-20T10:00:00.123456Z")
    );
    assert!(new1.updated_at > old1.updated_at);
    assert_eq!(new1.status, "OPEN");

    let new2 = of("u2", &after, &authors);
    assert_eq!(new2.status, "OPEN", "the customer's answer reopened it");
    assert_eq!(new2.resolved_at, None);
    assert_eq!(new2.resolution_business_s, None);
    assert!(new2.sentiment.unwrap() > 0.05);
    assert_eq!(new2.last_customer_message_at, ts("2026-11-20T10:05:00Z"));

    // An older message does not move the last customer message back; a
    // milder one keeps the conversation's rank and breakdown.
    let (old3, new3) = (of("u3", &before, &authors), of("u3", &after, &authors));
    assert_eq!(new3.last_customer_message_at, old3.last_customer_message_at);
    assert_eq!(new3.priority_breakdown, old3.priority_breakdown);
    assert_eq!(new3.sentiment, old3.sentiment, "the latest message's mood");
    assert_eq!(
        message::Entity::find()
            .filter(message::Column::ConversationId.eq(new3.id))
            .count(&app.state.db)
            .await
            .unwrap(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_arriving_after_its_replies_joins_their_conversation_as_an_earlier_message() {
    use rapport_store::entities::conversation;
    use sea_orm::{ColumnTrait, QueryFilter, QueryOrder};
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let t =
        json!({ "firstResponseMinutes": 60, "nextResponseMinutes": 30, "resolutionMinutes": 480 });
    app.default_policy(&s, &ws, t, json!({})).await;
    let event = |id: &str, author: &str, text: &str, at: &str, reply_to: Option<&str>| {
        let mut e = json!({ "id": id, "text": text, "published_at": at,
                            "author": { "id": author, "handle": author, "followers": 10 } });
        if let Some(p) = reply_to {
            e["in_reply_to"] = json!(p);
        }
        e
    };
    let conversations = async || {
        conversation::Entity::find()
            .order_by_asc(conversation::Column::Id)
            .all(&app.state.db)
            .await
            .unwrap()
    };
    let conversation_of = async |external_id: &str| {
        message::Entity::find()
            .filter(message::Column::ExternalId.eq(external_id))
            .one(&app.state.db)
            .await
            .unwrap()
            .unwrap()
            .conversation_id
    };

    // A friendly answer arrives before the complaint it answers: it starts
    // a conversation, clocks running.
    app.import_events(
        &s,
        &ws,
        json!([event(
            "b1",
            "bob",
            "they open at nine, hope that helps",
            "2026-12-05T09:05:00Z",
            Some("a1")
        )]),
    )
    .await;
    let [before] = conversations().await.try_into().unwrap();
    assert!(before.first_response_due_at.is_some());

    // The complaint: it joins that conversation and ranks it; older than
    // the answer, it leaves the latest sentiment and the clocks alone.
    let complaint = json!([event(
        "a1",
        "ann",
        "This is terrible, I want a refund now!",
        "2026-12-05T09:00:00Z",
        None
    )]);
    app.import_events(&s, &ws, complaint.clone()).await;
    let [after] = conversations().await.try_into().unwrap();
    assert_eq!(after.id, before.id);
    assert_eq!(conversation_of("a1").await, before.id);
    assert!(after.priority_score > before.priority_score, "{after:?}");
    assert_eq!(after.priority_breakdown.0.urgency_matches, ["refund"]);
    assert_eq!(after.sentiment, before.sentiment, "the latest message's");
    assert_eq!(
        after.last_customer_message_at,
        before.last_customer_message_at
    );
    assert_eq!(after.first_response_due_at, before.first_response_due_at);
    assert_eq!(after.due_at, before.due_at);
    assert_eq!(after.status, "OPEN");
    // The thread reads in publish order, a page at a time.
    let page = async |after: Value| {
        let d = app
            .ok(
                Some(&s.access),
                "query($c: ID!, $a: String) { conversation(id: $c) { messages(first: 1, after: $a) {
                    edges { cursor node { externalId } } pageInfo { hasNextPage } } } }",
                json!({ "c": rapport_domain::GlobalId::encode(rapport_domain::Kind::Conversation, before.id), "a": after }),
            )
            .await;
        d["conversation"]["messages"].clone()
    };
    let p1 = page(Value::Null).await;
    assert_eq!(p1["edges"][0]["node"]["externalId"], "a1", "{p1}");
    assert_eq!(p1["pageInfo"]["hasNextPage"], true);
    let p2 = page(p1["edges"][0]["cursor"].clone()).await;
    assert_eq!(p2["edges"][0]["node"]["externalId"], "b1", "{p2}");
    assert_eq!(p2["pageInfo"]["hasNextPage"], false);
    // Delivered again: nothing twice.
    app.import_events(&s, &ws, complaint).await;
    assert_eq!(
        message::Entity::find().count(&app.state.db).await.unwrap(),
        2
    );

    // Within one payload, the answer first: one conversation.
    app.import_events(
        &s,
        &ws,
        json!([
            event(
                "d1",
                "dan",
                "yes, in the car park",
                "2026-12-05T10:01:00Z",
                Some("c1")
            ),
            event(
                "c1",
                "cat",
                "is there parking?",
                "2026-12-05T10:00:00Z",
                None
            ),
        ]),
    )
    .await;
    assert_eq!(conversation_of("c1").await, conversation_of("d1").await);
    assert_eq!(conversations().await.len(), 2);

    // The customer's own conversation, resolved, stays resolved when an
    // earlier message of theirs turns up: the agent handled the newer one.
    app.import_events(
        &s,
        &ws,
        json!([event(
            "e2",
            "eve",
            "thanks, sorted!",
            "2026-12-05T11:05:00Z",
            Some("e1")
        )]),
    )
    .await;
    let resolve = async |id: uuid::Uuid| {
        app.ok(
            Some(&s.access),
            "mutation($c: ID!) { resolveConversation(conversationId: $c) { status } }",
            json!({ "c": rapport_domain::GlobalId::encode(rapport_domain::Kind::Conversation, id) }),
        )
        .await;
    };
    let eves = conversation_of("e2").await;
    resolve(eves).await;
    app.import_events(
        &s,
        &ws,
        json!([event(
            "e1",
            "eve",
            "my order is late",
            "2026-12-05T11:00:00Z",
            None
        )]),
    )
    .await;
    assert_eq!(conversation_of("e1").await, eves);
    let all = conversations().await;
    assert_eq!(all.len(), 3);
    let c = all.iter().find(|c| c.id == eves).unwrap();
    assert_eq!(c.status, "RESOLVED");
    assert!(c.resolved_at.is_some());

    // Another customer's message, though, is one nobody has answered: in
    // the resolved thread of the reply that came first, it reopens it.
    app.import_events(
        &s,
        &ws,
        json!([event(
            "f1",
            "fay",
            "same problem here",
            "2026-12-05T12:05:00Z",
            Some("g1")
        )]),
    )
    .await;
    let fays = conversation_of("f1").await;
    resolve(fays).await;
    app.import_events(
        &s,
        &ws,
        json!([event(
            "g1",
            "gus",
            "my parcel never came",
            "2026-12-05T12:00:00Z",
            None
        )]),
    )
    .await;
    assert_eq!(conversation_of("g1").await, fays);
    let c = conversations()
        .await
        .into_iter()
        .find(|c| c.id == fays)
        .unwrap();
    assert_eq!(c.status, "OPEN", "reopened for the unanswered customer");
    assert!(c.resolved_at.is_none());

    // A later reply to the early-answered message joins the same thread.
    assert_eq!(conversations().await.len(), 4);
    app.import_events(
        &s,
        &ws,
        json!([event(
            "a2",
            "ann",
            "still waiting on that refund",
            "2026-12-05T12:00:00Z",
            Some("a1")
        )]),
    )
    .await;
    assert_eq!(conversation_of("a2").await, before.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_read_together_share_a_transaction_and_a_failing_one_fails_alone() {
    use rapport_store::raw_events::PENDING;
    use rapport_worker::ingest::Ingestor;
    use sea_orm::{ColumnTrait, ConnectionTrait, QueryFilter, QueryOrder};
    // No worker: the test hands the raw events to the ingestor itself.
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let (_, url) = connect(&app, &s, json!({ "workspaceId": ws, "kind": "GENERIC", "name": "alerts", "secret": "generic-secret" })).await;
    // Delivers one payload; returns its job's payload.
    let deliver = async |id: &str, author: &str, text: &str, reply_to: Option<&str>| {
        let mut event = json!({ "id": id, "text": text, "published_at": "2026-11-20T09:00:00Z",
                                "author": { "id": author, "handle": author, "followers": 10 } });
        if let Some(parent) = reply_to {
            event["in_reply_to"] = json!(parent);
        }
        app.deliver_generic(&url, json!([event])).await;
        // Ids are time-ordered (UUIDv7): the newest is this one.
        let raw = raw_event::Entity::find()
            .order_by_desc(raw_event::Column::Id)
            .one(&app.state.db)
            .await
            .unwrap()
            .unwrap();
        json!({ "raw_event_id": raw.id })
    };
    let message = async |external_id: &str| {
        message::Entity::find()
            .filter(message::Column::ExternalId.eq(external_id))
            .one(&app.state.db)
            .await
            .unwrap()
    };
    let ingestor = Ingestor {
        db: app.state.db.clone(),
        kv: app.state.kv.clone(),
        secrets: app.state.secrets.clone(),
    };

    // A question, another author's answer to it, an unknown raw event: the
    // two known ones commit together (one receipt time), the answer joins
    // the question's conversation, the unknown one fails for good.
    let a = deliver("a1", "ann", "what time do you open", None).await;
    let b = deliver("b1", "bob", "they open at nine", Some("a1")).await;
    let unknown = json!({ "raw_event_id": uuid::Uuid::now_v7() });
    let results = ingestor.handle_many(vec![a.clone(), b, unknown]).await;
    assert!(results[0].is_ok() && results[1].is_ok(), "{results:?}");
    let err = results[2].as_ref().unwrap_err();
    assert!(
        err.downcast_ref::<rapport_worker::Permanent>().is_some(),
        "{err:#}"
    );
    let (a1, b1) = (message("a1").await.unwrap(), message("b1").await.unwrap());
    assert_eq!(a1.received_at, b1.received_at, "one transaction");
    assert_eq!(a1.conversation_id, b1.conversation_id);
    // Handed over again (a redelivery): nothing twice.
    assert!(ingestor.handle_many(vec![a]).await[0].is_ok());
    assert_eq!(
        message::Entity::find().count(&app.state.db).await.unwrap(),
        2
    );

    // A message the database refuses fails its transaction: the other
    // events of the group are stored one by one, the refused one stays
    // pending for a retry (its job fails, not permanently).
    let refuse = if is_postgres() {
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.body = 'poison' THEN RAISE EXCEPTION 'poison refused'; END IF; RETURN NEW; END $$;
         CREATE TRIGGER refuse_poison BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION refuse_poison();"
    } else {
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON messages WHEN NEW.body = 'poison'
         BEGIN SELECT RAISE(ABORT, 'poison refused'); END;"
    };
    app.state.db.execute_unprepared(refuse).await.unwrap();
    let c = deliver("c1", "cat", "do you sell gift cards", None).await;
    let poison = deliver("p1", "pat", "poison", None).await;
    let d = deliver("d1", "dan", "is there parking", None).await;
    let results = ingestor.handle_many(vec![c, poison, d]).await;
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    let err = results[1].as_ref().unwrap_err();
    assert!(
        err.downcast_ref::<rapport_worker::Permanent>().is_none(),
        "{err:#}"
    );
    assert!(format!("{err:#}").contains("poison refused"), "{err:#}");
    assert!(message("c1").await.is_some() && message("d1").await.is_some());
    assert!(message("p1").await.is_none());
    assert_eq!(
        raw_event::Entity::find()
            .filter(raw_event::Column::Status.eq(PENDING))
            .count(&app.state.db)
            .await
            .unwrap(),
        1,
        "only the refused event waits for a retry"
    );
}

/// Raw events processed more than the retention ago are pruned, oldest
/// first, a batch at a time; dead letters, pending events and recent ones
/// stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processed_raw_events_are_pruned_after_the_retention_and_nothing_else() {
    use sea_orm::{ActiveModelTrait, IntoActiveModel, QueryOrder, Set};
    let app = TestApp::start().await; // no worker: the event stays as posted
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let (_, url) = connect(&app, &s, json!({ "workspaceId": ws, "kind": "X", "name": "x", "externalAccountId": "2244994945", "secret": "x-consumer-secret-123" })).await;
    let sig = x_sign(b"x-consumer-secret-123", X_FIXTURE);
    post(
        &app,
        &url,
        &[("x-twitter-webhooks-signature", sig)],
        X_FIXTURE,
    )
    .await;
    let db = &app.state.db;
    let posted = raw_event::Entity::find().one(db).await.unwrap().unwrap();
    let now = chrono::Utc::now();
    let old = now - chrono::Duration::days(31);
    for (key, status, at) in [
        ("old-processed-1", "PROCESSED", old),
        (
            "old-processed-2",
            "PROCESSED",
            old + chrono::Duration::seconds(1),
        ),
        (
            "recent-processed",
            "PROCESSED",
            now - chrono::Duration::days(29),
        ),
        ("old-dead-letter", "FAILED", old),
        ("old-pending", "PENDING", old),
        // An old dead letter retried lately: kept as long as a fresh one.
        ("old-retried", "PROCESSED", old),
    ] {
        let mut am = posted.clone().into_active_model().reset_all();
        am.id = Set(uuid::Uuid::now_v7());
        am.dedup_key = Set(key.into());
        am.status = Set(status.into());
        am.created_at = Set(at);
        let processed = if key == "old-retried" {
            now - chrono::Duration::days(1)
        } else {
            at
        };
        am.processed_at = Set((status == "PROCESSED").then_some(processed));
        am.insert(db).await.unwrap();
    }
    let keep = std::time::Duration::from_secs(30 * 86_400);
    // One at a time: the pass goes on until none is left.
    let pruned = rapport_worker::reconciler::prune_once(db, keep, 1)
        .await
        .unwrap();
    assert_eq!(pruned, 2);
    let left: Vec<String> = raw_event::Entity::find()
        .order_by_asc(raw_event::Column::DedupKey)
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.dedup_key)
        .filter(|k| *k != posted.dedup_key)
        .collect();
    assert_eq!(
        left,
        [
            "old-dead-letter",
            "old-pending",
            "old-retried",
            "recent-processed"
        ]
    );
    assert_eq!(
        rapport_worker::reconciler::prune_once(db, keep, 1)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_lost_from_redis_are_recovered_by_the_reconciler() {
    let app = TestApp::start().await; // no worker yet
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let (_, url) = connect(&app, &s, json!({ "workspaceId": ws, "kind": "X", "name": "x", "externalAccountId": "2244994945", "secret": "x-consumer-secret-123" })).await;
    let sig = x_sign(b"x-consumer-secret-123", X_FIXTURE);
    assert_eq!(
        post(
            &app,
            &url,
            &[("x-twitter-webhooks-signature", sig)],
            X_FIXTURE
        )
        .await
        .0,
        200
    );
    // Redis loses everything.
    let _: () = redis::cmd("DEL")
        .arg(app.state.kv.key(rapport_store::jobs::STREAM))
        .query_async(&mut app.state.kv.conn())
        .await
        .unwrap();
    let cfg = rapport_worker::reconciler::ReconcilerConfig {
        grace: std::time::Duration::ZERO,
        ..Default::default()
    };
    // A pass whose enqueue fails (here the stream key holds a string)
    // leaves no mark behind: the next pass enqueues at once, not after
    // the marks expire.
    let stream = app.state.kv.key(rapport_store::jobs::STREAM);
    let _: () = redis::cmd("SET")
        .arg(&stream)
        .arg("not a stream")
        .query_async(&mut app.state.kv.conn())
        .await
        .unwrap();
    assert!(
        rapport_worker::reconciler::reconcile_once(&app.state.db, &app.state.kv, &cfg)
            .await
            .is_err()
    );
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut app.state.kv.conn())
        .await
        .unwrap();
    let n = rapport_worker::reconciler::reconcile_once(&app.state.db, &app.state.kv, &cfg)
        .await
        .unwrap();
    assert_eq!(n, 1);
    // Still pending (no worker yet), but re-enqueued already: the next pass
    // does not add it again (a backlog is not piled onto every minute),
    // nor once its mark has expired, while its job waits unread.
    assert_eq!(
        rapport_worker::reconciler::reconcile_once(&app.state.db, &app.state.kv, &cfg)
            .await
            .unwrap(),
        0
    );
    let marks: Vec<String> = redis::cmd("KEYS")
        .arg(app.state.kv.key("reconciler:requeued:*"))
        .query_async(&mut app.state.kv.conn())
        .await
        .unwrap();
    assert_eq!(marks.len(), 1);
    let _: () = redis::cmd("DEL")
        .arg(&marks)
        .query_async(&mut app.state.kv.conn())
        .await
        .unwrap();
    assert_eq!(
        rapport_worker::reconciler::reconcile_once(&app.state.db, &app.state.kv, &cfg)
            .await
            .unwrap(),
        0
    );
    let queued: usize = redis::cmd("XLEN")
        .arg(&stream)
        .query_async(&mut app.state.kv.conn())
        .await
        .unwrap();
    assert_eq!(queued, 1, "one job for the event");
    let app = app.with_worker().await;
    app.eventually("recovered", async || {
        (conversations(&app, &s, &ws).await.len() == 2).then_some(())
    })
    .await;
    // Reconciling again finds nothing pending.
    assert_eq!(
        rapport_worker::reconciler::reconcile_once(&app.state.db, &app.state.kv, &cfg)
            .await
            .unwrap(),
        0
    );
    // The workers have read every job: an event pending in the database
    // (its job lost) is enqueued again, and stored nothing twice.
    let _: () = redis::cmd("DEL")
        .arg(&marks)
        .query_async(&mut app.state.kv.conn())
        .await
        .unwrap();
    exec(&app.state.db, "UPDATE raw_events SET status = 'PENDING'").await;
    assert_eq!(
        rapport_worker::reconciler::reconcile_once(&app.state.db, &app.state.kv, &cfg)
            .await
            .unwrap(),
        1
    );
    app.eventually("processed again", async || {
        (pending_raw_events(&app).await == 0).then_some(())
    })
    .await;
    assert_eq!(conversations(&app, &s, &ws).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_and_channels_of_another_agency_are_invisible() {
    let app = TestApp::start().await.with_worker().await;
    let a = app.sign_up("A", "a@a.test").await;
    let b = app.sign_up("B", "b@b.test").await;
    let ws_b = app.create_workspace(&b, "B brand").await;
    let (ch_b, url) = connect(&app, &b, json!({ "workspaceId": ws_b, "kind": "X", "name": "x", "externalAccountId": "2244994945", "secret": "x-consumer-secret-123" })).await;
    post(
        &app,
        &url,
        &[(
            "x-twitter-webhooks-signature",
            x_sign(b"x-consumer-secret-123", X_FIXTURE),
        )],
        X_FIXTURE,
    )
    .await;
    let conv_b = app
        .eventually("b has conversations", async || {
            conversations(&app, &b, &ws_b)
                .await
                .first()
                .map(|c| c["id"].as_str().unwrap().to_string())
        })
        .await;
    for (q, vars) in [
        (
            "query($id: ID!) { conversation(id: $id) { id } }",
            json!({ "id": conv_b }),
        ),
        (
            "query($id: ID!) { conversations(workspaceId: $id) { edges { cursor } } }",
            json!({ "id": ws_b }),
        ),
        (
            "query($id: ID!) { channels(workspaceId: $id) { edges { cursor } } }",
            json!({ "id": ws_b }),
        ),
        (
            "query($id: ID!) { deadLetters(workspaceId: $id) { edges { cursor } } }",
            json!({ "id": ws_b }),
        ),
        (
            "mutation($id: ID!) { pauseChannel(input: { id: $id }) { id } }",
            json!({ "id": ch_b }),
        ),
        (
            "mutation($id: ID!) { updateChannel(input: { id: $id, name: \"x\" }) { id } }",
            json!({ "id": ch_b }),
        ),
        (
            "mutation($id: ID!) { connectChannel(input: { workspaceId: $id, kind: GENERIC, name: \"x\", secret: \"12345678\" }) { id } }",
            json!({ "id": ws_b }),
        ),
    ] {
        let r = app.gql(Some(&a.access), q, vars).await;
        assert_eq!(code(&r), Some("NOT_FOUND"), "{q}: {r}");
    }
}

/// (status answered, If-None-Match asked with).
type Asked = (u16, Option<String>);

/// A feed server: serves `body` with an ETag, answers 304 to a matching
/// If-None-Match, 500 while `fail` is set; records what it was asked.
#[derive(Clone, Default)]
struct FeedServer {
    body: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Asked>>>,
}

impl FeedServer {
    /// A server of the RSS fixture, started; and its URL.
    fn serving_the_fixture() -> (Self, String) {
        let feed = FeedServer::default();
        *feed.body.lock().unwrap() = include_bytes!("fixtures/feed_rss.xml").to_vec();
        let url = feed.start();
        (feed, url)
    }

    fn start(&self) -> String {
        use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
        let me = self.clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/feed.xml", listener.local_addr().unwrap());
        let server = HttpServer::new(move || {
            let me = me.clone();
            App::new().route(
                "/feed.xml",
                web::get().to(move |req: HttpRequest| {
                    let me = me.clone();
                    async move {
                        let body = me.body.lock().unwrap().clone();
                        let etag = format!("\"{}\"", rapport_domain::crypto::sha256_hex(&body));
                        let asked = req
                            .headers()
                            .get("if-none-match")
                            .and_then(|v| v.to_str().ok())
                            .map(String::from);
                        let (status, resp) = if me.fail.load(std::sync::atomic::Ordering::SeqCst) {
                            (500, HttpResponse::InternalServerError().finish())
                        } else if asked.as_deref() == Some(etag.as_str()) {
                            (304, HttpResponse::NotModified().finish())
                        } else {
                            (
                                200,
                                HttpResponse::Ok()
                                    .insert_header(("ETag", etag))
                                    .content_type("application/rss+xml")
                                    .body(body),
                            )
                        };
                        me.seen.lock().unwrap().push((status, asked));
                        resp
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
async fn feeds_are_polled_conditionally_deduplicated_and_backed_off() {
    use rapport_store::entities::channel;
    use rapport_worker::feeds::{FeedConfig, FeedPoller, Fetched};
    let app = TestApp::start().await.with_worker().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_brand(&s, "Brew Co", "brew co").await;
    let (feed, url) = FeedServer::serving_the_fixture();
    let (id, webhook) = connect(&app, &s, json!({ "workspaceId": ws, "kind": "FEED", "name": "alerts", "feedUrl": url, "pollIntervalSeconds": 60 })).await;
    assert_eq!(webhook, "", "feeds have no webhook URL");
    let id = rapport_domain::GlobalId::decode(rapport_domain::Kind::Channel, &id).unwrap();
    let load = async || {
        channel::Entity::find_by_id(id)
            .one(&app.state.db)
            .await
            .unwrap()
            .unwrap()
    };
    // By default a feed may not reach a private address, written as an IP
    // or as a name resolving to one: the error is kept, nothing is fetched.
    let guarded = FeedPoller::new(
        app.state.db.clone(),
        app.state.kv.clone(),
        FeedConfig::default(),
    )
    .unwrap();
    let err = guarded.poll(load().await).await.unwrap().unwrap_err();
    assert!(err.contains("127.0.0.1 is not a public address"), "{err}");
    let mut named = load().await;
    named.feed_url = Some(url.replace("127.0.0.1", "localhost"));
    let err = guarded.poll(named).await.unwrap().unwrap_err();
    assert!(err.contains("resolves to no public address"), "{err}");
    assert!(feed.seen.lock().unwrap().is_empty(), "nothing was fetched");
    assert!(load().await.state["lastError"].is_string());

    // The tests' server is local: allowed here (RAPPORT_ALLOW_PRIVATE_URLS).
    let poller = FeedPoller::new(
        app.state.db.clone(),
        app.state.kv.clone(),
        FeedConfig {
            allow_private: true,
            ..FeedConfig::default()
        },
    )
    .unwrap();

    assert_eq!(poller.poll(load().await).await.unwrap(), Ok(Fetched::New));
    assert_eq!(
        poller.poll(load().await).await.unwrap(),
        Ok(Fetched::NotModified)
    );
    let seen = feed.seen.lock().unwrap().clone();
    assert_eq!(seen[0], (200, None));
    assert_eq!(
        seen[1].0, 304,
        "the second poll sent If-None-Match: {seen:?}"
    );
    app.eventually("two entries", async || {
        (conversations(&app, &s, &ws).await.len() == 2).then_some(())
    })
    .await;

    // A changed feed repeating an old entry adds only the new one.
    let grown = String::from_utf8(include_bytes!("fixtures/feed_rss.xml").to_vec()).unwrap().replace(
        "<item>",
        "<item><title>New: Brew Co lost my order</title><link>https://alerts.example/brew/3</link><guid>https://alerts.example/brew/3</guid><description>angry</description></item>\n    <item>",
    );
    *feed.body.lock().unwrap() = grown.into_bytes();
    assert_eq!(poller.poll(load().await).await.unwrap(), Ok(Fetched::New));
    app.eventually("three entries", async || {
        (conversations(&app, &s, &ws).await.len() == 3).then_some(())
    })
    .await;
    assert_eq!(
        message::Entity::find().count(&app.state.db).await.unwrap(),
        3
    );

    // The same entries under a new build date (and so a new ETag) are not
    // stored again.
    let raw_before = raw_count(&app).await;
    let stamped = String::from_utf8(feed.body.lock().unwrap().clone())
        .unwrap()
        .replace(
            "<description>Mentions",
            "<lastBuildDate>Sun, 06 Dec 2026 08:00:00 GMT</lastBuildDate><description>Mentions",
        );
    *feed.body.lock().unwrap() = stamped.clone().into_bytes();
    assert_eq!(
        poller.poll(load().await).await.unwrap(),
        Ok(Fetched::Unchanged)
    );
    assert_eq!(raw_count(&app).await, raw_before);
    // A page that is no feed, served with 200, is the poll's error: backed
    // off, nothing stored, the last feed's validators kept.
    let etag = load().await.state["etag"].clone();
    *feed.body.lock().unwrap() = b"<html><body>Please log in</body></html>".to_vec();
    let err = poller.poll(load().await).await.unwrap().unwrap_err();
    assert!(err.contains("not an RSS or Atom feed"), "{err}");
    let state = load().await.state;
    assert_eq!(
        (state["failures"].clone(), state["etag"].clone()),
        (json!(1), etag)
    );
    assert_eq!(raw_count(&app).await, raw_before);
    *feed.body.lock().unwrap() = stamped.into_bytes();
    assert_eq!(
        poller.poll(load().await).await.unwrap(),
        Ok(Fetched::NotModified)
    );

    // Errors back off and are kept for the agency to see.
    feed.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(poller.poll(load().await).await.unwrap().is_err());
    let state = load().await.state;
    assert_eq!(state["failures"], 1);
    assert!(state["lastError"].as_str().unwrap().contains("500"));
    let next = chrono::DateTime::parse_from_rfc3339(state["nextPollAt"].as_str().unwrap()).unwrap();
    assert!(
        next > chrono::Utc::now() + chrono::Duration::seconds(100),
        "backed off past the interval"
    );
    // As the API shows it (the error only to staff who see the workspace).
    let poll_of = async |token: &str| {
        let d = app
            .ok(
                Some(token),
                "query($w: ID!) { channels(workspaceId: $w) { edges { node { feedPoll { lastPolledAt nextPollAt consecutiveFailures lastError } } } } }",
                json!({ "w": ws }),
            )
            .await;
        d["channels"]["edges"][0]["node"]["feedPoll"].clone()
    };
    let shown = poll_of(&s.access).await;
    assert_eq!(shown["consecutiveFailures"], 1);
    assert!(
        shown["lastError"].as_str().unwrap().contains("500"),
        "{shown}"
    );
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(shown["nextPollAt"].as_str().unwrap()).unwrap(),
        next
    );
    assert!(shown["lastPolledAt"].is_string());
    let (viewer, _) = app
        .add_member(
            &s,
            "client@brew.test",
            "CLIENT_VIEWER",
            Some(vec![ws.clone()]),
        )
        .await;
    // A client viewer reaches the channel through its conversations.
    let d = app
        .ok(
            Some(&viewer.access),
            "query($w: ID!) { conversations(workspaceId: $w) { edges { node { channel { feedPoll { consecutiveFailures lastError } } } } } }",
            json!({ "w": ws }),
        )
        .await;
    let hidden = &d["conversations"]["edges"][0]["node"]["channel"]["feedPoll"];
    assert_eq!(hidden["consecutiveFailures"], 1);
    assert_eq!(hidden["lastError"], Value::Null);
    assert_eq!(
        poller.poll_due().await.unwrap(),
        0,
        "not due while backing off"
    );

    // A new interval applies at once (not after the old schedule), and a
    // failing daily feed is not fetched more often than daily.
    let update =
        "mutation($i: UpdateChannelInput!) { updateChannel(input: $i) { pollIntervalSeconds } }";
    let channel_id = rapport_domain::GlobalId::encode(rapport_domain::Kind::Channel, id);
    app.ok(
        Some(&s.access),
        update,
        json!({ "i": { "id": channel_id, "pollIntervalSeconds": 86400 } }),
    )
    .await;
    assert_eq!(poller.poll_due().await.unwrap(), 1, "due at once");
    let state = load().await.state;
    assert_eq!(state["failures"], 2);
    let next = chrono::DateTime::parse_from_rfc3339(state["nextPollAt"].as_str().unwrap()).unwrap();
    assert!(
        next >= chrono::Utc::now() + chrono::Duration::seconds(86_000),
        "a failing daily feed waits at least a day: {next}"
    );

    // A poll that ends after the interval changed does not schedule the
    // next one on the old interval.
    let before = load().await;
    app.ok(
        Some(&s.access),
        update,
        json!({ "i": { "id": channel_id, "pollIntervalSeconds": 60 } }),
    )
    .await;
    assert!(poller.poll(before).await.unwrap().is_err());
    assert!(
        load().await.state.get("nextPollAt").is_none(),
        "due at the next pass, on the new interval"
    );

    // A poll that ends after the address changed leaves the new address's
    // state alone (no old validators, no old schedule).
    let before = load().await;
    app.ok(
        Some(&s.access),
        update,
        json!({ "i": { "id": channel_id, "feedUrl": "https://alerts.example/other.xml" } }),
    )
    .await;
    feed.fail.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(poller.poll(before).await.unwrap().is_ok());
    assert_eq!(
        load().await.state,
        json!({}),
        "the new address starts clean"
    );
}

/// A backfill through the workspace's GENERIC channel meets what its
/// webhook delivered: those events are duplicates, replies to them thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_through_a_generic_channel_meets_its_webhook_deliveries() {
    let app = TestApp::start().await.with_worker().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let (home, brew, bean) = brand_workspaces(&app, &s).await;
    let (channel, url) = connect(&app, &s, json!({ "workspaceId": home, "kind": "GENERIC", "name": "reviews", "secret": "generic-secret" })).await;
    let (elsewhere, _) = connect(&app, &s, json!({ "workspaceId": bean, "kind": "GENERIC", "name": "reviews", "secret": "generic-secret" })).await;
    let (feed, _) = connect(&app, &s, json!({ "workspaceId": home, "kind": "FEED", "name": "alerts", "feedUrl": "https://alerts.example/feed.xml" })).await;
    // The webhook files the review under the brand it names.
    let review = json!({ "id": "review-9001", "text": "Brew Co: two stars, slow service", "published_at": "2026-11-20T09:00:00Z", "author": { "id": "critic" } });
    app.deliver_generic(&url, json!([review])).await;
    app.eventually("the delivery stored", async || {
        (message::Entity::find().count(&app.state.db).await.unwrap() == 1).then_some(())
    })
    .await;
    // Imported through the channel: the review is a duplicate (not stored
    // again in the channel's own workspace), and a reply naming no brand
    // joins it in Brew Co.
    let q = "mutation($i: ImportMessagesInput!) { importMessages(input: $i) { accepted duplicates rejected { index reason } } }";
    let reply = json!({ "id": "review-9002", "in_reply_to": "review-9001", "text": "agree, waited 40 minutes", "published_at": "2026-11-20T10:00:00Z", "author": { "id": "second" } });
    let d = app
        .ok(
            Some(&s.access),
            q,
            json!({ "i": { "workspaceId": home, "channelId": channel, "events": [review, reply] } }),
        )
        .await;
    assert_eq!(
        (
            d["importMessages"]["accepted"].as_u64(),
            d["importMessages"]["duplicates"].as_u64()
        ),
        (Some(1), Some(1)),
        "{d}"
    );
    assert!(conversations(&app, &s, &home).await.is_empty());
    let convs = conversations(&app, &s, &brew).await;
    assert_eq!(convs.len(), 1);
    assert_eq!(edges(&convs[0]["messages"]).len(), 2);
    // Another workspace's channel is not found; a FEED channel takes no import.
    for (ch, expected) in [(&elsewhere, "NOT_FOUND"), (&feed, "BAD_USER_INPUT")] {
        let r = app
            .gql(
                Some(&s.access),
                q,
                json!({ "i": { "workspaceId": home, "channelId": ch, "events": [] } }),
            )
            .await;
        assert_eq!(code(&r), Some(expected), "{r}");
    }
}

/// A source echoing the brand's own published reply back (a review site
/// listing the answer under the id it gave it) sends no customer message:
/// by webhook it is not stored, and an import counts it as a duplicate and
/// stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_brands_own_reply_echoed_back_is_no_customer_message() {
    use rapport_store::entities::message;
    use sea_orm::{ActiveModelTrait, ColumnTrait, IntoActiveModel, QueryFilter, Set};
    let app = TestApp::start().await.with_worker().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    // The callback goes nowhere: the reply's id is recorded by hand below.
    let (ch, url) = connect(
        &app,
        &s,
        json!({ "workspaceId": ws, "kind": "GENERIC", "name": "reviews", "secret": "generic-secret",
        "callbackUrl": "http://127.0.0.1:9/replies" }),
    )
    .await;
    app.deliver_generic(
        &url,
        json!([{ "id": "rv-1", "text": "two stars, the grinder broke in a week", "published_at": "2026-11-20T09:00:00Z",
                 "author": { "id": "critic", "handle": "critic" } }]),
    )
    .await;
    app.eventually("stored", async || {
        (conversations(&app, &s, &ws).await.len() == 1).then_some(())
    })
    .await;
    let conv = conversations(&app, &s, &ws).await[0]["id"].clone();
    let sent = app
        .ok(
            Some(&s.access),
            "mutation($i: SendReplyInput!) { sendReply(input: $i) { id } }",
            json!({ "i": { "conversationId": conv, "visibility": "PUBLIC",
                "text": "So sorry the grinder broke within a week; a replacement ships today, tracking to follow." } }),
        )
        .await;
    // As publishing records it: the id the source gave the reply.
    let reply_id = rapport_domain::GlobalId::decode(
        rapport_domain::Kind::Message,
        sent["sendReply"]["id"].as_str().unwrap(),
    )
    .unwrap();
    let mut reply = message::Entity::find_by_id(reply_id)
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap()
        .into_active_model();
    reply.platform_message_id = Set(Some("rv-55".into()));
    reply.update(&app.state.db).await.unwrap();
    let inbound = async || {
        message::Entity::find()
            .filter(message::Column::Direction.eq("INBOUND"))
            .count(&app.state.db)
            .await
            .unwrap()
    };
    let echo = json!({ "id": "rv-55", "text": "So sorry the grinder broke within a week; a replacement ships today, tracking to follow.",
                       "published_at": "2026-11-20T10:00:00Z", "author": { "id": "brewco", "handle": "brewco" } });
    app.deliver_generic(&url, json!([echo.clone()])).await;
    app.eventually("the echo processed", async || {
        (pending_raw_events(&app).await == 0).then_some(())
    })
    .await;
    assert_eq!(inbound().await, 1, "the echo is not a customer message");
    let d = app
        .ok(
            Some(&s.access),
            "mutation($i: ImportMessagesInput!) { importMessages(input: $i) { accepted duplicates } }",
            json!({ "i": { "workspaceId": ws, "channelId": ch, "events": [echo] } }),
        )
        .await;
    assert_eq!(d["importMessages"]["duplicates"], 1, "{d}");
    assert_eq!(d["importMessages"]["accepted"], 0, "{d}");
    assert_eq!(inbound().await, 1);
}

/// An import of more than one chunk (250 events) records each chunk in
/// the audit log as it commits, in its transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_chunk_of_an_import_is_audited_with_its_commit() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let good = |id: &str, author: &str| json!({ "id": id, "text": "old complaint, still angry", "published_at": "2025-01-02T03:04:05Z", "author": { "id": author, "followers": 10 } });
    let q = "mutation($i: ImportMessagesInput!) { importMessages(input: $i) { accepted duplicates rejected { index reason } } }";
    let many: Vec<Value> = (0..300)
        .map(|i| good(&format!("bulk-{i}"), &format!("b{i}")))
        .collect();
    let d = app
        .ok(
            Some(&s.access),
            q,
            json!({ "i": { "workspaceId": ws, "events": many } }),
        )
        .await;
    assert_eq!(d["importMessages"]["accepted"], 300);
    let audit = app
        .ok(
            Some(&s.access),
            "{ auditLog(first: 2) { edges { node { action details } } } }",
            json!({}),
        )
        .await;
    let parts: Vec<(Value, Value)> = edges(&audit["auditLog"])
        .iter()
        .map(|e| (e["node"]["action"].clone(), e["node"]["details"].clone()))
        .collect();
    assert!(
        parts.iter().all(|(a, _)| a == "importMessages"),
        "{parts:?}"
    );
    let mut accepted: Vec<i64> = parts
        .iter()
        .map(|(_, d)| {
            assert_eq!(d["parts"], 2, "{d}");
            d["accepted"].as_i64().unwrap()
        })
        .collect();
    accepted.sort();
    assert_eq!(accepted, [50, 250]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_mutation_and_cli_backfill_once_and_report_rejections() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let good = |id: &str, author: &str| json!({ "id": id, "text": "old complaint, still angry", "published_at": "2025-01-02T03:04:05Z", "author": { "id": author, "followers": 10 } });
    let events = json!([good("h1", "u1"), good("h2", "u2"), { "id": "h3", "text": "no date", "author": { "id": "u3" } }, "not an object"]);
    let q = "mutation($i: ImportMessagesInput!) { importMessages(input: $i) { accepted duplicates rejected { index reason } } }";
    let d = app
        .ok(
            Some(&s.access),
            q,
            json!({ "i": { "workspaceId": ws, "events": events } }),
        )
        .await;
    assert_eq!(d["importMessages"]["accepted"], 2);
    assert_eq!(d["importMessages"]["duplicates"], 0);
    let rejected = d["importMessages"]["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[0]["index"], 2);
    assert!(
        rejected[0]["reason"]
            .as_str()
            .unwrap()
            .contains("published_at")
    );
    let again = app
        .ok(
            Some(&s.access),
            q,
            json!({ "i": { "workspaceId": ws, "events": [good("h1", "u1")] } }),
        )
        .await;
    assert_eq!(again["importMessages"]["duplicates"], 1);
    assert_eq!(conversations(&app, &s, &ws).await.len(), 2);

    // Keys longer than PostgreSQL indexes take are stored by their digest:
    // accepted once, a duplicate the second time, the reply threaded; a
    // publish time years ahead reads as the time it was received.
    // (Not compressible: PostgreSQL would fit a repeated letter.)
    let long: String = (0..100)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    let events = json!([
        { "id": long, "text": "a very long id", "published_at": "9999-12-31T00:00:00Z", "author": { "id": format!("{long}-author") } },
        { "id": "reply-to-long", "in_reply_to": long, "text": "and its reply", "published_at": "2025-01-02T03:04:06Z", "author": { "id": "u1" } },
    ]);
    for (accepted, duplicates) in [(2, 0), (0, 2)] {
        let d = app
            .ok(
                Some(&s.access),
                q,
                json!({ "i": { "workspaceId": ws, "events": events } }),
            )
            .await;
        assert_eq!(d["importMessages"]["accepted"], accepted, "{d}");
        assert_eq!(d["importMessages"]["duplicates"], duplicates, "{d}");
    }
    let convs = conversations(&app, &s, &ws).await;
    assert_eq!(convs.len(), 3);
    let thread = convs
        .iter()
        .find(|c| edges(&c["messages"]).len() == 2)
        .expect("the reply joined the long id's conversation");
    let first = edges(&thread["messages"])
        .into_iter()
        .map(|m| m["node"].clone())
        .find(|m| m["body"] == "a very long id")
        .unwrap();
    assert!(first["externalId"].as_str().unwrap().starts_with("sha256:"));
    assert!(first["publishedAt"].as_str().unwrap() < "2100", "{first}");
    // An id an older version stored as it was (600 bytes fit PostgreSQL's
    // index) is recognised under its digest: a duplicate, not stored again.
    let older: String = (0..19)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    let event = json!([{ "id": older, "text": "kept as it was", "published_at": "2025-01-02T03:04:05Z", "author": { "id": "u7" } }]);
    let d = app
        .ok(
            Some(&s.access),
            q,
            json!({ "i": { "workspaceId": ws, "events": event } }),
        )
        .await;
    assert_eq!(d["importMessages"]["accepted"], 1);
    {
        use sea_orm::{ActiveModelTrait, ColumnTrait, IntoActiveModel, QueryFilter, Set};
        let m = message::Entity::find()
            .filter(message::Column::Body.eq("kept as it was"))
            .one(&app.state.db)
            .await
            .unwrap()
            .unwrap();
        let mut am = m.into_active_model();
        am.external_id = Set(older.clone());
        am.update(&app.state.db).await.unwrap();
    }
    let d = app
        .ok(
            Some(&s.access),
            q,
            json!({ "i": { "workspaceId": ws, "events": event } }),
        )
        .await;
    assert_eq!(
        (
            d["importMessages"]["accepted"].as_u64(),
            d["importMessages"]["duplicates"].as_u64()
        ),
        (Some(0), Some(1)),
        "{d}"
    );

    // The CLI on a file: 1,200 lines in chunks, one bad line, one blank.
    let dir = TempDir(
        std::env::temp_dir().join(format!("rapport-import-{}", uuid::Uuid::new_v4().simple())),
    );
    std::fs::create_dir_all(&dir.0).unwrap();
    let path = dir.0.join("backfill.jsonl");
    let mut lines: Vec<String> = (0..1200)
        .map(|i| good(&format!("f{i}"), &format!("a{}", i % 300)).to_string())
        .collect();
    lines.insert(10, "{ broken".into());
    lines.insert(20, String::new());
    lines.push(good("h1", "u1").to_string()); // imported above already
    // A line in Latin-1 (not UTF-8) is one rejected line, not the end.
    let mut bytes = lines.join("\n").into_bytes();
    bytes.extend_from_slice(b"\n{\"id\": \"caf\xe9\"}\n");
    bytes.extend_from_slice(good("after-latin1", "u9").to_string().as_bytes());
    std::fs::write(&path, bytes).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args(["import", "--workspace", &ws, path.to_str().unwrap()])
        .env("DATABASE_URL", &app.db.url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Lines were rejected: the rest is imported, and the exit status says
    // not all of it was.
    assert_eq!(out.status.code(), Some(1), "{stdout} {stderr}");
    assert!(
        stderr.contains("2 of 1205 lines rejected"),
        "{stdout} {stderr}"
    );
    assert!(
        stdout.contains("1201 accepted, 1 duplicate, 2 rejected"),
        "{stdout}"
    );
    assert!(stdout.contains("line 11: not JSON"), "{stdout}");
    assert!(stdout.contains("line 1204: not UTF-8 text"), "{stdout}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("100%"),
        "a progress bar"
    );
    assert_eq!(
        message::Entity::find().count(&app.state.db).await.unwrap(),
        1206
    );

    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args(["import", "--workspace", "nope", path.to_str().unwrap()])
        .env("DATABASE_URL", &app.db.url)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a workspace ID"));
    // Through a channel: named by its ID, and one of this workspace's.
    let through = |channel: String| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rapport"))
            .args([
                "import",
                "--workspace",
                &ws,
                "--channel",
                &channel,
                path.to_str().unwrap(),
            ])
            .env("DATABASE_URL", &app.db.url)
            .output()
            .unwrap()
    };
    let bad = through("nope".into());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a channel ID"));
    let unknown =
        rapport_domain::GlobalId::encode(rapport_domain::Kind::Channel, uuid::Uuid::now_v7());
    let bad = through(unknown);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("no channel"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_and_changed_conversations_are_published_for_live_updates() {
    use futures_util::StreamExt;
    let app = TestApp::start().await.with_worker().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let ws_uuid = rapport_domain::GlobalId::decode(rapport_domain::Kind::Workspace, &ws).unwrap();
    let client = redis::Client::open(redis_url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(app.state.kv.channel(Topic::Conversations, ws_uuid))
        .await
        .unwrap();
    let (_, url) = connect(&app, &s, json!({ "workspaceId": ws, "kind": "X", "name": "x", "externalAccountId": "2244994945", "secret": "x-consumer-secret-123" })).await;
    post(
        &app,
        &url,
        &[(
            "x-twitter-webhooks-signature",
            x_sign(b"x-consumer-secret-123", X_FIXTURE),
        )],
        X_FIXTURE,
    )
    .await;
    let mut stream = pubsub.on_message();
    let mut events = Vec::new();
    while events.len() < 2 {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .expect("a live update")
            .unwrap();
        let v: Value = serde_json::from_str(&msg.get_payload::<String>().unwrap()).unwrap();
        assert_eq!(v["workspaceId"], ws.as_str());
        events.push((
            v["event"].as_str().unwrap().to_string(),
            v["conversationId"].as_str().unwrap().to_string(),
        ));
    }
    // One event per conversation of the payload: the mention's thread
    // (its reply joined it in the same batch) and the DM's, both new.
    assert_eq!(
        (events[0].0.as_str(), events[1].0.as_str()),
        ("created", "created")
    );
    assert_ne!(events[0].1, events[1].1);
    let more = tokio::time::timeout(std::time::Duration::from_millis(300), stream.next()).await;
    assert!(more.is_err(), "one event per conversation: {more:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_filter_and_page_in_every_order() {
    use rapport_store::entities::conversation;
    use sea_orm::{ActiveModelTrait, IntoActiveModel, Set};
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let events: Vec<Value> = (0..7)
        .map(|i| {
            let text = if i % 2 == 0 {
                "terrible service, I want a refund"
            } else {
                "lovely coffee, thanks"
            };
            json!({ "id": format!("c{i}"), "text": text, "published_at": "2026-11-20T09:00:00Z",
                    "author": { "id": format!("u{i}"), "followers": i * 1000 } })
        })
        .collect();
    app.import_events(&s, &ws, json!(events)).await;
    // Give three conversations deadlines (the SLA engine's job later).
    let all = conversation::Entity::find()
        .all(&app.state.db)
        .await
        .unwrap();
    let now = chrono::Utc::now();
    for (i, c) in all.iter().take(3).enumerate() {
        let mut am = c.clone().into_active_model();
        am.due_at = Set(Some(now + chrono::Duration::minutes(30 - 10 * i as i64)));
        am.update(&app.state.db).await.unwrap();
    }
    let page = async |order: &str, after: Option<String>, filter: Value| {
        app.ok(
            Some(&s.access),
            "query($w: ID!, $o: ConversationOrder!, $a: String, $f: ConversationFilter) {
               conversations(workspaceId: $w, orderBy: $o, first: 2, after: $a, filter: $f) {
                 edges { node { id priorityScore dueAt sentiment } } pageInfo { hasNextPage endCursor } } }",
            json!({ "w": ws, "o": order, "a": after, "f": filter }),
        )
        .await["conversations"]
            .clone()
    };
    let walk = async |order: &str, filter: Value| {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let p = page(order, after.clone(), filter.clone()).await;
            out.extend(edges(&p).into_iter().map(|e| e["node"].clone()));
            if !p["pageInfo"]["hasNextPage"].as_bool().unwrap() {
                return out;
            }
            after = p["pageInfo"]["endCursor"].as_str().map(String::from);
        }
    };
    for order in ["PRIORITY", "NEWEST", "DUE"] {
        let seen = walk(order, Value::Null).await;
        assert_eq!(seen.len(), 7, "{order}: every conversation once");
        let mut ids: Vec<_> = seen
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 7, "{order}: no repeats");
        if order == "PRIORITY" {
            let scores: Vec<f64> = seen
                .iter()
                .map(|n| n["priorityScore"].as_f64().unwrap())
                .collect();
            assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
        }
        if order == "DUE" {
            let dues: Vec<Option<String>> = seen
                .iter()
                .map(|n| n["dueAt"].as_str().map(String::from))
                .collect();
            assert!(
                dues[..3].iter().all(Option::is_some) && dues[3..].iter().all(Option::is_none),
                "{dues:?}"
            );
            assert!(
                dues[0] < dues[1] && dues[1] < dues[2],
                "earliest first: {dues:?}"
            );
        }
    }
    let negative = walk("PRIORITY", json!({ "sentiment": "NEGATIVE" })).await;
    assert_eq!(negative.len(), 4);
    let urgent_or_high = walk("NEWEST", json!({ "minPriority": "HIGH" })).await;
    assert!(urgent_or_high.len() < 7 && !urgent_or_high.is_empty());
    let searched = walk("NEWEST", json!({ "search": "LOVELY" })).await;
    assert_eq!(searched.len(), 3);
    // Case folded beyond ASCII on both backends; the term is literal text
    // (no wildcard or pattern character means anything).
    app.import_events(
        &s,
        &ws,
        json!([
            { "id": "u1", "text": "Über den Service bin ich ÄRGERLICH", "published_at": "2026-11-20T09:00:00Z", "author": { "id": "de" } },
            { "id": "u2", "text": "ΣΟΦΙΑΣ said: was it 50% (off)? a+b", "published_at": "2026-11-20T09:00:00Z", "author": { "id": "el" } },
        ]),
    )
    .await;
    for (term, found) in [
        ("über", 1),
        ("ÜBER DEN", 1),
        ("ärgerlich", 1),
        ("σοφιασ", 1),
        // A capital sigma at a word's end: Rust lowers it to ς, the
        // database to σ; the term finds its own text all the same.
        ("ΣΟΦΙΑΣ", 1),
        // Literal, spaces too: no message has "a+b" then a space.
        ("a+b ", 0),
        ("a\\b", 0),
        ("said: was", 1),
        ("50% (off)?", 1),
        ("a+b", 1),
        ("5_%", 0),
        ("(.*)", 0),
        ("ab", 0),
    ] {
        let got = walk("NEWEST", json!({ "search": term })).await;
        assert_eq!(got.len(), found, "{term:?}");
    }
    let none = walk(
        "NEWEST",
        json!({ "status": ["RESOLVED"], "channelKinds": ["GENERIC"] }),
    )
    .await;
    assert!(none.is_empty());
    let r = app
        .gql(Some(&s.access), "query($w: ID!) { conversations(workspaceId: $w, orderBy: DUE, after: \"bogus\") { edges { cursor } } }", json!({ "w": ws }))
        .await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"));
}

/// The inbox reads its page by column position (store::pages): every
/// field must come out as the entities read it by name. Each column holds
/// a value no neighbour of the same type holds, so a field read from the
/// wrong position fails the comparison.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_read_by_column_position_equals_the_entities() {
    use chrono::{DateTime, Duration, Utc};
    use rapport_store::entities::{author, conversation, membership};
    use sea_orm::{ActiveModelTrait, IntoActiveModel, QueryOrder, Set};
    let app = TestApp::start().await;
    let db = &app.state.db;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let targets =
        json!({ "firstResponseMinutes": 60, "nextResponseMinutes": 90, "resolutionMinutes": 480 });
    app.ok(
        Some(&s.access),
        "mutation($i: CreateSlaPolicyInput!) { createSlaPolicy(input: $i) { id } }",
        json!({ "i": { "workspaceId": ws, "name": "Standard", "isDefault": true,
                        "targets": { "urgent": targets, "high": targets, "normal": targets, "low": targets } } }),
    )
    .await;
    let events: Vec<Value> = (0..2)
        .map(|i| {
            json!({ "id": format!("p{i}"), "text": "awful, I want a refund now", "published_at": "2026-11-20T09:00:00Z",
                    "author": { "id": format!("u{i}"), "name": format!("User {i}"), "followers": 10 + i } })
        })
        .collect();
    app.import_events(&s, &ws, json!(events)).await;
    let page = || conversation::Entity::find().order_by_asc(conversation::Column::Id);
    let all = page().all(db).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all[1].sla_targets.is_some() && all[1].sla_policy_id.is_some());
    let member = membership::Entity::find().one(db).await.unwrap().unwrap();
    let base: DateTime<Utc> = "2026-11-20T09:00:00.123456Z".parse().unwrap();
    let t = |m: i64| Some(base + Duration::minutes(m));
    let mut am = all[1].clone().into_active_model();
    am.parent_conversation_id = Set(Some(all[0].id));
    am.sentiment = Set(Some(-0.5));
    am.opening_sentiment = Set(Some(-0.25));
    am.assignee_membership_id = Set(Some(member.id));
    am.first_response_due_at = Set(t(1));
    am.next_response_due_at = Set(t(2));
    am.resolution_due_at = Set(t(3));
    am.due_at = Set(t(4));
    am.first_responded_at = Set(t(5));
    am.resolved_at = Set(t(6));
    am.first_response_business_s = Set(Some(7));
    am.resolution_business_s = Set(Some(8));
    am.last_customer_message_at = Set(t(9).unwrap());
    am.recovered = Set(true);
    am.created_at = Set(t(10).unwrap());
    am.updated_at = Set(t(11).unwrap());
    am.update(db).await.unwrap();

    let by_position = rapport_store::pages::with_authors(db, page(), 10, Wanted::ALL)
        .await
        .unwrap();
    let by_name = page()
        .find_also_related(author::Entity)
        .all(db)
        .await
        .unwrap();
    assert_eq!(by_position, by_name);
    assert!(by_position.iter().all(|(_, a)| a.is_some()));
    assert_eq!(by_position[1].0.due_at, t(4));
    let alone = rapport_store::pages::conversations(db, page(), 10, Wanted::ALL)
        .await
        .unwrap();
    assert_eq!(alone, page().all(db).await.unwrap());
    // Without one or both JSON columns: a NULL stands in their place and
    // the rest of the row (the authors' columns after it too) is the same.
    for (breakdown, sla_targets) in [(false, false), (true, false), (false, true)] {
        let wanted = Wanted {
            breakdown,
            sla_targets,
        };
        let mut expected = alone.clone();
        for c in &mut expected {
            if !breakdown {
                c.priority_breakdown = StoredBreakdown::unread();
            }
            if !sla_targets {
                c.sla_targets = None;
            }
        }
        assert_ne!(expected, alone, "{wanted:?} leaves something out");
        let (without, authors): (Vec<_>, Vec<_>) =
            rapport_store::pages::with_authors(db, page(), 10, wanted)
                .await
                .unwrap()
                .into_iter()
                .unzip();
        assert_eq!(without, expected, "{wanted:?}");
        let authors_by_name: Vec<_> = by_name.iter().map(|(_, a)| a.clone()).collect();
        assert_eq!(authors, authors_by_name, "{wanted:?}");
        assert_eq!(
            rapport_store::pages::conversations(db, page(), 10, wanted)
                .await
                .unwrap(),
            expected,
            "{wanted:?}"
        );
    }
    // The limit written into the SQL applies.
    let first = rapport_store::pages::with_authors(db, page(), 1, Wanted::ALL)
        .await
        .unwrap();
    assert_eq!(first, by_name[..1]);
}

/// Big bodies are stored in parts of `PART` messages, each its own
/// transaction (PostgreSQL's shared lock table cannot hold an advisory lock
/// per author and message of thousands at once): several such bodies at
/// the same time are all stored, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_bodies_at_once_are_stored_in_parts_and_nothing_twice() {
    use rapport_worker::ingest::{Ingestor, PART};
    use sea_orm::{ColumnTrait, QueryFilter, QueryOrder, QuerySelect};
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let (_, url) = connect(&app, &s, json!({ "workspaceId": ws, "kind": "GENERIC", "name": "alerts", "secret": "generic-secret" })).await;
    // Bodies of 1,000 events (the most one takes), every author new: about
    // 2,000 advisory locks per body in one transaction, and eight at once
    // ran a default PostgreSQL's lock table out (about 12,000 entries).
    let bodies = if is_postgres() { 8 } else { 2 };
    let mut jobs = Vec::new();
    for b in 0..bodies {
        let events: Vec<Value> = (0..1000)
            .map(|i| json!({ "id": format!("{b}-{i}"), "text": "where is my order", "published_at": "2026-11-20T09:00:00Z",
                             "author": { "id": format!("a{b}-{i}") } }))
            .collect();
        app.deliver_generic(&url, json!(events)).await;
        let raw = raw_event::Entity::find()
            .order_by_desc(raw_event::Column::Id)
            .one(&app.state.db)
            .await
            .unwrap()
            .unwrap();
        jobs.push(json!({ "raw_event_id": raw.id }));
    }
    let ingestor = Ingestor {
        db: app.state.db.clone(),
        kv: app.state.kv.clone(),
        secrets: app.state.secrets.clone(),
    };
    // Each body by a worker of its own, all at once.
    let runs: Vec<_> = jobs
        .iter()
        .map(|job| {
            let (ingestor, job) = (ingestor.clone(), job.clone());
            tokio::spawn(async move { ingestor.handle_many(vec![job]).await })
        })
        .collect();
    for run in runs {
        let results = run.await.unwrap();
        assert!(results[0].is_ok(), "{results:?}");
    }
    let count = || async { message::Entity::find().count(&app.state.db).await.unwrap() };
    assert_eq!(count().await, 1000 * bodies);
    // The parts of one body committed one after the other.
    let receipts: Vec<chrono::DateTime<chrono::Utc>> = message::Entity::find()
        .filter(message::Column::ExternalId.starts_with("0-"))
        .select_only()
        .column(message::Column::ReceivedAt)
        .distinct()
        .into_tuple()
        .all(&app.state.db)
        .await
        .unwrap();
    assert_eq!(receipts.len(), 1000_usize.div_ceil(PART), "{receipts:?}");
    // A crash between parts: the earlier parts committed, the last one
    // (with the raw event's mark) did not. The retry stores the rest, and
    // nothing twice.
    let last = *receipts.iter().max().unwrap();
    message::Entity::delete_many()
        .filter(message::Column::ExternalId.starts_with("0-"))
        .filter(message::Column::ReceivedAt.eq(last))
        .exec(&app.state.db)
        .await
        .unwrap();
    let lost = 1000 - (1000_usize.div_ceil(PART) - 1) * PART;
    assert_eq!(count().await, 1000 * bodies - lost as u64);
    let first = jobs[0]["raw_event_id"]
        .as_str()
        .unwrap()
        .parse::<uuid::Uuid>()
        .unwrap();
    raw_event::Entity::update_many()
        .col_expr(
            raw_event::Column::Status,
            sea_orm::sea_query::Expr::value("PENDING"),
        )
        .filter(raw_event::Column::Id.eq(first))
        .exec(&app.state.db)
        .await
        .unwrap();
    for result in ingestor.handle_many(jobs).await {
        assert!(result.is_ok(), "{result:?}");
    }
    assert_eq!(count().await, 1000 * bodies);
}

/// What a channel accepted while active is taken in however late the
/// worker gets to it, even if the channel was paused meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_accepted_before_a_pause_are_stored_after_it() {
    use rapport_worker::ingest::Ingestor;
    use sea_orm::QueryOrder;
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let (id, url) = connect(&app, &s, json!({ "workspaceId": ws, "kind": "GENERIC", "name": "alerts", "secret": "generic-secret" })).await;
    app.deliver_generic(&url,
        json!([{ "id": "late-1", "text": "my order never came", "published_at": "2026-11-20T09:00:00Z",
                 "author": { "id": "u1" } }]),
    )
    .await;
    pause_channel(&app, &s, json!(id)).await;
    let raw = raw_event::Entity::find()
        .order_by_desc(raw_event::Column::Id)
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    let ingestor = Ingestor {
        db: app.state.db.clone(),
        kv: app.state.kv.clone(),
        secrets: app.state.secrets.clone(),
    };
    let results = ingestor
        .handle_many(vec![json!({ "raw_event_id": raw.id })])
        .await;
    assert!(results[0].is_ok(), "{results:?}");
    assert_eq!(
        message::Entity::find().count(&app.state.db).await.unwrap(),
        1
    );
}

/// Two workers polling at once, one held up by a feed that hangs: the
/// other fetches the due feeds first, and the slow one, reaching them after
/// their claims ran out, reads them again and leaves them (it fetched them
/// again, with the state of before the first fetch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_fetched_by_one_worker_is_not_fetched_again_by_a_slower_one() {
    use actix_web::{App, HttpResponse, HttpServer, web};
    use rapport_worker::feeds::{FeedConfig, FeedPoller};
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    // Feeds that answer after 10 s: each holds a poller up for its timeout.
    // Requests are counted: one arrived, its feed was claimed first.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let slow = format!("http://{}/slow.xml", listener.local_addr().unwrap());
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = asked.clone();
    let server = HttpServer::new(move || {
        let counted = counted.clone();
        App::new().route(
            "/slow.xml",
            web::get().to(move || {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async {
                    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
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
    for n in 0..3 {
        connect(&app, &s, json!({ "workspaceId": ws, "kind": "FEED", "name": format!("slow {n}"), "feedUrl": format!("{slow}?{n}") })).await;
    }
    let (feed, url) = FeedServer::serving_the_fixture();
    connect(
        &app,
        &s,
        json!({ "workspaceId": ws, "kind": "FEED", "name": "alerts", "feedUrl": url }),
    )
    .await;
    // A claim lasts twice the poller's timeout. One feed at a time, so the order of the list is the order of fetches.
    let poller = |timeout_ms: u64| {
        FeedPoller::new(
            app.state.db.clone(),
            app.state.kv.clone(),
            FeedConfig {
                allow_private: true,
                timeout: std::time::Duration::from_millis(timeout_ms),
                concurrency: 1,
                ..FeedConfig::default()
            },
        )
        .unwrap()
    };
    let (slow_one, quick_one) = (poller(5000), poller(100));
    // The slow one lists every feed as due, then hangs on the first for 5
    // s; once it is fetching that one, the quick one skips it (claimed)
    // and polls the rest, the good feed included, its claims lasting 0.2 s.
    let first = tokio::spawn(async move { slow_one.poll_due().await.unwrap() });
    app.eventually("the slow poller to fetch its first feed", async || {
        (asked.load(std::sync::atomic::Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    assert_eq!(quick_one.poll_due().await.unwrap(), 3);
    assert_eq!(feed.seen.lock().unwrap().len(), 1);
    // When the slow one gets to them, their claims have run out; read
    // again, none is due.
    assert_eq!(first.await.unwrap(), 1, "only the one it held");
    assert_eq!(feed.seen.lock().unwrap().len(), 1, "fetched once");
}

/// Feeds that never answer hold one fetch each for the poller's timeout,
/// not the pass: they are fetched together, and another agency's feed is
/// fetched in the same pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_that_never_answer_are_fetched_together_not_one_after_another() {
    use rapport_worker::feeds::{FeedConfig, FeedPoller};
    let app = TestApp::start().await;
    let slow = app.sign_up("Slow", "a@slow.test").await;
    let slow_ws = app.create_workspace(&slow, "Slow Co").await;
    // Accepts connections and never answers; notes when each arrived.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging = format!("http://{}/feed.xml", listener.local_addr().unwrap());
    let arrivals = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let noted = arrivals.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            noted.lock().unwrap().push(std::time::Instant::now());
            held.push(sock);
        }
    });
    for n in 0..3 {
        connect(&app, &slow, json!({ "workspaceId": slow_ws, "kind": "FEED", "name": format!("dead {n}"), "feedUrl": format!("{hanging}?{n}") })).await;
    }
    let other = app.sign_up("Other", "b@other.test").await;
    let other_ws = app.create_workspace(&other, "Other Co").await;
    let (feed, url) = FeedServer::serving_the_fixture();
    connect(
        &app,
        &other,
        json!({ "workspaceId": other_ws, "kind": "FEED", "name": "alerts", "feedUrl": url }),
    )
    .await;

    // Long enough that three fetches started together arrive well within
    // half of it even on a loaded machine.
    let timeout = std::time::Duration::from_secs(4);
    let poller = FeedPoller::new(
        app.state.db.clone(),
        app.state.kv.clone(),
        FeedConfig {
            allow_private: true,
            timeout,
            ..FeedConfig::default()
        },
    )
    .unwrap();
    assert_eq!(poller.poll_due().await.unwrap(), 4);
    assert_eq!(
        feed.seen.lock().unwrap().len(),
        1,
        "the other agency's feed"
    );
    let arrivals = arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 3);
    // One after another, each would have waited out the last's timeout.
    let spread = arrivals[2] - arrivals[0];
    assert!(
        spread < timeout / 2,
        "fetched one after another: {spread:?}"
    );
}

/// What each table holds of agency `agency` (a UUID), and of workspace
/// `ws` alone: (messages, conversations, raw events, authors, channels),
/// by the rows' own tenant columns.
async fn held(app: &TestApp, agency: uuid::Uuid, ws: Option<uuid::Uuid>) -> [u64; 5] {
    use rapport_store::entities::{author, channel, conversation};
    use sea_orm::{ColumnTrait, QueryFilter, QueryTrait};
    let db = &app.state.db;
    macro_rules! count {
        ($e:ident) => {
            $e::Entity::find()
                .filter($e::Column::AgencyId.eq(agency))
                .count(db)
                .await
                .unwrap()
        };
        ($e:ident in workspace) => {
            $e::Entity::find()
                .filter($e::Column::AgencyId.eq(agency))
                .apply_if(ws, |q, w| q.filter($e::Column::WorkspaceId.eq(w)))
                .count(db)
                .await
                .unwrap()
        };
    }
    [
        count!(message in workspace),
        count!(conversation in workspace),
        count!(raw_event in workspace),
        count!(author),
        count!(channel in workspace),
    ]
}

/// Deleting a workspace, then its agency, takes everything ingested for
/// them with it (the foreign keys cascade): a brand's conversation whose
/// channel is another workspace's goes with its own workspace, its messages
/// with it, the raw events with their channel. A workspace's channel takes
/// what it routed to other brands with it. Another agency keeps all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_workspace_or_its_agency_takes_what_was_ingested_for_it() {
    use rapport_domain::{GlobalId, Kind};
    use rapport_store::entities::{agency, workspace};
    let app = TestApp::start().await.with_worker().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let (home, brew, bean) = brand_workspaces(&app, &s).await;
    let (_, url) = app
        .connect_generic(&s, &home, "alerts", "generic-secret")
        .await;
    let other = app.sign_up("Other", "owner@other.test").await;
    let theirs = app.create_workspace(&other, "Theirs").await;
    let (_, their_url) = app
        .connect_generic(&other, &theirs, "alerts", "generic-secret")
        .await;
    let event = |id: &str, who: &str, text: &str| json!({ "id": id, "text": text, "published_at": "2026-11-20T09:00:00Z", "author": { "id": who } });
    app.deliver_generic(
        &url,
        json!([
            event("1", "u1", "Brew Co ignored me"),
            event("2", "u2", "no brand named here"),
            event("3", "u3", "Bean Bros is great")
        ]),
    )
    .await;
    app.deliver_generic(&their_url, json!([event("1", "u1", "hello")]))
        .await;
    app.eventually("all stored", async || {
        (message::Entity::find().count(&app.state.db).await.unwrap() == 4
            && pending_raw_events(&app).await == 0)
            .then_some(())
    })
    .await;

    let uuid = |kind, id: &str| GlobalId::decode(kind, id).unwrap();
    let (acme, them) = (
        uuid(Kind::Agency, &s.agency_id),
        uuid(Kind::Agency, &other.agency_id),
    );
    let [home, brew, bean] = [home, brew, bean].map(|w| uuid(Kind::Workspace, &w));
    let ws = async |w| held(&app, acme, Some(w)).await;
    // The brands' conversations came through the channel of `home`.
    assert_eq!(ws(brew).await, [1, 1, 0, 3, 0]);
    assert_eq!(ws(bean).await, [1, 1, 0, 3, 0]);
    assert_eq!(ws(home).await, [1, 1, 1, 3, 1]);
    let theirs_before = held(&app, them, None).await;
    assert_eq!(theirs_before, [1, 1, 1, 1, 1]);

    let delete_workspace = async |w| {
        workspace::Entity::delete_by_id(w)
            .exec(&app.state.db)
            .await
            .unwrap()
    };
    delete_workspace(brew).await;
    assert_eq!(ws(brew).await, [0, 0, 0, 3, 0]);
    assert_eq!(ws(bean).await, [1, 1, 0, 3, 0]);
    assert_eq!(ws(home).await, [1, 1, 1, 3, 1]);

    // Its channel goes with `home`, and so does what it routed to `bean`;
    // the workspace `bean` stays.
    delete_workspace(home).await;
    assert_eq!(ws(home).await, [0, 0, 0, 3, 0]);
    assert_eq!(ws(bean).await, [0, 0, 0, 3, 0]);
    assert!(
        workspace::Entity::find_by_id(bean)
            .one(&app.state.db)
            .await
            .unwrap()
            .is_some()
    );

    agency::Entity::delete_by_id(acme)
        .exec(&app.state.db)
        .await
        .unwrap();
    assert_eq!(held(&app, acme, None).await, [0; 5]);
    assert_eq!(held(&app, them, None).await, theirs_before);
}
