//! `source: postgres`: the configuration (tenants, origins, routes, API keys, JWT issuers,
//! plans) read from Postgres — whole, one row per object in one repeatable-read transaction,
//! or as the tenants changed since a version (`vantage_config_delta`, see `migrations/`) —
//! and the last good copy kept on local disk for a proxy that starts while Postgres is down.
//!
//! The proxy never needs Postgres to serve a request: this is only read when a change is
//! announced, when the version poll sees a newer version, and at start.

use crate::snapshot::Snapshot;
use crate::telemetry::metrics::METRICS;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::NoTls;
use vantage_model::{Config, PostgresSettings, ServerSettings};

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("postgres: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("postgres: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("postgres did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the configuration in postgres does not parse: {0}")]
    Parse(String),
    #[error("{0}")]
    Setup(String),
    #[error("last good file {path}: {reason}")]
    LastGood { path: String, reason: String },
}

/// A configuration with its version, as stored in Postgres and in the last-good file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Versioned {
    pub version: u64,
    /// Without `server` (the proxy's own settings come from its file).
    pub config: Config,
}

/// The tenants changed since a version (`vantage_config_delta`).
#[derive(Debug, Deserialize)]
pub struct Delta {
    /// The version committed last.
    pub version: u64,
    /// The change log reaches back to the version asked about; otherwise `tenants` is empty
    /// and everything must be read.
    pub complete: bool,
    pub tenants: Vec<TenantDelta>,
}

/// A changed tenant: its part of the configuration, or None when it was deleted.
#[derive(Debug, Deserialize)]
pub struct TenantDelta {
    pub id: String,
    pub config: Option<Config>,
}

/// The Postgres configuration source.
pub struct PgSource {
    pool: Pool,
    timeout: Duration,
    last_good: PathBuf,
    reachable: AtomicBool,
    /// The newest snapshot waiting to be written as the last good copy.
    pending: parking_lot::Mutex<Option<Arc<Snapshot>>>,
    writing: AtomicBool,
    /// The version the last good file holds (read or written by this process), 0 unknown.
    held: std::sync::atomic::AtomicU64,
    /// Snapshots handed to [`PgSource::keep`] so far.
    kept: std::sync::atomic::AtomicU64,
    /// How long the last write took, and when the next may start.
    pace: parking_lot::Mutex<(Duration, std::time::Instant)>,
}

/// The URL to use: `VANTAGE_DATABASE_URL` when set, else the settings'.
pub fn database_url(settings: &PostgresSettings) -> String {
    std::env::var("VANTAGE_DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| settings.url.clone())
}

/// A connection pool for `settings` (connections open lazily).
pub fn pool(settings: &PostgresSettings) -> Result<Pool, SourceError> {
    let url = database_url(settings);
    let mut pg: tokio_postgres::Config = url
        .parse()
        .map_err(|e| SourceError::Setup(format!("server.postgres.url: {e}")))?;
    pg.connect_timeout(Duration::from_millis(settings.timeout_ms));
    pg.application_name("vantage-proxy");
    let mgr = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(settings.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_millis(settings.timeout_ms)))
        .create_timeout(Some(Duration::from_millis(settings.timeout_ms)))
        .recycle_timeout(Some(Duration::from_millis(settings.timeout_ms)))
        .build()
        .map_err(|e| SourceError::Setup(format!("server.postgres: {e}")))
}

impl PgSource {
    /// A source for `settings`.
    pub fn new(settings: &PostgresSettings) -> Result<PgSource, SourceError> {
        Ok(PgSource {
            pool: pool(settings)?,
            timeout: Duration::from_millis(settings.timeout_ms),
            last_good: PathBuf::from(&settings.last_good_file),
            reachable: AtomicBool::new(false),
            pending: parking_lot::Mutex::new(None),
            writing: AtomicBool::new(false),
            held: std::sync::atomic::AtomicU64::new(0),
            kept: std::sync::atomic::AtomicU64::new(0),
            pace: parking_lot::Mutex::new((Duration::ZERO, std::time::Instant::now())),
        })
    }

