//! VantageEdge configuration schema.
//!
//! Plain serde types for everything the gateway is configured with — the proxy's own
//! settings ([`ServerSettings`]), tenants, origins and routes — plus their validation, which
//! reports every bad field with its path (`routes[3].path_pattern: ...`) and the kind of
//! problem ([`ErrorKind`]): [`validate_server`] for a proxy's own settings,
//! [`validate_resources`] for what it serves, and [`Config::validate`] for both.
//!
//! With the `openapi` feature every type also derives `utoipa::ToSchema`, for the admin
//! service's OpenAPI document (the proxy builds without it).
//!
//! The same types are read from a YAML file (or from Postgres) by the proxy and written to
//! Postgres by the admin service, so both sides accept exactly the same configurations. This crate has
//! no Pingora in it on purpose: the admin service builds fast and cannot drift.

pub mod bounds;
pub mod netrules;
pub mod notify;
mod pattern;
mod plan;
mod policy;
mod slices;
pub mod traffic;
mod validate;

pub use pattern::{PathPattern, PatternError, Segment};
pub use plan::{
    quota_counter_key, Calendar, Charge, EnforcementMode, Overage, PeriodWindow, Plan, PlanBilling,
    Quota, QuotaPeriod, QuotaSubject, RouteQuota,
};
pub use policy::{
    Access, ApiKey, AuthMode, CacheBypass, CacheKeyPattern, CachePolicy, CacheStorageKind, Cors,
    IpRules, JwtIssuer, KeyStatus, LimitAlgorithm, LimitBackend, LimitSubject, OnRedisError,
    RateLimitPolicy, RouteAuth, SecurityHeaders,
};
pub use traffic::{
    AcceptParam, ApiVersion, CookieAffinity, Discovery, DnsSettings, Fallback, Mirror, SameSite,
    Split, SplitRule, StickyBy, Traffic, WeightedOrigin,
};
pub use validate::{
    parse_cidr, validate_resources, validate_server, ErrorKind, FieldError, ResourceContext,
    ValidationErrors,
};

/// Re-exported for [`netrules`] users.
pub use ipnet;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// A whole configuration file: the proxy's own settings plus the tenants, origins and
/// routes it serves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listener and process settings of the proxy (not stored in Postgres).
    #[serde(default)]
    pub server: ServerSettings,
    /// Tenants, each found by `<subdomain>.<base_domain>` or one of its custom hosts.
    #[serde(default)]
    pub tenants: Vec<Tenant>,
    /// Upstream pools. Each belongs to one tenant.
    #[serde(default)]
    pub origins: Vec<Origin>,
    /// Routes. Each belongs to one tenant and forwards to one of that tenant's origins.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// API keys (SHA-256 hashes only). Each belongs to one tenant.
    #[serde(default)]
    pub api_keys: Vec<ApiKey>,
    /// JWT issuers. Each belongs to one tenant.
    #[serde(default)]
    pub jwt_issuers: Vec<JwtIssuer>,
    /// Plans (rate limits and calendar quotas) that API keys, JWT subjects and tenants are
    /// bound to. Each belongs to one tenant.
    #[serde(default)]
    pub plans: Vec<Plan>,
}

/// Errors from reading a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or has unknown/mistyped fields.
    #[error("{0}")]
    Parse(String),
    /// The YAML parsed but failed validation.
    #[error("{0}")]
    Invalid(#[from] ValidationErrors),
}

impl Config {
    /// Parse a YAML document (no validation).
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        serde_yaml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Parse and validate a YAML document.
    pub fn from_yaml_validated(text: &str) -> Result<Config, ConfigError> {
        let cfg = Self::from_yaml(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read, parse and validate a YAML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml_validated(&text)
    }

    /// Check every field — [`validate_server`] on `server`, then [`validate_resources`] with
    /// the context `server` gives ([`ResourceContext::of`]); on failure the error lists every
    /// problem with its path, server settings first.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        validate::validate(self)
    }
}

