//! Teams: named groups of members an SLA escalation can assign to (the
//! least-loaded member of the team). Tenant tables, with PostgreSQL
//! row-level security like the others.

use crate::later::{fk, n};
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migration;

/// Tenant tables this migration adds.
pub const TABLES: &[&str] = &["teams", "team_members"];

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261128_000004_teams"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(n("teams"))
                .col(pk_uuid(n("id")))
                .col(uuid(n("agency_id")))
                .col(text(n("name")))
                .col(timestamp_with_time_zone(n("created_at")))
                .col(timestamp_with_time_zone(n("updated_at")))
                .foreign_key(&mut fk("teams", "agency_id", "agencies"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_teams_name")
                .table(n("teams"))
                .col(n("agency_id"))
                .col(n("name"))
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(n("team_members"))
                .col(pk_uuid(n("id")))
                .col(uuid(n("agency_id")))
                .col(uuid(n("team_id")))
                .col(uuid(n("membership_id")))
                .col(timestamp_with_time_zone(n("created_at")))
                .foreign_key(&mut fk("team_members", "agency_id", "agencies"))
                .foreign_key(&mut fk("team_members", "team_id", "teams"))
                .foreign_key(&mut fk("team_members", "membership_id", "memberships"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_team_members_member")
                .table(n("team_members"))
                .col(n("team_id"))
                .col(n("membership_id"))
                .unique()
                .to_owned(),
        )
        .await?;
        // Least-loaded: open conversations per assignee.
        m.create_index(
            Index::create()
                .name("ix_conversations_assignee")
                .table(n("conversations"))
                .col(n("assignee_membership_id"))
                .col(n("status"))
                .to_owned(),
        )
        .await?;
        crate::later::protect(m, TABLES).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("ix_conversations_assignee")
                .table(n("conversations"))
                .to_owned(),
        )
        .await?;
        m.drop_table(Table::drop().table(n("team_members")).to_owned())
            .await?;
        m.drop_table(Table::drop().table(n("teams")).to_owned())
            .await
    }
}
