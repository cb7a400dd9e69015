//! Plans and calendar quotas through the real binary: block and allow overage, shadow mode,
//! cost-weighted routes and quota groups, one quota shared by three proxies through Redis,
//! the key holder's usage report, and bad input refused by `--check`.

use vantage_model::QuotaPeriod;
use vantage_testkit::*;

/// Tenant `t` (routes: `/*` cost 1, `/search/*` cost 5 in group `search`, `/health`
/// exempt) and tenant `u`, with plan `p` of `t` holding `quotas` (YAML flow list) and
/// `limits`; keys `ka` and `kb` on the plan, `kfree` on none, `ku` of tenant `u`.
fn body(o: &Origin, zone: &str, quotas: &str, limits: &str) -> String {
    format!(
        r#"
tenants:
  - {{id: t, name: T, subdomain: t}}
  - {{id: u, name: U, subdomain: u}}
origins:
  - {{id: o, tenant_id: t, targets: [{{url: "{url}"}}]}}
  - {{id: ou, tenant_id: u, targets: [{{url: "{url}"}}]}}
routes:
  - {{id: r, tenant_id: t, path_pattern: "/*", origin_id: o, auth: {{mode: apikey_required}}}}
  - {{id: search, tenant_id: t, path_pattern: "/search/*", origin_id: o, auth: {{mode: apikey_required}}, quota: {{cost: 5, group: search}}}}
  - {{id: health, tenant_id: t, path_pattern: "/health", origin_id: o, auth: {{mode: apikey_required}}, quota: {{exempt: true}}}}
  - {{id: ru, tenant_id: u, path_pattern: "/*", origin_id: ou, auth: {{mode: apikey_required}}}}
plans:
  - {{id: p, tenant_id: t, name: pro, time_zone: "{zone}", quotas: {quotas}, rate_limits: {limits}}}
api_keys:
  - {{id: ka, tenant_id: t, name: A, key_hash: "{ka}", plan_id: p}}
  - {{id: kb, tenant_id: t, name: B, key_hash: "{kb}", plan_id: p}}
  - {{id: kfree, tenant_id: t, name: F, key_hash: "{kf}"}}
  - {{id: ku, tenant_id: u, name: U, key_hash: "{ku}"}}
"#,
        url = o.url(),
        ka = hash_key("vk_a"),
        kb = hash_key("vk_b"),
        kf = hash_key("vk_free"),
        ku = hash_key("vk_u"),
    )
}

fn get(p: &Proxy, host: &str, path: &str, key: &str) -> Response {
    p.send("GET", host, path, &[("x-api-key", key)], b"")
}

fn month_zone() -> &'static str {
    steady_zone(QuotaPeriod::Month, 600)
}

#[test]
fn a_blocking_monthly_quota_refuses_until_the_period_ends() {
    let o = Origin::start("o");
    let zone = month_zone();
    let quotas = "[{name: monthly, limit: 3, period: month}]";
    let p = Proxy::start(&body(&o, zone, quotas, "[]"));
    for left in [2, 1, 0] {
        let r = get(&p, "t.test.local", "/x", "vk_a");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.header("x-ratelimit-remaining"),
            Some(left.to_string().as_str())
        );
        let policy = r.header("ratelimit-policy").expect("RateLimit-Policy");
        assert!(policy.starts_with("\"monthly\";q=3;w="), "{policy}");
    }
    let r = get(&p, "t.test.local", "/x", "vk_a");
    r.assert_error(429, "quota_exceeded");
    // Retry-After is the time to the end of the month in the plan's zone.
    let window = vantage_model::Calendar::new(zone)
        .unwrap()
        .window(QuotaPeriod::Month, unix_now());
    let retry: i64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (window.end - unix_now() - retry).abs() <= 2,
        "retry-after {retry}, period ends in {}",
        window.end - unix_now()
    );
    let state = r.header("ratelimit").unwrap();
    assert!(state.starts_with("\"monthly\";r=0;t="), "{state}");
    // The quota counts each key: another key of the plan still has its three.
    assert_eq!(get(&p, "t.test.local", "/x", "vk_b").status, 200);
    // A key on no plan, and an exempt route, are not counted.
    for _ in 0..5 {
        assert_eq!(get(&p, "t.test.local", "/x", "vk_free").status, 200);
    }
    assert_eq!(get(&p, "t.test.local", "/health", "vk_a").status, 200);
}

