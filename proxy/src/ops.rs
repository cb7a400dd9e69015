//! The ops listener: `/metrics`, `/healthz`, `/readyz`, `/config/version`, and
//! `POST /cache/purge` (with the ops token).

use crate::cache::Purges;
use crate::limits::redis::RedisLimiter;
use crate::snapshot::Snapshot;
use crate::source::PgSource;
use crate::telemetry::metrics;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Serves operational endpoints on a separate port.
pub struct Ops {
    state: Arc<ArcSwap<Snapshot>>,
    redis: Option<Arc<RedisLimiter>>,
    purges: &'static Purges,
    /// SHA-256 of the ops token.
    token_hash: Option<[u8; 32]>,
    /// The Postgres configuration source, with `source: postgres`.
    pg: Option<Arc<PgSource>>,
}

impl Ops {
    /// Ops endpoints over the shared snapshot (and the Redis connection, when configured).
    pub fn new(
        state: Arc<ArcSwap<Snapshot>>,
        redis: Option<Arc<RedisLimiter>>,
        purges: &'static Purges,
        token: Option<String>,
        pg: Option<Arc<PgSource>>,
    ) -> Ops {
        Ops {
            state,
            redis,
            purges,
            token_hash: token.map(|t| Sha256::digest(t.as_bytes()).into()),
            pg,
        }
    }

    /// The refusal to send unless the request's bearer token is the ops token. (Compared as digests, so the time taken
    /// says nothing about the token.)
    fn refusal(&self, session: &ServerSession) -> Option<Response<Vec<u8>>> {
        let Some(expected) = self.token_hash else {
            return Some(error(
                403,
                "purge_disabled",
                "no server.ops_token is configured",
            ));
        };
        let given = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| <[u8; 32]>::from(Sha256::digest(t.trim().as_bytes())));
        if given == Some(expected) {
            None
        } else {
            Some(error(401, "unauthorized", "a valid ops token is required"))
        }
    }

    async fn purge(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        if session.req_header().method != http::Method::POST {
            return error(405, "method_not_allowed", "use POST");
        }
        if let Some(r) = self.refusal(session) {
            return r;
        }
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY {
                        return error(413, "body_too_large", "the body is over 64 KiB");
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return error(400, "bad_request", format!("reading the body: {e}")),
            }
        }
        let req: PurgeRequest = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return error(
                    400,
                    "bad_request",
                    format!("expected {{\"tenant\": ID, \"url\": optional path}}: {e}"),
                )
            }
        };
        if self.state.load().tenant(&req.tenant).is_none() {
            return error(404, "unknown_tenant", format!("no tenant '{}'", req.tenant));
        }
        let result = match &req.url {
            Some(url) => {
                let Ok(uri) = url.parse::<http::Uri>() else {
                    return error(400, "bad_request", format!("'{url}' is not a URL path"));
                };
                if !uri.path().starts_with('/') {
                    return error(400, "bad_request", "url must be a path starting with '/'");
                }
                self.purges
                    .purge_url(&req.tenant, uri.path(), uri.query())
                    .await
                    .map(|fleet| serde_json::json!({"purged": "url", "tenant": req.tenant, "url": url, "fleet": fleet}))
            }
            None => self.purges.purge_tenant(&req.tenant).await.map(|(generation, fleet)| {
                serde_json::json!({"purged": "tenant", "tenant": req.tenant, "generation": generation, "fleet": fleet})
            }),
        };
        match result {
            Ok(v) => json(200, v),
            Err(e) => error(
                502,
                "fleet_purge_failed",
                format!("purged on this proxy, but the fleet could not be told: {e}"),
            ),
        }
    }
}

/// Largest purge request body.
const MAX_BODY: usize = 64 * 1024;

/// `POST /cache/purge` body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    tenant: String,
    /// A path, with or without a query; absent purges the whole tenant.
    url: Option<String>,
}

fn error(status: u16, code: &str, message: impl Into<String>) -> Response<Vec<u8>> {
    let id = uuid::Uuid::new_v4().to_string();
    let mut r = json(
        status,
        serde_json::json!({"error": {"code": code, "message": message.into(), "request_id": id}}),
    );
    if let Ok(v) = http::HeaderValue::from_str(&id) {
        r.headers_mut().insert("x-request-id", v);
    }
    r
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
            // Ready once a configuration is loaded: Redis and Postgres are reported, never
            // required (without them the last configuration keeps being served).
            "/readyz" => json(
                200,
                serde_json::json!({
                    "status": "ready",
                    "config_version": snap.version,
                    "config_source": if self.pg.is_some() { "postgres" } else { "file" },
                    "postgres": self.pg.as_ref().map(|p| if p.is_reachable() { "connected" } else { "unreachable" }),
                    "redis": self.redis.as_ref().map(|r| if r.is_connected() { "connected" } else { "disconnected" }),
                }),
            ),
            "/config/version" => json(
                200,
                serde_json::json!({
                    "version": snap.version,
                    "source": if self.pg.is_some() { "postgres" } else { "file" },
                }),
            ),
            "/cache/purge" => self.purge(session).await,
            _ => error(404, "not_found", format!("no ops endpoint at {path}")),
        }
    }
}
