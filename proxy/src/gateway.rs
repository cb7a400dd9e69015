//! The request path: one Pingora `ProxyHttp` implementation whose phase methods read as a
//! table of contents. Each phase calls into the module that owns the concern.

use crate::access;
use crate::auth::{self, Identity};
use crate::cache::{self, Caches, RequestDirectives};
use crate::errors::{self, Reply};
use crate::forwarding;
use crate::limits;
use crate::metrics::METRICS;
use crate::otel::{Otel, RequestSpans};
use crate::request_log::{Record, RequestLogger};
use crate::safety::{self, Limits};
use crate::snapshot::{PolicyRt, RouteRt, Snapshot};
use crate::trace::TraceContext;
use crate::upstream::{backend_id, InflightGuard, Pool, Selection, TargetState};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{HeaderName, HeaderValue, Method};
use opentelemetry::KeyValue;
use pingora::cache::key::HashBinary;
use pingora::cache::CacheOptionOverrides;
use pingora::cache::{CacheKey, CacheMeta, CachePhase, ForcedFreshness, HitHandler, RespCacheable};
use pingora::modules::http::compression::ResponseCompression;
use pingora::prelude::*;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::proxy::FailToProxy;
use pingora::ErrorSource;
use std::sync::Arc;
use std::time::Instant;
use std::time::SystemTime;
use vantage_model::HashKey;
use vantage_model::{LimitBackend, LimitSubject, OnRedisError};

/// The gateway: reads the current snapshot for every request.
pub struct Gateway {
    state: Arc<ArcSwap<Snapshot>>,
    /// Rate-limit counters; they outlive reloads.
    limiter: Arc<limits::Store>,
    /// Shared counters in Redis, when `server.redis` is set.
    redis: Option<Arc<limits::redis::RedisLimiter>>,
    limits: Limits,
    access_log: bool,
    forwarded_headers: bool,
    allow_underscores: bool,
    /// Response cache storages, lock and purges.
    caches: &'static Caches,
    /// Request-log records for Postgres, when enabled.
    request_logs: Option<RequestLogger>,
    /// OpenTelemetry span export, when `server.tracing` is set.
    otel: Option<&'static Otel>,
}

/// The process-wide services a gateway uses besides the configuration snapshot.
pub struct Services {
    /// Shared counters in Redis, when `server.redis` is set.
    pub redis: Option<Arc<limits::redis::RedisLimiter>>,
    /// Response cache storages, lock and purges.
    pub caches: &'static Caches,
    /// Request-log records for Postgres, when enabled.
    pub request_logs: Option<RequestLogger>,
    /// OpenTelemetry span export, when `server.tracing` is set.
    pub otel: Option<&'static Otel>,
}

impl Gateway {
    /// A gateway serving whatever snapshot `state` holds, with the request-handling parts
    /// of the server settings.
    pub fn new(
        state: Arc<ArcSwap<Snapshot>>,
        settings: &vantage_model::ServerSettings,
        services: Services,
    ) -> Gateway {
        Gateway {
            state,
            limiter: Arc::new(limits::Store::default()),
            redis: services.redis,
            limits: Limits {
                max_headers: settings.max_request_headers,
                max_header_bytes: settings.max_request_header_bytes,
                max_uri_bytes: settings.client_limits.max_uri_bytes,
            },
            access_log: settings.access_log,
            forwarded_headers: settings.forwarded_headers,
            allow_underscores: settings.allow_underscores_in_headers,
            caches: services.caches,
            request_logs: services.request_logs,
            otel: services.otel,
        }
    }
}

/// Decrements the in-flight gauge when the request context is dropped.
pub struct ActiveGuard;

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

/// Per-request state.
pub struct Ctx {
    /// The configuration this request sees from start to end.
    snapshot: Arc<Snapshot>,
    started: Instant,
    _active: ActiveGuard,
    /// Given by the client (when valid) or generated.
    request_id: HeaderValue,
    tenant: Option<Arc<str>>,
    /// The host the tenant was found by, in normal form.
    host: Option<HeaderValue>,
    /// Some route of the tenant caches.
    tenant_caches: bool,
    route: Option<Arc<RouteRt>>,
    /// The request carries credentials (Authorization, an API key, a session cookie).
    credentials: bool,
    /// The origin's 304 to a revalidation: its fields update the stored response.
    not_modified: Option<Box<ResponseHeader>>,
    /// The cache was looked up and missed (even if the response then was not stored).
    cache_missed: bool,
    /// `X-Cache` of the response, on caching routes.
    cache_label: Option<&'static str>,
    /// W3C trace context of this hop.
    trace: Option<TraceContext>,
    /// Spans being recorded (with `server.tracing`), and when the phases began.
    spans: Option<RequestSpans>,
    cache_started: Option<SystemTime>,
    upstream_started_at: Option<SystemTime>,
    /// Targets whose connect failed (retries go elsewhere).
    tried: Vec<usize>,
    /// The current attempt's target, its identity, and its in-flight count.
    target: Option<(Arc<TargetState>, usize, InflightGuard)>,
    retries_left: u32,
    upstream_started: Option<Instant>,
    upstream_status: Option<u16>,
    /// An error decided by the gateway, answered by `fail_to_proxy`.
    reply: Option<Reply>,
    /// Who the failure `fail_to_proxy` answered is down to.
    blame: Option<errors::Blame>,
    /// A CORS preflight for this method.
    preflight: Option<Method>,
    /// The client address (behind trusted balancers: from X-Forwarded-For).
    client: Option<std::net::IpAddr>,
    /// The verified API key or JWT.
    identity: Option<Identity>,
    /// Rate-limit fields for the response.
    limit_headers: Vec<(HeaderName, HeaderValue)>,
}

