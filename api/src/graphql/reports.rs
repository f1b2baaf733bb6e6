//! Client reporting over GraphQL: a workspace's report with its breach
//! drill-down, the agency overview ranking workspaces by trouble, and
//! signed, expiring, revocable share links to the printable report.

use super::paging::{Order, keyset};
use super::sla::SlaEvent;
use super::types::{Workspace, decode, gid};
use super::{auth, state};
use crate::audit::AuditEvent;
use crate::error::{ApiError, ApiResult};
use crate::reports::{
    self, AgentFigures, GqlGranularity, KeyCount, OpenDeadlines, Report, ReportBucket,
    ReportFigures,
};
use crate::share;
use async_graphql::connection::Connection;
use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Duration, Utc};
use rapport_domain::{Kind, PageRequest};
use rapport_store::entities::{conversation, report_share_link, sla_event, workspace};
use sea_orm::sea_query::{Expr, Func};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, Set,
};
use std::collections::HashMap;
use uuid::Uuid;

pub struct WorkspaceReport(pub Report);

/// A workspace's figures over a period: in total, per time bucket and per
/// agent, with the SLA breaches to drill into.
#[Object]
impl WorkspaceReport {
    /// The workspace reported on.
    async fn workspace(&self) -> Workspace {
        Workspace(self.0.workspace.clone())
    }
    /// Start of the period (inclusive).
    async fn from(&self) -> DateTime<Utc> {
        self.0.period.from
    }
    /// End of the period (exclusive).
    async fn to(&self) -> DateTime<Utc> {
        self.0.period.to
    }
    /// Bucket size: HOUR, DAY or WEEK.
    async fn granularity(&self) -> &'static str {
        reports::granularity_name(self.0.period.granularity)
    }
    /// IANA time zone the buckets are cut in.
    async fn timezone(&self) -> &'static str {
        self.0.period.timezone.name()
    }
    /// The whole period.
    async fn total(&self) -> &ReportFigures {
        &self.0.total
    }
    /// Every bucket of the period, empty ones included.
    async fn buckets(&self) -> &[ReportBucket] {
        &self.0.buckets
    }
    /// Members with replies, refusals, overrides or assignments in the
    /// period, most replies first.
    async fn agents(&self) -> &[AgentFigures] {
        &self.0.agents
    }
    /// Deadlines due in the period that are still running now.
    async fn open_deadlines(&self) -> &OpenDeadlines {
        &self.0.open_deadlines
    }
    /// First response times of the period (calendar time), binned: < 5 min,
    /// 5-15 min, 15-60 min, 1-4 h, 4-24 h, > 24 h.
    async fn first_response_distribution(&self) -> Vec<KeyCount> {
        self.0
            .distribution
            .iter()
            .map(|(k, n)| KeyCount {
                key: k.clone(),
                count: *n as i32,
            })
            .collect()
    }
    /// Drill-down: the breaches fired in the period, oldest first, each
    /// with its conversation.
    #[graphql(complexity = "first.unwrap_or(20).clamp(0, 100) as usize * child_complexity")]
    async fn breaches(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, SlaEvent>> {
        let v = auth(ctx).viewer()?;
        let page = PageRequest::parse(first, after.as_deref())?;
        let q = v
            .scope
            .select_in_workspaces::<sla_event::Entity>()
            .filter(sla_event::Column::WorkspaceId.eq(self.0.workspace.id))
            .filter(sla_event::Column::Kind.eq("SLA_BREACHED"))
            .filter(sla_event::Column::FiredAt.gte(self.0.period.from))
            .filter(sla_event::Column::FiredAt.lt(self.0.period.to));
        keyset(
            &state(ctx).db,
            q,
            sla_event::Column::Id,
            page,
            Order::OldestFirst,
            |e| e.id,
            SlaEvent,
        )
        .await
    }
}

/// One workspace in the agency overview.
#[derive(SimpleObject)]
pub struct WorkspaceStanding {
    /// The workspace.
    workspace: Workspace,
    /// SLA breaches fired in the period.
    breaches: i32,
    /// Open conversations whose earliest deadline has passed.
    overdue: i32,
    /// Open conversations whose earliest deadline falls in the next hour.
    at_risk: i32,
}

/// The report a share link opens, and until when.
#[derive(InputObject)]
pub struct CreateReportShareLinkInput {
    /// The workspace whose report is shared.
    workspace_id: ID,
    /// Start of the report's period (inclusive).
    from: DateTime<Utc>,
    /// End of the report's period (exclusive); at most 400 days after `from`.
    to: DateTime<Utc>,
    /// At most 90 days ahead.
    expires_at: DateTime<Utc>,
    /// Bucket size of the report.
    #[graphql(default_with = "GqlGranularity::Day")]
    granularity: GqlGranularity,
    /// IANA time zone; default: the workspace's.
    timezone: Option<String>,
}

/// The share link to revoke.
#[derive(InputObject)]
pub struct RevokeReportShareLinkInput {
    /// The share link's ID.
    id: ID,
}

