//! The embedded handler sees only the resolved tenant's rows, in every store and mode: the
//! same `TenantContext::query` on a SQLite file, a PostgreSQL database, a schema, or shared
//! tables behind row-level security.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

#[path = "../../../crates/tenancy-http/tests/common/mod.rs"]
mod common;

use common::Backend;
use tenancy::data::value::Value;
use tenancy::{Engine, EngineConfig, Slug};

async fn the_leaderboard_is_per_tenant(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new(dir.path());
    let Some(_db) = backend.configure(&mut config).await else {
        return;
    };
    let engine = Engine::open(config).await.unwrap();
    let (admin_token, _) = engine
        .admin_token(Some("embed-admin-token-123"))
        .await
        .unwrap();
    for (slug, members) in [
        ("horde", [("Thrall", 300), ("Garrosh", 100)]),
        ("alliance", [("Jaina", 50), ("Anduin", 200)]),
    ] {
        let tenant = engine
            .create_tenant(Slug::parse(slug).unwrap(), None)
            .await
            .unwrap();
        assert_eq!(tenant.placement.mode, backend.mode());
        for (i, (name, dkp)) in members.iter().enumerate() {
            let inserted = engine
                .query(
                    &tenant,
                    "INSERT INTO members (id, name, dkp) VALUES ($1, $2, $3) RETURNING name",
                    vec![
                        Value::Text(format!("m{i}")),
                        Value::Text(name.to_string()),
                        Value::Integer(*dkp),
                    ],
                )
                .await
                .unwrap();
            assert_eq!(inserted[0]["name"], *name);
        }
    }
    let app = tenancy_embed_example::app(tenancy_http::AppState::new(engine, admin_token));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(tenancy_http::serve(listener, app, std::future::pending()));
    let client = reqwest::Client::new();
    let get = |path: String| {
        client
            .get(format!("{base}{path}"))
            .bearer_auth("embed-admin-token-123")
            .send()
    };
    let horde: serde_json::Value = get("/t/horde/leaderboard".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        horde,
        serde_json::json!([{"name":"Thrall","dkp":300},{"name":"Garrosh","dkp":100}])
    );
    let alliance: serde_json::Value = get("/t/alliance/leaderboard".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(alliance[0]["name"], "Anduin");
    assert_eq!(alliance.as_array().unwrap().len(), 2);
    let none = get("/leaderboard".into()).await.unwrap();
    assert_eq!(none.status(), 400, "no tenant named");
    let unknown = get("/t/ghost/leaderboard".into()).await.unwrap();
    assert_eq!(unknown.status(), 404);
}

four_modes!(the_leaderboard_is_per_tenant);
