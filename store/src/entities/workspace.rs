use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "workspaces")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub agency_id: Uuid,
    pub name: String,
    pub timezone: String,
    pub brand_keywords: Json,
    pub banned_phrases: Json,
    /// Words that raise a message's priority; empty: the defaults.
    pub urgency_keywords: Json,
    /// Canned-reply guard: similarity that counts as a repeat (null: 0.8).
    pub similarity_threshold: Option<f64>,
    /// Canned-reply guard: days of earlier replies compared (null: 30).
    pub duplicate_window_days: Option<i32>,
    pub archived_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
