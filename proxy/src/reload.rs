//! Configuration reloads: on SIGHUP and when the file's content changes.
//!
//! A reload reads and validates the file, compiles a new [`Snapshot`] (reusing unchanged
//! pools), and swaps it in atomically. A bad file is refused with a logged error and the
//! running configuration stays. Requests in flight keep the snapshot they started with.

use crate::metrics::METRICS;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use vantage_model::Config;

/// Owns the current snapshot and replaces it.
pub struct Reloader {
    path: Option<PathBuf>,
    watch: bool,
    state: Arc<ArcSwap<Snapshot>>,
    lock: tokio::sync::Mutex<()>,
}

fn content_hash(path: &PathBuf) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}

impl Reloader {
    /// `path` is None for the embedded demo config (nothing to reload).
    pub fn new(path: Option<PathBuf>, watch: bool, state: Arc<ArcSwap<Snapshot>>) -> Reloader {
        Reloader {
            path,
            watch,
            state,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Reload now. Returns the new version, or the reason the file was refused.
    pub async fn reload(&self, why: &str) -> Result<u64, String> {
        let Some(path) = &self.path else {
            return Err("the embedded demo configuration cannot be reloaded".into());
        };
        let _one_at_a_time = self.lock.lock().await;
        let result = async {
            let config = Config::load(path).map_err(|e| e.to_string())?;
            let current = self.state.load_full();
            if config.server != current.config.server {
                tracing::warn!(
                    "server settings changed; listeners and process settings apply after a restart or graceful upgrade"
                );
            }
            let version = current.version + 1;
            let snap = Arc::new(
                Snapshot::build(config, version, Some(&current), true)
                    .await
                    .map_err(|e| e.to_string())?,
            );
            for pool in snap.pools() {
                pool.start_health_checks();
            }
            self.state.store(snap.clone());
            current.retire_pools(&snap);
            Ok(version)
        }
        .await;
        match &result {
            Ok(v) => {
                METRICS.reloads.with_label_values(&["ok"]).inc();
                METRICS.config_version.set(*v as i64);
                tracing::info!(version = v, trigger = why, "configuration reloaded");
            }
            Err(e) => {
                METRICS.reloads.with_label_values(&["error"]).inc();
                tracing::error!(
                    trigger = why,
                    "configuration refused; keeping the running one:\n{e}"
                );
            }
        }
        result
    }
}

/// Called when Pingora starts a graceful shutdown (SIGTERM, or SIGQUIT after handing the
/// listeners to a new process). Pingora stops accepting and then sleeps the whole grace
/// period; this ends the process as soon as no request is in flight, so the grace period
/// is an upper bound rather than a fixed delay.
async fn drain_then_exit() {
    tracing::info!("graceful shutdown: draining in-flight requests");
    // Let connections accepted just before the signal register their request.
    tokio::time::sleep(Duration::from_millis(200)).await;
    loop {
        let active = METRICS.active_requests.get();
        if active <= 0 {
            tracing::info!("graceful shutdown: no request in flight, exiting");
            std::process::exit(0);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        for pool in self.state.load().pools() {
            pool.start_health_checks();
        }
        METRICS.config_version.set(self.state.load().version as i64);
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!("cannot listen for SIGHUP: {e}");
                None
            }
        };
        let watch_path = self.path.clone().filter(|_| self.watch);
        let mut last = watch_path.as_ref().and_then(content_hash);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    drain_then_exit().await;
                    return;
                }
                Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    let _ = self.reload("SIGHUP").await;
                    last = watch_path.as_ref().and_then(content_hash);
                }
                _ = tick.tick(), if watch_path.is_some() => {
                    let now = watch_path.as_ref().and_then(content_hash);
                    if now.is_some() && now != last {
                        last = now;
                        let _ = self.reload("file change").await;
                    }
                }
            }
        }
    }
}
