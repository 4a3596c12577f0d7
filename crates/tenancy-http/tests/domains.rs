//! Custom domains and the hosts of the platform: a domain routes only once its ownership
//! is verified, the platform's own hosts cannot be claimed, a platform principal never
//! reaches a tenant through a domain, a reserved subdomain names no tenant, and a deleted
//! tenant's domains are free again. Every test runs once per backend (`four_modes!`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use common::{Backend, Server, ADMIN_TOKEN};
use reqwest::Method;
use serde_json::{json, Value};
use tenancy_http::{HttpConfig, HttpTokenVerifier};

four_modes!(
    reserved_subdomains_name_no_tenant,
    platform_hosts_cannot_be_registered,
    a_domain_routes_only_once_verified,
    a_deleted_tenants_domains_are_released,
);

/// A web server on loopback standing in for the server a domain points at: it answers
/// `/.well-known/tenancy-verification/{token}` with the token for the tokens published.
struct DomainSite {
    addr: SocketAddr,
    published: Arc<Mutex<Vec<String>>>,
}

impl DomainSite {
    async fn start() -> DomainSite {
        let published: Arc<Mutex<Vec<String>>> = Arc::default();
        let app = axum::Router::new()
            .route(
                "/.well-known/tenancy-verification/{token}",
                axum::routing::get(
                    |State(published): State<Arc<Mutex<Vec<String>>>>,
                     Path(token): Path<String>| async move {
                        if published.lock().unwrap().contains(&token) {
                            (StatusCode::OK, token)
                        } else {
                            (StatusCode::NOT_FOUND, String::new())
                        }
                    },
                ),
            )
            .with_state(Arc::clone(&published));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        DomainSite { addr, published }
    }

    fn publish(&self, token: &str) {
        self.published.lock().unwrap().push(token.to_owned());
    }
}

/// The platform of these tests: base domains `localhost` and `platform.example`, its API
/// at `api.tenancy.example.net`, and domain checks sent to `site` (whatever the domain's
/// DNS says).
fn platform_config(site: &DomainSite) -> HttpConfig {
    HttpConfig {
        base_domains: vec!["localhost".into(), "platform.example".into()],
        platform_hosts: vec!["api.tenancy.example.net".into()],
        domain_verifier: Arc::new(HttpTokenVerifier::new().connect_to(site.addr)),
        ..HttpConfig::default()
    }
}

async fn api_key(s: &Server, slug: &str) -> String {
    let (status, key) = s
        .json(
            Method::POST,
            &format!("/v1/tenants/{slug}/api-keys"),
            Some(ADMIN_TOKEN),
            Some(json!({ "role": "admin" })),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    key["key"].as_str().unwrap().to_owned()
}

/// `GET /v1/tenant` as `token` with this `Host`: the status and body.
async fn tenant_at(s: &Server, token: &str, host: &str) -> (u16, Value) {
    let resp = s
        .call(
            Method::GET,
            "/v1/tenant",
            Some(token),
            &[("host", host)],
            None,
        )
        .await;
    let status = resp.status().as_u16();
    (status, resp.json::<Value>().await.unwrap_or(Value::Null))
}

async fn add_domain(s: &Server, token: &str, slug: &str, domain: &str) -> (u16, Value) {
    s.json(
        Method::POST,
        &format!("/v1/tenants/{slug}/domains"),
        Some(token),
        Some(json!({ "domain": domain })),
    )
    .await
}

async fn verify_domain(s: &Server, token: &str, slug: &str, domain: &str) -> (u16, Value) {
    s.json(
        Method::POST,
        &format!("/v1/tenants/{slug}/domains/{domain}/verify"),
        Some(token),
        None,
    )
    .await
}

/// `api.localhost`, `www.localhost`, `admin.localhost`: labels no tenant can have, so the
/// host names no tenant and the key decides.
async fn reserved_subdomains_name_no_tenant(backend: Backend) {
    let Some(s) = Server::start_on(backend).await else {
        return;
    };
    s.create_tenant("acme").await;
    let key = api_key(&s, "acme").await;
    for host in [
        "api.localhost",
        "www.localhost:8080",
        "admin.localhost",
        "-x.localhost",
    ] {
        let (status, body) = tenant_at(&s, &key, host).await;
        assert_eq!(status, 200, "{host}: {body}");
        assert_eq!(body["slug"], "acme", "{host}");
    }
    // A valid label still names its tenant, and disagreeing with the key is refused.
    s.create_tenant("other").await;
    let (status, body) = tenant_at(&s, &key, "other.localhost").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "tenant_conflict");
}

