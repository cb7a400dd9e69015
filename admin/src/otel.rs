//! Optional OpenTelemetry span export (OTLP/HTTP) of the admin's requests: one server span
//! per request, joined to the caller's W3C `traceparent`. Off unless `otlp_endpoint` is set.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::sync::OnceLock;

struct Otel {
    _provider: SdkTracerProvider,
    tracer: SdkTracer,
}

static OTEL: OnceLock<Otel> = OnceLock::new();

/// Start exporting spans to `endpoint` (e.g. `http://127.0.0.1:4318/v1/traces`). Call it
/// outside the async runtime (the exporter's HTTP client is a blocking one).
pub fn init(endpoint: &str) -> anyhow::Result<()> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint.to_string())
        .build()
        .map_err(|e| anyhow::anyhow!("otlp_endpoint: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name("vantage-admin")
                .build(),
        )
        .build();
    let tracer = provider.tracer("vantage-admin");
    let _ = OTEL.set(Otel {
        _provider: provider,
        tracer,
    });
    Ok(())
}

struct Headers<'a>(&'a axum::http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Middleware: a server span around every request when export is on.
pub async fn span_layer(req: Request, next: Next) -> Response {
    let Some(otel) = OTEL.get() else {
        return next.run(req).await;
    };
    let parent = TraceContextPropagator::new().extract(&Headers(req.headers()));
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let mut span = otel
        .tracer
        .span_builder(format!("{method} {path}"))
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", method),
            KeyValue::new("url.path", path),
        ])
        .start_with_context(&otel.tracer, &parent);
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    if status >= 500 {
        span.set_status(Status::error(format!("status {status}")));
    }
    span.end();
    resp
}
