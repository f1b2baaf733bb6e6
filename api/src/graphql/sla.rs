//! Response-time promises: business calendars, SLA policies (ordered, first
//! match wins, a default otherwise), each conversation's deadlines, and the
//! warnings and breaches recorded.

use super::channels::GqlChannelKind;
use super::conversations::{GqlPriority, Sentiment, Visibility};
use super::paging::{Order, keyset};
use super::types::{decode, gid};
use super::{auth, state};
use crate::audit::AuditEvent;
use crate::auth::viewer::Viewer;
use crate::error::{ApiError, ApiResult};
use async_graphql::connection::Connection;
use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use rapport_domain::ingest::ChannelKind;
use rapport_domain::priority::PriorityLevel;
use rapport_domain::sla::{self, Conditions, Deadline, SlaStatus, Target, TargetMinutes, Targets};
use rapport_domain::{Kind, Name, PageRequest, PhraseList, Role};
use rapport_store::entities::{business_calendar, conversation, sla_event, sla_policy};
use rapport_store::sla::{Snapshot, StoredHoliday, StoredPeriod, calendar};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect, Set,
};
use serde_json::json;
use uuid::Uuid;

// ---- Calendars --------------------------------------------------------------

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

impl Weekday {
    fn name(self) -> &'static str {
        match self {
            Weekday::Monday => "Monday",
            Weekday::Tuesday => "Tuesday",
            Weekday::Wednesday => "Wednesday",
            Weekday::Thursday => "Thursday",
            Weekday::Friday => "Friday",
            Weekday::Saturday => "Saturday",
            Weekday::Sunday => "Sunday",
        }
    }
}

/// Opening hours: `closes` at or before `opens` is an overnight shift.
#[derive(SimpleObject, InputObject, Clone)]
#[graphql(input_name = "OpeningPeriodInput")]
pub struct OpeningPeriod {
    /// MONDAY … SUNDAY (upper case when read; any case accepted as input).
    day: String,
    /// "09:00"
    opens: String,
    /// "17:30"; "24:00" for midnight.
    closes: String,
}

/// A holiday: `date` ("2026-12-25") once, or `month` and `day` every year.
#[derive(SimpleObject, InputObject, Clone)]
#[graphql(input_name = "HolidayInput")]
pub struct HolidayDate {
    /// A one-off holiday, as "YYYY-MM-DD"; null for a yearly one.
    date: Option<String>,
    /// A yearly holiday's month, 1 to 12; null for a one-off.
    month: Option<i32>,
    /// A yearly holiday's day of the month; null for a one-off.
    day: Option<i32>,
    /// The holiday's name, if given.
    name: Option<String>,
}

/// A new business calendar for a workspace.
#[derive(InputObject)]
pub struct CreateBusinessCalendarInput {
    /// The workspace the calendar is for.
    workspace_id: ID,
    /// The calendar's name.
    name: String,
    /// IANA time zone the opening hours are in, e.g. `Europe/Berlin`.
    timezone: String,
    /// `day` is MONDAY … SUNDAY.
    weekly_hours: Vec<OpeningPeriod>,
    /// Days the business is closed.
    #[graphql(default)]
    holidays: Vec<HolidayDate>,
}

pub struct BusinessCalendar(pub business_calendar::Model);

/// A workspace's opening hours and holidays, for SLA targets counted in
/// business hours.
#[Object]
impl BusinessCalendar {
    /// Global ID of the calendar.
    async fn id(&self) -> ID {
        gid(Kind::BusinessCalendar, self.0.id)
    }
    /// The calendar's name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// IANA time zone the opening hours are in, e.g. `Europe/Berlin`.
    async fn timezone(&self) -> &str {
        &self.0.timezone
    }
    /// Opening periods of the week.
    async fn weekly_hours(&self) -> Vec<OpeningPeriod> {
        serde_json::from_value::<Vec<StoredPeriod>>(self.0.weekly_hours.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|p| OpeningPeriod {
                day: p.day.to_uppercase(),
                opens: p.opens,
                closes: p.closes,
            })
            .collect()
    }
    /// Days the business is closed.
    async fn holidays(&self) -> Vec<HolidayDate> {
        serde_json::from_value::<Vec<StoredHoliday>>(self.0.holidays.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|h| HolidayDate {
                date: h.date,
                month: h.month.map(|m| m as i32),
                day: h.day.map(|d| d as i32),
                name: h.name,
            })
            .collect()
    }
}

// ---- Policies ---------------------------------------------------------------

/// Minutes allowed for each target at one priority (1 to 525600); null
/// means no promise for that target.
#[derive(SimpleObject, InputObject, Clone, Copy, Default)]
#[graphql(input_name = "TargetMinutesInput")]
pub struct GqlTargetMinutes {
    /// Until the agency's first reply.
    first_response_minutes: Option<i32>,
    /// Until the agency answers a customer message that came after a reply.
    next_response_minutes: Option<i32>,
    /// Until the conversation is resolved.
    resolution_minutes: Option<i32>,
}

fn minutes(field: &'static str, v: Option<i32>) -> ApiResult<Option<u32>> {
    v.map(|m| u32::try_from(m).map_err(|_| ApiError::bad_input(field, "must be positive")))
        .transpose()
}

