//! Reply templates and replies guarded against canned answers.

use super::conversations::{Message, Visibility};
use super::types::{decode, gid, load_user};
use super::{auth, state};
use crate::audit::AuditEvent;
use crate::auth::viewer::Viewer;
use crate::error::{ApiError, ApiResult};
use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::Utc;
use rapport_domain::reply::guard::{self, Check, Finding};
use rapport_domain::reply::template::{SlotSpec, Template};
use rapport_domain::{Kind, Name};
use rapport_store::entities::{author, channel, conversation, message, reply_template, workspace};
use rapport_store::sla;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, Set,
};
use serde_json::json;
use std::collections::HashMap;
use uuid::Uuid;

/// How similar (estimated Jaccard of word shingles) counts as a repeat.
pub const SIMILARITY_THRESHOLD: f64 = 0.8;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum Intent {
    /// Public: shows understanding.
    Acknowledge,
    /// Public invitation to continue in private messages.
    TakeOffline,
    Resolve,
    /// After resolution: invite the customer to share the outcome.
    CloseTheLoop,
    /// Answer praise too.
    Thanks,
}

impl Intent {
    fn as_str(self) -> &'static str {
        match self {
            Intent::Acknowledge => "ACKNOWLEDGE",
            Intent::TakeOffline => "TAKE_OFFLINE",
            Intent::Resolve => "RESOLVE",
            Intent::CloseTheLoop => "CLOSE_THE_LOOP",
            Intent::Thanks => "THANKS",
        }
    }
}

#[derive(SimpleObject, InputObject, Clone)]
#[graphql(input_name = "TemplateSlotInput")]
pub struct TemplateSlot {
    /// Used in the body as `{{ slot.<name> }}`.
    name: String,
    /// What the agent should write here.
    guidance: String,
    #[graphql(default)]
    min_length: i32,
}

pub struct ReplyTemplate(pub reply_template::Model);