    /// Did the last call reach Postgres?
    pub fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    fn mark(&self, ok: bool) {
        self.reachable.store(ok, Ordering::Relaxed);
        METRICS.config_source_up.set(i64::from(ok));
    }

    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, SourceError>>,
    ) -> Result<T, SourceError> {
        self.timed_by(self.timeout * 2, f).await
    }

    /// `f`, given up after `limit` (reading a whole large fleet takes longer than a query).
    async fn timed_by<T>(
        &self,
        limit: Duration,
        f: impl std::future::Future<Output = Result<T, SourceError>>,
    ) -> Result<T, SourceError> {
        let r = match tokio::time::timeout(limit, f).await {
            Ok(r) => r,
            Err(_) => Err(SourceError::Timeout(limit)),
        };
        self.mark(r.is_ok());
        r
    }

    /// The version committed last (`vantage_config_version()`): cheap, for the poll.
    pub async fn version(&self) -> Result<u64, SourceError> {
        self.timed(async {
            let client = self.pool.get().await?;
            let row = client
                .query_one("SELECT vantage_config_version()", &[])
                .await?;
            let v: i64 = row.get(0);
            Ok(v.max(0) as u64)
        })
        .await
    }

    /// The whole configuration and its version, read in one repeatable-read transaction
    /// one table at a time, one row per object, each parsed as it arrives: no document of
    /// the whole fleet is ever built, and the work grows linearly with the configuration.
    pub async fn fetch(&self) -> Result<Versioned, SourceError> {
        self.timed_by(self.timeout * 20, async {
            let mut client = self.pool.get().await?;
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let row = tx.query_one("SELECT vantage_config_version()", &[]).await?;
            let version: i64 = row.get(0);
            let mut config = Config::default();
            read_rows(&tx, "tenant", "tenants", &mut config.tenants).await?;
            read_rows(&tx, "origin", "origins", &mut config.origins).await?;
            read_rows(&tx, "route", "routes", &mut config.routes).await?;
            read_keys(&tx, &mut config.api_keys).await?;
            read_rows(&tx, "jwt_issuer", "jwt_issuers", &mut config.jwt_issuers).await?;
            read_rows(&tx, "plan", "plans", &mut config.plans).await?;
            tx.commit().await?;
            Ok(Versioned {
                version: version.max(0) as u64,
                config,
            })
        })
        .await
    }

    /// What changed since version `since`: the tenants' new parts, in one statement.
    pub async fn delta(&self, since: u64) -> Result<Delta, SourceError> {
        self.timed_by(self.timeout * 2, async {
            let client = self.pool.get().await?;
            let row = client
                .query_one(
                    "SELECT vantage_config_delta($1)",
                    &[&i64::try_from(since).unwrap_or(i64::MAX)],
                )
                .await?;
            let doc: serde_json::Value = row.get(0);
            serde_json::from_value(doc).map_err(|e| SourceError::Parse(e.to_string()))
        })
        .await
    }

    fn mark_held(&self, version: u64) {
        self.held.store(version, Ordering::Relaxed);
        METRICS.last_good_version.set(version as i64);
    }

    /// The version the last good file holds, when this process read or wrote it.
    pub fn last_good_version(&self) -> Option<u64> {
        Some(self.held.load(Ordering::Relaxed)).filter(|v| *v > 0)
    }

    /// Write `doc` as the last good configuration (to a temporary file, then renamed, so a
    /// crash never leaves half a file).
    fn write_last_good_doc(&self, doc: &impl Serialize) -> Result<(), SourceError> {
        let err = |reason: String| SourceError::LastGood {
            path: self.last_good.display().to_string(),
            reason,
        };
        if let Some(dir) = self
            .last_good
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let tmp = self.last_good.with_extension("tmp");
        // It holds the tenants' secrets (HS shared secrets): readable by this user only,
        // from the moment it exists.
        let _ = std::fs::remove_file(&tmp);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| err(e.to_string()))?;
        let mut out = std::io::BufWriter::new(file);
        serde_json::to_writer(&mut out, doc).map_err(|e| err(e.to_string()))?;
        let file = out.into_inner().map_err(|e| err(e.to_string()))?;
        file.sync_all().map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, &self.last_good).map_err(|e| err(e.to_string()))
    }

    /// Keep `snap` as the last good configuration, off the reload path, by a blocking task:
    /// snapshots that arrive before it writes fold into the newest. Writing a large
    /// configuration takes seconds, so the task paces itself by its last write: it rests
    /// ten times as long after a write (at most five minutes), and then waits for changes
    /// to pause for as long as a write takes (at most 2 s; no more than a minute in all).
    /// A busy stream of changes then costs a bounded share of a core, and a burst of them
    /// one write after it; a small configuration is written at once.
    pub fn keep(self: &Arc<Self>, snap: Arc<Snapshot>) {
        *self.pending.lock() = Some(snap);
        self.kept.fetch_add(1, Ordering::AcqRel);
        if self.writing.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || loop {
            let (took, not_before) = *me.pace.lock();
            let waited = std::time::Instant::now();
            if let Some(rest) = not_before.checked_duration_since(waited) {
                std::thread::sleep(rest);
            }
            let quiet = took.min(Duration::from_secs(2));
            if !quiet.is_zero() {
                loop {
                    let seen = me.kept.load(Ordering::Acquire);
                    std::thread::sleep(quiet);
                    if me.kept.load(Ordering::Acquire) == seen
                        || waited.elapsed() >= Duration::from_secs(60)
                    {
                        break;
                    }
                }
            }
            let next = me.pending.lock().take();
            let Some(snap) = next else {
                me.writing.store(false, Ordering::Release);
                // One may have arrived after the take and before the flag dropped.
                if me.pending.lock().is_none() || me.writing.swap(true, Ordering::AcqRel) {
                    return;
                }
                continue;
            };
            let started = std::time::Instant::now();
            match me.write_last_good_doc(&LastGood(&snap)) {
                Ok(()) => me.mark_held(snap.version),
                Err(e) => tracing::warn!("{e}"),
            }
            drop(snap);
            let took = started.elapsed();
            let rest = (took * 10).min(Duration::from_secs(300));
            *me.pace.lock() = (took, std::time::Instant::now() + rest);
        });
    }

    /// The last good configuration, if one was kept.
    pub fn read_last_good(&self) -> Result<Versioned, SourceError> {
        let v = read_last_good(&self.last_good)?;
        self.mark_held(v.version);
        Ok(v)
    }

    /// Where the last good configuration is kept.
    pub fn last_good_path(&self) -> &Path {
        &self.last_good
    }
}

