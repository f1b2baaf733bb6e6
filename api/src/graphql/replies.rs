//! Replies guarded against canned answers, and the care playbook's steps:
//! acknowledge, take it offline, resolve, close the loop. A reply is stored
//! QUEUED in the same transaction as its clock effects; the worker then
//! publishes it on the platform.

use super::conversations::{Conversation, Locked, Message, Visibility, lock_author_of, visible};
use super::templates::{Intent, slots_of, usable};
use super::types::{decode, gid, load_user, strings};
use super::{auth, state};
use crate::audit::AuditEvent;
use crate::auth::viewer::Viewer;
use crate::error::{ApiError, ApiResult};
use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use chrono::Utc;
use rapport_domain::Kind;
use rapport_domain::ingest::ChannelKind;
use rapport_domain::reply::guard::{self, Check, Finding};
use rapport_domain::reply::settings::{DuplicateWindow, SimilarityThreshold};
use rapport_domain::reply::template::Template;
use rapport_store::entities::{author, channel, conversation, message, reply_refusal, workspace};
use rapport_store::{jobs, locks, sla};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, EntityTrait,
    IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde_json::json;
use std::collections::HashMap;
use uuid::Uuid;

/// Longest `overrideReason` (it is kept in the audit log).
const MAX_OVERRIDE_REASON_CHARS: usize = 1000;

/// What the agent wrote for one slot of a template.
#[derive(InputObject, Clone)]
pub struct SlotValue {
    /// The slot's name, as in the template's `slots`.
    name: String,
    /// The text for this reply.
    value: String,
}

/// What the agent writes: a template with its slots, or free text.
#[derive(InputObject)]
pub struct PreviewReplyInput {
    /// The conversation to reply on.
    conversation_id: ID,
    /// The template to render; give either this (with `slots`) or `text`.
    template_id: Option<ID>,
    /// Values for the template's slots.
    #[graphql(default)]
    slots: Vec<SlotValue>,
    /// Free text, when no template is used.
    text: Option<String>,
}

/// A reply: a template with its slots, or free text; and where to post it.
#[derive(InputObject)]
pub struct SendReplyInput {
    /// The conversation to reply on.
    conversation_id: ID,
    /// The template to render; give either this (with `slots`) or `text`.
    template_id: Option<ID>,
    /// Values for the template's slots.
    #[graphql(default)]
    slots: Vec<SlotValue>,
    /// Free text, when no template is used.
    text: Option<String>,
    /// PUBLIC answers the customer's latest public message (refused when
    /// they wrote only in private); PRIVATE sends a private message.
    visibility: Visibility,
    /// OWNER or ADMIN only: send despite the guard's findings (audited).
    override_reason: Option<String>,
}

/// The public step of taking a conversation to private messages.
#[derive(InputObject)]
pub struct TakeOfflineInput {
    /// The public conversation to take private.
    conversation_id: ID,
    /// An ACKNOWLEDGE or TAKE_OFFLINE template, or free text.
    template_id: Option<ID>,
    /// Values for the template's slots.
    #[graphql(default)]
    slots: Vec<SlotValue>,
    /// Free text, when no template is used.
    text: Option<String>,
    /// OWNER or ADMIN only: send despite the guard's findings (audited).
    override_reason: Option<String>,
}

/// Closing the loop on a resolved conversation.
#[derive(InputObject)]
pub struct RequestFollowUpInput {
    /// The RESOLVED conversation to follow up on.
    conversation_id: ID,
    /// A CLOSE_THE_LOOP template, or free text.
    template_id: Option<ID>,
    /// Values for the template's slots.
    #[graphql(default)]
    slots: Vec<SlotValue>,
    /// Free text, when no template is used.
    text: Option<String>,
    /// Where to post the follow-up, as in `sendReply`.
    #[graphql(default_with = "Visibility::Public")]
    visibility: Visibility,
    /// OWNER or ADMIN only: send despite the guard's findings (audited).
    override_reason: Option<String>,
}

