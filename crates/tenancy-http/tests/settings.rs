//! `/v1/tenants/{slug}/settings` over real HTTP: a round trip; every bad value refused with
//! `422 invalid_settings` naming its JSON Pointer; bodies that are not a JSON object or are
//! too large refused with the body codes; who may read and write (a viewer reads, an admin
//! writes, another tenant's admin gets the same 404 as an unknown tenant); nothing written
//! after a refusal; each write audited. Also an embedding app reading the settings through
//! `TenantContext::settings`, and `/openapi.json`. On a SQLite and a PostgreSQL catalog.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use common::{Backend, Server, ADMIN_TOKEN};
use reqwest::Method;
use serde_json::{json, Value};

macro_rules! both_catalogs {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            use super::common::Backend;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(Backend::PgDatabase).await
            }
        }
    )+};
}

both_catalogs!(
    settings_round_trip_and_refusals,
    who_may_read_and_write_settings,
);

const PATH: &str = "/v1/tenants/acme/settings";

fn branding() -> Value {
    json!({
        "display_name": "Acme Raiders",
        "logo_url": "https://cdn.acme.gg/logo.png",
        "primary_color": "#ff8800",
        "font": "Montserrat",
    })
}

/// A user who belongs to `acme` with `role`; their access token.
async fn member(s: &Server, email: &str, role: &str) -> String {
    s.signup(email).await;
    s.join_by_invitation("acme", email, role).await;
    s.login(email, None).await
}

/// Sends a raw body (not necessarily JSON) as `application/json`.
async fn put_raw(s: &Server, token: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let resp = s
        .client
        .put(format!("{}{PATH}", s.base))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn settings_round_trip_and_refusals(backend: Backend) {
    let Some(s) = Server::start_on(backend).await else {
        return;
    };
    s.create_tenant("acme").await;
    let ada = member(&s, "ada@acme.gg", "admin").await;

    // No settings yet: `{}`.
    assert_eq!(
        s.json(Method::GET, PATH, Some(&ada), None).await,
        (200, json!({}))
    );
    let (status, stored) = s
        .json(Method::PUT, PATH, Some(&ada), Some(branding()))
        .await;
    assert_eq!((status, &stored), (200, &branding()));
    assert_eq!(
        s.json(Method::GET, PATH, Some(&ada), None).await,
        (200, branding())
    );

    // Each bad value: 422 invalid_settings, its pointer and the reason.
    let long_name = "R".repeat(201);
    for (bad, pointer) in [
        (json!({ "primary_color": "orange" }), "/primary_color"),
        (json!({ "primary_color": "#ff880" }), "/primary_color"),
        (
            json!({ "logo_url": "http://cdn.acme.gg/logo.png" }),
            "/logo_url",
        ),
        (json!({ "display_name": "Acme", "tagline": "we raid" }), ""),
        (json!({ "display_name": ["Acme"] }), "/display_name"),
        (json!({ "font": 12 }), "/font"),
        (json!({ "display_name": long_name }), "/display_name"),
    ] {
        let resp = s
            .call(Method::PUT, PATH, Some(&ada), &[], Some(bad.clone()))
            .await;
        assert_eq!(resp.status().as_u16(), 422, "{bad}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{bad}"
        );
        let problem: Value = resp.json().await.unwrap();
        assert_eq!(problem["code"], "invalid_settings", "{bad}: {problem}");
        assert_eq!(problem["pointer"], pointer, "{bad}: {problem}");
        let reason = problem["reason"].as_str().unwrap();
        assert!(!reason.is_empty(), "{problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(reason),
            "{problem}"
        );
        assert!(
            !reason.contains(&"R".repeat(50)),
            "the value is not echoed: {reason}"
        );
    }
    let unknown = s
        .json(
            Method::PUT,
            PATH,
            Some(&ada),
            Some(json!({ "display_name": "Acme", "tagline": "we raid" })),
        )
        .await
        .1;
    assert!(
        unknown["reason"].as_str().unwrap().contains("tagline"),
        "{unknown}"
    );

    // Bodies that are no settings document: the body codes.
    for (body, status, code) in [
        ("[1, 2]", 400, "invalid_body"),
        ("\"Acme\"", 400, "invalid_body"),
        ("null", 400, "invalid_body"),
        ("{\"font\": \"Lato\"", 400, "malformed_json"),
        (
            "{\"font\": \"Lato\", \"font\": \"Inter\"}",
            400,
            "invalid_body",
        ),
    ] {
        let (got, problem) = put_raw(&s, &ada, body).await;
        assert_eq!(
            (got, problem["code"].as_str()),
            (status, Some(code)),
            "{body}: {problem}"
        );
    }
    let oversize = json!({ "display_name": "x".repeat(70 * 1024) }).to_string();
    let (got, problem) = put_raw(&s, &ada, oversize).await;
    assert_eq!(
        (got, problem["code"].as_str()),
        (413, Some("body_too_large")),
        "{problem}"
    );
    let resp = s
        .client
        .put(format!("{}{PATH}", s.base))
        .bearer_auth(&ada)
        .body(branding().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415, "no JSON content type");

    // After every refusal, the document is the one written before.
    assert_eq!(
        s.json(Method::GET, PATH, Some(&ada), None).await,
        (200, branding())
    );

    // A write replaces the whole document.
    let (status, stored) = s
        .json(
            Method::PUT,
            PATH,
            Some(&ada),
            Some(json!({ "font": "serif" })),
        )
        .await;
    assert_eq!((status, stored), (200, json!({ "font": "serif" })));
    assert_eq!(
        s.json(Method::GET, PATH, Some(&ada), None).await,
        (200, json!({ "font": "serif" }))
    );

    // Each successful write is audited once, with no value in it.
    let (status, audit) = s
        .json(Method::GET, "/v1/tenants/acme/audit", Some(&ada), None)
        .await;
    assert_eq!(status, 200, "{audit}");
    let writes: Vec<&Value> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "settings.update")
        .collect();
    assert_eq!(writes.len(), 2, "{audit}");
    assert!(writes
        .iter()
        .all(|w| w["actor"].as_str().unwrap().starts_with("user:")));
    assert_eq!(
        writes[0]["detail"],
        "properties: display_name, font, logo_url, primary_color"
    );
    assert!(!audit.to_string().contains("cdn.acme.gg"), "{audit}");
}

