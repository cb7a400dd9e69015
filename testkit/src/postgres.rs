//! Postgres: databases of a test's own (on the shared server or a private cluster), and
//! private clusters for tests that stop and start Postgres.

use crate::admin::admin_cli;
use crate::ports::{free_port, port_open};
use crate::wait::wait_for;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The machine's shared Postgres (127.0.0.1:5432, user postgres, trust auth;
/// `./scripts/test.sh` starts it).
pub const PG_PORT: u16 = 5432;

/// `psql` against 127.0.0.1:`port` as user postgres (trust auth); `-tA` output.
pub fn psql(port: u16, db: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(["-d", db, "-v", "ON_ERROR_STOP=1", "-tAc", sql])
        .output()
        .map_err(|e| format!("psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A database of the test's own on a Postgres server, dropped when the last clone of it
/// goes (an [`crate::Admin`] serving over it keeps a clone).
#[derive(Clone)]
pub struct Database {
    pub name: String,
    pub port: u16,
    _dropped_with: Arc<DropDatabase>,
}

struct DropDatabase {
    name: String,
    port: u16,
}

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let _ = psql(
            self.port,
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

impl Database {
    /// On the machine's shared Postgres ([`PG_PORT`]).
    pub fn shared() -> Database {
        Self::on(PG_PORT)
    }

    /// On the shared Postgres, with the schema applied (`vantage-admin migrate`).
    pub fn migrated() -> Database {
        let db = Self::shared();
        db.migrate();
        db
    }

    /// On the server listening on `port`.
    pub fn on(port: u16) -> Database {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "vantage_test_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        psql(port, "postgres", &format!("CREATE DATABASE {name}")).unwrap_or_else(|e| {
            panic!("create database on {port} (is Postgres running? ./scripts/test.sh): {e}")
        });
        Database {
            _dropped_with: Arc::new(DropDatabase {
                name: name.clone(),
                port,
            }),
            name,
            port,
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{}", self.port, self.name)
    }

    /// Run `sql` with psql; its `-tA` output (panics on an error).
    pub fn sql(&self, sql: &str) -> String {
        psql(self.port, &self.name, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Apply the schema with `vantage-admin migrate`.
    pub fn migrate(&self) {
        admin_cli(self, &["migrate"]);
    }

    /// A tokio-postgres client (its connection runs on the caller's runtime).
    pub async fn client(&self) -> tokio_postgres::Client {
        let (c, conn) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url()));
        tokio::spawn(conn);
        c
    }
}

/// A private Postgres cluster (Debian's pg_createcluster) on a free port, for tests that stop
/// and start Postgres; never the machine's shared server. Dropped at the end.
pub struct PgCluster {
    pub port: u16,
    version: String,
    name: String,
}

impl PgCluster {
    pub fn start() -> PgCluster {
        let version = std::fs::read_dir("/usr/lib/postgresql")
            .expect("postgresql installed (scripts/test.sh installs it)")
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .max()
            .expect("a postgresql version");
        let port = free_port();
        let name = format!("vt{}_{}", std::process::id(), port);
        let out = Command::new("pg_createcluster")
            .args([
                &version,
                &name,
                "-p",
                &port.to_string(),
                "--start-conf=manual",
            ])
            .args(["--", "--auth=trust"])
            .output()
            .expect("pg_createcluster");
        assert!(
            out.status.success(),
            "pg_createcluster: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let c = PgCluster {
            port,
            version,
            name,
        };
        c.ctl("start");
        wait_for("private postgres", 30, || {
            psql(port, "postgres", "SELECT 1").ok()
        });
        c
    }

    fn ctl(&self, action: &str) {
        let out = Command::new("pg_ctlcluster")
            .args([
                "--skip-systemctl-redirect",
                &self.version,
                &self.name,
                action,
            ])
            .args(if action == "stop" {
                &["--", "-m", "fast"][..]
            } else {
                &[][..]
            })
            .output()
            .expect("pg_ctlcluster");
        assert!(
            out.status.success(),
            "pg_ctlcluster {action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn stop(&self) {
        self.ctl("stop");
        let port = self.port;
        wait_for("private postgres to stop", 30, || {
            (!port_open(port)).then_some(())
        });
    }

    pub fn restart(&self) {
        self.ctl("start");
        let port = self.port;
        wait_for("private postgres", 30, || {
            psql(port, "postgres", "SELECT 1").ok()
        });
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = Command::new("pg_dropcluster")
            .args(["--stop", &self.version, &self.name])
            .output();
    }
}
