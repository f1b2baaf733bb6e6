//! Raw inbound events: persisted first, processed later, never lost.

use crate::entities::raw_event;
use crate::errors::StoreResult;
use crate::tenancy::begin_for_agency;
use chrono::Utc;
use sea_orm::sea_query::OnConflict;
use sea_orm::{DatabaseConnection, EntityTrait, Set};
use uuid::Uuid;

pub const PENDING: &str = "PENDING";
pub const PROCESSED: &str = "PROCESSED";
pub const FAILED: &str = "FAILED";

pub struct NewRawEvent {
    pub agency_id: Uuid,
    pub channel_id: Uuid,
    pub workspace_id: Uuid,
    pub dedup_key: String,
    pub headers: serde_json::Value,
    pub body: Vec<u8>,
}

/// Stores the event unless the channel already has one with the same
/// dedup key. Returns its id and whether it is new.
pub async fn persist(db: &DatabaseConnection, e: NewRawEvent) -> StoreResult<(Uuid, bool)> {
    let id = Uuid::now_v7();
    let txn = begin_for_agency(db, e.agency_id).await?;
    let inserted = raw_event::Entity::insert(raw_event::ActiveModel {
        id: Set(id),
        agency_id: Set(e.agency_id),
        channel_id: Set(e.channel_id),
        workspace_id: Set(e.workspace_id),
        dedup_key: Set(e.dedup_key.clone()),
        headers: Set(e.headers),
        body: Set(e.body),
        status: Set(PENDING.into()),
        error: Set(None),
        processed_at: Set(None),
        created_at: Set(Utc::now()),
    })
    .on_conflict(
        OnConflict::columns([raw_event::Column::ChannelId, raw_event::Column::DedupKey])
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(&txn)
    .await?;
    let result = if inserted == 1 {
        (id, true)
    } else {
        use sea_orm::{ColumnTrait, QueryFilter};
        let existing = raw_event::Entity::find()
            .filter(raw_event::Column::ChannelId.eq(e.channel_id))
            .filter(raw_event::Column::DedupKey.eq(e.dedup_key))
            .one(&txn)
            .await?
            .map(|r| r.id)
            .unwrap_or(id);
        (existing, false)
    };
    txn.commit().await?;
    Ok(result)
}
