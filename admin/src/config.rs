//! Settings of the admin service (`conf/admin.yaml`), with environment overrides.

use serde::Deserialize;
use std::path::Path;

/// Everything `vantage-admin` is configured with. Every field has a default; see
/// `conf/admin.yaml` for a commented example.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the REST API. Port 0 picks a free port (the chosen address is printed).
    /// Example: `127.0.0.1:8081`.
    pub listen: String,
    /// Postgres connection URL (env `DATABASE_URL` overrides).
    /// Example: `postgres://postgres@127.0.0.1:5432/vantage`.
    pub database_url: String,
    /// Most Postgres connections the API holds. Example: `8`.
    pub database_pool_size: usize,
    /// The proxies' Redis (their `server.redis.url`; env `REDIS_URL` overrides): config-change
    /// notices are published there and the quota counters of API keys are read from it.
    /// A single server (`redis://`), a Redis Cluster (`redis-cluster://host:port?node=…`) or
    /// a primary behind Sentinel (`redis-sentinel://…?sentinelServiceName=…`), as for the
    /// proxies. Empty: no notices are published (proxies then only see changes through their
    /// version poll) and quota status answers 503. Example: `redis://127.0.0.1:6379`.
    pub redis_url: String,
    /// The proxies' `server.redis.key_prefix`: notices go to the channel
    /// `<redis_prefix>:config`, quota counters are read at `<redis_prefix>:q:…`.
    /// Example: `vantage`.
    pub redis_prefix: String,
    /// Shared HMAC secret of the notices (env `VANTAGE_NOTIFY_SECRET` overrides); the
    /// proxies must have the same. At least 16 bytes when `redis_url` is set.
    pub notify_secret: String,
    /// Longest wait for Redis to take a notice before the API answers anyway, in
    /// milliseconds. Example: `500`.
    pub publish_timeout_ms: u64,
    /// Largest request body accepted, in bytes; larger bodies get 413. Example: `1048576`.
    pub max_body_bytes: usize,
    /// The proxies of the fleet have `server.redis` set, so `backend: redis` rate limits and
    /// Redis cache storage are accepted. Example: `true`.
    pub fleet_has_redis: bool,
    /// Daily request_logs and usage_minute partitions are kept this many days ahead.
    /// Example: `7`.
    pub partition_days_ahead: u32,
    /// Daily request_logs partitions older than this many days are dropped; 0 keeps all.
    /// Example: `30`.
    pub request_log_retention_days: u32,
    /// Daily usage_minute partitions (per-minute usage) older than this many days are
    /// dropped; 0 keeps all. Example: `7`.
    pub usage_minute_retention_days: u32,
    /// usage_hour rows (per-hour usage) older than this many days are deleted; 0 keeps all.
    /// usage_day rows are kept. Example: `90`.
    pub usage_hour_retention_days: u32,
    /// Violation rows older than this many days are deleted; 0 keeps all. Example: `90`.
    pub violation_retention_days: u32,
    /// usage_quarter rows (per-15-minute usage, what billing and quota alerts read) older
    /// than this many days are deleted; 0 keeps all. Keep it above the longest billing
    /// period plus `worker.correction_days`. Example: `400`.
    pub usage_quarter_retention_days: u32,
    /// How often the workers maintain the partitions and retention, in seconds.
    /// Example: `3600`.
    pub partition_interval_s: u64,
    /// OTLP/HTTP traces endpoint for the admin's request spans (env `VANTAGE_OTLP_ENDPOINT`
    /// overrides); empty: no export. Example: `http://127.0.0.1:4318/v1/traces`.
    pub otlp_endpoint: String,
    /// The fleet's `server.base_domains`: names under them belong to tenant subdomains, so
    /// no tenant may claim one as a custom host. Must equal the proxies'.
    /// Example: `["vantage.localhost"]`.
    pub base_domains: Vec<String>,
    /// The fleet's `server.jwks_allowed_networks` (JWKS URLs into other special-purpose
    /// networks are refused). Example: `["127.0.0.0/8", "::1/128"]`.
    pub jwks_allowed_networks: Vec<String>,
    /// The `worker` subcommand: job queue, billing, alerts and webhooks.
    pub worker: WorkerSettings,
    /// The fleet view (`GET /api/v1/fleet`) and `?wait=` on writes.
    pub fleet: FleetSettings,
}

