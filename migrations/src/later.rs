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