/// Something the canned-reply guard found in a reply.
#[derive(SimpleObject)]
pub struct ReplyFinding {
    /// EMPTY_SLOT, SHORT_SLOT, SLOT_REPEATS_TEMPLATE, SLOT_NOT_IN_REPLY, NEAR_DUPLICATE,
    /// BANNED_PHRASE or NO_OVERLAP (a warning).
    code: String,
    /// What is wrong, for the agent.
    message: String,
    /// False for warnings, which do not stop a reply.
    blocking: bool,
    /// For NEAR_DUPLICATE: the earlier reply (a Message ID) and similarity.
    earlier_reply_id: Option<ID>,
    /// For NEAR_DUPLICATE: how similar the reply is to the earlier one, 0
    /// to 1; null for other codes.
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

/// A reply as it would be sent, and what the guard finds in it.
#[derive(SimpleObject)]
pub struct ReplyPreview {
    /// The rendered reply text.
    text: String,
    /// Length of `text` as the channel counts it: characters, or on X its
    /// weighted length (CJK characters and emoji count 2, a link 23).
    character_count: i32,
    /// The channel's limit (280 on X).
    character_limit: i32,
    /// The guard's findings; any blocking one would refuse the reply.
    findings: Vec<ReplyFinding>,
}

/// The result of `takeOffline`: the public reply and the private thread
/// the customer is invited to, linked to the public conversation.
#[derive(SimpleObject)]
pub struct TakeOfflinePayload {
    /// The public reply, QUEUED for publishing.
    reply: Message,
    /// The private thread: a new one waiting on the customer
    /// (PENDING_CUSTOMER), or the one still open from an earlier call.
    private_conversation: Conversation,
}

/// What the agent asked for, before it is rendered.
struct Ask<'a> {
    conversation_id: &'a ID,
    /// `ForUpdate` when the reply will be stored: the conversation is locked
    /// until the transaction ends, so its clocks are computed from the row
    /// as committed, not overwriting a concurrent change.
    locked: Locked,
    template_id: Option<&'a ID>,
    slots: &'a [SlotValue],
    text: Option<&'a str>,
}

/// Everything a reply is checked against.
struct Draft {
    conversation: conversation::Model,
    workspace: workspace::Model,
    text: String,
    template: Option<Template>,
    template_id: Option<Uuid>,
    template_intent: Option<Intent>,
    slots: HashMap<String, String>,
    context: Vec<String>,
    customer_message: String,
    /// The customer's latest public message: what a public reply answers.
    in_reply_to: Option<String>,
    /// The channel that message came through: a public reply goes out from
    /// it. A conversation can span two channels of one kind (two pages or
    /// accounts of a brand in one workspace), and page A cannot answer a
    /// comment on page B.
    reply_channel: Option<Uuid>,
    /// The kind of the conversation's channel: its limit and how it counts.
    kind: ChannelKind,
}

impl Draft {
    /// The reply's length as its platform counts it.
    fn length(&self) -> usize {
        rapport_domain::reply::length::length(self.kind, &self.text)
    }

    fn limit(&self) -> usize {
        channel_limit(self.kind)
    }
}

fn channel_limit(kind: ChannelKind) -> usize {
    match kind {
        ChannelKind::X => 280,
        ChannelKind::Instagram => 2_200,
        _ => 8_000,
    }
}

async fn draft(v: &Viewer, txn: &DatabaseTransaction, ask: &Ask<'_>) -> ApiResult<Draft> {
    let c = visible(v, txn, ask.conversation_id, ask.locked).await?;
    if c.status == "CLOSED" {
        return Err(ApiError::bad_input(
            "conversationId",
            "the conversation is CLOSED; set it OPEN again to reply",
        ));
    }
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
    let kind = ChannelKind::parse(&ch.kind).map_err(ApiError::internal)?;
    if kind == ChannelKind::Feed {
        return Err(ApiError::bad_input(
            "conversationId",
            "replies cannot be published on FEED channels; answer on the site itself",
        ));
    }
    // The customer's latest by the platform's time, not the latest stored:
    // a message that arrived after its replies is older than they are.
    let latest = |q: sea_orm::Select<message::Entity>| {
        q.filter(message::Column::AgencyId.eq(c.agency_id))
            .filter(message::Column::ConversationId.eq(c.id))
            .filter(message::Column::Direction.eq("INBOUND"))
            .order_by_desc(message::Column::PublishedAt)
            .order_by_desc(message::Column::Id)
    };
    let last = latest(message::Entity::find()).one(txn).await?;
    let last_public = latest(message::Entity::find())
        .filter(message::Column::Visibility.eq("PUBLIC"))
        .one(txn)
        .await?;
    // Through the transaction: while the conversation is locked, a second
    // pooled connection per waiting reply could run the pool dry.
    let agent = load_user(txn, v.user_id).await?;
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
    let slots: HashMap<String, String> = ask
        .slots
        .iter()
        .map(|s| (s.name.clone(), s.value.clone()))
        .collect();
    let (template, template_id, template_intent, text) = match (ask.template_id, ask.text) {
        (Some(id), None) => {
            let t = usable(v, txn, id, c.workspace_id, kind).await?;
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
            (Some(parsed), Some(t.id), Intent::parse(&t.intent), rendered)
        }
        (None, Some(t)) if !t.trim().is_empty() => (None, None, None, t.trim().to_string()),
        _ => {
            return Err(ApiError::bad_input(
                "text",
                "give either a templateId with slots, or text",
            ));
        }
    };
    Ok(Draft {
        conversation: c,
        text,
        template,
        template_id,
        template_intent,
        slots,
        context: guard::context_values(&customer_name, &who.handle, &ws.name, &first_name),
        customer_message: last.map(|m| m.body).unwrap_or_default(),
        reply_channel: last_public.as_ref().map(|m| m.channel_id),
        in_reply_to: last_public.map(|m| m.external_id),
        kind,
        workspace: ws,
    })
}

