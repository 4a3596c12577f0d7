//! A tenant whose schema is behind the server's migrations is never served against the
//! wrong schema: refused with 503 `tenant_migrating` until migrated, or migrated on the
//! spot when configured — in every backend.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::{Backend, Server, ADMIN_TOKEN};
use reqwest::Method;
use serde_json::json;
use tenancy::{MigrateOptions, MigrationSource};
use tenancy_http::HttpConfig;

fn guild_folder(dir: &Path, with_notes: bool) {
    std::fs::create_dir_all(dir).unwrap();
    for (file, sql) in tenancy::migrations::GUILD_MIGRATIONS {
        std::fs::write(dir.join(file), sql).unwrap();
    }
    if with_notes {
        std::fs::write(
            dir.join("0003_notes.sql"),
            "CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT NOT NULL);\n",
        )
        .unwrap();
    }
}

/// A server on version 2 with tenant `acme` and its member key, and a second server on the
/// same catalog and stores whose migrations have version 3.
async fn behind(backend: Backend, on_request: bool) -> Option<(Server, Server, String)> {
    let folders = tempfile::tempdir().unwrap();
    let (v2, v3) = (folders.path().join("v2"), folders.path().join("v3"));
    guild_folder(&v2, false);
    guild_folder(&v3, true);
    let old = Server::start_on_with(backend, HttpConfig::default(), |c| {
        c.migrations = MigrationSource::Folder(v2.clone());
    })
    .await?;
    old.create_tenant("acme").await;
    let (status, key) = old
        .json(
            Method::POST,
            "/v1/tenants/acme/api-keys",
            Some(ADMIN_TOKEN),
            Some(json!({ "role": "member" })),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let mut config = old.engine.config().clone();
    config.migrations = MigrationSource::Folder(v3);
    config.migrate_on_request = on_request;
    let new = Server::start_with_engine_config(folders, config, HttpConfig::default()).await;
    Some((old, new, key["key"].as_str().unwrap().to_owned()))
}

async fn refused_until_migrated(backend: Backend) {
    let Some((_old, new, key)) = behind(backend, false).await else {
        return;
    };
    for path in ["/v1/data/members", "/v1/data/notes"] {
        let resp = new.call(Method::GET, path, Some(&key), &[], None).await;
        assert_eq!(resp.status().as_u16(), 503, "{path}");
        assert_eq!(resp.headers()["retry-after"], "5");
        let problem: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(problem["code"], "tenant_migrating", "{problem}");
    }
    let report = new
        .engine
        .migrate(
            MigrateOptions::default(),
            Arc::new(AtomicBool::new(false)),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(report.migrated, 1, "{report:?}");
    let (status, body) = new
        .json(
            Method::POST,
            "/v1/data/notes",
            Some(&key),
            Some(json!({ "body": "raid at eight" })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

async fn migrated_on_the_spot_when_configured(backend: Backend) {
    let Some((_old, new, key)) = behind(backend, true).await else {
        return;
    };
    let (status, body) = new
        .json(
            Method::POST,
            "/v1/data/notes",
            Some(&key),
            Some(json!({ "body": "raid at eight" })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let acme = new
        .engine
        .tenant(&tenancy::Slug::parse("acme").unwrap())
        .await
        .unwrap();
    assert_eq!(acme.placement.schema_version, 3);
    // Nothing left for the fleet migration.
    let report = new
        .engine
        .migrate(
            MigrateOptions::default(),
            Arc::new(AtomicBool::new(false)),
            |_| {},
        )
        .await
        .unwrap();
    assert!(report.pending.is_empty(), "{report:?}");
}

four_modes!(refused_until_migrated, migrated_on_the_spot_when_configured);
