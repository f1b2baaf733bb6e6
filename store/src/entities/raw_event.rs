use sea_orm::entity::prelude::*;

/// An inbound delivery exactly as received: persisted before anything else,
/// so nothing is lost whatever fails after.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "raw_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub agency_id: Uuid,
    pub channel_id: Uuid,
    pub workspace_id: Uuid,
    /// SHA-256 of the body: a platform's retry of the same delivery.
    pub dedup_key: String,
    pub headers: Json,
    pub body: Vec<u8>,
    /// PENDING, PROCESSED or FAILED (a dead letter, with `error`).
    pub status: String,
    pub error: Option<String>,
    pub processed_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
