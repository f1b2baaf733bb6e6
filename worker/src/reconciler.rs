//! Redis is the fast path, the database the truth: the reconciler
//! re-enqueues raw events still PENDING after a grace period (lost from
//! Redis by a flush or a crash between persisting and enqueueing), each at
//! most once per `requeue_every`, and none received after the oldest job
//! waiting unread in the stream (the workers are behind; their jobs are
//! most likely there). Jobs are idempotent, so an event
//! enqueued twice is still stored once.
//!
//! It also prunes raw events processed long ago (`keep_processed`): their
//! messages are stored, platforms have long stopped retrying them (the
//! messages' own unique key still keeps a late copy out), and a table
//! holding every payload ever received would only grow. Dead letters
//! (FAILED) and PENDING events are never pruned.

use rapport_store::Kv;
use rapport_store::entities::raw_event;
use rapport_store::jobs::{self, GROUP, INGEST, STREAM};
use rapport_store::raw_events::{PENDING, PROCESSED};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::json;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct ReconcilerConfig {
    pub interval: Duration,
    /// How long a raw event may stay PENDING before it counts as lost.
    pub grace: Duration,
    /// An event re-enqueued once is not re-enqueued again for this long
    /// (a marker in Redis, lost with Redis's data like the job itself): a
    /// backlog older than the grace period is not added to the stream
    /// again on every pass.
    pub requeue_every: Duration,
    pub batch: u64,
    /// Processed raw events received longer ago than this are deleted;
    /// None keeps them for good.
    pub keep_processed: Option<Duration>,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            grace: Duration::from_secs(300),
            requeue_every: Duration::from_secs(600),
            batch: 1_000,
            keep_processed: Some(Duration::from_secs(30 * 24 * 3600)),
        }
    }
}

/// Batches deleted per pass at most: a backlog (the first pass after
/// retention is turned on) is worked off over several passes, each short.
const PRUNE_BATCHES_PER_PASS: usize = 10;

/// Deletes PROCESSED raw events received and processed before `keep` ago,
/// oldest first, `batch` at a time; returns how many.
pub async fn prune_once(
    db: &DatabaseConnection,
    keep: Duration,
    batch: u64,
) -> anyhow::Result<u64> {
    // A retention beyond the calendar's range keeps everything.
    let Some(cutoff) = chrono::Duration::from_std(keep)
        .ok()
        .and_then(|keep| chrono::Utc::now().checked_sub_signed(keep))
    else {
        return Ok(0);
    };
    let mut total = 0;
    for _ in 0..PRUNE_BATCHES_PER_PASS {
        // Read by `ix_raw_events_pending` (status, created_at).
        let ids: Vec<uuid::Uuid> = raw_event::Entity::find()
            .select_only()
            .column(raw_event::Column::Id)
            .filter(raw_event::Column::Status.eq(PROCESSED))
            .filter(raw_event::Column::CreatedAt.lt(cutoff))
            // A dead letter retried lately is kept as long as a fresh one.
            .filter(raw_event::Column::ProcessedAt.lt(cutoff))
            .order_by_asc(raw_event::Column::CreatedAt)
            .limit(batch)
            .into_tuple()
            .all(db)
            .await?;
        if ids.is_empty() {
            break;
        }
        let n = ids.len() as u64;
        // The status again: a row is deleted only as it was read.
        total += raw_event::Entity::delete_many()
            .filter(raw_event::Column::Id.is_in(ids))
            .filter(raw_event::Column::Status.eq(PROCESSED))
            .exec(db)
            .await?
            .rows_affected;
        if n < batch {
            break;
        }
    }
    if total > 0 {
        tracing::info!(count = total, "pruned processed raw events past retention");
        metrics::counter!("rapport_raw_events_pruned_total").increment(total);
    }
    Ok(total)
}

