//! A real server for tests: in-process on 127.0.0.1:0, a fresh data folder, reqwest.
//! [`Backend`] picks where tenants live; PostgreSQL backends get a database of their own
//! (dropped with the server) and skip, with a notice, where PostgreSQL is unreachable.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code
#![allow(dead_code)]

#[path = "../../../tenancy/tests/common/pg.rs"]
pub mod pg;

use reqwest::header::AUTHORIZATION;
use reqwest::{Client, Method, Response};
use serde_json::Value;
use tempfile::TempDir;
use tenancy::{Engine, EngineConfig, Mode, StoreSpec};
use tenancy_http::{AppState, HttpConfig};
use tokio::sync::oneshot;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const PASSWORD: &str = "correct horse battery";

/// Where a test's tenants live: the four instantiations of the behavioural suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `database` mode on the embedded SQLite store.
    Sqlite,
    /// `database` mode on PostgreSQL: a database per tenant. Every PostgreSQL backend
    /// keeps its catalog on PostgreSQL as well.
    PgDatabase,
    /// A PostgreSQL schema per tenant.
    PgSchema,
    /// Shared PostgreSQL tables behind row-level security.
    PgShared,
}

impl Backend {
    pub const ALL: [Backend; 4] = [
        Backend::Sqlite,
        Backend::PgDatabase,
        Backend::PgSchema,
        Backend::PgShared,
    ];

    pub fn mode(self) -> Mode {
        match self {
            Backend::Sqlite | Backend::PgDatabase => Mode::Database,
            Backend::PgSchema => Mode::Schema,
            Backend::PgShared => Mode::Shared,
        }
    }

    /// Points `config` at this backend. `None`: PostgreSQL is unreachable (skip).
    pub async fn configure(self, config: &mut EngineConfig) -> Option<Option<pg::TestDb>> {
        if self == Backend::Sqlite {
            return Some(None);
        }
        let db = pg::TestDb::create().await?;
        let mut store = StoreSpec::new("pg", db.url.clone());
        store.data_role = format!("{}_data", db.prefix);
        store.database_prefix = db.prefix.clone();
        // Tests run side by side on one server: each keeps to a small share of it.
        store.limits.max_connections = 8;
        config.stores = vec![store];
        // The catalog moves to PostgreSQL too: the whole deployment is PostgreSQL.
        config.catalog_url = Some(db.url.clone());
        config.default_store = "pg".into();
        config.default_mode = self.mode();
        Some(Some(db))
    }
}

/// Expands to one test per backend: `name::sqlite`, `name::pg_database`, `name::pg_schema`
/// and `name::pg_shared`, each calling `name(backend)`.
#[macro_export]
macro_rules! four_modes {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            use super::common::Backend;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pg_database() {
                super::$name(Backend::PgDatabase).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pg_schema() {
                super::$name(Backend::PgSchema).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pg_shared() {
                super::$name(Backend::PgShared).await
            }
        }
    )+};
}

pub struct Server {
    pub base: String,
    pub engine: Engine,
    pub client: Client,
    pub dir: TempDir,
    pub backend: Backend,
    _shutdown: oneshot::Sender<()>,
    /// Declared last: dropped after the engine, so its connections are gone first.
    _pg: Option<pg::TestDb>,
}

impl Server {
    /// A default server whose tenants live in `backend`; `None` (skip) where the backend
    /// is PostgreSQL and PostgreSQL is unreachable.
    pub async fn start_on(backend: Backend) -> Option<Server> {
        Self::start_on_with(backend, HttpConfig::default(), |_| {}).await
    }

