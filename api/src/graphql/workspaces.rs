//! Workspaces: one per client brand.

use super::paging::{Order, keyset};
use super::types::{Workspace, decode};
use super::{auth, state};
use crate::audit::AuditEvent;
use crate::error::ApiResult;
use async_graphql::connection::Connection;
use async_graphql::{Context, ID, InputObject, Object};
use chrono::Utc;
use rapport_domain::reply::settings::{DuplicateWindow, SimilarityThreshold};
use rapport_domain::{Kind, Name, PageRequest, PhraseList, TimeZone};
use rapport_store::entities::workspace;
use sea_orm::{ActiveModelTrait, ColumnTrait, IntoActiveModel, QueryFilter, Set};
use serde_json::json;
use uuid::Uuid;

/// A new workspace (client brand).
#[derive(InputObject)]
pub struct CreateWorkspaceInput {
    /// The workspace's name.
    name: String,
    /// IANA time zone, e.g. `America/New_York`.
    timezone: String,
    /// Words and names that identify the client brand in mentions.
    #[graphql(default)]
    brand_keywords: Vec<String>,
    /// Phrases a reply to this brand's customers must never contain.
    #[graphql(default)]
    banned_phrases: Vec<String>,
    /// Words that raise a message's priority (e.g. "refund", "lawyer");
    /// empty: Rapport's defaults.
    #[graphql(default)]
    urgency_keywords: Vec<String>,
    /// Canned-reply guard: similarity (0.6 to 1.0) from which a reply counts
    /// as a repeat of an earlier one; default 0.8.
    similarity_threshold: Option<f64>,
    /// Canned-reply guard: days of earlier replies compared (1 to 365);
    /// default 30.
    duplicate_window_days: Option<i32>,
}

/// Only the fields given change.
#[derive(InputObject)]
pub struct UpdateWorkspaceInput {
    /// The workspace to change.
    id: ID,
    /// New name.
    name: Option<String>,
    /// New IANA time zone.
    timezone: Option<String>,
    /// Replaces the brand keywords.
    brand_keywords: Option<Vec<String>>,
    /// Replaces the banned phrases.
    banned_phrases: Option<Vec<String>>,
    /// Replaces the urgency keywords; empty: Rapport's defaults.
    urgency_keywords: Option<Vec<String>>,
    /// New canned-reply similarity threshold (0.6 to 1.0).
    similarity_threshold: Option<f64>,
    /// New canned-reply comparison window in days (1 to 365).
    duplicate_window_days: Option<i32>,
}

/// The workspace to archive.
#[derive(InputObject)]
pub struct ArchiveWorkspaceInput {
    /// The workspace to archive.
    id: ID,
}

#[derive(Default)]
pub struct WorkspaceQuery;

#[Object]
impl WorkspaceQuery {
    /// The workspaces the signed-in member may see, oldest first.
    // A page costs its size times what each node asks for.
    #[graphql(complexity = "first.unwrap_or(20).clamp(0, 100) as usize * child_complexity")]
    async fn workspaces(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        #[graphql(default = false)] include_archived: bool,
    ) -> ApiResult<Connection<String, Workspace>> {
        let v = auth(ctx).viewer()?;
        let page = PageRequest::parse(first, after.as_deref())?;
        let txn = v.scope.begin(&state(ctx).db).await?;
        let mut q = v.scope.select_in_workspaces::<workspace::Entity>();
        if !include_archived {
            q = q.filter(workspace::Column::ArchivedAt.is_null());
        }
        let conn = keyset(
            &txn,
            q,
            workspace::Column::Id,
            page,
            Order::OldestFirst,
            |w| w.id,
            Workspace,
        )
        .await?;
        txn.commit().await?;
        Ok(conn)
    }

