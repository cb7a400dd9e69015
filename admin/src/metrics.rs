//! Prometheus metrics of the admin service (`GET /metrics`, with an admin token like every
//! endpoint but `/healthz`).

use prometheus::{
    register_gauge, register_gauge_vec, register_histogram_vec, register_int_counter_vec,
    register_int_gauge, register_int_gauge_vec, Gauge, GaugeVec, HistogramVec, IntCounterVec,
    IntGauge, IntGaugeVec,
};
use std::sync::LazyLock;

/// The admin's metrics, registered once in the default registry.
pub struct Metrics {
    /// `vantage_admin_config_version`: the config version committed last (read at scrape).
    pub config_version: IntGauge,
    /// `vantage_admin_database_up`: 1 when the scrape could read Postgres.
    pub database_up: IntGauge,
    /// `vantage_admin_notices_total{result}`: change announcements `published` or `failed`.
    pub notices: IntCounterVec,
    /// `vantage_worker_queue_jobs{state}`: jobs `ready` (due), `scheduled` (later),
    /// `running` and `dead` (dead letters), read at scrape (worker).
    pub queue_jobs: IntGaugeVec,
    /// `vantage_worker_queue_oldest_ready_seconds`: how long the oldest due job has waited.
    pub queue_oldest_ready: Gauge,
    /// `vantage_worker_jobs_total{kind, result}`: attempts `ok` or `failed`.
    pub jobs: IntCounterVec,
    /// `vantage_worker_dead_letters_total{kind}`: jobs that became dead.
    pub dead_letters: IntCounterVec,
    /// `vantage_worker_job_duration_seconds{kind}`.
    pub job_seconds: HistogramVec,
    /// `vantage_webhook_deliveries_total{result}`: attempts `delivered`, `failed` (will be
    /// retried), `dead` (retries used up), `refused` (destination not allowed).
    pub webhook_attempts: IntCounterVec,
    /// `vantage_webhook_delivery_duration_seconds{result}`: an attempt's latency.
    pub webhook_seconds: HistogramVec,
    /// `vantage_alerts_total{kind, state}`: alerts `fired` and `resolved`.
    pub alerts: IntCounterVec,
    /// `vantage_billing_records_total{kind}`: `original` and `correction` records written.
    pub billing_records: IntCounterVec,
    /// `vantage_fleet_proxies{state}`: proxies `live` and `gone`, read at scrape (serve).
    pub fleet_proxies: IntGaugeVec,
    /// `vantage_fleet_config_lag_versions{proxy}`: versions each live proxy is behind.
    pub fleet_lag_versions: IntGaugeVec,
    /// `vantage_fleet_config_lag_seconds{proxy}`: how long each live proxy has lacked a
    /// committed version (0 when up to date).
    pub fleet_lag_seconds: GaugeVec,
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    Metrics {
    config_version: register_int_gauge!(
        "vantage_admin_config_version",
        "Config version committed last in Postgres"
    )
    .expect("register vantage_admin_config_version"),
    database_up: register_int_gauge!(
        "vantage_admin_database_up",
        "1 when the admin can read Postgres"
    )
    .expect("register vantage_admin_database_up"),
    notices: register_int_counter_vec!(
        "vantage_admin_notices_total",
        "Config change announcements on Redis, by result",
        &["result"]
    )
    .expect("register vantage_admin_notices_total"),
    queue_jobs: register_int_gauge_vec!(
        "vantage_worker_queue_jobs",
        "Jobs in the queue by state (ready, scheduled, running, dead), read at scrape",
        &["state"]
    )
    .expect("register vantage_worker_queue_jobs"),
    queue_oldest_ready: register_gauge!(
        "vantage_worker_queue_oldest_ready_seconds",
        "Seconds the oldest due job has waited to be claimed"
    )
    .expect("register vantage_worker_queue_oldest_ready_seconds"),
    jobs: register_int_counter_vec!(
        "vantage_worker_jobs_total",
        "Job attempts by kind and result (ok, failed)",
        &["kind", "result"]
    )
    .expect("register vantage_worker_jobs_total"),
    dead_letters: register_int_counter_vec!(
        "vantage_worker_dead_letters_total",
        "Jobs that became dead letters, by kind",
        &["kind"]
    )
    .expect("register vantage_worker_dead_letters_total"),
    job_seconds: register_histogram_vec!(
        "vantage_worker_job_duration_seconds",
        "Time one job attempt took, by kind",
        &["kind"],
        vec![0.005, 0.02, 0.1, 0.5, 2.0, 10.0, 60.0]
    )
    .expect("register vantage_worker_job_duration_seconds"),
    webhook_attempts: register_int_counter_vec!(
        "vantage_webhook_deliveries_total",
        "Webhook delivery attempts by result (delivered, failed, dead, refused)",
        &["result"]
    )
    .expect("register vantage_webhook_deliveries_total"),
    webhook_seconds: register_histogram_vec!(
        "vantage_webhook_delivery_duration_seconds",
        "Latency of webhook delivery attempts, by result",
        &["result"],
        vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
    )
    .expect("register vantage_webhook_delivery_duration_seconds"),
    alerts: register_int_counter_vec!(
        "vantage_alerts_total",
        "Alerts fired and resolved, by rule kind",
        &["kind", "state"]
    )
    .expect("register vantage_alerts_total"),
    billing_records: register_int_counter_vec!(
        "vantage_billing_records_total",
        "Billing records written, by kind (original, correction)",
        &["kind"]
    )
    .expect("register vantage_billing_records_total"),
    fleet_proxies: register_int_gauge_vec!(
        "vantage_fleet_proxies",
        "Proxies reporting to the control plane, by state (live, gone), read at scrape",
        &["state"]
    )
    .expect("register vantage_fleet_proxies"),
    fleet_lag_versions: register_int_gauge_vec!(
        "vantage_fleet_config_lag_versions",
        "Config versions a live proxy is behind the latest, read at scrape",
        &["proxy"]
    )
    .expect("register vantage_fleet_config_lag_versions"),
    fleet_lag_seconds: register_gauge_vec!(
        "vantage_fleet_config_lag_seconds",
        "Seconds since the first config version a live proxy lacks was committed (0 when up to date)",
        &["proxy"]
    )
    .expect("register vantage_fleet_config_lag_seconds"),
}
});

