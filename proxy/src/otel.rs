//! OpenTelemetry span export (OTLP over HTTP, `server.tracing`): one server span per request,
//! joined to the client's W3C trace, with child spans for the phases that take time — auth,
//! rate limit, cache lookup and upstream. Spans are batched and exported off the request
//! path by the SDK's batch processor; when tracing is off nothing here runs.

use crate::trace::TraceContext;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, Span};
use opentelemetry_sdk::Resource;
use std::time::SystemTime;
use vantage_model::TracingSettings;

/// The exporter and tracer of the process.
pub struct Otel {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

/// A request's spans in the making.
pub struct RequestSpans {
    root: Span,
    phases: Vec<(&'static str, SystemTime, SystemTime)>,
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
        started: SystemTime,
    ) -> (RequestSpans, TraceContext) {
        let parsed = traceparent
            .and_then(|v| v.to_str().ok())
            .and_then(crate::trace::parse);
        let parent_cx = match &parsed {
            Some((trace, parent, flags)) => {
                match (TraceId::from_hex(trace), SpanId::from_hex(parent)) {
                    (Ok(t), Ok(s)) => Context::new().with_remote_span_context(SpanContext::new(
                        t,
                        s,
                        TraceFlags::new(*flags),
                        true,
                        TraceState::default(),
                    )),
                    _ => Context::new(),
                }
            }
            None => Context::new(),
        };
        let root = self
            .tracer
            .span_builder("request")
            .with_kind(SpanKind::Server)
            .with_start_time(started)
            .start_with_context(&self.tracer, &parent_cx);
        let sc = root.span_context().clone();
        let trace = TraceContext {
            trace_id: sc.trace_id().to_string(),
            span_id: sc.span_id().to_string(),
            parent_id: parsed.map(|p| p.1),
            flags: sc.trace_flags().to_u8(),
        };
        (
            RequestSpans {
                root,
                phases: Vec::with_capacity(4),
            },
            trace,
        )
    }

    /// End the request: its phase spans, then the server span with its attributes.
    pub fn finish(&self, mut spans: RequestSpans, attrs: Vec<KeyValue>, status: u16) {
        let parent = Context::new().with_remote_span_context(spans.root.span_context().clone());
        for (name, start, end) in spans.phases.drain(..) {
            let mut s = self
                .tracer
                .span_builder(name)
                .with_kind(SpanKind::Internal)
                .with_start_time(start)
                .start_with_context(&self.tracer, &parent);
            s.end_with_timestamp(end);
        }
        spans.root.set_attributes(attrs);
        if status >= 500 || status == 0 {
            spans
                .root
                .set_status(Status::error(format!("status {status}")));
        }
        spans.root.end();
    }

    /// Export what is buffered (at shutdown).
    pub fn shutdown(&self) {
        let _ = self.provider.force_flush();
    }
}

impl RequestSpans {
    /// Record a phase that ran from `start` to now.
    pub fn phase(&mut self, name: &'static str, start: SystemTime) {
        self.phases.push((name, start, SystemTime::now()));
    }

    /// Record a phase with both ends known.
    pub fn phase_between(&mut self, name: &'static str, start: SystemTime, end: SystemTime) {
        self.phases.push((name, start, end));
    }
}
