//! The engine on PostgreSQL stores: provisioning, migration, deletion and recovery in the
//! `database`, `schema` and `shared` modes, the connection budget, store secrets, and a
//! server that goes away mid-traffic. Each test has its own database (tests/common/pg.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common {
    pub mod pg;
}

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pg::{Proxy, TestDb};
use tenancy::catalog::NewTenant;
use tenancy::secrets::SecretKey;
use tenancy::{
    Engine, EngineConfig, Error, MigrateOptions, MigrationSource, Mode, PlaceOptions, Placement,
    Slug, StoreSpec, TenantId, TenantStatus,
};

fn slug(s: &str) -> Slug {
    Slug::parse(s).unwrap()
}

fn config(dir: &Path, db: &TestDb) -> EngineConfig {
    let mut config = EngineConfig::new(dir);
    let mut store = StoreSpec::new("pg", db.url.clone());
    store.data_role = format!("{}_data", db.prefix);
    store.database_prefix = db.prefix.clone();
    config.stores = vec![store];
    config
}

/// A config whose migrations are a folder holding the guild schema, to which a test adds
/// migrations; the folder.
fn with_migrations_folder(dir: &Path, db: &TestDb) -> (EngineConfig, std::path::PathBuf) {
    let migrations = dir.join("migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    for (file, sql) in tenancy::migrations::GUILD_MIGRATIONS {
        std::fs::write(migrations.join(file), sql).unwrap();
    }
    let mut cfg = config(&dir.join("data"), db);
    cfg.migrations = MigrationSource::Folder(migrations.clone());
    (cfg, migrations)
}

/// Writes a new migration into the folder and opens an engine on it.
async fn add_migration_and_open(
    migrations: &Path,
    file: &str,
    sql: &str,
    cfg: EngineConfig,
) -> Engine {
    std::fs::write(migrations.join(file), sql).unwrap();
    Engine::open(cfg).await.unwrap()
}

fn place(mode: Mode) -> PlaceOptions {
    PlaceOptions {
        store: Some("pg".into()),
        mode: Some(mode),
        plan: None,
    }
}

async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

async fn database_exists(db: &TestDb, name: &str) -> bool {
    admin(&db.url)
        .await
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .unwrap()
        .is_some()
}

async fn schema_exists(db: &TestDb, name: &str) -> bool {
    admin(&db.url)
        .await
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&name])
        .await
        .unwrap()
        .is_some()
}

