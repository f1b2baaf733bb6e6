//! SLA state in storage: a workspace's policies and calendars as the
//! domain sees them, the deadlines a new conversation gets (and the
//! snapshot of targets stored with it), and the timers that fire warnings
//! and breaches.

use crate::Kv;
use crate::entities::{business_calendar, conversation, sla_policy};
use chrono::{DateTime, NaiveDate, TimeZone as _, Utc};
use rapport_domain::calendar::{BusinessCalendar, Clock, Holiday, parse_time, parse_weekday};
use rapport_domain::sla::{self, Conditions, Deadline, Facts, Policy, Target, Targets};
use rapport_domain::{ParseError, TimeZone};
use redis::RedisResult;
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use uuid::Uuid;

/// Opening hours as stored and as the API takes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPeriod {
    pub day: String,
    pub opens: String,
    pub closes: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredHoliday {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub month: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Builds the domain calendar from its stored (or submitted) form.
pub fn calendar(
    timezone: &str,
    periods: &[StoredPeriod],
    holidays: &[StoredHoliday],
) -> Result<BusinessCalendar, ParseError> {
    let tz = TimeZone::parse(timezone)?;
    let mut ps = Vec::with_capacity(periods.len());
    for p in periods {
        ps.push((
            parse_weekday(&p.day)?,
            parse_time("weeklyHours", &p.opens)?,
            parse_time("weeklyHours", &p.closes)?,
        ));
    }
    let mut hs = Vec::with_capacity(holidays.len());
    for h in holidays {
        hs.push(match (&h.date, h.month, h.day) {
            (Some(d), None, None) => {
                Holiday::On(NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
                    ParseError::new("holidays", format!("{d:?} is not a date like 2026-12-25"))
                })?)
            }
            (None, Some(month), Some(day))
                if NaiveDate::from_ymd_opt(2024, month, day).is_some() =>
            {
                Holiday::Yearly { month, day }
            }
            _ => {
                return Err(ParseError::new(
                    "holidays",
                    "each holiday needs either a date, or a month and day",
                ));
            }
        });
    }
    BusinessCalendar::new(tz, &ps, hs)
}

fn stored_calendar(c: &business_calendar::Model) -> Option<BusinessCalendar> {
    let periods: Vec<StoredPeriod> = serde_json::from_value(c.weekly_hours.clone()).ok()?;
    let holidays: Vec<StoredHoliday> = serde_json::from_value(c.holidays.clone()).ok()?;
    calendar(&c.timezone, &periods, &holidays).ok()
}

/// What is stored on a conversation when it opens: the targets it was
/// given, so later policy changes do not rewrite its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sea_orm::FromJsonQueryResult)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub policy_id: Uuid,
    pub minutes: sla::TargetMinutes,
    pub warn_at_percent: u8,
    pub calendar_id: Option<Uuid>,
    /// Warning instants of the running deadlines, by target.
    #[serde(default)]
    pub warn: HashMap<String, DateTime<Utc>>,
    /// Set while the conversation waits on the customer (clocks paused).
    #[serde(default)]
    pub paused_at: Option<DateTime<Utc>>,
    /// Clock cycles by target: reopening restarts the resolution clock.
    #[serde(default)]
    pub cycles: HashMap<String, i32>,
    /// Set when resolving or closing stopped the clocks: opening the
    /// conversation again starts new cycles, even by way of waiting on
    /// the customer (which pauses only running clocks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<DateTime<Utc>>,
}

impl Snapshot {
    pub fn of(c: &conversation::Model) -> Option<Self> {
        c.sla_targets.clone()
    }

    pub fn cycle(&self, t: Target) -> i32 {
        self.cycles.get(t.as_str()).copied().unwrap_or(0)
    }
}

/// A workspace's policies and calendars, loaded once per unit of work.
pub struct WorkspaceSla {
    policies: Vec<Policy<Uuid>>,
    clocks: HashMap<Uuid, (Clock, Option<Uuid>)>,
    calendars: HashMap<Uuid, BusinessCalendar>,
}

/// The clock `c`'s promise counts on (around the clock without one).
pub async fn clock_for<C: ConnectionTrait>(
    conn: &C,
    c: &conversation::Model,
) -> Result<Clock, DbErr> {
    Ok(match Snapshot::of(c) {
        Some(s) => load(conn, c.workspace_id).await?.clock_of(&s),
        None => Clock::Calendar24x7,
    })
}

/// A workspace's business calendars that can be read, by ID.
async fn calendars<C: ConnectionTrait>(
    conn: &C,
    workspace_id: Uuid,
) -> Result<HashMap<Uuid, BusinessCalendar>, DbErr> {
    Ok(business_calendar::Entity::find()
        .filter(business_calendar::Column::WorkspaceId.eq(workspace_id))
        .all(conn)
        .await?
        .iter()
        .filter_map(|c| stored_calendar(c).map(|cal| (c.id, cal)))
        .collect())
}

/// The clock each of a workspace's policies counts on, deleted policies
/// included (their conversations still report on them).
pub async fn policy_clocks<C: ConnectionTrait>(
    conn: &C,
    workspace_id: Uuid,
) -> Result<HashMap<Uuid, Clock>, DbErr> {
    let calendars = calendars(conn, workspace_id).await?;
    Ok(sla_policy::Entity::find()
        .filter(sla_policy::Column::WorkspaceId.eq(workspace_id))
        .all(conn)
        .await?
        .into_iter()
        .map(|p| (p.id, policy_clock(&p, &calendars).0))
        .collect())
}

/// The clock a policy counts on, and the calendar behind it: business
/// hours only with a readable calendar, around the clock otherwise.
fn policy_clock(
    p: &sla_policy::Model,
    calendars: &HashMap<Uuid, BusinessCalendar>,
) -> (Clock, Option<Uuid>) {
    let cal = p.calendar_id.filter(|_| p.business_hours);
    let clock = cal
        .and_then(|id| calendars.get(&id))
        .map_or(Clock::Calendar24x7, |c| Clock::Business(c.clone()));
    (clock, cal)
}

