//! GraphQL subscriptions over WebSocket with the graphql-transport-ws
//! protocol, as third-party frontends use them: authenticated in
//! connection_init, scoped to the member's workspaces.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket upgrade request to `/graphql` for graphql-transport-ws.
fn ws_request(app: &TestApp) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let url = format!("{}/graphql", app.base.replace("http://", "ws://"));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    req
}

async fn connect(app: &TestApp, token: &str) -> (Ws, Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_request(app))
        .await
        .expect("websocket");
    ws.send(Message::text(json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } }).to_string()))
        .await
        .unwrap();
    let ack = next(&mut ws).await;
    (ws, ack)
}

/// The first error's code, whether sent as an `error` or inside `next`.
fn error_code(msg: &Value) -> Value {
    let e = if msg["type"] == "error" {
        &msg["payload"][0]
    } else {
        &msg["payload"]["errors"][0]
    };
    e["extensions"]["code"].clone()
}

/// The next message that is not a keep-alive, within 10 s in all (the
/// server's pings must not keep a missing message waited for forever).
async fn next(ws: &mut Ws) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a message in time")
            .expect("open socket")
            .unwrap();
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] != "ping" && v["type"] != "ka" {
                return v;
            }
        }
    }
}

/// Sends a graphql-transport-ws `subscribe` (id "1") for `query` on
/// workspace `ws`.
async fn subscribe(sock: &mut Ws, query: &str, ws: &str) {
    sock.send(Message::text(
        json!({ "id": "1", "type": "subscribe", "payload": { "query": query, "variables": { "w": ws } } })
            .to_string(),
    ))
    .await
    .unwrap();
}

const CONVERSATIONS: &str = "subscription($w: ID!) { conversationUpdated(workspaceId: $w) { event workspaceId conversationId } }";
const ALERTS: &str = "subscription($w: ID!) { slaAlerts(workspaceId: $w) { kind } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_updates_arrive_live_and_only_for_visible_workspaces() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let other = app.sign_up("Other", "o@other.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let (mut sock, ack) = connect(&app, &s.access).await;
    assert_eq!(ack["type"], "connection_ack");
    subscribe(&mut sock, CONVERSATIONS, &ws).await;
    // Once the subscription reached Redis, cause an update.
    app.subscribed(Topic::Conversations, &ws).await;
    let msg =
        json!({ "workspaceId": ws, "conversationId": "Q29udmVyc2F0aW9uOng", "event": "created" });
    let ws_uuid = rapport_domain::GlobalId::decode(rapport_domain::Kind::Workspace, &ws).unwrap();
    let _: () = redis::cmd("PUBLISH")
        .arg(app.state.kv.channel(Topic::Conversations, ws_uuid))
        .arg(msg.to_string())
        .query_async(&mut app.state.kv.conn())
        .await
        .unwrap();
    let got = next(&mut sock).await;
    assert_eq!(got["type"], "next", "{got}");
    assert_eq!(
        got["payload"]["data"]["conversationUpdated"]["event"],
        "created"
    );

    // Another agency's member cannot subscribe to this workspace.
    let (mut sock2, _) = connect(&app, &other.access).await;
    subscribe(&mut sock2, ALERTS, &ws).await;
    let err = next(&mut sock2).await;
    assert_eq!(error_code(&err), "NOT_FOUND", "{err}");

    // Without a valid token: refused.
    let (mut sock3, _) = connect(&app, "not-a-token").await;
    subscribe(&mut sock3, ALERTS, &ws).await;
    let err = next(&mut sock3).await;
    assert_eq!(error_code(&err), "UNAUTHENTICATED", "{err}");
}

/// Waits for the next `conversationUpdated` event and checks that it is
/// an update of conversation `id`.
async fn expect_updated(sock: &mut Ws, id: &Value) {
    let got = next_change(sock).await;
    assert_eq!(
        (&got["event"], &got["conversationId"]),
        (&json!("updated"), id)
    );
}

