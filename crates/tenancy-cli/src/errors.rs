//! How a command that fails reports it: an exit code scripts can branch on, and a stable
//! `code` — the same one the HTTP API answers for the same engine error.
//!
//! Without `--json` the error is a line on stderr; with `--json` it is the object
//! `{"code": "...", "detail": "..."}` on stdout, so that stdout always holds exactly one
//! JSON document (the result or the error) and the exit code says which.

use std::fmt;
use std::process::ExitCode;

/// Exit codes (README "CLI for scripts").
pub mod exit {
    /// The command did what was asked.
    pub const OK: u8 = 0;
    /// The command failed; nothing, or only what the error says, was done.
    pub const ERROR: u8 = 1;
    /// The command line is wrong: an unknown flag, a missing or malformed argument, or a
    /// deletion without confirmation where none can be asked for.
    pub const USAGE: u8 = 2;
    /// The command ran to its end but some of its work failed: tenants that failed to
    /// migrate or to be created, or (`status --failed`) failures that still stand.
    pub const PARTIAL: u8 = 3;
}

/// An error the CLI itself raises (not the engine's), with its stable code.
#[derive(Debug)]
pub struct CliError {
    pub code: &'static str,
    pub detail: String,
    pub exit: u8,
}

impl CliError {
    pub fn new(code: &'static str, detail: impl Into<String>) -> CliError {
        CliError {
            code,
            detail: detail.into(),
            exit: exit::ERROR,
        }
    }

    pub fn usage(code: &'static str, detail: impl Into<String>) -> CliError {
        CliError {
            exit: exit::USAGE,
            ..CliError::new(code, detail)
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for CliError {}

/// Gives an error of this CLI a stable code; its message (with its causes) is kept.
pub fn coded(code: &'static str) -> impl FnOnce(anyhow::Error) -> anyhow::Error {
    move |e| anyhow::Error::new(CliError::new(code, format!("{e:#}")))
}

/// Reports a failed command (stdout as JSON with `--json`, else stderr) and gives the
/// exit code.
pub fn report(e: anyhow::Error, json: bool) -> ExitCode {
    let detail = format!("{e:#}");
    let (code, exit) = match e.downcast::<CliError>() {
        Ok(cli) => (cli.code, cli.exit),
        Err(e) => match e.downcast::<tenancy::Error>() {
            Ok(engine) => (engine_code(engine), exit::ERROR),
            Err(_) => ("internal", exit::ERROR),
        },
    };
    if json {
        println!("{}", serde_json::json!({ "code": code, "detail": detail }));
    } else {
        eprintln!("error: {detail}");
    }
    ExitCode::from(exit)
}

/// The code the HTTP API answers for this engine error: the mapping lives once, in
/// `tenancy_http::ApiError`. That mapping also logs server-side failures for the
/// operator; here the operator reads the error itself, so no log line is emitted.
fn engine_code(e: tenancy::Error) -> &'static str {
    tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
        tenancy_http::ApiError::from(e).code
    })
}

/// Reports a command line clap refused (exit 2), or prints help or the version (exit 0).
pub fn report_usage(e: &clap::Error, json: bool) -> ExitCode {
    use clap::error::ErrorKind;
    let is_error = !matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
    if json && is_error {
        // clap's message without its usage and tips: the lines before the first blank one.
        let rendered = e.to_string();
        let detail = if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            "a command is required; see `tenancy --help`".to_owned()
        } else {
            rendered
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
        };
        let detail = detail.trim_start_matches("error: ");
        println!(
            "{}",
            serde_json::json!({ "code": "usage", "detail": detail })
        );
        return ExitCode::from(exit::USAGE);
    }
    let _ = e.print();
    ExitCode::from(if is_error { exit::USAGE } else { exit::OK })
}

/// Whether the raw command line asks for JSON (read before parsing, so that a command
/// line clap refuses still gets a JSON error).
pub fn wants_json(args: &[std::ffi::OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json")
}
