//! The report's raw figures, as SQL aggregates over indexed range scans of
//! one workspace, identical on PostgreSQL and SQLite.
//!
//! Messages and SLA events are counted from the rollups the database keeps
//! per 15-minute slot (see the `report_rollups` migration) for the whole
//! slots of each bucket, and from the rows themselves for a bucket's edges
//! that fill no whole slot ([`Split`]). Each statement joins a small derived
//! table of the ranges (`SELECT i AS idx, lo, hi UNION ALL ...`) so every
//! range is an index scan.
//!
//! Conversations opened in the period are aggregated per bucket and
//! priority; their response times come back as arrays of milliseconds
//! (PostgreSQL) or rows (SQLite) for exact nearest-rank percentiles.

use chrono::{DateTime, Utc};
use rapport_domain::report::Split;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, QueryResult, Statement, Value};
use std::collections::BTreeMap;
use uuid::Uuid;

type Range = (usize, DateTime<Utc>, DateTime<Utc>);

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

    /// Slot ranges (epoch seconds, computed here, never user input) as a
    /// derived table `(idx, lo, hi)`: a `VALUES` list, which SQLite does
    /// not count against its limit of 500 terms in a compound `SELECT`.
    fn slots(slots: &[(usize, i64, i64)]) -> String {
        let rows: Vec<String> = slots
            .iter()
            .map(|(i, lo, hi)| {
                format!("(CAST({i} AS BIGINT), CAST({lo} AS BIGINT), CAST({hi} AS BIGINT))")
            })
            .collect();
        format!(
            "(SELECT column1 AS idx, column2 AS lo, column3 AS hi FROM (VALUES {}) AS v)",
            rows.join(", ")
        )
    }

    fn push(&mut self, s: &str) {
        self.text.push_str(s);
    }

    async fn rows<C: ConnectionTrait>(self, conn: &C) -> Result<Vec<QueryResult>, DbErr> {
        conn.query_all_raw(Statement::from_sql_and_values(
            self.backend,
            self.text,
            self.values,
        ))
        .await
    }
}

/// Ranges per statement: SQLite refuses a compound `SELECT` of more than
/// 500 terms (a month by hour has 744 buckets).
const RANGES_PER_STATEMENT: usize = 400;

/// One `SELECT` per time range, joined by `UNION ALL`, run in statements of
/// at most [`RANGES_PER_STATEMENT`] ranges: `branch` gets the range's index
/// as a literal and binds its own values in the order they appear. Each
/// branch is a plain index range scan (a join with a derived table of
/// ranges let PostgreSQL choose a sequential scan of the whole workspace).
async fn range_rows<C: ConnectionTrait>(
    conn: &C,
    ranges: &[Range],
    mut branch: impl FnMut(&mut Sql, String, DateTime<Utc>, DateTime<Utc>) -> String,
) -> Result<Vec<QueryResult>, DbErr> {
    let mut out = Vec::new();
    for chunk in ranges.chunks(RANGES_PER_STATEMENT) {
        let mut q = Sql::new(conn.get_database_backend());
        let parts: Vec<String> = chunk
            .iter()
            .map(|(i, lo, hi)| branch(&mut q, format!("CAST({i} AS BIGINT)"), *lo, *hi))
            .collect();
        q.push(&parts.join(" UNION ALL "));
        out.extend(q.rows(conn).await?);
    }
    Ok(out)
}

/// On PostgreSQL, for the report's transaction: its statements are many
/// short index scans, where parallel workers and JIT compilation cost more
/// than they save, and its aggregates fit in memory.
pub async fn tune<C: ConnectionTrait>(conn: &C) -> Result<(), DbErr> {
    if conn.get_database_backend() == DbBackend::Postgres {
        conn.execute_unprepared(
            "SET LOCAL jit = off; SET LOCAL max_parallel_workers_per_gather = 0; \
             SET LOCAL work_mem = '32MB'",
        )
        .await?;
    }
    Ok(())
}

