//! The control plane over real HTTP: the server runs in-process on 127.0.0.1:0 with a
//! fresh data folder per test, and every request goes through reqwest.

mod common;

use std::path::{Path, PathBuf};

use common::Server;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

const TOKEN: &str = "s3cret-Admin-Token";

/// One server on its own port and its own data folder (see `common::Server`), with the
/// helpers of this suite; stops when dropped.
struct TestServer {
    server: Server,
    token: String,
}

impl std::ops::Deref for TestServer {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl TestServer {
    async fn start() -> TestServer {
        TestServer {
            server: Server::start_with_admin_token(TOKEN).await,
            token: TOKEN.to_owned(),
        }
    }

    fn data_dir(&self) -> &Path {
        self.server.dir.path()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .header(AUTHORIZATION, self.bearer())
            .send()
            .await
            .expect("request sent")
    }

    async fn delete(&self, path: &str) -> Response {
        self.client
            .delete(self.url(path))
            .header(AUTHORIZATION, self.bearer())
            .send()
            .await
            .expect("request sent")
    }

    async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .header(AUTHORIZATION, self.bearer())
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// A POST with a raw body and content type, for bodies `json()` cannot produce.
    async fn post_raw(&self, path: &str, content_type: &str, body: &str) -> Response {
        self.client
            .post(self.url(path))
            .header(AUTHORIZATION, self.bearer())
            .header(CONTENT_TYPE, content_type)
            .body(body.to_owned())
            .send()
            .await
            .expect("request sent")
    }

    async fn create(&self, slug: &str, name: Option<&str>) -> Response {
        let body = match name {
            Some(name) => json!({ "slug": slug, "name": name }),
            None => json!({ "slug": slug }),
        };
        self.post_json("/v1/tenants", &body).await
    }

    /// Creates a tenant that must succeed and returns its body.
    async fn create_ok(&self, slug: &str, name: Option<&str>) -> Value {
        let resp = self.create(slug, name).await;
        assert_eq!(resp.status(), StatusCode::CREATED, "creating {slug:?}");
        resp.json().await.expect("json body")
    }

    /// The `data` of `GET /v1/tenants`.
    async fn list(&self) -> Vec<Value> {
        let resp = self.get("/v1/tenants").await;
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.expect("json body");
        body["data"].as_array().expect("data is an array").clone()
    }

    /// Nothing was created, seen through the API, the engine and the store folder.
    async fn assert_no_tenants(&self) {
        assert_eq!(self.list().await, Vec::<Value>::new());
        assert!(self.engine.list_tenants().await.unwrap().is_empty());
        assert!(
            db_files(&self.data_dir().join("tenants")).is_empty(),
            "no tenant file may exist"
        );
    }

    /// Asserts a problem+json response with `status` and `code`, and that it leaks nothing
    /// internal; returns the body.
    async fn problem(&self, resp: Response, status: StatusCode, code: &str) -> Value {
        assert_eq!(resp.status(), status, "status of a `{code}` problem");
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            content_type.as_deref(),
            Some("application/problem+json"),
            "content type of a `{code}` problem"
        );
        let text = resp.text().await.expect("body");
        self.assert_no_leak(&text);
        let body: Value = serde_json::from_str(&text).expect("problem body is JSON");
        assert_eq!(body["code"], code, "problem body: {body}");
        assert_eq!(body["status"], status.as_u16(), "problem body: {body}");
        assert!(body["type"].is_string(), "problem body: {body}");
        assert!(body["title"].is_string(), "problem body: {body}");
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "problem body: {body}"
        );
        body
    }

    fn assert_no_leak(&self, text: &str) {
        let lower = text.to_lowercase();
        assert!(!lower.contains("sqlite"), "problem mentions SQLite: {text}");
        let dir = self.data_dir().to_string_lossy().into_owned();
        assert!(!text.contains(&dir), "problem names the data dir: {text}");
        for needle in ["/tmp/", "/var/", "/home/", ".db", ".rs:", "tenants/"] {
            assert!(
                !text.contains(needle),
                "problem contains {needle:?} (a file path?): {text}"
            );
        }
    }
}

/// The `.db` files of a store folder (missing folder: none).
fn db_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".db"))
        .collect();
    files.sort();
    files
}

fn tenant_file(server: &TestServer, id: &str) -> PathBuf {
    server.data_dir().join("tenants").join(format!("{id}.db"))
}

