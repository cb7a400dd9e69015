//! Test support: spawns the real `vantage-proxy` binary and real demo origins (the same
//! binary's `demo-origin` subcommand) on free loopback ports, and talks plain HTTP/1.1 to
//! them over TCP.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_vantage-proxy");

/// The stored form of an API key (`vantage-proxy hash-key KEY`).
pub fn hash_key(key: &str) -> String {
    let out = Command::new(BIN)
        .args(["hash-key", key])
        .output()
        .expect("hash-key");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Ports handed out in this test process: never handed out twice, so two tests running at
/// once never share one.
fn handed_out() -> &'static std::sync::Mutex<std::collections::HashSet<u16>> {
    static PORTS: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<u16>>> =
        std::sync::OnceLock::new();
    PORTS.get_or_init(Default::default)
}

/// A loopback port held by a bound socket that does not listen: connections to it are
/// refused, and the kernel hands it to no one else until it is released.
pub struct PortHold {
    pub port: u16,
    socket: Option<socket2::Socket>,
}

fn bind_quiet(port: u16) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    // Binding again after a server on this port stopped must not fail on its TIME_WAITs.
    s.set_reuse_address(true)?;
    s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    Ok(s)
}

impl PortHold {
    /// A new port, never handed out before in this process.
    pub fn new() -> PortHold {
        for _ in 0..100 {
            let s = bind_quiet(0).expect("bind a loopback port");
            let port = s
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .map(|a| a.port())
                .expect("bound port");
            if handed_out().lock().unwrap().insert(port) {
                return PortHold {
                    port,
                    socket: Some(s),
                };
            }
        }
        panic!("no fresh loopback port");
    }

    /// Let a server bind the port (call right before starting it).
    pub fn release(&mut self) {
        self.socket = None;
    }

    /// Hold the port again after its server stopped (best effort: a TIME_WAIT-free port
    /// always binds).
    pub fn hold(&mut self) {
        if self.socket.is_none() {
            self.socket = bind_quiet(self.port).ok();
        }
    }
}

impl Default for PortHold {
    fn default() -> Self {
        Self::new()
    }
}

/// A loopback port for a server about to start (never handed out before in this process).
pub fn free_port() -> u16 {
    PortHold::new().port
}