/// A snapshot as a last-good document (`{"version": N, "config": {...}}`), serialized from
/// the tenants' parts without copying them.
struct LastGood<'a>(&'a Snapshot);

/// A sequence of the items `F` lists.
struct Seq<F>(F);

impl<F, I> Serialize for Seq<F>
where
    F: Fn() -> I,
    I: Iterator,
    I::Item: Serialize,
{
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq((self.0)())
    }
}

impl Serialize for LastGood<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let parts = self.0.tenants();
        let config = {
            struct Parts<'a>(&'a [Arc<crate::snapshot::TenantRt>]);
            impl Serialize for Parts<'_> {
                fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                    use serde::ser::SerializeStruct;
                    let p = self.0;
                    let mut m = s.serialize_struct("Config", 6)?;
                    m.serialize_field("tenants", &Seq(|| p.iter().flat_map(|t| &t.spec.tenants)))?;
                    m.serialize_field("origins", &Seq(|| p.iter().flat_map(|t| &t.spec.origins)))?;
                    m.serialize_field("routes", &Seq(|| p.iter().flat_map(|t| &t.spec.routes)))?;
                    m.serialize_field(
                        "api_keys",
                        &Seq(|| p.iter().flat_map(|t| &t.spec.api_keys)),
                    )?;
                    m.serialize_field(
                        "jwt_issuers",
                        &Seq(|| p.iter().flat_map(|t| &t.spec.jwt_issuers)),
                    )?;
                    m.serialize_field("plans", &Seq(|| p.iter().flat_map(|t| &t.spec.plans)))?;
                    m.end()
                }
            }
            Parts(parts)
        };
        let mut m = s.serialize_struct("Versioned", 2)?;
        m.serialize_field("version", &self.0.version)?;
        m.serialize_field("config", &config)?;
        m.end()
    }
}

