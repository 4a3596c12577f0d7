//! The engine against real SQLite files in a fresh folder per test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tenancy::catalog::{NewTenant, TenantFilter};
use tenancy::{
    CacheConfig, Engine, EngineConfig, Error, MigrateOptions, MigrationSource, Mode, Placement,
    Slug, TenantId, TenantStatus,
};

fn slug(s: &str) -> Slug {
    Slug::parse(s).unwrap()
}

async fn open(dir: &Path) -> Engine {
    Engine::open(EngineConfig::new(dir)).await.unwrap()
}

async fn open_with_migrations(dir: &Path, migrations: &Path) -> tenancy::Result<Engine> {
    let mut config = EngineConfig::new(dir);
    config.migrations = MigrationSource::Folder(migrations.to_path_buf());
    Engine::open(config).await
}

fn write_guild(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (file, sql) in tenancy::migrations::GUILD_MIGRATIONS {
        std::fs::write(dir.join(file), sql).unwrap();
    }
}

async fn migrate(engine: &Engine) -> tenancy::Result<tenancy::MigrateReport> {
    engine
        .migrate(
            MigrateOptions::default(),
            Arc::new(AtomicBool::new(false)),
            |_| {},
        )
        .await
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn count(db: &mut tenancy::rusqlite::Connection, sql: &str) -> tenancy::Result<i64> {
    db.query_row(sql, [], |r| r.get(0))
        .map_err(|e| Error::TenantDb(e.to_string()))
}

#[tokio::test]
async fn provisions_a_tenant_with_the_full_schema() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    let tenant = engine
        .create_tenant(slug("acme"), Some("Acme".into()))
        .await
        .unwrap();
    assert_eq!(tenant.status, TenantStatus::Active);
    assert_eq!(tenant.placement.mode, Mode::Database);
    assert_eq!(tenant.placement.schema_version, 2);
    assert_eq!(
        files_in(&dir.path().join("tenants")),
        vec![format!("{}.db", tenant.id)]
    );
    let tables = engine
        .with_tenant_db(&tenant.slug, |db| {
            count(
                db,
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ('members','raids','items','auctions','bids')",
            )
        })
        .await
        .unwrap();
    assert_eq!(tables, 5);
    let journal = engine.catalog().journal(tenant.id).await.unwrap();
    let events: Vec<_> = journal.iter().map(|j| j.event.as_str()).collect();
    assert_eq!(events, ["provision.begin", "provision.done"]);
}

#[tokio::test]
async fn two_tenants_never_see_each_others_rows() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    for (s, member) in [("acme", "Thrall"), ("globex", "Jaina")] {
        engine.create_tenant(slug(s), None).await.unwrap();
        engine
            .with_tenant_db(&slug(s), move |db| {
                db.execute(
                    "INSERT INTO members (id, name) VALUES (?1, ?2)",
                    [uuid_like(member), member.to_owned()],
                )
                .map_err(|e| Error::TenantDb(e.to_string()))?;
                Ok(())
            })
            .await
            .unwrap();
    }
    for (s, member) in [("acme", "Thrall"), ("globex", "Jaina")] {
        let names = engine
            .with_tenant_db(&slug(s), |db| {
                let mut stmt = db
                    .prepare("SELECT name FROM members")
                    .map_err(|e| Error::TenantDb(e.to_string()))?;
                let names = stmt
                    .query_map([], |r| r.get::<_, String>(0))
                    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| Error::TenantDb(e.to_string()))?;
                Ok(names)
            })
            .await
            .unwrap();
        assert_eq!(names, vec![member.to_owned()], "tenant {s}");
    }
}

fn uuid_like(seed: &str) -> String {
    format!("id-{seed}")
}

#[tokio::test]
async fn duplicate_and_invalid_input_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    engine.create_tenant(slug("acme"), None).await.unwrap();
    let err = engine.create_tenant(slug("acme"), None).await.unwrap_err();
    assert!(matches!(err, Error::TenantExists { .. }), "{err}");
    for bad_name in ["", "   ", "a\nb", &"x".repeat(201)] {
        let err = engine
            .create_tenant(slug("other"), Some(bad_name.to_owned()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidName { .. }),
            "{bad_name:?}: {err}"
        );
    }
    assert_eq!(engine.list_tenants().await.unwrap().len(), 1);
    assert_eq!(files_in(&dir.path().join("tenants")).len(), 1);
    let err = engine.tenant(&slug("nobody")).await.unwrap_err();
    assert!(matches!(err, Error::TenantNotFound { .. }));
}

