//! A small HTTP origin for the demo and the tests (`--demo-origins`, `demo-origin`).
//!
//! - `GET /healthz` → `ok`
//! - `/status/<code>` → that status
//! - `/delay/<ms>` → waits, then echoes
//! - `/bytes/<n>` → `n` bytes of text (compression demos)
//! - anything else → JSON echo of origin name, method, path, headers and body size
//!
//! Every response carries `X-Origin: <name>`. The JSON echo also has `seq`, this origin's
//! count of echoed requests (tests use it to count what reached the origin). A request header
//! `X-Origin-Set: Name: value` (repeatable) adds that header to the response; when one of them
//! sets an `ETag` that the request's `If-None-Match` names, the answer is `304`.

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One named demo origin.
pub struct DemoOrigin {
    name: String,
    seq: AtomicU64,
}

impl DemoOrigin {
    /// An origin that tells who it is in `X-Origin` and in its JSON.
    pub fn new(name: impl Into<String>) -> DemoOrigin {
        DemoOrigin {
            name: name.into(),
            seq: AtomicU64::new(0),
        }
    }
}

#[async_trait]
impl ServeHttp for DemoOrigin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let mut body_bytes = 0usize;
        while let Ok(Some(chunk)) = session.read_request_body().await {
            body_bytes += chunk.len();
            if body_bytes > 16 << 20 {
                break;
            }
        }
        let req = session.req_header();
        let path = req.uri.path().to_string();
        let mut status = 200u16;
        let mut content_type = "application/json";
        let body = if path == "/healthz" {
            content_type = "text/plain";
            b"ok".to_vec()
        } else if let Some(code) = path.strip_prefix("/status/") {
            status = code
                .parse()
                .ok()
                .filter(|c| (200..600).contains(c))
                .unwrap_or(400);
            format!("{{\"origin\":\"{}\",\"status\":{status}}}", self.name).into_bytes()
        } else if let Some(n) = path.strip_prefix("/bytes/") {
            content_type = "text/plain";
            let n: usize = n.parse().unwrap_or(0).min(16 << 20);
            b"vantage edge demo origin "
                .iter()
                .copied()
                .cycle()
                .take(n)
                .collect()
        } else {
            if let Some(ms) = path.strip_prefix("/delay/") {
                let ms: u64 = ms.parse().unwrap_or(0).min(60_000);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let mut headers = serde_json::Map::new();
            for (name, value) in req.headers.iter() {
                let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
                match headers.get_mut(name.as_str()) {
                    Some(serde_json::Value::String(prev)) => {
                        prev.push_str(", ");
                        prev.push_str(&v);
                    }
                    _ => {
                        headers.insert(name.as_str().to_string(), v.into());
                    }
                }
            }
            serde_json::json!({
                "origin": self.name,
                "seq": self.seq.fetch_add(1, Ordering::Relaxed) + 1,
                "method": req.method.as_str(),
                "path": req.uri.path_and_query().map_or("/", |p| p.as_str()),
                "version": format!("{:?}", req.version),
                "headers": headers,
                "body_bytes": body_bytes,
            })
            .to_string()
            .into_bytes()
        };
        let mut extra = Vec::new();
        for v in req.headers.get_all("x-origin-set") {
            if let Some((n, v)) = v.to_str().ok().and_then(|v| v.split_once(':')) {
                extra.push((n.trim().to_string(), v.trim().to_string()));
            }
        }
        let not_modified = extra.iter().any(|(n, etag)| {
            n.eq_ignore_ascii_case("etag")
                && req
                    .headers
                    .get_all(http::header::IF_NONE_MATCH)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .any(|inm| inm.split(',').any(|t| t.trim() == etag))
        });
        let (status, body) = if not_modified {
            (304, Vec::new())
        } else {
            (status, body)
        };
        let mut resp = Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .header("x-origin", self.name.as_str())
            .header(http::header::SERVER, "vantage-demo-origin");
        if status != 304 {
            resp = resp.header(http::header::CONTENT_LENGTH, body.len());
        }
        for (n, v) in extra {
            resp = resp.header(n, v);
        }
        resp.body(body).unwrap_or_default()
    }
}
