//! Replaces `rapport_refresh_report_slots` (PostgreSQL) with the version
//! that deletes a slot's old rows before counting it again: the first one
//! failed on the primary key whenever a slot counted before was dirty again
//! (see `refresh_slots_sql`), leaving reports to read those slots from the
//! conversations and the dirty marks to pile up.

use crate::m20261128_000006_report_rollups::refresh_slots_sql;
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261201_000007_refresh_slots_fix"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() == DbBackend::Postgres {
            m.get_connection()
                .execute_unprepared(&refresh_slots_sql())
                .await?;
        }
        Ok(())
    }

    /// Nothing to undo: the previous function only differed by its bug.
    async fn down(&self, _m: &SchemaManager) -> Result<(), DbErr> {
        Ok(())
    }
}
