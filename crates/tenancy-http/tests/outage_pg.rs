//! The PostgreSQL server that holds the catalog stops, for real: a private server started
//! for this test (its own data folder and port, so the shared test server is untouched)
//! holds the catalog and a PostgreSQL store, beside the embedded SQLite store.
//!
//! While it is down: requests whose key and tenant are already cached, on the SQLite store,
//! keep answering; anything that needs the catalog answers `503 catalog_unavailable` with
//! `Retry-After`; a tenant on the stopped store answers `503 store_unavailable`; `/readyz`
//! reports not ready and names what is unreachable; `/healthz` answers. Once the server is
//! back, everything recovers without a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, ADMIN_TOKEN};
use reqwest::Method;
use serde_json::{json, Value};
use tenancy::{EngineConfig, StoreSpec};
use tenancy_http::HttpConfig;

/// A PostgreSQL server of this test's own, run with the installed binaries.
struct PrivatePg {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// Holds the data folder and the socket folder.
    _dir: tempfile::TempDir,
}

/// The installed PostgreSQL binaries (newest version first), if any.
fn pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL binary, as the `postgres` user when this process is root (the server
/// refuses to run as root).
fn run(bin: &Path, program: &str, args: &[&str]) -> std::process::Output {
    let path = bin.join(program);
    let output = if is_root() {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(&path)
            .args(args)
            .output()
    } else {
        Command::new(&path).args(args).output()
    };
    output.unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PrivatePg {
    /// Initialises and starts a server; `None` (skip) where PostgreSQL is not installed,
    /// except under `CI=true`.
    fn start() -> Option<PrivatePg> {
        let Some(bin) = pg_bin() else {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "PostgreSQL's binaries are not installed under /usr/lib/postgresql"
            );
            eprintln!("NOTICE: skipping: PostgreSQL's binaries are not installed");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let data = dir.path().join("data");
        let out = run(
            &bin,
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = PrivatePg {
            bin,
            data,
            port: free_port(),
            _dir: dir,
        };
        pg.up();
        Some(pg)
    }

    fn up(&self) {
        let sockets = self.data.parent().unwrap().to_str().unwrap().to_owned();
        let options = format!(
            "-p {} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port
        );
        let out = run(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "-l",
                self.data.join("log").to_str().unwrap(),
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn down(&self) {
        let out = run(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = run(
            &self.bin,
            "pg_ctl",
            &["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"],
        );
    }
}

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

async fn problem(s: &Server, path: &str, token: Option<&str>) -> (u16, Option<String>, Value) {
    let resp = s.call(Method::GET, path, token, &[], None).await;
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = resp.text().await.unwrap();
    for leak in ["127.0.0.1", "postgres://", "os error", "tcp"] {
        assert!(!text.contains(leak), "{leak} leaked: {text}");
    }
    (
        status,
        retry,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_catalog_server_answers_503_serves_what_is_cached_and_recovers() {
    let Some(pg) = PrivatePg::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new(dir.path());
    config.catalog_url = Some(pg.url());
    let mut store = StoreSpec::new("pg", pg.url());
    store.limits.connect_timeout = Duration::from_millis(500);
    store.limits.query_timeout = Duration::from_secs(2);
    config.stores = vec![store];
    let s = Server::start_with_engine_config(dir, config, HttpConfig::default()).await;

    s.create_tenant("alpha").await; // on the embedded SQLite store
    let (status, body) = s
        .json(
            Method::POST,
            "/v1/tenants",
            Some(ADMIN_TOKEN),
            Some(json!({ "slug": "beta", "store": "pg", "mode": "schema" })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (alpha, beta) = (api_key(&s, "alpha").await, api_key(&s, "beta").await);
    for key in [&alpha, &beta] {
        let (status, body) = s
            .json(
                Method::POST,
                "/v1/data/members",
                Some(key),
                Some(json!({ "name": "Thrall" })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = s.json(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, 200, "{body}");
    // A key minted now and never used: nothing about it is cached.
    let unseen = api_key(&s, "alpha").await;

    pg.down();

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, body) = problem(&s, "/readyz", None).await;
        if status == 503 {
            assert_eq!(body["code"], "not_ready", "{body}");
            let detail = body["detail"].as_str().unwrap();
            assert!(detail.contains("catalog"), "{detail}");
            assert!(detail.contains("pg"), "names the store: {detail}");
            assert!(
                !detail.contains("default"),
                "the SQLite store is up: {detail}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "/readyz stayed ready: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = s.json(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, 200, "{body}");

    for _ in 0..5 {
        // Cached key, cached tenant, store up: served.
        let (status, body) = s
            .json(
                Method::GET,
                "/v1/data/members?select=name",
                Some(&alpha),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"], json!([{ "name": "Thrall" }]));

        // A key never seen: the catalog is needed.
        let (status, retry, body) = problem(&s, "/v1/data/members", Some(&unseen)).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["code"], "catalog_unavailable", "{body}");
        assert!(retry.is_some(), "Retry-After");

        // A tenant on the stopped server.
        let (status, retry, body) = problem(&s, "/v1/data/members", Some(&beta)).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["code"], "store_unavailable", "{body}");
        assert!(retry.is_some(), "Retry-After");

        // The control plane needs the catalog.
        let (status, retry, body) = problem(&s, "/v1/tenants", Some(ADMIN_TOKEN)).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["code"], "catalog_unavailable", "{body}");
        assert!(retry.is_some(), "Retry-After");
    }

    pg.up();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = s.json(Method::GET, "/readyz", None, None).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready again: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for key in [&alpha, &beta, &unseen] {
        let (status, body) = s
            .json(Method::GET, "/v1/data/members?select=name", Some(key), None)
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"], json!([{ "name": "Thrall" }]));
    }
    drop(s);
}