pub async fn load<C: ConnectionTrait>(conn: &C, workspace_id: Uuid) -> Result<WorkspaceSla, DbErr> {
    // In match order, ties by id: `choose` keeps the order of equals.
    use sea_orm::QueryOrder;
    let rows = sla_policy::Entity::find()
        .filter(sla_policy::Column::WorkspaceId.eq(workspace_id))
        .filter(sla_policy::Column::DeletedAt.is_null())
        .order_by_asc(sla_policy::Column::Position)
        .order_by_asc(sla_policy::Column::Id)
        .all(conn)
        .await?;
    let calendars = calendars(conn, workspace_id).await?;
    let mut policies = Vec::with_capacity(rows.len());
    let mut clocks = HashMap::new();
    for r in rows {
        let (Ok(conditions), Ok(targets)) = (
            serde_json::from_value::<Conditions>(r.conditions.clone()),
            serde_json::from_value::<Targets>(r.targets.clone()),
        ) else {
            tracing::warn!(policy = %r.id, "unreadable SLA policy skipped");
            continue;
        };
        clocks.insert(r.id, policy_clock(&r, &calendars));
        policies.push(Policy {
            id: r.id,
            position: r.position,
            is_default: r.is_default,
            conditions,
            targets,
            warn_at_percent: r.warn_at_percent.clamp(0, 100) as u8,
        });
    }
    Ok(WorkspaceSla {
        policies,
        clocks,
        calendars,
    })
}

/// The promise a new conversation gets.
pub struct Opened {
    pub policy_id: Uuid,
    pub snapshot: Snapshot,
    pub first_response: Option<Deadline>,
    pub resolution: Option<Deadline>,
}

impl Opened {
    /// The earliest running deadline.
    pub fn due(&self) -> Option<DateTime<Utc>> {
        [self.first_response, self.resolution]
            .into_iter()
            .flatten()
            .map(|d| d.due)
            .min()
    }
}

impl WorkspaceSla {
    /// The clock a conversation's promise counts on.
    pub fn clock_of(&self, s: &Snapshot) -> Clock {
        s.calendar_id
            .and_then(|id| self.calendars.get(&id))
            .map_or(Clock::Calendar24x7, |c| Clock::Business(c.clone()))
    }

    pub fn open(&self, facts: &Facts<'_>, at: DateTime<Utc>) -> Option<Opened> {
        let p = sla::choose(&self.policies, facts)?;
        let (clock, calendar_id) = self.clocks.get(&p.id)?;
        let minutes = p.targets.for_priority(facts.priority);
        let first_response = sla::deadline(
            clock,
            &minutes,
            Target::FirstResponse,
            at,
            p.warn_at_percent,
        );
        let resolution = sla::deadline(clock, &minutes, Target::Resolution, at, p.warn_at_percent);
        let warn = [first_response, resolution]
            .into_iter()
            .flatten()
            .map(|d| (d.target.as_str().to_string(), d.warn))
            .collect();
        Some(Opened {
            policy_id: p.id,
            snapshot: Snapshot {
                policy_id: p.id,
                minutes,
                warn_at_percent: p.warn_at_percent,
                calendar_id: *calendar_id,
                warn,
                paused_at: None,
                cycles: HashMap::new(),
                stopped_at: None,
            },
            first_response,
            resolution,
        })
    }
}

// ---- Timers ---------------------------------------------------------------

/// Timers waiting to fire: member → fire time (epoch ms).
pub const TIMERS: &str = "sla:timers";
/// Timers a worker has claimed: member → lease expiry (epoch ms).
pub const CLAIMED: &str = "sla:claimed";

/// One timer: a warning or breach of one deadline of one conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    pub conversation: Uuid,
    pub target: Target,
    pub breach: bool,
    pub cycle: i32,
    pub deadline: DateTime<Utc>,
}

impl Timer {
    pub fn member(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}",
            self.conversation,
            self.target.as_str(),
            if self.breach { "BREACH" } else { "WARN" },
            self.cycle,
            self.deadline.timestamp_millis()
        )
    }

    pub fn parse(member: &str) -> Option<Self> {
        let mut it = member.split('|');
        let conversation = Uuid::parse_str(it.next()?).ok()?;
        let target = match it.next()? {
            "FIRST_RESPONSE" => Target::FirstResponse,
            "NEXT_RESPONSE" => Target::NextResponse,
            "RESOLUTION" => Target::Resolution,
            _ => return None,
        };
        let breach = it.next()? == "BREACH";
        let cycle = it.next()?.parse().ok()?;
        let deadline = Utc
            .timestamp_millis_opt(it.next()?.parse().ok()?)
            .single()?;
        Some(Timer {
            conversation,
            target,
            breach,
            cycle,
            deadline,
        })
    }
}

/// The timers of a conversation's running deadlines.
pub fn timers_of(c: &conversation::Model) -> Vec<(Timer, DateTime<Utc>)> {
    let Some(snapshot) = Snapshot::of(c) else {
        return Vec::new();
    };
    let running = [
        (
            Target::FirstResponse,
            c.first_response_due_at
                .filter(|_| c.first_responded_at.is_none()),
        ),
        (Target::NextResponse, c.next_response_due_at),
        (
            Target::Resolution,
            c.resolution_due_at.filter(|_| c.resolved_at.is_none()),
        ),
    ];
    let mut out = Vec::new();
    if !matches!(c.status.as_str(), "OPEN") {
        return out;
    }
    for (target, due) in running {
        let Some(due) = due else { continue };
        let base = Timer {
            conversation: c.id,
            target,
            breach: true,
            // A reopened conversation's new deadline is a new cycle: its
            // breach is a new event, not a repeat of the first one.
            cycle: snapshot.cycle(target),
            deadline: due,
        };
        out.push((base, due));
        if let Some(w) = snapshot.warn.get(target.as_str()) {
            out.push((
                Timer {
                    breach: false,
                    ..base
                },
                *w,
            ));
        }
    }
    out
}