/// The one value the query answers, run as the test database's owner.
async fn scalar(db: &TestDb, sql: &str) -> i64 {
    admin(&db.url)
        .await
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

/// Rows of `members` the tenant sees through its own session.
async fn members_seen(engine: &Engine, s: &str) -> i64 {
    let tenant = engine.tenant(&slug(s)).await.unwrap();
    let session = engine.session(&tenant).await.unwrap();
    let n: i64 = session
        .client()
        .query_one("SELECT COUNT(*) FROM members", &[])
        .await
        .unwrap()
        .get(0);
    session.commit().await.unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mode_provisions_serves_and_deletes() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), &db)).await.unwrap();
    for (s, mode) in [
        ("in-db", Mode::Database),
        ("in-schema", Mode::Schema),
        ("in-shared", Mode::Shared),
    ] {
        let tenant = engine
            .create_tenant_with(slug(s), None, None, &place(mode))
            .await
            .unwrap();
        assert_eq!(tenant.status, TenantStatus::Active, "{s}");
        assert_eq!(tenant.placement.mode, mode);
        assert_eq!(tenant.placement.store, "pg");
        assert_eq!(tenant.placement.schema_version, 2, "{s}");
        let session = engine.session(&tenant).await.unwrap();
        session
            .client()
            .execute(
                "INSERT INTO members (id, name) VALUES ($1, $2)",
                &[&uuid::Uuid::now_v7().to_string(), &format!("a@{s}")],
            )
            .await
            .unwrap();
        session.commit().await.unwrap();
        assert_eq!(members_seen(&engine, s).await, 1, "{s}");
    }
    let by_mode = |mode| {
        let engine = engine.clone();
        async move {
            engine
                .list_tenants()
                .await
                .unwrap()
                .into_iter()
                .find(|t| t.placement.mode == mode)
                .unwrap()
        }
    };
    let in_db = by_mode(Mode::Database).await;
    let in_schema = by_mode(Mode::Schema).await;
    assert!(database_exists(&db, &in_db.placement.location).await);
    assert!(schema_exists(&db, &in_schema.placement.location).await);

    for s in ["in-db", "in-schema", "in-shared"] {
        let deleted = engine.delete_tenant(&slug(s)).await.unwrap();
        assert_eq!(deleted.status, TenantStatus::Deleted);
    }
    assert!(!database_exists(&db, &in_db.placement.location).await);
    assert!(!schema_exists(&db, &in_schema.placement.location).await);
    // The shared tables stay (other tenants' rows live there); this tenant's rows are gone.
    let left: i64 = scalar(&db, "SELECT COUNT(*) FROM tenancy_shared.members").await;
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_handler_that_forgets_its_where_clause_sees_only_its_tenant() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), &db)).await.unwrap();
    for mode in [Mode::Database, Mode::Schema, Mode::Shared] {
        let (a, b) = (format!("a-{mode}"), format!("b-{mode}"));
        for (s, rows) in [(&a, 2), (&b, 3)] {
            let tenant = engine
                .create_tenant_with(slug(s), None, None, &place(mode))
                .await
                .unwrap();
            let session = engine.session(&tenant).await.unwrap();
            for i in 0..rows {
                session
                    .client()
                    .execute(
                        "INSERT INTO members (id, name) VALUES ($1, $2)",
                        &[&uuid::Uuid::now_v7().to_string(), &format!("m{i}")],
                    )
                    .await
                    .unwrap();
            }
            session.commit().await.unwrap();
        }
        assert_eq!(members_seen(&engine, &a).await, 2, "{mode}");
        assert_eq!(members_seen(&engine, &b).await, 3, "{mode}");
        // An UPDATE and a DELETE without WHERE touch only the caller's rows.
        let tenant_a = engine.tenant(&slug(&a)).await.unwrap();
        let session = engine.session(&tenant_a).await.unwrap();
        let updated = session
            .client()
            .execute("UPDATE members SET class = 'changed'", &[])
            .await
            .unwrap();
        assert_eq!(updated, 2, "{mode}");
        let deleted = session
            .client()
            .execute("DELETE FROM members", &[])
            .await
            .unwrap();
        assert_eq!(deleted, 2, "{mode}");
        session.commit().await.unwrap();
        assert_eq!(members_seen(&engine, &b).await, 3, "{mode}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_tables_hide_everything_from_a_session_without_a_tenant() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), &db)).await.unwrap();
    let tenant = engine
        .create_tenant_with(slug("acme"), None, None, &place(Mode::Shared))
        .await
        .unwrap();
    let session = engine.session(&tenant).await.unwrap();
    session
        .client()
        .execute(
            "INSERT INTO members (id, name) VALUES ($1, 'A')",
            &[&uuid::Uuid::now_v7().to_string()],
        )
        .await
        .unwrap();
    session.commit().await.unwrap();

    // The data role, straight, with no tenant set: sees nothing and may insert nothing.
    let mut data_url = tokio_postgres::Config::new();
    data_url
        .host("127.0.0.1")
        .port(5432)
        .user(format!("{}_data", db.prefix))
        .dbname(&db.name);
    let (client, conn) = data_url.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let seen: i64 = client
        .query_one("SELECT COUNT(*) FROM tenancy_shared.members", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 0);
    let insert = client
        .execute(
            "INSERT INTO tenancy_shared.members (id, name) VALUES ($1, 'B')",
            &[&uuid::Uuid::now_v7().to_string()],
        )
        .await;
    assert!(insert.is_err(), "an insert without a tenant must fail");
    // Naming another tenant's id explicitly is refused by the policy's WITH CHECK.
    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute(
            "SELECT set_config('tenancy.tenant_id', $1, true)",
            &[&tenant.id.to_string()],
        )
        .await
        .unwrap();
    let forged = client
        .execute(
            "INSERT INTO tenancy_shared.members (tenant_id, id, name) VALUES ($1::text::uuid, $2, 'C')",
            &[&uuid::Uuid::now_v7().to_string(), &uuid::Uuid::now_v7().to_string()],
        )
        .await;
    assert!(forged.is_err(), "a row for another tenant must be refused");
    let _ = client.batch_execute("ROLLBACK").await;
    // And the role cannot switch row-level security off.
    let bypass = client.batch_execute("SET row_security = off").await;
    let seen_after: i64 = client
        .query_one("SELECT COUNT(*) FROM tenancy_shared.members", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(0);
    assert!(bypass.is_err() || seen_after == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_fan_out_to_every_mode_and_shared_runs_once() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (cfg, migrations) = with_migrations_folder(dir.path(), &db);
    let engine = Engine::open(cfg.clone()).await.unwrap();
    for (i, mode) in [Mode::Database, Mode::Schema, Mode::Shared, Mode::Shared]
        .into_iter()
        .enumerate()
    {
        engine
            .create_tenant_with(slug(&format!("t{i}")), None, None, &place(mode))
            .await
            .unwrap();
    }
    engine.create_tenant(slug("local"), None).await.unwrap();
    drop(engine);

    std::fs::write(
        migrations.join("0003_notes.sql"),
        "CREATE TABLE notes (id UUID PRIMARY KEY, body TEXT NOT NULL UNIQUE);\n\
         CREATE INDEX notes_body_idx ON notes (body);\n",
    )
    .unwrap();
    let engine = Engine::open(cfg).await.unwrap();
    let report = engine
        .migrate(
            MigrateOptions::default(),
            Arc::new(AtomicBool::new(false)),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(report.failed.len(), 0, "{:?}", report.failed);
    assert_eq!(report.migrated, 5);
    for t in engine.list_tenants().await.unwrap() {
        assert_eq!(t.placement.schema_version, 3, "{}", t.slug);
    }
    // Shared: one ledger for the store, with each version once.
    let versions: i64 = scalar(
        &db,
        "SELECT COUNT(*) FROM tenancy_shared._tenancy_migrations WHERE version = 3",
    )
    .await;
    assert_eq!(versions, 1);
    // A no-op rerun touches nothing.
    let again = engine
        .migrate(
            MigrateOptions::default(),
            Arc::new(AtomicBool::new(false)),
            |_| {},
        )
        .await
        .unwrap();
    assert!(again.pending.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_the_transform_refuses_is_applied_nowhere() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let migrations = dir.path().join("migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    for (file, sql) in tenancy::migrations::GUILD_MIGRATIONS {
        std::fs::write(migrations.join(file), sql).unwrap();
    }
    std::fs::write(
        migrations.join("0003_view.sql"),
        "CREATE VIEW member_emails AS SELECT email FROM members;\n",
    )
    .unwrap();
    let mut cfg = config(&dir.path().join("data"), &db);
    cfg.migrations = MigrationSource::Folder(migrations);
    let engine = Engine::open(cfg).await.unwrap();
    let err = engine
        .create_tenant_with(slug("shared-one"), None, None, &place(Mode::Shared))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("0003_view"), "{text}");
    let failed = engine.tenant(&slug("shared-one")).await.unwrap();
    assert_eq!(failed.status, TenantStatus::Failed);
    // Nothing of the script ran: not even the first two migrations' shared tables.
    let tables: i64 = scalar(
        &db,
        "SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'tenancy_shared'",
    )
    .await;
    assert_eq!(tables, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_removes_a_half_created_database_and_schema() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &db);
    let engine = Engine::open(cfg.clone()).await.unwrap();
    // What a process killed between CREATE DATABASE and its migration leaves: the catalog
    // row in provisioning, owned by a dead process, and an empty database.
    let dead = "dead-owner-0000";
    let mut half = Vec::new();
    for (s, mode) in [("half-db", Mode::Database), ("half-schema", Mode::Schema)] {
        let id = TenantId::generate();
        let location = match mode {
            Mode::Database => format!("{}_{}", db.prefix, id.0.simple()),
            _ => format!("t_{}", id.0.simple()),
        };
        let admin = admin(&db.url).await;
        match mode {
            Mode::Database => admin
                .batch_execute(&format!("CREATE DATABASE \"{location}\""))
                .await
                .unwrap(),
            _ => admin
                .batch_execute(&format!("CREATE SCHEMA \"{location}\""))
                .await
                .unwrap(),
        }
        engine
            .catalog()
            .insert_tenant(&NewTenant {
                id,
                slug: slug(s),
                name: s.into(),
                placement: Placement {
                    store: "pg".into(),
                    mode,
                    location: location.clone(),
                    schema_version: 0,
                },
                owner: None,
                plan: None,
            })
            .await
            .unwrap();
        half.push((s, mode, location));
    }
    drop(engine);
    // Hand the rows to an owner that is not alive.
    let catalog = rusqlite_catalog_set_owner(dir.path(), dead);
    assert!(catalog > 0);

    let engine = Engine::open(cfg).await.unwrap();
    assert_eq!(engine.recovery().failed.len(), 2, "{:?}", engine.recovery());
    for (s, mode, location) in half {
        let t = engine.tenant(&slug(s)).await.unwrap();
        assert_eq!(t.status, TenantStatus::Failed, "{s}");
        match mode {
            Mode::Database => assert!(!database_exists(&db, &location).await),
            _ => assert!(!schema_exists(&db, &location).await),
        }
        // And a retry provisions it properly.
        let retried = engine.retry_tenant(&slug(s)).await.unwrap();
        assert_eq!(retried.status, TenantStatus::Active);
    }
}

/// Marks every provisioning tenant as owned by `owner` in the SQLite catalog.
fn rusqlite_catalog_set_owner(data_dir: &Path, owner: &str) -> usize {
    let conn = tenancy::rusqlite::Connection::open(data_dir.join("catalog.db")).unwrap();
    conn.execute(
        "UPDATE tenants SET op_owner = ?1 WHERE status = 'provisioning'",
        [owner],
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_budget_holds_however_many_tenants_are_hot() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &db);
    cfg.stores[0].limits.max_connections = 3;
    cfg.stores[0].limits.acquire_timeout = Duration::from_secs(20);
    let engine = Engine::open(cfg).await.unwrap();
    let mut tenants = Vec::new();
    for i in 0..6 {
        tenants.push(
            engine
                .create_tenant_with(slug(&format!("hot{i}")), None, None, &place(Mode::Database))
                .await
                .unwrap(),
        );
    }
    // 6 databases, 24 concurrent sessions, 3 connections: everyone waits their turn.
    let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..4 {
        for t in &tenants {
            let (engine, t, peak) = (engine.clone(), t.clone(), Arc::clone(&peak));
            tasks.spawn(async move {
                let session = engine.session(&t).await?;
                session
                    .client()
                    .query_one("SELECT pg_sleep(0.02)::text, $1::int4", &[&round])
                    .await
                    .map_err(|e| Error::TenantDb(e.to_string()))?;
                let store = engine.pg_store("pg").unwrap();
                peak.fetch_max(
                    store.pools().open_connections(),
                    std::sync::atomic::Ordering::SeqCst,
                );
                session.commit().await
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
    assert!(peak.load(std::sync::atomic::Ordering::SeqCst) <= 3);
    // Server-side too: this test's databases never had more than the budget (idle
    // connections stay within it as well).
    let open: i64 = admin(&db.url)
        .await
        .query_one(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname LIKE $1 AND datname <> $2",
            &[&format!("{}_%", db.prefix), &db.name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(open <= 3, "{open} connections open to tenant databases");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_budget_queues_then_answers_store_busy() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &db);
    cfg.stores[0].limits.max_connections = 2;
    cfg.stores[0].limits.acquire_timeout = Duration::from_millis(300);
    let engine = Engine::open(cfg).await.unwrap();
    let t = engine
        .create_tenant_with(slug("busy"), None, None, &place(Mode::Schema))
        .await
        .unwrap();
    let held_a = engine.session(&t).await.unwrap();
    let held_b = engine.session(&t).await.unwrap();
    let started = Instant::now();
    let third = engine.session(&t).await;
    let waited = started.elapsed();
    assert!(
        matches!(third, Err(Error::StoreBusy { .. })),
        "{:?}",
        third.err()
    );
    assert!(
        waited >= Duration::from_millis(250),
        "it queued first ({waited:?})"
    );
    // A connection coming back serves the queue.
    let waiter = {
        let (engine, t) = (engine.clone(), t.clone());
        tokio::spawn(async move { engine.session(&t).await.map(|_| ()) })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    held_a.commit().await.unwrap();
    waiter.await.unwrap().unwrap();
    drop(held_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_urls_are_sealed_in_the_catalog() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &db);
    let secret_url = db.url.replace("postgres@", "postgres:hunter2-secret@");
    cfg.stores[0].url = secret_url.clone();
    cfg.secret_key = Some(SecretKey::generate());
    let engine = Engine::open(cfg.clone()).await.unwrap();
    engine
        .create_tenant_with(slug("sealed"), None, None, &place(Mode::Schema))
        .await
        .unwrap();
    let record = engine.catalog().setting("store:pg").await.unwrap().unwrap();
    assert!(!record.contains("hunter2"), "{record}");
    assert!(record.contains("sealed:v1:"));
    drop(engine);
    let raw = std::fs::read(dir.path().join("catalog.db")).unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains("hunter2"));

    // Another process without the store in its config reaches it through the catalog...
    let mut no_stores = cfg.clone();
    no_stores.stores.clear();
    let engine = Engine::open(no_stores.clone()).await.unwrap();
    assert_eq!(members_seen(&engine, "sealed").await, 0);
    drop(engine);
    // ...but not with the wrong key.
    no_stores.secret_key = Some(SecretKey::generate());
    let err = Engine::open(no_stores)
        .await
        .err()
        .expect("wrong key refused");
    assert!(matches!(err, Error::Secrets(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_stores_modes_and_hostile_names_are_refused() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), &db)).await.unwrap();
    let nowhere = PlaceOptions {
        store: Some("nowhere\"; DROP DATABASE x; --".into()),
        mode: Some(Mode::Database),
        plan: None,
    };
    let err = engine
        .create_tenant_with(slug("x"), None, None, &nowhere)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownStore { .. }), "{err}");
    let sqlite_schema = PlaceOptions {
        store: Some("default".into()),
        mode: Some(Mode::Schema),
        plan: None,
    };
    let err = engine
        .create_tenant_with(slug("x"), None, None, &sqlite_schema)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ModeNotSupported { .. }), "{err}");
    // Nothing was written for either.
    assert!(engine.list_tenants().await.unwrap().is_empty());

    // Names built to break quoting are stored verbatim and never reach an identifier.
    let hostile = "Robert\"); DROP SCHEMA public CASCADE; --'\\";
    for mode in [Mode::Database, Mode::Schema, Mode::Shared] {
        let s = format!("q-{mode}");
        let t = engine
            .create_tenant_with(slug(&s), Some(hostile.into()), None, &place(mode))
            .await
            .unwrap();
        assert_eq!(t.name, hostile);
        assert_eq!(members_seen(&engine, &s).await, 0);
    }
    // A bad store configuration is refused before anything is created.
    let mut bad = config(&dir.path().join("other"), &db);
    bad.stores[0].database_prefix = "Bad\"Prefix".into();
    assert!(Engine::open(bad).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_answers_unavailable_quickly_and_recovery_is_automatic() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let proxy = Proxy::start(0).await;
    let port = proxy.port;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &db);
    cfg.stores[0].url = format!("postgres://postgres@127.0.0.1:{port}/{}", db.name);
    cfg.stores[0].limits.connect_timeout = Duration::from_millis(500);
    cfg.stores[0].limits.query_timeout = Duration::from_secs(2);
    let engine = Engine::open(cfg).await.unwrap();
    let t = engine
        .create_tenant_with(slug("flaky"), None, None, &place(Mode::Schema))
        .await
        .unwrap();
    assert_eq!(members_seen(&engine, "flaky").await, 0);

    proxy.cut();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..3 {
        let started = Instant::now();
        let result = async {
            let session = engine.session(&t).await?;
            session
                .client()
                .query_one("SELECT COUNT(*) FROM members", &[])
                .await
                .map_err(|e| Error::TenantDb(e.to_string()))?;
            session.commit().await
        }
        .await;
        let took = started.elapsed();
        assert!(result.is_err());
        assert!(
            took < Duration::from_secs(3),
            "gave up within the timeout ({took:?})"
        );
    }
    // The store answers `StoreUnavailable` (503 store_unavailable over HTTP).
    let err = engine.session(&t).await.err().expect("still down");
    assert!(matches!(err, Error::StoreUnavailable { .. }), "{err}");

    // The server comes back on the same address: the next request works, no restart.
    let _proxy = Proxy::start(port).await;
    let mut recovered = false;
    for _ in 0..50 {
        if let Ok(session) = engine.session(&t).await {
            if session.client().query_one("SELECT 1", &[]).await.is_ok() {
                recovered = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_session_ever_runs_with_another_tenants_context() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &db);
    // Few connections, many tenants: every connection serves many tenants in turn.
    cfg.stores[0].limits.max_connections = 4;
    cfg.stores[0].limits.acquire_timeout = Duration::from_secs(30);
    let engine = Engine::open(cfg).await.unwrap();
    let mut tenants = Vec::new();
    for i in 0..6 {
        let mode = if i % 2 == 0 {
            Mode::Schema
        } else {
            Mode::Shared
        };
        tenants.push(
            engine
                .create_tenant_with(slug(&format!("c{i}")), None, None, &place(mode))
                .await
                .unwrap(),
        );
    }
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..25 {
        for t in &tenants {
            let (engine, t) = (engine.clone(), t.clone());
            tasks.spawn(async move {
                let session = engine.session(&t).await.unwrap();
                let row = session
                    .client()
                    .query_one(
                        "SELECT current_setting('search_path'), \
                                current_setting('tenancy.tenant_id', true), \
                                current_schemas(false)::text",
                        &[],
                    )
                    .await
                    .unwrap();
                let (path, tenant_id): (String, Option<String>) = (row.get(0), row.get(1));
                match t.placement.mode {
                    Mode::Schema => {
                        assert_eq!(path, format!("\"{}\"", t.placement.location));
                        assert_eq!(tenant_id.as_deref().unwrap_or(""), "");
                    }
                    _ => {
                        assert_eq!(path, "\"tenancy_shared\"");
                        assert_eq!(tenant_id.as_deref(), Some(t.id.to_string().as_str()));
                    }
                }
                // Some sessions end in an error or are abandoned mid-transaction: their
                // connections must not carry anything to the next checkout.
                match round % 3 {
                    0 => session.commit().await.unwrap(),
                    1 => {
                        let _ = session.client().batch_execute("SELECT 1/0").await;
                        drop(session);
                    }
                    _ => drop(session),
                }
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    // 150 sessions went through at most 4 connections.
    let store = engine.pg_store("pg").unwrap();
    assert!(store.pools().open_connections() <= 4);
}

/// Names of the template databases of the test's store.
async fn templates(db: &TestDb) -> Vec<(String, bool)> {
    admin(&db.url)
        .await
        .query(
            "SELECT datname, datallowconn FROM pg_database WHERE datname LIKE $1 ORDER BY 1",
            &[&format!("{}\\_tpl\\_%", db.prefix)],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_creation_in_each_mode_makes_every_tenant_whole_and_skips_taken_slugs() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), &db)).await.unwrap();
    for (prefix, mode) in [
        ("db", Mode::Database),
        ("sc", Mode::Schema),
        ("sh", Mode::Shared),
    ] {
        engine
            .create_tenant_with(slug(&format!("{prefix}-taken")), None, None, &place(mode))
            .await
            .unwrap();
        let mut slugs: Vec<Slug> = (0..12).map(|i| slug(&format!("{prefix}-{i:02}"))).collect();
        slugs.insert(5, slug(&format!("{prefix}-taken")));
        slugs.push(slug(&format!("{prefix}-03")));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let progress = {
            let seen = Arc::clone(&seen);
            move |s: &Slug, r: Result<&tenancy::Tenant, &Error>| {
                seen.lock().unwrap().push((s.to_string(), r.is_ok()));
            }
        };
        let report = engine
            .create_tenants(slugs, &place(mode), Some(3), progress)
            .await
            .unwrap();
        assert_eq!(report.created.len(), 12, "{mode}: {:?}", report.failed);
        let failed: Vec<&str> = report.failed.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(failed.len(), 2, "{mode}: {failed:?}");
        assert!(failed.contains(&format!("{prefix}-taken").as_str()));
        assert!(failed.contains(&format!("{prefix}-03").as_str()));
        assert_eq!(seen.lock().unwrap().len(), 14, "progress saw every line");
        for t in &report.created {
            assert_eq!(t.status, TenantStatus::Active, "{}", t.slug);
            assert_eq!(t.placement.schema_version, 2, "{}", t.slug);
            assert_eq!(t.placement.mode, mode);
            let location = &t.placement.location;
            match mode {
                Mode::Database => assert!(database_exists(&db, location).await, "{location}"),
                Mode::Schema => assert!(schema_exists(&db, location).await, "{location}"),
                Mode::Shared => {}
            }
            // Every tenant is served, alone with its data.
            let session = engine.session(t).await.unwrap();
            session
                .client()
                .execute(
                    "INSERT INTO members (id, name) VALUES ($1, $2)",
                    &[&uuid::Uuid::now_v7().to_string(), &t.slug.as_str()],
                )
                .await
                .unwrap();
            session.commit().await.unwrap();
            assert_eq!(
                members_seen(&engine, t.slug.as_str()).await,
                1,
                "{}",
                t.slug
            );
        }
    }
    // Database tenants are copies of one template, closed to connections.
    let tpl = templates(&db).await;
    assert_eq!(tpl.len(), 1, "{tpl:?}");
    assert!(!tpl[0].1, "the template accepts no connections: {tpl:?}");
    assert!(tpl[0].0.contains("_tpl_v2_"), "{tpl:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_template_is_rebuilt_when_gone_and_replaced_by_a_new_migration() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (cfg, migrations) = with_migrations_folder(dir.path(), &db);
    let engine = Engine::open(cfg.clone()).await.unwrap();
    engine
        .create_tenant_with(slug("first"), None, None, &place(Mode::Database))
        .await
        .unwrap();
    let built = templates(&db).await;
    assert_eq!(built.len(), 1, "{built:?}");
    drop(engine);

    // Builds that processes left behind: one abandoned long ago (dropped), one recent
    // (perhaps still running: kept); and a database that only looks like a template
    // (another store's tenant, say): never ours to drop. The template is built again.
    let name = built[0].0.clone();
    let abandoned = format!("{}_tpl_b1000_0badc0de", db.prefix);
    let recent = format!("{}_tpl_b99999999999_0badc0de", db.prefix);
    let lookalike = format!("{}_tpl_b{}", db.prefix, "0".repeat(31));
    let c = admin(&db.url).await;
    c.batch_execute(&format!("DROP DATABASE \"{name}\""))
        .await
        .unwrap();
    for extra in [&abandoned, &recent, &lookalike] {
        c.batch_execute(&format!("CREATE DATABASE \"{extra}\""))
            .await
            .unwrap();
    }
    let engine = Engine::open(cfg.clone()).await.unwrap();
    let second = engine
        .create_tenant_with(slug("second"), None, None, &place(Mode::Database))
        .await
        .unwrap();
    assert_eq!(second.placement.schema_version, 2);
    assert_eq!(members_seen(&engine, "second").await, 0);
    let mut expected = vec![
        (name.clone(), false),
        (recent.clone(), true),
        (lookalike.clone(), true),
    ];
    expected.sort();
    let mut found = templates(&db).await;
    found.sort();
    assert_eq!(found, expected);
    for extra in [&recent, &lookalike] {
        c.batch_execute(&format!("DROP DATABASE \"{extra}\""))
            .await
            .unwrap();
    }
    drop(engine);

    // A new migration: a new template, the old one dropped, new tenants at version 3.
    let engine = add_migration_and_open(
        &migrations,
        "0003_notes.sql",
        "CREATE TABLE notes (id UUID PRIMARY KEY, body TEXT NOT NULL);\n",
        cfg,
    )
    .await;
    let third = engine
        .create_tenant_with(slug("third"), None, None, &place(Mode::Database))
        .await
        .unwrap();
    assert_eq!(third.placement.schema_version, 3);
    let session = engine.session(&third).await.unwrap();
    session
        .client()
        .query("SELECT * FROM notes", &[])
        .await
        .unwrap();
    session.commit().await.unwrap();
    let now = templates(&db).await;
    assert_eq!(now.len(), 1, "{now:?}");
    assert!(now[0].0.contains("_tpl_v3_"), "{now:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_migration_keeps_to_half_the_stores_connection_budget() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut cfg, migrations) = with_migrations_folder(dir.path(), &db);
    cfg.stores[0].limits.max_connections = 4;
    cfg.stores[0].limits.acquire_timeout = Duration::from_secs(30);
    let engine = Engine::open(cfg.clone()).await.unwrap();
    let slugs = (0..8).map(|i| slug(&format!("s{i}"))).collect();
    let report = engine
        .create_tenants(slugs, &place(Mode::Schema), None, |_, _| {})
        .await
        .unwrap();
    assert_eq!(report.created.len(), 8);
    drop(engine);

    // Each tenant's migration holds its connection for a while; a watcher samples how
    // many run at once.
    let engine = add_migration_and_open(
        &migrations,
        "0003_slow.sql",
        "CREATE TABLE slow_marker AS SELECT 1 AS one FROM pg_sleep(0.3);\n",
        cfg,
    )
    .await;
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (done, url) = (Arc::clone(&done), db.url.clone());
        tokio::spawn(async move {
            let c = admin(&url).await;
            let mut most = 0i64;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let n: i64 = c
                    .query_one(
                        "SELECT COUNT(*) FROM pg_stat_activity WHERE state = 'active' \
                         AND query LIKE '%slow_marker%' AND pid <> pg_backend_pid() \
                         AND datname = current_database()",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                most = most.max(n);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            most
        })
    };
    let options = MigrateOptions {
        concurrency: Some(16),
        ..MigrateOptions::default()
    };
    let report = engine
        .migrate(options, Arc::new(AtomicBool::new(false)), |_| {})
        .await
        .unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let most = watcher.await.unwrap();
    assert_eq!(report.migrated, 8, "{:?}", report.failed);
    assert!(most >= 1, "the watcher saw the migrations run");
    assert!(
        most <= 2,
        "{most} tenants migrated at once on a budget of 4 connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_schemas_is_created_whole_or_not_at_all() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), &db)).await.unwrap();
    let pg = engine.pg_store("pg").unwrap();
    let migrations = engine.migrations();
    assert_eq!(
        pg.provision_schemas(&["t_group_a", "t_group_b"], &migrations)
            .await
            .unwrap(),
        2
    );
    assert!(schema_exists(&db, "t_group_a").await && schema_exists(&db, "t_group_b").await);
    // One schema of the group cannot be built (a table of its name is in the way): the
    // others are not left behind either.
    admin(&db.url)
        .await
        .batch_execute("CREATE SCHEMA t_group_d; CREATE TABLE t_group_d.members (x int);")
        .await
        .unwrap();
    let err = pg
        .provision_schemas(&["t_group_c", "t_group_d", "t_group_e"], &migrations)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("members"), "{err}");
    assert!(!schema_exists(&db, "t_group_c").await);
    assert!(!schema_exists(&db, "t_group_e").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_database_tenants_share_one_template_build() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), &db)).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10 {
        let engine = engine.clone();
        tasks.spawn(async move {
            engine
                .create_tenant_with(slug(&format!("c{i}")), None, None, &place(Mode::Database))
                .await
        });
    }
    while let Some(done) = tasks.join_next().await {
        let tenant = done.unwrap().unwrap();
        assert_eq!(tenant.status, TenantStatus::Active);
    }
    assert_eq!(templates(&db).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_failing_for_one_percent_of_schemas_fails_only_those() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (cfg, migrations) = with_migrations_folder(dir.path(), &db);
    let engine = Engine::open(cfg.clone()).await.unwrap();
    let slugs = (0..100).map(|i| slug(&format!("s{i:03}"))).collect();
    let report = engine
        .create_tenants(slugs, &place(Mode::Schema), None, |_, _| {})
        .await
        .unwrap();
    assert_eq!(report.created.len(), 100, "{:?}", report.failed);
    // One tenant's data breaks the coming unique index.
    let bad = engine.tenant(&slug("s042")).await.unwrap();
    let session = engine.session(&bad).await.unwrap();
    session
        .client()
        .batch_execute(
            "INSERT INTO members (id, name, class) VALUES ('m1', 'Alva', 'mage'), ('m2', 'Brim', 'mage')",
        )
        .await
        .unwrap();
    session.commit().await.unwrap();
    drop(engine);

    let engine = add_migration_and_open(
        &migrations,
        "0003_unique_class.sql",
        "CREATE UNIQUE INDEX members_class_key ON members (class);\n",
        cfg,
    )
    .await;
    let report = engine
        .migrate(
            MigrateOptions::default(),
            Arc::new(AtomicBool::new(false)),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(report.migrated, 99);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].slug, "s042");
    assert!(
        report.failed[0]
            .error
            .as_deref()
            .unwrap()
            .contains("0003_unique_class.sql"),
        "{:?}",
        report.failed[0]
    );
    let status = engine.status().await.unwrap();
    assert_eq!(status.failed_migrations.len(), 1);
    for t in engine.list_tenants().await.unwrap() {
        let expected = if t.slug.as_str() == "s042" { 2 } else { 3 };
        assert_eq!(t.placement.schema_version, expected, "{}", t.slug);
        let version: i64 = scalar(
            &db,
            &format!(
                "SELECT MAX(version) FROM \"{}\"._tenancy_migrations",
                t.placement.location
            ),
        )
        .await;
        assert_eq!(version, expected, "{}", t.slug);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_cancelled_mid_transaction_never_pools_its_connection() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut cfg, migrations) = with_migrations_folder(dir.path(), &db);
    cfg.stores[0].limits.max_connections = 2;
    let engine = Engine::open(cfg.clone()).await.unwrap();
    let slugs = (0..4).map(|i| slug(&format!("s{i}"))).collect();
    engine
        .create_tenants(slugs, &place(Mode::Schema), None, |_, _| {})
        .await
        .unwrap();
    drop(engine);
    let engine = add_migration_and_open(
        &migrations,
        "0003_slow.sql",
        "CREATE TABLE half_done (one int);\nSELECT pg_sleep(2);\n",
        cfg,
    )
    .await;
    let running = {
        let engine = engine.clone();
        tokio::spawn(async move {
            engine
                .migrate(
                    MigrateOptions::default(),
                    Arc::new(AtomicBool::new(false)),
                    |_| {},
                )
                .await
        })
    };
    // Cancel the run while a tenant's migration sleeps inside its transaction.
    let watcher = admin(&db.url).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = watcher
            .query_one(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE state = 'active' \
                 AND query LIKE '%pg_sleep(2)%' AND pid <> pg_backend_pid() \
                 AND datname = current_database()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the migration never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.abort();
    assert!(running.await.unwrap_err().is_cancelled());

    // Sessions on every tenant reuse the store's pool: none of them may commit the
    // cancelled transaction's half (a table without its ledger row).
    for i in 0..4 {
        let t = engine.tenant(&slug(&format!("s{i}"))).await.unwrap();
        let session = engine.session(&t).await.unwrap();
        session
            .client()
            .query("SELECT COUNT(*) FROM members", &[])
            .await
            .unwrap();
        session.commit().await.unwrap();
    }
    let c = admin(&db.url).await;
    for t in engine.list_tenants().await.unwrap() {
        let schema = &t.placement.location;
        let row = c
            .query_one(
                &format!(
                    "SELECT to_regclass('\"{schema}\".half_done') IS NOT NULL, \
                     (SELECT MAX(version) FROM \"{schema}\"._tenancy_migrations)"
                ),
                &[],
            )
            .await
            .unwrap();
        let (has_table, version): (bool, i64) = (row.get(0), row.get(1));
        assert_eq!(
            has_table,
            version == 3,
            "{}: table {has_table}, ledger {version}",
            t.slug
        );
    }
}
