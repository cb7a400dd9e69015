//! Events a tenant may be told about (`events`), and their fan-out to the tenant's webhook
//! endpoints: one `webhook_deliveries` row and one `webhook.deliver` job per endpoint whose
//! filter takes the event, all in the caller's transaction, so an event is never announced
//! without being committed, nor committed without its deliveries.

use crate::worker::kinds;
use crate::worker::queue::{enqueue, NewJob};
use serde_json::{json, Value};
use tokio_postgres::GenericClient;
use uuid::Uuid;

/// Every event type (`type` of an event, and what endpoints filter on).
pub const TYPES: [&str; 12] = [
    ALERT_FIRED,
    ALERT_RESOLVED,
    KEY_CREATED,
    KEY_REVOKED,
    KEY_EXPIRING,
    QUOTA_THRESHOLD,
    PLAN_CHANGED,
    CONFIG_CHANGED,
    BILLING_RECORD_READY,
    KEY_ROTATED,
    POOL_UNHEALTHY,
    TEST,
];
pub const ALERT_FIRED: &str = "alert.fired";
pub const ALERT_RESOLVED: &str = "alert.resolved";
pub const KEY_CREATED: &str = "key.created";
pub const KEY_ROTATED: &str = "key.rotated";
pub const KEY_REVOKED: &str = "key.revoked";
pub const KEY_EXPIRING: &str = "key.expiring";
pub const QUOTA_THRESHOLD: &str = "quota.threshold";
pub const PLAN_CHANGED: &str = "plan.changed";
pub const CONFIG_CHANGED: &str = "config.changed";
pub const BILLING_RECORD_READY: &str = "billing.record_ready";
pub const POOL_UNHEALTHY: &str = "pool.unhealthy";
/// Sent by `POST /webhooks/{id}/test` only.
pub const TEST: &str = "webhook.test";

/// Record an event of `tenant` and queue its deliveries. Returns the event's id (the
/// `webhook-id` of its deliveries).
pub async fn emit(
    c: &impl GenericClient,
    tenant: Uuid,
    kind: &str,
    data: Value,
) -> Result<Uuid, tokio_postgres::Error> {
    emit_to(c, tenant, kind, data, None).await
}

/// [`emit`], to one endpoint only when `only` is given (whatever its filter says).
pub async fn emit_to(
    c: &impl GenericClient,
    tenant: Uuid,
    kind: &str,
    data: Value,
    only: Option<Uuid>,
) -> Result<Uuid, tokio_postgres::Error> {
    let id: Uuid = c
        .query_one(
            "INSERT INTO events (tenant_id, type, data) VALUES ($1, $2, $3) RETURNING id",
            &[&tenant, &kind, &data],
        )
        .await?
        .get(0);
    let deliveries = c
        .query(
            "INSERT INTO webhook_deliveries (tenant_id, endpoint_id, event_id)
             SELECT tenant_id, id, $2 FROM webhook_endpoints
              WHERE tenant_id = $1 AND enabled
                AND (($4::uuid IS NULL AND (cardinality(events) = 0 OR $3 = ANY (events)))
                     OR id = $4)
             RETURNING id",
            &[&tenant, &id, &kind, &only],
        )
        .await?;
    for d in deliveries {
        let delivery: Uuid = d.get(0);
        enqueue(c, &deliver_job(tenant, delivery, None)).await?;
    }
    Ok(id)
}

/// The job that sends delivery `delivery`; `replay` makes a distinct job for a replay.
pub fn deliver_job(tenant: Uuid, delivery: Uuid, replay: Option<Uuid>) -> NewJob {
    let key = match replay {
        None => format!("{}:{delivery}", kinds::WEBHOOK_DELIVER),
        Some(r) => format!("{}:{delivery}:replay:{r}", kinds::WEBHOOK_DELIVER),
    };
    NewJob::new(kinds::WEBHOOK_DELIVER, json!({ "delivery_id": delivery }))
        .dedupe(key)
        .tenant(tenant)
        // The webhook handler follows its own retry schedule and says when it is done.
        .attempts(1000)
}

