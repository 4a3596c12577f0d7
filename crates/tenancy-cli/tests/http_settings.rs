//! Bad values of the metrics, CORS, body limit and log settings: `tenancy serve` refuses to
//! start, naming the setting, and leaves nothing behind.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `tenancy serve` in `dir` with `env`; it must exit (not serve) within 30 s.
fn serve_refused(dir: &Path, env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenancy"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TENANCY_") {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("TENANCY_ADMIN_TOKEN", "admin-token-0123456789")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success(), "{env:?}: exited 0");
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{env:?}: the server started");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bad_values_are_refused_with_the_setting_named() {
    let dir = tempfile::tempdir().unwrap();
    for (env, expected) in [
        (("TENANCY_METRICS_TOKEN", "short"), "metrics token"),
        (
            ("TENANCY_METRICS_ENABLED", "maybe"),
            "TENANCY_METRICS_ENABLED",
        ),
        (
            ("TENANCY_CORS_ORIGINS", "app.example.com"),
            "cors.allowed_origins",
        ),
        (
            (
                "TENANCY_CORS_ORIGINS",
                "https://ok.example.com, https://x.example.com/path",
            ),
            "cors.allowed_origins",
        ),
        (
            ("TENANCY_CORS_MAX_AGE_SECS", "-1"),
            "TENANCY_CORS_MAX_AGE_SECS",
        ),
        (("TENANCY_BODY_LIMIT_BYTES", "100"), "body_limit_bytes"),
        (
            ("TENANCY_BODY_LIMIT_BYTES", "2MB"),
            "TENANCY_BODY_LIMIT_BYTES",
        ),
        (("TENANCY_LOG_FORMAT", "xml"), "TENANCY_LOG_FORMAT"),
    ] {
        let err = serve_refused(dir.path(), &[env]);
        assert!(err.contains(expected), "{env:?}: {err}");
    }
    assert!(
        !dir.path().join("tenancy-data").exists(),
        "a refused start created the data folder"
    );
}

#[test]
fn bad_values_in_the_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (toml, expected) in [
        (
            "[cors]\nallowed_origins = [\"ftp://x.example.com\"]\n",
            "cors.allowed_origins",
        ),
        ("[metrics]\ntoken = \"short\"\n", "metrics token"),
        ("[metrics]\nuser = \"x\"\n", "unknown field"),
        ("[connections]\nbody_limit_bytes = 10\n", "body_limit_bytes"),
    ] {
        std::fs::write(dir.path().join("tenancy.toml"), toml).unwrap();
        let err = serve_refused(dir.path(), &[]);
        assert!(err.contains(expected), "{toml}: {err}");
    }
}
