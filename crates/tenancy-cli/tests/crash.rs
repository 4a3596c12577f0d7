//! Crash and end-to-end tests of the `tenancy` binary.
//!
//! Every test drives the real binary as child processes on its own data folder. Crash tests
//! stop a process at a named pause point (`TENANCY_PAUSE_AT`), SIGKILL it there, and check
//! that the next process (which runs recovery when it opens the engine) leaves the catalog
//! and the tenant files consistent.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

#[path = "../../tenancy/tests/common/pg.rs"]
mod pg;

/// How long any one child process may take before the test gives up on it.
const TIMEOUT: Duration = Duration::from_secs(30);

const GUILD_0001: &str = include_str!("../../tenancy/guild-migrations/0001_roster.sql");
const GUILD_0002: &str = include_str!("../../tenancy/guild-migrations/0002_auctions.sql");

/// Migration 0003 of the crash tests: a new table with one row.
const MIGRATION_0003: &str = "CREATE TABLE x_notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);\n\
                              INSERT INTO x_notes (body) VALUES ('hello');\n";

/// The `tenancy` binary with every `TENANCY_*` variable of the test's environment removed,
/// run from `cwd` (so that no stray `./tenancy.toml` is read).
fn tenancy(cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenancy"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TENANCY_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(cwd).stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to completion (killed after [`TIMEOUT`]) and collects its output.
fn output_of(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tenancy");
    let drain = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for tenancy") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn describe(args: &[&str], o: &Output) -> String {
    format!(
        "tenancy {args:?}: {}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        stdout(o),
        stderr(o)
    )
}

/// A process stopped at a pause point. Killed (SIGKILL) when dropped, so a failing test
/// leaves no process behind.
struct Paused {
    child: Child,
    point: String,
}

impl Paused {
    /// SIGKILLs the process and reaps it.
    fn kill(mut self) -> ExitStatus {
        self.child.kill().expect("SIGKILL the paused process");
        self.child.wait().expect("reap the paused process")
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One data folder (and, optionally, its own migrations folder) in a temporary directory.
struct Fleet {
    dir: TempDir,
    migrations: Option<PathBuf>,
    /// Tenants go to this PostgreSQL database's server, in `mode`.
    postgres: Option<(pg::TestDb, &'static str)>,
}

impl Fleet {
    /// A fleet on the built-in guild schema.
    fn new() -> Fleet {
        Fleet {
            dir: TempDir::new().expect("temp dir"),
            migrations: None,
            postgres: None,
        }
    }

    /// A fleet whose tenants live on PostgreSQL in `mode`, with its own migrations folder;
    /// `None` (skip) where PostgreSQL is unreachable.
    fn on_postgres(mode: &'static str) -> Option<Fleet> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let db = runtime.block_on(pg::TestDb::create())?;
        let mut fleet = Fleet::with_migrations();
        fleet.postgres = Some((db, mode));
        Some(fleet)
    }

    /// A fleet with its own migrations folder holding the guild schema (versions 1 and 2),
    /// to which a test may add migrations.
    fn with_migrations() -> Fleet {
        let dir = TempDir::new().expect("temp dir");
        let migrations = dir.path().join("migrations");
        std::fs::create_dir_all(&migrations).unwrap();
        std::fs::write(migrations.join("0001_roster.sql"), GUILD_0001).unwrap();
        std::fs::write(migrations.join("0002_auctions.sql"), GUILD_0002).unwrap();
        Fleet {
            dir,
            migrations: Some(migrations),
            postgres: None,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn tenants_dir(&self) -> PathBuf {
        self.data().join("tenants")
    }

    fn db_path(&self, id: &str) -> PathBuf {
        self.tenants_dir().join(format!("{id}.db"))
    }

    fn add_migration(&self, file: &str, sql: &str) {
        let dir = self
            .migrations
            .as_ref()
            .expect("a fleet with a migrations folder");
        std::fs::write(dir.join(file), sql).unwrap();
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = tenancy(self.dir.path());
        cmd.arg("--data-dir").arg(self.data()).args(args);
        if let Some(m) = &self.migrations {
            cmd.env("TENANCY_MIGRATIONS", m);
        }
        if let Some((db, mode)) = &self.postgres {
            cmd.env("TENANCY_STORE_URL", &db.url)
                .env("TENANCY_STORE_NAME", "pg")
                .env("TENANCY_STORE_DATA_ROLE", format!("{}_data", db.prefix))
                .env("TENANCY_STORE_DATABASE_PREFIX", &db.prefix)
                .env("TENANCY_DEFAULT_STORE", "pg")
                .env("TENANCY_DEFAULT_MODE", mode);
        }
        cmd
    }

    /// Runs one query on the fleet's PostgreSQL database (or a tenant database of it).
    fn pg_query_i64(&self, database: Option<&str>, sql: &str) -> i64 {
        let (db, _) = self.postgres.as_ref().expect("a PostgreSQL fleet");
        let url = database.map_or_else(|| db.url.clone(), |d| db.url_of(d));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(conn);
            client.query_one(sql, &[]).await.expect(sql).get(0)
        })
    }

    fn run(&self, args: &[&str]) -> Output {
        output_of(self.command(args))
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "expected success: {}",
            describe(args, &o)
        );
        stdout(&o)
    }

    /// Runs a command that must fail; returns its output.
    fn fails(&self, args: &[&str]) -> Output {
        let o = self.run(args);
        assert!(
            !o.status.success(),
            "expected failure: {}",
            describe(args, &o)
        );
        o
    }

    /// `status --failed --json`: the standing failures; it exits 3 when there is any.
    fn failed(&self) -> Value {
        let args = ["status", "--failed", "--json"];
        let o = self.run(&args);
        let listed: Value = serde_json::from_str(&stdout(&o))
            .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", describe(&args, &o)));
        let any = listed.as_array().is_some_and(|a| !a.is_empty());
        assert_eq!(
            o.status.code(),
            Some(if any { 3 } else { 0 }),
            "{}",
            describe(&args, &o)
        );
        listed
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: bad JSON ({e}): {out}"))
    }

    /// `tenant list --json` (which also runs recovery).
    fn tenants(&self) -> Vec<Value> {
        match self.json(&["tenant", "list", "--json"]) {
            Value::Array(list) => list,
            other => panic!("tenant list --json gave {other}"),
        }
    }

    fn tenant(&self, slug: &str) -> Option<Value> {
        self.tenants().into_iter().find(|t| t["slug"] == slug)
    }

    fn create(&self, slug: &str) -> Value {
        let t = self.json(&["tenant", "create", slug, "--json"]);
        assert_eq!(t["status"], "active", "{t}");
        t
    }

    /// Creates `n` tenants `t00`, `t01`, …; returns their ids.
    fn create_many(&self, n: usize) -> Vec<(String, String)> {
        (0..n)
            .map(|i| {
                let slug = format!("t{i:02}");
                let t = self.create(&slug);
                (slug, t["id"].as_str().unwrap().to_owned())
            })
            .collect()
    }

    /// Spawns `tenancy args` with `TENANCY_PAUSE_AT=point` and waits (at most [`TIMEOUT`])
    /// until it reports being paused there. The process keeps running until killed.
    fn spawn_until_paused(&self, args: &[&str], point: &str) -> Paused {
        let mut cmd = self.command(args);
        cmd.env("TENANCY_PAUSE_AT", point)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn tenancy");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            // Keep draining after the receiver is gone, so the child never blocks on stderr.
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let paused = Paused {
            child,
            point: point.to_owned(),
        };
        let wanted = format!("paused at {point}");
        let deadline = Instant::now() + TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(&wanted) => return paused,
                Ok(line) => seen.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "tenancy {args:?} did not pause at {} within {TIMEOUT:?}; stderr:\n{}",
                    paused.point,
                    seen.join("\n")
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let mut paused = paused;
                    let status = paused.child.wait().ok();
                    panic!(
                        "tenancy {args:?} ended ({status:?}) without pausing at {point}; stderr:\n{}",
                        seen.join("\n")
                    )
                }
            }
        }
    }

    /// Spawns `tenancy args` paused at `point`, then SIGKILLs it there.
    fn spawn_paused(&self, args: &[&str], point: &str) {
        let status = self.spawn_until_paused(args, point).kill();
        assert!(!status.success(), "killed process reported success");
    }

    /// The files of `tenants/` are exactly the databases of the active (or suspended)
    /// tenants the catalog lists: no temporary builds, nothing for failed or unknown ids.
    fn assert_files_match_catalog(&self) {
        let tenants = self.tenants();
        let live: HashSet<String> = tenants
            .iter()
            .filter(|t| t["status"] == "active" || t["status"] == "suspended")
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect();
        let files = self.tenant_files();
        for name in &files {
            assert!(
                !name.contains(".tmp"),
                "temporary file left: {name} in {files:?}"
            );
            let (id, suffix) = name
                .split_once(".db")
                .unwrap_or_else(|| panic!("unexpected file {name} in {files:?}"));
            assert!(
                live.contains(id),
                "file {name} belongs to no active tenant; catalog: {tenants:?}"
            );
            assert!(
                ["", "-wal", "-shm"].contains(&suffix),
                "unexpected file {name} in {files:?}"
            );
        }
        for id in &live {
            assert!(
                files.contains(&format!("{id}.db")),
                "active tenant {id} has no database; files: {files:?}"
            );
        }
    }

    fn tenant_files(&self) -> BTreeSet<String> {
        match std::fs::read_dir(self.tenants_dir()) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => panic!("listing tenants: {e}"),
        }
    }

    /// Every tenant is active at `version` in the catalog, and its database agrees.
    fn assert_all_at(&self, version: i64) {
        let tenants = self.tenants();
        assert!(!tenants.is_empty());
        for t in &tenants {
            assert_eq!(t["status"], "active", "{t}");
            assert_eq!(t["schema_version"], version, "{t}");
            let db = self.db_path(t["id"].as_str().unwrap());
            assert_eq!(ledger_version(&db), version, "ledger of {t}");
            assert_integrity(&db);
        }
    }
}