async fn findings(
    ctx: &Context<'_>,
    txn: &DatabaseTransaction,
    d: &Draft,
) -> ApiResult<Vec<Finding>> {
    let values: Vec<&str> = d.context.iter().map(String::as_str).collect();
    let banned = strings(&d.workspace.banned_phrases);
    let window = DuplicateWindow::stored(d.workspace.duplicate_window_days);
    Ok(state(ctx)
        .replies
        .with(
            txn,
            d.conversation.agency_id,
            d.conversation.workspace_id,
            window,
            |idx, unpublished| {
                let check = Check {
                    text: &d.text,
                    template: d.template.as_ref(),
                    slots: &d.slots,
                    context_values: &values,
                    banned_phrases: &banned,
                    customer_message: &d.customer_message,
                    threshold: SimilarityThreshold::stored(d.workspace.similarity_threshold).get(),
                    unpublished,
                };
                guard::check(&check, idx)
            },
        )
        .await?)
}

/// What the guard found, let through only by a manager's reason: the
/// reason (None when nothing blocked), or CANNED_REPLY with the findings.
fn overrides(v: &Viewer, found: &[Finding], reason: Option<&str>) -> ApiResult<Option<String>> {
    let blocking: Vec<(&'static str, String)> = found
        .iter()
        .filter(|f| f.blocking())
        .map(|f| (f.code(), f.message()))
        .collect();
    if let Some(reason) = reason {
        ApiError::at_most(
            "overrideReason",
            reason.chars().count(),
            MAX_OVERRIDE_REASON_CHARS,
            "characters",
        )?;
    }
    match (reason, blocking.is_empty()) {
        (_, true) => Ok(None),
        (Some(reason), false) if v.role.is_manager() && reason.trim().chars().count() >= 10 => {
            Ok(Some(reason.trim().to_string()))
        }
        // Not theirs to give: refused with its reasons, as without one.
        (Some(_), false) if !v.role.is_manager() => Err(ApiError::Canned(blocking)),
        (Some(_), false) => Err(ApiError::bad_input(
            "overrideReason",
            "give a reason of at least 10 characters",
        )),
        (None, false) => Err(ApiError::Canned(blocking)),
    }
}

/// How a reply goes out.
struct Sending<'a> {
    visibility: Visibility,
    override_reason: Option<&'a str>,
    /// The playbook step; a template's own intent when not forced.
    intent: Option<Intent>,
    action: &'static str,
}