#[tokio::test]
async fn delete_removes_the_file_and_frees_the_slug() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    let first = engine.create_tenant(slug("acme"), None).await.unwrap();
    // Open a handle so that deletion has to close it.
    engine
        .with_tenant_db(&first.slug, |db| count(db, "SELECT COUNT(*) FROM members"))
        .await
        .unwrap();
    let deleted = engine.delete_tenant(&slug("acme")).await.unwrap();
    assert_eq!(deleted.status, TenantStatus::Deleted);
    assert!(files_in(&dir.path().join("tenants")).is_empty());
    assert!(engine.tenant(&slug("acme")).await.is_err());
    let second = engine.create_tenant(slug("acme"), None).await.unwrap();
    assert_ne!(first.id, second.id);
    // The deleted tenant is kept in the catalog's history.
    let all = engine
        .catalog()
        .list_tenants(&TenantFilter {
            include_deleted: true,
            ..TenantFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
}

/// Leaves a tenant in `provisioning`, owned by `dead`, which the caller then drops (so its
/// liveness lock is released, as when the process is killed).
async fn abandoned_provisioning(
    dead: &Engine,
    dir: &Path,
    slug_str: &str,
    place_file: bool,
) -> TenantId {
    let id = TenantId::generate();
    let location = format!("{id}.db");
    dead.catalog()
        .insert_tenant(&NewTenant {
            id,
            slug: slug(slug_str),
            name: slug_str.to_owned(),
            placement: Placement {
                store: "default".into(),
                mode: Mode::Database,
                location: location.clone(),
                schema_version: 0,
            },
            owner: None,
            plan: None,
        })
        .await
        .unwrap();
    if place_file {
        dead.store()
            .build_file(&location, &dead.migrations())
            .unwrap();
    } else {
        std::fs::write(dir.join("tenants").join(format!("{location}.tmp")), b"half").unwrap();
    }
    id
}

#[tokio::test]
async fn recovery_rolls_back_or_completes_what_a_dead_process_left() {
    let dir = tempfile::tempdir().unwrap();
    let dead = open(dir.path()).await;
    let rolled_back = abandoned_provisioning(&dead, dir.path(), "half", false).await;
    let completed = abandoned_provisioning(&dead, dir.path(), "whole", true).await;
    drop(dead);
    let orphan = TenantId::generate();
    std::fs::write(
        dir.path().join("tenants").join(format!("{orphan}.db")),
        b"x",
    )
    .unwrap();

    let engine = open(dir.path()).await;
    let report = engine.recovery();
    assert_eq!(report.failed, vec!["half".to_owned()]);
    assert_eq!(report.completed, vec!["whole".to_owned()]);
    assert_eq!(report.orphans_removed, 1);

    let half = engine.tenant(&slug("half")).await.unwrap();
    assert_eq!(half.id, rolled_back);
    assert_eq!(half.status, TenantStatus::Failed);
    assert!(half.error.unwrap().contains("tenancy tenant retry half"));
    let whole = engine.tenant(&slug("whole")).await.unwrap();
    assert_eq!(whole.id, completed);
    assert_eq!(whole.status, TenantStatus::Active);
    assert_eq!(whole.placement.schema_version, 2);
    assert_eq!(
        files_in(&dir.path().join("tenants")),
        vec![format!("{completed}.db")]
    );

    let retried = engine.retry_tenant(&slug("half")).await.unwrap();
    assert_eq!(retried.status, TenantStatus::Active);
    assert_eq!(retried.placement.schema_version, 2);
    let err = engine.retry_tenant(&slug("half")).await.unwrap_err();
    assert!(matches!(err, Error::InvalidTransition { .. }), "{err}");
}

#[tokio::test]
async fn recovery_leaves_a_live_process_alone() {
    let dir = tempfile::tempdir().unwrap();
    let live = open(dir.path()).await;
    let id = TenantId::generate();
    live.catalog()
        .insert_tenant(&NewTenant {
            id,
            slug: slug("busy"),
            name: "busy".into(),
            placement: Placement {
                store: "default".into(),
                mode: Mode::Database,
                location: format!("{id}.db"),
                schema_version: 0,
            },
            owner: None,
            plan: None,
        })
        .await
        .unwrap();
    let tmp = dir.path().join("tenants").join(format!("{id}.db.tmp"));
    std::fs::write(&tmp, b"in progress").unwrap();

    let other = open(dir.path()).await;
    assert!(other.recovery().is_empty(), "{:?}", other.recovery());
    assert_eq!(
        other.tenant(&slug("busy")).await.unwrap().status,
        TenantStatus::Provisioning
    );
    assert!(tmp.exists());
    let err = other.delete_tenant(&slug("busy")).await.unwrap_err();
    assert!(matches!(err, Error::InvalidTransition { .. }), "{err}");
    drop(live);
}

#[tokio::test]
async fn migrate_brings_every_tenant_to_the_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let migrations = dir.path().join("migrations");
    write_guild(&migrations);
    let data = dir.path().join("data");
    let engine = open_with_migrations(&data, &migrations).await.unwrap();
    for s in ["a", "b", "c"] {
        engine.create_tenant(slug(s), None).await.unwrap();
    }
    drop(engine);
    std::fs::write(
        migrations.join("0003_notes.sql"),
        "CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT NOT NULL);",
    )
    .unwrap();
    let engine = open_with_migrations(&data, &migrations).await.unwrap();
    let report = migrate(&engine).await.unwrap();
    assert_eq!(report.migrated, 3);
    assert!(report.failed.is_empty());
    for t in engine.list_tenants().await.unwrap() {
        assert_eq!(t.placement.schema_version, 3);
        let n = engine
            .with_tenant_db(&t.slug, |db| count(db, "SELECT COUNT(*) FROM notes"))
            .await
            .unwrap();
        assert_eq!(n, 0);
    }
    // Nothing left to do: no tenant is touched.
    let again = migrate(&engine).await.unwrap();
    assert_eq!(again.pending.len(), 0);
    // New tenants get every migration.
    let d = engine.create_tenant(slug("d"), None).await.unwrap();
    assert_eq!(d.placement.schema_version, 3);
}

