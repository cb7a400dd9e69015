//! Configuration reloads. With a file: on SIGHUP and when the file's content changes. With
//! `source: postgres`: when a signed change announcement arrives (see [`crate::bus`]), when
//! the periodic version poll sees another version, and on SIGHUP.
//!
//! A reload reads and validates the configuration, compiles a new [`Snapshot`] (reusing
//! unchanged pools), and swaps it in atomically. A bad configuration is refused with a
//! logged error and the running one stays. Requests in flight keep the snapshot they started
//! with. While Postgres is away the proxy keeps serving its last configuration.

use crate::snapshot::Snapshot;
use crate::source::{self, PgSource};
use crate::telemetry::metrics::METRICS;
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

/// Where reloads read from.
enum Source {
    File {
        path: Option<PathBuf>,
        watch: bool,
        /// The file's content hash when the reloader was made (before any listener opened):
        /// a change written after the proxy became ready is always seen as one, however
        /// late the reloader's task starts.
        loaded: Option<u64>,
    },
    Postgres {
        pg: Arc<PgSource>,
        poll: Duration,
        /// Least time between two reloads that announcements trigger.
        min_gap: Duration,
        wake: Arc<tokio::sync::Notify>,
    },
}

/// Owns the current snapshot and replaces it.
pub struct Reloader {
    source: Source,
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
            source: Source::File {
                loaded: path.as_ref().filter(|_| watch).and_then(content_hash),
                path,
                watch,
            },
            state,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Reloads from Postgres: polled every `poll`, and when `wake` is notified (at most once
    /// per `min_gap`; announcements in between fold into one reload).
    pub fn postgres(
        pg: Arc<PgSource>,
        poll: Duration,
        min_gap: Duration,
        wake: Arc<tokio::sync::Notify>,
        state: Arc<ArcSwap<Snapshot>>,
    ) -> Reloader {
        Reloader {
            source: Source::Postgres {
                pg,
                poll,
                min_gap,
                wake,
            },
            state,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The next configuration and its version, or None when nothing changed.
    async fn next(&self, current: &Snapshot) -> Result<Option<(Config, u64)>, String> {
        match &self.source {
            Source::File { path: None, .. } => {
                Err("the embedded demo configuration cannot be reloaded".into())
            }
            Source::File {
                path: Some(path), ..
            } => {
                let config = Config::load(path).map_err(|e| e.to_string())?;
                if config.server != current.config.server {
                    tracing::warn!(
                        "server settings changed; listeners and process settings apply after a restart or graceful upgrade"
                    );
                }
                Ok(Some((config, current.version + 1)))
            }
            Source::Postgres { pg, .. } => {
                let fetched = pg.fetch().await.map_err(|e| e.to_string())?;
                if fetched.version == current.version {
                    return Ok(None);
                }
                let config = source::combine(&current.config.server, fetched.config.clone());
                config.validate().map_err(|e| {
                    format!("version {} from postgres is invalid:\n{e}", fetched.version)
                })?;
                if let Err(e) = pg.write_last_good(&fetched) {
                    tracing::warn!("{e}");
                }
                Ok(Some((config, fetched.version)))
            }
        }
    }

    /// Reload now. Returns the version served afterwards, or the reason the new
    /// configuration was refused.
    pub async fn reload(&self, why: &str) -> Result<u64, String> {
        let _one_at_a_time = self.lock.lock().await;
        let started = std::time::Instant::now();
        let result = async {
            let current = self.state.load_full();
            let Some((config, version)) = self.next(&current).await? else {
                return Ok(None);
            };
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
            Ok(Some(version))
        }
        .await;
        // Nothing changed (the version in Postgres is the one served): not a reload.
        let result = match result {
            Ok(None) => return Ok(self.state.load().version),
            Ok(Some(v)) => Ok(v),
            Err(e) => Err(e),
        };
        match &result {
            Ok(v) => {
                METRICS.reloads.with_label_values(&["ok"]).inc();
                METRICS.config_version.set(*v as i64);
                let took = started.elapsed();
                METRICS.reload_duration.observe(took.as_secs_f64());
                tracing::info!(
                    version = v,
                    trigger = why,
                    took_ms = took.as_secs_f64() * 1000.0,
                    "configuration reloaded"
                );
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
        let (watch_path, poll, wake, min_gap) = match &self.source {
            Source::File { path, watch, .. } => {
                (path.clone().filter(|_| *watch), None, None, Duration::ZERO)
            }
            Source::Postgres {
                poll,
                wake,
                min_gap,
                ..
            } => (None, Some(*poll), Some(wake.clone()), *min_gap),
        };
        let mut last_announced: Option<tokio::time::Instant> = None;
        let mut last = match &self.source {
            Source::File { loaded, .. } => *loaded,
            Source::Postgres { .. } => None,
        };
        let mut tick = tokio::time::interval(poll.unwrap_or(Duration::from_millis(500)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // The server's shutdown sequence drains and exits (see `crate::server`).
                _ = shutdown.changed() => return,
                Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    let _ = self.reload("SIGHUP").await;
                    last = watch_path.as_ref().and_then(content_hash);
                }
                _ = async { match &wake { Some(w) => w.notified().await, None => std::future::pending().await } } => {
                    // However many announcements arrive, at most one reload per min_gap.
                    if let Some(at) = last_announced {
                        tokio::time::sleep_until(at + min_gap).await;
                    }
                    last_announced = Some(tokio::time::Instant::now());
                    let _ = self.reload("announcement").await;
                }
                _ = tick.tick(), if watch_path.is_some() || poll.is_some() => {
                    if let Source::Postgres { pg, .. } = &self.source {
                        // Cheap: one version query; a reload only when it moved (or
                        // Postgres came back after the proxy started from the last good file).
                        match pg.version().await {
                            Ok(v) if v != self.state.load().version => {
                                let _ = self.reload("version poll").await;
                            }
                            Ok(_) => {}
                            Err(e) => tracing::debug!("config version poll: {e}"),
                        }
                        continue;
                    }
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
