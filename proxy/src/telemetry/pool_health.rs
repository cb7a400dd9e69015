//! Pool health reports: what this proxy's active health checks see of each origin pool,
//! written to the `pool_health` table for the control plane's `pool_unhealthy` alerts.
//!
//! Every `server.postgres.usage.flush_interval_ms` the [`PoolHealthReporter`] reads the
//! current snapshot's pools (healthy targets, all targets, the origin's tenant) and writes
//! them in one statement: one row per origin upserted with `reported_at = now()`, and this
//! proxy's rows of origins no longer configured deleted. It runs beside the usage writer,
//! with the same Postgres pool and the same proxy name (`<hostname>:<pid>`). Nothing of it
//! is on the request path; while Postgres is away a report is logged as not written and the
//! next one is tried an interval later. At graceful shutdown the proxy deletes its rows (it
//! no longer checks anything); rows of a proxy that died age, and readers ignore rows older
//! than their staleness bound.

use super::FinishSignal;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use deadpool_postgres::Pool;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

/// One report: upsert the rows given, delete this proxy's other rows.
const REPORT: &str = "WITH gone AS ( \
       DELETE FROM pool_health WHERE proxy = $1 AND origin_id <> ALL($2::text[]) \
     ) \
     INSERT INTO pool_health (proxy, origin_id, tenant_id, healthy, total, reported_at) \
     SELECT $1, r.origin_id, r.tenant_id, r.healthy, r.total, now() \
     FROM unnest($2::text[], $3::text[], $4::int4[], $5::int4[]) \
       AS r(origin_id, tenant_id, healthy, total) \
     ON CONFLICT (proxy, origin_id) DO UPDATE SET tenant_id = EXCLUDED.tenant_id, \
       healthy = EXCLUDED.healthy, total = EXCLUDED.total, reported_at = EXCLUDED.reported_at";

/// The proxy leaves: its reports go with it.
const WITHDRAW: &str = "DELETE FROM pool_health WHERE proxy = $1";

/// The rows of one report.
#[derive(Debug, Default)]
struct Report {
    origins: Vec<String>,
    tenants: Vec<String>,
    healthy: Vec<i32>,
    total: Vec<i32>,
}

impl Report {
    /// What the snapshot's pools look like now (sorted by origin, so reports of the same
    /// state are the same).
    fn of(snapshot: &Snapshot) -> Report {
        let mut rows: Vec<(&str, &str, usize, usize)> = snapshot
            .pools()
            .map(|p| {
                let (healthy, total) = p.health_counts();
                (&*p.id, p.spec.tenant_id.as_str(), healthy, total)
            })
            .collect();
        rows.sort_unstable_by_key(|r| r.0);
        let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        let mut report = Report::default();
        for (origin, tenant, healthy, total) in rows {
            report.origins.push(origin.to_string());
            report.tenants.push(tenant.to_string());
            report.healthy.push(count(healthy));
            report.total.push(count(total));
        }
        report
    }
}

/// The background service that writes the reports.
pub struct PoolHealthReporter {
    state: Arc<ArcSwap<Snapshot>>,
    pool: Pool,
    proxy: String,
    interval: Duration,
    timeout: Duration,
    finish: FinishSignal,
}

/// A reporter on the served snapshots `state`, writing as `proxy` over `pool` every
/// `interval` (each statement bounded by `timeout`), and the handle that ends it.
pub fn reporter(
    state: Arc<ArcSwap<Snapshot>>,
    pool: Pool,
    proxy: String,
    interval: Duration,
    timeout: Duration,
) -> (PoolHealthReporter, super::Finish) {
    let (finish, signal) = super::finish_pair();
    let reporter = PoolHealthReporter {
        state,
        pool,
        proxy,
        interval: interval.max(Duration::from_millis(100)),
        timeout,
        finish: signal,
    };
    (reporter, finish)
}

impl PoolHealthReporter {
    /// Run one statement with `params`, bounded by the timeout.
    async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, String> {
        super::execute_bounded(&self.pool, self.timeout, sql, params).await
    }

    /// Write what the pools look like now.
    async fn report(&self) -> Result<(), String> {
        let r = Report::of(&self.state.load());
        self.execute(
            REPORT,
            &[&self.proxy, &r.origins, &r.tenants, &r.healthy, &r.total],
        )
        .await
        .map(|_| ())
    }
}

#[async_trait]
impl BackgroundService for PoolHealthReporter {
    /// Reports at once and then every interval, until the shutdown sequence finishes it.
    async fn start(&self, _shutdown: ShutdownWatch) {
        let mut stop = self.finish.stop.clone();
        // Reports not written in a row: the first failure is a warning, the next ones are
        // counted until one is written again.
        let mut failed: u64 = 0;
        loop {
            match self.report().await {
                Ok(()) if failed > 0 => {
                    tracing::info!(failed, "pool health reported again");
                    failed = 0;
                }
                Ok(()) => {}
                Err(e) => {
                    failed += 1;
                    if failed == 1 {
                        tracing::warn!("pool health not reported: {e}");
                    } else {
                        tracing::debug!(failed, "pool health not reported: {e}");
                    }
                }
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
        if let Err(e) = self.execute(WITHDRAW, &[&self.proxy]).await {
            tracing::warn!("pool health reports of this proxy not withdrawn: {e}");
        }
        self.finish.done();
    }
}