async fn who_may_read_and_write_settings(backend: Backend) {
    let Some(s) = Server::start_on(backend).await else {
        return;
    };
    s.create_tenant("acme").await;
    s.create_tenant("rival").await;
    let owner = member(&s, "olga@acme.gg", "owner").await;
    let viewer = member(&s, "vic@acme.gg", "viewer").await;
    let writer = member(&s, "mel@acme.gg", "member").await;
    s.signup("rob@rival.gg").await;
    s.join_by_invitation("rival", "rob@rival.gg", "admin").await;
    let rival_admin = s.login("rob@rival.gg", None).await;

    let (status, _) = s
        .json(Method::PUT, PATH, Some(&owner), Some(branding()))
        .await;
    assert_eq!(status, 200);

    // Any role reads; writing needs admin or owner.
    for token in [&viewer, &writer, &owner] {
        assert_eq!(
            s.json(Method::GET, PATH, Some(token), None).await,
            (200, branding())
        );
    }
    for token in [&viewer, &writer] {
        let (status, problem) = s
            .json(
                Method::PUT,
                PATH,
                Some(token),
                Some(json!({ "font": "Lato" })),
            )
            .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (403, Some("forbidden")),
            "{problem}"
        );
    }

    // Another tenant's admin sees the same 404 as for a tenant that does not exist.
    let (status, unknown) = s
        .json(
            Method::GET,
            "/v1/tenants/no-such-tenant/settings",
            Some(&rival_admin),
            None,
        )
        .await;
    assert_eq!(
        (status, unknown["code"].as_str()),
        (404, Some("tenant_not_found"))
    );
    for method in [Method::GET, Method::PUT] {
        let body = (method == Method::PUT).then(|| json!({ "font": "Lato" }));
        let (status, problem) = s.json(method.clone(), PATH, Some(&rival_admin), body).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (404, Some("tenant_not_found")),
            "{method}"
        );
    }
    let (status, _) = s.json(Method::GET, PATH, None, None).await;
    assert_eq!(status, 401);

    // Nothing the refused callers sent was written.
    assert_eq!(
        s.json(Method::GET, PATH, Some(&viewer), None).await,
        (200, branding())
    );

    // The platform admin token writes too (and is audited as such); so does a tenant API
    // key with the admin role, while a member key may only read.
    let (status, _) = s
        .json(
            Method::PUT,
            PATH,
            Some(ADMIN_TOKEN),
            Some(json!({ "font": "Inter" })),
        )
        .await;
    assert_eq!(status, 200);
    let (status, admin_key) = s
        .json(
            Method::POST,
            "/v1/tenants/acme/api-keys",
            Some(&owner),
            Some(json!({ "role": "admin" })),
        )
        .await;
    assert_eq!(status, 201, "{admin_key}");
    let (status, member_key) = s
        .json(
            Method::POST,
            "/v1/tenants/acme/api-keys",
            Some(&owner),
            Some(json!({ "role": "member" })),
        )
        .await;
    assert_eq!(status, 201, "{member_key}");
    let admin_key = admin_key["key"].as_str().unwrap();
    let member_key = member_key["key"].as_str().unwrap();
    let (status, _) = s
        .json(
            Method::PUT,
            PATH,
            Some(admin_key),
            Some(json!({ "font": "Lato" })),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = s
        .json(
            Method::PUT,
            PATH,
            Some(member_key),
            Some(json!({ "font": "Roboto" })),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(
        s.json(Method::GET, PATH, Some(member_key), None).await,
        (200, json!({ "font": "Lato" }))
    );

    let audit = s
        .json(Method::GET, "/v1/tenants/acme/audit", Some(&owner), None)
        .await
        .1;
    let actors: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "settings.update")
        .map(|a| a["actor"].as_str().unwrap())
        .collect();
    assert_eq!(actors.len(), 3, "{audit}");
    assert!(actors[0].starts_with("user:"), "{actors:?}");
    assert_eq!(actors[1], "admin-token");
    assert!(actors[2].starts_with("api-key:"), "{actors:?}");
    // The admin token's write was an elevated access too, audited as such.
    let elevated: Vec<&Value> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "settings.replace")
        .collect();
    assert_eq!(elevated.len(), 1, "{audit}");
    assert_eq!(elevated[0]["actor"], "admin-token");
}

