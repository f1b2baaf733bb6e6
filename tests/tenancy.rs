//! Two agencies on one server: every ID of one is invisible and
//! unchangeable for the other, through every query and mutation, and
//! answers exactly like an ID that does not exist. Restricted members see
//! only their workspaces.

mod common;

use common::*;
use rapport_domain::{GlobalId, Kind};
use serde_json::{Value, json};

struct Probe {
    what: &'static str,
    query: &'static str,
    vars: Value,
}

/// Every query and mutation that takes an ID, aimed at `ids` of the other agency.
fn probes(ws: &str, member: &str, agency: &str) -> Vec<Probe> {
    vec![
        Probe {
            what: "workspace",
            query: "query($id: ID!) { workspace(id: $id) { id name } }",
            vars: json!({ "id": ws }),
        },
        Probe {
            what: "updateWorkspace",
            query: "mutation($i: UpdateWorkspaceInput!) { updateWorkspace(input: $i) { id } }",
            vars: json!({ "i": { "id": ws, "name": "pwned" } }),
        },
        Probe {
            what: "archiveWorkspace",
            query: "mutation($i: ArchiveWorkspaceInput!) { archiveWorkspace(input: $i) { id } }",
            vars: json!({ "i": { "id": ws } }),
        },
        Probe {
            what: "auditLog(workspaceId)",
            query: "query($id: ID!) { auditLog(workspaceId: $id) { edges { node { id } } } }",
            vars: json!({ "id": ws }),
        },
        Probe {
            what: "inviteMember(workspaceIds)",
            query: "mutation($i: InviteMemberInput!) { inviteMember(input: $i) { invitationToken } }",
            vars: json!({ "i": { "email": "spy@evil.test", "name": "Spy", "role": "AGENT", "workspaceIds": [ws] } }),
        },
        Probe {
            what: "member",
            query: "query($id: ID!) { member(id: $id) { id } }",
            vars: json!({ "id": member }),
        },
        Probe {
            what: "updateMemberRole",
            query: "mutation($i: UpdateMemberRoleInput!) { updateMemberRole(input: $i) { id } }",
            vars: json!({ "i": { "memberId": member, "role": "AGENT" } }),
        },
        Probe {
            what: "updateMemberRole(workspaceIds)",
            query: "mutation($i: UpdateMemberRoleInput!) { updateMemberRole(input: $i) { id } }",
            vars: json!({ "i": { "memberId": member, "role": "AGENT", "workspaceIds": [ws] } }),
        },
        Probe {
            what: "removeMember",
            query: "mutation($i: RemoveMemberInput!) { removeMember(input: $i) { removedMemberId } }",
            vars: json!({ "i": { "memberId": member } }),
        },
        Probe {
            what: "workspace(agency id)",
            query: "query($id: ID!) { workspace(id: $id) { id } }",
            vars: json!({ "id": agency }),
        },
    ]
}

