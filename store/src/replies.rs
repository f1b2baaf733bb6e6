//! Sent replies as the canned-reply guard sees them: a per-workspace
//! near-duplicate index of the outbound replies of the workspace's window
//! (30 days by default), cached in the process and topped up from the
//! database (the source of truth) before each check; rebuilt hourly so old
//! replies age out, and at once when the window changes.

use crate::entities::message;
use chrono::{DateTime, Duration, Utc};
use rapport_domain::reply::guard::ReplyIndex;
use rapport_domain::reply::settings::DuplicateWindow;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use std::collections::HashMap;
use std::sync::Mutex;
use uuid::Uuid;

const REBUILD_AFTER_MINUTES: i64 = 60;

struct Cached {
    window: DuplicateWindow,
    index: ReplyIndex,
    last_id: Uuid,
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
        workspace: Uuid,
        window: DuplicateWindow,
        f: impl FnOnce(&ReplyIndex) -> R,
    ) -> Result<R, DbErr>
    where
        C: ConnectionTrait,
    {
        let now = Utc::now();
        let after = {
            let mut map = self.inner.lock().expect("reply index lock");
            let stale = map.get(&workspace).is_none_or(|c| {
                c.window != window || now - c.built > Duration::minutes(REBUILD_AFTER_MINUTES)
            });
            if stale {
                map.insert(
                    workspace,
                    Cached {
                        window,
                        index: ReplyIndex::new(),
                        last_id: Uuid::nil(),
                        built: now,
                    },
                );
            }
            map[&workspace].last_id
        };
        let rows: Vec<(Uuid, Option<String>)> = message::Entity::find()
            .select_only()
            .column(message::Column::Id)
            .column(message::Column::MaskedBody)
            .filter(message::Column::WorkspaceId.eq(workspace))
            .filter(message::Column::Direction.eq("OUTBOUND"))
            .filter(message::Column::Id.gt(after))
            .filter(message::Column::PublishedAt.gt(now - Duration::days(window.days())))
            .order_by_asc(message::Column::Id)
            .into_tuple()
            .all(conn)
            .await?;
        let mut map = self.inner.lock().expect("reply index lock");
        let cached = map.get_mut(&workspace).expect("inserted above");
        for (id, masked) in rows {
            if id > cached.last_id {
                if let Some(m) = masked {
                    cached.index.insert(id.to_string(), &m);
                }
                cached.last_id = id;
            }
        }
        Ok(f(&cached.index))
    }
}
