//! Replaces `rapport_mark_conversations_deleted` (PostgreSQL) with a version
//! that marks only the slots of workspaces that still exist. Deleting a
//! workspace, or its agency, deletes its conversations by cascade; the
//! first version then marked their slots dirty for the workspace being
//! deleted, which its foreign key refused, and so the whole delete failed.
//! A deleted workspace's rollups go with it (their keys cascade), so there
//! is nothing of it left to count again.

use crate::m20261128_000006_report_rollups::mark_deleted_sql;
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000016_deleting_a_workspace"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() == DbBackend::Postgres {
            m.get_connection()
                .execute_unprepared(&mark_deleted_sql(
                    " WHERE EXISTS (SELECT 1 FROM workspaces w WHERE w.id = o.workspace_id)",
                ))
                .await?;
        }
        Ok(())
    }

    /// Nothing to undo: the previous function only differed by its bug.
    async fn down(&self, _m: &SchemaManager) -> Result<(), DbErr> {
        Ok(())
    }
}
