//! What the proxy tells about each request: Prometheus [`metrics`], W3C [`trace`] context
//! and [`otel`] span export, [`request_log`] rows in Postgres and the JSON [`access_log`].
//!
//! The gateway builds one [`Summary`] when a request ends and hands it to every [`Sink`]
//! the server settings enable. A new consumer of per-request facts (usage metering, say)
//! is one more `Sink` registered in [`Telemetry::new`].

pub mod access_log;
pub mod metrics;
pub mod otel;
pub mod request_log;
pub mod trace;

use http::{HeaderValue, Method, Version};
use otel::{Otel, RequestSpans};
use request_log::RequestLogger;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use trace::TraceContext;

/// One finished request, as every sink sees it. Built once, borrowed from the request's
/// context; nothing here is copied unless a sink keeps it.
pub struct Summary<'a> {
    pub request_id: &'a str,
    pub trace: Option<&'a TraceContext>,
    pub method: &'a Method,
    pub version: Version,
    /// The `Host` (or absolute-form authority) as the client sent it.
    pub host: Option<&'a str>,
    pub path: &'a str,
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
    /// The TCP peer.
    pub peer: Option<IpAddr>,
    /// The client behind trusted balancers, when a policy needed it resolved.
    pub client: Option<IpAddr>,
    /// `X-Cache` of the response, on caching routes.
    pub cache: Option<&'static str>,
    /// The request waited for another request to fill the cache.
    pub cache_lock_waited: bool,
    /// From the first byte of the request to the end of the response.
    pub duration: Duration,
    /// From the first upstream attempt to the end of the response.
    pub upstream_duration: Option<Duration>,
    pub bytes_sent: usize,
    /// Why the request failed, when it did.
    pub error: Option<&'a pingora::Error>,
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
    /// Metrics always; the access log with `server.access_log`; request logs and OTel
    /// export when the server started them.
    pub fn new(
        access_log: bool,
        request_logs: Option<RequestLogger>,
        otel: Option<&'static Otel>,
    ) -> Telemetry {
        let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(metrics::RequestMetrics)];
        if let Some(logger) = request_logs {
            sinks.push(Box::new(logger));
        }
        if access_log {
            sinks.push(Box::new(access_log::AccessLog));
        }
        Telemetry { sinks, otel }
    }

    /// The trace context of a request that began at `started`, and its spans when spans
    /// are exported.
    pub fn start(
        &self,
        traceparent: Option<&HeaderValue>,
        started: Instant,
    ) -> (TraceContext, Option<RequestSpans>) {
        match self.otel {
            Some(otel) => {
                let (spans, trace) = otel.start(traceparent, started);
                (trace, Some(spans))
            }
            None => (TraceContext::from_request(traceparent), None),
        }
    }

    /// Spans are being recorded for this process (phase timings are worth taking).
    pub fn spans_enabled(&self) -> bool {
        self.otel.is_some()
    }

    /// Hand the finished request to every sink, and end its spans.
    pub fn finish(&self, summary: &Summary<'_>, spans: Option<RequestSpans>) {
        for sink in &self.sinks {
            sink.record(summary);
        }
        if let (Some(otel), Some(spans)) = (self.otel, spans) {
            otel.finish(spans, summary);
        }
    }
}
