//! `/v1/tenants/{slug}/usage`, `/cost` and `/alerts`: what a tenant used per day, what its
//! month costs and is heading for, and the budget alerts it raised. Admins of the tenant
//! and platform administrators.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tenancy::usage::DayRange;
use tenancy::Role;

use super::tenant_for;
use crate::auth::Authenticated;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// `GET /v1/tenants/{slug}/usage?from=YYYY-MM-DD&to=YYYY-MM-DD` (default: this month so
/// far). JSON, or CSV (`day,metric,label,value`) with `Accept: text/csv`. This process's
/// counts are written first, so they are included.
pub async fn usage(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(slug): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (tenant, _) = tenant_for(&state, &principal, &slug, Role::Admin, "usage.show").await?;
    let (mut from, mut to) = (None, None);
    for (name, value) in &params {
        let slot = match name.as_str() {
            "from" => &mut from,
            "to" => &mut to,
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_date_range",
                    format!("unknown parameter {other:?}; use from and to (YYYY-MM-DD)"),
                ))
            }
        };
        if slot.replace(value.as_str()).is_some() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_date_range",
                format!("{name} is given twice"),
            ));
        }
    }
    let range = DayRange::parse(from, to, chrono::Utc::now().date_naive())?;
    let report = state.engine.usage(&tenant, range).await?;
    if wants_csv(&headers) {
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!(
                        "attachment; filename=\"{}-usage-{}-{}.csv\"",
                        tenant.slug, range.from, range.to
                    ),
                ),
            ],
            report.to_csv(),
        )
            .into_response());
    }
    Ok(axum::Json(report).into_response())
}

/// Whether the client asked for CSV rather than JSON.
fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/csv"))
        })
}

/// `GET /v1/tenants/{slug}/cost`: the month to date, the projection to its end, the
/// budget and the alerts raised this month.
pub async fn cost(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(slug): Path<String>,
) -> ApiResult<axum::Json<tenancy::usage::CostEstimate>> {
    let (tenant, _) = tenant_for(&state, &principal, &slug, Role::Admin, "cost.show").await?;
    Ok(axum::Json(state.engine.cost(&tenant).await?))
}

/// `GET /v1/tenants/{slug}/alerts`: every budget alert the tenant raised, newest month
/// first.
pub async fn alerts(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(slug): Path<String>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let (tenant, _) = tenant_for(&state, &principal, &slug, Role::Admin, "alerts.list").await?;
    Ok(axum::Json(
        json!({ "data": state.engine.budget_alerts(&tenant).await? }),
    ))
}
