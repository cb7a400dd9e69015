//! `vantage-proxy`: the VantageEdge gateway binary.

/// mimalloc: fewer instructions per allocation than glibc malloc on the request path (the
/// benchmark floor, bare-pingora, uses it too).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use vantage_model::Config;
use vantage_proxy::server;

/// The embedded default: the self-contained demo configuration.
const DEMO_CONFIG: &str = include_str!("../../conf/demo.yaml");

#[derive(Parser)]
#[command(
    name = "vantage-proxy",
    version,
    about = "VantageEdge multi-tenant API gateway"
)]
struct Cli {
    /// YAML configuration file (default: the embedded demo configuration).
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Validate the configuration, print the result and exit (non-zero when invalid).
    #[arg(short = 't', long)]
    check: bool,
    /// Also run a demo origin on every plain-HTTP loopback target of the configuration.
    #[arg(long)]
    demo_origins: bool,
    /// Graceful upgrade: take the listening sockets over from the running process.
    #[arg(short, long)]
    upgrade: bool,
    /// Run in the background.
    #[arg(short, long)]
    daemon: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run only the demo origin (an echo server) on the given addresses.
    DemoOrigin {
        /// Address to listen on; repeat for several.
        #[arg(long, required = true)]
        listen: Vec<String>,
        /// Name reported in `X-Origin` and the JSON body.
        #[arg(long, default_value = "demo")]
        name: String,
    },
    /// Print the SHA-256 (hex) of an API key, as stored in `api_keys[].key_hash`.
    HashKey {
        /// The key.
        key: String,
    },
    /// Generate a new API key; prints the key (give it out once) and its hash (store it).
    GenKey,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // At debug, tokio-postgres logs statement parameters; they can carry tenants' secrets.
    let filter = match "tokio_postgres=info".parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    };
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .init();
}

fn load(cli: &Cli) -> Result<Config, String> {
    match &cli.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string()),
        None => Config::from_yaml_validated(DEMO_CONFIG).map_err(|e| e.to_string()),
    }
}

fn check_files(config: &Config) -> Result<(), String> {
    let mut missing = Vec::new();
    if config.server.source == vantage_model::ConfigSource::Postgres
        && !(config.tenants.is_empty()
            && config.origins.is_empty()
            && config.routes.is_empty()
            && config.api_keys.is_empty()
            && config.jwt_issuers.is_empty())
    {
        missing.push(
            "server.source: postgres: tenants, origins, routes, api_keys and jwt_issuers come from Postgres; remove them from this file".to_string(),
        );
    }
    for (i, t) in config.server.tls.iter().enumerate() {
        for (field, file) in [("cert_file", &t.cert_file), ("key_file", &t.key_file)] {
            if let Err(e) = std::fs::metadata(file) {
                missing.push(format!("server.tls[{i}].{field}: '{file}': {e}"));
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join("\n"))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::HashKey { key }) => {
            println!("{}", vantage_proxy::auth::hash_key(key));
            return ExitCode::SUCCESS;
        }
        Some(Command::GenKey) => {
            let key = vantage_proxy::auth::generate_key();
            println!("key:      {key}");
            println!("key_hash: {}", vantage_proxy::auth::hash_key(&key));
            println!("prefix:   {}", &key[..12]);
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    if let Some(Command::DemoOrigin { listen, name }) = &cli.command {
        init_logging();
        return match server::run_demo_origins(listen, name) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("demo origin failed: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let source = cli.config.as_ref().map_or_else(
        || "embedded demo configuration".to_string(),
        |p| p.display().to_string(),
    );
    let config = match load(&cli).and_then(|c| check_files(&c).map(|()| c)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vantage-proxy: {source}: configuration is invalid:\n{e}");
            return ExitCode::from(2);
        }
    };
    if cli.check {
        println!(
            "vantage-proxy: {source}: configuration OK ({} tenants, {} origins, {} routes)",
            config.tenants.len(),
            config.origins.len(),
            config.routes.len()
        );
        return ExitCode::SUCCESS;
    }
    init_logging();
    let opts = server::RunOptions {
        config_path: cli.config.clone(),
        config,
        demo_origins: cli.demo_origins,
        upgrade: cli.upgrade,
        daemon: cli.daemon,
    };
    match server::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vantage-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}
