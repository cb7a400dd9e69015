//! Active HTTP health check: Pingora's `HttpHealthCheck`, wrapped to remember each target's
//! last result and to export health changes as metrics and logs.

use super::TargetState;
use crate::telemetry::metrics::METRICS;
use async_trait::async_trait;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck};
use pingora::lb::Backend;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use vantage_model::UpstreamTls;

/// The probe of one origin.
pub struct Probe {
    origin: String,
    inner: HttpHealthCheck,
}

/// Build the probe for an origin's health-check settings; `host` and `use_tls` are those
/// of the origin's (first) target.
pub fn probe(
    origin: &str,
    hc: &vantage_model::HealthCheck,
    tls: &UpstreamTls,
    host: &str,
    use_tls: bool,
) -> Box<Probe> {
    let host = hc.host.clone().unwrap_or_else(|| host.to_string());
    let mut inner = HttpHealthCheck::new(&host, use_tls);
    if use_tls {
        if let Some(sni) = &tls.sni {
            inner.peer_template.sni = sni.clone();
        }
    }
    inner.consecutive_success = hc.healthy_threshold.max(1) as usize;
    inner.consecutive_failure = hc.unhealthy_threshold.max(1) as usize;
    let timeout = Duration::from_millis(hc.timeout_ms);
    inner.peer_template.options.connection_timeout = Some(timeout);
    inner.peer_template.options.total_connection_timeout = Some(timeout);
    inner.peer_template.options.read_timeout = Some(timeout);
    inner.peer_template.options.verify_cert = tls.verify;
    inner.peer_template.options.verify_hostname = tls.verify;
    if let Ok(uri) = hc.path.parse() {
        inner.req.set_uri(uri);
    }
    Box::new(Probe {
        origin: origin.to_string(),
        inner,
    })
}

fn state(b: &Backend) -> Option<&Arc<TargetState>> {
    b.ext.get::<Arc<TargetState>>()
}

#[async_trait]
impl HealthCheck for Probe {
    async fn check(&self, target: &Backend) -> pingora::Result<()> {
        let result = self.inner.check(target).await;
        if let Some(s) = state(target) {
            s.last_probe_ok.store(result.is_ok(), Ordering::Release);
        }
        result
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        let label = state(target).map_or_else(|| target.addr.to_string(), |s| s.label.clone());
        if healthy {
            tracing::warn!(origin = %self.origin, target = %label, "target is healthy again");
        } else {
            tracing::warn!(origin = %self.origin, target = %label, "target failed its health check; out of rotation");
        }
        METRICS
            .target_healthy
            .with_label_values(&[&self.origin, &label])
            .set(i64::from(healthy));
    }

    fn health_threshold(&self, success: bool) -> usize {
        self.inner.health_threshold(success)
    }
}
