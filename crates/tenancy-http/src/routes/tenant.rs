//! `GET /v1/tenant`: the tenant the resolver chain found, and the caller's role there.

use axum::Json;
use serde_json::{json, Value};

use crate::resolve::TenantContext;

pub async fn show(ctx: TenantContext) -> Json<Value> {
    Json(json!({
        "id": ctx.tenant.id,
        "slug": ctx.tenant.slug,
        "name": ctx.tenant.name,
        "status": ctx.tenant.status,
        "role": ctx.role,
        "resolved_by": ctx.resolved_by,
    }))
}