/// A listening socket on a fresh loopback port, for servers the test runs in-process.
pub fn listener() -> TcpListener {
    let l = TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
    let port = l.local_addr().expect("local addr").port();
    handed_out().lock().unwrap().insert(port);
    l
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "vantage-test-{}-{}-{}",
        std::process::id(),
        tag,
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Poll `f` until it returns Some, or panic with `what` after `secs`.
pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn port_open(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A child process serving on one loopback port; killed when dropped. While it is not
/// running, the port is held (connections are refused, and no other test gets the port).
struct Served {
    port: u16,
    hold: PortHold,
    child: Option<Child>,
}

impl Served {
    fn new() -> Served {
        let hold = PortHold::new();
        Served {
            port: hold.port,
            hold,
            child: None,
        }
    }

    /// Spawn `cmd` (output discarded) and wait until the port accepts connections.
    fn spawn(&mut self, cmd: &mut Command, what: &str) {
        assert!(self.child.is_none(), "{what} already running");
        self.hold.release();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        self.child = Some(child);
        let port = self.port;
        wait_for(&format!("{what} on {port}"), 20, || {
            port_open(port).then_some(())
        });
    }

    /// Kill it and wait until connections to its port are refused.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
        let port = self.port;
        wait_for("port to close", 10, || (!port_open(port)).then_some(()));
        self.hold.hold();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }
}

/// A demo origin process.
pub struct Origin {
    pub port: u16,
    pub name: String,
    served: Served,
}

impl Origin {
    /// Start an origin named `name` on a free port.
    pub fn start(name: &str) -> Origin {
        let mut o = Origin::dead(name);
        o.restart();
        o
    }

    /// An origin that is not running (a held port: connections are refused).
    pub fn dead(name: &str) -> Origin {
        let served = Served::new();
        Origin {
            port: served.port,
            name: name.to_string(),
            served,
        }
    }

    /// (Re)start on the same port.
    pub fn restart(&mut self) {
        let addr = format!("127.0.0.1:{}", self.port);
        let mut cmd = Command::new(BIN);
        cmd.args(["demo-origin", "--listen", &addr, "--name", &self.name]);
        self.served
            .spawn(&mut cmd, &format!("origin {}", self.name));
    }

    /// Kill it (connections to its port are then refused).
    pub fn stop(&mut self) {
        self.served.stop();
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

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
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("proxy.log"))
            .expect("log file");
        let child = Command::new(BIN)
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

/// An upgrade-capable origin run by the test: answers the upgrade to `/ws` with 101, then
/// echoes 5-byte messages. Any other connection (a stray one must not take the test's
/// place) gets a 404.
pub struct UpgradeOrigin {
    pub port: u16,
    heads: std::sync::mpsc::Receiver<String>,
}

impl UpgradeOrigin {
    pub fn start() -> UpgradeOrigin {
        use std::io::{BufRead, BufReader};
        let listener = listener();
        let port = listener.local_addr().unwrap().port();
        let (heads, upgraded) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let heads = heads.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        match reader.read_line(&mut line) {
                            Ok(n) if n > 0 && line != "\r\n" => head.push_str(&line),
                            _ => break,
                        }
                    }
                    let mut s = stream;
                    if !head.starts_with("GET /ws ") {
                        let _ = s.write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                        return;
                    }
                    if s
                        .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                        .is_err()
                    {
                        return;
                    }
                    let _ = heads.send(head);
                    let mut buf = [0u8; 5];
                    while reader.read_exact(&mut buf).is_ok() {
                        if s.write_all(&buf).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        UpgradeOrigin {
            port,
            heads: upgraded,
        }
    }

    /// Tenant `t` with a `/ws` route to this origin.
    pub fn config(&self) -> String {
        format!(
            "tenants: [{{id: t, name: T, subdomain: t}}]\norigins: [{{id: o, tenant_id: t, targets: [{{url: \"http://127.0.0.1:{}\"}}]}}]\nroutes: [{{id: ws, tenant_id: t, path_pattern: \"/ws\", origin_id: o}}]\n",
            self.port
        )
    }

    /// Send `msg` (5 bytes) on an upgraded connection and expect it back.
    pub fn echo(c: &mut TcpStream, reader: &mut std::io::BufReader<TcpStream>, msg: &[u8; 5]) {
        c.write_all(msg).unwrap();
        let mut echo = [0u8; 5];
        reader.read_exact(&mut echo).expect("the echo");
        assert_eq!(&echo, msg);
    }

    /// The next upgrade request the origin took, as it saw it (lower case).
    pub fn upgraded_head(&self) -> String {
        self.heads
            .recv_timeout(Duration::from_secs(10))
            .expect("the origin saw an upgrade")
            .to_ascii_lowercase()
    }
}

/// Open a WebSocket upgrade to `/ws` through the proxy on `port`; returns the connection
/// and a reader positioned after the 101's head.
pub fn upgrade(port: u16) -> (TcpStream, std::io::BufReader<TcpStream>) {
    use std::io::BufRead;
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(
        b"GET /ws HTTP/1.1\r\nHost: t.test.local\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut reader = std::io::BufReader::new(c.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    (c, reader)
}

/// A parsed HTTP/1.1 response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// First value of a header (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The `X-Origin` of the demo origin that answered.
    pub fn origin(&self) -> String {
        self.header("x-origin").unwrap_or("-").to_string()
    }

    /// Assert the gateway's JSON error shape with `status` and `code`; returns the body.
    pub fn assert_error(&self, status: u16, code: &str) -> serde_json::Value {
        assert_eq!(self.status, status, "body: {}", self.text());
        let v = self.json();
        assert_eq!(v["error"]["code"], code, "body: {v}");
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        let rid = v["error"]["request_id"].as_str().expect("request_id");
        assert!(!rid.is_empty());
        assert_eq!(self.header("x-request-id"), Some(rid));
        assert_eq!(self.header("content-type"), Some("application/json"));
        v
    }
}

/// Send one request with `Connection: close` and read the whole response.
pub fn request(
    port: u16,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(port, method, host, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} http://{host}{path} on port {port}: {e}"))
}

/// Like [`request`], returning errors instead of panicking.
pub fn try_request(
    port: u16,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    let bytes = raw_exchange(port, &raw)?;
    parse_response(&bytes, method == "HEAD").ok_or_else(|| {
        std::io::Error::other(format!(
            "unparsable response: {:?}",
            String::from_utf8_lossy(&bytes)
        ))
    })
}

/// Write raw bytes and read until the server closes (or 10 s pass).
pub fn raw_exchange(port: u16, raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(raw)?;
    let mut out = Vec::new();
    read_until_close(&mut s, &mut out)?;
    Ok(out)
}

/// Append what `s` sends until it closes (a reset after some bytes counts as closing).
fn read_until_close(s: &mut TcpStream, out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !out.is_empty() => {
                return Ok(())
            }
            Err(e) => return Err(e),
        }
    }
}

/// Run `vantage-proxy --check` on `yaml`: (valid, stderr).
pub fn check_config(yaml: &str) -> (bool, String) {
    let dir = temp_dir("check");
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).expect("write config");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .output()
        .expect("vantage-proxy --check");
    let _ = std::fs::remove_dir_all(dir);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A connection to `port` from the loopback address `from` (every 127.0.0.0/8 address is
/// this machine: tests play distinct clients with them).
pub fn connect_from(from: [u8; 4], port: u16) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&std::net::SocketAddr::from((from, 0)).into())?;
    s.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    Ok(s.into())
}

/// Send `raw` (from a thread of its own, so a server that answers before it has read it all
/// is heard) and read until the server closes (or 10 s pass).
pub fn exchange_while_sending(port: u16, raw: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().expect("clone");
    let raw = raw.to_vec();
    let writer = std::thread::spawn(move || {
        // The server may close before taking it all: that is the point.
        let _ = w.write_all(&raw);
    });
    let mut out = Vec::new();
    let _ = read_until_close(&mut s, &mut out);
    let _ = writer.join();
    out
}

