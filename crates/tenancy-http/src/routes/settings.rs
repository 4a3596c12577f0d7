//! `/v1/tenants/{slug}/settings`: the tenant's settings document (its branding, by
//! default), validated against the configured settings schema.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::Value;
use tenancy::Role;

use super::tenant_for;
use crate::auth::Authenticated;
use crate::error::{ApiError, ApiResult};
use crate::strict_json::StrictJson;
use crate::AppState;

/// The largest settings body the route reads; larger ones are refused before they are
/// parsed (`413 body_too_large`).
pub const BODY_LIMIT: usize = tenancy::settings::MAX_SETTINGS_BYTES;

/// Any member of the tenant reads its settings: `{}` until some are written.
pub async fn show(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(slug): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let (tenant, _) = tenant_for(&state, &principal, &slug, Role::Viewer, "settings.show").await?;
    let settings = state.engine.settings(tenant.id).await?;
    Ok(axum::Json(Value::Object(settings.document.clone())))
}

/// Admins and owners replace the whole document; the answer is the document stored.
/// Refused (`422 invalid_settings`, with the `pointer` and `reason` of the first bad
/// value), nothing is written.
pub async fn replace(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(slug): Path<String>,
    StrictJson(body): StrictJson,
) -> ApiResult<axum::Json<Value>> {
    let (tenant, _) =
        tenant_for(&state, &principal, &slug, Role::Admin, "settings.replace").await?;
    if !body.is_object() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "the settings are a JSON object",
        ));
    }
    let stored = state
        .engine
        .put_settings(tenant.id, body, &principal.actor())
        .await?;
    Ok(axum::Json(Value::Object(stored.document)))
}
