//! The CLI as a script sees it: `--json` on every command (errors included, as
//! `{"code", "detail"}` objects on stdout), the documented exit codes, the confirmation
//! `tenant delete` asks for, read-only commands that refuse a folder with no catalog, and
//! shell completions. Every test runs the real binary on its own folder.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use tempfile::TempDir;

/// The documented exit codes (README "CLI for scripts").
const ERROR: i32 = 1;
const USAGE: i32 = 2;
const PARTIAL: i32 = 3;

/// The binary run from `cwd`, with no `TENANCY_*` variable of the test's environment and
/// stdin that is not a terminal.
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

fn run(cwd: &Path, args: &[&str]) -> Output {
    tenancy(cwd).args(args).output().expect("run tenancy")
}

fn describe(args: &[&str], o: &Output) -> String {
    format!(
        "tenancy {}: {}\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs a command with `--json`; its stdout must be one JSON document.
fn json(cwd: &Path, args: &[&str]) -> (Output, Value) {
    let mut all = args.to_vec();
    all.push("--json");
    let o = run(cwd, &all);
    let value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", describe(&all, &o)));
    (o, value)
}

/// A command that must succeed with `--json`; its JSON.
fn ok(cwd: &Path, args: &[&str]) -> Value {
    let (o, value) = json(cwd, args);
    assert!(o.status.success(), "{}", describe(args, &o));
    value
}

/// A command that must fail with `--json`, with this exit code and error code; the error
/// object is all there is on stdout.
fn fails(cwd: &Path, args: &[&str], exit: i32, code: &str) -> Value {
    let (o, value) = json(cwd, args);
    assert_eq!(o.status.code(), Some(exit), "{}", describe(args, &o));
    assert_eq!(value["code"], code, "{}", describe(args, &o));
    let detail = value["detail"].as_str().unwrap_or_default();
    assert!(!detail.is_empty(), "{}", describe(args, &o));
    assert_eq!(
        value.as_object().map(|o| o.len()),
        Some(2),
        "only code and detail: {value}"
    );
    value
}

/// Every entry under `dir`, recursively.
fn entries(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(read) = std::fs::read_dir(dir) {
        for entry in read.flatten() {
            let path = entry.path();
            found.push(path.display().to_string());
            if path.is_dir() {
                found.extend(entries(&path));
            }
        }
    }
    found
}

#[test]
fn every_command_prints_json_with_json() {
    let work = TempDir::new().unwrap();
    let dir = work.path();

    let init = ok(dir, &["init"]);
    assert_eq!(init["migration_files_written"], 2, "{init}");
    assert!(
        dir.join("tenancy-data/catalog.db").is_file(),
        "init creates the catalog"
    );

    let acme = ok(dir, &["tenant", "create", "acme", "--name", "Acme"]);
    assert_eq!(acme["slug"], "acme");
    let bulk = dir.join("slugs.txt");
    std::fs::write(&bulk, "b1\nb2\n").unwrap();
    let report = ok(dir, &["tenant", "create", "--bulk", bulk.to_str().unwrap()]);
    assert_eq!(
        report["created"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );

    let list = ok(dir, &["tenant", "list"]);
    assert_eq!(list.as_array().map(Vec::len), Some(3), "{list}");
    let show = ok(dir, &["tenant", "show", "acme"]);
    assert!(show["journal"].is_array(), "{show}");
    assert_eq!(
        ok(dir, &["tenant", "suspend", "acme"])["status"],
        "suspended"
    );
    assert_eq!(ok(dir, &["tenant", "resume", "acme"])["status"], "active");

    let mut create_user = tenancy(dir);
    create_user
        .args(["user", "create", "ada@guild.gg", "--json"])
        .env("TENANCY_PASSWORD", "correct horse battery");
    let o = create_user.output().unwrap();
    assert!(o.status.success(), "{}", describe(&["user", "create"], &o));
    let user: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(user["email"], "ada@guild.gg", "{user}");

    let key = ok(
        dir,
        &["keys", "create", "--tenant", "acme", "--role", "admin"],
    );
    let key_id = key["id"].as_str().unwrap().to_owned();
    assert!(key["key"].is_string(), "{key}");
    let platform = ok(dir, &["keys", "create", "--platform", "--label", "ci"]);
    assert!(platform["key"].is_string(), "{platform}");
    let keys = ok(dir, &["keys", "list", "--tenant", "acme"]);
    assert_eq!(keys.as_array().map(Vec::len), Some(1), "{keys}");
    assert_eq!(
        ok(dir, &["keys", "revoke", &key_id, "--tenant", "acme"])["revoked"],
        key_id.as_str()
    );

    assert!(ok(dir, &["signing-key"])["kid"].is_string());
    assert!(ok(dir, &["admin-token"])["admin_token"].is_string());

    ok(dir, &["migrate", "--dry-run"]);
    ok(dir, &["migrate"]);
    let status = ok(dir, &["status"]);
    assert_eq!(status["total"], 3, "{status}");
    assert_eq!(ok(dir, &["status", "--failed"]), Value::Array(vec![]));

    let deleted = ok(dir, &["tenant", "delete", "b2", "--yes"]);
    assert_eq!(deleted["slug"], "b2", "{deleted}");
    // Retrying a tenant that did not fail is refused, as a code object.
    fails(dir, &["tenant", "retry", "acme"], ERROR, "invalid_state");

    let completions = ok(dir, &["completions", "bash"]);
    assert!(completions["script"].as_str().unwrap().contains("tenancy"));

    // serve: one JSON line once it listens.
    let mut server = tenancy(dir)
        .args(["serve", "--listen", "127.0.0.1:0", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let started: Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("serve --json printed {line:?}: {e}"));
    assert!(
        started["listening"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:"),
        "{started}"
    );
    // The admin token was set by `admin-token` above, so none is printed.
    assert_eq!(started["admin_token"], Value::Null, "{started}");
}

#[test]
fn errors_are_code_objects_on_stdout_with_json_and_lines_on_stderr_without() {
    let work = TempDir::new().unwrap();
    let dir = work.path();
    ok(dir, &["tenant", "create", "acme"]);

    // The engine's errors carry the HTTP API's codes.
    fails(
        dir,
        &["tenant", "show", "nobody"],
        ERROR,
        "tenant_not_found",
    );
    fails(
        dir,
        &["tenant", "show", "Not A Slug"],
        ERROR,
        "invalid_slug",
    );
    fails(dir, &["tenant", "create", "acme"], ERROR, "tenant_exists");
    fails(
        dir,
        &["migrate", "--tenant", "Bad_Slug"],
        ERROR,
        "invalid_slug",
    );
    fails(
        dir,
        &["keys", "create", "--tenant", "acme", "--role", "emperor"],
        ERROR,
        "invalid_role",
    );
    let bulk = dir.join("slugs.txt");
    std::fs::write(&bulk, "ok-one\nBAD SLUG\n").unwrap();
    fails(
        dir,
        &["tenant", "create", "--bulk", bulk.to_str().unwrap()],
        ERROR,
        "invalid_input",
    );
    assert!(
        ok(dir, &["tenant", "list"])
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["slug"] != "ok-one"),
        "a refused bulk file creates nothing"
    );

    // What clap refuses is a usage error: exit 2, code "usage".
    fails(dir, &["tenant", "list", "--bogus"], USAGE, "usage");
    fails(dir, &["tenant", "show"], USAGE, "usage");
    fails(dir, &["frobnicate"], USAGE, "usage");
    fails(
        dir,
        &["tenant", "create", "x", "--mode", "sideways"],
        USAGE,
        "usage",
    );
    fails(dir, &["migrate", "--concurrency", "many"], USAGE, "usage");
    fails(
        dir,
        &["tenant", "create", "--bulk", "f", "--concurrency", "0"],
        USAGE,
        "usage",
    );
    fails(dir, &["keys", "create"], USAGE, "usage");
    fails(
        dir,
        &["keys", "create", "--tenant", "acme", "--platform"],
        USAGE,
        "usage",
    );
    assert!(
        ok(dir, &["tenant", "list"])
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["slug"] != "x"),
        "a refused command line creates nothing"
    );

    // A bad config file has its own code.
    std::fs::write(dir.join("tenancy.toml"), "no_such_setting = 1\n").unwrap();
    fails(dir, &["tenant", "list"], ERROR, "invalid_config");
    std::fs::remove_file(dir.join("tenancy.toml")).unwrap();

    // Without --json: nothing on stdout, one `error:` line on stderr, the same exit codes.
    let o = run(dir, &["tenant", "show", "nobody"]);
    assert_eq!(o.status.code(), Some(ERROR), "{}", describe(&["show"], &o));
    assert!(o.stdout.is_empty(), "{}", describe(&["show"], &o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.starts_with("error: no tenant with slug \"nobody\""),
        "{stderr}"
    );
    let o = run(dir, &["tenant", "list", "--bogus"]);
    assert_eq!(o.status.code(), Some(USAGE), "{}", describe(&["list"], &o));
    assert!(o.stdout.is_empty(), "{}", describe(&["list"], &o));
    // Help and version are not errors; no command at all is.
    assert_eq!(run(dir, &["--help"]).status.code(), Some(0));
    assert_eq!(run(dir, &["--version"]).status.code(), Some(0));
    assert_eq!(run(dir, &[]).status.code(), Some(USAGE));
    fails(dir, &["tenant"], USAGE, "usage");
}

#[test]
fn delete_off_a_terminal_needs_yes_and_deletes_nothing_without_it() {
    let work = TempDir::new().unwrap();
    let dir = work.path();
    let acme = ok(dir, &["tenant", "create", "acme"]);
    let id = acme["id"].as_str().unwrap();
    let files_before = entries(&dir.join("tenancy-data/tenants"));
    assert!(
        files_before.iter().any(|f| f.contains(id)),
        "{files_before:?}"
    );

    let refused = fails(
        dir,
        &["tenant", "delete", "acme"],
        USAGE,
        "confirmation_required",
    );
    assert!(
        refused["detail"].as_str().unwrap().contains("--yes"),
        "{refused}"
    );
    let o = run(dir, &["tenant", "delete", "acme"]);
    assert_eq!(
        o.status.code(),
        Some(USAGE),
        "{}",
        describe(&["delete"], &o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--yes"),
        "{}",
        describe(&["delete"], &o)
    );

    let still = ok(dir, &["tenant", "show", "acme"]);
    assert_eq!(still["status"], "active", "{still}");
    assert_eq!(entries(&dir.join("tenancy-data/tenants")), files_before);

    // An unknown tenant is reported as such, confirmation or not.
    fails(
        dir,
        &["tenant", "delete", "nobody"],
        ERROR,
        "tenant_not_found",
    );
    fails(
        dir,
        &["tenant", "delete", "nobody", "--yes"],
        ERROR,
        "tenant_not_found",
    );

    ok(dir, &["tenant", "delete", "acme", "--yes"]);
    fails(dir, &["tenant", "show", "acme"], ERROR, "tenant_not_found");
}

#[test]
fn read_only_commands_refuse_a_folder_without_a_catalog_and_create_nothing() {
    let work = TempDir::new().unwrap();
    let dir = work.path();
    let elsewhere = dir.join("not-here");
    let elsewhere_s = elsewhere.to_str().unwrap();
    let commands: &[&[&str]] = &[
        &["status"],
        &["status", "--failed"],
        &["tenant", "list"],
        &["tenant", "show", "acme"],
        &["tenant", "suspend", "acme"],
        &["tenant", "resume", "acme"],
        &["tenant", "retry", "acme"],
        &["tenant", "delete", "acme", "--yes"],
        &["migrate"],
        &["migrate", "--dry-run"],
        &["keys", "list"],
        &["keys", "revoke", "k_123"],
        &["keys", "create", "--tenant", "acme"],
    ];
    for args in commands {
        let detail = fails(dir, args, ERROR, "no_catalog");
        assert!(
            detail["detail"]
                .as_str()
                .unwrap()
                .contains("tenancy-data/catalog.db"),
            "{detail}"
        );
        let mut with_dir = vec!["--data-dir", elsewhere_s];
        with_dir.extend_from_slice(args);
        fails(dir, &with_dir, ERROR, "no_catalog");
        let o = run(dir, args);
        assert_eq!(o.status.code(), Some(ERROR));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("run `tenancy init` or `tenancy serve`"),
            "{}",
            describe(args, &o)
        );
    }
    assert_eq!(entries(dir), Vec::<String>::new(), "nothing was created");

    // A bad slug is refused before the data folder is opened, even by a command that
    // would create the catalog.
    fails(
        dir,
        &["tenant", "create", "Not A Slug"],
        ERROR,
        "invalid_slug",
    );
    fails(
        dir,
        &["tenant", "show", "Not A Slug"],
        ERROR,
        "invalid_slug",
    );
    assert_eq!(entries(dir), Vec::<String>::new(), "nothing was created");

    // A command that creates something starts the fleet.
    ok(dir, &["tenant", "create", "acme"]);
    assert!(dir.join("tenancy-data/catalog.db").is_file());
    assert_eq!(
        ok(dir, &["tenant", "list"]).as_array().map(Vec::len),
        Some(1)
    );
}

#[test]
fn status_failed_and_migrate_exit_3_when_they_complete_with_failures() {
    let work = TempDir::new().unwrap();
    let dir = work.path();
    ok(dir, &["init"]);
    ok(dir, &["tenant", "create", "acme"]);
    ok(dir, &["tenant", "create", "bree"]);
    // Data that the next migration's constraint refuses, in one tenant only.
    let acme = ok(dir, &["tenant", "show", "acme"]);
    let file = entries(&dir.join("tenancy-data/tenants"))
        .into_iter()
        .find(|f| f.contains(acme["id"].as_str().unwrap()) && f.ends_with(".db"))
        .expect("acme's database file");
    let conn = rusqlite::Connection::open(&file).unwrap();
    conn.execute(
        "INSERT INTO members (id, name, class) VALUES ('a', 'Thrall', 'shaman'), ('b', 'Drek', 'shaman')",
        [],
    )
    .unwrap();
    drop(conn);
    std::fs::write(
        dir.join("migrations/0003_unique_classes.sql"),
        "CREATE UNIQUE INDEX members_class_key ON members (class);\n",
    )
    .unwrap();

    let (o, report) = json(dir, &["migrate", "--canary", "0"]);
    assert_eq!(
        o.status.code(),
        Some(PARTIAL),
        "{}",
        describe(&["migrate"], &o)
    );
    assert_eq!(
        report["failed"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    assert_eq!(report["migrated"], 1, "{report}");

    let (o, failed) = json(dir, &["status", "--failed"]);
    assert_eq!(
        o.status.code(),
        Some(PARTIAL),
        "{}",
        describe(&["status"], &o)
    );
    assert_eq!(failed[0]["slug"], "acme", "{failed}");
    // Plain `status` reports the failure but exits 0: it answered the question asked.
    let (o, _) = json(dir, &["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&["status"], &o));
}

#[test]
fn completions_for_each_shell_and_an_unknown_shell_refused() {
    let work = TempDir::new().unwrap();
    let dir = work.path();
    for shell in ["bash", "zsh", "fish"] {
        let o = run(dir, &["completions", shell]);
        assert!(o.status.success(), "{}", describe(&[shell], &o));
        let script = String::from_utf8_lossy(&o.stdout);
        assert!(script.contains("tenancy"), "{shell}: {script}");
        assert!(script.contains("migrate"), "{shell}: subcommands completed");
    }
    let o = run(dir, &["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(USAGE), "{}", describe(&["tcsh"], &o));
    assert!(o.stdout.is_empty());
    fails(dir, &["completions", "tcsh"], USAGE, "usage");
    fails(dir, &["completions"], USAGE, "usage");
    assert_eq!(
        entries(dir),
        Vec::<String>::new(),
        "completions touch nothing"
    );
}

/// Runs `tenancy args` on a terminal (a pseudo-terminal from util-linux `script`), typing
/// `typed` and a newline at it; gives the exit code.
fn on_a_terminal(cwd: &Path, args: &str, typed: &str) -> Option<i32> {
    use std::io::Write;
    let command = format!("{} {args}", env!("CARGO_BIN_EXE_tenancy"));
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux `script` gives the command a terminal");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{typed}\n").as_bytes()).unwrap();
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    let screen = String::from_utf8_lossy(&o.stdout);
    assert!(
        screen.contains("Type its slug to confirm"),
        "tenancy {args}: no question asked:\n{screen}"
    );
    o.status.code()
}

#[test]
fn delete_on_a_terminal_asks_for_the_slug() {
    let work = TempDir::new().unwrap();
    let dir = work.path();
    ok(dir, &["tenant", "create", "acme"]);

    assert_eq!(on_a_terminal(dir, "tenant delete acme", "acm"), Some(ERROR));
    assert_eq!(ok(dir, &["tenant", "show", "acme"])["status"], "active");
    assert_eq!(on_a_terminal(dir, "tenant delete acme", ""), Some(ERROR));
    assert_eq!(ok(dir, &["tenant", "show", "acme"])["status"], "active");

    assert_eq!(on_a_terminal(dir, "tenant delete acme", "acme"), Some(0));
    fails(dir, &["tenant", "show", "acme"], ERROR, "tenant_not_found");
}

#[test]
fn an_engine_error_has_the_http_code_and_its_full_detail_without_a_log_line() {
    let work = TempDir::new().unwrap();
    let dir = work.path();
    ok(dir, &["init"]);
    ok(dir, &["tenant", "create", "acme"]);
    let file = dir.join("migrations/0001_roster.sql");
    let mut sql = std::fs::read_to_string(&file).unwrap();
    sql.push_str("-- edited after it was applied\n");
    std::fs::write(&file, sql).unwrap();

    let (o, error) = json(dir, &["migrate"]);
    assert_eq!(
        o.status.code(),
        Some(ERROR),
        "{}",
        describe(&["migrate"], &o)
    );
    // The HTTP API's code; the detail the HTTP API keeps for the log is the operator's here.
    assert_eq!(error["code"], "schema_invalid", "{error}");
    assert!(
        error["detail"]
            .as_str()
            .unwrap()
            .contains("0001_roster.sql"),
        "{error}"
    );
    assert!(
        o.stderr.is_empty(),
        "no log line beside the error: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}
