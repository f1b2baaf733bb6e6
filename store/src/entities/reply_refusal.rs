use sea_orm::entity::prelude::*;

/// A reply the canned-reply guard refused (its finding codes), kept so
/// reports can count them: the refused text itself is not stored.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "reply_refusals")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub agency_id: Uuid,
    pub workspace_id: Uuid,
    pub conversation_id: Uuid,
    pub membership_id: Option<Uuid>,
    pub codes: Json,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
