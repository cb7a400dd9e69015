//! Fleet heartbeats: a proxy in `source: postgres` mode tells the control plane what it
//! serves, for the fleet view (`GET /api/v1/fleet`), the lag metric and `?wait=` on writes.
//!
//! The [`Heartbeat`] upserts this proxy's row of the `proxies` table — its id
//! (`<hostname>:<pid>`, as in usage batches), host name, the config version it serves and
//! when that snapshot was built, its readiness, its build version, when it started — at
//! once when the served version changes (looked at every [`WATCH`]) and otherwise every
//! `server.postgres.fleet.heartbeat_ms`. Nothing of it is on the request path. While
//! Postgres is away a beat is logged as not written and tried again at the next tick; the
//! control plane shows a proxy whose beats stop as gone. At graceful shutdown the row is
//! deleted: a proxy that left on purpose is not a lagging one.

use super::FinishSignal;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use deadpool_postgres::Pool;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often the served version is compared with the last one reported.
const WATCH: Duration = Duration::from_millis(50);

/// One beat: this proxy's row, inserted or brought up to date.
const BEAT: &str = "INSERT INTO proxies (id, hostname, config_version, applied_at, ready, \
       build_version, started_at, last_seen) \
     VALUES ($1, $2, $3, to_timestamp($4), $5, $6, to_timestamp($7), now()) \
     ON CONFLICT (id) DO UPDATE SET hostname = EXCLUDED.hostname, \
       config_version = EXCLUDED.config_version, applied_at = EXCLUDED.applied_at, \
       ready = EXCLUDED.ready, build_version = EXCLUDED.build_version, \
       started_at = EXCLUDED.started_at, last_seen = EXCLUDED.last_seen";

/// The proxy leaves the fleet.
const LEAVE: &str = "DELETE FROM proxies WHERE id = $1";

/// Seconds since the Unix epoch, for `to_timestamp`.
fn epoch(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The background service that writes the beats.
pub struct Heartbeat {
    state: Arc<ArcSwap<Snapshot>>,
    pool: Pool,
    id: String,
    hostname: String,
    started_at: SystemTime,
    interval: Duration,
    timeout: Duration,
    finish: FinishSignal,
}

/// A heartbeat of the served snapshots `state` over `pool` every `interval` (each statement
/// bounded by `timeout`), and the handle that ends it.
pub fn heartbeat(
    state: Arc<ArcSwap<Snapshot>>,
    pool: Pool,
    interval: Duration,
    timeout: Duration,
) -> (Heartbeat, super::Finish) {
    let (finish, signal) = super::finish_pair();
    let beat = Heartbeat {
        state,
        pool,
        id: super::proxy_name(),
        hostname: super::hostname(),
        started_at: SystemTime::now(),
        interval: interval.max(Duration::from_millis(100)),
        timeout,
        finish: signal,
    };
    (beat, finish)
}

impl Heartbeat {
    /// Report the snapshot served now; the version reported.
    async fn beat(&self) -> (u64, Result<u64, String>) {
        let snap = self.state.load();
        let version = snap.version;
        let params: (i64, f64, bool, f64) = (
            i64::try_from(version).unwrap_or(i64::MAX),
            epoch(snap.built_at),
            // Serving: a configuration is loaded (the proxy never serves without one).
            true,
            epoch(self.started_at),
        );
        drop(snap);
        let r = super::execute_bounded(
            &self.pool,
            self.timeout,
            BEAT,
            &[
                &self.id,
                &self.hostname,
                &params.0,
                &params.1,
                &params.2,
                &env!("CARGO_PKG_VERSION"),
                &params.3,
            ],
        )
        .await;
        (version, r)
    }
}

#[async_trait]
impl BackgroundService for Heartbeat {
    /// Beats at once, after every change of the served version and every interval, until
    /// the shutdown sequence finishes it; then leaves the fleet.
    async fn start(&self, _shutdown: ShutdownWatch) {
        let mut stop = self.finish.stop.clone();
        // Beats not written in a row: the first failure is a warning, the next are counted.
        let mut failed: u64 = 0;
        loop {
            let (reported, r) = self.beat().await;
            match r {
                Ok(_) if failed > 0 => {
                    tracing::info!(failed, "fleet heartbeat written again");
                    failed = 0;
                }
                Ok(_) => {}
                Err(e) => {
                    failed += 1;
                    if failed == 1 {
                        tracing::warn!("fleet heartbeat not written: {e}");
                    } else {
                        tracing::debug!(failed, "fleet heartbeat not written: {e}");
                    }
                }
            }
            let next = Instant::now() + self.interval;
            loop {
                let stopping = tokio::select! {
                    _ = stop.wait_for(|s| *s) => true,
                    _ = tokio::time::sleep(WATCH) => false,
                };
                if stopping {
                    if let Err(e) =
                        super::execute_bounded(&self.pool, self.timeout, LEAVE, &[&self.id]).await
                    {
                        tracing::warn!("this proxy's fleet row not removed: {e}");
                    }
                    self.finish.done();
                    return;
                }
                // A reload is told at once (a failed beat waits for the next interval).
                if Instant::now() >= next || (failed == 0 && self.state.load().version != reported)
                {
                    break;
                }
            }
        }
    }
}