/// How the admin reads the proxies' heartbeats (the `fleet:` section).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetSettings {
    /// A proxy without a heartbeat for this long is shown as gone (and no longer waited
    /// for). Keep it a few times the proxies' `server.postgres.fleet.heartbeat_ms`.
    /// Example: `10000`.
    pub gone_after_ms: u64,
    /// Longest `?wait=` a write may ask for, in milliseconds. Example: `30000`.
    pub max_wait_ms: u64,
}

impl FleetSettings {
    pub fn gone_after(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.gone_after_ms.max(100))
    }
    pub fn max_wait(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.max_wait_ms)
    }
}

impl Default for FleetSettings {
    fn default() -> Self {
        FleetSettings {
            gone_after_ms: 10_000,
            max_wait_ms: 30_000,
        }
    }
}

/// Settings of `vantage-admin worker` (the `worker:` section).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// Address of the worker's `/metrics` and `/healthz` (no token; keep it private).
    /// Port 0 picks a free port (printed). Example: `127.0.0.1:9095`.
    pub metrics_listen: String,
    /// Jobs one worker runs at once. Example: `4`.
    pub concurrency: usize,
    /// How long a claimed job is a worker's before another may claim it again (the worker
    /// extends it while the job runs; a worker that died loses it after this), in seconds.
    /// Example: `60`.
    pub lease_s: u64,
    /// Pause between looks at an empty queue, in milliseconds. Example: `500`.
    pub poll_ms: u64,
    /// First retry delay of a failed job; each further one doubles, with full jitter, up to
    /// `retry_max_s`. In milliseconds. Example: `1000`.
    pub retry_base_ms: u64,
    /// Longest retry delay, in seconds. Example: `3600`.
    pub retry_max_s: u64,
    /// Finished jobs are deleted after this many days (dead ones stay until replayed or
    /// deleted); 0 keeps all. Example: `30`.
    pub job_retention_days: u32,
    /// Events (with their webhook deliveries and attempts) and resolved alerts are deleted
    /// after this many days; 0 keeps all, else at least 31. Example: `90`.
    pub event_retention_days: u32,
    /// How often each worker looks for periodic jobs that are due, in seconds (each is
    /// created once per fleet). Example: `30`.
    pub schedule_interval_s: u64,
    /// Alert rules are evaluated this often, in seconds. Example: `60`.
    pub alert_interval_s: u64,
    /// Closed billing periods are checked for late usage this often, in seconds.
    /// Example: `300`.
    pub reconcile_interval_s: u64,
    /// A period is billed this long after it ended, so that the proxies' last usage of it
    /// (flushed every second or so) is in; in seconds. Example: `120`.
    pub billing_grace_s: u64,
    /// Late usage of periods that ended up to this many days ago gives a correction record;
    /// older periods stay as billed. Example: `40`.
    pub correction_days: u32,
    /// One webhook attempt's time limit (connect, send, answer), in milliseconds.
    /// Example: `10000`.
    pub webhook_timeout_ms: u64,
    /// Delays before each retry of a failed webhook delivery, in seconds; when they are
    /// used up the delivery fails for good (a dead letter). Default: 5 s, 5 min, 30 min,
    /// 2 h, 5 h, 10 h, 10 h (about 27.6 hours). Example: `[5, 300, 1800]`.
    pub webhook_retry_delays_s: Vec<f64>,
    /// Networks webhooks may reach although they are private, loopback or link-local
    /// (everything else of those is refused). Example: `["10.20.0.0/16"]`.
    pub webhook_allowed_networks: Vec<String>,
    /// Pool health reports older than this are ignored (the proxy is gone), in seconds.
    /// Example: `120`.
    pub pool_health_stale_s: u64,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            metrics_listen: "127.0.0.1:9095".into(),
            concurrency: 4,
            lease_s: 60,
            poll_ms: 500,
            retry_base_ms: 1000,
            retry_max_s: 3600,
            job_retention_days: 30,
            event_retention_days: 90,
            schedule_interval_s: 30,
            alert_interval_s: 60,
            reconcile_interval_s: 300,
            billing_grace_s: 120,
            correction_days: 40,
            webhook_timeout_ms: 10_000,
            webhook_retry_delays_s: vec![5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
            webhook_allowed_networks: Vec::new(),
            pool_health_stale_s: 120,
        }
    }
}

