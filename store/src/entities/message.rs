use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "messages")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub agency_id: Uuid,
    pub workspace_id: Uuid,
    pub conversation_id: Uuid,
    pub channel_id: Uuid,
    pub author_id: Option<Uuid>,
    pub external_id: String,
    pub in_reply_to_external_id: Option<String>,
    /// INBOUND (customer) or OUTBOUND (agent reply).
    pub direction: String,
    pub visibility: String,
    pub body: String,
    /// Outbound replies: the body as the canned-reply guard compares it.
    pub masked_body: Option<String>,
    pub sentiment: Option<f64>,
    /// When the platform says it was posted.
    pub published_at: DateTimeUtc,
    /// When Rapport received it.
    pub received_at: DateTimeUtc,
    pub template_id: Option<Uuid>,
    pub sent_by_membership_id: Option<Uuid>,
    pub delivery_status: Option<String>,
    pub delivery_error: Option<String>,
    /// FAILED after an attempt whose answer was lost: it may have published.
    pub delivery_unsure: bool,
    /// Outbound: publishing attempts so far, and when the next is due.
    pub delivery_attempts: i32,
    pub next_delivery_at: Option<DateTimeUtc>,
    pub delivered_at: Option<DateTimeUtc>,
    /// Outbound: the id the platform gave the published reply.
    pub platform_message_id: Option<String>,
    /// Outbound: ACKNOWLEDGE, TAKE_OFFLINE, RESOLVE, CLOSE_THE_LOOP, THANKS.
    pub intent: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
