//! Outgoing webhooks, outbox side: an event is queued for every active
//! subscription of its workspace that asked for it, in the same transaction
//! that records the event, once per subscription (idempotency key).

use crate::entities::{webhook_delivery, webhook_subscription};
use chrono::Utc;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, Set};
use serde_json::Value;
use std::collections::HashMap;
use uuid::Uuid;

pub const PENDING: &str = "PENDING";
pub const DELIVERED: &str = "DELIVERED";
pub const FAILED: &str = "FAILED";

/// A reply that could not be published (refused, or every attempt failed).
pub const REPLY_FAILED: &str = "REPLY_FAILED";

/// Event kinds a subscription may ask for.
pub const EVENT_TYPES: &[&str] = &["SLA_WARNING", "SLA_BREACHED", "SLA_MET", REPLY_FAILED];

/// An event for the webhooks of its workspace.
pub struct Outgoing<'a> {
    pub agency_id: Uuid,
    pub workspace_id: Uuid,
    pub event_type: &'a str,
    /// Unique per subscription: queuing the same event twice is a no-op.
    pub idempotency_key: String,
    pub payload: &'a Value,
}

/// Rows per multi-row insert.
const CHUNK: usize = 500;

/// Queues each event for its workspace's active subscribers of its type;
/// returns how many deliveries were queued.
pub async fn queue_many<C: ConnectionTrait>(
    conn: &C,
    events: &[Outgoing<'_>],
) -> Result<usize, DbErr> {
    if events.is_empty() {
        return Ok(0);
    }
    let mut workspaces: Vec<Uuid> = events.iter().map(|e| e.workspace_id).collect();
    workspaces.sort_unstable();
    workspaces.dedup();
    let mut subs: HashMap<Uuid, Vec<webhook_subscription::Model>> = HashMap::new();
    for chunk in workspaces.chunks(CHUNK) {
        for s in webhook_subscription::Entity::find()
            .filter(webhook_subscription::Column::WorkspaceId.is_in(chunk.iter().copied()))
            .filter(webhook_subscription::Column::Active.eq(true))
            .all(conn)
            .await?
        {
            subs.entry(s.workspace_id).or_default().push(s);
        }
    }
    let now = Utc::now();
    let rows: Vec<webhook_delivery::ActiveModel> = events
        .iter()
        .flat_map(|e| {
            subs.get(&e.workspace_id)
                .into_iter()
                .flatten()
                .filter(|s| {
                    s.agency_id == e.agency_id
                        && s.events
                            .as_array()
                            .is_some_and(|k| k.iter().any(|x| x.as_str() == Some(e.event_type)))
                })
                .map(move |s| webhook_delivery::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    agency_id: Set(e.agency_id),
                    subscription_id: Set(s.id),
                    event_type: Set(e.event_type.into()),
                    idempotency_key: Set(e.idempotency_key.clone()),
                    payload: Set(e.payload.clone()),
                    status: Set(PENDING.into()),
                    attempts: Set(0),
                    next_attempt_at: Set(now),
                    last_error: Set(None),
                    delivered_at: Set(None),
                    created_at: Set(now),
                })
        })
        .collect();
    let n = rows.len();
    for chunk in rows.chunks(CHUNK) {
        webhook_delivery::Entity::insert_many(chunk.to_vec())
            .on_conflict(
                OnConflict::columns([
                    webhook_delivery::Column::SubscriptionId,
                    webhook_delivery::Column::IdempotencyKey,
                ])
                .do_nothing()
                .to_owned(),
            )
            .exec_without_returning(conn)
            .await?;
    }
    Ok(n)
}
