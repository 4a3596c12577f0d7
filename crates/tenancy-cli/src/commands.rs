//! One function per command.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::CommandFactory;
use indicatif::{ProgressBar, ProgressStyle};
use tenancy::{Engine, MigrateEvent, MigrateOptions, Slug, Tenant};

use crate::config::{self, Settings};
use crate::errors::{coded, exit, CliError};
use crate::output;
use crate::{Cli, Command, KeysCommand, TenantCommand, UserCommand};

pub async fn run(cli: Cli) -> Result<ExitCode> {
    let json = cli.json;
    match &cli.command {
        Command::Init { dir, force } => {
            return init(dir, *force, cli.data_dir.as_deref(), json).await
        }
        Command::Completions { shell } => return completions(*shell, json),
        _ => {}
    }
    let mut settings = config::load(cli.config.as_deref(), cli.data_dir.as_deref())
        .map_err(coded("invalid_config"))?;
    // The plans are configuration: no data folder needed to read them.
    if let Command::Plans = cli.command {
        return plans(&settings.engine.plans, json);
    }
    check_slugs(&cli.command)?;
    if !creates_catalog(&cli.command) {
        require_catalog(&settings)?;
    }
    // Removing store files no tenant accounts for reads the whole fleet: the server and
    // fleet migrations do it; short commands recover only what was in flight.
    settings.engine.sweep_store_files =
        matches!(cli.command, Command::Serve { .. } | Command::Migrate { .. });
    let engine = open(&settings).await?;
    report_recovery(&engine);
    match cli.command {
        Command::Init { .. } | Command::Completions { .. } => unreachable!("handled above"),
        Command::Serve { listen } => serve(engine, settings, listen, json).await,
        Command::Tenant { command } => tenant(engine, command, json).await,
        Command::Migrate {
            tenant,
            dry_run,
            concurrency,
            canary,
            max_failures,
        } => {
            let options = MigrateOptions {
                tenant: tenant.as_deref().map(Slug::parse).transpose()?,
                dry_run,
                concurrency,
                canary,
                max_failures,
            };
            migrate(engine, options, json).await
        }
        Command::Status { failed } => status(engine, failed, json).await,
        Command::Plans => unreachable!("handled above"),
        Command::Settings { slug, set } => {
            tenant_settings(engine, &slug, set.as_deref(), json).await
        }
        Command::Usage {
            slug,
            from,
            to,
            csv,
            sample,
        } => usage(engine, &slug, from, to, csv, sample, json).await,
        Command::Cost { slug } => cost(engine, &slug, json).await,
        Command::User { command } => user(engine, command, json).await,
        Command::Keys { command } => keys(engine, command, json).await,
        Command::SigningKey => {
            let kid = engine.rotate_signing_key().await?;
            if json {
                output::json(&serde_json::json!({ "kid": kid }))?;
            } else {
                println!("new signing key {kid}; tokens signed by the previous key stay valid until they expire");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::AdminToken => {
            let (_, secret) = engine.rotate_admin_token().await?;
            if json {
                output::json(&serde_json::json!({ "admin_token": secret }))?;
            } else {
                println!("{secret}");
            }
            eprintln!(
                "The previous admin token no longer works. Keep this one: it is not shown again."
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Whether a command may create the catalog when there is none. Those that only read, or
/// change what must already exist, refuse instead: run from the wrong folder, they would
/// otherwise create an empty fleet there and report on it.
fn creates_catalog(command: &Command) -> bool {
    match command {
        Command::Init { .. } | Command::Serve { .. } => true,
        // Creating something in an empty fleet is how a fleet starts without a server.
        Command::Tenant {
            command: TenantCommand::Create { .. },
        }
        | Command::User { .. }
        | Command::SigningKey
        | Command::AdminToken => true,
        Command::Keys {
            command: KeysCommand::Create { platform, .. },
        } => *platform,
        Command::Tenant { .. }
        | Command::Keys { .. }
        | Command::Migrate { .. }
        | Command::Status { .. }
        | Command::Plans
        | Command::Usage { .. }
        | Command::Cost { .. }
        | Command::Settings { .. }
        | Command::Completions { .. } => false,
    }
}

/// Checks the slugs on the command line before the data folder is opened: a refused one
/// leaves nothing behind, not even a new catalog.
fn check_slugs(command: &Command) -> Result<()> {
    let slug = match command {
        Command::Tenant { command } => match command {
            TenantCommand::Create { slug, .. } => slug.as_deref(),
            TenantCommand::Show { slug }
            | TenantCommand::Update { slug, .. }
            | TenantCommand::Suspend { slug }
            | TenantCommand::Resume { slug }
            | TenantCommand::Delete { slug, .. }
            | TenantCommand::Retry { slug } => Some(slug.as_str()),
            TenantCommand::List => None,
        },
        Command::Migrate { tenant, .. } => tenant.as_deref(),
        Command::Usage { slug, .. } | Command::Cost { slug } => Some(slug.as_str()),
        Command::Settings { slug, .. } => Some(slug.as_str()),
        Command::Keys { command } => match command {
            KeysCommand::Create { tenant, .. }
            | KeysCommand::List { tenant }
            | KeysCommand::Revoke { tenant, .. } => tenant.as_deref(),
        },
        _ => None,
    };
    if let Some(slug) = slug {
        Slug::parse(slug)?;
    }
    Ok(())
}

/// Refuses a data folder without a catalog (a PostgreSQL catalog is named by its URL, so
/// it is never found by accident, and its tables are created on first use).
fn require_catalog(settings: &Settings) -> Result<()> {
    if settings.engine.catalog_url.is_some() {
        return Ok(());
    }
    let catalog = settings.engine.data_dir.join("catalog.db");
    if catalog.is_file() {
        return Ok(());
    }
    Err(CliError::new(
        "no_catalog",
        format!(
            "no tenancy catalog at {}; run `tenancy init` or `tenancy serve` to create one (or point --data-dir or --config at an existing one)",
            catalog.display()
        ),
    )
    .into())
}

async fn open(settings: &Settings) -> Result<Engine> {
    Engine::open(settings.engine.clone())
        .await
        .with_context(|| {
            format!(
                "cannot open the data folder {}",
                settings.engine.data_dir.display()
            )
        })
}

fn completions(shell: clap_complete::Shell, json: bool) -> Result<ExitCode> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "tenancy", &mut script);
    if json {
        let script = String::from_utf8_lossy(&script);
        output::json(&serde_json::json!({ "shell": shell.to_string(), "script": script }))?;
    } else {
        std::io::stdout()
            .write_all(&script)
            .context("cannot write the completion script")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn report_recovery(engine: &Engine) {
    let r = engine.recovery();
    for slug in &r.completed {
        eprintln!("recovered: interrupted provisioning of {slug} had finished; it is active");
    }
    for slug in &r.failed {
        eprintln!("recovered: interrupted provisioning of {slug} rolled back; retry with `tenancy tenant retry {slug}`");
    }
    for slug in &r.deleted {
        eprintln!("recovered: interrupted deletion of {slug} finished");
    }
    if r.orphans_removed > 0 {
        eprintln!(
            "recovered: removed {} store file(s) no tenant accounts for",
            r.orphans_removed
        );
    }
}

/// Writes the config and the migrations, then opens the data folder the config names,
/// creating its catalog.
async fn init(dir: &Path, force: bool, data_dir: Option<&Path>, json: bool) -> Result<ExitCode> {
    let config_path = dir.join("tenancy.toml");
    if config_path.exists() && !force {
        return Err(CliError::new(
            "config_exists",
            format!(
                "{} already exists; pass --force to overwrite it",
                config_path.display()
            ),
        )
        .into());
    }
    let migrations = dir.join("migrations");
    std::fs::create_dir_all(&migrations)
        .with_context(|| format!("cannot create {}", migrations.display()))
        .map_err(coded("io_error"))?;
    std::fs::write(&config_path, config::TEMPLATE)
        .with_context(|| format!("cannot write {}", config_path.display()))
        .map_err(coded("io_error"))?;
    let mut written = 0;
    for (file, sql) in tenancy::migrations::GUILD_MIGRATIONS {
        let path = migrations.join(file);
        if !path.exists() {
            std::fs::write(&path, sql)
                .with_context(|| format!("cannot write {}", path.display()))
                .map_err(coded("io_error"))?;
            written += 1;
        }
    }
    let settings = config::load(Some(&config_path), data_dir).map_err(coded("invalid_config"))?;
    let engine = open(&settings).await?;
    engine.flush().await?;
    let data = settings.engine.data_dir.display();
    if json {
        output::json(&serde_json::json!({
            "config": config_path,
            "migrations": migrations,
            "migration_files_written": written,
            "data_dir": settings.engine.data_dir,
        }))?;
    } else {
        println!("wrote {}", config_path.display());
        println!(
            "wrote {} ({written} migration file(s) of the guild example schema)",
            migrations.display()
        );
        println!("data folder {data} is ready");
        println!("next: `tenancy serve`, or `tenancy tenant create SLUG`");
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(
    engine: Engine,
    settings: Settings,
    listen: Option<String>,
    json: bool,
) -> Result<ExitCode> {
    let listen = listen.unwrap_or_else(|| settings.listen.clone());
    if let Some(limit) = crate::open_files::current_limit() {
        crate::open_files::check(engine.config(), limit).context("refusing to serve")?;
    }
    crate::open_files::check_memory(engine.config()).context("refusing to serve")?;
    // A changed or missing migration refuses to serve; a fleet migrated further by another
    // process is followed, or (new files not deployed here yet) served as far as this
    // process can: it says so in its log, in /readyz and in what it refuses.
    match engine.check_migrations_unchanged().await {
        Ok(()) => {}
        Err(e @ tenancy::Error::BehindFleet { .. }) => eprintln!("warning: {e}"),
        Err(e) => return Err(anyhow::Error::new(e).context("refusing to serve")),
    }
    let (admin_token, created) = engine.admin_token(settings.admin_token.as_deref()).await?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))
        .map_err(coded("listen_failed"))?;
    let addr = listener.local_addr()?;
    if json {
        // One line, printed once the server listens: a script can wait for it.
        println!(
            "{}",
            serde_json::json!({
                "listening": format!("http://{addr}"),
                "config": settings.source,
                "data_dir": engine.config().data_dir,
                "schema": engine.migrations().origin.to_string(),
                "schema_version": engine.migrations().latest(),
                "admin_token": created,
            })
        );
    } else {
        if let Some(secret) = created {
            println!("admin token (shown once; only its hash is stored): {secret}");
        }
        if let Some(file) = &settings.source {
            println!("config: {}", file.display());
        }
        println!(
            "tenancy serving on http://{addr} (data: {}, schema: {}, v{})",
            engine.config().data_dir.display(),
            engine.migrations().origin,
            engine.migrations().latest()
        );
    }
    if !engine.plans().is_empty() {
        engine.spawn_lapse_job(settings.lapse_check);
        engine.spawn_retention_job(settings.retention_check);
    }
    engine.spawn_usage_jobs();
    let app = tenancy_http::router(tenancy_http::AppState {
        engine: engine.clone(),
        admin_token,
        config: settings.http.clone(),
        rates: Default::default(),
    });
    // Client connections never take the files open tenants and PostgreSQL need.
    let connections = tenancy_http::ConnectionLimits {
        reserved_files: engine.config().open_files_needed(),
        ..settings.http.connections.clone()
    };
    tenancy_http::serve_with(listener, app, connections, shutdown_signal()).await?;
    engine.flush().await?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

fn tenant_row(t: &Tenant) -> Vec<String> {
    vec![
        t.slug.to_string(),
        t.name.clone(),
        t.status.to_string(),
        t.placement.mode.to_string(),
        t.placement.schema_version.to_string(),
        t.id.to_string(),
    ]
}

const TENANT_HEADERS: &[&str] = &["SLUG", "NAME", "STATUS", "MODE", "VERSION", "ID"];

async fn tenant(engine: Engine, command: TenantCommand, json: bool) -> Result<ExitCode> {
    match command {
        TenantCommand::Create {
            slug,
            bulk,
            concurrency,
            name,
            mode,
            store,
            plan,
        } => {
            let place = tenancy::PlaceOptions {
                mode: mode.as_deref().map(crate::config::parse_mode).transpose()?,
                store,
                plan,
            };
            if let Some(file) = bulk {
                return create_bulk(engine, &file, &place, concurrency, json).await;
            }
            let slug = slug.context("a slug, or --bulk FILE")?;
            let started = Instant::now();
            let tenant = engine
                .create_tenant_with(Slug::parse(&slug)?, name, None, &place)
                .await?;
            if json {
                output::json(&tenant)?;
            } else {
                println!(
                    "created {} ({}, {} mode in store {}) at schema version {} in {:.1} ms",
                    tenant.slug,
                    tenant.id,
                    tenant.placement.mode,
                    tenant.placement.store,
                    tenant.placement.schema_version,
                    started.elapsed().as_secs_f64() * 1000.0
                );
            }
        }
        TenantCommand::List => {
            let tenants = engine.list_tenants().await?;
            if json {
                output::json(&tenants)?;
            } else {
                let rows: Vec<_> = tenants.iter().map(tenant_row).collect();
                output::table(TENANT_HEADERS, &rows);
            }
        }
        TenantCommand::Show { slug } => {
            let tenant = engine.tenant(&Slug::parse(&slug)?).await?;
            let journal = engine.catalog().journal(tenant.id).await?;
            let effective = engine.effective_plan(&tenant);
            // Each limit against what the tenant holds (its data answering, when active).
            let limits = match &effective {
                Some(_) if tenant.status == tenancy::TenantStatus::Active => {
                    engine.limit_usage(&tenant).await?
                }
                _ => Vec::new(),
            };
            if json {
                let mut value = serde_json::to_value(&tenant)?;
                if let Some(e) = &effective {
                    value["effective_plan"] = serde_json::json!(e.plan);
                    value["limits"] = serde_json::to_value(&limits)?;
                    value["features"] = serde_json::to_value(&e.features)?;
                }
                value["journal"] = serde_json::to_value(&journal)?;
                output::json(&value)?;
            } else {
                let fields = [
                    ("id", tenant.id.to_string()),
                    ("slug", tenant.slug.to_string()),
                    ("name", tenant.name.clone()),
                    ("status", tenant.status.to_string()),
                    ("mode", tenant.placement.mode.to_string()),
                    ("store", tenant.placement.store.clone()),
                    (
                        "schema_version",
                        tenant.placement.schema_version.to_string(),
                    ),
                    ("created_at", tenant.created_at.to_rfc3339()),
                    ("updated_at", tenant.updated_at.to_rfc3339()),
                ];
                for (k, v) in fields {
                    println!("{k:<15} {v}");
                }
                if let Some(error) = &tenant.error {
                    println!("{:<15} {error}", "error");
                }
                if let Some(e) = &effective {
                    println!("{:<15} {}", "plan", e.plan);
                    let on: Vec<&str> = e
                        .features
                        .iter()
                        .filter(|(_, on)| **on)
                        .map(|(k, _)| k.as_str())
                        .collect();
                    println!(
                        "{:<15} {}",
                        "features",
                        if on.is_empty() {
                            "-".into()
                        } else {
                            on.join(" ")
                        }
                    );
                    let show = |n: Option<u64>| n.map_or("-".to_owned(), |n| n.to_string());
                    let rows: Vec<_> = limits
                        .iter()
                        .map(|l| {
                            vec![
                                l.limit.clone(),
                                show(l.current),
                                l.max.map_or("unlimited".into(), |m| m.to_string()),
                            ]
                        })
                        .collect();
                    println!();
                    output::table(&["LIMIT", "CURRENT", "MAX"], &rows);
                }
                println!("\njournal:");
                let rows: Vec<_> = journal
                    .iter()
                    .map(|j| {
                        vec![
                            j.at.to_rfc3339(),
                            j.event.clone(),
                            format!(
                                "{} -> {}",
                                j.from_status.as_deref().unwrap_or("-"),
                                j.to_status
                            ),
                        ]
                    })
                    .collect();
                output::table(&["AT", "EVENT", "STATUS"], &rows);
            }
        }
        TenantCommand::Update {
            slug,
            plan,
            limits,
            features,
            budget,
            trial_ends,
            subscription_ends,
            reset_overrides,
        } => {
            let change = plan_change(
                plan,
                &limits,
                &features,
                budget,
                trial_ends,
                subscription_ends,
                reset_overrides,
            )?;
            let tenant = engine.tenant(&Slug::parse(&slug)?).await?;
            let changed = engine.change_plan(&tenant, change).await?;
            if json {
                output::json(&changed)?;
            } else {
                let t = &changed.tenant;
                println!(
                    "updated {}: plan {}",
                    t.slug,
                    t.plan.as_deref().unwrap_or("(default)")
                );
                if let Some(due) = &changed.move_due {
                    println!(
                        "its plan places tenants in {} mode in store {}: a move is due (the tenant was not moved)",
                        due.mode, due.store
                    );
                }
            }
        }
        TenantCommand::Suspend { slug } => {
            let tenant = engine.tenant(&Slug::parse(&slug)?).await?;
            engine.suspend_tenant(&tenant).await?;
            if json {
                output::json(&engine.tenant(&tenant.slug).await?)?;
            } else {
                println!("suspended {}", tenant.slug);
            }
        }
        TenantCommand::Resume { slug } => {
            let tenant = engine.tenant(&Slug::parse(&slug)?).await?;
            engine.resume_tenant(&tenant).await?;
            if json {
                output::json(&engine.tenant(&tenant.slug).await?)?;
            } else {
                println!("resumed {}", tenant.slug);
            }
        }
        TenantCommand::Delete { slug, yes } => {
            let slug = Slug::parse(&slug)?;
            // Looked up first: an unknown tenant is reported before any question is asked.
            let tenant = engine.tenant(&slug).await?;
            if !yes {
                confirm_delete(&tenant)?;
            }
            let tenant = engine.delete_tenant(&slug).await?;
            if json {
                output::json(&tenant)?;
            } else {
                println!(
                    "deleted {} ({}); its data is removed",
                    tenant.slug, tenant.id
                );
            }
        }
        TenantCommand::Retry { slug } => {
            let tenant = engine.retry_tenant(&Slug::parse(&slug)?).await?;
            if json {
                output::json(&tenant)?;
            } else {
                println!(
                    "provisioned {} at schema version {}",
                    tenant.slug, tenant.placement.schema_version
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The slugs of a bulk file: every line checked, and every problem reported, before any
/// tenant is created.
fn read_bulk_file(file: &Path) -> Result<Vec<Slug>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read {}", file.display()))
        .map_err(coded("invalid_input"))?;
    let mut slugs = Vec::new();
    let mut seen = std::collections::HashMap::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match Slug::parse(line) {
            Ok(slug) => {
                if let Some(first) = seen.insert(slug.to_string(), i + 1) {
                    problems.push(format!("line {}: {slug} repeats line {first}", i + 1));
                } else {
                    slugs.push(slug);
                }
            }
            Err(e) => problems.push(format!("line {}: {e}", i + 1)),
        }
    }
    if !problems.is_empty() {
        let shown: Vec<&str> = problems.iter().take(20).map(String::as_str).collect();
        let more = problems.len().saturating_sub(shown.len());
        let detail = format!(
            "{} is refused, nothing was created:\n  {}{}",
            file.display(),
            shown.join("\n  "),
            if more > 0 {
                format!("\n  … and {more} more")
            } else {
                String::new()
            }
        );
        return Err(CliError::new("invalid_input", detail).into());
    }
    if slugs.is_empty() {
        let detail = format!("{} holds no slugs", file.display());
        return Err(CliError::new("invalid_input", detail).into());
    }
    Ok(slugs)
}

async fn create_bulk(
    engine: Engine,
    file: &Path,
    place: &tenancy::PlaceOptions,
    concurrency: Option<usize>,
    json: bool,
) -> Result<ExitCode> {
    let slugs = read_bulk_file(file)?;
    let total = slugs.len();
    let started = Instant::now();
    let bar = (std::io::stderr().is_terminal() && !json).then(|| {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} created, {per_sec}, ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let report = {
        let bar = bar.clone();
        engine
            .create_tenants(slugs, place, concurrency, move |slug, outcome| {
                if let Err(e) = outcome {
                    match &bar {
                        Some(bar) => bar.println(format!("{slug}: {e}")),
                        None => eprintln!("{slug}: {e}"),
                    }
                }
                if let Some(bar) = &bar {
                    bar.inc(1);
                }
            })
            .await?
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let elapsed = started.elapsed().as_secs_f64();
    if json {
        output::json(&report)?;
    } else {
        println!(
            "created {} of {total} tenant(s) in {elapsed:.2} s ({:.0}/s); {} failed",
            report.created.len(),
            report.created.len() as f64 / elapsed.max(1e-9),
            report.failed.len()
        );
        for (slug, why) in &report.failed {
            println!("  {slug}: {why}");
        }
    }
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::PARTIAL)
    })
}

async fn migrate(engine: Engine, options: MigrateOptions, json: bool) -> Result<ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: finishing the tenants in flight; rerun to continue");
                stop.store(true, Ordering::SeqCst);
            }
        });
    }
    let started = Instant::now();
    let dry_run = options.dry_run;
    let progress = Progress::new(std::io::stderr().is_terminal() && !json);
    let report = {
        let progress = progress.clone();
        engine
            .migrate(options, stop, move |event| progress.event(event))
            .await?
    };
    progress.finish();
    let elapsed = started.elapsed();
    if json {
        output::json(&report)?;
    } else if dry_run {
        println!(
            "{} tenant(s) would be migrated to version {}",
            report.pending.len(),
            report.target_version
        );
        for p in &report.plan {
            println!(
                "  {}  {}/{}  v{} -> v{}: {}",
                p.slug,
                p.store,
                p.mode,
                p.from_version,
                report.target_version,
                p.files.join(", ")
            );
        }
    } else {
        println!(
            "migrated {} tenant(s) to version {} in {:.2} s; {} failed{}",
            report.migrated,
            report.target_version,
            elapsed.as_secs_f64(),
            report.failed.len(),
            if report.canary_failed {
                "; a canary failed, so no other tenant was touched"
            } else if report.failure_limit_reached {
                "; stopped after too many failures, rerun to continue"
            } else if report.interrupted {
                "; interrupted, rerun to continue"
            } else {
                ""
            }
        );
        if !report.failed.is_empty() {
            println!("failed:");
            for f in &report.failed {
                println!(
                    "  {} (stays at version {}): {}",
                    f.slug,
                    f.from_version,
                    f.error.as_deref().unwrap_or("")
                );
            }
        }
    }
    Ok(if report.failed.is_empty() && !report.interrupted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::PARTIAL)
    })
}

/// A progress bar on a terminal, plain lines otherwise.
#[derive(Clone)]
struct Progress {
    bar: Option<ProgressBar>,
    plain: Arc<std::sync::Mutex<PlainProgress>>,
}

#[derive(Default)]
struct PlainProgress {
    total: usize,
    done: usize,
    failed: usize,
    last_print: Option<Instant>,
}

impl Progress {
    fn new(terminal: bool) -> Progress {
        let bar = terminal.then(|| {
            let bar = ProgressBar::new(0);
            if let Ok(style) = ProgressStyle::with_template(
                "{bar:40} {pos}/{len} tenants  {msg}  {per_sec}  eta {eta}",
            ) {
                bar.set_style(style);
            }
            bar
        });
        Progress {
            bar,
            plain: Arc::default(),
        }
    }

    fn event(&self, event: MigrateEvent) {
        let Ok(mut p) = self.plain.lock() else { return };
        match event {
            MigrateEvent::Started { total, target } => {
                p.total = total;
                match &self.bar {
                    Some(bar) => bar.set_length(total as u64),
                    None => eprintln!("migrating {total} tenant(s) to version {target}"),
                }
            }
            MigrateEvent::TenantDone { .. } => p.done += 1,
            MigrateEvent::TenantFailed { slug, error } => {
                p.done += 1;
                p.failed += 1;
                match &self.bar {
                    Some(bar) => bar.println(format!("failed: {slug}: {error}")),
                    None => eprintln!("failed: {slug}: {error}"),
                }
            }
        }
        match &self.bar {
            Some(bar) => {
                bar.set_position(p.done as u64);
                bar.set_message(format!("{} failed", p.failed));
            }
            None => {
                let due = p.last_print.is_none_or(|t| t.elapsed().as_secs() >= 1);
                if p.done > 0 && (due || p.done == p.total) {
                    eprintln!("progress: {}/{} done, {} failed", p.done, p.total, p.failed);
                    p.last_print = Some(Instant::now());
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

async fn status(engine: Engine, failed_only: bool, json: bool) -> Result<ExitCode> {
    let status = engine.status().await?;
    // Tenants the lapse job suspended: their trial or subscription ended.
    let lapsed: Vec<Tenant> = engine
        .catalog()
        .list_tenants(&tenancy::catalog::TenantFilter {
            statuses: Some(vec![tenancy::TenantStatus::Suspended]),
            ..Default::default()
        })
        .await?
        .into_iter()
        .filter(|t| t.trial_ends_at.is_some() || t.subscription_ends_at.is_some())
        .collect();
    if json {
        if failed_only {
            output::json(&status.failed_migrations)?;
        } else {
            let mut value = serde_json::to_value(&status)?;
            value["lapsed"] = serde_json::json!(lapsed
                .iter()
                .map(|t| serde_json::json!({"slug": t.slug, "reason": t.error}))
                .collect::<Vec<_>>());
            output::json(&value)?;
        }
        return Ok(status_exit(failed_only, &status));
    }
    if !failed_only {
        println!(
            "{} tenant(s); latest schema version {}",
            status.total, status.latest_version
        );
        let rows: Vec<_> = status
            .counts
            .iter()
            .map(|c| {
                vec![
                    c.status.to_string(),
                    c.schema_version.to_string(),
                    c.count.to_string(),
                ]
            })
            .collect();
        output::table(&["STATUS", "VERSION", "TENANTS"], &rows);
        if !lapsed.is_empty() {
            println!("\nsuspended when their trial or subscription ended:");
            for t in &lapsed {
                println!("  {}: {}", t.slug, t.error.as_deref().unwrap_or(""));
            }
        }
    }
    if !status.failed_migrations.is_empty() || failed_only {
        println!(
            "\nlast migration failed for {} tenant(s):",
            status.failed_migrations.len()
        );
        for f in &status.failed_migrations {
            println!(
                "  {} (at version {}): {}",
                f.slug,
                f.from_version,
                f.error.as_deref().unwrap_or("")
            );
        }
    }
    Ok(status_exit(failed_only, &status))
}

/// `status --failed` exits 3 when a failure stands, so scripts can tell.
fn status_exit(failed_only: bool, status: &tenancy::FleetStatus) -> ExitCode {
    if failed_only && !status.failed_migrations.is_empty() {
        ExitCode::from(exit::PARTIAL)
    } else {
        ExitCode::SUCCESS
    }
}

/// Asks the person at the terminal to type the tenant's slug; refuses without asking
/// when stdin is not a terminal (a script must say `--yes`).
fn confirm_delete(tenant: &Tenant) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage(
            "confirmation_required",
            format!(
                "refusing to delete {} without confirmation: stdin is not a terminal; pass --yes to delete it and all its data",
                tenant.slug
            ),
        )
        .into());
    }
    eprint!(
        "This deletes tenant {} ({}) and all its data. Type its slug to confirm: ",
        tenant.slug, tenant.id
    );
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    if line.trim() != tenant.slug.as_str() {
        return Err(CliError::new(
            "not_confirmed",
            format!(
                "{} was not deleted: the slug typed did not match",
                tenant.slug
            ),
        )
        .into());
    }
    Ok(())
}

/// Prints the tenant's settings document; with `set`, first checks the file's document
/// against the settings schema and writes it (audited as `cli`). The document is JSON
/// whether or not `--json` is given.
async fn tenant_settings(
    engine: Engine,
    slug: &str,
    set: Option<&Path>,
    json: bool,
) -> Result<ExitCode> {
    let tenant = engine.tenant(&Slug::parse(slug)?).await?;
    let document = match set {
        None => engine.settings(tenant.id).await?.document.clone(),
        Some(file) => {
            let document = read_settings_file(file)?;
            let stored = engine.put_settings(tenant.id, document, "cli").await?;
            if !json {
                eprintln!("wrote the settings of {}", tenant.slug);
            }
            stored.document
        }
    };
    output::json(&serde_json::Value::Object(document))?;
    Ok(ExitCode::SUCCESS)
}

/// A settings document from a file (`-`: stdin), refused with the codes the HTTP API
/// answers for the same body: `settings_too_large`, `malformed_json`, `invalid_body`.
fn read_settings_file(file: &Path) -> Result<serde_json::Value> {
    use std::io::Read;
    let max = tenancy::settings::MAX_SETTINGS_BYTES;
    let mut bytes = Vec::new();
    let limit = (max as u64).saturating_mul(2);
    let read = if file == Path::new("-") {
        std::io::stdin().take(limit).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit).read_to_end(&mut bytes))
    };
    read.with_context(|| format!("cannot read {}", file.display()))
        .map_err(coded("io_error"))?;
    let document: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        if bytes.len() as u64 >= limit {
            // Cut short at the limit: the file is too large, whatever it holds.
            anyhow::Error::new(tenancy::Error::SettingsTooLarge { max })
        } else {
            CliError::new(
                "malformed_json",
                format!("{} is not valid JSON: {e}", file.display()),
            )
            .into()
        }
    })?;
    if !document.is_object() {
        return Err(CliError::new(
            "invalid_body",
            format!("{}: the settings are a JSON object", file.display()),
        )
        .into());
    }
    Ok(document)
}

