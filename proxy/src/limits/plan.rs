//! Plans as the request path reads them: compiled once per snapshot, bound to API keys (by
//! `plan_id`), to JWT subjects (by the issuer's `plan_claim`, naming a plan of the tenant)
//! and to the tenant itself.
//!
//! A request is on at most two plans: its consumer's (the key's or the token's) and its
//! tenant's. The consumer's plan counts that key or subject; the tenant's plan counts the
//! whole tenant. A route with `quota.exempt` is on none.

use crate::auth::Identity;
use crate::snapshot::PolicyRt;
use std::collections::HashMap;
use std::sync::Arc;
use vantage_model::{
    Calendar, Config, EnforcementMode, OnRedisError, Overage, Plan, QuotaPeriod, QuotaSubject,
};

/// A compiled plan.
pub struct PlanRt {
    pub id: Arc<str>,
    pub name: String,
    pub time_zone: String,
    pub calendar: Calendar,
    /// The plan's rate limits (counted per their own subject).
    pub limits: Vec<PolicyRt>,
    pub quotas: Vec<QuotaRt>,
}

impl std::fmt::Debug for PlanRt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanRt")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A compiled calendar quota.
pub struct QuotaRt {
    pub name: Arc<str>,
    pub limit: i64,
    pub period: QuotaPeriod,
    pub group: Option<String>,
    pub overage: Overage,
    pub mode: EnforcementMode,
    pub on_redis_error: OnRedisError,
}

impl QuotaRt {
    /// Requests of a route in `group` count against this quota.
    pub fn counts(&self, group: Option<&str>) -> bool {
        match &self.group {
            None => true,
            Some(g) => group == Some(g.as_str()),
        }
    }

    /// Past the limit the request is refused (an enforced quota that blocks).
    pub fn blocks(&self) -> bool {
        self.overage == Overage::Block && self.mode == EnforcementMode::Enforce
    }
}

impl PlanRt {
    fn compile(p: &Plan) -> PlanRt {
        PlanRt {
            id: p.id.as_str().into(),
            name: p.name.clone(),
            time_zone: p.time_zone.clone(),
            // Validated; an unknown zone (impossible after validation) counts in UTC.
            calendar: Calendar::new(&p.time_zone)
                .or_else(|_| Calendar::new("UTC"))
                .expect("UTC is always a time zone"),
            limits: p
                .rate_limits
                .iter()
                .map(|l| PolicyRt::compile(&p.tenant_id, &format!("plan:{}", p.id), l))
                .collect(),
            quotas: p
                .quotas
                .iter()
                .map(|q| QuotaRt {
                    name: q.name.as_str().into(),
                    limit: q.limit,
                    period: q.period.unwrap_or(QuotaPeriod::Month),
                    group: q.group.clone(),
                    overage: q.overage,
                    mode: q.mode,
                    on_redis_error: q.on_redis_error,
                })
                .collect(),
        }
    }
}

/// Every plan of a configuration, by id.
pub fn compile(cfg: &Config) -> HashMap<String, Arc<PlanRt>> {
    cfg.plans
        .iter()
        .map(|p| (p.id.clone(), Arc::new(PlanRt::compile(p))))
        .collect()
}

/// The plans of one tenant: its own, and all of them by name (for JWT plan claims).
#[derive(Default)]
pub struct TenantPlans {
    pub own: Option<Arc<PlanRt>>,
    pub by_name: HashMap<String, Arc<PlanRt>>,
}

impl TenantPlans {
    /// The plans of `tenant` among `plans`.
    pub fn of(
        tenant: &vantage_model::Tenant,
        cfg: &Config,
        plans: &HashMap<String, Arc<PlanRt>>,
    ) -> TenantPlans {
        TenantPlans {
            own: tenant
                .plan_id
                .as_ref()
                .and_then(|id| plans.get(id).cloned()),
            by_name: cfg
                .plans
                .iter()
                .filter(|p| p.tenant_id == tenant.id)
                .filter_map(|p| Some((p.name.clone(), plans.get(&p.id)?.clone())))
                .collect(),
        }
    }

    /// Nothing to apply: no plan binds anything of the tenant.
    pub fn is_empty(&self) -> bool {
        self.own.is_none() && self.by_name.is_empty()
    }
}

/// A plan that applies to a request, and whose counters it uses.
pub struct Bound {
    pub plan: Arc<PlanRt>,
    pub subject: QuotaSubject,
}

/// The consumer's plan (the key's, or the one the token's plan claim names), then the
/// tenant's.
pub fn bound(tenant: &TenantPlans, identity: Option<&Identity>) -> Vec<Bound> {
    let mut out = Vec::new();
    let consumer = match identity {
        Some(Identity::Key(k)) => k
            .plan
            .clone()
            .map(|plan| (plan, QuotaSubject::Key(k.id.to_string()))),
        Some(Identity::User(u)) => u
            .issuer
            .spec
            .plan_claim
            .as_deref()
            .and_then(|claim| u.claims.get(claim))
            .and_then(|v| v.as_str())
            .and_then(|name| tenant.by_name.get(name))
            .map(|plan| (plan.clone(), QuotaSubject::User(u.sub.clone()))),
        None => None,
    };
    if let Some((plan, subject)) = consumer {
        out.push(Bound { plan, subject });
    }
    if let Some(plan) = &tenant.own {
        out.push(Bound {
            plan: plan.clone(),
            subject: QuotaSubject::Tenant,
        });
    }
    out
}
