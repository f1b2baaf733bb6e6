//! The report's raw figures, as SQL aggregates over indexed range scans of
//! one workspace: each bucketed figure joins a small derived table of the
//! period's buckets (`SELECT i AS idx, lo, hi UNION ALL ...`) to the rows in
//! `[lo, hi)`, so the same statement runs on PostgreSQL and SQLite and
//! every bucket is a range scan. Conversations opened in the period are
//! read as rows: response times are computed in the domain (business time
//! needs the calendar), to the second.

use crate::entities::conversation;
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QuerySelect,
    Statement, Value,
};
use uuid::Uuid;

type Bucket = (DateTime<Utc>, DateTime<Utc>);

/// A statement under construction: placeholders in the backend's syntax.
struct Sql {
    backend: DbBackend,
    text: String,
    values: Vec<Value>,
}

impl Sql {
    fn new(backend: DbBackend) -> Self {
        Self {
            backend,
            text: String::new(),
            values: Vec::new(),
        }
    }

    fn bind(&mut self, v: impl Into<Value>) -> String {
        self.values.push(v.into());
        match self.backend {
            DbBackend::Postgres => format!("${}", self.values.len()),
            _ => "?".into(),
        }
    }

    /// The period's buckets as a derived table `(idx, lo, hi)`.
    fn buckets(&mut self, buckets: &[Bucket]) -> String {
        let parts: Vec<String> = buckets
            .iter()
            .enumerate()
            .map(|(i, (lo, hi))| {
                let lo = self.bind(*lo);
                let hi = self.bind(*hi);
                format!("SELECT CAST({i} AS BIGINT) AS idx, {lo} AS lo, {hi} AS hi")
            })
            .collect();
        format!("({})", parts.join(" UNION ALL "))
    }

    fn push(&mut self, s: &str) {
        self.text.push_str(s);
    }

    fn statement(self) -> Statement {
        Statement::from_sql_and_values(self.backend, self.text, self.values)
    }
}

/// Seconds between two timestamp columns, in the backend's dialect.
fn seconds_between(backend: DbBackend, later: &str, earlier: &str) -> String {
    match backend {
        DbBackend::Postgres => {
            format!("CAST(EXTRACT(EPOCH FROM ({later} - {earlier})) AS DOUBLE PRECISION)")
        }
        _ => format!("((julianday({later}) - julianday({earlier})) * 86400.0)"),
    }
}

const SENTIMENT_CLASS: &str = "CASE WHEN m.sentiment >= 0.05 THEN 'POSITIVE' \
     WHEN m.sentiment <= -0.05 THEN 'NEGATIVE' ELSE 'NEUTRAL' END";

/// Inbound messages received in a bucket, by channel and sentiment, with
/// the platform's delay (publish time to receipt).
#[derive(Debug, Clone, PartialEq)]
pub struct InboundRow {
    pub bucket: usize,
    pub channel_id: Uuid,
    pub sentiment: String,
    pub count: i64,
    pub delay_sum_secs: f64,
    pub delay_max_secs: f64,
}

pub async fn inbound<C: ConnectionTrait>(
    conn: &C,
    agency: Uuid,
    workspace: Uuid,
    buckets: &[Bucket],
) -> Result<Vec<InboundRow>, DbErr> {
    let backend = conn.get_database_backend();
    let mut q = Sql::new(backend);
    let b = q.buckets(buckets);
    let a = q.bind(agency);
    let w = q.bind(workspace);
    let delay = seconds_between(backend, "m.received_at", "m.published_at");
    q.push(&format!(
        "SELECT b.idx, m.channel_id, {SENTIMENT_CLASS} AS sentiment, COUNT(*) AS n, \
         SUM({delay}) AS delay_sum, MAX({delay}) AS delay_max \
         FROM {b} b JOIN messages m ON m.received_at >= b.lo AND m.received_at < b.hi \
         WHERE m.agency_id = {a} AND m.workspace_id = {w} AND m.direction = 'INBOUND' \
         GROUP BY b.idx, m.channel_id, 3"
    ));
    conn.query_all_raw(q.statement())
        .await?
        .into_iter()
        .map(|r| {
            Ok(InboundRow {
                bucket: r.try_get_by_index::<i64>(0)? as usize,
                channel_id: r.try_get_by_index(1)?,
                sentiment: r.try_get_by_index(2)?,
                count: r.try_get_by_index(3)?,
                delay_sum_secs: r.try_get_by_index::<Option<f64>>(4)?.unwrap_or(0.0),
                delay_max_secs: r.try_get_by_index::<Option<f64>>(5)?.unwrap_or(0.0),
            })
        })
        .collect()
}