pub async fn schedule(kv: &Kv, timers: &[(Timer, DateTime<Utc>)]) -> RedisResult<()> {
    if timers.is_empty() {
        return Ok(());
    }
    let mut cmd = redis::cmd("ZADD");
    cmd.arg(kv.key(TIMERS)).arg("NX");
    for (t, at) in timers {
        cmd.arg(at.timestamp_millis()).arg(t.member());
    }
    cmd.query_async(&mut kv.conn()).await
}

/// Atomically moves up to `limit` due timers to the claimed set with a
/// lease: several workers never fire the same timer; a crashed worker's
/// claims go back when the lease runs out ([`release_expired`]).
const CLAIM: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('ZADD', KEYS[2], ARGV[3], m)
end
return due
";

const RELEASE: &str = r"
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, 1000)
for _, m in ipairs(expired) do
  redis.call('ZREM', KEYS[2], m)
  redis.call('ZADD', KEYS[1], ARGV[1], m)
end
return #expired
";

pub async fn claim_due(
    kv: &Kv,
    now: DateTime<Utc>,
    limit: usize,
    lease_ms: i64,
) -> RedisResult<Vec<String>> {
    redis::Script::new(CLAIM)
        .key(kv.key(TIMERS))
        .key(kv.key(CLAIMED))
        .arg(now.timestamp_millis())
        .arg(limit)
        .arg(now.timestamp_millis() + lease_ms)
        .invoke_async(&mut kv.conn())
        .await
}

pub async fn release_expired(kv: &Kv, now: DateTime<Utc>) -> RedisResult<usize> {
    redis::Script::new(RELEASE)
        .key(kv.key(TIMERS))
        .key(kv.key(CLAIMED))
        .arg(now.timestamp_millis())
        .invoke_async(&mut kv.conn())
        .await
}

/// Forgets fired (or unreadable) timers.
pub async fn done(kv: &Kv, members: &[String]) -> RedisResult<()> {
    if members.is_empty() {
        return Ok(());
    }
    redis::cmd("ZREM")
        .arg(kv.key(CLAIMED))
        .arg(members)
        .query_async(&mut kv.conn())
        .await
}

/// Takes the cluster-wide rebuild turn for `ttl_secs`: with several
/// workers, one of them rebuilds timers from the database per period.
/// This process's mark on the rebuild turn: random, since processes in
/// containers share their ids (every one PID 1).
fn turn_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| uuid::Uuid::new_v4().to_string())
}

pub async fn rebuild_turn(kv: &Kv, ttl_secs: u64) -> RedisResult<bool> {
    let set: Option<String> = redis::cmd("SET")
        .arg(kv.key("sla:rebuild"))
        .arg(turn_token())
        .arg("NX")
        .arg("EX")
        .arg(ttl_secs.max(1))
        .query_async(&mut kv.conn())
        .await?;
    Ok(set.is_some())
}

/// Gives the rebuild turn back after a failed rebuild, if it is still this
/// process's: another worker may try at once (after a Redis flush no timer
/// exists until a rebuild succeeds).
pub async fn release_rebuild_turn(kv: &Kv) -> RedisResult<()> {
    redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
    )
    .key(kv.key("sla:rebuild"))
    .arg(turn_token())
    .invoke_async::<i64>(&mut kv.conn())
    .await
    .map(|_| ())
}

// ---- Status changes ---------------------------------------------------------

pub const OPEN: &str = "OPEN";
pub const PENDING_CUSTOMER: &str = "PENDING_CUSTOMER";
pub const RESOLVED: &str = "RESOLVED";
pub const CLOSED: &str = "CLOSED";