/// Process and listener settings of one proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Plain-HTTP listeners (HTTP/1.1, and HTTP/2 with prior knowledge when `h2c` is set).
    /// Example: `["0.0.0.0:8080"]`.
    pub listen: Vec<String>,
    /// Accept HTTP/2 cleartext (prior knowledge) on the plain listeners. Example: `true`.
    pub h2c: bool,
    /// TLS listeners with their certificate files.
    pub tls: Vec<TlsListener>,
    /// Address of the ops listener (`/metrics`, `/healthz`, `/readyz`).
    /// Example: `"127.0.0.1:9090"`. Empty string disables it.
    pub ops_listen: String,
    /// Worker threads of the proxy service. Example: `2`.
    pub threads: usize,
    /// Base domains under which tenants are found by subdomain.
    /// Example: `["vantage.localhost"]` makes `acme.vantage.localhost` tenant `acme`.
    pub base_domains: Vec<String>,
    /// Upper bound, in seconds, for draining in-flight requests after SIGTERM: the proxy
    /// stops accepting at once and exits as soon as no request is in flight, or when this
    /// many seconds have passed. Example: `10`.
    pub grace_period_seconds: u64,
    /// After the grace period, how long Pingora's runtimes get to stop. Example: `5`.
    pub graceful_shutdown_timeout_seconds: u64,
    /// Most request headers accepted; more is refused with 431. Example: `100`.
    pub max_request_headers: usize,
    /// Largest total size of request header names and values, in bytes; more is refused
    /// with 431. Example: `32768`.
    pub max_request_header_bytes: usize,
    /// Watch the config file and reload when it changes (SIGHUP always reloads).
    pub watch_config: bool,
    /// Write one JSON access-log line per request to stdout. Example: `true`.
    pub access_log: bool,
    /// Redis: shared rate limits (`backend: redis`), the Redis cache tier, purge and
    /// configuration announcements. Example: `{url: "redis://127.0.0.1:6379"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSettings>,
    /// Balancers in front of the proxy (CIDR). When the peer is one of them, the client
    /// address is the right-most `X-Forwarded-For` hop that is not. Example: `[10.0.0.0/8]`.
    pub trusted_proxies: Vec<String>,
    /// Add `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host` to requests sent to
    /// origins. Example: `false` when a balancer in front already sets them.
    pub forwarded_headers: bool,
    /// Pingora's pid file (used by graceful upgrades). Example: `/run/vantage/proxy.pid`.
    pub pid_file: String,
    /// Pingora's upgrade socket (fd hand-off on graceful upgrade).
    pub upgrade_sock: String,
    /// The rate-limit decision service: a listener of its own answering, from the same
    /// counters as the proxies, the JSON `POST /api/public/v1/rate-limit/validate` and
    /// Envoy's gRPC `RateLimitService/ShouldRateLimit`. Absent: not served.
    /// Example: `{listen: "127.0.0.1:9092", token: "a-long-random-token"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<DecisionSettings>,
    /// Bearer token that authorizes the ops listener's write endpoints (cache purge).
    /// Absent: those endpoints answer 403. Example: `"change-me-ops-token"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ops_token: Option<String>,
    /// Response cache of this proxy.
    pub cache: CacheSettings,
    /// Where tenants, origins, routes, API keys and JWT issuers come from: this file, or
    /// Postgres (written by `vantage-admin`). Example: `postgres`.
    pub source: ConfigSource,
    /// Postgres, for `source: postgres` and for request logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSettings>,
    /// OpenTelemetry span export (OTLP over HTTP). Absent: no spans are exported (the
    /// `traceparent` header is propagated either way).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingSettings>,
    /// Defences against slow and greedy clients: deadlines for the request head and body,
    /// the keep-alive idle time, and caps on connections.
    pub client_limits: ClientLimits,
    /// Forward request header names that contain `_`. Off (the default) drops them: CGI and
    /// WSGI origins read `X_User_Id` as `X-User-Id`, a name the gateway controls.
    /// Example: `false`.
    pub allow_underscores_in_headers: bool,
    /// Which rate-limit fields responses of limited routes carry. Example: `draft`.
    pub rate_limit_headers: RateLimitHeaders,
    /// Networks a `jwt_issuers[].jwks_url` may point into besides public addresses
    /// (private, link-local and other special ranges are refused otherwise; plain `http://`
    /// is only ever allowed to loopback). Example: `["127.0.0.0/8", "::1/128", "10.20.0.0/16"]`.
    pub jwks_allowed_networks: Vec<String>,
    /// Bounds of the Prometheus metrics on the ops listener.
    /// Example: `{max_series_per_family: 20000}`.
    pub metrics: MetricsSettings,
    /// The resolver of origins with DNS discovery. Example: `{nameservers: ["10.0.0.2:53"]}`.
    pub dns: DnsSettings,
}

