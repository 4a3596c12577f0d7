//! Tenant settings: one JSON object per tenant (its branding, by default), validated
//! against a JSON Schema before it is written.
//!
//! The schema is the configuration's ([`SettingsSchemaSource`]): the built-in branding
//! schema ([`BRANDING_SCHEMA`]) unless a file replaces it. [`SettingsSchema::compile`] turns
//! it into a validator once, when the engine opens; a schema that does not compile stops
//! the engine from opening, naming where the schema came from.
//!
//! ```
//! use serde_json::json;
//! use tenancy::settings::SettingsSchema;
//!
//! let schema = SettingsSchema::branding().unwrap();
//! assert!(schema.check(&json!({ "primary_color": "#1a2b3c" })).is_ok());
//! let refused = schema.check(&json!({ "primary_color": "teal" })).unwrap_err();
//! assert!(matches!(refused, tenancy::Error::InvalidSettings { ref pointer, .. } if pointer == "/primary_color"));
//! ```

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The built-in schema: a tenant's branding (`display_name`, `logo_url`, `primary_color`,
/// `font`), no other property.
pub const BRANDING_SCHEMA: &str = include_str!("branding.schema.json");

/// The largest settings document, as compact JSON.
pub const MAX_SETTINGS_BYTES: usize = 64 * 1024;

/// The audit log's action for a settings write.
pub const AUDIT_ACTION: &str = "settings.update";

/// A tenant's settings as stored. A tenant that never had any reads as an empty object
/// with no `updated_at`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TenantSettings {
    pub document: Map<String, Value>,
    pub updated_at: Option<DateTime<Utc>>,
    /// Who wrote them, as the audit log names principals (`user:…`, `api-key:…`,
    /// `admin-token`, `cli`).
    pub updated_by: Option<String>,
}

/// Where the settings schema comes from.
#[derive(Debug, Clone, Default)]
pub enum SettingsSchemaSource {
    /// [`BRANDING_SCHEMA`].
    #[default]
    Branding,
    /// A schema's JSON text, and where it was read (a file name), for error messages.
    Json { origin: String, text: String },
}

impl SettingsSchemaSource {
    /// Where the schema came from, as error messages name it.
    pub fn origin(&self) -> &str {
        match self {
            SettingsSchemaSource::Branding => "the built-in branding schema",
            SettingsSchemaSource::Json { origin, .. } => origin,
        }
    }

    pub fn text(&self) -> &str {
        match self {
            SettingsSchemaSource::Branding => BRANDING_SCHEMA,
            SettingsSchemaSource::Json { text, .. } => text,
        }
    }
}

/// A compiled settings schema. Cheap to clone.
#[derive(Clone)]
pub struct SettingsSchema {
    validator: Arc<jsonschema::Validator>,
    schema: Arc<Value>,
}

impl std::fmt::Debug for SettingsSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SettingsSchema").finish_non_exhaustive()
    }
}

impl SettingsSchema {
    /// Compiles the schema the source holds: `InvalidSettingsSchema`, naming its origin, if
    /// it is not JSON, not a valid JSON Schema, or refers to a schema elsewhere (remote
    /// references are never fetched).
    pub fn compile(source: &SettingsSchemaSource) -> Result<SettingsSchema> {
        let refused = |reason: String| Error::InvalidSettingsSchema {
            origin: source.origin().to_owned(),
            reason,
        };
        let schema: Value = serde_json::from_str(source.text())
            .map_err(|e| refused(format!("it is not valid JSON: {e}")))?;
        if !schema.is_object() {
            return Err(refused("a JSON Schema here is a JSON object".into()));
        }
        // Formats (`uri`, `email`, …) are assertions here, not mere annotations: a schema
        // that says `"format": "uri"` means it.
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .map_err(|e| refused(e.to_string()))?;
        Ok(SettingsSchema {
            validator: Arc::new(validator),
            schema: Arc::new(schema),
        })
    }

    /// The built-in branding schema, compiled.
    pub fn branding() -> Result<SettingsSchema> {
        SettingsSchema::compile(&SettingsSchemaSource::Branding)
    }

