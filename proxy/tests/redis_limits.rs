//! Rate limits shared through a real (private) Redis, and what happens when it goes away.

use vantage_testkit::*;

fn redis_server(redis: &Redis) -> String {
    format!(
        "  redis: {{url: \"{}\", key_prefix: vtest, timeout_ms: 50}}\n",
        redis.url()
    )
}

#[test]
fn three_proxies_share_one_global_limit() {
    let redis = Redis::start();
    let o = Origin::start("o");
    let body = format!(
        r#"
tenants: [{{id: t, name: T, subdomain: t}}]
origins: [{{id: o, tenant_id: t, targets: [{{url: "{u}"}}]}}]
routes:
  - id: r
    tenant_id: t
    path_pattern: /*
    origin_id: o
    rate_limits: [{{name: global, algorithm: {{type: token_bucket, rate: 0.01, burst: 30}}, subject: {{by: tenant}}, backend: redis}}]
"#,
        u = o.url()
    );
    let proxies: Vec<Proxy> = (0..3)
        .map(|_| Proxy::start_with(&body, &redis_server(&redis)))
        .collect();
    for p in &proxies {
        p.wait_redis_connected();
    }
    let mut admitted = 0;
    for i in 0..60 {
        let r = proxies[i % 3].get("t.test.local", "/x");
        match r.status {
            200 => admitted += 1,
            429 => {
                r.assert_error(429, "rate_limited");
            }
            s => panic!("unexpected {s}: {}", r.text()),
        }
        assert_eq!(r.header("x-ratelimit-limit"), Some("30"));
    }
    // Tolerance: the burst of 30, plus at most one refilled token (0.01 r/s).
    assert!(
        (30..=31).contains(&admitted),
        "admitted {admitted} of 60 across three proxies"
    );
    for p in &proxies {
        assert!(
            !p.metrics().contains("vantage_ratelimit_fallbacks_total"),
            "every decision came from Redis"
        );
    }
    // One key, hash-tagged, built from tenant/policy/subject only, with a TTL.
    let keys = redis.cli(&["--scan", "--pattern", "vtest:rl:*"]);
    let keys: Vec<&str> = keys.lines().collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].starts_with("vtest:rl:{t"), "{keys:?}");
    let ttl: i64 = redis.cli(&["PTTL", keys[0]]).trim().parse().unwrap();
    assert!(ttl > 0, "idle keys expire: {ttl}");
}

#[test]
fn redis_outage_follows_on_redis_error_and_enforcement_resumes() {
    let mut redis = Redis::start();
    let o = Origin::start("o");
    let route = |id: &str, mode: &str| {
        format!(
            "  - {{id: {id}, tenant_id: t, path_pattern: /{id}, origin_id: o, rate_limits: [{{name: {id}, algorithm: {{type: token_bucket, rate: 0.01, burst: 3}}, subject: {{by: route}}, backend: redis, on_redis_error: {mode}}}]}}\n"
        )
    };
    let body = format!(
        "tenants: [{{id: t, name: T, subdomain: t}}]\norigins: [{{id: o, tenant_id: t, targets: [{{url: \"{}\"}}]}}]\nroutes:\n{}{}{}",
        o.url(),
        route("allow", "allow"),
        route("deny", "deny"),
        route("local", "local"),
    );
    let p = Proxy::start_with(&body, &redis_server(&redis));
    let statuses = |path: &str, n: usize| -> Vec<u16> {
        (0..n).map(|_| p.get("t.test.local", path).status).collect()
    };
    p.wait_redis_connected();
    assert_eq!(statuses("/deny", 4), vec![200, 200, 200, 429]);
    assert_eq!(statuses("/local", 4), vec![200, 200, 200, 429]);

    redis.stop();
    // allow: fail open. deny: 503, never 401/403. local: this proxy's own limiter.
    assert!(statuses("/allow", 6).iter().all(|s| *s == 200));
    let r = p.get("t.test.local", "/deny");
    r.assert_error(503, "rate_limit_unavailable");
    assert_eq!(statuses("/local", 4), vec![200, 200, 200, 429]);
    let m = p.metrics();
    for mode in ["allow", "deny", "local"] {
        assert!(
            m.contains(&format!(
                "vantage_ratelimit_fallbacks_total{{mode=\"{mode}\"}}"
            )),
            "{mode}: {m}"
        );
    }
    assert!(m.contains("vantage_redis_errors_total{op=\"ratelimit\"}"));

    // Redis comes back (empty): the client reconnects by itself and Redis decides again.
    redis.restart();
    p.wait_redis_connected();
    assert_eq!(
        statuses("/deny", 4),
        vec![200, 200, 200, 429],
        "the fresh Redis counts again"
    );
}
