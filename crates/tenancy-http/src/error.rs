//! problem+json errors (RFC 9457). The one place where engine errors become HTTP.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error response: a status, a stable machine-readable `code`, a human `detail`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    /// Sent as `Retry-After` (seconds) with 429 and 503 answers.
    pub retry_after: Option<u64>,
    /// Members of the problem object beyond the standard ones (RFC 9457 extensions), such
    /// as the `pointer` and `reason` of `invalid_settings` (boxed: most problems have
    /// none, and every handler's `Result` carries this type).
    pub extensions: Option<Box<serde_json::Map<String, serde_json::Value>>>,
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    code: &'a str,
    detail: &'a str,
    /// The request's id ([`crate::observe`]), to quote when reporting a problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
    #[serde(flatten)]
    extensions: &'a serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            detail: detail.into(),
            retry_after: None,
            extensions: None,
        }
    }

    /// Adds a member to the problem object (never one of the standard members).
    pub fn with(mut self, name: &str, value: impl Into<serde_json::Value>) -> ApiError {
        self.extensions
            .get_or_insert_with(Default::default)
            .insert(name.to_owned(), value.into());
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after = Some(seconds);
        self
    }

    /// The one 404 for a tenant that does not exist, may not be seen, or whose name is not
    /// even a slug: all alike, so tenants cannot be enumerated.
    pub fn tenant_not_found(raw_slug: &str) -> ApiError {
        ApiError::from(tenancy::Error::TenantNotFound {
            slug: raw_slug.chars().take(63).collect(),
        })
    }

    /// A slug a client sent: an invalid one names no tenant (the same 404).
    pub fn slug_or_not_found(raw: &str) -> ApiResult<tenancy::Slug> {
        tenancy::Slug::parse(raw).map_err(|_| ApiError::tenant_not_found(raw))
    }

    pub fn forbidden(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send a valid token as `Authorization: Bearer <token>`",
        )
    }

    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to handle the request; the error is logged",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let none = serde_json::Map::new();
        let body = Problem {
            kind: format!(
                "https://tenancy.dev/problems/{}",
                self.code.replace('_', "-")
            ),
            title,
            status: self.status.as_u16(),
            code: self.code,
            detail: &self.detail,
            request_id: crate::observe::request_id(),
            extensions: self.extensions.as_deref().unwrap_or(&none),
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<tenancy::Error> for ApiError {
    fn from(e: tenancy::Error) -> ApiError {
        use tenancy::Error as E;
        match &e {
            E::InvalidSlug { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_slug", e.to_string())
            }
            E::InvalidName { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_name", e.to_string())
            }
            E::TenantExists { .. } => {
                ApiError::new(StatusCode::CONFLICT, "tenant_exists", e.to_string())
            }
            E::TenantNotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "tenant_not_found", e.to_string())
            }
            E::InvalidTransition { .. } => {
                ApiError::new(StatusCode::CONFLICT, "invalid_state", e.to_string())
            }
            E::TenantBusy { .. } => {
                ApiError::new(StatusCode::CONFLICT, "tenant_busy", e.to_string())
            }
            E::OperationInProgress { operation, .. } => ApiError::new(
                StatusCode::CONFLICT,
                "operation_in_progress",
                format!("another `{operation}` is running; try again when it ends"),
            ),
            // A full disk answers the same code wherever it strikes; the tenant a failed
            // provisioning registered is still `failed` and retriable, and the detail says so.
            E::ProvisioningFailed { slug, .. } if e.is_storage_full() => {
                tracing::error!(error = %e, "provisioning failed: disk full");
                ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "storage_full",
                    format!("provisioning tenant {slug:?} failed: the server's disk is full; the tenant is marked failed and can be retried with `tenancy tenant retry {slug}` once space is freed"),
                )
            }
            E::StorageFull { .. } => {
                tracing::error!(error = %e, "disk full");
                ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "storage_full",
                    "the server's disk is full, so the change was not made (nothing was half-written); retry once the operator has freed space",
                )
            }
            E::ProvisioningFailed { slug, .. } => {
                tracing::error!(error = %e, "provisioning failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "provisioning_failed",
                    format!("provisioning tenant {slug:?} failed and is logged; the tenant is marked failed and can be retried with `tenancy tenant retry {slug}`"),
                )
            }
            E::BehindFleet { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "behind_fleet",
                e.to_string(),
            )
            .retry_after(30),
            E::InvalidMigrations(_)
            | E::MigrationChanged { .. }
            | E::MigrationFailed { .. }
            | E::RehearsalFailed { .. }
            | E::UnknownSchemaVersion { .. } => {
                tracing::error!(error = %e, "tenant schema problem");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "schema_invalid",
                    "the tenant schema configured on this server is not valid; the problem is logged for the operator",
                )
            }
            E::InvalidEmail { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_email", e.to_string())
            }
            E::WeakPassword { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "weak_password", e.to_string())
            }
            E::EmailTaken => ApiError::new(StatusCode::CONFLICT, "email_taken", e.to_string()),
            E::InvalidCredentials => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                e.to_string(),
            ),
            E::InvalidToken => {
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", e.to_string())
            }
            E::RateLimited { retry_after_secs } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", e.to_string())
                    .retry_after(*retry_after_secs)
            }
            E::TenantSuspended { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "tenant_suspended", e.to_string())
            }
            E::UnknownPlan { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "unknown_plan", e.to_string())
            }
            E::QuotaExceeded {
                limit,
                current,
                max,
            } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "quota_exceeded",
                e.to_string(),
            )
            .with("limit", limit.as_str())
            .with("current", *current)
            .with("max", *max),
            E::FeatureDisabled { feature, .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "feature_disabled", e.to_string())
                    .with("feature", feature.as_str())
            }
            E::TenantLimitReached { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "tenant_limit_reached", e.to_string())
            }
            E::HashingBusy { retry_after_secs } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "auth_busy", e.to_string())
                    .retry_after(*retry_after_secs)
            }
            E::InvalidRole => ApiError::new(StatusCode::BAD_REQUEST, "invalid_role", e.to_string()),
            E::InvalidInvitation => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_invitation", e.to_string())
            }
            E::MemberExists => ApiError::new(StatusCode::CONFLICT, "member_exists", e.to_string()),
            E::MemberNotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "member_not_found", e.to_string())
            }
            E::UserNotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "user_not_found", e.to_string())
            }
            E::LastOwner => ApiError::new(StatusCode::CONFLICT, "last_owner", e.to_string()),
            E::InvalidDomain { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_domain", e.to_string())
            }
            E::DomainTaken => ApiError::new(StatusCode::CONFLICT, "domain_taken", e.to_string()),
            E::DomainReserved { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "domain_reserved", e.to_string())
            }
            E::DomainUnverified { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "domain_unverified",
                e.to_string(),
            ),
            E::DomainNotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "domain_not_found", e.to_string())
            }
            E::ApiKeyNotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "api_key_not_found", e.to_string())
            }
            E::InvalidSettings { pointer, reason } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_settings",
                e.to_string(),
            )
            .with("pointer", pointer.as_str())
            .with("reason", reason.as_str()),
            E::SettingsTooLarge { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "settings_too_large",
                e.to_string(),
            ),
            // Only ever at start-up (the engine does not open): the operator's to fix.
            E::InvalidSettingsSchema { .. } => {
                tracing::error!(error = %e, "invalid settings schema");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "invalid_settings_schema",
                    e.to_string(),
                )
            }
            E::InvalidInput(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", e.to_string())
            }
            E::InvalidDateRange(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_date_range", e.to_string())
            }
            E::Forbidden { .. } => ApiError::forbidden(e.to_string()),
            E::TableNotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "table_not_found", e.to_string())
            }
            E::ColumnNotFound { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "column_not_found", e.to_string())
            }
            E::InvalidValue { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_value", e.to_string())
            }
            E::ValueTooLong { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "value_too_long", e.to_string())
            }
            E::InvalidFilter(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_filter", e.to_string())
            }
            E::ConstraintViolation { .. } => {
                ApiError::new(StatusCode::CONFLICT, "constraint_violation", e.to_string())
            }
            E::RowNotFound => ApiError::new(StatusCode::NOT_FOUND, "row_not_found", e.to_string()),
            // The store's address and the driver's words stay in the log.
            E::StoreUnavailable { store, .. } => {
                tracing::warn!(error = %e, "store unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    format!(
                        "the database holding this tenant ({store}) is unavailable; retry shortly"
                    ),
                )
                .retry_after(5)
            }
            // The catalog's address and the driver's words stay in the log.
            E::CatalogUnavailable(_) => {
                tracing::warn!(error = %e, "catalog unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "catalog_unavailable",
                    "the platform's catalog database is unavailable; retry shortly",
                )
                .retry_after(5)
            }
            // Not `tenant_migrating` and no Retry-After: retrying does not help until an
            // operator fixes the migration. The migration's error stays in the log.
            E::TenantMigrationFailed { slug, version, .. } => {
                tracing::error!(error = %e, "a tenant's migration failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "tenant_migration_failed",
                    format!("tenant {slug:?} cannot be served: its migration to schema version {version} failed; the operator must fix it"),
                )
            }
            E::TenantMigrating { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "tenant_migrating",
                e.to_string(),
            )
            .retry_after(5),
            E::StoreBusy { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_busy",
                "every database connection stayed busy; retry shortly",
            )
            .retry_after(1),
            E::UnknownStore { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "unknown_store", e.to_string())
            }
            E::ModeNotSupported { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "mode_not_supported", e.to_string())
            }
            E::Catalog(_)
            | E::Sqlite(_)
            | E::Store { .. }
            | E::Io { .. }
            | E::TenantDb(_)
            | E::Secrets(_)
            | E::PrivilegesMissing { .. }
            | E::Internal(_) => {
                tracing::error!(error = %e, "internal error");
                ApiError::internal()
            }
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
