//! Mirroring: a copy of a share of a route's requests goes to another origin after the
//! client's request is done with. The copy carries the request head as the origin got it
//! (path rewrite and header transforms applied), `X-Vantage-Mirror: 1`, and the body when
//! it fits the bound; its answer is read and discarded. A copy never delays or fails the
//! client's request: it is sent from its own task, under its own timeout, with at most
//! `max_in_flight` copies of the route at once; each copy is counted by how it ended.

use super::{Pool, Selection};
use crate::telemetry::metrics::METRICS;
use bytes::{Bytes, BytesMut};
use http::HeaderName;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::Semaphore;
use vantage_model::Mirror;

/// Marks a copy.
pub static X_VANTAGE_MIRROR: HeaderName = HeaderName::from_static("x-vantage-mirror");

/// Connections to mirror origins (pooled like the proxy's own).
static CONNECTOR: LazyLock<Connector> = LazyLock::new(|| Connector::new(None));

/// A compiled mirror.
pub struct MirrorRt {
    pool: Arc<Pool>,
    /// Requests are copied when a uniform 64-bit draw is below this.
    threshold: u64,
    /// Everything is copied.
    always: bool,
    max_body: usize,
    timeout: Duration,
    slots: Arc<Semaphore>,
}

/// A copy being taken of one request.
pub struct Copy {
    mirror: Arc<MirrorRt>,
    head: Option<RequestHeader>,
    body: BytesMut,
    /// The body went past the bound: the copy is not sent.
    too_large: bool,
}

impl MirrorRt {
    pub fn compile(spec: &Mirror, pool: Arc<Pool>) -> MirrorRt {
        let share = (spec.percent / 100.0).clamp(0.0, 1.0);
        MirrorRt {
            pool,
            threshold: (share * u64::MAX as f64) as u64,
            always: share >= 1.0,
            max_body: spec.max_body_bytes,
            timeout: Duration::from_millis(spec.timeout_ms),
            slots: Arc::new(Semaphore::new(spec.max_in_flight)),
        }
    }

    /// Is this request copied? (drawn at random for its share)
    pub fn take(self: &Arc<Self>) -> Option<Box<Copy>> {
        let copied = self.always || (self.threshold > 0 && fastrand::u64(..) < self.threshold);
        copied.then(|| {
            Box::new(Copy {
                mirror: self.clone(),
                head: None,
                body: BytesMut::new(),
                too_large: false,
            })
        })
    }

    fn count(&self, result: &str) {
        METRICS.mirror.inc(&[&self.pool.id, result]);
    }
}

impl Copy {
    /// The head as the origin is sent it. A retry sends it again and replays the body
    /// through the body filter from its start, so the body taken so far is dropped.
    pub fn head(&mut self, upstream: &RequestHeader) {
        self.head = Some(upstream.clone());
        self.body.clear();
        self.too_large = false;
    }

    /// A piece of the request body.
    pub fn body(&mut self, chunk: &Bytes) {
        if self.too_large {
            return;
        }
        if self.body.len() + chunk.len() > self.mirror.max_body {
            self.too_large = true;
            self.body = BytesMut::new();
        } else {
            self.body.extend_from_slice(chunk);
        }
    }

    /// Send the copy from its own task (when the head was taken: the request reached the
    /// point of going upstream). `body_done`: the client's body was read to its end.
    pub fn send(self: Box<Self>, body_done: bool) {
        let Copy {
            mirror: m,
            head,
            body,
            too_large,
        } = *self;
        let Some(mut head) = head else {
            return;
        };
        if too_large || !body_done {
            m.count("dropped_body");
            return;
        }
        let Ok(permit) = m.slots.clone().try_acquire_owned() else {
            m.count("dropped_busy");
            return;
        };
        let Selection::Target(backend, state) = m.pool.select(b"", &[]) else {
            m.count("dropped_unavailable");
            return;
        };
        let peer = m.pool.peer(&backend, &state);
        if !m.pool.spec.preserve_host {
            let _ = head.insert_header(http::header::HOST, state.host_header.clone());
        }
        let _ = head.insert_header(X_VANTAGE_MIRROR.as_str(), "1");
        let body = body.freeze();
        tokio::spawn(async move {
            let _permit = permit;
            let _inflight = Pool::track(&state);
            let result = tokio::time::timeout(m.timeout, exchange(&peer, head, body)).await;
            m.count(match result {
                Ok(Ok(())) => "sent",
                Ok(Err(e)) => {
                    tracing::debug!(origin = %m.pool.id, "mirror copy failed: {e}");
                    "error"
                }
                Err(_) => "timeout",
            });
        });
    }
}

/// One request and its discarded answer; the connection is pooled again when it can be.
async fn exchange(
    peer: &pingora::upstreams::peer::HttpPeer,
    head: RequestHeader,
    body: Bytes,
) -> pingora::Result<()> {
    let (mut s, _reused) = CONNECTOR.get_http_session(peer).await?;
    s.write_request_header(Box::new(head)).await?;
    if !body.is_empty() {
        s.write_request_body(body, true).await?;
    }
    s.finish_request_body().await?;
    s.read_response_header().await?;
    while s.read_response_body().await?.is_some() {}
    let idle = peer.options.idle_timeout;
    CONNECTOR.release_http_session(s, peer, idle).await;
    Ok(())
}