/// How much the proxy's `/metrics` may hold. Per-tenant families
/// (`vantage_requests_total`, `vantage_request_duration_seconds`, ...) hold one label set
/// per tenant (and per route with `route_metrics`); past the cap, new label sets are
/// counted under `tenant="_overflow"`, `route="_overflow"` (`origin="_overflow"` for
/// upstream times) and in `vantage_metrics_overflow_total{family}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Most label sets one per-tenant family holds (a histogram's label set counts once);
    /// the `_overflow` label sets come on top. Example: `10000`.
    pub max_series_per_family: usize,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            max_series_per_family: 10_000,
        }
    }
}

/// The rate-limit decision service of a proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionSettings {
    /// HTTP/1.1 and HTTP/2 (cleartext, for gRPC) on one address. Example: `127.0.0.1:9092`.
    pub listen: String,
    /// When set, every call must carry `Authorization: Bearer <token>` (gRPC: the same
    /// metadata). Without one, anyone who reaches the listener can spend any key's quota:
    /// keep it on a private address. Example: `"a-long-random-token"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Limits on what one client (or all of them) may hold of the proxy. Each refusal is
/// answered with the gateway's JSON error and counted in a metric.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientLimits {
    /// The whole request head (request line and every header) must arrive within this many
    /// milliseconds of the connection opening, or of the first byte of a later request on a
    /// kept-alive connection; otherwise 408 `request_timeout` and the connection closes.
    /// Example: `10000`.
    pub header_timeout_ms: u64,
    /// Longest gap between two reads of a request body; longer is 408 `request_timeout`
    /// (never counted against the origin). Example: `10000`.
    pub body_timeout_ms: u64,
    /// Longest wait for a client to take response bytes before the connection is dropped.
    /// Example: `30000`.
    pub send_timeout_ms: u64,
    /// An idle kept-alive connection is closed after this many milliseconds without a new
    /// request. Example: `30000`.
    pub keepalive_timeout_ms: u64,
    /// Most client connections the process holds open; more are answered 503
    /// `too_many_connections` and closed. Example: `10000`.
    pub max_connections: usize,
    /// Most connections one client address holds open (balancers in `trusted_proxies` are
    /// exempt); more are answered 429 `too_many_connections` and closed. Example: `256`.
    pub max_connections_per_ip: usize,
    /// Longest request target (path and query) in bytes; longer is 414 `uri_too_long`.
    /// Example: `16384`.
    pub max_uri_bytes: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            header_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            send_timeout_ms: 30_000,
            keepalive_timeout_ms: 30_000,
            max_connections: 10_000,
            max_connections_per_ip: 256,
            max_uri_bytes: 16 * 1024,
        }
    }
}

/// OpenTelemetry export of the proxy's spans: one server span per request with child spans
/// for auth, rate limit, cache and upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingSettings {
    /// OTLP/HTTP traces endpoint (protobuf). Example: `http://127.0.0.1:4318/v1/traces`.
    pub otlp_endpoint: String,
    /// `service.name` of the spans. Example: `vantage-proxy`.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Share of new traces sampled (traces joined from a client keep the client's sampled
    /// flag). Example: `0.1`.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
}

fn default_service_name() -> String {
    "vantage-proxy".into()
}
fn default_sample_ratio() -> f64 {
    1.0
}

/// Which rate-limit fields a response of a limited route carries (`server.rate_limit_headers`).
/// `Retry-After` comes with every refusal whatever this says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitHeaders {
    /// `RateLimit-Policy` and `RateLimit` (IETF draft) and `X-RateLimit-Limit`,
    /// `-Remaining`, `-Reset` (what Kong, Tyk and most clients read).
    #[default]
    All,
    /// Only `RateLimit-Policy` and `RateLimit`: three fields fewer to build and send.
    Draft,
    /// None (clients learn of a limit by its 429 and `Retry-After`).
    None,
}

/// Where the proxy's tenants, origins and routes come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigSource {
    /// The `tenants`, `origins`, `routes`, `api_keys` and `jwt_issuers` of this file.
    #[default]
    File,
    /// Postgres (`SELECT vantage_config()`), reloaded when the admin announces a change on
    /// Redis and by a periodic version poll; the last good copy is kept on local disk.
    Postgres,
}

