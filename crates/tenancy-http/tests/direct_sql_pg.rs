//! A PostgreSQL catalog edited by hand: an operator's `UPDATE` or `DELETE` on a row the
//! request path caches (a key, a tenant, a domain) is seen by a running server within a
//! notification's delay, as the engine's own writes are.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Backend, Server, ADMIN_TOKEN};
use reqwest::Method;
use serde_json::json;
use tenancy_http::HttpConfig;

/// How long a notification may take to arrive: generous, this is a liveness bound.
const BOUND: Duration = Duration::from_secs(10);

/// A server whose catalog is on PostgreSQL, and a psql-like session on that catalog.
async fn server_and_psql() -> Option<(Server, tokio_postgres::Client)> {
    let url = Arc::new(Mutex::new(None));
    let seen = Arc::clone(&url);
    let s = Server::start_on_with(Backend::PgDatabase, HttpConfig::default(), move |c| {
        *seen.lock().unwrap() = c.catalog_url.clone();
    })
    .await?;
    let url = url.lock().unwrap().clone().expect("a PostgreSQL catalog");
    let (psql, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    Some((s, psql))
}

/// Polls `GET {path}` with `token` until it answers `want` (or panics after [`BOUND`]).
async fn answers(s: &Server, path: &str, token: &str, want: u16, what: &str) {
    let start = Instant::now();
    loop {
        let status = s
            .call(Method::GET, path, Some(token), &[], None)
            .await
            .status()
            .as_u16();
        if status == want {
            return;
        }
        assert!(
            start.elapsed() < BOUND,
            "{what}: still {status} after {BOUND:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_by_direct_sql_is_refused() {
    let Some((s, psql)) = server_and_psql().await else {
        return;
    };
    s.create_tenant("acme").await;
    let (status, key) = s
        .json(
            Method::POST,
            "/v1/tenants/acme/api-keys",
            Some(ADMIN_TOKEN),
            Some(json!({ "role": "member" })),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let (id, secret) = (key["id"].as_str().unwrap(), key["key"].as_str().unwrap());
    // Cached now: the key, the tenant.
    answers(&s, "/v1/tenant", secret, 200, "a fresh key").await;
    answers(&s, "/v1/tenant", secret, 200, "a cached key").await;

    let n = psql
        .execute(
            "UPDATE api_keys SET revoked_at = now() WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    answers(&s, "/v1/tenant", secret, 401, "a key revoked by hand").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_suspended_or_a_key_deleted_by_direct_sql_is_seen() {
    let Some((s, psql)) = server_and_psql().await else {
        return;
    };
    s.create_tenant("acme").await;
    let (_, key) = s
        .json(
            Method::POST,
            "/v1/tenants/acme/api-keys",
            Some(ADMIN_TOKEN),
            Some(json!({ "role": "member" })),
        )
        .await;
    let (id, secret) = (key["id"].as_str().unwrap(), key["key"].as_str().unwrap());
    answers(&s, "/t/acme/v1/tenant", ADMIN_TOKEN, 200, "a live tenant").await;
    answers(&s, "/v1/tenant", secret, 200, "a fresh key").await;

    psql.execute(
        "UPDATE tenants SET status = 'suspended' WHERE slug = 'acme'",
        &[],
    )
    .await
    .unwrap();
    answers(
        &s,
        "/t/acme/v1/tenant",
        ADMIN_TOKEN,
        403,
        "suspended by hand",
    )
    .await;
    psql.execute(
        "UPDATE tenants SET status = 'active' WHERE slug = 'acme'",
        &[],
    )
    .await
    .unwrap();
    answers(&s, "/t/acme/v1/tenant", ADMIN_TOKEN, 200, "resumed by hand").await;

    psql.execute("DELETE FROM api_keys WHERE id = $1", &[&id])
        .await
        .unwrap();
    answers(&s, "/v1/tenant", secret, 401, "a key deleted by hand").await;
}
