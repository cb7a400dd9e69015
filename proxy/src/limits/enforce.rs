//! Rate-limit enforcement for a routed request: each policy of the route and its tenant →
//! the subject's key → a local or Redis decision (with the policy's Redis-failure mode) →
//! the strictest decision → the `RateLimit` response fields or the 429.
//!
//! A request refused by a local policy is counted by none: with several policies, the
//! local ones look before anything counts, so one refusal does not use up another's quota
//! (two requests racing between the look and the count can both pass). Redis policies
//! count in Redis, one round trip each.

use super::redis::RedisLimiter;
use super::{headers, Decision, Store};
use crate::auth::Identity;
use crate::errors::Reply;
use crate::forwarding;
use crate::snapshot::{PolicyRt, RouteRt};
use crate::telemetry::metrics::METRICS;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;
use std::sync::Arc;
use vantage_model::{LimitBackend, LimitSubject, OnRedisError};

/// Who a request is, for the policies' subjects.
pub struct Subject<'a> {
    /// The client address (behind trusted balancers: from `X-Forwarded-For`), else the peer.
    pub client: Option<IpAddr>,
    /// The verified API key or JWT.
    pub identity: Option<&'a Identity>,
    pub headers: &'a HeaderMap,
}

/// Response fields of an admitted request (`RateLimit-*` of the strictest policy).
pub type LimitHeaders = Vec<(HeaderName, HeaderValue)>;

/// The process's rate limiter: local counters that outlive reloads, and Redis when
/// `server.redis` is set.
pub struct Enforcer {
    local: Store,
    redis: Option<Arc<RedisLimiter>>,
}

impl Enforcer {
    pub fn new(redis: Option<Arc<RedisLimiter>>) -> Enforcer {
        Enforcer {
            local: Store::default(),
            redis,
        }
    }

    /// Every policy of `route` (the route's, then its tenant's ceilings) applies; the
    /// strictest decides. `Err` is the reply: 429, or 503 when Redis fails under `deny`.
    pub async fn enforce(
        &self,
        route: &RouteRt,
        tenant: &str,
        subject: &Subject<'_>,
    ) -> Result<LimitHeaders, Reply> {
        let now = self.local.now();
        let keys: Vec<String> = route
            .limits
            .iter()
            .map(|p| key(p, route, subject))
            .collect();
        let policies = || route.limits.iter().zip(&keys);
        // With a single policy there is nothing to protect: count straight away.
        let local_refusal = policies()
            .filter(|(p, _)| p.backend == LimitBackend::Local && route.limits.len() > 1)
            .map(|(p, k)| (p, self.local.peek(k, &p.algorithm, now)))
            .filter(|(_, d)| !d.allowed)
            .max_by_key(|(_, d)| d.retry_after_s);
        let mut decisions: Vec<(&str, Decision)> = Vec::with_capacity(keys.len());
        if let Some((p, d)) = local_refusal {
            decisions.push((&p.name, d));
        } else {
            for (p, k) in policies() {
                if let Some(d) = self.decide(p, k, now, tenant).await? {
                    decisions.push((&p.name, d));
                }
            }
        }
        let refused = decisions
            .iter()
            .filter(|(_, d)| !d.allowed)
            .max_by_key(|(_, d)| d.retry_after_s);
        let chosen = refused.or_else(|| decisions.iter().min_by_key(|(_, d)| d.remaining));
        let Some((name, d)) = chosen else {
            return Ok(Vec::new());
        };
        let result = if d.allowed { "allowed" } else { "limited" };
        METRICS
            .ratelimit
            .with_label_values(&[tenant, &route.id, result])
            .inc();
        let fields = headers(name, d);
        if d.allowed {
            return Ok(fields);
        }
        let mut reply = Reply::new(
            429,
            "rate_limited",
            format!(
                "rate limit '{name}' exceeded; retry in {} s",
                d.retry_after_s
            ),
        );
        reply.headers = fields;
        Err(reply)
    }

    /// One policy's decision; `None` when Redis failed and the policy allows without it.
    async fn decide(
        &self,
        p: &PolicyRt,
        key: &str,
        now: u64,
        tenant: &str,
    ) -> Result<Option<Decision>, Reply> {
        let redis = match (p.backend, &self.redis) {
            (LimitBackend::Redis, Some(redis)) => redis,
            _ => return Ok(Some(self.local.check(key, &p.algorithm, now))),
        };
        let e = match redis.check(key, &p.algorithm).await {
            Ok(d) => return Ok(Some(d)),
            Err(e) => e,
        };
        let mode = match p.on_redis_error {
            OnRedisError::Allow => "allow",
            OnRedisError::Deny => "deny",
            OnRedisError::Local => "local",
        };
        METRICS.ratelimit_fallbacks.with_label_values(&[mode]).inc();
        tracing::warn!(tenant, policy = %p.name, mode, "rate limit without Redis: {e}");
        match p.on_redis_error {
            OnRedisError::Allow => Ok(None),
            OnRedisError::Deny => Err(Reply::new(
                503,
                "rate_limit_unavailable",
                "the rate limiter is unavailable; try again shortly",
            )
            .with_header("retry-after", "1")),
            OnRedisError::Local => Ok(Some(self.local.check(key, &p.algorithm, now))),
        }
    }
}

/// The counter key of `policy` for this request: the policy's prefix, then its subject
/// (requests without the subject's credential or header count by client address).
fn key(policy: &PolicyRt, route: &RouteRt, s: &Subject<'_>) -> String {
    let mut key = String::with_capacity(policy.key_prefix.len() + 48);
    key.push_str(&policy.key_prefix);
    let by_ip = |key: &mut String| {
        key.push_str("ip:");
        if let Some(ip) = s.client {
            forwarding::push_ip(key, ip);
        }
    };
    match &policy.subject {
        LimitSubject::Tenant => {}
        LimitSubject::Route => key.push_str(&route.id),
        LimitSubject::ClientIp => by_ip(&mut key),
        LimitSubject::ApiKey => match s.identity {
            Some(Identity::Key(k)) => {
                key.push_str("key:");
                key.push_str(&k.id);
            }
            _ => by_ip(&mut key),
        },
        LimitSubject::User => match s.identity {
            Some(Identity::User(u)) => {
                key.push_str("user:");
                key.push_str(&u.sub);
            }
            _ => by_ip(&mut key),
        },
        LimitSubject::Header { name } => match s.headers.get(name.as_str()) {
            Some(v) => {
                key.push_str("h:");
                key.push_str(&String::from_utf8_lossy(v.as_bytes()));
            }
            None => by_ip(&mut key),
        },
    }
    key
}
