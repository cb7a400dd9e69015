//! Rate-limit and quota enforcement for a routed request: each policy of the route, its
//! tenant and the request's plans → the subject's key → a local or Redis decision (with the
//! policy's Redis-failure mode) → the strictest enforced decision; then the plans' calendar
//! quotas ([`super::quota`]) → the `RateLimit` response fields, or the 429. Policies and
//! quotas in `shadow` mode are decided and counted like the others, but their refusals are
//! only recorded as violations.
//!
//! A request refused by a local policy is counted by none: with several policies, the
//! local ones look before anything counts, so one refusal does not use up another's quota
//! (two requests racing between the look and the count can both pass). Redis policies
//! count in Redis, one round trip each.

use super::plan::{self, QuotaRt, TenantPlans};
use super::quota::QuotaDecision;
use super::quota::{Charge, QuotaCounter};
use super::redis::RedisLimiter;
use super::{Decision, Store, Verdict};
use crate::auth::Identity;
use crate::errors::Reply;
use crate::forwarding;
use crate::snapshot::{PolicyRt, RouteRt};
use crate::telemetry::metrics::METRICS;
use crate::telemetry::series::{DecisionSeries, QuotaResult, RateResult};
use crate::telemetry::usage::Violation;
use http::{HeaderMap, HeaderValue};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vantage_model::{
    EnforcementMode, LimitBackend, LimitSubject, OnRedisError, Overage, RateLimitHeaders,
};

/// Who a request is, for the policies' subjects.
pub struct Subject<'a> {
    /// The client address (behind trusted balancers: from `X-Forwarded-For`), else the peer.
    pub client: Option<IpAddr>,
    /// The verified API key or JWT.
    pub identity: Option<&'a Identity>,
    pub headers: &'a HeaderMap,
    /// Who is asking when there is no request to tell (the decision service's subject):
    /// counted by policies whose subject the request lacks, instead of an address.
    pub named: Option<&'a str>,
}

/// Response fields of an admitted request (`RateLimit-*` of the strictest policy).
pub type LimitHeaders = Vec<(&'static str, HeaderValue)>;

/// What the limits said of an admitted request.
#[derive(Default)]
pub struct Admitted {
    /// `RateLimit-*` fields for the response.
    pub headers: LimitHeaders,
    /// Quota units charged: the scope's cost, when some enforced quota counted the request.
    pub units: i64,
    /// Of those, the units past the limit of a quota with `overage: allow` (the most over
    /// any one quota).
    pub overage: i64,
    /// The policy closest to refusing, when any applied.
    pub verdict: Option<Verdict>,
}

/// A refused request: the reply to send, and (for a 429) the policy that refused it.
pub struct Refusal {
    pub reply: Reply,
    pub verdict: Option<Verdict>,
}

impl From<Reply> for Refusal {
    fn from(reply: Reply) -> Refusal {
        Refusal {
            reply,
            verdict: None,
        }
    }
}

/// What one request is counted against: a route's policies, or (for a decision asked of
/// the decision service without a route) a quota group of the tenant's plans.
pub struct Scope<'a> {
    /// The route's id (the subject of `by: route` policies).
    pub route_id: &'a str,
    /// The route's and the tenant's rate-limit policies.
    pub limits: &'a [PolicyRt],
    pub plans: &'a TenantPlans,
    /// Quotas with this group count the request (besides those without a group).
    pub group: Option<&'a str>,
    /// Units of each counting quota the request uses.
    pub cost: i64,
    /// The plans do not apply.
    pub exempt: bool,
}

impl RouteRt {
    /// The route's policies, plans, quota group and cost.
    pub fn scope(&self) -> Scope<'_> {
        Scope {
            route_id: &self.id,
            limits: &self.limits,
            plans: &self.plans,
            group: self.quota.group.as_deref(),
            cost: self.quota.cost,
            exempt: self.quota.exempt,
        }
    }
}

impl Scope<'_> {
    /// Anything to decide: policies of its own, or plans that bind something.
    pub fn applies(&self) -> bool {
        !self.limits.is_empty() || (!self.exempt && !self.plans.is_empty())
    }
}

