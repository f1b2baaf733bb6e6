//! Reporting: the guard's refusals (a report counts them), report share
//! links, and the indexes the report's range scans use.

use crate::later::{fk, n};
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261128_000005_reporting"
    }
}

fn index(table: &str, name: &str, cols: &[&str]) -> IndexCreateStatement {
    let mut i = Index::create();
    i.name(format!("ix_{table}_{name}")).table(n(table));
    for c in cols {
        i.col(n(c));
    }
    i.to_owned()
}

/// Tenant tables this migration adds.
pub const TABLES: &[&str] = &["reply_refusals", "report_share_links"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(n("reply_refusals"))
                .col(pk_uuid(n("id")))
                .col(uuid(n("agency_id")))
                .col(uuid(n("workspace_id")))
                .col(uuid(n("conversation_id")))
                .col(uuid_null(n("membership_id")))
                .col(json_binary(n("codes")))
                .col(timestamp_with_time_zone(n("created_at")))
                .foreign_key(&mut fk("reply_refusals", "agency_id", "agencies"))
                .foreign_key(&mut fk("reply_refusals", "workspace_id", "workspaces"))
                .foreign_key(&mut fk(
                    "reply_refusals",
                    "conversation_id",
                    "conversations",
                ))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(n("report_share_links"))
                .col(pk_uuid(n("id")))
                .col(uuid(n("agency_id")))
                .col(uuid(n("workspace_id")))
                .col(timestamp_with_time_zone(n("period_from")))
                .col(timestamp_with_time_zone(n("period_to")))
                .col(text(n("granularity")))
                .col(text(n("timezone")))
                .col(timestamp_with_time_zone(n("expires_at")))
                .col(timestamp_with_time_zone_null(n("revoked_at")))
                .col(uuid_null(n("created_by_membership_id")))
                .col(timestamp_with_time_zone(n("created_at")))
                .foreign_key(&mut fk("report_share_links", "agency_id", "agencies"))
                .foreign_key(&mut fk("report_share_links", "workspace_id", "workspaces"))
                .to_owned(),
        )
        .await?;
        for i in [
            index(
                "reply_refusals",
                "workspace",
                &["agency_id", "workspace_id", "created_at"],
            ),
            index(
                "report_share_links",
                "workspace",
                &["agency_id", "workspace_id", "created_at"],
            ),
            index(
                "messages",
                "received",
                &["agency_id", "workspace_id", "direction", "received_at"],
            ),
            index(
                "conversations",
                "opened",
                &["agency_id", "workspace_id", "created_at"],
            ),
            index(
                "audit_log",
                "action",
                &["agency_id", "workspace_id", "action", "created_at"],
            ),
        ] {
            m.create_index(i).await?;
        }
        crate::later::protect(m, TABLES).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for (table, name) in [
            ("messages", "received"),
            ("conversations", "opened"),
            ("audit_log", "action"),
        ] {
            m.drop_index(
                Index::drop()
                    .name(format!("ix_{table}_{name}"))
                    .table(n(table))
                    .to_owned(),
            )
            .await?;
        }
        for table in TABLES {
            m.drop_table(Table::drop().table(n(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}
