//! `/v1/tenants/{slug}/domains` (custom domains that resolve to the tenant) and
//! `/v1/tenants/{slug}/audit`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{json, Value};
use tenancy::Role;

use super::tenant_for;
use crate::auth::Authenticated;
use crate::error::ApiResult;
use crate::json::Json;
use crate::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddDomain {
    domain: String,
}

pub async fn add(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(slug): Path<String>,
    Json(body): Json<AddDomain>,
) -> ApiResult<impl IntoResponse> {
    let (tenant, _) = tenant_for(&state, &principal, &slug, Role::Admin, "domains.add").await?;
    let domain = state.engine.add_domain(tenant.id, &body.domain).await?;
    Ok((StatusCode::CREATED, axum::Json(json!({ "domain": domain }))))
}

pub async fn list(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(slug): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let (tenant, _) = tenant_for(&state, &principal, &slug, Role::Viewer, "domains.list").await?;
    Ok(axum::Json(
        json!({ "data": state.engine.domains(tenant.id).await? }),
    ))
}

pub async fn remove(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path((slug, domain)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let (tenant, _) = tenant_for(&state, &principal, &slug, Role::Admin, "domains.remove").await?;
    state.engine.remove_domain(tenant.id, &domain).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn audit(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(slug): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let (tenant, _) = tenant_for(&state, &principal, &slug, Role::Admin, "audit.list").await?;
    Ok(axum::Json(
        json!({ "data": state.engine.audit(tenant.id).await? }),
    ))
}
