//! Indexes and rollup functions for paths that read whole tables:
//!
//! - removing a member sets its replies' `sent_by_membership_id` to null:
//!   without an index on that column, a scan of every message;
//! - the SLA timer rebuild walks open conversations with a deadline in id
//!   order: without an index, every conversation of every tenant;
//! - the webhook deliverer takes a subscription's due deliveries: without
//!   an index, its whole delivery history;
//! - the rollup functions recounting a message's slot, and counting a
//!   dirty conversation slot, keyed rows by workspace alone, which no
//!   index starts with: they now give the agency too (see
//!   `m20261128_000006_report_rollups`).
//!
//! Indexes are built online (see `later::create_index_online`).

use crate::later::{create_index_online, drop_index_online};
use crate::m20261128_000006_report_rollups::{
    recount_deleted_sql, recount_updated_sql, refresh_slots_counting,
};
use crate::m20261206_000010_agent_opened_threads::COUNTED;
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261206_000011_hot_paths"
    }
}

const INDEXES: &[(&str, &str)] = &[
    (
        "ix_messages_sent_by",
        "messages (sent_by_membership_id) WHERE sent_by_membership_id IS NOT NULL",
    ),
    (
        "ix_conversations_running",
        "conversations (status, id) WHERE due_at IS NOT NULL",
    ),
    (
        "ix_webhook_deliveries_subscription_due",
        "webhook_deliveries (subscription_id, status, next_attempt_at)",
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for (name, on) in INDEXES {
            create_index_online(m, name, on).await?;
        }
        if m.get_database_backend() == DbBackend::Postgres {
            let db = m.get_connection();
            db.execute_unprepared(&recount_updated_sql()).await?;
            db.execute_unprepared(&recount_deleted_sql()).await?;
            db.execute_unprepared(&refresh_slots_counting(COUNTED))
                .await?;
        }
        Ok(())
    }

    /// The functions stay as they are: they count the same rows, only
    /// faster.
    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for (name, _) in INDEXES.iter().rev() {
            drop_index_online(m, name).await?;
        }
        Ok(())
    }

    /// `CONCURRENTLY` cannot run in a transaction.
    fn use_transaction(&self) -> Option<bool> {
        Some(false)
    }
}
