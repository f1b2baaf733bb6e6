//! Report rollups on PostgreSQL are append-only (a row per insert
//! statement and key, so concurrent writers never wait on each other);
//! this pass folds each slot's rows into one so reports read few rows.
//! Safe to run from every worker at once: the database function takes
//! each slot's advisory lock, the one its recounts take. SQLite keeps one
//! row per key already.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use std::time::Duration;
use tokio::sync::watch;

/// Slots folded per pass and table.
const SLOTS_PER_PASS: i32 = 500;

/// One pass; returns how many slots were folded.
pub async fn compact_once(db: &DatabaseConnection) -> Result<i64, sea_orm::DbErr> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(0);
    }
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT rapport_compact_report_rollups($1) AS folded",
            [SLOTS_PER_PASS.into()],
        ))
        .await?;
    Ok(row.map_or(Ok(0), |r| r.try_get::<i64>("", "folded"))?)
}

/// Runs passes until shutdown; a full pass runs again at once.
pub async fn run(db: DatabaseConnection, interval: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        let wait = match compact_once(&db).await {
            Ok(n) => {
                if n > 0 {
                    tracing::debug!(slots = n, "report rollups compacted");
                    metrics::counter!("rapport_rollup_slots_compacted_total").increment(n as u64);
                }
                if n >= i64::from(SLOTS_PER_PASS) {
                    Duration::ZERO
                } else {
                    interval
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "report rollup compaction failed");
                interval
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}
