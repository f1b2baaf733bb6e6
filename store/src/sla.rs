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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub policy_id: Uuid,
    pub minutes: sla::TargetMinutes,
    pub warn_at_percent: u8,
    pub calendar_id: Option<Uuid>,
    /// Warning instants of the running deadlines, by target.
    #[serde(default)]
    pub warn: HashMap<String, DateTime<Utc>>,
}

/// A workspace's policies and calendars, loaded once per unit of work.
pub struct WorkspaceSla {
    policies: Vec<Policy<Uuid>>,
    clocks: HashMap<Uuid, (Clock, Option<Uuid>)>,
}

pub async fn load<C: ConnectionTrait>(conn: &C, workspace_id: Uuid) -> Result<WorkspaceSla, DbErr> {
    let rows = sla_policy::Entity::find()
        .filter(sla_policy::Column::WorkspaceId.eq(workspace_id))
        .filter(sla_policy::Column::DeletedAt.is_null())
        .all(conn)
        .await?;
    let calendars: HashMap<Uuid, BusinessCalendar> = business_calendar::Entity::find()
        .filter(business_calendar::Column::WorkspaceId.eq(workspace_id))
        .all(conn)
        .await?
        .iter()
        .filter_map(|c| stored_calendar(c).map(|cal| (c.id, cal)))
        .collect();
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
        let clock = match (
            r.business_hours,
            r.calendar_id.and_then(|id| calendars.get(&id)),
        ) {
            (true, Some(cal)) => Clock::Business(cal.clone()),
            _ => Clock::Calendar24x7,
        };
        clocks.insert(r.id, (clock, r.calendar_id.filter(|_| r.business_hours)));
        policies.push(Policy {
            id: r.id,
            position: r.position,
            is_default: r.is_default,
            conditions,
            targets,
            warn_at_percent: r.warn_at_percent.clamp(0, 100) as u8,
        });
    }
    Ok(WorkspaceSla { policies, clocks })
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
    let Some(snapshot) = c
        .sla_targets
        .clone()
        .and_then(|v| serde_json::from_value::<Snapshot>(v).ok())
    else {
        return Vec::new();
    };
    let running = [
        (
            Target::FirstResponse,
            c.first_response_due_at
                .filter(|_| c.first_responded_at.is_none()),
        ),
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
            cycle: 0,
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

pub async fn done(kv: &Kv, member: &str) -> RedisResult<()> {
    redis::cmd("ZREM")
        .arg(kv.key(CLAIMED))
        .arg(member)
        .query_async(&mut kv.conn())
        .await
}