fn open_db(path: &Path) -> rusqlite::Connection {
    assert!(path.is_file(), "{} does not exist", path.display());
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

/// `MAX(version)` of the tenant's migration ledger.
fn ledger_version(path: &Path) -> i64 {
    open_db(path)
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM _tenancy_migrations",
            [],
            |r| r.get(0),
        )
        .unwrap_or_else(|e| panic!("ledger of {}: {e}", path.display()))
}

fn has_table(path: &Path, table: &str) -> bool {
    open_db(path)
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [table],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
        == 1
}

fn assert_integrity(path: &Path) {
    let result: String = open_db(path)
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(result, "ok", "integrity_check of {}", path.display());
}

/// A tenant database is either entirely before migration 0003 or entirely after it.
/// Returns whether it is after.
fn migrated_0003(path: &Path) -> bool {
    let version = ledger_version(path);
    let table = has_table(path, "x_notes");
    match version {
        2 => {
            assert!(!table, "{}: x_notes exists at version 2", path.display());
            false
        }
        3 => {
            assert!(table, "{}: version 3 without x_notes", path.display());
            let rows: i64 = open_db(path)
                .query_row("SELECT COUNT(*) FROM x_notes", [], |r| r.get(0))
                .unwrap();
            assert_eq!(rows, 1, "{}: rows of x_notes", path.display());
            true
        }
        v => panic!("{}: ledger at version {v}", path.display()),
    }
}

// ---------------------------------------------------------------------------------------
// 1. Provisioning killed at each pause point.