/// What the policies decided for a routed request.
enum Admit {
    Proxy,
    /// A CORS preflight to answer with 204 and these headers.
    Preflight(Vec<(HeaderName, HeaderValue)>),
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

const X_REQUEST_ID: &str = "x-request-id";
const TRACEPARENT: &str = "traceparent";
/// Sent to the origin: the id of the API key that authenticated the request.
const X_API_KEY_ID: &str = "x-api-key-id";
/// Sent to the origin: the JWT's `sub` and `org_id`.
const X_USER_ID: &str = "x-user-id";
const X_ORG_ID: &str = "x-org-id";

/// A header value from claim or id text (control characters make it "-").
fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("-"))
}

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

impl Ctx {
    fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or("-")
    }
}

fn request_host(session: &Session) -> Option<&str> {
    let req = session.req_header();
    req.uri.host().or_else(|| {
        req.headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    match session.client_addr() {
        // IPv4 clients of a [::] listener appear as ::ffff:a.b.c.d.
        Some(SocketAddr::Inet(a)) => Some(a.ip().to_canonical()),
        _ => None,
    }
}

fn cookie<'a>(session: &'a Session, name: &str) -> Option<&'a [u8]> {
    session
        .req_header()
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
}

impl Gateway {
    /// Tenant and route lookup; `Err` is the reply to send.
    fn route(&self, session: &Session, ctx: &mut Ctx) -> Result<(), Reply> {
        let host = request_host(session)
            .ok_or_else(|| Reply::new(400, "bad_request", "the request has no Host header"))?;
        let (tenant, matched) = ctx.snapshot.tenant_for_host(host).ok_or_else(|| {
            Reply::new(
                404,
                "unknown_tenant",
                format!("no tenant serves host '{host}'"),
            )
        })?;
        ctx.tenant = Some(tenant.id.clone());
        ctx.host = Some(matched.clone());
        ctx.tenant_caches = tenant.caches;
        let req = session.req_header();
        // A CORS preflight is answered for the route the real request would take, when that
        // route has a CORS policy; otherwise OPTIONS is routed like any method.
        if let Some(method) = access::preflight_method(&req.method, &req.headers) {
            if let Some(route) = tenant
                .router
                .find(req.uri.path(), &method, &req.headers)
                .filter(|r| r.access.cors.is_some())
            {
                ctx.preflight = Some(method);
                ctx.route = Some(route.clone());
                return Ok(());
            }
        }
        let route = tenant
            .router
            .find(req.uri.path(), &req.method, &req.headers)
            .ok_or_else(|| {
                Reply::new(
                    404,
                    "no_route",
                    format!("no route matches {} {}", req.method, req.uri.path()),
                )
            })?;
        ctx.retries_left = route.pool.spec.retries;
        ctx.route = Some(route.clone());
        // TRACE echoes the request (credentials included) back; only routes that list it
        // take it.
        if req.method == Method::TRACE && !route.trace {
            return Err(Reply::new(
                405,
                "method_not_allowed",
                "TRACE is not allowed on this route",
            ));
        }
        Ok(())
    }

    /// Access policy, authentication and rate limits of the matched route.
    async fn admit(&self, session: &Session, ctx: &mut Ctx) -> Result<Admit, Reply> {
        let Some(route) = ctx.route.clone() else {
            return Ok(Admit::Proxy);
        };
        let req = session.req_header();
        if !ctx.snapshot.trusted_proxies.is_empty() || route.access.ip_rules.is_some() {
            ctx.client = access::client_address(
                client_ip(session),
                &req.headers,
                &ctx.snapshot.trusted_proxies,
            );
        }
        if let Some(rules) = &route.access.ip_rules {
            rules.check(ctx.client)?;
        }
        if let (Some(method), Some(cors)) = (&ctx.preflight, &route.access.cors) {
            return cors.preflight(&req.headers, method).map(Admit::Preflight);
        }
        let tenant = ctx.tenant.clone().unwrap_or_else(|| "".into());
        let auth_started = ctx.spans.is_some().then(SystemTime::now);
        let identity = auth::authenticate(
            &route.auth,
            &tenant,
            &route.tenant_auth,
            &req.headers,
            &ctx.snapshot.keys,
            SystemTime::now(),
        )
        .await
        .inspect_err(|r| {
            METRICS
                .auth_failures
                .with_label_values(&[&tenant, r.code])
                .inc();
        });
        if let (Some(spans), Some(t)) = (ctx.spans.as_mut(), auth_started) {
            if route.auth.mode != vantage_model::AuthMode::Public {
                spans.phase("auth", t);
            }
        }
        ctx.identity = identity?;
        if !route.limits.is_empty() {
            let started = ctx.spans.is_some().then(SystemTime::now);
            let limited = self.rate_limit(session, ctx, &route, &tenant).await;
            if let (Some(spans), Some(t)) = (ctx.spans.as_mut(), started) {
                spans.phase("rate_limit", t);
            }
            limited?;
        }
        Ok(Admit::Proxy)
    }

