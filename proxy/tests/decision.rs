//! The rate-limit decision service: the JSON endpoint and Envoy's gRPC rate-limit service,
//! charging the same counters as the proxies (one proxy's own, and a fleet's in Redis).

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use serde_json::{json, Value};
use vantage_model::QuotaPeriod;
use vantage_testkit::*;

const TOKEN: &str = "decision-token-0123456789";

/// Tenant `t` with route `r` (cost 1) and `search` (cost 2), plan `pro` (monthly quota of
/// 5), key `ka` on it; tenant `u` with key `ku`. The decision service on `decision_port`.
fn body(o: &Origin) -> String {
    format!(
        r#"
tenants:
  - {{id: t, name: T, subdomain: t, plan_id: tp}}
  - {{id: u, name: U, subdomain: u}}
origins: [{{id: o, tenant_id: t, targets: [{{url: "{url}"}}]}}]
routes:
  - {{id: r, tenant_id: t, path_pattern: "/*", origin_id: o, auth: {{mode: apikey_required}}}}
  - {{id: search, tenant_id: t, path_pattern: "/search/*", origin_id: o, auth: {{mode: apikey_required}}, quota: {{cost: 2}}}}
plans:
  - {{id: p, tenant_id: t, name: pro, time_zone: "{zone}", quotas: [{{name: monthly, limit: 5, period: month}}]}}
  - {{id: tp, tenant_id: t, name: platform, time_zone: "{zone}", quotas: [{{name: tenant-month, limit: 1000, period: month}}]}}
api_keys:
  - {{id: ka, tenant_id: t, name: A, key_hash: "{ka}", plan_id: p}}
  - {{id: ku, tenant_id: u, name: U, key_hash: "{ku}"}}
"#,
        url = o.url(),
        zone = steady_zone(QuotaPeriod::Month, 600),
        ka = hash_key("vk_a"),
        ku = hash_key("vk_u"),
    )
}

fn decision(port: u16, token: &str) -> String {
    format!("  decision: {{listen: \"127.0.0.1:{port}\", token: \"{token}\"}}\n")
}

fn validate(port: u16, token: &str, body: Value) -> Response {
    validate_decision(port, token, &body)
}

fn start(o: &Origin, extra: &str) -> (Proxy, u16) {
    let port = free_port();
    let p = Proxy::start_with(&body(o), &format!("{}{extra}", decision(port, TOKEN)));
    wait_for("decision listener", 20, || port_open(port).then_some(()));
    (p, port)
}

