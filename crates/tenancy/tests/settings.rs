//! Tenant settings on the engine: a document per tenant, written only once the settings
//! schema accepts it (the first bad value's JSON Pointer otherwise, and nothing written),
//! audited in the same transaction, read through the read cache and seen by another process
//! after a write — its own or a hand-made SQL edit. Every scenario runs on a SQLite catalog
//! and on a PostgreSQL one (skipped, with a notice, where PostgreSQL is unreachable).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common {
    pub mod pg;
}

use std::future::Future;
use std::time::{Duration, Instant};

use common::pg::TestDb;
use serde_json::{json, Value};
use tenancy::settings::{SettingsSchemaSource, MAX_SETTINGS_BYTES};
use tenancy::{Engine, EngineConfig, Error, Slug, Tenant};

/// How long another process's change may take to reach a cache here, at most.
const BOUND: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
enum CatalogKind {
    Sqlite,
    Postgres,
}

macro_rules! both_catalogs {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            use super::CatalogKind;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(CatalogKind::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(CatalogKind::Postgres).await
            }
        }
    )+};
}

both_catalogs!(
    settings_round_trip_and_bad_values_change_nothing,
    settings_are_cached_until_a_write_here_or_elsewhere,
    a_custom_schema_replaces_the_branding_schema,
);

/// Two engines on one catalog, as two processes.
struct Pair {
    server: Engine,
    other: Engine,
    kind: CatalogKind,
    dir: tempfile::TempDir,
    /// Declared after the engines: dropped once their connections are closed.
    db: Option<TestDb>,
}

async fn pair_with(kind: CatalogKind, schema: SettingsSchemaSource) -> Option<Pair> {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new(dir.path());
    config.settings_schema = schema;
    let db = match kind {
        CatalogKind::Sqlite => None,
        CatalogKind::Postgres => {
            let db = TestDb::create().await?;
            config.catalog_url = Some(db.url.clone());
            Some(db)
        }
    };
    let server = Engine::open(config.clone()).await.unwrap();
    config.sweep_store_files = false;
    let other = Engine::open(config).await.unwrap();
    Some(Pair {
        server,
        other,
        kind,
        dir,
        db,
    })
}

async fn pair(kind: CatalogKind) -> Option<Pair> {
    pair_with(kind, SettingsSchemaSource::Branding).await
}

impl Pair {
    /// Runs one statement on the catalog by hand, as an operator would (not through the
    /// engine).
    async fn edit_by_hand(&self, sql: &str) {
        match self.kind {
            CatalogKind::Sqlite => {
                let conn = tenancy::rusqlite::Connection::open(self.dir.path().join("catalog.db"))
                    .unwrap();
                conn.busy_timeout(Duration::from_secs(10)).unwrap();
                conn.execute_batch(sql).unwrap();
            }
            CatalogKind::Postgres => {
                let url = &self.db.as_ref().unwrap().url;
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(connection);
                client.batch_execute(sql).await.unwrap();
            }
        }
    }
}

fn slug(s: &str) -> Slug {
    Slug::parse(s).unwrap()
}

async fn document(e: &Engine, tenant: &Tenant) -> Value {
    Value::Object(e.settings(tenant.id).await.unwrap().document.clone())
}

