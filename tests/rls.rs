//! PostgreSQL row-level security, the second wall: under the application
//! role a query sees only the agency set for the transaction, and nothing
//! at all without one. (SQLite has no RLS; there these tests check that the
//! scoped transaction still works.)

mod common;

use common::*;
use rapport_domain::{GlobalId, Kind};
use rapport_store::Scope;
use rapport_store::entities::workspace;
use rapport_store::tenancy::begin_for_agency;
use sea_orm::{ConnectionTrait, EntityTrait, Statement, TransactionTrait};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rls_hides_other_tenants_and_everything_without_a_tenant() {
    let app = TestApp::start().await;
    let a = app.sign_up("A", "a@a.test").await;
    let b = app.sign_up("B", "b@b.test").await;
    app.create_workspace(&a, "A1").await;
    app.create_workspace(&b, "B1").await;
    app.create_workspace(&b, "B2").await;
    let agency_a = GlobalId::decode(Kind::Agency, &a.agency_id).unwrap();
    let agency_b = GlobalId::decode(Kind::Agency, &b.agency_id).unwrap();
    let db = &app.state.db;

    // Through the scope (filter + RLS) each agency sees its own.
    let txn = Scope::agency(agency_a).begin(db).await.unwrap();
    let own = Scope::agency(agency_a)
        .select::<workspace::Entity>()
        .all(&txn)
        .await
        .unwrap();
    assert_eq!(own.len(), 1);
    txn.commit().await.unwrap();

    if !is_postgres() {
        return;
    }

    // Without the application filter, RLS alone still confines the query.
    let txn = begin_for_agency(db, agency_b).await.unwrap();
    let unfiltered = workspace::Entity::find().all(&txn).await.unwrap();
    assert_eq!(unfiltered.len(), 2);
    assert!(unfiltered.iter().all(|w| w.agency_id == agency_b));
    // Writing a row for another agency is refused by the policy.
    let sneaky = txn
        .execute_unprepared(&format!(
            "UPDATE workspaces SET name = 'pwned' WHERE agency_id = '{agency_a}'"
        ))
        .await
        .unwrap();
    assert_eq!(sneaky.rows_affected(), 0);
    let insert = txn
        .execute_raw(Statement::from_string(
            sea_orm::DbBackend::Postgres,
            format!(
                "INSERT INTO audit_log (id, agency_id, action, details, created_at)
                 VALUES (gen_random_uuid(), '{agency_a}', 'forged', '{{}}', now())"
            ),
        ))
        .await;
    assert!(
        insert.is_err(),
        "RLS WITH CHECK refuses rows of another agency"
    );
    drop(txn);

    // The application role with no tenant set sees nothing at all.
    let txn = db.begin().await.unwrap();
    txn.execute_unprepared(&format!("SET LOCAL ROLE {}", rapport_migrations::APP_ROLE))
        .await
        .unwrap();
    for table in rapport_migrations::TENANT_TABLES
        .iter()
        .chain(rapport_migrations::LATER_TENANT_TABLES)
    {
        let row = txn
            .query_one_raw(Statement::from_string(
                sea_orm::DbBackend::Postgres,
                format!("SELECT count(*)::bigint AS n FROM {table}"),
            ))
            .await
            .unwrap()
            .unwrap();
        let n: i64 = row.try_get("", "n").unwrap();
        assert_eq!(n, 0, "{table} visible without a tenant");
    }
    txn.commit().await.unwrap();

    // Control: the owner connection (system path) does see every row.
    let all = workspace::Entity::find().all(db).await.unwrap();
    assert_eq!(all.len(), 3);
}
