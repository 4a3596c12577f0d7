//! `/v1/admin/…`: platform-wide operations for platform administrators.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use tenancy::identity::KeyScope;

use super::require_platform;
use crate::auth::Authenticated;
use crate::error::ApiResult;
use crate::json::Json;
use crate::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePlatformKey {
    label: Option<String>,
    expires_at: Option<DateTime<Utc>>,
}

/// A platform API key: superadmin power, for automation. Shown once.
pub async fn create_key(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Json(body): Json<CreatePlatformKey>,
) -> ApiResult<impl IntoResponse> {
    require_platform(&principal)?;
    let (key, secret) = state
        .engine
        .create_api_key(
            KeyScope::Platform,
            body.label,
            body.expires_at,
            &principal.actor(),
        )
        .await?;
    super::api_keys::created(&key, secret)
}

pub async fn list_keys(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
) -> ApiResult<axum::Json<Value>> {
    require_platform(&principal)?;
    Ok(axum::Json(
        json!({ "data": state.engine.api_keys(None).await? }),
    ))
}

pub async fn revoke_key(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    require_platform(&principal)?;
    state.engine.revoke_api_key(None, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
