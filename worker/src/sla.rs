//! The SLA engine: fires warning and breach timers, each recorded exactly
//! once (the sla_events unique key), and rebuilds timers from the database
//! so a Redis flush loses no deadline.

use chrono::Utc;
use rapport_domain::sla::Target;
use rapport_store::Kv;
use rapport_store::entities::{conversation, sla_event, sla_policy};
use rapport_store::sla::{self, NewEvent, Timer};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

/// Redis key marking that the timers were rebuilt since Redis last lost
/// its data.
const REBUILT: &str = "sla:rebuilt";
/// Redis key holding the token of the rebuild pass under way.
const REBUILDING: &str = "sla:rebuilding";

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
            tick: Duration::from_millis(250),
            lease: Duration::from_secs(30),
            rebuild_every: Duration::from_secs(300),
            batch: 1000,
        }
    }
}

pub struct SlaEngine {
    pub db: DatabaseConnection,
    pub kv: Kv,
    pub cfg: SlaConfig,
}

/// What firing one timer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    Recorded,
    AlreadyRecorded,
    /// The deadline no longer runs (answered, resolved, paused or moved).
    Stale,
}

impl SlaEngine {
    /// Claims and fires due timers, a batch at a time, until none is due;
    /// returns how many timers were handled.
    pub async fn tick(&self) -> anyhow::Result<usize> {
        let mut handled = 0;
        loop {
            let now = Utc::now();
            sla::release_expired(&self.kv, now).await?;
            let claimed = sla::claim_due(
                &self.kv,
                now,
                self.cfg.batch,
                self.cfg.lease.as_millis() as i64,
            )
            .await?;
            if claimed.is_empty() {
                return Ok(handled);
            }
            let mut timers = Vec::with_capacity(claimed.len());
            for member in &claimed {
                match Timer::parse(member) {
                    Some(t) => timers.push(t),
                    None => tracing::warn!(timer = %member, "unreadable SLA timer dropped"),
                }
            }
            match self.fire_batch(&timers).await {
                Ok(_) => sla::done(&self.kv, &claimed).await?,
                // Left claimed: the lease runs out and they fire later.
                Err(e) => {
                    tracing::warn!(error = %e, timers = timers.len(), "firing SLA timers failed");
                    return Err(e);
                }
            }
            handled += claimed.len();
            if claimed.len() < self.cfg.batch {
                return Ok(handled);
            }
        }
    }

    pub async fn fire(&self, t: &Timer) -> anyhow::Result<Fired> {
        Ok(self
            .fire_batch(std::slice::from_ref(t))
            .await?
            .pop()
            .unwrap_or(Fired::Stale))
    }