/// Connection to Postgres.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    /// `postgres://user[:password]@host:port/database`; the environment variable
    /// `VANTAGE_DATABASE_URL` replaces it when set. Example: `postgres://vantage@127.0.0.1/vantage`.
    pub url: String,
    /// Connections kept open. Example: `4`.
    #[serde(default = "default_pg_pool")]
    pub pool_size: usize,
    /// How often the config version is polled (catches announcements missed while Redis was
    /// away). Example: `1000`.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    /// Budget of one connection attempt or query. Example: `2000`.
    #[serde(default = "default_pg_timeout_ms")]
    pub timeout_ms: u64,
    /// The last configuration loaded from Postgres, written after every successful load; a
    /// proxy that starts while Postgres is down serves from it.
    /// Example: `/var/lib/vantage/last-good-config.json`.
    #[serde(default = "default_last_good")]
    pub last_good_file: String,
    /// Shared secret of the admin's signed change announcements (HMAC-SHA256); the variable
    /// `VANTAGE_NOTIFY_SECRET` replaces it when set. Without one, announcements are ignored
    /// and only the poll picks up changes. Example: `"a-long-random-secret"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_secret: Option<String>,
    /// A signed announcement whose timestamp is further than this from the proxy's clock
    /// (either way) is refused as a replay; missed announcements are caught by the version
    /// poll. Example: `60000`.
    #[serde(default = "default_notice_window_ms")]
    pub notice_window_ms: u64,
    /// Least time between two reloads triggered by announcements; announcements arriving
    /// sooner are folded into one reload. Example: `250`.
    #[serde(default = "default_min_reload_interval_ms")]
    pub min_reload_interval_ms: u64,
    /// One record per request into `request_logs`.
    #[serde(default)]
    pub request_logs: RequestLogSettings,
    /// Usage metering and violations into `usage_minute` (rolled up into `usage_hour` and
    /// `usage_day`) and `violations`.
    #[serde(default)]
    pub usage: UsageSettings,
    /// Heartbeat of this proxy into the `proxies` table (with `source: postgres`), for the
    /// control plane's fleet view (`GET /api/v1/fleet`).
    #[serde(default)]
    pub fleet: FleetSettings,
}

/// How a proxy in `source: postgres` mode reports itself to the control plane: its id
/// (`<hostname>:<pid>`), the config version it serves and when it applied it, its readiness
/// and its build. Reported at once after each reload and every `heartbeat_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetSettings {
    /// Example: `true`.
    pub enabled: bool,
    /// Time between two heartbeats. Keep it well below the admin's `fleet.gone_after_ms`.
    /// Example: `2000`.
    pub heartbeat_ms: u64,
}

impl Default for FleetSettings {
    fn default() -> Self {
        FleetSettings {
            enabled: true,
            heartbeat_ms: 2000,
        }
    }
}

/// Usage metering: every answered request is counted in memory per minute, tenant, subject,
/// route and status class, and flushed to Postgres in batches that are applied exactly once.
/// While Postgres is away, batches wait in a bounded spool and are retried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageSettings {
    /// Example: `true`.
    pub enabled: bool,
    /// How often the counts are flushed. Example: `5000`.
    pub flush_interval_ms: u64,
    /// Batches kept while Postgres cannot take them; past this the oldest is dropped and its
    /// requests counted in `vantage_usage_dropped_requests_total`. Example: `720` (one hour
    /// of 5 s flushes).
    pub spool_batches: usize,
    /// Where unwritten batches are saved at shutdown (and read back at start), so a proxy
    /// stopped while Postgres is away loses nothing. Empty: not saved.
    /// Example: `/var/lib/vantage/usage-spool.json`.
    pub spool_file: String,
}

impl Default for UsageSettings {
    fn default() -> Self {
        UsageSettings {
            enabled: true,
            flush_interval_ms: 5000,
            spool_batches: 720,
            spool_file: String::new(),
        }
    }
}

fn default_pg_pool() -> usize {
    4
}
fn default_poll_ms() -> u64 {
    1000
}
fn default_pg_timeout_ms() -> u64 {
    2000
}
fn default_notice_window_ms() -> u64 {
    60_000
}
fn default_min_reload_interval_ms() -> u64 {
    250
}
fn default_last_good() -> String {
    "/var/lib/vantage/last-good-config.json".into()
}

/// Batching of request-log records into Postgres.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestLogSettings {
    /// Example: `true`.
    pub enabled: bool,
    /// Records waiting to be written; when full, new records are dropped (and counted).
    /// Example: `10000`.
    pub queue_size: usize,
    /// Rows per INSERT. Example: `500`.
    pub batch_size: usize,
    /// A partial batch is written after this long. Example: `200`.
    pub flush_interval_ms: u64,
}

impl Default for RequestLogSettings {
    fn default() -> Self {
        RequestLogSettings {
            enabled: true,
            queue_size: 10_000,
            batch_size: 500,
            flush_interval_ms: 200,
        }
    }
}