impl GqlTargetMinutes {
    fn to_domain(self) -> ApiResult<TargetMinutes> {
        Ok(TargetMinutes {
            first_response: minutes("firstResponseMinutes", self.first_response_minutes)?,
            next_response: minutes("nextResponseMinutes", self.next_response_minutes)?,
            resolution: minutes("resolutionMinutes", self.resolution_minutes)?,
        }
        .parse()?)
    }

    fn from_domain(t: TargetMinutes) -> Self {
        Self {
            first_response_minutes: t.first_response.map(|m| m as i32),
            next_response_minutes: t.next_response.map(|m| m as i32),
            resolution_minutes: t.resolution.map(|m| m as i32),
        }
    }
}

/// Minutes allowed per priority; a missing target means no promise.
#[derive(SimpleObject, InputObject, Clone, Copy, Default)]
#[graphql(input_name = "SlaTargetsInput")]
pub struct SlaTargets {
    /// Targets for URGENT conversations.
    #[graphql(default)]
    urgent: GqlTargetMinutes,
    /// Targets for HIGH conversations.
    #[graphql(default)]
    high: GqlTargetMinutes,
    /// Targets for NORMAL conversations.
    #[graphql(default)]
    normal: GqlTargetMinutes,
    /// Targets for LOW conversations.
    #[graphql(default)]
    low: GqlTargetMinutes,
}

impl SlaTargets {
    fn to_domain(self) -> ApiResult<Targets> {
        Ok(Targets {
            urgent: self.urgent.to_domain()?,
            high: self.high.to_domain()?,
            normal: self.normal.to_domain()?,
            low: self.low.to_domain()?,
        })
    }

    fn from_domain(t: &Targets) -> Self {
        Self {
            urgent: GqlTargetMinutes::from_domain(t.urgent),
            high: GqlTargetMinutes::from_domain(t.high),
            normal: GqlTargetMinutes::from_domain(t.normal),
            low: GqlTargetMinutes::from_domain(t.low),
        }
    }
}

/// When a policy applies; every condition given must hold.
#[derive(SimpleObject, InputObject, Clone, Default)]
#[graphql(input_name = "SlaConditionsInput")]
pub struct SlaConditions {
    /// The conversation is on a channel of one of these kinds; empty: any.
    #[graphql(default)]
    channel_kinds: Vec<GqlChannelKind>,
    /// The opening message has this visibility.
    visibility: Option<Visibility>,
    /// The opening message has this priority or higher.
    min_priority: Option<GqlPriority>,
    /// The opening message has this sentiment.
    sentiment: Option<Sentiment>,
    /// The author has at least this many followers.
    author_min_followers: Option<i64>,
    /// Any of these words in the opening message.
    #[graphql(default)]
    keywords: Vec<String>,
}

impl SlaConditions {
    fn to_domain(&self) -> ApiResult<Conditions> {
        Ok(Conditions {
            channel_kinds: self
                .channel_kinds
                .iter()
                .map(|k| ChannelKind::from(*k).as_str().to_string())
                .collect(),
            visibility: self.visibility.map(|v| match v {
                Visibility::Public => "PUBLIC".into(),
                Visibility::Private => "PRIVATE".into(),
            }),
            min_priority: self.min_priority.map(PriorityLevel::from),
            sentiment: self.sentiment.map(|s| {
                match s {
                    Sentiment::Negative => "NEGATIVE",
                    Sentiment::Neutral => "NEUTRAL",
                    Sentiment::Positive => "POSITIVE",
                }
                .into()
            }),
            author_min_followers: self
                .author_min_followers
                .map(|n| {
                    u64::try_from(n).map_err(|_| {
                        ApiError::bad_input("authorMinFollowers", "must not be negative")
                    })
                })
                .transpose()?,
            keywords: PhraseList::parse("keywords", &self.keywords)?.into_vec(),
        })
    }

    fn from_domain(c: &Conditions) -> Self {
        Self {
            channel_kinds: c
                .channel_kinds
                .iter()
                .filter_map(|k| ChannelKind::parse(k).ok().map(Into::into))
                .collect(),
            visibility: c.visibility.as_deref().map(|v| {
                if v == "PRIVATE" {
                    Visibility::Private
                } else {
                    Visibility::Public
                }
            }),
            min_priority: c.min_priority.map(Into::into),
            sentiment: c.sentiment.as_deref().map(|s| match s {
                "NEGATIVE" => Sentiment::Negative,
                "POSITIVE" => Sentiment::Positive,
                _ => Sentiment::Neutral,
            }),
            author_min_followers: c.author_min_followers.map(|n| n as i64),
            keywords: c.keywords.clone(),
        }
    }
}

/// What happens when a target is breached.
#[derive(SimpleObject, InputObject, Clone, Default)]
#[graphql(input_name = "SlaEscalationInput")]
pub struct SlaEscalation {
    /// Raise the conversation to at least this priority.
    raise_priority_to: Option<GqlPriority>,
    /// Assign the conversation to this member.
    assign_to_member_id: Option<ID>,
    /// Assign it to the least-loaded member of this team (fewest open
    /// conversations) who can see the workspace; when no member is named.
    assign_to_team_id: Option<ID>,
}

