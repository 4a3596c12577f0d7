//! Cross-origin requests from browsers, per configured origin ([`CorsConfig`]; none by
//! default).
//!
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an
//!   allowed origin is answered here: `204` with the allowed origin, methods and headers
//!   and how long to cache them. From any other origin it goes on to the router like any
//!   request and gets no CORS header (so the browser refuses the call).
//! - Any other request from an allowed origin gets `Access-Control-Allow-Origin` and the
//!   response headers a script may read. Credentials (cookies) are never allowed: the API
//!   authenticates with bearer tokens.

use axum::extract::{Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
    VARY,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::CorsConfig;

const METHODS: &str = "GET, POST, PATCH, DELETE";
const EXPOSED: &str = "x-request-id, retry-after, location, content-range";

/// The middleware of the module doc.
pub async fn cors(State(config): State<CorsConfig>, request: Request, next: Next) -> Response {
    let origin = match request.headers().get(ORIGIN) {
        Some(origin) if config.allows(origin) => origin.clone(),
        _ => return next.run(request).await,
    };
    if request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(ACCESS_CONTROL_REQUEST_METHOD)
    {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        allow(headers, origin);
        headers.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(METHODS),
        );
        if let Ok(value) = HeaderValue::from_str(&config.allowed_headers().join(", ")) {
            headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, value);
        }
        headers.insert(
            ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(config.max_age_secs),
        );
        return response;
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    allow(headers, origin);
    headers.insert(
        ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED),
    );
    response
}

fn allow(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    // The answer depends on the origin: caches must not hand it to another.
    headers.append(VARY, HeaderValue::from_static("origin"));
}
