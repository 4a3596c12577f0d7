//! Access through the read cache: changes by another process are seen within the catalog's
//! poll interval (2 ms); changes through the same engine at once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use tenancy::identity::{ApiKey, KeyScope};
use tenancy::{Engine, EngineConfig, Role, Slug, Tenant};

/// An engine on a fresh folder with tenant `acme` and one key of it with `role`.
async fn acme_with_key(role: Role) -> (tempfile::TempDir, Engine, Tenant, ApiKey, String) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineConfig::new(dir.path())).await.unwrap();
    let tenant = engine
        .create_tenant(Slug::parse("acme").unwrap(), None)
        .await
        .unwrap();
    let (key, secret) = new_key(&engine, &tenant, role).await;
    (dir, engine, tenant, key, secret)
}

async fn new_key(engine: &Engine, tenant: &Tenant, role: Role) -> (ApiKey, String) {
    engine
        .create_api_key(
            KeyScope::Tenant {
                tenant_id: tenant.id,
                role,
            },
            None,
            None,
            "test",
        )
        .await
        .unwrap()
}

/// Longer than the catalog's poll interval for other processes' changes.
async fn settle() {
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
}

#[tokio::test]
async fn a_revocation_through_this_engine_is_seen_at_once() {
    let (_dir, engine, tenant, key, secret) = acme_with_key(Role::Member).await;
    for _ in 0..3 {
        engine.authenticate_api_key(&secret).await.unwrap();
    }
    engine
        .revoke_api_key(Some(tenant.id), &key.id)
        .await
        .unwrap();
    assert!(
        engine.authenticate_api_key(&secret).await.is_err(),
        "no settling needed"
    );
}

#[tokio::test]
async fn a_revocation_by_another_process_is_seen_at_once() {
    let (dir, server, tenant, key, secret) = acme_with_key(Role::Member).await;
    // Warm the cache.
    for _ in 0..3 {
        server.authenticate_api_key(&secret).await.unwrap();
    }
    let cli = Engine::open(EngineConfig::new(dir.path())).await.unwrap();
    cli.revoke_api_key(Some(tenant.id), &key.id).await.unwrap();
    settle().await;
    assert!(server.authenticate_api_key(&secret).await.is_err());

    // Suspension and deletion are seen at once too.
    let (_, other) = new_key(&server, &tenant, Role::Viewer).await;
    server.authenticate_api_key(&other).await.unwrap();
    let found = server.find_tenant(&tenant.slug).await.unwrap().unwrap();
    assert_eq!(found.status, tenancy::TenantStatus::Active);
    cli.suspend_tenant(&found).await.unwrap();
    settle().await;
    let found = server.find_tenant(&tenant.slug).await.unwrap().unwrap();
    assert_eq!(found.status, tenancy::TenantStatus::Suspended);
    cli.delete_tenant(&tenant.slug).await.unwrap();
    settle().await;
    assert!(server.find_tenant(&tenant.slug).await.unwrap().is_none());
    assert!(server.authenticate_api_key(&other).await.is_err());
}

#[tokio::test]
async fn key_use_is_recorded_without_a_write_per_request() {
    let (dir, engine, tenant, key, secret) = acme_with_key(Role::Member).await;
    let before = engine.catalog().generation().unwrap();
    for _ in 0..50 {
        engine.authenticate_api_key(&secret).await.unwrap();
    }
    assert_eq!(
        engine.catalog().generation().unwrap(),
        before,
        "no catalog write per use"
    );
    let listed = engine.api_keys(Some(tenant.id)).await.unwrap();
    assert!(listed[0].last_used_at.is_some(), "the use shows at once");
    engine.flush().await.unwrap();
    // A use once written is not written again within the minute, though the key's cached
    // entry still has the older time.
    let written = engine.catalog().generation().unwrap();
    engine.authenticate_api_key(&secret).await.unwrap();
    engine.flush().await.unwrap();
    assert_eq!(engine.catalog().generation().unwrap(), written);
    let other = Engine::open(EngineConfig::new(dir.path())).await.unwrap();
    let stored = other.api_keys(Some(tenant.id)).await.unwrap();
    assert_eq!(stored[0].id, key.id);
    assert!(stored[0].last_used_at.is_some(), "flushed to the catalog");
}
