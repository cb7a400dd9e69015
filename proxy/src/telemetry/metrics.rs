//! Prometheus metrics of the proxy (default registry, served on the ops listener).
//!
//! The families labelled by tenant, route or origin are [`Family`]s bounded by
//! `server.metrics.max_series_per_family` ([`super::series`]); a route counts in its
//! tenant's series (`route="_tenant"`) unless it or its tenant has `route_metrics`, and
//! statuses are counted by class (`2xx`, ..., `000` when no response was sent).

use super::series::{self, Family, NONE, STATUS_CLASSES, TENANT_ROUTE};
use prometheus::{
    register_gauge_vec, register_histogram_vec, register_int_counter, register_int_counter_vec,
    register_int_gauge, register_int_gauge_vec, GaugeVec, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec,
};
use std::sync::LazyLock;

/// Buckets of the request and upstream times: eight bounds from a cache hit to a slow
/// origin, with the 1 s of the latency alert among them.
const LATENCY_BUCKETS: &[f64] = &[0.005, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// All metrics, registered once.
pub struct Metrics {
    /// `vantage_requests_total{tenant,route,status}`: `status` is the class (`2xx`).
    pub requests: Family<IntCounterVec>,
    /// `vantage_request_duration_seconds{tenant,route}`: downstream request to last byte.
    pub request_duration: Family<HistogramVec>,
    /// `vantage_upstream_duration_seconds{origin}`: upstream connect to response end.
    pub upstream_duration: Family<HistogramVec>,
    /// `vantage_active_requests`: requests in flight.
    pub active_requests: IntGauge,
    /// `vantage_upstream_target_healthy{origin,target}`: 1 healthy, 0 down.
    pub target_healthy: IntGaugeVec,
    /// `vantage_upstream_breaker_open{origin,target}`: 1 while the breaker is open.
    pub breaker_open: GaugeVec,
    /// `vantage_upstream_retries_total{origin}`.
    pub retries: IntCounterVec,
    /// `vantage_config_version`: version of the configuration being served.
    pub config_version: IntGauge,
    /// `vantage_config_reloads_total{result}`: `ok` or `error`.
    pub reloads: IntCounterVec,
    /// `vantage_refused_requests_total{reason}`: refused before routing (smuggling, limits).
    pub refused: IntCounterVec,
    /// `vantage_ratelimit_decisions_total{tenant,route,result}`: `allowed` or `limited`.
    pub ratelimit: Family<IntCounterVec>,
    /// `vantage_auth_failures_total{tenant,code}`: 401/403 answers by error code.
    pub auth_failures: Family<IntCounterVec>,
    /// `vantage_redis_errors_total{op}`: Redis calls that failed or ran out of time.
    pub redis_errors: IntCounterVec,
    /// `vantage_ratelimit_fallbacks_total{mode}`: `allow`, `deny` or `local` after a Redis error.
    pub ratelimit_fallbacks: IntCounterVec,
    /// `vantage_cache_responses_total{result}`: responses of caching routes by `X-Cache`
    /// (`hit`, `miss`, `expired`, `stale`, `revalidated`, `bypass`).
    pub cache_responses: IntCounterVec,
    /// `vantage_cache_stores_total{storage}`: entries written.
    pub cache_stores: IntCounterVec,
    /// `vantage_cache_evictions_total`: memory entries evicted to stay under the byte bound.
    pub cache_evictions: IntCounter,
    /// `vantage_cache_bytes{tier}`: bytes held by the memory tier.
    pub cache_bytes: IntGaugeVec,
    /// `vantage_cache_lock_waits_total`: requests that waited for another request to fill
    /// the cache (coalesced misses).
    pub cache_lock_waits: IntCounter,
    /// `vantage_cache_purges_total{kind}`: `url` or `tenant`.
    pub cache_purges: IntCounterVec,
    /// `vantage_config_source_up`: 1 while the last call to Postgres (`source: postgres`)
    /// succeeded, 0 while it fails (the proxy keeps serving its last configuration).
    pub config_source_up: IntGauge,
    /// `vantage_config_notices_total{result}`: change announcements (`accepted`, `ignored`
    /// for old versions, `rejected` for bad signatures or malformed messages).
    pub config_notices: IntCounterVec,
    /// `vantage_request_logs_written_total`: request-log rows inserted into Postgres.
    pub request_logs_written: IntCounter,
    /// `vantage_request_logs_dropped_total{reason}`: records dropped (`queue_full`,
    /// `write_error`); the request path never waits for Postgres.
    pub request_logs_dropped: IntCounterVec,
    /// `vantage_quota_decisions_total{tenant,route,result}`: `counted`, `overage` or
    /// `exceeded` (refused).
    pub quota: Family<IntCounterVec>,
    /// `vantage_violations_total{kind,mode}`: refusals (and shadow would-be refusals) by a
    /// `rate_limit`, `quota`, `auth` or `ip` rule.
    pub violations: IntCounterVec,
    /// `vantage_usage_requests_written_total`: requests whose usage is committed in Postgres.
    pub usage_written: IntCounter,
    /// `vantage_usage_dropped_requests_total{reason}`: requests whose usage was lost
    /// (`spool_full`: the oldest waiting batch made room; `unattributed`: no tenant).
    pub usage_dropped: IntCounterVec,
    /// `vantage_usage_spool_batches`: usage batches waiting for Postgres.
    pub usage_spool: IntGauge,
    /// `vantage_usage_flush_errors_total`: failed attempts to write a usage batch.
    pub usage_flush_errors: IntCounter,
    /// `vantage_config_reload_seconds`: time to read, validate, compile and swap a
    /// configuration.
    pub reload_duration: prometheus::Histogram,
    /// `vantage_config_tenants_compiled_total`: tenants compiled by reloads (an incremental
    /// reload compiles the tenants that changed; the others are shared).
    pub tenants_compiled: IntCounter,
    /// `vantage_config_last_good_version`: the version last written to the last-good file
    /// (`source: postgres`; written in the background after each reload).
    pub last_good_version: IntGauge,
    /// `vantage_connections_open`: client connections held.
    pub connections_open: IntGauge,
    /// `vantage_connections_refused_total{reason}`: `max_connections` or
    /// `max_connections_per_ip`.
    pub connections_refused: IntCounterVec,
    /// `vantage_client_timeouts_total{phase}`: clients too slow with the request `header`
    /// or `body` (answered 408, never counted against the origin).
    pub client_timeouts: IntCounterVec,
    /// `vantage_split_requests_total{tenant,route,origin}`: requests of split routes by the
    /// origin that took them.
    pub split: Family<IntCounterVec>,
    /// `vantage_api_version_requests_total{tenant,version,state}`: requests of versioned
    /// routes; `state` is `current`, `deprecated` or `sunset`.
    pub api_versions: Family<IntCounterVec>,
    /// `vantage_mirror_requests_total{origin,result}`: copies by how they ended (`sent`,
    /// `error`, `timeout`, `dropped_busy`, `dropped_body`).
    pub mirror: Family<IntCounterVec>,
    /// `vantage_fallback_responses_total{tenant,kind}`: `static` answers given
    /// because no target could take the request.
    pub fallbacks: Family<IntCounterVec>,
    /// `vantage_metrics_overflow_total{family}`: recordings a full family put in its
    /// `_overflow` series.
    pub overflow: IntCounterVec,
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let overflow = register_int_counter_vec!(
        "vantage_metrics_overflow_total",
        "Recordings a full family (server.metrics.max_series_per_family) put in its _overflow series",
        &["family"]
    )
    .expect("register vantage_metrics_overflow_total");
    Metrics {
        requests: Family::new(
            "vantage_requests_total",
            register_int_counter_vec!(
                "vantage_requests_total",
                "Requests answered, by tenant, route and status class",
                &["tenant", "route", "status"]
            )
            .expect("register vantage_requests_total"),
            &[0, 1],
            &overflow,
        ),
        request_duration: Family::new(
            "vantage_request_duration_seconds",
            register_histogram_vec!(
                "vantage_request_duration_seconds",
                "Time from request to the end of the response",
                &["tenant", "route"],
                LATENCY_BUCKETS.to_vec()
            )
            .expect("register vantage_request_duration_seconds"),
            &[0, 1],
            &overflow,
        ),
        upstream_duration: Family::new(
            "vantage_upstream_duration_seconds",
            register_histogram_vec!(
                "vantage_upstream_duration_seconds",
                "Time spent on the upstream, by origin",
                &["origin"],
                LATENCY_BUCKETS.to_vec()
            )
            .expect("register vantage_upstream_duration_seconds"),
            &[0],
            &overflow,
        ),
        active_requests: register_int_gauge!("vantage_active_requests", "Requests in flight")
            .expect("register vantage_active_requests"),
        target_healthy: register_int_gauge_vec!(
            "vantage_upstream_target_healthy",
            "Health of each upstream target (1 healthy, 0 down)",
            &["origin", "target"]
        )
        .expect("register vantage_upstream_target_healthy"),
        breaker_open: register_gauge_vec!(
            "vantage_upstream_breaker_open",
            "1 while a target's circuit breaker is open",
            &["origin", "target"]
        )
        .expect("register vantage_upstream_breaker_open"),
        retries: register_int_counter_vec!(
            "vantage_upstream_retries_total",
            "Requests retried on another target",
            &["origin"]
        )
        .expect("register vantage_upstream_retries_total"),
        config_version: register_int_gauge!(
            "vantage_config_version",
            "Version of the configuration being served"
        )
        .expect("register vantage_config_version"),
        reloads: register_int_counter_vec!(
            "vantage_config_reloads_total",
            "Configuration reloads by result",
            &["result"]
        )
        .expect("register vantage_config_reloads_total"),
        refused: register_int_counter_vec!(
            "vantage_refused_requests_total",
            "Requests refused before routing, by reason",
            &["reason"]
        )
        .expect("register vantage_refused_requests_total"),
        ratelimit: Family::new(
            "vantage_ratelimit_decisions_total",
            register_int_counter_vec!(
                "vantage_ratelimit_decisions_total",
                "Rate-limit decisions by tenant, route and result",
                &["tenant", "route", "result"]
            )
            .expect("register vantage_ratelimit_decisions_total"),
            &[0, 1],
            &overflow,
        ),
        auth_failures: Family::new(
            "vantage_auth_failures_total",
            register_int_counter_vec!(
                "vantage_auth_failures_total",
                "Requests refused by authentication, by tenant and error code",
                &["tenant", "code"]
            )
            .expect("register vantage_auth_failures_total"),
            &[0],
            &overflow,
        ),
        redis_errors: register_int_counter_vec!(
            "vantage_redis_errors_total",
            "Redis calls that failed or ran out of time",
            &["op"]
        )
        .expect("register vantage_redis_errors_total"),
        ratelimit_fallbacks: register_int_counter_vec!(
            "vantage_ratelimit_fallbacks_total",
            "Rate-limit decisions made by a policy's on_redis_error",
            &["mode"]
        )
        .expect("register vantage_ratelimit_fallbacks_total"),
        cache_responses: register_int_counter_vec!(
            "vantage_cache_responses_total",
            "Responses of caching routes by cache result",
            &["result"]
        )
        .expect("register vantage_cache_responses_total"),
        cache_stores: register_int_counter_vec!(
            "vantage_cache_stores_total",
            "Cache entries written, by storage",
            &["storage"]
        )
        .expect("register vantage_cache_stores_total"),
        cache_evictions: register_int_counter!(
            "vantage_cache_evictions_total",
            "Memory cache entries evicted to stay under the byte bound"
        )
        .expect("register vantage_cache_evictions_total"),
        cache_bytes: register_int_gauge_vec!(
            "vantage_cache_bytes",
            "Bytes held by the cache, by tier",
            &["tier"]
        )
        .expect("register vantage_cache_bytes"),
        cache_lock_waits: register_int_counter!(
            "vantage_cache_lock_waits_total",
            "Requests that waited on the cache lock for another request to fill the cache"
        )
        .expect("register vantage_cache_lock_waits_total"),
        cache_purges: register_int_counter_vec!(
            "vantage_cache_purges_total",
            "Cache purges by kind",
            &["kind"]
        )
        .expect("register vantage_cache_purges_total"),
        config_source_up: register_int_gauge!(
            "vantage_config_source_up",
            "1 while the configuration source (Postgres) answers, 0 while it fails"
        )
        .expect("register vantage_config_source_up"),
        config_notices: register_int_counter_vec!(
            "vantage_config_notices_total",
            "Config change announcements received, by result",
            &["result"]
        )
        .expect("register vantage_config_notices_total"),
        request_logs_written: register_int_counter!(
            "vantage_request_logs_written_total",
            "Request-log rows written to Postgres"
        )
        .expect("register vantage_request_logs_written_total"),
        request_logs_dropped: register_int_counter_vec!(
            "vantage_request_logs_dropped_total",
            "Request-log records dropped, by reason",
            &["reason"]
        )
        .expect("register vantage_request_logs_dropped_total"),
        quota: Family::new(
            "vantage_quota_decisions_total",
            register_int_counter_vec!(
                "vantage_quota_decisions_total",
                "Quota decisions by tenant, route and result",
                &["tenant", "route", "result"]
            )
            .expect("register vantage_quota_decisions_total"),
            &[0, 1],
            &overflow,
        ),
        violations: register_int_counter_vec!(
            "vantage_violations_total",
            "Refusals and shadow would-be refusals by kind and mode",
            &["kind", "mode"]
        )
        .expect("register vantage_violations_total"),
        usage_written: register_int_counter!(
            "vantage_usage_requests_written_total",
            "Requests whose usage is committed in Postgres"
        )
        .expect("register vantage_usage_requests_written_total"),
        usage_dropped: register_int_counter_vec!(
            "vantage_usage_dropped_requests_total",
            "Requests whose usage was lost, by reason",
            &["reason"]
        )
        .expect("register vantage_usage_dropped_requests_total"),
        usage_spool: prometheus::register_int_gauge!(
            "vantage_usage_spool_batches",
            "Usage batches waiting for Postgres"
        )
        .expect("register vantage_usage_spool_batches"),
        usage_flush_errors: register_int_counter!(
            "vantage_usage_flush_errors_total",
            "Failed attempts to write a usage batch"
        )
        .expect("register vantage_usage_flush_errors_total"),
        last_good_version: register_int_gauge!(
            "vantage_config_last_good_version",
            "Configuration version last written to the last-good file"
        )
        .expect("register vantage_config_last_good_version"),
        tenants_compiled: register_int_counter!(
            "vantage_config_tenants_compiled_total",
            "Tenants compiled by configuration reloads"
        )
        .expect("register vantage_config_tenants_compiled_total"),
        reload_duration: prometheus::register_histogram!(
            "vantage_config_reload_seconds",
            "Time to read, validate, compile and swap a configuration",
            vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]
        )
        .expect("register vantage_config_reload_seconds"),
        connections_open: register_int_gauge!(
            "vantage_connections_open",
            "Client connections held open"
        )
        .expect("register vantage_connections_open"),
        connections_refused: register_int_counter_vec!(
            "vantage_connections_refused_total",
            "Client connections refused by a connection cap",
            &["reason"]
        )
        .expect("register vantage_connections_refused_total"),
        client_timeouts: register_int_counter_vec!(
            "vantage_client_timeouts_total",
            "Requests ended because the client was too slow, by phase",
            &["phase"]
        )
        .expect("register vantage_client_timeouts_total"),
        split: Family::new(
            "vantage_split_requests_total",
            register_int_counter_vec!(
                "vantage_split_requests_total",
                "Requests of split routes, by tenant, route and the origin that took them",
                &["tenant", "route", "origin"]
            )
            .expect("register vantage_split_requests_total"),
            &[0, 1, 2],
            &overflow,
        ),
        api_versions: Family::new(
            "vantage_api_version_requests_total",
            register_int_counter_vec!(
                "vantage_api_version_requests_total",
                "Requests of versioned routes, by tenant, version and state (current, deprecated, sunset)",
                &["tenant", "version", "state"]
            )
            .expect("register vantage_api_version_requests_total"),
            &[0, 1],
            &overflow,
        ),
        mirror: Family::new(
            "vantage_mirror_requests_total",
            register_int_counter_vec!(
                "vantage_mirror_requests_total",
                "Mirrored copies by origin and how they ended",
                &["origin", "result"]
            )
            .expect("register vantage_mirror_requests_total"),
            &[0],
            &overflow,
        ),
        fallbacks: Family::new(
            "vantage_fallback_responses_total",
            register_int_counter_vec!(
                "vantage_fallback_responses_total",
                "Fallback answers given because no target could take the request, by tenant and kind",
                &["tenant", "kind"]
            )
            .expect("register vantage_fallback_responses_total"),
            &[0],
            &overflow,
        ),
        overflow,
    }
});

