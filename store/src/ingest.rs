//! Turning normalized inbound messages into stored ones: deduplicated per
//! (channel, external id, workspace), authors upserted, threaded into
//! conversations and ranked. Shared by the ingestion job and bulk import;
//! callers run it inside one tenant transaction per unit of work.

use crate::entities::{author, channel, conversation, message, workspace};
use chrono::Utc;
use rapport_domain::ingest::{ChannelKind, Inbound, Visibility};
use rapport_domain::priority::{self, Breakdown, PriorityInput};
use rapport_domain::sentiment;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr,
    EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, Set, Statement,
};
use serde_json::Value;
use std::collections::HashSet;
use uuid::Uuid;

pub const OPEN: &str = "OPEN";
pub const PENDING_CUSTOMER: &str = "PENDING_CUSTOMER";

/// A stored message's conversation, for live updates after commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Touched {
    pub workspace_id: Uuid,
    pub conversation_id: Uuid,
    pub created: bool,
}

/// Stores a payload's messages, each in every workspace it belongs to.
/// Messages already stored are skipped (one query checks them all).
/// Returns what was stored.
pub async fn store_batch(
    txn: &DatabaseTransaction,
    ch: &channel::Model,
    kind: ChannelKind,
    workspaces: &[workspace::Model],
    msgs: &[Inbound],
) -> Result<Vec<Touched>, DbErr> {
    let ids: Vec<&str> = msgs.iter().map(|m| m.external_id.as_str()).collect();
    let mut seen: HashSet<(String, Uuid)> = HashSet::new();
    for chunk in ids.chunks(500) {
        let rows: Vec<(String, Uuid)> = message::Entity::find()
            .select_only()
            .column(message::Column::ExternalId)
            .column(message::Column::WorkspaceId)
            .filter(message::Column::ChannelId.eq(ch.id))
            .filter(message::Column::ExternalId.is_in(chunk.iter().copied()))
            .into_tuple()
            .all(txn)
            .await?;
        seen.extend(rows);
    }
    let mut out = Vec::new();
    for m in msgs {
        for ws in targets(kind, ch, workspaces, &m.text) {
            // Also catches the same id twice in one payload.
            if seen.insert((m.external_id.clone(), ws.id)) {
                out.push(store_new(txn, ch, kind, ws, m).await?);
            }
        }
    }
    Ok(out)
}

/// Where one message lands: its channel's workspace, or for keyword-routed
/// sources every workspace whose brand keywords it mentions (the channel's
/// own when none does, so nothing is lost).
pub fn targets<'a>(
    kind: ChannelKind,
    ch: &channel::Model,
    workspaces: &'a [workspace::Model],
    text: &str,
) -> Vec<&'a workspace::Model> {
    let own = || {
        workspaces
            .iter()
            .filter(|w| w.id == ch.workspace_id)
            .collect::<Vec<_>>()
    };
    if !kind.routes_by_keywords() {
        return own();
    }
    let lower = text.to_lowercase();
    let matched: Vec<&workspace::Model> = workspaces
        .iter()
        .filter(|w| {
            strings(&w.brand_keywords)
                .iter()
                .any(|k| mentions(&lower, &k.to_lowercase()))
        })
        .collect();
    if matched.is_empty() { own() } else { matched }
}

