use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "sla_policies")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub agency_id: Uuid,
    pub workspace_id: Uuid,
    pub name: String,
    /// Match order; the default policy applies when none matches.
    pub position: i32,
    pub is_default: bool,
    /// `rapport_domain::sla::Conditions` as JSON.
    pub conditions: Json,
    /// `rapport_domain::sla::Targets` as JSON.
    pub targets: Json,
    pub business_hours: bool,
    pub calendar_id: Option<Uuid>,
    pub warn_at_percent: i32,
    pub escalation: Json,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub deleted_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