    /// The schema itself (what `/openapi.json` shows for the settings document).
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Checks a document: `InvalidSettings` with the JSON Pointer of the first value that
    /// breaks the schema and why (the value itself is not repeated), or `SettingsTooLarge`.
    /// A document is always an object, whatever the schema allows.
    pub fn check(&self, document: &Value) -> Result<()> {
        if !document.is_object() {
            return Err(Error::InvalidSettings {
                pointer: String::new(),
                reason: "settings are a JSON object".into(),
            });
        }
        let size = serde_json::to_vec(document)
            .map_err(|e| Error::Internal(format!("settings do not serialize: {e}")))?
            .len();
        if size > MAX_SETTINGS_BYTES {
            return Err(Error::SettingsTooLarge {
                max: MAX_SETTINGS_BYTES,
            });
        }
        self.validator
            .validate(document)
            .map_err(|e| Error::InvalidSettings {
                pointer: e.instance_path().to_string(),
                reason: e.masked().to_string(),
            })
    }
}

/// What the audit log records of a settings write: the top-level properties it holds,
/// never their values.
pub fn audit_detail(document: &Map<String, Value>) -> String {
    let mut keys: Vec<&str> = document.keys().map(String::as_str).collect();
    keys.sort_unstable();
    if keys.is_empty() {
        "properties: none".to_owned()
    } else {
        format!("properties: {}", keys.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn refused(document: Value) -> (String, String) {
        match SettingsSchema::branding().unwrap().check(&document) {
            Err(Error::InvalidSettings { pointer, reason }) => (pointer, reason),
            other => panic!("{document}: {other:?}"),
        }
    }

    #[test]
    fn the_branding_schema_takes_branding() {
        let schema = SettingsSchema::branding().unwrap();
        for ok in [
            json!({}),
            json!({ "display_name": "Acme", "logo_url": "https://cdn.acme.gg/logo.png",
                    "primary_color": "#A1b2C3", "font": "Inter" }),
            json!({ "display_name": "é".repeat(200) }),
        ] {
            schema.check(&ok).unwrap();
        }
    }

    #[test]
    fn the_branding_schema_names_the_first_bad_value() {
        for (document, pointer, words) in [
            (
                json!({ "primary_color": "red" }),
                "/primary_color",
                "does not match",
            ),
            (
                json!({ "primary_color": "#12345" }),
                "/primary_color",
                "does not match",
            ),
            (
                json!({ "logo_url": "http://acme.gg/l.png" }),
                "/logo_url",
                "does not match",
            ),
            (json!({ "logo_url": "https://" }), "/logo_url", ""),
            (json!({ "logo_url": "https://a b" }), "/logo_url", ""),
            (json!({ "display_name": "" }), "/display_name", "shorter"),
            (
                json!({ "display_name": "x".repeat(201) }),
                "/display_name",
                "longer",
            ),
            (json!({ "display_name": 7 }), "/display_name", "not of type"),
            (json!({ "font": "Comic Sans MS" }), "/font", "not one of"),
            (json!({ "colour": "#000000" }), "", "colour"),
        ] {
            let (at, reason) = refused(document.clone());
            assert_eq!(at, pointer, "{document}: {reason}");
            assert!(reason.contains(words), "{document}: {reason}");
        }
        let (at, reason) = refused(json!(["not", "an", "object"]));
        assert_eq!(
            (at.as_str(), reason.as_str()),
            ("", "settings are a JSON object")
        );
    }

    #[test]
    fn the_reason_does_not_repeat_the_value() {
        let (_, reason) = refused(json!({ "display_name": "s3cr3t".repeat(40) }));
        assert!(!reason.contains("s3cr3t"), "{reason}");
    }

    #[test]
    fn too_large_documents_are_refused() {
        let schema = SettingsSchema::compile(&SettingsSchemaSource::Json {
            origin: "open.json".into(),
            text: r#"{"type": "object"}"#.into(),
        })
        .unwrap();
        let big = json!({ "blob": "x".repeat(MAX_SETTINGS_BYTES) });
        assert!(matches!(
            schema.check(&big),
            Err(Error::SettingsTooLarge { .. })
        ));
    }

    #[test]
    fn a_bad_schema_names_its_origin() {
        for text in [
            "{ not json",
            "[1, 2]",
            r#"{"type": 12}"#,
            r#"{"$ref": "https://example.com/schema.json"}"#,
        ] {
            let source = SettingsSchemaSource::Json {
                origin: "/etc/tenancy/settings.json".into(),
                text: text.into(),
            };
            let e = SettingsSchema::compile(&source).unwrap_err();
            assert!(
                matches!(e, Error::InvalidSettingsSchema { .. })
                    && e.to_string().contains("/etc/tenancy/settings.json"),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn the_audit_names_properties_not_values() {
        let document = json!({ "logo_url": "https://x.gg/a.png", "display_name": "Acme" });
        let detail = audit_detail(document.as_object().unwrap());
        assert_eq!(detail, "properties: display_name, logo_url");
    }
}
