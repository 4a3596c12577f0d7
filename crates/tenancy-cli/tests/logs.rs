//! The log of a real `tenancy serve` at `TENANCY_LOG=debug` in JSON: one line per request
//! carrying its request id and tenant, no colour codes in a file, and no secret of a whole
//! scenario (password, tokens, API key, admin token, a store URL's password) anywhere.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "../../tenancy/tests/common/pg.rs"]
mod pg;

const ADMIN_TOKEN: &str = "admin-secret-never-logged-0123";
const PASSWORD: &str = "password-never-logged-4567";
const STORE_PASSWORD: &str = "storepw-never-logged-89";

struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `postgres://user@host/db` with a password added (the server trusts local connections,
/// so it is accepted and ignored; what matters is that it never reaches the log).
fn with_password(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (user_host, path) = rest.split_once('/').unwrap();
    let (user, host) = user_host.split_once('@').unwrap_or(("postgres", user_host));
    let user = user.split(':').next().unwrap();
    format!("{scheme}://{user}:{STORE_PASSWORD}@{host}/{path}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_log_line_per_request_and_no_secret_in_the_log() {
    let Some(db) = pg::TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("server.log");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let store_url = with_password(&db.url);

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenancy"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TENANCY_") {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(dir.path())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("TENANCY_LOG", "debug")
        .env("TENANCY_LOG_FORMAT", "json")
        .env("TENANCY_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("TENANCY_DATA_DIR", dir.path().join("data"))
        .env("TENANCY_STORE_URL", &store_url)
        .env("TENANCY_STORE_DATA_ROLE", format!("{}_data", db.prefix))
        .env("TENANCY_STORE_DATABASE_PREFIX", &db.prefix)
        .env("TENANCY_DEFAULT_STORE", "pg")
        .env("TENANCY_DEFAULT_MODE", "schema")
        .env("TENANCY_SECRET_KEY", "cd".repeat(32))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap());
    let served = Served(cmd.spawn().unwrap());

    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "tenancy serve did not get ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let call = |method: reqwest::Method, path: &str, token: Option<&str>, body: Option<Value>| {
        let mut req = http.request(method, format!("{base}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        req
    };
    let send = |req: reqwest::RequestBuilder| async move {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().await.unwrap_or(Value::Null))
    };
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;

    let (status, body) = send(call(
        post.clone(),
        "/v1/auth/signup",
        None,
        Some(json!({ "email": "ann@example.com", "password": PASSWORD })),
    ))
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, login) = send(call(
        post.clone(),
        "/v1/auth/login",
        None,
        Some(json!({ "email": "ann@example.com", "password": PASSWORD })),
    ))
    .await;
    assert_eq!(status, 200, "{login}");
    let access = login["access_token"].as_str().unwrap().to_owned();
    let refresh = login["refresh_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (status, tenant) = send(call(
        post.clone(),
        "/v1/tenants",
        Some(&access),
        Some(json!({ "slug": "guild" })),
    ))
    .await;
    assert_eq!(status, 201, "{tenant}");
    let tenant_id = tenant["id"].as_str().unwrap().to_owned();
    let (status, key) = send(call(
        post.clone(),
        "/v1/tenants/guild/api-keys",
        Some(&access),
        Some(json!({ "role": "member" })),
    ))
    .await;
    assert_eq!(status, 201, "{key}");
    let api_key = key["key"].as_str().unwrap().to_owned();
    let (status, body) = send(call(
        post.clone(),
        "/v1/data/members",
        Some(&api_key),
        Some(json!({ "id": "m1", "name": "Thrall" })),
    ))
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = send(
        call(get.clone(), "/v1/data/members/m1", Some(&api_key), None)
            .header("x-request-id", "read-m1-0001"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = send(call(get.clone(), "/metrics", Some(ADMIN_TOKEN), None)).await;
    assert_eq!(status, 200);
    // A wrong password and a wrong key are logged as requests, not as what was sent.
    let (status, _) = send(call(
        post.clone(),
        "/v1/auth/login",
        None,
        Some(json!({ "email": "ann@example.com", "password": "wrong-password-xyz" })),
    ))
    .await;
    assert_eq!(status, 401);
    drop(served);

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!log.contains('\u{1b}'), "colour codes in a log file");
    for secret in [
        ADMIN_TOKEN,
        PASSWORD,
        "wrong-password-xyz",
        STORE_PASSWORD,
        store_url.as_str(),
        access.as_str(),
        api_key.as_str(),
    ]
    .into_iter()
    .chain((!refresh.is_empty()).then_some(refresh.as_str()))
    {
        assert!(
            !log.contains(secret),
            "a secret ({}…) is in the log",
            &secret[..8.min(secret.len())]
        );
    }

    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let requests: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "tenancy_http::request")
        .collect();
    let read = requests
        .iter()
        .find(|l| l["request_id"] == "read-m1-0001")
        .unwrap_or_else(|| panic!("no line for the read in:\n{log}"));
    assert_eq!(read["level"], "INFO");
    assert_eq!(read["method"], "GET");
    assert_eq!(read["route"], "/v1/data/{table}/{id}");
    assert_eq!(read["status"], 200);
    assert_eq!(read["tenant_id"], tenant_id.as_str());
    assert_eq!(read["principal"], "api_key");
    assert!(read["latency_ms"].as_f64().is_some());
    // Every request has its line, each with an id of its own.
    assert!(requests.len() >= 8, "{} request lines", requests.len());
    let mut ids: Vec<&str> = requests
        .iter()
        .map(|l| l["request_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), requests.len());
    let signup = requests
        .iter()
        .find(|l| l["route"] == "/v1/auth/signup")
        .unwrap();
    assert_eq!(signup["status"], 201);
    assert_eq!(signup["principal"], "anonymous");
}
