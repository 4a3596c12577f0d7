//! How the HTTP layer behaves: signup, self-service tenants, the resolver chain, and the
//! limits on client connections.

use std::time::Duration;

use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue};
use tenancy::{AdminToken, DomainVerifier};

use crate::verify::HttpTokenVerifier;

/// One way a request can name its tenant (DESIGN §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// The tenant of the API key that authenticates the request.
    ApiKey,
    /// The `tid` claim of a tenant-scoped access token.
    Token,
    /// `/t/{slug}/…` (the prefix is stripped before routing).
    Path,
    /// `{slug}.{base domain}` in the `Host` header.
    Subdomain,
    /// A custom domain registered to a tenant, in the `Host` header.
    Domain,
    /// A header, `X-Tenant` by default.
    Header,
}

impl Resolver {
    pub const ALL: [Resolver; 6] = [
        Resolver::ApiKey,
        Resolver::Token,
        Resolver::Path,
        Resolver::Subdomain,
        Resolver::Domain,
        Resolver::Header,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Resolver::ApiKey => "api_key",
            Resolver::Token => "token",
            Resolver::Path => "path",
            Resolver::Subdomain => "subdomain",
            Resolver::Domain => "domain",
            Resolver::Header => "header",
        }
    }

    pub fn parse(s: &str) -> Option<Resolver> {
        Resolver::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

#[derive(Clone)]
pub struct HttpConfig {
    /// `POST /v1/auth/signup` is open.
    pub signup: bool,
    /// Logged-in users may create tenants (and become their owner).
    pub self_service_tenants: bool,
    /// The most tenants one user may own through self-service creation (platform
    /// administrators are not bound by it).
    pub max_tenants_per_user: u32,
    /// The enabled resolvers, in the order they are reported.
    pub resolvers: Vec<Resolver>,
    /// Hosts under which `{slug}.{base}` names a tenant.
    pub base_domains: Vec<String>,
    /// The server's own host names (`api.example.com`): like the base domains (and
    /// `localhost`), neither they nor anything under them can be a tenant's domain.
    pub platform_hosts: Vec<String>,
    /// How a custom domain's ownership is checked before it routes.
    pub domain_verifier: Arc<dyn DomainVerifier>,
    pub tenant_header: HeaderName,
    /// The cap and timeouts of client connections ([`crate::serve_with`]).
    pub connections: ConnectionLimits,
    /// The largest request body read (bytes, default 2 MiB); past it: `413 body_too_large`.
    pub body_limit: usize,
    /// `/metrics` and who may read it.
    pub metrics: MetricsConfig,
    /// The browser origins that may call the API.
    pub cors: CorsConfig,
}

/// `GET /metrics` ([`crate::router`]).
#[derive(Clone)]
pub struct MetricsConfig {
    /// Serve `/metrics` (default on); off, it answers 404 and no recorder is installed.
    pub enabled: bool,
    /// A bearer token that may read `/metrics` (besides the platform admin token), so that
    /// a scraper need not hold the admin token. Only its hash is kept.
    pub token: Option<AdminToken>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            token: None,
        }
    }
}

impl std::fmt::Debug for MetricsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsConfig")
            .field("enabled", &self.enabled)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// Which browser origins may call the API ([`crate::cors`]).
#[derive(Debug, Clone)]
pub struct CorsConfig {
    /// Origins as browsers send them (`https://app.example.com`, `http://localhost:3000`),
    /// or `*` for any. Empty (the default): none.
    pub allowed_origins: Vec<String>,
    /// Request headers a script may send (the tenant header is added by the router).
    pub allowed_headers: Vec<String>,
    /// How long a browser may cache a preflight answer (default 600 s).
    pub max_age_secs: u64,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            allowed_origins: Vec::new(),
            allowed_headers: ["authorization", "content-type", "prefer", "x-request-id"]
                .map(String::from)
                .to_vec(),
            max_age_secs: 600,
        }
    }
}

impl CorsConfig {
    /// An origin as configured: `*`, or `http(s)://host[:port]` with no path. Answers it
    /// lower-cased, or why it is not one.
    pub fn parse_origin(raw: &str) -> Result<String, String> {
        let origin = raw.trim().to_ascii_lowercase();
        if origin == "*" {
            return Ok(origin);
        }
        let rest = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"))
            .ok_or_else(|| format!("origin {raw:?} must start with https:// or http://"))?;
        let host_ok = !rest.is_empty()
            && rest.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
            });
        if !host_ok {
            return Err(format!(
                "origin {raw:?} must be scheme://host[:port], with no path or trailing slash"
            ));
        }
        Ok(origin)
    }

    pub(crate) fn allows(&self, origin: &HeaderValue) -> bool {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        self.allowed_origins
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    }

    pub(crate) fn allowed_headers(&self) -> &[String] {
        &self.allowed_headers
    }
}

impl HttpConfig {
    /// The hosts no tenant may register, nor anything under them: the base domains, the
    /// platform's own hosts and `localhost`.
    pub fn reserved_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .base_domains
            .iter()
            .chain(&self.platform_hosts)
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
            .collect();
        hosts.push("localhost".to_owned());
        hosts
    }
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("signup", &self.signup)
            .field("self_service_tenants", &self.self_service_tenants)
            .field("resolvers", &self.resolvers)
            .field("base_domains", &self.base_domains)
            .field("platform_hosts", &self.platform_hosts)
            .field("domain_verifier", &self.domain_verifier)
            .field("tenant_header", &self.tenant_header)
            .field("body_limit", &self.body_limit)
            .field("metrics", &self.metrics)
            .field("cors", &self.cors)
            .finish_non_exhaustive()
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            signup: true,
            self_service_tenants: true,
            max_tenants_per_user: 10,
            resolvers: Resolver::ALL.to_vec(),
            base_domains: vec!["localhost".to_owned()],
            platform_hosts: Vec::new(),
            domain_verifier: Arc::new(HttpTokenVerifier::new()),
            tenant_header: HeaderName::from_static("x-tenant"),
            connections: ConnectionLimits::default(),
            body_limit: 2 * 1024 * 1024,
            metrics: MetricsConfig::default(),
            cors: CorsConfig::default(),
        }
    }
}

/// How many client connections the server keeps and how long it waits on each, so that
/// no client can hold it by stalling or flooding (see [`crate::serve_with`]).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Open connections at most (default 10,000; never more than half the open-files
    /// limit, nor more than what `reserved_files` leaves of it). At the cap the connection
    /// idle longest makes room; when every one is busy, a new connection is answered
    /// `503 too_many_connections` and closed.
    pub max_connections: usize,
    /// Open files the rest of the process needs at most — open tenant databases,
    /// PostgreSQL connections, the catalog (`EngineConfig::open_files_needed`); the
    /// connection cap never takes them, so a flood is refused by the cap, never by
    /// `EMFILE` on a tenant's database. Default 0: only the half-the-limit rule.
    pub reserved_files: u64,
    /// A request head must arrive whole within this of its first byte (default 10 s).
    pub header_read_timeout: Duration,
    /// A connection with no request in progress and nothing sent or received for this
    /// long is closed (default 60 s).
    pub idle_timeout: Duration,
    /// Reading a request's body and answering it, at most (default 30 s); past it the
    /// answer is `408 request_timeout`.
    pub request_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 10_000,
            reserved_files: 0,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
        }
    }
}
