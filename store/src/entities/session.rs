use sea_orm::entity::prelude::*;

/// A login session: one refresh-token family. Not under RLS, because a
/// refresh request arrives with nothing but the token.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "sessions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub agency_id: Uuid,
    pub user_id: Uuid,
    pub refresh_hash: String,
    pub previous_hash: Option<String>,
    pub expires_at: DateTimeUtc,
    pub last_used_at: DateTimeUtc,
    pub revoked_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