    /// The limiter key of `policy` for this request.
    fn limit_key(
        &self,
        session: &Session,
        ctx: &Ctx,
        route: &RouteRt,
        policy: &PolicyRt,
    ) -> String {
        let mut key = String::with_capacity(policy.key_prefix.len() + 48);
        key.push_str(&policy.key_prefix);
        let by_ip = |key: &mut String| {
            key.push_str("ip:");
            if let Some(ip) = ctx.client.or_else(|| client_ip(session)) {
                forwarding::push_ip(key, ip);
            }
        };
        match &policy.subject {
            LimitSubject::Tenant => {}
            LimitSubject::Route => key.push_str(&route.id),
            LimitSubject::ClientIp => by_ip(&mut key),
            LimitSubject::ApiKey => match &ctx.identity {
                Some(Identity::Key(k)) => {
                    key.push_str("key:");
                    key.push_str(&k.id);
                }
                _ => by_ip(&mut key),
            },
            LimitSubject::User => match &ctx.identity {
                Some(Identity::User(u)) => {
                    key.push_str("user:");
                    key.push_str(&u.sub);
                }
                _ => by_ip(&mut key),
            },
            LimitSubject::Header { name } => {
                match session.req_header().headers.get(name.as_str()) {
                    Some(v) => {
                        key.push_str("h:");
                        key.push_str(&String::from_utf8_lossy(v.as_bytes()));
                    }
                    None => by_ip(&mut key),
                }
            }
        }
        key
    }

    /// Every policy of the route and of its tenant applies; the strictest decides. A request
    /// refused by a local policy is counted by none; Redis policies count in Redis (one round
    /// trip each), and when Redis fails each follows its `on_redis_error`.
    async fn rate_limit(
        &self,
        session: &Session,
        ctx: &mut Ctx,
        route: &RouteRt,
        tenant: &str,
    ) -> Result<(), Reply> {
        let now = self.limiter.now();
        let keys: Vec<String> = route
            .limits
            .iter()
            .map(|p| self.limit_key(session, ctx, route, p))
            .collect();
        let policies = || route.limits.iter().zip(&keys);
        // Local policies look first, so one refusal does not use up another's quota.
        // (Two requests racing between the look and the count can both pass.)
        // With a single policy there is nothing to protect: count straight away.
        let local_refusal = policies()
            .filter(|(p, _)| p.backend == LimitBackend::Local && route.limits.len() > 1)
            .map(|(p, k)| (p, self.limiter.peek(k, &p.algorithm, now)))
            .filter(|(_, d)| !d.allowed)
            .max_by_key(|(_, d)| d.retry_after_s);
        let mut decisions: Vec<(&str, limits::Decision)> = Vec::with_capacity(keys.len());
        if let Some((p, d)) = local_refusal {
            decisions.push((&p.name, d));
        } else {
            for (p, k) in policies() {
                let d = match (p.backend, &self.redis) {
                    (LimitBackend::Redis, Some(redis)) => {
                        match redis.check(k, &p.algorithm).await {
                            Ok(d) => d,
                            Err(e) => {
                                let mode = match p.on_redis_error {
                                    OnRedisError::Allow => "allow",
                                    OnRedisError::Deny => "deny",
                                    OnRedisError::Local => "local",
                                };
                                METRICS.ratelimit_fallbacks.with_label_values(&[mode]).inc();
                                tracing::warn!(tenant, policy = %p.name, mode, "rate limit without Redis: {e}");
                                match p.on_redis_error {
                                    OnRedisError::Allow => continue,
                                    OnRedisError::Deny => {
                                        return Err(Reply::new(
                                            503,
                                            "rate_limit_unavailable",
                                            "the rate limiter is unavailable; try again shortly",
                                        )
                                        .with_header("retry-after", "1"));
                                    }
                                    OnRedisError::Local => self.limiter.check(k, &p.algorithm, now),
                                }
                            }
                        }
                    }
                    _ => self.limiter.check(k, &p.algorithm, now),
                };
                decisions.push((&p.name, d));
            }
        }
        let refused = decisions
            .iter()
            .filter(|(_, d)| !d.allowed)
            .max_by_key(|(_, d)| d.retry_after_s);
        let chosen = refused.or_else(|| decisions.iter().min_by_key(|(_, d)| d.remaining));
        let Some((name, d)) = chosen else {
            return Ok(());
        };
        let result = if d.allowed { "allowed" } else { "limited" };
        METRICS
            .ratelimit
            .with_label_values(&[tenant, &route.id, result])
            .inc();
        let headers = limits::headers(name, d);
        if d.allowed {
            ctx.limit_headers = headers;
            return Ok(());
        }
        let mut reply = Reply::new(
            429,
            "rate_limited",
            format!(
                "rate limit '{name}' exceeded; retry in {} s",
                d.retry_after_s
            ),
        );
        reply.headers = headers;
        Err(reply)
    }