/// Apply `server.metrics` (at start).
pub fn configure(settings: &vantage_model::MetricsSettings) {
    series::set_max_series_per_family(settings.max_series_per_family);
    LazyLock::force(&METRICS);
}

/// Text exposition of every registered metric.
pub fn render() -> Vec<u8> {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    if let Err(e) = encoder.encode(&prometheus::gather(), &mut buf) {
        tracing::error!("encoding metrics failed: {e}");
    }
    buf
}

/// Drop the per-target series of a target that left the configuration.
pub fn forget_target(origin: &str, target: &str) {
    let _ = METRICS
        .target_healthy
        .remove_label_values(&[origin, target]);
    let _ = METRICS.breaker_open.remove_label_values(&[origin, target]);
}

/// The per-request metrics: requests, their duration, upstream time and cache lock waits.
pub struct RequestMetrics;

impl super::Sink for RequestMetrics {
    fn record(&self, s: &super::Summary<'_>) {
        if s.cache_lock_waited() {
            METRICS.cache_lock_waits.inc();
        }
        if let Some(route) = s.series {
            route.request(s.status, s.duration);
            if let (Some(took), Some(origin)) = (s.upstream_duration, s.origin) {
                route.upstream(origin, took);
            }
        } else {
            // No route (unknown host, no matching route, refused before routing).
            let tenant = s.tenant.unwrap_or(NONE);
            let route = s.route.map_or(NONE, |_| TENANT_ROUTE);
            let class = STATUS_CLASSES[series::status_class(s.status)];
            METRICS.requests.inc(&[tenant, route, class]);
            METRICS
                .request_duration
                .observe(&[tenant, route], s.duration);
            if let (Some(took), Some(origin)) = (s.upstream_duration, s.origin) {
                METRICS.upstream_duration.observe(&[origin], took);
            }
        }
        for v in &s.metering.violations {
            METRICS
                .violations
                .with_label_values(&[v.kind.as_str(), v.mode.as_str()])
                .inc();
        }
    }
}
