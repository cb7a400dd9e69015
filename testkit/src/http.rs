//! A raw HTTP/1.1 client over TCP: one request per connection (`Connection: close`), the
//! whole response read until the server closes, and parsed into a [`Response`].

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

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

/// Clients sending GETs in a loop until stopped (each at most `max_each` requests):
/// the load under which a test changes something that must fail no request.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ok: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    failed: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// `workers` threads sending `GET path` with `Host: host` to `port`.
    pub fn start(port: u16, host: &str, path: &str, workers: usize, max_each: usize) -> Load {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ok = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let failed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let workers = (0..workers)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                let (host, path) = (host.to_string(), path.to_string());
                std::thread::spawn(move || {
                    for _ in 0..max_each {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        match try_request(port, "GET", &host, &path, &[], b"") {
                            Ok(r) if r.status == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => {
                                failed
                                    .lock()
                                    .unwrap()
                                    .push(format!("{} {}", r.status, r.text()))
                            }
                            Err(e) => failed.lock().unwrap().push(e.to_string()),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            workers,
        }
    }

    /// Stop the clients; the number of 200s and the failures (other statuses, errors).
    pub fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in self.workers {
            w.join().expect("a load worker panicked");
        }
        let failed = std::mem::take(&mut *self.failed.lock().unwrap());
        (self.ok.load(std::sync::atomic::Ordering::Relaxed), failed)
    }
}