/// The password for a new user: `$TENANCY_PASSWORD`, else the first line of stdin.
fn read_password() -> Result<String> {
    if let Ok(p) = std::env::var("TENANCY_PASSWORD") {
        return Ok(p);
    }
    if std::io::stdin().is_terminal() {
        eprint!("password: ");
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn user(engine: Engine, command: UserCommand, json: bool) -> Result<ExitCode> {
    match command {
        UserCommand::Create { email, superadmin } => {
            let password = read_password()?;
            let user = engine.create_user(&email, &password, superadmin).await?;
            if json {
                output::json(&user)?;
            } else {
                println!(
                    "created {}{} ({})",
                    user.email,
                    if user.is_superadmin {
                        " (superadmin)"
                    } else {
                        ""
                    },
                    user.id
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn keys(engine: Engine, command: KeysCommand, json: bool) -> Result<ExitCode> {
    use tenancy::identity::KeyScope;
    let tenant_id = |slug: Option<String>| {
        let engine = engine.clone();
        async move {
            match slug {
                Some(s) => Ok::<_, anyhow::Error>(Some(engine.tenant(&Slug::parse(&s)?).await?.id)),
                None => Ok(None),
            }
        }
    };
    match command {
        KeysCommand::Create {
            tenant,
            role,
            platform: _,
            label,
        } => {
            // clap requires exactly one of --tenant and --platform.
            let scope = match tenant {
                Some(slug) => KeyScope::Tenant {
                    tenant_id: engine.tenant(&Slug::parse(&slug)?).await?.id,
                    role: role.as_deref().unwrap_or("member").parse()?,
                },
                None => KeyScope::Platform,
            };
            let (key, secret) = engine.create_api_key(scope, label, None, "cli").await?;
            if json {
                let mut v = serde_json::to_value(&key)?;
                v["key"] = serde_json::json!(secret);
                output::json(&v)?;
            } else {
                println!("{secret}");
                eprintln!(
                    "API key {} ({}). Keep it: it is not shown again.",
                    key.id, key.role
                );
            }
        }
        KeysCommand::List { tenant } => {
            let keys = engine.api_keys(tenant_id(tenant).await?).await?;
            if json {
                output::json(&keys)?;
            } else {
                let rows: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        vec![
                            k.id.clone(),
                            k.role.clone(),
                            k.label.clone().unwrap_or_default(),
                            k.revoked_at.map_or("active".into(), |_| "revoked".into()),
                            k.last_used_at.map_or("-".into(), |t| t.to_rfc3339()),
                        ]
                    })
                    .collect();
                output::table(&["ID", "ROLE", "LABEL", "STATE", "LAST USED"], &rows);
            }
        }
        KeysCommand::Revoke { id, tenant } => {
            engine.revoke_api_key(tenant_id(tenant).await?, &id).await?;
            if json {
                output::json(&serde_json::json!({ "revoked": id }))?;
            } else {
                println!("revoked {id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `tenant update`'s flags as a plan change; malformed ones refused before anything is
/// opened or changed.
fn plan_change(
    plan: Option<String>,
    limits: &[String],
    features: &[String],
    budget: Option<String>,
    trial_ends: Option<String>,
    subscription_ends: Option<String>,
    reset_overrides: bool,
) -> Result<tenancy::PlanChange> {
    let usage = |m: String| anyhow::Error::new(CliError::usage("invalid_argument", m));
    let pair = |raw: &str, what: &str| {
        raw.split_once('=')
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
            .ok_or_else(|| usage(format!("--{what} {raw:?}: use NAME=VALUE")))
    };
    let mut change = tenancy::PlanChange {
        plan,
        reset_overrides,
        ..Default::default()
    };
    for raw in limits {
        let (name, value) = pair(raw, "limit")?;
        let max = match value.as_str() {
            "unlimited" => None,
            n => Some(n.parse::<u64>().map_err(|_| {
                usage(format!(
                    "--limit {raw:?}: the maximum is a whole number or \"unlimited\""
                ))
            })?),
        };
        change.limits.insert(name, max);
    }
    for raw in features {
        let (name, value) = pair(raw, "feature")?;
        let on = match value.as_str() {
            "on" | "true" => true,
            "off" | "false" => false,
            _ => return Err(usage(format!("--feature {raw:?}: use NAME=on or NAME=off"))),
        };
        change.features.insert(name, on);
    }
    change.budget = match budget.as_deref() {
        None => None,
        Some("plan") => Some(None),
        Some(b) => Some(Some(
            b.parse::<tenancy::Money>()
                .map_err(|e| usage(format!("--budget: {e}")))?,
        )),
    };
    let time = |raw: Option<String>,
                flag: &str|
     -> Result<Option<Option<chrono::DateTime<chrono::Utc>>>> {
        Ok(match raw.as_deref() {
            None => None,
            Some("none") => Some(None),
            Some(t) => Some(Some(
                chrono::DateTime::parse_from_rfc3339(t)
                    .map_err(|e| usage(format!("--{flag} {t:?}: not an RFC 3339 time ({e})")))?
                    .with_timezone(&chrono::Utc),
            )),
        })
    };
    change.trial_ends_at = time(trial_ends, "trial-ends")?;
    change.subscription_ends_at = time(subscription_ends, "subscription-ends")?;
    Ok(change)
}

fn plans(plans: &tenancy::Plans, json: bool) -> Result<ExitCode> {
    if json {
        output::json(&serde_json::json!({
            "default": plans.default_plan(),
            "data": plans.all(),
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    if plans.is_empty() {
        println!("no plans are configured ([[plans]] in tenancy.toml)");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = plans
        .all()
        .iter()
        .map(|p| {
            let mut limits: Vec<String> = Vec::new();
            let l = &p.limits;
            for (name, v) in [
                ("members", l.members),
                ("api_keys", l.api_keys),
                ("owned_tenants", l.owned_tenants),
                ("storage_bytes", l.storage_bytes),
                ("requests_per_minute", l.requests_per_minute),
                ("burst", l.burst),
            ] {
                if let Some(v) = v {
                    limits.push(format!("{name}={v}"));
                }
            }
            limits.extend(l.rows.iter().map(|r| format!("{}={}", r.name, r.max)));
            let on: Vec<&str> = p
                .features
                .iter()
                .filter(|(_, on)| **on)
                .map(|(k, _)| k.as_str())
                .collect();
            let default = if plans.default_plan() == Some(p.name.as_str()) {
                " (default)"
            } else {
                ""
            };
            vec![
                format!("{}{default}", p.name),
                format!("{} {}", p.price.base, p.price.currency),
                if limits.is_empty() {
                    "-".into()
                } else {
                    limits.join(" ")
                },
                if on.is_empty() {
                    "-".into()
                } else {
                    on.join(" ")
                },
            ]
        })
        .collect();
    output::table(&["PLAN", "BASE PRICE", "LIMITS", "FEATURES"], &rows);
    Ok(ExitCode::SUCCESS)
}

async fn usage(
    engine: Engine,
    slug: &str,
    from: Option<String>,
    to: Option<String>,
    csv: bool,
    sample: bool,
    json: bool,
) -> Result<ExitCode> {
    let tenant = engine.tenant(&Slug::parse(slug)?).await?;
    let range = tenancy::usage::DayRange::parse(
        from.as_deref(),
        to.as_deref(),
        chrono::Utc::now().date_naive(),
    )
    .map_err(|e| CliError::usage("invalid_date_range", format!("--from/--to: {e}")))?;
    if sample {
        engine.sample_storage(&tenant).await?;
    }
    let report = engine.usage(&tenant, range).await?;
    if json {
        output::json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    if csv {
        print!("{}", report.to_csv());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "usage of {} from {} to {} (UTC days)",
        tenant.slug, report.from, report.to
    );
    if report.days.is_empty() {
        println!("nothing counted");
        return Ok(ExitCode::SUCCESS);
    }
    let metrics: Vec<tenancy::plans::Metric> = tenancy::plans::Metric::ALL
        .into_iter()
        .filter(|m| report.totals.contains_key(m))
        .collect();
    let mut headers = vec!["DAY"];
    headers.extend(metrics.iter().map(|m| m.as_str()));
    let headers: Vec<String> = headers.iter().map(|h| h.to_uppercase()).collect();
    let cell = |v: Option<&u64>| v.map_or("-".to_owned(), u64::to_string);
    let mut rows: Vec<Vec<String>> = report
        .days
        .iter()
        .map(|d| {
            let mut row = vec![d.day.to_string()];
            row.extend(metrics.iter().map(|m| cell(d.metrics.get(m))));
            row
        })
        .collect();
    let mut total = vec!["total".to_owned()];
    total.extend(metrics.iter().map(|m| cell(report.totals.get(m))));
    rows.push(total);
    output::table(
        &headers.iter().map(String::as_str).collect::<Vec<_>>(),
        &rows,
    );
    if !report.requests_by_label.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = report
            .requests_by_label
            .iter()
            .map(|(label, n)| vec![label.clone(), n.to_string()])
            .collect();
        output::table(&["API KEY LABEL", "REQUESTS"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}

async fn cost(engine: Engine, slug: &str, json: bool) -> Result<ExitCode> {
    let tenant = engine.tenant(&Slug::parse(slug)?).await?;
    let cost = engine.cost(&tenant).await?;
    if json {
        output::json(&cost)?;
        return Ok(ExitCode::SUCCESS);
    }
    let c = &cost.currency;
    println!(
        "{} in {} (plan {}), as of {}: day {} of {}",
        tenant.slug,
        cost.month,
        cost.plan.as_deref().unwrap_or("none"),
        cost.as_of,
        cost.elapsed_days,
        cost.days_in_month
    );
    let mut rows = vec![vec![
        "base".to_owned(),
        "-".to_owned(),
        "-".to_owned(),
        format!("{} {c}", cost.base),
    ]];
    for line in &cost.lines {
        rows.push(vec![
            line.metric.as_str().to_owned(),
            line.quantity.to_string(),
            format!("{} {c}", line.unit_price),
            format!("{} {c}", line.amount),
        ]);
    }
    output::table(&["ITEM", "QUANTITY", "UNIT PRICE", "AMOUNT"], &rows);
    println!("month to date  {} {c}", cost.mtd);
    println!("projection     {} {c}", cost.projection);
    match (cost.budget, cost.percent_of_budget) {
        (Some(budget), Some(pct)) => println!(
            "budget         {budget} {c} ({pct}% used, {}% projected)",
            cost.projected_percent_of_budget.unwrap_or_default()
        ),
        _ => println!("budget         none"),
    }
    for alert in &cost.alerts {
        println!(
            "alert          {}% of the budget reached at {} ({} {c})",
            alert.threshold,
            alert.raised_at.to_rfc3339(),
            alert.cost
        );
    }
    Ok(ExitCode::SUCCESS)
}
