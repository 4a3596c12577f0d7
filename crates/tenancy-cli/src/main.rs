//! `tenancy`: the server and the operator's commands for the fleet.

mod commands;
mod config;
mod errors;
mod open_files;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tenancy",
    version,
    about = "A multi-tenant data platform: one schema, every tenant."
)]
struct Cli {
    /// Config file (default: $TENANCY_CONFIG, else ./tenancy.toml if present).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data folder: the catalog and the tenant databases (env: TENANCY_DATA_DIR).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Print the result as JSON on stdout; an error too, as {"code": ..., "detail": ...}.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a commented tenancy.toml and a migrations/ folder (the guild schema) to start from.
    Init {
        /// Folder to write into.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Overwrite an existing tenancy.toml.
        #[arg(long)]
        force: bool,
    },
    /// Run the HTTP server.
    Serve {
        /// Address to listen on (env: TENANCY_LISTEN, default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Create, list, show, delete and retry tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Bring every tenant to the latest schema version.
    Migrate {
        /// Only this tenant.
        #[arg(long, value_name = "SLUG")]
        tenant: Option<String>,
        /// Show which tenants would be migrated; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Tenants migrated at once (env: TENANCY_MIGRATE_CONCURRENCY, default 4).
        #[arg(long, value_name = "N")]
        concurrency: Option<usize>,
        /// Migrate N tenants first and stop if any of them fails (default: migrate.canary,
        /// 1; 0: no canary).
        #[arg(long, value_name = "N")]
        canary: Option<usize>,
        /// Stop taking tenants after N failed (default: migrate.max_failures, 10; 0: never).
        #[arg(long, value_name = "N")]
        max_failures: Option<usize>,
    },
    /// Tenants by status and schema version.
    Status {
        /// List only the tenants whose last migration failed and still stands; exits 3
        /// when there is any.
        #[arg(long)]
        failed: bool,
    },
    /// Print a tenant's settings document (JSON), or replace it with --set.
    Settings {
        slug: String,
        /// Check this file (a JSON object; `-` reads stdin) against the settings schema
        /// and write it, whole; a refused document changes nothing.
        #[arg(long, value_name = "FILE")]
        set: Option<PathBuf>,
    },
    /// Create users (superadmins too).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Create, list and revoke API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The configured plans: limits, feature flags and prices.
    Plans,
    /// A tenant's usage per UTC day and metric, with totals and requests per API key label
    /// (default: this month so far).
    Usage {
        slug: String,
        /// The first day, YYYY-MM-DD (default: the first of the month of --to).
        #[arg(long, value_name = "DAY")]
        from: Option<String>,
        /// The last day, YYYY-MM-DD (default: today, UTC).
        #[arg(long, value_name = "DAY")]
        to: Option<String>,
        /// Print CSV (day,metric,label,value) instead of a table.
        #[arg(long, conflicts_with = "json")]
        csv: bool,
        /// Measure the tenant's storage now and record the sample before reporting.
        #[arg(long)]
        sample: bool,
    },
    /// A tenant's month: the cost so far, the projection to the month's end, the budget
    /// and the budget alerts raised.
    Cost { slug: String },
    /// Rotate the key that signs access tokens.
    SigningKey,
    /// Replace the platform admin token stored in the catalog and print the new one once.
    AdminToken,
    /// Print a shell completion script: `source <(tenancy completions bash)`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; the password comes from $TENANCY_PASSWORD or the first line of stdin.
    Create {
        email: String,
        /// A platform operator: acts on every tenant (audited).
        #[arg(long)]
        superadmin: bool,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it once.
    Create {
        /// A key for this tenant.
        #[arg(
            long,
            value_name = "SLUG",
            required_unless_present = "platform",
            conflicts_with = "platform"
        )]
        tenant: Option<String>,
        /// Its role in the tenant: viewer, member (default), admin or owner.
        #[arg(long)]
        role: Option<String>,
        /// A platform key (superadmin automation) instead.
        #[arg(long, conflicts_with = "role")]
        platform: bool,
        #[arg(long)]
        label: Option<String>,
    },
    /// List the keys of a tenant (or the platform keys), without secrets.
    List {
        #[arg(long, value_name = "SLUG")]
        tenant: Option<String>,
    },
    /// Revoke a key.
    Revoke {
        id: String,
        #[arg(long, value_name = "SLUG")]
        tenant: Option<String>,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant and provision its database; or, with --bulk, one per line of FILE.
    Create {
        #[arg(required_unless_present = "bulk", conflicts_with = "bulk")]
        slug: Option<String>,
        /// A file of slugs, one per line (blank lines and lines starting with # skipped).
        /// Every line is checked before any tenant is created.
        #[arg(long, value_name = "FILE", conflicts_with = "name")]
        bulk: Option<std::path::PathBuf>,
        /// Tenants provisioned at once with --bulk (default: migrate.concurrency on SQLite,
        /// half the store's max_connections on PostgreSQL, which is also the cap).
        #[arg(long, value_name = "N", requires = "bulk", value_parser = at_least_one)]
        concurrency: Option<usize>,
        #[arg(long)]
        name: Option<String>,
        /// database, schema or shared (default: [tenants] default_mode).
        #[arg(long, value_parser = ["database", "schema", "shared"])]
        mode: Option<String>,
        /// A store name from [[stores]], or "default" (the SQLite store).
        #[arg(long)]
        store: Option<String>,
        /// A plan from [[plans]] (default: billing.default_plan); its mode and store apply
        /// unless --mode or --store say otherwise.
        #[arg(long)]
        plan: Option<String>,
    },
    /// Change a tenant's plan, its own limits and flags, budget, trial or subscription end.
    /// A plan that places tenants elsewhere does not move the tenant: the answer says a
    /// move is due.
    Update {
        slug: String,
        #[arg(long)]
        plan: Option<String>,
        /// The tenant's own maximum for a limit: NAME=N, or NAME=unlimited (repeatable).
        #[arg(long = "limit", value_name = "NAME=N")]
        limits: Vec<String>,
        /// Turn a feature flag on or off for the tenant: NAME=on|off (repeatable).
        #[arg(long = "feature", value_name = "NAME=on|off")]
        features: Vec<String>,
        /// A monthly budget (like 265.00), or "plan" for the plan's.
        #[arg(long)]
        budget: Option<String>,
        /// When the trial ends (RFC 3339, like 2027-01-31T00:00:00Z), or "none".
        #[arg(long, value_name = "TIME")]
        trial_ends: Option<String>,
        /// When the subscription ends (RFC 3339), or "none".
        #[arg(long, value_name = "TIME")]
        subscription_ends: Option<String>,
        /// Drop the tenant's own limits, flags and budget first.
        #[arg(long)]
        reset_overrides: bool,
    },
    /// List tenants.
    List,
    /// Show one tenant and its lifecycle journal.
    Show { slug: String },
    /// Suspend a tenant: its requests answer 403 tenant_suspended.
    Suspend { slug: String },
    /// Resume a suspended tenant.
    Resume { slug: String },
    /// Delete a tenant and its data. Asks to type the slug on a terminal; elsewhere
    /// refuses without --yes.
    Delete {
        slug: String,
        /// Delete without asking.
        #[arg(long)]
        yes: bool,
    },
    /// Provision a failed tenant again.
    Retry { slug: String },
}

/// A count flag that must be at least 1.
fn at_least_one(raw: &str) -> Result<usize, String> {
    match raw.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return errors::report_usage(&e, errors::wants_json(&args)),
    };
    let json = cli.json;
    if let Err(e) = init_tracing() {
        return errors::report(errors::CliError::new("invalid_config", e).into(), json);
    }
    // Every command opens tenant databases, and `serve` client connections too: take all
    // the file descriptors the system allows this process (the soft limit is often 1,024).
    if let Err(e) = tenancy_http::raise_open_files_limit() {
        tracing::warn!(error = %e, "cannot raise the open-files limit");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let e = anyhow::Error::new(e).context("cannot start the runtime");
            return errors::report(e, json);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => errors::report(e, json),
    }
}

/// Logs to stderr: `TENANCY_LOG` filters (default `warn`; `info` adds a line per
/// request), `TENANCY_LOG_FORMAT` is `text` (default) or `json` (one object per line).
/// Colour only when stderr is a terminal.
fn init_tracing() -> Result<(), String> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("TENANCY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match std::env::var("TENANCY_LOG_FORMAT").as_deref() {
        Err(_) | Ok("" | "text") => builder.init(),
        Ok("json") => builder.json().flatten_event(true).init(),
        Ok(other) => return Err(format!("TENANCY_LOG_FORMAT={other:?}: use text or json")),
    }
    Ok(())
}