#[tokio::test]
async fn a_failing_migration_leaves_its_tenant_on_the_previous_version() {
    let dir = tempfile::tempdir().unwrap();
    let migrations = dir.path().join("migrations");
    write_guild(&migrations);
    let data = dir.path().join("data");
    let engine = open_with_migrations(&data, &migrations).await.unwrap();
    for s in ["a", "b", "c"] {
        engine.create_tenant(slug(s), None).await.unwrap();
    }
    // Tenant b has data that the new unique index refuses.
    engine
        .with_tenant_db(&slug("b"), |db| {
            db.execute_batch(
                "INSERT INTO members (id, name, class) VALUES ('1', 'x', 'mage'), ('2', 'y', 'mage');",
            )
            .map_err(|e| Error::TenantDb(e.to_string()))
        })
        .await
        .unwrap();
    drop(engine);
    std::fs::write(
        migrations.join("0003_unique_class.sql"),
        "CREATE TABLE extra (id TEXT PRIMARY KEY);\nCREATE UNIQUE INDEX members_class_key ON members (class);",
    )
    .unwrap();
    let engine = open_with_migrations(&data, &migrations).await.unwrap();
    let report = migrate(&engine).await.unwrap();
    assert_eq!(report.migrated, 2);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].slug, "b");
    assert!(report.failed[0]
        .error
        .as_deref()
        .unwrap()
        .contains("0003_unique_class.sql"));
    let b = engine.tenant(&slug("b")).await.unwrap();
    assert_eq!(b.placement.schema_version, 2);
    // One transaction per tenant: the table created before the failing statement is gone.
    let extra = engine
        .with_tenant_db(&slug("b"), |db| {
            count(
                db,
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'extra'",
            )
        })
        .await
        .unwrap();
    assert_eq!(extra, 0);
    let status = engine.status().await.unwrap();
    assert_eq!(status.failed_migrations.len(), 1);
    assert_eq!(status.failed_migrations[0].slug, "b");

    // Fixing the data and rerunning finishes the job and clears the failure.
    engine
        .with_tenant_db(&slug("b"), |db| {
            db.execute("UPDATE members SET class = 'priest' WHERE id = '2'", [])
                .map_err(|e| Error::TenantDb(e.to_string()))
        })
        .await
        .unwrap();
    let report = migrate(&engine).await.unwrap();
    assert_eq!((report.migrated, report.failed.len()), (1, 0));
    assert!(engine.status().await.unwrap().failed_migrations.is_empty());
}