/// A count per bucket and per member (None: not attributed).
#[derive(Debug, Clone, PartialEq)]
pub struct CountRow {
    pub bucket: usize,
    pub member: Option<Uuid>,
    pub count: i64,
}

async fn counts<C: ConnectionTrait>(
    conn: &C,
    buckets: &[Bucket],
    build: impl FnOnce(&mut Sql, &str),
) -> Result<Vec<CountRow>, DbErr> {
    let mut q = Sql::new(conn.get_database_backend());
    let b = q.buckets(buckets);
    build(&mut q, &b);
    conn.query_all_raw(q.statement())
        .await?
        .into_iter()
        .map(|r| {
            Ok(CountRow {
                bucket: r.try_get_by_index::<i64>(0)? as usize,
                member: r.try_get_by_index(1)?,
                count: r.try_get_by_index(2)?,
            })
        })
        .collect()
}

/// Replies sent (outbound messages), by bucket and by the member who sent.
pub async fn replies<C: ConnectionTrait>(
    conn: &C,
    agency: Uuid,
    workspace: Uuid,
    buckets: &[Bucket],
) -> Result<Vec<CountRow>, DbErr> {
    counts(conn, buckets, |q, b| {
        let a = q.bind(agency);
        let w = q.bind(workspace);
        q.push(&format!(
            "SELECT b.idx, m.sent_by_membership_id, COUNT(*) \
             FROM {b} b JOIN messages m ON m.received_at >= b.lo AND m.received_at < b.hi \
             WHERE m.agency_id = {a} AND m.workspace_id = {w} AND m.direction = 'OUTBOUND' \
             GROUP BY b.idx, m.sent_by_membership_id"
        ));
    })
    .await
}

/// Replies the canned-reply guard refused, by bucket and member.
pub async fn refusals<C: ConnectionTrait>(
    conn: &C,
    agency: Uuid,
    workspace: Uuid,
    buckets: &[Bucket],
) -> Result<Vec<CountRow>, DbErr> {
    counts(conn, buckets, |q, b| {
        let a = q.bind(agency);
        let w = q.bind(workspace);
        q.push(&format!(
            "SELECT b.idx, r.membership_id, COUNT(*) \
             FROM {b} b JOIN reply_refusals r ON r.created_at >= b.lo AND r.created_at < b.hi \
             WHERE r.agency_id = {a} AND r.workspace_id = {w} \
             GROUP BY b.idx, r.membership_id"
        ));
    })
    .await
}

/// Guard overrides (audited), by bucket and member.
pub async fn overrides<C: ConnectionTrait>(
    conn: &C,
    agency: Uuid,
    workspace: Uuid,
    buckets: &[Bucket],
) -> Result<Vec<CountRow>, DbErr> {
    counts(conn, buckets, |q, b| {
        // Bound in the order they appear (SQLite's `?` is positional).
        let a2 = q.bind(agency);
        let a = q.bind(agency);
        let w = q.bind(workspace);
        q.push(&format!(
            "SELECT b.idx, ms.id, COUNT(*) \
             FROM {b} b JOIN audit_log l ON l.created_at >= b.lo AND l.created_at < b.hi \
             LEFT JOIN memberships ms ON ms.user_id = l.actor_user_id AND ms.agency_id = {a2} \
             WHERE l.agency_id = {a} AND l.workspace_id = {w} AND l.action = 'sendReplyOverride' \
             GROUP BY b.idx, ms.id"
        ));
    })
    .await
}

