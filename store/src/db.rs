//! Connecting to the database and applying migrations.

use rapport_migrations::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};
use std::time::Duration;

/// The default for a newcomer: an SQLite file in the working directory,
/// created when missing.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://rapport.db?mode=rwc";

pub fn backend_name(url: &str) -> &'static str {
    if url.starts_with("postgres") {
        "PostgreSQL"
    } else {
        "SQLite"
    }
}

pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut opts = ConnectOptions::new(url.to_string());
    opts.connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(10))
        .max_connections(if url.starts_with("sqlite") { 8 } else { 20 })
        // The pool's default pings every connection it hands out: one extra
        // round trip per query. Only a connection idle long enough to have
        // been dropped (server restart, proxy, firewall) is checked now.
        .test_before_acquire_if_idle_for(Duration::from_secs(30))
        .sqlx_logging(false)
        // SQLite: `REGEXP`, for searches that fold case beyond ASCII.
        .map_sqlx_sqlite_opts(|o| o.with_regexp());
    let db = Database::connect(opts).await?;
    // A pool connects lazily; ping so "unreachable" surfaces now, clearly.
    db.ping().await?;
    Ok(db)
}

pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await
}

/// How many migrations this binary knows that `db` has not had: serving
/// or working on a database behind the code fails on every query that
/// touches what is missing, so the commands that do not migrate check
/// first.
pub async fn pending_migrations(db: &DatabaseConnection) -> Result<usize, DbErr> {
    Ok(Migrator::get_pending_migrations(db).await?.len())
}

pub async fn ping(db: &DatabaseConnection) -> bool {
    db.ping().await.is_ok()
}

/// The fraction (0 to 1) of PostgreSQL's notification queue in use, which
/// the response cache's listeners keep draining: writes that notify fail
/// once it is full. `None` on SQLite, which has no such queue.
pub async fn notification_queue_usage(db: &DatabaseConnection) -> Result<Option<f64>, DbErr> {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(None);
    }
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT pg_notification_queue_usage() AS usage",
        ))
        .await?;
    row.map(|r| r.try_get::<f64>("", "usage")).transpose()
}
