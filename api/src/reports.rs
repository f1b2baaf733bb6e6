//! A workspace's report for a period: the store's aggregates put into
//! buckets and totals, response times summarized (calendar and business
//! time), per-agent figures. Shared by GraphQL, the printable shared report
//! and the CSV export.

use crate::error::ApiResult;
use async_graphql::{Enum, SimpleObject};
use chrono::{DateTime, Utc};
use rapport_domain::calendar::Clock;
use rapport_domain::report::{Granularity, Period, Summary, split, summarize_ms};
use rapport_domain::{GlobalId, Kind};
use rapport_store::entities::{channel, membership, user, workspace};
use rapport_store::reports::{self, CountRow};
use rapport_store::sla::business_seconds;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// Size of a report's time buckets, cut in the report's time zone.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "ReportGranularity")]
pub enum GqlGranularity {
    Hour,
    Day,
    Week,
}

impl From<GqlGranularity> for Granularity {
    fn from(g: GqlGranularity) -> Self {
        match g {
            GqlGranularity::Hour => Granularity::Hour,
            GqlGranularity::Day => Granularity::Day,
            GqlGranularity::Week => Granularity::Week,
        }
    }
}

pub fn granularity_name(g: Granularity) -> &'static str {
    match g {
        Granularity::Hour => "HOUR",
        Granularity::Day => "DAY",
        Granularity::Week => "WEEK",
    }
}

pub fn parse_granularity(raw: &str) -> Option<Granularity> {
    match raw {
        "HOUR" => Some(Granularity::Hour),
        "DAY" => Some(Granularity::Day),
        "WEEK" => Some(Granularity::Week),
        _ => None,
    }
}

/// p50, p90 and mean in seconds (nearest rank; null when nothing counted).
#[derive(SimpleObject, Clone, Debug, Default, PartialEq)]
pub struct DurationStats {
    /// How many durations were counted.
    pub count: i32,
    /// Median, in seconds.
    pub p50_seconds: Option<f64>,
    /// 90th percentile, in seconds.
    pub p90_seconds: Option<f64>,
    /// Mean, in seconds.
    pub mean_seconds: Option<f64>,
}

impl From<Summary> for DurationStats {
    fn from(s: Summary) -> Self {
        Self {
            count: s.count as i32,
            p50_seconds: s.p50,
            p90_seconds: s.p90,
            mean_seconds: s.mean,
        }
    }
}

/// A response time counted on the wall clock and on the conversation's
/// policy's business calendar (equal for 24x7 policies).
#[derive(SimpleObject, Clone, Debug, Default, PartialEq)]
pub struct ResponseTimes {
    /// Counted on the wall clock.
    pub calendar: DurationStats,
    /// Counted in the business hours of the conversation's policy.
    pub business: DurationStats,
}

/// A count under a key, e.g. inbound messages of one channel kind.
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub struct KeyCount {
    /// What is counted: a channel kind, sentiment, priority or time bin,
    /// depending on the list.
    pub key: String,
    /// How many.
    pub count: i32,
}

/// Events per target: SLA_MET, SLA_BREACHED and SLA_WARNING fired.
#[derive(SimpleObject, Clone, Debug, Default, PartialEq)]
pub struct TargetCompliance {
    /// FIRST_RESPONSE, NEXT_RESPONSE or RESOLUTION.
    pub target: String,
    /// SLA_MET events fired.
    pub met: i32,
    /// SLA_BREACHED events fired.
    pub breached: i32,
    /// SLA_WARNING events fired.
    pub warned: i32,
    /// met / (met + breached) in percent; null when neither happened.
    pub compliance_percent: Option<f64>,
}

/// Publish time to receipt: the platform's lag, not the agency's.
#[derive(SimpleObject, Clone, Debug, Default, PartialEq)]
pub struct PlatformDelay {
    /// Inbound messages measured.
    pub count: i32,
    /// Mean delay, in seconds; null when no message was measured.
    pub mean_seconds: Option<f64>,
    /// Longest delay, in seconds; null when no message was measured.
    pub max_seconds: Option<f64>,
}

