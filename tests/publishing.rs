//! Replies published on their platforms: a local server speaks the X,
//! Graph (Facebook/Instagram) and GENERIC callback formats, fails when told
//! to, and records what Rapport sent. Also the playbook steps (takeOffline,
//! requestFollowUp), agency templates and per-workspace guard settings.

mod common;

use common::*;
use rapport_domain::ingest::signature::{generic_sign, meta_sign, verify_generic, x_sign};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const X_FIXTURE: &[u8] = include_bytes!("fixtures/x_account_activity.json");
const META_FIXTURE: &[u8] = include_bytes!("fixtures/meta_page_feed.json");

/// One request the fake platform received.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    authorization: String,
    idempotency_key: String,
    /// GENERIC: whether `x-rapport-signature` verified with the secret.
    signed: bool,
    body: Value,
    at: Instant,
}

/// A POST's answer: status, body, whether it was published, the platform
/// id when the answer lost it, and whether the answer never comes.
struct Scripted {
    status: u16,
    answer: Value,
    published: bool,
    lost_id: Option<String>,
    hang: bool,
    /// A 429's `retry-after` header, in seconds.
    retry_after: Option<u64>,
}

/// A platform stand-in: answers each POST from a script (then 200
/// `{"id": "default"}`), keeps what it published, and lists it on the
/// reads Rapport makes before a retry (X timeline, Graph comments and
/// replies), as the brand's account `brand`.
#[derive(Clone, Default)]
struct FakePlatform {
    seen: Arc<Mutex<Vec<Seen>>>,
    lookups: Arc<Mutex<Vec<String>>>,
    script: Arc<Mutex<VecDeque<Scripted>>>,
    /// (replied-to id, text, platform id) of each reply published.
    published: Arc<Mutex<Vec<(String, String, String)>>>,
    /// (recipient id, text, platform id) of each private message sent.
    dms: Arc<Mutex<Vec<(String, String, String)>>>,
    brand: Arc<Mutex<String>>,
    /// The reads before a retry are refused (403), as for a token
    /// without read access.
    refuse_lookups: Arc<AtomicBool>,
}

const GENERIC_SECRET: &str = "generic-secret-77";

impl FakePlatform {
    fn start(&self) -> String {
        use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
        let me = self.clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = HttpServer::new(move || {
            let me = me.clone();
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let me = me.clone();
                async move {
                    if req.method() == actix_web::http::Method::GET {
                        if me.refuse_lookups.load(Ordering::SeqCst) {
                            return HttpResponse::Forbidden().json(json!({ "title": "Forbidden" }));
                        }
                        return HttpResponse::Ok().json(me.list(&req));
                    }
                    let header = |n: &str| {
                        req.headers()
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string()
                    };
                    let signed = verify_generic(
                        GENERIC_SECRET.as_bytes(),
                        &body,
                        Some(&header("x-rapport-signature")),
                        chrono::Utc::now().timestamp(),
                    )
                    .is_ok();
                    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    me.seen.lock().unwrap().push(Seen {
                        path: req.path().to_string(),
                        authorization: header("authorization"),
                        idempotency_key: header("idempotency-key"),
                        signed,
                        body: body.clone(),
                        at: Instant::now(),
                    });
                    let next = me.script.lock().unwrap().pop_front();
                    let Scripted {
                        status,
                        answer,
                        published,
                        lost_id,
                        hang,
                        retry_after,
                    } = next.unwrap_or(Scripted {
                        status: 200,
                        answer: json!({ "id": "default" }),
                        published: true,
                        lost_id: None,
                        hang: false,
                        retry_after: None,
                    });
                    if published {
                        me.keep(req.path(), &body, &answer, lost_id);
                    }
                    if hang {
                        std::future::pending::<()>().await;
                    }
                    let mut resp =
                        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
                    if let Some(secs) = retry_after {
                        resp.insert_header(("retry-after", secs.to_string()));
                    }
                    resp.json(answer)
                }
            }))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        base
    }

    /// A public reply published: remembered for the lookups.
    fn keep(&self, path: &str, body: &Value, answer: &Value, lost_id: Option<String>) {
        let mut published = self.published.lock().unwrap();
        let id = answer["data"]["id"]
            .as_str()
            .or_else(|| answer["data"]["dm_event_id"].as_str())
            .or_else(|| answer["id"].as_str())
            .or_else(|| answer["message_id"].as_str())
            .map(str::to_string)
            .or(lost_id)
            .unwrap_or_default();
        if let Some(rest) = path.strip_prefix("/2/dm_conversations/with/") {
            let to = rest.trim_end_matches("/messages");
            let text = body["text"].as_str().unwrap_or_default();
            self.dms.lock().unwrap().push((to.into(), text.into(), id));
            return;
        }
        if path.ends_with("/messages") {
            let to = body["recipient"]["id"].as_str().unwrap_or_default();
            let text = body["message"]["text"].as_str().unwrap_or_default();
            self.dms.lock().unwrap().push((to.into(), text.into(), id));
            return;
        }
        let (target, text) = if path == "/2/tweets" {
            (&body["reply"]["in_reply_to_tweet_id"], &body["text"])
        } else if path.ends_with("/comments") || path.ends_with("/replies") {
            let target = path.split('/').nth(2).unwrap_or_default();
            published.push((
                target.into(),
                body["message"].as_str().unwrap_or_default().into(),
                id,
            ));
            return;
        } else {
            return;
        };
        if let (Some(t), Some(x)) = (target.as_str(), text.as_str()) {
            published.push((t.into(), x.into(), id));
        }
    }

    fn list(&self, req: &actix_web::HttpRequest) -> Value {
        let path = req.path().to_string();
        self.lookups.lock().unwrap().push(path.clone());
        let brand = self.brand.lock().unwrap().clone();
        let sent_to = |to: &str| -> Vec<(String, String)> {
            let dms = self.dms.lock().unwrap();
            dms.iter()
                .filter(|(r, _, _)| r == to)
                .map(|(_, text, id)| (text.clone(), id.clone()))
                .collect()
        };
        if let Some(rest) = path.strip_prefix("/2/dm_conversations/with/") {
            // X's DM events with that person, the brand's as sent by it.
            let to = rest.trim_end_matches("/dm_events");
            let data: Vec<Value> = sent_to(to)
                .into_iter()
                .map(|(text, id)| json!({ "id": id, "text": text, "sender_id": brand, "event_type": "MessageCreate" }))
                .collect();
            return json!({ "data": data });
        }
        if path.ends_with("/conversations") {
            // Meta's Conversations API: the thread with `user_id`.
            let to = req
                .query_string()
                .split('&')
                .find_map(|kv| kv.strip_prefix("user_id="))
                .unwrap_or_default()
                .to_string();
            let messages: Vec<Value> = sent_to(&to)
                .into_iter()
                .map(|(text, id)| json!({ "id": id, "message": text, "from": { "id": brand } }))
                .collect();
            return json!({ "data": [{ "id": "t_1", "messages": { "data": messages } }] });
        }
        let published = self.published.lock().unwrap();
        if path.starts_with("/2/users/") {
            // X's timeline: every reply, with what it replied to, one per
            // page (so that a lookup has to page); X escapes `&` and
            // leaves `data` out when there is none.
            let start: usize = req
                .query_string()
                .split('&')
                .find_map(|kv| kv.strip_prefix("pagination_token=p"))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let Some((target, text, id)) = published.get(start) else {
                return json!({ "meta": { "result_count": 0 } });
            };
            let mut page = json!({ "data": [{ "id": id, "text": text.replace('&', "&amp;"),
                "referenced_tweets": [{ "type": "replied_to", "id": target }] }],
                "meta": { "result_count": 1 } });
            if start + 1 < published.len() {
                page["meta"]["next_token"] = json!(format!("p{}", start + 1));
            }
            return page;
        }
        let target = path.split('/').nth(2).unwrap_or_default();
        let field = if path.ends_with("/replies") {
            "text"
        } else {
            "message"
        };
        let data: Vec<Value> = published
            .iter()
            .filter(|(t, _, _)| t == target)
            .map(|(_, text, id)| json!({ "id": id, field: text, "from": { "id": brand } }))
            .collect();
        json!({ "data": data })
    }

    /// The next POST's answer; published when it is a success.
    fn answer(&self, status: u16, body: Value) {
        let published = (200..300).contains(&status);
        self.script.lock().unwrap().push_back(Scripted {
            status,
            answer: body,
            published,
            lost_id: None,
            hang: false,
            retry_after: None,
        });
    }

    /// The next POST is refused with 429 and `retry-after: secs`.
    fn rate_limited(&self, secs: u64) {
        self.script.lock().unwrap().push_back(Scripted {
            status: 429,
            answer: json!({ "title": "Too Many Requests" }),
            published: false,
            lost_id: None,
            hang: false,
            retry_after: Some(secs),
        });
    }

    /// The next POST is published as `id`, but answered with an error (as
    /// when the answer is lost on the way back).
    fn answer_lost(&self, status: u16, body: Value, id: &str) {
        self.script.lock().unwrap().push_back(Scripted {
            status,
            answer: body,
            published: true,
            lost_id: Some(id.into()),
            hang: false,
            retry_after: None,
        });
    }

    /// The next POST is published as `id` and never answered.
    fn publish_and_hang(&self, id: &str) {
        self.script.lock().unwrap().push_back(Scripted {
            status: 200,
            answer: json!({ "data": { "id": id } }),
            published: true,
            lost_id: None,
            hang: true,
            retry_after: None,
        });
    }

    fn brand(&self, account: &str) {
        *self.brand.lock().unwrap() = account.into();
    }

    /// The POSTs received.
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn lookups(&self) -> Vec<String> {
        self.lookups.lock().unwrap().clone()
    }
}

