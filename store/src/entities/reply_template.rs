use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "reply_templates")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub agency_id: Uuid,
    /// The client workspace whose voice this is.
    pub workspace_id: Option<Uuid>,
    pub name: String,
    pub body: String,
    /// `[{"name","guidance","minLength"}]`
    pub slots: Json,
    pub channel_kinds: Json,
    pub enabled_workspace_ids: Json,
    /// ACKNOWLEDGE, TAKE_OFFLINE, RESOLVE, CLOSE_THE_LOOP or THANKS.
    pub intent: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub archived_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