/// A promise settled by a person: (event kind, target, deadline, cycle),
/// to record. SLA_MET when kept; SLA_BREACHED when settled late, since the
/// breach timer may not have fired yet (a worker restart, a rebuild after
/// Redis lost its timers): recorded here it is never lost, and the unique
/// key skips it when the timer fired it already.
pub type Met = (&'static str, Target, DateTime<Utc>, i32);

/// How a deadline `due` settled at `at`: met in time, breached after.
fn settled(target: Target, due: DateTime<Utc>, cycle: i32, at: DateTime<Utc>) -> Met {
    let kind = if at <= due { "SLA_MET" } else { "SLA_BREACHED" };
    (kind, target, due, cycle)
}

/// The instant the clocks read: while paused, the moment they stopped.
fn clock_time(snap: &Snapshot, now: DateTime<Utc>) -> DateTime<Utc> {
    snap.paused_at.map_or(now, |p| p.min(now))
}

fn shift(
    clock: &Clock,
    paused: DateTime<Utc>,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    if at <= paused {
        return at;
    }
    // To the second: each pause must keep the time left, not round it up.
    let left = (clock.minutes_between(paused, at) * 60.0).round() as i64;
    clock
        .add(now, chrono::Duration::seconds(left))
        .unwrap_or(at)
}

/// Starts `target`'s clock again at `now`, in a new cycle.
fn restart(
    c: &mut conversation::Model,
    snap: &mut Snapshot,
    clock: &Clock,
    target: Target,
    now: DateTime<Utc>,
) {
    let key = target.as_str().to_string();
    *snap.cycles.entry(key.clone()).or_insert(0) += 1;
    let due = match sla::deadline(clock, &snap.minutes, target, now, snap.warn_at_percent) {
        Some(d) => {
            snap.warn.insert(key, d.warn);
            Some(d.due)
        }
        None => {
            snap.warn.remove(&key);
            None
        }
    };
    match target {
        Target::FirstResponse => c.first_response_due_at = due,
        Target::NextResponse => c.next_response_due_at = due,
        Target::Resolution => c.resolution_due_at = due,
    }
}

/// Moves a conversation to status `to` and keeps its promise honest:
/// - waiting on the customer pauses every running clock (the remaining
///   time is kept, and resumes when the conversation opens again);
/// - resolving or closing stops them: resolving meets the resolution
///   target if in time, and a deadline already passed is recorded as
///   breached; the next-response clock stops (resolving answers it);
/// - opening a conversation that was resolved or closed (from either, or
///   from waiting on the customer after either) restarts the resolution
///   clock, and the first-response clock if no agent ever
///   answered, each in a new cycle.
///
/// Returns the events to record. Timers of changed deadlines are
/// rescheduled by the caller ([`timers_of`]); old ones fire stale and
/// record nothing.
pub fn apply_status(
    c: &mut conversation::Model,
    clock: &Clock,
    to: &str,
    now: DateTime<Utc>,
) -> Vec<Met> {
    let from = c.status.clone();
    let stopped = c
        .sla_targets
        .as_ref()
        .is_some_and(|s| s.stopped_at.is_some());
    let reopening =
        to == OPEN && (from == RESOLVED || from == CLOSED || c.resolved_at.is_some() || stopped);
    c.status = to.to_string();
    c.updated_at = now;
    let mut met = Vec::new();
    let Some(mut snap) = Snapshot::of(c) else {
        if to == RESOLVED && from != RESOLVED {
            c.resolved_at = Some(now);
        } else if reopening {
            c.resolved_at = None;
            c.resolution_business_s = None;
        }
        stamp_business(c, clock);
        return met;
    };
    match (from.as_str(), to) {
        (f, t) if f == t => {}
        _ if reopening => {
            c.resolved_at = None;
            c.resolution_business_s = None;
            snap.paused_at = None;
            snap.stopped_at = None;
            restart(c, &mut snap, clock, Target::Resolution, now);
            if c.first_responded_at.is_none() {
                restart(c, &mut snap, clock, Target::FirstResponse, now);
            }
        }
        // Stopped clocks are not paused: opening starts new ones.
        (_, PENDING_CUSTOMER) if stopped => {}
        (_, PENDING_CUSTOMER) => {
            snap.paused_at.get_or_insert(now);
        }
        (PENDING_CUSTOMER, OPEN) => {
            if let Some(p) = snap.paused_at.take() {
                let moved = |d: Option<DateTime<Utc>>| d.map(|d| shift(clock, p, d, now));
                c.first_response_due_at = moved(c.first_response_due_at);
                c.next_response_due_at = moved(c.next_response_due_at);
                c.resolution_due_at = moved(c.resolution_due_at);
                for w in snap.warn.values_mut() {
                    *w = shift(clock, p, *w, now);
                }
            }
        }
        // Closing or resolving stopped the clocks already (also when the
        // conversation waited on the customer since): nothing is settled
        // again, and a resolution time once counted stays.
        (_, RESOLVED | CLOSED) if stopped || from == RESOLVED || from == CLOSED => {
            c.resolved_at = c.resolved_at.or((to == RESOLVED).then_some(now));
        }
        (_, RESOLVED | CLOSED) => {
            let at = clock_time(&snap, now);
            if let Some(due) = c
                .first_response_due_at
                .filter(|_| c.first_responded_at.is_none())
                && at > due
            {
                met.push(settled(
                    Target::FirstResponse,
                    due,
                    snap.cycle(Target::FirstResponse),
                    at,
                ));
            }
            if let Some(due) = c.next_response_due_at.take()
                && at > due
            {
                met.push(settled(
                    Target::NextResponse,
                    due,
                    snap.cycle(Target::NextResponse),
                    at,
                ));
            }
            snap.warn.remove(Target::NextResponse.as_str());
            if let Some(due) = c.resolution_due_at.filter(|_| c.resolved_at.is_none())
                && (to == RESOLVED || at > due)
            {
                met.push(settled(
                    Target::Resolution,
                    due,
                    snap.cycle(Target::Resolution),
                    at,
                ));
            }
            if to == RESOLVED {
                c.resolved_at = Some(now);
            }
            snap.paused_at = None;
            // The clocks' reading when they stopped (a paused one's is the
            // pause): where the conversation's promise stands.
            snap.stopped_at = Some(at);
        }
        _ => {}
    }
    recompute_due(c);
    c.sla_targets = Some(snap);
    stamp_business(c, clock);
    met
}

/// Whole seconds from `from` to `to` on `clock` (none if `to` is earlier):
/// a conversation's business-time response figures, as reports count them.
pub fn business_seconds(clock: &Clock, from: DateTime<Utc>, to: DateTime<Utc>) -> Option<i64> {
    (to >= from).then(|| (clock.minutes_between(from, to) * 60.0).round() as i64)
}

/// Keeps the stored business-time figures in step with the timestamps:
/// a figure is computed once, when its timestamp is set, and goes with it.
pub fn stamp_business(c: &mut conversation::Model, clock: &Clock) {
    let from = c.created_at;
    let figure = |at: Option<DateTime<Utc>>, kept: Option<i64>| {
        at.and_then(|t| kept.or_else(|| business_seconds(clock, from, t)))
    };
    c.first_response_business_s = figure(c.first_responded_at, c.first_response_business_s);
    c.resolution_business_s = figure(c.resolved_at, c.resolution_business_s);
}

/// `due_at`: the earliest deadline still running (none unless OPEN).
pub fn recompute_due(c: &mut conversation::Model) {
    c.due_at = if c.status == OPEN {
        [
            c.first_response_due_at
                .filter(|_| c.first_responded_at.is_none()),
            c.next_response_due_at,
            c.resolution_due_at.filter(|_| c.resolved_at.is_none()),
        ]
        .into_iter()
        .flatten()
        .min()
    } else {
        None
    };
}

/// An agent replied: the first response is given (met if in time, its
/// business time counted on `clock`, which only the first reply reads),
/// and a running next-response clock stops (met if in time). A reply after
/// a deadline records the breach (see [`Met`]); while the conversation
/// waits on the customer its clocks read the moment they paused.
pub fn agent_replied(c: &mut conversation::Model, clock: &Clock, now: DateTime<Utc>) -> Vec<Met> {
    let mut met = Vec::new();
    let snap = Snapshot::of(c);
    let cycle = |t: Target| snap.as_ref().map_or(0, |s| s.cycle(t));
    let at = snap.as_ref().map_or(now, |s| clock_time(s, now));
    // A reply to a resolved or closed conversation settles nothing: its
    // clocks stopped (and what was late then was recorded then).
    let stopped = snap.as_ref().is_some_and(|s| s.stopped_at.is_some());
    if c.first_responded_at.is_none() {
        c.first_responded_at = Some(now);
        c.first_response_business_s = business_seconds(clock, c.created_at, now);
        if let Some(due) = c.first_response_due_at.filter(|_| !stopped) {
            met.push(settled(
                Target::FirstResponse,
                due,
                cycle(Target::FirstResponse),
                at,
            ));
        }
    }
    if let Some(due) = c.next_response_due_at.take().filter(|_| !stopped) {
        met.push(settled(
            Target::NextResponse,
            due,
            cycle(Target::NextResponse),
            at,
        ));
    }
    c.updated_at = now;
    recompute_due(c);
    met
}

/// The customer wrote again after an agent reply: the next-response clock
/// starts, in a new cycle.
pub fn customer_spoke(c: &mut conversation::Model, clock: &Clock, now: DateTime<Utc>) {
    if c.first_responded_at.is_none() || c.next_response_due_at.is_some() {
        return;
    }
    let Some(mut snap) = Snapshot::of(c) else {
        return;
    };
    let key = Target::NextResponse.as_str().to_string();
    let Some(d) = sla::deadline(
        clock,
        &snap.minutes,
        Target::NextResponse,
        now,
        snap.warn_at_percent,
    ) else {
        return;
    };
    *snap.cycles.entry(key.clone()).or_insert(0) += 1;
    snap.warn.insert(key, d.warn);
    c.next_response_due_at = Some(d.due);
    c.sla_targets = Some(snap);
    recompute_due(c);
}

/// What settling a conversation's deadlines recorded: the new events'
/// payloads by workspace (for live alerts, after the commit) and whether a
/// new breach escalated it.
#[derive(Debug, Default)]
pub struct Settled {
    pub alerts: Vec<(Uuid, serde_json::Value)>,
    pub escalated: bool,
}

/// Records the events an agent's reply or a status change settled (see
/// [`Met`]) and, as the timers do, escalates the conversation on a new
/// breach while it is OPEN: a late reply recorded the breach first must not
/// skip the escalation the timer would have made. `saved` is the updated
/// row, locked by its update.
pub async fn settle<C: ConnectionTrait>(
    conn: &C,
    saved: &conversation::Model,
    met: Vec<Met>,
    now: DateTime<Utc>,
) -> Result<Settled, DbErr> {
    let events: Vec<NewEvent<'_>> = met
        .iter()
        .map(|(kind, target, deadline, cycle)| NewEvent {
            conversation: saved,
            kind,
            target: *target,
            cycle: *cycle,
            deadline: *deadline,
        })
        .collect();
    let fresh = record_events(conn, &events, now).await?;
    let breached = fresh.iter().any(|(k, _)| events[*k].kind == "SLA_BREACHED");
    Ok(Settled {
        escalated: breached && escalate(conn, saved).await?,
        alerts: fresh
            .into_iter()
            .map(|(_, payload)| (saved.workspace_id, payload))
            .collect(),
    })
}

/// An SLA event to record.
pub struct NewEvent<'a> {
    pub conversation: &'a conversation::Model,
    pub kind: &'a str,
    pub target: Target,
    pub cycle: i32,
    pub deadline: DateTime<Utc>,
}

