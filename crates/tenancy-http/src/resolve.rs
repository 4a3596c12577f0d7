//! The resolver chain (DESIGN §4): which tenant a request is for, and whether its caller
//! may reach it. Handlers get the answer as a [`TenantContext`].

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode, Uri};
use tenancy::{Domain, Principal, Role, Slug, Tenant, TenantId, TenantStatus};

use crate::auth::Authenticated;
use crate::config::Resolver;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// The slug of a `/t/{slug}/…` prefix, stripped from the URI before routing.
#[derive(Debug, Clone)]
pub struct PathTenant(pub String);

/// Strips `/t/{slug}` from the path (keeping the query) and remembers the slug.
pub fn strip_tenant_prefix(mut req: Request) -> Request {
    let path = req.uri().path();
    let Some(rest) = path.strip_prefix("/t/") else {
        return req;
    };
    let (slug, remainder) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let slug = slug.to_owned();
    let new_path = match req.uri().query() {
        Some(q) => format!("{remainder}?{q}"),
        None => remainder.to_owned(),
    };
    if let Ok(uri) = new_path.parse::<Uri>() {
        *req.uri_mut() = uri;
        req.extensions_mut().insert(PathTenant(slug));
    }
    req
}

/// What the chain resolved, and the caller's access to it. Extract it in any handler of a
/// tenant-resolved route. [`TenantContext::query`] reaches the tenant's data in every store
/// and mode with one statement; [`TenantContext::db`] (SQLite) and
/// [`TenantContext::session`] (PostgreSQL) hand over the driver's own connection.
///
/// ```
/// use axum::Json;
/// use serde::Deserialize;
/// use tenancy::Role;
/// use tenancy_http::{ApiResult, TenantContext};
///
/// #[derive(Deserialize, serde::Serialize)]
/// struct Count {
///     n: i64,
/// }
///
/// async fn member_count(ctx: TenantContext) -> ApiResult<Json<Vec<Count>>> {
///     ctx.require(Role::Viewer)?;
///     let n = ctx.query("SELECT COUNT(*) AS n FROM members", vec![]).await?;
///     Ok(Json(n))
/// }
/// ```
#[derive(Clone)]
pub struct TenantContext {
    pub tenant: Tenant,
    pub principal: Principal,
    pub role: Role,
    /// Which resolvers named the tenant, in configured order.
    pub resolved_by: Vec<&'static str>,
    engine: tenancy::Engine,
}

impl TenantContext {
    /// Refuses with 403 `forbidden` unless the caller's role is at least `needed`.
    pub fn require(&self, needed: Role) -> ApiResult<()> {
        if self.role.allows(needed) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this needs the {needed} role or higher; you are {}",
                self.role
            )))
        }
    }

    /// Whether a feature flag of the tenant's plan (or its own override) is on.
    pub fn feature(&self, flag: &str) -> bool {
        self.engine.feature(&self.tenant, flag)
    }

    pub fn engine(&self) -> &tenancy::Engine {
        &self.engine
    }

    /// Runs one statement of the application's own on the tenant's data, whichever store
    /// and mode holds it (`$1, $2, …` placeholders, values bound; see
    /// [`tenancy::Engine::query`]), and reads each row it answers into a `T` by column name.
    pub async fn query<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        params: Vec<tenancy::data::value::Value>,
    ) -> ApiResult<Vec<T>> {
        let rows = self.engine.query(&self.tenant, sql, params).await?;
        rows.into_iter()
            .map(|row| {
                serde_json::from_value(serde_json::Value::Object(row)).map_err(|e| {
                    tenancy::Error::Internal(format!("a row does not fit its type: {e}")).into()
                })
            })
            .collect()
    }

    /// Runs `f` on a SQLite tenant's database, on a blocking thread (`400
    /// mode_not_supported` for a PostgreSQL tenant: use [`TenantContext::session`]).
    pub async fn db<T, F>(&self, f: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut tenancy::rusqlite::Connection) -> tenancy::Result<T> + Send + 'static,
    {
        Ok(self.engine.with_db(&self.tenant, f).await?)
    }

    /// A transaction on a PostgreSQL tenant's data with its context and privileges set
    /// (`400 mode_not_supported` for a SQLite tenant: use [`TenantContext::db`]). Commit
    /// it, or drop it to roll back.
    pub async fn session(&self) -> ApiResult<tenancy::store::TenantSession> {
        Ok(self.engine.session(&self.tenant).await?)
    }

    /// The tenant's settings document (its branding, by default): `{}` until an admin
    /// writes some. Read through the engine's read cache, so calling it on every request
    /// costs no catalog query while the settings are unchanged.
    ///
    /// ```
    /// use axum::Json;
    /// use tenancy_http::{ApiResult, TenantContext};
    ///
    /// async fn title(ctx: TenantContext) -> ApiResult<Json<String>> {
    ///     let settings = ctx.settings().await?;
    ///     let name = settings.document.get("display_name").and_then(|v| v.as_str());
    ///     Ok(Json(name.unwrap_or(&ctx.tenant.name).to_owned()))
    /// }
    /// ```
    pub async fn settings(&self) -> ApiResult<std::sync::Arc<tenancy::TenantSettings>> {
        Ok(self.engine.settings(self.tenant.id).await?)
    }
}

