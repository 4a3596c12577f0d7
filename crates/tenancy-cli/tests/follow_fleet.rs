//! A running `tenancy serve` follows a fleet migrated by another process: with the new
//! migration files in its folder it serves the new version without a restart; without
//! them it says so in `/readyz`, in its log and in the problem code of what it refuses,
//! and never builds a tenant at its older version.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "follow-fleet-admin-token-0123456789";
const GUILD_0001: &str = include_str!("../../tenancy/guild-migrations/0001_roster.sql");
const GUILD_0002: &str = include_str!("../../tenancy/guild-migrations/0002_auctions.sql");
const NOTES_0003: &str = "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);\n\
                          INSERT INTO notes (body) VALUES ('hello');\n";
/// How long the server may take to notice (it checks every 5 s and on every `/readyz`).
const NOTICE: Duration = Duration::from_secs(20);

/// `tenancy --data-dir DATA` with `TENANCY_MIGRATIONS=migrations` and no other
/// `TENANCY_*` variable of the test's environment.
fn tenancy(root: &Path, migrations: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenancy"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TENANCY_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(root)
        .stdin(Stdio::null())
        .arg("--data-dir")
        .arg(root.join("data"))
        .args(args)
        .env("TENANCY_MIGRATIONS", root.join(migrations))
        .env("TENANCY_ADMIN_TOKEN", ADMIN_TOKEN);
    cmd
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run tenancy");
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn write_migrations(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, sql) in files {
        std::fs::write(dir.join(name), sql).unwrap();
    }
}

/// A `tenancy serve` child (killed when dropped) and the log lines it wrote.
struct Serve {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn start(root: &Path, migrations: &str) -> Serve {
        let mut child = tenancy(root, migrations, &["serve", "--listen", "127.0.0.1:0"])
            .env("TENANCY_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tenancy serve");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("tenancy serve ended before it listened")
                .unwrap();
            if let Some(rest) = line.strip_prefix("tenancy serving on http://") {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        Serve {
            child,
            base: format!("http://{addr}"),
            log,
        }
    }

    fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    async fn readyz(&self) -> Value {
        let resp = reqwest::get(format!("{}/readyz", self.base)).await.unwrap();
        assert_eq!(resp.status(), 200, "a server behind the fleet stays ready");
        resp.json().await.unwrap()
    }

    /// `/readyz` once its `migrations` object has `status`, or the last one seen.
    async fn readyz_until(&self, status: &str) -> Value {
        let deadline = Instant::now() + NOTICE;
        loop {
            let ready = self.readyz().await;
            if ready["migrations"]["status"] == status || Instant::now() > deadline {
                return ready;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn create_tenant(&self, slug: &str) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}/v1/tenants", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "slug": slug }))
            .send()
            .await
            .unwrap()
    }

    async fn tenant(&self, slug: &str) -> Value {
        let resp = reqwest::Client::new()
            .get(format!("{}/v1/tenants/{slug}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    async fn notes_of(&self, slug: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(format!("{}/v1/data/notes", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .header("X-Tenant", slug)
            .send()
            .await
            .unwrap()
    }
}

fn schema_version(tenant: &Value) -> i64 {
    tenant["schema_version"]
        .as_i64()
        .unwrap_or_else(|| panic!("no schema_version in {tenant}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_server_follows_a_migration_run_by_another_process() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let v2 = [
        ("0001_roster.sql", GUILD_0001),
        ("0002_auctions.sql", GUILD_0002),
    ];
    write_migrations(&root.join("server"), &v2);
    write_migrations(&root.join("release"), &v2);
    write_migrations(&root.join("release"), &[("0003_notes.sql", NOTES_0003)]);
    run_ok(&mut tenancy(root, "server", &["tenant", "create", "acme"]));

    let server = Serve::start(root, "server");
    let ready = server.readyz().await;
    assert_eq!(
        ready["migrations"],
        json!({ "status": "current", "version": 2 })
    );

    // Another process, with the release's files, migrates the fleet to version 3.
    run_ok(&mut tenancy(root, "release", &["migrate"]));

    // This server's folder lacks 0003: it says so, keeps serving, and builds no tenant
    // at version 2.
    let ready = server.readyz_until("behind_fleet").await;
    assert_eq!(ready["migrations"]["status"], "behind_fleet", "{ready}");
    assert_eq!(ready["migrations"]["version"], 2, "{ready}");
    assert_eq!(ready["migrations"]["fleet_version"], 3, "{ready}");
    let refused = server.create_tenant("beta").await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "behind_fleet", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("deploy the new migration files"),
        "{problem}"
    );
    let acme = server.tenant("acme").await;
    assert_eq!(schema_version(&acme), 3, "{acme}");
    assert!(server.logged("behind the fleet"), "the log says so");
    let resp = server.notes_of("acme").await;
    assert_eq!(
        resp.status(),
        200,
        "a tenant at the fleet's version is still served"
    );

    // Files deployed ahead of their migration are not served until the fleet reaches them.
    write_migrations(
        &root.join("server"),
        &[
            ("0003_notes.sql", NOTES_0003),
            (
                "0004_later.sql",
                "CREATE TABLE later (id INTEGER PRIMARY KEY);\n",
            ),
        ],
    );
    // The new files arrive: the server follows without a restart, to version 3, not 4.
    let ready = server.readyz_until("current").await;
    assert_eq!(
        ready["migrations"],
        json!({ "status": "current", "version": 3 }),
        "{ready}"
    );
    assert!(server.logged("following the fleet"), "the log says so");
    let created = server.create_tenant("beta").await;
    assert_eq!(created.status(), 201, "{:?}", created.text().await);
    assert_eq!(schema_version(&server.tenant("beta").await), 3);
    let notes: Value = server.notes_of("beta").await.json().await.unwrap();
    assert_eq!(notes["data"][0]["body"], "hello", "{notes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_started_behind_the_fleet_serves_and_says_so() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let v2 = [
        ("0001_roster.sql", GUILD_0001),
        ("0002_auctions.sql", GUILD_0002),
    ];
    write_migrations(&root.join("old"), &v2);
    write_migrations(&root.join("release"), &v2);
    write_migrations(&root.join("release"), &[("0003_notes.sql", NOTES_0003)]);
    run_ok(&mut tenancy(root, "release", &["tenant", "create", "acme"]));

    // An instance of the previous release starts during a rolling upgrade.
    let server = Serve::start(root, "old");
    let ready = server.readyz().await;
    assert_eq!(ready["migrations"]["status"], "behind_fleet", "{ready}");
    assert_eq!(server.create_tenant("beta").await.status(), 503);
    assert_eq!(server.notes_of("acme").await.status(), 200);

    // A changed migration is another matter: refused at start.
    write_migrations(
        &root.join("changed"),
        &[
            ("0001_roster.sql", GUILD_0001),
            (
                "0002_auctions.sql",
                "CREATE TABLE other (id INTEGER PRIMARY KEY);\n",
            ),
            ("0003_notes.sql", NOTES_0003),
        ],
    );
    let out = tenancy(root, "changed", &["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to serve"), "{stderr}");
}