/// A report's figures for the whole period or one bucket of it.
#[derive(SimpleObject, Clone, Debug, Default, PartialEq)]
pub struct ReportFigures {
    /// Inbound messages received.
    pub inbound: i32,
    /// Inbound messages per channel kind (X, FACEBOOK, ...).
    pub inbound_by_channel: Vec<KeyCount>,
    /// POSITIVE, NEUTRAL, NEGATIVE.
    pub inbound_by_sentiment: Vec<KeyCount>,
    /// Conversations opened (by their first message's receipt).
    pub conversations_opened: i32,
    /// Opened conversations by their current priority.
    pub conversations_by_priority: Vec<KeyCount>,
    /// Of the conversations opened here: first receipt to first reply.
    pub first_response: ResponseTimes,
    /// Of the conversations opened here: opening to resolution.
    pub resolution: ResponseTimes,
    /// SLA events fired here, per target.
    pub sla: Vec<TargetCompliance>,
    /// Replies sent (outbound messages).
    pub replies_sent: i32,
    /// Replies the canned-reply guard refused.
    pub canned_refused: i32,
    /// Replies sent over the guard's findings by an OWNER or ADMIN.
    pub overrides: i32,
    /// Opened conversations that began negative.
    pub negative_conversations: i32,
    /// ... of which the customer later wrote positively.
    pub recovered: i32,
    /// How long the platforms took to hand inbound messages to Rapport.
    pub platform_delay: PlatformDelay,
}

/// One time bucket of a report (an hour, day or week, clipped to the
/// period).
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub struct ReportBucket {
    /// Start of the bucket (inclusive).
    pub from: DateTime<Utc>,
    /// End of the bucket (exclusive).
    pub to: DateTime<Utc>,
    /// The bucket's start in the report's time zone.
    pub label: String,
    /// The bucket's figures.
    pub figures: ReportFigures,
}

/// One member's figures over a report's period.
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub struct AgentFigures {
    /// The member's ID.
    pub member_id: async_graphql::ID,
    /// The member's name.
    pub name: String,
    /// Replies they sent.
    pub replies_sent: i32,
    /// Their replies the canned-reply guard refused.
    pub canned_refused: i32,
    /// Replies they sent over the guard's findings.
    pub overrides: i32,
    /// Conversations opened in the period now assigned to them.
    pub assigned: i32,
    /// ... of which resolved.
    pub resolved: i32,
}

/// Deadlines due in the period that still run now.
#[derive(SimpleObject, Clone, Debug, Default, PartialEq)]
pub struct OpenDeadlines {
    /// First-response deadlines.
    pub first_response: i32,
    /// Next-response deadlines.
    pub next_response: i32,
    /// Resolution deadlines.
    pub resolution: i32,
}

/// Everything but the drill-down, which GraphQL pages.
#[derive(Clone, Debug)]
pub struct Report {
    pub workspace: workspace::Model,
    pub period: Period,
    pub total: ReportFigures,
    pub buckets: Vec<ReportBucket>,
    pub agents: Vec<AgentFigures>,
    pub open_deadlines: OpenDeadlines,
    /// First response times (calendar) of the whole period, binned.
    pub distribution: Vec<(String, u64)>,
}

/// First-response time bins of the distribution chart, in milliseconds.
const BINS: &[(&str, i64)] = &[
    ("< 5 min", 300_000),
    ("5-15 min", 900_000),
    ("15-60 min", 3_600_000),
    ("1-4 h", 14_400_000),
    ("4-24 h", 86_400_000),
    ("> 24 h", i64::MAX),
];

