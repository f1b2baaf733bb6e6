use sea_orm::entity::prelude::*;

/// One warning, breach or met promise, recorded once per conversation,
/// target, kind and clock cycle (a unique key).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "sla_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub agency_id: Uuid,
    pub workspace_id: Uuid,
    pub conversation_id: Uuid,
    /// SLA_WARNING, SLA_BREACHED or SLA_MET.
    pub kind: String,
    /// FIRST_RESPONSE, NEXT_RESPONSE or RESOLUTION.
    pub target: String,
    pub cycle: i32,
    pub deadline_at: DateTimeUtc,
    pub fired_at: DateTimeUtc,
    /// Fire time minus deadline (breaches), in milliseconds.
    pub lateness_ms: i64,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
