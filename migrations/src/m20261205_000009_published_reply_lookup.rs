//! A customer may answer the brand's own published reply, which the
//! platform knows by the id publishing recorded: an index to find it per
//! channel (partial: only published outbound messages have one). Built
//! online (see `later::create_index_online`): ingestion goes on meanwhile.

use crate::later::{create_index_online, drop_index_online};
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261205_000009_published_reply_lookup"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        create_index_online(
            m,
            "ix_messages_platform_id",
            "messages (channel_id, platform_message_id) WHERE platform_message_id IS NOT NULL",
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        drop_index_online(m, "ix_messages_platform_id").await
    }

    /// `CONCURRENTLY` cannot run in a transaction.
    fn use_transaction(&self) -> Option<bool> {
        Some(false)
    }
}
