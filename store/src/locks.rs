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

use crate::entities::conversation;
use sea_orm::sea_query::LockType;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select,
};
use uuid::Uuid;

/// `q`'s rows, locked until the transaction ends.
pub fn for_update<E: EntityTrait>(q: Select<E>) -> Select<E> {
    q.lock(LockType::NoKeyUpdate)
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
