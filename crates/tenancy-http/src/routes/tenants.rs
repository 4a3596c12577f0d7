//! `/v1/tenants`: create, list, show, delete, suspend and resume tenants.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{json, Value};
use tenancy::{Principal, Role, Slug, Tenant};

use super::{require_platform, tenant_for};
use crate::auth::Authenticated;
use crate::error::{ApiError, ApiResult};
use crate::json::Json;
use crate::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    slug: String,
    name: Option<String>,
    /// `database`, `schema` or `shared`; platform administrators only.
    mode: Option<String>,
    /// A configured store; platform administrators only.
    store: Option<String>,
    /// A configured plan; platform administrators only (self-service tenants start on
    /// the default plan, and their owner may change it).
    plan: Option<String>,
}

/// Platform administrators create tenants; so do logged-in users when self-service is on,
/// and they become the tenant's owner.
pub async fn create(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Json(body): Json<CreateTenant>,
) -> ApiResult<impl IntoResponse> {
    let owner = match &principal {
        p if p.is_platform() => p.user_id(),
        Principal::User { user, .. } if state.config.self_service_tenants => Some(user.id),
        _ => {
            return Err(ApiError::forbidden(
                "creating tenants needs a platform administrator (or a logged-in user, when self-service is on)",
            ))
        }
    };
    if (body.mode.is_some() || body.store.is_some() || body.plan.is_some())
        && !principal.is_platform()
    {
        return Err(ApiError::forbidden(
            "choosing a tenant's mode, store or plan needs a platform administrator",
        ));
    }
    let mode = match body.mode.as_deref() {
        None => None,
        Some(m) => Some(m.parse::<tenancy::Mode>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_mode",
                "mode must be database, schema or shared",
            )
        })?),
    };
    let slug = Slug::parse(&body.slug)?;
    let place = tenancy::PlaceOptions {
        mode,
        store: body.store,
        plan: body.plan,
    };
    let tenant = match (&principal, owner) {
        (p, Some(owner)) if !p.is_platform() => {
            state
                .engine
                .create_own_tenant(
                    slug,
                    body.name,
                    owner,
                    state.config.max_tenants_per_user,
                    None,
                )
                .await?
        }
        _ => {
            state
                .engine
                .create_tenant_with(slug, body.name, owner, &place)
                .await?
        }
    };
    let location = format!("/v1/tenants/{}", tenant.slug);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(tenant),
    ))
}

/// Every tenant for platform administrators; otherwise the tenants the caller belongs to.
pub async fn list(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
) -> ApiResult<axum::Json<Value>> {
    let all = state.engine.list_tenants().await?;
    let tenants: Vec<Tenant> = match &principal {
        p if p.is_platform() => all,
        Principal::User { user, token_tenant } => {
            let mine: Vec<_> = state
                .engine
                .catalog()
                .memberships(user.id)
                .await?
                .into_iter()
                .map(|m| m.tenant_id)
                .filter(|id| token_tenant.is_none_or(|t| t == *id))
                .collect();
            all.into_iter().filter(|t| mine.contains(&t.id)).collect()
        }
        Principal::ApiKey(key) => all
            .into_iter()
            .filter(|t| Some(t.id) == key.tenant_id)
            .collect(),
        Principal::PlatformAdmin => Vec::new(),
    };
    Ok(axum::Json(json!({ "data": tenants })))
}

pub async fn show(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(slug): Path<String>,
) -> ApiResult<axum::Json<Tenant>> {
    let (tenant, _) = tenant_for(&state, &principal, &slug, Role::Viewer, "tenant.show").await?;
    Ok(axum::Json(tenant))
}

/// `PATCH /v1/tenants/{slug}`: the tenant's plan, limits, flags, budget and dates
/// ([`tenancy::PlanChange`]). Owners change the plan and the budget; the rest needs a
/// platform administrator. Answers the tenant and, when the plan places its tenants
/// elsewhere, `move_due` (the change does not move it).
pub async fn update(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(slug): Path<String>,
    Json(change): Json<tenancy::PlanChange>,
) -> ApiResult<axum::Json<Value>> {
    let (tenant, _) = tenant_for(&state, &principal, &slug, Role::Owner, "tenant.update").await?;
    if !change.owner_may_make() && !principal.is_platform() {
        return Err(ApiError::forbidden(
            "a tenant's owner changes its plan and budget; limits, features, trial and \
             subscription dates need a platform administrator",
        ));
    }
    let changed = state.engine.change_plan(&tenant, change).await?;
    let mut body = serde_json::to_value(&changed.tenant).map_err(|e| {
        ApiError::from(tenancy::Error::Internal(format!(
            "serializing a tenant: {e}"
        )))
    })?;
    if let (Some(due), Some(obj)) = (&changed.move_due, body.as_object_mut()) {
        obj.insert("move_due".into(), json!(due));
    }
    Ok(axum::Json(body))
}

/// `GET /v1/plans`: the configured plans and the default one.
pub async fn plans(State(state): State<AppState>) -> axum::Json<Value> {
    let plans = state.engine.plans();
    axum::Json(json!({
        "default": plans.default_plan(),
        "data": plans.all(),
    }))
}

/// Owners delete their tenant; a suspended one only a platform administrator deletes.
pub async fn delete(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(slug): Path<String>,
) -> ApiResult<StatusCode> {
    let (tenant, _) = tenant_for(&state, &principal, &slug, Role::Owner, "tenant.delete").await?;
    if tenant.status == tenancy::TenantStatus::Suspended && !principal.is_platform() {
        return Err(tenancy::Error::TenantSuspended {
            slug: tenant.slug.to_string(),
        }
        .into());
    }
    // The tenant authorised, by id: whoever holds the slug by now is not touched.
    state.engine.delete_tenant_by_id(tenant.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Platform administrators suspend and resume tenants.
pub async fn suspend(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(slug): Path<String>,
) -> ApiResult<axum::Json<Tenant>> {
    let (tenant, _) = tenant_for(&state, &principal, &slug, Role::Viewer, "tenant.suspend").await?;
    require_platform(&principal)?;
    Ok(axum::Json(state.engine.suspend_tenant(&tenant).await?))
}

pub async fn resume(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(slug): Path<String>,
) -> ApiResult<axum::Json<Tenant>> {
    let (tenant, _) = tenant_for(&state, &principal, &slug, Role::Viewer, "tenant.resume").await?;
    require_platform(&principal)?;
    Ok(axum::Json(state.engine.resume_tenant(&tenant).await?))
}