/// The live tenant with this slug, `None` if there is none (or the slug is not valid).
async fn by_slug(state: &AppState, raw: &str) -> ApiResult<Option<Tenant>> {
    let Ok(slug) = Slug::parse(raw) else {
        return Ok(None);
    };
    Ok(state.engine.find_tenant(&slug).await?)
}

async fn by_id(state: &AppState, id: TenantId) -> ApiResult<Option<Tenant>> {
    Ok(state
        .engine
        .tenant_by_id(id)
        .await?
        .filter(|t| t.status != TenantStatus::Deleted))
}

impl FromRequestParts<AppState> for TenantContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(ctx) = parts.extensions.get::<TenantContext>() {
            return Ok(ctx.clone());
        }
        let Authenticated(principal) = Authenticated::from_request_parts(parts, state).await?;
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(Domain::from_host_header)
            .or_else(|| parts.uri.host().and_then(Domain::from_host_header));

        // Each enabled resolver may name a tenant; an unknown name is kept as such so that
        // disagreeing sources are refused alike whether or not the other tenant exists.
        let mut named: Vec<(Resolver, Option<Tenant>)> = Vec::new();
        for resolver in &state.config.resolvers {
            let found: Option<Option<Tenant>> = match resolver {
                Resolver::ApiKey => match &principal {
                    Principal::ApiKey(key) => match key.tenant_id {
                        Some(id) => Some(by_id(state, id).await?),
                        None => None,
                    },
                    _ => None,
                },
                Resolver::Token => match &principal {
                    Principal::User {
                        token_tenant: Some(id),
                        ..
                    } => Some(by_id(state, *id).await?),
                    _ => None,
                },
                Resolver::Path => match parts.extensions.get::<PathTenant>() {
                    Some(PathTenant(slug)) => Some(by_slug(state, slug).await?),
                    None => None,
                },
                // A label no tenant can have (`api`, `www`, `admin`, an invalid one) is a
                // host of the platform's, not a tenant's name: the other sources decide.
                Resolver::Subdomain => {
                    match subdomain(host.as_deref(), &state.config.base_domains)
                        .and_then(|label| Slug::parse(label).ok())
                    {
                        Some(slug) => Some(state.engine.find_tenant(&slug).await?),
                        None => None,
                    }
                }
                // Only verified domains name a tenant, and never for a platform principal:
                // a domain must not decide which tenant platform power acts on.
                Resolver::Domain => match host.as_deref() {
                    Some(h)
                        if !principal.is_platform()
                            && is_custom_host(
                                h,
                                &state.config.base_domains,
                                &state.config.platform_hosts,
                            ) =>
                    {
                        state.engine.tenant_by_domain(h).await?.map(Some)
                    }
                    _ => None,
                },
                Resolver::Header => match parts.headers.get(&state.config.tenant_header) {
                    Some(value) => match value.to_str() {
                        Ok(raw) => Some(by_slug(state, raw).await?),
                        Err(_) => Some(None),
                    },
                    None => None,
                },
            };
            if let Some(tenant) = found {
                named.push((*resolver, tenant));
            }
        }

        let Some((_, first)) = named.first() else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "tenant_required",
                "this call is for one tenant: name it by path (/t/{slug}/…), subdomain, the X-Tenant header, a tenant-scoped token or an API key",
            ));
        };
        let same = |t: &Option<Tenant>| match (t, first) {
            (Some(a), Some(b)) => a.id == b.id,
            _ => false,
        };
        if named.len() > 1 && !named.iter().all(|(_, t)| same(t)) {
            let sources: Vec<&str> = named.iter().map(|(r, _)| r.as_str()).collect();
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "tenant_conflict",
                format!(
                    "the request names different tenants ({})",
                    sources.join(", ")
                ),
            ));
        }
        let resolved_by = named.iter().map(|(r, _)| r.as_str()).collect();
        let tenant = named
            .swap_remove(0)
            .1
            .ok_or_else(|| ApiError::tenant_not_found(""))?;
        let access = state
            .engine
            .access(&principal, &tenant, "tenant.request")
            .await?
            .ok_or_else(|| ApiError::tenant_not_found(tenant.slug.as_str()))?;
        crate::observe::note_tenant(tenant.id);
        check_status(&tenant)?;
        // The tenant's own traffic is rated; platform operators are not.
        if let Some(effective) = state
            .engine
            .effective_plan(&tenant)
            .filter(|_| !principal.is_platform())
        {
            use tenancy::plans::LimitKind;
            if let Some(rate) = effective.limit(LimitKind::RequestsPerMinute) {
                state
                    .rates
                    .check(tenant.id, rate, effective.limit(LimitKind::Burst))?;
            }
        }
        // Counted once per request (the context is kept in the request's extensions), in
        // memory; written to the catalog by the next usage flush.
        state.engine.record_request(tenant.id, &principal);
        let ctx = TenantContext {
            resolved_by,
            tenant,
            principal,
            role: access.role,
            engine: state.engine.clone(),
        };
        parts.extensions.insert(ctx.clone());
        Ok(ctx)
    }
}

