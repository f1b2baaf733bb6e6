//! CSV exports, for the agency and its clients (CLIENT_VIEWER included):
//!
//! - `GET /export/workspaces/{id}/conversations.csv?from=&to=`: the
//!   conversations opened in `[from, to)`, streamed a page at a time (never
//!   loaded whole);
//! - `GET /export/workspaces/{id}/report.csv?from=&to=&granularity=&timezone=`:
//!   the report's buckets, one row each, and a total row.
//!
//! Authenticated with the same `Authorization: Bearer` token as GraphQL.
//! Cells that a spreadsheet would run as a formula are prefixed with `'`.

use crate::auth::viewer::{Auth, Viewer, authenticate};
use crate::http::error_body as error;
use crate::reports::{self, ReportFigures};
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use rapport_domain::report::Granularity;
use rapport_domain::{GlobalId, Kind};
use rapport_store::entities::{author, conversation};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Deserialize;
use std::collections::HashMap;
use uuid::Uuid;

/// Conversations per page of the stream.
const PAGE: u64 = 500;

#[derive(Deserialize, Clone)]
pub struct Range {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub granularity: Option<String>,
    pub timezone: Option<String>,
}

/// One CSV field: quoted when needed, formula-looking text defused
/// (numbers stay numbers).
fn field(raw: &str) -> String {
    let defused =
        if raw.starts_with(['=', '+', '-', '@', '\t', '\r']) && raw.parse::<f64>().is_err() {
            format!("'{raw}")
        } else {
            raw.to_string()
        };
    if defused.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", defused.replace('"', "\"\""))
    } else {
        defused
    }
}

fn row(fields: &[String]) -> String {
    let mut line = fields
        .iter()
        .map(|f| field(f))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

fn ts(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339()).unwrap_or_default()
}

/// The viewer and the workspace they asked for, or the answer to send.
async fn access(
    req: &HttpRequest,
    state: &AppState,
    id: &str,
) -> Result<(Viewer, rapport_store::entities::workspace::Model), HttpResponse> {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let viewer = match authenticate(state, header).await {
        Ok(Auth::Member(v)) => *v,
        Ok(_) => {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "send an access token as `Authorization: Bearer <token>`",
            ));
        }
        Err(e) => {
            tracing::error!(error = ?e, "authenticating an export failed");
            return Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "internal error",
            ));
        }
    };
    let not_found = || error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such workspace");
    let Some(ws_id) = GlobalId::decode(Kind::Workspace, id) else {
        return Err(not_found());
    };
    match viewer.scope.workspace(&state.db, ws_id).await {
        Ok(ws) => Ok((viewer, ws)),
        Err(_) => Err(not_found()),
    }
}

/// The query's range, read after the caller is known (a request without a
/// valid token learns nothing from how its parameters are judged), or why
/// it is not one.
fn range(req: &HttpRequest) -> Result<Range, String> {
    let r = web::Query::<Range>::from_query(req.query_string())
        .map_err(|e| format!("from and to are RFC 3339 times: {e}"))?
        .into_inner();
    if r.to <= r.from || r.to - r.from > chrono::Duration::days(400) {
        return Err("from must be before to, at most 400 days apart (RFC 3339 times)".into());
    }
    Ok(r)
}

/// 400 BAD_USER_INPUT saying why.
fn bad_input(why: &str) -> HttpResponse {
    error(StatusCode::BAD_REQUEST, "BAD_USER_INPUT", why)
}

const CONVERSATION_HEADER: &[&str] = &[
    "id",
    "created_at",
    "status",
    "visibility",
    "priority",
    "priority_score",
    "sentiment",
    "author_handle",
    "author_followers",
    "assignee_member_id",
    "first_response_due_at",
    "first_responded_at",
    "first_response_seconds",
    "resolved_at",
    "recovered",
];