/// Checks `d` with the guard and stores it QUEUED with its clock effects
/// and an audit entry, in `txn`. Call `dispatch` after the commit.
async fn store_reply(
    ctx: &Context<'_>,
    v: &Viewer,
    txn: &DatabaseTransaction,
    d: &Draft,
    how: Sending<'_>,
) -> ApiResult<(message::Model, Alerts)> {
    if d.length() > d.limit() {
        return Err(ApiError::bad_input(
            "text",
            format!(
                "{} characters as {} counts them; this channel allows {}",
                d.length(),
                d.kind.as_str(),
                d.limit()
            ),
        ));
    }
    if how.visibility == Visibility::Public && d.in_reply_to.is_none() {
        return Err(ApiError::bad_input(
            "visibility",
            "the customer wrote only in private here; reply PRIVATE",
        ));
    }
    let through = match how.visibility {
        Visibility::Public => d.reply_channel.unwrap_or(d.conversation.channel_id),
        Visibility::Private => d.conversation.channel_id,
    };
    // Refused now rather than FAILED by the worker later: a reply that
    // cannot go out must not stop the conversation's clocks.
    let channel = channel::Entity::find_by_id(through)
        .one(txn)
        .await?
        .ok_or(ApiError::NotFound)?;
    if channel.status == "DISCONNECTED" {
        return Err(ApiError::bad_input(
            "conversationId",
            format!(
                "the channel {:?} is disconnected; connect it again to reply",
                channel.name
            ),
        ));
    }
    if !rapport_store::replies::can_publish(&channel) {
        return Err(ApiError::bad_input(
            "conversationId",
            format!(
                "the channel {:?} cannot publish replies: give it an access token (X, FACEBOOK, INSTAGRAM) or a callback URL and secret (GENERIC) with updateChannel",
                channel.name
            ),
        ));
    }
    // One reply of a workspace at a time is checked and stored: two
    // identical replies sent at the same moment on two conversations would
    // each miss the other, uncommitted. Taken last (after the
    // conversation's row lock), by nothing else, so it cannot deadlock.
    locks::advisory(txn, vec![locks::replies_key(d.conversation.workspace_id)]).await?;
    let found = findings(ctx, txn, d).await?;
    let overridden = overrides(v, &found, how.override_reason)?;
    let now = Utc::now();
    let values: Vec<&str> = d.context.iter().map(String::as_str).collect();
    let id = Uuid::now_v7();
    let reply = message::ActiveModel {
        id: Set(id),
        agency_id: Set(v.agency_id),
        workspace_id: Set(d.conversation.workspace_id),
        conversation_id: Set(d.conversation.id),
        channel_id: Set(through),
        author_id: Set(None),
        // Replaced by nothing: the platform's own id goes to
        // `platform_message_id` once it is published.
        external_id: Set(format!("rapport:{id}")),
        in_reply_to_external_id: Set(match how.visibility {
            Visibility::Public => d.in_reply_to.clone(),
            Visibility::Private => None,
        }),
        direction: Set("OUTBOUND".into()),
        visibility: Set(match how.visibility {
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
        delivery_unsure: Set(false),
        delivery_attempts: Set(0),
        next_delivery_at: Set(Some(now)),
        delivered_at: Set(None),
        platform_message_id: Set(None),
        intent: Set(how
            .intent
            .or(d.template_intent)
            .map(|i| i.as_str().to_string())),
        created_at: Set(now),
    }
    .insert(txn)
    .await?;
    let mut c = d.conversation.clone();
    // Only the first reply counts business time: later ones skip the
    // policy and calendar lookup.
    let clock = match c.first_responded_at {
        None => sla::clock_for(txn, &c).await?,
        Some(_) => rapport_domain::calendar::Clock::Calendar24x7,
    };
    let met = sla::agent_replied(&mut c, &clock, now);
    let mut am = d.conversation.clone().into_active_model();
    am.first_responded_at = Set(c.first_responded_at);
    am.first_response_business_s = Set(c.first_response_business_s);
    am.next_response_due_at = Set(c.next_response_due_at);
    am.due_at = Set(c.due_at);
    am.updated_at = Set(now);
    let saved = am.update(txn).await?;
    let settled = sla::settle(txn, &saved, met, now).await?;
    AuditEvent::new(if overridden.is_some() {
        "sendReplyOverride"
    } else {
        how.action
    })
    .workspace(saved.workspace_id)
    .target("Message", reply.id)
    .details(json!({
        "conversationId": gid(Kind::Conversation, saved.id).0,
        "overrideReason": overridden,
        "findings": found.iter().map(|f| f.code()).collect::<Vec<_>>(),
    }))
    .by(txn, v)
    .await?;
    Ok((reply, settled.alerts))
}

/// SLA events a reply recorded, to stream live after the commit.
type Alerts = Vec<(Uuid, serde_json::Value)>;

/// Stores the reply and commits `txn` with it; a refusal by the guard
/// rolls `txn` back and is recorded (its codes, for reports) on its own.
async fn commit_reply(
    ctx: &Context<'_>,
    v: &Viewer,
    txn: DatabaseTransaction,
    d: &Draft,
    how: Sending<'_>,
) -> ApiResult<(message::Model, Alerts)> {
    match store_reply(ctx, v, &txn, d, how).await {
        Ok(stored) => {
            txn.commit().await?;
            Ok(stored)
        }
        Err(ApiError::Canned(found)) => {
            txn.rollback().await?;
            Err(refused(
                ctx,
                v,
                d.conversation.workspace_id,
                d.conversation.id,
                found,
            )
            .await?)
        }
        Err(e) => Err(e),
    }
}

/// Records a reply the guard refused (its codes, for reports), on its own
/// transaction after the sending one rolled back; the error to answer.
async fn refused(
    ctx: &Context<'_>,
    v: &Viewer,
    workspace: Uuid,
    conversation: Uuid,
    found: Vec<(&'static str, String)>,
) -> ApiResult<ApiError> {
    let rec = v.scope.begin(&state(ctx).db).await?;
    reply_refusal::ActiveModel {
        id: Set(Uuid::now_v7()),
        agency_id: Set(v.agency_id),
        workspace_id: Set(workspace),
        conversation_id: Set(conversation),
        membership_id: Set(Some(v.membership_id)),
        codes: Set(json!(found.iter().map(|(c, _)| *c).collect::<Vec<_>>())),
        created_at: Set(Utc::now()),
    }
    .insert(&rec)
    .await?;
    rec.commit().await?;
    Ok(ApiError::Canned(found))
}

/// After the commit: hand the reply to the worker (the fast path; its sweep
/// finds the reply anyway if Redis loses the job) and tell live views,
/// the SLA events it settled included.
async fn dispatch(ctx: &Context<'_>, reply: &message::Model, alerts: &Alerts) {
    let st = state(ctx);
    st.kv.sla_alerts(alerts).await;
    if let Err(e) = jobs::enqueue(
        &st.kv,
        jobs::DELIVER_REPLY,
        &json!({ "message_id": reply.id.to_string() }),
    )
    .await
    {
        tracing::warn!(reply = %reply.id, error = %e, "enqueueing a reply failed; the sweep will publish it");
    }
    st.kv
        .conversation_changed(reply.workspace_id, reply.conversation_id, "updated")
        .await;
}

fn require_intent(d: &Draft, allowed: &[Intent], field_hint: &str) -> ApiResult<()> {
    match d.template_intent {
        Some(i) if d.template_id.is_some() && !allowed.contains(&i) => Err(ApiError::bad_input(
            "templateId",
            format!("{field_hint} takes a template of intent {}", {
                allowed
                    .iter()
                    .map(|i| i.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            }),
        )),
        _ => Ok(()),
    }
}

#[derive(Default)]
pub struct ReplyQuery;

#[Object]
impl ReplyQuery {
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
            v,
            &txn,
            &Ask {
                conversation_id: &input.conversation_id,
                locked: Locked::No,
                template_id: input.template_id.as_ref(),
                slots: &input.slots,
                text: input.text.as_deref(),
            },
        )
        .await?;
        let found = findings(ctx, &txn, &d).await?;
        txn.commit().await?;
        Ok(ReplyPreview {
            character_count: d.length() as i32,
            character_limit: d.limit() as i32,
            findings: found.iter().map(ReplyFinding::from).collect(),
            text: d.text,
        })
    }
}

#[derive(Default)]
pub struct ReplyMutation;

#[Object]
impl ReplyMutation {
    /// Sends a reply unless the guard finds it canned (CANNED_REPLY with the
    /// findings). The first reply stops the first-response clock; a reply
    /// also stops a running next-response clock. Stored QUEUED; the worker
    /// publishes it (SENT or FAILED with the platform's error).
    async fn send_reply(&self, ctx: &Context<'_>, input: SendReplyInput) -> ApiResult<Message> {
        let v = auth(ctx).viewer()?;
        v.require_writer()?;
        let txn = v.scope.begin(&state(ctx).db).await?;
        let d = draft(
            v,
            &txn,
            &Ask {
                conversation_id: &input.conversation_id,
                locked: Locked::ForUpdate,
                template_id: input.template_id.as_ref(),
                slots: &input.slots,
                text: input.text.as_deref(),
            },
        )
        .await?;
        let (reply, alerts) = commit_reply(
            ctx,
            v,
            txn,
            &d,
            Sending {
                visibility: input.visibility,
                override_reason: input.override_reason.as_deref(),
                intent: None,
                action: "sendReply",
            },
        )
        .await?;
        dispatch(ctx, &reply, &alerts).await;
        Ok(Message(reply))
    }

    /// The playbook's move to private messages: a public reply (guarded)
    /// inviting the customer to continue in private, and a private thread
    /// linked to the public conversation, waiting on the customer. Their
    /// private messages on the channel join that thread.
    async fn take_offline(
        &self,
        ctx: &Context<'_>,
        input: TakeOfflineInput,
    ) -> ApiResult<TakeOfflinePayload> {
        let v = auth(ctx).viewer()?;
        v.require_writer()?;
        let txn = v.scope.begin(&state(ctx).db).await?;
        lock_author_of(v, &txn, &input.conversation_id).await?;
        lock_with_private_threads(v, &txn, &input.conversation_id).await?;
        let d = draft(
            v,
            &txn,
            &Ask {
                conversation_id: &input.conversation_id,
                locked: Locked::ForUpdate,
                template_id: input.template_id.as_ref(),
                slots: &input.slots,
                text: input.text.as_deref(),
            },
        )
        .await?;
        if d.conversation.visibility != "PUBLIC" {
            return Err(ApiError::bad_input(
                "conversationId",
                "this conversation is already private",
            ));
        }
        require_intent(
            &d,
            &[Intent::Acknowledge, Intent::TakeOffline],
            "takeOffline",
        )?;
        // The thread is on the channel the invitation goes out from (the
        // page the customer last wrote on publicly): that is where their
        // private messages arrive.
        let channel = d.reply_channel.unwrap_or(d.conversation.channel_id);
        let (private, created) = open_private_thread(&txn, &d.conversation, channel).await?;
        let (reply, alerts) = commit_reply(
            ctx,
            v,
            txn,
            &d,
            Sending {
                visibility: Visibility::Public,
                override_reason: input.override_reason.as_deref(),
                intent: Some(Intent::TakeOffline),
                action: "takeOffline",
            },
        )
        .await?;
        dispatch(ctx, &reply, &alerts).await;
        state(ctx)
            .kv
            .conversation_changed(
                private.workspace_id,
                private.id,
                if created { "created" } else { "updated" },
            )
            .await;
        Ok(TakeOfflinePayload {
            reply: Message(reply),
            private_conversation: Conversation::whole(private),
        })
    }

    /// Closing the loop: on a RESOLVED conversation, a reply (guarded)
    /// inviting the customer to share how it turned out. The conversation
    /// stays resolved; the customer's answer reopens it like any message.
    async fn request_follow_up(
        &self,
        ctx: &Context<'_>,
        input: RequestFollowUpInput,
    ) -> ApiResult<Message> {
        let v = auth(ctx).viewer()?;
        v.require_writer()?;
        let txn = v.scope.begin(&state(ctx).db).await?;
        let d = draft(
            v,
            &txn,
            &Ask {
                conversation_id: &input.conversation_id,
                locked: Locked::ForUpdate,
                template_id: input.template_id.as_ref(),
                slots: &input.slots,
                text: input.text.as_deref(),
            },
        )
        .await?;
        if d.conversation.status != "RESOLVED" {
            return Err(ApiError::bad_input(
                "conversationId",
                "close the loop once the conversation is RESOLVED",
            ));
        }
        require_intent(&d, &[Intent::CloseTheLoop], "requestFollowUp")?;
        let (reply, alerts) = commit_reply(
            ctx,
            v,
            txn,
            &d,
            Sending {
                visibility: input.visibility,
                override_reason: input.override_reason.as_deref(),
                intent: Some(Intent::CloseTheLoop),
                action: "requestFollowUp",
            },
        )
        .await?;
        dispatch(ctx, &reply, &alerts).await;
        Ok(Message(reply))
    }

    /// Sends a FAILED reply again, unchanged, once what made it fail is
    /// fixed (a channel connected again, a new token): QUEUED with its
    /// attempts counted from zero (when the failed attempt may have
    /// published, its error shown until the next attempt, which looks on
    /// the platform before it posts). Only a FAILED reply, of a conversation that is not
    /// CLOSED and has no later reply sent or queued, on a channel that can
    /// publish, and that the guard still passes (CANNED_REPLY if the brand
    /// has sent the same words since, or banned a phrase in it, unless a
    /// manager gives a reason). Its clock effects were made when it was
    /// first sent and are not made again.
    async fn retry_reply(
        &self,
        ctx: &Context<'_>,
        reply_id: ID,
        #[graphql(
            desc = "OWNER or ADMIN: sends it even though the guard finds it canned now (10 to 1,000 characters, audited)."
        )]
        override_reason: Option<String>,
    ) -> ApiResult<Message> {
        let v = auth(ctx).viewer()?;
        v.require_writer()?;
        let id = decode(Kind::Message, &reply_id)?;
        let txn = v.scope.begin(&state(ctx).db).await?;
        let reply = v
            .scope
            .select_in_workspaces::<message::Entity>()
            .filter(message::Column::Id.eq(id))
            .filter(message::Column::Direction.eq("OUTBOUND"))
            .one(&txn)
            .await?
            .ok_or(ApiError::NotFound)?;
        let (workspace, conversation) = (reply.workspace_id, reply.conversation_id);
        match requeue_failed(ctx, v, &txn, reply, override_reason.as_deref()).await {
            Ok(reply) => {
                txn.commit().await?;
                dispatch(ctx, &reply, &Vec::new()).await;
                Ok(Message(reply))
            }
            Err(ApiError::Canned(found)) => {
                txn.rollback().await?;
                Err(refused(ctx, v, workspace, conversation, found).await?)
            }
            Err(e) => Err(e),
        }
    }
}

