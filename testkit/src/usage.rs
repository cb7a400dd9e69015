//! Usage as the proxies record it: one batch through `vantage_apply_usage_batch`, the very
//! function the proxies' usage writers call, for tests of what is computed from usage
//! (billing, alerts) at times a test cannot wait for (last month).

use crate::postgres::Database;

/// One usage row of a batch.
#[derive(Debug, Clone)]
pub struct UsageRow {
    /// Unix seconds (rounded into its minute, quarter hour, hour and day by Postgres).
    pub ts: i64,
    pub tenant: String,
    /// `key:<id>`, `user:<sub>`, or empty for anonymous requests.
    pub subject: String,
    pub route: String,
    /// 2 for 2xx, 5 for 5xx ...
    pub status_class: i16,
    pub requests: i64,
    pub units: i64,
}

impl UsageRow {
    /// `requests` 2xx requests costing one unit each.
    pub fn new(ts: i64, tenant: &str, subject: &str, requests: i64) -> UsageRow {
        UsageRow {
            ts,
            tenant: tenant.to_string(),
            subject: subject.to_string(),
            route: String::new(),
            status_class: 2,
            requests,
            units: requests,
        }
    }
}

fn sql_text_array(items: impl Iterator<Item = String>) -> String {
    let quoted: Vec<String> = items
        .map(|s| format!("'{}'", s.replace('\'', "''")))
        .collect();
    format!("ARRAY[{}]::text[]", quoted.join(","))
}

/// One violation row of a batch (refusals of one kind of rule, as a proxy aggregates them).
#[derive(Debug, Clone)]
pub struct ViolationRow {
    /// Unix seconds (rounded into its minute by Postgres).
    pub ts: i64,
    pub tenant: String,
    /// `key:<id>`, `user:<sub>`, `ip:<address>`.
    pub subject: String,
    /// `rate_limit`, `quota`, `auth` or `ip`.
    pub kind: String,
    /// The policy's name (or the error code of auth and IP rules).
    pub policy: String,
    /// `enforce` or `shadow`.
    pub mode: String,
    pub route: String,
    /// The error code answered. Example: `rate_limited`.
    pub code: String,
    pub count: i64,
}

impl ViolationRow {
    /// `count` enforced refusals of `kind` (policy `burst`, code `rate_limited`).
    pub fn new(ts: i64, tenant: &str, subject: &str, kind: &str, count: i64) -> ViolationRow {
        ViolationRow {
            ts,
            tenant: tenant.to_string(),
            subject: subject.to_string(),
            kind: kind.to_string(),
            policy: "burst".into(),
            mode: "enforce".into(),
            route: String::new(),
            code: "rate_limited".into(),
            count,
        }
    }
}

fn sql_array<T>(items: &[T], ty: &str, f: impl Fn(&T) -> String) -> String {
    let v: Vec<String> = items.iter().map(f).collect();
    format!("ARRAY[{}]::{ty}[]", v.join(","))
}

/// Apply `rows` as one new batch (a fresh batch id); true when it was applied.
pub fn apply_usage_batch(db: &Database, rows: &[UsageRow]) -> bool {
    apply_batch(db, rows, &[])
}

/// Apply usage `rows` and `violations` as one new batch (a fresh batch id), the way a proxy
/// does; true when it was applied.
pub fn apply_batch(db: &Database, rows: &[UsageRow], violations: &[ViolationRow]) -> bool {
    let ts = |t: &i64| format!("to_timestamp({t})");
    let text = |items: Vec<String>| sql_text_array(items.into_iter());
    let sql = format!(
        "SELECT vantage_apply_usage_batch('{batch}'::uuid, 'test-proxy',
            {u_ts}, {u_tenant}, {u_subject}, {u_route}, {u_class},
            {u_requests}, {u_bytes}, {u_bytes}, {u_units}, {u_zeros},
            {v_ts}, {v_tenant}, {v_subject}, {v_kind}, {v_policy}, {v_mode}, {v_route}, {v_code},
            {v_count}, {v_ts}, {v_ts}, {v_sample})",
        batch = uuid::Uuid::new_v4(),
        u_ts = sql_array(rows, "timestamptz", |r| ts(&r.ts)),
        u_tenant = text(rows.iter().map(|r| r.tenant.clone()).collect()),
        u_subject = text(rows.iter().map(|r| r.subject.clone()).collect()),
        u_route = text(rows.iter().map(|r| r.route.clone()).collect()),
        u_class = sql_array(rows, "int2", |r| r.status_class.to_string()),
        u_requests = sql_array(rows, "int8", |r| r.requests.to_string()),
        u_bytes = sql_array(rows, "int8", |r| (r.requests * 100).to_string()),
        u_units = sql_array(rows, "int8", |r| r.units.to_string()),
        u_zeros = sql_array(rows, "int8", |_| "0".to_string()),
        v_ts = sql_array(violations, "timestamptz", |v| ts(&v.ts)),
        v_tenant = text(violations.iter().map(|v| v.tenant.clone()).collect()),
        v_subject = text(violations.iter().map(|v| v.subject.clone()).collect()),
        v_kind = text(violations.iter().map(|v| v.kind.clone()).collect()),
        v_policy = text(violations.iter().map(|v| v.policy.clone()).collect()),
        v_mode = text(violations.iter().map(|v| v.mode.clone()).collect()),
        v_route = text(violations.iter().map(|v| v.route.clone()).collect()),
        v_code = text(violations.iter().map(|v| v.code.clone()).collect()),
        v_count = sql_array(violations, "int8", |v| v.count.to_string()),
        v_sample = text(violations.iter().map(|_| "req-1".to_string()).collect()),
    );
    db.sql(&sql).trim() == "t"
}
