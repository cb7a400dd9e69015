//! `vantage-admin worker` processes over a test's database: start several on one queue,
//! SIGKILL one mid-job and start it again, read its metrics.

use crate::bins::{admin_bin, kill, log_file};
use crate::http::request;
use crate::postgres::Database;
use crate::wait::{temp_dir, wait_for};
use std::path::PathBuf;
use std::process::{Child, Command};

/// Settings a test worker starts with: its metrics on a free port, quick polls, a scheduler
/// that looks every second. (Webhook receivers on loopback need the test to allow them:
/// `webhook_allowed_networks`.) [`Worker::start`] adds the test's own lines after
/// them (a key given twice is refused by YAML, so tests set keys not listed here, or use
/// [`Worker::start_with`] to replace all of them).
pub const TEST_WORKER_SETTINGS: &str =
    "  metrics_listen: 127.0.0.1:0\n  poll_ms: 50\n  schedule_interval_s: 1\n";

/// A running worker; killed (SIGKILL) when dropped.
pub struct Worker {
    /// `http://127.0.0.1:PORT` of its `/metrics`.
    pub metrics: String,
    child: Option<Child>,
    dir: PathBuf,
    db: Database,
    worker_yaml: String,
    top_yaml: String,
}

impl Worker {
    /// A worker over `db` (migrated) with [`TEST_WORKER_SETTINGS`] plus `worker_yaml`
    /// (lines of the `worker:` section, each indented two spaces) and `top_yaml` (top-level
    /// admin settings).
    pub fn start(db: &Database, worker_yaml: &str, top_yaml: &str) -> Worker {
        Worker::start_with(
            db,
            &format!("{TEST_WORKER_SETTINGS}{worker_yaml}"),
            top_yaml,
        )
    }

    /// A worker with exactly these `worker:` lines (and `top_yaml`).
    pub fn start_with(db: &Database, worker_yaml: &str, top_yaml: &str) -> Worker {
        let mut w = Worker {
            metrics: String::new(),
            child: None,
            dir: temp_dir("worker"),
            db: db.clone(),
            worker_yaml: worker_yaml.to_string(),
            top_yaml: top_yaml.to_string(),
        };
        w.spawn();
        w
    }

    fn spawn(&mut self) {
        let conf = self.dir.join("admin.yaml");
        let mut yaml = format!("redis_url: \"\"\n{}", self.top_yaml);
        if !yaml.ends_with('\n') {
            yaml.push('\n');
        }
        yaml.push_str("worker:\n");
        yaml.push_str(&self.worker_yaml);
        std::fs::write(&conf, yaml).expect("worker settings");
        let stdout = self.dir.join("stdout.log");
        let _ = std::fs::remove_file(&stdout);
        let mut child = Command::new(admin_bin())
            .arg("--config")
            .arg(&conf)
            .arg("worker")
            .env("DATABASE_URL", self.db.url())
            .env_remove("REDIS_URL")
            .env(
                "RUST_LOG",
                std::env::var("VANTAGE_TEST_WORKER_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(log_file(&stdout))
            .stderr(log_file(&self.dir.join("worker.log")))
            .spawn()
            .expect("spawn vantage-admin worker");
        let dir = self.dir.clone();
        let metrics = wait_for("the worker to print its metrics address", 30, || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "vantage-admin worker exited ({status}):\n{}",
                    std::fs::read_to_string(dir.join("worker.log")).unwrap_or_default()
                );
            }
            let out = std::fs::read_to_string(&stdout).ok()?;
            let line = out.lines().find(|l| l.contains("(metrics on "))?;
            let url = line.split("(metrics on ").nth(1)?.trim_end_matches(')');
            Some(url.trim_end_matches("/metrics").to_string())
        });
        self.metrics = metrics;
        self.child = Some(child);
    }

    /// SIGKILL: the worker dies at once, holding whatever it had claimed.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }

    /// SIGTERM, and wait for the worker to exit (it finishes the jobs in hand).
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    /// Start it again (after [`Worker::kill`] or [`Worker::terminate`]), same settings.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("worker.log")).unwrap_or_default()
    }

    /// Its `/metrics` text.
    pub fn metrics_text(&self) -> String {
        let port: u16 = self
            .metrics
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("metrics port");
        request(port, "GET", "127.0.0.1", "/metrics", &[], b"").text()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}
