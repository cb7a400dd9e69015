//! The process: the Pingora server with the proxy service, the ops listener, the config
//! reloader, the telemetry writers and (for the demo) the demo origins — and its end: the
//! graceful shutdown sequence ([`Lifecycle`]).

use crate::bus::{Bus, ConfigNotices};
use crate::cache::{Caches, Purges};
use crate::decision::{Decider, DecisionServer};
use crate::demo_origin::DemoOrigin;
use crate::edge::{Edge, EdgeLimits};
use crate::gateway::{Gateway, Services};
use crate::limits::enforce::Enforcer;
use crate::ops::Ops;
use crate::reload::Reloader;
use crate::snapshot::Snapshot;
use crate::source::{self, PgSource};
use crate::telemetry::metrics::METRICS;
use crate::telemetry::otel::Otel;
use crate::telemetry::Finish;
use anyhow::Context;
use arc_swap::ArcSwap;
use pingora::apps::http_app::HttpServer;
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::proxy::HttpProxy;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::server::ShutdownWatch;
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use vantage_model::{Config, ConfigSource, PostgresSettings, ServerSettings, TargetUrl};

/// The notify secret: `VANTAGE_NOTIFY_SECRET` when set, else the settings'.
fn notify_secret(pgs: &PostgresSettings) -> Option<String> {
    std::env::var("VANTAGE_NOTIFY_SECRET")
        .ok()
        .or_else(|| pgs.notify_secret.clone())
        .filter(|s| !s.is_empty())
}

/// The first configuration with `source: postgres`: from Postgres, or — while it is down or
/// holds an invalid configuration — from the last good file.
async fn initial_from_postgres(
    pg: &PgSource,
    settings: &ServerSettings,
) -> anyhow::Result<(Config, u64)> {
    let started = std::time::Instant::now();
    let fetched = pg.fetch().await.map_err(|e| e.to_string()).and_then(|v| {
        let fetched_ms = started.elapsed().as_millis();
        let config = source::combine(settings, v.config);
        config
            .validate()
            .map_err(|e| format!("version {} is invalid:\n{e}", v.version))?;
        Ok((v.version, config, fetched_ms))
    });
    match fetched {
        Ok((version, config, fetched_ms)) => {
            // The last good copy is written once the proxy runs (see crate::reload).
            tracing::info!(
                version,
                fetch_ms = fetched_ms,
                validate_ms = started.elapsed().as_millis() - fetched_ms,
                "configuration loaded from postgres"
            );
            Ok((config, version))
        }
        Err(e) => {
            let last = pg.read_last_good().map_err(|e2| {
                anyhow::anyhow!("cannot load the configuration from postgres ({e}) and there is no usable last good copy ({e2})")
            })?;
            let config = source::combine(settings, last.config);
            config
                .validate()
                .map_err(|e| anyhow::anyhow!("the last good configuration is invalid:\n{e}"))?;
            tracing::warn!(
                version = last.version,
                path = %pg.last_good_path().display(),
                "postgres unavailable ({e}); serving the last good configuration"
            );
            Ok((config, last.version))
        }
    }
}

/// The graceful shutdown sequence, started when Pingora begins one (SIGTERM, or SIGQUIT
/// after handing the listeners to a new process; Pingora then stops accepting and sleeps
/// the grace period). It waits for the requests in flight, then for the request-log and
/// usage writers to write (or, for usage, save) what they hold and for the pool-health
/// reporter to withdraw this proxy's rows, then flushes the span exporter and exits — as
/// soon as that is done, so the grace period is an upper bound rather than a fixed delay.
struct Lifecycle {
    grace: Duration,
    writers: std::sync::Mutex<Vec<Finish>>,
    otel: Option<&'static Otel>,
}

