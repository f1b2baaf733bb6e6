//! Out-of-order delivery: an index for finding the replies to a message on
//! its channel, so that a message arriving after its replies joins their
//! conversation (partial: most messages answer nothing); and a thread's
//! index in publish order, since a message may be stored after its replies
//! (it replaces the one in storage order). Built and dropped online (see
//! `later::create_index_online`): ingestion goes on meanwhile, and each
//! step may be run again if a later one failed.

use crate::later::{create_index_online, drop_index_online};
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261205_000008_reply_lookup"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        create_index_online(
            m,
            "ix_messages_replies",
            "messages (channel_id, in_reply_to_external_id) WHERE in_reply_to_external_id IS NOT NULL",
        )
        .await?;
        create_index_online(
            m,
            "ix_messages_thread",
            "messages (agency_id, conversation_id, published_at, id)",
        )
        .await?;
        drop_index_online(m, "ix_messages_conversation").await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        create_index_online(
            m,
            "ix_messages_conversation",
            "messages (agency_id, conversation_id, id)",
        )
        .await?;
        drop_index_online(m, "ix_messages_thread").await?;
        drop_index_online(m, "ix_messages_replies").await
    }

    /// `CONCURRENTLY` cannot run in a transaction.
    fn use_transaction(&self) -> Option<bool> {
        Some(false)
    }
}
