//! The engine's stores: the embedded SQLite store and the PostgreSQL stores, registered
//! in the catalog with their secrets sealed, each a [`TenantStore`] found by name.
//!
//! A configured PostgreSQL store is recorded in the catalog (`store:<name>` settings) with
//! its URLs and the generated data-role password sealed by the secret key, so that every
//! process on the catalog — another replica, the CLI without the config file — reaches the
//! same stores, and a catalog dump holds no password in clear.

use std::collections::HashMap;
use std::sync::Arc;

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::config::{EngineConfig, StoreSpec, DEFAULT_STORE};
use crate::error::{Error, Result};
use crate::migrations::Dialect;
use crate::secrets::SecretKey;
use crate::store::{PgStore, PgStoreConfig, PoolLimits, SqliteStore, TenantStore};
use crate::tenant::Tenant;

const REGISTRY_SETTING: &str = "stores";

/// A PostgreSQL store as the catalog records it.
#[derive(Debug, Serialize, Deserialize)]
struct StoreRecord {
    kind: String,
    url: String,
    data_url: Option<String>,
    data_role: String,
    data_password: String,
    /// Marks the data role as this deployment's (its `COMMENT`), so that another
    /// deployment on the server never takes it over. `None`: a record from before marks,
    /// whose role has none.
    #[serde(default)]
    data_role_mark: Option<String>,
    database_prefix: String,
}

fn setting_key(name: &str) -> String {
    format!("store:{name}")
}

/// The key that seals the catalog's secrets: the configured one, or the data folder's key
/// file (created on first need).
pub(crate) fn secret_key(config: &EngineConfig) -> Result<SecretKey> {
    match &config.secret_key {
        Some(key) => Ok(key.clone()),
        None => SecretKey::load_or_create(&config.data_dir.join("secret.key")),
    }
}

fn valid_store_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok && name != DEFAULT_STORE {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "store name {:?} must be 1–40 letters, digits, - or _, and not {DEFAULT_STORE:?} (the SQLite store)",
            name.chars().take(40).collect::<String>()
        )))
    }
}

/// Registers the configured PostgreSQL stores in the catalog and opens every store the
/// catalog knows (configured ones with their configured limits).
async fn open_pg_stores(
    config: &EngineConfig,
    catalog: &dyn Catalog,
) -> Result<HashMap<String, Arc<PgStore>>> {
    let mut names: Vec<String> = match catalog.setting(REGISTRY_SETTING).await? {
        Some(json) => serde_json::from_str(&json)
            .map_err(|e| Error::Catalog(format!("the store registry is corrupt: {e}")))?,
        None => Vec::new(),
    };
    if config.stores.is_empty() && names.is_empty() {
        return Ok(HashMap::new());
    }
    let key = secret_key(config)?;
    let mut stores = HashMap::new();
    for spec in &config.stores {
        valid_store_name(&spec.name)?;
        if stores.contains_key(&spec.name) {
            return Err(Error::InvalidInput(format!(
                "store {:?} is configured twice",
                spec.name
            )));
        }
        let record = register(catalog, &key, spec).await?;
        if !names.contains(&spec.name) {
            names.push(spec.name.clone());
            catalog
                .set_setting(
                    REGISTRY_SETTING,
                    &serde_json::to_string(&names).unwrap_or_default(),
                )
                .await?;
        }
        stores.insert(
            spec.name.clone(),
            open_record(&key, &spec.name, &record, spec.limits.clone())?,
        );
    }
    for name in names {
        if stores.contains_key(&name) {
            continue;
        }
        let Some(json) = catalog.setting(&setting_key(&name)).await? else {
            continue;
        };
        let record: StoreRecord = serde_json::from_str(&json)
            .map_err(|e| Error::Catalog(format!("store {name:?} record is corrupt: {e}")))?;
        let store = open_record(&key, &name, &record, PoolLimits::default())?;
        stores.insert(name, store);
    }
    Ok(stores)
}

/// Writes the store's record (URLs sealed), keeping the data role's password if one was
/// generated before.
async fn register(catalog: &dyn Catalog, key: &SecretKey, spec: &StoreSpec) -> Result<StoreRecord> {
    let existing: Option<StoreRecord> = match catalog.setting(&setting_key(&spec.name)).await? {
        Some(json) => serde_json::from_str(&json).ok(),
        None => None,
    };
    let (data_password, data_role_mark) = match existing {
        // Unchanged since the last start: nothing to write (a write would re-seal the same
        // secrets and make every process drop its read cache).
        Some(old) if unchanged(key, &old, spec) => return Ok(old),
        Some(old) if old.data_role == spec.data_role => (old.data_password, old.data_role_mark),
        _ => {
            let mut bytes = [0u8; 24];
            rand::rng().fill_bytes(&mut bytes);
            let mut mark = [0u8; 16];
            rand::rng().fill_bytes(&mut mark);
            (key.seal(&hex::encode(bytes)), Some(hex::encode(mark)))
        }
    };
    let record = StoreRecord {
        kind: "postgres".into(),
        url: key.seal(&spec.url),
        data_url: spec.data_url.as_deref().map(|u| key.seal(u)),
        data_role: spec.data_role.clone(),
        data_password,
        data_role_mark,
        database_prefix: spec.database_prefix.clone(),
    };
    let json = serde_json::to_string(&record).map_err(|e| Error::Internal(e.to_string()))?;
    catalog.set_setting(&setting_key(&spec.name), &json).await?;
    Ok(record)
}