    /// Fires timers together: their conversations read in one query, the
    /// events recorded (each once) and queued for webhooks in a few
    /// statements, escalations applied, all in one transaction. A timer
    /// whose deadline no longer runs is stale.
    pub async fn fire_batch(&self, timers: &[Timer]) -> anyhow::Result<Vec<Fired>> {
        // A system path over many tenants: each row written carries its
        // own conversation's agency. The conversations are read locked, in
        // the transaction that records the events (in id order, as every
        // writer of several takes them): a reply committing at the deadline
        // is either seen here (the timer is stale) or waits for this commit
        // and then finds the breach recorded; read unlocked, both an
        // SLA_MET and an SLA_BREACHED could be recorded for one deadline.
        let txn = rapport_store::tenancy::begin_writing(&self.db).await?;
        let convs: HashMap<Uuid, conversation::Model> =
            rapport_store::locks::conversations(&txn, timers.iter().map(|t| t.conversation))
                .await?
                .into_iter()
                .map(|c| (c.id, c))
                .collect();
        let mut out: Vec<Fired> = vec![Fired::Stale; timers.len()];
        let mut live: Vec<(usize, NewEvent<'_>)> = Vec::new();
        for (i, t) in timers.iter().enumerate() {
            let Some(c) = convs.get(&t.conversation) else {
                continue;
            };
            let (due, done) = match t.target {
                Target::FirstResponse => (c.first_response_due_at, c.first_responded_at.is_some()),
                Target::NextResponse => (c.next_response_due_at, false),
                Target::Resolution => (c.resolution_due_at, c.resolved_at.is_some()),
            };
            let same = due.is_some_and(|d| d.timestamp_millis() == t.deadline.timestamp_millis());
            // A clock restarted while its business hours were closed gets
            // the deadline of the cycle before it: the cycle tells them
            // apart, or the old cycle's timer would fire for the new one.
            let current = c.sla_targets.as_ref().map_or(0, |s| s.cycle(t.target));
            if !same || done || c.status != "OPEN" || t.cycle != current || too_late(t, Utc::now())
            {
                continue;
            }
            out[i] = Fired::AlreadyRecorded;
            live.push((
                i,
                NewEvent {
                    conversation: c,
                    kind: if t.breach {
                        "SLA_BREACHED"
                    } else {
                        "SLA_WARNING"
                    },
                    target: t.target,
                    cycle: t.cycle,
                    deadline: t.deadline,
                },
            ));
        }
        if live.is_empty() {
            return Ok(out);
        }
        let now = Utc::now();
        let events: Vec<NewEvent<'_>> = live
            .iter()
            .map(|(_, e)| NewEvent {
                conversation: e.conversation,
                kind: e.kind,
                target: e.target,
                cycle: e.cycle,
                deadline: e.deadline,
            })
            .collect();
        let fresh = sla::record_events(&txn, &events, now).await?;
        // Escalation commits with the breach: never one without the other
        // (a conversation no longer OPEN by then is not escalated). Only
        // policies that escalate at all are looked at per conversation.
        let mut policies: Vec<Uuid> = fresh
            .iter()
            .filter(|(k, _)| events[*k].kind == "SLA_BREACHED")
            .filter_map(|(k, _)| events[*k].conversation.sla_policy_id)
            .collect();
        policies.sort_unstable();
        policies.dedup();
        let escalating: HashSet<Uuid> = sla_policy::Entity::find()
            .filter(sla_policy::Column::Id.is_in(policies))
            .all(&txn)
            .await?
            .into_iter()
            .filter(|p| p.escalation.as_object().is_some_and(|o| !o.is_empty()))
            .map(|p| p.id)
            .collect();
        let mut escalated = Vec::new();
        // Two breaches of one conversation in a batch (first response and
        // resolution) escalate it once.
        let mut seen = HashSet::new();
        let breached: Vec<&conversation::Model> = fresh
            .iter()
            .map(|(k, _)| &events[*k])
            .filter(|e| {
                e.kind == "SLA_BREACHED"
                    && e.conversation
                        .sla_policy_id
                        .is_some_and(|p| escalating.contains(&p))
            })
            .map(|e| e.conversation)
            .filter(|c| seen.insert(c.id))
            .collect();
        // Read locked above, so escalation decides on rows nobody changed.
        for c in breached {
            if sla::escalate(&txn, c).await? {
                escalated.push((c.workspace_id, c.id, "updated"));
            }
        }
        txn.commit().await?;
        metrics::counter!("rapport_sla_escalations_total").increment(escalated.len() as u64);
        // Escalation raised or assigned them: inboxes re-rank live.
        self.kv.conversations_changed(escalated).await;
        let mut alerts = Vec::with_capacity(fresh.len());
        for (k, payload) in fresh {
            let (i, e) = &live[k];
            out[*i] = Fired::Recorded;
            if e.kind == "SLA_BREACHED" {
                metrics::histogram!("rapport_sla_breach_lateness_seconds")
                    .record((now - e.deadline).num_milliseconds() as f64 / 1000.0);
            }
            metrics::counter!("rapport_sla_events_total", "kind" => e.kind.to_string())
                .increment(1);
            alerts.push((e.conversation.workspace_id, payload));
        }
        self.kv.sla_alerts(&alerts).await;
        Ok(out)
    }

    /// Schedules the timers of every running deadline found in the
    /// database (ZADD NX: existing timers are left alone).
    pub async fn rebuild(&self) -> anyhow::Result<usize> {
        let pass = self.begin_rebuild().await?;
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
            let timers = self
                .not_fired(page.iter().flat_map(sla::timers_of).collect())
                .await?;
            total += timers.len();
            sla::schedule(&self.kv, &timers).await?;
            after = last;
        }
        self.end_rebuild(&pass).await?;
        Ok(total)
    }

    /// Starts a rebuild pass: a token in Redis that a flush during the pass
    /// takes away with the pages scheduled so far.
    pub async fn begin_rebuild(&self) -> anyhow::Result<String> {
        let token = Uuid::now_v7().to_string();
        let _: () = redis::cmd("SET")
            .arg(self.kv.key(REBUILDING))
            .arg(&token)
            .query_async(&mut self.kv.conn())
            .await?;
        Ok(token)
    }