/// Rows per multi-row statement: well under both backends' parameter limits.
const EVENT_CHUNK: usize = 500;

/// Records many SLA events in a few statements: each at most once (the
/// unique key skips repeats), the new ones queued for webhooks in the same
/// transaction. Returns (index into `events`, payload) of the new ones.
pub async fn record_events<C: ConnectionTrait>(
    conn: &C,
    events: &[NewEvent<'_>],
    now: DateTime<Utc>,
) -> Result<Vec<(usize, serde_json::Value)>, DbErr> {
    use crate::entities::sla_event;
    use rapport_domain::{GlobalId, Kind};
    use sea_orm::sea_query::OnConflict;
    use sea_orm::{QuerySelect, Set};
    let mut fresh = Vec::new();
    for (chunk_no, chunk) in events.chunks(EVENT_CHUNK).enumerate() {
        let ids: Vec<Uuid> = chunk.iter().map(|_| Uuid::now_v7()).collect();
        let rows = chunk.iter().zip(&ids).map(|(e, id)| {
            let c = e.conversation;
            sla_event::ActiveModel {
                id: Set(*id),
                agency_id: Set(c.agency_id),
                workspace_id: Set(c.workspace_id),
                conversation_id: Set(c.id),
                kind: Set(e.kind.into()),
                target: Set(e.target.as_str().into()),
                cycle: Set(e.cycle),
                deadline_at: Set(e.deadline),
                fired_at: Set(now),
                lateness_ms: Set(if e.kind == "SLA_BREACHED" {
                    (now - e.deadline).num_milliseconds()
                } else {
                    0
                }),
                created_at: Set(now),
            }
        });
        sla_event::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::columns([
                    sla_event::Column::ConversationId,
                    sla_event::Column::Target,
                    sla_event::Column::Kind,
                    sla_event::Column::Cycle,
                ])
                .do_nothing()
                .to_owned(),
            )
            .exec_without_returning(conn)
            .await?;
        // A row whose id is in the table was inserted now; a repeat's id
        // never made it in.
        let stored: std::collections::HashSet<Uuid> = sla_event::Entity::find()
            .select_only()
            .column(sla_event::Column::Id)
            .filter(sla_event::Column::Id.is_in(ids.iter().copied()))
            .into_tuple::<Uuid>()
            .all(conn)
            .await?
            .into_iter()
            .collect();
        for (i, (e, id)) in chunk.iter().zip(&ids).enumerate() {
            if stored.contains(id) {
                let c = e.conversation;
                let payload = serde_json::json!({
                    "type": e.kind,
                    "target": e.target.as_str(),
                    "workspaceId": GlobalId::encode(Kind::Workspace, c.workspace_id),
                    "conversationId": GlobalId::encode(Kind::Conversation, c.id),
                    "deadline": e.deadline.to_rfc3339(),
                    "firedAt": now.to_rfc3339(),
                    "priority": c.priority,
                });
                fresh.push((chunk_no * EVENT_CHUNK + i, payload));
            }
        }
    }
    let queued: Vec<crate::outbox::Outgoing<'_>> = fresh
        .iter()
        .map(|(i, payload)| {
            let e = &events[*i];
            let c = e.conversation;
            crate::outbox::Outgoing {
                agency_id: c.agency_id,
                workspace_id: c.workspace_id,
                event_type: e.kind,
                idempotency_key: format!("{}:{}:{}:{}", c.id, e.target.as_str(), e.kind, e.cycle),
                payload,
            }
        })
        .collect();
    crate::outbox::queue_many(conn, &queued).await?;
    Ok(fresh)
}

