//! Migrations run forward, back and forward again; indexes on the busy
//! `messages` table are built online on PostgreSQL, and a build that was
//! interrupted (an invalid index left behind) is redone on the next run.

mod common;

use common::*;
use rapport_migrations::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

/// Whether `name` exists, and on PostgreSQL whether it is valid (usable).
async fn index(db: &DatabaseConnection, name: &str) -> Option<bool> {
    let (sql, backend) = if is_postgres() {
        (
            "SELECT i.indisvalid AS valid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE c.relname = $1",
            DbBackend::Postgres,
        )
    } else {
        (
            "SELECT 1 = 1 AS valid FROM sqlite_master WHERE type = 'index' AND name = $1",
            DbBackend::Sqlite,
        )
    };
    db.query_one_raw(Statement::from_sql_and_values(backend, sql, [name.into()]))
        .await
        .unwrap()
        .map(|r| r.try_get::<bool>("", "valid").unwrap())
}

/// Whether `conversations.opened_by_agent` (migration 10) is there.
async fn column_exists(db: &DatabaseConnection) -> bool {
    db.execute_unprepared("SELECT opened_by_agent FROM conversations LIMIT 0")
        .await
        .is_ok()
}

/// Whether `messages.delivery_unsure` (migration 12) is there.
async fn unsure_exists(db: &DatabaseConnection) -> bool {
    db.execute_unprepared("SELECT delivery_unsure FROM messages LIMIT 0")
        .await
        .is_ok()
}

/// Change-feed triggers (migration 13; PostgreSQL only).
async fn change_triggers(db: &DatabaseConnection) -> i64 {
    if !is_postgres() {
        return 0;
    }
    db.query_one_raw(Statement::from_string(
        DbBackend::Postgres,
        "SELECT count(*)::bigint AS n FROM pg_trigger WHERE tgname LIKE 'rapport_changes_%'",
    ))
    .await
    .unwrap()
    .unwrap()
    .try_get("", "n")
    .unwrap()
}

/// The storage options of `conversations` and `authors` (migration 15;
/// PostgreSQL only).
async fn fill_factors(db: &DatabaseConnection) -> Vec<String> {
    db.query_all_raw(Statement::from_string(
        DbBackend::Postgres,
        "SELECT relname || ': ' || coalesce(array_to_string(reloptions, ','), '-') AS o \
         FROM pg_class WHERE relname IN ('authors', 'conversations') AND relkind = 'r' ORDER BY relname",
    ))
    .await
    .unwrap()
    .into_iter()
    .map(|r| r.try_get("", "o").unwrap())
    .collect()
}

#[tokio::test]
async fn the_last_migrations_go_back_and_forth_and_redo_an_interrupted_index() {
    let tdb = TestDb::new().await;
    let db = sea_orm::Database::connect(&tdb.url).await.unwrap();
    Migrator::up(&db, None).await.unwrap();
    assert_eq!(index(&db, "ix_messages_platform_id").await, Some(true));
    assert_eq!(index(&db, "ix_messages_thread").await, Some(true));
    assert_eq!(index(&db, "ix_messages_conversation").await, None);

    assert_eq!(index(&db, "ix_messages_sent_by").await, Some(true));
    assert_eq!(index(&db, "ix_conversations_running").await, Some(true));

    assert_eq!(index(&db, "ix_messages_outbound_due").await, Some(true));
    assert_eq!(index(&db, "ix_messages_delivery_due").await, None);

    assert!(column_exists(&db).await);
    assert!(unsure_exists(&db).await);
    let filled = ["authors: fillfactor=50", "conversations: fillfactor=70"];
    if is_postgres() {
        assert_eq!(fill_factors(&db).await, filled);
    }
    let triggers = change_triggers(&db).await;
    assert!(
        !is_postgres() || triggers > 60,
        "{triggers} change triggers"
    );
    // Back to migration 7, however many come after it.
    let after_7 = Migrator::migrations().len() as u32 - 7;
    Migrator::down(&db, Some(after_7)).await.unwrap();
    if is_postgres() {
        assert_eq!(fill_factors(&db).await, ["authors: -", "conversations: -"]);
    }
    assert_eq!(index(&db, "ix_messages_outbound_due").await, None);
    assert_eq!(index(&db, "ix_messages_delivery_due").await, Some(true));
    assert_eq!(change_triggers(&db).await, 0, "change feed dropped");
    assert!(!unsure_exists(&db).await, "delivery_unsure dropped");
    assert_eq!(index(&db, "ix_messages_sent_by").await, None);
    assert_eq!(index(&db, "ix_conversations_running").await, None);
    assert!(!column_exists(&db).await, "opened_by_agent dropped");
    assert_eq!(index(&db, "ix_messages_platform_id").await, None);
    assert_eq!(index(&db, "ix_messages_thread").await, None);
    assert_eq!(index(&db, "ix_messages_replies").await, None);
    assert_eq!(index(&db, "ix_messages_conversation").await, Some(true));

    if is_postgres() {
        // What a `CREATE INDEX CONCURRENTLY` cut short leaves: the index,
        // marked invalid. The next run must build it again, not skip it.
        db.execute_unprepared(
            "CREATE INDEX ix_messages_platform_id ON messages (channel_id);
             UPDATE pg_index SET indisvalid = false
              WHERE indexrelid = 'ix_messages_platform_id'::regclass;",
        )
        .await
        .unwrap();
        assert_eq!(index(&db, "ix_messages_platform_id").await, Some(false));
    }
    Migrator::up(&db, None).await.unwrap();
    assert_eq!(index(&db, "ix_messages_outbound_due").await, Some(true));
    assert_eq!(index(&db, "ix_messages_delivery_due").await, None);
    assert!(column_exists(&db).await, "opened_by_agent back");
    assert!(unsure_exists(&db).await, "delivery_unsure back");
    if is_postgres() {
        assert_eq!(fill_factors(&db).await, filled, "fill factors back");
    }
    assert_eq!(change_triggers(&db).await, triggers, "change feed back");
    assert_eq!(index(&db, "ix_messages_platform_id").await, Some(true));
    assert_eq!(index(&db, "ix_messages_thread").await, Some(true));
    assert_eq!(index(&db, "ix_messages_replies").await, Some(true));
    assert_eq!(index(&db, "ix_messages_conversation").await, None);
    assert_eq!(
        index(&db, "ix_webhook_deliveries_subscription_due").await,
        Some(true)
    );
    if is_postgres() {
        let def: String = db
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT pg_get_indexdef('ix_messages_platform_id'::regclass) AS d",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get("", "d")
            .unwrap();
        assert!(def.contains("platform_message_id IS NOT NULL"), "{def}");
    }
    db.close().await.unwrap();
}
