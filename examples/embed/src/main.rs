//! `cargo run -p tenancy-embed-example` — serves the guild app on 127.0.0.1:8090, its
//! tenants in SQLite files; with `TENANCY_STORE_URL=postgres://…` (and optionally
//! `TENANCY_MODE=database|schema|shared`, default `schema`) on PostgreSQL instead.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let data_dir = std::env::var("TENANCY_DATA_DIR").unwrap_or_else(|_| "./tenancy-data".into());
    let mut config = tenancy::EngineConfig::new(data_dir);
    if let Ok(url) = std::env::var("TENANCY_STORE_URL") {
        config.stores = vec![tenancy::StoreSpec::new("pg", url)];
        config.default_store = "pg".into();
        config.default_mode = std::env::var("TENANCY_MODE")
            .unwrap_or_else(|_| "schema".into())
            .parse()?;
    }
    let engine = tenancy::Engine::open(config).await?;
    let configured = std::env::var("TENANCY_ADMIN_TOKEN").ok();
    let (admin_token, created) = engine.admin_token(configured.as_deref()).await?;
    if let Some(secret) = created {
        println!("admin token (shown once): {secret}");
    }
    let app = tenancy_embed_example::app(tenancy_http::AppState::new(engine, admin_token));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8090").await?;
    println!("guild app on http://{}", listener.local_addr()?);
    tenancy_http::serve(listener, app, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
