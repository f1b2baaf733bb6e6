//! Report rollups on PostgreSQL (see the `report_rollups` migration):
//! message and SLA rollups are append-only (a row per insert statement and
//! key, so concurrent writers never wait on each other) and this pass
//! folds each slot's rows into one; conversation slots that writers marked
//! dirty are counted again. Reports are exact either way (they sum the
//! rows, and read dirty slots from the conversations); this keeps them
//! fast. Safe to run from every worker at once: the database functions
//! take each slot's advisory lock. SQLite keeps one row per key already.

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
    let mut total = 0;
    for function in [
        "rapport_compact_report_rollups",
        "rapport_refresh_report_slots",
    ] {
        let row = db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                format!("SELECT {function}($1) AS folded"),
                [SLOTS_PER_PASS.into()],
            ))
            .await?;
        total += row.map_or(Ok(0), |r| r.try_get::<i64>("", "folded"))?;
    }
    Ok(total)
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