/// Every row of `table` in the serde form of its model type (`vantage_<kind>_json`), in the
/// order `vantage_config()` gives them, streamed into `out`.
async fn read_rows<T: serde::de::DeserializeOwned>(
    tx: &tokio_postgres::Transaction<'_>,
    kind: &str,
    table: &str,
    out: &mut Vec<T>,
) -> Result<(), SourceError> {
    let rows = tx
        .query_raw(
            &format!("SELECT vantage_{kind}_json(x) FROM {table} x ORDER BY x.created_at, x.id"),
            std::iter::empty::<i64>(),
        )
        .await?;
    let mut rows = std::pin::pin!(rows);
    while let Some(row) = futures_util::TryStreamExt::try_next(&mut rows).await? {
        let item: tokio_postgres::types::Json<T> = row
            .try_get(0)
            .map_err(|e| SourceError::Parse(format!("{table}: {e}")))?;
        out.push(item.0);
    }
    Ok(())
}

/// Every API key, from its columns (a fleet may hold millions: building and parsing a JSON
/// document per key would cost several times more). The same form as
/// `vantage_api_key_json`, in no particular order (keys are looked up by hash).
async fn read_keys(
    tx: &tokio_postgres::Transaction<'_>,
    out: &mut Vec<vantage_model::ApiKey>,
) -> Result<(), SourceError> {
    let rows = tx
        .query_raw(
            "SELECT id::text, tenant_id::text, name, key_hash, prefix, scopes,
                    to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                    status = 'revoked', plan_id::text
               FROM api_keys",
            std::iter::empty::<i64>(),
        )
        .await?;
    let mut rows = std::pin::pin!(rows);
    while let Some(row) = futures_util::TryStreamExt::try_next(&mut rows).await? {
        let revoked: bool = row.try_get(7)?;
        out.push(vantage_model::ApiKey {
            id: row.try_get(0)?,
            tenant_id: row.try_get(1)?,
            name: row.try_get(2)?,
            key_hash: row.try_get(3)?,
            prefix: row.try_get(4)?,
            scopes: row.try_get(5)?,
            expires_at: row.try_get(6)?,
            status: if revoked {
                vantage_model::KeyStatus::Revoked
            } else {
                vantage_model::KeyStatus::Active
            },
            plan_id: row.try_get(8)?,
        });
    }
    Ok(())
}

/// Read a last-good file.
pub fn read_last_good(path: &Path) -> Result<Versioned, SourceError> {
    let err = |reason: String| SourceError::LastGood {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    serde_json::from_slice(&text).map_err(|e| err(e.to_string()))
}

/// The configuration to serve: the proxy's own `server` settings with the tenants, origins,
/// routes, keys and issuers from Postgres.
pub fn combine(server: &ServerSettings, from_db: Config) -> Config {
    Config {
        server: server.clone(),
        ..from_db
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_good_round_trip() {
        let dir = std::env::temp_dir().join(format!("vantage-lg-{}", std::process::id()));
        let path = dir.join("sub/last-good.json");
        let settings = PostgresSettings {
            url: "postgres://nobody@127.0.0.1:1/none".into(),
            pool_size: 1,
            poll_interval_ms: 1000,
            timeout_ms: 100,
            last_good_file: path.display().to_string(),
            notify_secret: None,
            notice_window_ms: 60_000,
            min_reload_interval_ms: 250,
            request_logs: Default::default(),
            usage: Default::default(),
            fleet: Default::default(),
        };
        let src = PgSource::new(&settings).unwrap();
        assert!(src.read_last_good().is_err());
        let v = Versioned {
            version: 3,
            config: Config::default(),
        };
        src.write_last_good_doc(&v).unwrap();
        assert_eq!(src.read_last_good().unwrap().version, 3);
        // Secrets inside: owner-only, also when rewritten.
        src.write_last_good_doc(&v).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        std::fs::remove_dir_all(dir).ok();
    }
}