    /// Marks the timers as present (a flush removes the mark, and the next
    /// pass of any worker sees it gone and rebuilds at once), unless Redis
    /// lost its data during the pass (its token is gone): the pages
    /// scheduled before the flush went with it, so the mark stays unset and
    /// the next pass rebuilds. Returns whether the mark was set.
    pub async fn end_rebuild(&self, token: &str) -> anyhow::Result<bool> {
        let set: i32 = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then \
               redis.call('SET', KEYS[2], ARGV[2]) return 1 \
             end return 0",
        )
        .key(self.kv.key(REBUILDING))
        .key(self.kv.key(REBUILT))
        .arg(token)
        .arg(Utc::now().timestamp())
        .invoke_async(&mut self.kv.conn())
        .await?;
        Ok(set == 1)
    }

    /// `timers` without those already due whose event is recorded, nor
    /// warnings too late to send: a breached conversation that stays open
    /// is not fired again at every rebuild (the unique key would absorb it,
    /// at the cost of a write per timer, a dropped warning would be locked
    /// and dropped again, and old timers would sort ahead of new ones).
    async fn not_fired(
        &self,
        timers: Vec<(Timer, chrono::DateTime<Utc>)>,
    ) -> anyhow::Result<Vec<(Timer, chrono::DateTime<Utc>)>> {
        let now = Utc::now();
        let due: Vec<Uuid> = timers
            .iter()
            .filter(|(_, at)| *at <= now)
            .map(|(t, _)| t.conversation)
            .collect();
        if due.is_empty() {
            return Ok(timers);
        }
        let mut recorded: HashSet<(Uuid, String, String, i32)> = HashSet::new();
        for chunk in due.chunks(500) {
            recorded.extend(
                sla_event::Entity::find()
                    .select_only()
                    .columns([
                        sla_event::Column::ConversationId,
                        sla_event::Column::Target,
                        sla_event::Column::Kind,
                        sla_event::Column::Cycle,
                    ])
                    .filter(sla_event::Column::ConversationId.is_in(chunk.iter().copied()))
                    .into_tuple::<(Uuid, String, String, i32)>()
                    .all(&self.db)
                    .await?,
            );
        }
        Ok(timers
            .into_iter()
            .filter(|(t, at)| {
                let kind = if t.breach {
                    "SLA_BREACHED"
                } else {
                    "SLA_WARNING"
                };
                *at > now
                    || !too_late(t, now)
                        && !recorded.contains(&(
                            t.conversation,
                            t.target.as_str().to_string(),
                            kind.to_string(),
                            t.cycle,
                        ))
            })
            .collect())
    }

    /// Whether the mark of the last rebuild is gone (Redis lost its data).
    async fn flushed(&self) -> bool {
        let exists: redis::RedisResult<bool> = redis::cmd("EXISTS")
            .arg(self.kv.key(REBUILT))
            .query_async(&mut self.kv.conn())
            .await;
        exists.is_ok_and(|e| !e)
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut last_rebuild: Option<std::time::Instant> = None;
        loop {
            if last_rebuild.is_none_or(|t| t.elapsed() >= self.cfg.rebuild_every)
                || self.flushed().await
            {
                last_rebuild = Some(std::time::Instant::now());
                // One worker per period scans the database; the others
                // keep firing.
                match sla::rebuild_turn(&self.kv, self.cfg.rebuild_every.as_secs()).await {
                    Ok(true) => match self.rebuild().await {
                        Ok(n) => {
                            tracing::debug!(timers = n, "SLA timers rebuilt from the database")
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "rebuilding SLA timers failed");
                            if let Err(e) = sla::release_rebuild_turn(&self.kv).await {
                                tracing::warn!(error = %e, "giving the SLA rebuild turn back failed");
                            }
                            // Tried again at the next pass, not a period later.
                            last_rebuild = None;
                        }
                    },
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "taking the SLA rebuild turn failed"),
                }
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

/// A warning caught up well after its deadline (workers were down) warns of
/// nothing: the breach says it. (Within the grace, a warning due at the
/// deadline itself, at 100 %, or fired a little late by a busy tick still
/// goes out.)
fn too_late(t: &Timer, now: chrono::DateTime<Utc>) -> bool {
    !t.breach && now >= t.deadline + chrono::Duration::seconds(30)
}
