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

    /// The migration set failed its rehearsal, before any tenant was touched.
    #[error("the migrations fail for {mode} tenants of store {store:?}: {reason}; no tenant was touched")]
    RehearsalFailed {
        store: String,
        mode: String,
        reason: String,
    },

    /// The tenant's schema is behind because its migration failed: retrying the request
    /// does not help until an operator fixes the migration.
    #[error("tenant {slug:?} cannot be served: its migration to schema version {version} failed ({reason}); the operator must fix the migration and run `tenancy migrate`")]
    TenantMigrationFailed {
        slug: String,
        version: i64,
        reason: String,
    },

    /// Another process migrated the fleet past the migrations this process has, and its
    /// migrations folder does not have the new files (yet).
    #[error("the fleet is at schema version {fleet} but this server's migrations reach {here} ({reason}); deploy the new migration files to it: it follows without a restart")]
    BehindFleet {
        here: i64,
        fleet: i64,
        reason: String,
    },

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

    #[error("too many attempts; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },

    /// A suspended tenant changes nothing but its own resumption: no new keys, members,
    /// invitations, roles, domains or sessions scoped to it.
    #[error("tenant {slug:?} is suspended; only its resumption changes it")]
    TenantSuspended { slug: String },

    /// A self-service user already owns as many tenants as the server allows.
    #[error("you already own {max} tenants, the most this server allows per user")]
    TenantLimitReached { max: u32 },

    /// Every password-hashing slot stayed busy for the whole wait (a signup or login
    /// flood): refused rather than queued without bound.
    #[error("the server is busy checking passwords; retry in {retry_after_secs} s")]
    HashingBusy { retry_after_secs: u64 },

    #[error("unknown plan {plan:?}; configured: {}", known.join(", "))]
    UnknownPlan { plan: String, known: Vec<String> },

    /// A write that would take a limit of the tenant's plan past its maximum; nothing
    /// was changed.
    #[error("the {limit} limit is {max} and the tenant has {current}; nothing was changed")]
    QuotaExceeded {
        limit: String,
        current: u64,
        max: u64,
    },

    /// A table (or action) the tenant's plan does not include.
    #[error("{what} needs the {feature:?} feature, which the tenant's plan does not include")]
    FeatureDisabled { feature: String, what: String },

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

    #[error("{domain} belongs to the platform (a base domain, under one, or one of its own hosts): no tenant can register it")]
    DomainReserved { domain: String },

    #[error("{domain} is not verified: {reason}")]
    DomainUnverified { domain: String, reason: String },

    #[error("no such domain")]
    DomainNotFound,

    #[error("no such API key")]
    ApiKeyNotFound,

    /// A settings document the settings schema refuses: where (a JSON Pointer, empty for
    /// the document itself) and why. Nothing was written.
    #[error("invalid settings at {}: {reason}", shown_pointer(.pointer))]
    InvalidSettings { pointer: String, reason: String },

    #[error("settings documents are at most {max} bytes of JSON")]
    SettingsTooLarge { max: usize },

    /// The configured settings schema does not compile: the engine does not open.
    #[error("the settings schema {origin} is not a usable JSON Schema: {reason}")]
    InvalidSettingsSchema { origin: String, reason: String },

    #[error("{0}")]
    InvalidInput(String),

    /// A usage report's dates: not a date, `from` after `to`, or too long a range.
    #[error("{0}")]
    InvalidDateRange(String),

    #[error("no table {table:?}")]
    TableNotFound { table: String },

    #[error("no column {column:?}")]
    ColumnNotFound { column: String },

    #[error("invalid value for {column}: {reason}")]
    InvalidValue { column: String, reason: String },

    /// A value too long for an index of its column (in every store alike).
    #[error("the value for {column} is too long for an index of table {table}: the indexed columns of one row hold at most {limit} bytes")]
    ValueTooLong {
        column: String,
        table: String,
        limit: usize,
    },

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

    /// The catalog's server cannot be reached (refused, reset, timed out, shutting down).
    #[error("the catalog database is unavailable: {0}")]
    CatalogUnavailable(String),

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

    /// The data role lacks its privileges on a tenant (one provisioned before tenants had
    /// roles of their own): the engine grants them and retries, so this rarely escapes.
    #[error("store {store:?}: the data role lacks its privileges on the tenant")]
    PrivilegesMissing { store: String },

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

    /// The disk ran out of space (SQLite's `SQLITE_FULL`, or `ENOSPC`). The write that hit
    /// it was rolled back, or its partial file removed: nothing half-written remains.
    #[error("{STORAGE_FULL_PREFIX} while {context}; nothing half-written was kept. Free space (or grow the disk), then retry")]
    StorageFull { context: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("internal error: {0}")]
    Internal(String),
}