async fn app_publishing_to(base: &str) -> TestApp {
    let base = base.to_string();
    TestApp::start()
        .await
        .with_worker_publishing(move |c| {
            c.x_api = base.clone();
            c.graph_api = base;
            c.backoff.base = std::time::Duration::from_millis(50);
            c.backoff.max_attempts = 3;
        })
        .await
}

async fn connect(app: &TestApp, s: &Session, input: Value) -> String {
    app.ok(
        Some(&s.access),
        "mutation($i: ConnectChannelInput!) { connectChannel(input: $i) { webhookUrl canPublish } }",
        json!({ "i": input }),
    )
    .await["connectChannel"]["webhookUrl"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn post(app: &TestApp, url: &str, header: (&str, String), body: &[u8]) {
    let r = app
        .client
        .post(url)
        .header("content-type", "application/json")
        .header(header.0, header.1)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

/// Posts `events` to a GENERIC channel's webhook `url`, signed with
/// [`GENERIC_SECRET`].
async fn post_generic(app: &TestApp, url: &str, events: Value) {
    let body = serde_json::to_vec(&json!({ "events": events })).unwrap();
    let sig = generic_sign(
        GENERIC_SECRET.as_bytes(),
        &body,
        chrono::Utc::now().timestamp(),
    );
    post(app, url, ("x-rapport-signature", sig), &body).await;
}

/// A PUBLIC reply with `text` to `conv`, once the worker is done with it.
async fn reply_settled(app: &TestApp, s: &Session, conv: &str, text: &str) -> Value {
    let d = app
        .ok(
            Some(&s.access),
            SEND,
            json!({ "i": { "conversationId": conv, "visibility": "PUBLIC", "text": text } }),
        )
        .await;
    settled(app, s, conv, d["sendReply"]["id"].as_str().unwrap()).await
}

/// The conversation of `handle` in `ws` once ingested.
async fn conversation(app: &TestApp, s: &Session, ws: &str, handle: &str) -> String {
    app.eventually(&format!("a conversation of {handle}"), async || {
        let d = app
            .ok(
                Some(&s.access),
                "query($w: ID!) { conversations(workspaceId: $w, orderBy: NEWEST) { edges { node { id visibility author { handle } } } } }",
                json!({ "w": ws }),
            )
            .await;
        edges(&d["conversations"])
            .into_iter()
            .map(|e| e["node"].clone())
            .find(|n| n["author"]["handle"] == handle && n["visibility"] == "PUBLIC")
            .map(|n| n["id"].as_str().unwrap().to_string())
    })
    .await
}

/// An X channel of `ws` that may publish, and the conversation its
/// Account Activity fixture opens (angry_customer's).
async fn x_conversation(app: &TestApp, s: &Session, ws: &str) -> String {
    let secret = "x-consumer-secret-123";
    let url = connect(
        app,
        s,
        json!({ "workspaceId": ws, "kind": "X", "name": "@BrewCo", "externalAccountId": "2244994945",
                "secret": secret, "accessToken": "x-user-token-abc" }),
    )
    .await;
    post(
        app,
        &url,
        (
            "x-twitter-webhooks-signature",
            x_sign(secret.as_bytes(), X_FIXTURE),
        ),
        X_FIXTURE,
    )
    .await;
    conversation(app, s, ws, "angry_customer").await
}

/// The reply `id` once the worker is done with it (SENT or FAILED).
async fn settled(app: &TestApp, s: &Session, conv: &str, id: &str) -> Value {
    app.eventually("the reply to be published or refused", async || {
        let d = app
            .ok(
                Some(&s.access),
                "query($c: ID!) { conversation(id: $c) { messages(first: 50) { edges { node { id deliveryStatus deliveryError deliveryAttempts platformMessageId intent visibility mayHavePublished } } } } }",
                json!({ "c": conv }),
            )
            .await;
        edges(&d["conversation"]["messages"])
            .into_iter()
            .map(|e| e["node"].clone())
            .find(|n| n["id"] == id && n["deliveryStatus"] != "QUEUED")
    })
    .await
}

const SEND: &str =
    "mutation($i: SendReplyInput!) { sendReply(input: $i) { id deliveryStatus intent } }";

/// X counts a tweet's weighted length: CJK characters count 2, so 200 of
/// them are over the limit X would refuse at publishing, and are refused
/// here, before the reply is stored or stops a clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_x_reply_is_measured_as_x_counts_it() {
    let platform = FakePlatform::default();
    let app = app_publishing_to(&platform.start()).await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let conv = x_conversation(&app, &s, &ws).await;
    let text = format!("angry customer, {}", "申し訳ありません".repeat(25));
    let p = app
        .ok(
            Some(&s.access),
            "query($i: PreviewReplyInput!) { previewReply(input: $i) { characterCount characterLimit } }",
            json!({ "i": { "conversationId": conv, "text": text } }),
        )
        .await;
    assert_eq!(
        p["previewReply"],
        json!({ "characterCount": 16 + 400, "characterLimit": 280 })
    );
    let r = app
        .gql(
            Some(&s.access),
            SEND,
            json!({ "i": { "conversationId": conv, "visibility": "PUBLIC", "text": text } }),
        )
        .await;
    assert_eq!(common::code(&r), Some("BAD_USER_INPUT"), "{r}");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("416 characters as X counts them"),
        "{r}"
    );
    // A long link counts 23.
    let link = format!(
        "angry customer, the refund is on its way: https://brew.example/r/{}",
        "a".repeat(300)
    );
    let p = app
        .ok(
            Some(&s.access),
            "query($i: PreviewReplyInput!) { previewReply(input: $i) { characterCount } }",
            json!({ "i": { "conversationId": conv, "text": link } }),
        )
        .await;
    assert_eq!(p["previewReply"]["characterCount"], 42 + 23);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_replies_are_retried_with_one_idempotency_key_and_refusals_fail_visibly() {
    let platform = FakePlatform::default();
    let base = platform.start();
    let app = app_publishing_to(&base).await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let conv = x_conversation(&app, &s, &ws).await;

    // Over capacity once, then accepted.
    platform.answer(503, json!({ "title": "Service Unavailable" }));
    platform.answer(
        201,
        json!({ "data": { "id": "1900000000000000001", "text": "..." } }),
    );
    let sent = app
        .ok(
            Some(&s.access),
            SEND,
            json!({ "i": { "conversationId": conv, "visibility": "PUBLIC",
                    "text": "Angry, a cold latte and a double charge is not okay. The second charge is refunded now." } }),
        )
        .await;
    assert_eq!(sent["sendReply"]["deliveryStatus"], "QUEUED");
    let id = sent["sendReply"]["id"].as_str().unwrap();
    let r = settled(&app, &s, &conv, id).await;
    assert_eq!(r["deliveryStatus"], "SENT", "{r}");
    assert_eq!(r["platformMessageId"], "1900000000000000001");
    assert_eq!(r["deliveryAttempts"], 2);
    assert!(r["deliveryError"].is_null());
    let seen = platform.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for req in &seen {
        assert_eq!(req.path, "/2/tweets");
        assert_eq!(req.authorization, "Bearer x-user-token-abc");
        assert_eq!(
            req.body["reply"]["in_reply_to_tweet_id"], "1050118621198921999",
            "answers the customer's latest public tweet"
        );
        assert!(req.body["text"].as_str().unwrap().contains("refunded"));
    }
    assert!(!seen[0].idempotency_key.is_empty());
    assert_eq!(seen[0].idempotency_key, seen[1].idempotency_key);
    assert_eq!(
        platform.lookups(),
        ["/2/users/2244994945/tweets"],
        "the retry looked first, and found nothing"
    );

    // Published, but the answer lost (a gateway error after X posted it):
    // the retry finds it on the brand's timeline and does not post again
    // (X would refuse the duplicate, and the reply would show FAILED).
    platform.answer_lost(
        504,
        json!({ "title": "Gateway Timeout" }),
        "1900000000000000002",
    );
    let sent = app
        .ok(
            Some(&s.access),
            SEND,
            json!({ "i": { "conversationId": conv, "visibility": "PUBLIC",
                    "text": "Angry, the refund & the apology are on their way: see https://brew.example/refunds" } }),
        )
        .await;
    let id = sent["sendReply"]["id"].as_str().unwrap();
    let r = settled(&app, &s, &conv, id).await;
    assert_eq!(r["deliveryStatus"], "SENT", "{r}");
    assert_eq!(r["platformMessageId"], "1900000000000000002");
    assert_eq!(r["deliveryAttempts"], 2);
    assert_eq!(platform.seen().len(), 3, "posted once");
    assert_eq!(
        platform.lookups().len(),
        3,
        "found on the timeline's second page"
    );

    // A rate limit says nothing was published: the retry posts without
    // looking.
    platform.answer(429, json!({ "title": "Too Many Requests" }));
    platform.answer(201, json!({ "data": { "id": "1900000000000000003" } }));
    let sent = app
        .ok(
            Some(&s.access),
            SEND,
            json!({ "i": { "conversationId": conv, "visibility": "PUBLIC",
                    "text": "Angry, one more thing: the voucher for your next coffee is in your account." } }),
        )
        .await;
    let id = sent["sendReply"]["id"].as_str().unwrap();
    let r = settled(&app, &s, &conv, id).await;
    assert_eq!(r["platformMessageId"], "1900000000000000003", "{r}");
    assert_eq!(platform.lookups().len(), 3, "no look after a 429");

    // A direct message the platform refuses: FAILED at once, with its words.
    platform.answer(
        403,
        json!({ "detail": "You cannot send messages to this user.", "status": 403 }),
    );
    let sent = app
        .ok(
            Some(&s.access),
            SEND,
            json!({ "i": { "conversationId": conv, "visibility": "PRIVATE",
                    "text": "Could you send us the order number by DM so we can check the charge?" } }),
        )
        .await;
    let id = sent["sendReply"]["id"].as_str().unwrap();
    let r = settled(&app, &s, &conv, id).await;
    assert_eq!(r["deliveryStatus"], "FAILED", "{r}");
    assert_eq!(r["deliveryAttempts"], 1);
    assert!(
        r["deliveryError"]
            .as_str()
            .unwrap()
            .contains("HTTP 403: You cannot send messages to this user."),
        "{r}"
    );
    let dm = platform.seen().pop().unwrap();
    assert_eq!(dm.path, "/2/dm_conversations/with/6253282/messages");
    // Nobody saw it: the same words again are not a canned repeat. X
    // sends it, but the answer is lost: the retry finds it among the DM
    // events with that customer and does not send it twice.
    platform.brand("2244994945");
    platform.answer_lost(
        503,
        json!({ "title": "Service Unavailable" }),
        "1800000000000000002",
    );
    let again = app
        .gql(
            Some(&s.access),
            SEND,
            json!({ "i": { "conversationId": conv, "visibility": "PRIVATE",
                    "text": "Could you send us the order number by DM so we can check the charge?" } }),
        )
        .await;
    assert!(again["errors"].is_null(), "{again}");
    let r = settled(
        &app,
        &s,
        &conv,
        again["data"]["sendReply"]["id"].as_str().unwrap(),
    )
    .await;
    assert_eq!(r["deliveryStatus"], "SENT", "{r}");
    assert_eq!(r["platformMessageId"], "1800000000000000002");
    assert_eq!(r["deliveryAttempts"], 2);
    let dms: Vec<_> = platform
        .seen()
        .into_iter()
        .filter(|r| r.path.ends_with("/messages"))
        .collect();
    assert_eq!(dms.len(), 2, "the refused one and this one, once");
    assert_eq!(
        platform.lookups().last().unwrap(),
        "/2/dm_conversations/with/6253282/dm_events"
    );

    // Failing every time: FAILED after the last attempt, error kept.
    for _ in 0..3 {
        platform.answer(500, json!({ "title": "Internal Error" }));
    }
    let sent = app
        .ok(
            Some(&s.access),
            SEND,
            json!({ "i": { "conversationId": conv, "visibility": "PUBLIC",
                    "text": "Update for you: the refund for the double charge shows within two working days." } }),
        )
        .await;
    let id = sent["sendReply"]["id"].as_str().unwrap();
    let r = settled(&app, &s, &conv, id).await;
    assert_eq!(r["deliveryStatus"], "FAILED", "{r}");
    assert_eq!(r["deliveryAttempts"], 3);
    assert_eq!(r["deliveryError"], "HTTP 500: Internal Error");
}

/// What a platform meant, read as it meant it: a rate limit's
/// `retry-after` is waited out; an answer lost on the last attempt is
/// looked for before the reply is called FAILED; X refusing a copy of a
/// post that an earlier attempt may have published means it is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_waited_out_and_a_lost_last_answer_is_looked_for() {
    let platform = FakePlatform::default();
    let app = app_publishing_to(&platform.start()).await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let conv = x_conversation(&app, &s, &ws).await;
    let send = async |text: &str| {
        let sent = app
            .ok(
                Some(&s.access),
                SEND,
                json!({ "i": { "conversationId": conv, "visibility": "PUBLIC", "text": text } }),
            )
            .await;
        sent["sendReply"]["id"].as_str().unwrap().to_string()
    };

    // 429 with `retry-after: 2`: the next attempt waits 2 s, not the
    // backoff's 50 ms.
    platform.rate_limited(2);
    platform.answer(201, json!({ "data": { "id": "1900000000000000011" } }));
    let id = send("Angry, the refund for the double charge was sent this morning.").await;
    let r = settled(&app, &s, &conv, &id).await;
    assert_eq!(r["platformMessageId"], "1900000000000000011", "{r}");
    let seen = platform.seen();
    let waited = seen[1].at - seen[0].at;
    assert!(waited >= Duration::from_millis(1900), "waited {waited:?}");

    // A conversation's replies go out in the order they were written: a
    // later one waits while an earlier one is retrying.
    platform.rate_limited(1);
    platform.answer(201, json!({ "data": { "id": "1900000000000000014" } }));
    platform.answer(201, json!({ "data": { "id": "1900000000000000015" } }));
    let first = send("Angry, could you send us the order number by DM?").await;
    app.eventually("the first reply's first attempt", async || {
        (platform.seen().len() == 3).then_some(())
    })
    .await;
    let second = send("Angry, thanks: the refund went out, it shows within two days.").await;
    let r = settled(&app, &s, &conv, &second).await;
    assert_eq!(r["platformMessageId"], "1900000000000000015", "{r}");
    let r = settled(&app, &s, &conv, &first).await;
    assert_eq!(r["platformMessageId"], "1900000000000000014", "{r}");
    let texts: Vec<String> = platform.seen()[2..]
        .iter()
        .map(|p| p.body["text"].as_str().unwrap().to_string())
        .collect();
    assert!(
        texts[0].contains("order number") && texts[1].contains("order number"),
        "{texts:?}"
    );
    assert!(texts[2].contains("refund went out"), "{texts:?}");

    // Two server errors, then the last attempt published with its answer
    // lost: looked for, found, SENT (not FAILED, which would invite the
    // agent to send it again).
    platform.answer(500, json!({ "title": "Internal Error" }));
    platform.answer(500, json!({ "title": "Internal Error" }));
    platform.answer_lost(
        502,
        json!({ "title": "Bad Gateway" }),
        "1900000000000000012",
    );
    let id = send("Angry, your replacement latte voucher is in the app under Offers.").await;
    let r = settled(&app, &s, &conv, &id).await;
    assert_eq!(r["deliveryStatus"], "SENT", "{r}");
    assert_eq!(r["platformMessageId"], "1900000000000000012");
    assert_eq!(r["deliveryAttempts"], 3);
    assert_eq!(platform.seen().len(), 8);

    // The answer lost, and the token may not read the timeline: the retry
    // posts, and X refuses it as a copy of what it published. That copy
    // is this reply: SENT, without an id.
    platform.refuse_lookups.store(true, Ordering::SeqCst);
    platform.answer_lost(
        503,
        json!({ "title": "Service Unavailable" }),
        "1900000000000000013",
    );
    platform.answer(
        403,
        json!({ "detail": "You are not allowed to create a Tweet with duplicate content.", "status": 403 }),
    );
    let id = send("Angry, we checked the branch: the machine is fixed since noon.").await;
    let r = settled(&app, &s, &conv, &id).await;
    assert_eq!(r["deliveryStatus"], "SENT", "{r}");
    assert!(r["platformMessageId"].is_null(), "{r}");
    assert_eq!(r["deliveryAttempts"], 2);

    // Looked, and not there (the first answer was a real 503): the copy X
    // refuses is another reply's, so this one is FAILED, not taken for
    // published.
    platform.refuse_lookups.store(false, Ordering::SeqCst);
    platform.answer(503, json!({ "title": "Service Unavailable" }));
    platform.answer(
        403,
        json!({ "detail": "You are not allowed to create a Tweet with duplicate content.", "status": 403 }),
    );
    let id = send("Angry, a gift card for the trouble is on its way by e-mail.").await;
    let r = settled(&app, &s, &conv, &id).await;
    assert_eq!(r["deliveryStatus"], "FAILED", "{r}");

    // Without an earlier attempt that may have published, the same
    // refusal is the platform's: FAILED.
    platform.answer(
        403,
        json!({ "detail": "You are not allowed to create a Tweet with duplicate content.", "status": 403 }),
    );
    let id = send("Angry, the branch manager will call you today about the refund.").await;
    let r = settled(&app, &s, &conv, &id).await;
    assert_eq!(r["deliveryStatus"], "FAILED", "{r}");
}

/// A platform that hangs on a reply holds up neither ingestion nor the
/// other replies: attempts run beside the job consumer, several at once,
/// each until its timeout (15 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_platform_holds_up_neither_ingestion_nor_other_replies() {
    let platform = FakePlatform::default();
    let base = platform.start();
    let app = app_publishing_to(&base).await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let conv = x_conversation(&app, &s, &ws).await;
    platform.publish_and_hang("1900000000000000021");
    app.ok(
        Some(&s.access),
        SEND,
        json!({ "i": { "conversationId": conv, "visibility": "PUBLIC",
                "text": "Angry, the refund for the double charge is on its way today." } }),
    )
    .await;
    app.eventually("the first reply to reach the platform", async || {
        (platform.seen().len() == 1).then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    // A new mention is ingested meanwhile...
    let reviews = connect(
        &app,
        &s,
        json!({ "workspaceId": ws, "kind": "GENERIC", "name": "reviews", "secret": GENERIC_SECRET,
                "callbackUrl": format!("{base}/callback") }),
    )
    .await;
    post_generic(
        &app,
        &reviews,
        json!([{ "id": "rv-9", "text": "the grinder broke", "published_at": "2026-11-20T09:00:00Z",
                 "author": { "id": "rv-9", "handle": "grinder_owner" } }]),
    )
    .await;
    let other = conversation(&app, &s, &ws, "grinder_owner").await;
    // ...and a reply to it is published.
    platform.answer(202, json!({}));
    let r = reply_settled(
        &app,
        &s,
        &other,
        "A grinder breaking is not what we stand for; a new one ships today.",
    )
    .await;
    assert_eq!(r["deliveryStatus"], "SENT", "{r}");
    // The hanging attempt gives up at its 15 s timeout: done before that,
    // this one did not wait behind it.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(14),
        "not behind the hanging attempt: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facebook_take_offline_links_a_private_thread_and_generic_callbacks_are_signed() {
    let platform = FakePlatform::default();
    let base = platform.start();
    let app = app_publishing_to(&base).await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let app_secret = "meta-app-secret-1";
    let url = connect(
        &app,
        &s,
        json!({ "workspaceId": ws, "kind": "FACEBOOK", "name": "Brew Co page", "externalAccountId": "104000000000001",
                "secret": app_secret, "verifyToken": "verify-me-please", "accessToken": "page-token-xyz" }),
    )
    .await;
    let sig = meta_sign(app_secret.as_bytes(), META_FIXTURE);
    post(&app, &url, ("x-hub-signature-256", sig), META_FIXTURE).await;
    let conv = conversation(&app, &s, &ws, "Élodie Martin").await;

    // takeOffline refuses a template of another intent, then goes out.
    let tpl = app
        .ok(
            Some(&s.access),
            "mutation($i: CreateReplyTemplateInput!) { createReplyTemplate(input: $i) { id } }",
            json!({ "i": { "workspaceId": ws, "name": "Thanks", "body": "Thank you {{ author.name }}! {{ slot.why }}",
                    "slots": [{ "name": "why", "guidance": "what they liked", "minLength": 10 }], "intent": "THANKS" } }),
        )
        .await["createReplyTemplate"]["id"]
        .clone();
    const OFFLINE: &str = "mutation($i: TakeOfflineInput!) { takeOffline(input: $i) { reply { id intent visibility } privateConversation { id visibility status parentConversation { id } } } }";
    let r = app
        .gql(
            Some(&s.access),
            OFFLINE,
            json!({ "i": { "conversationId": conv, "templateId": tpl,
                    "slots": [{ "name": "why", "value": "the parcel story you shared" }] } }),
        )
        .await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{r}");
    // Facebook publishes the comment, but the answer is lost: the retry
    // finds it among the comment's comments, from the page.
    platform.brand("104000000000001");
    platform.answer_lost(
        502,
        json!({ "error": { "message": "Bad gateway", "code": 2 } }),
        "104000000000001_555_900",
    );
    let d = app
        .ok(
            Some(&s.access),
            OFFLINE,
            json!({ "i": { "conversationId": conv,
                    "text": "Élodie, a lost parcel is stressful. Please message us privately with your order number and we will trace it today." } }),
        )
        .await;
    let out = &d["takeOffline"];
    assert_eq!(out["reply"]["intent"], "TAKE_OFFLINE");
    assert_eq!(out["reply"]["visibility"], "PUBLIC");
    let private = out["privateConversation"].clone();
    assert_eq!(private["visibility"], "PRIVATE");
    assert_eq!(private["status"], "PENDING_CUSTOMER");
    assert_eq!(private["parentConversation"]["id"], conv);
    let r = settled(&app, &s, &conv, out["reply"]["id"].as_str().unwrap()).await;
    assert_eq!(r["deliveryStatus"], "SENT", "{r}");
    assert_eq!(r["platformMessageId"], "104000000000001_555_900");
    assert_eq!(r["deliveryAttempts"], 2);
    assert_eq!(
        platform.lookups(),
        ["/v21.0/104000000000001_555_777/comments"]
    );
    let seen = platform.seen();
    assert_eq!(seen.len(), 1, "posted once: {seen:?}");
    assert_eq!(seen[0].path, "/v21.0/104000000000001_555_777/comments");
    assert_eq!(seen[0].authorization, "Bearer page-token-xyz");
    assert!(
        seen[0].body["message"]
            .as_str()
            .unwrap()
            .contains("order number")
    );
    let linked = app
        .ok(
            Some(&s.access),
            "query($c: ID!) { conversation(id: $c) { privateThreads { id } } }",
            json!({ "c": conv }),
        )
        .await;
    assert_eq!(
        linked["conversation"]["privateThreads"][0]["id"],
        private["id"]
    );

    // Another customer answers the brand's published comment: found by the
    // platform id publishing recorded, it joins that conversation.
    let answer = serde_json::to_vec(
        &json!({ "object": "page", "entry": [{ "id": "104000000000001", "time": 1764300050,
        "changes": [{ "field": "feed", "value": { "item": "comment", "verb": "add",
            "comment_id": "104000000000001_555_901", "parent_id": "104000000000001_555_900",
            "post_id": "104000000000001_555", "created_time": 1764300050,
            "message": "Same thing happened to my parcel last week",
            "from": { "id": "7000002", "name": "Marc Dubois" } } }] }] }),
    )
    .unwrap();
    post(
        &app,
        &url,
        (
            "x-hub-signature-256",
            meta_sign(app_secret.as_bytes(), &answer),
        ),
        &answer,
    )
    .await;
    app.eventually("the answer to the brand's comment joins its conversation", async || {
        let d = app
            .ok(
                Some(&s.access),
                "query($c: ID!) { conversation(id: $c) { messages(first: 50) { edges { node { body } } } } }",
                json!({ "c": conv }),
            )
            .await;
        edges(&d["conversation"]["messages"])
            .iter()
            .any(|e| e["node"]["body"] == "Same thing happened to my parcel last week")
            .then_some(())
    })
    .await;

    // The customer's private message joins the private thread and reopens it.
    let dm = serde_json::to_vec(&json!({ "object": "page", "entry": [{ "id": "104000000000001", "time": 1764300100,
        "messaging": [{ "sender": { "id": "7000001" }, "recipient": { "id": "104000000000001" }, "timestamp": 1764300100000_i64,
                        "message": { "mid": "m_dm_1", "text": "Order 4471, thanks for helping" } }] }] }))
    .unwrap();
    post(
        &app,
        &url,
        ("x-hub-signature-256", meta_sign(app_secret.as_bytes(), &dm)),
        &dm,
    )
    .await;
    let pid = private["id"].as_str().unwrap().to_string();
    app.eventually("the DM to join the private thread", async || {
        let d = app
            .ok(
                Some(&s.access),
                "query($c: ID!) { conversation(id: $c) { status messages { edges { node { body } } } } }",
                json!({ "c": pid }),
            )
            .await;
        (d["conversation"]["status"] == "OPEN"
            && edges(&d["conversation"]["messages"])
                .iter()
                .any(|e| e["node"]["body"] == "Order 4471, thanks for helping"))
        .then_some(())
    })
    .await;
    // Sent, answer lost: found in the Conversations API's thread with
    // that customer, from the page.
    platform.answer_lost(
        500,
        json!({ "error": { "message": "An unexpected error has occurred.", "code": 2 } }),
        "m_out_1",
    );
    let d = app
        .ok(
            Some(&s.access),
            SEND,
            json!({ "i": { "conversationId": pid, "visibility": "PRIVATE",
                    "text": "Found order 4471: the courier has it, new delivery tomorrow before noon." } }),
        )
        .await;
    let r = settled(&app, &s, &pid, d["sendReply"]["id"].as_str().unwrap()).await;
    assert_eq!(r["platformMessageId"], "m_out_1", "{r}");
    assert_eq!(r["deliveryAttempts"], 2);
    assert_eq!(
        platform.lookups().last().unwrap(),
        "/v21.0/104000000000001/conversations"
    );
    let sent: Vec<_> = platform
        .seen()
        .into_iter()
        .filter(|r| r.path.ends_with("/messages"))
        .collect();
    assert_eq!(sent.len(), 1, "sent once");
    let req = platform.seen().pop().unwrap();
    assert_eq!(req.path, "/v21.0/104000000000001/messages");
    assert_eq!(req.body["recipient"]["id"], "7000001");
    assert_eq!(req.body["messaging_type"], "RESPONSE");

    // Closing the loop: only once resolved.
    const FOLLOW: &str =
        "mutation($i: RequestFollowUpInput!) { requestFollowUp(input: $i) { id intent } }";
    let ask = json!({ "i": { "conversationId": conv,
        "text": "Élodie, did the parcel reach you this morning? Tell us how it went." } });
    let r = app.gql(Some(&s.access), FOLLOW, ask.clone()).await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{r}");
    app.ok(
        Some(&s.access),
        "mutation($c: ID!) { resolveConversation(conversationId: $c) { status } }",
        json!({ "c": conv }),
    )
    .await;
    let d = app.ok(Some(&s.access), FOLLOW, ask).await;
    assert_eq!(d["requestFollowUp"]["intent"], "CLOSE_THE_LOOP");

    // GENERIC: POSTed to the callback URL, signed with the channel secret.
    let generic = connect(
        &app,
        &s,
        json!({ "workspaceId": ws, "kind": "GENERIC", "name": "reviews", "secret": GENERIC_SECRET,
                "callbackUrl": format!("{base}/callback") }),
    )
    .await;
    post_generic(
        &app,
        &generic,
        json!([{ "id": "rv-1", "text": "Two stars, the grinder broke in a week",
                 "published_at": "2026-11-20T09:00:00Z", "author": { "id": "rv-42", "handle": "coffee_critic" } }]),
    )
    .await;
    let gconv = conversation(&app, &s, &ws, "coffee_critic").await;
    platform.answer(202, json!({}));
    let r = reply_settled(
        &app,
        &s,
        &gconv,
        "A grinder breaking in a week is not what we stand for; a replacement ships today.",
    )
    .await;
    assert_eq!(r["deliveryStatus"], "SENT", "{r}");
    let req = platform.seen().pop().unwrap();
    assert_eq!(req.path, "/callback");
    assert!(req.signed, "signed with the channel's secret");
    assert_eq!(req.body["inReplyTo"], "rv-1");
    assert_eq!(req.body["recipient"]["handle"], "coffee_critic");
    assert_eq!(req.body["conversationId"], gconv);

    // Disconnected, the channel forgets its callback URL (it may carry a
    // key) and cannot publish: a reply is refused at once, not queued to
    // fail later with the conversation's clocks stopped.
    let reviews = async || {
        let d = app
            .ok(
                Some(&s.access),
                "query($w: ID!) { channels(workspaceId: $w) { edges { node { id name canPublish callbackUrl } } } }",
                json!({ "w": ws }),
            )
            .await;
        edges(&d["channels"])
            .into_iter()
            .map(|e| e["node"].clone())
            .find(|c| c["name"] == "reviews")
            .unwrap()
    };
    let before = reviews().await;
    assert_eq!(before["canPublish"], true, "{before}");
    app.ok(
        Some(&s.access),
        "mutation($i: ChannelIdInput!) { disconnectChannel(input: $i) { id } }",
        json!({ "i": { "id": before["id"] } }),
    )
    .await;
    let after = reviews().await;
    assert_eq!(after["canPublish"], false, "{after}");
    assert!(after["callbackUrl"].is_null(), "{after}");
    let r = app
        .gql(
            Some(&s.access),
            SEND,
            json!({ "i": { "conversationId": gconv, "visibility": "PUBLIC",
                    "text": "One more thing: the replacement grinder comes with a two-year warranty." } }),
        )
        .await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{r}");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("disconnected"),
        "{r}"
    );

    // An imported conversation's channel has no callback URL until one is
    // given: a reply is refused, not queued to fail.
    let other = app.create_workspace(&s, "Tea Co").await;
    app.ok(
        Some(&s.access),
        "mutation($i: ImportMessagesInput!) { importMessages(input: $i) { accepted } }",
        json!({ "i": { "workspaceId": other, "events": [{ "id": "imp-1", "text": "my tea never arrived",
                "published_at": "2026-11-20T09:00:00Z", "author": { "id": "imp-a", "handle": "tea_fan" } }] } }),
    )
    .await;
    let imported = conversation(&app, &s, &other, "tea_fan").await;
    let ask = json!({ "i": { "conversationId": imported, "visibility": "PUBLIC",
                             "text": "So sorry the tea went missing; a new parcel leaves today." } });
    let r = app.gql(Some(&s.access), SEND, ask.clone()).await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{r}");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("cannot publish"),
        "{r}"
    );
    app.answerable_imports(&s, &other).await;
    app.ok(Some(&s.access), SEND, ask).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_reply_goes_out_through_the_channel_of_the_message_it_answers() {
    let platform = FakePlatform::default();
    let base = platform.start();
    let app = app_publishing_to(&base).await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    // Two sources of one kind in one workspace (say two review sites).
    let mut hooks = Vec::new();
    for name in ["a", "b"] {
        hooks.push(
            connect(
                &app,
                &s,
                json!({ "workspaceId": ws, "kind": "GENERIC", "name": format!("reviews-{name}"),
                        "secret": GENERIC_SECRET, "callbackUrl": format!("{base}/{name}") }),
            )
            .await,
        );
    }
    for (hook, id, at) in [
        (&hooks[0], "rv-1", "2026-11-20T09:00:00Z"),
        (&hooks[1], "rv-2", "2026-11-20T10:00:00Z"),
    ] {
        post_generic(
            &app,
            hook,
            json!([{ "id": id, "text": "the grinder broke in a week", "published_at": at,
                     "author": { "id": "rv-42", "handle": "coffee_critic" } }]),
        )
        .await;
    }
    let conv = conversation(&app, &s, &ws, "coffee_critic").await;
    app.eventually("both mentions in the one conversation", async || {
        let d = app
            .ok(
                Some(&s.access),
                "query($c: ID!) { conversation(id: $c) { messages(first: 10) { edges { node { id } } } } }",
                json!({ "c": conv }),
            )
            .await;
        (edges(&d["conversation"]["messages"]).len() == 2).then_some(())
    })
    .await;
    platform.answer(202, json!({}));
    let r = reply_settled(
        &app,
        &s,
        &conv,
        "A grinder breaking in a week is not what we stand for; a replacement ships today.",
    )
    .await;
    assert_eq!(r["deliveryStatus"], "SENT", "{r}");
    let req = platform.seen().pop().unwrap();
    assert_eq!(req.body["inReplyTo"], "rv-2", "the latest public message");
    assert_eq!(req.path, "/b", "from the source that message came through");

    // Taken to private messages: the thread is on that source too, where
    // the customer's private messages will arrive.
    let d = app
        .ok(
            Some(&s.access),
            "mutation($i: TakeOfflineInput!) { takeOffline(input: $i) { privateConversation { channel { name } } } }",
            json!({ "i": { "conversationId": conv,
                    "text": "Could you write to us privately with your order number? We will sort the grinder today." } }),
        )
        .await;
    assert_eq!(
        d["takeOffline"]["privateConversation"]["channel"]["name"],
        "reviews-b"
    );

    // A callback URL that carries a key and cannot be reached: the
    // reply's error (read by everyone who sees the conversation, client
    // viewers too) does not repeat the URL.
    let d = app
        .ok(
            Some(&s.access),
            "query($w: ID!) { channels(workspaceId: $w) { edges { node { id name } } } }",
            json!({ "w": ws }),
        )
        .await;
    let b = edges(&d["channels"])
        .into_iter()
        .find(|e| e["node"]["name"] == "reviews-b")
        .unwrap()["node"]["id"]
        .clone();
    app.ok(
        Some(&s.access),
        "mutation($i: UpdateChannelInput!) { updateChannel(input: $i) { id } }",
        json!({ "i": { "id": b, "callbackUrl": "http://127.0.0.1:1/hook?key=s3cr3t-key" } }),
    )
    .await;
    let d = app
        .ok(
            Some(&s.access),
            SEND,
            json!({ "i": { "conversationId": conv, "visibility": "PUBLIC",
                    "text": "And the replacement grinder has left the warehouse this morning." } }),
        )
        .await;
    let r = settled(&app, &s, &conv, d["sendReply"]["id"].as_str().unwrap()).await;
    assert_eq!(r["deliveryStatus"], "FAILED", "{r}");
    let error = r["deliveryError"].as_str().unwrap();
    assert!(error.starts_with("request failed"), "{error}");
    assert!(
        !error.contains("s3cr3t") && !error.contains("127.0.0.1:1"),
        "{error}"
    );
}

/// A worker stopped while the platform publishes (its answer never
/// recorded) after an attempt the platform rate-limited: the next attempt
/// must look before posting, since the last recorded answer (429, "nothing
/// published") is not the last attempt's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_cut_off_after_a_rate_limit_is_looked_for_before_the_next() {
    use rapport_store::entities::message;
    use rapport_worker::publish::{PublishConfig, Publisher};
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
    let platform = FakePlatform::default();
    let base = platform.start();
    let mut app = app_publishing_to(&base).await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let conv = x_conversation(&app, &s, &ws).await;
    // From here the test makes each attempt itself.
    app.stop_worker().await;
    let publisher_with = |tweak: fn(&mut PublishConfig)| {
        let mut cfg = PublishConfig {
            x_api: base.clone(),
            graph_api: base.clone(),
            allow_private: true,
            ..Default::default()
        };
        tweak(&mut cfg);
        let (db, kv) = (app.state.db.clone(), app.state.kv.clone());
        Arc::new(Publisher::new(db, kv, app.state.secrets.clone(), cfg).unwrap())
    };
    let publisher = publisher_with(|c| c.backoff.base = std::time::Duration::from_millis(1));

    platform.answer(429, json!({ "title": "Too Many Requests" }));
    platform.publish_and_hang("1900000000000000009");
    // A public reply sent now: its global and database ids.
    let send_public = async |text: &str| {
        let sent = app
            .ok(
                Some(&s.access),
                SEND,
                json!({ "i": { "conversationId": conv, "visibility": "PUBLIC", "text": text } }),
            )
            .await;
        let gid = sent["sendReply"]["id"].as_str().unwrap().to_string();
        let id = rapport_domain::GlobalId::decode(rapport_domain::Kind::Message, &gid).unwrap();
        (gid, id)
    };
    // As if every attempt of the policy had been made without an answer.
    let every_attempt_made = async |id: uuid::Uuid| {
        message::Entity::update_many()
            .col_expr(message::Column::DeliveryAttempts, Expr::value(8))
            .filter(message::Column::Id.eq(id))
            .exec(&app.state.db)
            .await
            .unwrap();
    };
    let (gid, id) =
        send_public("Angry, the double charge is refunded and a fresh latte is on us.").await;
    let due_now = async |id: uuid::Uuid| {
        message::Entity::update_many()
            .col_expr(
                message::Column::NextDeliveryAt,
                Expr::value(chrono::Utc::now() - chrono::Duration::seconds(1)),
            )
            .filter(message::Column::Id.eq(id))
            .exec(&app.state.db)
            .await
            .unwrap();
    };

    assert!(
        publisher.attempt(id).await.unwrap(),
        "attempt 1: rate-limited"
    );
    due_now(id).await;
    let cut = tokio::spawn({
        let publisher = publisher.clone();
        async move { publisher.attempt(id).await }
    });
    app.eventually("attempt 2 to reach the platform", async || {
        (platform.seen().len() == 2).then_some(())
    })
    .await;
    cut.abort();
    assert!(cut.await.unwrap_err().is_cancelled(), "attempt 2 cut off");
    // Its lease would run out after three timeouts.
    due_now(id).await;
    assert!(publisher.attempt(id).await.unwrap(), "attempt 3");

    let r = settled(&app, &s, &conv, &gid).await;
    assert_eq!(r["deliveryStatus"], "SENT", "{r}");
    assert_eq!(r["platformMessageId"], "1900000000000000009");
    assert_eq!(r["deliveryAttempts"], 3);
    assert_eq!(platform.seen().len(), 2, "posted once, found by the look");
    assert_eq!(platform.lookups(), ["/2/users/2244994945/tweets"]);

    // A reply whose every attempt was cut off (or whose answer could not
    // be stored) is given up, visibly, not sent again and again.
    let (gid, id) = send_public("Angry, one more thing: the voucher is in your account now.").await;
    every_attempt_made(id).await;
    assert!(publisher.attempt(id).await.unwrap());
    let r = settled(&app, &s, &conv, &gid).await;
    assert_eq!(r["deliveryStatus"], "FAILED", "{r}");
    assert_eq!(r["deliveryError"], "no answer recorded after 8 attempts");
    assert_eq!(platform.seen().len(), 2, "not sent");
    // Unless the platform shows the last one published: then it is SENT.
    let text = "Angry, and a second voucher is on its way for the trouble.";
    let (gid, id) = send_public(text).await;
    every_attempt_made(id).await;
    platform.keep(
        "/2/tweets",
        &json!({ "text": text, "reply": { "in_reply_to_tweet_id": "1050118621198921999" } }),
        &json!({ "data": { "id": "1900000000000000011" } }),
        None,
    );
    assert!(publisher.attempt(id).await.unwrap());
    let r = settled(&app, &s, &conv, &gid).await;
    assert_eq!(r["deliveryStatus"], "SENT", "{r} {:?}", platform.lookups());
    assert_eq!(
        r["platformMessageId"],
        "1900000000000000011",
        "{:?}",
        platform.lookups()
    );
    assert_eq!(platform.seen().len(), 2, "not sent again");

    // An attempt that outlives its claim (the platform hangs, the lease
    // runs out, another worker finds the reply published) records
    // nothing over the other's outcome when it finally times out.
    let slow = publisher_with(|c| c.timeout = std::time::Duration::from_secs(2));
    platform.publish_and_hang("1900000000000000010");
    let (gid, id) = send_public("Angry, and the barista has been told about the cold latte.").await;
    let late = tokio::spawn({
        let slow = slow.clone();
        async move { slow.attempt(id).await }
    });
    app.eventually("the slow attempt to reach the platform", async || {
        (platform.seen().len() == 3).then_some(())
    })
    .await;
    due_now(id).await;
    assert!(publisher.attempt(id).await.unwrap(), "the other worker");
    assert!(late.await.unwrap().unwrap(), "the slow attempt ends");
    let r = settled(&app, &s, &conv, &gid).await;
    assert_eq!(r["deliveryStatus"], "SENT", "{r}");
    assert_eq!(r["platformMessageId"], "1900000000000000010");
    assert!(r["deliveryError"].is_null(), "{r}");
    assert_eq!(platform.seen().len(), 3, "posted once");
}

