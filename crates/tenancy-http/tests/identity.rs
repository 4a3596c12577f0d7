//! Identity, access and the resolver chain over real HTTP: users, sessions, tokens, API
//! keys, members and roles. Users, keys and memberships live in the catalog and tenants
//! in their store, so every test runs once per backend (`four_modes!`): `database` on
//! SQLite, and `database`, `schema` and `shared` on PostgreSQL, whose catalog is on
//! PostgreSQL too.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use common::{Backend, Server, ADMIN_TOKEN, PASSWORD};
use reqwest::Method;
use serde_json::{json, Value};

const ROLES: [&str; 4] = ["viewer", "member", "admin", "owner"];

/// Vouches for every domain: these tests are about resolution, not about who owns a domain
/// (tests/domains.rs verifies domains over HTTP).
#[derive(Debug)]
struct Vouched;

#[async_trait::async_trait]
impl tenancy::DomainVerifier for Vouched {
    async fn verify(&self, _: &tenancy::Domain, _: &str) -> Result<(), String> {
        Ok(())
    }
}

/// Verifies a domain the tenant registered: from then on it names the tenant.
async fn vouch_for(s: &Server, slug: &str, domain: &str) {
    let tenant = s
        .engine
        .tenant(&tenancy::Slug::parse(slug).unwrap())
        .await
        .unwrap();
    s.engine
        .verify_domain(tenant.id, domain, &Vouched)
        .await
        .unwrap();
}

/// Tenants `a` and `b`; for each role a user of `a` and an API key of `a`; a superadmin.
struct Fleet {
    server: Server,
    /// (role, unscoped token, token scoped to a, api key of a)
    people: Vec<(&'static str, String, String, String)>,
    superadmin: String,
}

/// `None`: PostgreSQL is unreachable (the test is skipped).
async fn fleet(backend: Backend) -> Option<Fleet> {
    let server = Server::start_on(backend).await?;
    server.create_tenant("a").await;
    server.create_tenant("b").await;
    let mut people = Vec::new();
    for role in ROLES {
        let email = format!("{role}@a.gg");
        server.signup(&email).await;
        let membership = server.join_by_invitation("a", &email, role).await;
        assert_eq!(membership["role"], role);
        let (status, key) = server
            .json(
                Method::POST,
                "/v1/tenants/a/api-keys",
                Some(ADMIN_TOKEN),
                Some(json!({ "role": role, "label": format!("svc:{role}") })),
            )
            .await;
        assert_eq!(status, 201, "{key}");
        people.push((
            role,
            server.login(&email, None).await,
            server.login(&email, Some("a")).await,
            key["key"].as_str().unwrap().to_owned(),
        ));
    }
    server
        .engine
        .create_user("root@platform.gg", PASSWORD, true)
        .await
        .unwrap();
    let superadmin = server.login("root@platform.gg", None).await;
    Some(Fleet {
        server,
        people,
        superadmin,
    })
}

four_modes!(
    every_resolver_every_principal_every_role,
    roles_gate_the_control_plane,
    the_newcomer_walkthrough,
    sessions_refresh_once_and_log_out,
    members_invitations_and_the_last_owner,
    bad_credentials_and_headers,
    oversized_and_malformed_headers,
    custom_domains_resolve_from_the_cache,
);

#[derive(Clone, Copy, Debug)]
enum How {
    Path,
    Subdomain,
    Header,
}

/// GET /v1/tenant naming `slug` the given way: (status, body).
async fn whereami(server: &Server, token: &str, how: Option<(How, &str)>) -> (u16, Value) {
    let (path, headers): (String, Vec<(&str, String)>) = match how {
        None => ("/v1/tenant".into(), vec![]),
        Some((How::Path, slug)) => (format!("/t/{slug}/v1/tenant"), vec![]),
        Some((How::Subdomain, slug)) => (
            "/v1/tenant".into(),
            vec![("host", format!("{slug}.localhost"))],
        ),
        Some((How::Header, slug)) => ("/v1/tenant".into(), vec![("x-tenant", slug.to_owned())]),
    };
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let resp = server
        .call(Method::GET, &path, Some(token), &headers, None)
        .await;
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn every_resolver_every_principal_every_role(backend: Backend) {
    let Some(f) = fleet(backend).await else {
        return;
    };
    let s = &f.server;
    for how in [How::Path, How::Subdomain, How::Header] {
        for (role, unscoped, scoped, key) in &f.people {
            // A member reaches its own tenant with its role, by any resolver.
            for token in [unscoped, scoped, key] {
                let (status, body) = whereami(s, token, Some((how, "a"))).await;
                assert_eq!(status, 200, "{how:?} {role}: {body}");
                assert_eq!(body["slug"], "a");
                assert_eq!(body["role"], *role);
            }
            // Another tenant: not visible to a plain user token, a conflict for bound ones.
            let (status, body) = whereami(s, unscoped, Some((how, "b"))).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (404, Some("tenant_not_found")),
                "{how:?} {role}"
            );
            for bound in [scoped, key] {
                let (status, body) = whereami(s, bound, Some((how, "b"))).await;
                assert_eq!(
                    (status, body["code"].as_str()),
                    (403, Some("tenant_conflict")),
                    "{how:?} {role}"
                );
                // Unknown tenants conflict the same way: nothing to enumerate.
                let (status, body) = whereami(s, bound, Some((how, "nope"))).await;
                assert_eq!(
                    (status, body["code"].as_str()),
                    (403, Some("tenant_conflict")),
                    "{how:?} {role}"
                );
            }
            let (status, body) = whereami(s, unscoped, Some((how, "nope"))).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (404, Some("tenant_not_found")),
                "{how:?}"
            );
        }
        // Platform power reaches every tenant as owner, audited.
        for token in [f.superadmin.as_str(), ADMIN_TOKEN] {
            for slug in ["a", "b"] {
                let (status, body) = whereami(s, token, Some((how, slug))).await;
                assert_eq!(status, 200, "{how:?} {body}");
                assert_eq!(body["role"], "owner");
            }
        }
    }
    // Bound principals resolve by themselves; an unbound user must name a tenant.
    for (role, unscoped, scoped, key) in &f.people {
        for token in [scoped, key] {
            let (status, body) = whereami(s, token, None).await;
            assert_eq!((status, body["slug"].as_str()), (200, Some("a")), "{role}");
        }
        let (status, body) = whereami(s, unscoped, None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("tenant_required"))
        );
    }
    let (_, body) = s
        .json(Method::GET, "/v1/tenants/b/audit", Some(ADMIN_TOKEN), None)
        .await;
    let actors: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["actor"].as_str())
        .collect();
    assert!(
        actors.iter().any(|a| a.starts_with("user:")),
        "superadmin access audited: {actors:?}"
    );
    // Anonymous callers are asked to authenticate before anything is resolved.
    let resp = s.call(Method::GET, "/t/a/v1/tenant", None, &[], None).await;
    assert_eq!(resp.status(), 401);
}

