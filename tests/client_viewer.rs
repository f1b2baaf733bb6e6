//! A client (CLIENT_VIEWER) is read-only: every mutation of the schema but
//! the self-service ones (sign-in, token refresh, sign-out, accepting an
//! invitation, signing up a new agency) is tried with well-typed arguments
//! built from introspection, and each answers FORBIDDEN. A new mutation is
//! covered the day it is added. Reads of their workspace work.

mod common;

use common::*;
use serde_json::{Map, Value, json};

const SELF_SERVICE: &[&str] = &[
    "signUp",
    "login",
    "refresh",
    "refreshToken",
    "logout",
    "acceptInvitation",
    // Their own account, not the agency's data.
    "changePassword",
    "logoutOtherSessions",
];

const INTROSPECT: &str = "{ __schema { mutationType { fields { name args { name type { ...T } } type { ...T } } }
  types { name kind inputFields { name type { ...T } } enumValues { name } } } }
fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } }";

/// The SDL spelling of a type reference.
fn sdl(t: &Value) -> String {
    match t["kind"].as_str().unwrap() {
        "NON_NULL" => format!("{}!", sdl(&t["ofType"])),
        "LIST" => format!("[{}]", sdl(&t["ofType"])),
        _ => t["name"].as_str().unwrap().to_string(),
    }
}

fn named(t: &Value) -> &Value {
    if t["ofType"].is_object() {
        named(&t["ofType"])
    } else {
        t
    }
}