fn kill_during_provisioning(point: &str, completes: bool) {
    let f = Fleet::new();
    f.spawn_paused(&["tenant", "create", "acme"], point);

    let acme = f
        .tenant("acme")
        .expect("acme is in the catalog after recovery");
    if completes {
        assert_eq!(acme["status"], "active", "{acme}");
        assert_eq!(acme["schema_version"], 2, "{acme}");
        assert_eq!(ledger_version(&f.db_path(acme["id"].as_str().unwrap())), 2);
        f.assert_files_match_catalog();
    } else {
        assert_eq!(acme["status"], "failed", "{acme}");
        f.assert_files_match_catalog();
        assert!(f.tenant_files().is_empty(), "{:?}", f.tenant_files());

        let retried = f.json(&["tenant", "retry", "acme", "--json"]);
        assert_eq!(retried["status"], "active", "{retried}");
        assert_eq!(retried["schema_version"], 2, "{retried}");
        assert_eq!(retried["id"], acme["id"]);
        let acme = f.tenant("acme").unwrap();
        assert_eq!(acme["status"], "active", "{acme}");
        assert_eq!(acme["schema_version"], 2, "{acme}");
        f.assert_files_match_catalog();
    }
    // A second open finds nothing more to recover, and the tenant is usable.
    let o = f.run(&["tenant", "show", "acme"]);
    assert!(o.status.success(), "{}", describe(&["tenant", "show"], &o));
    assert!(!stderr(&o).contains("recovered"), "{}", stderr(&o));
    f.assert_files_match_catalog();
}

#[test]
fn provisioning_killed_after_catalog_written_is_rolled_back() {
    kill_during_provisioning("provision.catalog_written", false);
}

#[test]
fn provisioning_killed_after_file_built_is_rolled_back() {
    kill_during_provisioning("provision.file_built", false);
}

#[test]
fn provisioning_killed_after_file_placed_completes() {
    kill_during_provisioning("provision.file_placed", true);
}

#[test]
fn store_files_no_live_tenant_accounts_for_are_removed() {
    let f = Fleet::new();
    f.create("acme");
    f.spawn_paused(&["tenant", "create", "broken"], "provision.catalog_written");
    let broken = f.tenant("broken").unwrap();
    assert_eq!(broken["status"], "failed", "{broken}");

    // Files of an id the catalog never heard of, and a database for the failed tenant.
    let unknown = "0190f5c2-0000-7000-8000-000000000001";
    for name in [
        format!("{unknown}.db"),
        format!("{unknown}.db-wal"),
        format!("{unknown}.db.tmp"),
        format!("{unknown}.db.tmp-journal"),
        format!("{}.db", broken["id"].as_str().unwrap()),
    ] {
        std::fs::write(f.tenants_dir().join(name), b"junk").unwrap();
    }
    // A short command recovers only what was in flight: it does not read the fleet.
    let o = f.run(&["status"]);
    assert!(o.status.success(), "{}", describe(&["status"], &o));
    assert_eq!(f.tenant_files().len(), 6, "{:?}", f.tenant_files());
    // The server's start and a fleet migration sweep the store.
    let o = f.run(&["migrate"]);
    assert!(o.status.success(), "{}", describe(&["migrate"], &o));
    assert!(stderr(&o).contains("removed"), "{}", stderr(&o));
    f.assert_files_match_catalog();
    assert_eq!(f.tenant_files().len(), 1, "{:?}", f.tenant_files());
}

// ---------------------------------------------------------------------------------------
// 2. Delete killed at each pause point.

fn kill_during_delete(point: &str) {
    let f = Fleet::new();
    let acme = f.create("acme");
    let other = f.create("other");
    let id = acme["id"].as_str().unwrap().to_owned();
    assert!(f.db_path(&id).is_file());

    f.spawn_paused(&["tenant", "delete", "acme", "--yes"], point);

    let tenants = f.tenants();
    assert!(
        tenants.iter().all(|t| t["slug"] != "acme"),
        "acme still listed: {tenants:?}"
    );
    assert!(
        f.tenant_files().iter().all(|name| !name.starts_with(&id)),
        "acme's files remain: {:?}",
        f.tenant_files()
    );
    // The other tenant is untouched.
    let still = f.tenant("other").expect("other survives");
    assert_eq!(still["status"], "active");
    assert_eq!(still["id"], other["id"]);
    f.assert_files_match_catalog();

    let again = f.create("acme");
    assert_ne!(again["id"], acme["id"]);
    assert_eq!(again["schema_version"], 2);
    f.assert_files_match_catalog();
}

#[test]
fn delete_killed_after_marked_finishes() {
    kill_during_delete("delete.marked");
}

#[test]
fn delete_killed_after_file_removed_finishes() {
    kill_during_delete("delete.file_removed");
}

// ---------------------------------------------------------------------------------------
// 3. Migrate killed at each pause point.

/// Five tenants, migration 0003 added, `migrate --concurrency 1` killed at `point`.
/// Returns how many tenant databases had 0003 committed when it died.
fn kill_during_migrate(point: &str) -> usize {
    let f = Fleet::with_migrations();
    let tenants = f.create_many(5);
    f.add_migration("0003_x.sql", MIGRATION_0003);

    f.spawn_paused(&["migrate", "--concurrency", "1"], point);

    // Straight after the kill, before any other process touches anything: no tenant
    // database is half migrated.
    let committed = tenants
        .iter()
        .filter(|(_, id)| migrated_0003(&f.db_path(id)))
        .count();
    for (_, id) in &tenants {
        assert_integrity(&f.db_path(id));
    }

    let o = f.run(&["migrate"]);
    assert!(o.status.success(), "{}", describe(&["migrate"], &o));
    f.assert_all_at(3);
    for (_, id) in &tenants {
        assert!(migrated_0003(&f.db_path(id)));
    }
    f.assert_files_match_catalog();
    // Nothing left to do.
    let again = f.json(&["migrate", "--json"]);
    assert_eq!(again["pending"], serde_json::json!([]), "{again}");
    committed
}

