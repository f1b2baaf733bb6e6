//! The change feed (PostgreSQL only): every committed write to an agency's
//! rows sends `NOTIFY rapport_changes, '<agency id>'`, whatever wrote it
//! (API, worker, a migration, an operator's psql). The API's response
//! cache listens and forgets that agency's answers. A notification is sent
//! only when its transaction commits, and listeners receive them in commit
//! order, so a cache that has seen a marker of its own sent after a request
//! arrived has seen every change committed before it (see
//! `api/src/response_cache`).
//!
//! Statement-level triggers with transition tables: one notification per
//! agency and statement (PostgreSQL folds repeats within a transaction), not
//! one function call per row, so a 160-message ingestion batch pays a few
//! calls. `users` rows belong to no agency: a change notifies the agencies
//! the user is a member of. Sessions are not watched: authentication reads
//! them on every request before the cache is consulted.
//!
//! TRUNCATE notifies `*`: every agency's answers are dropped.
//!
//! A table added later must get [`watch`] in its own migration; a test
//! (`tests/response_cache.rs`) fails when a table with `agency_id` has no
//! trigger. Tables whose rows never change agency (none does) are watched
//! through their new rows on UPDATE. Missing a change would at worst serve
//! an answer until it expires (`RAPPORT_RESPONSE_CACHE_MS`).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000013_change_feed"
    }
}

/// The channel the API listens on.
pub const CHANGE_CHANNEL: &str = "rapport_changes";

/// The tables holding agency rows when this migration was written (frozen
/// here: a later table does not exist yet when this runs on a fresh
/// database, and is watched by its own migration).
const AGENCY_TABLES: &[&str] = &[
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
    "teams",
    "team_members",
    "reply_refusals",
    "report_share_links",
    "report_message_slots",
    "report_sla_slots",
    "report_conversation_slots",
    "report_dirty_slots",
];

const FUNCTIONS: &str = "
CREATE OR REPLACE FUNCTION rapport_notify_agency_rows() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE a uuid;
BEGIN
  FOR a IN SELECT DISTINCT agency_id FROM changed LOOP
    PERFORM pg_notify('rapport_changes', a::text);
  END LOOP;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION rapport_notify_agencies() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE a uuid;
BEGIN
  FOR a IN SELECT DISTINCT id FROM changed LOOP
    PERFORM pg_notify('rapport_changes', a::text);
  END LOOP;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION rapport_notify_agency_row() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('rapport_changes', NEW.agency_id::text);
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION rapport_notify_everyone() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('rapport_changes', '*');
  RETURN NULL;
END $$;

-- SECURITY DEFINER: under the application role row-level security would
-- hide the memberships of other agencies, whose answers show this user too.
-- The search path is the schema the tables are in, then pg_temp (last, so
-- a temporary table cannot stand in for memberships).
CREATE OR REPLACE FUNCTION rapport_notify_user_agencies() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
DECLARE a uuid;
BEGIN
  FOR a IN SELECT DISTINCT m.agency_id FROM memberships m
           WHERE m.user_id IN (SELECT id FROM changed) LOOP
    PERFORM pg_notify('rapport_changes', a::text);
  END LOOP;
  RETURN NULL;
END $$;
";

/// Three statement triggers on `table` calling `function`, which reads the
/// rows changed as `changed`, and one on TRUNCATE notifying everyone.
pub async fn watch(m: &SchemaManager<'_>, table: &str, function: &str) -> Result<(), DbErr> {
    if m.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    let mut sql = String::new();
    for (event, rows) in [("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")] {
        let name = format!("rapport_changes_{}", event.to_ascii_lowercase());
        sql.push_str(&format!(
            "DROP TRIGGER IF EXISTS {name} ON {table};
             CREATE TRIGGER {name} AFTER {event} ON {table}
               REFERENCING {rows} TABLE AS changed
               FOR EACH STATEMENT EXECUTE FUNCTION {function}();"
        ));
    }
    sql.push_str(&format!(
        "DROP TRIGGER IF EXISTS rapport_changes_truncate ON {table};
         CREATE TRIGGER rapport_changes_truncate AFTER TRUNCATE ON {table}
           FOR EACH STATEMENT EXECUTE FUNCTION rapport_notify_everyone();"
    ));
    m.get_connection()
        .execute_unprepared(&sql)
        .await
        .map(|_| ())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = m.get_connection();
        let schema: String = db
            .query_one_raw(sea_orm_migration::sea_orm::Statement::from_string(
                DbBackend::Postgres,
                "SELECT quote_ident(current_schema()) AS s",
            ))
            .await?
            .ok_or_else(|| DbErr::Custom("no current schema".into()))?
            .try_get("", "s")?;
        db.execute_unprepared(&FUNCTIONS.replace("{schema}", &schema))
            .await?;
        watch(m, "agencies", "rapport_notify_agencies").await?;
        for table in AGENCY_TABLES {
            watch(m, table, "rapport_notify_agency_rows").await?;
        }
        // The webhook's raw event arrives PENDING, which no query shows
        // (dead letters are FAILED): its insert notifies nothing, so the
        // receiver's commit does not take the notification lock. A row-level
        // trigger whose WHEN is false costs no function call.
        m.get_connection()
            .execute_unprepared(
                "DROP TRIGGER rapport_changes_insert ON raw_events;
                 CREATE TRIGGER rapport_changes_insert AFTER INSERT ON raw_events
                   FOR EACH ROW WHEN (NEW.status <> 'PENDING')
                   EXECUTE FUNCTION rapport_notify_agency_row();",
            )
            .await?;
        watch(m, "users", "rapport_notify_user_agencies").await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        // Dropping the functions drops their triggers with them.
        m.get_connection()
            .execute_unprepared(
                "DROP FUNCTION IF EXISTS rapport_notify_agency_rows() CASCADE;
                 DROP FUNCTION IF EXISTS rapport_notify_agencies() CASCADE;
                 DROP FUNCTION IF EXISTS rapport_notify_agency_row() CASCADE;
                 DROP FUNCTION IF EXISTS rapport_notify_everyone() CASCADE;
                 DROP FUNCTION IF EXISTS rapport_notify_user_agencies() CASCADE;",
            )
            .await
            .map(|_| ())
    }
}