/// Waits for the next `conversationUpdated` event of subscription "1".
async fn next_change(sock: &mut Ws) -> Value {
    let got = next(sock).await;
    assert_eq!(got["type"], "next", "{got}");
    got["payload"]["data"]["conversationUpdated"].clone()
}

/// Asserts that nothing but keep-alives arrives for a while: a step sent
/// one event, not two, and a refused change none.
async fn quiet(sock: &mut Ws) {
    let until = tokio::time::Instant::now() + std::time::Duration::from_millis(300);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(until, sock.next()).await {
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            assert!(v["type"] == "ping" || v["type"] == "ka", "unexpected: {v}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_assignments_and_status_changes_are_published_live() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let (_, agent) = app
        .add_member(&s, "agent@acme.test", "AGENT", Some(vec![ws.clone()]))
        .await;
    let (_, client) = app
        .add_member(
            &s,
            "client@brew.test",
            "CLIENT_VIEWER",
            Some(vec![ws.clone()]),
        )
        .await;
    let (mut sock, _) = connect(&app, &s.access).await;
    subscribe(&mut sock, CONVERSATIONS, &ws).await;
    app.subscribed(Topic::Conversations, &ws).await;

    // Two messages of one thread in one import: one event, "created".
    app.import_events(
        &s,
        &ws,
        json!([
            { "id": "m1", "text": "my order is late", "published_at": "2026-11-20T09:00:00Z",
              "author": { "id": "ana", "handle": "ana" } },
            { "id": "m2", "text": "still waiting", "published_at": "2026-11-20T09:05:00Z",
              "in_reply_to": "m1", "author": { "id": "ana", "handle": "ana" } },
        ]),
    )
    .await;
    let created = next_change(&mut sock).await;
    assert_eq!(created["event"], "created", "{created}");
    quiet(&mut sock).await;
    assert_eq!(created["workspaceId"], ws.as_str());
    let d = app
        .ok(
            Some(&s.access),
            "query($w: ID!) { conversations(workspaceId: $w) { edges { node { id } } } }",
            json!({ "w": ws }),
        )
        .await;
    let nodes = edges(&d["conversations"]);
    assert_eq!(nodes.len(), 1, "{d}");
    let id = nodes[0]["node"]["id"].clone();
    assert_eq!(created["conversationId"], id);

    app.ok(
        Some(&s.access),
        "mutation($i: AssignConversationInput!) { assignConversation(input: $i) { id } }",
        json!({ "i": { "conversationId": id, "memberId": agent } }),
    )
    .await;
    expect_updated(&mut sock, &id).await;
    quiet(&mut sock).await;

    app.ok(
        Some(&s.access),
        "mutation($i: SetConversationStatusInput!) { setConversationStatus(input: $i) { status } }",
        json!({ "i": { "conversationId": id, "status": "RESOLVED" } }),
    )
    .await;
    expect_updated(&mut sock, &id).await;
    quiet(&mut sock).await;

    // A change refused inside its transaction (client viewers cannot
    // take conversations) publishes nothing.
    let r = app
        .gql(
            Some(&s.access),
            "mutation($i: AssignConversationInput!) { assignConversation(input: $i) { id } }",
            json!({ "i": { "conversationId": id, "memberId": client } }),
        )
        .await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{r}");
    quiet(&mut sock).await;

    // The customer writes again: the resolved conversation reopens.
    app.import_events(
        &s,
        &ws,
        json!([{ "id": "m3", "text": "thanks, sorted", "published_at": "2026-11-20T10:00:00Z",
                 "in_reply_to": "m2", "author": { "id": "ana", "handle": "ana" } }]),
    )
    .await;
    expect_updated(&mut sock, &id).await;
}

/// A socket outlives the member as they were at connection_init: after the
/// member is removed, the socket's next operation is refused and its live
/// feed ends at the next event instead of going on delivering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_operation_over_a_socket_gets_the_same_code_as_over_http() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let (mut sock, ack) = connect(&app, &s.access).await;
    assert_eq!(ack["type"], "connection_ack");
    for query in [
        "subscription($w: ID!) { conversationUpdated(workspaceId: $w",
        "subscription($w: ID!) { conversationUpdated(workspaceId: $w) { nope } }",
    ] {
        subscribe(&mut sock, query, &ws).await;
        let got = next(&mut sock).await;
        assert_eq!(error_code(&got), "BAD_USER_INPUT", "{query}: {got}");
        if got["type"] == "next" {
            assert_eq!(next(&mut sock).await["type"], "complete");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_follows_the_member_as_they_are_now_not_as_they_connected() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let (agent, agent_id) = app.add_member(&s, "agent@acme.test", "AGENT", None).await;
    let (mut sock, ack) = connect(&app, &agent.access).await;
    assert_eq!(ack["type"], "connection_ack");
    subscribe(&mut sock, CONVERSATIONS, &ws).await;
    app.subscribed(Topic::Conversations, &ws).await;
    let ask_role = async |sock: &mut Ws, id: &str| {
        sock.send(Message::text(
            json!({ "id": id, "type": "subscribe", "payload": { "query": "{ me { role } }" } })
                .to_string(),
        ))
        .await
        .unwrap();
        let got = next(sock).await;
        assert_eq!(
            (got["type"].as_str(), got["id"].as_str()),
            (Some("next"), Some(id)),
            "{got}"
        );
        let done = next(sock).await;
        assert_eq!(done["type"], "complete", "{done}");
        got
    };
    let before = ask_role(&mut sock, "2").await;
    assert_eq!(before["payload"]["data"]["me"]["role"], "AGENT", "{before}");

    app.ok(
        Some(&s.access),
        "mutation($i: RemoveMemberInput!) { removeMember(input: $i) { removedMemberId } }",
        json!({ "i": { "memberId": agent_id } }),
    )
    .await;
    let after = ask_role(&mut sock, "3").await;
    assert_eq!(error_code(&after), "UNAUTHENTICATED", "{after}");

    let ws_uuid = rapport_domain::GlobalId::decode(rapport_domain::Kind::Workspace, &ws).unwrap();
    let _: () = redis::cmd("PUBLISH")
        .arg(app.state.kv.channel(Topic::Conversations, ws_uuid))
        .arg(json!({ "workspaceId": ws, "conversationId": "Q29udmVyc2F0aW9uOng", "event": "created" }).to_string())
        .query_async(&mut app.state.kv.conn())
        .await
        .unwrap();
    let got = next(&mut sock).await;
    assert_eq!(got["id"], "1", "{got}");
    assert_eq!(
        error_code(&got),
        "UNAUTHENTICATED",
        "no event after the removal: {got}"
    );
    let done = next(&mut sock).await;
    assert_eq!(
        (done["type"].as_str(), done["id"].as_str()),
        (Some("complete"), Some("1")),
        "{done}"
    );
}

/// A client message over the size limit (in fragments, each small, or
/// announced in one frame's header) closes the socket before it is held
/// whole; `Upgrade: WebSocket` in
/// another case still upgrades (RFC 6455: case-insensitive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_socket_messages_close_the_socket_and_the_upgrade_header_is_caseless() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;

    let r = app
        .client
        .get(format!("{}/graphql", app.base))
        .header("Upgrade", "WebSocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Sec-WebSocket-Protocol", "graphql-transport-ws")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 101);

    let (mut ws, ack) = connect(&app, &s.access).await;
    assert_eq!(ack["type"], "connection_ack");
    let chunk = vec![b' '; 60 * 1024];
    ws.send(Message::Frame(Frame::message(
        chunk.clone(),
        OpCode::Data(Data::Text),
        false,
    )))
    .await
    .unwrap();
    for _ in 0..5 {
        // Past 256 KiB the server stops reading: a send may fail.
        if ws
            .send(Message::Frame(Frame::message(
                chunk.clone(),
                OpCode::Data(Data::Continue),
                false,
            )))
            .await
            .is_err()
        {
            break;
        }
    }
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
    .unwrap_or(false);
    assert!(closed, "the socket is closed");

    // A frame announcing more than the limit is refused on its header, with
    // 1009 (the client has sent nothing more, so the close frame is read).
    use tokio::io::AsyncWriteExt;
    let (mut ws, ack) = connect(&app, &s.access).await;
    assert_eq!(ack["type"], "connection_ack");
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(300u64 * 1024).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    match ws.get_mut() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp.write_all(&header).await.unwrap(),
        _ => unreachable!("plain TCP"),
    }
    let (code, reason) = closed_within(&mut ws, 10).await.expect("a close frame");
    assert_eq!(code, 1009, "{reason}");
}

