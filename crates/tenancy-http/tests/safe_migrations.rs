//! Migrations that cannot surprise, once per backend (`four_modes!`): a migration set is
//! rehearsed wherever it will run before any tenant is touched (a dry run too); a canary
//! goes first by default; a run stops after too many failures; and a tenant whose
//! migration failed answers `tenant_migration_failed` — not `tenant_migrating`, and
//! without a `Retry-After` that promises a retry will help — while `/readyz` says the
//! fleet is degraded.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::{Backend, Server, ADMIN_TOKEN};
use reqwest::Method;
use serde_json::{json, Value};
use tenancy::{Error, MigrateOptions, MigrationSource, Mode};
use tenancy_http::HttpConfig;

/// A server on `backend` whose migrations are the guild's, in a folder of its own.
async fn guild_server(backend: Backend) -> Option<Server> {
    Server::start_on_with(backend, HttpConfig::default(), |config| {
        let folder = config.data_dir.join("migrations");
        std::fs::create_dir_all(&folder).unwrap();
        for (file, sql) in tenancy::migrations::GUILD_MIGRATIONS {
            std::fs::write(folder.join(file), sql).unwrap();
        }
        config.migrations = MigrationSource::Folder(folder);
    })
    .await
}

/// A second server on the same catalog and stores, with `file` added to the folder.
async fn with_migration(before: &Server, file: &str, sql: &str) -> Server {
    let config = before.engine.config().clone();
    let MigrationSource::Folder(folder) = &config.migrations else {
        unreachable!("a folder of the test's own");
    };
    std::fs::write(folder.join(file), sql).unwrap();
    Server::start_with_engine_config(tempfile::tempdir().unwrap(), config, HttpConfig::default())
        .await
}

