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

async fn connect(app: &TestApp, token: &str) -> (Ws, Value) {
    let url = format!("{}/graphql", app.base.replace("http://", "ws://"));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
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

async fn next(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_updates_arrive_live_and_only_for_visible_workspaces() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let other = app.sign_up("Other", "o@other.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let (mut sock, ack) = connect(&app, &s.access).await;
    assert_eq!(ack["type"], "connection_ack");
    sock.send(Message::text(
        json!({ "id": "1", "type": "subscribe", "payload": { "query": "subscription($w: ID!) { conversationUpdated(workspaceId: $w) { event workspaceId conversationId } }", "variables": { "w": ws } } }).to_string(),
    ))
    .await
    .unwrap();
    // Give the subscription a moment to reach Redis, then cause an update.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let msg =
        json!({ "workspaceId": ws, "conversationId": "Q29udmVyc2F0aW9uOng", "event": "created" });
    let ws_uuid = rapport_domain::GlobalId::decode(rapport_domain::Kind::Workspace, &ws).unwrap();
    let _: () = redis::cmd("PUBLISH")
        .arg(app.state.kv.key(&format!("conversations:{ws_uuid}")))
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
    sock2
        .send(Message::text(
            json!({ "id": "1", "type": "subscribe", "payload": { "query": "subscription($w: ID!) { slaAlerts(workspaceId: $w) { kind } }", "variables": { "w": ws } } }).to_string(),
        ))
        .await
        .unwrap();
    let err = next(&mut sock2).await;
    assert_eq!(error_code(&err), "NOT_FOUND", "{err}");

    // Without a valid token: refused.
    let (mut sock3, _) = connect(&app, "not-a-token").await;
    sock3
        .send(Message::text(
            json!({ "id": "1", "type": "subscribe", "payload": { "query": "subscription($w: ID!) { slaAlerts(workspaceId: $w) { kind } }", "variables": { "w": ws } } }).to_string(),
        ))
        .await
        .unwrap();
    let err = next(&mut sock3).await;
    assert_eq!(error_code(&err), "UNAUTHENTICATED", "{err}");
}
