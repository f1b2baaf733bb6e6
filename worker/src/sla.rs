//! The SLA engine: fires warning and breach timers, each recorded exactly
//! once (the sla_events unique key), and rebuilds timers from the database
//! so a Redis flush loses no deadline.

use chrono::Utc;
use rapport_domain::sla::Target;
use rapport_store::Kv;
use rapport_store::entities::conversation;
use rapport_store::sla::{self, Timer};
use rapport_store::tenancy::begin_for_agency;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

#[derive(Clone, Debug)]
pub struct SlaConfig {
    pub tick: Duration,
    /// How long a claimed timer may take before another worker may fire it.
    pub lease: Duration,
    pub rebuild_every: Duration,
    pub batch: usize,
}

impl Default for SlaConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(500),
            lease: Duration::from_secs(30),
            rebuild_every: Duration::from_secs(300),
            batch: 200,
        }
    }
}

pub struct SlaEngine {
    pub db: DatabaseConnection,
    pub kv: Kv,
    pub cfg: SlaConfig,
}

/// What firing one timer did.
#[derive(Debug, PartialEq, Eq)]
pub enum Fired {
    Recorded,
    AlreadyRecorded,
    /// The deadline no longer runs (answered, resolved, paused or moved).
    Stale,
}

impl SlaEngine {
    /// One pass: returns how many timers were handled.
    pub async fn tick(&self) -> anyhow::Result<usize> {
        let now = Utc::now();
        sla::release_expired(&self.kv, now).await?;
        let due = sla::claim_due(
            &self.kv,
            now,
            self.cfg.batch,
            self.cfg.lease.as_millis() as i64,
        )
        .await?;
        for member in &due {
            match Timer::parse(member) {
                Some(t) => {
                    if let Err(e) = self.fire(&t).await {
                        // Left claimed: the lease runs out and it fires later.
                        tracing::warn!(error = %e, timer = %member, "firing an SLA timer failed");
                        continue;
                    }
                }
                None => tracing::warn!(timer = %member, "unreadable SLA timer dropped"),
            }
            sla::done(&self.kv, member).await?;
        }
        Ok(due.len())
    }

    pub async fn fire(&self, t: &Timer) -> anyhow::Result<Fired> {
        let Some(c) = conversation::Entity::find_by_id(t.conversation)
            .one(&self.db)
            .await?
        else {
            return Ok(Fired::Stale);
        };
        let (due, done) = match t.target {
            Target::FirstResponse => (c.first_response_due_at, c.first_responded_at.is_some()),
            Target::NextResponse => (c.next_response_due_at, false),
            Target::Resolution => (c.resolution_due_at, c.resolved_at.is_some()),
        };
        let same = due.is_some_and(|d| d.timestamp_millis() == t.deadline.timestamp_millis());
        if !same || done || c.status != "OPEN" {
            return Ok(Fired::Stale);
        }
        let now = Utc::now();
        let kind = if t.breach {
            "SLA_BREACHED"
        } else {
            "SLA_WARNING"
        };
        let txn = begin_for_agency(&self.db, c.agency_id).await?;
        let Some(payload) =
            sla::record_event(&txn, &c, kind, t.target, t.cycle, t.deadline, now).await?
        else {
            return Ok(Fired::AlreadyRecorded);
        };
        // Escalation commits with the breach: both or neither.
        if t.breach && sla::escalate(&txn, &c).await? {
            metrics::counter!("rapport_sla_escalations_total").increment(1);
        }
        txn.commit().await?;
        if t.breach {
            metrics::histogram!("rapport_sla_breach_lateness_seconds")
                .record((now - t.deadline).num_milliseconds() as f64 / 1000.0);
        }
        metrics::counter!("rapport_sla_events_total", "kind" => kind).increment(1);
        // Live alerts; best effort (the event row is the record).
        let alert = payload;
        let sent: redis::RedisResult<()> = redis::cmd("PUBLISH")
            .arg(self.kv.key(&format!("sla:{}", c.workspace_id)))
            .arg(alert.to_string())
            .query_async(&mut self.kv.conn())
            .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "publishing an SLA alert failed");
        }
        Ok(Fired::Recorded)
    }

    /// Schedules the timers of every running deadline found in the
    /// database (ZADD NX: existing timers are left alone).
    pub async fn rebuild(&self) -> anyhow::Result<usize> {
        let mut after = Uuid::nil();
        let mut total = 0;
        loop {
            let page = conversation::Entity::find()
                .filter(conversation::Column::DueAt.is_not_null())
                .filter(conversation::Column::Status.eq("OPEN"))
                .filter(conversation::Column::Id.gt(after))
                .order_by_asc(conversation::Column::Id)
                .limit(1000)
                .all(&self.db)
                .await?;
            let Some(last) = page.last().map(|c| c.id) else {
                break;
            };
            let timers: Vec<_> = page.iter().flat_map(sla::timers_of).collect();
            total += timers.len();
            sla::schedule(&self.kv, &timers).await?;
            after = last;
        }
        Ok(total)
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut last_rebuild: Option<std::time::Instant> = None;
        loop {
            if last_rebuild.is_none_or(|t| t.elapsed() >= self.cfg.rebuild_every) {
                match self.rebuild().await {
                    Ok(n) => tracing::debug!(timers = n, "SLA timers rebuilt from the database"),
                    Err(e) => tracing::warn!(error = %e, "rebuilding SLA timers failed"),
                }
                last_rebuild = Some(std::time::Instant::now());
            }
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "SLA tick failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.tick) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
