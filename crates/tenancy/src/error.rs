//! The engine's errors. `tenancy-http` maps each variant to a problem+json code in one place.

use std::path::PathBuf;

/// Everything the engine can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid slug {slug:?}: {reason}")]
    InvalidSlug { slug: String, reason: &'static str },

    #[error("invalid tenant name: {reason}")]
    InvalidName { reason: &'static str },

    #[error("a tenant with slug {slug:?} already exists")]
    TenantExists { slug: String },

    #[error("no tenant with slug {slug:?}")]
    TenantNotFound { slug: String },

    #[error("tenant {slug:?} is {status}; {action} needs it to be {expected}")]
    InvalidTransition {
        slug: String,
        status: String,
        action: &'static str,
        expected: &'static str,
    },

    #[error("tenant {slug:?} is busy: another process is {status} it")]
    TenantBusy { slug: String, status: String },

    #[error("provisioning tenant {slug:?} failed: {reason}; it is marked failed, retry with `tenancy tenant retry {slug}`")]
    ProvisioningFailed { slug: String, reason: String },

    #[error("{0}")]
    InvalidMigrations(String),

    #[error("migration {file} changed after it was applied (checksum {applied} applied, {current} on disk); restore the file or add a new migration instead")]
    MigrationChanged {
        file: String,
        applied: String,
        current: String,
    },

    #[error("migration {file} failed: {reason}")]
    MigrationFailed { file: String, reason: String },

    #[error("tenant database is at schema version {applied}, which the migrations folder does not have (latest is {latest}); was a migration file removed?")]
    UnknownSchemaVersion { applied: i64, latest: i64 },

    #[error("another `{operation}` is already running (started by process {owner} at {since}); wait for it to finish")]
    OperationInProgress {
        operation: String,
        owner: String,
        since: String,
    },

    #[error("invalid email: {reason}")]
    InvalidEmail { reason: &'static str },

    #[error("password too weak: {reason}")]
    WeakPassword { reason: &'static str },

    #[error("an account with this email already exists")]
    EmailTaken,

    #[error("wrong email or password")]
    InvalidCredentials,

    #[error("the token is invalid or expired")]
    InvalidToken,

    #[error("too many failed attempts; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },

    #[error("unknown role; use viewer, member, admin or owner")]
    InvalidRole,

    #[error("the invitation is unknown, expired, used, or for another email")]
    InvalidInvitation,

    #[error("that user is already a member of the tenant")]
    MemberExists,

    #[error("no such member")]
    MemberNotFound,

    #[error("no user with that email")]
    UserNotFound,

    #[error("a tenant must keep at least one owner")]
    LastOwner,

    #[error("invalid domain: {reason}")]
    InvalidDomain { reason: &'static str },

    #[error("that domain is registered already")]
    DomainTaken,

    #[error("no such API key")]
    ApiKeyNotFound,

    #[error("{0}")]
    InvalidInput(String),

    #[error("no table {table:?}")]
    TableNotFound { table: String },

    #[error("no column {column:?}")]
    ColumnNotFound { column: String },

    #[error("invalid value for {column}: {reason}")]
    InvalidValue { column: String, reason: String },

    #[error("invalid filter: {0}")]
    InvalidFilter(String),

    #[error("{detail} ({constraint})")]
    ConstraintViolation { constraint: String, detail: String },

    #[error("no such row")]
    RowNotFound,

    #[error("this needs the {needed} role or higher")]
    Forbidden { needed: &'static str },

    #[error("catalog error: {0}")]
    Catalog(String),

    #[error("tenant database error: {0}")]
    TenantDb(String),

    /// A SQLite error converted with `?` (in the catalog, or in a handler's closure).
    #[error("database error: {0}")]
    Sqlite(String),

    /// The tenant's schema is behind the migrations this process serves.
    #[error("tenant {slug:?} is being migrated to the latest schema; retry shortly")]
    TenantMigrating { slug: String },

    #[error("store {store:?} is unavailable: {reason}")]
    StoreUnavailable { store: String, reason: String },

    /// Every connection of the store's budget stayed busy for the whole wait.
    #[error("store {store:?} is busy: no connection became free within {waited_ms} ms")]
    StoreBusy { store: String, waited_ms: u64 },

    #[error("no store named {store:?} is configured")]
    UnknownStore { store: String },

    /// A mode the store cannot hold (e.g. `schema` on a SQLite store).
    #[error("store {store:?} ({kind}) cannot hold tenants in {mode} mode")]
    ModeNotSupported {
        store: String,
        kind: &'static str,
        mode: String,
    },

    /// The key that encrypts secrets in the catalog is missing or wrong.
    #[error("secrets: {0}")]
    Secrets(String),

    #[error("store error at {path}: {reason}")]
    Store { path: PathBuf, reason: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn store(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Error::Store {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Sqlite(e.to_string())
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Internal(format!("background task failed: {e}"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
