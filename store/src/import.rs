//! Bulk import for backfills: GENERIC-schema events into one workspace,
//! through the same dedup, threading and ranking as live ingestion. Lines
//! already stored count as duplicates, so an import can be re-run safely.

use crate::entities::{channel, workspace};
use crate::errors::{StoreError, StoreResult};
use crate::ingest::{
    early_reply_workspaces, lock, lookup_ids, new_ids, routable_workspaces, route, store_locked,
    stored_workspaces,
};
use crate::tenancy::begin_for_agency;
use chrono::Utc;
use rapport_domain::ingest::{ChannelKind, Inbound, generic};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, DatabaseConnection, DatabaseTransaction, EntityTrait, QueryFilter, Set,
};
use serde_json::{Value, json};
use uuid::Uuid;

/// Events per transaction: each takes up to three advisory locks (its
/// author, its id, the message it answers), held to the commit, and
/// PostgreSQL's lock table is shared by every connection (64 per
/// connection by default); as the worker's parts, at most 250.
pub const CHUNK: usize = 250;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct ImportSummary {
    pub accepted: usize,
    pub duplicates: usize,
    /// (0-based index in the input, reason).
    pub rejected: Vec<(usize, String)>,
    /// SLA timers of the conversations opened, to schedule. Of one chunk
    /// only: [`ImportSummary::add`] keeps the counts, not these.
    pub timers: Vec<(crate::sla::Timer, chrono::DateTime<Utc>)>,
    /// Conversations created or changed, for live updates. Of one chunk
    /// only, like `timers`.
    pub touched: Vec<crate::ingest::Touched>,
}

impl ImportSummary {
    /// Adds a chunk's counts and rejections; its timers and live updates
    /// are the caller's to act on first (a file's worth would be held in
    /// memory otherwise).
    pub fn add(&mut self, other: ImportSummary) {
        self.accepted += other.accepted;
        self.duplicates += other.duplicates;
        self.rejected.extend(other.rejected);
    }
}