async fn escalation_json(
    v: &Viewer,
    txn: &DatabaseTransaction,
    workspace: Uuid,
    e: &SlaEscalation,
) -> ApiResult<serde_json::Value> {
    let assignee = match &e.assign_to_member_id {
        None => None,
        Some(id) => {
            let m = v
                .scope
                .find::<rapport_store::entities::membership::Entity, _>(
                    txn,
                    decode(Kind::Member, id)?,
                )
                .await?;
            if m.role == Role::ClientViewer.as_str() {
                return Err(ApiError::bad_input(
                    "assignToMemberId",
                    "a CLIENT_VIEWER reads only and cannot be assigned conversations",
                ));
            }
            if !rapport_store::tenancy::member_sees_workspace(txn, &m, workspace).await? {
                return Err(ApiError::bad_input(
                    "assignToMemberId",
                    "this member cannot see the workspace",
                ));
            }
            Some(m.id)
        }
    };
    let team = match &e.assign_to_team_id {
        None => None,
        Some(id) => Some(
            v.scope
                .find::<rapport_store::entities::team::Entity, _>(txn, decode(Kind::Team, id)?)
                .await?
                .id,
        ),
    };
    Ok(json!({
        "raisePriorityTo": e.raise_priority_to.map(|p| PriorityLevel::from(p).as_str()),
        "assignTo": assignee,
        "assignToTeam": team,
    }))
}

pub struct SlaPolicy(pub sla_policy::Model);

/// A response-time promise of a workspace: which conversations it covers
/// and the minutes allowed per priority. New conversations get the first
/// matching policy, or the default.
#[Object]
impl SlaPolicy {
    /// Global ID of the policy.
    async fn id(&self) -> ID {
        gid(Kind::SlaPolicy, self.0.id)
    }
    /// The policy's name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Match order (lower first); the default policy applies when none matches.
    async fn position(&self) -> i32 {
        self.0.position
    }
    /// Whether this is the workspace's default policy (at most one is).
    async fn is_default(&self) -> bool {
        self.0.is_default
    }
    /// When the policy applies.
    async fn conditions(&self) -> SlaConditions {
        serde_json::from_value::<Conditions>(self.0.conditions.clone())
            .map(|c| SlaConditions::from_domain(&c))
            .unwrap_or_default()
    }
    /// Minutes allowed per priority and target.
    async fn targets(&self) -> SlaTargets {
        serde_json::from_value::<Targets>(self.0.targets.clone())
            .map(|t| SlaTargets::from_domain(&t))
            .unwrap_or_default()
    }
    /// Count business hours of `calendar` instead of every minute.
    async fn business_hours(&self) -> bool {
        self.0.business_hours
    }
    /// The business calendar used for business hours; null when none is set.
    #[graphql(complexity = "super::LOOKUP_COST + child_complexity")]
    async fn calendar(&self, ctx: &Context<'_>) -> ApiResult<Option<BusinessCalendar>> {
        let Some(id) = self.0.calendar_id else {
            return Ok(None);
        };
        let v = auth(ctx).viewer()?;
        Ok(v.scope
            .find::<business_calendar::Entity, _>(&state(ctx).db, id)
            .await
            .ok()
            .map(BusinessCalendar))
    }
    /// Warn when this share of a target's time has passed.
    async fn warn_at_percent(&self) -> i32 {
        self.0.warn_at_percent
    }
    /// What happens when a target is breached. A member removed or a team
    /// deleted since the policy was saved reads as null (nobody is called
    /// in their place; set another).
    async fn escalation(&self, ctx: &Context<'_>) -> ApiResult<SlaEscalation> {
        use rapport_store::entities::{membership, team};
        let v = auth(ctx).viewer()?;
        let db = &state(ctx).db;
        let e = &self.0.escalation;
        let id_at = |k: &str| {
            e.get(k)
                .and_then(|v| v.as_str())
                .and_then(|s| Uuid::parse_str(s).ok())
        };
        let member = match id_at("assignTo") {
            Some(id) => v
                .scope
                .find::<membership::Entity, _>(db, id)
                .await
                .ok()
                .map(|m| gid(Kind::Member, m.id)),
            None => None,
        };
        let team = match id_at("assignToTeam") {
            Some(id) => v
                .scope
                .find::<team::Entity, _>(db, id)
                .await
                .ok()
                .map(|t| gid(Kind::Team, t.id)),
            None => None,
        };
        Ok(SlaEscalation {
            raise_priority_to: e
                .get("raisePriorityTo")
                .and_then(|v| v.as_str())
                .and_then(PriorityLevel::parse)
                .map(Into::into),
            assign_to_member_id: member,
            assign_to_team_id: team,
        })
    }
}

/// A new SLA policy.
#[derive(InputObject)]
pub struct CreateSlaPolicyInput {
    /// The workspace the policy is for.
    workspace_id: ID,
    /// The policy's name.
    name: String,
    /// Make it the workspace's default policy (the previous default stops
    /// being one).
    #[graphql(default)]
    is_default: bool,
    /// When the policy applies; none given: every conversation.
    #[graphql(default)]
    conditions: SlaConditions,
    /// Minutes allowed per priority and target.
    targets: SlaTargets,
    /// Count only the business hours of `calendarId` (required then).
    #[graphql(default)]
    business_hours: bool,
    /// A business calendar of the same workspace.
    calendar_id: Option<ID>,
    /// Warn when this share of a target's time has passed, 1 to 100.
    #[graphql(default = 75)]
    warn_at_percent: i32,
    /// What happens when a target is breached.
    #[graphql(default)]
    escalation: SlaEscalation,
}

