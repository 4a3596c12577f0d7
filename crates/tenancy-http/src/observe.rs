//! What every request leaves behind: its request id, one log line and its metrics.
//!
//! [`observe`] wraps the whole router. It takes the client's `X-Request-Id` when it is
//! valid (at most [`MAX_REQUEST_ID`] characters of `A-Z a-z 0-9 . _ : -`), else makes one,
//! returns it on the response, and keeps it in a task-local [`Scope`] for the request's
//! duration: problem+json bodies carry it (`request_id`), and the resolver chain and
//! authentication note the tenant and the kind of caller there. When the answer is ready it
//! logs one `info` line (target `tenancy_http::request`) and counts the request by method,
//! route template and status. The route is axum's `MatchedPath` (noted by [`note_route`],
//! a route layer), never the raw path, so neither a slug nor an id becomes a label.
//!
//! No header value other than the request id is logged, so no token or key can reach a
//! log line from here.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{counter, histogram};
use tenancy::{Principal, TenantId};
use tracing::Instrument;

/// The request id header, read and returned.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The longest client request id kept; a longer one is replaced.
pub const MAX_REQUEST_ID: usize = 128;

pub const HTTP_REQUESTS: &str = "tenancy_http_requests_total";
pub const HTTP_DURATION: &str = "tenancy_http_request_duration_seconds";

/// The route label of a request no route matched.
const UNMATCHED: &str = "unmatched";

tokio::task_local! {
    static SCOPE: Arc<Scope>;
}

/// What is known of the request being handled.
pub struct Scope {
    id: String,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    route: Option<String>,
    tenant: Option<TenantId>,
    principal: Option<&'static str>,
    /// Headers for the answer, whatever it is (the tenant's rate limit).
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Scope {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The id of the request being handled, if any.
pub fn request_id() -> Option<String> {
    SCOPE.try_with(|scope| scope.id.clone()).ok()
}

/// Notes a header the answer carries, success or problem alike.
pub fn note_header(name: HeaderName, value: HeaderValue) {
    let _ = SCOPE.try_with(|scope| scope.seen().headers.push((name, value)));
}

/// Notes the tenant the request resolved to.
pub fn note_tenant(id: TenantId) {
    let _ = SCOPE.try_with(|scope| scope.seen().tenant = Some(id));
}

/// Notes who the caller is (its kind only: never a name or a secret).
pub fn note_principal(principal: Option<&Principal>) {
    let kind = match principal {
        None => "anonymous",
        Some(Principal::PlatformAdmin) => "admin_token",
        Some(Principal::User { .. }) => "user",
        Some(Principal::ApiKey(key)) if key.tenant_id.is_none() => "platform_key",
        Some(Principal::ApiKey(_)) => "api_key",
    };
    let _ = SCOPE.try_with(|scope| scope.seen().principal = Some(kind));
}

/// A client's request id if it is one we keep: short, and only characters that cannot
/// forge a log line or a header.
fn valid_request_id(value: &HeaderValue) -> Option<&str> {
    let id = value.to_str().ok()?;
    let ok = !id.is_empty()
        && id.len() <= MAX_REQUEST_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    ok.then_some(id)
}

/// The request's id: the client's when valid, else a fresh one. The request's header is
/// set to it, so layers further in see the same id.
pub fn ensure_request_id<B>(request: &mut axum::http::Request<B>) -> String {
    if let Some(id) = request.headers().get(REQUEST_ID).and_then(valid_request_id) {
        return id.to_owned();
    }
    let id = uuid::Uuid::now_v7().to_string();
    if let Ok(value) = HeaderValue::from_str(&id) {
        request.headers_mut().insert(REQUEST_ID, value);
    }
    id
}

/// Runs `f` as part of the request `id` (for answers made outside the router, such as
/// the accept loop's `408`).
pub fn within<T>(id: &str, f: impl FnOnce() -> T) -> T {
    let scope = Arc::new(Scope {
        id: id.to_owned(),
        seen: Mutex::new(Seen::default()),
    });
    SCOPE.sync_scope(scope, f)
}

/// The middleware of the module doc; wrap the whole router in it.
pub async fn observe(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = ensure_request_id(&mut request);
    let method = method_label(request.method());
    let scope = Arc::new(Scope {
        id: id.clone(),
        seen: Mutex::new(Seen::default()),
    });
    let span = tracing::info_span!("request", request_id = %id);
    let mut pending = Pending {
        scope: Arc::clone(&scope),
        method,
        started,
        done: false,
    };
    let mut response = SCOPE
        .scope(Arc::clone(&scope), next.run(request).instrument(span))
        .await;
    pending.done = true;
    let noted = std::mem::take(&mut scope.seen().headers);
    for (name, value) in noted {
        response.headers_mut().insert(name, value);
    }
    finish(&scope, method, started, response.status().as_u16());
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// A route layer: notes the matched route's template.
pub async fn note_route(request: Request, next: Next) -> Response {
    if let Some(path) = request.extensions().get::<MatchedPath>() {
        let route = path.as_str().to_owned();
        let _ = SCOPE.try_with(|scope| scope.seen().route = Some(route));
    }
    next.run(request).await
}

/// A request whose answer is not ready yet; dropped so (the request timed out, or the
/// client left), it is logged and counted as a `408`.
struct Pending {
    scope: Arc<Scope>,
    method: &'static str,
    started: Instant,
    done: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            finish(&self.scope, self.method, self.started, 408);
        }
    }
}

fn finish(scope: &Scope, method: &'static str, started: Instant, status: u16) {
    let elapsed = started.elapsed();
    let seen = std::mem::take(&mut *scope.seen());
    let route = seen.route.unwrap_or_else(|| UNMATCHED.to_owned());
    tracing::info!(
        target: "tenancy_http::request",
        request_id = %scope.id,
        method,
        route = %route,
        status,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        tenant_id = seen.tenant.map(|t| t.to_string()),
        principal = seen.principal.unwrap_or("anonymous"),
        "request"
    );
    let labels = [
        ("method", method.to_owned()),
        ("route", route),
        ("status", status.to_string()),
    ];
    counter!(HTTP_REQUESTS, &labels).increment(1);
    histogram!(HTTP_DURATION, &labels).record(elapsed.as_secs_f64());
}

/// The method as a label: the standard ones, anything else `other` (bounded).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_short_plain_request_ids() {
        let ok = |s: &str| valid_request_id(&HeaderValue::from_str(s).unwrap()).is_some();
        assert!(ok("abc-123_x.y:z"));
        assert!(ok(&"a".repeat(MAX_REQUEST_ID)));
        assert!(!ok(&"a".repeat(MAX_REQUEST_ID + 1)));
        assert!(!ok(""));
        assert!(!ok("a b"));
        assert!(!ok("a\"b"));
        assert!(!ok("{\"x\":1}"));
    }
}