/// The workspace's import channel, created on first use.
pub async fn import_channel(
    db: &DatabaseConnection,
    ws: &workspace::Model,
) -> StoreResult<channel::Model> {
    let txn = begin_for_agency(db, ws.agency_id).await?;
    let now = Utc::now();
    channel::Entity::insert(channel::ActiveModel {
        id: Set(Uuid::now_v7()),
        agency_id: Set(ws.agency_id),
        workspace_id: Set(ws.id),
        kind: Set(ChannelKind::Generic.as_str().into()),
        name: Set("Bulk import".into()),
        external_account_id: Set("import".into()),
        secret_ciphertext: Set(None),
        verify_token_ciphertext: Set(None),
        feed_url: Set(None),
        poll_interval_seconds: Set(None),
        access_token_ciphertext: Set(None),
        callback_url: Set(None),
        // Paused: it receives no webhooks, only imports.
        status: Set("PAUSED".into()),
        state: Set(json!({ "import": true })),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::columns([
            channel::Column::WorkspaceId,
            channel::Column::Kind,
            channel::Column::ExternalAccountId,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(&txn)
    .await?;
    let c = channel::Entity::find()
        .filter(channel::Column::WorkspaceId.eq(ws.id))
        .filter(channel::Column::Kind.eq(ChannelKind::Generic.as_str()))
        .filter(channel::Column::ExternalAccountId.eq("import"))
        .one(&txn)
        .await?
        .ok_or(StoreError::NotFound)?;
    txn.commit().await?;
    Ok(c)
}

/// The channel an import goes through: the workspace's own import channel,
/// or, named, one of its GENERIC channels, so that events its webhook
/// delivered already count as duplicates and replies to them thread.
pub async fn import_target(
    db: &DatabaseConnection,
    ws: &workspace::Model,
    channel_id: Option<Uuid>,
) -> StoreResult<channel::Model> {
    let Some(id) = channel_id else {
        return import_channel(db, ws).await;
    };
    let c = channel::Entity::find_by_id(id)
        .filter(channel::Column::AgencyId.eq(ws.agency_id))
        .filter(channel::Column::WorkspaceId.eq(ws.id))
        .one(db)
        .await?
        .ok_or(StoreError::NotFound)?;
    if c.kind != ChannelKind::Generic.as_str() || c.status == "DISCONNECTED" {
        return Err(StoreError::Conflict(
            "imports go through a connected GENERIC channel of the workspace",
        ));
    }
    Ok(c)
}

/// Whether `ch` is a workspace's own import channel.
fn is_import_channel(ch: &channel::Model) -> bool {
    ch.external_account_id == "import" && ch.state.get("import").is_some()
}

/// Imports `events` (at most [`CHUNK`] of them, in one transaction);
/// `first_index` numbers them for the rejection list.
pub async fn import_chunk(
    db: &DatabaseConnection,
    ws: &workspace::Model,
    ch: &channel::Model,
    events: &[Value],
    first_index: usize,
) -> StoreResult<ImportSummary> {
    let txn = begin_for_agency(db, ws.agency_id).await?;
    let summary = import_chunk_in(&txn, ws, ch, events, first_index).await?;
    txn.commit().await?;
    Ok(summary)
}

/// [`import_chunk`] within the caller's transaction (of `ws`'s agency),
/// for a caller that records more in it before it commits (the audit
/// entry of an import through the API).
pub async fn import_chunk_in(
    txn: &DatabaseTransaction,
    ws: &workspace::Model,
    ch: &channel::Model,
    events: &[Value],
    first_index: usize,
) -> StoreResult<ImportSummary> {
    let mut summary = ImportSummary::default();
    let mut parsed = Vec::with_capacity(events.len());
    let now = chrono::Utc::now();
    for (i, e) in events.iter().enumerate() {
        match generic::parse(e) {
            Ok(mut m) if m.len() == 1 => parsed.push(m.remove(0).storable(now)),
            Ok(_) => summary
                .rejected
                .push((first_index + i, "one event per line".into())),
            Err(err) => summary.rejected.push((
                first_index + i,
                err.0.trim_start_matches("events[0]: ").to_string(),
            )),
        }
    }
    // What the channel holds already is a duplicate, in whichever
    // workspace it was put. Read after the locks: a message or the one it
    // answers being stored meanwhile is waited for and seen.
    let msgs: Vec<&Inbound> = parsed.iter().collect();
    lock(txn, ch, ChannelKind::Generic, msgs.iter().copied()).await?;
    let known = stored_workspaces(txn, ch.id, &lookup_ids(&msgs)).await?;
    let mut seen = std::collections::HashSet::new();
    summary.duplicates = parsed
        .iter()
        .filter(|m| {
            let stored_as = |id: &String| known.contains_key(id);
            stored_as(&m.external_id)
                || m.alias.as_ref().is_some_and(stored_as)
                || !seen.insert(m.external_id.as_str())
        })
        .count();
    summary.accepted = parsed.len() - summary.duplicates;
    // Into the workspace, through its import channel; through a channel of
    // the agency's, as that channel's webhook would (brand keywords, the
    // thread's workspaces).
    let stored = if is_import_channel(ch) {
        let items: Vec<_> = parsed.iter().map(|m| (ws, m)).collect();
        store_locked(txn, ch, ChannelKind::Generic, &items).await?
    } else {
        let workspaces = routable_workspaces(txn, ch, ChannelKind::Generic).await?;
        let answered = early_reply_workspaces(txn, ch.id, &new_ids(&msgs, &known)).await?;
        let items = route(
            ChannelKind::Generic,
            ch,
            &workspaces,
            &msgs,
            &known,
            &answered,
        );
        store_locked(txn, ch, ChannelKind::Generic, &items).await?
    };
    summary.timers = stored.timers;
    summary.touched = stored.touched;
    Ok(summary)
}
