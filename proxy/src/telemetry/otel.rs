//! OpenTelemetry span export (OTLP over HTTP, `server.tracing`): one server span per request,
//! joined to the client's W3C trace, with child spans for the phases that take time — auth,
//! rate limit, cache lookup and upstream. Spans are batched and exported off the request
//! path by the SDK's batch processor; when tracing is off nothing here runs.

use crate::telemetry::trace::TraceContext;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, Span};
use opentelemetry_sdk::Resource;
use std::time::{Duration, Instant, SystemTime};
use vantage_model::TracingSettings;

/// The exporter and tracer of the process.
pub struct Otel {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

/// A request's spans in the making. Phases are timed on the request's monotonic clock
/// and turned into wall-clock times here, against the one reading taken at the start.
pub struct RequestSpans {
    root: Span,
    /// The request's start on both clocks.
    anchor: (Instant, SystemTime),
    phases: Vec<(&'static str, Instant, Instant)>,
}

impl Otel {
    /// Build the OTLP/HTTP exporter and a batch span processor.
    pub fn new(settings: &TracingSettings) -> Result<Otel, String> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(settings.otlp_endpoint.clone())
            .build()
            .map_err(|e| format!("server.tracing: {e}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sample_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(settings.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("vantage-proxy");
        Ok(Otel { provider, tracer })
    }

    /// Start the server span of a request, child of the client's span when it sent a valid
    /// `traceparent`; the returned trace context carries this span's ids.
    pub fn start(
        &self,
        traceparent: Option<&http::HeaderValue>,
        started: Instant,
    ) -> (RequestSpans, TraceContext) {
        let started_at = SystemTime::now() - started.elapsed();
        let parsed = traceparent.and_then(|v| crate::telemetry::trace::parse(v.as_bytes()));
        let parent_cx = match &parsed {
            Some((trace, parent, flags)) => {
                Context::new().with_remote_span_context(SpanContext::new(
                    TraceId::from_bytes(*trace),
                    SpanId::from_bytes(*parent),
                    TraceFlags::new(*flags),
                    true,
                    TraceState::default(),
                ))
            }
            None => Context::new(),
        };
        let root = self
            .tracer
            .span_builder("request")
            .with_kind(SpanKind::Server)
            .with_start_time(started_at)
            .start_with_context(&self.tracer, &parent_cx);
        let sc = root.span_context().clone();
        let trace = TraceContext {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            parent_id: parsed.map(|p| p.1),
            flags: sc.trace_flags().to_u8(),
        };
        (
            RequestSpans {
                root,
                anchor: (started, started_at),
                phases: Vec::with_capacity(4),
            },
            trace,
        )
    }

    /// End the request: its phase spans, then the server span with the summary's
    /// attributes.
    pub fn finish(&self, mut spans: RequestSpans, s: &super::Summary<'_>) {
        let parent = Context::new().with_remote_span_context(spans.root.span_context().clone());
        for (name, start, end) in spans.phases.drain(..) {
            let mut span = self
                .tracer
                .span_builder(name)
                .with_kind(SpanKind::Internal)
                .with_start_time(spans.anchor.wall(start))
                .start_with_context(&self.tracer, &parent);
            span.end_with_timestamp(spans.anchor.wall(end));
        }
        let mut attrs = vec![
            KeyValue::new("http.request.method", s.req().method.as_str().to_string()),
            KeyValue::new("url.path", s.req().uri.path().to_string()),
            KeyValue::new("http.response.status_code", i64::from(s.status)),
            KeyValue::new("vantage.request_id", s.request_id.to_string()),
        ];
        if let Some(t) = s.tenant {
            attrs.push(KeyValue::new("vantage.tenant", t.to_string()));
        }
        if let Some(r) = s.route {
            attrs.push(KeyValue::new("vantage.route", r.to_string()));
        }
        if let Some(c) = s.cache {
            attrs.push(KeyValue::new("vantage.cache", c));
        }
        spans.root.set_attributes(attrs);
        if s.status >= 500 || s.status == 0 {
            spans
                .root
                .set_status(Status::error(format!("status {}", s.status)));
        }
        spans.root.end();
    }

    /// Export what is buffered (at shutdown).
    pub fn shutdown(&self) {
        let _ = self.provider.force_flush();
    }
}

/// Wall-clock time of a monotonic instant, from one reading of both clocks.
trait Wall {
    fn wall(&self, at: Instant) -> SystemTime;
}

impl Wall for (Instant, SystemTime) {
    fn wall(&self, at: Instant) -> SystemTime {
        match at.checked_duration_since(self.0) {
            Some(after) => self.1 + after,
            None => self.1 - self.0.duration_since(at),
        }
    }
}

impl RequestSpans {
    /// Record a phase that ran from `start` to now.
    pub fn phase(&mut self, name: &'static str, start: Instant) {
        self.phases.push((name, start, Instant::now()));
    }

    /// Record a phase that started at `start` and took `took`.
    pub fn phase_for(&mut self, name: &'static str, start: Instant, took: Duration) {
        self.phases.push((name, start, start + took));
    }
}
