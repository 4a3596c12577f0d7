//! `tenancy settings SLUG [--set FILE|-]` as a script sees it: the document on stdout, the
//! HTTP API's error codes with `--json` and the documented exit codes, nothing written
//! after a refusal; and the settings schema of the configuration (`[settings] schema`,
//! relative to the config file, or `TENANCY_SETTINGS_SCHEMA`): a custom one replaces the
//! branding schema, and one that does not compile stops every command, `serve` included,
//! naming the file. Every test runs the real binary on its own folder.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

const ERROR: i32 = 1;

/// The binary run from `cwd`, with no `TENANCY_*` variable of the test's environment.
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

fn describe(args: &[&str], o: &Output) -> String {
    format!(
        "tenancy {}: {}\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `cmd` with these arguments and `--json`: the output and stdout's one JSON document.
fn json_of(mut cmd: Command, args: &[&str]) -> (Output, Value) {
    let o = cmd.args(args).arg("--json").output().unwrap();
    let value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", describe(args, &o)));
    (o, value)
}

fn ok(cwd: &Path, args: &[&str]) -> Value {
    let (o, value) = json_of(tenancy(cwd), args);
    assert!(o.status.success(), "{}", describe(args, &o));
    value
}

/// A command that must fail with exit 1 and this code; its error object.
fn fails(cmd: Command, args: &[&str], code: &str) -> Value {
    let (o, value) = json_of(cmd, args);
    assert_eq!(o.status.code(), Some(ERROR), "{}", describe(args, &o));
    assert_eq!(value["code"], code, "{}", describe(args, &o));
    assert!(!value["detail"].as_str().unwrap_or_default().is_empty());
    value
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    std::fs::write(dir.join(name), text).unwrap();
    name.to_owned()
}

#[test]
fn settings_are_printed_checked_and_written() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    ok(cwd, &["tenant", "create", "acme"]);
    assert_eq!(ok(cwd, &["settings", "acme"]), json!({}));

    let branding = json!({
        "display_name": "Acme Raiders",
        "logo_url": "https://cdn.acme.gg/logo.png",
        "primary_color": "#00aa55",
        "font": "Roboto",
    });
    let good = write(cwd, "good.json", &branding.to_string());
    assert_eq!(ok(cwd, &["settings", "acme", "--set", &good]), branding);
    assert_eq!(ok(cwd, &["settings", "acme"]), branding);

    // Without --json the document is printed all the same.
    let o = tenancy(cwd).args(["settings", "acme"]).output().unwrap();
    assert!(o.status.success());
    assert_eq!(
        serde_json::from_slice::<Value>(&o.stdout).unwrap(),
        branding
    );

    // Refusals: the HTTP API's codes, exit 1, nothing written.
    for (name, text, code) in [
        (
            "colour.json",
            r##"{"primary_color": "#00aa5"}"##,
            "invalid_settings",
        ),
        (
            "http.json",
            r#"{"logo_url": "http://cdn.acme.gg/logo.png"}"#,
            "invalid_settings",
        ),
        ("extra.json", r#"{"motto": "raid on"}"#, "invalid_settings"),
        (
            "type.json",
            r#"{"display_name": false}"#,
            "invalid_settings",
        ),
        ("broken.json", r#"{"font": "Lato""#, "malformed_json"),
        ("array.json", r#"[{"font": "Lato"}]"#, "invalid_body"),
    ] {
        let file = write(cwd, name, text);
        let args = ["settings", "acme", "--set", file.as_str()];
        let error = fails(tenancy(cwd), &args, code);
        if code == "invalid_settings" {
            let detail = error["detail"].as_str().unwrap();
            assert!(detail.contains("invalid settings at"), "{detail}");
        }
    }
    let error = fails(
        tenancy(cwd),
        &["settings", "acme", "--set", "colour.json"],
        "invalid_settings",
    );
    assert!(
        error["detail"].as_str().unwrap().contains("/primary_color"),
        "{error}"
    );
    let huge = json!({ "display_name": "x".repeat(100 * 1024) }).to_string();
    let file = write(cwd, "huge.json", &huge);
    fails(
        tenancy(cwd),
        &["settings", "acme", "--set", &file],
        "settings_too_large",
    );
    fails(
        tenancy(cwd),
        &["settings", "acme", "--set", "missing.json"],
        "io_error",
    );
    fails(
        tenancy(cwd),
        &["settings", "nobody", "--set", &good],
        "tenant_not_found",
    );
    assert_eq!(
        ok(cwd, &["settings", "acme"]),
        branding,
        "refusals wrote nothing"
    );

    // `-` reads stdin.
    let mut child = tenancy(cwd)
        .args(["settings", "acme", "--set", "-", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"font": "Lato"}"#)
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "{}",
        describe(&["settings --set -"], &o)
    );
    assert_eq!(ok(cwd, &["settings", "acme"]), json!({ "font": "Lato" }));
}

#[test]
fn a_configured_schema_replaces_the_branding_schema() {
    let dir = tempfile::tempdir().unwrap();
    let config_dir = dir.path().join("etc");
    std::fs::create_dir(&config_dir).unwrap();
    let schema = json!({
        "type": "object",
        "properties": { "locale": { "enum": ["en", "fr"] } },
        "required": ["locale"],
        "additionalProperties": false,
    });
    write(&config_dir, "guild.schema.json", &schema.to_string());
    write(
        &config_dir,
        "tenancy.toml",
        "data_dir = \"data\"\n[settings]\nschema = \"guild.schema.json\"\n",
    );
    let config = config_dir.join("tenancy.toml");
    let config = config.to_str().unwrap();
    // Run from elsewhere: the schema's path is relative to the config file.
    let cwd = dir.path();
    ok(cwd, &["--config", config, "tenant", "create", "acme"]);
    write(cwd, "fr.json", r#"{"locale": "fr"}"#);
    write(cwd, "branding.json", r##"{"primary_color": "#000000"}"##);
    assert_eq!(
        ok(
            cwd,
            &["--config", config, "settings", "acme", "--set", "fr.json"]
        ),
        json!({ "locale": "fr" })
    );
    let args = [
        "--config",
        config,
        "settings",
        "acme",
        "--set",
        "branding.json",
    ];
    fails(tenancy(cwd), &args, "invalid_settings");

    // The environment names another schema, which wins over the file.
    write(cwd, "open.schema.json", r#"{"type": "object"}"#);
    let mut cmd = tenancy(cwd);
    cmd.env("TENANCY_SETTINGS_SCHEMA", cwd.join("open.schema.json"));
    let (o, stored) = json_of(cmd, &args);
    assert!(o.status.success(), "{}", describe(&args, &o));
    assert_eq!(stored, json!({ "primary_color": "#000000" }));
}

#[test]
fn a_schema_that_does_not_compile_stops_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    ok(cwd, &["tenant", "create", "acme"]);
    write(cwd, "bad.schema.json", r#"{"type": "objekt"}"#);
    write(cwd, "broken.schema.json", r#"{"type": "#);
    write(
        cwd,
        "tenancy.toml",
        "data_dir = \"tenancy-data\"\n[settings]\nschema = \"bad.schema.json\"\n",
    );
    for args in [
        &["settings", "acme"][..],
        &["tenant", "list"],
        &["serve", "--listen", "127.0.0.1:0"],
    ] {
        let error = fails(tenancy(cwd), args, "invalid_settings_schema");
        let detail = error["detail"].as_str().unwrap();
        assert!(detail.contains("bad.schema.json"), "{detail}");
    }
    let mut cmd = tenancy(cwd);
    cmd.env("TENANCY_SETTINGS_SCHEMA", "broken.schema.json");
    let error = fails(cmd, &["settings", "acme"], "invalid_settings_schema");
    assert!(error["detail"]
        .as_str()
        .unwrap()
        .contains("broken.schema.json"));
    let mut cmd = tenancy(cwd);
    cmd.env("TENANCY_SETTINGS_SCHEMA", "absent.schema.json");
    let error = fails(cmd, &["settings", "acme"], "invalid_config");
    assert!(error["detail"]
        .as_str()
        .unwrap()
        .contains("absent.schema.json"));
}
