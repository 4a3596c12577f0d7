//! What an operator and a browser see of every request: `/metrics` scraped from a real
//! server and read by a Prometheus text parser, request ids, CORS preflights and the body
//! limit.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::collections::HashMap;

use common::{Server, ADMIN_TOKEN};
use reqwest::Method;
use serde_json::{json, Value};
use tenancy_http::{CorsConfig, HttpConfig, MetricsConfig};

const METRICS_TOKEN: &str = "scraper-token-0123456789";

fn config() -> HttpConfig {
    HttpConfig {
        metrics: MetricsConfig {
            enabled: true,
            token: Some(tenancy::AdminToken::from_secret(METRICS_TOKEN)),
        },
        cors: CorsConfig {
            allowed_origins: vec!["https://app.example.com".into()],
            ..CorsConfig::default()
        },
        body_limit: 4096,
        ..HttpConfig::default()
    }
}

/// The Prometheus project's own Python parser (`prometheus_client.parser`, Debian's
/// python3-prometheus-client, which `.ci/run` installs): reads the exposition on stdin and
/// prints `[name, {labels}, value]` for every sample.
const PARSER: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;

/// One scrape, parsed by a real Prometheus text parser: each sample's value by name and
/// labels (sorted `k=v` pairs, comma-joined). Histograms appear as `_bucket`, `_count` and
/// `_sum` samples.
async fn scrape(s: &Server, token: &str) -> HashMap<(String, String), f64> {
    let resp = s
        .call(Method::GET, "/metrics", Some(token), &[], None)
        .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    let mut parser = std::process::Command::new("/usr/bin/python3")
        .args(["-c", PARSER])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with prometheus_client (apt-get install python3-prometheus-client)");
    std::io::Write::write_all(&mut parser.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = parser.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the exposition does not parse:\n{text}"
    );
    let parsed: Vec<(String, HashMap<String, String>, f64)> =
        serde_json::from_slice(&out.stdout).unwrap();
    parsed
        .into_iter()
        .map(|(name, labels, value)| {
            let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            ((name, labels.join(",")), value)
        })
        .collect()
}