/// One page of conversations as CSV lines, and the cursor after it.
async fn page(
    state: &AppState,
    viewer: &Viewer,
    workspace: Uuid,
    r: &Range,
    after: Uuid,
) -> Result<Option<(String, Uuid)>, crate::ApiError> {
    let txn = viewer.scope.begin(&state.db).await?;
    let rows = viewer
        .scope
        .select_in_workspaces::<conversation::Entity>()
        .filter(conversation::Column::WorkspaceId.eq(workspace))
        .filter(conversation::Column::CreatedAt.gte(r.from))
        .filter(conversation::Column::CreatedAt.lt(r.to))
        .filter(conversation::Column::Id.gt(after))
        .order_by_asc(conversation::Column::Id)
        .limit(PAGE)
        .all(&txn)
        .await?;
    let Some(last) = rows.last().map(|c| c.id) else {
        return Ok(None);
    };
    let authors: HashMap<Uuid, author::Model> = author::Entity::find()
        .filter(author::Column::AgencyId.eq(viewer.agency_id))
        .filter(author::Column::Id.is_in(rows.iter().map(|c| c.author_id)))
        .all(&txn)
        .await?
        .into_iter()
        .map(|a| (a.id, a))
        .collect();
    txn.commit().await?;
    let mut out = String::new();
    for c in rows {
        let a = authors.get(&c.author_id);
        out.push_str(&row(&[
            GlobalId::encode(Kind::Conversation, c.id),
            c.created_at.to_rfc3339(),
            c.status.clone(),
            c.visibility.clone(),
            c.priority.clone(),
            format!("{:.4}", c.priority_score),
            c.sentiment.map(|s| format!("{s:.4}")).unwrap_or_default(),
            a.map(|a| a.handle.clone()).unwrap_or_default(),
            a.map(|a| a.follower_count.to_string()).unwrap_or_default(),
            c.assignee_membership_id
                .map(|m| GlobalId::encode(Kind::Member, m))
                .unwrap_or_default(),
            ts(c.first_response_due_at),
            ts(c.first_responded_at),
            c.first_responded_at
                .map(|f| (f - c.created_at).num_seconds().to_string())
                .unwrap_or_default(),
            ts(c.resolved_at),
            c.recovered.to_string(),
        ]));
    }
    Ok(Some((out, last)))
}

/// Why an export stopped before its end.
#[derive(Debug, PartialEq, Eq)]
pub enum Cut {
    /// The session ended, or the viewer lost the workspace, mid-export.
    AccessEnded,
    /// Reading a page failed (logged).
    Failed,
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cut::AccessEnded => "access ended during the export",
            Cut::Failed => "export failed",
        })
    }
}

impl std::error::Error for Cut {}

/// The viewer as they are now, if they still see `workspace`: an export
/// can outlive a logout or a removal, so each page asks again.
async fn still_allowed(state: &AppState, v: &Viewer, workspace: Uuid) -> Result<Viewer, Cut> {
    match crate::auth::viewer::reload(state, v).await {
        Ok(Some(now)) if now.scope.sees_workspace(workspace) => Ok(now),
        Ok(_) => Err(Cut::AccessEnded),
        Err(e) => {
            tracing::error!(error = ?e, "re-checking an exporting viewer failed");
            Err(Cut::Failed)
        }
    }
}

/// The conversations export as a stream of CSV chunks: the header, then
/// one page per poll, so memory stays one page. Each page is read as the
/// viewer is at that moment; a stream cut short ends with an error (the
/// connection is dropped, so no client takes a partial file for a whole).
pub fn conversation_rows(
    state: std::sync::Arc<AppState>,
    viewer: Viewer,
    workspace: Uuid,
    range: Range,
) -> impl futures_util::Stream<Item = Result<web::Bytes, Cut>> {
    let head = row(&CONVERSATION_HEADER
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>());
    futures_util::stream::unfold(
        (Some(head), Uuid::nil(), Some(viewer)),
        move |(head, after, viewer)| {
            let state = state.clone();
            let range = range.clone();
            async move {
                if let Some(h) = head {
                    return Some((Ok(web::Bytes::from(h)), (None, after, viewer)));
                }
                let viewer = match still_allowed(&state, &viewer?, workspace).await {
                    Ok(v) => v,
                    Err(cut) => return Some((Err(cut), (None, after, None))),
                };
                match page(&state, &viewer, workspace, &range, after).await {
                    Ok(Some((chunk, last))) => {
                        Some((Ok(web::Bytes::from(chunk)), (None, last, Some(viewer))))
                    }
                    Ok(None) => None,
                    Err(e) => {
                        tracing::error!(error = ?e, "exporting conversations failed mid-stream");
                        Some((Err(Cut::Failed), (None, after, None)))
                    }
                }
            }
        },
    )
}

