//! `/openapi.json` describes the control plane and every table of the configured schema.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use common::Server;
use reqwest::Method;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describes_control_plane_and_tables() {
    let s = Server::start().await;
    let (status, doc) = s.json(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/v1/tenants",
        "/v1/auth/login",
        "/v1/tenants/{slug}/api-keys",
        "/v1/data/members",
        "/v1/data/bids/{id}",
    ] {
        assert!(paths.contains_key(p), "{p}");
    }
    assert!(
        paths.keys().all(|p| !p.contains("_tenancy")),
        "internal tables are never described"
    );
    let members = &doc["components"]["schemas"]["members"]["properties"];
    assert_eq!(members["dkp"]["type"], "integer");
    assert_eq!(members["joined_at"]["format"], "date-time");
    assert_eq!(members["class"]["nullable"], true);
    let required = doc["components"]["schemas"]["members"]["required"]
        .as_array()
        .unwrap();
    assert_eq!(
        required,
        &vec![serde_json::json!("name")],
        "id is generated, the rest defaulted or nullable"
    );
    // Every $ref resolves.
    let text = doc.to_string();
    for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &part[..part.find('"').unwrap()];
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "dangling $ref {name}"
        );
    }
}
