//! What the proxy tells about each request: Prometheus [`metrics`] (bounded per-tenant
//! families and each route's resolved [`series`]), W3C [`trace`] context
//! and [`otel`] span export, [`request_log`] rows and [`usage`] metering in Postgres, and
//! the JSON [`access_log`]; apart from requests, what the health checks see of each origin
//! pool ([`pool_health`] reports in Postgres) and what this proxy serves ([`fleet`]
//! heartbeats in Postgres).
//!
//! The gateway builds one [`Summary`] when a request ends and hands it to every [`Sink`]
//! the server settings enable. A new consumer of per-request facts is one more `Sink`
//! registered in [`Telemetry::new`].

pub mod access_log;
pub mod fleet;
pub mod metrics;
pub mod otel;
pub mod pool_health;
pub mod request_log;
pub mod series;
pub mod trace;
pub mod usage;

use crate::auth::Identity;
use http::HeaderValue;
use otel::{Otel, RequestSpans};
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use request_log::RequestLogger;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use trace::TraceContext;

/// The shutdown sequence's handle on a background writer (request logs, usage): tells it
/// to write what it holds and stop, and waits until it has.
pub struct Finish {
    stop: watch::Sender<bool>,
    done: watch::Receiver<bool>,
}

impl Finish {
    /// Tell the writer to write what it holds and stop; returns when it has.
    pub async fn finish(mut self) {
        let _ = self.stop.send(true);
        let _ = self.done.wait_for(|done| *done).await;
    }
}

/// The writer's side of a [`Finish`].
pub struct FinishSignal {
    /// Becomes true when the writer is to write what it holds and stop.
    pub stop: watch::Receiver<bool>,
    done: watch::Sender<bool>,
}

impl FinishSignal {
    /// The writer has written what it held.
    pub fn done(&self) {
        let _ = self.done.send(true);
    }
}

/// This process's name in the reports it writes to Postgres (usage batches, pool health,
/// fleet heartbeats): `<hostname>:<pid>`.
pub fn proxy_name() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

/// The machine's host name (empty when unknown).
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Run one statement of a background report over `pool`, bounded by `timeout`; the rows
/// changed, or why not.
pub async fn execute_bounded(
    pool: &deadpool_postgres::Pool,
    timeout: Duration,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<u64, String> {
    let run = async {
        let client = pool.get().await.map_err(|e| e.to_string())?;
        let statement = client
            .prepare_cached(sql)
            .await
            .map_err(|e| e.to_string())?;
        client
            .execute(&statement, params)
            .await
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// A connected [`Finish`] and [`FinishSignal`].
pub fn finish_pair() -> (Finish, FinishSignal) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(false);
    (
        Finish {
            stop: stop_tx,
            done: done_rx,
        },
        FinishSignal {
            stop: stop_rx,
            done: done_tx,
        },
    )
}

/// One finished request, as every sink sees it. Built once, borrowed from the request's
/// context and session; what only some sinks need (the host, the peer, byte counts) is
/// read when a sink asks for it.
pub struct Summary<'a> {
    pub session: &'a Session,
    pub request_id: &'a str,
    pub trace: Option<&'a TraceContext>,
    /// The status sent to the client; 0 when no response was written.
    pub status: u16,
    pub tenant: Option<&'a str>,
    pub route: Option<&'a str>,
    /// The route's origin pool.
    pub origin: Option<&'a str>,
    /// The target of the last upstream attempt.
    pub upstream: Option<&'a str>,
    pub api_key_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
    /// The client behind trusted balancers, when a policy needed it resolved.
    pub client: Option<IpAddr>,
    /// `X-Cache` of the response, on caching routes.
    pub cache: Option<&'static str>,
    /// From the first byte of the request to the end of the response.
    pub duration: Duration,
    /// From the first upstream attempt to the end of the response.
    pub upstream_duration: Option<Duration>,
    /// Why the request failed, when it did.
    pub error: Option<&'a pingora::Error>,
    /// The tenant and route as shared ids (for sinks that keep them).
    pub tenant_id: Option<&'a Arc<str>>,
    pub route_id: Option<&'a Arc<str>>,
    /// The metric series of the route, resolved when the request was routed.
    pub series: Option<&'a series::RouteSeries>,
    /// The verified API key or JWT.
    pub identity: Option<&'a Identity>,
    /// Quota units, overage and violations of the request.
    pub metering: &'a usage::Metering,
}

impl Summary<'_> {
    /// The client's request.
    pub fn req(&self) -> &RequestHeader {
        self.session.req_header()
    }

    /// The `Host` (or absolute-form authority) as the client sent it.
    pub fn host(&self) -> Option<&str> {
        crate::snapshot::request_host(self.req())
    }

    /// The TCP peer.
    pub fn peer(&self) -> Option<IpAddr> {
        crate::gateway::peer(self.session)
    }

    /// Response body bytes sent to the client.
    pub fn bytes_sent(&self) -> usize {
        self.session.body_bytes_sent()
    }

    /// The request waited for another request to fill the cache.
    pub fn cache_lock_waited(&self) -> bool {
        self.session.cache.lock_duration().is_some()
    }
}

/// A consumer of request summaries. Runs on the request path at its end: it must not
/// block (queue, count, or log and return).
pub trait Sink: Send + Sync {
    fn record(&self, summary: &Summary<'_>);
}

/// The per-request telemetry of the process: trace context at the start, the sinks at
/// the end.
pub struct Telemetry {
    sinks: Vec<Box<dyn Sink>>,
    otel: Option<&'static Otel>,
}

impl Telemetry {
    /// Metrics always; the access log with `server.access_log`; request logs, usage
    /// metering and OTel export when the server started them.
    pub fn new(
        access_log: bool,
        request_logs: Option<RequestLogger>,
        meter: Option<usage::Meter>,
        otel: Option<&'static Otel>,
    ) -> Telemetry {
        let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(metrics::RequestMetrics)];
        if let Some(logger) = request_logs {
            sinks.push(Box::new(logger));
        }
        if let Some(meter) = meter {
            sinks.push(Box::new(meter));
        }
        if access_log {
            sinks.push(Box::new(access_log::AccessLog));
        }
        Telemetry { sinks, otel }
    }

    /// The trace context of a request that began at `started`, and its spans when spans
    /// are exported (boxed: the request context stays small when they are not).
    pub fn start(
        &self,
        traceparent: Option<&HeaderValue>,
        started: Instant,
    ) -> (TraceContext, Option<Box<RequestSpans>>) {
        match self.otel {
            Some(otel) => {
                let (spans, trace) = otel.start(traceparent, started);
                (trace, Some(Box::new(spans)))
            }
            None => (TraceContext::from_request(traceparent), None),
        }
    }

    /// Hand the finished request to every sink, and end its spans.
    pub fn finish(&self, summary: &Summary<'_>, spans: Option<Box<RequestSpans>>) {
        for sink in &self.sinks {
            sink.record(summary);
        }
        if let (Some(otel), Some(spans)) = (self.otel, spans) {
            otel.finish(*spans, summary);
        }
    }
}
