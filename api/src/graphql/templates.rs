//! Reply templates: scaffolds in a client's voice with slots the agent must
//! write. A template belongs to one workspace, or to the agency and is
//! enabled per workspace (OWNER/ADMIN manage agency templates).

use super::channels::GqlChannelKind;
use super::types::{Workspace, decode, gid, strings};
use super::{auth, state};
use crate::audit::AuditEvent;
use crate::auth::viewer::Viewer;
use crate::error::{ApiError, ApiResult};
use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use rapport_domain::ingest::ChannelKind;
use rapport_domain::reply::template::{SlotSpec, Template};
use rapport_domain::{Kind, Name};
use rapport_store::entities::{reply_template, workspace};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect, Set,
};
use serde_json::json;
use uuid::Uuid;

use super::MAX_LISTED;

/// The care-playbook step a reply serves.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum Intent {
    /// Public: shows understanding.
    Acknowledge,
    /// Public invitation to continue in private messages.
    TakeOffline,
    /// Solves the customer's problem.
    Resolve,
    /// After resolution: invite the customer to share the outcome.
    CloseTheLoop,
    /// Answer praise too.
    Thanks,
}

impl Intent {
    pub fn as_str(self) -> &'static str {
        match self {
            Intent::Acknowledge => "ACKNOWLEDGE",
            Intent::TakeOffline => "TAKE_OFFLINE",
            Intent::Resolve => "RESOLVE",
            Intent::CloseTheLoop => "CLOSE_THE_LOOP",
            Intent::Thanks => "THANKS",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            Intent::Acknowledge,
            Intent::TakeOffline,
            Intent::Resolve,
            Intent::CloseTheLoop,
            Intent::Thanks,
        ]
        .into_iter()
        .find(|i| i.as_str() == raw)
    }
}

/// A slot of a reply template: a part the agent writes for each reply.
#[derive(SimpleObject, InputObject, Clone)]
#[graphql(input_name = "TemplateSlotInput")]
pub struct TemplateSlot {
    /// Used in the body as `{{ slot.<name> }}`.
    name: String,
    /// What the agent should write here.
    guidance: String,
    /// Shortest acceptable text, in characters.
    #[graphql(default)]
    min_length: i32,
}

pub struct ReplyTemplate(pub reply_template::Model);

