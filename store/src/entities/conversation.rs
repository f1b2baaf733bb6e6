use crate::sla::Snapshot;
use rapport_domain::priority::Breakdown;
use sea_orm::FromJsonQueryResult;
use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "conversations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub agency_id: Uuid,
    pub workspace_id: Uuid,
    pub channel_id: Uuid,
    pub author_id: Uuid,
    pub parent_conversation_id: Option<Uuid>,
    /// OPEN, PENDING_CUSTOMER, RESOLVED or CLOSED.
    pub status: String,
    pub visibility: String,
    pub priority: String,
    pub priority_score: f64,
    #[sea_orm(column_type = "JsonBinary")]
    pub priority_breakdown: StoredBreakdown,
    pub sentiment: Option<f64>,
    /// Sentiment of the first message: an unhappy start can be recovered.
    pub opening_sentiment: Option<f64>,
    pub assignee_membership_id: Option<Uuid>,
    pub sla_policy_id: Option<Uuid>,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub sla_targets: Option<Snapshot>,
    pub first_response_due_at: Option<DateTimeUtc>,
    pub next_response_due_at: Option<DateTimeUtc>,
    pub resolution_due_at: Option<DateTimeUtc>,
    /// The earliest deadline still running (null: none).
    pub due_at: Option<DateTimeUtc>,
    pub first_responded_at: Option<DateTimeUtc>,
    pub resolved_at: Option<DateTimeUtc>,
    /// First receipt to first reply on the policy's business clock, in
    /// seconds (kept with `first_responded_at` for reports).
    pub first_response_business_s: Option<i64>,
    /// Opening to resolution on the business clock, in seconds.
    pub resolution_business_s: Option<i64>,
    pub last_customer_message_at: DateTimeUtc,
    pub recovered: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// A private thread `takeOffline` opened before the customer wrote in
    /// it: not a conversation the customer opened, left out of reports.
    pub opened_by_agent: bool,
}

/// The score of the conversation's most urgent customer message, part by
/// part, stored as JSON and read straight into its type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, FromJsonQueryResult)]
#[serde(transparent)]
pub struct StoredBreakdown(pub Breakdown);

impl StoredBreakdown {
    /// Stands in for a breakdown a page did not read (see
    /// `pages::Wanted`); never shown.
    pub fn unread() -> Self {
        StoredBreakdown(Breakdown {
            sentiment: 0.0,
            reach: 0.0,
            visibility: 0.0,
            urgency: 0.0,
            urgency_matches: Vec::new(),
            score: 0.0,
            level: rapport_domain::priority::PriorityLevel::Low,
        })
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The customer: lets a page of conversations load its authors in the
    /// same query.
    #[sea_orm(
        belongs_to = "super::author::Entity",
        from = "Column::AuthorId",
        to = "super::author::Column::Id"
    )]
    Author,
}

impl Related<super::author::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Author.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