/// Only the fields given change. Conversations opened before keep the
/// targets they were given.
#[derive(InputObject)]
pub struct UpdateSlaPolicyInput {
    /// The policy to change.
    id: ID,
    /// New name.
    name: Option<String>,
    /// Make it (or stop it being) the workspace's default policy.
    is_default: Option<bool>,
    /// New conditions, replacing the old ones.
    conditions: Option<SlaConditions>,
    /// New targets, replacing the old ones.
    targets: Option<SlaTargets>,
    /// Count only business hours; needs a calendar.
    business_hours: Option<bool>,
    /// A business calendar of the same workspace.
    calendar_id: Option<ID>,
    /// New warning threshold, 1 to 100 percent.
    warn_at_percent: Option<i32>,
    /// New escalation, replacing the old one.
    escalation: Option<SlaEscalation>,
}

/// A workspace's policies in their new match order.
#[derive(InputObject)]
pub struct ReorderSlaPoliciesInput {
    /// The workspace whose policies are reordered.
    workspace_id: ID,
    /// The workspace's non-default policies in their new match order.
    policy_ids: Vec<ID>,
}

/// The policy to delete.
#[derive(InputObject)]
pub struct DeleteSlaPolicyInput {
    /// The policy's ID.
    id: ID,
}

/// Result of `deleteSlaPolicy`.
#[derive(SimpleObject)]
pub struct DeleteSlaPolicyPayload {
    /// ID of the policy that was deleted.
    deleted_policy_id: ID,
}

// ---- Conversation deadlines and events -------------------------------------

/// Where a conversation's response-time promise stands.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "SlaStatus")]
pub enum GqlSlaStatus {
    /// A deadline is running and its warning point has not passed.
    OnTrack,
    /// Past the warning point of the next running deadline.
    AtRisk,
    /// A deadline has passed (or the conversation was resolved late).
    Breached,
    /// No deadline running: met, or no promise.
    Met,
    /// Waiting on the customer (PENDING_CUSTOMER): clocks stopped.
    Paused,
}

impl From<SlaStatus> for GqlSlaStatus {
    fn from(s: SlaStatus) -> Self {
        match s {
            SlaStatus::OnTrack => GqlSlaStatus::OnTrack,
            SlaStatus::AtRisk => GqlSlaStatus::AtRisk,
            SlaStatus::Breached => GqlSlaStatus::Breached,
            SlaStatus::Met => GqlSlaStatus::Met,
            SlaStatus::Paused => GqlSlaStatus::Paused,
        }
    }
}

/// A conversation's promise: its deadlines and where it stands. Built once
/// per conversation, so the stored snapshot is parsed once, not per field.
pub struct ConversationSla {
    policy_id: Option<Uuid>,
    first_response_due: Option<DateTime<Utc>>,
    next_response_due: Option<DateTime<Utc>>,
    resolution_due: Option<DateTime<Utc>>,
    /// Where a conversation that no clock runs for stands (paused, met or
    /// breached); None while its clocks run.
    settled: Option<GqlSlaStatus>,
    open: bool,
    /// The running deadline that comes first.
    next: Option<Deadline>,
}

impl ConversationSla {
    pub fn of(c: &conversation::Model) -> Self {
        let settled = match c.status.as_str() {
            "PENDING_CUSTOMER" => Some(GqlSlaStatus::Paused),
            "RESOLVED" | "CLOSED" => {
                // The clocks' reading when they stopped (a paused one's is
                // the pause), as the recorded events have it.
                let stopped = c
                    .sla_targets
                    .as_ref()
                    .and_then(|s| s.stopped_at)
                    .or(c.resolved_at);
                // Missed by then: resolution late, or the first response
                // late or never given. (A next response answered late is
                // in the recorded events, `slaEvents`, not here.)
                // Kept by whichever came first: a reply after the clocks
                // stopped (a follow-up once resolved) answered nothing.
                let missed = |due: Option<DateTime<Utc>>, kept: Option<DateTime<Utc>>| {
                    let by = kept.into_iter().chain(stopped).min();
                    matches!((due, by), (Some(d), Some(t)) if t > d)
                };
                let late = missed(c.resolution_due_at, None)
                    || missed(c.first_response_due_at, c.first_responded_at);
                Some(if late {
                    GqlSlaStatus::Breached
                } else {
                    GqlSlaStatus::Met
                })
            }
            _ => None,
        };
        ConversationSla {
            policy_id: c.sla_policy_id,
            first_response_due: c.first_response_due_at,
            next_response_due: c.next_response_due_at,
            resolution_due: c.resolution_due_at,
            settled,
            open: c.status == "OPEN",
            next: Self::next_of(c),
        }
    }

    fn next_of(c: &conversation::Model) -> Option<Deadline> {
        let s: &Snapshot = c.sla_targets.as_ref()?;
        [
            (
                Target::FirstResponse,
                c.first_response_due_at
                    .filter(|_| c.first_responded_at.is_none()),
            ),
            (Target::NextResponse, c.next_response_due_at),
            (
                Target::Resolution,
                c.resolution_due_at.filter(|_| c.resolved_at.is_none()),
            ),
        ]
        .into_iter()
        .filter_map(|(target, due)| {
            let due = due?;
            let warn = s.warn.get(target.as_str()).copied().unwrap_or(due);
            Some(Deadline { target, due, warn })
        })
        .min_by_key(|d| d.due)
    }
}

