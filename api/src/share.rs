//! Shared reports: `GET /reports/shared/{token}` renders a workspace's
//! printable report for anyone holding the link, until it expires or is
//! revoked. The token is the link's id and an HMAC over the id and expiry
//! (keyed by the deployment's secret key): an altered token matches no
//! link, and it reaches that one report only.

use crate::reports::{self, Report};
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use rapport_domain::crypto::{hmac_sha256, hmac_sha256_matches};
use rapport_domain::report::Period;
use rapport_domain::report::charts::{escape, histogram, percent_line, stacked};
use rapport_store::entities::{report_share_link, workspace};
use rapport_store::tenancy::begin_for_agency;
use sea_orm::EntityTrait;
use std::fmt::Write;
use uuid::Uuid;

fn message(link: &report_share_link::Model) -> Vec<u8> {
    format!(
        "rapport-report-share:{}:{}",
        link.id,
        link.expires_at.timestamp()
    )
    .into_bytes()
}

fn key(state: &AppState) -> Vec<u8> {
    format!("report-links:{}", state.settings.secret_key).into_bytes()
}

pub fn token(state: &AppState, link: &report_share_link::Model) -> String {
    let tag = hmac_sha256(&key(state), &message(link));
    format!("{}.{}", link.id.simple(), URL_SAFE_NO_PAD.encode(tag))
}

pub fn url(state: &AppState, link: &report_share_link::Model) -> String {
    format!(
        "{}/reports/shared/{}",
        state.settings.public_url,
        token(state, link)
    )
}

fn page(status: StatusCode, title: &str, body: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "private, no-store"))
        .insert_header(("X-Robots-Tag", "noindex"))
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'",
        ))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .body(format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>{STYLE}</head><body>{body}</body></html>",
            escape(title)
        ))
}

fn refused(status: StatusCode, why: &str) -> HttpResponse {
    page(
        status,
        "Report unavailable",
        &format!("<h1>Report unavailable</h1><p>{}</p>", escape(why)),
    )
}

pub async fn shared_report(path: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    match render_shared(&path, &state).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = ?e, "rendering a shared report failed");
            refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong on our side.",
            )
        }
    }
}

async fn render_shared(token: &str, state: &AppState) -> Result<HttpResponse, crate::ApiError> {
    let invalid = || {
        refused(
            StatusCode::NOT_FOUND,
            "This report link is not valid. Ask your agency for a new one.",
        )
    };
    let Some((id, tag)) = token.split_once('.') else {
        return Ok(invalid());
    };
    let (Ok(id), Ok(tag)) = (Uuid::parse_str(id), URL_SAFE_NO_PAD.decode(tag)) else {
        return Ok(invalid());
    };
    let Some(link) = report_share_link::Entity::find_by_id(id)
        .one(&state.db)
        .await?
    else {
        return Ok(invalid());
    };
    if !hmac_sha256_matches(&key(state), &message(&link), &tag) {
        return Ok(invalid());
    }
    if link.revoked_at.is_some() {
        return Ok(refused(
            StatusCode::GONE,
            "This report link was revoked by the agency.",
        ));
    }
    if link.expires_at <= Utc::now() {
        return Ok(refused(StatusCode::GONE, "This report link has expired."));
    }
    let txn = begin_for_agency(&state.db, link.agency_id).await?;
    let Some(ws) = workspace::Entity::find_by_id(link.workspace_id)
        .one(&txn)
        .await?
    else {
        return Ok(invalid());
    };
    let granularity = reports::parse_granularity(&link.granularity)
        .ok_or_else(|| crate::ApiError::internal("stored granularity"))?;
    let period = reports::period(
        link.period_from,
        link.period_to,
        granularity,
        &link.timezone,
    )?;
    let report = reports::build(&txn, &ws, period).await?;
    txn.commit().await?;
    Ok(page(
        StatusCode::OK,
        &format!("{} — customer care report", ws.name),
        &html(&report),
    ))
}

