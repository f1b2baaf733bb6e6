//! Templates across workspaces and tenants, the guard's per-workspace
//! settings, and replies refused on closed conversations.

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

const CREATE: &str = "mutation($i: CreateReplyTemplateInput!) { createReplyTemplate(input: $i) { id workspace { id } enabledWorkspaces { id } channelKinds intent } }";
const UPDATE: &str = "mutation($i: UpdateReplyTemplateInput!) { updateReplyTemplate(input: $i) { id name body enabledWorkspaces { id } } }";
const LIST: &str = "query($w: ID!) { replyTemplates(workspaceId: $w) { id name } }";
const PREVIEW: &str =
    "query($i: PreviewReplyInput!) { previewReply(input: $i) { text findings { code } } }";
const SEND: &str = "mutation($i: SendReplyInput!) { sendReply(input: $i) { id } }";

fn names(d: &Value) -> Vec<String> {
    d["replyTemplates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agency_templates_are_enabled_per_workspace_and_stay_inside_their_tenant() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let a = app.create_workspace(&s, "Brew Co").await;
    let b = app.create_workspace(&s, "Bean Bros").await;
    let (agent, _) = app.add_member(&s, "agent@acme.test", "AGENT", None).await;
    import(&app, &s, &a, "a1", "ana", "my latte arrived cold").await;
    import(&app, &s, &b, "b1", "bob", "my beans arrived stale").await;
    let ana = app.conversation_of(&s, &a, "ana").await;
    let bob = app.conversation_of(&s, &b, "bob").await;

    let body = "Hi {{ author.name }}, this is {{ brand.name }}. {{ slot.empathy }}";
    let slots = json!([{ "name": "empathy", "guidance": "show you understood", "minLength": 10 }]);
    // Agency templates are for OWNER/ADMIN; agents write workspace ones.
    let r = app
        .gql(
            Some(&agent.access),
            CREATE,
            json!({ "i": { "name": "House ack", "body": body, "slots": slots, "intent": "ACKNOWLEDGE" } }),
        )
        .await;
    assert_eq!(code(&r), Some("FORBIDDEN"), "{r}");
    let t = app
        .ok(
            Some(&s.access),
            CREATE,
            json!({ "i": { "name": "House ack", "body": body, "slots": slots, "intent": "ACKNOWLEDGE", "enabledWorkspaceIds": [a] } }),
        )
        .await["createReplyTemplate"]
        .clone();
    assert!(t["workspace"].is_null());
    assert_eq!(t["enabledWorkspaces"], json!([{ "id": a }]));
    let tid = t["id"].as_str().unwrap().to_string();
    let own = app
        .ok(
            Some(&agent.access),
            CREATE,
            json!({ "i": { "workspaceId": b, "name": "Bean ack", "body": body, "slots": slots, "intent": "ACKNOWLEDGE" } }),
        )
        .await["createReplyTemplate"]["id"]
        .clone();
    assert!(own.is_string());
    // A workspace template cannot be enabled elsewhere.
    let r = app
        .gql(
            Some(&s.access),
            CREATE,
            json!({ "i": { "workspaceId": b, "name": "X", "body": body, "slots": slots, "intent": "ACKNOWLEDGE", "enabledWorkspaceIds": [a] } }),
        )
        .await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"));
    // A slot named twice, or a minimum out of range, is refused, not
    // merged or clamped.
    for slots in [
        json!([{ "name": "empathy", "guidance": "g" }, { "name": "empathy", "guidance": "h", "minLength": 50 }]),
        json!([{ "name": "empathy", "guidance": "g", "minLength": 5000 }]),
    ] {
        let r = app
            .gql(
                Some(&agent.access),
                CREATE,
                json!({ "i": { "workspaceId": b, "name": "Bad", "body": body, "slots": slots, "intent": "ACKNOWLEDGE" } }),
            )
            .await;
        assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{slots}: {r}");
        assert_eq!(r["errors"][0]["extensions"]["field"], "slots");
    }
    // A template that never shows its slot sends template text only: the
    // guard refuses what it would send.
    let hidden = app
        .ok(
            Some(&agent.access),
            CREATE,
            json!({ "i": { "workspaceId": b, "name": "Hidden", "intent": "ACKNOWLEDGE",
                    "body": "{% if false %}{{ slot.empathy }}{% endif %}Sorry for the trouble, please DM us.",
                    "slots": [{ "name": "empathy", "guidance": "g" }] } }),
        )
        .await["createReplyTemplate"]["id"]
        .clone();
    let p = app
        .ok(
            Some(&agent.access),
            PREVIEW,
            json!({ "i": { "conversationId": bob, "templateId": hidden,
                    "slots": [{ "name": "empathy", "value": "stale beans are a sad start to the morning" }] } }),
        )
        .await;
    let codes: Vec<&str> = p["previewReply"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"SLOT_NOT_IN_REPLY"), "{p}");
    app.ok(
        Some(&agent.access),
        "mutation($i: ArchiveReplyTemplateInput!) { archiveReplyTemplate(input: $i) { id } }",
        json!({ "i": { "id": hidden } }),
    )
    .await;

    assert_eq!(
        names(&app.ok(Some(&agent.access), LIST, json!({ "w": a })).await),
        vec!["House ack"]
    );
    assert_eq!(
        names(&app.ok(Some(&agent.access), LIST, json!({ "w": b })).await),
        vec!["Bean ack"]
    );
    let agency = app
        .ok(
            Some(&s.access),
            "{ agencyReplyTemplates { name } }",
            json!({}),
        )
        .await;
    assert_eq!(
        agency["agencyReplyTemplates"],
        json!([{ "name": "House ack" }])
    );

    // Usable where enabled (rendered in that workspace's voice), not elsewhere.
    let slot = json!([{ "name": "empathy", "value": "a cold latte is a bad start to the day" }]);
    let p = app
        .ok(
            Some(&agent.access),
            PREVIEW,
            json!({ "i": { "conversationId": ana, "templateId": tid, "slots": slot } }),
        )
        .await;
    assert_eq!(
        p["previewReply"]["text"],
        "Hi ana, this is Brew Co. a cold latte is a bad start to the day"
    );
    let r = app
        .gql(
            Some(&agent.access),
            PREVIEW,
            json!({ "i": { "conversationId": bob, "templateId": tid, "slots": slot } }),
        )
        .await;
    assert_eq!(code(&r), Some("NOT_FOUND"), "{r}");

    // Update: the body is checked again; enabling B makes it usable there.
    let r = app
        .gql(
            Some(&s.access),
            UPDATE,
            json!({ "i": { "id": tid, "body": "Hi\n{{ customer.card }} {{ slot.empathy }}" } }),
        )
        .await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"));
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("line 2"),
        "{r}"
    );
    let r = app
        .gql(
            Some(&agent.access),
            UPDATE,
            json!({ "i": { "id": tid, "enabledWorkspaceIds": [a, b] } }),
        )
        .await;
    assert_eq!(
        code(&r),
        Some("FORBIDDEN"),
        "agents do not manage agency templates"
    );
    let u = app
        .ok(
            Some(&s.access),
            UPDATE,
            json!({ "i": { "id": tid, "name": "House acknowledgement", "enabledWorkspaceIds": [a, b] } }),
        )
        .await;
    assert_eq!(u["updateReplyTemplate"]["name"], "House acknowledgement");
    assert_eq!(
        u["updateReplyTemplate"]["enabledWorkspaces"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let p = app
        .ok(
            Some(&agent.access),
            PREVIEW,
            json!({ "i": { "conversationId": bob, "templateId": tid, "slots": slot } }),
        )
        .await;
    assert!(
        p["previewReply"]["text"]
            .as_str()
            .unwrap()
            .contains("this is Bean Bros"),
        "{p}"
    );

    // A template made for X channels is refused on this GENERIC one.
    let xonly = app
        .ok(
            Some(&s.access),
            CREATE,
            json!({ "i": { "workspaceId": a, "name": "X ack", "body": body, "slots": slots, "intent": "ACKNOWLEDGE", "channelKinds": ["X"] } }),
        )
        .await["createReplyTemplate"]
        .clone();
    assert_eq!(xonly["channelKinds"], json!(["X"]));
    let r = app
        .gql(
            Some(&agent.access),
            PREVIEW,
            json!({ "i": { "conversationId": ana, "templateId": xonly["id"], "slots": slot } }),
        )
        .await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{r}");

    // Another agency sees none of it.
    let other = app.sign_up("Rival", "owner@rival.test").await;
    let rw = app.create_workspace(&other, "Rival brand").await;
    import(&app, &other, &rw, "r1", "rita", "my order is late").await;
    let rita = app.conversation_of(&other, &rw, "rita").await;
    for (q, vars) in [
        (UPDATE, json!({ "i": { "id": tid, "name": "stolen" } })),
        (
            "mutation($i: ArchiveReplyTemplateInput!) { archiveReplyTemplate(input: $i) { id } }",
            json!({ "i": { "id": tid } }),
        ),
        (
            PREVIEW,
            json!({ "i": { "conversationId": rita, "templateId": tid, "slots": slot } }),
        ),
        (
            SEND,
            json!({ "i": { "conversationId": ana, "text": "hello from elsewhere", "visibility": "PUBLIC" } }),
        ),
    ] {
        let r = app.gql(Some(&other.access), q, vars).await;
        assert_eq!(code(&r), Some("NOT_FOUND"), "{r}");
    }
    assert!(
        app.ok(
            Some(&other.access),
            "{ agencyReplyTemplates { id } }",
            json!({})
        )
        .await["agencyReplyTemplates"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Archived: no longer listed or usable.
    app.ok(
        Some(&s.access),
        "mutation($i: ArchiveReplyTemplateInput!) { archiveReplyTemplate(input: $i) { archived } }",
        json!({ "i": { "id": tid } }),
    )
    .await;
    assert!(names(&app.ok(Some(&agent.access), LIST, json!({ "w": a })).await).len() == 1);
    let r = app
        .gql(
            Some(&agent.access),
            PREVIEW,
            json!({ "i": { "conversationId": ana, "templateId": tid, "slots": slot } }),
        )
        .await;
    assert_eq!(code(&r), Some("NOT_FOUND"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_follows_the_workspace_settings_and_closed_conversations_take_no_reply() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    for (i, who) in ["ana", "bob", "cem"].iter().enumerate() {
        import(
            &app,
            &s,
            &ws,
            &format!("m{i}"),
            who,
            "my latte arrived cold and late",
        )
        .await;
    }
    let ana = app.conversation_of(&s, &ws, "ana").await;
    let bob = app.conversation_of(&s, &ws, "bob").await;
    let cem = app.conversation_of(&s, &ws, "cem").await;

    let first = "We are sorry the latte arrived cold and late this morning, a fresh one and a refund are waiting at the counter for you today";
    let close = "We are sorry the latte arrived cold and late this morning, a fresh one and a refund are waiting at the counter for you tomorrow";
    app.ok(
        Some(&s.access),
        SEND,
        json!({ "i": { "conversationId": ana, "text": first, "visibility": "PUBLIC" } }),
    )
    .await;
    let r = app
        .gql(
            Some(&s.access),
            SEND,
            json!({ "i": { "conversationId": bob, "text": close, "visibility": "PUBLIC" } }),
        )
        .await;
    assert_eq!(code(&r), Some("CANNED_REPLY"), "at the default 0.8: {r}");

    const SET: &str = "mutation($i: UpdateWorkspaceInput!) { updateWorkspace(input: $i) { similarityThreshold duplicateWindowDays } }";
    for bad in [
        json!({ "id": ws, "similarityThreshold": 0.3 }),
        json!({ "id": ws, "similarityThreshold": 1.5 }),
        json!({ "id": ws, "duplicateWindowDays": 0 }),
        json!({ "id": ws, "duplicateWindowDays": 400 }),
    ] {
        let r = app.gql(Some(&s.access), SET, json!({ "i": bad })).await;
        assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{r}");
    }
    let d = app
        .ok(
            Some(&s.access),
            SET,
            json!({ "i": { "id": ws, "similarityThreshold": 1.0, "duplicateWindowDays": 7 } }),
        )
        .await;
    assert_eq!(
        d["updateWorkspace"],
        json!({ "similarityThreshold": 1.0, "duplicateWindowDays": 7 })
    );
    // Only an exact repeat counts now.
    app.ok(
        Some(&s.access),
        SEND,
        json!({ "i": { "conversationId": bob, "text": close, "visibility": "PUBLIC" } }),
    )
    .await;
    let r = app
        .gql(
            Some(&s.access),
            SEND,
            json!({ "i": { "conversationId": cem, "text": close, "visibility": "PUBLIC" } }),
        )
        .await;
    assert_eq!(code(&r), Some("CANNED_REPLY"), "{r}");

    // A closed conversation takes no reply until it is opened again.
    let set_status =
        "mutation($i: SetConversationStatusInput!) { setConversationStatus(input: $i) { status } }";
    app.ok(
        Some(&s.access),
        set_status,
        json!({ "i": { "conversationId": cem, "status": "CLOSED" } }),
    )
    .await;
    let r = app
        .gql(
            Some(&s.access),
            SEND,
            json!({ "i": { "conversationId": cem, "text": "Cem, your refund is on its way to your card now.", "visibility": "PUBLIC" } }),
        )
        .await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{r}");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("CLOSED")
    );
    app.ok(
        Some(&s.access),
        set_status,
        json!({ "i": { "conversationId": cem, "status": "OPEN" } }),
    )
    .await;
    app.ok(
        Some(&s.access),
        SEND,
        json!({ "i": { "conversationId": cem, "text": "Cem, your refund is on its way to your card now.", "visibility": "PUBLIC" } }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_sees_its_agency_templates_past_the_first_page_of_the_agencys() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let a = app.create_workspace(&s, "Brew Co").await;
    let b = app.create_workspace(&s, "Bean Bros").await;
    let body = "Hi {{ author.name }}. {{ slot.empathy }}";
    let slots = json!([{ "name": "empathy", "guidance": "show you understood" }]);
    let create = |name: String, ws: &str| json!({ "i": { "name": name, "body": body, "slots": slots, "intent": "ACKNOWLEDGE", "enabledWorkspaceIds": [ws] } });
    // More agency templates than one list holds, none of them enabled in
    // `a`, sorted before the one that is.
    for i in 0..501 {
        app.ok(Some(&s.access), CREATE, create(format!("b{i:03}"), &b))
            .await;
    }
    app.ok(Some(&s.access), CREATE, create("z for a".into(), &a))
        .await;
    assert_eq!(
        names(&app.ok(Some(&s.access), LIST, json!({ "w": a })).await),
        vec!["z for a"]
    );
    let listed = names(&app.ok(Some(&s.access), LIST, json!({ "w": b })).await);
    assert_eq!(listed.len(), 500, "one list holds 500");
    assert_eq!((listed[0].as_str(), listed[499].as_str()), ("b000", "b499"));
}

/// A member restricted to one workspace sees the agency templates enabled
/// there even when more than a listing's worth (500) of others, enabled
/// elsewhere, come first by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_member_finds_their_agency_templates_past_the_first_500() {
    use rapport_store::entities::reply_template;
    use sea_orm::{EntityTrait, Set};
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let a = app.create_workspace(&s, "Brew Co").await;
    let b = app.create_workspace(&s, "Bean Bros").await;
    let (agent, _) = app
        .add_member(&s, "agent@acme.test", "AGENT", Some(vec![a.clone()]))
        .await;
    let body = "Hi {{ author.name }}, {{ slot.empathy }}";
    let slots = json!([{ "name": "empathy", "guidance": "show you understood", "minLength": 10 }]);
    app.ok(
        Some(&s.access),
        CREATE,
        json!({ "i": { "name": "zz Brew ack", "body": body, "slots": slots, "intent": "ACKNOWLEDGE", "enabledWorkspaceIds": [a] } }),
    )
    .await;
    let agency =
        rapport_domain::GlobalId::decode(rapport_domain::Kind::Agency, &s.agency_id).unwrap();
    let b_id = rapport_domain::GlobalId::decode(rapport_domain::Kind::Workspace, &b).unwrap();
    let now = chrono::Utc::now();
    let others: Vec<reply_template::ActiveModel> = (0..520)
        .map(|i| reply_template::ActiveModel {
            id: Set(uuid::Uuid::now_v7()),
            agency_id: Set(agency),
            workspace_id: Set(None),
            name: Set(format!("a{i:04} Bean ack")),
            body: Set(body.into()),
            slots: Set(slots.clone()),
            channel_kinds: Set(json!([])),
            enabled_workspace_ids: Set(json!([b_id.to_string()])),
            intent: Set("ACKNOWLEDGE".into()),
            created_at: Set(now),
            updated_at: Set(now),
            archived_at: Set(None),
        })
        .collect();
    for chunk in others.chunks(100) {
        reply_template::Entity::insert_many(chunk.to_vec())
            .exec(&app.state.db)
            .await
            .unwrap();
    }
    let listed = app
        .ok(
            Some(&agent.access),
            "{ agencyReplyTemplates { name } }",
            json!({}),
        )
        .await;
    assert_eq!(
        listed["agencyReplyTemplates"],
        json!([{ "name": "zz Brew ack" }])
    );
    let listed = app.ok(Some(&agent.access), LIST, json!({ "w": a })).await;
    assert_eq!(names(&listed), vec!["zz Brew ack"]);
}
