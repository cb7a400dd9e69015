//! Authentication, rate limits and access policies through the real binary.

use std::time::Instant;
use vantage_testkit::*;

/// Acme's order routes behind API keys (valid, expired, revoked) and globex with a key of
/// its own; the origin must outlive the proxy's use.
fn keyed_tenants() -> (Origin, Proxy) {
    let o = Origin::start("o");
    let body = format!(
        r#"
tenants:
  - {{id: acme, name: Acme, subdomain: acme}}
  - {{id: globex, name: Globex, subdomain: globex}}
origins:
  - {{id: acme-o, tenant_id: acme, targets: [{{url: "{u}"}}]}}
  - {{id: globex-o, tenant_id: globex, targets: [{{url: "{u}"}}]}}
routes:
  - {{id: read, tenant_id: acme, path_pattern: /orders/*, methods: [GET], origin_id: acme-o, auth: {{mode: apikey_required, scopes: [orders:read], strip_authorization: true}}}}
  - {{id: write, tenant_id: acme, path_pattern: /orders/*, methods: [POST], origin_id: acme-o, auth: {{mode: apikey_required, scopes: [orders:write]}}}}
  - {{id: open, tenant_id: acme, path_pattern: /public/*, origin_id: acme-o}}
  - {{id: g, tenant_id: globex, path_pattern: /*, origin_id: globex-o, auth: {{mode: apikey_required}}}}
api_keys:
  - {{id: good, tenant_id: acme, name: Good, key_hash: "{good}", scopes: [orders:read], expires_at: "2999-01-01T00:00:00Z"}}
  - {{id: old, tenant_id: acme, name: Old, key_hash: "{old}", scopes: [orders:read], expires_at: "2001-01-01T00:00:00Z"}}
  - {{id: gone, tenant_id: acme, name: Gone, key_hash: "{gone}", scopes: [orders:read], status: revoked}}
  - {{id: globex-key, tenant_id: globex, name: G, key_hash: "{other}", scopes: [orders:read]}}
"#,
        u = o.url(),
        good = hash_key("vk_live_good_secret_1"),
        old = hash_key("vk_live_old_secret_2"),
        gone = hash_key("vk_live_gone_secret_3"),
        other = hash_key("vk_live_globex_secret_4"),
    );
    let p = Proxy::start(&body);
    (o, p)
}

/// No key of [`keyed_tenants`] got into the proxy's log.
fn assert_no_key_logged(p: &Proxy) {
    let log = p.log();
    for secret in [
        "vk_live_good_secret_1",
        "vk_live_old_secret_2",
        "vk_live_gone_secret_3",
        "vk_live_globex_secret_4",
    ] {
        assert!(!log.contains(secret), "a key leaked into the log");
    }
}

#[test]
fn a_valid_api_key_passes_in_either_header_and_is_stripped() {
    let (_o, p) = keyed_tenants();
    let get =
        |path: &str, headers: &[(&str, &str)]| p.send("GET", "acme.test.local", path, headers, b"");
    let r = get("/orders/1", &[("X-API-Key", "vk_live_good_secret_1")]);
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &r.json()["headers"];
    assert_eq!(seen["x-api-key-id"], "good", "the origin learns which key");
    assert!(
        seen.get("x-api-key").is_none(),
        "credentials stripped on this route"
    );
    let r = get(
        "/orders/1",
        &[("Authorization", "Bearer vk_live_good_secret_1")],
    );
    assert_eq!(r.status, 200);
    assert!(r.json()["headers"].get("authorization").is_none());
    assert_no_key_logged(&p);
}

#[test]
fn missing_unknown_expired_revoked_and_foreign_keys_are_401_logged_and_counted() {
    let (_o, p) = keyed_tenants();
    let get =
        |path: &str, headers: &[(&str, &str)]| p.send("GET", "acme.test.local", path, headers, b"");
    for (headers, what) in [
        (vec![], "missing"),
        (vec![("X-API-Key", "vk_live_unknown")], "unknown"),
        (vec![("X-API-Key", "vk_live_old_secret_2")], "expired"),
        (vec![("X-API-Key", "vk_live_gone_secret_3")], "revoked"),
        (
            vec![("X-API-Key", "vk_live_globex_secret_4")],
            "other tenant's",
        ),
        (vec![("Authorization", "Basic Zm9vOmJhcg==")], "basic auth"),
    ] {
        let r = get("/orders/1", &headers);
        r.assert_error(401, "unauthorized");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"vantage\""),
            "{what}"
        );
    }
    let log = p.log();
    assert!(
        log.contains("\"reason\":\"expired\""),
        "the reason is logged"
    );
    assert_no_key_logged(&p);
    let m = p.metrics();
    assert!(
        m.contains("vantage_auth_failures_total{code=\"unauthorized\",tenant=\"acme\"} 6"),
        "{m}"
    );
}

#[test]
fn a_key_without_the_scope_is_403_and_keys_work_on_their_own_tenant_only() {
    let (_o, p) = keyed_tenants();
    let r = p.send(
        "POST",
        "acme.test.local",
        "/orders/1",
        &[("X-API-Key", "vk_live_good_secret_1")],
        b"{}",
    );
    r.assert_error(403, "insufficient_scope");
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("insufficient_scope"));
    // The same key is fine on its own tenant's routes only.
    let r = p.send(
        "GET",
        "globex.test.local",
        "/x",
        &[("X-API-Key", "vk_live_globex_secret_4")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_no_key_logged(&p);
}

#[test]
fn public_routes_need_no_key_and_a_client_cannot_claim_a_key_id() {
    let (_o, p) = keyed_tenants();
    let get =
        |path: &str, headers: &[(&str, &str)]| p.send("GET", "acme.test.local", path, headers, b"");
    // Public routes need nothing; a client cannot claim a key id.
    let r = get("/public/x", &[("X-Api-Key-Id", "good")]);
    assert_eq!(r.status, 200);
    assert!(r.json()["headers"].get("x-api-key-id").is_none());
}

fn limited(origin: &Origin, route_limits: &str, tenant_limits: &str) -> String {
    format!(
        r#"
tenants:
  - {{id: t, name: T, subdomain: t, rate_limits: [{tenant_limits}]}}
origins: [{{id: o, tenant_id: t, targets: [{{url: "{u}"}}]}}]
routes:
  - {{id: limited, tenant_id: t, path_pattern: /limited/*, origin_id: o, rate_limits: [{route_limits}]}}
  - {{id: other, tenant_id: t, path_pattern: /*, origin_id: o}}
"#,
        u = origin.url()
    )
}

#[test]
fn token_bucket_burst_admits_the_burst_plus_the_refill() {
    let o = Origin::start("o");
    let p = Proxy::start(&limited(
        &o,
        "{name: burst, algorithm: {type: token_bucket, rate: 100, burst: 20}, subject: {by: route}}",
        "",
    ));
    let start = Instant::now();
    let responses: Vec<Response> = (0..60)
        .map(|i| p.get("t.test.local", &format!("/limited/{i}")))
        .collect();
    let elapsed = start.elapsed().as_secs_f64();
    let admitted = responses.iter().filter(|r| r.status == 200).count();
    // Tolerance: the burst of 20, plus what 100 r/s refills while the requests were sent,
    // plus one for rounding.
    let most = 20 + (100.0 * elapsed).ceil() as usize + 1;
    assert!(
        (20..=most).contains(&admitted),
        "admitted {admitted}, allowed 20..={most} over {elapsed:.3}s"
    );
    assert!(admitted < 60, "some requests must be refused");

    let first = &responses[0];
    assert_eq!(first.header("x-ratelimit-limit"), Some("20"));
    assert_eq!(first.header("x-ratelimit-remaining"), Some("19"));
    assert_eq!(first.header("x-ratelimit-reset"), Some("1"));
    assert_eq!(
        first.header("ratelimit-policy"),
        Some("\"burst\";q=100;w=1")
    );
    assert_eq!(first.header("ratelimit"), Some("\"burst\";r=19;t=1"));
    let refused = responses
        .iter()
        .find(|r| r.status == 429)
        .expect("a refusal");
    refused.assert_error(429, "rate_limited");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    // Routes without a policy carry no rate-limit fields.
    assert!(p
        .get("t.test.local", "/free")
        .header("x-ratelimit-limit")
        .is_none());
    let m = p.metrics();
    assert!(m.contains(&format!("vantage_ratelimit_decisions_total{{result=\"allowed\",route=\"_tenant\",tenant=\"t\"}} {admitted}")), "{m}");
}

#[test]
fn rate_limit_fields_follow_the_server_setting() {
    let o = Origin::start("o");
    let config = limited(
        &o,
        "{name: two, algorithm: {type: sliding_window, limit: 2, period_s: 60}, subject: {by: route}}",
        "",
    );
    let legacy = [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ];
    // draft: the IETF fields only, on admitted and refused responses alike.
    let p = Proxy::start_with(&config, "  rate_limit_headers: draft\n");
    let admitted = p.get("t.test.local", "/limited/1");
    assert_eq!(admitted.status, 200);
    assert!(admitted
        .header("ratelimit")
        .is_some_and(|v| v.starts_with("\"two\";r=1;t=")));
    assert_eq!(
        admitted.header("ratelimit-policy"),
        Some("\"two\";q=2;w=60")
    );
    assert_eq!(p.get("t.test.local", "/limited/2").status, 200);
    let refused = p.get("t.test.local", "/limited/3");
    refused.assert_error(429, "rate_limited");
    assert!(refused.header("retry-after").is_some());
    assert!(refused
        .header("ratelimit")
        .is_some_and(|v| v.starts_with("\"two\";r=0;t=")));
    for r in [&admitted, &refused] {
        for n in legacy {
            assert!(r.header(n).is_none(), "{n} sent with draft");
        }
    }
    // none: no fields, but a refusal still says when to come back.
    let p = Proxy::start_with(&config, "  rate_limit_headers: none\n");
    let admitted = p.get("t.test.local", "/limited/1");
    assert_eq!(admitted.status, 200);
    p.get("t.test.local", "/limited/2");
    let refused = p.get("t.test.local", "/limited/3");
    refused.assert_error(429, "rate_limited");
    assert!(refused.header("retry-after").is_some());
    for r in [&admitted, &refused] {
        for n in legacy.iter().chain(&["ratelimit", "ratelimit-policy"]) {
            assert!(r.header(n).is_none(), "{n} sent with none");
        }
    }
}

#[test]
fn the_strictest_policy_decides_and_subjects_are_separate() {
    let o = Origin::start("o");
    let p = Proxy::start(&limited(
        &o,
        "{name: per-customer, algorithm: {type: sliding_window, limit: 3, period_s: 60}, subject: {by: header, name: X-Customer}}",
        "{name: tenant-ceiling, algorithm: {type: sliding_window, limit: 5, period_s: 3600}, subject: {by: tenant}}",
    ));
    let get = |customer: &str| {
        p.send(
            "GET",
            "t.test.local",
            "/limited/x",
            &[("X-Customer", customer)],
            b"",
        )
    };
    let a: Vec<u16> = (0..4).map(|_| get("a").status).collect();
    assert_eq!(a, vec![200, 200, 200, 429], "per-customer window of 3");
    let refused = get("a");
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some("\"per-customer\";q=3;w=60")
    );
    // Customer b has its own window, but the tenant-wide ceiling of 5 counts everyone:
    // a's 3 admitted + b's 2 = 5.
    let b: Vec<u16> = (0..3).map(|_| get("b").status).collect();
    assert_eq!(b, vec![200, 200, 429], "tenant ceiling");
    let r = get("c");
    r.assert_error(429, "rate_limited");
    assert_eq!(
        r.header("ratelimit-policy"),
        Some("\"tenant-ceiling\";q=5;w=3600")
    );
    // The ceiling applies to every route of the tenant.
    assert_eq!(p.get("t.test.local", "/elsewhere").status, 429);
}

#[test]
fn limits_survive_a_reload() {
    let o = Origin::start("o");
    let body = limited(
        &o,
        "{name: w, algorithm: {type: sliding_window, limit: 2, period_s: 600}, subject: {by: client_ip}}",
        "",
    );
    let p = Proxy::start(&body);
    assert_eq!(p.get("t.test.local", "/limited/1").status, 200);
    assert_eq!(p.get("t.test.local", "/limited/2").status, 200);
    p.write_body(&body.replace("id: other,", "id: other2,"));
    p.wait_version(2);
    assert_eq!(
        p.get("t.test.local", "/limited/3").status,
        429,
        "counters are kept"
    );
}

#[test]
fn cors_preflight_actual_requests_and_errors() {
    let o = Origin::start("o");
    let body = format!(
        r#"
tenants:
  - id: t
    name: T
    subdomain: t
    access:
      cors: {{allowed_origins: ["https://app.example.com"], allowed_methods: [GET, POST], allow_credentials: true, exposed_headers: [X-Request-Id], max_age_s: 300}}
origins: [{{id: o, tenant_id: t, targets: [{{url: "{u}"}}]}}]
routes:
  - {{id: api, tenant_id: t, path_pattern: /api/*, methods: [GET, POST], origin_id: o, auth: {{mode: apikey_required}}}}
  - {{id: no-cors, tenant_id: t, path_pattern: /plain/*, origin_id: o, access: {{cors: {{allowed_origins: ["https://other.example.com"]}}}}}}
"#,
        u = o.url()
    );
    let p = Proxy::start(&body);
    let preflight = |origin: &str, method: &str, headers: &str| {
        p.send(
            "OPTIONS",
            "t.test.local",
            "/api/items",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", method),
                ("Access-Control-Request-Headers", headers),
            ],
            b"",
        )
    };
    let r = preflight("https://app.example.com", "POST", "content-type, x-api-key");
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(r.header("access-control-max-age"), Some("300"));
    assert_eq!(r.header("vary"), Some("Origin"));
    assert!(
        r.header("x-origin").is_none(),
        "answered at the gateway, no API key needed"
    );

    preflight("https://evil.example", "POST", "").assert_error(403, "cors_origin_not_allowed");
    // No route takes DELETE here, so the preflight is an ordinary OPTIONS request: no route.
    preflight("https://app.example.com", "DELETE", "").assert_error(404, "no_route");
    preflight("https://app.example.com", "GET", "x-secret")
        .assert_error(403, "cors_header_not_allowed");

    // The actual request: allowed origin gets CORS fields, even on a gateway error.
    let r = p.send(
        "GET",
        "t.test.local",
        "/api/items",
        &[("Origin", "https://app.example.com")],
        b"",
    );
    r.assert_error(401, "unauthorized");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let r = p.send(
        "GET",
        "t.test.local",
        "/api/items",
        &[("Origin", "https://evil.example")],
        b"",
    );
    assert!(r.header("access-control-allow-origin").is_none());
    // A route's own policy replaces the tenant's.
    let r = p.send(
        "GET",
        "t.test.local",
        "/plain/x",
        &[("Origin", "https://app.example.com")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none());
    let r = p.send(
        "GET",
        "t.test.local",
        "/plain/x",
        &[("Origin", "https://other.example.com")],
        b"",
    );
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://other.example.com")
    );
}

fn ip_config(origin: &Origin, rules: &str) -> String {
    format!(
        r#"
tenants:
  - {{id: t, name: T, subdomain: t, access: {{ip_rules: {rules}, security_headers: {{enabled: true}}}}}}
origins: [{{id: o, tenant_id: t, targets: [{{url: "{u}"}}]}}]
routes:
  - {{id: r, tenant_id: t, path_pattern: /*, origin_id: o}}
  - {{id: open, tenant_id: t, path_pattern: /open/*, origin_id: o, access: {{ip_rules: {{}}}}}}
"#,
        u = origin.url()
    )
}

#[test]
fn ip_rules_with_and_without_a_trusted_balancer() {
    let o = Origin::start("o");
    // Direct clients: the peer address decides; X-Forwarded-For is not believed.
    let p = Proxy::start(&ip_config(&o, "{deny: [127.0.0.1]}"));
    p.get("t.test.local", "/x").assert_error(403, "ip_denied");
    let r = p.send(
        "GET",
        "t.test.local",
        "/x",
        &[("X-Forwarded-For", "198.51.100.7")],
        b"",
    );
    r.assert_error(403, "ip_denied");
    let r = p.get("t.test.local", "/open/x");
    assert_eq!(r.status, 200, "the route overrides the tenant's rules");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(
        r.header("referrer-policy"),
        Some("strict-origin-when-cross-origin")
    );
    assert!(
        r.header("strict-transport-security").is_none(),
        "HSTS only over HTTPS"
    );
    drop(p);

    // Behind a trusted balancer (the test client on 127.0.0.1): the right-most untrusted
    // X-Forwarded-For hop is the client.
    let p = Proxy::start_with(
        &ip_config(&o, "{allow: [198.51.100.0/24], deny: [198.51.100.66]}"),
        "  trusted_proxies: [127.0.0.1/32, 10.0.0.0/8]\n",
    );
    let with_xff = |xff: &str| {
        p.send(
            "GET",
            "t.test.local",
            "/x",
            &[("X-Forwarded-For", xff)],
            b"",
        )
    };
    assert_eq!(with_xff("198.51.100.7").status, 200);
    assert_eq!(
        with_xff("203.0.113.1, 198.51.100.7, 10.1.2.3").status,
        200,
        "forged left-most hop ignored"
    );
    with_xff("198.51.100.7, 203.0.113.1").assert_error(403, "ip_denied");
    with_xff("198.51.100.66").assert_error(403, "ip_denied");
    p.get("t.test.local", "/x").assert_error(403, "ip_denied");
}
