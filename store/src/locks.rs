//! Rows read in order to be written back. The API (replies, status,
//! assignment), the worker's ingestion and the SLA engine all change
//! conversations from what they read; unlocked, two of them at once would
//! each write a result computed from the row as it was before the other,
//! and the later commit would silently undo the earlier one (a reply's
//! stopped clock restored by a customer message ingested meanwhile, say).
//!
//! So every such read goes through here: on PostgreSQL it takes the rows
//! `FOR NO KEY UPDATE` (the lock an UPDATE takes), so a concurrent writer
//! waits and then reads the committed row. `NO KEY` leaves foreign-key
//! checks (`KEY SHARE`) alone: inserting a message into a locked
//! conversation does not wait. Several rows are taken in primary-key order,
//! so two writers of overlapping sets cannot deadlock. SQLite needs none of
//! this: its write transactions start `IMMEDIATE`, one at a time.
//!
//! Rows that do not exist yet cannot be locked: whether a customer's new
//! message joins an open conversation or starts one depends on which of
//! their conversations are open, so everything that opens one (ingestion,
//! a reopening, `takeOffline`'s private thread) first takes the author's
//! lock (`authors`), before any row lock, in the same order everywhere.
//! (Not a reply of another author reopening the conversation: its payload
//! holds the replier's lock only.) Ingestion also takes a lock per message
//! and per message answered (`message_key`), so that a reply and its parent
//! arriving at once are threaded together.

use crate::entities::conversation;
use sea_orm::sea_query::{LockBehavior, LockType};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Select, Statement,
};
use uuid::Uuid;

/// `q`'s rows, locked until the transaction ends.
pub fn for_update<E: EntityTrait>(q: Select<E>) -> Select<E> {
    q.lock(LockType::NoKeyUpdate)
}

/// `q`'s rows, shared until the transaction ends: read to decide on, not
/// to change; a writer of them (`for_update`) waits, and waits for it.
pub fn for_share<E: EntityTrait>(q: Select<E>) -> Select<E> {
    q.lock(LockType::Share)
}

/// `q`'s rows, shared until the transaction ends, without those another
/// transaction holds for writing right now (they are left out, not waited
/// for): for a decision taken while holding rows that writer may want next,
/// where waiting could deadlock.
pub fn for_share_unless_held<E: EntityTrait>(q: Select<E>) -> Select<E> {
    q.lock_with_behavior(LockType::Share, LockBehavior::SkipLocked)
}

/// Rows per locking statement (bind-parameter limits of both backends).
const CHUNK: usize = 500;

/// The conversations `ids`, locked in id order (across statements too:
/// the ids are sorted before they are split), as committed now.
pub async fn conversations<C: ConnectionTrait>(
    txn: &C,
    ids: impl IntoIterator<Item = Uuid>,
) -> Result<Vec<conversation::Model>, DbErr> {
    let mut ids: Vec<Uuid> = ids.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        out.extend(
            for_update(
                conversation::Entity::find()
                    .filter(conversation::Column::Id.is_in(chunk.iter().copied()))
                    .order_by_asc(conversation::Column::Id),
            )
            .all(txn)
            .await?,
        );
    }
    Ok(out)
}

/// Serialises, until the transaction ends, everything that may open a
/// conversation of these authors (an agency's authors on one platform,
/// by platform id). Take it before any row lock.
pub async fn authors<C: ConnectionTrait>(
    txn: &C,
    agency_id: Uuid,
    platform: &str,
    external_ids: Vec<String>,
) -> Result<(), DbErr> {
    let keys = external_ids
        .iter()
        .map(|a| author_key(agency_id, platform, a))
        .collect();
    advisory(txn, keys).await
}

/// The lock of one author: see [`authors`].
pub fn author_key(agency_id: Uuid, platform: &str, external_id: &str) -> String {
    format!("{agency_id}:{platform}:{external_id}")
}

/// The lock of one platform message of a channel. Ingestion takes it for
/// each message and for the message it answers, so a reply and its parent
/// in concurrent payloads (different authors, so different author locks)
/// are stored one after the other: the second sees the first and joins its
/// conversation, instead of each opening one of its own.
/// `space` is the namespace of the ids: the channel, or for X, whose ids
/// are the platform's, the agency.
pub fn message_key(space: Uuid, external_id: &str) -> String {
    format!("message:{space}:{external_id}")
}

/// The lock of a workspace's outbound replies: one reply of a workspace at
/// a time is checked by the canned-reply guard and stored, so two
/// identical replies sent at the same moment on two conversations cannot
/// each miss the other, uncommitted.
pub fn replies_key(workspace_id: Uuid) -> String {
    format!("replies:{workspace_id}")
}

/// PostgreSQL advisory locks on `keys` until the transaction ends, all
/// taken in one statement in a fixed order, so two holders of overlapping
/// sets cannot deadlock (every caller takes all of its keys at once).
/// SQLite's write transactions are serialised already.
pub async fn advisory<C: ConnectionTrait>(txn: &C, keys: Vec<String>) -> Result<(), DbErr> {
    if txn.get_database_backend() != DbBackend::Postgres || keys.is_empty() {
        return Ok(());
    }
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT hashtextextended(a, 0) AS k \
         FROM unnest($1::text[]) AS a) AS keys ORDER BY k",
        [keys.into()],
    ))
    .await
    .map(|_| ())
}
