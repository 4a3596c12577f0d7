//! `tenancy serve` checks its open-files budget at start: each open tenant database costs
//! three file handles, so a `cache.max_open` the process's limit cannot hold is refused
//! with what to change, rather than answering errors from some tenant on.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `tenancy serve` binary under a 512 open-files limit (soft and hard), with
/// `cache.max_open` set, on a fresh data folder and a free port.
fn serve_with_limit(dir: &Path, max_open: u64) -> Child {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(r#"ulimit -n 512 && exec "$0" serve --listen 127.0.0.1:0"#)
        .arg(env!("CARGO_BIN_EXE_tenancy"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TENANCY_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(dir)
        .env("TENANCY_DATA_DIR", dir.join("data"))
        .env("TENANCY_ADMIN_TOKEN", "an-admin-token-of-the-test")
        .env("TENANCY_CACHE_MAX_OPEN", max_open.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tenancy serve")
}

#[test]
fn serve_refuses_a_max_open_the_open_files_limit_cannot_hold() {
    if !Path::new("/proc/self/limits").exists() {
        eprintln!("skipped: no /proc/self/limits on this system");
        return;
    }
    let dir = tempfile::tempdir().unwrap();

    // 1,000 open tenants need 3,064 files; 512 hold 149.
    let mut child = serve_with_limit(dir.path(), 1000);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("tenancy serve started with cache.max_open = 1000 under a 512 open-files limit");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("cache.max_open = 1000 needs 3064 open files"),
        "{stderr}"
    );
    assert!(stderr.contains("may open 512"), "{stderr}");
    assert!(stderr.contains("at most 149"), "{stderr}");

    // What fits starts.
    let mut child = serve_with_limit(dir.path(), 149);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let started = loop {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            break false;
        }
        if line.contains("tenancy serving on") {
            break true;
        }
    };
    child.kill().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    child.wait().unwrap();
    assert!(started, "{stderr}");
}

#[test]
fn serve_refuses_a_memory_budget_that_cannot_hold_max_open_open_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenancy"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TENANCY_") {
            cmd.env_remove(key);
        }
    }
    // 1,000 open tenants (the default) in 256 MiB: a soak measured 315 MiB against it.
    let out = cmd
        .current_dir(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("TENANCY_DATA_DIR", dir.path().join("data"))
        .env("TENANCY_ADMIN_TOKEN", "an-admin-token-of-the-test")
        .env("TENANCY_MEMORY_BUDGET_MIB", "256")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("memory.budget_mib = 256 cannot hold cache.max_open = 1000"),
        "{stderr}"
    );
    assert!(stderr.contains("at most 513"), "{stderr}");
}
