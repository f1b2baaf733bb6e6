//! Conversations, their messages and authors, ranked for the inbox; and the
//! dead letters of ingestion with a retry.

use super::channels::{Channel, GqlChannelKind};
use super::paging::{Order, connection, keyset};
use super::types::{Member, Workspace, decode, gid};
use super::{auth, state};
use crate::audit::AuditEvent;
use crate::auth::viewer::Viewer;
use crate::error::{ApiError, ApiResult};
use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Enum, ID, InputObject, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use rapport_domain::ingest::ChannelKind;
use rapport_domain::priority::{Breakdown, PriorityLevel};
use rapport_domain::{Cursor, Kind, PageRequest, ScoreCursor, TimeCursor};
use rapport_store::entities::{author, channel, conversation, membership, message, raw_event};
use rapport_store::pages::Wanted;
use rapport_store::raw_events::{FAILED, PENDING};
use rapport_store::{jobs, locks};
use sea_orm::sea_query::{Condition, Expr, ExprTrait, Func, NullOrdering, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect, Select, Set,
};
use serde_json::json;
use std::borrow::Cow;
use uuid::Uuid;

/// Where a conversation stands in the agency's workflow.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ConversationStatus {
    /// Waiting on the agency. A customer message in the conversation sets
    /// it OPEN again.
    Open,
    /// Waiting on the customer; SLA clocks pause.
    PendingCustomer,
    /// Handled; the resolution target is met if it was still running.
    Resolved,
    /// Closed: replies on it are refused until it is reopened.
    Closed,
}

impl ConversationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationStatus::Open => "OPEN",
            ConversationStatus::PendingCustomer => "PENDING_CUSTOMER",
            ConversationStatus::Resolved => "RESOLVED",
            ConversationStatus::Closed => "CLOSED",
        }
    }

    fn parse(raw: &str) -> ApiResult<Self> {
        [
            Self::Open,
            Self::PendingCustomer,
            Self::Resolved,
            Self::Closed,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
        .ok_or_else(|| ApiError::internal(format!("stored conversation status {raw:?}")))
    }
}

/// How urgently a conversation needs an answer, from the priority score:
/// URGENT from 0.6, HIGH from 0.4, NORMAL from 0.2, LOW below.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "Priority")]
pub enum GqlPriority {
    Low,
    Normal,
    High,
    Urgent,
}

impl From<PriorityLevel> for GqlPriority {
    fn from(p: PriorityLevel) -> Self {
        match p {
            PriorityLevel::Low => GqlPriority::Low,
            PriorityLevel::Normal => GqlPriority::Normal,
            PriorityLevel::High => GqlPriority::High,
            PriorityLevel::Urgent => GqlPriority::Urgent,
        }
    }
}

impl From<GqlPriority> for PriorityLevel {
    fn from(p: GqlPriority) -> Self {
        match p {
            GqlPriority::Low => PriorityLevel::Low,
            GqlPriority::Normal => PriorityLevel::Normal,
            GqlPriority::High => PriorityLevel::High,
            GqlPriority::Urgent => PriorityLevel::Urgent,
        }
    }
}

/// Tone of a message, from its VADER compound score: NEGATIVE at -0.05 or
/// below, POSITIVE at 0.05 or above, NEUTRAL in between.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum Sentiment {
    Negative,
    Neutral,
    Positive,
}

fn sentiment_of(score: Option<f64>) -> Option<Sentiment> {
    score.map(|s| match rapport_domain::sentiment::label(s) {
        "NEGATIVE" => Sentiment::Negative,
        "POSITIVE" => Sentiment::Positive,
        _ => Sentiment::Neutral,
    })
}

/// Sort order of a conversation list.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ConversationOrder {
    /// Highest priority first: the complaint read by the most people.
    Priority,
    /// Most recently opened first.
    Newest,
    /// Earliest running deadline first; conversations without one last.
    Due,
}

/// Who can see a message on the platform.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum Visibility {
    /// A public post, comment or mention.
    Public,
    /// A private (direct) message.
    Private,
}

fn visibility(raw: &str) -> Visibility {
    if raw == "PRIVATE" {
        Visibility::Private
    } else {
        Visibility::Public
    }
}

pub struct Author(pub author::Model);

/// A customer's account on a platform, as seen in their messages.
#[Object]
impl Author {
    /// Global ID of the author.
    async fn id(&self) -> ID {
        gid(Kind::Author, self.0.id)
    }
    /// The platform the account is on.
    async fn platform(&self) -> ApiResult<GqlChannelKind> {
        ChannelKind::parse(&self.0.platform)
            .map(Into::into)
            .map_err(ApiError::internal)
    }
    /// The account's handle on the platform.
    async fn handle(&self) -> &str {
        &self.0.handle
    }
    /// The account's display name; null when the platform gave none.
    async fn name(&self) -> Option<&str> {
        self.0.display_name.as_deref()
    }
    /// Reach: how many people see what this author posts.
    async fn follower_count(&self) -> i64 {
        self.0.follower_count
    }
    /// Whether the platform marks the account as verified.
    async fn verified(&self) -> bool {
        self.0.verified
    }
}

pub struct Message(pub message::Model);

/// Publishing state of an outbound reply.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum DeliveryStatus {
    /// Waiting to be published, or to be retried.
    Queued,
    /// Accepted by the platform.
    Sent,
    /// Refused by the platform, or every retry failed.
    Failed,
}