/// Process-wide settings of the response cache (per-route policies are `routes[].cache`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// Byte bound of the in-memory cache (bodies plus headers). Example: `268435456`.
    pub memory_bytes: usize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            memory_bytes: 256 << 20,
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: vec!["0.0.0.0:8080".into()],
            h2c: false,
            tls: Vec::new(),
            ops_listen: "127.0.0.1:9090".into(),
            threads: 2,
            base_domains: vec!["vantage.localhost".into()],
            grace_period_seconds: 10,
            graceful_shutdown_timeout_seconds: 5,
            max_request_headers: 100,
            max_request_header_bytes: 32 * 1024,
            watch_config: true,
            access_log: true,
            trusted_proxies: Vec::new(),
            redis: None,
            forwarded_headers: true,
            pid_file: "/tmp/vantage-proxy.pid".into(),
            upgrade_sock: "/tmp/vantage-proxy-upgrade.sock".into(),
            ops_token: None,
            decision: None,
            cache: CacheSettings::default(),
            source: ConfigSource::File,
            postgres: None,
            tracing: None,
            client_limits: ClientLimits::default(),
            allow_underscores_in_headers: false,
            rate_limit_headers: RateLimitHeaders::All,
            jwks_allowed_networks: vec!["127.0.0.0/8".into(), "::1/128".into()],
            metrics: MetricsSettings::default(),
            dns: DnsSettings::default(),
        }
    }
}

/// Connection to Redis: one server, a Redis Cluster or a Sentinel-managed primary, by the
/// scheme of `url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// One server: `redis://[user:password@]host:port[/db]`. A Redis Cluster:
    /// `redis-cluster://[user:password@]host:port?node=host:port&node=host:port` (any
    /// nodes of it, the more the better: the client finds the rest). A primary behind
    /// Sentinel: `redis-sentinel://[user:password@]host:port[/db]?sentinelServiceName=NAME&node=host:port`
    /// (the host and nodes are Sentinels). Example: `redis://127.0.0.1:6379`, or
    /// `redis-cluster://10.0.0.1:7000?node=10.0.0.2:7000&node=10.0.0.3:7000`.
    pub url: String,
    /// Every key starts with this. Example: `vantage`.
    #[serde(default = "default_redis_prefix")]
    pub key_prefix: String,
    /// Time budget of one Redis call in milliseconds (a rate-limit decision, a cache-tier
    /// read or write); past it a rate limit follows its `on_redis_error` and the cache
    /// goes without the tier. Example: `20`.
    #[serde(default = "default_redis_timeout")]
    pub timeout_ms: u64,
}

fn default_redis_prefix() -> String {
    "vantage".into()
}

fn default_redis_timeout() -> u64 {
    20
}

/// What is wrong with a Redis URL (`server.redis.url`, the admin's `redis_url`), if
/// anything: the scheme says single node (`redis`), cluster (`redis-cluster`) or sentinel
/// (`redis-sentinel`, which needs `sentinelServiceName`); a cluster has no databases. TLS
/// schemes (`rediss…`) are refused: the Redis client is built without TLS, and would send
/// the password in the clear to a TLS port. So are separate Sentinel credentials, which
/// the client would ignore.
pub fn redis_url_problem(url: &str) -> Option<&'static str> {
    const SCHEMES: &str = "must be redis://host:port[/db], \
        redis-cluster://host:port?node=host:port&... or \
        redis-sentinel://host:port?sentinelServiceName=NAME&node=host:port";
    let Some((scheme, rest)) = url.split_once("://") else {
        return Some(SCHEMES);
    };
    if scheme.starts_with("rediss") {
        return Some("TLS (rediss://) is not supported: reach Redis on a private network or through a TLS tunnel");
    }
    if !matches!(scheme, "redis" | "redis-cluster" | "redis-sentinel") {
        return Some(SCHEMES);
    }
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = before_query.split_once('/').unwrap_or((before_query, ""));
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Some("needs a host: redis://host:port");
    }
    if scheme == "redis-cluster" && !matches!(path, "" | "0") {
        return Some("a Redis Cluster has no databases: no /db in redis-cluster:// URLs");
    }
    let service = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("sentinelServiceName="));
    if scheme == "redis-sentinel" && service.is_none_or(str::is_empty) {
        return Some(
            "redis-sentinel:// needs ?sentinelServiceName=NAME (the primary Sentinel watches)",
        );
    }
    if query
        .split('&')
        .any(|kv| kv.starts_with("sentinelUsername=") || kv.starts_with("sentinelPassword="))
    {
        return Some("separate Sentinel credentials are not supported: the Sentinels get the URL's user and password");
    }
    None
}

