//! The connection layer in front of the proxy: it owns each client connection from accept to
//! close and hands Pingora one request head at a time.
//!
//! - [`admission`]: caps on open connections, overall and per client address;
//! - [`head`]: the whole request head must arrive by a deadline, and heads Pingora would
//!   refuse with its bare `400` get the gateway's JSON error instead;
//! - here: the HTTP/1 keep-alive loop (idle timeout between requests, body and send
//!   timeouts on each request), and HTTP/2 (ALPN or prior knowledge) handed to Pingora whole.
//!
//! Pingora supports this shape: an [`HttpProxy`] driven by the application's own accept loop
//! through `process_new_http` (see `HttpProxy::new`).

pub mod admission;
pub mod head;

use crate::errors::{self, Reply};
use crate::gateway::Gateway;
use crate::snapshot::Snapshot;
use crate::telemetry::metrics::METRICS;
use admission::{Admission, Refusal};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use head::{Head, HeadLimits};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vantage_model::ClientLimits;

/// Timeouts and sizes applied to every client connection.
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub send_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub head: HeadLimits,
}

impl EdgeLimits {
    /// From the server settings (`max_header_bytes`/`max_headers` bound the whole head).
    pub fn new(c: &ClientLimits, max_header_bytes: usize, max_headers: usize) -> EdgeLimits {
        EdgeLimits {
            header_timeout: Duration::from_millis(c.header_timeout_ms),
            body_timeout: Duration::from_millis(c.body_timeout_ms),
            send_timeout: Duration::from_millis(c.send_timeout_ms),
            keepalive_timeout: Duration::from_millis(c.keepalive_timeout_ms),
            head: HeadLimits {
                max_uri_bytes: c.max_uri_bytes,
                // Request line, names, values, and ": " plus CRLF per field.
                max_head_bytes: c.max_uri_bytes + max_header_bytes + 4 * max_headers + 128,
            },
        }
    }
}

/// The listening application: the proxy behind the connection layer.
pub struct Edge {
    proxy: Arc<HttpProxy<Gateway>>,
    limits: EdgeLimits,
    admission: Admission,
    /// For the balancers (`trusted_proxies`) that are exempt from the per-address cap.
    state: Arc<ArcSwap<Snapshot>>,
    h2c: bool,
}

impl Edge {
    pub fn new(
        proxy: HttpProxy<Gateway>,
        limits: &ClientLimits,
        edge: EdgeLimits,
        state: Arc<ArcSwap<Snapshot>>,
    ) -> Edge {
        let h2c = proxy.server_options.as_ref().is_some_and(|o| o.h2c);
        Edge {
            proxy: Arc::new(proxy),
            limits: edge,
            admission: Admission::new(limits.max_connections, limits.max_connections_per_ip),
            state,
            h2c,
        }
    }

    /// The client counted against the per-address cap (balancers are not): its IPv4
    /// address, or its IPv6 /64 (one IPv6 client commonly holds a whole /64).
    fn counted_address(&self, stream: &Stream) -> Option<IpAddr> {
        let digest = stream.get_socket_digest()?;
        let ip = match digest.peer_addr()? {
            SocketAddr::Inet(a) => a.ip().to_canonical(),
            SocketAddr::Unix(_) => return None,
        };
        let trusted = self
            .state
            .load()
            .trusted_proxies
            .iter()
            .any(|n| n.contains(&ip));
        (!trusted).then_some(admission::client_key(ip))
    }

    /// Does a plain connection open with the HTTP/2 preface (h2c with prior knowledge)?
    /// `None`: the client did not send enough within the head deadline (or went away).
    async fn starts_h2c(&self, stream: &mut Stream) -> Option<bool> {
        const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        let mut buf = [0u8; PREFACE.len()];
        match tokio::time::timeout(self.limits.header_timeout, stream.try_peek(&mut buf)).await {
            Ok(Ok(true)) => Some(buf == PREFACE),
            Ok(Ok(false)) => Some(false),
            Ok(Err(_)) | Err(_) => None,
        }
    }

