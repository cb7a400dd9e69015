//! `source: postgres`: the configuration (tenants, origins, routes, API keys, JWT issuers)
//! read from Postgres with one statement, `SELECT vantage_config()` (see `migrations/`), and
//! the last good copy kept on local disk for a proxy that starts while Postgres is down.
//!
//! The proxy never needs Postgres to serve a request: this is only read when a change is
//! announced, when the version poll sees a newer version, and at start.

use crate::telemetry::metrics::METRICS;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
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

/// The Postgres configuration source.
pub struct PgSource {
    pool: Pool,
    timeout: Duration,
    last_good: PathBuf,
    reachable: AtomicBool,
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
        let r = match tokio::time::timeout(self.timeout * 2, f).await {
            Ok(r) => r,
            Err(_) => Err(SourceError::Timeout(self.timeout * 2)),
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

    /// The whole configuration and its version, from one statement.
    pub async fn fetch(&self) -> Result<Versioned, SourceError> {
        self.timed(async {
            let client = self.pool.get().await?;
            let row = client.query_one("SELECT vantage_config()", &[]).await?;
            let doc: serde_json::Value = row.get(0);
            parse_document(doc)
        })
        .await
    }

    /// Keep `v` as the last good configuration (written to a temporary file, then renamed,
    /// so a crash never leaves half a file).
    pub fn write_last_good(&self, v: &Versioned) -> Result<(), SourceError> {
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
        let text = serde_json::to_vec(v).map_err(|e| err(e.to_string()))?;
        // It holds the tenants' secrets (HS shared secrets): readable by this user only,
        // from the moment it exists.
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| err(e.to_string()))?;
        file.write_all(&text)
            .and_then(|()| file.sync_all())
            .map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, &self.last_good).map_err(|e| err(e.to_string()))
    }

    /// The last good configuration, if one was kept.
    pub fn read_last_good(&self) -> Result<Versioned, SourceError> {
        read_last_good(&self.last_good)
    }

    /// Where the last good configuration is kept.
    pub fn last_good_path(&self) -> &Path {
        &self.last_good
    }
}

/// Parse the `{"version": N, "config": {...}}` document of `vantage_config()`.
pub fn parse_document(doc: serde_json::Value) -> Result<Versioned, SourceError> {
    let version = doc
        .get("version")
        .and_then(|v| v.as_i64())
        .ok_or_else(|| SourceError::Parse("no version".into()))?;
    let config = doc
        .get("config")
        .cloned()
        .ok_or_else(|| SourceError::Parse("no config".into()))?;
    let config: Config =
        serde_json::from_value(config).map_err(|e| SourceError::Parse(e.to_string()))?;
    Ok(Versioned {
        version: version.max(0) as u64,
        config,
    })
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
    fn parses_the_vantage_config_document() {
        let doc = serde_json::json!({
            "version": 7,
            "config": {
                "tenants": [{"id": "t", "name": "T", "subdomain": "t"}],
                "origins": [], "routes": [], "api_keys": [], "jwt_issuers": []
            }
        });
        let v = parse_document(doc).unwrap();
        assert_eq!(v.version, 7);
        assert_eq!(v.config.tenants[0].id, "t");
        assert!(parse_document(serde_json::json!({"version": 1})).is_err());
        assert!(parse_document(serde_json::json!({"version": 1, "config": {"bogus": 1}})).is_err());
    }

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
        };
        let src = PgSource::new(&settings).unwrap();
        assert!(src.read_last_good().is_err());
        let v = Versioned {
            version: 3,
            config: Config::default(),
        };
        src.write_last_good(&v).unwrap();
        assert_eq!(src.read_last_good().unwrap().version, 3);
        // Secrets inside: owner-only, also when rewritten.
        src.write_last_good(&v).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        std::fs::remove_dir_all(dir).ok();
    }
}