    /// Like [`Server::start_on`], with the HTTP config and a last say on the engine config.
    pub async fn start_on_with(
        backend: Backend,
        config: HttpConfig,
        adjust: impl FnOnce(&mut EngineConfig),
    ) -> Option<Server> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut engine_config = EngineConfig::new(dir.path());
        let pg = backend.configure(&mut engine_config).await?;
        adjust(&mut engine_config);
        let mut server = Self::start_full(dir, engine_config, config, ADMIN_TOKEN).await;
        server.backend = backend;
        server._pg = pg;
        Some(server)
    }

    pub async fn start() -> Server {
        Self::start_with(HttpConfig::default()).await
    }

    pub async fn start_with(config: HttpConfig) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine_config = EngineConfig::new(dir.path());
        Self::start_with_engine_config(dir, engine_config, config).await
    }

    /// A server over an engine configured by the caller (its own migrations, say); `dir`
    /// is kept alive as long as the server.
    pub async fn start_with_engine_config(
        dir: TempDir,
        engine_config: EngineConfig,
        config: HttpConfig,
    ) -> Server {
        Self::start_full(dir, engine_config, config, ADMIN_TOKEN).await
    }

    /// A default server whose admin token is `admin_token`.
    pub async fn start_with_admin_token(admin_token: &str) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine_config = EngineConfig::new(dir.path());
        Self::start_full(dir, engine_config, HttpConfig::default(), admin_token).await
    }

    async fn start_full(
        dir: TempDir,
        engine_config: EngineConfig,
        config: HttpConfig,
        admin_token: &str,
    ) -> Server {
        let engine = Engine::open(engine_config).await.expect("engine");
        let (admin_token, shown) = engine.admin_token(Some(admin_token)).await.expect("token");
        assert!(shown.is_none(), "a configured token is never shown back");
        let limits = config.connections.clone();
        let app = tenancy_http::router(AppState {
            engine: engine.clone(),
            admin_token,
            config,
            rates: Default::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = tenancy_http::serve_with(listener, app, limits, async move {
                let _ = rx.await;
            })
            .await;
        });
        Server {
            base,
            engine,
            client: Client::new(),
            dir,
            backend: Backend::Sqlite,
            _shutdown: tx,
            _pg: None,
        }
    }

    /// Sends a request with an optional bearer token, extra headers and JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Response {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.expect("request")
    }

    pub async fn json(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let resp = self.call(method, path, token, &[], body).await;
        let status = resp.status().as_u16();
        let value = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, value)
    }

    pub async fn signup(&self, email: &str) -> Value {
        let (status, body) = self
            .json(
                Method::POST,
                "/v1/auth/signup",
                None,
                Some(serde_json::json!({ "email": email, "password": PASSWORD })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// An access token for the user, scoped to `tenant` when given.
    pub async fn login(&self, email: &str, tenant: Option<&str>) -> String {
        let (status, body) = self
            .json(
                Method::POST,
                "/v1/auth/login",
                None,
                Some(serde_json::json!({ "email": email, "password": PASSWORD, "tenant": tenant })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().expect("token").to_owned()
    }

    /// Makes the existing user `email` a member of `slug`: the platform admin invites them
    /// and they accept. Returns the membership.
    pub async fn join_by_invitation(&self, slug: &str, email: &str, role: &str) -> Value {
        let (status, invited) = self
            .json(
                Method::POST,
                &format!("/v1/tenants/{slug}/members"),
                Some(ADMIN_TOKEN),
                Some(serde_json::json!({ "email": email, "role": role })),
            )
            .await;
        assert_eq!(
            (status, invited["status"].as_str()),
            (201, Some("invited")),
            "{invited}"
        );
        let token = self.login(email, None).await;
        let (status, accepted) = self
            .json(
                Method::POST,
                "/v1/invitations/accept",
                Some(&token),
                Some(serde_json::json!({ "invitation": invited["invitation"] })),
            )
            .await;
        assert_eq!(status, 200, "{accepted}");
        accepted["membership"].clone()
    }

    pub async fn create_tenant(&self, slug: &str) -> Value {
        let (status, body) = self
            .json(
                Method::POST,
                "/v1/tenants",
                Some(ADMIN_TOKEN),
                Some(serde_json::json!({ "slug": slug })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }
}