/// A conversation's response-time promise: its deadlines and where it
/// stands.
#[Object]
impl ConversationSla {
    /// The policy that set the deadlines; null when none applied.
    #[graphql(complexity = "super::LOOKUP_COST + child_complexity")]
    async fn policy(&self, ctx: &Context<'_>) -> ApiResult<Option<SlaPolicy>> {
        let Some(id) = self.policy_id else {
            return Ok(None);
        };
        let v = auth(ctx).viewer()?;
        // Gone since (a member removed, a policy deleted): null; a
        // database failure stays an error.
        use rapport_store::errors::Optional;
        Ok(v.scope
            .find::<sla_policy::Entity, _>(&state(ctx).db, id)
            .await
            .optional()?
            .map(SlaPolicy))
    }
    /// When the first reply is (or was) due; null without a first-response
    /// target.
    async fn first_response_due(&self) -> Option<DateTime<Utc>> {
        self.first_response_due
    }
    /// When the next reply is due; null while no next-response clock runs.
    async fn next_response_due(&self) -> Option<DateTime<Utc>> {
        self.next_response_due
    }
    /// When resolution is (or was) due; null without a resolution target.
    async fn resolution_due(&self) -> Option<DateTime<Utc>> {
        self.resolution_due
    }
    /// Where the promise stands now.
    async fn status(&self) -> GqlSlaStatus {
        if let Some(s) = self.settled {
            return s;
        }
        match &self.next {
            Some(d) => sla::status(Utc::now(), d).into(),
            None => GqlSlaStatus::Met,
        }
    }
    /// Minutes left until the next running deadline (negative once breached).
    async fn remaining_minutes(&self) -> Option<f64> {
        if !self.open {
            return None;
        }
        let d = self.next?;
        let secs = (d.due - Utc::now()).num_seconds() as f64;
        Some((secs / 60.0 * 10.0).round() / 10.0)
    }
}

pub struct SlaEvent(pub sla_event::Model);

/// A recorded SLA warning, breach or met target of a conversation.
#[Object]
impl SlaEvent {
    /// Global ID of the event.
    async fn id(&self) -> ID {
        gid(Kind::SlaEvent, self.0.id)
    }
    /// The conversation whose deadline it is.
    async fn conversation_id(&self) -> ID {
        gid(Kind::Conversation, self.0.conversation_id)
    }
    /// SLA_WARNING, SLA_BREACHED or SLA_MET.
    async fn kind(&self) -> &str {
        &self.0.kind
    }
    /// FIRST_RESPONSE, NEXT_RESPONSE or RESOLUTION.
    async fn target(&self) -> &str {
        &self.0.target
    }
    /// The deadline concerned.
    async fn deadline(&self) -> DateTime<Utc> {
        self.0.deadline_at
    }
    /// When the event was recorded.
    async fn fired_at(&self) -> DateTime<Utc> {
        self.0.fired_at
    }
    /// Breaches: how long after the deadline the breach was recorded.
    async fn lateness_ms(&self) -> i64 {
        self.0.lateness_ms
    }
}

// ---- Resolvers ------------------------------------------------------------------

async fn policy_in(v: &Viewer, txn: &DatabaseTransaction, id: &ID) -> ApiResult<sla_policy::Model> {
    let p = v
        .scope
        .select_in_workspaces::<sla_policy::Entity>()
        .filter(sla_policy::Column::Id.eq(decode(Kind::SlaPolicy, id)?))
        .filter(sla_policy::Column::DeletedAt.is_null())
        .one(txn)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(p)
}

async fn calendar_in(
    v: &Viewer,
    txn: &DatabaseTransaction,
    workspace: Uuid,
    id: &ID,
) -> ApiResult<Uuid> {
    let c = v
        .scope
        .find::<business_calendar::Entity, _>(txn, decode(Kind::BusinessCalendar, id)?)
        .await?;
    if c.workspace_id != workspace {
        return Err(ApiError::bad_input(
            "calendarId",
            "the calendar belongs to another workspace",
        ));
    }
    Ok(c.id)
}

fn warn_percent(p: i32) -> ApiResult<i32> {
    if (1..=100).contains(&p) {
        Ok(p)
    } else {
        Err(ApiError::bad_input("warnAtPercent", "must be 1 to 100"))
    }
}

/// Only one default per workspace: setting one clears the others, and a
/// policy that stops being the default goes last among the ordered ones
/// (kept at its old place, its conditions, often none, would match
/// before the policies ordered after it).
async fn clear_default(txn: &DatabaseTransaction, workspace: Uuid, except: Uuid) -> ApiResult<()> {
    let former = sla_policy::Entity::find()
        .filter(sla_policy::Column::WorkspaceId.eq(workspace))
        .filter(sla_policy::Column::Id.ne(except))
        .filter(sla_policy::Column::IsDefault.eq(true))
        .order_by_asc(sla_policy::Column::Position)
        .all(txn)
        .await?;
    for p in former {
        let position = next_position(txn, workspace).await?;
        let mut am = p.into_active_model();
        am.is_default = Set(false);
        am.position = Set(position);
        am.update(txn).await?;
    }
    Ok(())
}

