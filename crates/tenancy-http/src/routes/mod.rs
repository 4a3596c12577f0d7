//! Route handlers, one module per resource.

pub mod admin;
pub mod api_keys;
pub mod auth;
pub mod data;
pub mod domains;
pub mod health;
pub mod members;
pub mod settings;
pub mod tenant;
pub mod tenants;
pub mod usage;

use tenancy::{Access, Principal, Role, Tenant};

use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// The tenant a control-plane path names, if the caller may see it, with the caller's
/// access — refused with 403 below `needed`. Unknown and invisible tenants are the same 404.
pub(crate) async fn tenant_for(
    state: &AppState,
    principal: &Principal,
    raw_slug: &str,
    needed: Role,
    action: &str,
) -> ApiResult<(Tenant, Access)> {
    let not_found = || ApiError::tenant_not_found(raw_slug);
    let slug = ApiError::slug_or_not_found(raw_slug)?;
    let tenant = state.engine.tenant(&slug).await?;
    let access = state
        .engine
        .access(principal, &tenant, action)
        .await?
        .ok_or_else(not_found)?;
    if !access.role.allows(needed) {
        return Err(ApiError::forbidden(format!(
            "this needs the {needed} role or higher in {slug}; you are {}",
            access.role
        )));
    }
    Ok((tenant, access))
}

/// Refuses callers without platform power.
pub(crate) fn require_platform(principal: &Principal) -> ApiResult<()> {
    if principal.is_platform() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "this needs a platform administrator (admin token, superadmin or platform API key)",
        ))
    }
}
