//! The per-request context, grouped by concern: who sent the request ([`RequestInfo`]),
//! where it goes ([`Routing`]), the upstream attempts ([`Attempts`]), the cache's view
//! ([`CacheState`]) and one monotonic [`Clock`] for every timing.

use crate::auth::Identity;
use crate::errors;
use crate::limits::enforce::LimitHeaders;
use crate::snapshot::{RouteRt, Snapshot};
use crate::telemetry::metrics::METRICS;
use crate::telemetry::otel::RequestSpans;
use crate::telemetry::series::RouteSeries;
use crate::telemetry::trace::TraceContext;
use crate::telemetry::usage::Metering;
use crate::telemetry::Summary;
use crate::upstream::mirror::Copy;
use crate::upstream::{Attempts, Pool};
use http::{HeaderName, HeaderValue, Method};
use pingora::http::ResponseHeader;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::proxy::Session;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Per-request state of [`super::Gateway`].
pub struct Ctx {
    /// The configuration this request sees from start to end.
    pub snapshot: Arc<Snapshot>,
    pub request: RequestInfo,
    pub routing: Routing,
    pub upstream: Attempts,
    pub cache: CacheState,
    pub clock: Clock,
    /// Quota units, overage and violations, for usage metering.
    pub metering: Metering,
}

/// Who sent the request and how it is known.
pub struct RequestInfo {
    /// Given by the client (when valid) or generated.
    pub id: HeaderValue,
    /// W3C trace context of this hop.
    pub trace: Option<TraceContext>,
    /// The client address behind trusted balancers (from X-Forwarded-For), when a policy
    /// needed it.
    pub client: Option<IpAddr>,
    /// The verified API key or JWT.
    pub identity: Option<Identity>,
}

/// Where the request goes.
#[derive(Default)]
pub struct Routing {
    pub tenant: Option<Arc<str>>,
    /// The compiled tenant (its keys).
    pub tenant_rt: Option<Arc<crate::snapshot::TenantRt>>,
    /// The host the tenant was found by, in normal form.
    pub host: Option<HeaderValue>,
    /// Some route of the tenant caches (unsafe methods then invalidate).
    pub tenant_caches: bool,
    pub route: Option<Arc<RouteRt>>,
    /// The origin the request goes to: the route's, or the one its split chose.
    pub pool: Option<Arc<Pool>>,
    /// The copy of the request a mirroring route sends after it (boxed: most requests
    /// have none, and the context travels in every phase's future).
    pub mirror: Option<Box<Copy>>,
    /// The metric series of the route.
    pub series: Option<Arc<RouteSeries>>,
    /// A CORS preflight for this method.
    pub preflight: Option<Method>,
    /// Rate-limit fields for the response.
    pub limit_headers: LimitHeaders,
    /// The request is for the key holder's usage report.
    pub usage_report: bool,
}

/// The cache's view of the request.
#[derive(Default)]
pub struct CacheState {
    /// The request carries credentials (Authorization, an API key, a session cookie).
    pub credentials: bool,
    /// The origin's 304 to a revalidation: its fields update the stored response.
    pub not_modified: Option<Box<ResponseHeader>>,
    /// The lookup missed (even if the response then was not stored).
    pub missed: bool,
    /// `X-Cache` of the response, on caching routes.
    pub label: Option<&'static str>,
}

/// Every timing of the request, on one monotonic clock (spans turn instants into wall-clock
/// time once, at export).
pub struct Clock {
    pub started: Instant,
    /// When the first upstream attempt began.
    pub upstream: Option<Instant>,
    /// When the cache lookup began (taken only while spans are recorded).
    pub cache_lookup: Option<Instant>,
    /// Spans being recorded, when `server.tracing` exports them.
    spans: Option<Box<RequestSpans>>,
    _active: ActiveGuard,
}

/// Counts the request in `vantage_active_requests` while its context lives.
struct ActiveGuard;

impl ActiveGuard {
    fn new() -> ActiveGuard {
        METRICS.active_requests.inc();
        ActiveGuard
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        METRICS.active_requests.dec();
    }
}

impl Clock {
    /// Now, when spans are recorded (phase timings are taken only then).
    pub fn mark(&self) -> Option<Instant> {
        self.spans.as_ref().map(|_| Instant::now())
    }

    /// A phase that ran from `since` (a [`Clock::mark`]) until now.
    pub fn phase(&mut self, name: &'static str, since: Option<Instant>) {
        if let (Some(spans), Some(since)) = (self.spans.as_mut(), since) {
            spans.phase(name, since);
        }
    }