/// Whole-word containment: "brew" matches "Brew Co" and "#brew" but not "brewery".
pub fn mentions(text: &str, keyword: &str) -> bool {
    if keyword.is_empty() {
        return false;
    }
    text.match_indices(keyword).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + keyword.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

fn strings(v: &Value) -> Vec<String> {
    serde_json::from_value(v.clone()).unwrap_or_default()
}

/// Stores one message in one workspace unless it is there already
/// (`None`: a duplicate).
pub async fn store_one(
    txn: &DatabaseTransaction,
    ch: &channel::Model,
    kind: ChannelKind,
    ws: &workspace::Model,
    m: &Inbound,
) -> Result<Option<Touched>, DbErr> {
    let exists = message::Entity::find()
        .filter(message::Column::ChannelId.eq(ch.id))
        .filter(message::Column::ExternalId.eq(&m.external_id))
        .filter(message::Column::WorkspaceId.eq(ws.id))
        .one(txn)
        .await?;
    if exists.is_some() {
        return Ok(None);
    }
    store_new(txn, ch, kind, ws, m).await.map(Some)
}

/// Stores a message known not to be stored yet.
async fn store_new(
    txn: &DatabaseTransaction,
    ch: &channel::Model,
    kind: ChannelKind,
    ws: &workspace::Model,
    m: &Inbound,
) -> Result<Touched, DbErr> {
    let author = upsert_author(txn, ch.agency_id, kind, m).await?;
    let score = sentiment::compound(&m.text);
    let breakdown = priority::score(&PriorityInput {
        sentiment: score,
        followers: m.author.followers,
        verified: m.author.verified,
        visibility: m.visibility,
        text: &m.text,
        urgency_keywords: &strings(&ws.urgency_keywords),
    });
    let now = Utc::now();
    let (conversation_id, created) =
        thread(txn, ch, kind, ws, author.id, m, score, &breakdown).await?;
    message::Entity::insert(message::ActiveModel {
        id: Set(Uuid::now_v7()),
        agency_id: Set(ch.agency_id),
        workspace_id: Set(ws.id),
        conversation_id: Set(conversation_id),
        channel_id: Set(ch.id),
        author_id: Set(Some(author.id)),
        external_id: Set(m.external_id.clone()),
        in_reply_to_external_id: Set(m.in_reply_to.clone()),
        direction: Set("INBOUND".into()),
        visibility: Set(m.visibility.as_str().into()),
        body: Set(m.text.clone()),
        sentiment: Set(Some(score)),
        published_at: Set(m.published_at),
        received_at: Set(now),
        template_id: Set(None),
        sent_by_membership_id: Set(None),
        delivery_status: Set(None),
        delivery_error: Set(None),
        created_at: Set(now),
    })
    .on_conflict(
        OnConflict::columns([
            message::Column::ChannelId,
            message::Column::ExternalId,
            message::Column::WorkspaceId,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(txn)
    .await?;
    Ok(Touched {
        workspace_id: ws.id,
        conversation_id,
        created,
    })
}

async fn upsert_author(
    txn: &DatabaseTransaction,
    agency_id: Uuid,
    kind: ChannelKind,
    m: &Inbound,
) -> Result<author::Model, DbErr> {
    let now = Utc::now();
    let find = || {
        author::Entity::find()
            .filter(author::Column::AgencyId.eq(agency_id))
            .filter(author::Column::Platform.eq(kind.as_str()))
            .filter(author::Column::ExternalId.eq(&m.author.external_id))
    };
    if let Some(existing) = find().one(txn).await? {
        let followers = i64::try_from(m.author.followers).unwrap_or(i64::MAX);
        let changed = existing.handle != m.author.handle
            || (m.author.name.is_some() && existing.display_name != m.author.name)
            || (followers > 0 && existing.follower_count != followers)
            || existing.verified != m.author.verified;
        if !changed {
            return Ok(existing);
        }
        let mut am = existing.into_active_model();
        am.handle = Set(m.author.handle.clone());
        if m.author.name.is_some() {
            am.display_name = Set(m.author.name.clone());
        }
        // Platforms without counts send 0: keep what we knew.
        if followers > 0 {
            am.follower_count = Set(followers);
        }
        am.verified = Set(m.author.verified);
        am.updated_at = Set(now);
        return am.update(txn).await;
    }
    author::Entity::insert(author::ActiveModel {
        id: Set(Uuid::now_v7()),
        agency_id: Set(agency_id),
        platform: Set(kind.as_str().into()),
        external_id: Set(m.author.external_id.clone()),
        handle: Set(m.author.handle.clone()),
        display_name: Set(m.author.name.clone()),
        follower_count: Set(i64::try_from(m.author.followers).unwrap_or(i64::MAX)),
        verified: Set(m.author.verified),
        created_at: Set(now),
        updated_at: Set(now),
    })
    // A concurrent insert of the same author is not an error: the row
    // comes back either way, in one round trip.
    .on_conflict(
        OnConflict::columns([
            author::Column::AgencyId,
            author::Column::Platform,
            author::Column::ExternalId,
        ])
        .update_column(author::Column::UpdatedAt)
        .to_owned(),
    )
    .exec_with_returning(txn)
    .await
}

/// Finds the conversation a message belongs to, or opens one; updates its
/// ranking. Returns (conversation id, newly created).
#[allow(clippy::too_many_arguments)]
async fn thread(
    txn: &DatabaseTransaction,
    ch: &channel::Model,
    kind: ChannelKind,
    ws: &workspace::Model,
    author_id: Uuid,
    m: &Inbound,
    sentiment: f64,
    breakdown: &Breakdown,
) -> Result<(Uuid, bool), DbErr> {
    // Concurrent jobs may carry messages of one author: serialise them per
    // (workspace, author) so both do not open a conversation. SQLite's
    // write transactions are serialised already.
    if txn.get_database_backend() == DbBackend::Postgres {
        let mut key = [0u8; 8];
        for (i, b) in ws
            .id
            .as_bytes()
            .iter()
            .chain(author_id.as_bytes())
            .enumerate()
        {
            key[i % 8] ^= b.rotate_left((i / 8) as u32);
        }
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock($1)",
            [i64::from_le_bytes(key).into()],
        ))
        .await?;
    }
    // 1. A reply joins the thread of the message it answers (reopening it).
    let mut found: Option<conversation::Model> = None;
    if let Some(parent) = &m.in_reply_to
        && let Some(pm) = message::Entity::find()
            .filter(message::Column::WorkspaceId.eq(ws.id))
            .filter(message::Column::ChannelId.eq(ch.id))
            .filter(message::Column::ExternalId.eq(parent))
            .one(txn)
            .await?
    {
        found = conversation::Entity::find_by_id(pm.conversation_id)
            .one(txn)
            .await?;
    }
    // 2. Otherwise the author's open conversation in this workspace: a
    //    private one on this channel for DMs, any public one for mentions.
    //    Feed entries stand alone: their "author" is often the feed itself.
    if found.is_none() && kind != ChannelKind::Feed {
        let mut q = conversation::Entity::find()
            .filter(conversation::Column::WorkspaceId.eq(ws.id))
            .filter(conversation::Column::AuthorId.eq(author_id))
            .filter(conversation::Column::Status.is_in([OPEN, PENDING_CUSTOMER]))
            .filter(conversation::Column::Visibility.eq(m.visibility.as_str()));
        if m.visibility == Visibility::Private {
            q = q.filter(conversation::Column::ChannelId.eq(ch.id));
        }
        found = q.order_by_desc(conversation::Column::Id).one(txn).await?;
    }
    let now = Utc::now();
    let breakdown_json =
        serde_json::to_value(breakdown).map_err(|e| DbErr::Custom(e.to_string()))?;
    match found {
        Some(c) => {
            let id = c.id;
            let raise = breakdown.score > c.priority_score;
            let mut am = c.clone().into_active_model();
            if raise {
                am.priority = Set(breakdown.level.as_str().into());
                am.priority_score = Set(breakdown.score);
                am.priority_breakdown = Set(breakdown_json);
            }
            am.sentiment = Set(Some(sentiment));
            if m.published_at > c.last_customer_message_at {
                am.last_customer_message_at = Set(m.published_at);
            }
            // The customer spoke: the ball is in the agency's court again.
            if c.status != OPEN {
                am.status = Set(OPEN.into());
                am.resolved_at = Set(None);
            }
            am.updated_at = Set(now);
            am.update(txn).await?;
            Ok((id, false))
        }
        None => {
            let id = Uuid::now_v7();
            conversation::ActiveModel {
                id: Set(id),
                agency_id: Set(ch.agency_id),
                workspace_id: Set(ws.id),
                channel_id: Set(ch.id),
                author_id: Set(author_id),
                parent_conversation_id: Set(None),
                status: Set(OPEN.into()),
                visibility: Set(m.visibility.as_str().into()),
                priority: Set(breakdown.level.as_str().into()),
                priority_score: Set(breakdown.score),
                priority_breakdown: Set(breakdown_json),
                sentiment: Set(Some(sentiment)),
                assignee_membership_id: Set(None),
                sla_policy_id: Set(None),
                sla_targets: Set(None),
                first_response_due_at: Set(None),
                next_response_due_at: Set(None),
                resolution_due_at: Set(None),
                due_at: Set(None),
                first_responded_at: Set(None),
                resolved_at: Set(None),
                last_customer_message_at: Set(m.published_at),
                recovered: Set(false),
                created_at: Set(now),
                updated_at: Set(now),
            }
            .insert(txn)
            .await?;
            Ok((id, true))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mentions;

    #[test]
    fn keywords_match_whole_words() {
        assert!(mentions("love brew co!", "brew co"));
        assert!(mentions("#brew is great", "brew"));
        assert!(!mentions("the brewery is great", "brew"));
        assert!(mentions("café déçu", "café"));
        assert!(!mentions("anything", ""));
    }
}