/// Base domains, anything under them, the platform's own hosts and localhost belong to
/// the platform: no tenant registers them.
async fn platform_hosts_cannot_be_registered(backend: Backend) {
    let site = DomainSite::start().await;
    let Some(s) = Server::start_on_with(backend, platform_config(&site), |_| {}).await else {
        return;
    };
    s.create_tenant("mal").await;
    let key = api_key(&s, "mal").await;
    for domain in [
        "platform.example",
        "api.platform.example",
        "API.Platform.Example.",
        "deep.api.platform.example",
        "api.tenancy.example.net",
        "x.api.tenancy.example.net",
        "acme.localhost",
    ] {
        let (status, body) = add_domain(&s, &key, "mal", domain).await;
        assert_eq!(status, 403, "{domain}: {body}");
        assert_eq!(body["code"], "domain_reserved", "{domain}");
    }
    // Not a host name a tenant could own: refused as invalid.
    for domain in ["localhost", "127.0.0.1", "10.0.0.8"] {
        let (status, body) = add_domain(&s, &key, "mal", domain).await;
        assert_eq!(status, 400, "{domain}: {body}");
        assert_eq!(body["code"], "invalid_domain", "{domain}");
    }
    let (status, body) = s
        .json(Method::GET, "/v1/tenants/mal/domains", Some(&key), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"], json!([]), "nothing was registered");
    // A neighbour of a platform host is a domain like any other.
    let (status, body) = add_domain(&s, &key, "mal", "notplatform.example").await;
    assert_eq!(status, 201, "{body}");
}

/// Registered, a domain is pending: it routes nothing until its token is served at the
/// domain and verified. The admin token never resolves a tenant through a domain.
async fn a_domain_routes_only_once_verified(backend: Backend) {
    let site = DomainSite::start().await;
    let Some(s) = Server::start_on_with(backend, platform_config(&site), |_| {}).await else {
        return;
    };
    s.create_tenant("acme").await;
    s.create_tenant("mal").await;
    let acme = api_key(&s, "acme").await;
    let mal = api_key(&s, "mal").await;
    let user = {
        s.signup("ada@acme.gg").await;
        s.join_by_invitation("acme", "ada@acme.gg", "admin").await;
        s.login("ada@acme.gg", None).await
    };

    let (status, claim) = add_domain(&s, &acme, "acme", "Raid.Acme.GG").await;
    assert_eq!(status, 201, "{claim}");
    assert_eq!(claim["domain"], "raid.acme.gg");
    assert_eq!(claim["status"], "pending");
    let token = claim["verification"]["token"].as_str().unwrap().to_owned();
    assert_eq!(
        claim["verification"]["http"]["url"],
        format!("http://raid.acme.gg/.well-known/tenancy-verification/{token}")
    );
    assert_eq!(claim["verification"]["http"]["body"], token.as_str());

    // Someone else may claim it too (a pending claim blocks nobody), with a token of its own.
    let (status, rival) = add_domain(&s, &mal, "mal", "raid.acme.gg").await;
    assert_eq!(status, 201, "{rival}");
    assert_ne!(rival["verification"]["token"], token.as_str());
    let (status, body) = add_domain(&s, &acme, "acme", "raid.acme.gg").await;
    assert_eq!(status, 409, "claimed twice by one tenant: {body}");
    assert_eq!(body["code"], "domain_taken");

    // Pending: the host names no tenant.
    let (status, body) = tenant_at(&s, &user, "raid.acme.gg").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "tenant_required");

    // The token is not served yet: not verified, still pending, still not routed.
    let (status, body) = verify_domain(&s, &acme, "acme", "raid.acme.gg").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "domain_unverified");
    let (status, _) = tenant_at(&s, &user, "raid.acme.gg").await;
    assert_eq!(status, 400);
    // The rival's token is not acme's: serving it verifies only the rival's claim.
    let (status, body) = verify_domain(&s, &mal, "mal", "raid.acme.gg").await;
    assert_eq!(status, 422, "{body}");

    site.publish(&token);
    let (status, body) = verify_domain(&s, &acme, "acme", "raid.acme.gg").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "verified");
    assert!(body["verified_at"].is_string(), "{body}");
    let (status, body) = tenant_at(&s, &user, "raid.acme.gg").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["slug"], "acme");

    // Verified by acme: the rival's pending claim is gone, and nobody can claim it now.
    let (_, listed) = s
        .json(Method::GET, "/v1/tenants/mal/domains", Some(&mal), None)
        .await;
    assert_eq!(listed["data"], json!([]), "{listed}");
    let (status, body) = add_domain(&s, &mal, "mal", "raid.acme.gg").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "domain_taken");
    let (_, listed) = s
        .json(Method::GET, "/v1/tenants/acme/domains", Some(&acme), None)
        .await;
    assert_eq!(listed["data"][0]["domain"], "raid.acme.gg", "{listed}");
    assert_eq!(listed["data"][0]["status"], "verified", "{listed}");

    // The admin token does not resolve a tenant through a domain: it names none…
    let (status, body) = tenant_at(&s, ADMIN_TOKEN, "raid.acme.gg").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "tenant_required");
    // …and says which tenant by path, as before.
    let resp = s
        .call(
            Method::GET,
            "/t/mal/v1/tenant",
            Some(ADMIN_TOKEN),
            &[("host", "raid.acme.gg")],
            None,
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["slug"], "mal");

    // An unknown domain cannot be verified.
    let (status, body) = verify_domain(&s, &acme, "acme", "other.acme.gg").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "domain_not_found");
}

