//! The admission sequence of `request_filter`: tenant and route, then the route's access
//! policy, authentication and rate limits. Each step is a call into the module that owns
//! it; this file only orders them and keeps what they found in the context.

use super::ctx::{peer, Ctx, X_REQUEST_ID};
use super::Gateway;
use crate::errors::{self, Reply};
use crate::limits::enforce::Subject;
use crate::limits::report;
use crate::telemetry::metrics::METRICS;
use crate::telemetry::series::{self, DecisionSeries};
use crate::telemetry::usage::{Violation, ViolationKind};
use crate::{access, auth};
use http::{HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use std::time::SystemTime;
use vantage_model::AuthMode;

/// What the policies decided for a routed request.
pub(super) enum Admit {
    Proxy,
    /// A CORS preflight to answer with 204 and these headers.
    Preflight(Vec<(HeaderName, HeaderValue)>),
    /// The key holder's usage report to answer with 200.
    UsageReport(serde_json::Value),
}

impl Gateway {
    /// Tenant by host, then route; `Err` is the reply to send.
    pub(super) fn route(&self, session: &Session, ctx: &mut Ctx) -> Result<(), Reply> {
        let req = session.req_header();
        let (tenant, host) = ctx.snapshot.find_tenant(req)?;
        ctx.routing.tenant = Some(tenant.id.clone());
        ctx.routing.tenant_rt = Some(tenant.clone());
        ctx.routing.host = Some(host.clone());
        ctx.routing.tenant_caches = tenant.caches;
        if req.uri.path() == report::USAGE_PATH {
            ctx.routing.usage_report = true;
            return Ok(());
        }
        let routed = tenant.find_route(req)?;
        ctx.routing.route = Some(routed.route.clone());
        ctx.routing.series = Some(series::route_series(&tenant.id, routed.route));
        if routed.preflight.is_some() {
            ctx.routing.preflight = routed.preflight;
            return Ok(());
        }
        if let Some(version) = &routed.route.traffic.version {
            version.admit(&tenant.id, SystemTime::now())?;
        }
        routed.route.check_method(&req.method)
    }

    /// The origin of an admitted request (its split's choice, else the route's) and the
    /// copy a mirroring route takes.
    pub(super) fn direct(&self, session: &Session, ctx: &mut Ctx) {
        let Some(route) = &ctx.routing.route else {
            return;
        };
        let t = &route.traffic;
        let pool = match &t.split {
            None => route.pool.clone(),
            Some(split) => {
                let req = session.req_header();
                let identity = ctx.request.identity.as_ref();
                let client = || ctx.request.client.or_else(|| peer(session));
                let pool = split.choose(req, identity, client).clone();
                let tenant = ctx.routing.tenant.as_deref().unwrap_or_default();
                METRICS.split.inc(&[tenant, &route.id, &pool.id]);
                pool
            }
        };
        ctx.routing.mirror = t.mirror.as_ref().and_then(|m| m.take());
        ctx.upstream.start(&pool);
        ctx.routing.pool = Some(pool);
    }

    /// Access policy, authentication and rate limits of the matched route.
    pub(super) async fn admit(&self, session: &Session, ctx: &mut Ctx) -> Result<Admit, Reply> {
        if ctx.routing.usage_report {
            return self.usage_report(session, ctx).await;
        }
        let Some(route) = ctx.routing.route.clone() else {
            return Ok(Admit::Proxy);
        };
        let req = session.req_header();
        let trusted = &ctx.snapshot.trusted_proxies;
        if !trusted.is_empty() || route.access.ip_rules.is_some() {
            ctx.request.client = access::client_address(peer(session), &req.headers, trusted);
        }
        if let Some(rules) = &route.access.ip_rules {
            rules.check(ctx.request.client).inspect_err(|r| {
                let v = Violation::refusal(ViolationKind::Ip, r.code);
                ctx.metering.violations.push(v);
            })?;
        }
        if let (Some(method), Some(cors)) = (&ctx.routing.preflight, &route.access.cors) {
            return cors.preflight(&req.headers, method).map(Admit::Preflight);
        }
        let tenant = ctx.routing.tenant.clone().unwrap_or_else(|| "".into());
        let since = ctx.clock.mark();
        let no_keys = auth::KeyIndex::default();
        let keys = ctx.routing.tenant_rt.as_ref().map_or(&no_keys, |t| &t.keys);
        let identity = auth::authenticate(
            &route.auth,
            &tenant,
            &route.tenant_auth,
            &req.headers,
            keys,
            SystemTime::now(),
        )
        .await
        .inspect_err(|r| {
            METRICS.auth_failures.inc(&[&tenant, r.code]);
            let v = Violation::refusal(ViolationKind::Auth, r.code);
            ctx.metering.violations.push(v);
        });
        if route.auth.mode != AuthMode::Public {
            ctx.clock.phase("auth", since);
        }
        ctx.request.identity = identity?;
        let scope = route.scope();
        // A cache's background revalidation (a subrequest) is the gateway's own: it uses no
        // client's rate limit or quota.
        if scope.applies() && session.subrequest_ctx.is_none() {
            let since = ctx.clock.mark();
            let subject = Subject {
                client: ctx.request.client.or_else(|| peer(session)),
                identity: ctx.request.identity.as_ref(),
                headers: &req.headers,
                named: None,
            };
            let violations = &mut ctx.metering.violations;
            let counted = match &ctx.routing.series {
                Some(s) => DecisionSeries::Route(s),
                None => DecisionSeries::Tenant(&tenant),
            };
            let limited = self
                .limiter
                .enforce(&scope, &tenant, &subject, counted, violations)
                .await;
            ctx.clock.phase("rate_limit", since);
            let admitted = limited.map_err(|r| r.reply)?;
            ctx.routing.limit_headers = admitted.headers;
            ctx.metering.units = admitted.units;
            ctx.metering.overage = admitted.overage;
        }
        Ok(Admit::Proxy)
    }
}

impl Gateway {
    /// The key holder's report ([`report`]): the key authenticates it.
    async fn usage_report(&self, session: &Session, ctx: &mut Ctx) -> Result<Admit, Reply> {
        let req = session.req_header();
        let tenant = ctx.routing.tenant.clone().unwrap_or_else(|| "".into());
        let key = report::authenticate(&req.method, &tenant, &req.headers, &ctx.snapshot)
            .inspect_err(|r| {
                let v = Violation::refusal(ViolationKind::Auth, r.code);
                ctx.metering.violations.push(v);
            })?;
        let body = report::usage(&self.limiter, &tenant, &key).await;
        ctx.request.identity = Some(auth::Identity::Key(key));
        Ok(Admit::UsageReport(body))
    }
}

/// Answer a CORS preflight: 204 with the policy's fields.
pub(super) async fn answer_preflight(
    session: &mut Session,
    headers: Vec<(HeaderName, HeaderValue)>,
    ctx: &Ctx,
) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(204, Some(headers.len() + 2))?;
    for (n, v) in headers {
        resp.append_header(n, v)?;
    }
    resp.insert_header(X_REQUEST_ID.as_str(), ctx.request.id.clone())?;
    resp.insert_header(http::header::CONTENT_LENGTH, "0")?;
    session.write_response_header(Box::new(resp), true).await
}

/// Send the gateway's refusal; browsers may read it on CORS-enabled routes.
pub(super) async fn refuse(
    session: &mut Session,
    mut reply: Reply,
    ctx: &Ctx,
) -> pingora::Result<()> {
    if let Some(cors) = ctx
        .routing
        .route
        .as_ref()
        .and_then(|r| r.access.cors.as_ref())
    {
        reply
            .headers
            .extend(cors.response_headers(&session.req_header().headers));
    }
    errors::respond(session, &reply, ctx.request_id()).await
}