fn distribution(ms: &[i64]) -> Vec<(String, u64)> {
    let mut counts = vec![0u64; BINS.len()];
    for v in ms {
        let i = BINS
            .iter()
            .position(|(_, hi)| v < hi)
            .unwrap_or(BINS.len() - 1);
        counts[i] += 1;
    }
    BINS.iter()
        .zip(counts)
        .map(|((label, _), n)| (label.to_string(), n))
        .collect()
}

/// Everything one bucket (or the total) accumulates before summarizing.
#[derive(Default)]
struct Acc {
    inbound_channel: BTreeMap<String, i64>,
    inbound_sentiment: BTreeMap<String, i64>,
    delay_sum_ms: i64,
    delay_max_ms: Option<i64>,
    opened: i64,
    priority: BTreeMap<String, i64>,
    /// Durations in whole milliseconds.
    first_cal: Vec<i64>,
    first_biz: Vec<i64>,
    res_cal: Vec<i64>,
    res_biz: Vec<i64>,
    sla: BTreeMap<(String, String), i64>,
    replies: i64,
    refused: i64,
    overrides: i64,
    negative: i64,
    recovered: i64,
}

fn keyed(m: &BTreeMap<String, i64>) -> Vec<KeyCount> {
    m.iter()
        .map(|(k, n)| KeyCount {
            key: k.clone(),
            count: *n as i32,
        })
        .collect()
}

impl Acc {
    fn finish(mut self) -> ReportFigures {
        let inbound: i64 = self.inbound_channel.values().sum();
        let sla = ["FIRST_RESPONSE", "NEXT_RESPONSE", "RESOLUTION"]
            .iter()
            .map(|t| {
                let get = |k: &str| {
                    self.sla
                        .get(&(t.to_string(), k.to_string()))
                        .copied()
                        .unwrap_or(0) as i32
                };
                let (met, breached) = (get("SLA_MET"), get("SLA_BREACHED"));
                TargetCompliance {
                    target: t.to_string(),
                    met,
                    breached,
                    warned: get("SLA_WARNING"),
                    compliance_percent: (met + breached > 0)
                        .then(|| 100.0 * met as f64 / (met + breached) as f64),
                }
            })
            .collect();
        ReportFigures {
            inbound: inbound as i32,
            inbound_by_channel: keyed(&self.inbound_channel),
            inbound_by_sentiment: keyed(&self.inbound_sentiment),
            conversations_opened: self.opened as i32,
            conversations_by_priority: keyed(&self.priority),
            first_response: ResponseTimes {
                calendar: summarize_ms(&mut self.first_cal).into(),
                business: summarize_ms(&mut self.first_biz).into(),
            },
            resolution: ResponseTimes {
                calendar: summarize_ms(&mut self.res_cal).into(),
                business: summarize_ms(&mut self.res_biz).into(),
            },
            sla,
            replies_sent: self.replies as i32,
            canned_refused: self.refused as i32,
            overrides: self.overrides as i32,
            negative_conversations: self.negative as i32,
            recovered: self.recovered as i32,
            // To the millisecond.
            platform_delay: PlatformDelay {
                count: inbound as i32,
                mean_seconds: (inbound > 0)
                    .then(|| (self.delay_sum_ms as f64 / inbound as f64).round() / 1000.0),
                max_seconds: self.delay_max_ms.map(|ms| ms as f64 / 1000.0),
            },
        }
    }
}

/// Applies `f` to bucket `i`'s accumulator and the total's.
fn both(buckets: &mut [Acc], total: &mut Acc, i: usize, f: impl Fn(&mut Acc)) {
    if let Some(b) = buckets.get_mut(i) {
        f(b);
        f(total);
    }
}

fn per_member(rows: &[CountRow], into: &mut HashMap<Uuid, [i64; 3]>, slot: usize) {
    for r in rows {
        if let Some(m) = r.member {
            into.entry(m).or_default()[slot] += r.count;
        }
    }
}