/// The events a configuration write makes, from the configuration before and after it:
/// keys created and revoked (a rotation's `key.rotated` is emitted by the rotation itself); plans changed (a plan's content, or the plan a
/// key or tenant is on); and one `config.changed` per tenant whose resources changed.
/// Tenants that are gone after the write get none.
pub fn config_events(
    before: &vantage_model::Config,
    after: &vantage_model::Config,
    version: i64,
) -> Vec<(Uuid, &'static str, Value)> {
    use std::collections::{BTreeSet, HashMap};
    use vantage_model::KeyStatus;
    let mut out = Vec::new();
    let live: HashMap<&str, Uuid> = after
        .tenants
        .iter()
        .filter_map(|t| Some((t.id.as_str(), Uuid::parse_str(&t.id).ok()?)))
        .collect();
    let mut push = |tenant: &str, kind: &'static str, data: Value| {
        if let Some(t) = live.get(tenant) {
            out.push((*t, kind, data));
        }
    };
    let old_keys: HashMap<&str, &vantage_model::ApiKey> =
        before.api_keys.iter().map(|k| (k.id.as_str(), k)).collect();
    for k in &after.api_keys {
        let key = json!({"api_key_id": k.id, "name": k.name, "prefix": k.prefix});
        match old_keys.get(k.id.as_str()) {
            None => push(&k.tenant_id, KEY_CREATED, key),
            Some(old) => {
                if old.status == KeyStatus::Active && k.status != KeyStatus::Active {
                    push(&k.tenant_id, KEY_REVOKED, key.clone());
                }
                if old.plan_id != k.plan_id {
                    push(
                        &k.tenant_id,
                        PLAN_CHANGED,
                        json!({"subject": format!("key:{}", k.id), "api_key_id": k.id,
                               "from_plan_id": old.plan_id, "to_plan_id": k.plan_id}),
                    );
                }
            }
        }
    }
    // A key deleted while it worked is revoked too.
    let new_keys: std::collections::HashSet<&str> =
        after.api_keys.iter().map(|k| k.id.as_str()).collect();
    for k in &before.api_keys {
        if k.status == KeyStatus::Active && !new_keys.contains(k.id.as_str()) {
            push(
                &k.tenant_id,
                KEY_REVOKED,
                json!({"api_key_id": k.id, "name": k.name, "prefix": k.prefix, "deleted": true}),
            );
        }
    }
    let old_tenants: HashMap<&str, &vantage_model::Tenant> =
        before.tenants.iter().map(|t| (t.id.as_str(), t)).collect();
    for t in &after.tenants {
        if let Some(old) = old_tenants.get(t.id.as_str()) {
            if old.plan_id != t.plan_id {
                push(
                    &t.id,
                    PLAN_CHANGED,
                    json!({"subject": "tenant", "from_plan_id": old.plan_id,
                           "to_plan_id": t.plan_id}),
                );
            }
        }
    }
    let old_plans: HashMap<&str, &vantage_model::Plan> =
        before.plans.iter().map(|p| (p.id.as_str(), p)).collect();
    for p in &after.plans {
        if let Some(old) = old_plans.get(p.id.as_str()) {
            if *old != p {
                push(
                    &p.tenant_id,
                    PLAN_CHANGED,
                    json!({"plan_id": p.id, "name": p.name}),
                );
            }
        }
    }
    // Which tenants' resources changed at all.
    let mut changed: BTreeSet<String> = BTreeSet::new();
    fn diff<'a, T: PartialEq>(
        changed: &mut std::collections::BTreeSet<String>,
        a: &'a [T],
        b: &'a [T],
        key: impl Fn(&T) -> (&str, &str),
    ) {
        let old: HashMap<&str, &T> = a.iter().map(|x| (key(x).0, x)).collect();
        let new: HashMap<&str, &T> = b.iter().map(|x| (key(x).0, x)).collect();
        for (id, x) in &new {
            if old.get(id).is_none_or(|o| *o != *x) {
                changed.insert(key(x).1.to_string());
            }
        }
        for (id, x) in &old {
            if !new.contains_key(id) {
                changed.insert(key(x).1.to_string());
            }
        }
    }
    diff(&mut changed, &before.tenants, &after.tenants, |t| {
        (&t.id, &t.id)
    });
    diff(&mut changed, &before.origins, &after.origins, |o| {
        (&o.id, &o.tenant_id)
    });
    diff(&mut changed, &before.routes, &after.routes, |r| {
        (&r.id, &r.tenant_id)
    });
    diff(&mut changed, &before.api_keys, &after.api_keys, |k| {
        (&k.id, &k.tenant_id)
    });
    diff(&mut changed, &before.jwt_issuers, &after.jwt_issuers, |j| {
        (&j.id, &j.tenant_id)
    });
    diff(&mut changed, &before.plans, &after.plans, |p| {
        (&p.id, &p.tenant_id)
    });
    for t in changed {
        push(&t, CONFIG_CHANGED, json!({"version": version}));
    }
    out
}