/// A TLS-terminating listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListener {
    /// Example: `"0.0.0.0:8443"`.
    pub listen: String,
    /// PEM certificate chain. Example: `/etc/vantage/tls/edge.crt`.
    pub cert_file: String,
    /// PEM private key. Example: `/etc/vantage/tls/edge.key`.
    pub key_file: String,
    /// Offer HTTP/2 through ALPN (default true).
    #[serde(default = "yes")]
    pub h2: bool,
}

fn yes() -> bool {
    true
}

/// A customer of the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    /// Stable identifier (a UUID in Postgres; any `[A-Za-z0-9._-]` string in files).
    /// Example: `acme`.
    #[cfg_attr(feature = "openapi", schema(read_only))]
    pub id: String,
    /// Display name. Example: `Acme Corp`.
    pub name: String,
    /// DNS label under every base domain. Example: `acme` → `acme.vantage.localhost`.
    pub subdomain: String,
    /// Extra exact host names that belong to this tenant. Example: `["api.acme.test"]`.
    #[serde(default)]
    pub custom_hosts: Vec<String>,
    /// CORS, security headers and IP rules for all of the tenant's routes.
    #[serde(default)]
    pub access: Access,
    /// Tenant-wide ceilings, applied to every route of the tenant.
    #[serde(default)]
    pub rate_limits: Vec<RateLimitPolicy>,
    /// Clerk organisation of the tenant: JWTs whose `org_id` differs are refused (403).
    /// Example: `org_2abc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clerk_org_id: Option<String>,
    /// The tenant's own plan: its rate limits and quotas count the whole tenant's traffic.
    /// Example: `acme-enterprise`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    /// Per-route metric series for every route of the tenant (by default a tenant's routes
    /// share its series). Example: `true`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub route_metrics: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Load-balancing algorithm of an origin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LbAlgorithm {
    /// Each healthy target in turn; weights are ignored.
    #[default]
    RoundRobin,
    /// Round robin in proportion to the weights: each target takes `weight` turns in a row.
    Weighted,
    /// Random choice in proportion to the weights.
    Random,
    /// Ketama consistent hashing of the key given by `hash_key`.
    ConsistentHash,
    /// The healthy target with the fewest requests in flight per unit of weight; ties rotate.
    LeastConnections,
}

/// Where the consistent-hashing key comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
pub enum HashKey {
    /// A request header. Example: `{source: header, name: X-User-Id}`.
    Header { name: String },
    /// A request cookie. Example: `{source: cookie, name: session}`.
    Cookie { name: String },
    /// The client address.
    ClientIp,
    /// The request path (without query).
    Path,
}

/// Upstream protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 only.
    #[default]
    Http1,
    /// HTTP/2 only: through ALPN for `https://`, prior knowledge (h2c) for `http://`.
    /// Needed for gRPC.
    Http2,
    /// Offer both through ALPN (`https://` only; plain targets use HTTP/1.1).
    Auto,
}

/// A pool of upstream targets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Origin {
    /// Example: `acme-api`.
    #[cfg_attr(feature = "openapi", schema(read_only))]
    pub id: String,
    /// Owning tenant. Example: `acme`.
    pub tenant_id: String,
    /// Targets, at least one.
    pub targets: Vec<Target>,
    /// Example: `weighted`.
    #[serde(default)]
    pub lb: LbAlgorithm,
    /// Key for `consistent_hash` (required then, refused otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_key: Option<HashKey>,
    /// Active HTTP health check. Absent: targets are assumed healthy and only the circuit
    /// breaker takes them out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Timeouts for talking to a target.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// How many other targets to try when connecting fails (idempotent requests only).
    /// Example: `2`.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Passive failure counting per target.
    #[serde(default)]
    pub circuit_breaker: CircuitBreaker,
    /// Upstream TLS settings for `https://` targets.
    #[serde(default)]
    pub tls: UpstreamTls,
    /// Example: `http2` for a gRPC origin.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// Forward the client's Host header unchanged. Default `false`: the origin sees the
    /// target's own host (and the client's host in `X-Forwarded-Host`).
    #[serde(default)]
    pub preserve_host: bool,
    /// Sticky sessions by the gateway's own cookie: a client keeps its target while that
    /// target is available. Example: `{cookie: srv, ttl_seconds: 3600}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<CookieAffinity>,
    /// Targets found in DNS instead of `targets` (which must then be empty), re-resolved
    /// on the records' TTL. Example: `{srv: _api._tcp.service.internal}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<Discovery>,
}