/// A FAILED reply sent again, unchanged; see [`ReplyMutation::retry_reply`].
async fn requeue_failed(
    ctx: &Context<'_>,
    v: &Viewer,
    txn: &DatabaseTransaction,
    reply: message::Model,
    override_reason: Option<&str>,
) -> ApiResult<message::Model> {
    let status = reply.delivery_status.as_deref().unwrap_or("none");
    if status != "FAILED" {
        return Err(ApiError::bad_input(
            "replyId",
            format!("only a FAILED reply can be sent again; this one is {status}"),
        ));
    }
    let c = visible(
        v,
        txn,
        &gid(Kind::Conversation, reply.conversation_id),
        Locked::ForUpdate,
    )
    .await?;
    if c.status == "CLOSED" {
        return Err(ApiError::bad_input(
            "replyId",
            "its conversation is CLOSED; set it OPEN again to send",
        ));
    }
    let ch = channel::Entity::find_by_id(reply.channel_id)
        .one(txn)
        .await?
        .ok_or(ApiError::NotFound)?;
    if !rapport_store::replies::can_publish(&ch) {
        return Err(ApiError::bad_input(
            "replyId",
            format!(
                "the channel {:?} cannot publish replies: connect it again, or give it an access token or a callback URL and secret with updateChannel",
                ch.name
            ),
        ));
    }
    // Replies go out in the order written: one written since that went
    // out, or is going, would be read before this one. (The conversation's
    // lock keeps new replies out until the commit.)
    let later = message::Entity::find()
        .filter(message::Column::AgencyId.eq(reply.agency_id))
        .filter(message::Column::ConversationId.eq(reply.conversation_id))
        .filter(message::Column::Direction.eq("OUTBOUND"))
        .filter(message::Column::Id.gt(reply.id))
        .filter(
            Condition::any()
                .add(message::Column::DeliveryStatus.is_null())
                .add(message::Column::DeliveryStatus.ne("FAILED")),
        )
        .one(txn)
        .await?;
    if later.is_some() {
        return Err(ApiError::bad_input(
            "replyId",
            "a later reply of this conversation went out or is going out: the customer would read this one after it; write a new reply instead",
        ));
    }
    // Checked again (template and slots were checked when it was
    // written): since it failed, the brand may have sent the same words
    // elsewhere, or banned a phrase in it. Under the workspace's reply
    // lock, taken after the conversation's as sending does.
    locks::advisory(txn, vec![locks::replies_key(reply.workspace_id)]).await?;
    let ws = workspace::Entity::find_by_id(reply.workspace_id)
        .one(txn)
        .await?
        .ok_or(ApiError::NotFound)?;
    let banned = strings(&ws.banned_phrases);
    let masked = reply.masked_body.as_deref().unwrap_or(&reply.body);
    let found = state(ctx)
        .replies
        .with(
            txn,
            reply.agency_id,
            reply.workspace_id,
            DuplicateWindow::stored(ws.duplicate_window_days),
            |idx, unpublished| {
                // This reply is FAILED until the update below: it is
                // among the unpublished, and does not match itself.
                guard::recheck(
                    &reply.body,
                    masked,
                    &banned,
                    SimilarityThreshold::stored(ws.similarity_threshold).get(),
                    unpublished,
                    idx,
                )
            },
        )
        .await?;
    let overridden = overrides(v, &found, override_reason)?;
    // Conditional on FAILED: of two retries at once, one requeues it. The
    // last error stays when the failed attempt may have published (its
    // answer lost): the next attempt reads it and looks on the platform
    // before it posts. After a refusal it starts afresh.
    let kept_error = reply
        .delivery_error
        .clone()
        .filter(|_| reply.delivery_unsure);
    let now = Utc::now();
    let done = message::Entity::update_many()
        .col_expr(message::Column::DeliveryStatus, Expr::value("QUEUED"))
        .col_expr(message::Column::DeliveryAttempts, Expr::value(0))
        .col_expr(message::Column::NextDeliveryAt, Expr::value(now))
        .col_expr(
            message::Column::DeliveryError,
            Expr::value(kept_error.clone()),
        )
        .col_expr(message::Column::DeliveryUnsure, Expr::value(false))
        .filter(message::Column::Id.eq(reply.id))
        .filter(message::Column::DeliveryStatus.eq("FAILED"))
        .exec(txn)
        .await?;
    if done.rows_affected == 0 {
        return Err(ApiError::bad_input(
            "replyId",
            "the reply was sent again meanwhile",
        ));
    }
    AuditEvent::new(if overridden.is_some() {
        "retryReplyOverride"
    } else {
        "retryReply"
    })
    .workspace(reply.workspace_id)
    .target("Message", reply.id)
    .details(json!({
        "conversationId": gid(Kind::Conversation, reply.conversation_id).0,
        "error": reply.delivery_error,
        "overrideReason": overridden,
        "findings": found.iter().map(|f| f.code()).collect::<Vec<_>>(),
    }))
    .by(txn, v)
    .await?;
    Ok(message::Model {
        delivery_status: Some("QUEUED".into()),
        delivery_attempts: 0,
        next_delivery_at: Some(now),
        delivery_error: kept_error,
        delivery_unsure: false,
        ..reply
    })
}