/// One message of a conversation: a customer's (INBOUND) or the agency's
/// reply (OUTBOUND).
#[Object]
impl Message {
    /// Global ID of the message.
    async fn id(&self) -> ID {
        gid(Kind::Message, self.0.id)
    }
    /// The platform's id of the message.
    async fn external_id(&self) -> &str {
        &self.0.external_id
    }
    /// INBOUND from the customer, OUTBOUND from the agency.
    async fn direction(&self) -> &str {
        &self.0.direction
    }
    /// Whether the message is public or private on the platform.
    async fn visibility(&self) -> Visibility {
        visibility(&self.0.visibility)
    }
    /// The message text.
    async fn body(&self) -> &str {
        &self.0.body
    }
    /// VADER compound score, -1 to 1.
    async fn sentiment_score(&self) -> Option<f64> {
        self.0.sentiment
    }
    /// `sentimentScore` as a label; null when the message has no score.
    async fn sentiment(&self) -> Option<Sentiment> {
        sentiment_of(self.0.sentiment)
    }
    /// When the platform says it was posted.
    async fn published_at(&self) -> DateTime<Utc> {
        self.0.published_at
    }
    /// When Rapport received it.
    async fn received_at(&self) -> DateTime<Utc> {
        self.0.received_at
    }
    /// Outbound replies: QUEUED until the platform accepts it, then SENT;
    /// FAILED when the platform refuses it or every retry failed.
    async fn delivery_status(&self) -> Option<DeliveryStatus> {
        match self.0.delivery_status.as_deref()? {
            "SENT" => Some(DeliveryStatus::Sent),
            "FAILED" => Some(DeliveryStatus::Failed),
            _ => Some(DeliveryStatus::Queued),
        }
    }
    /// The platform's answer to the last failed attempt; null while an
    /// attempt is under way.
    async fn delivery_error(&self) -> Option<&str> {
        self.0.delivery_error.as_deref()
    }
    /// A FAILED reply whose last attempt may still have published it (its
    /// answer was lost: a timeout, a server error): check the platform;
    /// `retryReply` looks there itself before posting again. False for a
    /// reply refused outright, and for any other status.
    async fn may_have_published(&self) -> bool {
        self.0.delivery_unsure && self.0.delivery_status.as_deref() == Some("FAILED")
    }
    /// Publishing attempts so far.
    async fn delivery_attempts(&self) -> i32 {
        self.0.delivery_attempts
    }
    /// Outbound replies: when the platform accepted it; null until SENT.
    async fn delivered_at(&self) -> Option<DateTime<Utc>> {
        self.0.delivered_at
    }
    /// The id the platform gave the published reply.
    async fn platform_message_id(&self) -> Option<&str> {
        self.0.platform_message_id.as_deref()
    }
    /// Outbound replies: the care-playbook step it served.
    async fn intent(&self) -> Option<&str> {
        self.0.intent.as_deref()
    }
    /// The customer account that wrote it; null for the agency's replies.
    #[graphql(complexity = "super::LOOKUP_COST + child_complexity")]
    async fn author(&self, ctx: &Context<'_>) -> ApiResult<Option<Author>> {
        let Some(id) = self.0.author_id else {
            return Ok(None);
        };
        Ok(author::Entity::find_by_id(id)
            .filter(author::Column::AgencyId.eq(self.0.agency_id))
            .one(&state(ctx).db)
            .await?
            .map(Author))
    }
}

/// Why a conversation ranks where it does. Each part is already weighted;
/// `score` is their sum.
#[derive(SimpleObject)]
pub struct PriorityBreakdown {
    /// Negativity of the message, weighted 0.4 (0 to 0.4).
    sentiment: f64,
    /// The author's follower count on a log scale (plus a bonus when
    /// verified), weighted 0.3 (0 to 0.3).
    reach: f64,
    /// 0.1 for a public message, 0 for a private one.
    visibility: f64,
    /// 0.2 when an urgency keyword matched, else 0.
    urgency: f64,
    /// The urgency keywords found in the message.
    urgency_matches: Vec<String>,
    /// The sum of the parts, 0 to 1.
    score: f64,
    /// The level this score gives.
    level: GqlPriority,
}

/// A conversation row, and which of its JSON columns were read.
pub struct Conversation(pub conversation::Model, Wanted);

impl Conversation {
    /// A row read with every column.
    pub fn whole(row: conversation::Model) -> Self {
        Conversation(row, Wanted::ALL)
    }

    /// The row with the JSON column `read` names: a page that expected no
    /// field to ask for it left it unread, and it is read again.
    async fn complete(
        &self,
        ctx: &Context<'_>,
        read: fn(Wanted) -> bool,
    ) -> ApiResult<Cow<'_, conversation::Model>> {
        if read(self.1) {
            return Ok(Cow::Borrowed(&self.0));
        }
        // Counted: the page's look-ahead should have seen the field.
        metrics::counter!("rapport_conversation_rereads_total").increment(1);
        let v = auth(ctx).viewer()?;
        let fresh = v
            .scope
            .find::<conversation::Entity, _>(&state(ctx).db, self.0.id)
            .await?;
        // Only the columns the page left out, so that the node's fields all
        // describe the row the page read.
        let mut row = self.0.clone();
        if !self.1.breakdown {
            row.priority_breakdown = fresh.priority_breakdown;
        }
        if !self.1.sla_targets {
            row.sla_targets = fresh.sla_targets;
        }
        Ok(Cow::Owned(row))
    }
}