/// Parse one response (Content-Length, chunked, or until close).
pub fn parse_response(bytes: &[u8], head_only: bool) -> Option<Response> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &bytes[end + 4..];
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let body = if head_only {
        Vec::new()
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut out = Vec::new();
        let mut r = rest;
        loop {
            let nl = r.windows(2).position(|w| w == b"\r\n")?;
            let size = usize::from_str_radix(
                std::str::from_utf8(&r[..nl])
                    .ok()?
                    .split(';')
                    .next()?
                    .trim(),
                16,
            )
            .ok()?;
            r = &r[nl + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(r.get(..size)?);
            r = r.get(size + 2..)?;
        }
        out
    } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        rest.get(..len)?.to_vec()
    } else {
        rest.to_vec()
    };
    Some(Response {
        status,
        headers,
        body,
    })
}

/// Count responses per `X-Origin`.
pub fn tally(
    responses: impl IntoIterator<Item = Response>,
) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for r in responses {
        assert_eq!(r.status, 200, "{}", r.text());
        *m.entry(r.origin()).or_insert(0) += 1;
    }
    m
}

/// A private redis-server on a free loopback port (never the machine's shared one).
pub struct Redis {
    pub port: u16,
    served: Served,
}

impl Redis {
    pub fn start() -> Redis {
        let served = Served::new();
        let mut r = Redis {
            port: served.port,
            served,
        };
        r.restart();
        r
    }

    /// (Re)start on the same port, empty.
    pub fn restart(&mut self) {
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        self.served
            .spawn(&mut cmd, "redis-server (scripts/test.sh installs it)");
    }

    pub fn stop(&mut self) {
        self.served.stop();
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Run redis-cli against this server.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

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

/// A database of the test's own on a Postgres server, dropped at the end.
pub struct Database {
    pub name: String,
    pub port: u16,
}

impl Database {
    /// On the machine's shared Postgres (127.0.0.1:5432; scripts/test.sh starts it).
    pub fn shared() -> Database {
        Self::on(5432)
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
        psql(port, "postgres", &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("create database on {port} (is Postgres running?): {e}"));
        Database { name, port }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{}", self.port, self.name)
    }

    pub fn sql(&self, sql: &str) -> String {
        psql(self.port, &self.name, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Apply the schema with `vantage-admin migrate`.
    pub fn migrate(&self) {
        let out = Command::new(admin_bin())
            .arg("migrate")
            .env("DATABASE_URL", self.url())
            .output()
            .expect("vantage-admin migrate");
        assert!(
            out.status.success(),
            "migrate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = psql(
            self.port,
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// The `vantage-admin` binary (built beside `vantage-proxy` by `cargo test --workspace`;
/// built here when a narrower run did not).
pub fn admin_bin() -> PathBuf {
    let path = Path::new(BIN).with_file_name("vantage-admin");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", "vantage-admin"])
            .status()
            .expect("cargo build -p vantage-admin")
            .success();
        assert!(ok && path.exists(), "vantage-admin not built at {path:?}");
    }
    path
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

/// A running `vantage-admin serve`.
pub struct Admin {
    pub port: u16,
    pub token: String,
    child: Child,
    pub log: PathBuf,
}

impl Admin {
    /// Serve over `db` (already migrated), announcing on `redis_url` with `secret`.
    pub fn start(db: &Database, redis_url: &str, secret: &str) -> Admin {
        let env = |c: &mut Command| {
            c.env("DATABASE_URL", db.url())
                .env("REDIS_URL", redis_url)
                .env("VANTAGE_NOTIFY_SECRET", secret);
        };
        let mut c = Command::new(admin_bin());
        c.args(["create-token", "--role", "superadmin", "--name", "tests"]);
        env(&mut c);
        let out = c.output().expect("create-token");
        assert!(
            out.status.success(),
            "create-token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .find(|w| w.len() >= 20)
            .expect("a token on stdout")
            .to_string();
        let log = temp_dir("admin").join("admin.log");
        let file = std::fs::File::create(&log).expect("admin log");
        let mut c = Command::new(admin_bin());
        // Port 0: the admin binds a free port itself and prints it.
        c.args(["serve", "--listen", "127.0.0.1:0"]);
        env(&mut c);
        let child = c
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("spawn vantage-admin");
        let port = wait_for("vantage-admin to print its address", 30, || {
            std::fs::read_to_string(&log).ok()?.lines().find_map(|l| {
                l.strip_prefix("vantage-admin listening on ")?
                    .rsplit(':')
                    .next()?
                    .trim()
                    .parse::<u16>()
                    .ok()
            })
        });
        wait_for("vantage-admin", 30, || port_open(port).then_some(()));
        Admin {
            port,
            token,
            child,
            log,
        }
    }

    /// A JSON request with the admin token.
    pub fn call(&self, method: &str, path: &str, body: &serde_json::Value) -> Response {
        let auth = format!("Bearer {}", self.token);
        let body = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        request(
            self.port,
            method,
            "admin",
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            &body,
        )
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}