/// A value of type `t` (required fields only), valid as GraphQL.
fn sample(t: &Value, types: &Map<String, Value>, workspace: &str) -> Value {
    match t["kind"].as_str().unwrap() {
        "NON_NULL" => sample(&t["ofType"], types, workspace),
        "LIST" => json!([]),
        "ENUM" => {
            let def = &types[t["name"].as_str().unwrap()];
            def["enumValues"][0]["name"].clone()
        }
        "INPUT_OBJECT" => {
            let def = &types[t["name"].as_str().unwrap()];
            let mut obj = Map::new();
            for f in def["inputFields"].as_array().unwrap() {
                if f["type"]["kind"] == "NON_NULL" {
                    obj.insert(
                        f["name"].as_str().unwrap().into(),
                        sample(&f["type"], types, workspace),
                    );
                }
            }
            Value::Object(obj)
        }
        _ => match t["name"].as_str().unwrap() {
            "ID" => json!(workspace),
            "Int" => json!(1),
            "Float" => json!(0.5),
            "Boolean" => json!(false),
            "DateTime" => json!(chrono::Utc::now().to_rfc3339()),
            _ => json!("x"),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_viewer_is_refused_every_mutation_and_reads_its_workspace() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let (client, _) = app
        .add_member(
            &s,
            "client@brew.test",
            "CLIENT_VIEWER",
            Some(vec![ws.clone()]),
        )
        .await;

    let schema = app.ok(Some(&client.access), INTROSPECT, json!({})).await;
    let types: Map<String, Value> = schema["__schema"]["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_string(), t.clone()))
        .collect();
    let mut tried = 0;
    let mut wrong = Vec::new();
    for m in schema["__schema"]["mutationType"]["fields"]
        .as_array()
        .unwrap()
    {
        let name = m["name"].as_str().unwrap();
        if SELF_SERVICE.contains(&name) {
            continue;
        }
        let mut decls = Vec::new();
        let mut args = Vec::new();
        let mut vars = Map::new();
        for a in m["args"].as_array().unwrap() {
            if a["type"]["kind"] != "NON_NULL" {
                continue;
            }
            let an = a["name"].as_str().unwrap();
            decls.push(format!("${an}: {}", sdl(&a["type"])));
            args.push(format!("{an}: ${an}"));
            vars.insert(an.into(), sample(&a["type"], &types, &ws));
        }
        let ret = named(&m["type"]);
        let selection = if matches!(ret["kind"].as_str(), Some("OBJECT" | "INTERFACE" | "UNION")) {
            " { __typename }"
        } else {
            ""
        };
        let q = format!(
            "mutation{} {{ {name}{}{selection} }}",
            if decls.is_empty() {
                String::new()
            } else {
                format!("({})", decls.join(", "))
            },
            if args.is_empty() {
                String::new()
            } else {
                format!("({})", args.join(", "))
            },
        );
        let r = app.gql(Some(&client.access), &q, Value::Object(vars)).await;
        tried += 1;
        if code(&r) != Some("FORBIDDEN") {
            wrong.push(format!("{name}: {r}"));
        }
    }
    assert!(
        tried >= 30,
        "the sweep covers the schema ({tried} mutations)"
    );
    assert!(
        wrong.is_empty(),
        "not refused as FORBIDDEN:\n{}",
        wrong.join("\n")
    );

    // Reading is allowed: the workspace, its conversations, its report.
    let d = app
        .ok(
            Some(&client.access),
            "query($w: ID!, $f: DateTime!, $t: DateTime!) { workspace(id: $w) { name } conversations(workspaceId: $w) { edges { cursor } }
               workspaceReport(workspaceId: $w, from: $f, to: $t) { total { inbound } } }",
            json!({ "w": ws, "f": "2026-11-01T00:00:00Z", "t": "2026-11-08T00:00:00Z" }),
        )
        .await;
    assert_eq!(d["workspace"]["name"], "Brew Co");
    assert_eq!(d["workspaceReport"]["total"]["inbound"], 0);

    // A conversation's channel shows the client its name and kind, not the
    // agency's addresses (webhook, feed, callback).
    app.import_events(
        &s,
        &ws,
        json!([{ "id": "m1", "text": "my latte arrived cold", "published_at": "2026-12-05T09:00:00Z", "author": { "id": "ana" } }]),
    )
    .await;
    let q = "query($w: ID!) { conversations(workspaceId: $w) { edges { node { channel { kind webhookUrl feedUrl callbackUrl } } } } }";
    let channel_as = async |token: &str| {
        let d = app.ok(Some(token), q, json!({ "w": ws })).await;
        edges(&d["conversations"])[0]["node"]["channel"].clone()
    };
    let agency = channel_as(&s.access).await;
    assert!(agency["webhookUrl"].is_string(), "{agency}");
    let client_sees = channel_as(&client.access).await;
    assert_eq!(
        client_sees,
        json!({ "kind": "GENERIC", "webhookUrl": null, "feedUrl": null, "callbackUrl": null })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_viewer_sees_who_handles_a_conversation_by_name_not_by_e_mail() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let (_, agent) = app.add_member(&s, "sam@acme.test", "AGENT", None).await;
    let (client, _) = app
        .add_member(
            &s,
            "cleo@brew.test",
            "CLIENT_VIEWER",
            Some(vec![ws.clone()]),
        )
        .await;
    app.import_events(
        &s,
        &ws,
        json!([{ "id": "m1", "text": "where is my order?", "published_at": "2026-12-05T09:00:00Z", "author": { "id": "ana" } }]),
    )
    .await;
    let q = |fields: &str| {
        format!(
            "query($w: ID!) {{ conversations(workspaceId: $w) {{ edges {{ node {{ id assignee {{ user {{ {fields} }} }} }} }} }} }}"
        )
    };
    let d = app
        .ok(Some(&s.access), &q("name"), json!({ "w": ws }))
        .await;
    let id = edges(&d["conversations"])[0]["node"]["id"].clone();
    app.ok(
        Some(&s.access),
        "mutation($i: AssignConversationInput!) { assignConversation(input: $i) { id } }",
        json!({ "i": { "conversationId": id, "memberId": agent } }),
    )
    .await;

    let d = app
        .ok(Some(&client.access), &q("name"), json!({ "w": ws }))
        .await;
    assert_eq!(
        edges(&d["conversations"])[0]["node"]["assignee"]["user"]["name"],
        "Member"
    );
    let r = app
        .gql(Some(&client.access), &q("name email"), json!({ "w": ws }))
        .await;
    assert_eq!(code(&r), Some("FORBIDDEN"), "{r}");
    assert!(!r.to_string().contains("sam@acme.test"), "{r}");
    // Staff see it; a client sees their own.
    let d = app
        .ok(Some(&s.access), &q("email"), json!({ "w": ws }))
        .await;
    assert_eq!(
        edges(&d["conversations"])[0]["node"]["assignee"]["user"]["email"],
        "sam@acme.test"
    );
    let me = app
        .ok(Some(&client.access), "{ me { user { email } } }", json!({}))
        .await;
    assert_eq!(me["me"]["user"]["email"], "cleo@brew.test");
}