/// An embedding app reads the resolved tenant's settings in its own handler.
#[tokio::test]
async fn an_embedded_handler_reads_the_tenants_settings() {
    use axum::routing::get;
    use tenancy_http::{ApiResult, TenantContext};

    async fn title(ctx: TenantContext) -> ApiResult<axum::Json<Value>> {
        let settings = ctx.settings().await?;
        let name = settings
            .document
            .get("display_name")
            .and_then(Value::as_str)
            .unwrap_or(ctx.tenant.name.as_str())
            .to_owned();
        Ok(axum::Json(
            json!({ "title": name, "settings": settings.document }),
        ))
    }

    let dir = tempfile::tempdir().unwrap();
    // Usage is written by a timer: not while this test counts catalog queries.
    let mut config = tenancy::EngineConfig::new(dir.path());
    config.usage.flush_every = std::time::Duration::from_secs(3600);
    let engine = tenancy::Engine::open(config).await.unwrap();
    let (admin, _) = engine.admin_token(Some(ADMIN_TOKEN)).await.unwrap();
    let state = tenancy_http::AppState::new(engine.clone(), admin);
    let app = tenancy_http::with_path_resolution(
        tenancy_http::routes().route("/title", get(title)),
        state,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(tenancy_http::serve(listener, app, std::future::pending()));
    let client = reqwest::Client::new();
    let get_title = || async {
        let resp = client
            .get(format!("{base}/t/acme/title"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        resp.json::<Value>().await.unwrap()
    };

    let acme = engine
        .create_tenant(tenancy::Slug::parse("acme").unwrap(), Some("Acme".into()))
        .await
        .unwrap();
    assert_eq!(
        get_title().await,
        json!({ "title": "Acme", "settings": {} })
    );
    let resp = client
        .put(format!("{base}/v1/tenants/acme/settings"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "display_name": "Acme Raiders" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        get_title().await,
        json!({ "title": "Acme Raiders", "settings": { "display_name": "Acme Raiders" } })
    );
    // The handler's reads come from the read cache.
    let before = engine.catalog().query_count();
    assert_eq!(engine.settings(acme.id).await.unwrap().document.len(), 1);
    assert_eq!(engine.catalog().query_count(), before);
}

#[tokio::test]
async fn openapi_lists_the_settings_routes_and_schema() {
    let s = Server::start().await;
    let (status, doc) = s.json(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    let path = &doc["paths"]["/v1/tenants/{slug}/settings"];
    assert!(path["get"].is_object() && path["put"].is_object(), "{path}");
    assert_eq!(
        path["put"]["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Settings"
    );
    let settings = &doc["components"]["schemas"]["Settings"];
    assert_eq!(settings["additionalProperties"], false, "{settings}");
    assert_eq!(
        settings["properties"]["primary_color"]["pattern"],
        "^#[0-9a-fA-F]{6}$"
    );
    assert!(settings.get("$schema").is_none());
}