const STYLE: &str = "<style>
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:32px auto;max-width:800px;color:#222}
h1{font-size:22px;margin-bottom:4px}h2{font-size:16px;margin-top:28px;border-bottom:1px solid #ddd}
.muted{color:#666}table{border-collapse:collapse;width:100%;font-size:13px}
td,th{border-bottom:1px solid #eee;padding:4px 6px;text-align:right}td:first-child,th:first-child{text-align:left}
svg.chart{display:block;margin:12px 0;max-width:100%;height:auto}
@media print{body{margin:0}h2{break-after:avoid}svg.chart{break-inside:avoid}}
</style>";

fn secs(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(s) if s < 90.0 => format!("{s:.0} s"),
        Some(s) if s < 5400.0 => format!("{:.1} min", s / 60.0),
        Some(s) => format!("{:.1} h", s / 3600.0),
    }
}

/// The printable report: figures, three charts, buckets and agents.
pub fn html(r: &Report) -> String {
    let t = &r.total;
    let p: &Period = &r.period;
    let tz = p.timezone.tz();
    let mut out = String::new();
    let _ = write!(
        out,
        "<h1>{}</h1><p class=\"muted\">Customer care report, {} to {} ({}), by {}</p>",
        escape(&r.workspace.name),
        p.from.with_timezone(&tz).format("%Y-%m-%d %H:%M"),
        p.to.with_timezone(&tz).format("%Y-%m-%d %H:%M"),
        escape(p.timezone.name()),
        reports::granularity_name(p.granularity).to_lowercase(),
    );
    let fr = &t.first_response;
    let rs = &t.resolution;
    let _ = write!(
        out,
        "<h2>Summary</h2><table>\
         <tr><td>Inbound messages</td><td>{}</td></tr>\
         <tr><td>Conversations opened</td><td>{}</td></tr>\
         <tr><td>First response (median / 90th percentile / mean)</td><td>{} / {} / {}</td></tr>\
         <tr><td>First response in business hours (median / 90th)</td><td>{} / {}</td></tr>\
         <tr><td>Resolution (median / 90th percentile)</td><td>{} / {}</td></tr>\
         <tr><td>Replies sent</td><td>{}</td></tr>\
         <tr><td>Canned replies refused by the guard</td><td>{}</td></tr>\
         <tr><td>Unhappy customers recovered</td><td>{} of {}</td></tr>\
         <tr><td>Platform delay, publish to receipt (mean / max)</td><td>{} / {}</td></tr>\
         </table>",
        t.inbound,
        t.conversations_opened,
        secs(fr.calendar.p50_seconds),
        secs(fr.calendar.p90_seconds),
        secs(fr.calendar.mean_seconds),
        secs(fr.business.p50_seconds),
        secs(fr.business.p90_seconds),
        secs(rs.calendar.p50_seconds),
        secs(rs.calendar.p90_seconds),
        t.replies_sent,
        t.canned_refused,
        t.recovered,
        t.negative_conversations,
        secs(t.platform_delay.mean_seconds),
        secs(t.platform_delay.max_seconds),
    );
    out.push_str("<h2>Response-time promises</h2><table><tr><th>Target</th><th>Met</th><th>Breached</th><th>Compliance</th></tr>");
    for s in &t.sla {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&s.target.replace('_', " ").to_lowercase()),
            s.met,
            s.breached,
            s.compliance_percent
                .map_or("—".into(), |c| format!("{c:.1} %"))
        );
    }
    out.push_str("</table>");
    out.push_str("<h2>Charts</h2>");
    out.push_str(&histogram(
        "response-time-distribution",
        "First response time",
        &r.distribution,
    ));
    let labels: Vec<String> = r.buckets.iter().map(|b| b.label.clone()).collect();
    let series = |key: &str| -> Vec<u64> {
        r.buckets
            .iter()
            .map(|b| {
                b.figures
                    .inbound_by_sentiment
                    .iter()
                    .find(|k| k.key == key)
                    .map_or(0, |k| k.count as u64)
            })
            .collect()
    };
    out.push_str(&stacked(
        "volume-by-sentiment",
        "Inbound volume by sentiment",
        &labels,
        &[
            ("negative", "#c8553d", series("NEGATIVE")),
            ("neutral", "#9aa5b1", series("NEUTRAL")),
            ("positive", "#2a9d58", series("POSITIVE")),
        ],
    ));
    let compliance: Vec<Option<f64>> = r
        .buckets
        .iter()
        .map(|b| {
            let (met, breached) = b
                .figures
                .sla
                .iter()
                .fold((0, 0), |(m, x), s| (m + s.met, x + s.breached));
            (met + breached > 0).then(|| 100.0 * met as f64 / (met + breached) as f64)
        })
        .collect();
    out.push_str(&percent_line(
        "sla-compliance",
        "SLA compliance over time",
        &labels,
        &compliance,
    ));
    out.push_str("<h2>By period</h2><table><tr><th>From</th><th>Inbound</th><th>Opened</th><th>First response (median)</th><th>Replies</th><th>Breaches</th></tr>");
    for b in &r.buckets {
        let breaches: i32 = b.figures.sla.iter().map(|s| s.breached).sum();
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&b.label),
            b.figures.inbound,
            b.figures.conversations_opened,
            secs(b.figures.first_response.calendar.p50_seconds),
            b.figures.replies_sent,
            breaches
        );
    }
    out.push_str("</table>");
    if !r.agents.is_empty() {
        out.push_str("<h2>By agent</h2><table><tr><th>Agent</th><th>Replies</th><th>Assigned</th><th>Resolved</th></tr>");
        for a in &r.agents {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&a.name),
                a.replies_sent,
                a.assigned,
                a.resolved
            );
        }
        out.push_str("</table>");
    }
    out
}
