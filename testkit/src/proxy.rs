//! A `vantage-proxy` process over a generated configuration file, on fresh ports.

use crate::bins::{kill, log_file, proxy_bin};
use crate::http::{request, try_request, Response};
use crate::ports::{free_port, port_open};
use crate::wait::{temp_dir, wait_for};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A running `vantage-proxy`.
pub struct Proxy {
    pub port: u16,
    pub ops_port: u16,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    server_extra: String,
    child: Option<Child>,
}

/// The `server:` section every test proxy uses, plus `extra` lines inside it.
pub fn server_section(dir: &Path, port: u16, ops_port: u16, extra: &str) -> String {
    format!(
        "server:\n  listen: [\"127.0.0.1:{port}\"]\n  ops_listen: \"127.0.0.1:{ops_port}\"\n  threads: 2\n  base_domains: [test.local]\n  grace_period_seconds: 10\n  graceful_shutdown_timeout_seconds: 1\n  pid_file: {d}/proxy.pid\n  upgrade_sock: {d}/upgrade.sock\n{extra}",
        d = dir.display()
    )
}

/// The `server:` lines of a proxy in `source: postgres` mode over `db_url`: a version poll
/// of 300 ms, a private last-good file under a temp dir tagged `tag`, notices signed with
/// `secret`, and `postgres_extra` inside the `postgres:` map (e.g. `request_logs: {enabled:
/// false}`); with `redis`, its `server.redis` (key prefix `vantage`).
pub fn postgres_source(
    db_url: &str,
    redis: Option<&crate::Redis>,
    secret: &str,
    tag: &str,
    postgres_extra: &str,
) -> String {
    let last_good = temp_dir(tag).join("last-good.json");
    let extra = if postgres_extra.is_empty() {
        String::new()
    } else {
        format!(", {postgres_extra}")
    };
    let mut s = format!(
        "  source: postgres\n  postgres: {{url: \"{db_url}\", poll_interval_ms: 300, timeout_ms: 1000, last_good_file: \"{}\", notify_secret: \"{secret}\"{extra}}}\n",
        last_good.display()
    );
    if let Some(r) = redis {
        s.push_str(&format!(
            "  redis: {{url: \"{}\", key_prefix: vantage, timeout_ms: 100}}\n",
            r.url()
        ));
    }
    s
}

impl Proxy {
    /// Start with `body` (tenants, origins, routes) under a generated server section.
    pub fn start(body: &str) -> Proxy {
        Self::start_with(body, "")
    }

    /// Like [`Proxy::start`], with extra `server:` lines (indented by two spaces).
    pub fn start_with(body: &str, server_extra: &str) -> Proxy {
        let dir = temp_dir("proxy");
        let config_path = dir.join("config.yaml");
        let mut p = Proxy {
            port: 0,
            ops_port: 0,
            dir,
            config_path,
            server_extra: server_extra.to_string(),
            child: None,
        };
        // A port can be taken between choosing it and the proxy binding it (by a process
        // outside this test run): the proxy then refuses to start, and new ports are tried.
        for _ in 0..3 {
            p.port = free_port();
            p.ops_port = free_port();
            p.write_body(body);
            p.spawn();
            match p.try_ready() {
                Ok(()) => return p,
                Err(log) if log.contains("cannot listen on") => p.child = None,
                Err(log) => panic!("proxy did not start; log:\n{log}"),
            }
        }
        panic!("proxy did not start: its ports were taken three times");
    }

    fn spawn(&mut self) {
        let log = log_file(&self.dir.join("proxy.log"));
        let child = Command::new(proxy_bin())
            .arg("--config")
            .arg(&self.config_path)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn proxy");
        self.child = Some(child);
    }

    /// Kill the process and start it again on the same configuration file and ports.
    pub fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
        wait_for("proxy port to close", 10, || {
            (!port_open(self.port)).then_some(())
        });
        self.spawn();
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        if let Err(log) = self.try_ready() {
            panic!("proxy not ready; log:\n{log}");
        }
    }

    /// Wait until the proxy answers; `Err` with its log when it exited or never answered.
    fn try_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(format!("exited early ({status}):\n{}", self.log()));
                }
            }
            if let Ok(r) = try_request(self.ops_port, "GET", "ops", "/readyz", &[], b"") {
                if r.status == 200 && port_open(self.port) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                if let Some(mut c) = self.child.take() {
                    kill(&mut c);
                }
                return Err(format!("not ready after 30 s:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The proxy's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("proxy.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Send a signal (`HUP`, `TERM`, ...) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Replace the tenants/origins/routes part of the config file (same server section).
    pub fn write_body(&self, body: &str) {
        self.write_raw(&format!(
            "{}\n{body}",
            server_section(&self.dir, self.port, self.ops_port, &self.server_extra)
        ));
    }

    /// Replace the whole config file atomically (rename).
    pub fn write_raw(&self, text: &str) {
        let tmp = self.dir.join("config.yaml.tmp");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, &self.config_path).expect("rename config");
    }

    /// The configuration version being served (from the ops listener).
    pub fn version(&self) -> u64 {
        let r = request(self.ops_port, "GET", "ops", "/config/version", &[], b"");
        r.json()["version"].as_u64().expect("version")
    }

    /// Wait until the served version is at least `v`.
    pub fn wait_version(&self, v: u64) {
        wait_for(&format!("config version {v}"), 20, || {
            (self.version() >= v).then_some(())
        });
    }

    /// Wait until `/readyz` reports the Redis connection up.
    pub fn wait_redis_connected(&self) {
        wait_for("redis connected", 30, || {
            let r = request(self.ops_port, "GET", "ops", "/readyz", &[], b"");
            (r.json()["redis"] == "connected").then_some(())
        });
    }

    /// The ops listener's `/metrics` text.
    pub fn metrics(&self) -> String {
        request(self.ops_port, "GET", "ops", "/metrics", &[], b"").text()
    }

    /// The value of one series of `/metrics` (e.g. `vantage_x_total{reason="a"}`); 0 when
    /// it is not exported (yet).
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    }

    /// GET `path` on tenant host `host`.
    pub fn get(&self, host: &str, path: &str) -> Response {
        request(self.port, "GET", host, path, &[], b"")
    }

    /// Any request through the proxy.
    pub fn send(
        &self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        request(self.port, method, host, path, headers, body)
    }

    /// Wait for the process to exit by itself; returns whether it did within `secs`.
    pub fn wait_exit(&mut self, secs: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    self.child = None;
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Ask the decision service listening on `port` (`server.decision`) for a JSON decision:
/// `POST /api/public/v1/rate-limit/validate` with `token` as the bearer.
pub fn validate_decision(port: u16, token: &str, body: &serde_json::Value) -> Response {
    let auth = format!("Bearer {token}");
    request(
        port,
        "POST",
        "127.0.0.1",
        "/api/public/v1/rate-limit/validate",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
}