/// Waits until `check` holds, within `BOUND`.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < BOUND, "{what}: not seen within {BOUND:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn settings_round_trip_and_bad_values_change_nothing(kind: CatalogKind) {
    let Some(p) = pair(kind).await else { return };
    let e = &p.server;
    let acme = e.create_tenant(slug("acme"), None).await.unwrap();
    let other = e.create_tenant(slug("other"), None).await.unwrap();

    // Nothing written yet: an empty document, never updated.
    let fresh = e.settings(acme.id).await.unwrap();
    assert!(fresh.document.is_empty());
    assert_eq!(
        (fresh.updated_at, fresh.updated_by.as_deref()),
        (None, None)
    );

    let branding = json!({
        "display_name": "Acme Raiders",
        "logo_url": "https://cdn.acme.gg/logo.png",
        "primary_color": "#1A2b3c",
        "font": "Inter",
    });
    let stored = e
        .put_settings(acme.id, branding.clone(), "user:ada")
        .await
        .unwrap();
    assert_eq!(Value::Object(stored.document.clone()), branding);
    assert_eq!(stored.updated_by.as_deref(), Some("user:ada"));
    assert!(stored.updated_at.is_some());
    assert_eq!(document(e, &acme).await, branding);
    // Kept as written, key order included.
    let keys: Vec<_> = e
        .settings(acme.id)
        .await
        .unwrap()
        .document
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys, ["display_name", "logo_url", "primary_color", "font"]);
    // Another tenant's settings are its own.
    assert_eq!(document(e, &other).await, json!({}));

    // Each bad value is refused with its pointer; nothing is written.
    for (bad, pointer) in [
        (json!({ "primary_color": "blue" }), "/primary_color"),
        (
            json!({ "logo_url": "http://cdn.acme.gg/logo.png" }),
            "/logo_url",
        ),
        (json!({ "display_name": "Acme", "motto": "raid on" }), ""),
        (json!({ "display_name": 42 }), "/display_name"),
        (json!({ "display_name": "A".repeat(201) }), "/display_name"),
        (json!({ "display_name": "" }), "/display_name"),
        (json!({ "font": "Papyrus" }), "/font"),
        (json!("just a string"), ""),
        (json!([branding.clone()]), ""),
    ] {
        match e.put_settings(acme.id, bad.clone(), "user:ada").await {
            Err(Error::InvalidSettings {
                pointer: at,
                reason,
            }) => {
                assert_eq!(at, pointer, "{bad}: {reason}");
                assert!(!reason.is_empty());
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
    let huge = json!({ "display_name": "x".repeat(MAX_SETTINGS_BYTES) });
    assert!(matches!(
        e.put_settings(acme.id, huge, "user:ada").await,
        Err(Error::SettingsTooLarge { .. })
    ));
    assert_eq!(document(e, &acme).await, branding, "refusals wrote nothing");
    assert_eq!(document(&p.other, &acme).await, branding);

    // The write is audited, with the properties it set and none of their values.
    let audit = e.audit(acme.id).await.unwrap();
    let writes: Vec<_> = audit
        .iter()
        .filter(|a| a.action == "settings.update")
        .collect();
    assert_eq!(writes.len(), 1, "one entry per successful write: {audit:?}");
    assert_eq!(writes[0].actor, "user:ada");
    let detail = writes[0].detail.as_deref().unwrap();
    assert_eq!(
        detail,
        "properties: display_name, font, logo_url, primary_color"
    );
    assert!(!detail.contains("Acme") && !detail.contains("cdn"));

    // A write replaces the whole document; `{}` clears it.
    e.put_settings(acme.id, json!({ "font": "Lato" }), "cli")
        .await
        .unwrap();
    assert_eq!(document(e, &acme).await, json!({ "font": "Lato" }));
    e.put_settings(acme.id, json!({}), "cli").await.unwrap();
    let cleared = e.settings(acme.id).await.unwrap();
    assert!(cleared.document.is_empty());
    assert_eq!(cleared.updated_by.as_deref(), Some("cli"));

    // A suspended tenant's settings are read, not changed.
    e.suspend_tenant(&acme).await.unwrap();
    assert!(matches!(
        e.put_settings(acme.id, json!({ "font": "Lato" }), "cli")
            .await,
        Err(Error::TenantSuspended { .. })
    ));
    assert_eq!(document(e, &acme).await, json!({}));
}

async fn settings_are_cached_until_a_write_here_or_elsewhere(kind: CatalogKind) {
    let Some(p) = pair(kind).await else { return };
    let (server, other) = (&p.server, &p.other);
    let acme = server.create_tenant(slug("acme"), None).await.unwrap();
    let id = acme.id.to_string();

    // Read once, then from the cache: no catalog query while nothing changed.
    assert_eq!(document(server, &acme).await, json!({}));
    let before = server.catalog().query_count();
    for _ in 0..5 {
        assert_eq!(document(server, &acme).await, json!({}));
    }
    assert_eq!(server.catalog().query_count(), before, "cached reads");

    // This process's write is seen on the next read.
    server
        .put_settings(acme.id, json!({ "font": "Inter" }), "cli")
        .await
        .unwrap();
    assert_eq!(document(server, &acme).await, json!({ "font": "Inter" }));

    // Another process's write is seen within milliseconds.
    other
        .put_settings(acme.id, json!({ "font": "Roboto" }), "cli")
        .await
        .unwrap();
    eventually("another process's write", || async {
        document(server, &acme).await == json!({ "font": "Roboto" })
    })
    .await;

    // So is an operator's edit by hand, and the removal of the row.
    p.edit_by_hand(&format!(
        "UPDATE tenant_settings SET document = '{{\"font\": \"Lato\"}}' WHERE tenant_id = '{id}'"
    ))
    .await;
    eventually("an edit by hand", || async {
        document(server, &acme).await == json!({ "font": "Lato" })
    })
    .await;
    p.edit_by_hand(&format!(
        "DELETE FROM tenant_settings WHERE tenant_id = '{id}'"
    ))
    .await;
    eventually("a removal by hand", || async {
        document(server, &acme).await == json!({})
    })
    .await;
}

async fn a_custom_schema_replaces_the_branding_schema(kind: CatalogKind) {
    let schema = json!({
        "type": "object",
        "properties": {
            "locale": { "type": "string", "enum": ["en", "fr", "de"] },
            "seats": { "type": "integer", "minimum": 1 }
        },
        "required": ["locale"],
        "additionalProperties": false
    });
    let source = SettingsSchemaSource::Json {
        origin: "guild.settings.json".into(),
        text: schema.to_string(),
    };
    let Some(p) = pair_with(kind, source).await else {
        return;
    };
    let e = &p.server;
    let acme = e.create_tenant(slug("acme"), None).await.unwrap();
    e.put_settings(acme.id, json!({ "locale": "fr", "seats": 12 }), "cli")
        .await
        .unwrap();
    for (bad, pointer) in [
        (json!({ "seats": 3 }), ""),
        (json!({ "locale": "fr", "seats": 0 }), "/seats"),
        (json!({ "locale": "es" }), "/locale"),
        (json!({ "locale": "fr", "display_name": "Acme" }), ""),
    ] {
        match e.put_settings(acme.id, bad.clone(), "cli").await {
            Err(Error::InvalidSettings { pointer: at, .. }) => assert_eq!(at, pointer, "{bad}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    assert_eq!(
        document(e, &acme).await,
        json!({ "locale": "fr", "seats": 12 })
    );
}

#[tokio::test]
async fn a_schema_that_does_not_compile_stops_the_engine_from_opening() {
    let dir = tempfile::tempdir().unwrap();
    for text in [
        "{ \"type\": ",
        r#"{"type": "objekt"}"#,
        r#"{"minLength": -1}"#,
    ] {
        let mut config = EngineConfig::new(dir.path().join("data"));
        config.settings_schema = SettingsSchemaSource::Json {
            origin: "/srv/tenancy/branding.json".into(),
            text: text.into(),
        };
        let Err(e) = Engine::open(config).await else {
            panic!("{text}: the engine opened");
        };
        assert!(
            matches!(e, Error::InvalidSettingsSchema { .. }),
            "{text}: {e}"
        );
        assert!(e.to_string().contains("/srv/tenancy/branding.json"), "{e}");
    }
    assert!(
        !dir.path().join("data").exists(),
        "nothing was created before the schema was checked"
    );
}