#[derive(Default)]
pub struct SlaQuery;

#[Object]
impl SlaQuery {
    /// The workspace's policies in match order, the default last.
    #[graphql(complexity = "super::FEW_COST * child_complexity")]
    async fn sla_policies(&self, ctx: &Context<'_>, workspace_id: ID) -> ApiResult<Vec<SlaPolicy>> {
        let v = auth(ctx).viewer()?;
        let db = &state(ctx).db;
        let ws = v
            .scope
            .workspace(db, decode(Kind::Workspace, &workspace_id)?)
            .await?;
        let mut rows = v
            .scope
            .select::<sla_policy::Entity>()
            .filter(sla_policy::Column::WorkspaceId.eq(ws.id))
            .filter(sla_policy::Column::DeletedAt.is_null())
            .order_by_asc(sla_policy::Column::Position)
            .order_by_asc(sla_policy::Column::Id)
            .limit(super::MAX_LISTED)
            .all(db)
            .await?;
        // As the engine matches them (`rapport_store::sla::load`).
        rows.sort_by_key(|p| (p.is_default, p.position, p.id));
        Ok(rows.into_iter().map(SlaPolicy).collect())
    }

    /// A workspace's business calendars, oldest first.
    #[graphql(complexity = "super::FEW_COST * child_complexity")]
    async fn business_calendars(
        &self,
        ctx: &Context<'_>,
        workspace_id: ID,
    ) -> ApiResult<Vec<BusinessCalendar>> {
        let v = auth(ctx).viewer()?;
        let db = &state(ctx).db;
        let ws = v
            .scope
            .workspace(db, decode(Kind::Workspace, &workspace_id)?)
            .await?;
        let rows = v
            .scope
            .select::<business_calendar::Entity>()
            .filter(business_calendar::Column::WorkspaceId.eq(ws.id))
            .order_by_asc(business_calendar::Column::Id)
            .limit(super::MAX_LISTED)
            .all(db)
            .await?;
        Ok(rows.into_iter().map(BusinessCalendar).collect())
    }

