//! A new tenant migration, over HTTP and the engine, once per backend (`four_modes!`):
//! tenants are created over HTTP on the guild schema, a migration is added to the folder,
//! `Engine::migrate` brings every tenant to it, and the data API serves the new table in
//! every tenant: its UNIQUE column refuses duplicates with a 409 naming the constraint,
//! per tenant, and no tenant sees another's rows.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::{Backend, Server, ADMIN_TOKEN};
use reqwest::Method;
use serde_json::{json, Value};
use tenancy::{MigrateOptions, MigrationSource};
use tenancy_http::HttpConfig;

/// Written once, for one tenant: a UNIQUE column (whose constraint PostgreSQL names
/// `notes_title_key`) and an index.
const NOTES_SQL: &str = "\
CREATE TABLE notes (
    id    TEXT PRIMARY KEY,
    title TEXT NOT NULL UNIQUE,
    body  TEXT
);
CREATE INDEX notes_body_idx ON notes (body);
";

const SLUGS: [&str; 3] = ["red", "blue", "green"];

/// A data API call in tenant `slug`, as the platform administrator.
async fn data(
    s: &Server,
    method: Method,
    slug: &str,
    rest: &str,
    body: Option<Value>,
) -> (u16, Value) {
    s.json(
        method,
        &format!("/t/{slug}/v1/data/{rest}"),
        Some(ADMIN_TOKEN),
        body,
    )
    .await
}

/// The `data` of a successful list.
async fn rows(s: &Server, slug: &str, rest: &str) -> Vec<Value> {
    let (status, body) = data(s, Method::GET, slug, rest, None).await;
    assert_eq!(status, 200, "{slug}: GET {rest}: {body}");
    body["data"].as_array().expect("data").clone()
}

fn field(rows: &[Value], name: &str) -> Vec<String> {
    rows.iter()
        .map(|r| r[name].as_str().expect("text").to_owned())
        .collect()
}