/// The report of `ws` over `period`.
pub async fn build<C: ConnectionTrait>(
    conn: &C,
    ws: &workspace::Model,
    period: Period,
) -> ApiResult<Report> {
    let (agency, id) = (ws.agency_id, ws.id);
    let parts = split(&period.buckets);
    let whole = reports::whole(&period.buckets);
    let started = std::time::Instant::now();
    let lap = |what: &str| {
        tracing::debug!(
            stage = what,
            ms = started.elapsed().as_millis() as u64,
            "report"
        )
    };
    reports::tune(conn).await?;
    let inbound = reports::inbound(conn, agency, id, &parts).await?;
    lap("inbound");
    let replies = reports::replies(conn, agency, id, &parts).await?;
    lap("replies");
    let refusals = reports::refusals(conn, agency, id, &whole).await?;
    let overrides = reports::overrides(conn, agency, id, &whole).await?;
    lap("refusals and overrides");
    let sla_rows = reports::sla_events(conn, agency, id, &parts).await?;
    lap("sla events");
    let opened = reports::opened(conn, agency, id, &parts).await?;
    let unstamped = reports::unstamped(conn, agency, id, period.from, period.to).await?;
    let assigned = reports::assigned(conn, agency, id, period.from, period.to).await?;
    lap("opened conversations");
    let now = Utc::now();
    let running = reports::running(conn, agency, id, period.from, period.to, now).await?;
    lap("running deadlines");

    // By the channels the messages came through: a FEED or GENERIC
    // message filed here by its brand keywords came through a channel of
    // another workspace of the agency.
    let through: Vec<Uuid> = inbound
        .iter()
        .map(|r| r.channel_id)
        .collect::<std::collections::HashSet<_>>()
        .into_iter()
        .collect();
    let channels: HashMap<Uuid, String> = channel::Entity::find()
        .filter(channel::Column::AgencyId.eq(agency))
        .filter(channel::Column::Id.is_in(through))
        .all(conn)
        .await?
        .into_iter()
        .map(|c| (c.id, c.kind))
        .collect();

    let mut acc: Vec<Acc> = period.buckets.iter().map(|_| Acc::default()).collect();
    let mut total = Acc::default();
    for r in &inbound {
        let kind = channels
            .get(&r.channel_id)
            .cloned()
            .unwrap_or_else(|| "UNKNOWN".into());
        both(&mut acc, &mut total, r.bucket, |a| {
            *a.inbound_channel.entry(kind.clone()).or_default() += r.count;
            *a.inbound_sentiment.entry(r.sentiment.clone()).or_default() += r.count;
            a.delay_sum_ms += r.delay_sum_ms;
            a.delay_max_ms = a.delay_max_ms.max(r.delay_max_ms);
        });
    }
    for (rows, which) in [(&replies, 0), (&refusals, 1), (&overrides, 2)] {
        for r in rows.iter() {
            both(&mut acc, &mut total, r.bucket, |a| match which {
                0 => a.replies += r.count,
                1 => a.refused += r.count,
                _ => a.overrides += r.count,
            });
        }
    }
    for r in &sla_rows {
        both(&mut acc, &mut total, r.bucket, |a| {
            *a.sla.entry((r.target.clone(), r.kind.clone())).or_default() += r.count;
        });
    }
    for g in &opened {
        both(&mut acc, &mut total, g.bucket, |a| {
            a.opened += g.count;
            *a.priority.entry(g.priority.clone()).or_default() += g.count;
            a.negative += g.negative;
            a.recovered += g.recovered;
            a.first_cal.extend_from_slice(&g.first_ms);
            a.first_biz.extend_from_slice(&g.first_business_ms);
            a.res_cal.extend_from_slice(&g.resolution_ms);
            a.res_biz.extend_from_slice(&g.resolution_business_ms);
        });
    }
    if !unstamped.is_empty() {
        let clocks = rapport_store::sla::policy_clocks(conn, ws.id).await?;
        for c in &unstamped {
            let Some(i) = period.bucket_of(c.created_at) else {
                continue;
            };
            let clock = c
                .sla_policy_id
                .and_then(|p| clocks.get(&p))
                .unwrap_or(&Clock::Calendar24x7);
            let business = |kept: Option<i64>, end: Option<DateTime<Utc>>| {
                end.filter(|_| kept.is_none())
                    .and_then(|e| business_seconds(clock, c.created_at, e))
                    .map(|s| s * 1000)
            };
            let first = business(c.first_response_business_s, c.first_responded_at);
            let resolved = business(c.resolution_business_s, c.resolved_at);
            both(&mut acc, &mut total, i, |a| {
                a.first_biz.extend(first);
                a.res_biz.extend(resolved);
            });
        }
    }
    let assigned: HashMap<Uuid, (i64, i64)> =
        assigned.into_iter().map(|(m, a, r)| (m, (a, r))).collect();

    let mut by_member: HashMap<Uuid, [i64; 3]> = HashMap::new();
    per_member(&replies, &mut by_member, 0);
    per_member(&refusals, &mut by_member, 1);
    per_member(&overrides, &mut by_member, 2);
    for m in assigned.keys() {
        by_member.entry(*m).or_default();
    }
    let agents = agent_figures(conn, agency, &by_member, &assigned).await?;

    let tz = period.timezone.tz();
    let fmt = match period.granularity {
        Granularity::Hour => "%Y-%m-%d %H:%M",
        _ => "%Y-%m-%d",
    };
    let buckets = period
        .buckets
        .iter()
        .zip(acc)
        .map(|((lo, hi), a)| ReportBucket {
            from: *lo,
            to: *hi,
            label: lo.with_timezone(&tz).format(fmt).to_string(),
            figures: a.finish(),
        })
        .collect();
    lap("assembled");
    let distribution = distribution(&total.first_cal);
    Ok(Report {
        workspace: ws.clone(),
        distribution,
        total: total.finish(),
        buckets,
        agents,
        open_deadlines: OpenDeadlines {
            first_response: running[0] as i32,
            next_response: running[1] as i32,
            resolution: running[2] as i32,
        },
        period,
    })
}

