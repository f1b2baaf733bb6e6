//! The ingestion job: a raw event becomes deduplicated messages from
//! upserted authors, threaded into conversations and ranked. All of one raw
//! event's effects commit in one transaction together with marking it
//! processed, so a crash at any point means a clean retry: at-least-once
//! delivery, exactly-once effect.

use crate::registry::Permanent;
use anyhow::Context;
use chrono::Utc;
use rapport_domain::ingest::{self, ChannelKind, Inbound, Visibility};
use rapport_domain::priority::{self, Breakdown, PriorityInput};
use rapport_domain::sentiment;
use rapport_domain::{GlobalId, Kind};
use rapport_store::Kv;
use rapport_store::entities::{author, channel, conversation, message, raw_event, workspace};
use rapport_store::raw_events::{FAILED, PROCESSED};
use rapport_store::tenancy::begin_for_agency;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DatabaseTransaction, EntityTrait,
    IntoActiveModel, QueryFilter, QueryOrder, Set,
};
use serde_json::{Value, json};
use uuid::Uuid;

pub const OPEN: &str = "OPEN";
pub const PENDING_CUSTOMER: &str = "PENDING_CUSTOMER";

#[derive(Clone)]
pub struct Ingestor {
    pub db: DatabaseConnection,
    pub kv: Kv,
}

/// What changed, for live updates after commit.
struct Touched {
    workspace_id: Uuid,
    conversation_id: Uuid,
    created: bool,
}

fn raw_id(payload: &Value) -> anyhow::Result<Uuid> {
    payload
        .get("raw_event_id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| Permanent("job has no raw_event_id".into()).into())
}

impl Ingestor {
    pub async fn handle(&self, payload: Value) -> anyhow::Result<()> {
        let id = raw_id(&payload)?;
        let raw = raw_event::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or_else(|| Permanent(format!("raw event {id} does not exist")))?;
        if raw.status != rapport_store::raw_events::PENDING {
            return Ok(()); // processed (or dead) already: a redelivery
        }
        let ch = channel::Entity::find_by_id(raw.channel_id)
            .one(&self.db)
            .await?
            .ok_or_else(|| Permanent("channel of the raw event is gone".into()))?;
        let kind = ChannelKind::parse(&ch.kind).map_err(|e| Permanent(e.to_string()))?;
        let inbound = match ingest::parse(kind, &raw.body, &ch.external_account_id, raw.created_at)
        {
            Ok(m) => m,
            Err(e) => {
                // Retrying cannot fix a payload: it is a dead letter now.
                self.mark_failed(raw.id, &e.to_string()).await?;
                metrics::counter!("rapport_ingest_unparseable_total").increment(1);
                return Ok(());
            }
        };
        let txn = begin_for_agency(&self.db, raw.agency_id).await?;
        let workspaces = workspace::Entity::find()
            .filter(workspace::Column::AgencyId.eq(raw.agency_id))
            .filter(workspace::Column::ArchivedAt.is_null())
            .all(&txn)
            .await?;
        let mut touched = Vec::new();
        for m in &inbound {
            for ws in targets(kind, &ch, &workspaces, &m.text) {
                if let Some(t) = store_one(&txn, &ch, kind, ws, m).await? {
                    touched.push(t);
                }
            }
        }
        // Conditional: of two workers racing on one event, one commits.
        let done = raw_event::Entity::update_many()
            .col_expr(raw_event::Column::Status, Expr::value(PROCESSED))
            .col_expr(raw_event::Column::ProcessedAt, Expr::value(Utc::now()))
            .filter(raw_event::Column::Id.eq(raw.id))
            .filter(raw_event::Column::Status.eq(rapport_store::raw_events::PENDING))
            .exec(&txn)
            .await?;
        if done.rows_affected != 1 {
            return Ok(()); // dropped: rolls back; someone else did it
        }
        txn.commit().await.context("committing an ingested event")?;
        metrics::counter!("rapport_messages_ingested_total").increment(touched.len() as u64);
        self.publish(&touched).await;
        Ok(())
    }

    /// Marks a raw event as a dead letter the agency can see and retry.
    pub async fn mark_failed(&self, id: Uuid, error: &str) -> anyhow::Result<()> {
        raw_event::Entity::update_many()
            .col_expr(raw_event::Column::Status, Expr::value(FAILED))
            .col_expr(
                raw_event::Column::Error,
                Expr::value(error.chars().take(2000).collect::<String>()),
            )
            .filter(raw_event::Column::Id.eq(id))
            .filter(raw_event::Column::Status.ne(PROCESSED))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Called when the consumer gives up on an ingest job.
    pub async fn dead(&self, payload: Value, error: String) -> anyhow::Result<()> {
        match raw_id(&payload) {
            Ok(id) => self.mark_failed(id, &error).await,
            Err(_) => Ok(()),
        }
    }

    /// Live updates: one message per changed conversation on
    /// `<prefix>:conversations:<workspace id>`. Best effort: the database
    /// already holds the truth.
    async fn publish(&self, touched: &[Touched]) {
        let mut conn = self.kv.conn();
        for t in touched {
            let msg = json!({
                "workspaceId": GlobalId::encode(Kind::Workspace, t.workspace_id),
                "conversationId": GlobalId::encode(Kind::Conversation, t.conversation_id),
                "event": if t.created { "created" } else { "updated" },
            });
            let channel = self.kv.key(&format!("conversations:{}", t.workspace_id));
            let sent: redis::RedisResult<()> = redis::cmd("PUBLISH")
                .arg(channel)
                .arg(msg.to_string())
                .query_async(&mut conn)
                .await;
            if let Err(e) = sent {
                tracing::debug!(error = %e, "publishing a conversation update failed");
            }
        }
    }
}

/// Where one message lands: its channel's workspace, or for keyword-routed
/// sources every workspace whose brand keywords it mentions (the channel's
/// own when none does, so nothing is lost).
fn targets<'a>(
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
fn mentions(text: &str, keyword: &str) -> bool {
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

async fn store_one(
    txn: &DatabaseTransaction,
    ch: &channel::Model,
    kind: ChannelKind,
    ws: &workspace::Model,
    m: &Inbound,
) -> anyhow::Result<Option<Touched>> {
    let exists = message::Entity::find()
        .filter(message::Column::ChannelId.eq(ch.id))
        .filter(message::Column::ExternalId.eq(&m.external_id))
        .filter(message::Column::WorkspaceId.eq(ws.id))
        .one(txn)
        .await?;
    if exists.is_some() {
        return Ok(None);
    }
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
    Ok(Some(Touched {
        workspace_id: ws.id,
        conversation_id,
        created,
    }))
}

async fn upsert_author(
    txn: &DatabaseTransaction,
    agency_id: Uuid,
    kind: ChannelKind,
    m: &Inbound,
) -> anyhow::Result<author::Model> {
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
        return Ok(am.update(txn).await?);
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
    .on_conflict(
        OnConflict::columns([
            author::Column::AgencyId,
            author::Column::Platform,
            author::Column::ExternalId,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(txn)
    .await?;
    find()
        .one(txn)
        .await?
        .context("author vanished right after insert")
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
) -> anyhow::Result<(Uuid, bool)> {
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
    let breakdown_json = serde_json::to_value(breakdown)?;
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
