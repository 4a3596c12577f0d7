//! The axum layer of tenancy: control-plane routes and problem+json errors over a
//! [`tenancy::Engine`]. [`router`] returns a plain `axum::Router`, so it embeds in any
//! axum app or runs alone with [`serve`].
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let engine = tenancy::Engine::open(tenancy::EngineConfig::new("./tenancy-data")).await?;
//! let (admin_token, _) = engine.admin_token(Some("secret")).await?;
//! let app = tenancy_http::router(tenancy_http::AppState { engine, admin_token });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! tenancy_http::serve(listener, app, std::future::pending()).await?;
//! # Ok(()) }
//! ```

mod auth;
pub mod error;
mod json;
mod routes;

use std::future::Future;

use axum::routing::get;
use axum::Router;
use tenancy::{AdminToken, Engine};

pub use error::{ApiError, ApiResult};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub admin_token: AdminToken,
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route(
            "/v1/tenants",
            get(routes::tenants::list).post(routes::tenants::create),
        )
        .route(
            "/v1/tenants/{slug}",
            get(routes::tenants::show).delete(routes::tenants::delete),
        )
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this path does not take that method",
            )
        })
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
