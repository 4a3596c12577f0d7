//! The README quickstart, unchanged, after switching the catalog and the default store to
//! PostgreSQL by configuration alone (environment variables): the real `tenancy serve`
//! and the real CLI at the same time on one PostgreSQL catalog, in each PostgreSQL mode.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "../../tenancy/tests/common/pg.rs"]
mod pg;

const ADMIN_TOKEN: &str = "change-me-to-a-long-secret";

/// The deployment's environment: everything on PostgreSQL, no config file.
fn postgres_env(cmd: &mut Command, db: &pg::TestDb, mode: &str, key: &str) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TENANCY_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("TENANCY_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("TENANCY_CATALOG_URL", &db.url)
        .env("TENANCY_STORE_URL", &db.url)
        .env("TENANCY_STORE_DATA_ROLE", format!("{}_data", db.prefix))
        .env("TENANCY_STORE_DATABASE_PREFIX", &db.prefix)
        .env("TENANCY_DEFAULT_STORE", "pg")
        .env("TENANCY_DEFAULT_MODE", mode)
        .env("TENANCY_SECRET_KEY", key);
}

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

async fn quickstart(mode: &str) {
    let Some(db) = pg::TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = "ab".repeat(32);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let bin = env!("CARGO_BIN_EXE_tenancy");
    let cli = |args: &[&str], cwd: &Path| {
        let mut cmd = Command::new(bin);
        postgres_env(&mut cmd, &db, mode, &key);
        cmd.current_dir(cwd).args(args).stdin(Stdio::null());
        cmd
    };

    let mut serve = cli(
        &["serve", "--listen", &format!("127.0.0.1:{port}")],
        dir.path(),
    );
    let _served = Served(
        serve
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
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
    let admin = |req: reqwest::RequestBuilder| req.bearer_auth(ADMIN_TOKEN);

    // One tenant over HTTP...
    let resp = admin(http.post(format!("{base}/v1/tenants")))
        .json(&json!({ "slug": "ironforge", "name": "Ironforge Raiders" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let ironforge: Value = resp.json().await.unwrap();
    assert_eq!(ironforge["store"], "pg", "{ironforge}");
    assert_eq!(ironforge["mode"], mode, "{ironforge}");
    assert_eq!(ironforge["schema_version"], 2);

    // ...one with the CLI, while the server runs, on the same PostgreSQL catalog.
    let out = cli(
        &["tenant", "create", "stormwind", "--name", "Stormwind Guard"],
        dir.path(),
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = admin(http.get(format!("{base}/v1/tenants")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let slugs: Vec<&str> = listed["data"]
        .as_array()
        .or(listed.as_array())
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["ironforge", "stormwind"], "{listed}");
    let out = cli(&["tenant", "list"], dir.path()).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("ironforge") && table.contains("stormwind"),
        "{table}"
    );
    assert!(table.contains(mode), "{table}");

    // The guild's data over REST, with an API key of each tenant.
    let mut keys = Vec::new();
    for slug in ["ironforge", "stormwind"] {
        let k: Value = admin(http.post(format!("{base}/v1/tenants/{slug}/api-keys")))
            .json(&json!({ "role": "member" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        keys.push(k["key"].as_str().unwrap().to_owned());
    }
    let add_members = |key: &str, body: &Value| {
        let request = http
            .post(format!("{base}/v1/data/members"))
            .bearer_auth(key)
            .json(body);
        async move { request.send().await.unwrap() }
    };
    let resp = add_members(
        &keys[0],
        &json!([{ "name": "Thrall", "class": "shaman", "dkp": 120 },
                      { "name": "Jaina", "class": "mage", "dkp": 80 }]),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let page: Value = http
        .get(format!(
            "{base}/v1/data/members?order=dkp.desc&select=name,dkp"
        ))
        .bearer_auth(&keys[0])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        page["data"],
        json!([{ "name": "Thrall", "dkp": 120 }, { "name": "Jaina", "dkp": 80 }])
    );
    // The other tenant sees none of it.
    let other: Value = http
        .get(format!("{base}/v1/data/members"))
        .bearer_auth(&keys[1])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(other["data"], json!([]), "{other}");
    // Constraints answer 409 and name the constraint.
    let resp = add_members(&keys[0], &json!({ "name": "Thrall" })).await;
    assert_eq!(resp.status(), 409);
    let problem: Value = resp.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("members_name_key"),
        "{problem}"
    );
    // The same name is free in the other tenant (uniqueness is per tenant in every mode).
    let resp = add_members(&keys[1], &json!({ "name": "Thrall" })).await;
    assert_eq!(resp.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_on_postgres_database_mode() {
    quickstart("database").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_on_postgres_schema_mode() {
    quickstart("schema").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_on_postgres_shared_mode() {
    quickstart("shared").await;
}
