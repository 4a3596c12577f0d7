//! Faults of a PostgreSQL store over HTTP: the server stopping mid-traffic (through a proxy
//! the test cuts, so other tests' PostgreSQL is untouched) and connection exhaustion.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::time::{Duration, Instant};

use common::pg::Proxy;
use common::{Backend, Server, ADMIN_TOKEN};
use reqwest::Method;
use serde_json::{json, Value};
use tenancy::Mode;

async fn api_key(s: &Server, slug: &str) -> String {
    let (status, body) = s
        .json(
            Method::POST,
            &format!("/v1/tenants/{slug}/api-keys"),
            Some(ADMIN_TOKEN),
            Some(json!({ "role": "member" })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["key"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_store_answers_503_within_the_timeout_and_recovers_by_itself() {
    let proxy = Proxy::start(0).await;
    let port = proxy.port;
    let Some(s) = Server::start_on_with(Backend::PgSchema, Default::default(), |config| {
        let store = &mut config.stores[0];
        store.url = store
            .url
            .replace("127.0.0.1:5432", &format!("127.0.0.1:{port}"));
        store.limits.connect_timeout = Duration::from_millis(500);
        store.limits.query_timeout = Duration::from_secs(2);
    })
    .await
    else {
        return;
    };
    assert_eq!(s.engine.config().default_mode, Mode::Schema);
    s.create_tenant("acme").await;
    let key = api_key(&s, "acme").await;
    let (status, body) = s
        .json(
            Method::POST,
            "/v1/data/members",
            Some(&key),
            Some(json!({ "name": "Thrall" })),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    proxy.cut();
    for _ in 0..3 {
        let started = Instant::now();
        let resp = s
            .call(Method::GET, "/v1/data/members", Some(&key), &[], None)
            .await;
        let took = started.elapsed();
        assert_eq!(resp.status().as_u16(), 503);
        assert!(resp.headers().contains_key("retry-after"));
        let text = resp.text().await.unwrap();
        let problem: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(problem["code"], "store_unavailable", "{problem}");
        for leak in [
            "127.0.0.1",
            "postgres",
            &port.to_string(),
            "tcp",
            "os error",
        ] {
            assert!(!text.to_lowercase().contains(leak), "{leak} leaked: {text}");
        }
        assert!(
            took < Duration::from_secs(3),
            "answered within the timeout ({took:?})"
        );
    }

    // PostgreSQL comes back at the same address: requests work again, no restart.
    let _back = Proxy::start(port).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = s
            .json(
                Method::GET,
                "/v1/data/members?select=name",
                Some(&key),
                None,
            )
            .await;
        if status == 200 {
            assert_eq!(body["data"], json!([{ "name": "Thrall" }]));
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_connection_budget_queues_then_answers_503_store_busy() {
    let Some(s) = Server::start_on_with(Backend::PgDatabase, Default::default(), |config| {
        config.stores[0].limits.max_connections = 1;
        config.stores[0].limits.acquire_timeout = Duration::from_millis(300);
    })
    .await
    else {
        return;
    };
    s.create_tenant("acme").await;
    let key = api_key(&s, "acme").await;
    let tenant = s
        .engine
        .tenant(&tenancy::Slug::parse("acme").unwrap())
        .await
        .unwrap();
    // The one connection is held by a library handler's open session.
    let held = s.engine.session(&tenant).await.unwrap();
    let started = Instant::now();
    let resp = s
        .call(Method::GET, "/v1/data/members", Some(&key), &[], None)
        .await;
    assert_eq!(resp.status().as_u16(), 503);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "it waited first"
    );
    let problem: Value = resp.json().await.unwrap();
    assert_eq!(problem["code"], "store_busy", "{problem}");
    // Released, the next request is served.
    held.commit().await.unwrap();
    let (status, body) = s
        .json(Method::GET, "/v1/data/members", Some(&key), None)
        .await;
    assert_eq!(status, 200, "{body}");
}