/// A socket runs at most 20 subscriptions at once (each holds a Redis
/// connection and reads the member again for every event); completing one
/// frees its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_runs_at_most_twenty_subscriptions_at_once() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let (mut sock, ack) = connect(&app, &s.access).await;
    assert_eq!(ack["type"], "connection_ack");
    let send = async |sock: &mut Ws, msg: Value| {
        sock.send(Message::text(msg.to_string())).await.unwrap();
    };
    for n in 1..=21 {
        send(
            &mut sock,
            json!({ "id": n.to_string(), "type": "subscribe",
            "payload": { "query": CONVERSATIONS, "variables": { "w": ws } } }),
        )
        .await;
    }
    // Exactly one is refused (whichever was resolved last).
    let refused = next(&mut sock).await;
    assert_eq!(error_code(&refused), "BAD_USER_INPUT", "{refused}");
    let refused_id = refused["id"].as_str().unwrap().to_string();
    if refused["type"] == "next" {
        let ended = next(&mut sock).await;
        assert_eq!(
            (&ended["type"], &ended["id"]),
            (&json!("complete"), &refused["id"])
        );
    }
    quiet(&mut sock).await;
    // One completed: a new one takes its place and receives events.
    let done = if refused_id == "1" { "2" } else { "1" };
    send(&mut sock, json!({ "id": done, "type": "complete" })).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    send(
        &mut sock,
        json!({ "id": "22", "type": "subscribe",
        "payload": { "query": CONVERSATIONS, "variables": { "w": ws } } }),
    )
    .await;
    // Live once it receives: probes on its channel until one reaches it
    // (the other feeds keep the channel subscribed, so Redis's count
    // cannot tell).
    let channel = app.state.kv.channel(
        Topic::Conversations,
        rapport_domain::GlobalId::decode(rapport_domain::Kind::Workspace, &ws).unwrap(),
    );
    let probe =
        json!({ "workspaceId": ws, "conversationId": "probe", "event": "probe" }).to_string();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    'probing: loop {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(&probe)
            .query_async(&mut app.state.kv.conn())
            .await
            .unwrap();
        let until = tokio::time::Instant::now() + std::time::Duration::from_millis(200);
        while let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout_at(until, sock.next()).await
        {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["id"] == "22" {
                assert_eq!(
                    (
                        &v["type"],
                        &v["payload"]["data"]["conversationUpdated"]["event"]
                    ),
                    (&json!("next"), &json!("probe")),
                    "{v}"
                );
                break 'probing;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "subscription 22 never live"
        );
    }
    app.import_events(&s, &ws, json!([{ "id": "e1", "text": "cold latte", "published_at": "2026-11-20T09:00:00Z", "author": { "id": "ana" } }]))
        .await;
    loop {
        let msg = next(&mut sock).await;
        assert_ne!(msg["type"], "error", "{msg}");
        assert!(msg["payload"]["errors"].is_null(), "{msg}");
        if msg["payload"]["data"]["conversationUpdated"]["event"] == "probe" {
            continue;
        }
        if msg["id"] == "22" {
            assert_eq!(
                msg["payload"]["data"]["conversationUpdated"]["event"],
                "created"
            );
            break;
        }
    }
}