    /// One workspace by ID; NOT_FOUND when it does not exist or the member
    /// may not see it. Archived workspaces are returned too.
    async fn workspace(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Workspace> {
        let v = auth(ctx).viewer()?;
        let id = decode(Kind::Workspace, &id)?;
        let txn = v.scope.begin(&state(ctx).db).await?;
        let w = v.scope.workspace(&txn, id).await?;
        txn.commit().await?;
        Ok(Workspace(w))
    }
}

#[derive(Default)]
pub struct WorkspaceMutation;

#[Object]
impl WorkspaceMutation {
    /// Adds a client brand. OWNER or ADMIN.
    async fn create_workspace(
        &self,
        ctx: &Context<'_>,
        input: CreateWorkspaceInput,
    ) -> ApiResult<Workspace> {
        let v = auth(ctx).viewer()?;
        v.require_manager()?;
        let name = Name::parse("name", &input.name)?;
        let tz = TimeZone::parse(&input.timezone)?;
        let keywords = PhraseList::parse("brandKeywords", &input.brand_keywords)?;
        let banned = PhraseList::parse("bannedPhrases", &input.banned_phrases)?;
        let urgency = PhraseList::parse("urgencyKeywords", &input.urgency_keywords)?;
        let threshold = input
            .similarity_threshold
            .map(SimilarityThreshold::parse)
            .transpose()?;
        let window = input
            .duplicate_window_days
            .map(DuplicateWindow::parse)
            .transpose()?;
        let now = Utc::now();
        let txn = v.scope.begin(&state(ctx).db).await?;
        let w = workspace::ActiveModel {
            id: Set(Uuid::now_v7()),
            agency_id: Set(v.agency_id),
            name: Set(name.into_string()),
            timezone: Set(tz.name().to_string()),
            brand_keywords: Set(json!(keywords.as_slice())),
            banned_phrases: Set(json!(banned.as_slice())),
            urgency_keywords: Set(json!(urgency.as_slice())),
            similarity_threshold: Set(threshold.map(SimilarityThreshold::get)),
            duplicate_window_days: Set(window.map(|w| w.days() as i32)),
            archived_at: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await?;
        AuditEvent::new("createWorkspace")
            .workspace(w.id)
            .target("Workspace", w.id)
            .details(json!({ "name": w.name, "timezone": w.timezone }))
            .by(&txn, v)
            .await?;
        txn.commit().await?;
        Ok(Workspace(w))
    }

    /// Changes a workspace's name, time zone, keywords or banned phrases. OWNER or ADMIN.
    async fn update_workspace(
        &self,
        ctx: &Context<'_>,
        input: UpdateWorkspaceInput,
    ) -> ApiResult<Workspace> {
        let v = auth(ctx).viewer()?;
        v.require_manager()?;
        let id = decode(Kind::Workspace, &input.id)?;
        let name = input
            .name
            .as_deref()
            .map(|n| Name::parse("name", n))
            .transpose()?;
        let tz = input.timezone.as_deref().map(TimeZone::parse).transpose()?;
        let keywords = input
            .brand_keywords
            .as_deref()
            .map(|k| PhraseList::parse("brandKeywords", k))
            .transpose()?;
        let banned = input
            .banned_phrases
            .as_deref()
            .map(|k| PhraseList::parse("bannedPhrases", k))
            .transpose()?;
        let urgency = input
            .urgency_keywords
            .as_deref()
            .map(|k| PhraseList::parse("urgencyKeywords", k))
            .transpose()?;
        let threshold = input
            .similarity_threshold
            .map(SimilarityThreshold::parse)
            .transpose()?;
        let window = input
            .duplicate_window_days
            .map(DuplicateWindow::parse)
            .transpose()?;
        let txn = v.scope.begin(&state(ctx).db).await?;
        let current = v.scope.workspace(&txn, id).await?;
        let mut changed = serde_json::Map::new();
        let mut am = current.into_active_model();
        if let Some(n) = name {
            changed.insert("name".into(), json!(n.as_str()));
            am.name = Set(n.into_string());
        }
        if let Some(tz) = tz {
            changed.insert("timezone".into(), json!(tz.name()));
            am.timezone = Set(tz.name().to_string());
        }
        if let Some(k) = keywords {
            changed.insert("brandKeywords".into(), json!(k.as_slice()));
            am.brand_keywords = Set(json!(k.as_slice()));
        }
        if let Some(b) = banned {
            changed.insert("bannedPhrases".into(), json!(b.as_slice()));
            am.banned_phrases = Set(json!(b.as_slice()));
        }
        if let Some(u) = urgency {
            changed.insert("urgencyKeywords".into(), json!(u.as_slice()));
            am.urgency_keywords = Set(json!(u.as_slice()));
        }
        if let Some(t) = threshold {
            changed.insert("similarityThreshold".into(), json!(t.get()));
            am.similarity_threshold = Set(Some(t.get()));
        }
        if let Some(w) = window {
            changed.insert("duplicateWindowDays".into(), json!(w.days()));
            am.duplicate_window_days = Set(Some(w.days() as i32));
        }
        am.updated_at = Set(Utc::now());
        let w = am.update(&txn).await?;
        AuditEvent::new("updateWorkspace")
            .workspace(w.id)
            .target("Workspace", w.id)
            .details(serde_json::Value::Object(changed))
            .by(&txn, v)
            .await?;
        txn.commit().await?;
        Ok(Workspace(w))
    }

    /// Archives a workspace: hidden from lists, kept for reports. OWNER or ADMIN.
    async fn archive_workspace(
        &self,
        ctx: &Context<'_>,
        input: ArchiveWorkspaceInput,
    ) -> ApiResult<Workspace> {
        let v = auth(ctx).viewer()?;
        v.require_manager()?;
        let id = decode(Kind::Workspace, &input.id)?;
        let txn = v.scope.begin(&state(ctx).db).await?;
        let current = v.scope.workspace(&txn, id).await?;
        let w = if current.archived_at.is_some() {
            current
        } else {
            let mut am = current.into_active_model();
            am.archived_at = Set(Some(Utc::now()));
            am.updated_at = Set(Utc::now());
            am.update(&txn).await?
        };
        AuditEvent::new("archiveWorkspace")
            .workspace(w.id)
            .target("Workspace", w.id)
            .by(&txn, v)
            .await?;
        txn.commit().await?;
        Ok(Workspace(w))
    }
}
