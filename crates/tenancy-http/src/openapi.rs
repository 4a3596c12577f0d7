//! `/openapi.json`: the control plane, and the data API of the configured tenant schema
//! (each table, its columns and their types), generated from the introspected schema so
//! that it always matches what the server accepts.

use axum::extract::State;
use serde_json::{json, Map, Value};
use tenancy::data::Schema;

use crate::error::ApiResult;
use crate::AppState;

/// `(method, path, summary, request schema, success status, response schema)`.
type Route = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    u16,
    Option<&'static str>,
);

const CONTROL_PLANE: &[Route] = &[
    (
        "post",
        "/v1/auth/signup",
        "Create an account (optionally redeeming an invitation)",
        Some("Signup"),
        201,
        None,
    ),
    (
        "post",
        "/v1/auth/login",
        "Open a session, optionally scoped to a tenant",
        Some("Login"),
        200,
        Some("Session"),
    ),
    (
        "post",
        "/v1/auth/refresh",
        "Spend a refresh token for a new session",
        Some("Refresh"),
        200,
        Some("Session"),
    ),
    (
        "post",
        "/v1/auth/logout",
        "Revoke a session",
        Some("Refresh"),
        204,
        None,
    ),
    (
        "get",
        "/v1/me",
        "The caller and their memberships",
        None,
        200,
        None,
    ),
    (
        "get",
        "/v1/tenant",
        "The tenant this request resolved to, with the caller's role",
        None,
        200,
        None,
    ),
    (
        "get",
        "/v1/tenants",
        "Tenants the caller may see",
        None,
        200,
        None,
    ),
    (
        "post",
        "/v1/tenants",
        "Create a tenant",
        Some("CreateTenant"),
        201,
        Some("Tenant"),
    ),
    (
        "get",
        "/v1/tenants/{slug}",
        "One tenant",
        None,
        200,
        Some("Tenant"),
    ),
    (
        "patch",
        "/v1/tenants/{slug}",
        "Change a tenant's plan, limits, feature flags, budget, trial or subscription end (owner: plan and budget; platform: all)",
        None,
        200,
        Some("Tenant"),
    ),
    (
        "get",
        "/v1/plans",
        "The configured plans and the default one",
        None,
        200,
        None,
    ),
    (
        "delete",
        "/v1/tenants/{slug}",
        "Delete a tenant and its data (owner)",
        None,
        204,
        None,
    ),
    (
        "post",
        "/v1/tenants/{slug}/suspend",
        "Suspend a tenant (platform)",
        None,
        200,
        Some("Tenant"),
    ),
    (
        "post",
        "/v1/tenants/{slug}/resume",
        "Resume a tenant (platform)",
        None,
        200,
        Some("Tenant"),
    ),
    (
        "get",
        "/v1/tenants/{slug}/members",
        "Members of a tenant",
        None,
        200,
        None,
    ),
    (
        "post",
        "/v1/tenants/{slug}/members",
        "Invite an email to the tenant, the same answer whether or not it has an account (admin)",
        Some("AddMember"),
        201,
        None,
    ),
    (
        "post",
        "/v1/invitations/accept",
        "Accept an invitation made out to the logged-in user's email",
        Some("AcceptInvitation"),
        200,
        None,
    ),
    (
        "patch",
        "/v1/tenants/{slug}/members/{user_id}",
        "Change a member's role (admin)",
        Some("UpdateMember"),
        204,
        None,
    ),
    (
        "delete",
        "/v1/tenants/{slug}/members/{user_id}",
        "Remove a member (admin)",
        None,
        204,
        None,
    ),
    (
        "get",
        "/v1/tenants/{slug}/api-keys",
        "API keys of a tenant, without secrets (admin)",
        None,
        200,
        None,
    ),
    (
        "post",
        "/v1/tenants/{slug}/api-keys",
        "Create an API key; the key is in this answer only (admin)",
        Some("CreateKey"),
        201,
        None,
    ),
    (
        "delete",
        "/v1/tenants/{slug}/api-keys/{id}",
        "Revoke an API key (admin)",
        None,
        204,
        None,
    ),
    (
        "get",
        "/v1/tenants/{slug}/domains",
        "Custom domains of a tenant",
        None,
        200,
        None,
    ),
    (
        "post",
        "/v1/tenants/{slug}/domains",
        "Register a custom domain (admin)",
        Some("AddDomain"),
        201,
        None,
    ),
    (
        "delete",
        "/v1/tenants/{slug}/domains/{domain}",
        "Remove a custom domain (admin)",
        None,
        204,
        None,
    ),
    (
        "get",
        "/v1/tenants/{slug}/settings",
        "The tenant's settings document, {} until written (viewer)",
        None,
        200,
        Some("Settings"),
    ),
    (
        "put",
        "/v1/tenants/{slug}/settings",
        "Replace the tenant's settings (admin); 422 invalid_settings names the first bad value's pointer and reason",
        Some("Settings"),
        200,
        Some("Settings"),
    ),
    (
        "get",
        "/v1/tenants/{slug}/audit",
        "Elevated accesses to the tenant (admin)",
        None,
        200,
        None,
    ),
    (
        "get",
        "/v1/tenants/{slug}/usage",
        "Usage per day and metric, ?from=&to= (YYYY-MM-DD, default this month); CSV with Accept: text/csv (admin)",
        None,
        200,
        None,
    ),
    (
        "get",
        "/v1/tenants/{slug}/cost",
        "Month-to-date cost, month-end projection, budget and this month's alerts (admin)",
        None,
        200,
        None,
    ),
    (
        "get",
        "/v1/tenants/{slug}/alerts",
        "Budget alerts raised, newest month first (admin)",
        None,
        200,
        None,
    ),
    (
        "get",
        "/v1/admin/api-keys",
        "Platform API keys (platform)",
        None,
        200,
        None,
    ),
    (
        "post",
        "/v1/admin/api-keys",
        "Create a platform API key (platform)",
        Some("CreateKey"),
        201,
        None,
    ),
    (
        "delete",
        "/v1/admin/api-keys/{id}",
        "Revoke a platform API key (platform)",
        None,
        204,
        None,
    ),
    ("get", "/healthz", "Liveness", None, 200, None),
    (
        "get",
        "/metrics",
        "Prometheus metrics, text format (the metrics or admin token)",
        None,
        200,
        None,
    ),
    (
        "get",
        "/readyz",
        "Readiness (the catalog answers)",
        None,
        200,
        None,
    ),
];

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn problem() -> Value {
    json!({ "description": "An error", "content": { "application/problem+json": { "schema": schema_ref("Problem") } } })
}

