//! The key holder's usage report: `GET /.well-known/vantage/usage` on any host of a tenant,
//! authenticated by the API key itself (`X-API-Key` or `Authorization: Bearer`), answers
//! with the key's plan, its quotas and what is left of each in the current period — from
//! the same counters the proxies charge, without reaching an origin.
//!
//! Only the key's own figures are shown: never its tenant's plan (whose counters are the
//! whole tenant's), never another key's, and never quotas in `shadow` mode (the operator's
//! experiments).

use super::enforce::{unix_now, Enforcer};
use crate::auth::{self, KeyIndex, KeyRt};
use crate::errors::Reply;
use crate::snapshot::Snapshot;
use http::{HeaderMap, Method};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vantage_model::{AuthMode, EnforcementMode, QuotaSubject, RouteAuth};

/// The reserved path (on every tenant host; it never reaches an origin).
pub const USAGE_PATH: &str = "/.well-known/vantage/usage";

fn rfc3339(unix: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64))
        .to_string()
}

/// Authenticate the key of `tenant`; `Err` is the refusal.
pub fn authenticate(
    method: &Method,
    tenant: &str,
    headers: &HeaderMap,
    snapshot: &Snapshot,
) -> Result<Arc<KeyRt>, Reply> {
    if method != Method::GET && method != Method::HEAD {
        return Err(Reply::new(
            405,
            "method_not_allowed",
            "the usage report answers GET and HEAD",
        )
        .with_header("allow", "GET, HEAD"));
    }
    let auth = RouteAuth {
        mode: AuthMode::ApikeyRequired,
        ..RouteAuth::default()
    };
    auth::check_key(
        &auth,
        tenant,
        auth::presented_key(headers),
        snapshot
            .tenant(tenant)
            .map_or(&KeyIndex::default(), |t| &t.keys),
        SystemTime::now(),
    )
}

/// The report of `key` (authenticated for `tenant`).
pub async fn usage(enforcer: &Enforcer, tenant: &str, key: &KeyRt) -> Value {
    let Some(plan) = &key.plan else {
        return json!({"key_id": &*key.id, "plan": null, "quotas": [], "rate_limits": []});
    };
    let now = unix_now();
    let subject = QuotaSubject::Key(key.id.to_string());
    let counts = enforcer.quotas.read(tenant, plan, &subject, now).await;
    let quotas: Vec<Value> = plan
        .quotas
        .iter()
        .zip(counts)
        .filter(|(q, _)| q.mode == EnforcementMode::Enforce)
        .map(|(q, (window, used))| {
            json!({
                "name": &*q.name,
                "limit": q.limit,
                "period": q.period,
                "group": q.group,
                "overage": q.overage,
                "used": used,
                "remaining": used.map(|u| (q.limit - u).max(0)),
                "period_start": rfc3339(window.start),
                "reset_at": rfc3339(window.end),
                "reset_in_s": window.seconds_left(now),
            })
        })
        .collect();
    let rate_limits: Vec<Value> = plan
        .limits
        .iter()
        .filter(|l| l.mode == EnforcementMode::Enforce)
        .map(|l| json!({"name": &*l.name, "algorithm": &l.algorithm, "subject": &l.subject}))
        .collect();
    json!({
        "key_id": &*key.id,
        "plan": {"name": plan.name, "time_zone": plan.time_zone},
        "quotas": quotas,
        "rate_limits": rate_limits,
    })
}