impl Lifecycle {
    /// Wait until no request is in flight, or `until`; true when drained.
    async fn drain(until: tokio::time::Instant) -> bool {
        // Let connections accepted just before the signal register their request.
        tokio::time::sleep(Duration::from_millis(200)).await;
        loop {
            if METRICS.active_requests.get() <= 0 {
                return true;
            }
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[async_trait::async_trait]
impl BackgroundService for Lifecycle {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if shutdown.changed().await.is_err() {
            return;
        }
        tracing::info!("graceful shutdown: draining in-flight requests");
        let started = tokio::time::Instant::now();
        let end = started + self.grace;
        let writers: Vec<Finish> = self
            .writers
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default();
        // Writing the last request logs and usage gets the last quarter of the grace period
        // (at most 2 s) even when requests are still in flight until then.
        let reserve = match writers.is_empty() {
            false => (self.grace / 4).min(Duration::from_secs(2)),
            true => Duration::ZERO,
        };
        let drained = Lifecycle::drain(end - reserve).await;
        // The writers finish side by side.
        let mut finishing = tokio::task::JoinSet::new();
        for w in writers {
            finishing.spawn(w.finish());
        }
        if tokio::time::timeout_at(end, finishing.join_all())
            .await
            .is_err()
        {
            tracing::warn!(
                "graceful shutdown: request logs or usage still unwritten at the end of the grace period"
            );
        }
        if let Some(otel) = self.otel {
            otel.shutdown();
        }
        if drained {
            tracing::info!("graceful shutdown: no request in flight, exiting");
        } else {
            tracing::warn!(
                in_flight = METRICS.active_requests.get(),
                "graceful shutdown: grace period over, exiting"
            );
        }
        std::process::exit(0);
    }
}

/// How to run.
pub struct RunOptions {
    /// The file to watch and reload; None for the embedded demo configuration.
    pub config_path: Option<PathBuf>,
    /// The validated configuration to start with.
    pub config: Config,
    /// Also serve a demo origin on every plain-HTTP loopback target of the configuration.
    pub demo_origins: bool,
    /// Take the listening sockets over from a running old process (graceful upgrade).
    pub upgrade: bool,
    /// Detach into the background.
    pub daemon: bool,
}

/// Loopback `http://` target addresses of a configuration (for `--demo-origins`).
pub fn demo_origin_addresses(config: &Config) -> BTreeSet<String> {
    config
        .origins
        .iter()
        .flat_map(|o| o.targets.iter())
        .filter_map(|t| TargetUrl::parse(&t.url).ok())
        .filter(|u| !u.tls && u.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()))
        .map(|u| u.authority())
        .collect()
}

/// Run a Pingora server with only demo origins on `listen` addresses.
pub fn run_demo_origins(listen: &[String], name: &str) -> anyhow::Result<()> {
    let opt = Opt::default();
    let conf = ServerConf {
        threads: 1,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        pid_file: format!("/tmp/vantage-demo-origin-{}.pid", std::process::id()),
        upgrade_sock: format!("/tmp/vantage-demo-origin-{}.sock", std::process::id()),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    for addr in listen {
        let mut svc = Service::new(
            format!("demo-origin {addr}"),
            HttpServer::new_app(DemoOrigin::new(name)),
        );
        svc.add_tcp(addr);
        server.add_service(svc);
    }
    server.run_forever()
}

/// Fail early, with a clear message, when a listening address is taken: Pingora would
/// panic inside a service task and keep running without that listener.
fn check_addresses_free(addresses: &[String]) -> anyhow::Result<()> {
    for addr in addresses {
        std::net::TcpListener::bind(addr.as_str())
            .with_context(|| format!("cannot listen on {addr}"))?;
    }
    Ok(())
}

/// Build the first snapshot and run the proxy until it is told to stop.
pub fn run(opts: RunOptions) -> anyhow::Result<()> {
    let settings = opts.config.server.clone();
    let demo_addresses: Vec<String> = if opts.demo_origins {
        demo_origin_addresses(&opts.config).into_iter().collect()
    } else {
        Vec::new()
    };
    if !opts.upgrade {
        let mut all: Vec<String> = settings.listen.clone();
        all.extend(settings.tls.iter().map(|t| t.listen.clone()));
        all.extend(std::iter::once(settings.ops_listen.clone()).filter(|a| !a.is_empty()));
        all.extend(demo_addresses.iter().cloned());
        check_addresses_free(&all)?;
    }
    // The first snapshot (and its first health checks) is built before any listener opens.
    // The demo origins only start with the server, so the demo skips that first probe.
    // Several workers: a large fleet's tenants compile in parallel.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
        .enable_all()
        .build()
        .context("starting a runtime")?;
    let pg = match (settings.source, &settings.postgres) {
        (ConfigSource::Postgres, Some(pgs)) => Some(Arc::new(
            PgSource::new(pgs).map_err(|e| anyhow::anyhow!(e))?,
        )),
        _ => None,
    };
    let (config, version) = match &pg {
        Some(pg) => rt.block_on(initial_from_postgres(pg, &settings))?,
        None => (opts.config.clone(), 1),
    };
    let started = std::time::Instant::now();
    let snapshot = rt
        .block_on(Snapshot::build(config, version, None, !opts.demo_origins))
        .context("compiling the configuration")?;
    tracing::info!(
        version,
        tenants = snapshot.tenants().len(),
        took_ms = started.elapsed().as_millis(),
        "configuration compiled"
    );
    drop(rt);
    let state = Arc::new(ArcSwap::from_pointee(snapshot));

    let opt = Opt {
        upgrade: opts.upgrade,
        daemon: opts.daemon,
        ..Default::default()
    };
    let conf = ServerConf {
        threads: settings.threads,
        grace_period_seconds: Some(settings.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(settings.graceful_shutdown_timeout_seconds),
        pid_file: settings.pid_file.clone(),
        upgrade_sock: settings.upgrade_sock.clone(),
        daemon: opts.daemon,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let redis = match &settings.redis {
        Some(r) => {
            let bg = background_service(
                "redis",
                crate::limits::redis::RedisLimiter::new(r).map_err(|e| anyhow::anyhow!(e))?,
            );
            let limiter = bg.task();
            server.add_service(bg);
            Some(limiter)
        }
        None => None,
    };
    let purges: &'static Purges = Box::leak(Box::default());
    let caches: &'static Caches = Box::leak(Box::new(Caches::new(
        settings.cache.memory_bytes,
        redis
            .as_ref()
            .map(|r| (r.client().clone(), r.prefix().to_string(), r.timeout())),
        purges,
    )));
    // Change announcements wake the reloader (source: postgres with a notify secret).
    let wake = Arc::new(tokio::sync::Notify::new());
    let notices = match (&pg, &settings.postgres) {
        (Some(_), Some(pgs)) => match notify_secret(pgs) {
            Some(secret) => Some(ConfigNotices {
                secret,
                wake: wake.clone(),
                state: state.clone(),
                window_ms: pgs.notice_window_ms,
            }),
            None => {
                tracing::warn!(
                    "no notify secret: config changes are picked up by the version poll only"
                );
                None
            }
        },
        _ => None,
    };
    if let (Some(r), Some(rs)) = (&redis, &settings.redis) {
        purges.attach_redis(r.client().clone(), r.prefix());
        let bus = Bus::new(rs, purges, notices).map_err(|e| anyhow::anyhow!(e))?;
        server.add_service(background_service("bus", bus));
    } else if notices.is_some() {
        tracing::warn!("no server.redis: config changes are picked up by the version poll only");
    }
    let otel: Option<&'static Otel> = match &settings.tracing {
        Some(t) => Some(Box::leak(Box::new(
            Otel::new(t).map_err(|e| anyhow::anyhow!(e))?,
        ))),
        None => None,
    };
    let mut writers = Vec::new();
    let request_logs = match &settings.postgres {
        Some(pgs) if pgs.request_logs.enabled => {
            let pool = crate::source::pool(pgs).map_err(|e| anyhow::anyhow!(e))?;
            let (logger, writer, finish) = crate::telemetry::request_log::channel(
                &pgs.request_logs,
                pool,
                Duration::from_millis(pgs.timeout_ms),
            );
            server.add_service(background_service("request-logs", writer));
            writers.push(finish);
            Some(logger)
        }
        _ => None,
    };
    let meter = match &settings.postgres {
        Some(pgs) if pgs.usage.enabled => {
            let pool = crate::source::pool(pgs).map_err(|e| anyhow::anyhow!(e))?;
            let (meter, writer, finish) = crate::telemetry::usage::channel(
                &pgs.usage,
                pool.clone(),
                Duration::from_millis(pgs.timeout_ms),
            );
            // Pool health is reported beside usage: same pool, same proxy name, same interval.
            let (reporter, withdraw) = crate::telemetry::pool_health::reporter(
                state.clone(),
                pool,
                writer.proxy().to_string(),
                Duration::from_millis(pgs.usage.flush_interval_ms),
                Duration::from_millis(pgs.timeout_ms),
            );
            server.add_service(background_service("usage", writer));
            server.add_service(background_service("pool-health", reporter));
            writers.push(finish);
            writers.push(withdraw);
            Some(meter)
        }
        _ => None,
    };
    if let (ConfigSource::Postgres, Some(pgs)) = (settings.source, &settings.postgres) {
        if pgs.fleet.enabled {
            let pool = crate::source::pool(pgs).map_err(|e| anyhow::anyhow!(e))?;
            let (beat, leave) = crate::telemetry::fleet::heartbeat(
                state.clone(),
                pool,
                Duration::from_millis(pgs.fleet.heartbeat_ms),
                Duration::from_millis(pgs.timeout_ms),
            );
            server.add_service(background_service("fleet", beat));
            writers.push(leave);
        }
    }
    server.add_service(background_service(
        "lifecycle",
        Lifecycle {
            grace: Duration::from_secs(settings.grace_period_seconds),
            writers: std::sync::Mutex::new(writers),
            otel,
        },
    ));
    let limiter = Arc::new(Enforcer::new(redis.clone()).with_fields(settings.rate_limit_headers));
    if let Some(d) = &settings.decision {
        let decider = Arc::new(Decider::new(state.clone(), limiter.clone(), meter.clone()));
        server.add_service(background_service(
            "decision",
            DecisionServer {
                settings: d.clone(),
                decider,
            },
        ));
    }
    let gateway = Gateway::new(
        state.clone(),
        &settings,
        Services {
            limiter,
            caches,
            request_logs,
            meter,
            otel,
        },
    );
    let mut server_options = HttpServerOptions::default();
    server_options.h2c = settings.h2c;
    server_options.h2_idle_timeout = Some(Duration::from_millis(
        settings.client_limits.keepalive_timeout_ms,
    ));
    let mut http = HttpProxy::new(gateway, server.configuration.clone());
    http.server_options = Some(server_options);
    http.handle_init_modules();
    let edge = Edge::new(
        http,
        &settings.client_limits,
        EdgeLimits::new(
            &settings.client_limits,
            settings.max_request_header_bytes,
            settings.max_request_headers,
        ),
        state.clone(),
    );
    crate::edge::raise_fd_limit(settings.client_limits.max_connections);
    let mut proxy = Service::new("vantage-proxy".to_string(), edge);
    for addr in &settings.listen {
        proxy.add_tcp(addr);
    }
    for t in &settings.tls {
        let mut tls = TlsSettings::intermediate(&t.cert_file, &t.key_file)
            .map_err(|e| anyhow::anyhow!("TLS listener {}: {e}", t.listen))?;
        if t.h2 {
            tls.enable_h2();
        }
        proxy.add_tls_with_settings(&t.listen, None, tls);
    }
    server.add_service(proxy);