fn assert_active_tenant(body: &Value, slug: &str, name: &str) {
    assert!(
        body["id"].as_str().is_some_and(|id| id.len() == 36),
        "id: {body}"
    );
    assert_eq!(body["slug"], slug, "{body}");
    assert_eq!(body["name"], name, "{body}");
    assert_eq!(body["status"], "active", "{body}");
    assert_eq!(body["mode"], "database", "{body}");
    assert_eq!(body["schema_version"], 2, "{body}");
    assert!(
        body.get("location").is_none(),
        "location is internal: {body}"
    );
    assert!(
        body.get("op_owner").is_none(),
        "op_owner is internal: {body}"
    );
}

// ---------------------------------------------------------------- service endpoints

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_answer_without_a_token() {
    let server = TestServer::start().await;
    let resp = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ok");

    let resp = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ready");
}

// ---------------------------------------------------------------- create, list, show

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_lists_and_shows_a_tenant() {
    let server = TestServer::start().await;
    let resp = server.create("acme", Some("Acme Inc.")).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        resp.headers()
            .get(LOCATION)
            .map(|v| v.to_str().unwrap().to_owned())
            .as_deref(),
        Some("/v1/tenants/acme")
    );
    assert!(resp.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let created: Value = resp.json().await.unwrap();
    assert_active_tenant(&created, "acme", "Acme Inc.");
    let id = created["id"].as_str().unwrap();
    assert!(
        tenant_file(&server, id).is_file(),
        "the tenant's file exists"
    );

    let listed = server.list().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], created["id"]);
    assert_active_tenant(&listed[0], "acme", "Acme Inc.");

    let resp = server.get("/v1/tenants/acme").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let shown: Value = resp.json().await.unwrap();
    assert_eq!(shown["id"], created["id"]);
    assert_active_tenant(&shown, "acme", "Acme Inc.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_defaults_to_the_slug() {
    let server = TestServer::start().await;
    let created = server.create_ok("globex", None).await;
    assert_active_tenant(&created, "globex", "globex");

    let created = server
        .post_json("/v1/tenants", &json!({ "slug": "initech", "name": null }))
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    assert_active_tenant(&created, "initech", "initech");

    let resp = server.get("/v1/tenants/globex").await;
    let shown: Value = resp.json().await.unwrap();
    assert_eq!(shown["name"], "globex");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_is_in_slug_order() {
    let server = TestServer::start().await;
    for slug in ["zeta", "alpha", "mid-1"] {
        server.create_ok(slug, None).await;
    }
    let slugs: Vec<Value> = server
        .list()
        .await
        .into_iter()
        .map(|t| t["slug"].clone())
        .collect();
    assert_eq!(slugs, vec![json!("alpha"), json!("mid-1"), json!("zeta")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_with_sql_and_html_is_stored_verbatim() {
    let server = TestServer::start().await;
    let name = "<script>x</script>'); DROP TABLE tenants;--";
    let created = server.create_ok("bobby", Some(name)).await;
    assert_eq!(created["name"], name);

    let shown: Value = server.get("/v1/tenants/bobby").await.json().await.unwrap();
    assert_eq!(shown["name"], name);

    let listed = server.list().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["name"], name);

    // Unicode names are fine too.
    let created = server.create_ok("cafe", Some("Café \u{1F600} 東京")).await;
    assert_eq!(created["name"], "Café \u{1F600} 東京");
}

// ---------------------------------------------------------------- delete

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_the_tenant_and_frees_the_slug() {
    let server = TestServer::start().await;
    let created = server.create_ok("acme", None).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let file = tenant_file(&server, &id);
    assert!(file.is_file());

    let resp = server.delete("/v1/tenants/acme").await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(resp.text().await.unwrap().is_empty(), "204 has no body");

    let resp = server.get("/v1/tenants/acme").await;
    server
        .problem(resp, StatusCode::NOT_FOUND, "tenant_not_found")
        .await;
    assert!(!file.exists(), "the tenant's file is removed");
    assert!(
        db_files(&server.data_dir().join("tenants"))
            .iter()
            .all(|p| !p.to_string_lossy().contains(&id)),
        "no file of the deleted tenant remains"
    );
    assert!(server.list().await.is_empty());

    // Deleting again: gone.
    let resp = server.delete("/v1/tenants/acme").await;
    server
        .problem(resp, StatusCode::NOT_FOUND, "tenant_not_found")
        .await;

    // The slug is free again, under a new id.
    let again = server.create_ok("acme", None).await;
    assert_active_tenant(&again, "acme", "acme");
    assert_ne!(again["id"], created["id"]);
    assert!(tenant_file(&server, again["id"].as_str().unwrap()).is_file());
    let listed = server.list().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], again["id"]);
}

// ---------------------------------------------------------------- refusals

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_bad_slugs_and_creates_nothing() {
    let server = TestServer::start().await;
    let long = "a".repeat(64);
    for bad in [
        "Acme",
        "ac_me",
        "-acme",
        "acme-",
        long.as_str(),
        "",
        "acmé",
        "www",
        "api",
        "admin",
        "t",
        "a b",
        "x;drop table tenants",
        "acme\n",
        "ac.me",
        "ac/me",
        "\u{0}",
    ] {
        let resp = server.create(bad, Some("Fine Name")).await;
        let body = server
            .problem(resp, StatusCode::BAD_REQUEST, "invalid_slug")
            .await;
        assert!(body["detail"].is_string(), "{bad:?}: {body}");
    }
    server.assert_no_tenants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_63_character_slug_is_fine() {
    let server = TestServer::start().await;
    let slug = "a".repeat(63);
    let created = server.create_ok(&slug, None).await;
    assert_active_tenant(&created, &slug, &slug);
    let resp = server.get(&format!("/v1/tenants/{slug}")).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_slug_is_a_conflict() {
    let server = TestServer::start().await;
    let first = server.create_ok("acme", Some("First")).await;
    let resp = server.create("acme", Some("Second")).await;
    server
        .problem(resp, StatusCode::CONFLICT, "tenant_exists")
        .await;
    let listed = server.list().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], first["id"]);
    assert_eq!(listed[0]["name"], "First");
    assert_eq!(db_files(&server.data_dir().join("tenants")).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_invalid_tenant_is_not_found() {
    let server = TestServer::start().await;
    for path in [
        "/v1/tenants/nobody",
        "/v1/tenants/Acme",
        "/v1/tenants/ac_me",
        "/v1/tenants/www",
        "/v1/tenants/-acme",
        &format!("/v1/tenants/{}", "a".repeat(200)),
        "/v1/tenants/x%3Bdrop%20table%20tenants",
        "/v1/tenants/acm%C3%A9",
    ] {
        let resp = server.get(path).await;
        server
            .problem(resp, StatusCode::NOT_FOUND, "tenant_not_found")
            .await;
        let resp = server.delete(path).await;
        server
            .problem(resp, StatusCode::NOT_FOUND, "tenant_not_found")
            .await;
    }
    server.assert_no_tenants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_refused() {
    let server = TestServer::start().await;
    for body in [
        "{",
        "{\"slug\": \"acme\"",
        "not json",
        "{'slug': 'acme'}",
        "",
    ] {
        let resp = server
            .post_raw("/v1/tenants", "application/json", body)
            .await;
        server
            .problem(resp, StatusCode::BAD_REQUEST, "malformed_json")
            .await;
    }
    server.assert_no_tenants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_type_is_refused() {
    let server = TestServer::start().await;
    let body = r#"{"slug":"acme"}"#;
    let resp = server.post_raw("/v1/tenants", "text/plain", body).await;
    server
        .problem(
            resp,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        )
        .await;
    // No content type at all.
    let resp = server
        .client
        .post(server.url("/v1/tenants"))
        .header(AUTHORIZATION, server.bearer())
        .body(body)
        .send()
        .await
        .unwrap();
    server
        .problem(
            resp,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        )
        .await;
    server.assert_no_tenants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_content_type_with_parameters_is_accepted() {
    let server = TestServer::start().await;
    let resp = server
        .post_raw(
            "/v1/tenants",
            "application/json; charset=utf-8",
            r#"{"slug":"acme"}"#,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_refused() {
    let server = TestServer::start().await;
    // One byte over axum's default 2 MiB limit: the server reads the whole body before it
    // refuses, so the client never writes into a closed connection.
    let limit = 2 * 1024 * 1024;
    let frame = r#"{"slug":"acme","name":""}"#.len();
    let body = format!(
        r#"{{"slug":"acme","name":"{}"}}"#,
        "x".repeat(limit + 1 - frame)
    );
    assert_eq!(body.len(), limit + 1);
    let resp = server
        .post_raw("/v1/tenants", "application/json", &body)
        .await;
    server
        .problem(resp, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
        .await;
    server.assert_no_tenants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_and_wrong_types_are_invalid_bodies() {
    let server = TestServer::start().await;
    for body in [
        json!({ "slug": 5 }),
        json!({ "slug": "acme", "name": 7 }),
        json!({ "slug": "acme", "nmae": "Acme" }),
        json!({ "slug": "acme", "mode": 3 }),
        json!({ "slug": "acme", "store": ["pg"] }),
        json!({ "name": "Acme" }),
        json!({}),
        json!(["acme"]),
        json!("acme"),
        json!(null),
    ] {
        let resp = server.post_json("/v1/tenants", &body).await;
        server
            .problem(resp, StatusCode::BAD_REQUEST, "invalid_body")
            .await;
    }
    server.assert_no_tenants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_modes_and_stores_are_refused() {
    let server = TestServer::start().await;
    for (body, code) in [
        (
            json!({ "slug": "acme", "mode": "shared" }),
            "mode_not_supported",
        ),
        (
            json!({ "slug": "acme", "mode": "schema" }),
            "mode_not_supported",
        ),
        (
            json!({ "slug": "acme", "mode": "Database" }),
            "invalid_mode",
        ),
        (json!({ "slug": "acme", "mode": "db'; --" }), "invalid_mode"),
        (
            json!({ "slug": "acme", "store": "nowhere" }),
            "unknown_store",
        ),
        (
            json!({ "slug": "acme", "store": "x\"; DROP DATABASE y; --" }),
            "unknown_store",
        ),
    ] {
        let resp = server.post_json("/v1/tenants", &body).await;
        server.problem(resp, StatusCode::BAD_REQUEST, code).await;
    }
    server.assert_no_tenants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_are_refused() {
    let server = TestServer::start().await;
    let long = "n".repeat(201);
    for name in [
        "",
        "   ",
        "Acme\u{0}",
        "Ac\nme",
        "Ac\u{7}me",
        "\tAcme",
        "Acme\u{1b}[31m",
        "Acme\u{7f}",
        long.as_str(),
    ] {
        let resp = server.create("acme", Some(name)).await;
        server
            .problem(resp, StatusCode::BAD_REQUEST, "invalid_name")
            .await;
    }
    server.assert_no_tenants().await;
    // 200 characters (not bytes) is the limit.
    let name = "é".repeat(200);
    let created = server.create_ok("acme", Some(&name)).await;
    assert_eq!(created["name"], name.as_str());
}

// ---------------------------------------------------------------- auth

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_admin_token_are_unauthorized() {
    let server = TestServer::start().await;
    let wrong_case = server.token.to_uppercase();
    assert_ne!(wrong_case, server.token);
    let variants: Vec<Option<String>> = vec![
        None,
        Some("Bearer wrong-token".into()),
        Some(format!("Basic {}", server.token)),
        Some("Basic xxx".into()),
        Some(format!("Bearer {wrong_case}")),
        Some(format!("Bearer {}", server.token.to_lowercase())),
        Some(format!("Bearer {}x", server.token)),
        Some(format!(
            "Bearer {}",
            &server.token[..server.token.len() - 1]
        )),
        Some(server.token.clone()),
        Some("Bearer".into()),
        Some("Bearer ".into()),
        Some(format!("Token {}", server.token)),
        // Shapes of the other credentials, forged.
        Some("Bearer tny_admin_0000000000000000".into()),
        Some("Bearer tny_key_abc.def".into()),
        Some("Bearer tny_".into()),
        Some("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln".into()),
        Some("Bearer a.b.c".into()),
        Some(format!("Bearer {}", "x".repeat(5000))),
    ];
    for auth in &variants {
        let with_auth = |rb: reqwest::RequestBuilder| match auth {
            Some(value) => rb.header(AUTHORIZATION, value),
            None => rb,
        };
        let requests = [
            with_auth(server.client.post(server.url("/v1/tenants")))
                .json(&json!({ "slug": "acme", "name": "Acme" })),
            with_auth(server.client.get(server.url("/v1/tenants"))),
            with_auth(server.client.get(server.url("/v1/tenants/acme"))),
            with_auth(server.client.delete(server.url("/v1/tenants/acme"))),
        ];
        for request in requests {
            let resp = request.send().await.unwrap();
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .map(|v| v.to_str().unwrap().to_owned());
            assert!(
                challenge
                    .as_deref()
                    .is_some_and(|c| c.starts_with("Bearer")),
                "{auth:?}: www-authenticate is {challenge:?}"
            );
            server
                .problem(resp, StatusCode::UNAUTHORIZED, "unauthorized")
                .await;
        }
    }
    server.assert_no_tenants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_delete_leaves_the_tenant() {
    let server = TestServer::start().await;
    let created = server.create_ok("acme", None).await;
    let resp = server
        .client
        .delete(server.url("/v1/tenants/acme"))
        .header(AUTHORIZATION, "Bearer nope")
        .send()
        .await
        .unwrap();
    server
        .problem(resp, StatusCode::UNAUTHORIZED, "unauthorized")
        .await;
    let shown: Value = server.get("/v1/tenants/acme").await.json().await.unwrap();
    assert_eq!(shown["id"], created["id"]);
    assert!(tenant_file(&server, created["id"].as_str().unwrap()).is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_checked_before_the_body() {
    let server = TestServer::start().await;
    let resp = server
        .client
        .post(server.url("/v1/tenants"))
        .header(CONTENT_TYPE, "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    server
        .problem(resp, StatusCode::UNAUTHORIZED, "unauthorized")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_scheme_is_case_insensitive() {
    let server = TestServer::start().await;
    let resp = server
        .client
        .get(server.url("/v1/tenants"))
        .header(AUTHORIZATION, format!("bearer {}", server.token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

// ---------------------------------------------------------------- routing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_are_not_found_problems() {
    let server = TestServer::start().await;
    for path in [
        "/",
        "/nope",
        "/v1",
        "/v1/tenant-list",
        "/v1/tenants/acme/extra",
    ] {
        let resp = server.get(path).await;
        server
            .problem(resp, StatusCode::NOT_FOUND, "not_found")
            .await;
    }
    // Without a token too: an unknown route says nothing about auth.
    let resp = server.client.get(server.url("/nope")).send().await.unwrap();
    server
        .problem(resp, StatusCode::NOT_FOUND, "not_found")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_are_not_allowed() {
    let server = TestServer::start().await;
    let put = server
        .client
        .put(server.url("/v1/tenants"))
        .header(AUTHORIZATION, server.bearer())
        .json(&json!({ "slug": "acme" }))
        .send()
        .await
        .unwrap();
    let allow = put
        .headers()
        .get(reqwest::header::ALLOW)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        allow.contains("GET") && allow.contains("POST"),
        "405 lists the allowed methods: {allow:?}"
    );
    server
        .problem(put, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
        .await;
    let delete = server.delete("/v1/tenants").await;
    server
        .problem(delete, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
        .await;
    let post = server.post_json("/v1/tenants/acme", &json!({})).await;
    server
        .problem(post, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
        .await;
    let post = server.post_json("/healthz", &json!({})).await;
    server
        .problem(post, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
        .await;
    server.assert_no_tenants().await;
}

// ---------------------------------------------------------------- concurrency

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_slug_make_one_tenant() {
    let server = TestServer::start().await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let client = server.client.clone();
        let url = server.url("/v1/tenants");
        let auth = server.bearer();
        tasks.spawn(async move {
            client
                .post(url)
                .header(AUTHORIZATION, auth)
                .json(&json!({ "slug": "acme", "name": format!("Acme {i}") }))
                .send()
                .await
                .unwrap()
        });
    }
    let mut created = Vec::new();
    let mut conflicts = 0;
    while let Some(resp) = tasks.join_next().await {
        let resp = resp.unwrap();
        match resp.status() {
            StatusCode::CREATED => created.push(resp.json::<Value>().await.unwrap()),
            StatusCode::CONFLICT => {
                server
                    .problem(resp, StatusCode::CONFLICT, "tenant_exists")
                    .await;
                conflicts += 1;
            }
            other => panic!(
                "unexpected status {other}: {}",
                resp.text().await.unwrap_or_default()
            ),
        }
    }
    assert_eq!(created.len(), 1, "exactly one create wins");
    assert_eq!(conflicts, 19);
    let listed = server.list().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], created[0]["id"]);
    assert_eq!(
        db_files(&server.data_dir().join("tenants")),
        vec![tenant_file(&server, created[0]["id"].as_str().unwrap())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_different_slugs_all_succeed() {
    let server = TestServer::start().await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let client = server.client.clone();
        let url = server.url("/v1/tenants");
        let auth = server.bearer();
        tasks.spawn(async move {
            let resp = client
                .post(url)
                .header(AUTHORIZATION, auth)
                .json(&json!({ "slug": format!("tenant-{i:02}") }))
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let text = resp.text().await.unwrap();
            (i, status, text)
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (i, status, text) = done.unwrap();
        assert_eq!(status, StatusCode::CREATED, "tenant-{i:02}: {text}");
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_active_tenant(&body, &format!("tenant-{i:02}"), &format!("tenant-{i:02}"));
    }
    let listed = server.list().await;
    assert_eq!(listed.len(), 20);
    let slugs: Vec<String> = listed
        .iter()
        .map(|t| t["slug"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (0..20).map(|i| format!("tenant-{i:02}")).collect();
    assert_eq!(slugs, expected);
    assert_eq!(db_files(&server.data_dir().join("tenants")).len(), 20);
}
