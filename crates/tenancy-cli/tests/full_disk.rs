//! A full disk under the SQLite tenants, through the real binary and server.
//!
//! Each test mounts a small tmpfs at `<data_dir>/tenants` (the catalog and the templates
//! stay on the real disk), fills it, and checks that the disk running out gives a clear
//! error (`storage_full`, 507 over HTTP) and leaves nothing corrupt or half-written: the
//! failed provisioning leaves no `.tmp` and a `failed` tenant, a refused write or
//! migration leaves the tenant's file whole with its earlier data, and once the tmpfs is
//! grown (remount) the same operations succeed.
//!
//! Mounting needs root. Where `mount` fails the tests skip with a notice, or fail under
//! `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tempfile::TempDir;

const ADMIN_TOKEN: &str = "full-disk-admin-token-0123456789";

const GUILD_0001: &str = include_str!("../../tenancy/guild-migrations/0001_roster.sql");
const GUILD_0002: &str = include_str!("../../tenancy/guild-migrations/0002_auctions.sql");

/// A migration that needs far more room than is left: a column filled with 600 kB of text
/// in every row of `members`.
const MIGRATION_0003: &str = "ALTER TABLE members ADD COLUMN bio TEXT;\n\
                              UPDATE members SET bio = hex(zeroblob(300000));\n";

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// A tmpfs mounted at a folder; unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it: `1m`, `640k`) at `dir`.
    /// `None` (skip, with a notice) where mounting is not allowed, unless `CI=true`.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs {
                dir: dir.to_path_buf(),
            }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
                    Err(e) => e.to_string(),
                };
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("cannot mount a tmpfs at {} (CI=true): {why}", dir.display());
                }
                eprintln!(
                    "skipped: cannot mount a tmpfs at {} (the full-disk tests need root): {why}",
                    dir.display()
                );
                None
            }
        }
    }

    /// Changes the size of the mounted tmpfs (it cannot shrink below what it holds).
    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "remount {} to {size}: {}",
            self.dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Bytes in use on the tmpfs.
    fn used(&self) -> u64 {
        let out = Command::new("stat")
            .args(["-f", "-c", "%b %f %S"])
            .arg(&self.dir)
            .output()
            .expect("run stat");
        let text = String::from_utf8_lossy(&out.stdout);
        let n: Vec<u64> = text
            .split_whitespace()
            .map(|v| v.parse().expect("stat -f numbers"))
            .collect();
        let [blocks, free, size] = n[..] else {
            panic!("stat -f gave {text:?}")
        };
        (blocks - free) * size
    }

    /// Shrinks the tmpfs to what it holds now plus `free` bytes.
    fn leave_free(&self, free: u64) {
        let size = (self.used() + free).div_ceil(4096) * 4096;
        self.resize(&size.to_string());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still holds a file there: detach it rather than leak the mount.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// A data folder on the real disk whose `tenants/` is a small tmpfs.
struct Fleet {
    /// Declared first: unmounted before the folder is removed.
    tmpfs: Tmpfs,
    dir: TempDir,
    migrations: Option<PathBuf>,
}

impl Fleet {
    /// `None`: the tmpfs cannot be mounted (skip).
    fn new(size: &str, own_migrations: bool) -> Option<Fleet> {
        let dir = TempDir::new().expect("temp dir");
        let migrations = own_migrations.then(|| {
            let m = dir.path().join("migrations");
            std::fs::create_dir_all(&m).unwrap();
            std::fs::write(m.join("0001_roster.sql"), GUILD_0001).unwrap();
            std::fs::write(m.join("0002_auctions.sql"), GUILD_0002).unwrap();
            m
        });
        let tmpfs = Tmpfs::mount(&dir.path().join("data").join("tenants"), size)?;
        Some(Fleet {
            tmpfs,
            dir,
            migrations,
        })
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn db_path(&self, id: &str) -> PathBuf {
        self.tmpfs.dir.join(format!("{id}.db"))
    }

    /// `tenancy --data-dir … args` with no `TENANCY_*` of the test's environment.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenancy"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TENANCY_") {
                cmd.env_remove(key);
            }
        }
        cmd.current_dir(self.dir.path())
            .stdin(Stdio::null())
            .arg("--data-dir")
            .arg(self.data())
            .args(args)
            .env("TENANCY_ADMIN_TOKEN", ADMIN_TOKEN);
        if let Some(m) = &self.migrations {
            cmd.env("TENANCY_MIGRATIONS", m);
        }
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run tenancy")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "expected success: {}",
            describe(args, &o)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: bad JSON ({e}): {out}"))
    }

    fn tenant(&self, slug: &str) -> Value {
        self.json(&["tenant", "show", slug, "--json"])
    }

    /// Files in the tmpfs whose name says they are a temporary build.
    fn tmp_files(&self) -> Vec<String> {
        std::fs::read_dir(&self.tmpfs.dir)
            .expect("list tenants")
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp"))
            .collect()
    }

    /// Runs `tenancy serve` on a free port until dropped.
    fn serve(&self) -> Serve {
        let mut child = self
            .command(&["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tenancy serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        // Built first, so that the child is killed if it never listens.
        let mut serve = Serve {
            child,
            base: String::new(),
            client: reqwest::Client::new(),
        };
        serve.base = loop {
            let line = lines
                .next()
                .expect("tenancy serve ended before it listened")
                .expect("read stdout");
            if let Some(rest) = line.strip_prefix("tenancy serving on ") {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || lines.for_each(drop));
        serve
    }
}

fn describe(args: &[&str], o: &Output) -> String {
    format!(
        "tenancy {args:?}: {}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A `tenancy serve` child, killed when dropped.
struct Serve {
    child: Child,
    base: String,
    client: reqwest::Client,
}

impl Serve {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens a copy, on the real disk, of a tenant's files as they are now (the database and
/// its WAL; SQLite rebuilds the index) and checks it: on a full disk the original cannot
/// even be opened by a new connection, which needs room for its `-shm` file.
fn checked_copy(db: &Path, scratch: &Path) -> rusqlite::Connection {
    let name = db.file_name().unwrap().to_string_lossy().into_owned();
    let dir = scratch.join("copies");
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join(&name);
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("{name}{suffix}")));
    }
    std::fs::copy(db, &copy).unwrap_or_else(|e| panic!("copy {}: {e}", db.display()));
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    if wal.exists() {
        std::fs::copy(&wal, dir.join(format!("{name}-wal"))).unwrap();
    }
    let conn = rusqlite::Connection::open(&copy).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("integrity_check of {}: {e}", db.display()));
    assert_eq!(check, "ok", "integrity_check of {}", db.display());
    conn
}

fn ledger_version(conn: &rusqlite::Connection) -> i64 {
    conn.query_row("SELECT MAX(version) FROM _tenancy_migrations", [], |r| {
        r.get(0)
    })
    .unwrap()
}

/// The name of the `i`-th raid: 32 kB, so that a few dozen fill 1 MiB.
fn raid_name(i: usize) -> String {
    format!("raid {i:03} {}", "x".repeat(32_000))
}

/// Every stored raid reads back whole, and the listing holds exactly those.
async fn read_back(server: &Serve, stored: &[String]) {
    for (i, id) in stored.iter().enumerate() {
        let (status, row) = server
            .call(
                reqwest::Method::GET,
                &format!("/t/big/v1/data/raids/{id}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "row {i}: {row}");
        assert_eq!(row["name"], raid_name(i), "row {i}");
    }
    let (status, page) = server
        .call(
            reqwest::Method::GET,
            "/t/big/v1/data/raids?select=id&limit=1000",
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        page["data"].as_array().unwrap().len(),
        stored.len(),
        "{page}"
    );
}

fn assert_says_disk_full(text: &str) {
    assert!(
        text.contains("the disk is full"),
        "no mention of the full disk in: {text}"
    );
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// Tenants are created until the disk is full: the one that does not fit fails with a
/// clear error and is `failed`, nothing half-copied remains, the others are whole; over
/// HTTP the next creation answers 507 `storage_full`; grown, a retry provisions both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_on_a_full_disk_fails_cleanly() {
    let Some(fleet) = Fleet::new("1m", false) else {
        return;
    };
    let mut created = Vec::new();
    let (failed_slug, failure) = loop {
        // A tenant file is ~84 kB: 1 MiB holds about a dozen.
        assert!(created.len() < 40, "1 MiB never filled up: {created:?}");
        let slug = format!("t{:02}", created.len());
        let o = fleet.run(&["tenant", "create", &slug, "--json"]);
        if !o.status.success() {
            break (slug, o);
        }
        let t: Value = serde_json::from_slice(&o.stdout).expect("tenant JSON");
        assert_eq!(t["status"], "active", "{t}");
        created.push((slug, t["id"].as_str().unwrap().to_owned()));
    };
    assert!(!created.is_empty(), "not even one tenant fit");
    // Checked before any other command: the next process's recovery would remove it.
    assert_eq!(
        fleet.tmp_files(),
        Vec::<String>::new(),
        "half-written build left"
    );
    // With --json the error is an object on stdout, with the HTTP API's code.
    let error: Value = serde_json::from_slice(&failure.stdout).expect("an error object");
    assert_eq!(error["code"], "storage_full", "{error}");
    let detail = error["detail"].as_str().unwrap_or_default();
    assert_says_disk_full(detail);
    assert!(
        detail.contains(&format!("tenancy tenant retry {failed_slug}")),
        "{detail}"
    );

    let t = fleet.tenant(&failed_slug);
    assert_eq!(t["status"], "failed", "{t}");
    assert_says_disk_full(t["error"].as_str().unwrap_or_default());
    let failed_id = t["id"].as_str().unwrap().to_owned();
    assert!(!fleet.db_path(&failed_id).exists());

    // Over HTTP: the same disk, the same cause, one code.
    let server = fleet.serve();
    let (status, body) = server
        .call(
            reqwest::Method::POST,
            "/v1/tenants",
            Some(json!({ "slug": "via-http" })),
        )
        .await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE.as_u16(), "{body}");
    assert_eq!(body["code"], "storage_full", "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("disk is full"), "{detail}");
    assert!(detail.contains("marked failed"), "{detail}");
    assert!(
        !detail.contains(&*fleet.data().to_string_lossy()),
        "path leaked: {detail}"
    );
    let (_, shown) = server
        .call(reqwest::Method::GET, "/v1/tenants/via-http", None)
        .await;
    assert_eq!(shown["status"], "failed", "{shown}");
    assert_eq!(
        fleet.tmp_files(),
        Vec::<String>::new(),
        "half-written build left"
    );
    drop(server);

    for (slug, id) in &created {
        let conn = checked_copy(&fleet.db_path(id), fleet.dir.path());
        assert_eq!(ledger_version(&conn), 2, "{slug}");
    }

    fleet.tmpfs.resize("4m");
    for slug in [failed_slug.as_str(), "via-http"] {
        let t = fleet.json(&["tenant", "retry", slug, "--json"]);
        assert_eq!(t["status"], "active", "{t}");
        let conn = checked_copy(&fleet.db_path(t["id"].as_str().unwrap()), fleet.dir.path());
        assert_eq!(ledger_version(&conn), 2, "{slug}");
    }
}

/// Large rows are inserted through the data API until the disk is full: the insert that
/// does not fit answers 507 `storage_full`, every earlier row reads back whole, the file
/// passes `integrity_check`; grown, the same insert succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_writes_on_a_full_disk_are_refused_whole() {
    let Some(fleet) = Fleet::new("1m", false) else {
        return;
    };
    let t = fleet.json(&["tenant", "create", "big", "--json"]);
    let db = fleet.db_path(t["id"].as_str().unwrap());
    let server = fleet.serve();

    let mut stored = Vec::new();
    let refused = loop {
        assert!(stored.len() < 100, "1 MiB never filled up");
        let (status, body) = server
            .call(
                reqwest::Method::POST,
                "/t/big/v1/data/raids",
                Some(json!({ "name": raid_name(stored.len()) })),
            )
            .await;
        if status != 201 {
            break (status, body);
        }
        stored.push(body["data"][0]["id"].as_str().unwrap().to_owned());
    };
    assert!(!stored.is_empty(), "not even one row fit");
    let (status, body) = refused;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE.as_u16(), "{body}");
    assert_eq!(body["code"], "storage_full", "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("disk is full"),
        "{body}"
    );

    // Refused again, the same way: the failed write left no transaction open.
    let (status, body) = server
        .call(
            reqwest::Method::POST,
            "/t/big/v1/data/raids",
            Some(json!({ "name": raid_name(stored.len()) })),
        )
        .await;
    assert_eq!(status, 507, "{body}");

    read_back(&server, &stored).await;
    let conn = checked_copy(&db, fleet.dir.path());
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM raids", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows as usize, stored.len());
    drop(conn);

    fleet.tmpfs.resize("4m");
    let (status, body) = server
        .call(
            reqwest::Method::POST,
            "/t/big/v1/data/raids",
            Some(json!({ "name": raid_name(stored.len()) })),
        )
        .await;
    assert_eq!(status, 201, "after growing the disk: {body}");
    stored.push(body["data"][0]["id"].as_str().unwrap().to_owned());
    read_back(&server, &stored).await;
    drop(server);
    let conn = checked_copy(&db, fleet.dir.path());
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM raids", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows as usize, stored.len());
}

/// A migration that needs more room than is left fails for every tenant it touches: each
/// is listed by `tenancy status --failed`, saying the disk is full, and stays whole at its
/// old version with its data; grown, a rerun brings every tenant to the latest version.
#[test]
fn a_migration_on_a_full_disk_leaves_tenants_at_their_old_version() {
    let Some(fleet) = Fleet::new("2m", true) else {
        return;
    };
    let mut tenants = Vec::new();
    for slug in ["m0", "m1", "m2"] {
        let t = fleet.json(&["tenant", "create", slug, "--json"]);
        let id = t["id"].as_str().unwrap().to_owned();
        let conn = rusqlite::Connection::open(fleet.db_path(&id)).unwrap();
        conn.execute(
            "INSERT INTO members (id, name, dkp) VALUES ('m-1', ?1, 42)",
            [format!("first of {slug}")],
        )
        .unwrap();
        drop(conn);
        tenants.push((slug, id));
    }
    // Room for each tenant's WAL index and a little more, far from the 600 kB the
    // migration writes per tenant.
    fleet.tmpfs.leave_free(192 * 1024);
    std::fs::write(
        fleet.migrations.as_ref().unwrap().join("0003_bio.sql"),
        MIGRATION_0003,
    )
    .unwrap();

    // No canary: every tenant meets the full disk.
    let o = fleet.run(&["migrate", "--canary", "0"]);
    assert!(!o.status.success(), "{}", describe(&["migrate"], &o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    for (slug, _) in &tenants {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{slug} ")))
            .unwrap_or_else(|| panic!("{slug} not listed as failed:\n{stdout}"));
        assert_says_disk_full(line);
    }

    // `status --failed` exits 3 while failures stand.
    let o = fleet.run(&["status", "--failed", "--json"]);
    assert_eq!(o.status.code(), Some(3), "{}", describe(&["status"], &o));
    let failed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let failed = failed.as_array().expect("a list");
    assert_eq!(failed.len(), tenants.len(), "{failed:?}");
    for (slug, id) in &tenants {
        let f = failed
            .iter()
            .find(|f| f["slug"] == *slug)
            .unwrap_or_else(|| panic!("{slug} missing from status --failed: {failed:?}"));
        assert_says_disk_full(f["error"].as_str().unwrap_or_default());
        assert_eq!(fleet.tenant(slug)["schema_version"], 2);
        let conn = checked_copy(&fleet.db_path(id), fleet.dir.path());
        assert_eq!(ledger_version(&conn), 2, "{slug}");
        let name: String = conn
            .query_row("SELECT name FROM members WHERE id = 'm-1'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(name, format!("first of {slug}"));
        let has_bio: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('members') WHERE name = 'bio'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(has_bio, 0, "{slug}: half a migration applied");
    }
    assert_eq!(fleet.tmp_files(), Vec::<String>::new());

    fleet.tmpfs.resize("8m");
    fleet.ok(&["migrate"]);
    let failed = fleet.json(&["status", "--failed", "--json"]);
    assert_eq!(failed, json!([]));
    for (slug, id) in &tenants {
        assert_eq!(fleet.tenant(slug)["schema_version"], 3);
        let conn = checked_copy(&fleet.db_path(id), fleet.dir.path());
        assert_eq!(ledger_version(&conn), 3, "{slug}");
        let bio: i64 = conn
            .query_row(
                "SELECT length(bio) FROM members WHERE id = 'm-1'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(bio, 600_000, "{slug}");
    }
}