#[test]
fn migrate_killed_inside_a_tenant_transaction_leaves_it_unmigrated() {
    // The first tenant was paused before its commit; nothing was committed anywhere.
    assert_eq!(kill_during_migrate("migrate.tenant_applied"), 0);
}

#[test]
fn migrate_killed_after_a_tenant_commit_is_completed_by_a_rerun() {
    // The first tenant committed (its database at 3, the catalog still at 2).
    assert_eq!(kill_during_migrate("migrate.tenant_committed"), 1);
}

#[test]
fn migrate_killed_holding_the_lock_is_completed_by_a_rerun() {
    assert_eq!(kill_during_migrate("migrate.locked"), 0);
}

// ---------------------------------------------------------------------------------------
// 4. One migrate at a time; a dead holder's lock is taken over.

#[test]
fn second_migrate_is_refused_while_one_runs() {
    let f = Fleet::with_migrations();
    f.create_many(2);
    f.add_migration("0003_x.sql", MIGRATION_0003);

    let first = f.spawn_until_paused(&["migrate"], "migrate.locked");
    let second = f.fails(&["migrate"]);
    let err = stderr(&second);
    assert!(err.contains("already running"), "{err}");
    // The refused run changed nothing.
    for t in f.tenants() {
        assert_eq!(t["schema_version"], 2, "{t}");
    }
    first.kill();

    let o = f.run(&["migrate"]);
    assert!(o.status.success(), "{}", describe(&["migrate"], &o));
    f.assert_all_at(3);
}

// ---------------------------------------------------------------------------------------
// 5. Kills at random moments.

/// xorshift64*: enough randomness for kill timings without another dependency.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let seed = std::env::var("CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    ^ u64::from(std::process::id())
            });
        eprintln!("kill timings seeded with CRASH_SEED={seed}");
        Rng(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

#[test]
fn migrate_killed_at_random_moments_converges() {
    let f = Fleet::with_migrations();
    let tenants = f.create_many(30);
    let mut rng = Rng::seeded();
    // 20 trials: each adds a migration, SIGKILLs `migrate` at a random moment, then reruns
    // it; every rerun must bring every tenant to the new version with every file whole.
    for trial in 0..20 {
        let version = 3 + trial;
        f.add_migration(
            &format!("{version:04}_t{trial}.sql"),
            &format!(
                "CREATE TABLE x_trial_{trial} (id INTEGER PRIMARY KEY, body TEXT NOT NULL);\n\
                 INSERT INTO x_trial_{trial} (body) VALUES ('trial {trial}');\n\
                 CREATE INDEX x_trial_{trial}_body_idx ON x_trial_{trial} (body);\n"
            ),
        );
        // From before the process has opened the catalog to after it has finished.
        let delay = Duration::from_millis(rng.below(101));
        let mut child = f
            .command(&["migrate", "--concurrency", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tenancy");
        thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().expect("reap");
        // Whatever the moment of the kill, every database is whole and at a version
        // it either had or reached.
        let mut moved = 0;
        for (_, id) in &tenants {
            let db = f.db_path(id);
            assert_integrity(&db);
            let at = ledger_version(&db);
            assert!(
                at == version || at == version - 1,
                "trial {trial}: {id} at {at}"
            );
            moved += usize::from(at == version);
        }
        eprintln!("trial {trial}: killed after {delay:?} ({status}); {moved}/30 migrated");

        let o = f.run(&["migrate"]);
        assert!(
            o.status.success(),
            "trial {trial}: {}",
            describe(&["migrate"], &o)
        );
        f.assert_all_at(version);
    }
    f.assert_files_match_catalog();
    let status = f.json(&["status", "--json"]);
    assert_eq!(
        status["failed_migrations"],
        serde_json::json!([]),
        "{status}"
    );
}

#[test]
fn liveness_files_of_processes_killed_while_starting_are_swept() {
    let f = Fleet::new();
    f.create("acme");
    let run_dir = f.data().join("run");
    // What a process killed between creating its liveness file and renaming it into place
    // leaves behind: an unlocked `<pid>-<hex>.lock.new`.
    let stale = run_dir.join("4194000-0190f5c2000070008000000000000001.lock.new");
    std::fs::write(&stale, b"").unwrap();
    f.ok(&["status"]);
    let left: Vec<_> = std::fs::read_dir(&run_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left in run/: {left:?}");
}

// ---------------------------------------------------------------------------------------
// 6. The CLI end to end.

#[test]
fn bad_slugs_are_refused_and_create_nothing() {
    let f = Fleet::new();
    for (slug, problem) in [
        ("Acme", "lower case"),
        ("a_b", "only a-z, 0-9 and '-'"),
        ("-x", "must not start or end with '-'"),
        ("www", "reserved"),
        ("", "empty"),
    ] {
        // `--` so that "-x" reaches the slug check rather than the flag parser.
        let args = ["tenant", "create", "--", slug];
        let o = f.fails(&args);
        let err = stderr(&o);
        assert!(
            err.contains("invalid slug") && err.contains(problem),
            "{slug:?}: {}",
            describe(&args, &o)
        );
        assert!(err.contains(&format!("{slug:?}")), "{slug:?}: {err}");
    }
    // Refused before the data folder is opened: not even a catalog was created.
    assert!(!f.data().exists(), "{} was created", f.data().display());
    f.create("acme");
    assert_eq!(f.tenants().len(), 1);
    f.assert_files_match_catalog();
}

#[test]
fn duplicate_slug_is_refused() {
    let f = Fleet::new();
    let acme = f.create("acme");
    let o = f.fails(&["tenant", "create", "acme"]);
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    let tenants = f.tenants();
    assert_eq!(tenants.len(), 1, "{tenants:?}");
    assert_eq!(tenants[0]["id"], acme["id"]);
    f.assert_files_match_catalog();
}

#[test]
fn show_unknown_tenant_fails() {
    let f = Fleet::new();
    f.create("acme");
    let o = f.fails(&["tenant", "show", "unknown"]);
    assert!(
        stderr(&o).contains("no tenant with slug \"unknown\""),
        "{}",
        stderr(&o)
    );
    let shown = f.json(&["tenant", "show", "acme", "--json"]);
    assert_eq!(shown["slug"], "acme");
    assert!(
        shown["journal"].as_array().is_some_and(|j| !j.is_empty()),
        "{shown}"
    );
}

#[test]
fn init_writes_a_config_that_later_commands_use() {
    let work = TempDir::new().unwrap();
    let dir = work.path().join("project");
    let run = |args: &[&str]| {
        let mut cmd = tenancy(work.path());
        cmd.args(args);
        output_of(cmd)
    };
    let dir_s = dir.to_str().unwrap();

    let o = run(&["init", dir_s]);
    assert!(o.status.success(), "{}", describe(&["init"], &o));
    let config = dir.join("tenancy.toml");
    assert!(config.is_file());
    assert_eq!(
        std::fs::read_to_string(dir.join("migrations/0001_roster.sql")).unwrap(),
        GUILD_0001
    );
    assert!(dir.join("migrations/0002_auctions.sql").is_file());

    // A second time: refused without --force, and the file is left alone.
    std::fs::write(&config, "data_dir = \"elsewhere\"\n").unwrap();
    let o = run(&["init", dir_s]);
    assert!(!o.status.success(), "{}", describe(&["init"], &o));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "data_dir = \"elsewhere\"\n"
    );
    let o = run(&["init", dir_s, "--force"]);
    assert!(o.status.success(), "{}", describe(&["init", "--force"], &o));
    assert_ne!(
        std::fs::read_to_string(&config).unwrap(),
        "data_dir = \"elsewhere\"\n"
    );

    // The data folder comes from the config, relative to the config's folder.
    let config_s = config.to_str().unwrap();
    let o = run(&["--config", config_s, "tenant", "create", "x", "--json"]);
    assert!(
        o.status.success(),
        "{}",
        describe(&["tenant", "create"], &o)
    );
    let x: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(x["schema_version"], 2, "{x}");
    let data = dir.join("tenancy-data");
    assert!(data.join("catalog.db").is_file());
    assert!(data
        .join("tenants")
        .join(format!("{}.db", x["id"].as_str().unwrap()))
        .is_file());
    assert!(!work.path().join("tenancy-data").exists());
    let o = run(&["--config", config_s, "tenant", "list", "--json"]);
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list[0]["slug"], "x", "{list}");
}

#[test]
fn status_json_counts_tenants() {
    let f = Fleet::new();
    f.create_many(3);
    f.ok(&["tenant", "suspend", "t01"]);
    f.spawn_paused(&["tenant", "create", "broken"], "provision.file_built");

    let status = f.json(&["status", "--json"]);
    assert_eq!(status["total"], 4, "{status}");
    assert_eq!(status["latest_version"], 2, "{status}");
    let mut counts: Vec<(String, i64, u64)> = status["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["status"].as_str().unwrap().to_owned(),
                c["schema_version"].as_i64().unwrap(),
                c["count"].as_u64().unwrap(),
            )
        })
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        vec![
            ("active".to_owned(), 2, 2),
            ("failed".to_owned(), 0, 1),
            ("suspended".to_owned(), 2, 1),
        ],
        "{status}"
    );
    assert_eq!(status["failed_migrations"], serde_json::json!([]));
}