/// Text exposition of every registered metric.
pub fn render() -> Vec<u8> {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    if let Err(e) = prometheus::TextEncoder::new().encode(&prometheus::gather(), &mut buf) {
        tracing::error!("encoding metrics failed: {e}");
    }
    buf
}

/// Give the worker's labelled series their known label values at 0, so that the first
/// failure after a start shows as an increase (a series that appears at 1 does not).
pub fn init_worker_series() {
    use crate::worker::kinds;
    let m = &*METRICS;
    for kind in [
        kinds::BILLING_CLOSE,
        kinds::BILLING_RECONCILE,
        kinds::ALERTS_EVALUATE,
        kinds::WEBHOOK_DELIVER,
        kinds::MAINTENANCE,
    ] {
        for result in ["ok", "failed"] {
            m.jobs.with_label_values(&[kind, result]);
        }
        m.dead_letters.with_label_values(&[kind]);
    }
    for result in ["delivered", "failed", "dead", "refused"] {
        m.webhook_attempts.with_label_values(&[result]);
    }
    for kind in [
        "quota_used",
        "violations",
        "error_rate",
        "pool_unhealthy",
        "key_expiring",
    ] {
        for state in ["fired", "resolved"] {
            m.alerts.with_label_values(&[kind, state]);
        }
    }
    for kind in ["original", "correction"] {
        m.billing_records.with_label_values(&[kind]);
    }
}