    /// The request's spans at its end, with the cache lookup (that took `cache_took`) and
    /// upstream phases.
    fn finish(&mut self, cache_took: Duration) -> Option<Box<RequestSpans>> {
        let mut spans = self.spans.take()?;
        if let Some(start) = self.cache_lookup {
            spans.phase_for("cache", start, cache_took);
        }
        if let Some(start) = self.upstream {
            spans.phase("upstream", start);
        }
        Some(spans)
    }
}

// Built once (a lookup by `&str` parses the name each time); inserts pass `.as_str()`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

fn valid_request_id(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 128 && v.iter().all(|b| b.is_ascii_graphic())
}

/// The client's `X-Request-Id` when it is 1–128 visible ASCII characters, else a new UUID.
fn request_id(given: Option<&HeaderValue>) -> HeaderValue {
    match given.filter(|v| valid_request_id(v.as_bytes())) {
        Some(v) => v.clone(),
        None => errors::new_request_id(),
    }
}

/// The TCP peer's address (IPv4 clients of a `[::]` listener in IPv4 form).
pub fn peer(session: &Session) -> Option<IpAddr> {
    match session.client_addr() {
        Some(SocketAddr::Inet(a)) => Some(a.ip().to_canonical()),
        _ => None,
    }
}

/// The request came over TLS.
pub fn tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

impl Ctx {
    pub fn new(snapshot: Arc<Snapshot>) -> Ctx {
        Ctx {
            snapshot,
            request: RequestInfo {
                id: HeaderValue::from_static(""),
                trace: None,
                client: None,
                identity: None,
            },
            routing: Routing::default(),
            upstream: Attempts::default(),
            cache: CacheState::default(),
            metering: Metering::default(),
            clock: Clock {
                started: Instant::now(),
                upstream: None,
                cache_lookup: None,
                spans: None,
                _active: ActiveGuard::new(),
            },
        }
    }

    /// The request's id (from the client's `X-Request-Id` when valid) and trace context.
    pub fn begin(
        &mut self,
        session: &Session,
        trace: TraceContext,
        spans: Option<Box<RequestSpans>>,
    ) {
        self.request.id = request_id(session.req_header().headers.get(&X_REQUEST_ID));
        self.request.trace = Some(trace);
        self.clock.spans = spans;
    }

    /// No target could take the request and the route's fallback takes a stored response.
    pub fn stale_fallback(&self) -> bool {
        self.upstream.none_available()
            && self
                .routing
                .route
                .as_ref()
                .and_then(|r| r.traffic.fallback.as_ref())
                .is_some_and(|f| f.stale)
    }

    pub fn request_id(&self) -> &str {
        self.request.id.to_str().unwrap_or("-")
    }

    /// The request's spans at its end (see [`Clock`]); None when spans are not exported.
    pub fn finish_spans(&mut self, session: &Session) -> Option<Box<RequestSpans>> {
        self.clock.spans.as_ref()?;
        let cache_took = session.cache.lookup_duration().unwrap_or_default()
            + session.cache.lock_duration().unwrap_or_default();
        self.clock.finish(cache_took)
    }

    /// What the telemetry sinks are told about the finished request.
    pub fn summary<'a>(
        &'a self,
        session: &'a Session,
        error: Option<&'a pingora::Error>,
    ) -> Summary<'a> {
        let (api_key_id, user_id) = match &self.request.identity {
            Some(Identity::Key(k)) => (Some(&*k.id), None),
            Some(Identity::User(u)) => (None, Some(u.sub.as_str())),
            None => (None, None),
        };
        Summary {
            session,
            request_id: self.request_id(),
            trace: self.request.trace.as_ref(),
            status: session.response_written().map_or(0, |r| r.status.as_u16()),
            tenant: self.routing.tenant.as_deref(),
            route: self.routing.route.as_ref().map(|r| &*r.id),
            origin: self
                .routing
                .pool
                .as_ref()
                .or(self.routing.route.as_ref().map(|r| &r.pool))
                .map(|p| &*p.id),
            upstream: self
                .upstream
                .current
                .as_ref()
                .map(|a| a.target.label.as_str()),
            api_key_id,
            user_id,
            client: self.request.client,
            cache: self.cache.label,
            duration: self.clock.started.elapsed(),
            upstream_duration: self.clock.upstream.map(|t| t.elapsed()),
            error,
            tenant_id: self.routing.tenant.as_ref(),
            route_id: self.routing.route.as_ref().map(|r| &r.id),
            series: self.routing.series.as_deref(),
            identity: self.request.identity.as_ref(),
            metering: &self.metering,
        }
    }
}