/// A link to the printable report: anyone holding the URL may open it
/// until it expires or is revoked; nothing else is reachable with it.
pub struct ReportShareLink {
    row: report_share_link::Model,
    /// Only when just created: the URL is not stored.
    url: Option<String>,
}

/// A link to a workspace's printable report: anyone holding the URL may
/// open it until it expires or is revoked; nothing else is reachable with
/// it.
#[Object]
impl ReportShareLink {
    /// Global ID of the share link.
    async fn id(&self) -> ID {
        gid(Kind::ReportShareLink, self.row.id)
    }
    /// Returned once, by `createReportShareLink`.
    async fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }
    /// Start of the shared report's period (inclusive).
    async fn from(&self) -> DateTime<Utc> {
        self.row.period_from
    }
    /// End of the shared report's period (exclusive).
    async fn to(&self) -> DateTime<Utc> {
        self.row.period_to
    }
    /// Bucket size of the shared report: HOUR, DAY or WEEK.
    async fn granularity(&self) -> &str {
        &self.row.granularity
    }
    /// IANA time zone of the shared report.
    async fn timezone(&self) -> &str {
        &self.row.timezone
    }
    /// When the link stops working.
    async fn expires_at(&self) -> DateTime<Utc> {
        self.row.expires_at
    }
    /// When the link was revoked; null unless revoked.
    async fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.row.revoked_at
    }
    /// When the link was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.row.created_at
    }
}

#[derive(Default)]
pub struct ReportQuery;

#[Object]
impl ReportQuery {
    /// A workspace's figures over `[from, to)`, per bucket of `granularity`
    /// in `timezone` (default: the workspace's) and in total. CLIENT_VIEWER
    /// members may read the reports of their workspaces.
    #[graphql(complexity = "super::REPORT_COST + child_complexity")]
    async fn workspace_report(
        &self,
        ctx: &Context<'_>,
        workspace_id: ID,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        #[graphql(default_with = "GqlGranularity::Day")] granularity: GqlGranularity,
        timezone: Option<String>,
    ) -> ApiResult<WorkspaceReport> {
        let v = auth(ctx).viewer()?;
        let txn = v.scope.begin(&state(ctx).db).await?;
        let ws = v
            .scope
            .workspace(&txn, decode(Kind::Workspace, &workspace_id)?)
            .await?;
        let period = reports::period(
            from,
            to,
            granularity.into(),
            timezone.as_deref().unwrap_or(&ws.timezone),
        )?;
        let report = reports::build(&txn, &ws, period).await?;
        txn.commit().await?;
        Ok(WorkspaceReport(report))
    }

    /// The workspaces the member may see, the most troubled first: by
    /// breaches in `[from, to)` (at most 400 days), then overdue and
    /// at-risk conversations now.
    #[graphql(complexity = "super::REPORT_COST + child_complexity")]
    async fn agency_overview(
        &self,
        ctx: &Context<'_>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> ApiResult<Vec<WorkspaceStanding>> {
        let v = auth(ctx).viewer()?;
        if to <= from {
            return Err(ApiError::bad_input("to", "must be after from"));
        }
        if to - from > chrono::Duration::days(400) {
            return Err(ApiError::bad_input(
                "to",
                "an overview covers at most 400 days",
            ));
        }
        let txn = v.scope.begin(&state(ctx).db).await?;
        let spaces = v
            .scope
            .select_in_workspaces::<workspace::Entity>()
            .filter(workspace::Column::ArchivedAt.is_null())
            .order_by_asc(workspace::Column::Name)
            .limit(1000)
            .all(&txn)
            .await?;
        let breaches: HashMap<Uuid, i64> = v
            .scope
            .select_in_workspaces::<sla_event::Entity>()
            .select_only()
            .column(sla_event::Column::WorkspaceId)
            .column_as(
                Expr::expr(Func::count(Expr::col(sla_event::Column::Id))),
                "n",
            )
            .filter(sla_event::Column::Kind.eq("SLA_BREACHED"))
            .filter(sla_event::Column::FiredAt.gte(from))
            .filter(sla_event::Column::FiredAt.lt(to))
            .group_by(sla_event::Column::WorkspaceId)
            .into_tuple::<(Uuid, i64)>()
            .all(&txn)
            .await?
            .into_iter()
            .collect();
        let now = Utc::now();
        let due_count = |lo: Option<DateTime<Utc>>, hi: DateTime<Utc>| {
            let mut q = v
                .scope
                .select_in_workspaces::<conversation::Entity>()
                .select_only()
                .column(conversation::Column::WorkspaceId)
                .column_as(
                    Expr::expr(Func::count(Expr::col(conversation::Column::Id))),
                    "n",
                )
                .filter(conversation::Column::Status.eq("OPEN"))
                .filter(conversation::Column::DueAt.lt(hi));
            if let Some(lo) = lo {
                q = q.filter(conversation::Column::DueAt.gte(lo));
            }
            q.group_by(conversation::Column::WorkspaceId)
                .into_tuple::<(Uuid, i64)>()
        };
        let overdue: HashMap<Uuid, i64> =
            due_count(None, now).all(&txn).await?.into_iter().collect();
        let at_risk: HashMap<Uuid, i64> = due_count(Some(now), now + Duration::hours(1))
            .all(&txn)
            .await?
            .into_iter()
            .collect();
        txn.commit().await?;
        let mut out: Vec<WorkspaceStanding> = spaces
            .into_iter()
            .map(|w| WorkspaceStanding {
                breaches: breaches.get(&w.id).copied().unwrap_or(0) as i32,
                overdue: overdue.get(&w.id).copied().unwrap_or(0) as i32,
                at_risk: at_risk.get(&w.id).copied().unwrap_or(0) as i32,
                workspace: Workspace(w),
            })
            .collect();
        // Stable sort: ties keep the name order.
        out.sort_by(|a, b| {
            (b.breaches, b.overdue, b.at_risk).cmp(&(a.breaches, a.overdue, a.at_risk))
        });
        Ok(out)
    }

