//! `/v1/tenants/{slug}/api-keys`: credentials for a tenant's services.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use tenancy::identity::{ApiKey, KeyScope};
use tenancy::Role;

use super::members::parse_role;
use super::tenant_for;
use crate::auth::Authenticated;
use crate::error::{ApiError, ApiResult};
use crate::json::Json;
use crate::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    role: String,
    label: Option<String>,
    expires_at: Option<DateTime<Utc>>,
}

/// Creates a tenant API key, with a role no higher than the caller's. The full key is in
/// this answer only.
pub async fn create(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(slug): Path<String>,
    Json(body): Json<CreateKey>,
) -> ApiResult<impl IntoResponse> {
    let (tenant, access) =
        tenant_for(&state, &principal, &slug, Role::Admin, "api_keys.create").await?;
    let role = parse_role(&body.role)?;
    if !access.role.allows(role) {
        return Err(ApiError::forbidden(
            "a key cannot have a higher role than its creator",
        ));
    }
    let (key, secret) = state
        .engine
        .create_api_key(
            KeyScope::Tenant {
                tenant_id: tenant.id,
                role,
            },
            body.label,
            body.expires_at,
            &principal.actor(),
        )
        .await?;
    created(&key, secret)
}

pub async fn list(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(slug): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let (tenant, _) = tenant_for(&state, &principal, &slug, Role::Admin, "api_keys.list").await?;
    Ok(axum::Json(
        json!({ "data": state.engine.api_keys(Some(tenant.id)).await? }),
    ))
}

pub async fn revoke(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path((slug, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let (tenant, _) = tenant_for(&state, &principal, &slug, Role::Admin, "api_keys.revoke").await?;
    state.engine.revoke_api_key(Some(tenant.id), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `201` with the key's listing and, this once, the full key.
pub(crate) fn created(key: &ApiKey, secret: String) -> ApiResult<impl IntoResponse + use<>> {
    let mut value =
        serde_json::to_value(key).map_err(|e| tenancy::Error::Internal(e.to_string()))?;
    value["key"] = json!(secret);
    Ok((StatusCode::CREATED, axum::Json(value)))
}
