//! The request path: one Pingora `ProxyHttp` implementation whose phase methods read as a
//! table of contents. Each phase is a few calls into the modules that own the concerns:
//! [`crate::safety`], tenant and route lookup in the [`crate::snapshot`], [`crate::access`],
//! [`crate::auth`], rate limits ([`crate::limits::enforce`]), the [`crate::cache`],
//! [`crate::upstream`] pools, [`crate::transform`], [`crate::forwarding`], and
//! [`crate::telemetry`] at the end. The per-request state is [`Ctx`].

mod admission;
mod ctx;

pub use ctx::{peer, Ctx};

use crate::cache::{self, Caches, RequestDirectives};
use crate::errors::{self, Reply};
use crate::limits::enforce::Enforcer;
use crate::safety::{self, HeadLimits};
use crate::snapshot::{request_host, Snapshot};
use crate::telemetry::metrics::METRICS;
use crate::telemetry::otel::Otel;
use crate::telemetry::request_log::RequestLogger;
use crate::telemetry::usage::Meter;
use crate::telemetry::Telemetry;
use crate::upstream::mirror;
use crate::{auth, forwarding, transform, upstream};
use admission::Admit;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use ctx::{tls, TRACEPARENT, X_REQUEST_ID};
use pingora::cache::key::HashBinary;
use pingora::cache::{CacheKey, CacheMeta, ForcedFreshness, HitHandler, RespCacheable};
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::ErrorSource;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

static KEEP_ALIVE: http::HeaderName = http::HeaderName::from_static("keep-alive");

/// The gateway: reads the current snapshot for every request.
pub struct Gateway {
    state: Arc<ArcSwap<Snapshot>>,
    head_limits: HeadLimits,
    forwarded_headers: bool,
    allow_underscores: bool,
    /// Rate limits and quotas: local counters (they outlive reloads) and Redis; shared with
    /// the decision service.
    limiter: Arc<Enforcer>,
    /// Response cache storages, lock and purges.
    caches: &'static Caches,
    telemetry: Telemetry,
}