/// A reply scaffold in a client's voice, with slots the agent must write.
/// It belongs to one workspace, or to the agency and is enabled per
/// workspace.
#[Object]
impl ReplyTemplate {
    /// Global ID of the template.
    async fn id(&self) -> ID {
        gid(Kind::ReplyTemplate, self.0.id)
    }
    /// The template's name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The minijinja source.
    async fn body(&self) -> &str {
        &self.0.body
    }
    /// The parts the agent writes, as used in the body.
    async fn slots(&self) -> Vec<TemplateSlot> {
        slots_of(&self.0)
            .into_iter()
            .map(|s| TemplateSlot {
                name: s.name,
                guidance: s.guidance,
                min_length: s.min_length as i32,
            })
            .collect()
    }
    /// Channels it may be used on; empty: all.
    async fn channel_kinds(&self) -> Vec<GqlChannelKind> {
        kinds_of(&self.0).into_iter().map(Into::into).collect()
    }
    /// The care-playbook step replies from it serve.
    async fn intent(&self) -> ApiResult<Intent> {
        Intent::parse(&self.0.intent)
            .ok_or_else(|| ApiError::internal(format!("stored intent {:?}", self.0.intent)))
    }
    /// The workspace whose voice this is; null for an agency template.
    #[graphql(complexity = "super::LOOKUP_COST + child_complexity")]
    async fn workspace(&self, ctx: &Context<'_>) -> ApiResult<Option<Workspace>> {
        let Some(id) = self.0.workspace_id else {
            return Ok(None);
        };
        let v = auth(ctx).viewer()?;
        Ok(Some(Workspace(
            v.scope.workspace(&state(ctx).db, id).await?,
        )))
    }
    /// Agency templates: the workspaces (among those the viewer may see)
    /// where it is enabled.
    #[graphql(complexity = "super::FEW_COST * child_complexity")]
    async fn enabled_workspaces(&self, ctx: &Context<'_>) -> ApiResult<Vec<Workspace>> {
        let v = auth(ctx).viewer()?;
        let ids: Vec<Uuid> = enabled_in(&self.0)
            .into_iter()
            .filter(|w| v.scope.sees_workspace(*w))
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(v.scope
            .select::<workspace::Entity>()
            .filter(workspace::Column::Id.is_in(ids))
            .order_by_asc(workspace::Column::Name)
            .all(&state(ctx).db)
            .await?
            .into_iter()
            .map(Workspace)
            .collect())
    }
    /// Whether the template was archived: no longer listed or usable.
    async fn archived(&self) -> bool {
        self.0.archived_at.is_some()
    }
    /// When the template was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When the template was last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

pub fn slots_of(m: &reply_template::Model) -> Vec<SlotSpec> {
    serde_json::from_value::<Vec<serde_json::Value>>(m.slots.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|s| SlotSpec {
            name: s["name"].as_str().unwrap_or_default().into(),
            guidance: s["guidance"].as_str().unwrap_or_default().into(),
            min_length: s["minLength"].as_u64().unwrap_or(0) as u32,
        })
        .collect()
}

fn kinds_of(m: &reply_template::Model) -> Vec<ChannelKind> {
    strings(&m.channel_kinds)
        .iter()
        .filter_map(|k| ChannelKind::parse(k).ok())
        .collect()
}

fn enabled_in(m: &reply_template::Model) -> Vec<Uuid> {
    strings(&m.enabled_workspace_ids)
        .iter()
        .filter_map(|s| Uuid::parse_str(s).ok())
        .collect()
}

/// Whether a template may be used on a conversation of `workspace`.
fn usable_in(m: &reply_template::Model, workspace: Uuid) -> bool {
    match m.workspace_id {
        Some(w) => w == workspace,
        None => enabled_in(m).contains(&workspace),
    }
}

/// The live template `id` as usable on a conversation of `workspace` on a
/// `kind` channel: another tenant's, another workspace's or an archived
/// one is NOT_FOUND; one made for other channels is refused.
pub async fn usable<C: ConnectionTrait>(
    v: &Viewer,
    conn: &C,
    id: &ID,
    workspace: Uuid,
    kind: ChannelKind,
) -> ApiResult<reply_template::Model> {
    let t = v
        .scope
        .select::<reply_template::Entity>()
        .filter(reply_template::Column::Id.eq(decode(Kind::ReplyTemplate, id)?))
        .filter(reply_template::Column::ArchivedAt.is_null())
        .one(conn)
        .await?
        .filter(|t| usable_in(t, workspace))
        .ok_or(ApiError::NotFound)?;
    let kinds = kinds_of(&t);
    if !kinds.is_empty() && !kinds.contains(&kind) {
        return Err(ApiError::bad_input(
            "templateId",
            format!(
                "this template is for {} channels only",
                kinds
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(t)
}

/// Parses the slots and checks the body against them: refused with the line
/// and reason when it does not parse, uses unknown names, or has no slot.
fn checked(body: &str, slots: &[TemplateSlot]) -> ApiResult<Vec<SlotSpec>> {
    ApiError::at_most("slots", slots.len(), MAX_SLOTS, "slots")?;
    let mut specs: Vec<SlotSpec> = Vec::with_capacity(slots.len());
    for s in slots {
        ApiError::at_most(
            "slots",
            s.guidance.chars().count(),
            MAX_GUIDANCE_CHARS,
            "characters of guidance per slot",
        )?;
        if specs.iter().any(|o| o.name == s.name) {
            return Err(ApiError::bad_input(
                "slots",
                format!("slot {:?} is named twice", s.name),
            ));
        }
        if !(0..=1000).contains(&s.min_length) {
            return Err(ApiError::bad_input("slots", "minLength must be 0 to 1000"));
        }
        if s.guidance.contains('\0') {
            return Err(ApiError::bad_input(
                "slots",
                "guidance must not contain the NUL character",
            ));
        }
        specs.push(SlotSpec {
            name: s.name.clone(),
            guidance: s.guidance.clone(),
            min_length: s.min_length as u32,
        });
    }
    Template::parse(body, specs.clone())
        .and_then(|t| t.trial())
        .map_err(|e| ApiError::bad_input("body", e.to_string()))?;
    Ok(specs)
}

fn slots_json(specs: &[SlotSpec]) -> serde_json::Value {
    json!(
        specs
            .iter()
            .map(|s| json!({ "name": s.name, "guidance": s.guidance, "minLength": s.min_length }))
            .collect::<Vec<_>>()
    )
}

fn kinds_json(kinds: &[GqlChannelKind]) -> serde_json::Value {
    let mut k: Vec<&str> = kinds
        .iter()
        .map(|k| ChannelKind::from(*k).as_str())
        .collect();
    k.sort_unstable();
    k.dedup();
    json!(k)
}

/// Slots a template may have, and characters of guidance per slot.
const MAX_SLOTS: usize = 20;
const MAX_GUIDANCE_CHARS: usize = 1000;
/// Workspaces an agency template may be enabled in at once.
const MAX_ENABLED_WORKSPACES: usize = 1000;

/// Workspace ids the viewer names, each checked to be theirs and visible.
async fn workspaces_named<C: ConnectionTrait>(
    v: &Viewer,
    conn: &C,
    ids: &[ID],
) -> ApiResult<serde_json::Value> {
    ApiError::at_most(
        "enabledWorkspaceIds",
        ids.len(),
        MAX_ENABLED_WORKSPACES,
        "workspaces",
    )?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let ws = v
            .scope
            .workspace(conn, decode(Kind::Workspace, id)?)
            .await?;
        if !out.contains(&ws.id.to_string()) {
            out.push(ws.id.to_string());
        }
    }
    Ok(json!(out))
}

/// A new reply template.
#[derive(InputObject)]
pub struct CreateReplyTemplateInput {
    /// The workspace whose voice this is; omit for an agency template
    /// (OWNER or ADMIN), then enable it per workspace.
    workspace_id: Option<ID>,
    /// The template's name.
    name: String,
    /// minijinja; context: author.name, author.handle, brand.name,
    /// agent.first_name, message.excerpt, conversation.age; and the slots
    /// as `slot.<name>`.
    body: String,
    /// The parts the agent writes; the body must use at least one.
    slots: Vec<TemplateSlot>,
    /// Channels it may be used on; empty: all.
    #[graphql(default)]
    channel_kinds: Vec<GqlChannelKind>,
    /// The care-playbook step replies from it serve.
    intent: Intent,
    /// Agency templates only: the workspaces where it may be used.
    #[graphql(default)]
    enabled_workspace_ids: Vec<ID>,
}

/// Only the fields given change; `body` and `slots` are checked together.
#[derive(InputObject)]
pub struct UpdateReplyTemplateInput {
    /// The template to change; archived ones cannot be changed.
    id: ID,
    /// New name.
    name: Option<String>,
    /// New minijinja source.
    body: Option<String>,
    /// New slots, replacing the old ones.
    slots: Option<Vec<TemplateSlot>>,
    /// New channel kinds it may be used on; empty: all.
    channel_kinds: Option<Vec<GqlChannelKind>>,
    /// New intent.
    intent: Option<Intent>,
    /// Agency templates only: replaces the workspaces it is enabled in.
    enabled_workspace_ids: Option<Vec<ID>>,
}

/// The template to archive.
#[derive(InputObject)]
pub struct ArchiveReplyTemplateInput {
    /// The template's ID.
    id: ID,
}

#[derive(Default)]
pub struct TemplateQuery;

#[Object]
impl TemplateQuery {
    /// Templates usable in a workspace: its own and the agency's enabled
    /// there, by name.
    #[graphql(complexity = "super::LIST_COST * child_complexity")]
    async fn reply_templates(
        &self,
        ctx: &Context<'_>,
        workspace_id: ID,
    ) -> ApiResult<Vec<ReplyTemplate>> {
        let v = auth(ctx).viewer()?;
        v.require_writer()?;
        let db = &state(ctx).db;
        let ws = v
            .scope
            .workspace(db, decode(Kind::Workspace, &workspace_id)?)
            .await?;
        let base = v
            .scope
            .select::<reply_template::Entity>()
            .filter(
                Condition::any()
                    .add(reply_template::Column::WorkspaceId.eq(ws.id))
                    .add(reply_template::Column::WorkspaceId.is_null()),
            )
            .filter(reply_template::Column::ArchivedAt.is_null());
        Ok(visible_by_name(db, base, |t| usable_in(t, ws.id))
            .await?
            .into_iter()
            .map(ReplyTemplate)
            .collect())
    }

    /// The agency's own templates (enabled per workspace), by name. A
    /// member restricted to some workspaces sees those enabled in one of
    /// them: the others speak for brands they may not see.
    #[graphql(complexity = "super::LIST_COST * child_complexity")]
    async fn agency_reply_templates(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = false)] include_archived: bool,
    ) -> ApiResult<Vec<ReplyTemplate>> {
        let v = auth(ctx).viewer()?;
        v.require_writer()?;
        let mut q = v
            .scope
            .select::<reply_template::Entity>()
            .filter(reply_template::Column::WorkspaceId.is_null());
        if !include_archived {
            q = q.filter(reply_template::Column::ArchivedAt.is_null());
        }
        let visible = |t: &reply_template::Model| {
            v.scope.sees_every_workspace()
                || enabled_in(t).into_iter().any(|w| v.scope.sees_workspace(w))
        };
        Ok(visible_by_name(&state(ctx).db, q, visible)
            .await?
            .into_iter()
            .map(ReplyTemplate)
            .collect())
    }
}

/// Up to [`MAX_LISTED`] of `q`'s templates that `keep` lets through, by
/// name. Templates are enabled per workspace in a JSON list filtered here,
/// so the rows are read in pages until the list is full: a limit in SQL
/// would count templates the viewer or the workspace cannot use.
async fn visible_by_name(
    db: &sea_orm::DatabaseConnection,
    q: sea_orm::Select<reply_template::Entity>,
    keep: impl Fn(&reply_template::Model) -> bool,
) -> ApiResult<Vec<reply_template::Model>> {
    let mut out = Vec::new();
    let mut after: Option<(String, Uuid)> = None;
    loop {
        let mut page = q.clone();
        if let Some((name, id)) = &after {
            page = page.filter(
                Condition::any()
                    .add(reply_template::Column::Name.gt(name.as_str()))
                    .add(
                        Condition::all()
                            .add(reply_template::Column::Name.eq(name.as_str()))
                            .add(reply_template::Column::Id.gt(*id)),
                    ),
            );
        }
        let rows = page
            .order_by_asc(reply_template::Column::Name)
            .order_by_asc(reply_template::Column::Id)
            .limit(MAX_LISTED)
            .all(db)
            .await?;
        let exhausted = (rows.len() as u64) < MAX_LISTED;
        after = rows.last().map(|t| (t.name.clone(), t.id));
        out.extend(rows.into_iter().filter(|t| keep(t)));
        if exhausted || out.len() as u64 >= MAX_LISTED {
            break;
        }
    }
    out.truncate(MAX_LISTED as usize);
    Ok(out)
}

#[derive(Default)]
pub struct TemplateMutation;

/// The template `id` as the viewer may change it: a workspace template in
/// one of their workspaces (writers), or an agency template (managers).
async fn changeable<C: ConnectionTrait>(
    v: &Viewer,
    conn: &C,
    id: &ID,
) -> ApiResult<reply_template::Model> {
    let t = v
        .scope
        .find::<reply_template::Entity, _>(conn, decode(Kind::ReplyTemplate, id)?)
        .await?;
    match t.workspace_id {
        Some(w) if !v.scope.sees_workspace(w) => return Err(ApiError::NotFound),
        Some(_) => v.require_writer()?,
        None => v.require_manager()?,
    }
    Ok(t)
}

#[Object]
impl TemplateMutation {
    /// A scaffold in a workspace's (or the agency's) voice: refused with the
    /// line and reason when it does not parse, uses unknown names, or has no
    /// slot.
    async fn create_reply_template(
        &self,
        ctx: &Context<'_>,
        input: CreateReplyTemplateInput,
    ) -> ApiResult<ReplyTemplate> {
        let v = auth(ctx).viewer()?;
        match input.workspace_id {
            Some(_) => v.require_writer()?,
            None => v.require_manager()?,
        }
        let name = Name::parse("name", &input.name)?;
        let specs = checked(&input.body, &input.slots)?;
        let st = state(ctx);
        let txn = v.scope.begin(&st.db).await?;
        let ws = match &input.workspace_id {
            Some(id) => Some(
                v.scope
                    .workspace(&txn, decode(Kind::Workspace, id)?)
                    .await?,
            ),
            None => None,
        };
        if ws.is_some() && !input.enabled_workspace_ids.is_empty() {
            return Err(ApiError::bad_input(
                "enabledWorkspaceIds",
                "applies to agency templates (without workspaceId) only",
            ));
        }
        let enabled = workspaces_named(v, &txn, &input.enabled_workspace_ids).await?;
        let now = Utc::now();
        let t = reply_template::ActiveModel {
            id: Set(Uuid::now_v7()),
            agency_id: Set(v.agency_id),
            workspace_id: Set(ws.as_ref().map(|w| w.id)),
            name: Set(name.into_string()),
            body: Set(input.body.clone()),
            slots: Set(slots_json(&specs)),
            channel_kinds: Set(kinds_json(&input.channel_kinds)),
            enabled_workspace_ids: Set(enabled),
            intent: Set(input.intent.as_str().into()),
            created_at: Set(now),
            updated_at: Set(now),
            archived_at: Set(None),
        }
        .insert(&txn)
        .await?;
        let mut ev = AuditEvent::new("createReplyTemplate").target("ReplyTemplate", t.id);
        if let Some(w) = &ws {
            ev = ev.workspace(w.id);
        }
        ev.by(&txn, v).await?;
        txn.commit().await?;
        Ok(ReplyTemplate(t))
    }

    /// Changes a template; a new body is checked with the slots it will have.
    async fn update_reply_template(
        &self,
        ctx: &Context<'_>,
        input: UpdateReplyTemplateInput,
    ) -> ApiResult<ReplyTemplate> {
        let v = auth(ctx).viewer()?;
        v.require_writer()?;
        let st = state(ctx);
        let txn = v.scope.begin(&st.db).await?;
        let t = changeable(v, &txn, &input.id).await?;
        if t.archived_at.is_some() {
            return Err(ApiError::bad_input(
                "id",
                "this template is archived; create a new one",
            ));
        }
        let mut changed = Vec::new();
        let mut am = t.clone().into_active_model();
        if let Some(n) = &input.name {
            am.name = Set(Name::parse("name", n)?.into_string());
            changed.push("name");
        }
        if input.body.is_some() || input.slots.is_some() {
            let body = input.body.clone().unwrap_or_else(|| t.body.clone());
            let slots = match &input.slots {
                Some(s) => s.clone(),
                None => slots_of(&t)
                    .into_iter()
                    .map(|s| TemplateSlot {
                        name: s.name,
                        guidance: s.guidance,
                        min_length: s.min_length as i32,
                    })
                    .collect(),
            };
            let specs = checked(&body, &slots)?;
            am.body = Set(body);
            am.slots = Set(slots_json(&specs));
            changed.push("body");
        }
        if let Some(k) = &input.channel_kinds {
            am.channel_kinds = Set(kinds_json(k));
            changed.push("channelKinds");
        }
        if let Some(i) = input.intent {
            am.intent = Set(i.as_str().into());
            changed.push("intent");
        }
        if let Some(ids) = &input.enabled_workspace_ids {
            if t.workspace_id.is_some() {
                return Err(ApiError::bad_input(
                    "enabledWorkspaceIds",
                    "applies to agency templates only",
                ));
            }
            // Workspaces the viewer cannot see keep their setting.
            let mut enabled = strings(&workspaces_named(v, &txn, ids).await?);
            for kept in enabled_in(&t) {
                if !v.scope.sees_workspace(kept) {
                    enabled.push(kept.to_string());
                }
            }
            am.enabled_workspace_ids = Set(json!(enabled));
            changed.push("enabledWorkspaceIds");
        }
        am.updated_at = Set(Utc::now());
        let t = am.update(&txn).await?;
        let mut ev = AuditEvent::new("updateReplyTemplate")
            .target("ReplyTemplate", t.id)
            .details(json!({ "changed": changed }));
        if let Some(w) = t.workspace_id {
            ev = ev.workspace(w);
        }
        ev.by(&txn, v).await?;
        txn.commit().await?;
        Ok(ReplyTemplate(t))
    }

    /// Retires a template: no longer listed or usable; past replies keep it.
    async fn archive_reply_template(
        &self,
        ctx: &Context<'_>,
        input: ArchiveReplyTemplateInput,
    ) -> ApiResult<ReplyTemplate> {
        let v = auth(ctx).viewer()?;
        v.require_writer()?;
        let st = state(ctx);
        let txn = v.scope.begin(&st.db).await?;
        let t = changeable(v, &txn, &input.id).await?;
        let ws = t.workspace_id;
        let mut am = t.into_active_model();
        am.archived_at = Set(Some(Utc::now()));
        am.updated_at = Set(Utc::now());
        let t = am.update(&txn).await?;
        let mut ev = AuditEvent::new("archiveReplyTemplate").target("ReplyTemplate", t.id);
        if let Some(w) = ws {
            ev = ev.workspace(w);
        }
        ev.by(&txn, v).await?;
        txn.commit().await?;
        Ok(ReplyTemplate(t))
    }
}