async fn ids_of(app: &TestApp, s: &Session) -> (Vec<String>, Vec<String>, Vec<String>) {
    let d = app
        .ok(
            Some(&s.access),
            "{ workspaces(first: 100, includeArchived: true) { edges { node { id } } }
               members(first: 100) { edges { node { id user { id } } } }
               auditLog(first: 100) { edges { node { id workspaceId } } } }",
            json!({}),
        )
        .await;
    let pick = |k: &str| -> Vec<String> {
        edges(&d[k])
            .iter()
            .map(|e| e["node"]["id"].as_str().unwrap().to_string())
            .collect()
    };
    (pick("workspaces"), pick("members"), pick("auditLog"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_agencys_ids_are_invisible_and_unchangeable() {
    let app = TestApp::start().await;
    let a = app.sign_up("Agency A", "owner@a.test").await;
    let b = app.sign_up("Agency B", "owner@b.test").await;
    let ws_a = app.create_workspace(&a, "A brand").await;
    let ws_b = app.create_workspace(&b, "B brand").await;
    let (_, member_b) = app.add_member(&b, "agent@b.test", "AGENT", None).await;
    let (before_ws, before_members, before_audit) = ids_of(&app, &b).await;
    assert!(before_ws.contains(&ws_b) && before_members.contains(&member_b));

    // What a genuinely unknown ID of each kind answers.
    let ghost_ws = GlobalId::encode(Kind::Workspace, uuid::Uuid::now_v7());
    let ghost_member = GlobalId::encode(Kind::Member, uuid::Uuid::now_v7());
    let unknown: Vec<Value> = {
        let mut out = Vec::new();
        for p in probes(&ghost_ws, &ghost_member, &b.agency_id) {
            out.push(app.gql(Some(&a.access), p.query, p.vars).await);
        }
        out
    };

    for (p, ghost) in probes(&ws_b, &member_b, &b.agency_id)
        .into_iter()
        .zip(unknown)
    {
        let r = app.gql(Some(&a.access), p.query, p.vars).await;
        assert_eq!(code(&r), Some("NOT_FOUND"), "{}: {r}", p.what);
        assert_eq!(
            r["errors"][0]["message"], ghost["errors"][0]["message"],
            "{}",
            p.what
        );
        assert_eq!(r["data"], ghost["data"], "{}", p.what);
    }

    // B's audit entries never show up in A's log, and A's lists hold only A's.
    let (ws_seen, members_seen, audit_seen) = ids_of(&app, &a).await;
    assert_eq!(ws_seen, vec![ws_a.clone()]);
    assert!(members_seen.iter().all(|m| !before_members.contains(m)));
    assert!(audit_seen.iter().all(|e| !before_audit.contains(e)));
    assert!(!audit_seen.is_empty());

    // Nothing of B changed, and B's audit log records nothing A attempted.
    let (after_ws, after_members, after_audit) = ids_of(&app, &b).await;
    assert_eq!(
        (after_ws, after_members, after_audit),
        (before_ws, before_members, before_audit)
    );
    let name = app
        .ok(
            Some(&b.access),
            "query($id: ID!) { workspace(id: $id) { name archived } }",
            json!({ "id": ws_b }),
        )
        .await;
    assert_eq!(
        name["workspace"],
        json!({ "name": "B brand", "archived": false })
    );

    // Signing in to another agency is refused too.
    let r = app
        .gql(
            None,
            "mutation($i: LoginInput!) { login(input: $i) { accessToken } }",
            json!({ "i": { "email": "owner@a.test", "password": PASSWORD, "agencyId": b.agency_id } }),
        )
        .await;
    assert_eq!(code(&r), Some("UNAUTHENTICATED"));

    // A token of A, re-signed claiming B's agency, does not get in either.
    let forged = {
        use base64::Engine;
        let payload = a.access.split('.').nth(1).unwrap();
        let mut claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        let b_uuid = GlobalId::decode(Kind::Agency, &b.agency_id).unwrap();
        claims["agency"] = json!(b_uuid);
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
        )
        .unwrap()
    };
    let r = app
        .gql(
            Some(&forged),
            "{ workspaces { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&r), Some("UNAUTHENTICATED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_members_see_only_their_workspaces() {
    let app = TestApp::start().await;
    let owner = app.sign_up("Agency", "owner@a.test").await;
    let w1 = app.create_workspace(&owner, "One").await;
    let w2 = app.create_workspace(&owner, "Two").await;
    let (agent, _) = app
        .add_member(&owner, "agent@a.test", "AGENT", Some(vec![w1.clone()]))
        .await;
    let (viewer, _) = app
        .add_member(
            &owner,
            "client@brand.test",
            "CLIENT_VIEWER",
            Some(vec![w2.clone()]),
        )
        .await;

    let (_, both) = app
        .add_member(
            &owner,
            "lead@a.test",
            "AGENT",
            Some(vec![w1.clone(), w2.clone()]),
        )
        .await;
    // A colleague's restriction lists only the workspaces the viewer sees.
    let d = app
        .ok(
            Some(&agent.access),
            "{ members(first: 50) { edges { node { id restrictedToWorkspaces { id } } } } }",
            json!({}),
        )
        .await;
    let lead = edges(&d["members"])
        .into_iter()
        .find(|e| e["node"]["id"] == both.as_str())
        .unwrap();
    assert_eq!(
        lead["node"]["restrictedToWorkspaces"],
        json!([{ "id": w1 }])
    );
    // Nor does the agent learn who works on the other brand only: its
    // client viewer is not listed, not found by ID, left out of teams
    // (the owner sees them all).
    let (_, other_client) = app
        .add_member(
            &owner,
            "jane@brandtwo.test",
            "CLIENT_VIEWER",
            Some(vec![w2.clone()]),
        )
        .await;
    let listed = async |token: &str| -> Vec<String> {
        let d = app
            .ok(
                Some(token),
                "{ members(first: 50) { edges { node { id } } } }",
                json!({}),
            )
            .await;
        edges(&d["members"])
            .iter()
            .map(|e| e["node"]["id"].as_str().unwrap().to_string())
            .collect()
    };
    let seen_by_agent = listed(&agent.access).await;
    assert!(seen_by_agent.contains(&both), "shares a workspace");
    assert_eq!(
        seen_by_agent.len(),
        3,
        "the owner, the agent, the lead: {seen_by_agent:?}"
    );
    assert!(!seen_by_agent.contains(&other_client));
    assert_eq!(listed(&owner.access).await.len(), 5);
    let one = "query($id: ID!) { member(id: $id) { id } }";
    let r = app
        .gql(Some(&agent.access), one, json!({ "id": other_client }))
        .await;
    assert_eq!(code(&r), Some("NOT_FOUND"));
    app.ok(Some(&agent.access), one, json!({ "id": both }))
        .await;
    app.ok(
        Some(&owner.access),
        "mutation($i: CreateTeamInput!) { createTeam(input: $i) { id } }",
        json!({ "i": { "name": "Everyone", "memberIds": [both, other_client] } }),
    )
    .await;
    let teams = "{ teams { members { id } } }";
    assert_eq!(
        app.ok(Some(&agent.access), teams, json!({})).await["teams"],
        json!([{ "members": [{ "id": both }] }])
    );
    assert_eq!(
        app.ok(Some(&owner.access), teams, json!({})).await["teams"][0]["members"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Assigning to a hidden member: NOT_FOUND, not why they cannot take it.
    app.import_events(
        &owner,
        &w1,
        json!([{ "id": "m1", "text": "my latte was cold", "published_at": "2026-12-05T09:00:00Z", "author": { "id": "ana" } }]),
    )
    .await;
    let conv = app
        .ok(
            Some(&agent.access),
            "query($w: ID!) { conversations(workspaceId: $w, first: 1) { edges { node { id } } } }",
            json!({ "w": w1 }),
        )
        .await["conversations"]["edges"][0]["node"]["id"]
        .clone();
    let assign = "mutation($i: AssignConversationInput!) { assignConversation(input: $i) { id } }";
    let r = app
        .gql(
            Some(&agent.access),
            assign,
            json!({ "i": { "conversationId": conv, "memberId": other_client } }),
        )
        .await;
    assert_eq!(code(&r), Some("NOT_FOUND"), "{r}");
    let r = app
        .gql(
            Some(&owner.access),
            assign,
            json!({ "i": { "conversationId": conv, "memberId": other_client } }),
        )
        .await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{r}");

    let list = "{ workspaces { edges { node { id } } } }";
    let ids = |d: &Value| -> Vec<String> {
        edges(&d["workspaces"])
            .iter()
            .map(|e| e["node"]["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ids(&app.ok(Some(&agent.access), list, json!({})).await),
        vec![w1.clone()]
    );
    assert_eq!(
        ids(&app.ok(Some(&viewer.access), list, json!({})).await),
        vec![w2.clone()]
    );
    assert_eq!(
        ids(&app.ok(Some(&owner.access), list, json!({})).await),
        vec![w1.clone(), w2.clone()]
    );

    // Agency templates enabled only in a workspace the agent cannot see
    // speak for a brand they may not see: not listed to them.
    for (name, enabled) in [("For one", &w1), ("For two", &w2)] {
        app.ok(
            Some(&owner.access),
            "mutation($i: CreateReplyTemplateInput!) { createReplyTemplate(input: $i) { id } }",
            json!({ "i": { "name": name, "intent": "ACKNOWLEDGE", "enabledWorkspaceIds": [enabled],
                    "body": "Thanks for writing. {{ slot.empathy }}", "slots": [{ "name": "empathy", "guidance": "g" }] } }),
        )
        .await;
    }
    let templates = "{ agencyReplyTemplates { name } }";
    assert_eq!(
        app.ok(Some(&agent.access), templates, json!({})).await["agencyReplyTemplates"],
        json!([{ "name": "For one" }])
    );
    assert_eq!(
        app.ok(Some(&owner.access), templates, json!({})).await["agencyReplyTemplates"],
        json!([{ "name": "For one" }, { "name": "For two" }])
    );

    let get = "query($id: ID!) { workspace(id: $id) { id } }";
    let r = app.gql(Some(&agent.access), get, json!({ "id": w2 })).await;
    assert_eq!(code(&r), Some("NOT_FOUND"));
    let r = app
        .gql(Some(&viewer.access), get, json!({ "id": w1 }))
        .await;
    assert_eq!(code(&r), Some("NOT_FOUND"));

    // Client viewers only read; agents do not manage.
    for token in [&viewer.access, &agent.access] {
        let r = app
            .gql(
                Some(token),
                "mutation($i: CreateWorkspaceInput!) { createWorkspace(input: $i) { id } }",
                json!({ "i": { "name": "X", "timezone": "UTC" } }),
            )
            .await;
        assert_eq!(code(&r), Some("FORBIDDEN"));
        let r = app
            .gql(Some(token), "{ auditLog { edges { cursor } } }", json!({}))
            .await;
        assert_eq!(code(&r), Some("FORBIDDEN"));
    }
    let r = app
        .gql(
            Some(&viewer.access),
            "{ members { edges { cursor } } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&r), Some("FORBIDDEN"));
}

/// Conversations stay with someone who can answer them: narrowing a
/// member's workspaces, or making them a client viewer, unassigns their
/// open conversations they can no longer see; someone who has not accepted
/// their invitation cannot be assigned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assignments_follow_what_a_member_can_still_answer() {
    let app = TestApp::start().await;
    let owner = app.sign_up("Agency", "owner@a.test").await;
    let w1 = app.create_workspace(&owner, "One").await;
    let w2 = app.create_workspace(&owner, "Two").await;
    let (_, agent) = app.add_member(&owner, "agent@a.test", "AGENT", None).await;
    let conversation_in = async |ws: &str| {
        app.import_events(&owner, ws, json!([{ "id": "m1", "text": "my order is late", "published_at": "2026-11-20T09:00:00Z", "author": { "id": "ana" } }]))
            .await;
        app.ok(
            Some(&owner.access),
            "query($w: ID!) { conversations(workspaceId: $w) { edges { node { id } } } }",
            json!({ "w": ws }),
        )
        .await["conversations"]["edges"][0]["node"]["id"]
            .clone()
    };
    let (c1, c2) = (conversation_in(&w1).await, conversation_in(&w2).await);
    let assign = "mutation($i: AssignConversationInput!) { assignConversation(input: $i) { id } }";
    for c in [&c1, &c2] {
        app.ok(
            Some(&owner.access),
            assign,
            json!({ "i": { "conversationId": c, "memberId": agent } }),
        )
        .await;
    }
    let assignee = async |c: &Value| {
        app.ok(
            Some(&owner.access),
            "query($c: ID!) { conversation(id: $c) { assignee { id } } }",
            json!({ "c": c }),
        )
        .await["conversation"]["assignee"]["id"]
            .clone()
    };
    let role = "mutation($i: UpdateMemberRoleInput!) { updateMemberRole(input: $i) { role } }";
    app.ok(
        Some(&owner.access),
        role,
        json!({ "i": { "memberId": agent, "role": "AGENT", "workspaceIds": [w1] } }),
    )
    .await;
    assert_eq!(assignee(&c1).await, json!(agent));
    assert_eq!(assignee(&c2).await, Value::Null, "out of their reach now");
    app.ok(
        Some(&owner.access),
        role,
        json!({ "i": { "memberId": agent, "role": "CLIENT_VIEWER", "workspaceIds": [w1] } }),
    )
    .await;
    assert_eq!(
        assignee(&c1).await,
        Value::Null,
        "client viewers answer nothing"
    );

    let pending = app
        .ok(
            Some(&owner.access),
            "mutation($i: InviteMemberInput!) { inviteMember(input: $i) { member { id } } }",
            json!({ "i": { "email": "later@a.test", "name": "Later", "role": "AGENT" } }),
        )
        .await["inviteMember"]["member"]["id"]
        .clone();
    let r = app
        .gql(
            Some(&owner.access),
            assign,
            json!({ "i": { "conversationId": c1, "memberId": pending } }),
        )
        .await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{r}");
}

/// A conversation resolved while assigned keeps its assignee (reports
/// count who handled it); when it reopens, by the customer writing again
/// or by an agent, an assignee who can no longer reach its workspace
/// (restricted away since) is taken off it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_conversation_loses_an_assignee_who_can_no_longer_reach_it() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let w1 = app.create_workspace(&s, "Brew Co").await;
    let w2 = app.create_workspace(&s, "Bean Bros").await;
    let (_, agent) = app.add_member(&s, "agent@acme.test", "AGENT", None).await;
    let (_, bob) = app.resolved_while_assigned(&s, &w1, &agent).await;
    let listed = async || {
        let d = app
            .ok(
                Some(&s.access),
                "query($w: ID!) { conversations(workspaceId: $w) { edges { node { id status author { handle } assignee { id } } } } }",
                json!({ "w": w1 }),
            )
            .await;
        edges(&d["conversations"])
            .into_iter()
            .map(|e| {
                (
                    e["node"]["author"]["handle"].as_str().unwrap().to_string(),
                    e["node"].clone(),
                )
            })
            .collect::<std::collections::HashMap<_, _>>()
    };
    app.ok(
        Some(&s.access),
        "mutation($i: UpdateMemberRoleInput!) { updateMemberRole(input: $i) { role } }",
        json!({ "i": { "memberId": agent, "role": "AGENT", "workspaceIds": [w2] } }),
    )
    .await;
    let resolved = listed().await;
    assert_eq!(
        resolved["ana"]["assignee"]["id"],
        json!(agent),
        "kept while resolved"
    );
    // The customer answers again; an agent reopens the other.
    let mut again = mention("a2", "ana", "still cold, still waiting");
    again[0]["in_reply_to"] = json!("a1");
    app.import_events(&s, &w1, again).await;
    app.ok(
        Some(&s.access),
        "mutation($i: SetConversationStatusInput!) { setConversationStatus(input: $i) { status } }",
        json!({ "i": { "conversationId": bob, "status": "OPEN" } }),
    )
    .await;
    let after = listed().await;
    for who in ["ana", "bob"] {
        assert_eq!(after[who]["status"], "OPEN", "{who}");
        assert_eq!(after[who]["assignee"], Value::Null, "{who}");
    }
}
