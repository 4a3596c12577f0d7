//! `/v1/tenants`: create, list, show and delete tenants (platform admin only, for now).

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{json, Value};
use tenancy::{Slug, Tenant};

use crate::auth::PlatformAdmin;
use crate::error::{ApiError, ApiResult};
use crate::json::Json;
use crate::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    slug: String,
    name: Option<String>,
}

pub async fn create(
    _: PlatformAdmin,
    State(state): State<AppState>,
    Json(body): Json<CreateTenant>,
) -> ApiResult<impl IntoResponse> {
    let slug = Slug::parse(&body.slug)?;
    let tenant = state.engine.create_tenant(slug, body.name).await?;
    let location = format!("/v1/tenants/{}", tenant.slug);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(tenant),
    ))
}

pub async fn list(_: PlatformAdmin, State(state): State<AppState>) -> ApiResult<axum::Json<Value>> {
    let tenants = state.engine.list_tenants().await?;
    Ok(axum::Json(json!({ "data": tenants })))
}

pub async fn show(
    _: PlatformAdmin,
    State(state): State<AppState>,
    Path(slug): Path<String>,
) -> ApiResult<axum::Json<Tenant>> {
    let slug = path_slug(&slug)?;
    Ok(axum::Json(state.engine.tenant(&slug).await?))
}

pub async fn delete(
    _: PlatformAdmin,
    State(state): State<AppState>,
    Path(slug): Path<String>,
) -> ApiResult<StatusCode> {
    let slug = path_slug(&slug)?;
    state.engine.delete_tenant(&slug).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A slug in a path that is not even valid names no tenant: the same 404 as an unknown one.
fn path_slug(raw: &str) -> ApiResult<Slug> {
    Slug::parse(raw).map_err(|_| {
        ApiError::from(tenancy::Error::TenantNotFound {
            slug: raw.chars().take(63).collect(),
        })
    })
}