async fn roles_gate_the_control_plane(backend: Backend) {
    let Some(f) = fleet(backend).await else {
        return;
    };
    let s = &f.server;
    for (role, unscoped, _, key) in &f.people {
        let rank = ROLES.iter().position(|r| r == role).unwrap();
        for token in [unscoped, key] {
            let (status, _) = s
                .json(Method::GET, "/v1/tenants/a/members", Some(token), None)
                .await;
            assert_eq!(status, 200, "{role} lists members");
            let (status, _) = s
                .json(
                    Method::POST,
                    "/v1/tenants/a/api-keys",
                    Some(token),
                    Some(json!({ "role": "viewer" })),
                )
                .await;
            assert_eq!(
                status,
                if rank >= 2 { 201 } else { 403 },
                "{role} creates keys"
            );
            let (status, _) = s
                .json(Method::GET, "/v1/tenants/a/audit", Some(token), None)
                .await;
            assert_eq!(
                status,
                if rank >= 2 { 200 } else { 403 },
                "{role} reads audit"
            );
            let (status, _) = s
                .json(
                    Method::POST,
                    "/v1/tenants/a/domains",
                    Some(token),
                    Some(json!({ "domain": format!("{role}-{}.example.com", token.len()) })),
                )
                .await;
            assert_eq!(
                status,
                if rank >= 2 { 201 } else { 403 },
                "{role} adds domains"
            );
            // Nobody below owner deletes; nobody outside sees b.
            let (status, _) = s
                .json(Method::GET, "/v1/tenants/b", Some(token), None)
                .await;
            assert_eq!(status, 404);
        }
        // Admins cannot mint owner keys.
        if *role == "admin" {
            let (status, _) = s
                .json(
                    Method::POST,
                    "/v1/tenants/a/api-keys",
                    Some(unscoped),
                    Some(json!({ "role": "owner" })),
                )
                .await;
            assert_eq!(status, 403);
        }
    }
    let (_, admin_token, _, _) = &f.people[2];
    let resp = s
        .call(
            Method::DELETE,
            "/v1/tenants/a",
            Some(admin_token),
            &[],
            None,
        )
        .await;
    assert_eq!(resp.status(), 403);
    // Suspension is for platform administrators.
    let (_, owner_token, _, _) = &f.people[3];
    let (status, _) = s
        .json(
            Method::POST,
            "/v1/tenants/a/suspend",
            Some(owner_token),
            None,
        )
        .await;
    assert_eq!(status, 403);
}

