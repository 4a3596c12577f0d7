//! `/v1/data/{table}[/{id}]`: REST over the resolved tenant's tables. `viewer` reads;
//! `member` and above write. Tables and columns come from the tenant's introspected
//! schema; everything else is refused before any SQL runs.

use std::sync::Arc;

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{json, Value};
use tenancy::data::{exec, parse_filters, parse_list, Object, Page, Schema};
use tenancy::Role;

use crate::error::{ApiError, ApiResult};
use crate::resolve::TenantContext;
use crate::strict_json::StrictJson;

type Params = Query<Vec<(String, String)>>;

async fn schema(ctx: &TenantContext) -> ApiResult<Arc<Schema>> {
    Ok(ctx.engine().data_schema(&ctx.tenant).await?)
}

fn object(value: Value) -> ApiResult<Object> {
    match value {
        Value::Object(o) => Ok(o),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "expected a JSON object",
        )),
    }
}

pub async fn list(
    ctx: TenantContext,
    Path(table): Path<String>,
    Query(params): Params,
) -> ApiResult<axum::Json<Page>> {
    ctx.require(Role::Viewer)?;
    let schema = schema(&ctx).await?;
    let query = parse_list(schema.table(&table)?, &params)?;
    let page = ctx
        .db(move |db| exec::list(db, schema.table(&table)?, &query))
        .await?;
    Ok(axum::Json(page))
}

pub async fn get(
    ctx: TenantContext,
    Path((table, id)): Path<(String, String)>,
) -> ApiResult<axum::Json<Object>> {
    ctx.require(Role::Viewer)?;
    let schema = schema(&ctx).await?;
    schema.table(&table)?;
    let row = ctx
        .db(move |db| exec::get(db, schema.table(&table)?, &id))
        .await?;
    Ok(axum::Json(row))
}

/// One object or an array of up to 1,000, inserted atomically; answers the created rows.
pub async fn insert(
    ctx: TenantContext,
    Path(table): Path<String>,
    StrictJson(body): StrictJson,
) -> ApiResult<impl IntoResponse> {
    ctx.require(Role::Member)?;
    let schema = schema(&ctx).await?;
    schema.table(&table)?;
    let rows: Vec<Object> = match body {
        Value::Array(items) => items.into_iter().map(object).collect::<ApiResult<_>>()?,
        other => vec![object(other)?],
    };
    let created = ctx
        .db(move |db| exec::insert(db, schema.table(&table)?, &rows))
        .await?;
    Ok((StatusCode::CREATED, axum::Json(json!({ "data": created }))))
}

pub async fn update(
    ctx: TenantContext,
    Path((table, id)): Path<(String, String)>,
    StrictJson(body): StrictJson,
) -> ApiResult<axum::Json<Object>> {
    ctx.require(Role::Member)?;
    let schema = schema(&ctx).await?;
    schema.table(&table)?;
    let patch = object(body)?;
    let row = ctx
        .db(move |db| exec::update(db, schema.table(&table)?, &id, &patch))
        .await?;
    Ok(axum::Json(row))
}

pub async fn delete(
    ctx: TenantContext,
    Path((table, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    ctx.require(Role::Member)?;
    let schema = schema(&ctx).await?;
    schema.table(&table)?;
    ctx.db(move |db| exec::delete(db, schema.table(&table)?, &id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PATCH /v1/data/{table}?filters`: every matching row; at least one filter.
pub async fn update_filtered(
    ctx: TenantContext,
    Path(table): Path<String>,
    Query(params): Params,
    StrictJson(body): StrictJson,
) -> ApiResult<axum::Json<Value>> {
    ctx.require(Role::Member)?;
    let schema = schema(&ctx).await?;
    let filters = parse_filters(schema.table(&table)?, &params)?;
    let patch = object(body)?;
    let rows = ctx
        .db(move |db| exec::update_filtered(db, schema.table(&table)?, &filters, &patch))
        .await?;
    Ok(axum::Json(json!({ "data": rows })))
}

/// `DELETE /v1/data/{table}?filters`: every matching row; at least one filter.
pub async fn delete_filtered(
    ctx: TenantContext,
    Path(table): Path<String>,
    Query(params): Params,
) -> ApiResult<axum::Json<Value>> {
    ctx.require(Role::Member)?;
    let schema = schema(&ctx).await?;
    let filters = parse_filters(schema.table(&table)?, &params)?;
    let deleted = ctx
        .db(move |db| exec::delete_filtered(db, schema.table(&table)?, &filters))
        .await?;
    Ok(axum::Json(json!({ "deleted": deleted })))
}