const RETRY: &str = "mutation($r: ID!) { retryReply(replyId: $r) { id deliveryStatus deliveryAttempts deliveryError } }";

/// A reply the platform refused shows in open inboxes at once, and
/// `retryReply` sends it again, unchanged, once the cause is fixed; only a
/// FAILED reply of the member's own agency, on a channel that can publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reply_is_shown_live_and_sent_again_with_retry_reply() {
    use futures_util::StreamExt;
    let platform = FakePlatform::default();
    let app = app_publishing_to(&platform.start()).await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let other = app.sign_up("Other", "owner@other.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let conv = x_conversation(&app, &s, &ws).await;
    let ws_id = rapport_domain::GlobalId::decode(rapport_domain::Kind::Workspace, &ws).unwrap();
    let kv = &app.state.kv;
    let mut live = Box::pin(
        kv.subscribe(&kv.channel(rapport_store::kv::Topic::Conversations, ws_id))
            .await
            .unwrap(),
    );

    app.ok(
        Some(&s.access),
        "mutation($i: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $i) { id } }",
        json!({ "i": { "workspaceId": ws, "url": "https://hooks.acme.example/rapport",
                       "events": ["REPLY_FAILED"], "secret": "hook-secret-123" } }),
    )
    .await;
    platform.answer(
        403,
        json!({ "detail": "You are not permitted to perform this action.", "status": 403 }),
    );
    let text = "Sorry about the double charge: the refund is on its way today.";
    let r = reply_settled(&app, &s, &conv, text).await;
    assert_eq!(r["deliveryStatus"], "FAILED", "{r}");
    assert_eq!(r["mayHavePublished"], false, "refused outright");
    let id = r["id"].as_str().unwrap().to_string();
    // One update when the reply was queued, one when it failed (the
    // ingestion's late "created", if it comes after the subscription, is
    // not one of them).
    for what in ["queued", "failed"] {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), live.next())
                .await
                .unwrap_or_else(|_| panic!("a live update when the reply was {what}"))
                .unwrap();
            let msg: Value = serde_json::from_str(&msg).unwrap();
            assert_eq!(msg["conversationId"], conv.as_str());
            if msg["event"] == "updated" {
                break;
            }
        }
    }

    // The agency's REPLY_FAILED subscribers are told, with the error.
    let hooks = app
        .ok(
            Some(&s.access),
            "query($w: ID!) { webhookSubscriptions(workspaceId: $w) { deliveries(first: 10) { edges { node { eventType payload } } } } }",
            json!({ "w": ws }),
        )
        .await;
    let told = edges(&hooks["webhookSubscriptions"][0]["deliveries"]);
    assert_eq!(told.len(), 1, "{hooks}");
    let told = &told[0]["node"];
    assert_eq!(told["eventType"], "REPLY_FAILED");
    assert_eq!(told["payload"]["replyId"], id.as_str());
    assert_eq!(told["payload"]["conversationId"], conv.as_str());
    assert!(
        told["payload"]["error"]
            .as_str()
            .unwrap()
            .contains("You are not permitted"),
        "{told}"
    );

    // Another agency cannot see it, an unknown id is not found, a client
    // viewer may not.
    let d = app
        .gql(Some(&other.access), RETRY, json!({ "r": id }))
        .await;
    assert_eq!(code(&d), Some("NOT_FOUND"), "{d}");
    let d = app
        .gql(Some(&s.access), RETRY, json!({ "r": "nonsense" }))
        .await;
    assert_eq!(code(&d), Some("NOT_FOUND"), "{d}");
    let (viewer, _) = app
        .add_member(
            &s,
            "client@brew.test",
            "CLIENT_VIEWER",
            Some(vec![ws.clone()]),
        )
        .await;
    let d = app
        .gql(Some(&viewer.access), RETRY, json!({ "r": id }))
        .await;
    assert_eq!(code(&d), Some("FORBIDDEN"), "{d}");

    // A phrase the brand banned since: refused as a new reply would be
    // (and counted with the refusals); a manager's reason lets it through.
    let workspace = |banned: Value| {
        app.ok(
            Some(&s.access),
            "mutation($i: UpdateWorkspaceInput!) { updateWorkspace(input: $i) { id } }",
            json!({ "i": { "id": ws, "bannedPhrases": banned } }),
        )
    };
    workspace(json!(["on its way today"])).await;
    let d = app.gql(Some(&s.access), RETRY, json!({ "r": id })).await;
    assert_eq!(code(&d), Some("CANNED_REPLY"), "{d}");
    let refusals: i64 = {
        use sea_orm::{EntityTrait, PaginatorTrait};
        rapport_store::entities::reply_refusal::Entity::find()
            .count(&app.state.db)
            .await
            .unwrap() as i64
    };
    assert_eq!(refusals, 1, "the refusal is counted for reports");

    // Sent again: QUEUED with its attempts from zero. The platform refused
    // it outright, so nothing can have been published: no error kept, no
    // look before the post.
    platform.answer(
        201,
        json!({ "data": { "id": "1900000000000000077", "text": text } }),
    );
    let looked_before = platform.lookups().len();
    let d = app
        .ok(
            Some(&s.access),
            "mutation($r: ID!, $why: String) { retryReply(replyId: $r, overrideReason: $why) { id deliveryStatus deliveryAttempts deliveryError } }",
            json!({ "r": id, "why": "Legal cleared this wording for refunds" }),
        )
        .await;
    assert_eq!(d["retryReply"]["deliveryStatus"], "QUEUED", "{d}");
    assert_eq!(d["retryReply"]["deliveryAttempts"], 0);
    assert!(d["retryReply"]["deliveryError"].is_null(), "{d}");
    workspace(json!([])).await;
    let audit = app
        .ok(
            Some(&s.access),
            "{ auditLog(first: 5) { edges { node { action } } } }",
            json!({}),
        )
        .await;
    let actions: Vec<_> = edges(&audit["auditLog"])
        .iter()
        .map(|e| e["node"]["action"].as_str().unwrap().to_string())
        .collect();
    assert!(
        actions.contains(&"retryReplyOverride".to_string()),
        "{audit}"
    );
    // The client's report counts it as an override.
    let now = chrono::Utc::now();
    let report = app
        .ok(
            Some(&s.access),
            "query($w: ID!, $from: DateTime!, $to: DateTime!) { workspaceReport(workspaceId: $w, from: $from, to: $to) { total { overrides } } }",
            json!({ "w": ws, "from": (now - chrono::Duration::hours(1)).to_rfc3339(), "to": (now + chrono::Duration::hours(1)).to_rfc3339() }),
        )
        .await;
    assert_eq!(
        report["workspaceReport"]["total"]["overrides"], 1,
        "{report}"
    );
    let r = settled(&app, &s, &conv, &id).await;
    assert_eq!(r["deliveryStatus"], "SENT", "{r}");
    assert_eq!(r["platformMessageId"], "1900000000000000077");
    let posts: Vec<_> = platform
        .seen()
        .into_iter()
        .filter(|p| p.path == "/2/tweets")
        .collect();
    assert_eq!(posts.len(), 2, "refused once, then published");
    assert_eq!(posts[1].body["text"], text);
    assert_eq!(
        platform.lookups().len(),
        looked_before,
        "nothing to look for"
    );

    // Every attempt's answer lost (500s): it may have published. Sent
    // again, its error is kept and the next attempt looks on the platform
    // before it posts.
    for _ in 0..3 {
        platform.answer(500, json!({ "title": "Internal Error" }));
    }
    let lost = reply_settled(
        &app,
        &s,
        &conv,
        "Your refund reference is RF-2231, in case your bank asks.",
    )
    .await;
    assert_eq!(lost["deliveryStatus"], "FAILED", "{lost}");
    assert_eq!(lost["mayHavePublished"], true, "every answer lost");
    platform.answer(
        201,
        json!({ "data": { "id": "1900000000000000079", "text": "..." } }),
    );
    let looked_before = platform.lookups().len();
    let d = app
        .ok(Some(&s.access), RETRY, json!({ "r": lost["id"] }))
        .await;
    assert_eq!(
        d["retryReply"]["deliveryError"], "HTTP 500: Internal Error",
        "{d}"
    );
    let r = settled(&app, &s, &conv, lost["id"].as_str().unwrap()).await;
    assert_eq!(r["deliveryStatus"], "SENT", "{r}");
    assert_eq!(
        platform.lookups()[looked_before..],
        ["/2/users/2244994945/tweets"],
        "looked first"
    );

    // Only a FAILED one.
    let d = app.gql(Some(&s.access), RETRY, json!({ "r": id })).await;
    assert_eq!(code(&d), Some("BAD_USER_INPUT"), "{d}");
    assert!(d.to_string().contains("this one is SENT"), "{d}");

    // Refused again, and a later reply went out: sent now, it would be
    // read after that one.
    platform.answer(403, json!({ "detail": "Forbidden.", "status": 403 }));
    let r = reply_settled(
        &app,
        &s,
        &conv,
        "We have also credited your account for the latte.",
    )
    .await;
    assert_eq!(r["deliveryStatus"], "FAILED", "{r}");
    platform.answer(
        201,
        json!({ "data": { "id": "1900000000000000078", "text": "..." } }),
    );
    let later = reply_settled(
        &app,
        &s,
        &conv,
        "One more thing: your next coffee is on us, Angry.",
    )
    .await;
    assert_eq!(later["deliveryStatus"], "SENT", "{later}");
    let d = app
        .gql(Some(&s.access), RETRY, json!({ "r": r["id"] }))
        .await;
    assert_eq!(code(&d), Some("BAD_USER_INPUT"), "{d}");
    assert!(d.to_string().contains("a later reply"), "{d}");
    // And the channel disconnected: nothing to send it through.
    let channel = app
        .ok(
            Some(&s.access),
            "query($w: ID!) { channels(workspaceId: $w) { edges { node { id } } } }",
            json!({ "w": ws }),
        )
        .await;
    let channel = edges(&channel["channels"])[0]["node"]["id"].clone();
    app.ok(
        Some(&s.access),
        "mutation($i: ChannelIdInput!) { disconnectChannel(input: $i) { status } }",
        json!({ "i": { "id": channel } }),
    )
    .await;
    let d = app
        .gql(Some(&s.access), RETRY, json!({ "r": r["id"] }))
        .await;
    assert_eq!(code(&d), Some("BAD_USER_INPUT"), "{d}");
    assert!(d.to_string().contains("cannot publish"), "{d}");
    let r = settled(&app, &s, &conv, r["id"].as_str().unwrap()).await;
    assert_eq!(r["deliveryStatus"], "FAILED");
}