#[tokio::test]
async fn a_changed_migration_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let migrations = dir.path().join("migrations");
    write_guild(&migrations);
    let data = dir.path().join("data");
    let engine = open_with_migrations(&data, &migrations).await.unwrap();
    engine.create_tenant(slug("a"), None).await.unwrap();
    drop(engine);
    let file = migrations.join("0002_auctions.sql");
    let mut sql = std::fs::read_to_string(&file).unwrap();
    sql.push_str("\nCREATE TABLE sneaky (id TEXT);\n");
    std::fs::write(&file, sql).unwrap();

    let engine = open_with_migrations(&data, &migrations).await.unwrap();
    let err = migrate(&engine).await.unwrap_err();
    assert!(matches!(err, Error::MigrationChanged { .. }), "{err}");
    assert!(err.to_string().contains("0002_auctions.sql"), "{err}");
    let err = engine.create_tenant(slug("b"), None).await.unwrap_err();
    assert!(matches!(err, Error::MigrationChanged { .. }), "{err}");
    assert!(engine.tenant(&slug("b")).await.is_err(), "nothing created");
}

#[tokio::test]
async fn a_bad_migrations_folder_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let migrations = dir.path().join("migrations");
    write_guild(&migrations);
    std::fs::write(migrations.join("3_bad-name.sql"), "SELECT 1;").unwrap();
    let err = open_with_migrations(&dir.path().join("data"), &migrations)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("3_bad-name.sql"), "{err}");
    let err = open_with_migrations(&dir.path().join("data"), &dir.path().join("missing"))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::InvalidMigrations(_)), "{err}");
}

#[tokio::test]
async fn one_migrate_at_a_time_and_a_dead_holder_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let holder = open(dir.path()).await;
    holder.catalog().acquire_lock("migrate").await.unwrap();
    let other = open(dir.path()).await;
    other.create_tenant(slug("a"), None).await.unwrap();
    let mut config = EngineConfig::new(dir.path());
    config.migrations = MigrationSource::Folder({
        let m = dir.path().join("m");
        write_guild(&m);
        std::fs::write(m.join("0003_x.sql"), "CREATE TABLE x (id TEXT);").unwrap();
        m
    });
    let newer = Engine::open(config).await.unwrap();
    let err = migrate(&newer).await.unwrap_err();
    assert!(matches!(err, Error::OperationInProgress { .. }), "{err}");
    drop(holder);
    let report = migrate(&newer).await.unwrap();
    assert_eq!(report.migrated, 1);
}

#[tokio::test]
async fn the_handle_cache_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new(dir.path());
    config.cache = CacheConfig {
        max_open: 3,
        idle: std::time::Duration::from_secs(60),
        ..CacheConfig::default()
    };
    let engine = Engine::open(config).await.unwrap();
    for i in 0..10 {
        let s = slug(&format!("t{i}"));
        engine.create_tenant(s.clone(), None).await.unwrap();
        engine
            .with_tenant_db(&s, |db| count(db, "SELECT 1"))
            .await
            .unwrap();
    }
    assert!(
        engine.store().open_handles() <= 3,
        "{}",
        engine.store().open_handles()
    );
    // Evicted tenants open again on demand.
    for i in 0..10 {
        let n = engine
            .with_tenant_db(&slug(&format!("t{i}")), |db| {
                count(db, "SELECT COUNT(*) FROM members")
            })
            .await
            .unwrap();
        assert_eq!(n, 0);
    }
}

#[tokio::test]
async fn the_admin_token_is_created_once_and_only_its_hash_stored() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    let (token, created) = engine.admin_token(None).await.unwrap();
    let secret = created.expect("first start creates a token");
    assert!(token.verify(&secret));
    let stored = engine
        .catalog()
        .setting("admin_token_sha256")
        .await
        .unwrap()
        .unwrap();
    assert!(!stored.contains(&secret[10..]));
    let (again, created) = engine.admin_token(None).await.unwrap();
    assert!(created.is_none());
    assert!(again.verify(&secret));
    let (configured, _) = engine
        .admin_token(Some("from-the-environment"))
        .await
        .unwrap();
    assert!(configured.verify("from-the-environment"));
    assert!(!configured.verify(&secret));
}