/// A thread with one customer on one channel, ranked for the inbox.
#[Object]
impl Conversation {
    /// Global ID of the conversation.
    async fn id(&self) -> ID {
        gid(Kind::Conversation, self.0.id)
    }
    /// For a private thread opened by `takeOffline`: the public conversation
    /// it continues.
    #[graphql(complexity = "super::LOOKUP_COST + child_complexity")]
    async fn parent_conversation(&self, ctx: &Context<'_>) -> ApiResult<Option<Conversation>> {
        let Some(id) = self.0.parent_conversation_id else {
            return Ok(None);
        };
        let v = auth(ctx).viewer()?;
        Ok(v.scope
            .select_in_workspaces::<conversation::Entity>()
            .filter(conversation::Column::Id.eq(id))
            .one(&state(ctx).db)
            .await?
            .map(Conversation::whole))
    }
    /// Private threads this public conversation was taken to, oldest first.
    #[graphql(complexity = "super::FEW_COST * child_complexity")]
    async fn private_threads(&self, ctx: &Context<'_>) -> ApiResult<Vec<Conversation>> {
        let v = auth(ctx).viewer()?;
        Ok(v.scope
            .select_in_workspaces::<conversation::Entity>()
            .filter(conversation::Column::ParentConversationId.eq(self.0.id))
            .order_by_asc(conversation::Column::Id)
            .limit(50)
            .all(&state(ctx).db)
            .await?
            .into_iter()
            .map(Conversation::whole)
            .collect())
    }
    /// The workspace the conversation belongs to.
    #[graphql(complexity = "super::LOOKUP_COST + child_complexity")]
    async fn workspace(&self, ctx: &Context<'_>) -> ApiResult<Workspace> {
        let v = auth(ctx).viewer()?;
        Ok(Workspace(
            v.scope
                .workspace(&state(ctx).db, self.0.workspace_id)
                .await?,
        ))
    }
    /// The channel the conversation came in on.
    #[graphql(complexity = "super::LOOKUP_COST + child_complexity")]
    async fn channel(&self, ctx: &Context<'_>) -> ApiResult<Channel> {
        let v = auth(ctx).viewer()?;
        Ok(Channel(
            v.scope
                .find::<channel::Entity, _>(&state(ctx).db, self.0.channel_id)
                .await?,
        ))
    }
    /// The customer the conversation is with.
    async fn author(&self, ctx: &Context<'_>) -> ApiResult<Author> {
        let v = auth(ctx).viewer()?;
        if let Some(pre) = ctx.data_opt::<std::sync::Arc<Preloaded>>()
            && let Some(a) = pre
                .authors
                .lock()
                .expect("preload lock")
                .get(&self.0.author_id)
                .filter(|a| a.agency_id == v.agency_id)
        {
            return Ok(Author(a.clone()));
        }
        Ok(Author(
            v.scope
                .find::<author::Entity, _>(&state(ctx).db, self.0.author_id)
                .await?,
        ))
    }
    /// Where the conversation stands in the workflow.
    async fn status(&self) -> ApiResult<ConversationStatus> {
        ConversationStatus::parse(&self.0.status)
    }
    /// Whether the conversation is public or private on the platform.
    async fn visibility(&self) -> Visibility {
        visibility(&self.0.visibility)
    }
    /// The conversation's priority level: that of its most urgent customer
    /// message, or higher when an SLA escalation raised it.
    async fn priority(&self) -> ApiResult<GqlPriority> {
        PriorityLevel::parse(&self.0.priority)
            .map(Into::into)
            .ok_or_else(|| ApiError::internal("stored priority"))
    }
    /// The score the inbox ranks by, 0 to 1: that of the most urgent
    /// customer message, lifted to the level's floor by an escalation.
    async fn priority_score(&self) -> f64 {
        self.0.priority_score
    }
    /// How the score of the most urgent customer message was made up.
    async fn priority_breakdown(&self, ctx: &Context<'_>) -> ApiResult<PriorityBreakdown> {
        let b: Breakdown = self
            .complete(ctx, |w| w.breakdown)
            .await?
            .priority_breakdown
            .0
            .clone();
        Ok(PriorityBreakdown {
            sentiment: b.sentiment,
            reach: b.reach,
            visibility: b.visibility,
            urgency: b.urgency,
            urgency_matches: b.urgency_matches,
            score: b.score,
            level: b.level.into(),
        })
    }
    /// Sentiment of the latest customer message.
    async fn sentiment(&self) -> Option<Sentiment> {
        sentiment_of(self.0.sentiment)
    }
    /// The customer began unhappy and has since written positively.
    async fn recovered(&self) -> bool {
        self.0.recovered
    }
    /// The member working the conversation; null when unassigned.
    #[graphql(complexity = "super::LOOKUP_COST + child_complexity")]
    async fn assignee(&self, ctx: &Context<'_>) -> ApiResult<Option<Member>> {
        let Some(id) = self.0.assignee_membership_id else {
            return Ok(None);
        };
        let v = auth(ctx).viewer()?;
        // Gone since (a member removed, a policy deleted): null; a
        // database failure stays an error.
        use rapport_store::errors::Optional;
        Ok(v.scope
            .member(&state(ctx).db, id)
            .await
            .optional()?
            .map(Member))
    }
    /// The response-time promise: deadlines and where they stand.
    async fn sla(&self, ctx: &Context<'_>) -> ApiResult<super::sla::ConversationSla> {
        Ok(super::sla::ConversationSla::of(
            &*self.complete(ctx, |w| w.sla_targets).await?,
        ))
    }
    /// The earliest deadline still running, if any.
    async fn due_at(&self) -> Option<DateTime<Utc>> {
        self.0.due_at
    }
    /// When the customer's latest message was posted.
    async fn last_customer_message_at(&self) -> DateTime<Utc> {
        self.0.last_customer_message_at
    }
    /// When Rapport opened the conversation.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When the conversation last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// The thread, oldest first by publish time (platforms deliver out of
    /// order: a message may be stored after its replies).
    #[graphql(complexity = "first.unwrap_or(20).clamp(0, 100) as usize * child_complexity")]
    async fn messages(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, Message>> {
        use message::Column::{Id, PublishedAt};
        let v = auth(ctx).viewer()?;
        let page = PageRequest::parse(first, None)?;
        let mut q = v
            .scope
            .select::<message::Entity>()
            .filter(message::Column::ConversationId.eq(self.0.id));
        if let Some(c) = after.as_deref().map(TimeCursor::parse).transpose()? {
            let at = c.at.ok_or_else(|| {
                ApiError::bad_input("after", "is not a cursor returned by this list")
            })?;
            q = q.filter(
                Condition::any()
                    .add(PublishedAt.gt(at))
                    .add(Condition::all().add(PublishedAt.eq(at)).add(Id.gt(c.id))),
            );
        }
        let rows = q
            .order_by_asc(PublishedAt)
            .order_by_asc(Id)
            .limit(page.first + 1)
            .all(&state(ctx).db)
            .await?;
        Ok(connection(rows, page.first, after.is_some(), |m| {
            Edge::new(TimeCursor::encode(Some(m.published_at), m.id), Message(m))
        }))
    }
}

/// Narrows a conversation list; every criterion given must match.
#[derive(InputObject, Default)]
pub struct ConversationFilter {
    /// Any of these statuses.
    status: Option<Vec<ConversationStatus>>,
    /// Conversations on channels of any of these kinds.
    channel_kinds: Option<Vec<GqlChannelKind>>,
    /// This priority or higher.
    min_priority: Option<GqlPriority>,
    /// Sentiment of the latest customer message.
    sentiment: Option<Sentiment>,
    /// Assigned to this member.
    assignee_id: Option<ID>,
    /// Words in any message of the conversation (case-insensitive).
    search: Option<String>,
}

pub struct DeadLetter(pub raw_event::Model);

/// An inbound event (webhook or feed fetch) that ingestion could not turn
/// into messages.
#[Object]
impl DeadLetter {
    /// Global ID of the dead letter.
    async fn id(&self) -> ID {
        gid(Kind::DeadLetter, self.0.id)
    }
    /// ID of the channel it arrived on.
    async fn channel_id(&self) -> ID {
        gid(Kind::Channel, self.0.channel_id)
    }
    /// FAILED, or PENDING again after a retry.
    async fn status(&self) -> &str {
        &self.0.status
    }
    /// Why it could not be turned into messages.
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    /// The body as received (lossy UTF-8, first 10,000 characters); empty
    /// when `bodyHidden`.
    async fn body(&self, ctx: &Context<'_>) -> ApiResult<String> {
        if hidden_from(ctx)? {
            return Ok(String::new());
        }
        Ok(String::from_utf8_lossy(&self.0.body)
            .chars()
            .take(10_000)
            .collect())
    }
    /// Whether the body is withheld from the viewer: one delivery may carry
    /// messages for other workspaces (one app serving several pages,
    /// keyword-routed feeds), so only members who see every workspace of
    /// the agency read it.
    async fn body_hidden(&self, ctx: &Context<'_>) -> ApiResult<bool> {
        hidden_from(ctx)
    }
    /// The request headers as stored with the event, as JSON.
    async fn headers(&self) -> Json<serde_json::Value> {
        Json(self.0.headers.clone())
    }
    /// When Rapport received the event.
    async fn received_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// Whether a dead letter's body is withheld from the viewer (restricted to
/// some workspaces).
fn hidden_from(ctx: &Context<'_>) -> ApiResult<bool> {
    Ok(!auth(ctx).viewer()?.scope.sees_every_workspace())
}

/// The conversation to assign, and to whom.
#[derive(InputObject)]
pub struct AssignConversationInput {
    /// The conversation to assign.
    conversation_id: ID,
    /// Null unassigns.
    member_id: Option<ID>,
}

/// The conversation and its new status.
#[derive(InputObject)]
pub struct SetConversationStatusInput {
    /// The conversation to change.
    conversation_id: ID,
    /// The new status.
    status: ConversationStatus,
}

/// The dead letter to retry.
#[derive(InputObject)]
pub struct RetryDeadLetterInput {
    /// The dead letter's ID.
    id: ID,
}

/// A text search scans message bodies: it costs as much as a report.
/// `text` as a regular expression matching exactly it: every character
/// the regex syntax gives a meaning escaped.
fn regex_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn search_cost(filter: &Option<ConversationFilter>) -> usize {
    match filter.as_ref().and_then(|f| f.search.as_ref()) {
        Some(_) => super::REPORT_COST,
        None => 0,
    }
}

#[derive(Default)]
pub struct ConversationQuery;

#[Object]
impl ConversationQuery {
    /// A workspace's conversations, filtered and ranked.
    #[graphql(
        complexity = "first.unwrap_or(20).clamp(0, 100) as usize * child_complexity + search_cost(&filter)"
    )]
    async fn conversations(
        &self,
        ctx: &Context<'_>,
        workspace_id: ID,
        filter: Option<ConversationFilter>,
        #[graphql(default_with = "ConversationOrder::Priority")] order_by: ConversationOrder,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, Conversation>> {
        let v = auth(ctx).viewer()?;
        let ws = v
            .scope
            .workspace(&state(ctx).db, decode(Kind::Workspace, &workspace_id)?)
            .await?;
        list(ctx, Some(ws.id), filter, order_by, first, after).await
    }

