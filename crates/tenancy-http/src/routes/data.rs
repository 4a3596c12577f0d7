//! `/v1/data/{table}[/{id}]`: REST over the resolved tenant's tables. `viewer` reads;
//! `member` and above write. Tables and columns come from the tenant's introspected
//! schema; everything else is refused before any SQL runs.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{json, Value};
use tenancy::data::{parse_filters, parse_list, Object, Page, Schema};
use tenancy::data::{DataOp, DataOutput};
use tenancy::Role;

use crate::error::{ApiError, ApiResult};
use crate::resolve::TenantContext;
use crate::strict_json::StrictJson;

type Params = Query<Vec<(String, String)>>;

fn table_not_found() -> ApiError {
    ApiError::from(tenancy::Error::TableNotFound {
        table: String::new(),
    })
}

/// `{table}` of a data path. A segment that does not decode (not UTF-8) names no table.
pub struct TablePath(String);

impl<S: Send + Sync> FromRequestParts<S> for TablePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(table)) => Ok(TablePath(table)),
            Err(_) => Err(table_not_found()),
        }
    }
}

/// `{table}/{id}` of a data path; an undecodable id names no row.
pub struct RowPath(String, String);

impl<S: Send + Sync> FromRequestParts<S> for RowPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<(String, String)>::from_request_parts(parts, state).await {
            Ok(Path((table, id))) => Ok(RowPath(table, id)),
            Err(_) => {
                let table_segment = parts.uri.path().rsplit('/').nth(1).unwrap_or("");
                Err(if percent_decodes(table_segment) {
                    ApiError::from(tenancy::Error::RowNotFound)
                } else {
                    table_not_found()
                })
            }
        }
    }
}

/// Whether a path segment percent-decodes to UTF-8.
fn percent_decodes(segment: &str) -> bool {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            match (
                bytes.get(i + 1).and_then(|&b| hex(b)),
                bytes.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                _ => return false,
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).is_ok()
}

/// The tenant's tables, once its schema is current (never served behind).
async fn schema(ctx: &TenantContext) -> ApiResult<Arc<Schema>> {
    let tenant = ctx.engine().ensure_current(&ctx.tenant).await?;
    Ok(ctx.engine().data_schema(&tenant).await?)
}

/// Runs one operation on the resolved tenant, whichever store holds it.
async fn run(
    ctx: &TenantContext,
    schema: Arc<Schema>,
    table: String,
    op: DataOp,
) -> ApiResult<DataOutput> {
    Ok(ctx.engine().data(&ctx.tenant, schema, table, op).await?)
}

fn unexpected() -> ApiError {
    ApiError::from(tenancy::Error::Internal(
        "a data operation answered the wrong shape".into(),
    ))
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
    TablePath(table): TablePath,
    Query(params): Params,
) -> ApiResult<axum::Json<Page>> {
    ctx.require(Role::Viewer)?;
    let schema = schema(&ctx).await?;
    let query = parse_list(schema.table(&table)?, &params)?;
    match run(&ctx, schema, table, DataOp::List(query)).await? {
        DataOutput::Page(page) => Ok(axum::Json(page)),
        _ => Err(unexpected()),
    }
}

pub async fn get(ctx: TenantContext, RowPath(table, id): RowPath) -> ApiResult<axum::Json<Object>> {
    ctx.require(Role::Viewer)?;
    let schema = schema(&ctx).await?;
    match run(&ctx, schema, table, DataOp::Get(id)).await? {
        DataOutput::Row(row) => Ok(axum::Json(row)),
        _ => Err(unexpected()),
    }
}

/// One object or an array of up to 1,000, inserted atomically; answers the created rows.
pub async fn insert(
    ctx: TenantContext,
    TablePath(table): TablePath,
    StrictJson(body): StrictJson,
) -> ApiResult<impl IntoResponse> {
    ctx.require(Role::Member)?;
    let schema = schema(&ctx).await?;
    schema.table(&table)?;
    let rows: Vec<Object> = match body {
        Value::Array(items) => items.into_iter().map(object).collect::<ApiResult<_>>()?,
        other => vec![object(other)?],
    };
    match run(&ctx, schema, table, DataOp::Insert(rows)).await? {
        DataOutput::Rows(created) => {
            Ok((StatusCode::CREATED, axum::Json(json!({ "data": created }))))
        }
        _ => Err(unexpected()),
    }
}

pub async fn update(
    ctx: TenantContext,
    RowPath(table, id): RowPath,
    StrictJson(body): StrictJson,
) -> ApiResult<axum::Json<Object>> {
    ctx.require(Role::Member)?;
    let schema = schema(&ctx).await?;
    schema.table(&table)?;
    let patch = object(body)?;
    match run(&ctx, schema, table, DataOp::Update(id, patch)).await? {
        DataOutput::Row(row) => Ok(axum::Json(row)),
        _ => Err(unexpected()),
    }
}

pub async fn delete(ctx: TenantContext, RowPath(table, id): RowPath) -> ApiResult<StatusCode> {
    ctx.require(Role::Member)?;
    let schema = schema(&ctx).await?;
    run(&ctx, schema, table, DataOp::Delete(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PATCH /v1/data/{table}?filters`: every matching row; at least one filter.
pub async fn update_filtered(
    ctx: TenantContext,
    TablePath(table): TablePath,
    Query(params): Params,
    StrictJson(body): StrictJson,
) -> ApiResult<axum::Json<Value>> {
    ctx.require(Role::Member)?;
    let schema = schema(&ctx).await?;
    let filters = parse_filters(schema.table(&table)?, &params)?;
    let patch = object(body)?;
    match run(&ctx, schema, table, DataOp::UpdateFiltered(filters, patch)).await? {
        DataOutput::Rows(rows) => Ok(axum::Json(json!({ "data": rows }))),
        _ => Err(unexpected()),
    }
}

/// `DELETE /v1/data/{table}?filters`: every matching row; at least one filter.
pub async fn delete_filtered(
    ctx: TenantContext,
    TablePath(table): TablePath,
    Query(params): Params,
) -> ApiResult<axum::Json<Value>> {
    ctx.require(Role::Member)?;
    let schema = schema(&ctx).await?;
    let filters = parse_filters(schema.table(&table)?, &params)?;
    match run(&ctx, schema, table, DataOp::DeleteFiltered(filters)).await? {
        DataOutput::Deleted(deleted) => Ok(axum::Json(json!({ "deleted": deleted }))),
        _ => Err(unexpected()),
    }
}