    if !settings.ops_listen.is_empty() {
        let mut ops = Service::new(
            "ops".to_string(),
            HttpServer::new_app(Ops::new(
                state.clone(),
                redis.clone(),
                purges,
                settings.ops_token.clone(),
                pg.clone(),
            )),
        );
        ops.add_tcp(&settings.ops_listen);
        ops.threads = Some(1);
        server.add_service(ops);
    }

    let reloader = match (&pg, &settings.postgres) {
        (Some(pg), Some(pgs)) => Reloader::postgres(
            pg.clone(),
            Duration::from_millis(pgs.poll_interval_ms),
            Duration::from_millis(pgs.min_reload_interval_ms),
            wake.clone(),
            state.clone(),
        ),
        _ => Reloader::new(
            opts.config_path.clone(),
            settings.watch_config,
            state.clone(),
        ),
    };
    server.add_service(background_service("config-reloader", reloader));

    if opts.demo_origins {
        for addr in demo_addresses {
            let name = format!("demo-{}", addr.rsplit(':').next().unwrap_or("origin"));
            let mut svc = Service::new(
                format!("demo-origin {addr}"),
                HttpServer::new_app(DemoOrigin::new(name)),
            );
            svc.add_tcp(&addr);
            svc.threads = Some(1);
            server.add_service(svc);
        }
    }

    tracing::info!(
        listen = ?settings.listen,
        ops = %settings.ops_listen,
        tenants = opts.config.tenants.len(),
        routes = opts.config.routes.len(),
        "vantage-proxy starting"
    );
    server.run_forever()
}
