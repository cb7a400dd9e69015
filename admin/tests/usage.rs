//! Usage and violations as the proxies write them (`vantage_apply_usage_batch`), read back
//! through `GET /usage` and `GET /violations`; and the maintenance of their partitions and
//! retention.
//!
//! The rows are of fixed days long past (June 2021), so no answer depends on today's date
//! or on the partitions around it; the admins keep everything (retention 0) so that their
//! partition maintenance never races the test.

use serde_json::{json, Value};
use std::time::SystemTime;
use vantage_testkit::{bodies, id, wait_for, Admin, AdminSetup, Database, Worker};

/// Settings that keep every row whatever its age.
const KEEP_ALL: &str = "usage_minute_retention_days: 0\nusage_hour_retention_days: 0\n\
                        violation_retention_days: 0\n";

fn at(s: &str) -> SystemTime {
    humantime::parse_rfc3339(s).unwrap()
}

/// One usage row of a batch: ts, tenant, subject, route, class, requests, request bytes,
/// response bytes, units, overage.
type Usage<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    i16,
    i64,
    i64,
    i64,
    i64,
    i64,
);

/// One violation of a batch: ts (also first and last seen), tenant, subject, kind, policy,
/// mode, route, code, count, sample request id.
type Violation<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    i64,
    &'a str,
);