async fn member(s: &Server, slug: &str, name: &str, class: &str) {
    let (status, body) = s
        .json(
            Method::POST,
            &format!("/t/{slug}/v1/data/members"),
            Some(ADMIN_TOKEN),
            Some(json!({ "name": name, "class": class })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

async fn schema_version(s: &Server, slug: &str) -> i64 {
    let tenant = s
        .engine
        .tenant(&tenancy::Slug::parse(slug).unwrap())
        .await
        .unwrap();
    tenant.placement.schema_version
}

async fn migrate(s: &Server, options: MigrateOptions) -> tenancy::Result<tenancy::MigrateReport> {
    s.engine
        .migrate(options, Arc::new(AtomicBool::new(false)), |_| {})
        .await
}

four_modes!(a_broken_migration_fails_its_rehearsal_and_touches_no_tenant);

async fn a_broken_migration_fails_its_rehearsal_and_touches_no_tenant(backend: Backend) {
    let Some(before) = guild_server(backend).await else {
        return;
    };
    for slug in ["red", "blue"] {
        before.create_tenant(slug).await;
    }
    let s = with_migration(
        &before,
        "0003_broken.sql",
        "CREATE TABLE notes (id TEXT PRIMARY KEY,, title TEXT);",
    )
    .await;

    for dry_run in [true, false] {
        let options = MigrateOptions {
            dry_run,
            canary: Some(0),
            ..MigrateOptions::default()
        };
        let error = migrate(&s, options).await.unwrap_err();
        assert!(
            matches!(error, Error::RehearsalFailed { .. }),
            "dry run {dry_run}: {error}"
        );
        let text = error.to_string();
        assert!(text.contains("0003_broken.sql"), "{text}");
        assert!(text.contains("no tenant was touched"), "{text}");
    }
    for slug in ["red", "blue"] {
        assert_eq!(schema_version(&s, slug).await, 2, "{slug}");
    }
    let status = s.engine.status().await.unwrap();
    assert!(status.failed_migrations.is_empty(), "{status:?}");
    // Nothing left behind by the rehearsal on PostgreSQL either.
    if backend != Backend::Sqlite {
        let (client, conn) =
            tokio_postgres::connect(&s.engine.config().stores[0].url, tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(conn);
        let left = client
            .query_one(
                "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'rehearse\\_%'",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(left.get::<_, i64>(0), 0);
    }
}

/// On one PostgreSQL store with `schema` and `shared` tenants, a migration `shared` mode
/// cannot take (a view) is refused before the `schema` tenants move: the fleet is never
/// left at two versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_shared_mode_refuses_moves_no_tenant_of_any_mode() {
    let Some(before) = guild_server(Backend::PgSchema).await else {
        return;
    };
    before.create_tenant("red").await;
    let (status, body) = before
        .json(
            Method::POST,
            "/v1/tenants",
            Some(ADMIN_TOKEN),
            Some(json!({ "slug": "blue", "mode": "shared" })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let s = with_migration(
        &before,
        "0003_names.sql",
        "CREATE VIEW member_names AS SELECT name FROM members;",
    )
    .await;
    for dry_run in [true, false] {
        let options = MigrateOptions {
            dry_run,
            ..MigrateOptions::default()
        };
        let error = migrate(&s, options).await.unwrap_err();
        match &error {
            Error::RehearsalFailed { mode, .. } => assert_eq!(mode, "shared", "{error}"),
            other => panic!("dry run {dry_run}: {other}"),
        }
    }
    assert_eq!(schema_version(&s, "red").await, 2);
    assert_eq!(schema_version(&s, "blue").await, 2);
    let red = s
        .engine
        .tenant(&tenancy::Slug::parse("red").unwrap())
        .await
        .unwrap();
    assert_eq!(red.placement.mode, Mode::Schema);
}

four_modes!(a_failed_migration_is_its_own_problem_and_the_canary_spares_the_fleet);

async fn a_failed_migration_is_its_own_problem_and_the_canary_spares_the_fleet(backend: Backend) {
    let Some(before) = guild_server(backend).await else {
        return;
    };
    let slugs = ["t1", "t2", "t3", "t4", "t5"];
    for slug in slugs {
        before.create_tenant(slug).await;
        // Two members of one class: a unique index over classes fails on this tenant's
        // data, which no rehearsal (on an empty schema) can see.
        member(&before, slug, "Thrall", "shaman").await;
        member(&before, slug, "Drek'Thar", "shaman").await;
    }
    let s = with_migration(
        &before,
        "0003_unique_classes.sql",
        "CREATE UNIQUE INDEX members_class_key ON members (class);",
    )
    .await;

    // The default: one canary. It fails; no other tenant is touched.
    let report = migrate(&s, MigrateOptions::default()).await.unwrap();
    assert!(report.canary_failed, "{report:?}");
    // (Shared tenants move together; the canary is a group of one all the same.)
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.migrated, 0);
    let canary = report.failed[0].slug.clone();

    // The canary answers its own problem: no retry promised.
    let resp = s
        .call(
            Method::GET,
            &format!("/t/{canary}/v1/data/members"),
            Some(ADMIN_TOKEN),
            &[],
            None,
        )
        .await;
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers().get("retry-after").is_none());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "tenant_migration_failed", "{body}");
    assert!(
        !body["detail"]
            .as_str()
            .unwrap()
            .contains("members_class_key"),
        "the migration's error stays in the log: {body}"
    );
    // The others were never tried: they are behind, being migrated.
    let other = slugs.iter().find(|s| **s != canary).unwrap();
    let (status, body) = s
        .json(
            Method::GET,
            &format!("/t/{other}/v1/data/members"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("tenant_migrating"))
    );
    // Ready (other tenants are served), and the fleet is degraded.
    let (status, body) = s.json(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["fleet"]["status"], "degraded", "{body}");
    assert_eq!(body["fleet"]["failed_migrations"], 1, "{body}");
    let status = s.engine.status().await.unwrap();
    assert_eq!(status.failed_migrations.len(), 1, "{status:?}");

    // Without a canary, one at a time, at most two failures: the run stops there.
    let report = migrate(
        &s,
        MigrateOptions {
            canary: Some(0),
            max_failures: Some(2),
            concurrency: Some(1),
            ..MigrateOptions::default()
        },
    )
    .await
    .unwrap();
    if backend == Backend::PgShared {
        // One migration of the shared tables for all of them: every tenant fails at once.
        assert_eq!(report.failed.len(), slugs.len(), "{report:?}");
    } else {
        assert_eq!(report.failed.len(), 2, "{report:?}");
        assert!(report.failure_limit_reached, "{report:?}");
        assert!(report.interrupted, "{report:?}");
    }
    for slug in slugs {
        assert_eq!(schema_version(&s, slug).await, 2, "{slug}");
    }
}
