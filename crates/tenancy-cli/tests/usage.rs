//! `tenancy usage` and `tenancy cost` as a script sees them: a storage sample taken by one
//! process and reported by the next, CSV, refused dates and tenants, the `[usage]`
//! settings, and a budget alert raised once however often the cost is asked for.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

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

fn json(cwd: &Path, args: &[&str]) -> (Output, Value) {
    let mut all = args.to_vec();
    all.push("--json");
    let o = run(cwd, &all);
    let value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", describe(&all, &o)));
    (o, value)
}

fn ok(cwd: &Path, args: &[&str]) -> Value {
    let (o, value) = json(cwd, args);
    assert!(o.status.success(), "{}", describe(args, &o));
    value
}

fn fails(cwd: &Path, args: &[&str], exit: i32, code: &str) {
    let (o, value) = json(cwd, args);
    assert_eq!(o.status.code(), Some(exit), "{}", describe(args, &o));
    assert_eq!(value["code"], code, "{}", describe(args, &o));
}

const PLANS: &str = r#"
[billing]
default_plan = "metered"

[[plans]]
name = "metered"
budget = "10.00"
[plans.price]
currency = "EUR"
base = "5.00"
[plans.price.per_unit]
storage_bytes = "1.00"
requests = "0.01"
"#;

#[test]
fn usage_and_cost_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    ok(dir, &["init"]);
    let config = dir.join("tenancy.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(PLANS);
    std::fs::write(&config, text).unwrap();
    ok(dir, &["tenant", "create", "g"]);

    let empty = ok(dir, &["usage", "g"]);
    assert_eq!(empty["days"], serde_json::json!([]), "{empty}");
    let today = chrono::Utc::now().date_naive();
    assert_eq!(empty["to"], today.to_string());

    // One process measures and records; the next reads it from the catalog.
    let sampled = ok(dir, &["usage", "g", "--sample"]);
    let bytes = sampled["totals"]["storage_bytes"].as_u64().unwrap();
    assert!(bytes > 0, "{sampled}");
    let again = ok(dir, &["usage", "g"]);
    assert_eq!(again["totals"]["storage_bytes"], bytes);
    let csv = run(dir, &["usage", "g", "--csv"]);
    assert!(csv.status.success());
    assert_eq!(
        String::from_utf8(csv.stdout).unwrap(),
        format!("day,metric,label,value\n{today},storage_bytes,,{bytes}\n")
    );
    let table = run(dir, &["usage", "g"]);
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.contains("STORAGE_BYTES"), "{table}");

    fails(
        dir,
        &["usage", "g", "--from", "2026-02-30"],
        2,
        "invalid_date_range",
    );
    fails(
        dir,
        &["usage", "g", "--from", "2026-03-02", "--to", "2026-03-01"],
        2,
        "invalid_date_range",
    );
    fails(dir, &["usage", "nobody"], 1, "tenant_not_found");
    fails(dir, &["usage", "Not A Slug"], 1, "invalid_slug");
    fails(dir, &["cost", "nobody"], 1, "tenant_not_found");

    // 5.00 of a 10.00 budget from the base price alone: the 50 % alert, once.
    for _ in 0..2 {
        let cost = ok(dir, &["cost", "g"]);
        assert_eq!(cost["currency"], "EUR", "{cost}");
        assert_eq!(cost["budget"], "10.00");
        let mtd: tenancy::Money = cost["mtd"].as_str().unwrap().parse().unwrap();
        assert!(mtd >= "5.00".parse().unwrap() && mtd < "5.01".parse().unwrap());
        let alerts: Vec<u64> = cost["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["threshold"].as_u64().unwrap())
            .collect();
        assert_eq!(alerts, vec![50], "{cost}");
    }
    let text = run(dir, &["cost", "g"]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("50% of the budget reached"), "{text}");
    assert!(text.contains("month to date  5.0"), "{text}");

    let o = tenancy(dir)
        .args(["usage", "g", "--json"])
        .env("TENANCY_USAGE_FLUSH_SECS", "0")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", describe(&["usage"], &o));
    let err: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(err["code"], "invalid_config");
}

/// `tenancy serve` counts in memory and writes at its clean shutdown: every request of a
/// concurrent burst is in the catalog after `SIGTERM`, with no periodic flush in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_writes_every_request_it_counted_when_it_stops() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    ok(dir, &["init"]);
    ok(dir, &["tenant", "create", "g"]);
    let key = ok(
        dir,
        &[
            "keys",
            "create",
            "--tenant",
            "g",
            "--role",
            "viewer",
            "--label",
            "store:T01",
        ],
    );
    let key = key["key"].as_str().unwrap().to_owned();

    let mut child = tenancy(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("TENANCY_USAGE_FLUSH_SECS", "3600")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("serve ended before it listened")
            .unwrap();
        if let Some(rest) = line.strip_prefix("tenancy serving on http://") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));

    const N: usize = 300;
    let client = reqwest::Client::new();
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..N {
        let (client, addr, key) = (client.clone(), addr.clone(), key.clone());
        burst.spawn(async move {
            let resp = client
                .get(format!("http://{addr}/t/g/v1/data/members?limit=1"))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
        });
    }
    while let Some(done) = burst.join_next().await {
        done.unwrap();
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "a clean shutdown: {status}");

    let usage = ok(dir, &["usage", "g"]);
    assert_eq!(usage["totals"]["requests"], N, "{usage}");
    assert_eq!(usage["totals"]["reads"], N, "{usage}");
    assert_eq!(usage["requests_by_label"]["store:T01"], N, "{usage}");
}
