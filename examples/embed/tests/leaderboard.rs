//! The embedded handler sees only the resolved tenant's rows.

use tenancy::{Engine, EngineConfig, Slug};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaderboard_is_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineConfig::new(dir.path())).await.unwrap();
    let (admin_token, _) = engine
        .admin_token(Some("embed-admin-token-123"))
        .await
        .unwrap();
    for (slug, members) in [
        ("horde", [("Thrall", 300), ("Garrosh", 100)]),
        ("alliance", [("Jaina", 50), ("Anduin", 200)]),
    ] {
        let slug = Slug::parse(slug).unwrap();
        engine.create_tenant(slug.clone(), None).await.unwrap();
        engine
            .with_tenant_db(&slug, move |db| {
                for (i, (name, dkp)) in members.iter().enumerate() {
                    db.execute(
                        "INSERT INTO members (id, name, dkp) VALUES (?1, ?2, ?3)",
                        tenancy::rusqlite::params![format!("m{i}"), name, dkp],
                    )?;
                }
                Ok(())
            })
            .await
            .unwrap();
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
    let none = get("/leaderboard".into()).await.unwrap();
    assert_eq!(none.status(), 400, "no tenant named");
    let unknown = get("/t/ghost/leaderboard".into()).await.unwrap();
    assert_eq!(unknown.status(), 404);
}