/// Microseconds since the epoch of a timestamp column on SQLite, which
/// stores RFC 3339 UTC text (0, 3, 6 or 9 fraction digits, then `+00:00`);
/// exact where `julianday` is off by tens of microseconds.
fn sqlite_epoch_us(col: &str) -> String {
    format!(
        "(CAST(strftime('%s', substr({col}, 1, 19)) AS INTEGER) * 1000000 + \
         CASE WHEN substr({col}, 20, 1) = '.' \
         THEN CAST(substr(substr({col}, 21, instr({col}, '+') - 21) || '000000', 1, 6) AS INTEGER) \
         ELSE 0 END)"
    )
}

/// Whole milliseconds from `earlier` to `later` (truncated toward zero, as
/// the rollups count the platform delay).
fn ms_between(backend: DbBackend, later: &str, earlier: &str) -> String {
    match backend {
        DbBackend::Postgres => {
            format!("CAST(trunc(EXTRACT(EPOCH FROM ({later} - {earlier})) * 1000) AS BIGINT)")
        }
        _ => format!(
            "(({} - {}) / 1000)",
            sqlite_epoch_us(later),
            sqlite_epoch_us(earlier)
        ),
    }
}

const SENTIMENT_CLASS: &str = "CASE WHEN m.sentiment >= 0.05 THEN 'POSITIVE' \
     WHEN m.sentiment <= -0.05 THEN 'NEGATIVE' ELSE 'NEUTRAL' END";

/// The rollups' "nobody" in `member_id`.
fn member(id: Option<Uuid>) -> Option<Uuid> {
    id.filter(|m| !m.is_nil())
}

/// Inbound messages received in a bucket, by channel and sentiment, with
/// the platform's delay (publish time to receipt, whole milliseconds).
#[derive(Debug, Clone, PartialEq)]
pub struct InboundRow {
    pub bucket: usize,
    pub channel_id: Uuid,
    pub sentiment: String,
    pub count: i64,
    pub delay_sum_ms: i64,
    pub delay_max_ms: Option<i64>,
}

fn inbound_row(r: QueryResult) -> Result<InboundRow, DbErr> {
    Ok(InboundRow {
        bucket: r.try_get_by_index::<i64>(0)? as usize,
        channel_id: r.try_get_by_index(1)?,
        sentiment: r.try_get_by_index(2)?,
        count: r.try_get_by_index(3)?,
        delay_sum_ms: r.try_get_by_index::<Option<i64>>(4)?.unwrap_or(0),
        delay_max_ms: r.try_get_by_index(5)?,
    })
}