/// When the oldest job no worker has read yet was added to the stream:
/// the first entry after the consumer group's last delivered one (exact
/// whatever was deleted from the stream), or the first entry when there is
/// no group yet; None when none waits.
async fn oldest_unread(kv: &Kv) -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
    let stream = kv.key(STREAM);
    let mut conn = kv.conn();
    // No stream at all (a flush): nothing waits in it.
    let exists: bool = redis::cmd("EXISTS")
        .arg(&stream)
        .query_async(&mut conn)
        .await?;
    if !exists {
        return Ok(None);
    }
    let groups: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&stream)
        .query_async(&mut conn)
        .await?;
    let text =
        |v: Option<&redis::Value>| -> Option<String> { redis::from_redis_value(v?.clone()).ok() };
    let last = groups
        .iter()
        .find(|g| text(g.get("name")).as_deref() == Some(GROUP))
        .and_then(|g| text(g.get("last-delivered-id")));
    let start = match last {
        Some(id) => format!("({id}"),
        None => "-".to_string(),
    };
    // [[id, [field, value, ...]]]
    let next: Vec<(String, redis::Value)> = redis::cmd("XRANGE")
        .arg(&stream)
        .arg(start)
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut conn)
        .await?;
    Ok(next.first().and_then(|(id, _)| {
        let ms = id.split('-').next()?.parse::<i64>().ok()?;
        chrono::DateTime::from_timestamp_millis(ms)
    }))
}

/// Unread jobs are taken for events received this long before them, at
/// most (persisting an event and enqueueing its job are moments apart).
const ENQUEUE_SLACK: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// One pass; returns how many events were re-enqueued.
pub async fn reconcile_once(
    db: &DatabaseConnection,
    kv: &Kv,
    cfg: &ReconcilerConfig,
) -> anyhow::Result<usize> {
    let mut cutoff = chrono::Utc::now() - chrono::Duration::from_std(cfg.grace)?;
    // Jobs waiting unread in the stream: the workers are behind, and an
    // event received after the oldest of them most likely has its job
    // among them; enqueueing it again would only lengthen the queue (a
    // backlog older than the grace period used to be enqueued again every
    // `requeue_every`). Only events received before it count as lost.
    if let Some(oldest) = oldest_unread(kv).await? {
        cutoff = cutoff.min(oldest - ENQUEUE_SLACK);
    }
    let mut total = 0;
    let mut after = uuid::Uuid::nil();
    loop {
        let ids: Vec<uuid::Uuid> = raw_event::Entity::find()
            .select_only()
            .column(raw_event::Column::Id)
            .filter(raw_event::Column::Status.eq(PENDING))
            .filter(raw_event::Column::CreatedAt.lt(cutoff))
            .filter(raw_event::Column::Id.gt(after))
            .order_by_asc(raw_event::Column::Id)
            .limit(cfg.batch)
            .into_tuple()
            .all(db)
            .await?;
        let Some(last) = ids.last().copied() else {
            break;
        };
        let mut marks = redis::pipe();
        for id in &ids {
            marks
                .cmd("SET")
                .arg(kv.key(&format!("reconciler:requeued:{id}")))
                .arg("1")
                .arg("NX")
                .arg("EX")
                .arg(cfg.requeue_every.as_secs().max(1));
        }
        let fresh: Vec<Option<String>> = marks.query_async(&mut kv.conn()).await?;
        let marked: Vec<uuid::Uuid> = ids
            .iter()
            .zip(fresh)
            .filter_map(|(id, fresh)| fresh.map(|_| *id))
            .collect();
        for (i, id) in marked.iter().enumerate() {
            if let Err(e) = jobs::enqueue(kv, INGEST, &json!({ "raw_event_id": id })).await {
                // The marks of those not enqueued go: the next pass takes
                // them at once, not after the marks expire.
                let mut unmark = redis::cmd("DEL");
                for id in &marked[i..] {
                    unmark.arg(kv.key(&format!("reconciler:requeued:{id}")));
                }
                let _: redis::RedisResult<()> = unmark.query_async(&mut kv.conn()).await;
                return Err(e.into());
            }
            total += 1;
        }
        after = last;
    }
    if total > 0 {
        tracing::info!(count = total, "reconciler re-enqueued pending raw events");
        metrics::counter!("rapport_reconciler_requeued_total").increment(total as u64);
    }
    Ok(total)
}

/// Runs passes until shutdown. Several workers may run it; a short Redis
/// lock keeps one pass at a time.
pub async fn run(
    db: DatabaseConnection,
    kv: Kv,
    cfg: ReconcilerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let lock: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(kv.key("reconciler:lock"))
            .arg("1")
            .arg("NX")
            .arg("PX")
            .arg(cfg.interval.as_millis().max(1000) as u64)
            .query_async(&mut kv.conn())
            .await;
        if matches!(lock, Ok(Some(_))) {
            if let Err(e) = reconcile_once(&db, &kv, &cfg).await {
                tracing::warn!(error = %e, "reconciler pass failed");
            }
            if let Some(keep) = cfg.keep_processed
                && let Err(e) = prune_once(&db, keep, cfg.batch).await
            {
                tracing::warn!(error = %e, "pruning raw events failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}
