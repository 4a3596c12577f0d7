//! `/healthz` (the process answers) and `/readyz` (the catalog and every store answer
//! too).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::AppState;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when the catalog and every store answer. Not ready names what does not (the
/// catalog, stores by name); why stays in the log, with the addresses.
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let readiness = state.engine.readiness().await;
    if readiness.is_ready() {
        let stores: serde_json::Map<String, Value> = readiness
            .stores
            .iter()
            .map(|(name, _)| (name.clone(), json!("ok")))
            .collect();
        // Tenants whose migration failed answer `tenant_migration_failed`; this process
        // still serves every other tenant, so it stays ready and says the fleet is degraded.
        let fleet = if readiness.failed_migrations == 0 {
            json!({ "status": "ok" })
        } else {
            json!({ "status": "degraded", "failed_migrations": readiness.failed_migrations })
        };
        // Behind the fleet (another process migrated it with files this one lacks): still
        // serving every tenant's data, refusing to build tenants at an old version.
        let migrations = match &readiness.behind_fleet {
            None => json!({ "status": "current", "version": readiness.schema_version }),
            Some((fleet_version, detail)) => json!({
                "status": "behind_fleet",
                "version": readiness.schema_version,
                "fleet_version": fleet_version,
                "detail": detail,
            }),
        };
        return Ok(Json(json!({
            "status": "ready",
            "catalog": "ok",
            "stores": stores,
            "fleet": fleet,
            "migrations": migrations,
        })));
    }
    let mut down = Vec::new();
    if let Some(e) = &readiness.catalog {
        tracing::warn!(error = %e, "not ready: the catalog does not answer");
        down.push("the catalog".to_owned());
    }
    for (name, e) in &readiness.stores {
        if let Some(e) = e {
            tracing::warn!(store = %name, error = %e, "not ready: a store does not answer");
            down.push(format!("store {name:?}"));
        }
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        format!("not ready: {} unreachable", down.join(", ")),
    )
    .retry_after(5))
}
