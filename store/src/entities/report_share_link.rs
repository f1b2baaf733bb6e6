use sea_orm::entity::prelude::*;

/// A signed, expiring, revocable link to one workspace's printable report.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "report_share_links")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub agency_id: Uuid,
    pub workspace_id: Uuid,
    pub period_from: DateTimeUtc,
    pub period_to: DateTimeUtc,
    /// HOUR, DAY or WEEK.
    pub granularity: String,
    pub timezone: String,
    pub expires_at: DateTimeUtc,
    pub revoked_at: Option<DateTimeUtc>,
    pub created_by_membership_id: Option<Uuid>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
