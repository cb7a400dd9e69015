//! `vantage-admin`: migrate, seed, create-token, serve, worker, openapi.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use vantage_admin::{api, counters::Counters, db, publish::Publisher, seed, AdminConfig, AppState};

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
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vantage-admin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut cfg = AdminConfig::load(cli.config.as_deref())?;
    match cli.command {
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
    }
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