#[Object]
impl ReplyTemplate {
    async fn id(&self) -> ID {
        gid(Kind::ReplyTemplate, self.0.id)
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn body(&self) -> &str {
        &self.0.body
    }
    async fn slots(&self) -> Vec<TemplateSlot> {
        serde_json::from_value::<Vec<serde_json::Value>>(self.0.slots.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|s| TemplateSlot {
                name: s["name"].as_str().unwrap_or_default().into(),
                guidance: s["guidance"].as_str().unwrap_or_default().into(),
                min_length: s["minLength"].as_i64().unwrap_or(0) as i32,
            })
            .collect()
    }
    async fn intent(&self) -> &str {
        &self.0.intent
    }
    async fn archived(&self) -> bool {
        self.0.archived_at.is_some()
    }
}

fn slots_of(m: &reply_template::Model) -> Vec<SlotSpec> {
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

#[derive(InputObject)]
pub struct CreateReplyTemplateInput {
    workspace_id: ID,
    name: String,
    /// minijinja; context: author.name, author.handle, brand.name,
    /// agent.first_name, message.excerpt, conversation.age; and the slots.
    body: String,
    slots: Vec<TemplateSlot>,
    #[graphql(default)]
    channel_kinds: Vec<String>,
    intent: Intent,
}

#[derive(InputObject)]
pub struct ArchiveReplyTemplateInput {
    id: ID,
}

#[derive(InputObject, Clone)]
pub struct SlotValue {
    name: String,
    value: String,
}

#[derive(InputObject)]
pub struct PreviewReplyInput {
    conversation_id: ID,
    template_id: Option<ID>,
    #[graphql(default)]
    slots: Vec<SlotValue>,
    /// Free text, when no template is used.
    text: Option<String>,
}

#[derive(InputObject)]
pub struct SendReplyInput {
    conversation_id: ID,
    template_id: Option<ID>,
    #[graphql(default)]
    slots: Vec<SlotValue>,
    text: Option<String>,
    visibility: Visibility,
    /// OWNER or ADMIN only: send despite the guard's findings (audited).
    override_reason: Option<String>,
}

#[derive(SimpleObject)]
pub struct ReplyFinding {
    code: String,
    message: String,
    /// False for warnings, which do not stop a reply.
    blocking: bool,
    /// For NEAR_DUPLICATE: the earlier reply (a Message ID) and similarity.
    earlier_reply_id: Option<ID>,
    similarity: Option<f64>,
}

impl From<&Finding> for ReplyFinding {
    fn from(f: &Finding) -> Self {
        let (earlier, sim) = match f {
            Finding::NearDuplicate { reply, similarity } => (
                Uuid::parse_str(reply).ok().map(|id| gid(Kind::Message, id)),
                Some(*similarity),
            ),
            _ => (None, None),
        };
        Self {
            code: f.code().into(),
            message: f.message(),
            blocking: f.blocking(),
            earlier_reply_id: earlier,
            similarity: sim,
        }
    }
}

#[derive(SimpleObject)]
pub struct ReplyPreview {
    text: String,
    character_count: i32,
    /// The channel's limit (280 on X).
    character_limit: i32,
    findings: Vec<ReplyFinding>,
}

/// Everything a reply is checked against.
struct Draft {
    conversation: conversation::Model,
    text: String,
    template: Option<Template>,
    template_id: Option<Uuid>,
    slots: HashMap<String, String>,
    context: Vec<String>,
    banned: Vec<String>,
    customer_message: String,
    limit: usize,
}

async fn draft(
    ctx: &Context<'_>,
    v: &Viewer,
    txn: &DatabaseTransaction,
    conversation_id: &ID,
    template_id: Option<&ID>,
    slots: &[SlotValue],
    text: Option<&str>,
) -> ApiResult<Draft> {
    let c = v
        .scope
        .select_in_workspaces::<conversation::Entity>()
        .filter(conversation::Column::Id.eq(decode(Kind::Conversation, conversation_id)?))
        .one(txn)
        .await?
        .ok_or(ApiError::NotFound)?;
    let ws = workspace::Entity::find_by_id(c.workspace_id)
        .one(txn)
        .await?
        .ok_or(ApiError::NotFound)?;
    let who = author::Entity::find_by_id(c.author_id)
        .one(txn)
        .await?
        .ok_or(ApiError::NotFound)?;
    let ch = channel::Entity::find_by_id(c.channel_id)
        .one(txn)
        .await?
        .ok_or(ApiError::NotFound)?;
    let last = message::Entity::find()
        .filter(message::Column::ConversationId.eq(c.id))
        .filter(message::Column::Direction.eq("INBOUND"))
        .order_by_desc(message::Column::Id)
        .one(txn)
        .await?;
    let agent = load_user(ctx, v.user_id).await?;
    let first_name = agent
        .name
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string();
    let customer_name = who
        .display_name
        .clone()
        .unwrap_or_else(|| who.handle.clone());
    let excerpt: String = last
        .as_ref()
        .map(|m| m.body.chars().take(140).collect())
        .unwrap_or_default();
    let age_min = (Utc::now() - c.created_at).num_minutes().max(0);
    let age = if age_min < 120 {
        format!("{age_min} minutes")
    } else {
        format!("{} hours", age_min / 60)
    };
    let slots: HashMap<String, String> = slots
        .iter()
        .map(|s| (s.name.clone(), s.value.clone()))
        .collect();
    let (template, template_id, text) = match (template_id, text) {
        (Some(id), None) => {
            let t = v
                .scope
                .select_in_workspaces::<reply_template::Entity>()
                .filter(reply_template::Column::Id.eq(decode(Kind::ReplyTemplate, id)?))
                .filter(reply_template::Column::ArchivedAt.is_null())
                .one(txn)
                .await?
                .ok_or(ApiError::NotFound)?;
            let parsed = Template::parse(&t.body, slots_of(&t))
                .map_err(|e| ApiError::internal(e.to_string()))?;
            let context = HashMap::from([
                ("author.name", customer_name.clone()),
                ("author.handle", who.handle.clone()),
                ("brand.name", ws.name.clone()),
                ("agent.first_name", first_name.clone()),
                ("message.excerpt", excerpt.clone()),
                ("conversation.age", age.clone()),
            ]);
            let rendered = parsed
                .render(&context, &slots)
                .map_err(|e| ApiError::bad_input("slots", e.to_string()))?;
            (Some(parsed), Some(t.id), rendered)
        }
        (None, Some(t)) if !t.trim().is_empty() => (None, None, t.trim().to_string()),
        _ => {
            return Err(ApiError::bad_input(
                "text",
                "give either a templateId with slots, or text",
            ));
        }
    };
    let limit = match ch.kind.as_str() {
        "X" => 280,
        "INSTAGRAM" => 2_200,
        _ => 8_000,
    };
    Ok(Draft {
        conversation: c,
        text,
        template,
        template_id,
        slots,
        context: vec![
            customer_name,
            who.handle.clone(),
            ws.name.clone(),
            first_name,
        ],
        banned: serde_json::from_value(ws.banned_phrases.clone()).unwrap_or_default(),
        customer_message: last.map(|m| m.body).unwrap_or_default(),
        limit,
    })
}

async fn findings(
    ctx: &Context<'_>,
    txn: &DatabaseTransaction,
    d: &Draft,
) -> ApiResult<Vec<Finding>> {
    let values: Vec<&str> = d.context.iter().map(String::as_str).collect();
    let check = Check {
        text: &d.text,
        template: d.template.as_ref(),
        slots: &d.slots,
        context_values: &values,
        banned_phrases: &d.banned,
        customer_message: &d.customer_message,
        threshold: SIMILARITY_THRESHOLD,
    };
    Ok(state(ctx)
        .replies
        .with(txn, d.conversation.workspace_id, |idx| {
            guard::check(&check, idx)
        })
        .await?)
}

#[derive(Default)]
pub struct ReplyQuery;

#[Object]
impl ReplyQuery {
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
        Ok(v.scope
            .select::<reply_template::Entity>()
            .filter(reply_template::Column::WorkspaceId.eq(ws.id))
            .filter(reply_template::Column::ArchivedAt.is_null())
            .order_by_asc(reply_template::Column::Name)
            .all(db)
            .await?
            .into_iter()
            .map(ReplyTemplate)
            .collect())
    }

    /// Renders a reply and reports what the guard finds, without sending.
    async fn preview_reply(
        &self,
        ctx: &Context<'_>,
        input: PreviewReplyInput,
    ) -> ApiResult<ReplyPreview> {
        let v = auth(ctx).viewer()?;
        v.require_writer()?;
        let txn = v.scope.begin(&state(ctx).db).await?;
        let d = draft(
            ctx,
            v,
            &txn,
            &input.conversation_id,
            input.template_id.as_ref(),
            &input.slots,
            input.text.as_deref(),
        )
        .await?;
        let found = findings(ctx, &txn, &d).await?;
        txn.commit().await?;
        Ok(ReplyPreview {
            character_count: d.text.chars().count() as i32,
            character_limit: d.limit as i32,
            findings: found.iter().map(ReplyFinding::from).collect(),
            text: d.text,
        })
    }
}

#[derive(Default)]
pub struct ReplyMutation;

#[Object]
impl ReplyMutation {
    /// A scaffold in a workspace's voice: refused with the line and reason
    /// when it does not parse, uses unknown names, or has no slot.
    async fn create_reply_template(
        &self,
        ctx: &Context<'_>,
        input: CreateReplyTemplateInput,
    ) -> ApiResult<ReplyTemplate> {
        let v = auth(ctx).viewer()?;
        v.require_writer()?;
        let name = Name::parse("name", &input.name)?;
        let specs: Vec<SlotSpec> = input
            .slots
            .iter()
            .map(|s| SlotSpec {
                name: s.name.clone(),
                guidance: s.guidance.clone(),
                min_length: s.min_length.clamp(0, 1000) as u32,
            })
            .collect();
        Template::parse(&input.body, specs.clone())
            .map_err(|e| ApiError::bad_input("body", e.to_string()))?;
        let st = state(ctx);
        let txn = v.scope.begin(&st.db).await?;
        let ws = v
            .scope
            .workspace(&txn, decode(Kind::Workspace, &input.workspace_id)?)
            .await?;
        let now = Utc::now();
        let t = reply_template::ActiveModel {
            id: Set(Uuid::now_v7()),
            agency_id: Set(v.agency_id),
            workspace_id: Set(Some(ws.id)),
            name: Set(name.into_string()),
            body: Set(input.body.clone()),
            slots: Set(json!(specs
                .iter()
                .map(|s| json!({ "name": s.name, "guidance": s.guidance, "minLength": s.min_length }))
                .collect::<Vec<_>>())),
            channel_kinds: Set(json!(input.channel_kinds)),
            enabled_workspace_ids: Set(json!([])),
            intent: Set(input.intent.as_str().into()),
            created_at: Set(now),
            updated_at: Set(now),
            archived_at: Set(None),
        }
        .insert(&txn)
        .await?;
        AuditEvent::new("createReplyTemplate")
            .workspace(ws.id)
            .by(&txn, v)
            .await?;
        txn.commit().await?;
        Ok(ReplyTemplate(t))
    }