    /// Warnings, breaches and met promises, newest first, optionally in a
    /// time range (by when they fired).
    #[graphql(complexity = "first.unwrap_or(20).clamp(0, 100) as usize * child_complexity")]
    async fn sla_events(
        &self,
        ctx: &Context<'_>,
        workspace_id: ID,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, SlaEvent>> {
        let v = auth(ctx).viewer()?;
        let db = &state(ctx).db;
        let ws = v
            .scope
            .workspace(db, decode(Kind::Workspace, &workspace_id)?)
            .await?;
        let page = PageRequest::parse(first, after.as_deref())?;
        let mut q = v
            .scope
            .select::<sla_event::Entity>()
            .filter(sla_event::Column::WorkspaceId.eq(ws.id));
        if let Some(f) = from {
            q = q.filter(sla_event::Column::FiredAt.gte(f));
        }
        if let Some(t) = to {
            q = q.filter(sla_event::Column::FiredAt.lt(t));
        }
        keyset(
            db,
            q,
            sla_event::Column::Id,
            page,
            Order::NewestFirst,
            |e| e.id,
            SlaEvent,
        )
        .await
    }
}

#[derive(Default)]
pub struct SlaMutation;

#[Object]
impl SlaMutation {
    /// Opening hours and holidays of a client, for business-hours targets.
    /// OWNER or ADMIN.
    async fn create_business_calendar(
        &self,
        ctx: &Context<'_>,
        input: CreateBusinessCalendarInput,
    ) -> ApiResult<BusinessCalendar> {
        let v = auth(ctx).viewer()?;
        v.require_manager()?;
        let name = Name::parse("name", &input.name)?;
        ApiError::at_most(
            "weeklyHours",
            input.weekly_hours.len(),
            70,
            "opening periods",
        )?;
        ApiError::at_most("holidays", input.holidays.len(), 1000, "holidays")?;
        let periods: Vec<StoredPeriod> = input
            .weekly_hours
            .iter()
            .map(|p| {
                let day = match p.day.to_uppercase().as_str() {
                    "MONDAY" => Weekday::Monday,
                    "TUESDAY" => Weekday::Tuesday,
                    "WEDNESDAY" => Weekday::Wednesday,
                    "THURSDAY" => Weekday::Thursday,
                    "FRIDAY" => Weekday::Friday,
                    "SATURDAY" => Weekday::Saturday,
                    "SUNDAY" => Weekday::Sunday,
                    other => {
                        return Err(ApiError::bad_input(
                            "weeklyHours",
                            format!("unknown day {other:?}"),
                        ));
                    }
                };
                Ok(StoredPeriod {
                    day: day.name().into(),
                    opens: p.opens.clone(),
                    closes: p.closes.clone(),
                })
            })
            .collect::<ApiResult<_>>()?;
        let holidays: Vec<StoredHoliday> = input
            .holidays
            .iter()
            .map(|h| StoredHoliday {
                date: h.date.clone(),
                month: h.month.map(|m| m.clamp(0, 99) as u32),
                day: h.day.map(|d| d.clamp(0, 99) as u32),
                name: h.name.clone(),
            })
            .collect();
        if periods.is_empty() {
            // Never open: a business-hours policy on it would give no
            // deadline at all, silently.
            return Err(ApiError::bad_input(
                "weeklyHours",
                "give at least one opening period",
            ));
        }
        if let Some(n) = holidays
            .iter()
            .filter_map(|h| h.name.as_deref())
            .find(|n| n.chars().count() > Name::MAX || n.contains(char::is_control))
        {
            return Err(ApiError::bad_input(
                "holidays",
                format!(
                    "a holiday's name is at most {} characters, none of them control characters: {:?}",
                    Name::MAX,
                    n.chars().take(40).collect::<String>()
                ),
            ));
        }
        // Checked by building it: bad times, days, dates and zones are refused here.
        let cal = calendar(&input.timezone, &periods, &holidays)?;
        let st = state(ctx);
        let txn = v.scope.begin(&st.db).await?;
        let ws = v
            .scope
            .workspace(&txn, decode(Kind::Workspace, &input.workspace_id)?)
            .await?;
        let now = Utc::now();
        let c = business_calendar::ActiveModel {
            id: Set(Uuid::now_v7()),
            agency_id: Set(v.agency_id),
            workspace_id: Set(ws.id),
            name: Set(name.into_string()),
            timezone: Set(cal.tz().name().to_string()),
            weekly_hours: Set(json!(periods)),
            holidays: Set(json!(holidays)),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await?;
        AuditEvent::new("createBusinessCalendar")
            .workspace(ws.id)
            .by(&txn, v)
            .await?;
        txn.commit().await?;
        Ok(BusinessCalendar(c))
    }

    /// Adds a policy at the end of the match order. OWNER or ADMIN.
    async fn create_sla_policy(
        &self,
        ctx: &Context<'_>,
        input: CreateSlaPolicyInput,
    ) -> ApiResult<SlaPolicy> {
        let v = auth(ctx).viewer()?;
        v.require_manager()?;
        let name = Name::parse("name", &input.name)?;
        let conditions = input.conditions.to_domain()?;
        let targets = input.targets.to_domain()?;
        let warn = warn_percent(input.warn_at_percent)?;
        let st = state(ctx);
        let txn = v.scope.begin(&st.db).await?;
        let ws = v
            .scope
            .workspace(&txn, decode(Kind::Workspace, &input.workspace_id)?)
            .await?;
        let calendar_id = match &input.calendar_id {
            Some(id) => Some(calendar_in(v, &txn, ws.id, id).await?),
            None if input.business_hours => {
                return Err(ApiError::bad_input(
                    "calendarId",
                    "business hours need a calendar",
                ));
            }
            None => None,
        };
        lock_policies(&txn, ws.id).await?;
        let last = next_position(&txn, ws.id).await?;
        let now = Utc::now();
        let p = sla_policy::ActiveModel {
            id: Set(Uuid::now_v7()),
            agency_id: Set(v.agency_id),
            workspace_id: Set(ws.id),
            name: Set(name.into_string()),
            position: Set(last),
            is_default: Set(input.is_default),
            conditions: Set(json!(conditions)),
            targets: Set(json!(targets)),
            business_hours: Set(input.business_hours),
            calendar_id: Set(calendar_id),
            warn_at_percent: Set(warn),
            escalation: Set(escalation_json(v, &txn, ws.id, &input.escalation).await?),
            created_at: Set(now),
            updated_at: Set(now),
            deleted_at: Set(None),
        }
        .insert(&txn)
        .await?;
        if p.is_default {
            clear_default(&txn, ws.id, p.id).await?;
        }
        AuditEvent::new("createSlaPolicy")
            .workspace(ws.id)
            .details(json!({ "name": p.name, "default": p.is_default }))
            .by(&txn, v)
            .await?;
        txn.commit().await?;
        Ok(SlaPolicy(p))
    }

    /// Changes a policy: its targets for conversations opened from now on,
    /// its escalation at every breach from now on. OWNER or ADMIN.
    async fn update_sla_policy(
        &self,
        ctx: &Context<'_>,
        input: UpdateSlaPolicyInput,
    ) -> ApiResult<SlaPolicy> {
        let v = auth(ctx).viewer()?;
        v.require_manager()?;
        let st = state(ctx);
        let txn = v.scope.begin(&st.db).await?;
        let current = locked_policy(v, &txn, &input.id).await?;
        let ws = current.workspace_id;
        let mut am = current.clone().into_active_model();
        if let Some(n) = &input.name {
            am.name = Set(Name::parse("name", n)?.into_string());
        }
        if let Some(c) = &input.conditions {
            am.conditions = Set(json!(c.to_domain()?));
        }
        if let Some(t) = input.targets {
            am.targets = Set(json!(t.to_domain()?));
        }
        if let Some(w) = input.warn_at_percent {
            am.warn_at_percent = Set(warn_percent(w)?);
        }
        if let Some(id) = &input.calendar_id {
            am.calendar_id = Set(Some(calendar_in(v, &txn, ws, id).await?));
        }
        if let Some(b) = input.business_hours {
            let has_calendar = input.calendar_id.is_some() || current.calendar_id.is_some();
            if b && !has_calendar {
                return Err(ApiError::bad_input(
                    "calendarId",
                    "business hours need a calendar",
                ));
            }
            am.business_hours = Set(b);
        }
        if let Some(d) = input.is_default {
            am.is_default = Set(d);
            if current.is_default && !d {
                // Back among the ordered ones: last, not on another's place.
                am.position = Set(next_position(&txn, ws).await?);
            }
        }
        if let Some(e) = &input.escalation {
            am.escalation = Set(escalation_json(v, &txn, ws, e).await?);
        }
        am.updated_at = Set(Utc::now());
        let p = am.update(&txn).await?;
        if p.is_default {
            clear_default(&txn, ws, p.id).await?;
        }
        AuditEvent::new("updateSlaPolicy")
            .workspace(ws)
            .details(json!({ "name": p.name }))
            .by(&txn, v)
            .await?;
        txn.commit().await?;
        Ok(SlaPolicy(p))
    }

    /// Sets the match order of a workspace's policies. OWNER or ADMIN.
    async fn reorder_sla_policies(
        &self,
        ctx: &Context<'_>,
        input: ReorderSlaPoliciesInput,
    ) -> ApiResult<Vec<SlaPolicy>> {
        let v = auth(ctx).viewer()?;
        v.require_manager()?;
        let st = state(ctx);
        let txn = v.scope.begin(&st.db).await?;
        let ws = v
            .scope
            .workspace(&txn, decode(Kind::Workspace, &input.workspace_id)?)
            .await?;
        lock_policies(&txn, ws.id).await?;
        // The whole order, or none: a policy left out would keep its old
        // place, shared with one of those listed.
        let ordered: std::collections::HashSet<Uuid> = sla_policy::Entity::find()
            .filter(sla_policy::Column::WorkspaceId.eq(ws.id))
            .filter(sla_policy::Column::DeletedAt.is_null())
            .filter(sla_policy::Column::IsDefault.eq(false))
            .all(&txn)
            .await?
            .into_iter()
            .map(|p| p.id)
            .collect();
        let mut out = Vec::with_capacity(input.policy_ids.len());
        let mut seen = std::collections::HashSet::new();
        let whole = || {
            ApiError::bad_input(
                "policyIds",
                "list each policy of this workspace but the default once, every one of them",
            )
        };
        if input.policy_ids.len() != ordered.len() {
            return Err(whole());
        }
        for (i, id) in input.policy_ids.iter().enumerate() {
            let p = policy_in(v, &txn, id).await?;
            if !ordered.contains(&p.id) || !seen.insert(p.id) {
                return Err(whole());
            }
            let mut am = p.into_active_model();
            am.position = Set(i as i32);
            am.updated_at = Set(Utc::now());
            out.push(SlaPolicy(am.update(&txn).await?));
        }
        AuditEvent::new("reorderSlaPolicies")
            .workspace(ws.id)
            .by(&txn, v)
            .await?;
        txn.commit().await?;
        Ok(out)
    }

    /// Retires a policy; conversations it already covers keep their
    /// deadlines. OWNER or ADMIN.
    async fn delete_sla_policy(
        &self,
        ctx: &Context<'_>,
        input: DeleteSlaPolicyInput,
    ) -> ApiResult<DeleteSlaPolicyPayload> {
        let v = auth(ctx).viewer()?;
        v.require_manager()?;
        let st = state(ctx);
        let txn = v.scope.begin(&st.db).await?;
        let p = locked_policy(v, &txn, &input.id).await?;
        let ws = p.workspace_id;
        let mut am = p.into_active_model();
        am.deleted_at = Set(Some(Utc::now()));
        am.is_default = Set(false);
        am.update(&txn).await?;
        AuditEvent::new("deleteSlaPolicy")
            .workspace(ws)
            .by(&txn, v)
            .await?;
        txn.commit().await?;
        Ok(DeleteSlaPolicyPayload {
            deleted_policy_id: input.id,
        })
    }
}

/// Policy `id`, read again once its workspace's policies are locked
/// ([`lock_policies`]): one deleted or changed meanwhile by another member
/// is seen as it now is (an update read before a deletion would otherwise
/// make the deleted policy the default, and clear the real one).
async fn locked_policy(
    v: &Viewer,
    txn: &DatabaseTransaction,
    id: &ID,
) -> ApiResult<sla_policy::Model> {
    let ws = policy_in(v, txn, id).await?.workspace_id;
    lock_policies(txn, ws).await?;
    policy_in(v, txn, id).await
}

/// Serialises changes to a workspace's policy order (positions and the
/// default): two at once read the same last position and shared it.
async fn lock_policies(txn: &DatabaseTransaction, workspace: Uuid) -> ApiResult<()> {
    rapport_store::locks::for_update(rapport_store::entities::workspace::Entity::find_by_id(
        workspace,
    ))
    .one(txn)
    .await?;
    Ok(())
}

/// The place after the workspace's last policy.
async fn next_position(txn: &DatabaseTransaction, workspace: Uuid) -> ApiResult<i32> {
    Ok(sla_policy::Entity::find()
        .filter(sla_policy::Column::WorkspaceId.eq(workspace))
        .order_by_desc(sla_policy::Column::Position)
        .one(txn)
        .await?
        .map_or(0, |p| p.position + 1))
}