fn path_params(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
        .collect()
}

fn operation(
    summary: &str,
    path: &str,
    body: Option<Value>,
    status: u16,
    response: Option<Value>,
    extra: Vec<Value>,
) -> Value {
    let mut op = json!({ "summary": summary, "responses": { "default": problem() } });
    let mut params = path_params(path);
    params.extend(extra);
    if !params.is_empty() {
        op["parameters"] = Value::Array(params);
    }
    if let Some(schema) = body {
        op["requestBody"] =
            json!({ "required": true, "content": { "application/json": { "schema": schema } } });
    }
    let ok = match response {
        Some(schema) => {
            json!({ "description": "OK", "content": { "application/json": { "schema": schema } } })
        }
        None => json!({ "description": "OK" }),
    };
    op["responses"][status.to_string()] = ok;
    op
}

fn add(paths: &mut Map<String, Value>, path: &str, method: &str, op: Value) {
    let entry = paths.entry(path.to_owned()).or_insert_with(|| json!({}));
    entry[method] = op;
}

/// The settings schema as a component: the configured JSON Schema, without the keywords
/// that only make sense at a document's root.
fn settings_component(settings: &Value) -> Value {
    let mut component = settings.clone();
    if let Some(object) = component.as_object_mut() {
        object.remove("$schema");
        object.remove("$id");
    }
    component
}