/// Reads until the server closes `ws`, which must happen within `secs`;
/// the close frame's code and reason (None: dropped without one).
async fn closed_within(ws: &mut Ws, secs: u64) -> Option<(u16, String)> {
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(until, ws.next()).await {
            Err(_) => panic!("still open after {secs} s"),
            Ok(Some(Ok(Message::Close(f)))) => {
                return f.map(|f| (f.code.into(), f.reason.to_string()));
            }
            Ok(None | Some(Err(_))) => return None,
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// A socket that does not sign in within the deadline is closed with the
/// protocol's code: one that never sends `connection_init` (4408), and one
/// whose token is bad (4403; its operations are refused meanwhile); a
/// signed-in socket outlives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_does_not_sign_in_in_time_is_closed() {
    let app =
        TestApp::start_with(|s| s.socket_sign_in_deadline = std::time::Duration::from_secs(3))
            .await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let (mut silent, _) = tokio_tungstenite::connect_async(ws_request(&app))
        .await
        .unwrap();
    let (mut bad, ack) = connect(&app, "not-a-token").await;
    assert_eq!(ack["type"], "connection_ack");
    subscribe(&mut bad, CONVERSATIONS, &ws).await;
    assert_eq!(error_code(&next(&mut bad).await), "UNAUTHENTICATED");
    let (mut good, ack) = connect(&app, &s.access).await;
    assert_eq!(ack["type"], "connection_ack");

    let (code, reason) = closed_within(&mut silent, 10).await.expect("a close frame");
    assert_eq!(code, 4408, "{reason}");
    assert_eq!(reason, "Connection initialisation timeout");
    let (code, reason) = closed_within(&mut bad, 10).await.expect("a close frame");
    assert_eq!(code, 4403, "{reason}");
    // Past the good socket's own deadline too.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    subscribe(&mut good, CONVERSATIONS, &ws).await;
    app.subscribed(Topic::Conversations, &ws).await;
    app.import_events(
        &s,
        &ws,
        json!([{ "id": "d1", "text": "still there?", "published_at": "2026-11-20T09:00:00Z",
                 "author": { "id": "ana", "handle": "ana" } }]),
    )
    .await;
    let got = next_change(&mut good).await;
    assert_eq!(
        got["event"], "created",
        "the signed-in socket is still open"
    );
}

/// The server's answer to a socket's `connection_init`: the ack, or the
/// close frame's code and reason.
async fn init_answer(app: &TestApp, token: &str) -> (Ws, Result<(), (u16, String)>) {
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_request(app))
        .await
        .unwrap();
    ws.send(Message::text(json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } }).to_string()))
        .await
        .unwrap();
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .expect("an answer in time")
            .expect("an answer before the end")
            .unwrap();
        match msg {
            Message::Text(t) if t.contains("connection_ack") => return (ws, Ok(())),
            Message::Close(Some(f)) => return (ws, Err((f.code.into(), f.reason.to_string()))),
            _ => {}
        }
    }
}

