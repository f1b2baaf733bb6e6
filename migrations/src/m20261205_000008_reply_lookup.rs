//! Out-of-order delivery: an index for finding the replies to a message on
//! its channel, so that a message arriving after its replies joins their
//! conversation (partial: most messages answer nothing); and a thread's
//! index in publish order, since a message may be stored after its replies
//! (it replaces the one in storage order). Plain `CREATE INDEX`: on
//! PostgreSQL, writes to `messages` wait while the indexes are built
//! (migrations run in a transaction, which `CONCURRENTLY` cannot).

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
        let db = m.get_connection();
        for sql in [
            "CREATE INDEX ix_messages_replies ON messages (channel_id, in_reply_to_external_id) \
             WHERE in_reply_to_external_id IS NOT NULL",
            "CREATE INDEX ix_messages_thread ON messages (agency_id, conversation_id, published_at, id)",
            "DROP INDEX ix_messages_conversation",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        for sql in [
            "CREATE INDEX ix_messages_conversation ON messages (agency_id, conversation_id, id)",
            "DROP INDEX ix_messages_thread",
            "DROP INDEX ix_messages_replies",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }
}
