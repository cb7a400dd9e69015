//! `vantage-admin`: migrate, seed, config (dump, diff, apply), create-token, serve, worker,
//! openapi.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use vantage_admin::{
    api, counters::Counters, db, publish::Publisher, seed, sync, AdminConfig, AppState,
};

/// `filter`, with tokio-postgres held at `info` whatever it says: at `debug` it logs every
/// statement's parameters, tenants' secrets among them.
fn without_secrets(filter: tracing_subscriber::EnvFilter) -> tracing_subscriber::EnvFilter {
    match "tokio_postgres=info".parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    }
}

#[derive(Parser)]
#[command(name = "vantage-admin", version, about = "VantageEdge admin service")]
struct Cli {
    /// Settings file (see conf/admin.yaml). Without it: defaults plus environment
    /// (DATABASE_URL, REDIS_URL, VANTAGE_NOTIFY_SECRET, VANTAGE_ADMIN_LISTEN).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the SQL migrations (idempotent; creates the database when missing).
    Migrate,
    /// Load the demo tenants of conf/demo.yaml (idempotent).
    Seed {
        /// Another YAML config to load instead of the embedded demo.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Declarative configuration: dump it as YAML, diff a file against the database, apply
    /// a file (docs/sync.md).
    Config {
        #[command(subcommand)]
        action: ConfigCommand,
    },
    /// Print a new admin token once (only its SHA-256 is stored).
    CreateToken {
        /// superadmin or tenant_admin.
        #[arg(long)]
        role: String,
        /// Tenant id or subdomain (tenant_admin only).
        #[arg(long)]
        tenant: Option<String>,
        /// What the token is for.
        #[arg(long)]
        name: String,
    },
    /// Run jobs of the queue: billing, alerts, webhook deliveries, partitions and retention
    /// (run one or more; they share the queue).
    Worker,
    /// Print the OpenAPI document of the REST API (needs no database).
    Openapi,
    /// Run the REST API.
    Serve {
        /// Listen address (overrides the settings file). Port 0 picks a free port.
        #[arg(long)]
        listen: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Write the stored configuration as the YAML the proxy reads (without `server:`),
    /// lists sorted by id; JWT issuers' shared secrets are left out (noted on stderr).
    Dump {
        /// Only this tenant (id or subdomain) and its resources.
        #[arg(long)]
        tenant: Option<String>,
        /// Write to this file instead of stdout.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
    /// Print what `apply` would change: + added, ~ changed (field by field), - removed.
    Diff {
        /// The YAML file (`-`: stdin).
        #[arg(short = 'f', long)]
        file: PathBuf,
        /// Only this tenant (id or subdomain): the file holds it and nothing of another.
        #[arg(long)]
        tenant: Option<String>,
        /// Also show the stored resources the file does not list as removed.
        #[arg(long)]
        prune: bool,
        /// Exit with 2 when there are changes (0 when none), for CI.
        #[arg(long)]
        exit_code: bool,
    },
    /// Apply the file in one transaction (refused whole on any problem), then announce the
    /// new version.
    Apply {
        /// The YAML file (`-`: stdin).
        #[arg(short = 'f', long)]
        file: PathBuf,
        /// Only this tenant (id or subdomain): the file holds it and nothing of another.
        #[arg(long)]
        tenant: Option<String>,
        /// Remove the stored resources (of the tenant, with --tenant) the file does not list.
        #[arg(long)]
        prune: bool,
        /// Write everything, then roll back: checks what the database checks, keeps nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(without_secrets(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        ))
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vantage-admin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut cfg = AdminConfig::load(cli.config.as_deref())?;
    let done: anyhow::Result<()> = match cli.command {
        Command::Config { action } => return config_command(action, &cfg).await,
        Command::Openapi => {
            println!("{}", vantage_admin::openapi::document().to_pretty_json()?);
            Ok(())
        }
        Command::Migrate => db::migrate(&cfg.database_url, cfg.partition_days_ahead).await,
        Command::Seed { file } => {
            let text = match &file {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .with_context(|| format!("cannot read {}", p.display()))?,
                ),
                None => None,
            };
            let (version, demo) = seed::seed(&cfg.database_url, text.as_deref(), &cfg).await?;
            println!("seeded config version {version}");
            for t in &demo.tenants {
                println!("tenant {} (subdomain {}): {}", t.name, t.subdomain, t.id);
            }
            if file.is_none() {
                println!("demo API key: vk_live_demo_acme_key_do_not_use_in_prod");
            }
            Ok(())
        }
        Command::CreateToken { role, tenant, name } => {
            let token =
                db::create_token(&cfg.database_url, &role, tenant.as_deref(), &name).await?;
            println!("{token}");
            Ok(())
        }
        Command::Serve { listen } => {
            if let Some(l) = listen {
                cfg.listen = l;
            }
            if !cfg.otlp_endpoint.is_empty() {
                // The exporter's HTTP client blocks: build it off the async threads.
                let endpoint = cfg.otlp_endpoint.clone();
                tokio::task::spawn_blocking(move || vantage_admin::otel::init(&endpoint)).await??;
            }
            serve(cfg).await
        }
        Command::Worker => vantage_admin::worker::run(cfg).await,
    };
    done.map(|()| ExitCode::SUCCESS)
}

/// `vantage-admin config dump|diff|apply` (docs/sync.md). Exit codes: 0 done, 1 error or
/// refused (the caller prints it), 2 `diff --exit-code` found changes.
async fn config_command(action: ConfigCommand, cfg: &AdminConfig) -> anyhow::Result<ExitCode> {
    let context = || {
        cfg.resource_context()
            .map_err(|e| anyhow::anyhow!("base_domains / jwks_allowed_networks: {e}"))
    };
    match action {
        ConfigCommand::Dump { tenant, output } => {
            let mut client = db::connect(&cfg.database_url).await?;
            let scope = find_scope(&client, tenant.as_deref()).await?;
            let dump = sync::dump(&mut client, scope.as_ref()).await?;
            match &output {
                Some(p) => std::fs::write(p, &dump.yaml)
                    .with_context(|| format!("cannot write {}", p.display()))?,
                None => print!("{}", dump.yaml),
            }
            for n in &dump.notes {
                eprintln!("note: {n}");
            }
            Ok(ExitCode::SUCCESS)
        }
        ConfigCommand::Diff {
            file,
            tenant,
            prune,
            exit_code,
        } => {
            let (file, notes) = read_file(&file)?;
            let mut client = db::connect(&cfg.database_url).await?;
            let scope = find_scope(&client, tenant.as_deref()).await?;
            let d = sync::diff(&mut client, file, &context()?, scope.as_ref(), prune).await?;
            for n in notes.iter().chain(&d.planned.notes) {
                eprintln!("note: {n}");
            }
            print!("{}", d.planned.diff.render());
            Ok(if exit_code && !d.planned.diff.is_empty() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
        ConfigCommand::Apply {
            file,
            tenant,
            prune,
            dry_run,
        } => {
            let (file, notes) = read_file(&file)?;
            let mut client = db::connect(&cfg.database_url).await?;
            let scope = find_scope(&client, tenant.as_deref()).await?;
            let context = context()?;
            let publisher = publisher_for_cli(cfg)?;
            let options = sync::ApplyOptions {
                context: &context,
                publisher: publisher.as_ref().ok(),
                scope: scope.as_ref(),
                prune,
                dry_run,
            };
            let applied = sync::apply(&mut client, file, &options).await?;
            for n in notes.iter().chain(&applied.planned.notes) {
                eprintln!("note: {n}");
            }
            let diff = &applied.planned.diff;
            let (a, c, r) = diff.counts();
            print!("{}", diff.changes());
            if diff.is_empty() {
                println!("no changes; config version stays {}", applied.version);
            } else if !applied.committed {
                println!(
                    "dry run: {a} to add, {c} to change, {r} to remove; rolled back, config version stays {}",
                    applied.version
                );
            } else {
                println!(
                    "applied: {a} added, {c} changed, {r} removed; config version {}",
                    applied.version
                );
                match &publisher {
                    Ok(_) => println!("announced on Redis channel {}", cfg.channel()),
                    Err(why) => {
                        println!("not announced ({why}): the proxies' version poll picks it up")
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The tenant of `--tenant`, if given.
async fn find_scope(
    client: &tokio_postgres::Client,
    tenant: Option<&str>,
) -> anyhow::Result<Option<sync::Scope>> {
    match tenant {
        Some(t) => sync::Scope::find(client, t).await.map(Some),
        None => Ok(None),
    }
}

/// A file's configuration (`-`: stdin) and notes about it.
fn read_file(path: &std::path::Path) -> anyhow::Result<(vantage_model::Config, Vec<String>)> {
    let (text, name) = if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("cannot read stdin")?;
        (text, "stdin".to_string())
    } else {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        (text, path.display().to_string())
    };
    sync::parse(&text, &name)
}

/// The publisher of `config apply`, or why there is none.
fn publisher_for_cli(cfg: &AdminConfig) -> anyhow::Result<Result<Publisher, String>> {
    if cfg.redis_url.is_empty() {
        return Ok(Err("redis_url is empty".into()));
    }
    if let Some(problem) = vantage_model::redis_url_problem(&cfg.redis_url) {
        anyhow::bail!("redis_url: {problem}");
    }
    if cfg.notify_secret.len() < 16 {
        return Ok(Err(
            "no notify_secret (VANTAGE_NOTIFY_SECRET) of at least 16 bytes".into(),
        ));
    }
    Ok(Ok(Publisher::start(
        &cfg.redis_url,
        cfg.channel(),
        cfg.notify_secret.clone(),
        Duration::from_millis(cfg.publish_timeout_ms),
    )?))
}

async fn serve(cfg: AdminConfig) -> anyhow::Result<()> {
    cfg.check_for_serve()?;
    let pool = db::pool(&cfg.database_url, cfg.database_pool_size)?;
    let publisher = if cfg.redis_url.is_empty() {
        tracing::warn!("redis_url is empty: config notices are not published");
        None
    } else {
        Some(Publisher::start(
            &cfg.redis_url,
            cfg.channel(),
            cfg.notify_secret.clone(),
            Duration::from_millis(cfg.publish_timeout_ms),
        )?)
    };
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let counters = if cfg.redis_url.is_empty() {
        None
    } else {
        Some(Counters::start(&cfg.redis_url, cfg.redis_prefix.clone())?)
    };
    let st = Arc::new(AppState::new(pool, cfg.clone(), publisher, counters)?);
    println!("vantage-admin listening on http://{addr}");
    tracing::info!(%addr, channel = %cfg.channel(), "vantage-admin serving");
    axum::serve(listener, api::router(st))
        .with_graceful_shutdown(async {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            {
                let mut term =
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        Ok(s) => s,
                        Err(_) => return,
                    };
                tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            }
            #[cfg(not(unix))]
            let _ = ctrl_c.await;
        })
        .await?;
    Ok(())
}
