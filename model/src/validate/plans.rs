//! Plans and what binds to them: each plan's time zone, rate limits and quotas; the plan of
//! a tenant, an API key or a JWT issuer's claim; a route's cost and quota group.

use super::policies::check_limits;
use super::rules::{valid_id, valid_token};
use super::{Collector, ResourceContext, TenantIds};
use crate::bounds as b;
use crate::{Calendar, Config, Plan};
use std::collections::{HashMap, HashSet};

/// Valid plan ids → their tenant.
pub(super) type PlanOwners<'a> = HashMap<&'a str, &'a str>;

/// Every plan. A second plan with the same id, or the same name in one tenant, is a
/// conflict; a tenant that does not exist is a dangling reference.
pub(super) fn check<'a>(
    c: &mut Collector,
    plans: &'a [Plan],
    tenant_ids: &TenantIds<'_>,
    ctx: &ResourceContext,
) -> PlanOwners<'a> {
    let mut owners: PlanOwners<'a> = HashMap::new();
    let mut names: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, plan) in plans.iter().enumerate() {
        let p = format!("plans[{i}]");
        if c.id(format!("{p}.id"), &plan.id) {
            if owners.contains_key(plan.id.as_str()) {
                c.conflict(format!("{p}.id"), format!("'{}' is listed twice", plan.id));
            } else {
                owners.insert(&plan.id, &plan.tenant_id);
            }
        }
        c.tenant_ref(format!("{p}.tenant_id"), &plan.tenant_id, tenant_ids);
        if !valid_id(&plan.name) {
            c.err(
                format!("{p}.name"),
                "must be 1-64 characters of A-Z a-z 0-9 . _ -",
            );
        } else if let Some(j) = names.insert((&plan.tenant_id, &plan.name), i) {
            c.conflict(
                format!("{p}.name"),
                format!("'{}' is already the name of plans[{j}]", plan.name),
            );
        }
        if let Err(e) = Calendar::new(&plan.time_zone) {
            c.err(format!("{p}.time_zone"), e);
        }
        check_limits(
            c,
            &format!("{p}.rate_limits"),
            &plan.rate_limits,
            ctx.has_redis,
        );
        c.max_items(format!("{p}.quotas"), plan.quotas.len(), b::POLICIES);
        let mut quota_names = HashSet::new();
        for (k, q) in plan.quotas.iter().enumerate() {
            let qp = format!("{p}.quotas[{k}]");
            if !valid_id(&q.name) {
                c.err(
                    format!("{qp}.name"),
                    "must be 1-64 characters of A-Z a-z 0-9 . _ -",
                );
            } else if !quota_names.insert(q.name.as_str())
                || plan.rate_limits.iter().any(|l| l.name == q.name)
            {
                c.err(
                    format!("{qp}.name"),
                    format!("'{}' is already a policy of this plan", q.name),
                );
            }
            c.range(format!("{qp}.limit"), q.limit, 1, b::QUOTA_LIMIT);
            if q.period.is_none() {
                c.err(format!("{qp}.period"), "is required: hour, day or month");
            }
            if let Some(g) = &q.group {
                if !valid_id(g) {
                    c.err(
                        format!("{qp}.group"),
                        "must be 1-64 characters of A-Z a-z 0-9 . _ -",
                    );
                }
            }
        }
        if let Some(bill) = &plan.billing {
            let bp = format!("{p}.billing");
            if iso_currency::Currency::from_code(&bill.currency).is_none() {
                c.err(
                    format!("{bp}.currency"),
                    format!(
                        "'{}' is not an ISO 4217 currency code (e.g. EUR, USD, JPY)",
                        bill.currency
                    ),
                );
            }
            c.range(format!("{bp}.base_fee"), bill.base_fee, 0, b::MONEY);
            c.range(
                format!("{bp}.included_units"),
                bill.included_units,
                0,
                b::QUOTA_LIMIT,
            );
            c.range(format!("{bp}.unit_price"), bill.unit_price, 0, b::MONEY);
            c.range(format!("{bp}.per_units"), bill.per_units, 1, b::QUOTA_LIMIT);
        }
    }
    owners
}

/// The plan references of tenants, API keys and JWT issuers (a plan of the same tenant),
/// and the routes' cost and quota group.
pub(super) fn check_bindings(c: &mut Collector, cfg: &Config, owners: &PlanOwners<'_>) {
    let plan_ref = |c: &mut Collector, path: String, plan: &Option<String>, tenant: &str| {
        let Some(plan) = plan else { return };
        match owners.get(plan.as_str()) {
            Some(owner) if *owner == tenant => {}
            _ => c.reference(path, format!("the tenant has no plan with id '{plan}'")),
        }
    };
    for (i, t) in cfg.tenants.iter().enumerate() {
        plan_ref(c, format!("tenants[{i}].plan_id"), &t.plan_id, &t.id);
    }
    for (i, k) in cfg.api_keys.iter().enumerate() {
        plan_ref(
            c,
            format!("api_keys[{i}].plan_id"),
            &k.plan_id,
            &k.tenant_id,
        );
    }
    for (i, j) in cfg.jwt_issuers.iter().enumerate() {
        if let Some(claim) = &j.plan_claim {
            if !valid_token(claim) || claim.len() > b::TOKEN_BYTES {
                c.err(
                    format!("jwt_issuers[{i}].plan_claim"),
                    "must be a claim name (1-128 characters, no spaces)",
                );
            }
        }
    }
    for (i, r) in cfg.routes.iter().enumerate() {
        c.range(
            format!("routes[{i}].quota.cost"),
            r.quota.cost,
            1,
            b::QUOTA_COST,
        );
        if let Some(g) = &r.quota.group {
            if !valid_id(g) {
                c.err(
                    format!("routes[{i}].quota.group"),
                    "must be 1-64 characters of A-Z a-z 0-9 . _ -",
                );
            }
        }
    }
}
