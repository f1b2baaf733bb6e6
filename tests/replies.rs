//! Replies that are never canned: templates checked at save, the guard's
//! refusals through sendReply, overrides, and the SLA clocks replies stop.

mod common;

use common::*;
use serde_json::{Value, json};

async fn import(app: &TestApp, s: &Session, ws: &str, id: &str, author: &str, text: &str) {
    app.import_events(
        s,
        ws,
        json!([{ "id": id, "text": text, "published_at": "2026-11-20T09:00:00Z",
                 "author": { "id": author, "handle": author, "name": author } }]),
    )
    .await;
}

async fn conversation_of(app: &TestApp, s: &Session, ws: &str, handle: &str) -> Value {
    let d = app
        .ok(
            Some(&s.access),
            "query($w: ID!) { conversations(workspaceId: $w, orderBy: NEWEST) { edges { node { id author { handle } sla { firstResponseDue nextResponseDue status } } } } }",
            json!({ "w": ws }),
        )
        .await;
    edges(&d["conversations"])
        .into_iter()
        .map(|e| e["node"].clone())
        .find(|n| n["author"]["handle"] == handle)
        .unwrap()
}

const SEND: &str = "mutation($i: SendReplyInput!) { sendReply(input: $i) { id direction body } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_refuses_canned_replies_and_replies_stop_the_clocks() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app
        .ok(
            Some(&s.access),
            "mutation { createWorkspace(input: { name: \"Brew Co\", timezone: \"UTC\", bannedPhrases: [\"per our policy\"] }) { id } }",
            json!({}),
        )
        .await["createWorkspace"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.default_policy(
        &s,
        &ws,
        json!({ "firstResponseMinutes": 60, "nextResponseMinutes": 30 }),
        json!({}),
    )
    .await;

    // Templates: refused with line and reason, or saved.
    let create = "mutation($i: CreateReplyTemplateInput!) { createReplyTemplate(input: $i) { id slots { name minLength } } }";
    let r = app
        .gql(Some(&s.access), create, json!({ "i": { "workspaceId": ws, "name": "Canned", "body": "Thank you for your message.", "slots": [], "intent": "ACKNOWLEDGE" } }))
        .await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"));
    assert!(
        r["errors"][0]["message"].as_str().unwrap().contains("slot"),
        "{r}"
    );
    let r = app
        .gql(Some(&s.access), create, json!({ "i": { "workspaceId": ws, "name": "Bad", "body": "Hi\n{{ customer.card }} {{ slot.e }}", "slots": [{ "name": "e", "guidance": "g" }], "intent": "ACKNOWLEDGE" } }))
        .await;
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("line 2"),
        "{r}"
    );
    // A filter that does not exist fails only when rendered: tried at save.
    let r = app
        .gql(Some(&s.access), create, json!({ "i": { "workspaceId": ws, "name": "Typo", "body": "Hi {{ slot.e|capitalise }}", "slots": [{ "name": "e", "guidance": "g" }], "intent": "ACKNOWLEDGE" } }))
        .await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{r}");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("cannot be rendered"),
        "{r}"
    );
    let tpl = app
        .ok(
            Some(&s.access),
            create,
            json!({ "i": { "workspaceId": ws, "name": "Ack", "body": "Hi {{ author.name }}, {{ slot.empathy }} — {{ agent.first_name }}",
                     "slots": [{ "name": "empathy", "guidance": "Show you understood", "minLength": 20 }], "intent": "ACKNOWLEDGE" } }),
        )
        .await["createReplyTemplate"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    import(&app, &s, &ws, "m1", "ana", "my latte arrived cold").await;
    import(&app, &s, &ws, "m2", "bob", "my latte arrived cold too").await;
    let ana = conversation_of(&app, &s, &ws, "ana").await;
    let bob = conversation_of(&app, &s, &ws, "bob").await;

    // Preview: rendered text and findings.
    let p = app
        .ok(
            Some(&s.access),
            "query($i: PreviewReplyInput!) { previewReply(input: $i) { text characterCount characterLimit findings { code blocking } } }",
            json!({ "i": { "conversationId": ana["id"], "templateId": tpl, "slots": [{ "name": "empathy", "value": "so sorry" }] } }),
        )
        .await;
    assert_eq!(p["previewReply"]["text"], "Hi ana, so sorry — Owner");
    assert_eq!(p["previewReply"]["characterLimit"], 8000);
    assert_eq!(p["previewReply"]["findings"][0]["code"], "SHORT_SLOT");
    let r = app
        .gql(Some(&s.access), SEND, json!({ "i": { "conversationId": ana["id"], "templateId": tpl, "slots": [{ "name": "empathy", "value": "so sorry" }], "visibility": "PUBLIC" } }))
        .await;
    assert_eq!(code(&r), Some("CANNED_REPLY"));
    assert_eq!(
        r["errors"][0]["extensions"]["findings"][0]["code"],
        "SHORT_SLOT"
    );

    // A real reply goes out and stops the first-response clock (met).
    let good = "so sorry your latte arrived cold, a fresh one is on us today";
    let sent = app
        .ok(Some(&s.access), SEND, json!({ "i": { "conversationId": ana["id"], "templateId": tpl, "slots": [{ "name": "empathy", "value": good }], "visibility": "PUBLIC" } }))
        .await;
    assert_eq!(sent["sendReply"]["direction"], "OUTBOUND");
    let ev = app
        .ok(
            Some(&s.access),
            "query($w: ID!) { slaEvents(workspaceId: $w) { edges { node { kind target } } } }",
            json!({ "w": ws }),
        )
        .await;
    assert_eq!(
        edges(&ev["slaEvents"])[0]["node"],
        json!({ "kind": "SLA_MET", "target": "FIRST_RESPONSE" })
    );
    assert_eq!(
        conversation_of(&app, &s, &ws, "ana").await["sla"]["status"],
        "MET"
    );

    // The same words to Bob, differing only in his name: canned.
    let r = app
        .gql(Some(&s.access), SEND, json!({ "i": { "conversationId": bob["id"], "templateId": tpl, "slots": [{ "name": "empathy", "value": good }], "visibility": "PUBLIC" } }))
        .await;
    assert_eq!(code(&r), Some("CANNED_REPLY"), "{r}");
    assert_eq!(
        r["errors"][0]["extensions"]["findings"][0]["code"],
        "NEAR_DUPLICATE"
    );
    // Banned phrases, whatever the case and spacing.
    let r = app
        .gql(Some(&s.access), SEND, json!({ "i": { "conversationId": bob["id"], "text": "Bob, PER OUR   policy we replace cold drinks", "visibility": "PUBLIC" } }))
        .await;
    assert_eq!(
        r["errors"][0]["extensions"]["findings"][0]["code"],
        "BANNED_PHRASE"
    );
    // Agents cannot override (refused with the reasons, as without one);
    // owners can, with a reason of 10 to 1,000 characters, audited.
    let (agent, _) = app.add_member(&s, "agent@acme.test", "AGENT", None).await;
    let r = app
        .gql(Some(&agent.access), SEND, json!({ "i": { "conversationId": bob["id"], "text": "Bob, per our policy we replace cold drinks", "visibility": "PUBLIC", "overrideReason": "legal asked for this exact wording" } }))
        .await;
    assert_eq!(code(&r), Some("CANNED_REPLY"), "{r}");
    assert_eq!(
        r["errors"][0]["extensions"]["findings"][0]["code"],
        "BANNED_PHRASE"
    );
    // Too long, or too short in characters (five accented letters are ten
    // bytes).
    for reason in ["x".repeat(1001), "ééééé".to_string()] {
        let r = app
            .gql(Some(&s.access), SEND, json!({ "i": { "conversationId": bob["id"], "text": "Bob, per our policy we replace cold drinks", "visibility": "PUBLIC", "overrideReason": reason } }))
            .await;
        assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{r}");
        assert_eq!(r["errors"][0]["extensions"]["field"], "overrideReason");
    }
    app.ok(
        Some(&s.access),
        SEND,
        json!({ "i": { "conversationId": bob["id"], "text": "Bob, per our policy we replace cold drinks", "visibility": "PUBLIC", "overrideReason": "legal asked for this exact wording" } }),
    )
    .await;
    let log = app
        .ok(
            Some(&s.access),
            "{ auditLog(first: 5) { edges { node { action details } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        edges(&log["auditLog"])[0]["node"]["action"],
        "sendReplyOverride"
    );

    // Ana writes again after the reply: the next-response clock starts.
    import(
        &app,
        &s,
        &ws,
        "m3",
        "ana",
        "thanks, but the new one was cold as well",
    )
    .await;
    let again = conversation_of(&app, &s, &ws, "ana").await;
    assert!(again["sla"]["nextResponseDue"].is_string(), "{again}");
    assert_eq!(again["sla"]["status"], "ON_TRACK");

    // Client viewers cannot reply.
    let (viewer, _) = app
        .add_member(&s, "v@client.test", "CLIENT_VIEWER", Some(vec![ws.clone()]))
        .await;
    let r = app.gql(Some(&viewer.access), SEND, json!({ "i": { "conversationId": bob["id"], "text": "hello there friend", "visibility": "PUBLIC" } })).await;
    assert_eq!(code(&r), Some("FORBIDDEN"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assignment_resolution_and_recovery() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let other = app.sign_up("Other", "o@other.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let ws2 = app.create_workspace(&s, "Bean Bros").await;
    let (_, agent) = app
        .add_member(&s, "agent@acme.test", "AGENT", Some(vec![ws.clone()]))
        .await;
    let (_, elsewhere) = app
        .add_member(&s, "b@acme.test", "AGENT", Some(vec![ws2]))
        .await;
    let (_, outsider) = app.add_member(&other, "x@other.test", "AGENT", None).await;
    import(
        &app,
        &s,
        &ws,
        "m1",
        "ana",
        "worst service ever, I hate this, so disappointed",
    )
    .await;
    let c = conversation_of(&app, &s, &ws, "ana").await;
    let assign = "mutation($i: AssignConversationInput!) { assignConversation(input: $i) { assignee { id } } }";
    let r = app
        .gql(
            Some(&s.access),
            assign,
            json!({ "i": { "conversationId": c["id"], "memberId": outsider } }),
        )
        .await;
    assert_eq!(code(&r), Some("NOT_FOUND"));
    let r = app
        .gql(
            Some(&s.access),
            assign,
            json!({ "i": { "conversationId": c["id"], "memberId": elsewhere } }),
        )
        .await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"));
    let d = app
        .ok(
            Some(&s.access),
            assign,
            json!({ "i": { "conversationId": c["id"], "memberId": agent } }),
        )
        .await;
    assert_eq!(d["assignConversation"]["assignee"]["id"], agent.as_str());

    // The unhappy customer comes back happy: recovered.
    import(
        &app,
        &s,
        &ws,
        "m2",
        "ana",
        "it arrived, great service, thank you so much!",
    )
    .await;
    let d = app
        .ok(
            Some(&s.access),
            "query($id: ID!) { conversation(id: $id) { recovered sentiment } }",
            json!({ "id": c["id"] }),
        )
        .await;
    assert_eq!(
        d["conversation"],
        json!({ "recovered": true, "sentiment": "POSITIVE" })
    );
    let d = app
        .ok(
            Some(&s.access),
            "mutation($id: ID!) { resolveConversation(conversationId: $id) { status } }",
            json!({ "id": c["id"] }),
        )
        .await;
    assert_eq!(d["resolveConversation"]["status"], "RESOLVED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_offline_adopts_the_customers_open_private_conversation() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    // The customer wrote in private first, then in public.
    app.import_events(
        &s,
        &ws,
        json!([
            { "id": "d1", "text": "hello, anyone there?", "visibility": "private", "published_at": "2026-11-20T08:00:00Z",
              "author": { "id": "ana", "handle": "ana", "name": "Ana" } },
            { "id": "p1", "text": "my latte arrived cold", "published_at": "2026-11-20T09:00:00Z",
              "author": { "id": "ana", "handle": "ana", "name": "Ana" } },
        ]),
    )
    .await;
    let d = app
        .ok(
            Some(&s.access),
            "query($w: ID!) { conversations(workspaceId: $w, orderBy: NEWEST) { edges { node { id visibility } } } }",
            json!({ "w": ws }),
        )
        .await;
    let of = |vis: &str| {
        edges(&d["conversations"])
            .into_iter()
            .find(|e| e["node"]["visibility"] == vis)
            .unwrap()["node"]["id"]
            .clone()
    };
    let (dm, public) = (of("PRIVATE"), of("PUBLIC"));
    const OFFLINE: &str = "mutation($i: TakeOfflineInput!) { takeOffline(input: $i) { privateConversation { id status parentConversation { id } } } }";
    let offline = json!({ "i": { "conversationId": public,
        "text": "Ana, sorry your latte arrived cold. Please message us privately with your order number and we will sort it today." } });
    let d = app.ok(Some(&s.access), OFFLINE, offline).await;
    // Their private messages join that conversation, so it is the thread:
    // linked, not a second private conversation beside it.
    let thread = &d["takeOffline"]["privateConversation"];
    assert_eq!(thread["id"], dm, "{d}");
    assert_eq!(thread["parentConversation"]["id"], public);
    assert_eq!(thread["status"], "OPEN", "the customer's message waits");
    let d = app
        .ok(
            Some(&s.access),
            "query($c: ID!) { conversation(id: $c) { privateThreads { id } } }",
            json!({ "c": public }),
        )
        .await;
    assert_eq!(d["conversation"]["privateThreads"], json!([{ "id": dm }]));
    // Their next private message joins it.
    app.import_events(
        &s,
        &ws,
        json!([{ "id": "d2", "text": "order 4471", "visibility": "private", "published_at": "2026-11-20T09:30:00Z",
                 "author": { "id": "ana", "handle": "ana", "name": "Ana" } }]),
    )
    .await;
    let d = app
        .ok(
            Some(&s.access),
            "query($c: ID!) { conversation(id: $c) { messages { edges { node { externalId } } } } }",
            json!({ "c": dm }),
        )
        .await;
    let ids: Vec<_> = edges(&d["conversation"]["messages"])
        .into_iter()
        .map(|e| e["node"]["externalId"].clone())
        .collect();
    assert_eq!(ids, [json!("d1"), json!("d2")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_reply_answers_the_latest_message_even_when_an_older_one_arrived_last() {
    use rapport_store::entities::message;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    // Bob's answer to Ann arrives first; Ann's question joins its
    // conversation afterwards, stored last but published first.
    app.import_events(
        &s,
        &ws,
        json!([{ "id": "b1", "text": "same here, my oat latte was cold as well", "in_reply_to": "a1",
                 "published_at": "2026-11-20T09:05:00Z", "author": { "id": "bob", "handle": "bob" } }]),
    )
    .await;
    import(&app, &s, &ws, "a1", "ann", "my latte arrived cold").await;
    let conv = conversation_of(&app, &s, &ws, "bob").await;
    let d = app
        .ok(
            Some(&s.access),
            "query($c: ID!) { conversation(id: $c) { messages { edges { node { externalId } } } } }",
            json!({ "c": conv["id"] }),
        )
        .await;
    assert_eq!(
        edges(&d["conversation"]["messages"]).len(),
        2,
        "Ann's question joined Bob's answer: {d}"
    );
    app.ok(
        Some(&s.access),
        SEND,
        json!({ "i": { "conversationId": conv["id"], "visibility": "PUBLIC",
                "text": "Sorry to both of you, we are checking the steamer at that shop this morning." } }),
    )
    .await;
    let sent = message::Entity::find()
        .filter(message::Column::Direction.eq("OUTBOUND"))
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sent.in_reply_to_external_id.as_deref(), Some("b1"));
}

/// Reply ids and publish times are set before the transaction commits, by
/// whichever API process sends: a reply may commit after a later one was
/// indexed here. It is still found by the duplicate check (before, the
/// index read only ids above the newest it held, and missed it for an hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_committed_after_a_later_one_still_counts_as_sent() {
    use rapport_store::entities::message;
    use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, Set};
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    for (id, who) in [("m1", "ana"), ("m2", "bob"), ("m3", "cy")] {
        import(&app, &s, &ws, id, who, "my latte arrived cold").await;
    }
    let conv = async |who: &str| conversation_of(&app, &s, &ws, who).await["id"].clone();
    app.ok(
        Some(&s.access),
        SEND,
        json!({ "i": { "conversationId": conv("ana").await, "visibility": "PUBLIC",
                "text": "Ana, a cold latte is not what you paid for; a fresh one is on us today." } }),
    )
    .await;
    // Any check (here a preview) brings Ana's reply into the index.
    app.ok(
        Some(&s.access),
        "query($i: PreviewReplyInput!) { previewReply(input: $i) { text } }",
        json!({ "i": { "conversationId": conv("cy").await, "text": "Cy, checking on your order now." } }),
    )
    .await;
    // Another process's reply to Bob, stamped 30 s before Ana's but
    // committed only now.
    let ana_reply = message::Entity::find()
        .filter(message::Column::Direction.eq("OUTBOUND"))
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    let at = ana_reply.published_at - chrono::Duration::seconds(30);
    let id = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        at.timestamp() as u64,
        0,
    ));
    let bob = rapport_domain::GlobalId::decode(
        rapport_domain::Kind::Conversation,
        conv("bob").await.as_str().unwrap(),
    )
    .unwrap();
    let text = "We are sorry the latte was cold; show this message at the counter for a new one.";
    let mut late = ana_reply.clone().into_active_model();
    late.id = Set(id);
    late.external_id = Set(format!("rapport:{id}"));
    late.conversation_id = Set(bob);
    late.body = Set(text.into());
    late.masked_body = Set(Some(rapport_domain::reply::guard::mask(text, &[])));
    late.published_at = Set(at);
    late.created_at = Set(at);
    late.insert(&app.state.db).await.unwrap();

    let r = app
        .gql(
            Some(&s.access),
            SEND,
            json!({ "i": { "conversationId": conv("cy").await, "visibility": "PUBLIC",
                    "text": text } }),
        )
        .await;
    assert_eq!(code(&r), Some("CANNED_REPLY"), "{r}");
    assert_eq!(
        r["errors"][0]["extensions"]["findings"][0]["code"],
        "NEAR_DUPLICATE"
    );
}

/// Agents greet customers by first name: the same reply to "Ana Lopez"
/// and to "Bob Smith", each greeted by first name, is a repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_reply_greeting_another_customer_by_first_name_is_canned() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    for (id, handle, name) in [("m1", "ana_l", "Ana Lopez"), ("m2", "bsmith", "Bob Smith")] {
        app.import_events(
            &s,
            &ws,
            json!([{ "id": id, "text": "my latte arrived cold", "published_at": "2026-11-20T09:00:00Z",
                     "author": { "id": handle, "handle": handle, "name": name } }]),
        )
        .await;
    }
    let ana = conversation_of(&app, &s, &ws, "ana_l").await;
    let bob = conversation_of(&app, &s, &ws, "bsmith").await;
    let reply =
        |name: &str| format!("Hi {name}, so sorry your latte arrived cold, a fresh one is on us");
    app.ok(Some(&s.access), SEND, json!({ "i": { "conversationId": ana["id"], "text": reply("Ana"), "visibility": "PUBLIC" } }))
        .await;
    let r = app
        .gql(Some(&s.access), SEND, json!({ "i": { "conversationId": bob["id"], "text": reply("Bob"), "visibility": "PUBLIC" } }))
        .await;
    assert_eq!(code(&r), Some("CANNED_REPLY"), "{r}");
    assert_eq!(
        r["errors"][0]["extensions"]["findings"][0]["code"],
        "NEAR_DUPLICATE"
    );
}