/// The process's rate limiter and quota counters: local counters that outlive reloads, and
/// Redis when `server.redis` is set.
pub struct Enforcer {
    local: Store,
    redis: Option<Arc<RedisLimiter>>,
    pub quotas: QuotaCounter,
    /// Which rate-limit fields responses carry (`server.rate_limit_headers`).
    fields: RateLimitHeaders,
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Enforcer {
    pub fn new(redis: Option<Arc<RedisLimiter>>) -> Enforcer {
        Enforcer {
            local: Store::default(),
            quotas: QuotaCounter::new(redis.clone()),
            redis,
            fields: RateLimitHeaders::All,
        }
    }

    /// Responses carry the rate-limit fields `which` names.
    pub fn with_fields(mut self, which: RateLimitHeaders) -> Enforcer {
        self.fields = which;
        self
    }

    /// Every rate-limit policy of `scope` (the route's, its tenant's ceilings, and those of
    /// the plans the request is on) applies; the strictest enforced one decides. Then the
    /// plans' quotas that count the scope are charged its cost. Refusals, and would-be
    /// refusals of shadow-mode policies, are added to `violations`; the decisions are
    /// counted in `counted`. `Err` is the reply: 429, or 503 when Redis fails under `deny`.
    pub async fn enforce(
        &self,
        scope: &Scope<'_>,
        tenant: &str,
        subject: &Subject<'_>,
        counted: DecisionSeries<'_>,
        violations: &mut Vec<Violation>,
    ) -> Result<Admitted, Refusal> {
        let bound = if scope.exempt {
            Vec::new()
        } else {
            plan::bound(scope.plans, subject.identity)
        };
        self.enforce_counted(scope, &bound, tenant, subject, counted, violations)
            .await
    }

    /// [`Enforcer::enforce`] with the plans given (`bound`) rather than found from the
    /// request's identity: the decision service names them. Its decisions count in the
    /// tenant's series (`route="_tenant"`).
    pub async fn enforce_bound(
        &self,
        scope: &Scope<'_>,
        bound: &[plan::Bound],
        tenant: &str,
        subject: &Subject<'_>,
        violations: &mut Vec<Violation>,
    ) -> Result<Admitted, Refusal> {
        let counted = DecisionSeries::Tenant(tenant);
        self.enforce_counted(scope, bound, tenant, subject, counted, violations)
            .await
    }

    async fn enforce_counted(
        &self,
        scope: &Scope<'_>,
        bound: &[plan::Bound],
        tenant: &str,
        subject: &Subject<'_>,
        counted_in: DecisionSeries<'_>,
        violations: &mut Vec<Violation>,
    ) -> Result<Admitted, Refusal> {
        let rate = self
            .rate_limits(scope, bound, tenant, subject, counted_in, violations)
            .await?;
        let rate = rate.as_ref().map(|(n, d)| (&**n, d));
        let mut quotas = Vec::new();
        let mut overage = 0;
        let now = unix_now();
        for b in bound {
            let counted: Vec<&QuotaRt> = b
                .plan
                .quotas
                .iter()
                .filter(|q| q.counts(scope.group))
                .collect();
            if counted.is_empty() {
                continue;
            }
            let charge = self
                .quotas
                .charge(tenant, &b.plan, &b.subject, &counted, scope.cost, now)
                .await;
            let decisions = match charge {
                Charge::Counted(decisions) => decisions,
                Charge::Refused(decisions, i) => {
                    return Err(quota_refusal(
                        counted_in,
                        &b.plan.name,
                        rate,
                        &counted,
                        decisions,
                        i,
                        violations,
                        now,
                        self.fields,
                    ));
                }
                Charge::Unavailable => {
                    return Err(Reply::new(
                        503,
                        "quota_unavailable",
                        "the quota service is unavailable; try again shortly",
                    )
                    .with_header("retry-after", "1")
                    .into())
                }
                Charge::Skipped => continue,
            };
            for (q, d) in counted.iter().zip(decisions) {
                if d.over && q.mode == EnforcementMode::Shadow && q.overage == Overage::Block {
                    violations.push(Violation::quota(&d.name, EnforcementMode::Shadow));
                }
                if q.mode == EnforcementMode::Enforce {
                    if d.over {
                        overage = overage.max(scope.cost.min(d.used - d.limit));
                    }
                    quotas.push(d);
                }
            }
        }
        if !quotas.is_empty() {
            counted_in.quota(if overage > 0 {
                QuotaResult::Overage
            } else {
                QuotaResult::Counted
            });
        }
        Ok(Admitted {
            headers: super::fields(self.fields, rate, &quotas, now, None),
            units: if quotas.is_empty() { 0 } else { scope.cost },
            overage,
            verdict: super::verdict(rate, &quotas, now, None),
        })
    }

    /// The rate limits: `Ok` with the strictest enforced decision (for the response fields),
    /// `Err` with the 429 (or 503).
    async fn rate_limits(
        &self,
        scope: &Scope<'_>,
        bound: &[plan::Bound],
        tenant: &str,
        subject: &Subject<'_>,
        counted_in: DecisionSeries<'_>,
        violations: &mut Vec<Violation>,
    ) -> Result<Option<(Arc<str>, Decision)>, Refusal> {
        // A plan bound twice (a key on its tenant's own plan) applies its rate limits once.
        let plans = bound
            .iter()
            .enumerate()
            .filter(|(i, b)| !bound[..*i].iter().any(|e| e.plan.id == b.plan.id))
            .flat_map(|(_, b)| b.plan.limits.iter());
        let policies: Vec<&PolicyRt> = scope.limits.iter().chain(plans).collect();
        if policies.is_empty() {
            return Ok(None);
        }
        let now = self.local.now();
        let keys: Vec<String> = policies
            .iter()
            .map(|p| key(p, scope.route_id, subject))
            .collect();
        let pairs = || policies.iter().copied().zip(&keys);
        // With a single policy there is nothing to protect: count straight away.
        let local_refusal = pairs()
            .filter(|(p, _)| {
                p.backend == LimitBackend::Local
                    && p.mode == EnforcementMode::Enforce
                    && policies.len() > 1
            })
            .map(|(p, k)| (p, self.local.peek(k, &p.algorithm, now)))
            .filter(|(_, d)| !d.allowed)
            .max_by_key(|(_, d)| d.retry_after_s);
        let mut decisions: Vec<(&PolicyRt, Decision)> = Vec::with_capacity(keys.len());
        if let Some((p, d)) = local_refusal {
            decisions.push((p, d));
        } else {
            for (p, k) in pairs() {
                let Some(d) = self.decide(p, k, now, tenant).await? else {
                    continue;
                };
                if p.mode == EnforcementMode::Enforce {
                    decisions.push((p, d));
                } else if !d.allowed {
                    violations.push(Violation::rate_limit(&p.name, EnforcementMode::Shadow));
                }
            }
        }
        let refused = decisions
            .iter()
            .filter(|(_, d)| !d.allowed)
            .max_by_key(|(_, d)| d.retry_after_s);
        let chosen = refused.or_else(|| decisions.iter().min_by_key(|(_, d)| d.remaining));
        let Some((p, d)) = chosen else {
            return Ok(None);
        };
        counted_in.ratelimit(if d.allowed {
            RateResult::Allowed
        } else {
            RateResult::Limited
        });
        if d.allowed {
            return Ok(Some((p.name.clone(), d.clone())));
        }
        violations.push(Violation::rate_limit(&p.name, EnforcementMode::Enforce));
        let mut reply = Reply::new(
            429,
            "rate_limited",
            format!(
                "rate limit '{}' exceeded; retry in {} s",
                p.name, d.retry_after_s
            ),
        );
        reply.headers = super::named(super::fields(self.fields, Some((&p.name, d)), &[], 0, None));
        Err(Refusal {
            reply,
            verdict: super::verdict(Some((&p.name, d)), &[], 0, None),
        })
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
fn key(policy: &PolicyRt, route_id: &str, s: &Subject<'_>) -> String {
    let mut key = String::with_capacity(policy.key_prefix.len() + 48);
    key.push_str(&policy.key_prefix);
    let by_ip = |key: &mut String| match (s.client, s.named) {
        (None, Some(name)) => {
            key.push_str("named:");
            key.push_str(name);
        }
        (client, _) => {
            key.push_str("ip:");
            if let Some(ip) = client {
                forwarding::push_ip(key, ip);
            }
        }
    };
    match &policy.subject {
        LimitSubject::Tenant => {}
        LimitSubject::Route => key.push_str(route_id),
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

/// The 429 of a quota (`decisions[i]` refused; nothing was counted).
#[allow(clippy::too_many_arguments)]
fn quota_refusal(
    counted_in: DecisionSeries<'_>,
    plan: &str,
    rate: Option<(&str, &Decision)>,
    counted: &[&QuotaRt],
    decisions: Vec<QuotaDecision>,
    i: usize,
    violations: &mut Vec<Violation>,
    now: i64,
    which: RateLimitHeaders,
) -> Refusal {
    let d = &decisions[i];
    violations.push(Violation::quota(&d.name, EnforcementMode::Enforce));
    counted_in.quota(QuotaResult::Exceeded);
    let left = d.window.seconds_left(now);
    let reset = UNIX_EPOCH + Duration::from_secs(d.window.end.max(0) as u64);
    let mut reply = Reply::new(
        429,
        "quota_exceeded",
        format!(
            "quota '{}' of plan '{plan}' is used up until {}",
            d.name,
            humantime::format_rfc3339_seconds(reset)
        ),
    );
    let refusing = d.clone();
    let shown: Vec<QuotaDecision> = counted
        .iter()
        .zip(decisions)
        .filter(|(q, _)| q.mode == EnforcementMode::Enforce)
        .map(|(_, d)| d)
        .collect();
    reply.headers = super::named(super::fields(which, rate, &shown, now, Some(left)));
    Refusal {
        reply,
        verdict: super::verdict(None, std::slice::from_ref(&refusing), now, Some(left)),
    }
}
