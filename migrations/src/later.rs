//! Helpers for migrations after the first: names, cascading foreign keys,
//! and the row-level-security wall every new tenant table gets.

use crate::APP_ROLE;
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

pub fn n(s: &str) -> Alias {
    Alias::new(s)
}

/// `from.col` references `to.id`, deleted with it.
pub fn fk(from: &str, col: &str, to: &str) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(format!("fk_{from}_{col}"))
        .from(n(from), n(col))
        .to(n(to), n("id"))
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

/// On PostgreSQL, the same policy as the initial tenant tables: rows of
/// the agency in `rapport.agency_id` only, for the application role.
pub async fn protect(m: &SchemaManager<'_>, tables: &[&str]) -> Result<(), DbErr> {
    if m.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    let db = m.get_connection();
    for table in tables {
        db.execute_unprepared(&format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {APP_ROLE};
             ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
             CREATE POLICY tenant_isolation ON {table} TO {APP_ROLE}
               USING (agency_id = NULLIF(current_setting('rapport.agency_id', true), '')::uuid)
               WITH CHECK (agency_id = NULLIF(current_setting('rapport.agency_id', true), '')::uuid);"
        ))
        .await?;
    }
    Ok(())
}

/// `CREATE INDEX name ON on` without stopping writes to the table while it
/// is built: on PostgreSQL `CONCURRENTLY` (so the migration must say
/// `use_transaction() -> Some(false)`), after dropping an invalid index of
/// that name that an interrupted build left behind, so a rerun builds it
/// again; `IF NOT EXISTS` so a rerun after a later step failed goes on.
pub async fn create_index_online(m: &SchemaManager<'_>, name: &str, on: &str) -> Result<(), DbErr> {
    let db = m.get_connection();
    if m.get_database_backend() != DbBackend::Postgres {
        return db
            .execute_unprepared(&format!("CREATE INDEX IF NOT EXISTS {name} ON {on}"))
            .await
            .map(|_| ());
    }
    let invalid = db
        .query_one_raw(sea_orm_migration::sea_orm::Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT 1 AS invalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE c.relname = $1 AND pg_table_is_visible(c.oid) AND NOT i.indisvalid",
            [name.into()],
        ))
        .await?
        .is_some();
    if invalid {
        db.execute_unprepared(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"))
            .await?;
    }
    db.execute_unprepared(&format!(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {on}"
    ))
    .await
    .map(|_| ())
}

/// `DROP INDEX name` without stopping writes to its table (see
/// [`create_index_online`]).
pub async fn drop_index_online(m: &SchemaManager<'_>, name: &str) -> Result<(), DbErr> {
    let online = if m.get_database_backend() == DbBackend::Postgres {
        "CONCURRENTLY "
    } else {
        ""
    };
    m.get_connection()
        .execute_unprepared(&format!("DROP INDEX {online}IF EXISTS {name}"))
        .await
        .map(|_| ())
}