/// Whether the catalog's record already says what the configuration says.
fn unchanged(key: &SecretKey, old: &StoreRecord, spec: &StoreSpec) -> bool {
    let opened = |sealed: &str| key.open(sealed).ok();
    old.data_role == spec.data_role
        && old.database_prefix == spec.database_prefix
        && opened(&old.url).as_deref() == Some(spec.url.as_str())
        && old.data_url.as_deref().map(opened) == spec.data_url.clone().map(Some)
}

fn open_record(
    key: &SecretKey,
    name: &str,
    record: &StoreRecord,
    limits: PoolLimits,
) -> Result<Arc<PgStore>> {
    let opened = |sealed: &str| {
        key.open(sealed)
            .map_err(|e| Error::Secrets(format!("store {name:?}: {e}")))
    };
    Ok(Arc::new(PgStore::open(PgStoreConfig {
        name: name.to_owned(),
        url: opened(&record.url)?,
        data_url: record.data_url.as_deref().map(opened).transpose()?,
        data_role: record.data_role.clone(),
        data_password: opened(&record.data_password)?,
        data_role_mark: record.data_role_mark.clone(),
        database_prefix: record.database_prefix.clone(),
        limits,
    })?))
}

/// Every store of the engine, by name: the embedded SQLite store and the PostgreSQL
/// stores. The engine reaches a tenant's store through [`Stores::of`] and speaks to it as a
/// [`TenantStore`], whatever its kind.
pub(crate) struct Stores {
    sqlite: Arc<SqliteStore>,
    postgres: HashMap<String, Arc<PgStore>>,
    all: HashMap<String, Arc<dyn TenantStore>>,
}

impl Stores {
    /// Opens the SQLite store and every PostgreSQL store the catalog knows (registering
    /// the configured ones).
    pub(crate) async fn open(config: &EngineConfig, catalog: &dyn Catalog) -> Result<Stores> {
        let sqlite = Arc::new(SqliteStore::open(
            DEFAULT_STORE,
            &config.data_dir.join("tenants"),
            crate::store::SqliteSettings::of(config),
        )?);
        let postgres = open_pg_stores(config, catalog).await?;
        let mut all: HashMap<String, Arc<dyn TenantStore>> = HashMap::new();
        all.insert(
            sqlite.name.clone(),
            Arc::clone(&sqlite) as Arc<dyn TenantStore>,
        );
        for (name, store) in &postgres {
            all.insert(name.clone(), Arc::clone(store) as Arc<dyn TenantStore>);
        }
        Ok(Stores {
            sqlite,
            postgres,
            all,
        })
    }

    /// The store of this name.
    pub(crate) fn named(&self, name: &str) -> Result<&Arc<dyn TenantStore>> {
        self.all.get(name).ok_or_else(|| Error::UnknownStore {
            store: name.chars().take(64).collect(),
        })
    }

    /// The store holding a tenant.
    pub(crate) fn of(&self, tenant: &Tenant) -> Result<Arc<dyn TenantStore>> {
        self.named(&tenant.placement.store).cloned()
    }

    /// The embedded SQLite store.
    pub(crate) fn sqlite(&self) -> &Arc<SqliteStore> {
        &self.sqlite
    }

    /// The SQLite store, if it holds the tenant.
    pub(crate) fn sqlite_of(&self, tenant: &Tenant) -> Option<&Arc<SqliteStore>> {
        (tenant.placement.store == self.sqlite.name).then_some(&self.sqlite)
    }

    /// A PostgreSQL store by name.
    pub(crate) fn postgres(&self, name: &str) -> Option<&Arc<PgStore>> {
        self.postgres.get(name)
    }

    /// The PostgreSQL store holding the tenant, if one does.
    pub(crate) fn postgres_of(&self, tenant: &Tenant) -> Option<&Arc<PgStore>> {
        self.postgres.get(&tenant.placement.store)
    }

    /// Every store, in name order.
    pub(crate) fn all(&self) -> Vec<&Arc<dyn TenantStore>> {
        let mut all: Vec<_> = self.all.values().collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    pub(crate) fn postgres_stores(&self) -> impl Iterator<Item = &Arc<PgStore>> {
        self.postgres.values()
    }

    /// Whether any store speaks this dialect.
    pub(crate) fn any_of(&self, dialect: Dialect) -> bool {
        self.all.values().any(|s| s.dialect() == dialect)
    }
}
