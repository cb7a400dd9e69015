//! A webhook receiver on loopback: records every request (head, body, time) and answers as
//! the test scripts it — statuses in turn, a redirect, a connection closed unanswered, or
//! holding a request unanswered until released or until the client goes away (a sender
//! killed mid-request).

use crate::ports::listener;
use crate::wait::wait_for;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// How the receiver answers one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// This status, with a short text body.
    Status(u16),
    /// `302 Found` with this `location`.
    Redirect(String),
    /// No answer: the request is held until [`Receiver::release`] or until the client goes
    /// away.
    Hold,
    /// No answer: the connection is closed as soon as the request is read.
    Close,
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// 0 for the first request.
    pub index: usize,
    pub method: String,
    /// Path and query. Example: `/hook?x=1`.
    pub path: String,
    /// Names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When its head and body were read.
    pub at: SystemTime,
    /// The status it was answered with (`None`: not answered, e.g. held).
    pub answered: Option<u16>,
    /// The client closed the connection while the request was held.
    pub client_gone: bool,
}

impl Received {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "request {} body is not JSON ({e}): {}",
                self.index,
                self.text()
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

struct State {
    requests: Vec<Received>,
    script: std::collections::VecDeque<Reply>,
    then: Reply,
    /// Held requests answer with this once released.
    released: Option<u16>,
}

/// The receiver; it stops accepting when dropped.
pub struct Receiver {
    pub port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    /// A receiver that answers `200` to everything.
    pub fn start() -> Receiver {
        Receiver::scripted([], Reply::Status(200))
    }

    /// A receiver that answers the requests in turn with `script`, then with `then`.
    pub fn scripted(script: impl IntoIterator<Item = Reply>, then: Reply) -> Receiver {
        let l = listener();
        let port = l.local_addr().expect("receiver address").port();
        let state = Arc::new(Mutex::new(State {
            requests: Vec::new(),
            script: script.into_iter().collect(),
            then,
            released: None,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let state = state.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                for conn in l.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(s) = conn else { continue };
                    let state = state.clone();
                    std::thread::spawn(move || serve(s, &state));
                }
            });
        }
        Receiver { port, state, stop }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn count(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }

    /// Wait (up to `secs`) until `done` holds for the requests so far; returns them.
    pub fn wait_until(
        &self,
        what: &str,
        secs: u64,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        wait_for(what, secs, || {
            let r = self.requests();
            done(&r).then_some(r)
        })
    }

    /// Wait (up to `secs`) for at least `n` requests; returns all so far.
    pub fn wait_for_requests(&self, n: usize, secs: u64) -> Vec<Received> {
        self.wait_until(&format!("{n} requests at the receiver"), secs, |r| {
            r.len() >= n
        })
    }

    /// Answer every held request (and any held later) with `status`.
    pub fn release(&self, status: u16) {
        self.state.lock().unwrap().released = Some(status);
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Read one request, record it, answer it as scripted.
fn serve(s: TcpStream, state: &Mutex<State>) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(read_half) = s.try_clone() else { return };
    let mut r = BufReader::new(read_half);
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        match read_chunked(&mut r) {
            Some(b) => b,
            None => return,
        }
    } else {
        let len = header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut b = vec![0u8; len];
        if r.read_exact(&mut b).is_err() {
            return;
        }
        b
    };
    let (index, reply) = {
        let mut st = state.lock().unwrap();
        let reply = st.script.pop_front().unwrap_or_else(|| st.then.clone());
        let index = st.requests.len();
        st.requests.push(Received {
            index,
            method,
            path,
            headers,
            body,
            at: SystemTime::now(),
            answered: None,
            client_gone: false,
        });
        (index, reply)
    };
    let (status, extra) = match reply {
        Reply::Status(code) => (code, String::new()),
        Reply::Redirect(to) => (302, format!("location: {to}\r\n")),
        Reply::Close => {
            let _ = s.shutdown(Shutdown::Both);
            return;
        }
        Reply::Hold => match hold(&s, state) {
            Some(code) => (code, String::new()),
            None => {
                state.lock().unwrap().requests[index].client_gone = true;
                return;
            }
        },
    };
    let text = format!("status {status}");
    let answer = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{text}",
        reason(status),
        text.len()
    );
    let mut w = &s;
    if w.write_all(answer.as_bytes()).is_ok() && w.flush().is_ok() {
        state.lock().unwrap().requests[index].answered = Some(status);
    }
    let _ = s.shutdown(Shutdown::Write);
}

/// Hold the request: the release status, or `None` when the client went away first.
fn hold(s: &TcpStream, state: &Mutex<State>) -> Option<u16> {
    let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
    let mut probe = [0u8; 1];
    loop {
        if let Some(code) = state.lock().unwrap().released {
            return Some(code);
        }
        match s.peek(&mut probe) {
            // The client closed its side (or sent something unexpected: treat alike).
            Ok(_) => return None,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return None,
        }
    }
}

fn read_chunked(r: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        r.read_line(&mut size).ok()?;
        let size = usize::from_str_radix(size.trim().split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            let mut end = String::new();
            r.read_line(&mut end).ok()?;
            return Some(body);
        }
        let mut chunk = vec![0u8; size + 2];
        r.read_exact(&mut chunk).ok()?;
        body.extend_from_slice(&chunk[..size]);
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        302 => "Found",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
