//! The ops listener: `/metrics`, `/healthz`, `/readyz`, `/config/version`.

use crate::limits::redis::RedisLimiter;
use crate::metrics;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

/// Serves operational endpoints on a separate port.
pub struct Ops {
    state: Arc<ArcSwap<Snapshot>>,
    redis: Option<Arc<RedisLimiter>>,
}

impl Ops {
    /// Ops endpoints over the shared snapshot (and the Redis connection, when configured).
    pub fn new(state: Arc<ArcSwap<Snapshot>>, redis: Option<Arc<RedisLimiter>>) -> Ops {
        Ops { state, redis }
    }
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body)
        .unwrap_or_default()
}

fn json(status: u16, v: serde_json::Value) -> Response<Vec<u8>> {
    reply(status, "application/json", v.to_string().into_bytes())
}

#[async_trait]
impl ServeHttp for Ops {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let snap = self.state.load();
        match path.as_str() {
            "/metrics" => reply(200, "text/plain; version=0.0.4", metrics::render()),
            "/healthz" => json(200, serde_json::json!({"status": "ok"})),
            // Ready once a configuration is loaded: Redis is reported, never required.
            "/readyz" => json(
                200,
                serde_json::json!({
                    "status": "ready",
                    "config_version": snap.version,
                    "config_source": "file",
                    "redis": self.redis.as_ref().map(|r| if r.is_connected() { "connected" } else { "disconnected" }),
                }),
            ),
            "/config/version" => json(200, serde_json::json!({"version": snap.version})),
            _ => json(
                404,
                serde_json::json!({"error": {"code": "not_found", "message": format!("no ops endpoint at {path}"), "request_id": ""}}),
            ),
        }
    }
}