async fn agent_figures<C: ConnectionTrait>(
    conn: &C,
    agency: Uuid,
    counts: &HashMap<Uuid, [i64; 3]>,
    assigned: &HashMap<Uuid, (i64, i64)>,
) -> ApiResult<Vec<AgentFigures>> {
    if counts.is_empty() {
        return Ok(Vec::new());
    }
    let members = membership::Entity::find()
        .filter(membership::Column::AgencyId.eq(agency))
        .filter(membership::Column::Id.is_in(counts.keys().copied()))
        .all(conn)
        .await?;
    let users: HashMap<Uuid, String> = user::Entity::find()
        .filter(user::Column::Id.is_in(members.iter().map(|m| m.user_id)))
        .all(conn)
        .await?
        .into_iter()
        .map(|u| (u.id, u.name))
        .collect();
    let mut out: Vec<AgentFigures> = members
        .iter()
        .map(|m| {
            let c = counts.get(&m.id).copied().unwrap_or_default();
            let (a, r) = assigned.get(&m.id).copied().unwrap_or_default();
            AgentFigures {
                member_id: GlobalId::encode(Kind::Member, m.id).into(),
                name: users.get(&m.user_id).cloned().unwrap_or_default(),
                replies_sent: c[0] as i32,
                canned_refused: c[1] as i32,
                overrides: c[2] as i32,
                assigned: a as i32,
                resolved: r as i32,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.replies_sent
            .cmp(&a.replies_sent)
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok(out)
}

/// The period a request names, checked.
pub fn period(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    granularity: Granularity,
    timezone: &str,
) -> ApiResult<Period> {
    let tz = rapport_domain::TimeZone::parse(timezone)?;
    Ok(Period::parse(from, to, granularity, tz)?)
}
