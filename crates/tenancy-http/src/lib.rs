//! The axum layer of tenancy: tenant resolution, principals and roles, the control-plane
//! routes and problem+json errors over a [`tenancy::Engine`]. [`router`] returns a plain
//! `axum::Router`, so it embeds in any axum app or runs alone with [`serve`]; handlers of
//! your own get the resolved tenant, the caller and a database handle from
//! [`TenantContext`].
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let engine = tenancy::Engine::open(tenancy::EngineConfig::new("./tenancy-data")).await?;
//! let (admin_token, _) = engine.admin_token(Some("a-long-admin-secret")).await?;
//! let app = tenancy_http::router(tenancy_http::AppState::new(engine, admin_token));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! tenancy_http::serve(listener, app, std::future::pending()).await?;
//! # Ok(()) }
//! ```

mod auth;
pub mod config;
mod cors;
pub mod error;
mod json;
pub mod observe;
mod openapi;
mod prometheus;
mod ratelimit;
mod resolve;
mod routes;
mod server;
mod strict_json;
mod verify;

use std::future::Future;

use axum::routing::{get, patch, post};
use axum::Router;
use tenancy::{AdminToken, Engine};

pub use auth::{Authenticated, Caller};
pub use config::{ConnectionLimits, CorsConfig, HttpConfig, MetricsConfig, Resolver};
pub use error::{ApiError, ApiResult};
pub use json::Json;
pub use ratelimit::TenantRates;
pub use resolve::TenantContext;
pub use server::{raise_open_files_limit, serve_with};
pub use strict_json::StrictJson;
pub use verify::{verification_url, HttpTokenVerifier, WELL_KNOWN_PATH};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub admin_token: AdminToken,
    pub config: HttpConfig,
    /// Each tenant's request rate, against its plan.
    pub rates: ratelimit::TenantRates,
}

impl AppState {
    /// State with the default [`HttpConfig`].
    pub fn new(engine: Engine, admin_token: AdminToken) -> AppState {
        AppState {
            engine,
            admin_token,
            config: HttpConfig::default(),
            rates: ratelimit::TenantRates::default(),
        }
    }
}

/// The routes of the API, without the `/t/{slug}` prefix handling. Merge your own
/// tenant-resolved routes into this (they see [`TenantContext`]), then pass the result to
/// [`with_path_resolution`].
pub fn routes() -> Router<AppState> {
    use routes::{
        admin, api_keys, auth, data, domains, health, members, settings, tenant, tenants, usage,
    };
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(crate::openapi::handler))
        .route("/metrics", get(crate::prometheus::handler))
        .route("/v1/auth/signup", post(auth::signup))
        .route("/v1/auth/login", post(auth::login))
        .route("/v1/auth/refresh", post(auth::refresh))
        .route("/v1/auth/logout", post(auth::logout))
        .route("/v1/me", get(auth::me))
        .route("/v1/tenant", get(tenant::show))
        .route("/v1/plans", get(tenants::plans))
        .route("/v1/tenants", get(tenants::list).post(tenants::create))
        .route(
            "/v1/tenants/{slug}",
            get(tenants::show)
                .patch(tenants::update)
                .delete(tenants::delete),
        )
        .route("/v1/tenants/{slug}/suspend", post(tenants::suspend))
        .route("/v1/tenants/{slug}/resume", post(tenants::resume))
        .route(
            "/v1/tenants/{slug}/members",
            get(members::list).post(members::add),
        )
        .route("/v1/invitations/accept", post(members::accept))
        .route(
            "/v1/tenants/{slug}/members/{user_id}",
            patch(members::update).delete(members::remove),
        )
        .route(
            "/v1/tenants/{slug}/api-keys",
            get(api_keys::list).post(api_keys::create),
        )
        .route(
            "/v1/tenants/{slug}/api-keys/{id}",
            axum::routing::delete(api_keys::revoke),
        )
        .route(
            "/v1/tenants/{slug}/domains",
            get(domains::list).post(domains::add),
        )
        .route(
            "/v1/tenants/{slug}/domains/{domain}",
            axum::routing::delete(domains::remove),
        )
        .route(
            "/v1/tenants/{slug}/domains/{domain}/verify",
            post(domains::verify),
        )
        .route("/v1/tenants/{slug}/audit", get(domains::audit))
        .route("/v1/tenants/{slug}/usage", get(usage::usage))
        .route("/v1/tenants/{slug}/cost", get(usage::cost))
        .route("/v1/tenants/{slug}/alerts", get(usage::alerts))
        .route(
            "/v1/tenants/{slug}/settings",
            get(settings::show)
                .put(settings::replace)
                .layer(axum::extract::DefaultBodyLimit::max(settings::BODY_LIMIT)),
        )
        .route(
            "/v1/data/{table}",
            get(data::list)
                .post(data::insert)
                .patch(data::update_filtered)
                .delete(data::delete_filtered),
        )
        .route(
            "/v1/data/{table}/{id}",
            get(data::get).patch(data::update).delete(data::delete),
        )
        .route(
            "/v1/admin/api-keys",
            get(admin::list_keys).post(admin::create_key),
        )
        .route(
            "/v1/admin/api-keys/{id}",
            axum::routing::delete(admin::revoke_key),
        )
}

/// Finishes a router: problem+json for unknown routes and methods, the state, the
/// `/t/{slug}/…` prefix stripped before routing (the slug feeds the resolver chain), the
/// body limit, CORS, and a request id, a log line and metrics for every request
/// ([`observe`]).
pub fn with_path_resolution(routes: Router<AppState>, state: AppState) -> Router {
    if state.config.metrics.enabled {
        crate::prometheus::install();
    }
    let body_limit = state.config.body_limit;
    let mut cors = state.config.cors.clone();
    cors.allowed_headers
        .push(state.config.tenant_header.as_str().to_owned());
    let inner = routes
        .route_layer(axum::middleware::from_fn(observe::note_route))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this path does not take that method",
            )
        })
        .with_state(state);
    let rewritten = tower::ServiceBuilder::new()
        .map_request(resolve::strip_tenant_prefix)
        .service(inner);
    Router::new()
        .fallback_service(rewritten)
        .layer(axum::middleware::from_fn_with_state(cors, cors::cors))
        .layer(axum::middleware::from_fn(observe::observe))
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    with_path_resolution(routes(), state)
}

/// Serves `app` on `listener` under the default [`ConnectionLimits`] until `shutdown`
/// resolves, then drains in-flight requests. Client addresses reach the handlers (for
/// per-address login limits). [`serve_with`] takes the limits.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, app, ConnectionLimits::default(), shutdown).await
}
