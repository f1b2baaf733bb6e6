//! Room on each page for the rows ingestion updates: every message that
//! joins a conversation updates it, and every delivery refreshes its
//! author's follower count. On full pages (the default fill factor, 100)
//! each such update moved the row to another page and added an entry to
//! every one of the table's indexes (ten on conversations): a quarter of
//! ingestion's write-ahead log. With free space on the page, PostgreSQL
//! keeps the new version beside the old one and leaves the indexes alone
//! (a heap-only update) whenever no indexed column changed.
//!
//! Measured in the ingest benchmark (BENCHMARKS.md, thirteenth sitting):
//! heap-only updates of conversations 18 % → 71 %, of authors 34 % → 99 %,
//! the log 25 % smaller, PostgreSQL's CPU per message 6 % lower, and the
//! webhook's p99 under a steady 5,000 messages/s shorter in every
//! interleaved run where the host's writeback was spread (1 MB).
//! Authors are small and updated on nearly every delivery: half a page
//! free; conversations are wider: 30 %.
//!
//! The setting shapes pages written from now on; existing full pages
//! stay as they are until rewritten. `ALTER TABLE ... SET` takes a lock
//! that lets reads and writes go on. SQLite has no such setting.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000015_room_for_updates"
    }
}

/// `(table, fill factor in percent)`.
const FILL: &[(&str, u8)] = &[("conversations", 70), ("authors", 50)];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        each_table(m, |table, fill| {
            format!("ALTER TABLE {table} SET (fillfactor = {fill})")
        })
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        each_table(m, |table, _| {
            format!("ALTER TABLE {table} RESET (fillfactor)")
        })
        .await
    }
}

/// Runs `sql(table, fill)` for each table of [`FILL`], on PostgreSQL only.
async fn each_table(m: &SchemaManager<'_>, sql: impl Fn(&str, u8) -> String) -> Result<(), DbErr> {
    if m.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    for (table, fill) in FILL {
        m.get_connection()
            .execute_unprepared(&sql(table, *fill))
            .await?;
    }
    Ok(())
}