/// Locks the public conversation `id` together with its author's open
/// private conversations in its workspace, in id order (`locks`): the
/// private thread `takeOffline` links may be older than the public one, and
/// locked after it, out of order, it would deadlock with a writer (the SLA
/// engine) locking both in order. The caller holds the author's lock, so
/// no private conversation opens meanwhile.
async fn lock_with_private_threads(
    v: &Viewer,
    txn: &DatabaseTransaction,
    id: &ID,
) -> ApiResult<()> {
    if txn.get_database_backend() != sea_orm::DbBackend::Postgres {
        return Ok(()); // SQLite's write transactions run one at a time
    }
    let public = visible(v, txn, id, Locked::No).await?;
    let mut ids: Vec<Uuid> = conversation::Entity::find()
        .select_only()
        .column(conversation::Column::Id)
        .filter(conversation::Column::WorkspaceId.eq(public.workspace_id))
        .filter(conversation::Column::AuthorId.eq(public.author_id))
        .filter(conversation::Column::Visibility.eq("PRIVATE"))
        .filter(conversation::Column::Status.is_in(["OPEN", "PENDING_CUSTOMER"]))
        .into_tuple()
        .all(txn)
        .await?;
    ids.push(public.id);
    locks::conversations(txn, ids).await?;
    Ok(())
}

