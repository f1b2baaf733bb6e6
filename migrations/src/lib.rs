//! Schema migrations for both backends (PostgreSQL and SQLite).

pub use sea_orm_migration::prelude::*;

mod later;
mod m20261128_000001_initial;
mod m20261128_000002_postgres_rls;
mod m20261128_000003_reply_delivery;
mod m20261128_000004_teams;
mod m20261128_000005_reporting;
mod m20261128_000006_report_rollups;
mod m20261201_000007_refresh_slots_fix;
mod m20261205_000008_reply_lookup;
mod m20261205_000009_published_reply_lookup;
mod m20261206_000010_agent_opened_threads;
mod m20261206_000011_hot_paths;
mod m20261206_000012_reply_delivery_unsure;
mod m20261207_000013_change_feed;
mod m20261207_000014_outbound_due_index;
mod m20261207_000015_room_for_updates;
mod m20261207_000016_deleting_a_workspace;

pub use m20261207_000013_change_feed::CHANGE_CHANNEL;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261128_000001_initial::Migration),
            Box::new(m20261128_000002_postgres_rls::Migration),
            Box::new(m20261128_000003_reply_delivery::Migration),
            Box::new(m20261128_000004_teams::Migration),
            Box::new(m20261128_000005_reporting::Migration),
            Box::new(m20261128_000006_report_rollups::Migration),
            Box::new(m20261201_000007_refresh_slots_fix::Migration),
            Box::new(m20261205_000008_reply_lookup::Migration),
            Box::new(m20261205_000009_published_reply_lookup::Migration),
            Box::new(m20261206_000010_agent_opened_threads::Migration),
            Box::new(m20261206_000011_hot_paths::Migration),
            Box::new(m20261206_000012_reply_delivery_unsure::Migration),
            Box::new(m20261207_000013_change_feed::Migration),
            Box::new(m20261207_000014_outbound_due_index::Migration),
            Box::new(m20261207_000015_room_for_updates::Migration),
            Box::new(m20261207_000016_deleting_a_workspace::Migration),
        ]
    }
}

/// Tables holding one agency's data; each has an `agency_id` column.
/// PostgreSQL row-level security is enabled on exactly these.
pub const TENANT_TABLES: &[&str] = &[
    "agencies",
    "memberships",
    "membership_workspaces",
    "workspaces",
    "channels",
    "authors",
    "conversations",
    "messages",
    "reply_templates",
    "sla_policies",
    "business_calendars",
    "sla_events",
    "webhook_subscriptions",
    "webhook_deliveries",
    "raw_events",
    "audit_log",
];

/// Tenant tables added by later migrations, each protected the same way by
/// the migration that adds it.
pub const LATER_TENANT_TABLES: &[&str] = &[
    "teams",
    "team_members",
    "reply_refusals",
    "report_share_links",
    "report_message_slots",
    "report_sla_slots",
    // PostgreSQL only (SQLite reads the conversations themselves).
    "report_conversation_slots",
    "report_dirty_slots",
];

/// The role request-path transactions switch to on PostgreSQL so that
/// row-level security applies (superusers and table owners bypass it).
pub const APP_ROLE: &str = "rapport_app";