/// Deleting a tenant releases its domains: another tenant registers and verifies them.
async fn a_deleted_tenants_domains_are_released(backend: Backend) {
    let site = DomainSite::start().await;
    let Some(s) = Server::start_on_with(backend, platform_config(&site), |_| {}).await else {
        return;
    };
    s.create_tenant("acme").await;
    let (status, claim) = add_domain(&s, ADMIN_TOKEN, "acme", "shop.acme.gg").await;
    assert_eq!(status, 201, "{claim}");
    site.publish(claim["verification"]["token"].as_str().unwrap());
    let (status, body) = verify_domain(&s, ADMIN_TOKEN, "acme", "shop.acme.gg").await;
    assert_eq!(status, 200, "{body}");
    let (status, claim) = add_domain(&s, ADMIN_TOKEN, "acme", "pending.acme.gg").await;
    assert_eq!(status, 201, "{claim}");

    let resp = s
        .call(
            Method::DELETE,
            "/v1/tenants/acme",
            Some(ADMIN_TOKEN),
            &[],
            None,
        )
        .await;
    assert_eq!(resp.status(), 204);

    s.create_tenant("heir").await;
    let key = api_key(&s, "heir").await;
    for domain in ["shop.acme.gg", "pending.acme.gg"] {
        let (status, claim) = add_domain(&s, &key, "heir", domain).await;
        assert_eq!(status, 201, "{domain}: {claim}");
        site.publish(claim["verification"]["token"].as_str().unwrap());
        let (status, body) = verify_domain(&s, &key, "heir", domain).await;
        assert_eq!(status, 200, "{domain}: {body}");
        let (status, body) = tenant_at(&s, &key, domain).await;
        assert_eq!(status, 200, "{domain}: {body}");
        assert_eq!(body["slug"], "heir");
    }
}
