//! Two deployments on one PostgreSQL server, each with its own catalog: the second never
//! takes over the data role the first created (which would reset its password under it).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common {
    pub mod pg;
}

use common::pg::TestDb;
use tenancy::{Engine, EngineConfig, Error, Mode, Slug, StoreSpec};

/// A deployment: its own data folder and catalog (`catalog_db`), its tenants on the store
/// database of `store_db`, its data role named `data_role`.
fn deployment(
    dir: &std::path::Path,
    catalog_db: &TestDb,
    store_db: &TestDb,
    data_role: &str,
) -> EngineConfig {
    let mut config = EngineConfig::new(dir);
    let mut store = StoreSpec::new("pg", store_db.url.clone());
    store.data_role = data_role.to_owned();
    store.database_prefix = catalog_db.prefix.clone();
    config.stores = vec![store];
    config.catalog_url = Some(catalog_db.url.clone());
    config.default_store = "pg".into();
    config.default_mode = Mode::Schema;
    config
}

async fn password_of(db: &TestDb, role: &str) -> Option<String> {
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&role],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_deployment_does_not_take_over_the_first_ones_data_role() {
    let Some(first_db) = TestDb::create().await else {
        return;
    };
    let Some(second_db) = TestDb::create().await else {
        return;
    };
    // Both deployments keep their tenants in the first one's database, under one role
    // name: what two installations left at the defaults do on one server.
    let role = format!("{}_data", first_db.prefix);
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());

    let first = Engine::open(deployment(dirs.0.path(), &first_db, &first_db, &role))
        .await
        .unwrap();
    let acme = first
        .create_tenant(Slug::parse("acme").unwrap(), None)
        .await
        .unwrap();
    first
        .query(&acme, "SELECT COUNT(*) AS n FROM members", vec![])
        .await
        .unwrap();
    let password = password_of(&first_db, &role).await;
    assert!(password.is_some(), "the first deployment set a password");

    let second = Engine::open(deployment(dirs.1.path(), &second_db, &first_db, &role))
        .await
        .unwrap();
    // Creating a tenant makes sure of the data role (or its first request would).
    let refused = async {
        let beta = second
            .create_tenant(Slug::parse("beta").unwrap(), None)
            .await?;
        second
            .query(&beta, "SELECT COUNT(*) AS n FROM members", vec![])
            .await
    }
    .await
    .unwrap_err();
    let words = refused.to_string();
    assert!(
        matches!(
            refused,
            Error::StoreUnavailable { .. } | Error::ProvisioningFailed { .. }
        ) && words.contains(&role)
            && words.contains("another deployment"),
        "{refused:?}"
    );

    assert_eq!(
        password_of(&first_db, &role).await,
        password,
        "the role's password is the first deployment's still"
    );
    // The first deployment keeps serving.
    first
        .query(&acme, "SELECT COUNT(*) AS n FROM members", vec![])
        .await
        .unwrap();
    drop(second);
}
