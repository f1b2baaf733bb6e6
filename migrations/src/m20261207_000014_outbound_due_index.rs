//! The publisher's index of replies due for delivery held an entry for
//! every message, inbound ones too (their `delivery_status` is null): one
//! more index write on every ingested message, for rows no delivery query
//! reads. It is now partial, on outbound replies alone. The publisher's
//! filters (`delivery_status = ...`) imply the index's condition, on
//! PostgreSQL and SQLite alike, so they still use it.
//!
//! Built online under a new name before the old one is dropped (see
//! `later::create_index_online`).

use crate::later::{create_index_online, drop_index_online};
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000014_outbound_due_index"
    }
}

const FULL: (&str, &str) = (
    "ix_messages_delivery_due",
    "messages (delivery_status, next_delivery_at)",
);
const PARTIAL: (&str, &str) = (
    "ix_messages_outbound_due",
    "messages (delivery_status, next_delivery_at) WHERE delivery_status IS NOT NULL",
);

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        create_index_online(m, PARTIAL.0, PARTIAL.1).await?;
        drop_index_online(m, FULL.0).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        create_index_online(m, FULL.0, FULL.1).await?;
        drop_index_online(m, PARTIAL.0).await
    }

    /// `CONCURRENTLY` cannot run in a transaction.
    fn use_transaction(&self) -> Option<bool> {
        Some(false)
    }
}
