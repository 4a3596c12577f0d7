//! Who calls: the bearer of `Authorization: Bearer <token>` — the platform admin token, an
//! API key or an access token — authenticated once per request.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use tenancy::Principal;

use crate::error::ApiError;
use crate::AppState;

/// The caller, if the request carries credentials. Invalid credentials are an error, not
/// an anonymous caller.
#[derive(Clone)]
pub struct Caller(pub Option<Principal>);

/// A caller that must be authenticated.
pub struct Authenticated(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(cached) = parts.extensions.get::<Caller>() {
            return Ok(cached.clone());
        }
        let caller = match parts.headers.get(AUTHORIZATION) {
            None => Caller(None),
            Some(value) => {
                let token = value
                    .to_str()
                    .ok()
                    .and_then(bearer)
                    .ok_or_else(ApiError::unauthorized)?;
                let principal = state
                    .engine
                    .authenticate(token, &state.admin_token)
                    .await
                    .map_err(|e| match e {
                        tenancy::Error::InvalidToken => ApiError::unauthorized(),
                        other => ApiError::from(other),
                    })?;
                Caller(Some(principal))
            }
        };
        crate::observe::note_principal(caller.0.as_ref());
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Caller::from_request_parts(parts, state).await?.0 {
            Some(principal) => Ok(Authenticated(principal)),
            None => Err(ApiError::unauthorized()),
        }
    }
}

/// The client's address, when the server knows it (for per-address login limits).
pub struct ClientAddr(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip().to_string()),
        ))
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub(crate) fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= 4096)
        .then_some(token)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_bearer_headers() {
        assert_eq!(super::bearer("Bearer abc"), Some("abc"));
        assert_eq!(super::bearer("bearer  abc "), Some("abc"));
        assert_eq!(super::bearer("Basic abc"), None);
        assert_eq!(super::bearer("Bearer"), None);
        assert_eq!(super::bearer("Bearer "), None);
    }
}
