use sea_orm::entity::prelude::*;

/// A source of mentions for one workspace. Secrets are sealed (AEAD).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "channels")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub agency_id: Uuid,
    pub workspace_id: Uuid,
    pub kind: String,
    pub name: String,
    pub external_account_id: String,
    pub secret_ciphertext: Option<Vec<u8>>,
    pub verify_token_ciphertext: Option<Vec<u8>>,
    pub feed_url: Option<String>,
    pub poll_interval_seconds: Option<i32>,
    /// Publishing credentials (X user token, Meta page token), sealed.
    pub access_token_ciphertext: Option<Vec<u8>>,
    /// GENERIC: where replies are POSTed.
    pub callback_url: Option<String>,
    /// ACTIVE, PAUSED or DISCONNECTED.
    pub status: String,
    /// Adapter state, e.g. a feed's ETag and Last-Modified.
    pub state: Json,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
