//! Tenant settings on the engine: read through the read cache, written only once the
//! configured schema accepts them.

use std::sync::Arc;

use serde_json::Value;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::settings::{SettingsSchema, TenantSettings};
use crate::tenant::TenantId;

impl Engine {
    /// The tenant's settings: its document (an empty object when none was ever written,
    /// with no `updated_at`), read through the read cache, so the request path reads the
    /// catalog again only after a write.
    pub async fn settings(&self, tenant: TenantId) -> Result<Arc<TenantSettings>> {
        self.lookup_settings(tenant).await
    }

    /// Replaces the tenant's settings with `document` once the settings schema accepts it
    /// (`InvalidSettings` with the JSON Pointer of the first bad value, `SettingsTooLarge`;
    /// nothing is written then). The write and its audit entry, by `actor`, are one
    /// transaction. A suspended tenant's settings do not change (`TenantSuspended`).
    pub async fn put_settings(
        &self,
        tenant: TenantId,
        document: Value,
        actor: &str,
    ) -> Result<TenantSettings> {
        self.settings_schema().check(&document)?;
        let Value::Object(document) = document else {
            return Err(Error::Internal("checked settings are an object".into()));
        };
        self.refuse_if_suspended(tenant).await?;
        self.catalog()
            .put_tenant_settings(tenant, &document, actor)
            .await
    }

    /// The compiled settings schema of this engine ([`crate::EngineConfig::settings_schema`]).
    pub fn settings_schema(&self) -> &SettingsSchema {
        &self.inner.settings_schema
    }
}
