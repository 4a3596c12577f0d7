//! TLS to PostgreSQL: libpq's `sslmode` and `sslrootcert` for the catalog and the stores.
//!
//! Runs against the setup `.ci/run` makes on the test server: a test CA (`ca.pem`), a
//! server certificate naming `localhost` only (so `127.0.0.1` under `verify-full` is a
//! wrong host name), a CA that signed nothing (`other-ca.pem`), a role the server admits
//! only over TLS (`tenancy_tls_only`) and one only without it (`tenancy_plain_only`).
//! Where that setup is absent the tests are skipped with a notice, except under
//! `CI=true`, where they fail. Each test has its own database (tests/common/pg.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common {
    pub mod pg;
}

use std::path::{Path, PathBuf};

use common::pg::TestDb;
use tenancy::catalog::postgres::PgCatalog;
use tenancy::pgconnect::{self, PgConfig};
use tenancy::{Engine, EngineConfig, Error, Mode, PlaceOptions, Slug, StoreSpec, TenantStatus};

const TLS_ONLY: &str = "tenancy_tls_only";
const PLAIN_ONLY: &str = "tenancy_plain_only";

/// The test CAs `.ci/run` installed.
struct Cas {
    ca: PathBuf,
    other_ca: PathBuf,
}

/// The test database and the TLS setup, or `None` (skipped, with a notice).
async fn setup() -> Option<(TestDb, Cas)> {
    let db = TestDb::create().await?;
    let dir = PathBuf::from(
        std::env::var("TENANCY_TEST_TLS_DIR")
            .unwrap_or_else(|_| "/var/lib/postgresql/tenancy-test-tls".to_owned()),
    );
    let cas = Cas {
        ca: dir.join("ca.pem"),
        other_ca: dir.join("other-ca.pem"),
    };
    let roles: i64 = raw(&db.url)
        .await
        .query_one(
            "SELECT COUNT(*) FROM pg_roles WHERE rolname IN ($1, $2)",
            &[&TLS_ONLY, &PLAIN_ONLY],
        )
        .await
        .unwrap()
        .get(0);
    if !cas.ca.is_file() || !cas.other_ca.is_file() || roles != 2 {
        let why = format!(
            "the TLS setup of .ci/run is absent ({} or the roles {TLS_ONLY}, {PLAIN_ONLY})",
            cas.ca.display()
        );
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{why} under CI=true");
        }
        eprintln!("NOTICE: skipping a PostgreSQL TLS test: {why}");
        return None;
    }
    Some((db, cas))
}

/// A plaintext connection as the test server's superuser, for checks.
async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// The URL of the test database as `user` at `host` (on the test server's port).
fn url(db: &TestDb, user: &str, host: &str, params: &str) -> String {
    let server: tokio_postgres::Config = db.url.parse().unwrap();
    let port = server.get_ports().first().copied().unwrap_or(5432);
    format!("postgres://{user}@{host}:{port}/{}?{params}", db.name)
}

fn ca_param(ca: &Path) -> String {
    format!("sslrootcert={}", ca.display())
}

fn slug(s: &str) -> Slug {
    Slug::parse(s).unwrap()
}

fn in_schema() -> PlaceOptions {
    PlaceOptions {
        store: Some("pg".into()),
        mode: Some(Mode::Schema),
        plan: None,
    }
}

/// An engine whose one PostgreSQL store, `pg`, is at `store_url`.
fn config(dir: &Path, db: &TestDb, store_url: String) -> EngineConfig {
    let mut config = EngineConfig::new(dir);
    let mut store = StoreSpec::new("pg", store_url);
    store.data_role = format!("{}_data", db.prefix);
    store.database_prefix = db.prefix.clone();
    config.stores = vec![store];
    config
}

/// Opens an engine on a store at `store_url` and creates a `schema` tenant in it.
async fn serve_a_tenant(dir: &Path, db: &TestDb, store_url: String, s: &str) {
    let engine = Engine::open(config(dir, db, store_url)).await.unwrap();
    let tenant = engine
        .create_tenant_with(slug(s), None, None, &in_schema())
        .await
        .unwrap();
    assert_eq!(tenant.status, TenantStatus::Active);
    let session = engine.session(&tenant).await.unwrap();
    session.client().query_one("SELECT 1", &[]).await.unwrap();
    session.commit().await.unwrap();
}