    async fn archive_reply_template(
        &self,
        ctx: &Context<'_>,
        input: ArchiveReplyTemplateInput,
    ) -> ApiResult<ReplyTemplate> {
        let v = auth(ctx).viewer()?;
        v.require_writer()?;
        let st = state(ctx);
        let txn = v.scope.begin(&st.db).await?;
        let t = v
            .scope
            .find::<reply_template::Entity, _>(&txn, decode(Kind::ReplyTemplate, &input.id)?)
            .await?;
        if t.workspace_id.is_some_and(|w| !v.scope.sees_workspace(w)) {
            return Err(ApiError::NotFound);
        }
        let ws = t.workspace_id;
        let mut am = t.into_active_model();
        am.archived_at = Set(Some(Utc::now()));
        let t = am.update(&txn).await?;
        let mut ev = AuditEvent::new("archiveReplyTemplate");
        if let Some(w) = ws {
            ev = ev.workspace(w);
        }
        ev.by(&txn, v).await?;
        txn.commit().await?;
        Ok(ReplyTemplate(t))
    }

    /// Sends a reply unless the guard finds it canned (CANNED_REPLY with the
    /// findings). The first reply stops the first-response clock; a reply
    /// also stops a running next-response clock. Stored QUEUED for delivery.
    async fn send_reply(&self, ctx: &Context<'_>, input: SendReplyInput) -> ApiResult<Message> {
        let v = auth(ctx).viewer()?;
        v.require_writer()?;
        let st = state(ctx);
        let txn = v.scope.begin(&st.db).await?;
        let d = draft(
            ctx,
            v,
            &txn,
            &input.conversation_id,
            input.template_id.as_ref(),
            &input.slots,
            input.text.as_deref(),
        )
        .await?;
        if d.text.chars().count() > d.limit {
            return Err(ApiError::bad_input(
                "text",
                format!(
                    "{} characters; this channel allows {}",
                    d.text.chars().count(),
                    d.limit
                ),
            ));
        }
        let found = findings(ctx, &txn, &d).await?;
        let blocking: Vec<(&'static str, String)> = found
            .iter()
            .filter(|f| f.blocking())
            .map(|f| (f.code(), f.message()))
            .collect();
        let overridden = match (&input.override_reason, blocking.is_empty()) {
            (_, true) => None,
            (Some(reason), false) if v.role.is_manager() && reason.trim().len() >= 10 => {
                Some(reason.trim().to_string())
            }
            (Some(_), false) if !v.role.is_manager() => {
                return Err(ApiError::Forbidden(
                    "only an OWNER or ADMIN may override the guard",
                ));
            }
            (Some(_), false) => {
                return Err(ApiError::bad_input(
                    "overrideReason",
                    "give a reason of at least 10 characters",
                ));
            }
            (None, false) => return Err(ApiError::Canned(blocking)),
        };
        let now = Utc::now();
        let values: Vec<&str> = d.context.iter().map(String::as_str).collect();
        let reply = message::ActiveModel {
            id: Set(Uuid::now_v7()),
            agency_id: Set(v.agency_id),
            workspace_id: Set(d.conversation.workspace_id),
            conversation_id: Set(d.conversation.id),
            channel_id: Set(d.conversation.channel_id),
            author_id: Set(None),
            external_id: Set(format!("rapport:{}", Uuid::now_v7())),
            in_reply_to_external_id: Set(None),
            direction: Set("OUTBOUND".into()),
            visibility: Set(match input.visibility {
                Visibility::Public => "PUBLIC".into(),
                Visibility::Private => "PRIVATE".into(),
            }),
            body: Set(d.text.clone()),
            masked_body: Set(Some(guard::mask(&d.text, &values))),
            sentiment: Set(None),
            published_at: Set(now),
            received_at: Set(now),
            template_id: Set(d.template_id),
            sent_by_membership_id: Set(Some(v.membership_id)),
            delivery_status: Set(Some("QUEUED".into())),
            delivery_error: Set(None),
            created_at: Set(now),
        }
        .insert(&txn)
        .await?;
        let mut c = d.conversation.clone();
        let met = sla::agent_replied(&mut c, now);
        let mut am = d.conversation.clone().into_active_model();
        am.first_responded_at = Set(c.first_responded_at);
        am.next_response_due_at = Set(c.next_response_due_at);
        am.due_at = Set(c.due_at);
        am.updated_at = Set(now);
        let saved = am.update(&txn).await?;
        for (target, deadline, cycle) in met {
            sla::record_event(&txn, &saved, "SLA_MET", target, cycle, deadline, now).await?;
        }
        AuditEvent::new(if overridden.is_some() {
            "sendReplyOverride"
        } else {
            "sendReply"
        })
        .workspace(saved.workspace_id)
        .details(json!({
            "conversationId": gid(Kind::Conversation, saved.id).0,
            "overrideReason": overridden,
            "findings": found.iter().map(|f| f.code()).collect::<Vec<_>>(),
        }))
        .by(&txn, v)
        .await?;
        txn.commit().await?;
        Ok(Message(reply))
    }
}
