//! Client connections against the real binary under a low open-files limit: the server
//! raises its soft limit to the hard one at start, and a flood of idle and half-sent
//! sockets far past the limit leaves `/healthz` and a tenant's reads answering.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::AsyncWriteExt;

const ADMIN_TOKEN: &str = "connections-admin-token-0123456789";
/// A generous bound for a liveness check.
const LIVENESS: Duration = Duration::from_secs(10);

/// `tenancy --data-dir …` with no `TENANCY_*` of the test's environment, under
/// `prlimit --nofile=SOFT:HARD`.
fn command(dir: &TempDir, nofile: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("prlimit");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TENANCY_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(dir.path())
        .stdin(Stdio::null())
        .arg(format!("--nofile={nofile}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_tenancy"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(args)
        .env("TENANCY_ADMIN_TOKEN", ADMIN_TOKEN)
        // Few open tenants, so that `serve` fits its open-files budget at a low limit.
        .env("TENANCY_CACHE_MAX_OPEN", "16");
    cmd
}

/// A `tenancy serve` child, killed when dropped.
struct Serve {
    child: Child,
    addr: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A data folder with one tenant, `acme`.
fn fleet(dir: &TempDir) {
    let out = command(dir, "1024:1024", &["tenant", "create", "acme"])
        .output()
        .expect("run tenancy (is prlimit installed?)");
    assert!(out.status.success(), "{out:?}");
}

fn serve(dir: &TempDir, nofile: &str) -> Serve {
    let mut child = command(dir, nofile, &["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tenancy serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut serve = Serve {
        child,
        addr: String::new(),
    };
    serve.addr = loop {
        let line = lines
            .next()
            .expect("tenancy serve ended before it listened")
            .expect("read stdout");
        if let Some(rest) = line.strip_prefix("tenancy serving on http://") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    serve
}

/// The soft and hard open-files limits of a running process.
fn open_files_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut fields = line["Max open files".len()..].split_whitespace();
    (
        fields.next().unwrap().to_owned(),
        fields.next().unwrap().to_owned(),
    )
}

#[test]
fn serve_raises_the_open_files_soft_limit_to_the_hard_limit() {
    let dir = tempfile::tempdir().unwrap();
    fleet(&dir);
    let server = serve(&dir, "256:4096");
    assert_eq!(
        open_files_limits(server.child.id()),
        ("4096".to_owned(), "4096".to_owned())
    );
}

/// 1,100 sockets, half silent and half with a request head sent in part, against a
/// server whose open-files limit is 256: `/healthz` and a tenant's read still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_flood_past_the_open_files_limit_locks_no_one_out() {
    let dir = tempfile::tempdir().unwrap();
    fleet(&dir);
    let server = serve(&dir, "256:256");
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    let get = |path: &'static str| {
        let request = client
            .get(format!("{base}{path}"))
            .bearer_auth(ADMIN_TOKEN)
            .send();
        async move {
            tokio::time::timeout(LIVENESS, request)
                .await
                .unwrap_or_else(|_| panic!("{path} did not answer within {LIVENESS:?}"))
                .expect(path)
                .status()
                .as_u16()
        }
    };
    assert_eq!(get("/healthz").await, 200);
    assert_eq!(get("/t/acme/v1/data/members").await, 200);

    let mut flood = Vec::new();
    for i in 0..1_100 {
        let connect = tokio::net::TcpStream::connect(&server.addr);
        let Ok(Ok(mut socket)) = tokio::time::timeout(LIVENESS, connect).await else {
            panic!("connection {i} was never accepted");
        };
        if i % 2 == 0 {
            let _ = socket
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: loc")
                .await;
        }
        flood.push(socket);
    }
    for _ in 0..10 {
        // A fresh connection each time: a kept-alive one would prove nothing.
        let fresh = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        for path in ["/healthz", "/t/acme/v1/data/members"] {
            let request = fresh
                .get(format!("{base}{path}"))
                .bearer_auth(ADMIN_TOKEN)
                .send();
            let status = tokio::time::timeout(LIVENESS, request)
                .await
                .unwrap_or_else(|_| panic!("{path} did not answer during the flood"))
                .expect(path)
                .status();
            assert_eq!(status, 200, "{path} during the flood");
        }
    }
    drop(flood);
}
