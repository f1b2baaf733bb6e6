//! Sent replies as the canned-reply guard sees them: a per-workspace
//! near-duplicate index of the outbound replies of the workspace's window
//! (30 days by default), cached in the process and topped up from the
//! database (the source of truth) before each check, reading a little
//! behind the newest reply held (see `OVERLAP_SECONDS`); rebuilt hourly so
//! old replies age out, and at once when the window changes.

use crate::entities::{channel, message};
use chrono::{DateTime, Duration, Utc};
use rapport_domain::reply::guard::ReplyIndex;
use rapport_domain::reply::settings::DuplicateWindow;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use uuid::Uuid;

const REBUILD_AFTER_MINUTES: i64 = 60;

/// A reply's id and publish time are set before its transaction commits,
/// by whichever API process sent it: one may commit after a later one was
/// read. Each top-up reads again this far back from the newest reply
/// indexed, and skips the replies it holds already.
const OVERLAP_SECONDS: i64 = 120;

struct Cached {
    window: DuplicateWindow,
    index: ReplyIndex,
    /// Replies indexed, so that overlapping reads insert each once.
    held: HashSet<Uuid>,
    /// Publish time of the newest reply indexed.
    newest: Option<DateTime<Utc>>,
    /// Whether the whole window has been read since the last rebuild:
    /// until then every top-up reads the whole window (a top-up that only
    /// read recent replies does not make the index complete).
    complete: bool,
    built: DateTime<Utc>,
}

#[derive(Default)]
pub struct ReplyIndexes {
    inner: Mutex<HashMap<Uuid, Cached>>,
}

impl ReplyIndexes {
    /// Runs `f` on the workspace's index, brought up to date first.
    pub async fn with<C, R>(
        &self,
        conn: &C,
        agency: Uuid,
        workspace: Uuid,
        window: DuplicateWindow,
        f: impl FnOnce(&ReplyIndex, &HashSet<String>) -> R,
    ) -> Result<R, DbErr>
    where
        C: ConnectionTrait,
    {
        // Replies whose delivery failed stay indexed (one may fail after it
        // was indexed) but are passed on, so the check can pass over them:
        // nobody saw them. Few, and read by the same index.
        let unpublished: HashSet<String> = message::Entity::find()
            .select_only()
            .column(message::Column::Id)
            .filter(message::Column::AgencyId.eq(agency))
            .filter(message::Column::WorkspaceId.eq(workspace))
            .filter(message::Column::Direction.eq("OUTBOUND"))
            .filter(message::Column::PublishedAt.gt(Utc::now() - Duration::days(window.days())))
            .filter(message::Column::DeliveryStatus.eq("FAILED"))
            .into_tuple::<Uuid>()
            .all(conn)
            .await?
            .into_iter()
            .map(|id| id.to_string())
            .collect();
        // A rebuild by another request between this read and its use
        // would leave this check on a cache holding only what this read
        // brought (perhaps only recent replies): read again, then from the
        // whole window. Two rebuilds in a row need the hour or the window
        // to change twice meanwhile.
        for _ in 0..3 {
            let now = Utc::now();
            let start = now - Duration::days(window.days());
            let (from, built) = self.plan(workspace, window, now, start);
            let rows = Self::read(conn, agency, workspace, from).await?;
            let mut map = self.inner.lock().expect("reply index lock");
            // Gone (evicted as idle meanwhile) or rebuilt: read again.
            let Some(cached) = map.get_mut(&workspace).filter(|c| c.built == built) else {
                continue;
            };
            for (id, masked, at) in rows {
                if cached.held.insert(id) {
                    if let Some(m) = masked {
                        cached.index.insert(id.to_string(), &m);
                    }
                    cached.newest = cached.newest.max(Some(at));
                }
            }
            if from == start {
                cached.complete = true;
            }
            return Ok(f(&cached.index, &unpublished));
        }
        Err(DbErr::Custom(
            "the reply index was rebuilt three times during one check; try again".into(),
        ))
    }

    /// Where this workspace's top-up reads from, and the build it fills
    /// (a new, empty one when the cache is stale).
    fn plan(
        &self,
        workspace: Uuid,
        window: DuplicateWindow,
        now: DateTime<Utc>,
        start: DateTime<Utc>,
    ) -> (DateTime<Utc>, DateTime<Utc>) {
        let mut map = self.inner.lock().expect("reply index lock");
        let stale = map.get(&workspace).is_none_or(|c| {
            c.window != window || now - c.built > Duration::minutes(REBUILD_AFTER_MINUTES)
        });
        if stale {
            // Workspaces idle past the rebuild age would be rebuilt at their
            // next check anyway: dropped, so an API process does not keep
            // every workspace it ever checked.
            map.retain(|_, c| now - c.built <= Duration::minutes(REBUILD_AFTER_MINUTES));
            map.insert(
                workspace,
                Cached {
                    window,
                    index: ReplyIndex::new(),
                    held: HashSet::new(),
                    newest: None,
                    complete: false,
                    built: now,
                },
            );
        }
        let c = &map[&workspace];
        let from = match (c.complete, c.newest) {
            (true, Some(t)) => start.max(t - Duration::seconds(OVERLAP_SECONDS)),
            _ => start,
        };
        (from, c.built)
    }

    /// Outbound replies of the workspace published after `from`.
    async fn read<C: ConnectionTrait>(
        conn: &C,
        agency: Uuid,
        workspace: Uuid,
        from: DateTime<Utc>,
    ) -> Result<Vec<(Uuid, Option<String>, DateTime<Utc>)>, DbErr> {
        message::Entity::find()
            .select_only()
            .column(message::Column::Id)
            .column(message::Column::MaskedBody)
            .column(message::Column::PublishedAt)
            // Index (agency, workspace, direction, published_at).
            .filter(message::Column::AgencyId.eq(agency))
            .filter(message::Column::WorkspaceId.eq(workspace))
            .filter(message::Column::Direction.eq("OUTBOUND"))
            .filter(message::Column::PublishedAt.gt(from))
            .order_by_asc(message::Column::PublishedAt)
            .into_tuple()
            .all(conn)
            .await
    }
}

/// Whether the worker can publish replies through `c`: connected, with an
/// access token (X, FACEBOOK, INSTAGRAM) or a callback URL and the secret
/// that signs for it (GENERIC).
pub fn can_publish(c: &channel::Model) -> bool {
    c.status != "DISCONNECTED"
        && match c.kind.as_str() {
            "GENERIC" => c.callback_url.is_some() && c.secret_ciphertext.is_some(),
            "FEED" => false,
            _ => c.access_token_ciphertext.is_some(),
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_workspaces_are_dropped_when_another_is_built() {
        let indexes = ReplyIndexes::default();
        let window = DuplicateWindow::DEFAULT;
        let t0 = Utc::now();
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        indexes.plan(a, window, t0, t0 - Duration::days(30));
        let t1 = t0 + Duration::minutes(30);
        indexes.plan(b, window, t1, t1 - Duration::days(30));
        assert_eq!(indexes.inner.lock().unwrap().len(), 2);
        let t2 = t0 + Duration::minutes(REBUILD_AFTER_MINUTES + 1);
        indexes.plan(c, window, t2, t2 - Duration::days(30));
        let map = indexes.inner.lock().unwrap();
        assert!(!map.contains_key(&a), "idle past the rebuild age");
        assert!(map.contains_key(&b) && map.contains_key(&c));
    }
}