#[test]
fn migration_with_a_syntax_error_fails_its_rehearsal_and_changes_nothing() {
    let f = Fleet::with_migrations();
    let tenants = f.create_many(3);
    f.add_migration(
        "0003_bad.sql",
        "CREATE TABLE oops (id INTEGER PRIMARY KEY,;\n",
    );

    // The rehearsal fails before any tenant is touched.
    let o = f.fails(&["migrate"]);
    let err = stderr(&o);
    assert!(
        err.contains("0003_bad.sql"),
        "{}",
        describe(&["migrate"], &o)
    );
    assert!(err.contains("no tenant was touched"), "{err}");
    for t in f.tenants() {
        assert_eq!(t["status"], "active", "{t}");
        assert_eq!(t["schema_version"], 2, "{t}");
    }
    for (_, id) in &tenants {
        let db = f.db_path(id);
        assert_eq!(ledger_version(&db), 2);
        assert!(!has_table(&db, "oops"));
    }
    let failed = f.failed();
    assert_eq!(failed.as_array().map(Vec::len), Some(0), "{failed}");
}

/// Migration 0003 makes `members.class` unique, and tenant `id` gets two mages: its
/// migration fails on its data alone.
fn add_class_clash(f: &Fleet, id: &str) {
    open_db(&f.db_path(id))
        .execute_batch(
            "INSERT INTO members (id, name, class) VALUES ('m1', 'Alva', 'mage'), ('m2', 'Brim', 'mage');",
        )
        .unwrap();
    f.add_migration(
        "0003_unique_class.sql",
        "CREATE UNIQUE INDEX members_class_key ON members (class);\n",
    );
}

/// Fixes the data [`add_class_clash`] broke.
fn resolve_class_clash(f: &Fleet, id: &str) {
    open_db(&f.db_path(id))
        .execute("UPDATE members SET class = 'priest' WHERE id = 'm2'", [])
        .unwrap();
}

