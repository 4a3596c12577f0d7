//! The tenancy engine: catalog, stores and isolation modes, the tenant handle cache,
//! tenant migrations, provisioning and the tenant lifecycle. It knows nothing of HTTP.
//!
//! ```no_run
//! # async fn demo() -> tenancy::Result<()> {
//! use tenancy::{Engine, EngineConfig, Slug};
//!
//! let engine = Engine::open(EngineConfig::new("./tenancy-data")).await?;
//! let tenant = engine.create_tenant(Slug::parse("acme")?, Some("Acme".into())).await?;
//! let members: i64 = engine
//!     .with_tenant_db(&tenant.slug, |db| {
//!         Ok(db.query_row("SELECT COUNT(*) FROM members", [], |r| r.get(0))
//!             .map_err(|e| tenancy::Error::TenantDb(e.to_string()))?)
//!     })
//!     .await?;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod catalog;
pub mod config;
pub mod data;
mod domain;
mod engine;
mod error;
pub mod fault;
pub mod identity;
pub mod migrations;
pub mod pgconnect;
pub mod plans;
pub mod secrets;
pub mod settings;
mod slug;
pub mod sql;
pub mod store;
mod stores;
pub mod telemetry;
mod tenant;
pub mod transform;
pub mod usage;

pub use auth::AdminToken;
pub use config::{Durability, MemoryConfig};
pub use domain::{CustomDomain, Domain, DomainVerifier};
pub use engine::access::{Access, AddedMember, Principal};
pub use engine::accounts::Session;
pub use engine::{
    BulkReport, Engine, EngineConfig, FleetStatus, LimitUse, MigrateEvent, MigrateOptions,
    MigrateReport, MigrationSource, MoveDue, PlaceOptions, PlanChange, PlanChanged,
    PlannedMigration, Readiness, RecoveryReport, RetentionReport, StoreSpec, DEFAULT_STORE,
    STORAGE_SAMPLE_JOB,
};
pub use error::{Error, Result};
pub use identity::{Role, User, UserId};
pub use migrations::{Dialect, MigrationSet};
pub use plans::{Effective, Metric, Money, Plan, PlanOverrides, Plans};
pub use settings::{SettingsSchema, SettingsSchemaSource, TenantSettings};
pub use slug::{Slug, RESERVED_SLUGS};
pub use store::{CacheConfig, TenantStore};
pub use tenant::{validate_name, Mode, Placement, Tenant, TenantId, TenantStatus};

/// Re-exported so that library users name the same SQLite types as the engine.
pub use rusqlite;
