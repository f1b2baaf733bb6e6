//! A customer may answer the brand's own published reply, which the
//! platform knows by the id publishing recorded: an index to find it per
//! channel (partial: only published outbound messages have one). Plain
//! `CREATE INDEX`, as in migration 8: on PostgreSQL, writes to `messages`
//! wait while it is built.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::ConnectionTrait;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261205_000009_published_reply_lookup"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.get_connection()
            .execute_unprepared(
                "CREATE INDEX ix_messages_platform_id ON messages (channel_id, platform_message_id) \
                 WHERE platform_message_id IS NOT NULL",
            )
            .await
            .map(|_| ())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.get_connection()
            .execute_unprepared("DROP INDEX ix_messages_platform_id")
            .await
            .map(|_| ())
    }
}