impl WorkerSettings {
    pub fn lease(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lease_s.max(1))
    }
    pub fn poll(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.poll_ms.max(10))
    }
    pub fn retry_base(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.retry_base_ms.max(1))
    }
    pub fn retry_max(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.retry_max_s.max(1))
    }
    pub fn schedule_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.schedule_interval_s.max(1))
    }
    pub fn webhook_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.webhook_timeout_ms.max(100))
    }
    /// The webhook retry delays.
    pub fn webhook_retry_delays(&self) -> Vec<std::time::Duration> {
        self.webhook_retry_delays_s
            .iter()
            .map(|s| std::time::Duration::from_secs_f64(s.clamp(0.0, 7.0 * 86_400.0)))
            .collect()
    }
    /// `webhook_allowed_networks`, parsed.
    pub fn allowed_networks(&self) -> anyhow::Result<Vec<vantage_model::ipnet::IpNet>> {
        self.webhook_allowed_networks
            .iter()
            .enumerate()
            .map(|(i, n)| {
                vantage_model::parse_cidr(n).ok_or_else(|| {
                    anyhow::anyhow!(
                        "worker.webhook_allowed_networks[{i}]: '{n}' is not a network (CIDR)"
                    )
                })
            })
            .collect()
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:8081".into(),
            database_url: "postgres://postgres@127.0.0.1:5432/vantage".into(),
            database_pool_size: 8,
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_prefix: "vantage".into(),
            notify_secret: String::new(),
            publish_timeout_ms: 500,
            max_body_bytes: 1 << 20,
            fleet_has_redis: true,
            partition_days_ahead: 7,
            request_log_retention_days: 30,
            usage_minute_retention_days: 7,
            usage_hour_retention_days: 90,
            violation_retention_days: 90,
            usage_quarter_retention_days: 400,
            partition_interval_s: 3600,
            otlp_endpoint: String::new(),
            base_domains: vantage_model::ServerSettings::default().base_domains,
            jwks_allowed_networks: vantage_model::ServerSettings::default().jwks_allowed_networks,
            worker: WorkerSettings::default(),
            fleet: FleetSettings::default(),
        }
    }
}

