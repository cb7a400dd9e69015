//! The JSON access log (`server.access_log`): one `tracing` event per request on the
//! `access` target, written by the process's JSON log layer.

use super::{Sink, Summary};

/// The access-log sink.
pub struct AccessLog;

impl Sink for AccessLog {
    fn record(&self, s: &Summary<'_>) {
        let (trace_id, span_id) = (
            s.trace.map(|t| t.trace_id_hex()),
            s.trace.map(|t| t.span_id_hex()),
        );
        tracing::info!(
            target: "access",
            request_id = s.request_id,
            trace_id = trace_id.as_ref().map(|h| h.as_str()),
            span_id = span_id.as_ref().map(|h| h.as_str()),
            client = s.peer().map(|ip| ip.to_string()),
            method = %s.req().method,
            version = ?s.req().version,
            host = s.host().unwrap_or("-"),
            path = %s.req().uri.path(),
            status = s.status,
            tenant = s.tenant.unwrap_or("-"),
            route = s.route.unwrap_or("-"),
            origin = s.origin.unwrap_or("-"),
            upstream = s.upstream.unwrap_or("-"),
            duration_ms = s.duration.as_secs_f64() * 1000.0,
            upstream_ms = s.upstream_duration.map(|d| d.as_secs_f64() * 1000.0),
            error = s.error.map(|e| e.to_string()),
        );
    }
}
