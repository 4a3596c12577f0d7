//! `/v1/tenants/{slug}/domains` (custom domains that resolve to the tenant once verified)
//! and `/v1/tenants/{slug}/audit`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{json, Value};
use tenancy::{CustomDomain, Role};

use super::tenant_for;
use crate::auth::Authenticated;
use crate::error::ApiResult;
use crate::json::Json;
use crate::verify::verification_url;
use crate::AppState;

/// A domain as the API shows it: while pending, with what proves it.
fn shown(claim: &CustomDomain) -> Value {
    let mut shown = json!({
        "domain": claim.domain,
        "status": if claim.is_verified() { "verified" } else { "pending" },
        "created_at": claim.created_at,
        "verified_at": claim.verified_at,
    });
    if !claim.is_verified() {
        shown["verification"] = json!({
            "token": claim.token,
            "http": {
                "url": verification_url(&claim.domain, &claim.token),
                "body": claim.token,
            },
        });
    }
    shown
}

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
    let claim = state
        .engine
        .add_domain(tenant.id, &body.domain, &state.config.reserved_hosts())
        .await?;
    Ok((StatusCode::CREATED, axum::Json(shown(&claim))))
}

/// Checks that the domain serves its token; from then on it names the tenant.
pub async fn verify(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path((slug, domain)): Path<(String, String)>,
) -> ApiResult<axum::Json<Value>> {
    let (tenant, _) = tenant_for(&state, &principal, &slug, Role::Admin, "domains.verify").await?;
    let claim = state
        .engine
        .verify_domain(tenant.id, &domain, state.config.domain_verifier.as_ref())
        .await?;
    Ok(axum::Json(shown(&claim)))
}

pub async fn list(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(slug): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let (tenant, _) = tenant_for(&state, &principal, &slug, Role::Viewer, "domains.list").await?;
    let claims = state.engine.domains(tenant.id).await?;
    Ok(axum::Json(
        json!({ "data": claims.iter().map(shown).collect::<Vec<_>>() }),
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
