//! Outgoing webhooks, outbox side: an event is queued for every active
//! subscription of its workspace that asked for it, in the same transaction
//! that records the event, once per subscription (idempotency key).

use crate::entities::{webhook_delivery, webhook_subscription};
use chrono::Utc;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, Set};
use serde_json::Value;
use uuid::Uuid;

pub const PENDING: &str = "PENDING";
pub const DELIVERED: &str = "DELIVERED";
pub const FAILED: &str = "FAILED";

/// Event kinds a subscription may ask for.
pub const EVENT_TYPES: &[&str] = &["SLA_WARNING", "SLA_BREACHED", "SLA_MET"];

/// Queues `payload` for the workspace's subscribers of `event_type`.
/// Returns how many deliveries were queued.
pub async fn queue<C: ConnectionTrait>(
    conn: &C,
    agency_id: Uuid,
    workspace_id: Uuid,
    event_type: &str,
    idempotency_key: &str,
    payload: &Value,
) -> Result<usize, DbErr> {
    let subs = webhook_subscription::Entity::find()
        .filter(webhook_subscription::Column::AgencyId.eq(agency_id))
        .filter(webhook_subscription::Column::WorkspaceId.eq(workspace_id))
        .filter(webhook_subscription::Column::Active.eq(true))
        .all(conn)
        .await?;
    let now = Utc::now();
    let rows: Vec<webhook_delivery::ActiveModel> = subs
        .iter()
        .filter(|s| {
            s.events
                .as_array()
                .is_some_and(|e| e.iter().any(|x| x.as_str() == Some(event_type)))
        })
        .map(|s| webhook_delivery::ActiveModel {
            id: Set(Uuid::now_v7()),
            agency_id: Set(agency_id),
            subscription_id: Set(s.id),
            event_type: Set(event_type.into()),
            idempotency_key: Set(idempotency_key.into()),
            payload: Set(payload.clone()),
            status: Set(PENDING.into()),
            attempts: Set(0),
            next_attempt_at: Set(now),
            last_error: Set(None),
            delivered_at: Set(None),
            created_at: Set(now),
        })
        .collect();
    let n = rows.len();
    webhook_delivery::Entity::insert_many(rows)
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
    Ok(n)
}
