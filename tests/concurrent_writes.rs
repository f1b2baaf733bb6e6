//! Writers of one conversation at the same moment (store/src/locks.rs):
//! each waits for the other's commit and computes from the row as
//! committed, so neither undoes the other. A change is held uncommitted in
//! the database while the real ingestion or reply runs; once Rapport's
//! writer is seen waiting for it, it commits. Unlocked, the writer would
//! have read the row from before the change and written over it.
//!
//! PostgreSQL only: SQLite's write transactions run one at a time.

mod common;

use common::*;
use rapport_store::entities::conversation;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, Statement, TransactionTrait,
};
use serde_json::json;

/// Runs `writer` while `change` is held uncommitted; commits the change
/// once a backend of this database waits for a lock, then finishes the
/// writer. A writer that finishes without waiting fails the test with
/// what it returned.
async fn while_uncommitted<T: std::fmt::Debug>(
    app: &TestApp,
    change: &str,
    writer: impl Future<Output = T>,
) -> T {
    let db = &app.state.db;
    let held = db.begin().await.unwrap();
    held.execute_unprepared(change).await.unwrap();
    let mut writer = std::pin::pin!(writer);
    tokio::select! {
        out = &mut writer => panic!("the writer did not wait for the uncommitted change: {out:?}"),
        () = app.eventually("the writer waits for the uncommitted change", async || {
            (lock_waiters(db).await > 0).then_some(())
        }) => {}
    }
    held.commit().await.unwrap();
    writer.await
}

/// Two writers queued behind an uncommitted `change`: `first` is started
/// and seen waiting for it, then `second` must wait as well (for `first`);
/// then the change commits and both finish. Either writer finishing
/// without waiting fails the test with what it returned.
async fn queued_behind<A: std::fmt::Debug, B: std::fmt::Debug>(
    app: &TestApp,
    change: &str,
    first: impl Future<Output = A>,
    second: impl Future<Output = B>,
) -> (A, B) {
    let db = &app.state.db;
    let held = db.begin().await.unwrap();
    held.execute_unprepared(change).await.unwrap();
    let (mut first, mut second) = (std::pin::pin!(first), std::pin::pin!(second));
    tokio::select! {
        out = &mut first => panic!("the first writer did not wait for the uncommitted change: {out:?}"),
        () = app.eventually("the first writer waits", async || {
            (lock_waiters(db).await > 0).then_some(())
        }) => {}
    }
    tokio::select! {
        out = &mut first => panic!("the first writer did not wait for the uncommitted change: {out:?}"),
        out = &mut second => panic!("the second writer did not wait for the first: {out:?}"),
        () = app.eventually("the second writer waits", async || {
            (lock_waiters(db).await > 1).then_some(())
        }) => {}
    }
    held.commit().await.unwrap();
    tokio::join!(first, second)
}

async fn lock_waiters(db: &DatabaseConnection) -> i64 {
    db.query_one_raw(Statement::from_string(
        DbBackend::Postgres,
        "SELECT count(*) AS n FROM pg_stat_activity
          WHERE datname = current_database() AND wait_event_type = 'Lock'",
    ))
    .await
    .unwrap()
    .unwrap()
    .try_get("", "n")
    .unwrap()
}

async fn only_conversation(app: &TestApp) -> conversation::Model {
    let all = conversation::Entity::find()
        .all(&app.state.db)
        .await
        .unwrap();
    assert_eq!(all.len(), 1, "one conversation");
    all.into_iter().next().unwrap()
}