#[test]
fn json_decisions_share_the_proxys_counters() {
    let o = Origin::start("o");
    let (p, port) = start(&o, "");
    let key = [("x-api-key", "vk_a")];
    assert_eq!(p.send("GET", "t.test.local", "/x", &key, b"").status, 200);
    // A search costs 2: 1 + 2 = 3 of 5.
    let r = validate(
        port,
        TOKEN,
        json!({"api_key": "vk_a", "route_id": "search"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["allowed"], true, "{v}");
    assert_eq!(
        (v["limit"].as_u64(), v["remaining"].as_u64()),
        (Some(5), Some(2))
    );
    assert_eq!(v["policy"], "monthly");
    assert!(v["reset"].as_u64().unwrap() > 0);
    // 3 more do not fit: refused, in the body, with a 200; nothing is counted.
    let v = validate(port, TOKEN, json!({"api_key": "vk_a", "cost": 3})).json();
    assert_eq!(
        (v["allowed"].as_bool(), v["code"].as_str()),
        (Some(false), Some("quota_exceeded"))
    );
    assert_eq!(v["remaining"], 2);
    assert!(v["retry_after"].as_u64().unwrap() > 0);
    // The proxy sees what the service charged: two more requests, then 429.
    assert_eq!(p.send("GET", "t.test.local", "/x", &key, b"").status, 200);
    assert_eq!(p.send("GET", "t.test.local", "/x", &key, b"").status, 200);
    p.send("GET", "t.test.local", "/x", &key, b"")
        .assert_error(429, "quota_exceeded");
    // The tenant's own plan counted the admitted requests (3), the search (2) and this (1).
    let v = validate(port, TOKEN, json!({"tenant_id": "t"})).json();
    assert_eq!(
        (v["allowed"].as_bool(), v["policy"].as_str()),
        (Some(true), Some("tenant-month"))
    );
    assert_eq!(v["remaining"], 1000 - 6);
    // A subject on a named plan is counted by itself.
    let v = validate(
        port,
        TOKEN,
        json!({"tenant_id": "t", "subject": "user_1", "plan": "pro", "cost": 5}),
    )
    .json();
    assert_eq!(
        (v["allowed"].as_bool(), v["remaining"].as_u64()),
        (Some(true), Some(0))
    );
}

#[test]
fn bad_json_questions_get_json_errors() {
    let o = Origin::start("o");
    let (_p, port) = start(&o, "");
    let cases = [
        (
            json!({"api_key": "vk_a", "cost": -1}),
            422,
            "invalid_request",
        ),
        (
            json!({"api_key": "vk_a", "cost": 0}),
            422,
            "invalid_request",
        ),
        (json!({"api_key": "vk_nope"}), 401, "unauthorized"),
        (
            json!({"api_key": "vk_a", "route_id": "nope"}),
            404,
            "unknown_route",
        ),
        // Another tenant's route is unknown to the key's tenant.
        (
            json!({"api_key": "vk_u", "route_id": "r"}),
            404,
            "unknown_route",
        ),
        (json!({"tenant_id": "nope"}), 404, "unknown_tenant"),
        (
            json!({"tenant_id": "t", "subject": "s", "plan": "gold"}),
            404,
            "unknown_plan",
        ),
        (
            json!({"tenant_id": "t", "subject": "s"}),
            422,
            "invalid_request",
        ),
        (
            // A key of another tenant than the one named is refused as the proxy does.
            json!({"api_key": "vk_a", "tenant_id": "u"}),
            401,
            "unauthorized",
        ),
        (
            json!({"api_key": "vk_a", "subject": "s", "plan": "pro"}),
            422,
            "invalid_request",
        ),
        (json!({}), 422, "invalid_request"),
        (json!({"api_key": "vk_a", "bogus": 1}), 400, "bad_request"),
    ];
    for (body, status, code) in cases {
        let r = validate(port, TOKEN, body.clone());
        let v = r.assert_error(status, code);
        let message = v["error"]["message"].as_str().unwrap();
        assert!(!message.is_empty(), "{body}: {v}");
    }
    // The listener's token is required.
    validate(port, "wrong-token-0123456789", json!({"api_key": "vk_a"}))
        .assert_error(401, "unauthorized");
    let r = request(
        port,
        "POST",
        "127.0.0.1",
        "/api/public/v1/rate-limit/validate",
        &[],
        b"{}",
    );
    r.assert_error(401, "unauthorized");
}

fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn envoy_asks_over_grpc_and_shares_the_counters_of_a_fleet() {
    let redis = Redis::start();
    let o = Origin::start("o");
    let server = format!(
        "  redis: {{url: \"{}\", key_prefix: vd, timeout_ms: 200}}\n",
        redis.url()
    );
    let (p, port) = start(&o, &server);
    // A second proxy of the fleet (no decision service) shares the Redis counters.
    let other = Proxy::start_with(&body(&o), &server);
    p.wait_redis_connected();
    other.wait_redis_connected();
    let key = [("x-api-key", "vk_a")];
    assert_eq!(
        other.send("GET", "t.test.local", "/x", &key, b"").status,
        200
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut client = RateLimitServiceClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .expect("connect over h2c");
        // As Envoy calls it: the domain, descriptors from request headers, hits_addend.
        let ask = |entries: &[(&str, &str)], hits: u32| {
            let mut req = tonic::Request::new(RateLimitRequest {
                domain: "t".into(),
                descriptors: vec![descriptor(entries)],
                hits_addend: hits,
            });
            let auth = format!("Bearer {TOKEN}").parse().unwrap();
            req.metadata_mut().insert("authorization", auth);
            req
        };
        let r = client
            .should_rate_limit(ask(&[("api_key", "vk_a")], 0))
            .await
            .expect("answered")
            .into_inner();
        assert_eq!(r.overall_code, i32::from(Code::Ok));
        let s = &r.statuses[0];
        let limit = s.current_limit.as_ref().unwrap();
        assert_eq!(
            (limit.requests_per_unit, limit.unit),
            (5, i32::from(Unit::Month))
        );
        assert_eq!(
            s.limit_remaining, 3,
            "one request on the other proxy, one here"
        );
        assert!(s.duration_until_reset.as_ref().unwrap().seconds > 0);
        // Four more do not fit (3 left).
        let r = client
            .should_rate_limit(ask(&[("api_key", "vk_a"), ("route", "r")], 4))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.overall_code, i32::from(Code::OverLimit));
        assert_eq!(r.statuses[0].code, i32::from(Code::OverLimit));
        // A group-less tenant question answers from the tenant's plan.
        let r = client
            .should_rate_limit(ask(&[], 1))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.statuses[0].current_limit.as_ref().unwrap().name,
            "tenant-month"
        );
        // The key is the client's: an unknown one, or one of another tenant than the
        // domain, is over the limit (Envoy would let a failed call through).
        for key in ["vk_nope", "vk_u"] {
            let r = client
                .should_rate_limit(ask(&[("api_key", key)], 1))
                .await
                .expect("answered")
                .into_inner();
            assert_eq!(r.overall_code, i32::from(Code::OverLimit), "{key}");
        }
        // Operator mistakes fail the call; a wrong token too.
        let e = client
            .should_rate_limit(ask(&[("api_key", "vk_a"), ("route", "nope")], 1))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let mut bad = ask(&[("api_key", "vk_a")], 1);
        bad.metadata_mut()
            .insert("authorization", "Bearer nope".parse().unwrap());
        let e = client.should_rate_limit(bad).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
    });
    // The proxies see the unit gRPC charged: 2 of 5 used, three more fit.
    assert_eq!(p.send("GET", "t.test.local", "/x", &key, b"").status, 200);
    assert_eq!(
        other.send("GET", "t.test.local", "/x", &key, b"").status,
        200
    );
    assert_eq!(p.send("GET", "t.test.local", "/x", &key, b"").status, 200);
    other
        .send("GET", "t.test.local", "/x", &key, b"")
        .assert_error(429, "quota_exceeded");
}