/// A member holds at most 10 signed-in sockets on one server: the 11th is
/// closed with the reason; another member is not counted with them, and a
/// socket whose session ends is closed and frees its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_holds_at_most_ten_sockets_at_once() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let (agent, _) = app.add_member(&s, "agent@acme.test", "AGENT", None).await;
    let mut open = Vec::new();
    for _ in 0..10 {
        let (ws, answer) = init_answer(&app, &s.access).await;
        assert_eq!(answer, Ok(()));
        open.push(ws);
    }
    let (_, answer) = init_answer(&app, &s.access).await;
    let (code, reason) = answer.expect_err("the 11th is refused");
    assert_eq!(code, 1002);
    assert!(reason.contains("at most 10 open connections"), "{reason}");
    let (_agents, answer) = init_answer(&app, &agent.access).await;
    assert_eq!(answer, Ok(()), "another member's own count");

    // A client that ends its session (`connection_terminate`) has its
    // connection closed, and its place freed.
    let mut first = open.remove(0);
    first
        .send(Message::text(r#"{"type":"connection_terminate"}"#))
        .await
        .unwrap();
    let (code, _) = closed_within(&mut first, 5).await.expect("a close frame");
    assert_eq!(code, 1000);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (ws, answer) = init_answer(&app, &s.access).await;
        if answer.is_ok() {
            open.push(ws);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed socket's place is freed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Every live feed of a process shares one Redis pub/sub connection: a
/// tenant opening many subscriptions cannot use up Redis's clients (and
/// with them every tenant's live updates and workers). Each feed still
/// gets only its channel's messages, two feeds of one channel both get
/// them, and a channel no feed reads is unsubscribed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_feeds_share_one_redis_connection() {
    let app = TestApp::start().await;
    let kv = &app.state.kv;
    let channels: Vec<String> = (0..30).map(|i| kv.key(&format!("hub:{i}"))).collect();
    let mut feeds = Vec::new();
    for c in &channels {
        feeds.push(Box::pin(kv.subscribe(c).await.unwrap()));
    }
    let mut twin = Box::pin(kv.subscribe(&channels[7]).await.unwrap());
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut kv.conn())
        .await
        .unwrap();
    let shared = clients
        .lines()
        .find(|l| l.split(' ').any(|field| field == "sub=30"))
        .unwrap_or_else(|| panic!("one connection holds the 30 channels: {clients}"));
    let shared_id = shared
        .split(' ')
        .find_map(|f| f.strip_prefix("id="))
        .unwrap()
        .to_string();
    let publish = async |channel: &str, message: &str| {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(message)
            .query_async(&mut kv.conn())
            .await
            .unwrap();
    };
    let within = async |feed: &mut std::pin::Pin<Box<_>>| {
        tokio::time::timeout(std::time::Duration::from_secs(5), StreamExt::next(feed))
            .await
            .expect("a message")
    };
    publish(&channels[7], "seven").await;
    publish(&channels[3], "three").await;
    assert_eq!(within(&mut feeds[7]).await.as_deref(), Some("seven"));
    assert_eq!(within(&mut twin).await.as_deref(), Some("seven"));
    assert_eq!(
        within(&mut feeds[3]).await.as_deref(),
        Some("three"),
        "only its own channel's"
    );
    // Feeds that end leave their channels to be unsubscribed when the next
    // feed starts.
    feeds.truncate(5);
    let _later = kv.subscribe(&kv.key("hub:later")).await.unwrap();
    let (_, subscribers): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(&channels[20])
        .query_async(&mut kv.conn())
        .await
        .unwrap();
    assert_eq!(subscribers, 0);
    let (_, subscribers): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(&channels[3])
        .query_async(&mut kv.conn())
        .await
        .unwrap();
    assert_eq!(subscribers, 1);

    // The shared connection is lost: every feed on it ends (the GraphQL
    // layer says UNAVAILABLE), and the next feed gets a new connection.
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&shared_id)
        .query_async(&mut kv.conn())
        .await
        .unwrap();
    let mut again_at_once = Box::pin(kv.subscribe(&channels[4]).await.unwrap());
    assert_eq!(within(&mut feeds[3]).await, None, "ended");
    publish(&channels[4], "four").await;
    assert_eq!(within(&mut again_at_once).await.as_deref(), Some("four"));
    let mut again = Box::pin(kv.subscribe(&channels[3]).await.unwrap());
    publish(&channels[3], "back").await;
    assert_eq!(within(&mut again).await.as_deref(), Some("back"));
}