fn default_retries() -> u32 {
    1
}

/// One upstream address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `http://host:port` or `https://host:port`. Example: `http://127.0.0.1:9001`.
    pub url: String,
    /// Relative share of traffic for `weighted`/`random` (1..=1000). Example: `3`.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// Active health check of each target of an origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheck {
    /// Path probed with GET. Example: `/healthz`.
    pub path: String,
    /// Time between probes in milliseconds. Example: `1000`.
    pub interval_ms: u64,
    /// Connect and read budget of one probe in milliseconds. Example: `500`.
    pub timeout_ms: u64,
    /// Consecutive successes that bring a down target back. Example: `1`.
    pub healthy_threshold: u32,
    /// Consecutive failures that take a target out. Example: `2`.
    pub unhealthy_threshold: u32,
    /// Host header sent with the probe (default: the target's host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            path: "/healthz".into(),
            interval_ms: 2000,
            timeout_ms: 1000,
            healthy_threshold: 1,
            unhealthy_threshold: 2,
            host: None,
        }
    }
}

/// Upstream timeouts in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// TCP connect. Example: `1000`.
    pub connect_ms: u64,
    /// Gap allowed between reads of the response. Example: `30000`.
    pub read_ms: u64,
    /// Gap allowed between writes of the request. Example: `30000`.
    pub write_ms: u64,
    /// Connect plus TLS handshake budget. Example: `3000`.
    pub total_connect_ms: u64,
    /// How long an idle pooled connection to a target is kept for reuse. Keep it below the
    /// origin's own keep-alive timeout (Node.js closes after 5 s). Once a target announces a
    /// shorter `Keep-Alive: timeout=N`, its connections are kept three quarters of that.
    /// Example: `4000`.
    pub idle_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect_ms: 2000,
            read_ms: 30_000,
            write_ms: 30_000,
            total_connect_ms: 5000,
            idle_ms: 4000,
        }
    }
}

/// Per-target circuit breaker: after `failure_threshold` consecutive failures the target is
/// skipped for `open_ms`, then one probe request is let through (half-open); success closes
/// the breaker, failure opens it again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreaker {
    /// Example: `true`.
    pub enabled: bool,
    /// Example: `5`.
    pub failure_threshold: u32,
    /// Example: `10000`.
    pub open_ms: u64,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker {
            enabled: true,
            failure_threshold: 5,
            open_ms: 10_000,
        }
    }
}

/// TLS towards `https://` targets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTls {
    /// Verify the target's certificate chain and host name. Example: `true`.
    pub verify: bool,
    /// SNI and verified host name (default: the target URL's host). Example: `api.internal`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
}

impl Default for UpstreamTls {
    fn default() -> Self {
        UpstreamTls {
            verify: true,
            sni: None,
        }
    }
}

/// A route: which requests of a tenant go to which origin, and how they are changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Example: `acme-users`.
    #[cfg_attr(feature = "openapi", schema(read_only))]
    pub id: String,
    /// Owning tenant. Example: `acme`.
    pub tenant_id: String,
    /// `/status` (exact), `/api/users/*` (prefix), `/users/:id` (parameter), or a mix.
    pub path_pattern: String,
    /// Allowed methods; empty means any. Example: `[GET, POST]`.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Header conditions, all of which must hold.
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
    /// Higher wins over more specific. Example: `10`.
    #[serde(default)]
    pub priority: i32,
    /// Destination origin (same tenant). Example: `acme-api`.
    pub origin_id: String,
    /// Remove this prefix from the path before forwarding. Example: `/api`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip_prefix: Option<String>,
    /// Rewrite the path with a regex (applied after `strip_prefix`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<PathRewrite>,
    /// Changes to the request sent to the origin.
    #[serde(default)]
    pub request_headers: HeaderTransform,
    /// Changes to the response sent to the client.
    #[serde(default)]
    pub response_headers: HeaderTransform,
    /// Response compression.
    #[serde(default)]
    pub compression: Compression,
    /// Authentication. Example: `{mode: apikey_required, scopes: [orders:read]}`.
    #[serde(default)]
    pub auth: RouteAuth,
    /// Rate limits of this route (on top of the tenant's).
    #[serde(default)]
    pub rate_limits: Vec<RateLimitPolicy>,
    /// Replaces parts of the tenant's access policy for this route.
    #[serde(default)]
    pub access: Access,
    /// Response caching. Example: `{enabled: true, default_ttl_seconds: 60}`.
    #[serde(default)]
    pub cache: CachePolicy,
    /// Cost, quota group and opt-out of the plans. Example: `{cost: 5, group: search}`.
    #[serde(default, skip_serializing_if = "RouteQuota::is_default")]
    pub quota: RouteQuota,
    /// Metric series of its own for this route (by default it shares its tenant's).
    /// Example: `true`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub route_metrics: bool,
    /// Weighted splits, mirroring, API version and fallback answer
    /// ([docs](../docs/traffic.md)). Example: `{fallback: {status: 200, body: "[]"}}`.
    #[serde(default, skip_serializing_if = "Traffic::is_default")]
    pub traffic: Traffic,
}

