//! Plans from the command line: the guild example's `free` and `premium` plans through
//! `tenancy plans`, `tenant create --plan` and `tenant update`, and malformed plans or
//! flags refused with the setting named and nothing written.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/guild/tenancy.toml")
}

/// `tenancy --json ARGS` with the config and a data folder of the test's own.
fn tenancy(config: &Path, data: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenancy"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TENANCY_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .arg("--json")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn refused(out: &Output) -> (i32, Value) {
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    (
        out.status.code().unwrap(),
        serde_json::from_slice(&out.stdout).unwrap(),
    )
}

#[test]
fn the_guild_example_plans_work_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = example();

    let plans = ok(&tenancy(&config, &data, &["plans"]));
    assert_eq!(plans["default"], "free");
    let names: Vec<&str> = plans["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["free", "premium"]);
    assert_eq!(plans["data"][0]["limits"]["owned_tenants"], 1);
    assert_eq!(plans["data"][1]["price"]["base"], "9.00");

    let created = ok(&tenancy(&config, &data, &["tenant", "create", "stormwind"]));
    assert_eq!(created["plan"], "free", "the default plan: {created}");
    let created = ok(&tenancy(
        &config,
        &data,
        &["tenant", "create", "ironforge", "--plan", "premium"],
    ));
    assert_eq!(created["plan"], "premium");
    let (code, e) = refused(&tenancy(
        &config,
        &data,
        &["tenant", "create", "gnomer", "--plan", "gold"],
    ));
    assert_eq!((code, e["code"].as_str()), (1, Some("unknown_plan")), "{e}");
    let listed = ok(&tenancy(&config, &data, &["tenant", "list"]));
    assert_eq!(
        listed.as_array().unwrap().len(),
        2,
        "nothing of the refused tenant: {listed}"
    );

    let updated = ok(&tenancy(
        &config,
        &data,
        &[
            "tenant",
            "update",
            "stormwind",
            "--plan",
            "premium",
            "--limit",
            "members=50",
            "--feature",
            "bot=off",
            "--budget",
            "265.00",
            "--subscription-ends",
            "2027-01-31T00:00:00Z",
        ],
    ));
    let t = &updated["tenant"];
    assert_eq!(t["plan"], "premium", "{updated}");
    assert_eq!(t["plan_overrides"]["limits"]["members"], 50);
    assert_eq!(t["plan_overrides"]["features"]["bot"], false);
    assert_eq!(t["plan_overrides"]["budget"], "265.00");
    assert_eq!(t["subscription_ends_at"], "2027-01-31T00:00:00Z");
    let shown = ok(&tenancy(&config, &data, &["tenant", "show", "stormwind"]));
    let journaled = shown["journal"].as_array().unwrap().iter().any(|j| {
        j["event"] == "plan.update"
            && j["detail"]
                .as_str()
                .unwrap_or("")
                .contains("plan free -> premium")
    });
    assert!(journaled, "{shown}");

    // Malformed flags: a usage error (exit 2), nothing changed.
    for args in [
        &["tenant", "update", "stormwind", "--limit", "members"][..],
        &["tenant", "update", "stormwind", "--limit", "members=lots"],
        &["tenant", "update", "stormwind", "--feature", "bot=maybe"],
        &["tenant", "update", "stormwind", "--budget", "12,50"],
        &["tenant", "update", "stormwind", "--trial-ends", "next week"],
    ] {
        let (code, e) = refused(&tenancy(&config, &data, args));
        assert_eq!(
            (code, e["code"].as_str()),
            (2, Some("invalid_argument")),
            "{args:?}: {e}"
        );
    }
    for (args, expected) in [
        (
            &["tenant", "update", "stormwind", "--limit", "guilds=1"][..],
            "invalid_input",
        ),
        (
            &["tenant", "update", "stormwind", "--plan", "gold"],
            "unknown_plan",
        ),
        (&["tenant", "update", "stormwind"], "invalid_input"),
    ] {
        let (code, e) = refused(&tenancy(&config, &data, args));
        assert_eq!(
            (code, e["code"].as_str()),
            (1, Some(expected)),
            "{args:?}: {e}"
        );
    }
    let after = ok(&tenancy(&config, &data, &["tenant", "show", "stormwind"]));
    assert_eq!(
        after["plan_overrides"], t["plan_overrides"],
        "refusals changed nothing"
    );
}