/// What the store at `store_url` answers: the error of opening the engine, or of
/// provisioning a tenant in it.
async fn store_refusal(dir: &Path, db: &TestDb, store_url: String) -> Error {
    let engine = match Engine::open(config(dir, db, store_url)).await {
        Ok(engine) => engine,
        Err(e) => return e,
    };
    engine
        .create_tenant_with(slug("refused"), None, None, &in_schema())
        .await
        .expect_err("the store refuses")
}

/// Whether the session of a bare `pgconnect::connect` is encrypted.
async fn connects_with_tls(url: &str) -> Result<bool, String> {
    let config = PgConfig::parse(url)?;
    let (client, connection) = pgconnect::connect(&config)
        .await
        .map_err(|e| pgconnect::reason(&e))?;
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_the_catalog_and_the_stores_connect_with_tls() {
    let Some((db, _)) = setup().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &db, db.url.clone());
    cfg.catalog_url = Some(db.url.clone());
    let engine = Engine::open(cfg).await.unwrap();
    for (s, mode) in [
        ("in-db", Mode::Database),
        ("in-schema", Mode::Schema),
        ("in-shared", Mode::Shared),
    ] {
        let place = PlaceOptions {
            store: Some("pg".into()),
            mode: Some(mode),
            plan: None,
        };
        let tenant = engine
            .create_tenant_with(slug(s), None, None, &place)
            .await
            .unwrap();
        let session = engine.session(&tenant).await.unwrap();
        session.client().query_one("SELECT 1", &[]).await.unwrap();
        session.commit().await.unwrap();
    }

    // The engine's connections to this test's databases (the catalog's pool and
    // session, the store's pools, a tenant database), seen by the server.
    let seen = raw(&db.url)
        .await
        .query(
            "SELECT a.application_name, a.datname, s.ssl
               FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid
              WHERE a.datname LIKE $1 AND a.pid <> pg_backend_pid()",
            &[&format!("{}%", db.prefix)],
        )
        .await
        .unwrap();
    let seen: Vec<(String, String, bool)> = seen
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let catalog = |name: &str| seen.iter().any(|(app, _, _)| app == name);
    assert!(
        catalog("tenancy catalog") && catalog("tenancy catalog session"),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|(_, database, _)| database != &db.name),
        "a tenant database's connection: {seen:?}"
    );
    assert!(seen.iter().all(|(_, _, ssl)| *ssl), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_admitted_only_over_tls_connects_with_require_and_is_refused_with_disable() {
    let Some((db, _)) = setup().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let require = url(&db, TLS_ONLY, "127.0.0.1", "sslmode=require");
    serve_a_tenant(
        &dir.path().join("require"),
        &db,
        require.clone(),
        "over-tls",
    )
    .await;
    PgCatalog::connect(&require).await.unwrap();

    let disable = url(&db, TLS_ONLY, "127.0.0.1", "sslmode=disable");
    let err = store_refusal(&dir.path().join("disable"), &db, disable.clone()).await;
    let text = err.to_string();
    assert!(text.contains("store \"pg\" is unavailable"), "{text}");
    assert!(text.contains("no encryption"), "{text}");
    let err = PgCatalog::connect(&disable).await.unwrap_err();
    // Refused at connection: the catalog cannot be reached this way.
    assert!(matches!(err, Error::CatalogUnavailable(_)), "{err}");
    assert!(err.to_string().contains("no encryption"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_and_allow_fall_back_as_libpq_does() {
    let Some((db, _)) = setup().await else {
        return;
    };
    // Default sslmode: `prefer`.
    assert_eq!(
        connects_with_tls(&url(&db, TLS_ONLY, "127.0.0.1", "")).await,
        Ok(true)
    );
    // The server refuses this role's TLS session: tried again in plaintext, as libpq.
    assert_eq!(
        connects_with_tls(&url(&db, PLAIN_ONLY, "127.0.0.1", "sslmode=prefer")).await,
        Ok(false)
    );
    let err = connects_with_tls(&url(&db, PLAIN_ONLY, "127.0.0.1", "sslmode=require"))
        .await
        .unwrap_err();
    assert!(err.contains("pg_hba.conf rejects connection"), "{err}");
    // `allow` is the mirror image: plaintext first, TLS if the server refuses it.
    assert_eq!(
        connects_with_tls(&url(&db, PLAIN_ONLY, "127.0.0.1", "sslmode=allow")).await,
        Ok(false)
    );
    assert_eq!(
        connects_with_tls(&url(&db, TLS_ONLY, "127.0.0.1", "sslmode=allow")).await,
        Ok(true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_checks_the_host_name() {
    let Some((db, cas)) = setup().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let params = format!("sslmode=verify-full&{}", ca_param(&cas.ca));
    let localhost = url(&db, TLS_ONLY, "localhost", &params);
    serve_a_tenant(dir.path(), &db, localhost.clone(), "verified").await;
    PgCatalog::connect(&localhost).await.unwrap();

    // The same store reached as 127.0.0.1, which the certificate does not name: its
    // tenant's session is refused, naming the store and the reason.
    let by_address = url(&db, TLS_ONLY, "127.0.0.1", &params);
    let engine = Engine::open(config(dir.path(), &db, by_address.clone()))
        .await
        .unwrap();
    let tenant = engine.tenant(&slug("verified")).await.unwrap();
    let err = engine.session(&tenant).await.err().expect("refused");
    let expected =
        "TLS: the server's certificate does not name host 127.0.0.1 (sslmode=verify-full)";
    match &err {
        Error::StoreUnavailable { store, reason } => {
            assert_eq!(store, "pg");
            assert_eq!(reason, expected);
        }
        other => panic!("expected StoreUnavailable, got {other}"),
    }
    let err = PgCatalog::connect(&by_address).await.unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("the catalog database is unavailable: {expected}")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ca_checks_the_chain_but_not_the_host_name() {
    let Some((db, cas)) = setup().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let right = url(
        &db,
        TLS_ONLY,
        "127.0.0.1",
        &format!("sslmode=verify-ca&{}", ca_param(&cas.ca)),
    );
    serve_a_tenant(&dir.path().join("right"), &db, right, "right-ca").await;

    let wrong = url(
        &db,
        TLS_ONLY,
        "127.0.0.1",
        &format!("sslmode=verify-ca&{}", ca_param(&cas.other_ca)),
    );
    let err = store_refusal(&dir.path().join("wrong"), &db, wrong.clone()).await;
    let expected = format!(
        "store \"pg\" is unavailable: TLS: the server's certificate is not signed by a CA of \
         sslrootcert {} (sslmode=verify-ca)",
        cas.other_ca.display()
    );
    assert!(err.to_string().contains(&expected), "{err}");
    // `require` with a root certificate checks the chain too (libpq).
    let require = url(
        &db,
        TLS_ONLY,
        "127.0.0.1",
        &format!("sslmode=require&{}", ca_param(&cas.other_ca)),
    );
    let err = connects_with_tls(&require).await.unwrap_err();
    assert!(
        err.starts_with("TLS: the server's certificate is not signed"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_settings_are_configuration_errors_naming_whose_url() {
    let Some((db, _)) = setup().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let password = "pw-not-to-be-shown";
    let with_password = |params: &str| {
        url(&db, TLS_ONLY, "localhost", params).replacen(
            TLS_ONLY,
            &format!("{TLS_ONLY}:{password}"),
            1,
        )
    };

    let bogus = with_password("sslmode=bogus");
    let err = Engine::open(config(&dir.path().join("a"), &db, bogus.clone()))
        .await
        .err()
        .expect("refused");
    match &err {
        Error::StoreUnavailable { store, reason } => {
            assert_eq!(store, "pg");
            assert_eq!(
                reason,
                "its url: sslmode=bogus is not one of disable, allow, prefer, require, verify-ca, verify-full"
            );
        }
        other => panic!("expected StoreUnavailable, got {other}"),
    }
    let err = PgCatalog::connect(&bogus).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("the catalog URL: sslmode=bogus is not one of"),
        "{err}"
    );

    let missing = with_password("sslmode=verify-full&sslrootcert=/nonexistent/ca.pem");
    let mut cfg = config(&dir.path().join("b"), &db, db.url.clone());
    cfg.stores[0].data_url = Some(missing.clone());
    let err = Engine::open(cfg).await.err().expect("refused");
    let text = err.to_string();
    assert!(
        text.starts_with(
            "store \"pg\" is unavailable: its data_url: cannot read sslrootcert /nonexistent/ca.pem: "
        ),
        "{text}"
    );
    assert!(!text.contains(password), "{text}");
    let err = PgCatalog::connect(&missing).await.unwrap_err().to_string();
    assert!(
        err.contains("the catalog URL: cannot read sslrootcert /nonexistent/ca.pem"),
        "{err}"
    );
    assert!(!err.contains(password), "{err}");
}