    /// One queue across every workspace the member may see, in one order:
    /// an agent serving twenty brands works the most urgent first. A member
    /// restricted to some workspaces sees only those.
    #[graphql(
        complexity = "first.unwrap_or(20).clamp(0, 100) as usize * child_complexity + search_cost(&filter)"
    )]
    async fn inbox(
        &self,
        ctx: &Context<'_>,
        filter: Option<ConversationFilter>,
        #[graphql(default_with = "ConversationOrder::Due")] order_by: ConversationOrder,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, Conversation>> {
        list(ctx, None, filter, order_by, first, after).await
    }

    /// One conversation by ID; NOT_FOUND when it does not exist or is in a
    /// workspace the member may not see.
    async fn conversation(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Conversation> {
        let v = auth(ctx).viewer()?;
        let c = visible(v, &state(ctx).db, &id, Locked::No).await?;
        Ok(Conversation::whole(c))
    }

    /// Inbound events that could not be turned into messages, newest first.
    /// Not for CLIENT_VIEWER.
    #[graphql(complexity = "first.unwrap_or(20).clamp(0, 100) as usize * child_complexity")]
    async fn dead_letters(
        &self,
        ctx: &Context<'_>,
        workspace_id: ID,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, DeadLetter>> {
        let v = auth(ctx).viewer()?;
        v.require_writer()?;
        let db = &state(ctx).db;
        let ws = v
            .scope
            .workspace(db, decode(Kind::Workspace, &workspace_id)?)
            .await?;
        let page = PageRequest::parse(first, after.as_deref())?;
        let q = v
            .scope
            .select_in_workspaces::<raw_event::Entity>()
            .filter(raw_event::Column::WorkspaceId.eq(ws.id))
            .filter(raw_event::Column::Status.eq(FAILED));
        keyset(
            db,
            q,
            raw_event::Column::Id,
            page,
            Order::NewestFirst,
            |r| r.id,
            DeadLetter,
        )
        .await
    }
}

/// Rows fetched once for a whole page, so that a field asked on every node
/// (the author) costs nothing per node. Lives for one request.
#[derive(Default)]
pub struct Preloaded {
    authors: std::sync::Mutex<std::collections::HashMap<Uuid, author::Model>>,
}

/// Conversations of one workspace, or of every workspace the viewer may see.
async fn list(
    ctx: &Context<'_>,
    workspace: Option<Uuid>,
    filter: Option<ConversationFilter>,
    order_by: ConversationOrder,
    first: Option<i32>,
    after: Option<String>,
) -> ApiResult<Connection<String, Conversation>> {
    list_page(ctx, workspace, filter, order_by, first, after).await
}

/// At most `limit` rows of one page, and which JSON columns they hold.
/// When the page's authors are asked for, they come in the same query (a
/// join), not in a second round trip; the JSON columns no field asks for
/// are not read.
async fn fetch_page(
    ctx: &Context<'_>,
    q: Select<conversation::Entity>,
    limit: u64,
) -> ApiResult<(Vec<conversation::Model>, Wanted)> {
    use rapport_store::pages;
    let db = &state(ctx).db;
    // A node's fields, asked through `edges { node }` or `nodes`.
    let asks = |field: &str| {
        let la = ctx.look_ahead();
        la.field("edges").field("node").field(field).exists()
            || la.field("nodes").field(field).exists()
    };
    let wanted = Wanted {
        breakdown: asks("priorityBreakdown"),
        sla_targets: asks("sla"),
    };
    let pre = ctx.data_opt::<std::sync::Arc<Preloaded>>();
    let rows = match pre.filter(|_| asks("author")) {
        Some(pre) => {
            let rows = pages::with_authors(db, q, limit, wanted).await?;
            let mut cache = pre.authors.lock().expect("preload lock");
            rows.into_iter()
                .map(|(c, a)| {
                    if let Some(a) = a {
                        cache.insert(a.id, a);
                    }
                    c
                })
                .collect()
        }
        None => pages::conversations(db, q, limit, wanted).await?,
    };
    Ok((rows, wanted))
}

async fn list_page(
    ctx: &Context<'_>,
    workspace: Option<Uuid>,
    filter: Option<ConversationFilter>,
    order_by: ConversationOrder,
    first: Option<i32>,
    after: Option<String>,
) -> ApiResult<Connection<String, Conversation>> {
    let v = auth(ctx).viewer()?;
    let f = filter.unwrap_or_default();
    let mut q = v.scope.select_in_workspaces::<conversation::Entity>();
    if let Some(ws) = workspace {
        q = q.filter(conversation::Column::WorkspaceId.eq(ws));
    }
    if let Some(statuses) = &f.status {
        q = q.filter(conversation::Column::Status.is_in(statuses.iter().map(|s| s.as_str())));
    }
    if let Some(kinds) = &f.channel_kinds {
        let kinds: Vec<&str> = kinds
            .iter()
            .map(|k| ChannelKind::from(*k).as_str())
            .collect();
        q = q.filter(
            conversation::Column::ChannelId.in_subquery(
                Query::select()
                    .column(channel::Column::Id)
                    .from(channel::Entity)
                    .and_where(channel::Column::AgencyId.eq(v.agency_id))
                    .and_where(channel::Column::Kind.is_in(kinds))
                    .to_owned(),
            ),
        );
    }
    if let Some(min) = f.min_priority {
        let min: PriorityLevel = min.into();
        let levels: Vec<&str> = [
            PriorityLevel::Low,
            PriorityLevel::Normal,
            PriorityLevel::High,
            PriorityLevel::Urgent,
        ]
        .into_iter()
        .filter(|l| *l >= min)
        .map(PriorityLevel::as_str)
        .collect();
        q = q.filter(conversation::Column::Priority.is_in(levels));
    }
    if let Some(s) = f.sentiment {
        q = q.filter(match s {
            Sentiment::Negative => Condition::all().add(conversation::Column::Sentiment.lte(-0.05)),
            Sentiment::Positive => Condition::all().add(conversation::Column::Sentiment.gte(0.05)),
            Sentiment::Neutral => Condition::all()
                .add(conversation::Column::Sentiment.gt(-0.05))
                .add(conversation::Column::Sentiment.lt(0.05)),
        });
    }
    if let Some(a) = &f.assignee_id {
        q = q.filter(conversation::Column::AssigneeMembershipId.eq(decode(Kind::Member, a)?));
    }
    // Taken literally, spaces too; an empty term is no filter.
    if let Some(term) = f.search.as_deref().filter(|t| !t.is_empty()) {
        if term.chars().count() > 200 || term.contains(char::is_control) {
            return Err(ApiError::bad_input(
                "search",
                "at most 200 characters, none of them control characters",
            ));
        }
        // Case folded beyond ASCII on both backends: SQLite's lower() and
        // LIKE fold ASCII only, so there the term is a case-insensitive
        // regular expression (the REGEXP function store::db registers).
        let contains = if state(ctx).db.get_database_backend() == sea_orm::DbBackend::Sqlite {
            Expr::cust_with_values(
                "\"messages\".\"body\" REGEXP ?",
                [format!("(?i){}", regex_literal(term))],
            )
        } else {
            // Both sides lowered by PostgreSQL, so they fold alike (Rust's
            // rules differ: a final sigma, a dotted capital I); the escape
            // characters are ASCII, which lower() leaves alone. LIKE's
            // escape character is a backslash by default.
            let escaped = term
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            Expr::expr(Func::lower(Expr::col(message::Column::Body))).binary(
                sea_orm::sea_query::BinOper::Like,
                Func::lower(Expr::val(format!("%{escaped}%"))),
            )
        };
        q = q.filter(
            conversation::Column::Id.in_subquery(
                Query::select()
                    .column(message::Column::ConversationId)
                    .from(message::Entity)
                    .and_where(message::Column::AgencyId.eq(v.agency_id))
                    .and_where(contains)
                    .to_owned(),
            ),
        );
    }
    match order_by {
        ConversationOrder::Newest => {
            let page = PageRequest::parse(first, after.as_deref())?;
            if let Some(Cursor(after)) = page.after {
                q = q.filter(conversation::Column::Id.lt(after));
            }
            let q = q.order_by_desc(conversation::Column::Id);
            let (rows, wanted) = fetch_page(ctx, q, page.first + 1).await?;
            Ok(connection(rows, page.first, page.after.is_some(), |r| {
                Edge::new(Cursor::encode(r.id), Conversation(r, wanted))
            }))
        }
        ConversationOrder::Priority => {
            let page = PageRequest::parse(first, None)?;
            if let Some(c) = after.as_deref().map(ScoreCursor::parse).transpose()? {
                q = q.filter(
                    Condition::any()
                        .add(conversation::Column::PriorityScore.lt(c.score))
                        .add(
                            Condition::all()
                                .add(conversation::Column::PriorityScore.eq(c.score))
                                .add(conversation::Column::Id.lt(c.id)),
                        ),
                );
            }
            let q = q
                .order_by_desc(conversation::Column::PriorityScore)
                .order_by_desc(conversation::Column::Id);
            let (rows, wanted) = fetch_page(ctx, q, page.first + 1).await?;
            Ok(connection(rows, page.first, after.is_some(), |r| {
                Edge::new(
                    ScoreCursor::encode(r.priority_score, r.id),
                    Conversation(r, wanted),
                )
            }))
        }
        ConversationOrder::Due => {
            let page = PageRequest::parse(first, None)?;
            if let Some(c) = after.as_deref().map(TimeCursor::parse).transpose()? {
                let after_id = conversation::Column::Id.gt(c.id);
                q = q.filter(match c.at {
                    None => Condition::all()
                        .add(conversation::Column::DueAt.is_null())
                        .add(after_id),
                    Some(due) => Condition::any()
                        .add(conversation::Column::DueAt.gt(due))
                        .add(
                            Condition::all()
                                .add(conversation::Column::DueAt.eq(due))
                                .add(after_id),
                        )
                        .add(conversation::Column::DueAt.is_null()),
                });
            }
            let q = q
                .order_by_with_nulls(
                    conversation::Column::DueAt,
                    sea_orm::Order::Asc,
                    NullOrdering::Last,
                )
                .order_by_asc(conversation::Column::Id);
            let (rows, wanted) = fetch_page(ctx, q, page.first + 1).await?;
            Ok(connection(rows, page.first, after.is_some(), |r| {
                Edge::new(TimeCursor::encode(r.due_at, r.id), Conversation(r, wanted))
            }))
        }
    }
}

/// Whether a conversation is read to be changed (rapport_store::locks).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Locked {
    No,
    ForUpdate,
}

