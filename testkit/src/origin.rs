//! Origins: the demo origin (`vantage-proxy demo-origin`, answering with its name in
//! `X-Origin` and the request it saw as JSON), and an upgrade-echo origin run in-process.

use crate::bins::{proxy_bin, Served};
use crate::ports::listener;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

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
        let mut cmd = Command::new(proxy_bin());
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

/// An upgrade-capable origin run by the test: answers the upgrade to `/ws` with 101, then
/// echoes 5-byte messages. Any other connection (a stray one must not take the test's
/// place) gets a 404.
pub struct UpgradeOrigin {
    pub port: u16,
    heads: std::sync::mpsc::Receiver<String>,
}

impl UpgradeOrigin {
    pub fn start() -> UpgradeOrigin {
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
    pub fn echo(c: &mut TcpStream, reader: &mut BufReader<TcpStream>, msg: &[u8; 5]) {
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
pub fn upgrade(port: u16) -> (TcpStream, BufReader<TcpStream>) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(
        b"GET /ws HTTP/1.1\r\nHost: t.test.local\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut reader = BufReader::new(c.try_clone().unwrap());
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
