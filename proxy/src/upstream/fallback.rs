//! A route's fallback answer: what the client gets instead of the generic 503 when no
//! target of the chosen origin is healthy or every breaker is open.

use crate::errors::{self, Reply};
use crate::telemetry::metrics::METRICS;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use vantage_model::Fallback;

/// Marks a fallback answer for clients and logs.
pub static X_VANTAGE_FALLBACK: HeaderName = HeaderName::from_static("x-vantage-fallback");

/// A compiled fallback.
pub struct FallbackRt {
    /// A stored response within its stale-if-error window comes first.
    pub stale: bool,
    status: u16,
    content_type: HeaderValue,
    body: Bytes,
}

impl FallbackRt {
    pub fn compile(spec: &Fallback) -> Result<FallbackRt, String> {
        Ok(FallbackRt {
            stale: spec.stale,
            status: spec.status,
            content_type: HeaderValue::from_str(&spec.content_type).map_err(|e| e.to_string())?,
            body: Bytes::from(spec.body.clone()),
        })
    }

    /// Mark a stored response served in place of the origin's.
    pub fn mark_stale(resp: &mut ResponseHeader, tenant: &str) -> pingora::Result<()> {
        METRICS.fallbacks.inc(&[tenant, "stale"]);
        resp.insert_header(X_VANTAGE_FALLBACK.as_str(), "stale")
    }

    /// Answer with the fallback.
    pub async fn respond(
        &self,
        session: &mut Session,
        tenant: &str,
        request_id: &str,
    ) -> pingora::Result<()> {
        METRICS.fallbacks.inc(&[tenant, "static"]);
        let mut reply = Reply::new(self.status, "", "");
        reply.headers.push((
            X_VANTAGE_FALLBACK.clone(),
            HeaderValue::from_static("static"),
        ));
        errors::respond_as(
            session,
            &reply,
            &self.content_type,
            self.body.clone(),
            request_id,
        )
        .await
    }
}