/// The conversation `id` if the viewer may see it; NOT_FOUND when it does
/// not exist or is in a workspace the viewer may not see.
pub(super) async fn visible<C: ConnectionTrait>(
    v: &Viewer,
    conn: &C,
    id: &ID,
    locked: Locked,
) -> ApiResult<conversation::Model> {
    let q = v
        .scope
        .select_in_workspaces::<conversation::Entity>()
        .filter(conversation::Column::Id.eq(decode(Kind::Conversation, id)?));
    let q = match locked {
        Locked::No => q,
        Locked::ForUpdate => locks::for_update(q),
    };
    q.one(conn).await?.ok_or(ApiError::NotFound)
}

/// Before a change that may open conversation `id` (a reopening,
/// `takeOffline`'s private thread): its author's lock
/// (`rapport_store::locks::authors`), taken before any row lock, as
/// ingestion takes them. A payload of the same author being ingested then
/// waits for this change and joins what it opened, instead of opening
/// another conversation beside it.
pub(super) async fn lock_author_of<C: ConnectionTrait>(
    v: &Viewer,
    txn: &C,
    id: &ID,
) -> ApiResult<()> {
    if txn.get_database_backend() != sea_orm::DbBackend::Postgres {
        return Ok(()); // SQLite's write transactions run one at a time
    }
    let c = visible(v, txn, id, Locked::No).await?;
    let a = author::Entity::find_by_id(c.author_id)
        .one(txn)
        .await?
        .ok_or(ApiError::NotFound)?;
    locks::authors(txn, a.agency_id, &a.platform, vec![a.external_id]).await?;
    Ok(())
}