async fn the_newcomer_walkthrough(backend: Backend) {
    let Some(s) = Server::start_on(backend).await else {
        return;
    };
    // Sign up, create a tenant (becoming its owner), get a tenant-scoped token.
    s.signup("ada@guild.gg").await;
    let token = s.login("ada@guild.gg", None).await;
    let (status, tenant) = s
        .json(
            Method::POST,
            "/v1/tenants",
            Some(&token),
            Some(json!({ "slug": "ironforge", "name": "Ironforge" })),
        )
        .await;
    assert_eq!(status, 201, "{tenant}");
    let scoped = s.login("ada@guild.gg", Some("ironforge")).await;
    let (status, me) = s.json(Method::GET, "/v1/tenant", Some(&scoped), None).await;
    assert_eq!((status, me["role"].as_str()), (200, Some("owner")));

    // An API key for a backend service, shown once, listed without its secret.
    let (status, key) = s
        .json(
            Method::POST,
            "/v1/tenants/ironforge/api-keys",
            Some(&scoped),
            Some(json!({ "role": "member", "label": "store:T01" })),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let secret = key["key"].as_str().unwrap().to_owned();
    let (_, listed) = s
        .json(
            Method::GET,
            "/v1/tenants/ironforge/api-keys",
            Some(&scoped),
            None,
        )
        .await;
    assert!(
        !listed.to_string().contains(&secret[25..]),
        "secret never listed"
    );
    assert!(listed["data"][0]["last_used_at"].is_null());

    // The key reaches the tenant by path, subdomain and header.
    for (path, headers) in [
        ("/t/ironforge/v1/tenant", vec![]),
        ("/v1/tenant", vec![("host", "ironforge.localhost:8080")]),
        ("/v1/tenant", vec![("host", "IRONFORGE.LOCALHOST.")]),
        ("/v1/tenant", vec![("x-tenant", "ironforge")]),
    ] {
        let resp = s
            .call(Method::GET, path, Some(&secret), &headers, None)
            .await;
        assert_eq!(resp.status(), 200, "{path} {headers:?}");
    }
    let (_, listed) = s
        .json(
            Method::GET,
            "/v1/tenants/ironforge/api-keys",
            Some(&scoped),
            None,
        )
        .await;
    assert!(
        listed["data"][0]["last_used_at"].is_string(),
        "last use recorded"
    );

    // A cross-tenant attempt is refused.
    s.create_tenant("orgrimmar").await;
    let resp = s
        .call(
            Method::GET,
            "/t/orgrimmar/v1/tenant",
            Some(&secret),
            &[],
            None,
        )
        .await;
    assert_eq!(resp.status(), 403);

    // Revoked: the very next call is refused.
    let id = key["id"].as_str().unwrap();
    let resp = s
        .call(
            Method::DELETE,
            &format!("/v1/tenants/ironforge/api-keys/{id}"),
            Some(&scoped),
            &[],
            None,
        )
        .await;
    assert_eq!(resp.status(), 204);
    let resp = s
        .call(
            Method::GET,
            "/t/ironforge/v1/tenant",
            Some(&secret),
            &[],
            None,
        )
        .await;
    assert_eq!(resp.status(), 401);

    // Custom domains resolve too.
    let (status, _) = s
        .json(
            Method::POST,
            "/v1/tenants/ironforge/domains",
            Some(&scoped),
            Some(json!({ "domain": "Raid.Ironforge.GG" })),
        )
        .await;
    assert_eq!(status, 201);
    vouch_for(&s, "ironforge", "raid.ironforge.gg").await;
    let resp = s
        .call(
            Method::GET,
            "/v1/tenant",
            Some(&token),
            &[("host", "raid.ironforge.gg")],
            None,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let resp = s
        .call(
            Method::GET,
            "/v1/tenant",
            Some(&token),
            &[("host", "unknown.example.com")],
            None,
        )
        .await;
    assert_eq!(resp.status(), 400, "an unknown domain names no tenant");
}

async fn sessions_refresh_once_and_log_out(backend: Backend) {
    let Some(s) = Server::start_on(backend).await else {
        return;
    };
    s.signup("jaina@alliance.gg").await;
    let (status, session) = s
        .json(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({ "email": "JAINA@alliance.gg", "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["token_type"], "Bearer");
    let refresh = session["refresh_token"].as_str().unwrap();
    let (status, next) = s
        .json(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({ "refresh_token": refresh })),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = s
        .json(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({ "refresh_token": refresh })),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_token"))
    );
    let next_refresh = next["refresh_token"].as_str().unwrap();
    let resp = s
        .call(
            Method::POST,
            "/v1/auth/logout",
            None,
            &[],
            Some(json!({ "refresh_token": next_refresh })),
        )
        .await;
    assert_eq!(resp.status(), 204);
    let (status, _) = s
        .json(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({ "refresh_token": next_refresh })),
        )
        .await;
    assert_eq!(status, 401);
    let (status, me) = s
        .json(
            Method::GET,
            "/v1/me",
            Some(next["access_token"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(
        (status, me["user"]["email"].as_str()),
        (200, Some("jaina@alliance.gg"))
    );
}

async fn members_invitations_and_the_last_owner(backend: Backend) {
    let Some(s) = Server::start_on(backend).await else {
        return;
    };
    s.signup("owner@horde.gg").await;
    let owner = s.login("owner@horde.gg", None).await;
    s.json(
        Method::POST,
        "/v1/tenants",
        Some(&owner),
        Some(json!({ "slug": "horde" })),
    )
    .await;

    // Inviting an email with no account; the invitee joins at signup.
    let (status, invited) = s
        .json(
            Method::POST,
            "/v1/tenants/horde/members",
            Some(&owner),
            Some(json!({ "email": "new@horde.gg", "role": "member" })),
        )
        .await;
    assert_eq!(
        (status, invited["status"].as_str()),
        (201, Some("invited")),
        "{invited}"
    );
    let invitation = invited["invitation"].as_str().unwrap();
    let (status, body) = s
        .json(Method::POST, "/v1/auth/signup", None, Some(json!({ "email": "other@horde.gg", "password": PASSWORD, "invitation": invitation })))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_invitation")),
        "another email cannot redeem it"
    );
    let (status, _) = s
        .json(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({ "email": "other@horde.gg", "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, 401, "the refused signup created nothing");
    let (status, body) = s
        .json(
            Method::POST,
            "/v1/auth/signup",
            None,
            Some(
                json!({ "email": "new@horde.gg", "password": PASSWORD, "invitation": invitation }),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["memberships"][0]["role"], "member");

    let (_, members) = s
        .json(Method::GET, "/v1/tenants/horde/members", Some(&owner), None)
        .await;
    let members = members["data"].as_array().unwrap().clone();
    assert_eq!(members.len(), 2);
    let owner_id = members.iter().find(|m| m["role"] == "owner").unwrap()["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let new_id = members.iter().find(|m| m["role"] == "member").unwrap()["user_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The last owner can be neither demoted nor removed.
    let (status, body) = s
        .json(
            Method::PATCH,
            &format!("/v1/tenants/horde/members/{owner_id}"),
            Some(&owner),
            Some(json!({ "role": "admin" })),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (409, Some("last_owner")));
    let resp = s
        .call(
            Method::DELETE,
            &format!("/v1/tenants/horde/members/{owner_id}"),
            Some(&owner),
            &[],
            None,
        )
        .await;
    assert_eq!(resp.status(), 409);
    // With a second owner, the first can step down.
    let resp = s
        .call(
            Method::PATCH,
            &format!("/v1/tenants/horde/members/{new_id}"),
            Some(&owner),
            &[],
            Some(json!({ "role": "owner" })),
        )
        .await;
    assert_eq!(resp.status(), 204);
    let resp = s
        .call(
            Method::DELETE,
            &format!("/v1/tenants/horde/members/{owner_id}"),
            Some(&owner),
            &[],
            None,
        )
        .await;
    assert_eq!(resp.status(), 204);
    // The removed owner no longer sees the tenant.
    let (status, _) = s
        .json(Method::GET, "/v1/tenants/horde", Some(&owner), None)
        .await;
    assert_eq!(status, 404);

    // Bad member input.
    let newcomer = s.login("new@horde.gg", None).await;
    for (body, code) in [
        (
            json!({ "email": "x@horde.gg", "role": "emperor" }),
            "invalid_role",
        ),
        (
            json!({ "email": "not-an-email", "role": "member" }),
            "invalid_email",
        ),
        (
            json!({ "email": "new@horde.gg", "role": "member" }),
            "member_exists",
        ),
        (json!({ "email": "x@horde.gg" }), "invalid_body"),
    ] {
        let (_, got) = s
            .json(
                Method::POST,
                "/v1/tenants/horde/members",
                Some(&newcomer),
                Some(body.clone()),
            )
            .await;
        assert_eq!(got["code"], code, "{body}");
    }
    for bad in ["not-a-uuid", "00000000-0000-0000-0000-000000000000"] {
        let (status, _) = s
            .json(
                Method::PATCH,
                &format!("/v1/tenants/horde/members/{bad}"),
                Some(&newcomer),
                Some(json!({ "role": "viewer" })),
            )
            .await;
        assert_eq!(status, 404, "{bad}");
    }
}

async fn bad_credentials_and_headers(backend: Backend) {
    let Some(s) = Server::start_on(backend).await else {
        return;
    };
    s.create_tenant("acme").await;
    s.signup("ada@guild.gg").await;
    let good = s.login("ada@guild.gg", None).await;
    let long = "x".repeat(5000);
    let truncated = &good[..good.len() - 5];
    for token in [
        "garbage",
        truncated,
        long.as_str(),
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
        "tny_0123456789abcdef_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "tny_admin_0000",
    ] {
        let resp = s.call(Method::GET, "/v1/me", Some(token), &[], None).await;
        assert_eq!(resp.status(), 401, "{token:.40}");
    }
    // Weak passwords, bad emails, duplicates; SQL and HTML stored verbatim.
    for (body, code) in [
        (
            json!({ "email": "ada2@guild.gg", "password": "short" }),
            "weak_password",
        ),
        (
            json!({ "email": "ada3@guild.gg", "password": "ADA3@guild.gg" }),
            "weak_password",
        ),
        (
            json!({ "email": "nope", "password": PASSWORD }),
            "invalid_email",
        ),
        (
            json!({ "email": "ADA@guild.gg", "password": PASSWORD }),
            "email_taken",
        ),
        (json!({ "email": "x@guild.gg" }), "invalid_body"),
    ] {
        let (_, got) = s
            .json(Method::POST, "/v1/auth/signup", None, Some(body.clone()))
            .await;
        assert_eq!(got["code"], code, "{body}");
    }
    let odd = "robert');DROP/**/TABLE/**/users;--<b>@guild.gg";
    let created = s.signup(odd).await;
    assert_eq!(created["user"]["email"], odd);
    // Login failures are rate limited per email, with Retry-After.
    for _ in 0..5 {
        let (status, body) = s
            .json(
                Method::POST,
                "/v1/auth/login",
                None,
                Some(json!({ "email": "ada@guild.gg", "password": "wrong password" })),
            )
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("invalid_credentials"))
        );
    }
    let resp = s
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            &[],
            Some(json!({ "email": "ada@guild.gg", "password": PASSWORD })),
        )
        .await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().get("retry-after").is_some());
    // Hosts that name no tenant, and non-ASCII hosts, resolve nothing.
    let admin = ADMIN_TOKEN;
    for host in ["localhost", "127.0.0.1:80", "a.b.localhost"] {
        let resp = s
            .call(
                Method::GET,
                "/v1/tenant",
                Some(admin),
                &[("host", host)],
                None,
            )
            .await;
        assert_eq!(resp.status(), 400, "{host}");
    }
    let resp = s
        .client
        .get(format!("{}/v1/tenant", s.base))
        .header("authorization", format!("Bearer {admin}"))
        .header(
            "host",
            reqwest::header::HeaderValue::from_bytes("äcme.localhost".as_bytes()).unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // A tenant header that is not a slug names no tenant anyone can see.
    let resp = s
        .call(
            Method::GET,
            "/v1/tenant",
            Some(admin),
            &[("x-tenant", "ACME'--")],
            None,
        )
        .await;
    assert_eq!(resp.status(), 404);
    // Suspended and unknown tenants.
    s.json(Method::POST, "/v1/tenants/acme/suspend", Some(admin), None)
        .await;
    let (status, body) = s
        .json(Method::GET, "/t/acme/v1/tenant", Some(admin), None)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("tenant_suspended"))
    );
}

async fn oversized_and_malformed_headers(backend: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(s) = Server::start_on(backend).await else {
        return;
    };
    s.create_tenant("acme").await;
    let big = "a".repeat(10_000);
    let resp = s
        .call(
            Method::GET,
            "/v1/tenant",
            Some(ADMIN_TOKEN),
            &[("x-tenant", big.as_str())],
            None,
        )
        .await;
    assert_eq!(
        resp.status(),
        404,
        "an oversized tenant header names no tenant"
    );
    let host = format!("{big}.localhost");
    let resp = s
        .call(
            Method::GET,
            "/v1/tenant",
            Some(ADMIN_TOKEN),
            &[("host", host.as_str())],
            None,
        )
        .await;
    assert_eq!(resp.status(), 400, "an oversized host names no tenant");
    let resp = s
        .call(Method::GET, "/v1/me", Some(&"b".repeat(100_000)), &[], None)
        .await;
    assert!(
        resp.status() == 401 || resp.status() == 431,
        "{}",
        resp.status()
    );

    // Bare CR inside a header value, written on the wire: refused before any handler runs.
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let request = format!(
        "GET /v1/tenant HTTP/1.1\r\nHost: acme.localhost\r\nX-Tenant: acme\rX-Evil: 1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:.80}");
}

/// A request that names its tenant by custom domain reads the catalog the first time only,
/// and so does one whose host is no registered domain; a removed domain stops resolving on
/// the very next request.
async fn custom_domains_resolve_from_the_cache(backend: Backend) {
    // Usage is written by a timer: not while this test counts catalog queries.
    let quiet =
        |c: &mut tenancy::EngineConfig| c.usage.flush_every = std::time::Duration::from_secs(3600);
    let Some(s) = Server::start_on_with(backend, tenancy_http::HttpConfig::default(), quiet).await
    else {
        return;
    };
    s.create_tenant("acme").await;
    s.signup("ada@acme.gg").await;
    s.join_by_invitation("acme", "ada@acme.gg", "admin").await;
    // Not bound to a tenant: only the host names one.
    let token = s.login("ada@acme.gg", None).await;
    let (status, _) = s
        .json(
            Method::POST,
            "/v1/tenants/acme/domains",
            Some(&token),
            Some(json!({ "domain": "raid.acme.gg" })),
        )
        .await;
    assert_eq!(status, 201);
    vouch_for(&s, "acme", "raid.acme.gg").await;
    let queries = || s.engine.catalog().query_count();
    let tenant_of = |host: &'static str| {
        let s = &s;
        let token = &token;
        async move {
            let (status, body) = {
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
            };
            match status {
                200 => Some(body["slug"].as_str().unwrap().to_owned()),
                400 => None,
                other => panic!("{host}: {other} {body}"),
            }
        }
    };

    for host in ["raid.acme.gg", "nobody.example.com"] {
        let first = tenant_of(host).await;
        let before = queries();
        assert_eq!(tenant_of(host).await, first, "{host}");
        assert_eq!(
            queries(),
            before,
            "{host}: the second request reads no catalog row"
        );
    }
    assert_eq!(tenant_of("raid.acme.gg").await.as_deref(), Some("acme"));

    let resp = s
        .call(
            Method::DELETE,
            "/v1/tenants/acme/domains/raid.acme.gg",
            Some(&token),
            &[],
            None,
        )
        .await;
    assert_eq!(resp.status(), 204);
    assert_eq!(
        tenant_of("raid.acme.gg").await,
        None,
        "removed: not resolved"
    );
    let (status, _) = s
        .json(
            Method::POST,
            "/v1/tenants/acme/domains",
            Some(&token),
            Some(json!({ "domain": "nobody.example.com" })),
        )
        .await;
    assert_eq!(status, 201);
    vouch_for(&s, "acme", "nobody.example.com").await;
    assert_eq!(
        tenant_of("nobody.example.com").await.as_deref(),
        Some("acme"),
        "registered: no longer unknown"
    );
}