/// On a breach, applies the policy's escalation in the breach's
/// transaction: raise the priority (the inbox ranks it higher) and assign
/// the conversation. Returns whether anything changed.
///
/// `c` must have been read locked in this transaction
/// ([`crate::locks::conversations`]), as the breach was: nobody can have
/// re-ranked, assigned or resolved it since.
pub async fn escalate<C: ConnectionTrait>(
    conn: &C,
    c: &conversation::Model,
) -> Result<bool, DbErr> {
    use crate::entities::membership;
    use rapport_domain::priority::PriorityLevel;
    use sea_orm::{ActiveModelTrait, IntoActiveModel, Set};
    if c.status != "OPEN" {
        // Resolved, closed or waiting on the customer: nobody needs
        // calling. (A reply alone leaves it OPEN: the breach happened, and
        // the escalation stands.)
        return Ok(false);
    }
    // The policy as it is now: its escalation is who to call, and a
    // policy deleted since calls nobody (the deadlines copied when the
    // conversation opened still run).
    let Some(policy) = (match c.sla_policy_id {
        Some(id) => {
            sla_policy::Entity::find_by_id(id)
                .filter(sla_policy::Column::DeletedAt.is_null())
                .one(conn)
                .await?
        }
        None => None,
    }) else {
        return Ok(false);
    };
    let e = &policy.escalation;
    let raise = e
        .get("raisePriorityTo")
        .and_then(|v| v.as_str())
        .and_then(PriorityLevel::parse);
    let uuid_at = |k: &str| {
        e.get(k)
            .and_then(|v| v.as_str())
            .and_then(|s| Uuid::parse_str(s).ok())
    };
    let assign = match (uuid_at("assignTo"), uuid_at("assignToTeam")) {
        (Some(member), _) => Some(member),
        (None, Some(team)) => crate::teams::least_loaded(
            conn,
            c.agency_id,
            team,
            c.workspace_id,
            c.assignee_membership_id,
        )
        .await
        .map_err(|e| DbErr::Custom(e.to_string()))?,
        (None, None) => None,
    };
    let mut am = c.clone().into_active_model();
    let mut changed = false;
    if let Some(level) = raise
        && PriorityLevel::parse(&c.priority).is_none_or(|p| p < level)
    {
        // The inbox orders by score: lift it to the level's floor.
        let floor = match level {
            PriorityLevel::Urgent => 0.6,
            PriorityLevel::High => 0.4,
            PriorityLevel::Normal => 0.2,
            PriorityLevel::Low => 0.0,
        };
        am.priority = Set(level.as_str().into());
        am.priority_score = Set(c.priority_score.max(floor));
        changed = true;
    }
    // The member as they are now, not as when the policy was saved: one
    // made read-only (CLIENT_VIEWER), restricted away from the workspace
    // or not (yet) accepted is not called.
    let callable = match assign.filter(|m| c.assignee_membership_id != Some(*m)) {
        None => None,
        Some(member) => match membership::Entity::find_by_id(member)
            .filter(membership::Column::AgencyId.eq(c.agency_id))
            .filter(membership::Column::Role.ne("CLIENT_VIEWER"))
            .filter(membership::Column::AcceptedAt.is_not_null())
            .one(conn)
            .await?
        {
            Some(m)
                if crate::tenancy::member_sees_workspace(conn, &m, c.workspace_id)
                    .await
                    .map_err(|e| DbErr::Custom(e.to_string()))? =>
            {
                Some(member)
            }
            _ => None,
        },
    };
    if let Some(member) = callable {
        am.assignee_membership_id = Set(Some(member));
        changed = true;
    }
    if changed {
        am.updated_at = Set(Utc::now());
        am.update(conn).await?;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    const CLOCK: Clock = Clock::Calendar24x7;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, h, m, 0).unwrap()
    }

    /// An open conversation received at 09:00 under a policy of 60 minutes
    /// to the first response, 30 to the next and 600 to resolution.
    fn opened() -> conversation::Model {
        let start = at(9, 0);
        let minutes = sla::TargetMinutes {
            first_response: Some(60),
            next_response: Some(30),
            resolution: Some(600),
        };
        let snap = Snapshot {
            policy_id: Uuid::nil(),
            minutes,
            warn_at_percent: 80,
            calendar_id: None,
            warn: HashMap::new(),
            paused_at: None,
            cycles: HashMap::new(),
            stopped_at: None,
        };
        let mut c = conversation::Model {
            id: Uuid::nil(),
            agency_id: Uuid::nil(),
            workspace_id: Uuid::nil(),
            channel_id: Uuid::nil(),
            author_id: Uuid::nil(),
            parent_conversation_id: None,
            status: OPEN.into(),
            visibility: "PUBLIC".into(),
            priority: "NORMAL".into(),
            priority_score: 0.3,
            priority_breakdown: conversation::StoredBreakdown::unread(),
            sentiment: None,
            opening_sentiment: None,
            assignee_membership_id: None,
            sla_policy_id: Some(Uuid::nil()),
            sla_targets: Some(snap),
            first_response_due_at: Some(start + Duration::minutes(60)),
            next_response_due_at: None,
            resolution_due_at: Some(start + Duration::minutes(600)),
            due_at: None,
            first_responded_at: None,
            resolved_at: None,
            first_response_business_s: None,
            resolution_business_s: None,
            last_customer_message_at: start,
            recovered: false,
            created_at: start,
            updated_at: start,
            opened_by_agent: false,
        };
        recompute_due(&mut c);
        c
    }

    fn kinds(events: &[Met]) -> Vec<(&'static str, Target)> {
        events.iter().map(|(k, t, _, _)| (*k, *t)).collect()
    }

    #[test]
    fn a_late_reply_records_the_breach_an_early_one_the_promise_kept() {
        let mut c = opened();
        let e = agent_replied(&mut c, &CLOCK, at(10, 5));
        assert_eq!(kinds(&e), [("SLA_BREACHED", Target::FirstResponse)]);
        customer_spoke(&mut c, &CLOCK, at(11, 0));
        assert_eq!(c.next_response_due_at, Some(at(11, 30)));
        let e = agent_replied(&mut c, &CLOCK, at(11, 20));
        assert_eq!(kinds(&e), [("SLA_MET", Target::NextResponse)]);
    }

    #[test]
    fn waiting_on_the_customer_moves_the_next_response_deadline_too() {
        let mut c = opened();
        agent_replied(&mut c, &CLOCK, at(9, 10));
        customer_spoke(&mut c, &CLOCK, at(9, 20));
        assert_eq!(c.next_response_due_at, Some(at(9, 50)));
        apply_status(&mut c, &CLOCK, PENDING_CUSTOMER, at(9, 30));
        assert_eq!(c.due_at, None);
        // Paused for an hour: 20 minutes were left, and still are.
        apply_status(&mut c, &CLOCK, OPEN, at(10, 30));
        assert_eq!(c.next_response_due_at, Some(at(10, 50)));
        assert_eq!(c.due_at, Some(at(10, 50)));
        let e = agent_replied(&mut c, &CLOCK, at(10, 45));
        assert_eq!(kinds(&e), [("SLA_MET", Target::NextResponse)]);
    }

    #[test]
    fn resolving_while_paused_counts_the_time_left_at_the_pause() {
        let mut c = opened();
        agent_replied(&mut c, &CLOCK, at(9, 10));
        apply_status(&mut c, &CLOCK, PENDING_CUSTOMER, at(9, 30));
        // Two days later, past the 19:00 resolution deadline as it stood.
        let later = at(9, 30) + Duration::days(2);
        let e = apply_status(&mut c, &CLOCK, RESOLVED, later);
        assert_eq!(kinds(&e), [("SLA_MET", Target::Resolution)]);
        assert_eq!(c.resolved_at, Some(later));
    }

    #[test]
    fn resolving_stops_the_next_response_clock_and_a_new_message_starts_one() {
        let mut c = opened();
        agent_replied(&mut c, &CLOCK, at(9, 10));
        customer_spoke(&mut c, &CLOCK, at(9, 20));
        let e = apply_status(&mut c, &CLOCK, RESOLVED, at(9, 40));
        assert_eq!(kinds(&e), [("SLA_MET", Target::Resolution)]);
        assert_eq!(c.next_response_due_at, None, "resolving answers it");
        // A week later the customer writes again (ingestion reopens, then
        // the message starts the next-response clock in a new cycle).
        let week = at(9, 40) + Duration::days(7);
        apply_status(&mut c, &CLOCK, OPEN, week);
        customer_spoke(&mut c, &CLOCK, week);
        assert_eq!(c.resolved_at, None);
        assert_eq!(c.next_response_due_at, Some(week + Duration::minutes(30)));
        assert_eq!(c.resolution_due_at, Some(week + Duration::minutes(600)));
        assert_eq!(c.due_at, Some(week + Duration::minutes(30)));
        let snap = Snapshot::of(&c).unwrap();
        assert_eq!(snap.cycle(Target::NextResponse), 2);
        assert_eq!(snap.cycle(Target::Resolution), 1);
    }

    #[test]
    fn an_unanswered_conversation_closed_and_reopened_owes_a_first_response_from_then() {
        let mut c = opened();
        let e = apply_status(&mut c, &CLOCK, CLOSED, at(9, 30));
        assert!(e.is_empty(), "nothing was late: {e:?}");
        let later = at(9, 30) + Duration::days(3);
        apply_status(&mut c, &CLOCK, OPEN, later);
        assert_eq!(c.first_response_due_at, Some(later + Duration::minutes(60)));
        assert_eq!(
            Snapshot::of(&c).unwrap().cycle(Target::FirstResponse),
            1,
            "a new cycle: the old timer fires stale"
        );
        assert_eq!(c.due_at, Some(later + Duration::minutes(60)));
    }

    #[test]
    fn closing_after_a_deadline_passed_records_its_breach() {
        let mut c = opened();
        let e = apply_status(&mut c, &CLOCK, CLOSED, at(10, 30));
        assert_eq!(kinds(&e), [("SLA_BREACHED", Target::FirstResponse)]);
        assert_eq!(c.resolved_at, None, "closed, not resolved");
    }

    #[test]
    fn a_customer_answering_a_follow_up_reopens_a_resolved_conversation() {
        let mut c = opened();
        agent_replied(&mut c, &CLOCK, at(9, 10));
        apply_status(&mut c, &CLOCK, RESOLVED, at(9, 20));
        c.resolution_business_s = Some(1_200);
        // The agent asks the customer to share the outcome...
        apply_status(&mut c, &CLOCK, PENDING_CUSTOMER, at(9, 25));
        // ...and their answer opens it again, as a new resolution cycle.
        apply_status(&mut c, &CLOCK, OPEN, at(12, 0));
        assert_eq!(c.resolved_at, None);
        assert_eq!(c.resolution_business_s, None);
        assert_eq!(c.resolution_due_at, Some(at(22, 0)));
        assert_eq!(Snapshot::of(&c).unwrap().cycle(Target::Resolution), 1);
    }

    #[test]
    fn without_a_policy_reopening_forgets_the_resolution() {
        let mut c = opened();
        c.sla_targets = None;
        apply_status(&mut c, &CLOCK, RESOLVED, at(10, 0));
        assert!(c.resolved_at.is_some() && c.resolution_business_s.is_some());
        apply_status(&mut c, &CLOCK, OPEN, at(11, 0));
        assert_eq!((c.resolved_at, c.resolution_business_s), (None, None));
        apply_status(&mut c, &CLOCK, RESOLVED, at(12, 0));
        assert_eq!(c.resolution_business_s, Some(3 * 3600), "counted anew");
    }

    #[test]
    fn stopped_clocks_settle_nothing_again_whatever_comes_between() {
        // Closed unanswered before any deadline, set waiting, then
        // resolved after the first-response deadline: nothing is late.
        let mut c = opened();
        assert!(apply_status(&mut c, &CLOCK, CLOSED, at(9, 30)).is_empty());
        apply_status(&mut c, &CLOCK, PENDING_CUSTOMER, at(9, 40));
        let e = apply_status(&mut c, &CLOCK, RESOLVED, at(12, 0));
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(c.resolved_at, Some(at(12, 0)));
        // Resolved, set waiting, resolved again: the resolution counted
        // the first time stays, with its business time.
        let mut c = opened();
        agent_replied(&mut c, &CLOCK, at(9, 10));
        let e = apply_status(&mut c, &CLOCK, RESOLVED, at(9, 20));
        assert_eq!(kinds(&e), [("SLA_MET", Target::Resolution)]);
        let (resolved, business) = (c.resolved_at, c.resolution_business_s);
        apply_status(&mut c, &CLOCK, PENDING_CUSTOMER, at(9, 25));
        assert!(apply_status(&mut c, &CLOCK, RESOLVED, at(20, 0)).is_empty());
        assert!(apply_status(&mut c, &CLOCK, CLOSED, at(21, 0)).is_empty());
        assert_eq!(
            (c.resolved_at, c.resolution_business_s),
            (resolved, business)
        );
    }

    #[test]
    fn a_reply_after_resolving_settles_no_deadline() {
        // Resolved at 09:30 without a reply (handled by phone, say); the
        // follow-up at 11:00 is not a first response an hour late.
        let mut c = opened();
        let e = apply_status(&mut c, &CLOCK, RESOLVED, at(9, 30));
        assert_eq!(kinds(&e), [("SLA_MET", Target::Resolution)]);
        let e = agent_replied(&mut c, &CLOCK, at(11, 0));
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(
            c.first_responded_at,
            Some(at(11, 0)),
            "still the first reply"
        );
        // While open, a late reply records the breach as before.
        let mut c = opened();
        let e = agent_replied(&mut c, &CLOCK, at(10, 30));
        assert_eq!(kinds(&e), [("SLA_BREACHED", Target::FirstResponse)]);
    }

    #[test]
    fn a_pause_keeps_the_time_left_to_the_second() {
        let mut c = opened();
        let paused = at(9, 30) + Duration::seconds(30);
        apply_status(&mut c, &CLOCK, PENDING_CUSTOMER, paused);
        apply_status(&mut c, &CLOCK, OPEN, at(12, 0));
        // 29 min 30 s were left of the first hour.
        assert_eq!(
            c.first_response_due_at,
            Some(at(12, 29) + Duration::seconds(30))
        );
    }

    #[test]
    fn resolving_while_paused_stops_the_clocks_at_the_pause() {
        let mut c = opened();
        apply_status(&mut c, &CLOCK, PENDING_CUSTOMER, at(9, 30));
        let e = apply_status(&mut c, &CLOCK, RESOLVED, at(9, 0) + Duration::days(2));
        assert_eq!(kinds(&e), [("SLA_MET", Target::Resolution)]);
        assert_eq!(Snapshot::of(&c).unwrap().stopped_at, Some(at(9, 30)));
    }

    #[test]
    fn a_closed_conversation_set_waiting_and_then_opened_starts_new_clocks() {
        let mut c = opened();
        apply_status(&mut c, &CLOCK, CLOSED, at(9, 30));
        // Closed clocks are stopped, not paused: waiting on the customer
        // has nothing to pause...
        apply_status(&mut c, &CLOCK, PENDING_CUSTOMER, at(9, 40));
        assert_eq!(Snapshot::of(&c).unwrap().paused_at, None);
        // ...and opening it days later owes a first response from then,
        // not the 20 minutes left when it was closed.
        let later = at(9, 40) + Duration::days(3);
        let e = apply_status(&mut c, &CLOCK, OPEN, later);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(c.first_response_due_at, Some(later + Duration::minutes(60)));
        assert_eq!(c.resolution_due_at, Some(later + Duration::minutes(600)));
        let snap = Snapshot::of(&c).unwrap();
        assert_eq!(snap.cycle(Target::FirstResponse), 1);
        assert_eq!(snap.cycle(Target::Resolution), 1);
        assert_eq!(snap.stopped_at, None, "running again");
        // Paused and opened again now resumes, as for any open conversation.
        apply_status(
            &mut c,
            &CLOCK,
            PENDING_CUSTOMER,
            later + Duration::minutes(10),
        );
        apply_status(&mut c, &CLOCK, OPEN, later + Duration::minutes(40));
        assert_eq!(c.first_response_due_at, Some(later + Duration::minutes(90)));
        assert_eq!(Snapshot::of(&c).unwrap().cycle(Target::FirstResponse), 1);
    }
}