/// A workspace with a promise (first response 60 min, next 30, resolution
/// 480) and one customer's open conversation.
async fn setup(app: &TestApp) -> (Session, String, conversation::Model) {
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let t =
        json!({ "firstResponseMinutes": 60, "nextResponseMinutes": 30, "resolutionMinutes": 480 });
    app.default_policy(&s, &ws, t, json!({})).await;
    app.import_events(
        &s,
        &ws,
        json!([{ "id": "m1", "text": "my latte arrived cold", "published_at": "2026-12-05T09:00:00Z", "author": { "id": "ana" } }]),
    )
    .await;
    let c = only_conversation(app).await;
    assert!(c.first_response_due_at.is_some() && c.next_response_due_at.is_none());
    (s, ws, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_message_ingested_during_a_reply_starts_the_next_response_clock() {
    if !is_postgres() {
        return;
    }
    let app = TestApp::start().await;
    let (s, ws, c) = setup(&app).await;
    // The agent's first reply, as sendReply writes it, not yet committed;
    // meanwhile the customer writes again.
    let reply = format!(
        "UPDATE conversations SET first_responded_at = now(), due_at = resolution_due_at,
           updated_at = now() WHERE id = '{}'",
        c.id
    );
    let again = json!([{ "id": "m2", "text": "still waiting for my latte", "published_at": "2026-12-05T09:05:00Z", "author": { "id": "ana" } }]);
    while_uncommitted(&app, &reply, app.import_events(&s, &ws, again)).await;
    let after = only_conversation(&app).await;
    assert!(
        after.first_responded_at.is_some(),
        "the reply stays answered"
    );
    // Read after the reply: the customer spoke after it, so the next
    // response is due (unlocked, ingestion wrote back the row it read
    // before the reply: no next-response clock, the first response due).
    let next = after
        .next_response_due_at
        .expect("the next-response clock runs");
    assert_eq!(
        after.due_at,
        Some(next.min(after.resolution_due_at.unwrap()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_waits_for_a_concurrent_close_and_is_refused() {
    if !is_postgres() {
        return;
    }
    let app = TestApp::start().await;
    let (s, _, c) = setup(&app).await;
    let close = format!(
        "UPDATE conversations SET status = 'CLOSED', updated_at = now() WHERE id = '{}'",
        c.id
    );
    let id = rapport_domain::GlobalId::encode(rapport_domain::Kind::Conversation, c.id);
    let send = app.gql(
        Some(&s.access),
        "mutation($i: SendReplyInput!) { sendReply(input: $i) { id } }",
        json!({ "i": { "conversationId": id, "visibility": "PUBLIC",
                       "text": "so sorry your latte arrived cold, a fresh one is on us today" } }),
    );
    let r = while_uncommitted(&app, &close, send).await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{r}");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("CLOSED"),
        "{r}"
    );
    let after = only_conversation(&app).await;
    assert_eq!(after.status, "CLOSED");
    assert!(after.first_responded_at.is_none(), "no reply was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_status_changes_at_once_each_see_the_other() {
    if !is_postgres() {
        return;
    }
    let app = TestApp::start().await;
    let (s, _, c) = setup(&app).await;
    // An agent resolves; at the same moment another sets it OPEN again:
    // reopening must restart the resolution clock from the resolved row.
    let resolve = format!(
        "UPDATE conversations SET status = 'RESOLVED', resolved_at = now(),
           resolution_due_at = NULL, due_at = NULL, updated_at = now() WHERE id = '{}'",
        c.id
    );
    let id = rapport_domain::GlobalId::encode(rapport_domain::Kind::Conversation, c.id);
    let reopen = app.ok(
        Some(&s.access),
        "mutation($i: SetConversationStatusInput!) { setConversationStatus(input: $i) { status } }",
        json!({ "i": { "conversationId": id, "status": "OPEN" } }),
    );
    while_uncommitted(&app, &resolve, reopen).await;
    let after = only_conversation(&app).await;
    assert_eq!(after.status, "OPEN");
    assert!(after.resolved_at.is_none());
    let due = after
        .resolution_due_at
        .expect("the reopened conversation's resolution clock runs again");
    assert!(
        due > c.resolution_due_at.unwrap(),
        "restarted at the reopening, not the first opening"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_reads_of_many_conversations_come_in_id_order() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let events: Vec<_> = (0..5)
        .map(|i| json!({ "id": format!("m{i}"), "text": "hello", "published_at": "2026-12-05T09:00:00Z", "author": { "id": format!("a{i}") } }))
        .collect();
    app.import_events(&s, &ws, json!(events)).await;
    let mut ids: Vec<_> = conversation::Entity::find()
        .all(&app.state.db)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids.len(), 5);
    let txn = app.state.db.begin().await.unwrap();
    let mut asked = ids.clone();
    asked.reverse();
    asked.push(ids[0]);
    let got: Vec<_> = rapport_store::locks::conversations(&txn, asked)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    txn.commit().await.unwrap();
    ids.sort();
    assert_eq!(got, ids, "each once, in id order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breach_does_not_escalate_a_conversation_resolved_meanwhile() {
    if !is_postgres() {
        return;
    }
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    app.default_policy(
        &s,
        &ws,
        json!({ "firstResponseMinutes": 60 }),
        json!({ "escalation": { "raisePriorityTo": "URGENT" } }),
    )
    .await;
    app.import_events(
        &s,
        &ws,
        json!([{ "id": "m1", "text": "where is my parcel?", "published_at": "2026-12-05T09:00:00Z", "author": { "id": "ana" } }]),
    )
    .await;
    let c = only_conversation(&app).await;
    assert_ne!(c.priority, "URGENT");
    exec(
        &app.state.db,
        &format!(
            "UPDATE conversations SET first_response_due_at = now() - interval '1 second' WHERE id = '{}'",
            c.id
        ),
    )
    .await;
    let engine = app.sla_engine();
    // The breach is read while an agent's resolution is not yet committed.
    let resolve = format!(
        "UPDATE conversations SET status = 'RESOLVED', resolved_at = now() WHERE id = '{}'",
        c.id
    );
    let fire = async {
        engine.rebuild().await.unwrap();
        engine.tick().await.unwrap();
    };
    while_uncommitted(&app, &resolve, fire).await;
    // The engine reads the conversation locked, so it waited for the
    // resolution and found the deadline no longer running. (Resolving late
    // through the API records the breach itself: store::sla::apply_status.)
    let events = rapport_store::entities::sla_event::Entity::find()
        .all(&app.state.db)
        .await
        .unwrap();
    assert!(
        events.is_empty(),
        "the timer saw the conversation as committed: {events:?}"
    );
    let after = only_conversation(&app).await;
    assert_eq!(after.status, "RESOLVED");
    assert_eq!(after.priority, c.priority, "not escalated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_committing_at_the_deadline_is_met_or_breached_never_both() {
    if !is_postgres() {
        return;
    }
    let app = TestApp::start().await;
    let (_, _, c) = setup(&app).await;
    exec(
        &app.state.db,
        &format!(
            "UPDATE conversations SET first_response_due_at = now() - interval '1 second' WHERE id = '{}'",
            c.id
        ),
    )
    .await;
    let engine = app.sla_engine();
    // A reply in time, committing as the breach timer fires: it records
    // its SLA_MET in its own transaction.
    let replied = format!(
        "UPDATE conversations SET first_responded_at = now() - interval '2 seconds' WHERE id = '{id}';
         INSERT INTO sla_events (id, agency_id, workspace_id, conversation_id, kind, target, cycle,
                                 deadline_at, fired_at, lateness_ms, created_at)
         SELECT gen_random_uuid(), agency_id, workspace_id, id, 'SLA_MET', 'FIRST_RESPONSE', 0,
                first_response_due_at, now(), 0, now() FROM conversations WHERE id = '{id}'",
        id = c.id
    );
    let fire = async {
        engine.rebuild().await.unwrap();
        engine.tick().await.unwrap();
    };
    while_uncommitted(&app, &replied, fire).await;
    let kinds: Vec<String> = rapport_store::entities::sla_event::Entity::find()
        .all(&app.state.db)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.target == "FIRST_RESPONSE")
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["SLA_MET"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_ingested_while_an_agent_reopens_joins_the_reopened_conversation() {
    if !is_postgres() {
        return;
    }
    let app = TestApp::start().await;
    let (s, ws, c) = setup(&app).await;
    let id = rapport_domain::GlobalId::encode(rapport_domain::Kind::Conversation, c.id);
    app.ok(
        Some(&s.access),
        "mutation($c: ID!) { resolveConversation(conversationId: $c) { status } }",
        json!({ "c": id }),
    )
    .await;
    // The reopening is held up by another writer of the row (it already
    // holds the customer's lock); the customer writes again meanwhile.
    let busy = format!(
        "SELECT 1 FROM conversations WHERE id = '{}' FOR UPDATE",
        c.id
    );
    let reopen = app.ok(
        Some(&s.access),
        "mutation($i: SetConversationStatusInput!) { setConversationStatus(input: $i) { status } }",
        json!({ "i": { "conversationId": id, "status": "OPEN" } }),
    );
    let again = json!([{ "id": "m2", "text": "it happened again today", "published_at": "2026-12-05T10:00:00Z", "author": { "id": "ana" } }]);
    queued_behind(&app, &busy, reopen, app.import_events(&s, &ws, again)).await;
    // Unlocked, the payload saw no open conversation and opened a second.
    let after = only_conversation(&app).await;
    assert_eq!(after.status, "OPEN");
    assert_eq!(
        rapport_store::entities::message::Entity::find()
            .all(&app.state.db)
            .await
            .unwrap()
            .iter()
            .filter(|m| m.conversation_id == c.id)
            .count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_message_ingested_while_an_agent_takes_it_offline_joins_the_thread() {
    if !is_postgres() {
        return;
    }
    let app = TestApp::start().await;
    let (s, ws, c) = setup(&app).await;
    let id = rapport_domain::GlobalId::encode(rapport_domain::Kind::Conversation, c.id);
    let busy = format!(
        "SELECT 1 FROM conversations WHERE id = '{}' FOR UPDATE",
        c.id
    );
    let offline = app.ok(
        Some(&s.access),
        "mutation($i: TakeOfflineInput!) { takeOffline(input: $i) { privateConversation { id } } }",
        json!({ "i": { "conversationId": id,
                       "text": "Ana, sorry your latte arrived cold. Please message us privately with your order number and we will sort it today." } }),
    );
    let dm = json!([{ "id": "d1", "text": "order 4471", "visibility": "private", "published_at": "2026-12-05T09:10:00Z", "author": { "id": "ana" } }]);
    let (d, ()) = queued_behind(&app, &busy, offline, app.import_events(&s, &ws, dm)).await;
    let thread = d["takeOffline"]["privateConversation"]["id"].clone();
    let private: Vec<_> = conversation::Entity::find()
        .all(&app.state.db)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.visibility == "PRIVATE")
        .collect();
    assert_eq!(private.len(), 1, "one private conversation: {private:?}");
    assert_eq!(private[0].parent_conversation_id, Some(c.id));
    assert_eq!(
        thread,
        json!(rapport_domain::GlobalId::encode(
            rapport_domain::Kind::Conversation,
            private[0].id
        ))
    );
    let dm = rapport_store::entities::message::Entity::find()
        .all(&app.state.db)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.external_id == "d1")
        .unwrap();
    assert_eq!(
        dm.conversation_id, private[0].id,
        "the DM joined the thread"
    );
}

/// A reply and the message it answers, by two customers, in payloads
/// stored at the same moment: each holds only its own author's lock, and
/// neither sees the other uncommitted. The message locks make the second
/// wait for the first, which it then sees: one conversation, not two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_stored_while_its_parent_is_being_stored_joins_its_conversation() {
    use rapport_domain::ingest::{ChannelKind, generic};
    use rapport_store::entities::workspace;
    if !is_postgres() {
        return;
    }
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let ws_id = rapport_domain::GlobalId::decode(rapport_domain::Kind::Workspace, &ws).unwrap();
    let db = &app.state.db;
    let wsm = workspace::Entity::find_by_id(ws_id)
        .one(db)
        .await
        .unwrap()
        .unwrap();
    let ch = rapport_store::import::import_channel(db, &wsm)
        .await
        .unwrap();
    let parent = generic::parse(&json!({ "id": "t1", "text": "my latte arrived cold", "published_at": "2026-12-05T09:00:00Z", "author": { "id": "ana" } }))
        .unwrap()
        .remove(0);
    // Ana's message, stored but not committed; meanwhile Bo's reply to it.
    let held = rapport_store::tenancy::begin_for_agency(db, wsm.agency_id)
        .await
        .unwrap();
    rapport_store::ingest::store_batch(&held, &ch, ChannelKind::Generic, &[(&wsm, &parent)])
        .await
        .unwrap();
    let reply = app.import_events(
        &s,
        &ws,
        json!([{ "id": "t2", "in_reply_to": "t1", "text": "same here, twice this week", "published_at": "2026-12-05T09:01:00Z", "author": { "id": "bo" } }]),
    );
    let mut reply = std::pin::pin!(reply);
    tokio::select! {
        () = &mut reply => panic!("the reply was stored without waiting for its parent"),
        () = app.eventually("the reply waits for its parent", async || {
            (lock_waiters(db).await > 0).then_some(())
        }) => {}
    }
    held.commit().await.unwrap();
    reply.await;
    only_conversation(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_identical_replies_sent_at_once_on_two_conversations_are_checked_one_after_the_other() {
    if !is_postgres() {
        return;
    }
    let app = TestApp::start().await;
    let (s, ws, first) = setup(&app).await;
    app.import_events(
        &s,
        &ws,
        json!([{ "id": "m2", "text": "my flat white arrived cold too", "published_at": "2026-12-05T09:05:00Z", "author": { "id": "ben" } }]),
    )
    .await;
    let second = conversation::Entity::find()
        .all(&app.state.db)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.id != first.id)
        .expect("ben's conversation");
    let send = |c: &conversation::Model| {
        let id = rapport_domain::GlobalId::encode(rapport_domain::Kind::Conversation, c.id);
        app.gql(
            Some(&s.access),
            "mutation($i: SendReplyInput!) { sendReply(input: $i) { id } }",
            json!({ "i": { "conversationId": id, "visibility": "PUBLIC",
                           "text": "so sorry your coffee arrived cold, a fresh one is on us at the counter today" } }),
        )
    };
    // Another reply of the workspace is being checked: both sends must
    // wait for it, and the second for the first, so that the second sees
    // the first's reply committed.
    let busy = format!(
        "SELECT pg_advisory_xact_lock(hashtextextended('{}', 0))",
        rapport_store::locks::replies_key(first.workspace_id)
    );
    let (a, b) = queued_behind(&app, &busy, send(&first), send(&second)).await;
    let canned = [&a, &b]
        .iter()
        .filter(|r| code(r) == Some("CANNED_REPLY"))
        .count();
    let sent = [&a, &b]
        .iter()
        .filter(|r| r["errors"].is_null() && !r["data"]["sendReply"]["id"].is_null())
        .count();
    assert_eq!((sent, canned), (1, 1), "{a}\n{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_changing_a_member_an_owner_is_promoting_sees_the_promotion() {
    if !is_postgres() {
        return;
    }
    let app = TestApp::start().await;
    let owner = app.sign_up("Acme", "owner@acme.test").await;
    let (admin, _) = app
        .add_member(&owner, "admin@acme.test", "ADMIN", None)
        .await;
    let (_, x) = app.add_member(&owner, "x@acme.test", "AGENT", None).await;
    let x_uuid = rapport_domain::GlobalId::decode(rapport_domain::Kind::Member, &x).unwrap();
    // The owner's promotion of X, not yet committed, while the admin (who
    // may change an AGENT, not an OWNER) makes X a read-only client.
    let promote = format!("UPDATE memberships SET role = 'OWNER' WHERE id = '{x_uuid}'");
    let demote = app.gql(
        Some(&admin.access),
        "mutation($i: UpdateMemberRoleInput!) { updateMemberRole(input: $i) { role } }",
        json!({ "i": { "memberId": x, "role": "AGENT" } }),
    );
    let r = while_uncommitted(&app, &promote, demote).await;
    assert_eq!(code(&r), Some("FORBIDDEN"), "{r}");
    let role: String = app
        .state
        .db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("SELECT role FROM memberships WHERE id = '{x_uuid}'"),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "role")
        .unwrap();
    assert_eq!(role, "OWNER", "the promotion stands");
}

/// A reply naming no brand, to a message being stored in a brand's
/// workspace by keyword routing, through the worker (a webhook) or
/// `importMessages`: it waits for its parent and follows it there, into
/// its conversation. Routed before the parent committed, it used to land
/// in the channel's own workspace, a conversation of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_routed_while_its_parent_is_being_stored_follows_it_to_its_brand() {
    use rapport_domain::ingest::{ChannelKind, generic};
    use rapport_domain::{GlobalId, Kind};
    use rapport_store::entities::{channel, message, workspace};
    if !is_postgres() {
        return;
    }
    let app = TestApp::start().await.with_worker().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let home = app.create_workspace(&s, "Inbox").await;
    let brew = app.create_brand(&s, "Brew Co", "brew co").await;
    let (ch_id, url) = app
        .connect_generic(&s, &home, "alerts", "generic-secret")
        .await;
    let db = &app.state.db;
    let ch = channel::Entity::find_by_id(GlobalId::decode(Kind::Channel, &ch_id).unwrap())
        .one(db)
        .await
        .unwrap()
        .unwrap();
    let brew_id = GlobalId::decode(Kind::Workspace, &brew).unwrap();
    let brew_ws = workspace::Entity::find_by_id(brew_id)
        .one(db)
        .await
        .unwrap()
        .unwrap();
    let event = |id: &str, reply_to: Option<&str>, text: &str, author: &str| {
        json!({ "id": id, "in_reply_to": reply_to, "text": text,
                "published_at": "2026-12-05T09:00:00Z", "author": { "id": author } })
    };
    let in_brew = async |id: &str| {
        message::Entity::find()
            .all(db)
            .await
            .unwrap()
            .into_iter()
            .find(|m| m.external_id == id)
            .map(|m| (m.workspace_id, m.conversation_id))
    };

    for (n, through_worker) in [(1, true), (2, false)] {
        let (p, r) = (format!("p{n}"), format!("r{n}"));
        // The parent, routed to Brew Co, stored but not committed.
        let parent = generic::parse(&event(&p, None, "my brew co latte arrived cold", "ana"))
            .unwrap()
            .remove(0);
        let held = rapport_store::tenancy::begin_for_agency(db, ch.agency_id)
            .await
            .unwrap();
        rapport_store::ingest::store_batch(
            &held,
            &ch,
            ChannelKind::Generic,
            &[(&brew_ws, &parent)],
        )
        .await
        .unwrap();
        let reply = event(&r, Some(&p), "same here, twice this week", "bo");
        let sent = async {
            if through_worker {
                app.deliver_generic(&url, json!([reply])).await;
                // Accepted; stored only once the parent is.
                app.eventually("the worker stores the reply", async || {
                    in_brew(&r).await.map(|_| ())
                })
                .await;
            } else {
                app.ok(
                    Some(&s.access),
                    "mutation($i: ImportMessagesInput!) { importMessages(input: $i) { accepted } }",
                    json!({ "i": { "workspaceId": home, "channelId": ch_id, "events": [reply] } }),
                )
                .await;
            }
        };
        let mut sent = std::pin::pin!(sent);
        tokio::select! {
            () = &mut sent => panic!("the reply was stored without waiting for its parent"),
            () = app.eventually("the reply waits for its parent", async || {
                (lock_waiters(db).await > 0).then_some(())
            }) => {}
        }
        held.commit().await.unwrap();
        sent.await;
        let (parent_at, reply_at) = (in_brew(&p).await.unwrap(), in_brew(&r).await.unwrap());
        assert_eq!(
            reply_at.0, brew_id,
            "the reply follows its parent to Brew Co"
        );
        assert_eq!(reply_at, parent_at, "into its conversation");
    }
}

/// `takeOffline` linking the customer's private thread, older than the
/// public conversation (a lower id), locks both in id order, as the SLA
/// engine does: while another writer holds the thread, the public
/// conversation is still free. (Locked public first, the writer taking
/// both in order would deadlock with it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_offline_locks_an_older_private_thread_in_id_order() {
    if !is_postgres() {
        return;
    }
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    app.import_events(
        &s,
        &ws,
        json!([{ "id": "d0", "text": "hello?", "visibility": "private", "published_at": "2026-12-05T08:00:00Z", "author": { "id": "ana" } }]),
    )
    .await;
    app.import_events(
        &s,
        &ws,
        json!([{ "id": "m1", "text": "my latte arrived cold", "published_at": "2026-12-05T09:00:00Z", "author": { "id": "ana" } }]),
    )
    .await;
    let all = conversation::Entity::find()
        .all(&app.state.db)
        .await
        .unwrap();
    let thread = all.iter().find(|c| c.visibility == "PRIVATE").unwrap().id;
    let public = all.iter().find(|c| c.visibility == "PUBLIC").unwrap().id;
    assert!(thread < public, "the thread is older");

    let db = &app.state.db;
    let held = db.begin().await.unwrap();
    held.execute_unprepared(&format!(
        "SELECT 1 FROM conversations WHERE id = '{thread}' FOR UPDATE"
    ))
    .await
    .unwrap();
    let id = rapport_domain::GlobalId::encode(rapport_domain::Kind::Conversation, public);
    let mut offline = std::pin::pin!(app.ok(
        Some(&s.access),
        "mutation($i: TakeOfflineInput!) { takeOffline(input: $i) { privateConversation { id } } }",
        json!({ "i": { "conversationId": id,
                       "text": "Ana, sorry your latte arrived cold. Please message us privately with your order number and we will sort it today." } }),
    ));
    tokio::select! {
        out = &mut offline => panic!("takeOffline did not wait for the thread: {out:?}"),
        () = app.eventually("takeOffline waits for the thread", async || {
            (lock_waiters(db).await > 0).then_some(())
        }) => {}
    }
    // The public conversation is not held while takeOffline waits.
    held.execute_unprepared(&format!(
        "SELECT 1 FROM conversations WHERE id = '{public}' FOR UPDATE NOWAIT"
    ))
    .await
    .expect("the public conversation is free: locked in id order");
    held.commit().await.unwrap();
    let d = offline.await;
    assert_eq!(
        d["takeOffline"]["privateConversation"]["id"],
        json!(rapport_domain::GlobalId::encode(
            rapport_domain::Kind::Conversation,
            thread
        ))
    );
}

/// Two refreshes with one token at the same moment (two tabs of one
/// client): one gets the new pair, and the other, finding the token spent
/// meanwhile, is refused without ending the session (within the grace of
/// a replay); with no grace it is a replay and ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_refreshes_with_one_token_at_once() {
    if !is_postgres() {
        return;
    }
    for grace in [10, 0] {
        let app = TestApp::start_with(|s| {
            s.refresh_reuse_grace = std::time::Duration::from_secs(grace);
        })
        .await;
        let s = app.sign_up("Acme", "owner@acme.test").await;
        let refresh = "mutation($t: String!) { refreshToken(token: $t) { refreshToken } }";
        let busy = "SELECT 1 FROM sessions FOR UPDATE";
        let (a, b) = queued_behind(
            &app,
            busy,
            app.gql(None, refresh, json!({ "t": s.refresh })),
            app.gql(None, refresh, json!({ "t": s.refresh })),
        )
        .await;
        let won: Vec<&serde_json::Value> = [&a, &b]
            .into_iter()
            .filter(|r| r["errors"].is_null())
            .collect();
        assert_eq!(won.len(), 1, "one wins: {a} {b}");
        let lost = if a["errors"].is_null() { &b } else { &a };
        assert_eq!(code(lost), Some("UNAUTHENTICATED"), "{lost}");
        let new = won[0]["data"]["refreshToken"]["refreshToken"].clone();
        let r = app.gql(None, refresh, json!({ "t": new })).await;
        if grace > 0 {
            assert!(r["errors"].is_null(), "the session lives on: {r}");
        } else {
            assert_eq!(code(&r), Some("UNAUTHENTICATED"), "the session ended: {r}");
        }
    }
}

/// A policy update waiting while another member deletes the policy reads
/// it again once it holds the workspace's policies: NOT_FOUND, not the
/// deleted policy made the default (and the real default cleared).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_update_racing_its_deletion_finds_it_gone() {
    use rapport_store::entities::sla_policy;
    use sea_orm::{ColumnTrait, QueryFilter};
    if !is_postgres() {
        return;
    }
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let t = json!({ "firstResponseMinutes": 60 });
    app.default_policy(&s, &ws, t.clone(), json!({})).await;
    let targets = json!({ "urgent": t, "high": t, "normal": t, "low": t });
    let other = app
        .ok(
            Some(&s.access),
            "mutation($i: CreateSlaPolicyInput!) { createSlaPolicy(input: $i) { id } }",
            json!({ "i": { "workspaceId": ws, "name": "VIP", "targets": targets } }),
        )
        .await["createSlaPolicy"]["id"]
        .clone();
    let other_id =
        rapport_domain::GlobalId::decode(rapport_domain::Kind::SlaPolicy, other.as_str().unwrap())
            .unwrap();
    let ws_id = rapport_domain::GlobalId::decode(rapport_domain::Kind::Workspace, &ws).unwrap();
    // Another member's deletion, holding the workspace's policies.
    let delete = format!(
        "SELECT 1 FROM workspaces WHERE id = '{ws_id}' FOR UPDATE; \
         UPDATE sla_policies SET deleted_at = now(), is_default = false WHERE id = '{other_id}'"
    );
    let r = while_uncommitted(
        &app,
        &delete,
        app.gql(
            Some(&s.access),
            "mutation($i: UpdateSlaPolicyInput!) { updateSlaPolicy(input: $i) { id } }",
            json!({ "i": { "id": other, "isDefault": true } }),
        ),
    )
    .await;
    assert_eq!(code(&r), Some("NOT_FOUND"), "{r}");
    let defaults = sla_policy::Entity::find()
        .filter(sla_policy::Column::IsDefault.eq(true))
        .filter(sla_policy::Column::DeletedAt.is_null())
        .all(&app.state.db)
        .await
        .unwrap();
    assert_eq!(defaults.len(), 1, "the real default stays: {defaults:?}");
}

/// A conversation reopening (the customer writing again through
/// `importMessages`, or an agent's `setConversationStatus`) while its
/// assignee's membership is being changed (held as `updateMemberRole` and
/// `removeMember` hold it) neither waits for the change (which may want
/// this conversation next: a deadlock) nor keeps an assignee the change
/// may take out of reach: it reopens unassigned. Read unlocked, the
/// membership looked unchanged and the assignee stayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_reopening_while_its_assignee_is_being_changed_is_unassigned() {
    if !is_postgres() {
        return;
    }
    use rapport_domain::{GlobalId, Kind};
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let (_, agent) = app.add_member(&s, "agent@acme.test", "AGENT", None).await;
    let agent_uuid = GlobalId::decode(Kind::Member, &agent).unwrap();
    let (ana, bob) = app.resolved_while_assigned(&s, &ws, &agent).await;
    let held = app.state.db.begin().await.unwrap();
    held.execute_unprepared(&format!(
        "SELECT 1 FROM memberships WHERE id = '{agent_uuid}' FOR NO KEY UPDATE"
    ))
    .await
    .unwrap();
    let mut again = mention("a2", "ana", "still cold, still waiting");
    again[0]["in_reply_to"] = json!("a1");
    let reopen = async {
        app.import_events(&s, &ws, again).await;
        app.ok(
            Some(&s.access),
            "mutation($i: SetConversationStatusInput!) { setConversationStatus(input: $i) { status } }",
            json!({ "i": { "conversationId": bob, "status": "OPEN" } }),
        )
        .await
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), reopen)
        .await
        .expect("the reopenings wait for the membership being changed");
    for (who, id) in [("ana", &ana), ("bob", &bob)] {
        let c = conversation::Entity::find_by_id(GlobalId::decode(Kind::Conversation, id).unwrap())
            .one(&app.state.db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.status, "OPEN", "{who}");
        assert_eq!(c.assignee_membership_id, None, "{who}");
    }
    held.rollback().await.unwrap();
}
