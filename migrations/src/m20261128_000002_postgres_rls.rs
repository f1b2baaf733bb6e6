//! PostgreSQL row-level security: the second wall behind the application's
//! tenancy scope. Request-path transactions `SET LOCAL ROLE rapport_app` and
//! set `rapport.agency_id`; under that role a row is visible or writable only
//! when its agency matches. Without the setting nothing is visible at all.
//! The connecting (owner) role keeps bypassing RLS for system paths such as
//! login lookups, migrations and worker rebuilds. SQLite has no RLS: a no-op.

use crate::{APP_ROLE, TENANT_TABLES};
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261128_000002_postgres_rls"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = m.get_connection();
        // Roles are cluster-wide: several databases (tests, deployments)
        // may race to create the same one, so both errors mean "exists".
        db.execute_unprepared(&format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                 CREATE ROLE {APP_ROLE} NOLOGIN;
               END IF;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
             END $$;
             DO $$ BEGIN
               IF NOT pg_has_role(current_user, '{APP_ROLE}', 'MEMBER') THEN
                 EXECUTE format('GRANT {APP_ROLE} TO %I', current_user);
               END IF;
             EXCEPTION WHEN unique_violation OR duplicate_object THEN NULL;
             END $$;
             GRANT USAGE ON SCHEMA public TO {APP_ROLE};
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP_ROLE};"
        ))
        .await?;
        for table in TENANT_TABLES {
            let key = if *table == "agencies" {
                "id"
            } else {
                "agency_id"
            };
            db.execute_unprepared(&format!(
                "ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
                 CREATE POLICY tenant_isolation ON {table} TO {APP_ROLE}
                   USING ({key} = NULLIF(current_setting('rapport.agency_id', true), '')::uuid)
                   WITH CHECK ({key} = NULLIF(current_setting('rapport.agency_id', true), '')::uuid);"
            ))
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        for table in TENANT_TABLES {
            m.get_connection()
                .execute_unprepared(&format!(
                    "DROP POLICY IF EXISTS tenant_isolation ON {table};
                     ALTER TABLE {table} DISABLE ROW LEVEL SECURITY;"
                ))
                .await?;
        }
        Ok(())
    }
}