/// Apply a batch the way the proxies do; whether it was new.
async fn apply(
    c: &tokio_postgres::Client,
    batch: uuid::Uuid,
    usage: &[Usage<'_>],
    violations: &[Violation<'_>],
) -> bool {
    let u_ts: Vec<SystemTime> = usage.iter().map(|u| at(u.0)).collect();
    let u_tenant: Vec<&str> = usage.iter().map(|u| u.1).collect();
    let u_subject: Vec<&str> = usage.iter().map(|u| u.2).collect();
    let u_route: Vec<&str> = usage.iter().map(|u| u.3).collect();
    let u_class: Vec<i16> = usage.iter().map(|u| u.4).collect();
    let u_requests: Vec<i64> = usage.iter().map(|u| u.5).collect();
    let u_req_bytes: Vec<i64> = usage.iter().map(|u| u.6).collect();
    let u_resp_bytes: Vec<i64> = usage.iter().map(|u| u.7).collect();
    let u_units: Vec<i64> = usage.iter().map(|u| u.8).collect();
    let u_overage: Vec<i64> = usage.iter().map(|u| u.9).collect();
    let v_ts: Vec<SystemTime> = violations.iter().map(|v| at(v.0)).collect();
    let v_tenant: Vec<&str> = violations.iter().map(|v| v.1).collect();
    let v_subject: Vec<&str> = violations.iter().map(|v| v.2).collect();
    let v_kind: Vec<&str> = violations.iter().map(|v| v.3).collect();
    let v_policy: Vec<&str> = violations.iter().map(|v| v.4).collect();
    let v_mode: Vec<&str> = violations.iter().map(|v| v.5).collect();
    let v_route: Vec<&str> = violations.iter().map(|v| v.6).collect();
    let v_code: Vec<&str> = violations.iter().map(|v| v.7).collect();
    let v_count: Vec<i64> = violations.iter().map(|v| v.8).collect();
    let v_sample: Vec<&str> = violations.iter().map(|v| v.9).collect();
    c.query_one(
        "SELECT vantage_apply_usage_batch($1, $2, $3::timestamptz[], $4::text[], \
         $5::text[], $6::text[], $7::int2[], $8::int8[], $9::int8[], $10::int8[], $11::int8[], \
         $12::int8[], $13::timestamptz[], $14::text[], $15::text[], $16::text[], $17::text[], \
         $18::text[], $19::text[], $20::text[], $21::int8[], $22::timestamptz[], \
         $23::timestamptz[], $24::text[])",
        &[
            &batch,
            &"test-proxy",
            &u_ts,
            &u_tenant,
            &u_subject,
            &u_route,
            &u_class,
            &u_requests,
            &u_req_bytes,
            &u_resp_bytes,
            &u_units,
            &u_overage,
            &v_ts,
            &v_tenant,
            &v_subject,
            &v_kind,
            &v_policy,
            &v_mode,
            &v_route,
            &v_code,
            &v_count,
            &v_ts,
            &v_ts,
            &v_sample,
        ],
    )
    .await
    .unwrap()
    .get(0)
}

/// Tenants acme and globex with known usage and violations on 15-16 June 2021.
struct Metered {
    a: Admin,
    acme: String,
    globex: String,
    /// Acme's API keys k1 and k2, globex's key.
    k1: String,
    k2: String,
    kg: String,
}

async fn metered() -> Metered {
    let a = AdminSetup::fresh().settings(KEEP_ALL).start();
    let acme = id(&a.create("/api/v1/tenants", bodies::tenant("acme")));
    let globex = id(&a.create("/api/v1/tenants", bodies::tenant("globex")));
    let key =
        |t: &str, n: &str| id(&a.create("/api/v1/api-keys", json!({"tenant_id": t, "name": n})));
    let (k1, k2, kg) = (key(&acme, "k1"), key(&acme, "k2"), key(&globex, "kg"));
    let (s1, s2, sg) = (
        format!("key:{k1}"),
        format!("key:{k2}"),
        format!("key:{kg}"),
    );
    let c = a.db.client().await;
    let first = uuid::Uuid::new_v4();
    let usage = [
        // Two parts of acme's minute 10:15 of k1 on r1 (2xx), one 4xx in the next minute.
        (
            "2021-06-15T10:15:10Z",
            &*acme,
            &*s1,
            "r1",
            2,
            3,
            300,
            3000,
            3,
            0,
        ),
        (
            "2021-06-15T10:15:50Z",
            &*acme,
            &*s1,
            "r1",
            2,
            2,
            200,
            2000,
            2,
            0,
        ),
        (
            "2021-06-15T10:16:05Z",
            &*acme,
            &*s1,
            "r1",
            4,
            1,
            100,
            50,
            1,
            0,
        ),
        // k2 on r2 (cost 5), two of its requests past an `overage: allow` quota.
        (
            "2021-06-15T10:45:00Z",
            &*acme,
            &*s2,
            "r2",
            2,
            4,
            400,
            800,
            20,
            2,
        ),
        // A JWT user's 5xx, the next hour; k1 again the next UTC day.
        (
            "2021-06-15T11:05:00Z",
            &*acme,
            "user:u1",
            "r1",
            5,
            1,
            10,
            20,
            1,
            0,
        ),
        (
            "2021-06-16T00:30:00Z",
            &*acme,
            &*s1,
            "r1",
            2,
            7,
            70,
            700,
            7,
            0,
        ),
        // Globex.
        (
            "2021-06-15T10:20:00Z",
            &*globex,
            &*sg,
            "rg",
            2,
            9,
            90,
            900,
            9,
            0,
        ),
    ];
    let violations = [
        // Two parts of one minute of k1's rate limit: counted together.
        (
            "2021-06-15T10:15:10Z",
            &*acme,
            &*s1,
            "rate_limit",
            "per-key",
            "enforce",
            "r1",
            "rate_limited",
            3,
            "req-a",
        ),
        (
            "2021-06-15T10:15:40Z",
            &*acme,
            &*s1,
            "rate_limit",
            "per-key",
            "enforce",
            "r1",
            "rate_limited",
            1,
            "req-b",
        ),
        (
            "2021-06-15T10:16:00Z",
            &*acme,
            &*s1,
            "quota",
            "monthly",
            "shadow",
            "r1",
            "quota_exceeded",
            2,
            "req-c",
        ),
        (
            "2021-06-15T10:20:00Z",
            &*acme,
            "ip:203.0.113.7",
            "ip",
            "ip_denied",
            "enforce",
            "",
            "ip_denied",
            1,
            "req-d",
        ),
        (
            "2021-06-15T10:30:00Z",
            &*acme,
            "",
            "auth",
            "unauthorized",
            "enforce",
            "r1",
            "unauthorized",
            4,
            "req-e",
        ),
        (
            "2021-06-15T10:20:00Z",
            &*globex,
            &*sg,
            "rate_limit",
            "ceiling",
            "enforce",
            "rg",
            "rate_limited",
            5,
            "req-g",
        ),
    ];
    assert!(apply(&c, first, &usage, &violations).await);
    // The same batch again (a retry after a lost reply) counts nothing.
    assert!(!apply(&c, first, &usage, &violations).await);
    // A later batch adds to acme's minute 10:15.
    let more = [(
        "2021-06-15T10:15:30Z",
        &*acme,
        &*s1,
        "r1",
        2,
        1,
        100,
        1000,
        1,
        0,
    )];
    assert!(apply(&c, uuid::Uuid::new_v4(), &more, &[]).await);
    Metered {
        a,
        acme,
        globex,
        k1,
        k2,
        kg,
    }
}

/// The rows of a usage answer as (ts, subject, route, class, requests).
fn usage_rows(body: &Value) -> Vec<(String, String, String, i64, i64)> {
    body["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("rows in {body}"))
        .iter()
        .map(|r| {
            (
                r["ts"].as_str().unwrap().to_string(),
                r["subject"].as_str().unwrap().to_string(),
                r["route_id"].as_str().unwrap().to_string(),
                r["status_class"].as_i64().unwrap(),
                r["requests"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// `rows` in the order of the answer: by ts, subject, route and status class (the keys'
/// ids are random, so k1 and k2 come in either order).
fn sorted<const N: usize>(
    mut rows: [(String, String, String, i64, i64); N],
) -> [(String, String, String, i64, i64); N] {
    rows.sort();
    rows
}

fn row(
    ts: &str,
    subject: &str,
    route: &str,
    class: i64,
    requests: i64,
) -> (String, String, String, i64, i64) {
    (ts.into(), subject.into(), route.into(), class, requests)
}

const RANGE: &str = "from=2021-06-15T10:00:00Z&to=2021-06-15T12:00:00Z";

#[tokio::test]
async fn usage_per_minute_hour_and_day_with_filters_and_totals() {
    let Metered {
        a, acme, k1, k2, ..
    } = metered().await;
    let (s1, s2) = (format!("key:{k1}"), format!("key:{k2}"));
    let get = |q: &str| {
        let r = a.root("GET", &format!("/api/v1/usage?tenant_id={acme}&{q}"), None);
        assert_eq!(r.status, 200, "{q}: {:?}", r.body);
        r.body
    };
    // Per minute: the parts of a minute add up, across batches too.
    let minutes = get(&format!("{RANGE}&granularity=minute"));
    assert_eq!(minutes["granularity"], "minute");
    assert_eq!(
        usage_rows(&minutes),
        [
            row("2021-06-15T10:15:00Z", &s1, "r1", 2, 6),
            row("2021-06-15T10:16:00Z", &s1, "r1", 4, 1),
            row("2021-06-15T10:45:00Z", &s2, "r2", 2, 4),
            row("2021-06-15T11:05:00Z", "user:u1", "r1", 5, 1),
        ]
    );
    let first = &minutes["rows"][0];
    assert_eq!(
        (
            &first["tenant_id"],
            &first["request_bytes"],
            &first["response_bytes"],
            &first["units"],
            &first["overage"]
        ),
        (
            &json!(acme),
            &json!(600),
            &json!(6000),
            &json!(6),
            &json!(0)
        )
    );
    assert_eq!(
        minutes["totals"],
        json!({"requests": 12, "request_bytes": 1110, "response_bytes": 6870, "units": 28, "overage": 2})
    );
    assert_eq!(minutes["truncated"], false);
    // Per hour (the default granularity).
    let hours = get(RANGE);
    assert_eq!(hours["granularity"], "hour");
    assert_eq!(
        usage_rows(&hours),
        sorted([
            row("2021-06-15T10:00:00Z", &s1, "r1", 2, 6),
            row("2021-06-15T10:00:00Z", &s1, "r1", 4, 1),
            row("2021-06-15T10:00:00Z", &s2, "r2", 2, 4),
            row("2021-06-15T11:00:00Z", "user:u1", "r1", 5, 1),
        ])
    );
    assert_eq!(hours["totals"], minutes["totals"]);
    // `from` is rounded down to its period: 10:15:30 still takes the hour of 10:00.
    let late = get("from=2021-06-15T10:15:30Z&to=2021-06-15T11:00:00Z");
    assert_eq!(late["from"], "2021-06-15T10:00:00Z");
    assert_eq!(late["to"], "2021-06-15T11:00:00Z");
    assert_eq!(late["totals"]["requests"], 11);
    // Per UTC day.
    let days = get("from=2021-06-15T00:00:00Z&to=2021-06-17T00:00:00Z&granularity=day");
    assert_eq!(
        usage_rows(&days),
        sorted([
            row("2021-06-15T00:00:00Z", &s1, "r1", 2, 6),
            row("2021-06-15T00:00:00Z", &s1, "r1", 4, 1),
            row("2021-06-15T00:00:00Z", &s2, "r2", 2, 4),
            row("2021-06-15T00:00:00Z", "user:u1", "r1", 5, 1),
            row("2021-06-16T00:00:00Z", &s1, "r1", 2, 7),
        ])
    );
    assert_eq!(days["totals"]["requests"], 19);
    // Filters: an API key, a raw subject, a route.
    let key = get(&format!("{RANGE}&api_key_id={k1}"));
    assert_eq!(
        usage_rows(&key),
        [
            row("2021-06-15T10:00:00Z", &s1, "r1", 2, 6),
            row("2021-06-15T10:00:00Z", &s1, "r1", 4, 1),
        ]
    );
    assert_eq!(key["totals"]["requests"], 7);
    let user = get(&format!("{RANGE}&subject=user:u1&granularity=minute"));
    assert_eq!(
        usage_rows(&user),
        [row("2021-06-15T11:05:00Z", "user:u1", "r1", 5, 1)]
    );
    let route = get(&format!("{RANGE}&route_id=r2"));
    assert_eq!(
        usage_rows(&route),
        [row("2021-06-15T10:00:00Z", &s2, "r2", 2, 4)]
    );
    assert_eq!(route["totals"]["units"], 20);
    assert_eq!(route["totals"]["overage"], 2);
    // A range with nothing in it.
    let empty = get("from=2021-06-14T00:00:00Z&to=2021-06-15T00:00:00Z");
    assert_eq!(empty["rows"], json!([]));
    assert_eq!(empty["totals"]["requests"], 0);
    // A superadmin without tenant_id sees every tenant.
    let all = a.root("GET", &format!("/api/v1/usage?{RANGE}"), None);
    assert_eq!(all.status, 200, "{:?}", all.body);
    assert_eq!(all.body["rows"].as_array().unwrap().len(), 5);
    assert_eq!(all.body["totals"]["requests"], 21);
}

#[tokio::test]
async fn usage_is_scoped_to_the_tenant_admins_tenant() {
    let Metered {
        a,
        acme,
        globex,
        kg,
        ..
    } = metered().await;
    let tok = a.token_for("globex");
    // Naming another tenant is 404, as on every list.
    let r = a.call(
        &tok,
        "GET",
        &format!("/api/v1/usage?tenant_id={acme}&{RANGE}"),
        None,
    );
    assert_eq!((r.status, r.code()), (404, "not_found"), "{:?}", r.body);
    // Without tenant_id: its own tenant only; naming it, the same.
    let sg = format!("key:{kg}");
    for q in [RANGE.to_string(), format!("tenant_id={globex}&{RANGE}")] {
        let r = a.call(&tok, "GET", &format!("/api/v1/usage?{q}"), None);
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(
            usage_rows(&r.body),
            [row("2021-06-15T10:00:00Z", &sg, "rg", 2, 9)]
        );
        assert_eq!(r.body["rows"][0]["tenant_id"], globex.as_str());
        assert_eq!(r.body["totals"]["requests"], 9);
    }
    // Another tenant's key or subject finds nothing of it.
    let r = a.call(
        &tok,
        "GET",
        &format!("/api/v1/usage?subject=user:u1&{RANGE}&granularity=minute"),
        None,
    );
    assert_eq!(r.body["rows"], json!([]));
}

#[tokio::test]
async fn usage_and_violations_refuse_bad_parameters_naming_them() {
    let Metered { a, k1, .. } = metered().await;
    for (endpoint, q, field) in [
        ("usage", "granularity=week", "granularity"),
        ("usage", "from=yesterday", "from"),
        ("usage", "to=2021-13-01T00:00:00Z", "to"),
        (
            "usage",
            "from=2021-06-16T00:00:00Z&to=2021-06-15T00:00:00Z",
            "from",
        ),
        (
            "usage",
            "granularity=minute&from=2021-06-01T00:00:00Z&to=2021-06-09T00:00:00Z",
            "from",
        ),
        ("usage", "tenant_id=acme", "tenant_id"),
        ("usage", "api_key_id=k1", "api_key_id"),
        (
            "usage",
            &format!("api_key_id={k1}&subject=user:u1"),
            "subject",
        ),
        ("violations", "kind=bogus", "kind"),
        ("violations", "mode=loud", "mode"),
        ("violations", "limit=0", "limit"),
        ("violations", "limit=10001", "limit"),
        (
            "violations",
            "from=2021-06-16T00:00:00Z&to=2021-06-15T00:00:00Z",
            "from",
        ),
    ] {
        let r = a.root("GET", &format!("/api/v1/{endpoint}?{q}"), None);
        assert_eq!(
            (r.status, r.code(), r.fields()),
            (400, "bad_request", vec![field.to_string()]),
            "{endpoint}?{q}: {:?}",
            r.body
        );
        assert!(r.body["error"]["request_id"].is_string());
    }
    // Seven days of minutes are fine; unknown parameters are not.
    let r = a.root(
        "GET",
        "/api/v1/usage?granularity=minute&from=2021-06-09T00:00:00Z&to=2021-06-16T00:00:00Z",
        None,
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    for endpoint in ["usage", "violations"] {
        let r = a.root("GET", &format!("/api/v1/{endpoint}?tenant=x"), None);
        assert_eq!((r.status, r.code()), (400, "bad_request"));
    }
}

/// The rows of a violations answer as (ts, kind, mode, subject, count).
fn violation_rows(body: &Value) -> Vec<(String, String, String, String, i64)> {
    body["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("rows in {body}"))
        .iter()
        .map(|r| {
            (
                r["ts"].as_str().unwrap().to_string(),
                r["kind"].as_str().unwrap().to_string(),
                r["mode"].as_str().unwrap().to_string(),
                r["subject"].as_str().unwrap().to_string(),
                r["count"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn violation(
    ts: &str,
    kind: &str,
    mode: &str,
    subject: &str,
    count: i64,
) -> (String, String, String, String, i64) {
    (ts.into(), kind.into(), mode.into(), subject.into(), count)
}

#[tokio::test]
async fn violations_filter_by_kind_mode_subject_and_limit() {
    let Metered { a, acme, k1, .. } = metered().await;
    let s1 = format!("key:{k1}");
    let get = |q: &str| {
        let r = a.root(
            "GET",
            &format!("/api/v1/violations?tenant_id={acme}&{RANGE}&{q}"),
            None,
        );
        assert_eq!(r.status, 200, "{q}: {:?}", r.body);
        r.body
    };
    // Newest first; the two parts of 10:15 counted together.
    let all = get("");
    assert_eq!(
        violation_rows(&all),
        [
            violation("2021-06-15T10:30:00Z", "auth", "enforce", "", 4),
            violation("2021-06-15T10:20:00Z", "ip", "enforce", "ip:203.0.113.7", 1),
            violation("2021-06-15T10:16:00Z", "quota", "shadow", &s1, 2),
            violation("2021-06-15T10:15:00Z", "rate_limit", "enforce", &s1, 4),
        ]
    );
    assert_eq!(all["truncated"], false);
    let merged = &all["rows"][3];
    assert_eq!(
        (
            &merged["tenant_id"],
            &merged["policy"],
            &merged["route_id"],
            &merged["code"],
            &merged["first_seen"],
            &merged["last_seen"],
            &merged["sample_request_id"],
        ),
        (
            &json!(acme),
            &json!("per-key"),
            &json!("r1"),
            &json!("rate_limited"),
            &json!("2021-06-15T10:15:10.000Z"),
            &json!("2021-06-15T10:15:40.000Z"),
            &json!("req-a"),
        )
    );
    // By kind, by mode, by key or subject, by route.
    assert_eq!(
        violation_rows(&get("kind=quota")),
        [violation("2021-06-15T10:16:00Z", "quota", "shadow", &s1, 2)]
    );
    assert_eq!(
        violation_rows(&get("mode=shadow")),
        violation_rows(&get("kind=quota"))
    );
    assert_eq!(violation_rows(&get("mode=enforce")).len(), 3);
    assert_eq!(
        violation_rows(&get(&format!("api_key_id={k1}"))),
        [
            violation("2021-06-15T10:16:00Z", "quota", "shadow", &s1, 2),
            violation("2021-06-15T10:15:00Z", "rate_limit", "enforce", &s1, 4),
        ]
    );
    assert_eq!(
        violation_rows(&get("kind=rate_limit&mode=enforce")),
        [violation(
            "2021-06-15T10:15:00Z",
            "rate_limit",
            "enforce",
            &s1,
            4
        )]
    );
    assert_eq!(violation_rows(&get("subject=ip:203.0.113.7")).len(), 1);
    assert_eq!(
        violation_rows(&get("route_id=")).len(),
        1,
        "no route matched"
    );
    // The newest `limit`, saying there were more.
    let two = get("limit=2");
    assert_eq!(violation_rows(&two), violation_rows(&all)[..2].to_vec());
    assert_eq!(two["truncated"], true);
    // Outside the range: nothing.
    let r = a.root(
        "GET",
        "/api/v1/violations?from=2021-06-16T00:00:00Z&to=2021-06-17T00:00:00Z",
        None,
    );
    assert_eq!(r.body["rows"], json!([]));
}

#[tokio::test]
async fn violations_are_scoped_to_the_tenant_admins_tenant() {
    let Metered {
        a,
        acme,
        globex,
        kg,
        ..
    } = metered().await;
    let tok = a.token_for("globex");
    let r = a.call(
        &tok,
        "GET",
        &format!("/api/v1/violations?tenant_id={acme}&{RANGE}"),
        None,
    );
    assert_eq!((r.status, r.code()), (404, "not_found"), "{:?}", r.body);
    let r = a.call(&tok, "GET", &format!("/api/v1/violations?{RANGE}"), None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        violation_rows(&r.body),
        [violation(
            "2021-06-15T10:20:00Z",
            "rate_limit",
            "enforce",
            &format!("key:{kg}"),
            5
        )]
    );
    assert_eq!(r.body["rows"][0]["tenant_id"], globex.as_str());
    let r = a.call(
        &tok,
        "GET",
        &format!("/api/v1/violations?{RANGE}&kind=auth"),
        None,
    );
    assert_eq!(r.body["rows"], json!([]));
    // A superadmin sees both tenants.
    let r = a.root("GET", &format!("/api/v1/violations?{RANGE}"), None);
    assert_eq!(r.body["rows"].as_array().unwrap().len(), 5);
}

/// `SELECT count(*) …` through psql.
fn count(db: &Database, sql: &str) -> i64 {
    db.sql(sql).parse().unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[tokio::test]
async fn maintenance_keeps_usage_partitions_and_removes_old_usage_and_violations() {
    let db = Database::migrated();
    // migrate made the usage_minute partitions from yesterday on (checked now, that is
    // today's or, just after midnight, the day migrate called today: both exist).
    for day in ["now()", "now() - interval '1 day'"] {
        let part = db.sql(&format!(
            "SELECT to_regclass('usage_minute_' || to_char((({day}) AT TIME ZONE 'UTC')::date, 'YYYYMMDD')) IS NOT NULL"
        ));
        assert_eq!(part, "t", "usage_minute partition of {day}");
    }
    let c = db.client().await;
    // Usage and violations of 1 January 2001 and of an hour ago; a batch id of 2001.
    c.batch_execute(
        "SELECT vantage_apply_usage_batch(gen_random_uuid(), 'p',
            ARRAY['2001-01-01T10:00:00Z', now() - interval '1 hour']::timestamptz[],
            ARRAY['t', 't'], ARRAY['key:k', 'key:k'], ARRAY['r', 'r'], ARRAY[2, 2]::int2[],
            ARRAY[1, 1]::int8[], ARRAY[1, 1]::int8[], ARRAY[1, 1]::int8[], ARRAY[1, 1]::int8[],
            ARRAY[0, 0]::int8[],
            ARRAY['2001-01-01T10:00:00Z', now() - interval '1 hour']::timestamptz[],
            ARRAY['t', 't'], ARRAY['key:k', 'key:k'], ARRAY['quota', 'quota'],
            ARRAY['monthly', 'monthly'], ARRAY['enforce', 'enforce'], ARRAY['r', 'r'],
            ARRAY['quota_exceeded', 'quota_exceeded'], ARRAY[1, 1]::int8[],
            ARRAY['2001-01-01T10:00:00Z', now() - interval '1 hour']::timestamptz[],
            ARRAY['2001-01-01T10:00:00Z', now() - interval '1 hour']::timestamptz[],
            ARRAY['a', 'b']);
         INSERT INTO usage_batches (id, proxy, applied_at)
              VALUES (gen_random_uuid(), 'old', '2001-01-01T00:00:00Z');
         INSERT INTO proxies (id, hostname, config_version, applied_at, ready, build_version,
                              started_at, last_seen)
              VALUES ('long-gone:1', 'long-gone', 1, '2001-01-01', true, '0', '2001-01-01',
                      '2001-01-01'),
                     ('just-gone:2', 'just-gone', 1, now(), true, '0', now(),
                      now() - interval '1 hour');",
    )
    .await
    .unwrap();
    // The recent minute is in its own day's partition; the old one in the default until
    // its day gets a partition, which takes it.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM usage_minute WHERE tableoid::regclass::text \
               = 'usage_minute_' || to_char((ts AT TIME ZONE 'UTC')::date, 'YYYYMMDD')"
        ),
        1
    );
    assert_eq!(count(&db, "SELECT count(*) FROM usage_minute_default"), 1);
    let moved: i32 = c
        .query_one(
            "SELECT vantage_ensure_daily_partitions('usage_minute', '2001-01-01', '2001-01-01')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(moved, 1);
    assert_eq!(count(&db, "SELECT count(*) FROM usage_minute_20010101"), 1);
    assert_eq!(count(&db, "SELECT count(*) FROM usage_minute_default"), 0);

    // A worker maintains at once (and every partition_interval_s, once per fleet): what is
    // past its retention goes, the rest stays.
    let w = Worker::start(&db, "", "");
    wait_for("the maintenance of the worker", 30, || {
        let gone = db.sql(
            "SELECT to_regclass('usage_minute_20010101') IS NULL
                AND NOT EXISTS (SELECT FROM usage_hour WHERE ts < '2002-01-01')
                AND NOT EXISTS (SELECT FROM usage_quarter WHERE ts < '2002-01-01')
                AND NOT EXISTS (SELECT FROM violations WHERE ts < '2002-01-01')
                AND NOT EXISTS (SELECT FROM usage_batches WHERE applied_at < '2002-01-01')
                AND NOT EXISTS (SELECT FROM proxies WHERE last_seen < '2002-01-01')",
        );
        (gone == "t").then_some(())
    });
    assert_eq!(count(&db, "SELECT count(*) FROM usage_minute"), 1);
    assert_eq!(count(&db, "SELECT count(*) FROM usage_hour"), 1);
    assert_eq!(count(&db, "SELECT count(*) FROM usage_quarter"), 1);
    assert_eq!(
        count(&db, "SELECT count(*) FROM usage_day"),
        2,
        "days are kept"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM violations"), 1);
    assert_eq!(count(&db, "SELECT count(*) FROM usage_batches"), 1);
    // A proxy silent for an hour is still shown (as gone); one silent for years is not.
    assert_eq!(
        db.sql("SELECT string_agg(id, ',') FROM proxies"),
        "just-gone:2"
    );
    drop(w);
}