/// The whole document for a tenant schema and a settings schema.
pub fn document(schema: &Schema, settings: &Value) -> Value {
    let mut paths = Map::new();
    for (method, path, summary, body, status, response) in CONTROL_PLANE {
        let op = operation(
            summary,
            path,
            body.map(schema_ref),
            *status,
            response.map(schema_ref),
            vec![],
        );
        add(&mut paths, path, method, op);
    }
    let mut components = json!({
        "Problem": { "type": "object", "properties": {
            "type": { "type": "string" }, "title": { "type": "string" }, "status": { "type": "integer" },
            "code": { "type": "string" }, "detail": { "type": "string" },
            "request_id": { "type": "string", "description": "the X-Request-Id of the request" },
            "pointer": { "type": "string", "description": "invalid_settings: the JSON Pointer of the first value the settings schema refused" },
            "reason": { "type": "string", "description": "invalid_settings: why it was refused" } } },
        "Settings": settings_component(settings),
        "Tenant": { "type": "object", "properties": {
            "id": { "type": "string", "format": "uuid" }, "slug": { "type": "string" }, "name": { "type": "string" },
            "status": { "type": "string", "enum": ["provisioning","active","failed","suspended","moving","deleting","deleted"] },
            "store": { "type": "string" }, "mode": { "type": "string", "enum": ["database","schema","shared"] },
            "schema_version": { "type": "integer" }, "created_at": { "type": "string", "format": "date-time" },
            "updated_at": { "type": "string", "format": "date-time" } } },
        "CreateTenant": { "type": "object", "required": ["slug"], "properties": { "slug": { "type": "string" }, "name": { "type": "string" } } },
        "Signup": { "type": "object", "required": ["email","password"], "properties": { "email": { "type": "string" }, "password": { "type": "string" }, "invitation": { "type": "string" } } },
        "Login": { "type": "object", "required": ["email","password"], "properties": { "email": { "type": "string" }, "password": { "type": "string" }, "tenant": { "type": "string" } } },
        "Refresh": { "type": "object", "required": ["refresh_token"], "properties": { "refresh_token": { "type": "string" } } },
        "Session": { "type": "object", "properties": { "access_token": { "type": "string" }, "refresh_token": { "type": "string" }, "token_type": { "type": "string" }, "expires_in": { "type": "integer" } } },
        "AddMember": { "type": "object", "required": ["email","role"], "properties": { "email": { "type": "string" }, "role": { "type": "string", "enum": ["viewer","member","admin","owner"] } } },
        "AcceptInvitation": { "type": "object", "required": ["invitation"], "properties": { "invitation": { "type": "string" } } },
        "UpdateMember": { "type": "object", "required": ["role"], "properties": { "role": { "type": "string", "enum": ["viewer","member","admin","owner"] } } },
        "CreateKey": { "type": "object", "properties": { "role": { "type": "string" }, "label": { "type": "string" }, "expires_at": { "type": "string", "format": "date-time" } } },
        "AddDomain": { "type": "object", "required": ["domain"], "properties": { "domain": { "type": "string" } } },
    });

    let list_params = |table: &tenancy::data::Table| {
        let mut params = vec![
            json!({ "name": "select", "in": "query", "schema": { "type": "string" }, "description": "Columns, comma-separated" }),
            json!({ "name": "order", "in": "query", "schema": { "type": "string" }, "description": "col.asc|col.desc, comma-separated" }),
            json!({ "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } }),
            json!({ "name": "cursor", "in": "query", "schema": { "type": "string" }, "description": "The `next` of the previous page" }),
            json!({ "name": "count", "in": "query", "schema": { "type": "string", "enum": ["exact"] } }),
        ];
        for c in &table.columns {
            params.push(
                json!({ "name": c.name, "in": "query", "schema": { "type": "string" },
                "description": "Filter: [not.]eq|neq|lt|lte|gt|gte|like|in|is.value" }),
            );
        }
        params
    };
    for table in schema.tables.values() {
        let name = &table.name;
        let properties: Map<String, Value> = table
            .columns
            .iter()
            .map(|c| {
                let mut s = c.kind.json_schema();
                if c.nullable {
                    s["nullable"] = json!(true);
                }
                (c.name.clone(), s)
            })
            .collect();
        let required: Vec<&str> = table
            .columns
            .iter()
            .filter(|c| {
                let generated = c.primary_key && table.key().is_some();
                !(c.nullable || c.has_default || generated)
            })
            .map(|c| c.name.as_str())
            .collect();
        components[name.as_str()] =
            json!({ "type": "object", "properties": properties, "required": required });
        let row = schema_ref(name);
        let rows = json!({ "type": "object", "properties": { "data": { "type": "array", "items": row } } });
        let page = json!({ "type": "object", "properties": {
            "data": { "type": "array", "items": row }, "next": { "type": "string", "nullable": true }, "count": { "type": "integer" } } });
        let collection = format!("/v1/data/{name}");
        add(
            &mut paths,
            &collection,
            "get",
            operation(
                &format!("List {name}"),
                &collection,
                None,
                200,
                Some(page),
                list_params(table),
            ),
        );
        add(
            &mut paths,
            &collection,
            "post",
            operation(
                &format!("Insert one {name} row or an array of up to 1,000"),
                &collection,
                Some(
                    json!({ "oneOf": [row, { "type": "array", "items": row, "maxItems": 1000 }] }),
                ),
                201,
                Some(rows.clone()),
                vec![],
            ),
        );
        add(
            &mut paths,
            &collection,
            "patch",
            operation(
                &format!("Update the {name} rows matching the filters"),
                &collection,
                Some(row.clone()),
                200,
                Some(rows),
                list_params(table),
            ),
        );
        add(
            &mut paths,
            &collection,
            "delete",
            operation(
                &format!("Delete the {name} rows matching the filters"),
                &collection,
                None,
                200,
                None,
                list_params(table),
            ),
        );
        if table.key().is_some() {
            let item = format!("/v1/data/{name}/{{id}}");
            add(
                &mut paths,
                &item,
                "get",
                operation(
                    &format!("One {name} row"),
                    &item,
                    None,
                    200,
                    Some(row.clone()),
                    vec![],
                ),
            );
            add(
                &mut paths,
                &item,
                "patch",
                operation(
                    &format!("Update one {name} row"),
                    &item,
                    Some(row.clone()),
                    200,
                    Some(row.clone()),
                    vec![],
                ),
            );
            add(
                &mut paths,
                &item,
                "delete",
                operation(
                    &format!("Delete one {name} row"),
                    &item,
                    None,
                    204,
                    None,
                    vec![],
                ),
            );
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": { "title": "tenancy", "version": env!("CARGO_PKG_VERSION"),
            "description": format!("Control plane and data API (tenant schema version {}).", schema.version) },
        "components": {
            "schemas": components,
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } }
        },
        "security": [{ "bearer": [] }],
        "paths": paths,
    })
}

pub async fn handler(State(state): State<AppState>) -> ApiResult<axum::Json<Value>> {
    let schema = state.engine.configured_schema().await?;
    Ok(axum::Json(document(
        &schema,
        state.engine.settings_schema().schema(),
    )))
}