pub async fn inbound<C: ConnectionTrait>(
    conn: &C,
    agency: Uuid,
    workspace: Uuid,
    split: &Split,
) -> Result<Vec<InboundRow>, DbErr> {
    let backend = conn.get_database_backend();
    let mut out = Vec::new();
    if !split.slots.is_empty() {
        let mut q = Sql::new(backend);
        let s = Sql::slots(&split.slots);
        let a = q.bind(agency);
        let w = q.bind(workspace);
        q.push(&format!(
            "SELECT s.idx, r.channel_id, r.sentiment, CAST(SUM(r.messages) AS BIGINT), \
             CAST(SUM(r.delay_sum_ms) AS BIGINT), MAX(r.delay_max_ms) \
             FROM {s} s JOIN report_message_slots r ON r.slot >= s.lo AND r.slot < s.hi \
             WHERE r.agency_id = {a} AND r.workspace_id = {w} AND r.direction = 'INBOUND' \
             GROUP BY s.idx, r.channel_id, r.sentiment"
        ));
        for r in q.rows(conn).await? {
            out.push(inbound_row(r)?);
        }
    }
    if !split.rows.is_empty() {
        let delay = ms_between(backend, "m.received_at", "m.published_at");
        let rows = range_rows(conn, &split.rows, |q, idx, lo, hi| {
            let a = q.bind(agency);
            let w = q.bind(workspace);
            let lo = q.bind(lo);
            let hi = q.bind(hi);
            format!(
                "SELECT {idx}, m.channel_id, {SENTIMENT_CLASS}, COUNT(*), \
                 CAST(SUM({delay}) AS BIGINT), MAX({delay}) FROM messages m \
                 WHERE m.agency_id = {a} AND m.workspace_id = {w} AND m.direction = 'INBOUND' \
                 AND m.received_at >= {lo} AND m.received_at < {hi} \
                 GROUP BY m.channel_id, 3"
            )
        })
        .await?;
        for r in rows {
            out.push(inbound_row(r)?);
        }
    }
    Ok(out)
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
    ranges: &[Range],
    branch: impl FnMut(&mut Sql, String, DateTime<Utc>, DateTime<Utc>) -> String,
) -> Result<Vec<CountRow>, DbErr> {
    if ranges.is_empty() {
        return Ok(Vec::new());
    }
    range_rows(conn, ranges, branch)
        .await?
        .into_iter()
        .map(|r| {
            Ok(CountRow {
                bucket: r.try_get_by_index::<i64>(0)? as usize,
                member: member(r.try_get_by_index(1)?),
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
    split: &Split,
) -> Result<Vec<CountRow>, DbErr> {
    let mut out = Vec::new();
    if !split.slots.is_empty() {
        let mut q = Sql::new(conn.get_database_backend());
        let s = Sql::slots(&split.slots);
        let a = q.bind(agency);
        let w = q.bind(workspace);
        q.push(&format!(
            "SELECT s.idx, r.member_id, CAST(SUM(r.messages) AS BIGINT) \
             FROM {s} s JOIN report_message_slots r ON r.slot >= s.lo AND r.slot < s.hi \
             WHERE r.agency_id = {a} AND r.workspace_id = {w} AND r.direction = 'OUTBOUND' \
             GROUP BY s.idx, r.member_id"
        ));
        for r in q.rows(conn).await? {
            out.push(CountRow {
                bucket: r.try_get_by_index::<i64>(0)? as usize,
                member: member(r.try_get_by_index(1)?),
                count: r.try_get_by_index(2)?,
            });
        }
    }
    out.extend(
        counts(conn, &split.rows, |q, idx, lo, hi| {
            let a = q.bind(agency);
            let w = q.bind(workspace);
            let lo = q.bind(lo);
            let hi = q.bind(hi);
            format!(
                "SELECT {idx}, m.sent_by_membership_id, COUNT(*) FROM messages m \
                 WHERE m.agency_id = {a} AND m.workspace_id = {w} AND m.direction = 'OUTBOUND' \
                 AND m.received_at >= {lo} AND m.received_at < {hi} \
                 GROUP BY m.sent_by_membership_id"
            )
        })
        .await?,
    );
    Ok(out)
}

/// The buckets themselves as row ranges (for tables without rollups).
pub fn whole(buckets: &[(DateTime<Utc>, DateTime<Utc>)]) -> Vec<Range> {
    buckets
        .iter()
        .enumerate()
        .map(|(i, (lo, hi))| (i, *lo, *hi))
        .collect()
}

/// Replies the canned-reply guard refused, by bucket and member (few rows:
/// read directly).
pub async fn refusals<C: ConnectionTrait>(
    conn: &C,
    agency: Uuid,
    workspace: Uuid,
    buckets: &[Range],
) -> Result<Vec<CountRow>, DbErr> {
    counts(conn, buckets, |q, idx, lo, hi| {
        let a = q.bind(agency);
        let w = q.bind(workspace);
        let lo = q.bind(lo);
        let hi = q.bind(hi);
        format!(
            "SELECT {idx}, r.membership_id, COUNT(*) FROM reply_refusals r \
             WHERE r.agency_id = {a} AND r.workspace_id = {w} \
             AND r.created_at >= {lo} AND r.created_at < {hi} \
             GROUP BY r.membership_id"
        )
    })
    .await
}

/// Guard overrides (audited), by bucket and member.
pub async fn overrides<C: ConnectionTrait>(
    conn: &C,
    agency: Uuid,
    workspace: Uuid,
    buckets: &[Range],
) -> Result<Vec<CountRow>, DbErr> {
    counts(conn, buckets, |q, idx, lo, hi| {
        // Bound in the order they appear (SQLite's `?` is positional).
        let a2 = q.bind(agency);
        let a = q.bind(agency);
        let w = q.bind(workspace);
        let lo = q.bind(lo);
        let hi = q.bind(hi);
        format!(
            "SELECT {idx}, ms.id, COUNT(*) FROM audit_log l \
             LEFT JOIN memberships ms ON ms.user_id = l.actor_user_id AND ms.agency_id = {a2} \
             WHERE l.agency_id = {a} AND l.workspace_id = {w} \
             AND l.action IN ('sendReplyOverride', 'retryReplyOverride') \
             AND l.created_at >= {lo} AND l.created_at < {hi} \
             GROUP BY ms.id"
        )
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
    split: &Split,
) -> Result<Vec<SlaRow>, DbErr> {
    let backend = conn.get_database_backend();
    let mut rows = Vec::new();
    if !split.slots.is_empty() {
        let mut q = Sql::new(backend);
        let s = Sql::slots(&split.slots);
        let a = q.bind(agency);
        let w = q.bind(workspace);
        q.push(&format!(
            "SELECT s.idx, r.target, r.kind, CAST(SUM(r.events) AS BIGINT) \
             FROM {s} s JOIN report_sla_slots r ON r.slot >= s.lo AND r.slot < s.hi \
             WHERE r.agency_id = {a} AND r.workspace_id = {w} \
             GROUP BY s.idx, r.target, r.kind"
        ));
        rows.extend(q.rows(conn).await?);
    }
    if !split.rows.is_empty() {
        let found = range_rows(conn, &split.rows, |q, idx, lo, hi| {
            let a = q.bind(agency);
            let w = q.bind(workspace);
            let lo = q.bind(lo);
            let hi = q.bind(hi);
            format!(
                "SELECT {idx}, e.target, e.kind, COUNT(*) FROM sla_events e \
                 WHERE e.agency_id = {a} AND e.workspace_id = {w} \
                 AND e.fired_at >= {lo} AND e.fired_at < {hi} \
                 GROUP BY e.target, e.kind"
            )
        })
        .await?;
        rows.extend(found);
    }
    let mut out = Vec::new();
    for r in rows {
        out.push(SlaRow {
            bucket: r.try_get_by_index::<i64>(0)? as usize,
            target: r.try_get_by_index(1)?,
            kind: r.try_get_by_index(2)?,
            count: r.try_get_by_index(3)?,
        });
    }
    Ok(out)
}

/// Conversations opened in one bucket with one (current) priority, with
/// their response times in whole milliseconds (business times: the stored
/// figures; conversations without them come from [`unstamped`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpenedGroup {
    pub bucket: usize,
    pub priority: String,
    pub count: i64,
    /// Began negative.
    pub negative: i64,
    /// ... and the customer later wrote positively.
    pub recovered: i64,
    pub first_ms: Vec<i64>,
    pub first_business_ms: Vec<i64>,
    pub resolution_ms: Vec<i64>,
    pub resolution_business_ms: Vec<i64>,
}

pub async fn opened<C: ConnectionTrait>(
    conn: &C,
    agency: Uuid,
    workspace: Uuid,
    split: &Split,
) -> Result<Vec<OpenedGroup>, DbErr> {
    let backend = conn.get_database_backend();
    if backend != DbBackend::Postgres {
        // SQLite keeps no conversation rollup: whole slots are rows too.
        let mut ranges = split.rows.clone();
        for (i, lo, hi) in &split.slots {
            let at = |s: i64| DateTime::<Utc>::from_timestamp(s, 0).unwrap_or_default();
            ranges.push((*i, at(*lo), at(*hi)));
        }
        return opened_rows(conn, agency, workspace, &ranges).await;
    }
    // Slots the worker has not counted again since they changed are read
    // from the conversations.
    let (slots, mut rows) = clean_slots(conn, agency, workspace, split).await?;
    rows.extend(split.rows.iter().copied());
    let mut out = Vec::new();
    if !slots.is_empty() {
        let mut q = Sql::new(backend);
        let s = Sql::slots(&slots);
        let a = q.bind(agency);
        let w = q.bind(workspace);
        q.push(&format!(
            "SELECT s.idx, r.priority, r.opened, r.negative, r.recovered, r.first_ms, \
             r.first_business_ms, r.resolution_ms, r.resolution_business_ms \
             FROM {s} s JOIN report_conversation_slots r ON r.slot >= s.lo AND r.slot < s.hi \
             WHERE r.agency_id = {a} AND r.workspace_id = {w}"
        ));
        out.extend(opened_groups(q.rows(conn).await?)?);
    }
    if !rows.is_empty() {
        out.extend(opened_rows(conn, agency, workspace, &rows).await?);
    }
    Ok(out)
}

/// The split's slot ranges without the dirty conversation slots, and the
/// dirty slots as row ranges.
async fn clean_slots<C: ConnectionTrait>(
    conn: &C,
    agency: Uuid,
    workspace: Uuid,
    split: &Split,
) -> Result<(Vec<(usize, i64, i64)>, Vec<Range>), DbErr> {
    let (Some(lo), Some(hi)) = (
        split.slots.iter().map(|s| s.1).min(),
        split.slots.iter().map(|s| s.2).max(),
    ) else {
        return Ok((Vec::new(), Vec::new()));
    };
    let mut q = Sql::new(conn.get_database_backend());
    let a = q.bind(agency);
    let w = q.bind(workspace);
    let l = q.bind(lo);
    let h = q.bind(hi);
    q.push(&format!(
        "SELECT DISTINCT slot FROM report_dirty_slots \
         WHERE agency_id = {a} AND workspace_id = {w} AND slot >= {l} AND slot < {h} ORDER BY slot"
    ));
    let dirty: Vec<i64> = q
        .rows(conn)
        .await?
        .iter()
        .map(|r| r.try_get_by_index::<i64>(0))
        .collect::<Result<_, _>>()?;
    Ok(rapport_domain::report::without_slots(&split.slots, &dirty))
}

fn opened_groups(rows: Vec<QueryResult>) -> Result<Vec<OpenedGroup>, DbErr> {
    rows.into_iter()
        .map(|r| {
            let list = |i: usize| -> Result<Vec<i64>, DbErr> {
                Ok(r.try_get_by_index::<Option<Vec<i64>>>(i)?
                    .unwrap_or_default())
            };
            Ok(OpenedGroup {
                bucket: r.try_get_by_index::<i64>(0)? as usize,
                priority: r.try_get_by_index(1)?,
                count: r.try_get_by_index(2)?,
                negative: r.try_get_by_index(3)?,
                recovered: r.try_get_by_index(4)?,
                first_ms: list(5)?,
                first_business_ms: list(6)?,
                resolution_ms: list(7)?,
                resolution_business_ms: list(8)?,
            })
        })
        .collect()
}

/// Opened conversations read from the rows of `ranges`.
async fn opened_rows<C: ConnectionTrait>(
    conn: &C,
    agency: Uuid,
    workspace: Uuid,
    ranges: &[Range],
) -> Result<Vec<OpenedGroup>, DbErr> {
    let backend = conn.get_database_backend();
    let first = ms_between(backend, "c.first_responded_at", "c.created_at");
    let resolution = ms_between(backend, "c.resolved_at", "c.created_at");
    let answered = "c.first_responded_at >= c.created_at";
    let resolved = "c.resolved_at >= c.created_at";
    let negative = "c.opening_sentiment <= -0.05";
    let from = |q: &mut Sql, lo, hi| {
        let a = q.bind(agency);
        let w = q.bind(workspace);
        let lo = q.bind(lo);
        let hi = q.bind(hi);
        format!(
            "FROM conversations c WHERE c.agency_id = {a} AND c.workspace_id = {w} \
             AND c.created_at >= {lo} AND c.created_at < {hi} AND NOT c.opened_by_agent"
        )
    };
    if backend == DbBackend::Postgres {
        // Aggregated in the database: one row per bucket and priority, the
        // durations as arrays (no per-conversation round trip).
        let rows = range_rows(conn, ranges, |q, idx, lo, hi| {
            format!(
                "SELECT {idx}, c.priority, COUNT(*), \
             CAST(SUM(CASE WHEN {negative} THEN 1 ELSE 0 END) AS BIGINT), \
             CAST(SUM(CASE WHEN {negative} AND c.recovered THEN 1 ELSE 0 END) AS BIGINT), \
             array_agg({first}) FILTER (WHERE {answered}), \
             array_agg(c.first_response_business_s * 1000) \
               FILTER (WHERE {answered} AND c.first_response_business_s IS NOT NULL), \
             array_agg({resolution}) FILTER (WHERE {resolved}), \
             array_agg(c.resolution_business_s * 1000) \
               FILTER (WHERE {resolved} AND c.resolution_business_s IS NOT NULL) \
             {from} GROUP BY c.priority",
                from = from(q, lo, hi)
            )
        })
        .await?;
        return opened_groups(rows);
    }
    // SQLite runs in process: rows are cheap, grouped here.
    let rows = range_rows(conn, ranges, |q, idx, lo, hi| {
        format!(
            "SELECT {idx}, c.priority, CASE WHEN {negative} THEN 1 ELSE 0 END, \
         CASE WHEN {negative} AND c.recovered THEN 1 ELSE 0 END, \
         CASE WHEN {answered} THEN {first} END, \
         CASE WHEN {answered} THEN c.first_response_business_s * 1000 END, \
         CASE WHEN {resolved} THEN {resolution} END, \
         CASE WHEN {resolved} THEN c.resolution_business_s * 1000 END \
         {from}",
            from = from(q, lo, hi)
        )
    })
    .await?;
    let mut groups: BTreeMap<(usize, String), OpenedGroup> = BTreeMap::new();
    for r in rows {
        let bucket = r.try_get_by_index::<i64>(0)? as usize;
        let priority: String = r.try_get_by_index(1)?;
        let g = groups
            .entry((bucket, priority.clone()))
            .or_insert_with(|| OpenedGroup {
                bucket,
                priority,
                ..Default::default()
            });
        g.count += 1;
        g.negative += r.try_get_by_index::<i64>(2)?;
        g.recovered += r.try_get_by_index::<i64>(3)?;
        for (i, into) in [
            (4, &mut g.first_ms),
            (5, &mut g.first_business_ms),
            (6, &mut g.resolution_ms),
            (7, &mut g.resolution_business_ms),
        ] {
            if let Some(v) = r.try_get_by_index::<Option<i64>>(i)? {
                into.push(v);
            }
        }
    }
    Ok(groups.into_values().collect())
}

/// An opened conversation whose business-time figures were never stored
/// (written before they were kept): the report computes them.
#[derive(Debug, Clone, PartialEq)]
pub struct Unstamped {
    pub created_at: DateTime<Utc>,
    pub first_responded_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub sla_policy_id: Option<Uuid>,
    pub first_response_business_s: Option<i64>,
    pub resolution_business_s: Option<i64>,
}

pub async fn unstamped<C: ConnectionTrait>(
    conn: &C,
    agency: Uuid,
    workspace: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Unstamped>, DbErr> {
    let mut q = Sql::new(conn.get_database_backend());
    let a = q.bind(agency);
    let w = q.bind(workspace);
    let f = q.bind(from);
    let t = q.bind(to);
    // The condition is the partial index's, word for word.
    q.push(&format!(
        "SELECT created_at, first_responded_at, resolved_at, sla_policy_id, \
         first_response_business_s, resolution_business_s FROM conversations \
         WHERE agency_id = {a} AND workspace_id = {w} \
         AND created_at >= {f} AND created_at < {t} \
         AND ((first_responded_at IS NOT NULL AND first_response_business_s IS NULL) \
         OR (resolved_at IS NOT NULL AND resolution_business_s IS NULL)) \
         AND NOT opened_by_agent"
    ));
    q.rows(conn)
        .await?
        .into_iter()
        .map(|r| {
            Ok(Unstamped {
                created_at: r.try_get_by_index(0)?,
                first_responded_at: r.try_get_by_index(1)?,
                resolved_at: r.try_get_by_index(2)?,
                sla_policy_id: r.try_get_by_index(3)?,
                first_response_business_s: r.try_get_by_index(4)?,
                resolution_business_s: r.try_get_by_index(5)?,
            })
        })
        .collect()
}

/// Conversations opened in the period per current assignee: (assigned,
/// resolved).
pub async fn assigned<C: ConnectionTrait>(
    conn: &C,
    agency: Uuid,
    workspace: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(Uuid, i64, i64)>, DbErr> {
    let mut q = Sql::new(conn.get_database_backend());
    let a = q.bind(agency);
    let w = q.bind(workspace);
    let f = q.bind(from);
    let t = q.bind(to);
    q.push(&format!(
        "SELECT c.assignee_membership_id, COUNT(*), \
         CAST(SUM(CASE WHEN c.resolved_at IS NOT NULL THEN 1 ELSE 0 END) AS BIGINT) \
         FROM conversations c WHERE c.agency_id = {a} AND c.workspace_id = {w} \
         AND c.created_at >= {f} AND c.created_at < {t} \
         AND c.assignee_membership_id IS NOT NULL AND NOT c.opened_by_agent \
         GROUP BY c.assignee_membership_id"
    ));
    q.rows(conn)
        .await?
        .into_iter()
        .map(|r| {
            Ok((
                r.try_get_by_index(0)?,
                r.try_get_by_index(1)?,
                r.try_get_by_index(2)?,
            ))
        })
        .collect()
}

/// Deadlines still running now, per target, among those due in the period
/// (none when the period is over: a deadline due in it is met or missed).
/// Only OPEN conversations: waiting on the customer, a conversation's
/// clocks are paused and its stored deadlines move when it opens again.
pub async fn running<C: ConnectionTrait>(
    conn: &C,
    agency: Uuid,
    workspace: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<[i64; 3], DbErr> {
    let (lo, hi) = (from.max(now), to.max(now));
    if lo >= hi {
        return Ok([0, 0, 0]);
    }
    let mut q = Sql::new(conn.get_database_backend());
    // Bound in the order they appear (SQLite's `?` is positional).
    let mut within = |col: &str| {
        let l = q.bind(lo);
        let h = q.bind(hi);
        format!("{col} >= {l} AND {col} < {h}")
    };
    let (first, next, resolution) = (
        within("first_response_due_at"),
        within("next_response_due_at"),
        within("resolution_due_at"),
    );
    let a = q.bind(agency);
    let w = q.bind(workspace);
    q.push(&format!(
        "SELECT \
         CAST(SUM(CASE WHEN {first} AND first_responded_at IS NULL THEN 1 ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN {next} THEN 1 ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN {resolution} AND resolved_at IS NULL THEN 1 ELSE 0 END) AS BIGINT) \
         FROM conversations WHERE agency_id = {a} AND workspace_id = {w} \
         AND status = 'OPEN'"
    ));
    let rows = q.rows(conn).await?;
    let Some(r) = rows.first() else {
        return Ok([0, 0, 0]);
    };
    let get =
        |i: usize| -> Result<i64, DbErr> { Ok(r.try_get_by_index::<Option<i64>>(i)?.unwrap_or(0)) };
    Ok([get(0)?, get(1)?, get(2)?])
}