#[test]
fn allow_overage_serves_past_the_limit() {
    let o = Origin::start("o");
    let quotas = "[{name: monthly, limit: 2, period: month, overage: allow}]";
    let p = Proxy::start(&body(&o, month_zone(), quotas, "[]"));
    for i in 0..5 {
        let r = get(&p, "t.test.local", "/x", "vk_a");
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        let left = if i < 2 { 1 - i } else { 0 };
        assert_eq!(
            r.header("x-ratelimit-remaining"),
            Some(left.to_string().as_str())
        );
    }
    assert_eq!(
        p.metric(r#"vantage_quota_decisions_total{result="overage",route="_tenant",tenant="t"}"#),
        3.0
    );
}

#[test]
fn shadow_mode_serves_while_recording_the_would_be_refusals() {
    let o = Origin::start("o");
    let quotas = "[{name: trial, limit: 2, period: month, mode: shadow}]";
    let limits = "[{name: tight, algorithm: {type: token_bucket, rate: 0.01, burst: 1}, subject: {by: api_key}, mode: shadow}]";
    let p = Proxy::start(&body(&o, month_zone(), quotas, limits));
    for _ in 0..5 {
        let r = get(&p, "t.test.local", "/x", "vk_a");
        assert_eq!(r.status, 200, "{}", r.text());
        // Shadow policies are not shown to clients.
        assert!(r.header("ratelimit-policy").is_none(), "{:?}", r.headers);
    }
    // 3 quota and 4 rate-limit refusals would have been sent.
    assert_eq!(
        p.metric(r#"vantage_violations_total{kind="quota",mode="shadow"}"#),
        3.0
    );
    assert_eq!(
        p.metric(r#"vantage_violations_total{kind="rate_limit",mode="shadow"}"#),
        4.0
    );
}

#[test]
fn route_costs_weigh_the_quota_and_groups_scope_it() {
    let o = Origin::start("o");
    let quotas = "[{name: units, limit: 12, period: month}, {name: searches, limit: 100, period: month, group: search}]";
    let p = Proxy::start(&body(&o, month_zone(), quotas, "[]"));
    // Two searches cost 10 of 12 units; the third (15) does not fit.
    assert_eq!(get(&p, "t.test.local", "/search/a", "vk_a").status, 200);
    let r = get(&p, "t.test.local", "/search/b", "vk_a");
    assert_eq!(r.status, 200);
    let state = r.header("ratelimit").unwrap();
    assert!(state.contains("\"units\";r=2;"), "{state}");
    assert!(state.contains("\"searches\";r=90;"), "{state}");
    get(&p, "t.test.local", "/search/c", "vk_a").assert_error(429, "quota_exceeded");
    // Plain requests cost 1: two more fit; the search group's quota does not count them.
    let r = get(&p, "t.test.local", "/x", "vk_a");
    assert_eq!(r.status, 200);
    let state = r.header("ratelimit").unwrap();
    assert!(!state.contains("searches"), "{state}");
    assert_eq!(get(&p, "t.test.local", "/x", "vk_a").status, 200);
    get(&p, "t.test.local", "/x", "vk_a").assert_error(429, "quota_exceeded");
}

#[test]
fn three_proxies_share_one_quota_through_redis() {
    let redis = Redis::start();
    let o = Origin::start("o");
    let quotas = "[{name: monthly, limit: 10, period: month, on_redis_error: deny}]";
    let server = format!(
        "  redis: {{url: \"{}\", key_prefix: vq, timeout_ms: 200}}\n",
        redis.url()
    );
    let b = body(&o, month_zone(), quotas, "[]");
    let proxies: Vec<Proxy> = (0..3).map(|_| Proxy::start_with(&b, &server)).collect();
    for p in &proxies {
        p.wait_redis_connected();
    }
    let statuses: Vec<u16> = (0..30)
        .map(|i| get(&proxies[i % 3], "t.test.local", "/x", "vk_a").status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        20,
        "{statuses:?}"
    );
    // One counter, hash-tagged by tenant and subject, expiring after the period.
    let keys = redis.cli(&["--scan", "--pattern", "vq:q:*"]);
    let keys: Vec<&str> = keys.lines().collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].starts_with("vq:q:{t\u{1f}key:ka}:p\u{1f}monthly:"),
        "{keys:?}"
    );
    assert_eq!(redis.cli(&["GET", keys[0]]).trim(), "10");
    let ttl: i64 = redis.cli(&["TTL", keys[0]]).trim().parse().unwrap();
    assert!(ttl > 0, "ttl {ttl}");
    // The report on any proxy reads the same counter.
    let r = get(
        &proxies[2],
        "t.test.local",
        "/.well-known/vantage/usage",
        "vk_a",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["quotas"][0]["used"], 10);
}

#[test]
fn a_quota_that_denies_without_redis_answers_503() {
    let mut redis = Redis::start();
    let o = Origin::start("o");
    let quotas = "[{name: strict, limit: 100, period: month, on_redis_error: deny}]";
    let server = format!(
        "  redis: {{url: \"{}\", key_prefix: vq, timeout_ms: 100}}\n",
        redis.url()
    );
    let p = Proxy::start_with(&body(&o, month_zone(), quotas, "[]"), &server);
    p.wait_redis_connected();
    assert_eq!(get(&p, "t.test.local", "/x", "vk_a").status, 200);
    redis.stop();
    get(&p, "t.test.local", "/x", "vk_a").assert_error(503, "quota_unavailable");
}

#[test]
fn the_key_holder_reads_its_own_quota_without_reaching_the_origin() {
    let o = Origin::start("o");
    let quotas = "[{name: monthly, limit: 50, period: month}, {name: experiment, limit: 1, period: day, mode: shadow}]";
    let p = Proxy::start(&body(&o, month_zone(), quotas, "[]"));
    for _ in 0..3 {
        assert_eq!(get(&p, "t.test.local", "/x", "vk_a").status, 200);
    }
    assert_eq!(get(&p, "t.test.local", "/search/x", "vk_a").status, 200);
    let path = "/.well-known/vantage/usage";
    let r = get(&p, "t.test.local", path, "vk_a");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("x-origin").is_none(), "answered by the gateway");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v = r.json();
    assert_eq!(v["key_id"], "ka");
    assert_eq!(v["plan"]["name"], "pro");
    // The shadow quota is the operator's experiment: not shown.
    assert_eq!(v["quotas"].as_array().unwrap().len(), 1, "{v}");
    let q = &v["quotas"][0];
    assert_eq!(
        (q["name"].as_str(), q["limit"].as_i64()),
        (Some("monthly"), Some(50))
    );
    assert_eq!(
        (q["used"].as_i64(), q["remaining"].as_i64()),
        (Some(8), Some(42))
    );
    assert!(q["reset_in_s"].as_i64().unwrap() > 0);
    // Another key of the plan sees its own figures, not ka's.
    let v = get(&p, "t.test.local", path, "vk_b").json();
    assert_eq!(v["quotas"][0]["used"], 0);
    // No key, a key of another tenant, a bad key: 401; only GET and HEAD.
    p.get("t.test.local", path)
        .assert_error(401, "unauthorized");
    get(&p, "t.test.local", path, "vk_u").assert_error(401, "unauthorized");
    get(&p, "t.test.local", path, "vk_nope").assert_error(401, "unauthorized");
    let r = p.send(
        "POST",
        "t.test.local",
        path,
        &[("x-api-key", "vk_a")],
        b"{}",
    );
    r.assert_error(405, "method_not_allowed");
    // A key on no plan gets an empty report.
    let v = get(&p, "t.test.local", path, "vk_free").json();
    assert_eq!(v["plan"], serde_json::Value::Null);
    // Tenant u's key on its own host sees its (empty) report.
    assert_eq!(get(&p, "u.test.local", path, "vk_u").status, 200);
}