/// How every [`Error::StorageFull`] message starts.
const STORAGE_FULL_PREFIX: &str = "the disk is full";

impl Error {
    /// An I/O failure while doing `context`; `ENOSPC` becomes [`Error::StorageFull`].
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        if is_enospc(&source) {
            return Error::StorageFull {
                context: context.into(),
            };
        }
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A tenant database's SQLite error; `SQLITE_FULL` becomes [`Error::StorageFull`].
    pub(crate) fn tenant_db(context: &str, e: rusqlite::Error) -> Self {
        if is_sqlite_full(&e) {
            return Error::StorageFull {
                context: context.to_owned(),
            };
        }
        Error::TenantDb(e.to_string())
    }

    /// A SQLite error on the file at `path`; `SQLITE_FULL` becomes [`Error::StorageFull`].
    pub(crate) fn store_sqlite(path: &std::path::Path, e: rusqlite::Error) -> Self {
        if is_sqlite_full(&e) {
            return Error::StorageFull {
                context: format!("writing {}", path.display()),
            };
        }
        Error::store(path, e)
    }

    /// Whether the disk being full is the cause: a [`Error::StorageFull`], or a failed
    /// provisioning whose reason is one (its reason is kept as text in the catalog, so the
    /// message's fixed start is what tells).
    pub fn is_storage_full(&self) -> bool {
        match self {
            Error::StorageFull { .. } => true,
            Error::ProvisioningFailed { reason, .. } => reason.starts_with(STORAGE_FULL_PREFIX),
            _ => false,
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
        if is_sqlite_full(&e) {
            return Error::StorageFull {
                context: "writing to a database".into(),
            };
        }
        Error::Sqlite(e.to_string())
    }
}

/// SQLite's "database or disk is full" (`SQLITE_FULL`, which its file layer also returns
/// when a write gets `ENOSPC`), or its failure to grow a WAL index (`-shm`) file, which on
/// a local disk only a lack of space causes: opening a tenant on a full disk fails so.
pub(crate) fn is_sqlite_full(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == rusqlite::ErrorCode::DiskFull
            || f.extended_code == rusqlite::ffi::SQLITE_IOERR_SHMSIZE)
}

fn is_enospc(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(ENOSPC)
}

/// `ENOSPC` on Linux and the BSDs.
const ENOSPC: i32 = 28;

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Internal(format!("background task failed: {e}"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How an error message names a JSON Pointer.
fn shown_pointer(pointer: &str) -> String {
    if pointer.is_empty() {
        "the document's top level".to_owned()
    } else {
        format!("{pointer:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_and_sqlite_full_are_storage_full() {
        let io = Error::io("copying a.db", std::io::Error::from_raw_os_error(ENOSPC));
        assert!(matches!(io, Error::StorageFull { .. }), "{io:?}");
        assert!(io.to_string().starts_with(STORAGE_FULL_PREFIX), "{io}");
        assert!(io.to_string().contains("copying a.db"), "{io}");

        let other = Error::io("copying a.db", std::io::Error::from_raw_os_error(2));
        assert!(matches!(other, Error::Io { .. }), "{other:?}");
        assert!(!other.is_storage_full());

        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        assert!(Error::from(full).is_storage_full());
        let shm = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR_SHMSIZE),
            None,
        );
        assert!(Error::from(shm).is_storage_full());
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        assert!(!Error::from(busy).is_storage_full());
    }

    #[test]
    fn a_provisioning_that_ran_out_of_space_says_so() {
        let cause = Error::io("copying a.db", std::io::Error::from_raw_os_error(ENOSPC));
        let failed = Error::ProvisioningFailed {
            slug: "acme".into(),
            reason: cause.to_string(),
        };
        assert!(failed.is_storage_full());
        assert!(failed.to_string().contains("the disk is full"), "{failed}");
        let other = Error::ProvisioningFailed {
            slug: "acme".into(),
            reason: "store error at a.db: boom".into(),
        };
        assert!(!other.is_storage_full());
    }
}