/// Moves a conversation to a status (see `setConversationStatus`).
async fn change_status(
    ctx: &Context<'_>,
    input: SetConversationStatusInput,
) -> ApiResult<Conversation> {
    use rapport_store::sla;
    let v = auth(ctx).viewer()?;
    v.require_writer()?;
    let st = state(ctx);
    let txn = v.scope.begin(&st.db).await?;
    if matches!(
        input.status,
        ConversationStatus::Open | ConversationStatus::PendingCustomer
    ) {
        lock_author_of(v, &txn, &input.conversation_id).await?;
    }
    let current = visible(v, &txn, &input.conversation_id, Locked::ForUpdate).await?;
    let clock = sla::clock_for(&txn, &current).await?;
    let now = Utc::now();
    let mut next = current.clone();
    let met = sla::apply_status(&mut next, &clock, input.status.as_str(), now);
    let mut am = current.clone().into_active_model();
    let reopening = matches!(current.status.as_str(), "RESOLVED" | "CLOSED")
        && matches!(next.status.as_str(), "OPEN" | "PENDING_CUSTOMER");
    if let Some(a) = current.assignee_membership_id.filter(|_| reopening)
        && !rapport_store::tenancy::may_hold(&txn, a, current.workspace_id).await?
    {
        am.assignee_membership_id = Set(None);
    }
    am.status = Set(next.status.clone());
    am.resolved_at = Set(next.resolved_at);
    am.resolution_business_s = Set(next.resolution_business_s);
    am.first_response_due_at = Set(next.first_response_due_at);
    am.next_response_due_at = Set(next.next_response_due_at);
    am.resolution_due_at = Set(next.resolution_due_at);
    am.due_at = Set(next.due_at);
    am.sla_targets = Set(next.sla_targets.clone());
    am.updated_at = Set(now);
    let saved = am.update(&txn).await?;
    let settled = sla::settle(&txn, &saved, met, now).await?;
    AuditEvent::new("setConversationStatus")
        .workspace(saved.workspace_id)
        .details(json!({ "from": current.status, "to": saved.status }))
        .by(&txn, v)
        .await?;
    txn.commit().await?;
    // Changed deadlines get new timers; the old ones fire stale.
    if let Err(e) = sla::schedule(&st.kv, &sla::timers_of(&saved)).await {
        tracing::warn!(error = %e, "scheduling SLA timers failed; the rebuild will");
    }
    st.kv.sla_alerts(&settled.alerts).await;
    st.kv
        .conversation_changed(saved.workspace_id, saved.id, "updated")
        .await;
    Ok(Conversation::whole(saved))
}