/// The private thread `takeOffline` opens: same customer, channel and
/// promise as the public conversation, linked to it, waiting on the
/// customer. The public reply already answered them, so their first
/// private message starts the next-response clock.
///
/// If the customer already has an open private conversation on the
/// channel (they wrote in private before, or `takeOffline` ran before), it
/// is the thread: it is the one their private messages join (the oldest
/// open one, as ingestion threads them), linked to the public conversation
/// unless it already is to another. The caller holds the author's lock, so
/// no concurrent payload opens one meanwhile. Returns the thread and
/// whether it is new.
async fn open_private_thread(
    txn: &DatabaseTransaction,
    public: &conversation::Model,
    channel: Uuid,
) -> ApiResult<(conversation::Model, bool)> {
    let now = Utc::now();
    if let Some(existing) = conversation::Entity::find()
        .filter(conversation::Column::WorkspaceId.eq(public.workspace_id))
        .filter(conversation::Column::AuthorId.eq(public.author_id))
        .filter(conversation::Column::ChannelId.eq(channel))
        .filter(conversation::Column::Visibility.eq("PRIVATE"))
        .filter(conversation::Column::Status.is_in(["OPEN", "PENDING_CUSTOMER"]))
        .order_by_asc(conversation::Column::Id)
        .one(txn)
        .await?
    {
        if existing.parent_conversation_id.is_some() {
            return Ok((existing, false));
        }
        // Only the link is written: other writers of the row may change
        // the rest meanwhile.
        let linked = conversation::ActiveModel {
            id: sea_orm::ActiveValue::Unchanged(existing.id),
            parent_conversation_id: Set(Some(public.id)),
            updated_at: Set(now),
            ..Default::default()
        }
        .update(txn)
        .await?;
        return Ok((linked, false));
    }
    let targets = sla::Snapshot::of(public).map(|s| sla::Snapshot {
        warn: Default::default(),
        paused_at: Some(now),
        cycles: Default::default(),
        stopped_at: None,
        ..s
    });
    let row = conversation::ActiveModel {
        id: Set(Uuid::now_v7()),
        agency_id: Set(public.agency_id),
        workspace_id: Set(public.workspace_id),
        channel_id: Set(channel),
        author_id: Set(public.author_id),
        parent_conversation_id: Set(Some(public.id)),
        status: Set("PENDING_CUSTOMER".into()),
        visibility: Set("PRIVATE".into()),
        priority: Set(public.priority.clone()),
        priority_score: Set(public.priority_score),
        priority_breakdown: Set(public.priority_breakdown.clone()),
        sentiment: Set(public.sentiment),
        opening_sentiment: Set(public.opening_sentiment),
        assignee_membership_id: Set(public.assignee_membership_id),
        sla_policy_id: Set(public.sla_policy_id),
        sla_targets: Set(targets),
        first_response_due_at: Set(None),
        next_response_due_at: Set(None),
        resolution_due_at: Set(None),
        due_at: Set(None),
        first_responded_at: Set(Some(now)),
        resolved_at: Set(None),
        first_response_business_s: Set(None),
        resolution_business_s: Set(None),
        last_customer_message_at: Set(public.last_customer_message_at),
        recovered: Set(false),
        created_at: Set(now),
        updated_at: Set(now),
        opened_by_agent: Set(true),
    }
    .insert(txn)
    .await?;
    Ok((row, true))
}
