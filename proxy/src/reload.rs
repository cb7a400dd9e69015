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

    /// The next snapshot, or None when nothing changed. With Postgres, only the tenants
    /// changed since the version served are read and compiled (the others are shared with
    /// the current snapshot); everything is read when the change log does not reach back.
    async fn next(&self, current: &Snapshot) -> Result<Option<(Snapshot, Kind)>, String> {
        let full = |config: Config, version: u64| async move {
            Snapshot::build(config, version, Some(current), true)
                .await
                .map(|s| Some((s, Kind::Full)))
                .map_err(|e| e.to_string())
        };
        match &self.source {
            Source::File { path: None, .. } => {
                Err("the embedded demo configuration cannot be reloaded".into())
            }
            Source::File {
                path: Some(path), ..
            } => {
                let config = Config::load(path).map_err(|e| e.to_string())?;
                if config.server != current.server {
                    tracing::warn!(
                        "server settings changed; listeners and process settings apply after a restart or graceful upgrade"
                    );
                }
                full(config, current.version + 1).await
            }
            Source::Postgres { pg, .. } => {
                let delta = pg.delta(current.version).await.map_err(|e| e.to_string())?;
                if delta.version == current.version {
                    return Ok(None);
                }
                if !delta.complete || delta.version < current.version {
                    let fetched = pg.fetch().await.map_err(|e| e.to_string())?;
                    if fetched.version == current.version {
                        return Ok(None);
                    }
                    let config = source::combine(&current.server, fetched.config);
                    config.validate().map_err(|e| {
                        format!("version {} from postgres is invalid:\n{e}", fetched.version)
                    })?;
                    return full(config, fetched.version).await;
                }
                let mut changes = Vec::with_capacity(delta.tenants.len());
                for t in delta.tenants {
                    if let Some(part) = &t.config {
                        let config = source::combine(&current.server, part.clone());
                        config.validate().map_err(|e| {
                            format!(
                                "version {}, tenant {}, from postgres is invalid:\n{e}",
                                delta.version, t.id
                            )
                        })?;
                    }
                    changes.push((t.id, t.config));
                }
                let n = changes.len();
                let snap = current
                    .apply(changes, delta.version, true)
                    .await
                    .map_err(|e| format!("version {}: {e}", delta.version))?;
                Ok(Some((snap, Kind::Tenants(n))))
            }
        }
    }

    /// Reload now. Returns the version served afterwards, or the reason the new
    /// configuration was refused.
    pub async fn reload(&self, why: &str) -> Result<u64, String> {
        let _one_at_a_time = self.lock.lock().await;
        let started = std::time::Instant::now();
        let current = self.state.load_full();
        let result = self.next(&current).await;
        // Nothing changed (the version in Postgres is the one served): not a reload.
        let (snap, kind) = match result {
            Ok(None) => return Ok(current.version),
            Ok(Some(next)) => next,
            Err(e) => {
                METRICS.reloads.with_label_values(&["error"]).inc();
                tracing::error!(
                    trigger = why,
                    "configuration refused; keeping the running one:\n{e}"
                );
                return Err(e);
            }
        };
        let snap = Arc::new(snap);
        let mut compiled = 0;
        for tenant in snap.new_since(&current) {
            compiled += 1;
            for pool in tenant.pools() {
                pool.start_health_checks();
            }
        }
        // Counted before the swap: whoever sees the new version sees them counted.
        METRICS.reloads.with_label_values(&["ok"]).inc();
        METRICS.tenants_compiled.inc_by(compiled);
        self.state.store(snap.clone());
        current.retire_pools(&snap);
        if let Source::Postgres { pg, .. } = &self.source {
            pg.keep(snap.clone());
        }
        let v = snap.version;
        METRICS.config_version.set(v as i64);
        let took = started.elapsed();
        METRICS.reload_duration.observe(took.as_secs_f64());
        tracing::info!(
            version = v,
            trigger = why,
            kind = kind.label(),
            tenants_compiled = compiled,
            took_ms = took.as_secs_f64() * 1000.0,
            "configuration reloaded"
        );
        Ok(v)
    }
}

/// How a reload read its configuration.
enum Kind {
    /// Everything (a file, the first read, or a change log that does not reach back).
    Full,
    /// The changed tenants only (this many).
    Tenants(usize),
}

impl Kind {
    fn label(&self) -> String {
        match self {
            Kind::Full => "full".into(),
            Kind::Tenants(n) => format!("tenants ({n} changed)"),
        }
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        for pool in self.state.load().pools() {
            pool.start_health_checks();
        }
        if let Source::Postgres { pg, .. } = &self.source {
            // The first configuration's last good copy (unless it came from that copy).
            let snap = self.state.load_full();
            if pg.last_good_version() != Some(snap.version) {
                pg.keep(snap);
            }
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