#[derive(Default)]
pub struct ConversationMutation;

#[Object]
impl ConversationMutation {
    /// Gives a conversation to a member who can see its workspace (or
    /// nobody). Not for CLIENT_VIEWER.
    async fn assign_conversation(
        &self,
        ctx: &Context<'_>,
        input: AssignConversationInput,
    ) -> ApiResult<Conversation> {
        let v = auth(ctx).viewer()?;
        v.require_writer()?;
        let st = state(ctx);
        let txn = v.scope.begin(&st.db).await?;
        // The member first, shared until commit, then the conversation (the
        // order updateMemberRole takes them in): a role change committing
        // meanwhile is waited for and read, so nobody is assigned a
        // workspace just taken out of their reach.
        let member = match &input.member_id {
            None => None,
            Some(id) => Some(
                rapport_store::locks::for_share(
                    v.scope
                        .select_members()
                        .filter(membership::Column::Id.eq(decode(Kind::Member, id)?)),
                )
                .one(&txn)
                .await?
                .ok_or(ApiError::NotFound)?,
            ),
        };
        let current = visible(v, &txn, &input.conversation_id, Locked::ForUpdate).await?;
        let assignee = match member {
            None => None,
            Some(m) => {
                if m.role == "CLIENT_VIEWER" {
                    return Err(ApiError::bad_input(
                        "memberId",
                        "client viewers cannot take conversations",
                    ));
                }
                if m.invitation_hash.is_some() {
                    return Err(ApiError::bad_input(
                        "memberId",
                        "this member has not accepted their invitation yet",
                    ));
                }
                if !rapport_store::tenancy::member_sees_workspace(&txn, &m, current.workspace_id)
                    .await?
                {
                    return Err(ApiError::bad_input(
                        "memberId",
                        "this member cannot see the workspace",
                    ));
                }
                Some(m.id)
            }
        };
        let ws = current.workspace_id;
        let mut am = current.into_active_model();
        am.assignee_membership_id = Set(assignee);
        am.updated_at = Set(Utc::now());
        let saved = am.update(&txn).await?;
        AuditEvent::new("assignConversation")
            .workspace(ws)
            .details(json!({ "conversationId": input.conversation_id.0, "memberId": input.member_id.map(|m| m.0) }))
            .by(&txn, v)
            .await?;
        txn.commit().await?;
        st.kv.conversation_changed(ws, saved.id, "updated").await;
        Ok(Conversation::whole(saved))
    }