/// SLA events fired in a bucket, by target and kind.
#[derive(Debug, Clone, PartialEq)]
pub struct SlaRow {
    pub bucket: usize,
    pub target: String,
    pub kind: String,
    pub count: i64,
}

pub async fn sla_events<C: ConnectionTrait>(
    conn: &C,
    agency: Uuid,
    workspace: Uuid,
    buckets: &[Bucket],
) -> Result<Vec<SlaRow>, DbErr> {
    let mut q = Sql::new(conn.get_database_backend());
    let b = q.buckets(buckets);
    let a = q.bind(agency);
    let w = q.bind(workspace);
    q.push(&format!(
        "SELECT b.idx, e.target, e.kind, COUNT(*) \
         FROM {b} b JOIN sla_events e ON e.fired_at >= b.lo AND e.fired_at < b.hi \
         WHERE e.agency_id = {a} AND e.workspace_id = {w} \
         GROUP BY b.idx, e.target, e.kind"
    ));
    conn.query_all_raw(q.statement())
        .await?
        .into_iter()
        .map(|r| {
            Ok(SlaRow {
                bucket: r.try_get_by_index::<i64>(0)? as usize,
                target: r.try_get_by_index(1)?,
                kind: r.try_get_by_index(2)?,
                count: r.try_get_by_index(3)?,
            })
        })
        .collect()
}

/// A conversation opened in the period, as the report needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub first_responded_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub sla_policy_id: Option<Uuid>,
    pub opening_sentiment: Option<f64>,
    pub recovered: bool,
    pub priority: String,
    pub assignee: Option<Uuid>,
}

type OpenedTuple = (
    Uuid,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<Uuid>,
    Option<f64>,
    bool,
    String,
    Option<Uuid>,
);

pub async fn opened<C: ConnectionTrait>(
    conn: &C,
    agency: Uuid,
    workspace: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Opened>, DbErr> {
    use conversation::Column as C;
    let rows: Vec<OpenedTuple> = conversation::Entity::find()
        .select_only()
        .columns([
            C::Id,
            C::CreatedAt,
            C::FirstRespondedAt,
            C::ResolvedAt,
            C::SlaPolicyId,
            C::OpeningSentiment,
            C::Recovered,
            C::Priority,
            C::AssigneeMembershipId,
        ])
        .filter(C::AgencyId.eq(agency))
        .filter(C::WorkspaceId.eq(workspace))
        .filter(C::CreatedAt.gte(from))
        .filter(C::CreatedAt.lt(to))
        .into_tuple()
        .all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| Opened {
            id: r.0,
            created_at: r.1,
            first_responded_at: r.2,
            resolved_at: r.3,
            sla_policy_id: r.4,
            opening_sentiment: r.5,
            recovered: r.6,
            priority: r.7,
            assignee: r.8,
        })
        .collect())
}

/// Deadlines still running now, per target, among those due in the period.
pub async fn running<C: ConnectionTrait>(
    conn: &C,
    agency: Uuid,
    workspace: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<[i64; 3], DbErr> {
    use conversation::Column as C;
    use sea_orm::PaginatorTrait;
    let base = || {
        conversation::Entity::find()
            .filter(C::AgencyId.eq(agency))
            .filter(C::WorkspaceId.eq(workspace))
            .filter(C::Status.is_in(["OPEN", "PENDING_CUSTOMER"]))
    };
    let running = |col: C| {
        base()
            .filter(col.gte(from.max(now)))
            .filter(col.lt(to.max(now)))
    };
    let first = running(C::FirstResponseDueAt)
        .filter(C::FirstRespondedAt.is_null())
        .count(conn)
        .await? as i64;
    let next = running(C::NextResponseDueAt).count(conn).await? as i64;
    let resolution = running(C::ResolutionDueAt)
        .filter(C::ResolvedAt.is_null())
        .count(conn)
        .await? as i64;
    Ok([first, next, resolution])
}