#[test]
fn bad_plans_are_refused_with_field_paths() {
    let yaml = r#"
tenants: [{id: t, name: T, subdomain: t, plan_id: missing}]
origins: [{id: o, tenant_id: t, targets: [{url: "http://127.0.0.1:9"}]}]
routes:
  - {id: r, tenant_id: t, path_pattern: "/*", origin_id: o, quota: {cost: -5}}
plans:
  - {id: p, tenant_id: t, name: pro, time_zone: Mars/Olympus, quotas: [{name: q, limit: 10}, {name: neg, limit: -1, period: day}]}
  - {id: p2, tenant_id: t, name: pro}
api_keys:
  - {id: k, tenant_id: t, name: K, key_hash: "0000000000000000000000000000000000000000000000000000000000000000", plan_id: nope}
"#;
    let (ok, stderr) = check_config(yaml);
    assert!(!ok, "accepted: {stderr}");
    for path in [
        "tenants[0].plan_id",
        "routes[0].quota.cost",
        "plans[0].time_zone",
        "plans[0].quotas[0].period",
        "plans[0].quotas[1].limit",
        "plans[1].name",
        "api_keys[0].plan_id",
    ] {
        assert!(stderr.contains(path), "{path} not reported:\n{stderr}");
    }
}

#[test]
fn a_jwt_is_on_the_plan_its_claim_names_counted_by_its_subject() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let o = Origin::start("o");
    let secret = "an-hs256-secret-that-is-long-enough!!";
    let zone = month_zone();
    let yaml = format!(
        r#"
tenants: [{{id: t, name: T, subdomain: t}}]
origins: [{{id: o, tenant_id: t, targets: [{{url: "{url}"}}]}}]
routes:
  - {{id: r, tenant_id: t, path_pattern: "/*", origin_id: o, auth: {{mode: jwt_required}}}}
jwt_issuers:
  - {{id: i, tenant_id: t, issuer: "https://i.t.example", shared_secret: "{secret}", algorithms: [HS256], plan_claim: tier}}
plans:
  - {{id: free, tenant_id: t, name: free, time_zone: "{zone}", quotas: [{{name: monthly, limit: 2, period: month}}]}}
  - {{id: pro, tenant_id: t, name: pro, time_zone: "{zone}", quotas: [{{name: monthly, limit: 100, period: month}}]}}
"#,
        url = o.url()
    );
    let p = Proxy::start(&yaml);
    let exp = unix_now() + 600;
    let token = |sub: &str, tier: Option<&str>| {
        let mut claims = serde_json::json!({"iss": "https://i.t.example", "sub": sub, "exp": exp});
        if let Some(t) = tier {
            claims["tier"] = t.into();
        }
        let key = EncodingKey::from_secret(secret.as_bytes());
        encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
    };
    let send = |t: &str| {
        let auth = format!("Bearer {t}");
        p.send(
            "GET",
            "t.test.local",
            "/x",
            &[("authorization", &auth)],
            b"",
        )
    };
    let alice = token("alice", Some("free"));
    assert_eq!(send(&alice).status, 200);
    assert_eq!(send(&alice).status, 200);
    send(&alice).assert_error(429, "quota_exceeded");
    // Another subject on the same plan has its own count; a "pro" token its plan's.
    assert_eq!(send(&token("bob", Some("free"))).status, 200);
    let r = send(&token("carol", Some("pro")));
    assert_eq!(r.status, 200);
    assert!(r
        .header("ratelimit-policy")
        .unwrap()
        .starts_with("\"monthly\";q=100;"));
    // A claim naming no plan of the tenant, or none at all: no plan, no quota.
    for t in [token("dave", Some("gold")), token("erin", None)] {
        for _ in 0..3 {
            let r = send(&t);
            assert_eq!(r.status, 200);
            assert!(r.header("ratelimit-policy").is_none());
        }
    }
}

#[test]
fn a_key_on_its_tenants_own_plan_meets_the_plans_rate_limit_once() {
    let o = Origin::start("o");
    let limits = "[{name: burst, algorithm: {type: token_bucket, rate: 0.01, burst: 3}, subject: {by: api_key}}]";
    let b = body(&o, month_zone(), "[]", limits).replace(
        "{id: t, name: T, subdomain: t}",
        "{id: t, name: T, subdomain: t, plan_id: p}",
    );
    let p = Proxy::start(&b);
    let statuses: Vec<u16> = (0..5)
        .map(|_| get(&p, "t.test.local", "/x", "vk_a").status)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
}