impl AdminConfig {
    /// Read the YAML file (when given), then apply the environment overrides.
    pub fn load(path: Option<&Path>) -> anyhow::Result<AdminConfig> {
        let mut cfg = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
                serde_yaml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
            }
            None => AdminConfig::default(),
        };
        let env = |k: &str| std::env::var(k).ok();
        if let Some(v) = env("DATABASE_URL") {
            cfg.database_url = v;
        }
        if let Some(v) = env("REDIS_URL") {
            cfg.redis_url = v;
        }
        if let Some(v) = env("VANTAGE_NOTIFY_SECRET") {
            cfg.notify_secret = v;
        }
        if let Some(v) = env("VANTAGE_ADMIN_LISTEN") {
            cfg.listen = v;
        }
        if let Some(v) = env("VANTAGE_OTLP_ENDPOINT") {
            cfg.otlp_endpoint = v;
        }
        Ok(cfg)
    }

    /// Problems that stop `serve` from starting.
    pub fn check_for_serve(&self) -> anyhow::Result<()> {
        let otlp_ok = self.otlp_endpoint.is_empty()
            || self.otlp_endpoint.starts_with("http://")
            || self.otlp_endpoint.starts_with("https://");
        if !otlp_ok {
            anyhow::bail!("otlp_endpoint must be an http:// or https:// URL");
        }
        if let Some(problem) =
            vantage_model::redis_url_problem(&self.redis_url).filter(|_| !self.redis_url.is_empty())
        {
            anyhow::bail!("redis_url: {problem}");
        }
        if !self.redis_url.is_empty() && self.notify_secret.len() < 16 {
            anyhow::bail!(
                "notify_secret (or VANTAGE_NOTIFY_SECRET) must be at least 16 bytes when redis_url is set"
            );
        }
        if self.redis_prefix.is_empty() || self.redis_prefix.contains([' ', '{', '}']) {
            anyhow::bail!("redis_prefix must be non-empty, without spaces or braces");
        }
        if self.database_pool_size == 0 {
            anyhow::bail!("database_pool_size must be at least 1");
        }
        // The fleet's settings must pass the proxies' own rules.
        if let Err(e) = self.resource_context() {
            anyhow::bail!("base_domains / jwks_allowed_networks: {e}");
        }
        Ok(())
    }

    /// Problems that stop `worker` from starting.
    pub fn check_for_worker(&self) -> anyhow::Result<()> {
        let w = &self.worker;
        if w.concurrency == 0 || w.concurrency > 256 {
            anyhow::bail!("worker.concurrency must be 1-256");
        }
        if w.webhook_retry_delays_s
            .iter()
            .any(|d| !d.is_finite() || *d < 0.0)
        {
            anyhow::bail!("worker.webhook_retry_delays_s must be seconds of 0 or more");
        }
        w.allowed_networks()?;
        Ok(())
    }

    /// What candidate configurations are validated against: the fleet's base domains, JWKS
    /// networks and whether its proxies have Redis, checked with the proxies' own rules.
    pub fn resource_context(
        &self,
    ) -> Result<vantage_model::ResourceContext, vantage_model::ValidationErrors> {
        vantage_model::ResourceContext::new(
            &self.base_domains,
            &self.jwks_allowed_networks,
            self.fleet_has_redis,
        )
    }

    /// The Redis channel of config notices.
    pub fn channel(&self) -> String {
        format!("{}:config", self.redis_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_settings_that_break_the_proxies_rules_stop_serve() {
        let cfg = AdminConfig {
            base_domains: vec!["Not A Host".into()],
            jwks_allowed_networks: vec!["10.0.0.0/33".into()],
            notify_secret: "a-notify-secret-of-16+".into(),
            ..AdminConfig::default()
        };
        let err = cfg.check_for_serve().unwrap_err().to_string();
        assert!(err.contains("base_domains[0]: 'Not A Host'"), "{err}");
        assert!(
            err.contains("jwks_allowed_networks[0]: '10.0.0.0/33'"),
            "{err}"
        );
    }

    #[test]
    fn redis_url_follows_the_proxies_rules() {
        let with = |url: &str| {
            AdminConfig {
                redis_url: url.into(),
                notify_secret: "a-notify-secret-of-16+".into(),
                ..AdminConfig::default()
            }
            .check_for_serve()
            .map_err(|e| e.to_string())
        };
        for ok in [
            "",
            "redis://127.0.0.1:6379",
            "redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001",
            "redis-sentinel://127.0.0.1:26379?sentinelServiceName=vantage",
        ] {
            assert_eq!(with(ok), Ok(()), "{ok}");
        }
        let e = with("rediss://127.0.0.1:6379").unwrap_err();
        assert!(e.starts_with("redis_url: TLS"), "{e}");
        let e = with("redis-sentinel://127.0.0.1:26379").unwrap_err();
        assert!(e.contains("sentinelServiceName"), "{e}");
    }

    #[test]
    fn the_shipped_example_parses_and_documents_every_field() {
        let text = include_str!("../../conf/admin.yaml");
        let cfg: AdminConfig = serde_yaml::from_str(text).unwrap();
        cfg.check_for_serve().unwrap();
        let ctx = cfg.resource_context().unwrap();
        assert_eq!(ctx.base_domains, cfg.base_domains);
        assert!(ctx.has_redis);
        assert_eq!(cfg.channel(), "vantage:config");
        let keys = serde_yaml::from_str::<serde_yaml::Mapping>(text)
            .unwrap()
            .len();
        assert_eq!(keys, 21, "conf/admin.yaml shows every field");
        cfg.check_for_worker().unwrap();
        let worker = serde_yaml::from_str::<serde_yaml::Mapping>(text).unwrap()["worker"]
            .as_mapping()
            .unwrap()
            .len();
        assert_eq!(worker, 17, "conf/admin.yaml shows every worker field");
    }
}
