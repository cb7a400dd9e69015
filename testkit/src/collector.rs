//! An OTLP/HTTP collector stand-in: accepts the posts to `/v1/traces` and keeps their
//! bodies (protobuf) for the test to search.

use crate::ports::listener;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

/// Accepts OTLP/HTTP posts on a fresh loopback port and keeps their bodies.
pub struct Collector {
    pub port: u16,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Collector {
    pub fn start() -> Collector {
        let listener = listener();
        let port = listener.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let keep = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let keep = keep.clone();
                std::thread::spawn(move || loop {
                    // One request: head, then Content-Length bytes.
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match s.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    let len = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    let mut body = vec![0u8; len];
                    if s.read_exact(&mut body).is_err() {
                        return;
                    }
                    keep.lock().unwrap().push(body);
                    let _ = s.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
                    );
                });
            }
        });
        Collector { port, bodies }
    }

    /// The traces endpoint to configure (`http://127.0.0.1:PORT/v1/traces`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/v1/traces", self.port)
    }

    /// Every body received so far, concatenated.
    pub fn received(&self) -> Vec<u8> {
        self.bodies.lock().unwrap().concat()
    }
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
