//! A guild app that embeds tenancy: every tenancy route, plus `GET /leaderboard`, a
//! handler of its own that reads the resolved tenant's database.

use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tenancy::{rusqlite, Role};
use tenancy_http::{ApiResult, AppState, TenantContext};

#[derive(Serialize)]
pub struct Standing {
    pub name: String,
    pub dkp: i64,
}

/// The guild's members by DKP, highest first. Works for whichever tenant the request
/// resolves to (path, subdomain, header, token or API key), for any role from `viewer` up.
pub async fn leaderboard(ctx: TenantContext) -> ApiResult<Json<Vec<Standing>>> {
    ctx.require(Role::Viewer)?;
    let standings = ctx
        .db(|db| {
            let mut stmt =
                db.prepare("SELECT name, dkp FROM members ORDER BY dkp DESC, name LIMIT 10")?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(Standing {
                        name: r.get(0)?,
                        dkp: r.get(1)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await?;
    Ok(Json(standings))
}

/// tenancy's routes with ours merged in.
pub fn app(state: AppState) -> Router {
    let routes = tenancy_http::routes().route("/leaderboard", get(leaderboard));
    tenancy_http::with_path_resolution(routes, state)
}
