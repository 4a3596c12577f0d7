//! A guild app that embeds tenancy: every tenancy route, plus `GET /leaderboard`, a
//! handler of its own that reads the resolved tenant's data — the same handler whether the
//! tenant lives in a SQLite file, its own PostgreSQL database or schema, or shared tables.

use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tenancy::Role;
use tenancy_http::{ApiResult, AppState, TenantContext};

#[derive(Serialize, Deserialize)]
pub struct Standing {
    pub name: String,
    pub dkp: i64,
}

/// The guild's members by DKP, highest first. Works for whichever tenant the request
/// resolves to (path, subdomain, header, token or API key), for any role from `viewer` up.
pub async fn leaderboard(ctx: TenantContext) -> ApiResult<Json<Vec<Standing>>> {
    ctx.require(Role::Viewer)?;
    let standings = ctx
        .query(
            "SELECT name, dkp FROM members ORDER BY dkp DESC, name LIMIT 10",
            vec![],
        )
        .await?;
    Ok(Json(standings))
}

/// tenancy's routes with ours merged in.
pub fn app(state: AppState) -> Router {
    let routes = tenancy_http::routes().route("/leaderboard", get(leaderboard));
    tenancy_http::with_path_resolution(routes, state)
}
