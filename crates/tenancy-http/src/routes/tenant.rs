//! `GET /v1/tenant`: the tenant the resolver chain found, the caller's role there, and —
//! when plans are configured — its plan, each limit with what it uses of it, and its
//! feature flags.

use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiResult;
use crate::resolve::TenantContext;

pub async fn show(ctx: TenantContext) -> ApiResult<Json<Value>> {
    let mut body = json!({
        "id": ctx.tenant.id,
        "slug": ctx.tenant.slug,
        "name": ctx.tenant.name,
        "status": ctx.tenant.status,
        "role": ctx.role,
        "resolved_by": ctx.resolved_by,
    });
    if let Some(effective) = ctx.engine().effective_plan(&ctx.tenant) {
        let limits = ctx.engine().limit_usage(&ctx.tenant).await?;
        body["plan"] = json!(effective.plan);
        body["limits"] = json!(limits);
        body["features"] = json!(effective.features);
        if let Some(budget) = effective.budget {
            body["budget"] = json!(budget);
        }
        for (key, at) in [
            ("trial_ends_at", ctx.tenant.trial_ends_at),
            ("subscription_ends_at", ctx.tenant.subscription_ends_at),
        ] {
            if let Some(at) = at {
                body[key] = json!(at);
            }
        }
    }
    Ok(Json(body))
}
