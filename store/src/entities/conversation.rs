use sea_orm::entity::prelude::*;

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
    pub priority_breakdown: Json,
    pub sentiment: Option<f64>,
    /// Sentiment of the first message: an unhappy start can be recovered.
    pub opening_sentiment: Option<f64>,
    pub assignee_membership_id: Option<Uuid>,
    pub sla_policy_id: Option<Uuid>,
    pub sla_targets: Option<Json>,
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
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