    fn enable_compression(session: &mut Session, level: u32) {
        let req = session.downstream_session.req_header().clone();
        if let Some(c) = session
            .downstream_modules_ctx
            .get_mut::<ResponseCompression>()
        {
            if c.is_header_phase() {
                c.adjust_level(level);
                // The module skipped Accept-Encoding while it was disabled.
                c.request_filter(&req);
            }
        }
    }

    fn hash_key(session: &Session, key: Option<&HashKey>) -> Vec<u8> {
        match key {
            None => Vec::new(),
            Some(HashKey::Header { name }) => session.get_header_bytes(name.as_str()).to_vec(),
            Some(HashKey::Cookie { name }) => cookie(session, name).unwrap_or_default().to_vec(),
            Some(HashKey::ClientIp) => client_ip(session)
                .map(|ip| ip.to_string().into_bytes())
                .unwrap_or_default(),
            Some(HashKey::Path) => session.req_header().uri.path().as_bytes().to_vec(),
        }
    }

    /// X-Forwarded-For (appended to every earlier hop), -Proto, -Host and the request id.
    /// `X-Cache` on caching routes, and RFC 9111 §4.4: a successful unsafe request
    /// invalidates its URL and the same-host `Location`/`Content-Location`.
    fn cache_response(
        &self,
        session: &Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        let req = session.req_header();
        cache::directives::strip_own(resp);
        if ctx.route.as_ref().is_some_and(|r| r.cache.is_some()) {
            let label = match session.cache.phase() {
                CachePhase::Disabled(_) | CachePhase::Bypass if ctx.cache_missed => "MISS",
                phase => cache::status_label(phase),
            };
            cache::record(label);
            ctx.cache_label = Some(label);
            resp.insert_header("x-cache", label)?;
            if matches!(label, "HIT" | "STALE") {
                // Entries are stored without it; one from an older release never replays it.
                resp.remove_header(&http::header::SET_COOKIE);
            }
        }
        let unsafe_method = !matches!(
            req.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        );
        let status = resp.status.as_u16();
        if unsafe_method && ctx.tenant_caches && (200..400).contains(&status) {
            if let Some(tenant) = &ctx.tenant {
                let purges = self.caches.purges;
                purges.invalidate_local(tenant, req.uri.path(), req.uri.query());
                let host = request_host(session);
                for name in [http::header::LOCATION, http::header::CONTENT_LOCATION] {
                    let Some(v) = resp.headers.get(&name).and_then(|v| v.to_str().ok()) else {
                        continue;
                    };
                    let Ok(uri) = v.parse::<http::Uri>() else {
                        continue;
                    };
                    let same_host = uri.host().is_none_or(|h| Some(h) == host);
                    if same_host && uri.path().starts_with('/') {
                        purges.invalidate_local(tenant, uri.path(), uri.query());
                    }
                }
            }
        }
        Ok(())
    }

