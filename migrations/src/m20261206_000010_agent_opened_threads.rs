//! `conversations.opened_by_agent`: a private thread that `takeOffline`
//! opened (the customer has not written in it yet) is no conversation the
//! customer opened, and its "first response" is the public invitation. The
//! reports leave such threads out of conversations opened, response times
//! and unhappy openings; on PostgreSQL the slot rollup's function counts
//! them out too (their slots are counted again).

use crate::m20261128_000006_report_rollups::{refresh_slots_counting, refresh_slots_sql};
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261206_000010_agent_opened_threads"
    }
}

/// What the rollup counts out.
pub(crate) const COUNTED: &str = "AND NOT c.opened_by_agent";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Alias::new("conversations"))
                .add_column(
                    ColumnDef::new(Alias::new("opened_by_agent"))
                        .boolean()
                        .not_null()
                        .default(false),
                )
                .to_owned(),
        )
        .await?;
        if m.get_database_backend() == DbBackend::Postgres {
            let db = m.get_connection();
            db.execute_unprepared(&refresh_slots_counting(COUNTED))
                .await?;
            // Threads opened before this column was there stay counted:
            // nothing told them apart.
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() == DbBackend::Postgres {
            m.get_connection()
                .execute_unprepared(&refresh_slots_sql())
                .await?;
        }
        m.alter_table(
            Table::alter()
                .table(Alias::new("conversations"))
                .drop_column(Alias::new("opened_by_agent"))
                .to_owned(),
        )
        .await
    }
}