    /// Shorthand for `setConversationStatus(RESOLVED)`.
    async fn resolve_conversation(
        &self,
        ctx: &Context<'_>,
        conversation_id: ID,
    ) -> ApiResult<Conversation> {
        change_status(
            ctx,
            SetConversationStatusInput {
                conversation_id,
                status: ConversationStatus::Resolved,
            },
        )
        .await
    }
    /// OPEN, PENDING_CUSTOMER (waiting on the customer: SLA clocks pause),
    /// RESOLVED (the resolution target is met if still running) or CLOSED.
    /// Reopening a resolved conversation restarts its resolution clock.
    /// Not for CLIENT_VIEWER.
    async fn set_conversation_status(
        &self,
        ctx: &Context<'_>,
        input: SetConversationStatusInput,
    ) -> ApiResult<Conversation> {
        change_status(ctx, input).await
    }

    /// Sends a dead letter through ingestion again (after fixing its cause,
    /// e.g. a rotated secret or a parser update). OWNER or ADMIN.
    async fn retry_dead_letter(
        &self,
        ctx: &Context<'_>,
        input: RetryDeadLetterInput,
    ) -> ApiResult<DeadLetter> {
        let v = auth(ctx).viewer()?;
        v.require_manager()?;
        let st = state(ctx);
        let id = decode(Kind::DeadLetter, &input.id)?;
        let txn = v.scope.begin(&st.db).await?;
        let current = v
            .scope
            .select_in_workspaces::<raw_event::Entity>()
            .filter(raw_event::Column::Id.eq(id))
            .one(&txn)
            .await?
            .ok_or(ApiError::NotFound)?;
        if current.status != FAILED {
            return Err(ApiError::bad_input(
                "id",
                "only FAILED events can be retried",
            ));
        }
        let mut am = current.into_active_model();
        am.status = Set(PENDING.into());
        am.error = Set(None);
        let r = am.update(&txn).await?;
        AuditEvent::new("retryDeadLetter")
            .workspace(r.workspace_id)
            .details(json!({ "deadLetterId": gid(Kind::DeadLetter, r.id).0 }))
            .by(&txn, v)
            .await?;
        txn.commit().await?;
        // Stored as PENDING first: if this enqueue fails, the reconciler retries.
        if let Err(e) = jobs::enqueue(&st.kv, jobs::INGEST, &json!({ "raw_event_id": r.id })).await
        {
            tracing::warn!(error = %e, "enqueueing a retried dead letter failed");
        }
        Ok(DeadLetter(r))
    }
}

/// Messages to backfill into a workspace.
#[derive(InputObject)]
pub struct ImportMessagesInput {
    /// The workspace to import into.
    workspace_id: ID,
    /// Events in the GENERIC webhook schema, one object each (at most 1000).
    events: Vec<Json<serde_json::Value>>,
    /// A GENERIC channel of the workspace to import through: events its
    /// webhook delivered count as duplicates, and replies to them thread.
    /// Omitted: the workspace's own import channel.
    channel_id: Option<ID>,
}

/// An imported event that was refused.
#[derive(SimpleObject)]
pub struct ImportRejection {
    /// Position in `events`, from 0.
    index: i32,
    /// Why it was refused.
    reason: String,
}

/// What `importMessages` did with the events.
#[derive(SimpleObject)]
pub struct ImportMessagesPayload {
    /// Events stored as new messages.
    accepted: i32,
    /// Already stored (same id): importing again is safe.
    duplicates: i32,
    /// Events refused, with the reason.
    rejected: Vec<ImportRejection>,
}

pub const MAX_IMPORT: usize = 1_000;

#[derive(Default)]
pub struct ImportMutation;

#[Object]
impl ImportMutation {
    /// Backfills messages into a workspace through the normal dedup,
    /// threading and ranking. OWNER or ADMIN.
    async fn import_messages(
        &self,
        ctx: &Context<'_>,
        input: ImportMessagesInput,
    ) -> ApiResult<ImportMessagesPayload> {
        use rapport_store::import::{CHUNK, ImportSummary, import_chunk_in, import_target};
        let v = auth(ctx).viewer()?;
        v.require_manager()?;
        if input.events.len() > MAX_IMPORT {
            return Err(ApiError::bad_input(
                "events",
                format!("at most {MAX_IMPORT} per call; use `rapport import` for files"),
            ));
        }
        let st = state(ctx);
        let ws = v
            .scope
            .workspace(&st.db, decode(Kind::Workspace, &input.workspace_id)?)
            .await?;
        let channel = match &input.channel_id {
            Some(id) => Some(decode(Kind::Channel, id)?),
            None => None,
        };
        let ch = import_target(&st.db, &ws, channel).await?;
        let events: Vec<serde_json::Value> = input.events.into_iter().map(|j| j.0).collect();
        let mut summary = ImportSummary::default();
        for (n, chunk) in events.chunks(CHUNK).enumerate() {
            // Each chunk commits on its own, with its audit entry: what it
            // stored is recorded whatever a later chunk does.
            let txn = v.scope.begin(&st.db).await?;
            let part = import_chunk_in(&txn, &ws, &ch, chunk, n * CHUNK).await?;
            AuditEvent::new("importMessages")
                .workspace(ws.id)
                .details(json!({
                    "part": n + 1,
                    "parts": events.len().div_ceil(CHUNK),
                    "accepted": part.accepted,
                    "duplicates": part.duplicates,
                    "rejected": part.rejected.len(),
                }))
                .by(&txn, v)
                .await?;
            txn.commit().await?;
            // Its timers and live updates go out now.
            rapport_store::ingest::announce(&st.kv, &part.timers, &part.touched).await;
            summary.add(part);
        }
        Ok(ImportMessagesPayload {
            accepted: summary.accepted as i32,
            duplicates: summary.duplicates as i32,
            rejected: summary
                .rejected
                .into_iter()
                .map(|(i, reason)| ImportRejection {
                    index: i as i32,
                    reason,
                })
                .collect(),
        })
    }
}
