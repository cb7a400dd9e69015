//! Prometheus metrics of the admin service (`GET /metrics`, with an admin token like every
//! endpoint but `/healthz`).

use prometheus::{register_int_counter_vec, register_int_gauge, IntCounterVec, IntGauge};
use std::sync::LazyLock;

/// The admin's metrics, registered once in the default registry.
pub struct Metrics {
    /// `vantage_admin_config_version`: the config version committed last (read at scrape).
    pub config_version: IntGauge,
    /// `vantage_admin_database_up`: 1 when the scrape could read Postgres.
    pub database_up: IntGauge,
    /// `vantage_admin_notices_total{result}`: change announcements `published` or `failed`.
    pub notices: IntCounterVec,
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
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
