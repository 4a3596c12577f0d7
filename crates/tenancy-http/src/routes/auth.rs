//! `/v1/auth/…` (signup, login, refresh, logout) and `/v1/me`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{json, Value};
use tenancy::{Principal, Session};

use crate::auth::{Authenticated, ClientAddr};
use crate::error::{ApiError, ApiResult};
use crate::json::Json;
use crate::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signup {
    email: String,
    password: String,
    /// An invitation token from a tenant admin: the new user joins that tenant.
    invitation: Option<String>,
}

pub async fn signup(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    Json(body): Json<Signup>,
) -> ApiResult<impl IntoResponse> {
    if !state.config.signup {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "signup_disabled",
            "signup is disabled on this server; ask an administrator for an account",
        ));
    }
    let user = state
        .engine
        .signup(
            &body.email,
            &body.password,
            false,
            body.invitation.as_deref(),
            client.as_deref(),
        )
        .await?;
    let (user, memberships) = state.engine.user_with_memberships(user.id).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "user": user, "memberships": memberships })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    email: String,
    password: String,
    /// Scope the session to this tenant: the token then carries `tid` and `role`.
    tenant: Option<String>,
}

pub async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    Json(body): Json<Login>,
) -> ApiResult<axum::Json<Session>> {
    let tenant = match &body.tenant {
        Some(raw) => Some(ApiError::slug_or_not_found(raw)?),
        None => None,
    };
    let session = state
        .engine
        .login(
            &body.email,
            &body.password,
            tenant.as_ref(),
            client.as_deref(),
        )
        .await?;
    Ok(axum::Json(session))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    refresh_token: String,
}

pub async fn refresh(
    State(state): State<AppState>,
    Json(body): Json<RefreshBody>,
) -> ApiResult<axum::Json<Session>> {
    Ok(axum::Json(state.engine.refresh(&body.refresh_token).await?))
}

pub async fn logout(
    State(state): State<AppState>,
    Json(body): Json<RefreshBody>,
) -> ApiResult<StatusCode> {
    state.engine.logout(&body.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller: a user with their memberships, an API key, or the platform admin.
pub async fn me(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(match principal {
        Principal::User { user, token_tenant } => {
            let (user, memberships) = state.engine.user_with_memberships(user.id).await?;
            json!({ "kind": "user", "user": user, "memberships": memberships, "token_tenant": token_tenant })
        }
        Principal::ApiKey(key) => json!({ "kind": "api_key", "api_key": key }),
        Principal::PlatformAdmin => json!({ "kind": "platform_admin" }),
    }))
}