/// The tenant's `schema_version`, over the control plane.
async fn schema_version(s: &Server, slug: &str) -> Value {
    let (status, body) = s
        .json(
            Method::GET,
            &format!("/v1/tenants/{slug}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["schema_version"].clone()
}

four_modes!(a_new_migration_reaches_every_tenant_and_keeps_them_apart);

async fn a_new_migration_reaches_every_tenant_and_keeps_them_apart(backend: Backend) {
    // The guild migrations in a folder of this test's own.
    let Some(before) = Server::start_on_with(backend, HttpConfig::default(), |config| {
        let folder = config.data_dir.join("migrations");
        std::fs::create_dir_all(&folder).unwrap();
        for (file, sql) in tenancy::migrations::GUILD_MIGRATIONS {
            std::fs::write(folder.join(file), sql).unwrap();
        }
        config.migrations = MigrationSource::Folder(folder);
    })
    .await
    else {
        return;
    };
    for slug in SLUGS {
        before.create_tenant(slug).await;
        let (status, body) = data(
            &before,
            Method::POST,
            slug,
            "members",
            Some(json!({ "name": format!("founder of {slug}") })),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(schema_version(&before, slug).await, 2);
        let (status, body) = data(&before, Method::GET, slug, "notes", None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (404, Some("table_not_found")),
            "{body}"
        );
    }
    // A suspended tenant is migrated too.
    let (status, body) = before
        .json(
            Method::POST,
            "/v1/tenants/green/suspend",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // The migration is added, and a server started on the same catalog and stores: the
    // migration set is read when the engine opens. (`before` keeps the PostgreSQL
    // database alive and serves nothing more.)
    let config = before.engine.config().clone();
    let MigrationSource::Folder(folder) = &config.migrations else {
        unreachable!("the folder configured above");
    };
    std::fs::write(folder.join("0003_notes.sql"), NOTES_SQL).unwrap();
    let s = Server::start_with_engine_config(
        tempfile::tempdir().unwrap(),
        config,
        HttpConfig::default(),
    )
    .await;
    assert_eq!(s.engine.migrations().latest(), 3);
    // Not migrated yet: a tenant behind the server's schema is not served against it.
    let (status, body) = data(&s, Method::GET, "red", "notes", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("tenant_migrating")),
        "{body}"
    );

    let report = s
        .engine
        .migrate(
            MigrateOptions::default(),
            Arc::new(AtomicBool::new(false)),
            |_| {},
        )
        .await
        .expect("migrate");
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.target_version, 3);
    assert_eq!(report.migrated, SLUGS.len(), "{report:?}");
    let mut pending = report.pending.clone();
    pending.sort();
    assert_eq!(pending, ["blue", "green", "red"]);
    let (status, body) = s
        .json(
            Method::POST,
            "/v1/tenants/green/resume",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");

    for slug in SLUGS {
        assert_eq!(schema_version(&s, slug).await, 3, "{slug}");
        // The new table works, and the same title is fine in every tenant: uniqueness is
        // per tenant, in every mode.
        let (status, body) = data(
            &s,
            Method::POST,
            slug,
            "notes",
            Some(json!([
                { "title": "welcome", "body": format!("hello from {slug}") },
                { "title": format!("only in {slug}"), "body": "x" },
            ])),
        )
        .await;
        assert_eq!(status, 201, "{slug}: {body}");
        // A duplicate title: 409, naming the constraint, and nothing written.
        let (status, body) = data(
            &s,
            Method::POST,
            slug,
            "notes",
            Some(json!({ "title": "welcome", "body": "again" })),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (409, Some("constraint_violation")),
            "{slug}: {body}"
        );
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("notes_title_key"), "{slug}: {detail}");
        for leak in [
            "tenant_id",
            "tenancy_shared",
            "postgres",
            "sqlite",
            "SELECT",
        ] {
            assert!(!detail.contains(leak), "{slug}: {detail}");
        }
        // The data from before the migration is still there.
        let members = rows(&s, slug, "members").await;
        assert_eq!(field(&members, "name"), [format!("founder of {slug}")]);
    }

    // Isolation: each tenant lists, filters and reaches only its own notes.
    let red = rows(&s, "red", "notes?order=title").await;
    for slug in SLUGS {
        let notes = rows(&s, slug, "notes?order=title").await;
        assert_eq!(
            field(&notes, "title"),
            [format!("only in {slug}"), "welcome".to_owned()],
            "{slug}"
        );
        let welcome = rows(&s, slug, "notes?title=eq.welcome").await;
        assert_eq!(
            field(&welcome, "body"),
            [format!("hello from {slug}")],
            "{slug}"
        );
        // By the indexed column too.
        let by_body = rows(&s, slug, "notes?body=like.hello*").await;
        assert_eq!(field(&by_body, "title"), ["welcome"], "{slug}");
        if slug == "red" {
            continue;
        }
        for note in &red {
            let id = note["id"].as_str().unwrap();
            let (status, body) = data(&s, Method::GET, slug, &format!("notes/{id}"), None).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (404, Some("row_not_found")),
                "{slug} reads red's note: {body}"
            );
            let (status, body) = data(
                &s,
                Method::PATCH,
                slug,
                &format!("notes/{id}"),
                Some(json!({ "body": "defaced" })),
            )
            .await;
            assert_eq!(status, 404, "{slug} patches red's note: {body}");
            let (status, body) = data(&s, Method::DELETE, slug, &format!("notes/{id}"), None).await;
            assert_eq!(status, 404, "{slug} deletes red's note: {body}");
        }
    }
    assert_eq!(rows(&s, "red", "notes?order=title").await, red);

    // A rerun has nothing to do.
    let again = s
        .engine
        .migrate(
            MigrateOptions::default(),
            Arc::new(AtomicBool::new(false)),
            |_| {},
        )
        .await
        .expect("migrate again");
    assert!(again.pending.is_empty(), "{again:?}");
    assert_eq!(again.migrated, 0);
}