    /// HTTP/1: one request head at a time, with the idle timeout between requests.
    async fn serve_h1(&self, mut stream: Stream, shutdown: &ShutdownWatch) {
        let l = self.limits;
        let mut kept: Option<HttpPersistentSettings> = None;
        let mut first = true;
        loop {
            let head = if first {
                head::read(
                    &mut stream,
                    l.header_timeout,
                    l.header_timeout,
                    true,
                    l.head,
                )
                .await
            } else {
                if *shutdown.borrow() {
                    return;
                }
                let mut stop = shutdown.clone();
                tokio::select! {
                    h = head::read(&mut stream, l.keepalive_timeout, l.header_timeout, false, l.head) => h,
                    // Idle kept-alive connections close at shutdown, as in Pingora.
                    _ = stop.wait_for(|down| *down) => return,
                }
            };
            let buf = match head {
                Head::Ready(buf) => buf,
                Head::Closed => return,
                Head::Refuse { reply, head_only } => {
                    METRICS.refused.with_label_values(&[reply.code]).inc();
                    refuse(stream, &reply, head_only).await;
                    return;
                }
            };
            let mut session = ServerSession::new_http1(stream);
            match kept.take() {
                Some(settings) => settings.apply_to_session(&mut session),
                None => session.set_keepalive(Some(l.keepalive_timeout.as_secs().max(1))),
            }
            if *shutdown.borrow() {
                session.set_keepalive(None);
            }
            session.set_pipelined_prefix(buf);
            session.set_read_timeout(Some(l.body_timeout));
            session.set_write_timeout(Some(l.send_timeout));
            let Some(reused) = self.proxy.process_new_http(session, shutdown).await else {
                return;
            };
            (stream, kept) = reused.consume();
            first = false;
        }
    }
}

/// Make room for `max_connections` client connections: each takes a descriptor and may hold
/// an upstream one. The soft `RLIMIT_NOFILE` is raised towards the hard limit; when that
/// does not even cover the client connections, the cap cannot protect the process and a
/// warning says so.
pub fn raise_fd_limit(max_connections: usize) {
    let want = (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(1024);
    let needed = (max_connections as u64).saturating_add(1024);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed to it.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 || lim.rlim_cur >= want {
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: want.min(lim.rlim_max),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit only reads the struct passed to it.
    let ok = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0;
    let now = if ok { raised.rlim_cur } else { lim.rlim_cur };
    if now < needed {
        tracing::warn!(
            max_connections,
            fd_limit = now,
            "the file descriptor limit is below what server.client_limits.max_connections needs; lower max_connections or raise the limit (LimitNOFILE)"
        );
    }
}

/// Answer `reply` on a connection Pingora never saw, then close it without resetting what
/// the client may still be sending (a bounded drain, so the answer is read).
async fn refuse(mut stream: Stream, reply: &Reply, head_only: bool) {
    let id = errors::new_request_id();
    let bytes = errors::raw(reply, id.to_str().unwrap_or("-"), head_only);
    let budget = Duration::from_secs(1);
    let _ = tokio::time::timeout(budget, async {
        stream.write_all(&bytes).await?;
        stream.flush().await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut drained = 0usize;
        while drained < 256 * 1024 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
}

#[async_trait]
impl ServerApp for Edge {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let h2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        let _ticket = match self.admission.admit(self.counted_address(&stream)) {
            Ok(t) => t,
            Err(refusal) => {
                METRICS
                    .connections_refused
                    .with_label_values(&[refusal.label()])
                    .inc();
                if !h2 {
                    let reply = match refusal {
                        Refusal::Process => Reply::new(
                            503,
                            "too_many_connections",
                            "the gateway holds as many connections as it may; try again shortly",
                        ),
                        Refusal::Address => Reply::new(
                            429,
                            "too_many_connections",
                            "too many open connections from this address",
                        ),
                    }
                    .with_header("retry-after", "1")
                    .closing();
                    refuse(stream, &reply, false).await;
                }
                return None;
            }
        };
        let h2c = if self.h2c && stream.get_ssl_digest().is_none() {
            match self.starts_h2c(&mut stream).await {
                Some(h2c) => h2c,
                // The bytes peeked so far are gone: nothing sensible can follow.
                None => {
                    METRICS.client_timeouts.with_label_values(&["header"]).inc();
                    return None;
                }
            }
        } else {
            false
        };
        if h2 || h2c {
            return ServerApp::process_new(&self.proxy, stream, shutdown).await;
        }
        self.serve_h1(stream, shutdown).await;
        None
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}