#[test]
fn a_migration_that_fails_for_one_percent_of_the_fleet_lists_those_and_does_the_rest() {
    let f = Fleet::with_migrations();
    let file = f.dir.path().join("fleet.txt");
    let slugs: Vec<String> = (0..200).map(|i| format!("f{i:03}")).collect();
    std::fs::write(&file, slugs.join("\n")).unwrap();
    f.ok(&["tenant", "create", "--bulk", file.to_str().unwrap()]);
    let tenants = f.tenants();
    assert_eq!(tenants.len(), 200);
    let bad: Vec<(String, String)> = [37, 151]
        .iter()
        .map(|&i| {
            let t = &tenants[i];
            (
                t["slug"].as_str().unwrap().to_owned(),
                t["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (_, id) in &bad {
        add_class_clash(&f, id);
    }

    let report: Value = serde_json::from_slice(&f.fails(&["migrate", "--json"]).stdout).unwrap();
    assert_eq!(report["migrated"], 198, "{report}");
    let mut listed: Vec<&str> = report["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["slug"].as_str().unwrap())
        .collect();
    listed.sort_unstable();
    assert_eq!(listed, [bad[0].0.as_str(), bad[1].0.as_str()], "{report}");
    let failed = f.failed();
    assert_eq!(failed.as_array().map(Vec::len), Some(2), "{failed}");
    for t in f.tenants() {
        let is_bad = bad.iter().any(|(s, _)| t["slug"] == s.as_str());
        let expected = if is_bad { 2 } else { 3 };
        assert_eq!(t["schema_version"], expected, "{t}");
        assert_eq!(
            ledger_version(&f.db_path(t["id"].as_str().unwrap())),
            expected
        );
    }
}

#[test]
fn a_dry_run_says_what_would_run_where_and_changes_nothing() {
    let f = Fleet::with_migrations();
    f.create_many(3);
    f.add_migration(
        "0003_rank.sql",
        "ALTER TABLE members ADD COLUMN rank TEXT;\n",
    );
    f.add_migration("0004_note.sql", "ALTER TABLE raids ADD COLUMN note TEXT;\n");

    let out = f.ok(&["migrate", "--dry-run"]);
    assert!(
        out.contains("3 tenant(s) would be migrated to version 4"),
        "{out}"
    );
    for slug in ["t00", "t01", "t02"] {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(slug))
            .unwrap_or_else(|| panic!("{slug} missing: {out}"));
        assert!(
            line.contains("default/database") && line.contains("v2 -> v4"),
            "{line}"
        );
        assert!(line.contains("0003_rank.sql, 0004_note.sql"), "{line}");
    }
    let plan = f.json(&["migrate", "--dry-run", "--tenant", "t01", "--json"]);
    assert_eq!(plan["dry_run"], true, "{plan}");
    assert_eq!(plan["pending"], serde_json::json!(["t01"]), "{plan}");
    assert_eq!(plan["plan"][0]["mode"], "database", "{plan}");
    assert_eq!(plan["plan"][0]["from_version"], 2, "{plan}");
    assert_eq!(
        plan["plan"][0]["files"],
        serde_json::json!(["0003_rank.sql", "0004_note.sql"]),
        "{plan}"
    );
    // Nothing moved: not the catalog, not a file, no run recorded.
    f.assert_all_at(2);
    f.fails(&["migrate", "--dry-run", "--tenant", "nobody"]);
    // A real run after it does what it said.
    let report = f.json(&["migrate", "--json"]);
    assert_eq!(report["migrated"], 3, "{report}");
    assert!(report.get("plan").is_none(), "{report}");
    f.assert_all_at(4);
}

#[test]
fn data_dependent_migration_failure_fails_only_that_tenant() {
    let f = Fleet::with_migrations();
    let tenants = f.create_many(4);
    let (bad_slug, bad_id) = &tenants[2];
    add_class_clash(&f, bad_id);

    let o = f.fails(&["migrate"]);
    let out = stdout(&o);
    assert!(
        out.contains(bad_slug.as_str()),
        "{}",
        describe(&["migrate"], &o)
    );
    for t in f.tenants() {
        let expected = if t["slug"] == bad_slug.as_str() { 2 } else { 3 };
        assert_eq!(t["status"], "active", "{t}");
        assert_eq!(t["schema_version"], expected, "{t}");
        assert_eq!(
            ledger_version(&f.db_path(t["id"].as_str().unwrap())),
            expected
        );
    }

    let o = f.run(&["status", "--failed"]);
    assert_eq!(o.status.code(), Some(3), "a standing failure");
    let failed = stdout(&o);
    assert!(failed.contains(bad_slug.as_str()), "{failed}");
    for (slug, _) in tenants.iter().filter(|(s, _)| s != bad_slug) {
        assert!(!failed.contains(slug.as_str()), "{slug} listed: {failed}");
    }
    let failed = f.failed();
    assert_eq!(failed.as_array().map(Vec::len), Some(1), "{failed}");
    assert_eq!(failed[0]["slug"], bad_slug.as_str());

    // Fix the data and rerun: only that tenant was pending.
    resolve_class_clash(&f, bad_id);
    let report = f.json(&["migrate", "--json"]);
    assert_eq!(report["pending"], serde_json::json!([bad_slug]), "{report}");
    f.assert_all_at(3);
    assert_eq!(f.failed(), serde_json::json!([]));
}

#[test]
fn migration_edited_after_it_was_applied_is_refused() {
    let f = Fleet::with_migrations();
    f.create_many(2);
    f.add_migration("0003_x.sql", MIGRATION_0003);
    f.ok(&["migrate"]);
    f.assert_all_at(3);

    f.add_migration(
        "0003_x.sql",
        "CREATE TABLE x_notes (id INTEGER PRIMARY KEY);\n",
    );
    let o = f.fails(&["migrate"]);
    let err = stderr(&o);
    assert!(
        err.contains("0003_x.sql") && err.contains("changed after it was applied"),
        "{err}"
    );
    // New tenants are refused too, and nothing changed.
    let o = f.fails(&["tenant", "create", "late"]);
    assert!(stderr(&o).contains("0003_x.sql"), "{}", stderr(&o));
    f.add_migration("0003_x.sql", MIGRATION_0003);
    f.assert_all_at(3);
    assert!(f.tenant("late").is_none());
}

#[test]
fn a_failing_canary_stops_the_fleet_migration_before_the_rest() {
    let f = Fleet::with_migrations();
    let tenants = f.create_many(6);
    // Tenants migrate in slug order: t01 is among the first two, the canaries.
    let (bad_slug, bad_id) = &tenants[1];
    add_class_clash(&f, bad_id);
    let o = f.fails(&["migrate", "--canary", "2", "--concurrency", "1"]);
    assert!(
        stdout(&o).contains("canary failed"),
        "{}",
        describe(&["migrate", "--canary"], &o)
    );
    for t in f.tenants() {
        let expected = if t["slug"] == "t00" { 3 } else { 2 };
        assert_eq!(
            t["schema_version"], expected,
            "only the good canary moved: {t}"
        );
    }
    let failed = f.failed();
    assert_eq!(failed[0]["slug"], bad_slug.as_str(), "{failed}");

    // Canaries that pass let the rest through.
    resolve_class_clash(&f, bad_id);
    let report = f.json(&["migrate", "--canary", "2", "--json"]);
    assert_eq!(report["canary_failed"], false, "{report}");
    assert_eq!(report["migrated"], 5, "{report}");
    f.assert_all_at(3);
    // `--canary 0`: no canary (nothing is pending now).
    f.ok(&["migrate", "--canary", "0"]);
}

#[test]
fn bulk_creation_checks_every_line_first_then_creates_the_rest_past_a_failure() {
    let f = Fleet::new();
    let file = f.dir.path().join("slugs.txt");
    // Bad lines: nothing at all is created, and every problem is named by its line.
    std::fs::write(&file, "good-one\nBad_Slug\n\n# a comment\ngood-one\nwww\n").unwrap();
    let o = f.fails(&["tenant", "create", "--bulk", file.to_str().unwrap()]);
    let err = stderr(&o);
    for needle in ["line 2", "line 5", "repeats line 1", "line 6"] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    assert!(f.tenants().is_empty());
    assert!(f.tenant_files().is_empty());

    // A slug already taken fails alone; the others are created.
    f.create("taken");
    let slugs: Vec<String> = (0..30).map(|i| format!("bulk-{i:02}")).collect();
    std::fs::write(&file, format!("{}\ntaken\n", slugs.join("\n"))).unwrap();
    let o = f.fails(&[
        "tenant",
        "create",
        "--bulk",
        file.to_str().unwrap(),
        "--concurrency",
        "4",
    ]);
    let out = stdout(&o);
    assert!(out.contains("created 30 of 31"), "{out}");
    assert!(out.contains("taken"), "{out}");
    let tenants = f.tenants();
    assert_eq!(tenants.len(), 31);
    for t in &tenants {
        assert_eq!(t["status"], "active", "{t}");
        assert_eq!(t["schema_version"], 2, "{t}");
    }
    f.assert_files_match_catalog();
    // Neither a slug and --bulk together, nor nothing at all.
    f.fails(&["tenant", "create", "x", "--bulk", file.to_str().unwrap()]);
    f.fails(&["tenant", "create"]);
    let empty = f.dir.path().join("empty.txt");
    std::fs::write(&empty, "\n# nothing\n").unwrap();
    f.fails(&["tenant", "create", "--bulk", empty.to_str().unwrap()]);
    f.fails(&["tenant", "create", "--bulk", "/nonexistent/slugs.txt"]);
}

// ---------------------------------------------------------------------------------------
// PostgreSQL modes: the same kills, with tenants in databases, schemas and shared tables.

/// What PostgreSQL holds for the tenant: 1 if its database (database mode) or schema
/// (schema mode) exists, else 0. Shared tenants hold nothing of their own.
fn pg_footprint(f: &Fleet, tenant: &Value) -> i64 {
    let id = tenant["id"].as_str().unwrap().replace('-', "");
    let (db, mode) = f.postgres.as_ref().unwrap();
    match *mode {
        "database" => f.pg_query_i64(
            None,
            &format!(
                "SELECT COUNT(*) FROM pg_database WHERE datname = '{}_{id}'",
                db.prefix
            ),
        ),
        "schema" => f.pg_query_i64(
            None,
            &format!("SELECT COUNT(*) FROM pg_namespace WHERE nspname = 't_{id}'"),
        ),
        _ => 0,
    }
}

fn kill_provisioning_on_postgres(mode: &'static str, point: &str, completes: bool) {
    let Some(f) = Fleet::on_postgres(mode) else {
        return;
    };
    f.spawn_paused(&["tenant", "create", "acme"], point);
    let acme = f
        .tenant("acme")
        .expect("acme is in the catalog after recovery");
    if completes {
        assert_eq!(acme["status"], "active", "{acme}");
        assert_eq!(acme["schema_version"], 2, "{acme}");
    } else {
        assert_eq!(acme["status"], "failed", "{acme}");
        assert_eq!(
            pg_footprint(&f, &acme),
            0,
            "the half-created {mode} was removed"
        );
        let retried = f.json(&["tenant", "retry", "acme", "--json"]);
        assert_eq!(retried["status"], "active", "{retried}");
    }
    let acme = f.tenant("acme").unwrap();
    if mode != "shared" {
        assert_eq!(pg_footprint(&f, &acme), 1);
    }
    assert!(
        f.tenant_files().is_empty(),
        "no SQLite file for a PostgreSQL tenant"
    );
}

/// `tenancy tenant create --bulk` killed once its batch is registered (nothing built) or
/// once every tenant of the batch is built (none settled): the next command settles each
/// tenant as a single create would — `failed` with nothing left behind, or `active`.
fn kill_bulk(f: &Fleet, point: &str, completes: bool) {
    let file = f.dir.path().join("bulk.txt");
    let slugs: Vec<String> = (0..12).map(|i| format!("b{i:02}")).collect();
    std::fs::write(&file, slugs.join("\n")).unwrap();
    f.spawn_paused(
        &["tenant", "create", "--bulk", file.to_str().unwrap()],
        point,
    );
    let tenants = f.tenants();
    assert_eq!(
        tenants.len(),
        12,
        "every tenant of the batch was registered"
    );
    for t in &tenants {
        if completes {
            assert_eq!(t["status"], "active", "{point}: {t}");
            assert_eq!(t["schema_version"], 2, "{point}: {t}");
        } else {
            assert_eq!(t["status"], "failed", "{point}: {t}");
        }
        if let Some((_, mode)) = &f.postgres {
            let expected = i64::from(completes && *mode != "shared");
            assert_eq!(pg_footprint(f, t), expected, "{point}: {t}");
        }
    }
    if f.postgres.is_none() {
        f.assert_files_match_catalog();
    }
    if !completes {
        let retried = f.json(&["tenant", "retry", "b07", "--json"]);
        assert_eq!(retried["status"], "active", "{retried}");
    }
}

#[test]
fn bulk_creation_killed_mid_batch_settles_every_tenant() {
    for (point, completes) in [
        ("provision.catalog_written", false),
        ("provision.file_placed", true),
    ] {
        kill_bulk(&Fleet::new(), point, completes);
        for mode in ["database", "schema", "shared"] {
            if let Some(f) = Fleet::on_postgres(mode) {
                kill_bulk(&f, point, completes);
            }
        }
    }
}

#[test]
fn postgres_provisioning_killed_mid_way_is_rolled_back_in_every_mode() {
    for mode in ["database", "schema", "shared"] {
        kill_provisioning_on_postgres(mode, "provision.catalog_written", false);
    }
}

#[test]
fn postgres_provisioning_killed_after_the_data_is_complete_finishes() {
    for mode in ["database", "schema", "shared"] {
        kill_provisioning_on_postgres(mode, "provision.file_placed", true);
    }
    // Right after CREATE DATABASE … TEMPLATE: the copy is complete the moment it exists.
    kill_provisioning_on_postgres("database", "provision.file_built", true);
}

#[test]
fn postgres_migrate_killed_mid_tenant_then_rerun_converges() {
    for mode in ["database", "schema", "shared"] {
        let Some(f) = Fleet::on_postgres(mode) else {
            return;
        };
        f.create_many(3);
        f.add_migration(
            "0003_x.sql",
            "CREATE TABLE x_notes (id TEXT PRIMARY KEY, body TEXT NOT NULL);\n",
        );
        f.spawn_paused(&["migrate", "--concurrency", "1"], "migrate.tenant_applied");
        let o = f.run(&["migrate"]);
        assert!(o.status.success(), "{mode}: {}", describe(&["migrate"], &o));
        for t in f.tenants() {
            assert_eq!(t["status"], "active", "{mode}: {t}");
            assert_eq!(t["schema_version"], 3, "{mode}: {t}");
        }
        let again = f.json(&["migrate", "--json"]);
        assert_eq!(again["pending"], serde_json::json!([]), "{mode}: {again}");
    }
}

// ---------------------------------------------------------------------------------------
// Migrations that cannot surprise, through the CLI: a broken set fails its rehearsal
// (a dry run too) with nothing touched; a failure on a tenant's data stops at the canary;
// `status --failed` exits 1 while a failure stands, and 0 once it no longer does.

#[test]
fn a_broken_migration_fails_the_dry_run_and_a_standing_failure_fails_status() {
    let f = Fleet::with_migrations();
    let ids: Vec<String> = ["t1", "t2", "t3"]
        .iter()
        .map(|slug| f.create(slug)["id"].as_str().unwrap().to_owned())
        .collect();

    f.add_migration(
        "0003_broken.sql",
        "CREATE TABLE notes (id TEXT PRIMARY KEY,, x);\n",
    );
    for args in [&["migrate", "--dry-run"][..], &["migrate"][..]] {
        let o = f.fails(args);
        let err = stderr(&o);
        assert!(err.contains("0003_broken.sql"), "{}", describe(args, &o));
        assert!(
            err.contains("no tenant was touched"),
            "{}",
            describe(args, &o)
        );
    }
    assert!(f.run(&["status", "--failed"]).status.success());
    std::fs::remove_file(f.migrations.as_ref().unwrap().join("0003_broken.sql")).unwrap();

    // Two members of one class in every tenant: a unique index over classes fails on the
    // data, past any rehearsal.
    for id in &ids {
        let db = rusqlite::Connection::open(f.db_path(id)).unwrap();
        db.execute_batch(
            "INSERT INTO members (id, name, class) VALUES ('a', 'Thrall', 'shaman'), \
             ('b', 'Drek''Thar', 'shaman');",
        )
        .unwrap();
    }
    f.add_migration(
        "0003_unique_classes.sql",
        "CREATE UNIQUE INDEX members_class_key ON members (class);\n",
    );
    let o = f.fails(&["migrate"]);
    assert_eq!(o.status.code(), Some(3), "completed with failures");
    assert!(
        stdout(&o).contains("a canary failed"),
        "{}",
        describe(&["migrate"], &o)
    );
    assert!(
        stdout(&o).contains("1 failed"),
        "{}",
        describe(&["migrate"], &o)
    );
    let o = f.run(&["status", "--failed"]);
    assert_eq!(o.status.code(), Some(3), "{}", describe(&["status"], &o));
    assert!(stdout(&o).contains("failed for 1 tenant"), "{}", stdout(&o));
    let o = f.run(&["status", "--failed", "--json"]);
    assert_eq!(o.status.code(), Some(3));
    let listed: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    // The migration is withdrawn: the fleet is current at version 2, nothing stands.
    std::fs::remove_file(
        f.migrations
            .as_ref()
            .unwrap()
            .join("0003_unique_classes.sql"),
    )
    .unwrap();
    let o = f.run(&["status", "--failed"]);
    assert!(o.status.success(), "{}", describe(&["status"], &o));
    assert!(stdout(&o).contains("failed for 0 tenant"), "{}", stdout(&o));
}