impl Route {
    /// Every origin id the route names: its own, and those of its split, its split's rules
    /// and its mirror.
    pub fn origin_refs_mut(&mut self) -> Vec<&mut String> {
        let mut refs = vec![&mut self.origin_id];
        if let Some(s) = &mut self.traffic.split {
            refs.extend(s.origins.iter_mut().map(|o| &mut o.origin_id));
            refs.extend(s.rules.iter_mut().map(|r| &mut r.origin_id));
        }
        if let Some(m) = &mut self.traffic.mirror {
            refs.push(&mut m.origin_id);
        }
        refs
    }
}

/// A header condition of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// Example: `X-Api-Version`.
    pub name: String,
    /// Exact value; absent means the header only has to be present. Example: `"2"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Regex path rewrite. Example: `{pattern: "^/v1/(.*)$", replacement: "/$1"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PathRewrite {
    pub pattern: String,
    /// May use `$1`, `${name}`.
    pub replacement: String,
}

/// Header changes, applied in the order remove, set, add.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct HeaderTransform {
    /// Appended (kept alongside existing values). Example: `{X-Served-By: vantage}`.
    pub add: BTreeMap<String, String>,
    /// Replaces existing values. Example: `{Cache-Control: no-store}`.
    pub set: BTreeMap<String, String>,
    /// Removed. Example: `[X-Internal-Token]`.
    pub remove: Vec<String>,
}

impl HeaderTransform {
    /// True when the transform changes nothing.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.set.is_empty() && self.remove.is_empty()
    }
}

/// Response compression of a route (gzip, brotli or zstd, as the client accepts).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Compression {
    /// Example: `true`.
    pub enabled: bool,
    /// 1..=9, default 6. Example: `5`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<u32>,
}

/// A parsed target URL: `http(s)://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetUrl {
    /// `https://`.
    pub tls: bool,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Explicit port, or 80/443.
    pub port: u16,
}

impl TargetUrl {
    /// Parse `http://host[:port]` or `https://host[:port]` (a trailing `/` is allowed; other
    /// paths, queries and credentials are refused).
    pub fn parse(url: &str) -> Result<TargetUrl, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(format!("scheme must be http or https in '{url}'"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "'{url}' must be scheme://host[:port] with no path, query or credentials"
            ));
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("unclosed '[' in '{url}'"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| format!("bad port in '{url}'"))?,
                None if after.is_empty() => default_port,
                None => return Err(format!("bad port in '{url}'")),
            };
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("bad IPv6 address in '{url}'"));
            }
            (h.to_string(), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse().map_err(|_| format!("bad port in '{url}'"))?,
                ),
                None => (rest.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return Err(format!("no host in '{url}'"));
        }
        if port == 0 {
            return Err(format!("port 0 in '{url}'"));
        }
        if host.parse::<std::net::IpAddr>().is_err() && !validate::valid_host(&host) {
            return Err(format!("'{host}' is not a valid lower-case host name"));
        }
        Ok(TargetUrl { tls, host, port })
    }

    /// `host:port`, with brackets around an IPv6 address.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod target_tests {
    use super::TargetUrl;

    #[test]
    fn parses_target_urls() {
        let t = TargetUrl::parse("http://127.0.0.1:9001").unwrap();
        assert_eq!((t.tls, t.host.as_str(), t.port), (false, "127.0.0.1", 9001));
        let t = TargetUrl::parse("https://api.example.test/").unwrap();
        assert_eq!((t.tls, t.port), (true, 443));
        assert_eq!(t.authority(), "api.example.test:443");
        let t = TargetUrl::parse("http://[::1]:8080").unwrap();
        assert_eq!(t.authority(), "[::1]:8080");
        for bad in [
            "ftp://x",
            "http://",
            "http://a/b",
            "http://u@h",
            "http://h:0",
            "http://h:99999",
            "http://UPPER",
            "http://[::1",
        ] {
            assert!(TargetUrl::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