/// The process-wide services a gateway uses besides the configuration snapshot.
pub struct Services {
    /// Rate limits and quotas (local counters, and Redis when `server.redis` is set).
    pub limiter: Arc<Enforcer>,
    pub caches: &'static Caches,
    /// Request-log records for Postgres, when enabled.
    pub request_logs: Option<RequestLogger>,
    /// Usage metering into Postgres, when enabled.
    pub meter: Option<Meter>,
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
        crate::telemetry::metrics::configure(&settings.metrics);
        Gateway {
            state,
            head_limits: HeadLimits {
                max_headers: settings.max_request_headers,
                max_header_bytes: settings.max_request_header_bytes,
                max_uri_bytes: settings.client_limits.max_uri_bytes,
            },
            forwarded_headers: settings.forwarded_headers,
            allow_underscores: settings.allow_underscores_in_headers,
            limiter: services.limiter,
            caches: services.caches,
            telemetry: Telemetry::new(
                settings.access_log,
                services.request_logs,
                services.meter,
                services.otel,
            ),
        }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        let snapshot = self.state.load_full();
        crate::telemetry::series::follow(&snapshot);
        Ctx::new(snapshot)
    }

    /// Request id and trace → head checks → tenant → route → access, auth, rate limits.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        let traceparent = session.req_header().headers.get(&TRACEPARENT);
        let (trace, spans) = self.telemetry.start(traceparent, ctx.clock.started);
        ctx.begin(session, trace, spans);
        let routed = safety::check_session(session, self.head_limits)
            .and_then(|()| self.route(session, ctx));
        let decision = match routed {
            Ok(()) => self.admit(session, ctx).await,
            Err(e) => Err(e),
        };
        match decision {
            Ok(Admit::Proxy) => self.direct(session, ctx),
            Ok(Admit::Preflight(headers)) => {
                admission::answer_preflight(session, headers, ctx).await?;
                return Ok(true);
            }
            Ok(Admit::UsageReport(body)) => {
                errors::respond_json(session, 200, &body, ctx.request_id()).await?;
                return Ok(true);
            }
            Err(reply) => {
                admission::refuse(session, reply, ctx).await?;
                return Ok(true);
            }
        }
        if let Some(level) = ctx.routing.route.as_ref().and_then(|r| r.compression) {
            transform::enable_compression(session, level);
        }
        Ok(false)
    }

    /// Caching routes enable pingora-cache with the route's storage, lock timeout and size
    /// bound, unless the request bypasses the cache.
    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<()> {
        let Some(policy) = ctx.routing.route.as_ref().and_then(|r| r.cache.as_ref()) else {
            return Ok(());
        };
        ctx.clock.cache_lookup = ctx.clock.mark();
        let req = session.req_header();
        ctx.cache.credentials = cache::carries_credentials(req, ctx.request.identity.is_some());
        if policy.bypass_reason(req, ctx.cache.credentials).is_none() {
            self.caches.enable(&mut session.cache, policy);
        }
        Ok(())
    }

    /// Tenant and its purge generation first, then route, scheme and host, path (and
    /// query) and key headers.
    fn cache_key_callback(&self, session: &Session, ctx: &mut Ctx) -> pingora::Result<CacheKey> {
        let (Some(tenant), Some(route)) = (&ctx.routing.tenant, &ctx.routing.route) else {
            return Err(Error::explain(InternalError, "cache key without a route"));
        };
        let Some(policy) = &route.cache else {
            return Err(Error::explain(
                InternalError,
                "cache key on a non-caching route",
            ));
        };
        let generation = self.caches.purges.generation(tenant);
        let scheme = if tls(session) { "https" } else { "http" };
        let host = ctx.routing.host.as_ref().map_or(&b""[..], |h| h.as_bytes());
        let req = session.req_header();
        Ok(policy.key(tenant, generation, &route.id, (scheme, host), req))
    }

    /// A lookup missed; the origin's response may fill the cache.
    fn cache_miss(&self, session: &mut Session, ctx: &mut Ctx) {
        ctx.cache.missed = true;
        session.cache.cache_miss();
    }

    /// Purged URLs are refetched; the request's own directives may force revalidation.
    async fn cache_hit_filter(
        &self,
        session: &mut Session,
        meta: &CacheMeta,
        _hit_handler: &mut HitHandler,
        is_fresh: bool,
        ctx: &mut Ctx,
    ) -> pingora::Result<Option<ForcedFreshness>> {
        let Some(tenant) = &ctx.routing.tenant else {
            return Ok(None);
        };
        let req = session.req_header();
        Ok(self.caches.forced_freshness(tenant, req, meta, is_fresh))
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

    /// Keeps the origin's 304 to a revalidation for `response_cache_filter`; upgraded
    /// connections lose the request body timeout; the origin's `Keep-Alive` is noted.
    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        if resp.status == http::StatusCode::NOT_MODIFIED && session.cache.enabled() {
            ctx.cache.not_modified = Some(Box::new(resp.clone()));
        }
        // An upgraded connection (WebSocket) may be quiet for long: the origin's read timeout
        // governs it, not the timeout between request body reads.
        if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
            session.set_read_timeout(None);
        }
        // Hop-by-hop: how long the origin keeps our connection says nothing about the
        // client's.
        if let Some(v) = resp.remove_header(&KEEP_ALIVE) {
            if let Some(a) = &ctx.upstream.current {
                a.target.note_keep_alive(v.as_bytes());
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
        let Some(policy) = ctx.routing.route.as_ref().and_then(|r| r.cache.as_ref()) else {
            return Ok(RespCacheable::Uncacheable(
                pingora::cache::NoCacheReason::NeverEnabled,
            ));
        };
        let (credentials, now) = (ctx.cache.credentials, SystemTime::now());
        Ok(match ctx.cache.not_modified.take() {
            Some(nm) => {
                // From the stored response itself: pingora's merge already took the 304's ETag.
                let meta = session.cache.maybe_cache_meta();
                let stored = meta.map_or(resp, |m| m.response_header());
                let merged = cache::merge_not_modified(stored, &nm);
                policy.cacheable(&merged, credentials, now)
            }
            None => policy.cacheable(resp, credentials, now),
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
    /// the origin fails (within stale-if-error), or has no target available when the
    /// route's fallback takes stale entries.
    fn should_serve_stale(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        error: Option<&Error>,
    ) -> bool {
        match error {
            None => !RequestDirectives::parse(session.req_header()).no_cache,
            Some(e) => e.esource() == &ErrorSource::Upstream || ctx.stale_fallback(),
        }
    }

    /// The route's pool picks a healthy target whose breaker is closed and that this request
    /// has not tried yet.
    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let Some(pool) = ctx.routing.pool.clone() else {
            return Err(Error::explain(InternalError, "no origin in context"));
        };
        let req = session.req_header();
        let key = upstream::hash_input(pool.hash_key(), req, || peer(session));
        let pinned = pool
            .affinity
            .as_ref()
            .and_then(|a| upstream::cookie(req, &a.cookie));
        match ctx.upstream.next(&pool, &key, pinned) {
            Ok(peer) => {
                ctx.clock.upstream.get_or_insert_with(Instant::now);
                Ok(Box::new(peer))
            }
            Err(reply) => {
                let (status, why) = match reply.status {
                    503 => (503, "no healthy upstream"),
                    s => (s, "all tried targets failed"),
                };
                ctx.upstream.reply = Some(reply);
                Err(Error::explain(HTTPStatus(status), why))
            }
        }
    }

    /// Path rewrite, request id, X-Forwarded-*, trace context, Host, identity, transforms.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        let (Some(route), Some(pool)) = (ctx.routing.route.clone(), ctx.routing.pool.clone())
        else {
            return Ok(());
        };
        route.path.rewrite(upstream)?;
        upstream.insert_header(X_REQUEST_ID.as_str(), ctx.request.id.clone())?;
        if self.forwarded_headers {
            let hop = forwarding::Hop::new(
                peer(session),
                &ctx.snapshot.trusted_proxies,
                tls(session),
                ctx.routing.host.as_ref(),
            );
            forwarding::apply(upstream, &hop)?;
        }
        if !self.allow_underscores {
            forwarding::drop_underscored(upstream);
        }
        if let Some(t) = &ctx.request.trace {
            upstream.insert_header(TRACEPARENT.as_str(), t.header())?;
        }
        // Never a spelling of the host the cache key does not hold.
        if let Some(host) = ctx.upstream.host_header(&pool, ctx.routing.host.as_ref()) {
            upstream.insert_header(http::header::HOST, host)?;
        }
        let identity = ctx.request.identity.as_ref();
        auth::forward_identity(upstream, &route.auth, &route.tenant_auth, identity)?;
        route.request_headers.apply_request(upstream);
        // Only the gateway's copies say they are copies.
        upstream.remove_header(&mirror::X_VANTAGE_MIRROR);
        if let Some(copy) = &mut ctx.routing.mirror {
            copy.head(upstream);
        }
        Ok(())
    }

    /// A mirroring route's copy takes the body as it passes (up to its bound).
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        if let (Some(copy), Some(chunk)) = (&mut ctx.routing.mirror, body.as_ref()) {
            copy.body(chunk);
        }
        Ok(())
    }

    /// Response transforms, access headers, rate-limit fields, the request id; then the
    /// cache's `X-Cache` and the invalidation an unsafe method causes.
    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        ctx.upstream.status = Some(resp.status.as_u16());
        let req = session.req_header();
        if let Some(route) = &ctx.routing.route {
            if let Some(version) = &route.traffic.version {
                version.apply(resp)?;
            }
            route.response_headers.apply_response(resp);
            if !route.access.is_empty() {
                route
                    .access
                    .apply_response_headers(&req.headers, tls(session), resp)?;
            }
        }
        for (n, v) in ctx.routing.limit_headers.drain(..) {
            resp.insert_header(n, v)?;
        }
        if let Some(cookie) = ctx
            .routing
            .pool
            .as_ref()
            .and_then(|p| ctx.upstream.affinity_cookie(p))
        {
            resp.append_header(http::header::SET_COOKIE, cookie)?;
        }
        resp.insert_header(X_REQUEST_ID.as_str(), ctx.request.id.clone())?;
        cache::directives::strip_own(resp);
        if ctx
            .routing
            .route
            .as_ref()
            .is_some_and(|r| r.cache.is_some())
        {
            let label = cache::label_response(session.cache.phase(), ctx.cache.missed, resp)?;
            ctx.cache.label = Some(label);
            if label == "STALE" && ctx.stale_fallback() {
                let tenant = ctx.routing.tenant.as_deref().unwrap_or_default();
                upstream::fallback::FallbackRt::mark_stale(resp, tenant)?;
            }
        }
        if let (true, Some(tenant)) = (ctx.routing.tenant_caches, &ctx.routing.tenant) {
            let purges = self.caches.purges;
            cache::invalidate::after_response(purges, tenant, req, request_host(req), resp);
        }
        Ok(())
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
        let retry = match &ctx.routing.pool {
            Some(pool) => {
                let method = &session.req_header().method;
                ctx.upstream.connect_failed(pool, method)
            }
            None => false,
        };
        e.set_retry(retry);
        e
    }

    /// JSON 502/503/504 (or the gateway's own decision) with the request id.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let blame = errors::blame(e, session.is_body_done());
        if blame == errors::Blame::Client && e.etype() == &ReadTimedout {
            METRICS.client_timeouts.with_label_values(&["body"]).inc();
        }
        ctx.upstream.blame = Some(blame);
        let reply = ctx.upstream.reply.take().map(Reply::closing);
        // No target could take it: the route's fallback answer, when it has one.
        let route = ctx.routing.route.clone();
        let fallback = route
            .as_ref()
            .and_then(|r| r.traffic.fallback.as_ref())
            .filter(|_| {
                reply
                    .as_ref()
                    .is_some_and(|r| r.code == "no_healthy_upstream")
            });
        if let Some(fallback) = fallback {
            let tenant = ctx.routing.tenant.as_deref().unwrap_or_default();
            if session.response_written().is_none() {
                if let Err(err) = fallback.respond(session, tenant, ctx.request_id()).await {
                    tracing::debug!("could not send fallback response: {err}");
                }
            }
            return FailToProxy {
                error_code: 503,
                can_reuse_downstream: false,
            };
        }
        let mut code = 0;
        if let Some(reply) = reply.or_else(|| errors::proxy_failure(e, blame)) {
            code = reply.status;
            if session.response_written().is_none() {
                if let Err(err) = errors::respond(session, &reply, ctx.request_id()).await {
                    tracing::debug!("could not send error response: {err}");
                }
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// The breaker learns how the last attempt ended; the telemetry sinks get the summary.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        if let Some(pool) = &ctx.routing.pool {
            ctx.upstream.settle(pool, e);
        }
        if let Some(copy) = ctx.routing.mirror.take() {
            copy.send(session.is_body_done());
        }
        let spans = ctx.finish_spans(session);
        self.telemetry.finish(&ctx.summary(session, e), spans);
    }
}