/// Refuses tenants that cannot serve requests now.
pub fn check_status(tenant: &Tenant) -> ApiResult<()> {
    match tenant.status {
        TenantStatus::Active => Ok(()),
        TenantStatus::Suspended => Err(match &tenant.error {
            Some(reason) => ApiError::new(
                StatusCode::FORBIDDEN,
                "tenant_suspended",
                format!("tenant {} is suspended: {reason}", tenant.slug),
            )
            .with("reason", reason.as_str()),
            None => ApiError::new(
                StatusCode::FORBIDDEN,
                "tenant_suspended",
                format!("tenant {} is suspended", tenant.slug),
            ),
        }),
        TenantStatus::Provisioning | TenantStatus::Moving => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "tenant_unavailable",
            format!("tenant {} is {}; retry shortly", tenant.slug, tenant.status),
        )
        .retry_after(5)),
        TenantStatus::Failed => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "tenant_unavailable",
            format!(
                "tenant {} failed to provision; an operator must retry it",
                tenant.slug
            ),
        )
        .retry_after(60)),
        TenantStatus::Deleting | TenantStatus::Deleted => {
            Err(ApiError::tenant_not_found(tenant.slug.as_str()))
        }
    }
}

/// `{slug}.{base}` → `slug`, for a single-label slug under a configured base domain.
fn subdomain<'a>(host: Option<&'a str>, bases: &[String]) -> Option<&'a str> {
    let host = host?;
    bases.iter().find_map(|base| {
        let label = host.strip_suffix(base.as_str())?.strip_suffix('.')?;
        (!label.is_empty() && !label.contains('.')).then_some(label)
    })
}

/// A host that may be a custom domain: not a platform host (a base domain, one of the
/// server's own names, `localhost`) or under one, not an IP.
fn is_custom_host(host: &str, bases: &[String], platform_hosts: &[String]) -> bool {
    let under = |b: &str| {
        host.strip_suffix(b)
            .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
    };
    let under_base = under("localhost")
        || bases
            .iter()
            .chain(platform_hosts)
            .any(|b| under(b.as_str()));
    !under_base && host.parse::<std::net::IpAddr>().is_err() && host.contains('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_subdomains() {
        let bases = vec!["localhost".to_owned(), "guild.gg".to_owned()];
        assert_eq!(subdomain(Some("acme.localhost"), &bases), Some("acme"));
        assert_eq!(subdomain(Some("acme.guild.gg"), &bases), Some("acme"));
        assert_eq!(subdomain(Some("localhost"), &bases), None);
        assert_eq!(subdomain(Some("a.b.localhost"), &bases), None);
        assert_eq!(subdomain(Some("acmelocalhost"), &bases), None);
        let own = vec!["api.platform.io".to_owned()];
        assert!(is_custom_host("raid.example.com", &bases, &own));
        assert!(!is_custom_host("acme.localhost", &bases, &own));
        assert!(!is_custom_host("127.0.0.1", &bases, &own));
        assert!(!is_custom_host("api.platform.io", &bases, &own));
        assert!(!is_custom_host("x.api.platform.io", &bases, &own));
        assert!(is_custom_host("platform.io", &bases, &own));
    }

    #[test]
    fn strips_the_path_prefix() {
        let req = Request::builder()
            .uri("/t/acme/v1/tenant?x=1")
            .body(axum::body::Body::empty())
            .unwrap();
        let req = strip_tenant_prefix(req);
        assert_eq!(req.uri().to_string(), "/v1/tenant?x=1");
        assert_eq!(req.extensions().get::<PathTenant>().unwrap().0, "acme");
    }
}
