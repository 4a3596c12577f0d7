//! `/v1/tenants/{slug}/members`: who belongs to a tenant, with which role, and
//! invitations for people who have no account yet.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{json, Value};
use tenancy::{Role, UserId};

use super::tenant_for;
use crate::auth::Authenticated;
use crate::error::{ApiError, ApiResult};
use crate::json::Json;
use crate::AppState;

pub(crate) fn parse_role(raw: &str) -> ApiResult<Role> {
    Ok(raw.parse::<Role>()?)
}

fn parse_user(raw: &str) -> ApiResult<UserId> {
    raw.parse::<uuid::Uuid>()
        .map(UserId)
        .map_err(|_| ApiError::from(tenancy::Error::MemberNotFound))
}

/// Only owners grant or take away `owner`.
fn check_grant(actor: Role, target_old: Option<Role>, target_new: Option<Role>) -> ApiResult<()> {
    let touches_owner = target_old == Some(Role::Owner) || target_new == Some(Role::Owner);
    if touches_owner && actor != Role::Owner {
        return Err(ApiError::forbidden(
            "only owners grant, change or remove the owner role",
        ));
    }
    Ok(())
}

pub async fn list(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(slug): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let (tenant, _) = tenant_for(&state, &principal, &slug, Role::Viewer, "members.list").await?;
    Ok(axum::Json(
        json!({ "data": state.engine.members(tenant.id).await? }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    email: String,
    role: String,
}

/// Invites the email, whether or not it has an account (the same answer either way): the
/// answer carries the invitation token, which a new user passes to signup and an existing
/// one to `POST /v1/invitations/accept`.
pub async fn add(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(slug): Path<String>,
    Json(body): Json<AddMember>,
) -> ApiResult<impl IntoResponse> {
    let (tenant, access) =
        tenant_for(&state, &principal, &slug, Role::Admin, "members.add").await?;
    let role = parse_role(&body.role)?;
    check_grant(access.role, None, Some(role))?;
    let added = state
        .engine
        .add_member(tenant.id, &body.email, role, &principal.actor())
        .await?;
    Ok((StatusCode::CREATED, axum::Json(added)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateMember {
    role: String,
}

pub async fn update(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path((slug, user)): Path<(String, String)>,
    Json(body): Json<UpdateMember>,
) -> ApiResult<StatusCode> {
    let (tenant, access) =
        tenant_for(&state, &principal, &slug, Role::Admin, "members.update").await?;
    let user = parse_user(&user)?;
    let role = parse_role(&body.role)?;
    let current = state
        .engine
        .catalog()
        .membership_role(tenant.id, user)
        .await?;
    check_grant(access.role, current, Some(role))?;
    state.engine.set_member_role(tenant.id, user, role).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn remove(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path((slug, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let (tenant, access) =
        tenant_for(&state, &principal, &slug, Role::Admin, "members.remove").await?;
    let user = parse_user(&user)?;
    let current = state
        .engine
        .catalog()
        .membership_role(tenant.id, user)
        .await?;
    check_grant(access.role, current, None)?;
    state.engine.remove_member(tenant.id, user).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptInvitation {
    invitation: String,
}

/// A logged-in user accepts an invitation made out to their email: `200` with the new
/// membership.
pub async fn accept(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Json(body): Json<AcceptInvitation>,
) -> ApiResult<axum::Json<Value>> {
    let Some(user) = principal.user_id() else {
        return Err(ApiError::forbidden(
            "invitations are accepted by the invited user, logged in",
        ));
    };
    let membership = state
        .engine
        .accept_invitation(user, &body.invitation)
        .await?;
    Ok(axum::Json(json!({ "membership": membership })))
}