fn get(samples: &HashMap<(String, String), f64>, name: &str, labels: &str) -> f64 {
    samples
        .get(&(name.to_owned(), labels.to_owned()))
        .copied()
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_route_template_and_read_the_fleet() {
    let s = Server::start_with(config()).await;
    s.create_tenant("alpha").await;
    // The recorder is process-wide: other tests' requests count too, so compare.
    let before = scrape(&s, METRICS_TOKEN).await;
    for id in ["m1", "m2", "m3"] {
        let resp = s
            .call(
                Method::POST,
                "/t/alpha/v1/data/members",
                Some(ADMIN_TOKEN),
                &[],
                Some(json!({ "id": id, "name": id })),
            )
            .await;
        assert_eq!(resp.status(), 201);
        let resp = s
            .call(
                Method::GET,
                &format!("/t/alpha/v1/data/members/{id}"),
                Some(ADMIN_TOKEN),
                &[],
                None,
            )
            .await;
        assert_eq!(resp.status(), 200);
    }
    let after = scrape(&s, METRICS_TOKEN).await;

    let reads = "method=GET,route=/v1/data/{table}/{id},status=200";
    let moved = |name: &str, labels: &str| get(&after, name, labels) - get(&before, name, labels);
    assert_eq!(moved("tenancy_http_requests_total", reads), 3.0);
    assert_eq!(
        moved("tenancy_http_request_duration_seconds_count", reads),
        3.0
    );
    assert_eq!(
        moved(
            "tenancy_http_requests_total",
            "method=POST,route=/v1/data/{table},status=201"
        ),
        3.0
    );
    // No raw path, hence no slug or id, is ever a label.
    assert!(
        after
            .keys()
            .all(|(_, labels)| !labels.contains("alpha") && !labels.contains("m1")),
        "a label carries a tenant or a row"
    );
    assert!(moved("tenancy_catalog_lookups_total", "kind=slug,result=hit") >= 1.0);
    assert!(
        moved(
            "tenancy_tenant_handle_lookups_total",
            "result=hit,store=default"
        ) >= 1.0
    );
    assert!(get(&after, "tenancy_tenants", "mode=database,status=active") >= 1.0);
    assert!(get(&after, "tenancy_provisioning_total", "outcome=ok") >= 1.0);
    assert!(get(&after, "tenancy_tenant_handles_open", "store=default") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_metrics_or_admin_token() {
    let s = Server::start_with(config()).await;
    for token in [None, Some("wrong-token-0123456789"), Some("")] {
        let resp = s.call(Method::GET, "/metrics", token, &[], None).await;
        assert_eq!(resp.status(), 401, "{token:?}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized");
    }
    scrape(&s, ADMIN_TOKEN).await;

    let off = Server::start_with(HttpConfig {
        metrics: MetricsConfig {
            enabled: false,
            token: None,
        },
        ..HttpConfig::default()
    })
    .await;
    let (status, body) = off
        .json(Method::GET, "/metrics", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_request_id_is_kept_and_any_other_replaced() {
    let s = Server::start_with(config()).await;
    let resp = s
        .call(
            Method::GET,
            "/v1/tenant",
            None,
            &[("x-request-id", "abc-123.x:y_z")],
            None,
        )
        .await;
    assert_eq!(resp.headers()["x-request-id"], "abc-123.x:y_z");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["request_id"], "abc-123.x:y_z",
        "problem+json carries it"
    );

    let long = "a".repeat(129);
    for bad in ["has space", "quote\"d", "{\"json\":1}", long.as_str()] {
        let resp = s
            .call(
                Method::GET,
                "/v1/tenant",
                None,
                &[("x-request-id", bad)],
                None,
            )
            .await;
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_ne!(id, bad);
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "a fresh id: {id}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["request_id"], id.as_str());
    }

    // Successful answers carry one too; two requests never share one.
    let a = s.call(Method::GET, "/healthz", None, &[], None).await;
    let b = s.call(Method::GET, "/healthz", None, &[], None).await;
    assert_eq!(a.status(), 200);
    assert_ne!(a.headers()["x-request-id"], b.headers()["x-request-id"]);
}

async fn preflight(s: &Server, origin: &str) -> reqwest::Response {
    s.call(
        Method::OPTIONS,
        "/t/alpha/v1/data/members",
        None,
        &[
            ("origin", origin),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization, content-type",
            ),
        ],
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_preflights_from_allowed_origins_only() {
    let s = Server::start_with(config()).await;
    let ok = preflight(&s, "https://app.example.com").await;
    assert_eq!(ok.status(), 204);
    let h = ok.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    let methods = h["access-control-allow-methods"].to_str().unwrap();
    assert!(
        methods.contains("POST") && methods.contains("PATCH"),
        "{methods}"
    );
    let headers = h["access-control-allow-headers"].to_str().unwrap();
    assert!(
        headers.contains("authorization")
            && headers.contains("content-type")
            && headers.contains("x-tenant"),
        "{headers}"
    );
    assert!(h.contains_key("access-control-max-age"));

    let refused = preflight(&s, "https://evil.example.com").await;
    assert_ne!(refused.status(), 204);
    assert!(
        refused
            .headers()
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-")),
        "no CORS header for a disallowed origin"
    );

    // A simple request: the allowed origin is echoed and the request id exposed.
    let resp = s
        .call(
            Method::GET,
            "/healthz",
            None,
            &[("origin", "https://app.example.com")],
            None,
        )
        .await;
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(resp.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .contains("x-request-id"));
    let resp = s
        .call(
            Method::GET,
            "/healthz",
            None,
            &[("origin", "https://evil.example.com")],
            None,
        )
        .await;
    assert!(!resp.headers().contains_key("access-control-allow-origin"));

    // By default no origin is allowed.
    let closed = Server::start().await;
    let resp = closed
        .call(
            Method::OPTIONS,
            "/v1/tenants",
            None,
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "GET"),
            ],
            None,
        )
        .await;
    assert!(!resp.headers().contains_key("access-control-allow-origin"));
}

#[test]
fn cors_origins_must_be_scheme_and_host() {
    assert_eq!(
        CorsConfig::parse_origin(" HTTPS://App.Example.com ").unwrap(),
        "https://app.example.com"
    );
    assert_eq!(
        CorsConfig::parse_origin("http://localhost:3000").unwrap(),
        "http://localhost:3000"
    );
    assert_eq!(CorsConfig::parse_origin("*").unwrap(), "*");
    for bad in [
        "app.example.com",
        "https://app.example.com/",
        "https://a/b",
        "ftp://x",
        "https://",
    ] {
        assert!(CorsConfig::parse_origin(bad).is_err(), "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_413_and_writes_nothing() {
    let s = Server::start_with(config()).await;
    s.create_tenant("alpha").await;
    let big = "x".repeat(8000);
    let resp = s
        .call(
            Method::POST,
            "/t/alpha/v1/data/members",
            Some(ADMIN_TOKEN),
            &[],
            Some(json!({ "id": "big", "name": big })),
        )
        .await;
    assert_eq!(resp.status(), 413);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "body_too_large");
    assert!(body["request_id"].is_string());

    // Sent without a length (chunked), it is held to the limit as it is read.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(br#"{"id":"big","name":""#.to_vec()),
        Ok(vec![b'x'; 8000]),
        Ok(br#""}"#.to_vec()),
    ];
    let resp = s
        .client
        .post(format!("{}/t/alpha/v1/data/members", s.base))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "body_too_large");

    let (status, _) = s
        .json(
            Method::GET,
            "/t/alpha/v1/data/members/big",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 404, "nothing was written");
    // Under the limit, the same call works.
    let (status, _) = s
        .json(
            Method::POST,
            "/t/alpha/v1/data/members",
            Some(ADMIN_TOKEN),
            Some(json!({ "id": "small", "name": "x".repeat(100) })),
        )
        .await;
    assert_eq!(status, 201);
}
