//! Raw inbound events: persisted first, processed later, never lost.

use crate::entities::{channel, raw_event};
use crate::errors::StoreResult;
use chrono::Utc;
use sea_orm::sea_query::{Expr, OnConflict, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, Set};
use uuid::Uuid;

pub const PENDING: &str = "PENDING";
pub const PROCESSED: &str = "PROCESSED";
pub const FAILED: &str = "FAILED";

/// The header the webhook receiver adds to a raw event it took while the
/// channel was paused (for the channel's siblings: see the receiver).
pub const RECEIVED_PAUSED: &str = "x-rapport-received-paused";

/// Whether `raw` was received while its channel was paused.
pub fn received_paused(raw: &raw_event::Model) -> bool {
    raw.headers.get(RECEIVED_PAUSED).is_some()
}

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
///
/// This is the webhook's request path, so it is one statement in its own
/// transaction: durable when it returns, and one round trip where a
/// tenant transaction took four (begin, set the tenant, insert, commit),
/// each of which waits its turn for the CPU when the workers keep both
/// cores busy. It writes as the connecting role, like the other system
/// paths: every tenant column comes from the channel row the signature
/// was checked against, none from the request, so row-level security has
/// nothing to add here.
pub async fn persist(db: &DatabaseConnection, e: NewRawEvent) -> StoreResult<(Uuid, bool)> {
    let id = Uuid::now_v7();
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
    .exec_without_returning(db)
    .await?;
    if inserted == 1 {
        return Ok((id, true));
    }
    // A platform's retry of a stored event: answer with the stored one.
    let existing = raw_event::Entity::find()
        .filter(raw_event::Column::ChannelId.eq(e.channel_id))
        .filter(raw_event::Column::DedupKey.eq(e.dedup_key))
        .one(db)
        .await?
        .map_or(id, |r| r.id);
    Ok((existing, false))
}

/// The channel row a webhook's signature was checked against, as the
/// receiver last read it.
pub struct CheckedChannel<'a> {
    pub id: Uuid,
    pub kind: &'a str,
    pub secret_ciphertext: &'a [u8],
}

/// Stores a webhook's event in one statement that reads the channel again:
/// the row goes in only while the channel is still active, of the same
/// kind and under the same sealed secret, and takes its agency and
/// workspace from the channel row itself. This lets the receiver check
/// signatures against a channel it remembers without asking the database
/// first: a pause, a disconnection or a new secret committed since then
/// stores nothing.
///
/// Returns the new event's id, or `None` when nothing was stored: the
/// channel changed, or the channel already has this event. The receiver
/// then reads the channel and goes the usual way (`persist`), which tells
/// the two apart.
pub async fn persist_if_unchanged(
    db: &DatabaseConnection,
    checked: CheckedChannel<'_>,
    dedup_key: String,
    headers: serde_json::Value,
    body: &[u8],
) -> StoreResult<Option<Uuid>> {
    use raw_event::Column as R;
    let id = Uuid::now_v7();
    let from_channel = Query::select()
        .expr(Expr::val(id))
        .column(channel::Column::AgencyId)
        .column(channel::Column::Id)
        .column(channel::Column::WorkspaceId)
        .expr(Expr::val(dedup_key))
        .expr(Expr::val(headers))
        .expr(Expr::val(body.to_vec()))
        .expr(Expr::val(PENDING))
        .expr(Expr::val(Utc::now()))
        .from(channel::Entity)
        .and_where(channel::Column::Id.eq(checked.id))
        .and_where(channel::Column::Status.eq("ACTIVE"))
        .and_where(channel::Column::Kind.eq(checked.kind))
        .and_where(channel::Column::SecretCiphertext.eq(checked.secret_ciphertext.to_vec()))
        .to_owned();
    let insert = Query::insert()
        .into_table(raw_event::Entity)
        .columns([
            R::Id,
            R::AgencyId,
            R::ChannelId,
            R::WorkspaceId,
            R::DedupKey,
            R::Headers,
            R::Body,
            R::Status,
            R::CreatedAt,
        ])
        .select_from(from_channel)
        .expect("one value per column")
        .on_conflict(
            OnConflict::columns([R::ChannelId, R::DedupKey])
                .do_nothing()
                .to_owned(),
        )
        .to_owned();
    let stored = db.execute(&insert).await?.rows_affected();
    Ok((stored == 1).then_some(id))
}
