use sea_orm::entity::prelude::*;

/// The outbox: one row per event per subscription, retried until delivered.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_deliveries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub agency_id: Uuid,
    pub subscription_id: Uuid,
    pub event_type: String,
    /// Unique per subscription: the same event is never queued twice.
    pub idempotency_key: String,
    pub payload: Json,
    /// PENDING, DELIVERED or FAILED (gave up).
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTimeUtc,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