pub async fn conversations(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (viewer, ws) = match access(&req, &state, &path).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let range = match range(&req) {
        Ok(r) => r,
        Err(why) => return bad_input(&why),
    };
    let body = conversation_rows(state.into_inner(), viewer, ws.id, range);
    HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"conversations.csv\"",
        ))
        .streaming(body)
}

fn figures_row(label: &str, from: String, to: String, f: &ReportFigures) -> String {
    let sla = |t: &str| {
        f.sla
            .iter()
            .find(|s| s.target == t)
            .map(|s| (s.met, s.breached))
            .unwrap_or_default()
    };
    let (fm, fb) = sla("FIRST_RESPONSE");
    let (nm, nb) = sla("NEXT_RESPONSE");
    let (rm, rb) = sla("RESOLUTION");
    let opt = |v: Option<f64>| v.map(|s| format!("{s:.0}")).unwrap_or_default();
    row(&[
        label.to_string(),
        from,
        to,
        f.inbound.to_string(),
        f.conversations_opened.to_string(),
        opt(f.first_response.calendar.p50_seconds),
        opt(f.first_response.calendar.p90_seconds),
        opt(f.first_response.calendar.mean_seconds),
        opt(f.first_response.business.p50_seconds),
        opt(f.resolution.calendar.p50_seconds),
        opt(f.resolution.calendar.p90_seconds),
        fm.to_string(),
        fb.to_string(),
        nm.to_string(),
        nb.to_string(),
        rm.to_string(),
        rb.to_string(),
        f.replies_sent.to_string(),
        f.canned_refused.to_string(),
        f.overrides.to_string(),
        f.negative_conversations.to_string(),
        f.recovered.to_string(),
        opt(f.platform_delay.mean_seconds),
    ])
}

pub async fn report(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (viewer, ws) = match access(&req, &state, &path).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let q = match range(&req) {
        Ok(r) => r,
        Err(why) => return bad_input(&why),
    };
    let granularity = match q.granularity.as_deref() {
        None => Granularity::Day,
        Some(g) => match reports::parse_granularity(&g.to_ascii_uppercase()) {
            Some(g) => g,
            None => {
                return bad_input("granularity is HOUR, DAY or WEEK");
            }
        },
    };
    let built = async {
        let period = reports::period(
            q.from,
            q.to,
            granularity,
            q.timezone.as_deref().unwrap_or(&ws.timezone),
        )?;
        let txn = viewer.scope.begin(&state.db).await?;
        let r = reports::build(&txn, &ws, period).await?;
        txn.commit().await?;
        Ok::<_, crate::ApiError>(r)
    }
    .await;
    let r = match built {
        Ok(r) => r,
        Err(crate::ApiError::BadInput { message, .. }) => {
            return bad_input(&message);
        }
        Err(e) => {
            tracing::error!(error = ?e, "building a report export failed");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "internal error",
            );
        }
    };
    let mut out = row(&[
        "bucket",
        "from",
        "to",
        "inbound",
        "opened",
        "first_response_p50_s",
        "first_response_p90_s",
        "first_response_mean_s",
        "first_response_business_p50_s",
        "resolution_p50_s",
        "resolution_p90_s",
        "first_response_met",
        "first_response_breached",
        "next_response_met",
        "next_response_breached",
        "resolution_met",
        "resolution_breached",
        "replies_sent",
        "canned_refused",
        "overrides",
        "negative",
        "recovered",
        "platform_delay_mean_s",
    ]
    .map(String::from));
    for b in &r.buckets {
        out.push_str(&figures_row(
            &b.label,
            b.from.to_rfc3339(),
            b.to.to_rfc3339(),
            &b.figures,
        ));
    }
    out.push_str(&figures_row(
        "total",
        r.period.from.to_rfc3339(),
        r.period.to.to_rfc3339(),
        &r.total,
    ));
    HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"report.csv\"",
        ))
        .body(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_and_formulas_defused() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(field("-0.25"), "-0.25");
        assert_eq!(field("-cmd"), "'-cmd");
    }
}
