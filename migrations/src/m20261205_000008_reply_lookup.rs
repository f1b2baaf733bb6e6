//! An index for finding the replies to a message on its channel, so that a
//! message arriving after its replies (out-of-order delivery) joins their
//! conversation. Partial: most messages answer nothing.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::ConnectionTrait;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261205_000008_reply_lookup"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // The same statement on both backends (sea-query has no partial
        // index builder).
        m.get_connection()
            .execute_unprepared(
                "CREATE INDEX ix_messages_replies ON messages (channel_id, in_reply_to_external_id) \
                 WHERE in_reply_to_external_id IS NOT NULL",
            )
            .await
            .map(|_| ())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.get_connection()
            .execute_unprepared("DROP INDEX ix_messages_replies")
            .await
            .map(|_| ())
    }
}