    /// X-Forwarded-*, X-Real-IP and Forwarded (see [`forwarding`]) and the request id.
    fn forwarded_headers(
        &self,
        session: &Session,
        ctx: &Ctx,
        req: &mut RequestHeader,
    ) -> pingora::Result<()> {
        req.insert_header(X_REQUEST_ID, ctx.request_id.clone())?;
        if !self.forwarded_headers {
            return Ok(());
        }
        let peer = client_ip(session);
        let trusted = &ctx.snapshot.trusted_proxies;
        let hop = forwarding::Hop {
            peer,
            peer_trusted: peer.is_some_and(|p| trusted.iter().any(|n| n.contains(&p))),
            tls: session.digest().is_some_and(|d| d.ssl_digest.is_some()),
            host: ctx.host.as_ref(),
        };
        forwarding::apply(req, &hop)
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            snapshot: self.state.load_full(),
            started: Instant::now(),
            _active: ActiveGuard::new(),
            request_id: HeaderValue::from_static(""),
            tenant: None,
            host: None,
            tenant_caches: false,
            route: None,
            credentials: false,
            not_modified: None,
            cache_missed: false,
            cache_label: None,
            trace: None,
            spans: None,
            cache_started: None,
            upstream_started_at: None,
            tried: Vec::new(),
            target: None,
            retries_left: 0,
            upstream_started: None,
            upstream_status: None,
            reply: None,
            blame: None,
            preflight: None,
            client: None,
            identity: None,
            limit_headers: Vec::new(),
        }
    }

    /// Request id → HTTP safety → tenant → route → per-route modules.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        ctx.request_id = request_id(session.req_header().headers.get(X_REQUEST_ID));
        let traceparent = session.req_header().headers.get(TRACEPARENT);
        ctx.trace = Some(match self.otel {
            Some(otel) => {
                let started = SystemTime::now() - ctx.started.elapsed();
                let (spans, trace) = otel.start(traceparent, started);
                ctx.spans = Some(spans);
                trace
            }
            None => TraceContext::from_request(traceparent),
        });
        let raw_content_length = session
            .req_header()
            .headers
            .contains_key(http::header::TRANSFER_ENCODING)
            && session
                .as_http1()
                .is_some_and(|h1| safety::raw_has_content_length(&h1.get_headers_raw_bytes()));
        let routed = safety::check(session.req_header(), raw_content_length, self.limits)
            .inspect_err(|r| {
                METRICS.refused.with_label_values(&[r.code]).inc();
            })
            .and_then(|()| self.route(session, ctx));
        let decision = match routed {
            Ok(()) => self.admit(session, ctx).await,
            Err(e) => Err(e),
        };
        match decision {
            Ok(Admit::Proxy) => {}
            Ok(Admit::Preflight(headers)) => {
                let mut resp = ResponseHeader::build(204, Some(headers.len() + 2))?;
                for (n, v) in headers {
                    resp.append_header(n, v)?;
                }
                resp.insert_header(X_REQUEST_ID, ctx.request_id.clone())?;
                resp.insert_header(http::header::CONTENT_LENGTH, "0")?;
                session.write_response_header(Box::new(resp), true).await?;
                return Ok(true);
            }
            Err(mut reply) => {
                // Let browsers read the gateway's errors on CORS-enabled routes.
                if let Some(cors) = ctx.route.as_ref().and_then(|r| r.access.cors.as_ref()) {
                    reply
                        .headers
                        .extend(cors.response_headers(&session.req_header().headers));
                }
                errors::respond(session, &reply, ctx.request_id()).await?;
                return Ok(true);
            }
        }
        if let Some(level) = ctx.route.as_ref().and_then(|r| r.compression) {
            Self::enable_compression(session, level);
        }
        Ok(false)
    }

    /// Caching routes enable pingora-cache with the route's storage, lock timeout and size
    /// bound, unless the request bypasses the cache.
    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<()> {
        let Some(policy) = ctx.route.as_ref().and_then(|r| r.cache.as_ref()) else {
            return Ok(());
        };
        if ctx.spans.is_some() {
            ctx.cache_started = Some(SystemTime::now());
        }
        let req = session.req_header();
        ctx.credentials = ctx.identity.is_some()
            || req.headers.contains_key(http::header::AUTHORIZATION)
            || req.headers.contains_key("x-api-key");
        if policy.bypass_reason(req, ctx.credentials).is_some() {
            return Ok(());
        }
        let mut overrides = CacheOptionOverrides::default();
        overrides.wait_timeout = Some(policy.lock_timeout);
        session.cache.enable(
            self.caches.storage(policy.storage),
            None,
            None,
            Some(self.caches.lock),
            Some(overrides),
        );
        session
            .cache
            .set_max_file_size_bytes(policy.max_entry_bytes);
        Ok(())
    }

    /// Tenant and its purge generation first, then route, path (and query) and key headers.
    fn cache_key_callback(&self, session: &Session, ctx: &mut Ctx) -> pingora::Result<CacheKey> {
        let (Some(tenant), Some(route)) = (&ctx.tenant, &ctx.route) else {
            return Err(Error::explain(InternalError, "cache key without a route"));
        };
        let Some(policy) = &route.cache else {
            return Err(Error::explain(
                InternalError,
                "cache key on a non-caching route",
            ));
        };
        let generation = self.caches.purges.generation(tenant);
        let scheme = if session.digest().is_some_and(|d| d.ssl_digest.is_some()) {
            "https"
        } else {
            "http"
        };
        let host = ctx.host.as_ref().map_or(&b""[..], |h| h.as_bytes());
        Ok(policy.key(
            tenant,
            generation,
            &route.id,
            (scheme, host),
            session.req_header(),
        ))
    }

    /// A lookup missed; the origin's response may fill the cache.
    fn cache_miss(&self, session: &mut Session, ctx: &mut Ctx) {
        ctx.cache_missed = true;
        session.cache.cache_miss();
    }

    /// Purged URLs are refetched; the request's own `no-cache`, `max-age` and `min-fresh`
    /// force revalidation.
    async fn cache_hit_filter(
        &self,
        session: &mut Session,
        meta: &CacheMeta,
        _hit_handler: &mut HitHandler,
        is_fresh: bool,
        ctx: &mut Ctx,
    ) -> pingora::Result<Option<ForcedFreshness>> {
        let req = session.req_header();
        if let Some(tenant) = &ctx.tenant {
            if self.caches.purges.purged_after(
                tenant,
                req.uri.path(),
                req.uri.query(),
                meta.created(),
            ) {
                return Ok(Some(ForcedFreshness::ForceMiss));
            }
        }
        if is_fresh && RequestDirectives::parse(req).needs_revalidation(meta, SystemTime::now()) {
            return Ok(Some(ForcedFreshness::ForceExpired));
        }
        Ok(None)
    }

    /// `Cache-Control: only-if-cached` gets 504 instead of going to the origin.
    async fn proxy_upstream_filter(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> pingora::Result<bool> {
        if session.cache.enabled() && RequestDirectives::parse(session.req_header()).only_if_cached
        {
            let reply = Reply::new(504, "not_cached", "the response is not in the cache");
            errors::respond(session, &reply, ctx.request_id()).await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Keeps the origin's 304 to a revalidation for `response_cache_filter`.
    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        if resp.status == http::StatusCode::NOT_MODIFIED && session.cache.enabled() {
            ctx.not_modified = Some(Box::new(resp.clone()));
        }
        // An upgraded connection (WebSocket) may be quiet for long: the origin's read timeout
        // governs it, not the timeout between request body reads.
        if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
            session.set_read_timeout(None);
        }
        // Hop-by-hop: how long the origin keeps our connection says nothing about the
        // client's.
        if let Some(v) = resp.remove_header("keep-alive") {
            if let Some((target, _, _)) = &ctx.target {
                target.note_keep_alive(v.as_bytes());
            }
        }
        Ok(())
    }

    /// RFC 9111 storage rules with the route's defaults. After a 304, the stored response
    /// takes the 304's fields first (§4.3.4).
    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<RespCacheable> {
        let Some(policy) = ctx.route.as_ref().and_then(|r| r.cache.as_ref()) else {
            return Ok(RespCacheable::Uncacheable(
                pingora::cache::NoCacheReason::NeverEnabled,
            ));
        };
        let now = SystemTime::now();
        Ok(match ctx.not_modified.take() {
            Some(nm) => {
                // From the stored response itself: pingora's merge already took the 304's ETag.
                let stored = session
                    .cache
                    .maybe_cache_meta()
                    .map_or(resp, |m| m.response_header());
                let merged = cache::merge_not_modified(stored, &nm);
                policy.cacheable(&merged, ctx.credentials, now)
            }
            None => policy.cacheable(resp, ctx.credentials, now),
        })
    }

    /// `Vary`: the named request headers select the variant.
    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut Ctx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        cache::variance(meta, req)
    }

    /// Stale entries are served while revalidating (within stale-while-revalidate) and when
    /// the origin fails (within stale-if-error).
    fn should_serve_stale(
        &self,
        session: &mut Session,
        _ctx: &mut Ctx,
        error: Option<&Error>,
    ) -> bool {
        match error {
            None => !RequestDirectives::parse(session.req_header()).no_cache,
            Some(e) => e.esource() == &ErrorSource::Upstream,
        }
    }

    /// The route's pool picks a healthy target whose breaker is closed and that this request
    /// has not tried yet.
    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.clone() else {
            return Err(Error::explain(InternalError, "no route in context"));
        };
        let pool = &route.pool;
        // Called again when Pingora retries on its own (a pooled keep-alive connection the
        // origin had closed): that is no failure of the target, so nothing is recorded.
        ctx.target = None;
        let key = Self::hash_key(session, pool.hash_key());
        match pool.select(&key, &ctx.tried) {
            Selection::Target(backend, state) => {
                let peer = pool.peer(&backend, &state);
                ctx.target = Some((state.clone(), backend_id(&backend), Pool::track(&state)));
                ctx.upstream_started.get_or_insert_with(Instant::now);
                if ctx.spans.is_some() && ctx.upstream_started_at.is_none() {
                    ctx.upstream_started_at = Some(SystemTime::now());
                }
                Ok(Box::new(peer))
            }
            Selection::NoneAvailable if ctx.tried.is_empty() => {
                ctx.reply = Some(Reply::new(
                    503,
                    "no_healthy_upstream",
                    format!("no healthy target in origin '{}'", pool.id),
                ));
                Err(Error::explain(HTTPStatus(503), "no healthy upstream"))
            }
            Selection::NoneAvailable => {
                ctx.reply = Some(Reply::new(
                    502,
                    "upstream_unreachable",
                    format!("no target of origin '{}' could be reached", pool.id),
                ));
                Err(Error::explain(HTTPStatus(502), "all tried targets failed"))
            }
        }
    }

    /// Path rewrite, header transforms, X-Forwarded-*, request id, Host.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        let Some(route) = ctx.route.clone() else {
            return Ok(());
        };
        if let Some(pq) = upstream.uri.path_and_query().map(|p| p.as_str()) {
            let new = match route.path.apply(pq) {
                Some(new) => Some(new),
                // Origins get origin-form targets; the host is in Host.
                None if upstream.uri.authority().is_some() => Some(pq.to_string()),
                None => None,
            };
            if let Some(new) = new {
                let uri = new
                    .parse::<http::Uri>()
                    .map_err(|e| Error::because(InternalError, "rewritten path is not a URI", e))?;
                upstream.set_uri(uri);
            }
        }
        self.forwarded_headers(session, ctx, upstream)?;
        if !self.allow_underscores {
            forwarding::drop_underscored(upstream);
        }
        if let Some(t) = &ctx.trace {
            upstream.insert_header(TRACEPARENT, t.header())?;
        }
        // The origin sees the target's host, or the host the tenant was found by in normal
        // form: never a spelling the cache key does not hold.
        let host = if route.pool.spec.preserve_host {
            ctx.host.clone()
        } else {
            ctx.target.as_ref().map(|(t, _, _)| t.host_header.clone())
        };
        if let Some(host) = host {
            upstream.insert_header(http::header::HOST, host)?;
        }
        // Only the gateway speaks for a key or a user.
        for name in [X_API_KEY_ID, X_USER_ID, X_ORG_ID].into_iter().chain(
            route
                .tenant_auth
                .claim_header_names
                .iter()
                .map(String::as_str),
        ) {
            if upstream.headers.contains_key(name) {
                upstream.remove_header(name);
            }
        }
        if route.auth.strip_authorization {
            upstream.remove_header(&http::header::AUTHORIZATION);
            upstream.remove_header("x-api-key");
            if let Some(Identity::User(u)) = &ctx.identity {
                if let Some(name) = &u.cookie {
                    match auth::cookie_without(&upstream.headers, name) {
                        Some(rest) => upstream.insert_header(http::header::COOKIE, rest)?,
                        None => {
                            upstream.remove_header(&http::header::COOKIE);
                        }
                    }
                }
            }
        }
        match &ctx.identity {
            Some(Identity::Key(key)) => {
                upstream.insert_header(X_API_KEY_ID, header_value(&key.id))?;
            }
            Some(Identity::User(user)) => {
                upstream.insert_header(X_USER_ID, header_value(&user.sub))?;
                if let Some(org) = &user.org_id {
                    upstream.insert_header(X_ORG_ID, header_value(org))?;
                }
                for (claim, header) in &user.issuer.spec.claim_headers {
                    let value = match user.claims.get(claim) {
                        Some(serde_json::Value::String(s)) => s.clone(),
                        Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                            v.to_string()
                        }
                        _ => continue,
                    };
                    upstream.insert_header(header.to_ascii_lowercase(), header_value(&value))?;
                }
            }
            None => {}
        }
        route.request_headers.apply_request(upstream);
        Ok(())
    }

    /// Response header transforms and the request id.
    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        ctx.upstream_status = Some(resp.status.as_u16());
        if let Some(route) = &ctx.route {
            route.response_headers.apply_response(resp);
            if !route.access.is_empty() {
                if let Some(cors) = &route.access.cors {
                    for (n, v) in cors.response_headers(&session.req_header().headers) {
                        resp.insert_header(n, v)?;
                    }
                    if cors.varies_by_origin() {
                        // Keep the origin's own Vary (Accept-Encoding, Cookie, ...).
                        resp.append_header(http::header::VARY, "Origin")?;
                    }
                }
                if let Some(sec) = &route.access.security {
                    let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
                    for (n, v) in sec.headers(tls) {
                        resp.insert_header(n, v)?;
                    }
                }
            }
        }
        for (n, v) in ctx.limit_headers.drain(..) {
            resp.insert_header(n, v)?;
        }
        resp.insert_header(X_REQUEST_ID, ctx.request_id.clone())?;
        self.cache_response(session, resp, ctx)
    }

    /// A failed connect counts against the target's breaker and is retried on another
    /// target for idempotent requests, at most `retries` times.
    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some((target, id, _guard)), Some(route)) = (ctx.target.take(), &ctx.route) {
            route.pool.record(&target, false);
            ctx.tried.push(id);
        }
        let retry = ctx.retries_left > 0
            && idempotent(&session.req_header().method)
            && ctx
                .route
                .as_ref()
                .is_some_and(|r| ctx.tried.len() < r.pool.len());
        if retry {
            ctx.retries_left -= 1;
            if let Some(r) = &ctx.route {
                METRICS.retries.with_label_values(&[&r.pool.id]).inc();
            }
        }
        e.set_retry(retry);
        e
    }

    /// JSON 502/503/504 (or the gateway's own decision) with the request id.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let blame = errors::blame(e, session.is_body_done());
        if blame == errors::Blame::Client && e.etype() == &ReadTimedout {
            METRICS.client_timeouts.with_label_values(&["body"]).inc();
        }
        ctx.blame = Some(blame);
        let reply = ctx
            .reply
            .take()
            .map(Reply::closing)
            .or_else(|| errors::proxy_failure(e, blame));
        let code = match reply {
            Some(reply) => {
                let status = reply.status;
                if session.response_written().is_none() {
                    if let Err(err) = errors::respond(session, &reply, ctx.request_id()).await {
                        tracing::debug!("could not send error response: {err}");
                    }
                }
                status
            }
            None => 0,
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// Metrics, breaker accounting and the JSON access log.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        if session.cache.lock_duration().is_some() {
            METRICS.cache_lock_waits.inc();
        }
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let target = ctx.target.take();
        if let (Some((target, _, _)), Some(route)) = (&target, &ctx.route) {
            // A client too slow to send its request says nothing about the origin.
            if ctx.blame.is_none_or(errors::Blame::counts_against_origin) {
                let upstream_failed = e.is_some_and(|e| e.esource() == &ErrorSource::Upstream)
                    || ctx.upstream_status.is_some_and(|s| s >= 500);
                route.pool.record(target, !upstream_failed);
            }
        }
        let origin_id = ctx.route.as_ref().map(|r| &*r.pool.id);
        let elapsed = ctx.started.elapsed();
        let tenant = ctx.tenant.as_deref().unwrap_or("-");
        let route = ctx.route.as_ref().map_or("-", |r| &*r.id);
        let status_code = http::StatusCode::from_u16(status).ok();
        let status_label = status_code.as_ref().map_or("000", |s| s.as_str());
        METRICS
            .requests
            .with_label_values(&[tenant, route, status_label])
            .inc();
        METRICS
            .request_duration
            .with_label_values(&[tenant, route])
            .observe(elapsed.as_secs_f64());
        let upstream_ms = ctx.upstream_started.map(|t| {
            let d = t.elapsed();
            if let Some(o) = origin_id {
                METRICS
                    .upstream_duration
                    .with_label_values(&[o])
                    .observe(d.as_secs_f64());
            }
            d.as_secs_f64() * 1000.0
        });
        if let (Some(otel), Some(mut spans)) = (self.otel, ctx.spans.take()) {
            if let Some(start) = ctx.cache_started {
                let took = session.cache.lookup_duration().unwrap_or_default()
                    + session.cache.lock_duration().unwrap_or_default();
                spans.phase_between("cache", start, start + took);
            }
            if let Some(start) = ctx.upstream_started_at {
                spans.phase("upstream", start);
            }
            let req = session.req_header();
            let mut attrs = vec![
                KeyValue::new("http.request.method", req.method.as_str().to_string()),
                KeyValue::new("url.path", req.uri.path().to_string()),
                KeyValue::new("http.response.status_code", i64::from(status)),
                KeyValue::new("vantage.request_id", ctx.request_id().to_string()),
            ];
            if let Some(t) = &ctx.tenant {
                attrs.push(KeyValue::new("vantage.tenant", t.to_string()));
            }
            if let Some(r) = &ctx.route {
                attrs.push(KeyValue::new("vantage.route", r.id.to_string()));
            }
            if let Some(c) = ctx.cache_label {
                attrs.push(KeyValue::new("vantage.cache", c));
            }
            otel.finish(spans, attrs, status);
        }
        if let Some(logger) = &self.request_logs {
            let req = session.req_header();
            let (api_key_id, user_id) = match &ctx.identity {
                Some(Identity::Key(k)) => (Some(k.id.to_string()), None),
                Some(Identity::User(u)) => (None, Some(u.sub.to_string())),
                None => (None, None),
            };
            logger.log(Record {
                ts: SystemTime::now(),
                request_id: ctx.request_id().to_string(),
                tenant_id: ctx.tenant.as_deref().map(str::to_string),
                route_id: ctx.route.as_ref().map(|r| r.id.to_string()),
                api_key_id,
                user_id,
                method: req.method.as_str().to_string(),
                host: request_host(session).map(str::to_string),
                path: req.uri.path().to_string(),
                status: i32::from(status),
                latency_ms: elapsed.as_secs_f64() * 1000.0,
                bytes_sent: session.body_bytes_sent() as i64,
                client_ip: ctx.client.map(|ip| ip.to_string()),
                cache_status: ctx.cache_label.map(str::to_string),
                upstream: target.as_ref().map(|(t, _, _)| t.label.clone()),
            });
        }
        if self.access_log {
            let req = session.req_header();
            tracing::info!(
                target: "access",
                request_id = ctx.request_id(),
                trace_id = ctx.trace.as_ref().map(|t| t.trace_id.as_str()),
                span_id = ctx.trace.as_ref().map(|t| t.span_id.as_str()),
                client = client_ip(session).map(|ip| ip.to_string()),
                method = %req.method,
                version = ?req.version,
                host = request_host(session).unwrap_or("-"),
                path = %req.uri.path(),
                status,
                tenant,
                route,
                origin = origin_id.unwrap_or("-"),
                upstream = target.as_ref().map_or("-", |(t, _, _)| t.label.as_str()),
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                upstream_ms,
                error = e.map(|e| e.to_string()),
            );
        }
    }
}