/// `tenancy serve` suspends a tenant whose trial ended, within a check interval, and
/// `tenancy status` says so with the reason.
#[test]
fn serve_suspends_a_tenant_whose_trial_ended() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = example();
    ok(&tenancy(&config, &data, &["tenant", "create", "trial"]));
    ok(&tenancy(&config, &data, &["tenant", "create", "paying"]));
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    ok(&tenancy(
        &config,
        &data,
        &["tenant", "update", "trial", "--trial-ends", &soon],
    ));
    let later = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    ok(&tenancy(
        &config,
        &data,
        &["tenant", "update", "paying", "--trial-ends", &later],
    ));

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenancy"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TENANCY_") {
            cmd.env_remove(k);
        }
    }
    let mut serve = cmd
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("TENANCY_ADMIN_TOKEN", "admin-token-0123456789")
        .env("TENANCY_LAPSE_CHECK_SECS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(serve.stdout.take().unwrap()).lines();
    while let Some(Ok(line)) = lines.next() {
        if line.starts_with("tenancy serving on") {
            break;
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        let status = ok(&tenancy(&config, &data, &["status"]));
        if !status["lapsed"].as_array().unwrap().is_empty() || std::time::Instant::now() > deadline
        {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    let _ = serve.kill();
    let _ = serve.wait();
    let lapsed = status["lapsed"].as_array().unwrap();
    assert_eq!(lapsed.len(), 1, "{status}");
    assert_eq!(lapsed[0]["slug"], "trial");
    assert!(
        lapsed[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("trial ended at"),
        "{status}"
    );
    let paying = ok(&tenancy(&config, &data, &["tenant", "show", "paying"]));
    assert_eq!(paying["status"], "active");
}

#[test]
fn malformed_plans_are_refused_with_the_setting_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (toml, expected) in [
        ("[billing]\ndefault_plan = \"free\"\n", "the default plan \"free\" is not configured"),
        ("[[plans]]\nname = \"Free Plan\"\n", "plan name"),
        ("[[plans]]\nname = \"a\"\n[[plans]]\nname = \"a\"\n", "configured twice"),
        ("[[plans]]\nname = \"a\"\n[plans.limits]\nmembers = -3\n", "members"),
        ("[[plans]]\nname = \"a\"\n[plans.limits]\nguilds = 1\n", "guilds"),
        ("[[plans]]\nname = \"a\"\n[[plans.limits.rows]]\nname = \"members\"\ntable = \"t\"\nmax = 1\n", "is taken"),
        ("[[plans]]\nname = \"a\"\n[plans.price]\nbase = \"ten\"\n", "not an amount"),
        ("[[plans]]\nname = \"a\"\n[plans.price.per_unit]\nhugs = \"1\"\n", "hugs"),
        ("[[plans]]\nname = \"a\"\nstore = \"nowhere\"\n", "no store \"nowhere\""),
        ("[[plans]]\nname = \"a\"\nmode = \"cloud\"\n", "cloud"),
        ("[[plans]]\nname = \"a\"\n[[plans.retention]]\ntable = \"bids\"\ncolumn = \"created_at\"\ndays = 0\n", "at least a day"),
        ("[billing]\nfeature_tables = { raids = \"analytics\" }\n", "which no plan sets"),
    ] {
        let config = dir.path().join("tenancy.toml");
        std::fs::write(&config, toml).unwrap();
        let (code, e) = refused(&tenancy(&config, &data, &["plans"]));
        assert_eq!(e["code"], "invalid_config", "{toml}: {e}");
        assert!(e["detail"].as_str().unwrap().contains(expected), "{toml}: {e}");
        assert_eq!(code, 1, "{toml}");
    }
    assert!(!data.exists(), "a refused config created the data folder");
}