    /// A workspace's share links, newest first (at most 200).
    #[graphql(complexity = "super::LIST_COST * child_complexity")]
    async fn report_share_links(
        &self,
        ctx: &Context<'_>,
        workspace_id: ID,
    ) -> ApiResult<Vec<ReportShareLink>> {
        let v = auth(ctx).viewer()?;
        v.require_writer()?;
        let db = &state(ctx).db;
        let ws = v
            .scope
            .workspace(db, decode(Kind::Workspace, &workspace_id)?)
            .await?;
        Ok(v.scope
            .select::<report_share_link::Entity>()
            .filter(report_share_link::Column::WorkspaceId.eq(ws.id))
            .order_by_desc(report_share_link::Column::CreatedAt)
            .limit(200)
            .all(db)
            .await?
            .into_iter()
            .map(|row| ReportShareLink { row, url: None })
            .collect())
    }
}

#[derive(Default)]
pub struct ReportMutation;

#[Object]
impl ReportMutation {
    /// A signed, expiring URL of the workspace's printable report for the
    /// period (no login needed; revocable).
    async fn create_report_share_link(
        &self,
        ctx: &Context<'_>,
        input: CreateReportShareLinkInput,
    ) -> ApiResult<ReportShareLink> {
        let v = auth(ctx).viewer()?;
        v.require_writer()?;
        let now = Utc::now();
        if input.expires_at <= now {
            return Err(ApiError::bad_input("expiresAt", "must be in the future"));
        }
        if input.expires_at > now + Duration::days(90) {
            return Err(ApiError::bad_input("expiresAt", "at most 90 days ahead"));
        }
        let st = state(ctx);
        let txn = v.scope.begin(&st.db).await?;
        let ws = v
            .scope
            .workspace(&txn, decode(Kind::Workspace, &input.workspace_id)?)
            .await?;
        let timezone = input.timezone.clone().unwrap_or(ws.timezone.clone());
        let period = reports::period(input.from, input.to, input.granularity.into(), &timezone)?;
        let row = report_share_link::ActiveModel {
            id: Set(Uuid::now_v7()),
            agency_id: Set(v.agency_id),
            workspace_id: Set(ws.id),
            period_from: Set(period.from),
            period_to: Set(period.to),
            granularity: Set(reports::granularity_name(period.granularity).into()),
            timezone: Set(period.timezone.name().into()),
            expires_at: Set(input.expires_at),
            revoked_at: Set(None),
            created_by_membership_id: Set(Some(v.membership_id)),
            created_at: Set(now),
        }
        .insert(&txn)
        .await?;
        AuditEvent::new("createReportShareLink")
            .workspace(ws.id)
            .target("ReportShareLink", row.id)
            .by(&txn, v)
            .await?;
        txn.commit().await?;
        let url = share::url(st, &row);
        Ok(ReportShareLink {
            row,
            url: Some(url),
        })
    }

    /// The link stops working at once.
    async fn revoke_report_share_link(
        &self,
        ctx: &Context<'_>,
        input: RevokeReportShareLinkInput,
    ) -> ApiResult<ReportShareLink> {
        let v = auth(ctx).viewer()?;
        v.require_writer()?;
        let txn = v.scope.begin(&state(ctx).db).await?;
        let row = v
            .scope
            .find::<report_share_link::Entity, _>(&txn, decode(Kind::ReportShareLink, &input.id)?)
            .await?;
        if !v.scope.sees_workspace(row.workspace_id) {
            return Err(ApiError::NotFound);
        }
        let row = if row.revoked_at.is_some() {
            row
        } else {
            let mut am = row.into_active_model();
            am.revoked_at = Set(Some(Utc::now()));
            am.update(&txn).await?
        };
        AuditEvent::new("revokeReportShareLink")
            .workspace(row.workspace_id)
            .target("ReportShareLink", row.id)
            .by(&txn, v)
            .await?;
        txn.commit().await?;
        Ok(ReportShareLink { row, url: None })
    }
}
