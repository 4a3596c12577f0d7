//! What the engine's SQLite settings put in effect: durability (`synchronous`) on tenant
//! handles and on the catalog, and the memory budget (SQLite's process-wide soft heap
//! limit, each tenant handle's page cache). One test per process setting: the heap limit
//! belongs to the whole process, so this file holds a single test that opens engines.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use tenancy::catalog::Catalog;
use tenancy::{Durability, Engine, EngineConfig, MemoryConfig, Slug};

async fn pragma(engine: &Engine, slug: &Slug, name: &'static str) -> i64 {
    engine
        .with_tenant_db(slug, move |db| {
            Ok(db.pragma_query_value(None, name, |r| r.get::<_, i64>(0))?)
        })
        .await
        .unwrap()
}

async fn catalog_synchronous(dir: &std::path::Path, durability: Durability) -> String {
    let catalog = tenancy::catalog::SqliteCatalog::open_with(&dir.join("catalog.db"), durability)
        .await
        .unwrap();
    catalog.sqlite_synchronous().await.unwrap().unwrap()
}

#[tokio::test]
async fn durability_and_memory_settings_are_in_effect() {
    // The defaults: every acknowledged write kept (FULL), memory held to 512 MiB.
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineConfig::new(dir.path())).await.unwrap();
    let a = Slug::parse("a").unwrap();
    engine.create_tenant(a.clone(), None).await.unwrap();
    assert_eq!(pragma(&engine, &a, "synchronous").await, 2, "FULL");
    assert_eq!(
        engine
            .catalog()
            .sqlite_synchronous()
            .await
            .unwrap()
            .as_deref(),
        Some("FULL")
    );
    let memory = MemoryConfig::default();
    assert_eq!(memory.budget, 512 * 1024 * 1024);
    let limit = pragma(&engine, &a, "soft_heap_limit").await;
    assert_eq!(limit as u64, memory.sqlite_heap_limit());
    assert!(limit as u64 <= memory.budget && limit > 0);
    let cache_kib = -pragma(&engine, &a, "cache_size").await;
    assert_eq!(cache_kib as u64, memory.page_cache_kib(1_000));
    // The page caches of every handle the cache may hold fit in SQLite's share.
    assert!(cache_kib as u64 * 1024 * 1_000 <= memory.sqlite_heap_limit());
    drop(engine);

    // Configured: NORMAL, and a 64 MiB budget over 100 open tenants.
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new(dir.path());
    config.durability = Durability::Normal;
    config.memory = MemoryConfig {
        budget: 64 * 1024 * 1024,
    };
    config.cache.max_open = 100;
    let engine = Engine::open(config).await.unwrap();
    engine.create_tenant(a.clone(), None).await.unwrap();
    assert_eq!(pragma(&engine, &a, "synchronous").await, 1, "NORMAL");
    assert_eq!(
        engine
            .catalog()
            .sqlite_synchronous()
            .await
            .unwrap()
            .as_deref(),
        Some("NORMAL")
    );
    assert_eq!(
        pragma(&engine, &a, "soft_heap_limit").await,
        48 * 1024 * 1024,
        "three quarters of the budget"
    );
    // Half of SQLite's 48 MiB over 100 handles: 245 KiB each.
    assert_eq!(pragma(&engine, &a, "cache_size").await, -245);
    drop(engine);

    // The catalog opened on its own takes the setting too.
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        catalog_synchronous(dir.path(), Durability::Full).await,
        "FULL"
    );
    assert_eq!(
        catalog_synchronous(dir.path(), Durability::Normal).await,
        "NORMAL"
    );
}
