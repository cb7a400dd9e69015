//! Response caching through the real binary: real origins, real (private) Redis.

use std::time::Duration;
use vantage_testkit::*;

const TOKEN: &str = "ops-token-for-tests-0123456789";

fn body(origin: &str, acme_cache: &str, extra_routes: &str) -> String {
    format!(
        r#"
tenants:
  - {{id: acme, name: Acme, subdomain: acme}}
  - {{id: globex, name: Globex, subdomain: globex}}
origins:
  - {{id: o, tenant_id: acme, targets: [{{url: "{origin}"}}]}}
  - {{id: g, tenant_id: globex, targets: [{{url: "{origin}"}}]}}
routes:
  - {{id: c, tenant_id: acme, path_pattern: /c/*, origin_id: o, cache: {acme_cache}}}
  - {{id: gc, tenant_id: globex, path_pattern: /c/*, origin_id: g, cache: {{enabled: true, default_ttl_seconds: 60}}}}
{extra_routes}
"#
    )
}

fn seq(r: &Response) -> u64 {
    r.json()["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no seq in {}", r.text()))
}

fn purge(p: &Proxy, json: &str) -> Response {
    request(
        p.ops_port,
        "POST",
        "ops",
        "/cache/purge",
        &[
            ("Authorization", &format!("Bearer {TOKEN}")),
            ("Content-Type", "application/json"),
        ],
        json.as_bytes(),
    )
}

fn ops_token() -> String {
    format!("  ops_token: \"{TOKEN}\"\n")
}

#[test]
fn hit_after_miss_age_tenant_isolation_and_metrics() {
    let o = Origin::start("o");
    let p = Proxy::start_with(
        &body(&o.url(), "{enabled: true, default_ttl_seconds: 60}", ""),
        &ops_token(),
    );
    let a1 = p.get("acme.test.local", "/c/x");
    assert_eq!(a1.status, 200);
    assert_eq!(a1.header("x-cache"), Some("MISS"));
    let a2 = p.get("acme.test.local", "/c/x");
    assert_eq!(a2.header("x-cache"), Some("HIT"));
    assert_eq!(seq(&a1), seq(&a2), "served from the cache");
    assert!(a2.header("age").is_some(), "a hit carries Age");
    assert_ne!(
        a1.header("x-request-id"),
        a2.header("x-request-id"),
        "each response has its own request id"
    );
    // Same path, other tenant: its own entry.
    let g1 = p.get("globex.test.local", "/c/x");
    assert_eq!(g1.header("x-cache"), Some("MISS"));
    assert_ne!(seq(&g1), seq(&a1));
    assert_eq!(
        p.get("globex.test.local", "/c/x").header("x-cache"),
        Some("HIT")
    );
    // Age grows while the entry sits in the cache.
    std::thread::sleep(Duration::from_millis(2100));
    let a3 = p.get("acme.test.local", "/c/x");
    let age: u64 = a3.header("age").unwrap().parse().unwrap();
    assert!(age >= 2, "age {age}");
    // The origin's own Age counts (RFC 9111 §4.2.3).
    let r = p.send(
        "GET",
        "acme.test.local",
        "/c/aged",
        &[
            ("X-Origin-Set", "Age: 100"),
            ("X-Origin-Set", "Cache-Control: max-age=600"),
        ],
        b"",
    );
    assert_eq!(r.header("x-cache"), Some("MISS"));
    let r = p.get("acme.test.local", "/c/aged");
    let age: u64 = r.header("age").unwrap().parse().unwrap();
    assert!((100..110).contains(&age), "age {age}");
    let m = p.metrics();
    for name in [
        "vantage_cache_responses_total{result=\"HIT\"}",
        "vantage_cache_responses_total{result=\"MISS\"}",
        "vantage_cache_stores_total{storage=\"memory\"}",
        "vantage_cache_bytes{tier=\"memory\"}",
    ] {
        assert!(m.contains(name), "{name} in metrics");
    }
}

#[test]
fn ttl_expiry_revalidation_and_origin_directives() {
    let o = Origin::start("o");
    let p = Proxy::start(&body(&o.url(), "{enabled: true}", ""));
    let get = |path: &str, set: &[&str]| {
        let headers: Vec<(&str, &str)> = set.iter().map(|s| ("X-Origin-Set", *s)).collect();
        p.send("GET", "acme.test.local", path, &headers, b"")
    };
    // max-age=2: fresh, then expired and fetched again.
    let r1 = get("/c/ttl", &["Cache-Control: max-age=2"]);
    assert_eq!(r1.header("x-cache"), Some("MISS"));
    assert_eq!(
        get("/c/ttl", &["Cache-Control: max-age=2"]).header("x-cache"),
        Some("HIT")
    );
    std::thread::sleep(Duration::from_millis(3100));
    let r3 = get("/c/ttl", &["Cache-Control: max-age=2"]);
    assert_eq!(r3.header("x-cache"), Some("EXPIRED"));
    assert!(seq(&r3) > seq(&r1));
    // An expired entry with an ETag is revalidated with If-None-Match; the 304 refreshes it.
    let v = ["Cache-Control: max-age=2", "ETag: \"v1\""];
    let e1 = get("/c/etag", &v);
    std::thread::sleep(Duration::from_millis(3100));
    let e2 = get("/c/etag", &v);
    assert_eq!(e2.header("x-cache"), Some("REVALIDATED"));
    assert_eq!(
        e2.text(),
        e1.text(),
        "the stored body is served after a 304"
    );
    assert_eq!(get("/c/etag", &v).header("x-cache"), Some("HIT"));
    // no-store and private are never stored; without any freshness nothing is stored.
    for (path, cc) in [
        ("/c/ns", "Cache-Control: no-store"),
        ("/c/pv", "Cache-Control: private, max-age=60"),
    ] {
        let a = get(path, &[cc]);
        let b = get(path, &[cc]);
        assert_eq!(b.header("x-cache"), Some("MISS"), "{cc}");
        assert_ne!(seq(&a), seq(&b), "{cc}");
    }
    let a = get("/c/none", &[]);
    assert_ne!(seq(&a), seq(&get("/c/none", &[])));
    // A client's no-cache makes the cache check with the origin first.
    get("/c/nc", &["Cache-Control: max-age=60"]);
    let r = p.send(
        "GET",
        "acme.test.local",
        "/c/nc",
        &[
            ("Cache-Control", "no-cache"),
            ("X-Origin-Set", "Cache-Control: max-age=60"),
        ],
        b"",
    );
    assert_ne!(r.header("x-cache"), Some("HIT"));
}

#[test]
fn vary_query_key_and_key_headers() {
    let o = Origin::start("o");
    let extra = "  - {id: pq, tenant_id: acme, path_pattern: /p/*, origin_id: o, cache: {enabled: true, default_ttl_seconds: 60, key: path, key_headers: [X-Tier]}}";
    let p = Proxy::start(&body(
        &o.url(),
        "{enabled: true, default_ttl_seconds: 60}",
        extra,
    ));
    let vary = ("X-Origin-Set", "Vary: Accept-Language");
    let send = |path: &str, h: &[(&str, &str)]| p.send("GET", "acme.test.local", path, h, b"");
    let de = send("/c/v", &[vary, ("Accept-Language", "de")]);
    let en = send("/c/v", &[vary, ("Accept-Language", "en")]);
    assert_ne!(seq(&de), seq(&en), "another variant");
    let de2 = send("/c/v", &[vary, ("Accept-Language", "de")]);
    assert_eq!(de2.header("x-cache"), Some("HIT"));
    assert_eq!(seq(&de2), seq(&de));
    let en2 = send("/c/v", &[vary, ("Accept-Language", "en")]);
    assert_eq!(seq(&en2), seq(&en));
    // path+query (default): the query is part of the key.
    let q1 = send("/c/q?a=1", &[]);
    let q2 = send("/c/q?a=2", &[]);
    assert_ne!(seq(&q1), seq(&q2));
    assert_eq!(seq(&send("/c/q?a=1", &[])), seq(&q1));
    // key: path: the query is ignored; key_headers split entries.
    let k1 = send("/p/q?a=1", &[]);
    let k2 = send("/p/q?a=2", &[]);
    assert_eq!(k2.header("x-cache"), Some("HIT"));
    assert_eq!(seq(&k1), seq(&k2));
    let k3 = send("/p/q", &[("X-Tier", "gold")]);
    assert_ne!(seq(&k3), seq(&k1));
    assert_eq!(seq(&send("/p/q?z", &[("X-Tier", "gold")])), seq(&k3));
}

#[test]
fn credentials_bypass_unless_shared_and_bypass_rules() {
    let o = Origin::start("o");
    let extra = "  - {id: s, tenant_id: acme, path_pattern: /s/*, origin_id: o, cache: {enabled: true, default_ttl_seconds: 60, shared: true}}";
    let p = Proxy::start(&body(
        &o.url(),
        "{enabled: true, default_ttl_seconds: 60, bypass: {headers: [X-Debug], cookies: [sid]}}",
        extra,
    ));
    let send = |path: &str, h: &[(&str, &str)]| p.send("GET", "acme.test.local", path, h, b"");
    let anon = send("/c/me", &[]);
    // A user's request never gets the anonymous entry, nor is its answer stored.
    let u1 = send("/c/me", &[("Authorization", "Bearer alice")]);
    assert_eq!(u1.header("x-cache"), Some("BYPASS"));
    assert_ne!(seq(&u1), seq(&anon));
    let u2 = send("/c/me", &[("Authorization", "Bearer bob")]);
    assert_eq!(u2.header("x-cache"), Some("BYPASS"));
    assert_ne!(seq(&u2), seq(&u1), "bob never sees alice's response");
    assert_eq!(seq(&send("/c/me", &[])), seq(&anon));
    for h in [("X-Debug", "1"), ("Cookie", "a=b; sid=42")] {
        let r = send("/c/me", &[h]);
        assert_eq!(r.header("x-cache"), Some("BYPASS"), "{h:?}");
    }
    // A shared route caches authenticated requests for everyone.
    let s1 = send("/s/doc", &[("Authorization", "Bearer alice")]);
    let s2 = send("/s/doc", &[("Authorization", "Bearer bob")]);
    assert_eq!(s2.header("x-cache"), Some("HIT"));
    assert_eq!(seq(&s1), seq(&s2));
    // Other methods pass through and invalidate the URL (RFC 9111 §4.4).
    let cached = send("/c/item", &[]);
    assert_eq!(send("/c/item", &[]).header("x-cache"), Some("HIT"));
    let post = p.send("POST", "acme.test.local", "/c/item", &[], b"x");
    assert_eq!(post.header("x-cache"), Some("BYPASS"));
    let after = send("/c/item", &[]);
    assert_eq!(after.header("x-cache"), Some("MISS"));
    assert_ne!(seq(&after), seq(&cached));
}

#[test]
fn purge_one_url_and_a_tenant() {
    let o = Origin::start("o");
    let p = Proxy::start_with(
        &body(&o.url(), "{enabled: true, default_ttl_seconds: 60}", ""),
        &ops_token(),
    );
    let a = p.get("acme.test.local", "/c/a");
    let b = p.get("acme.test.local", "/c/b?x=1");
    let g = p.get("globex.test.local", "/c/a");
    // Auth first, then input checks.
    let r = request(
        p.ops_port,
        "POST",
        "ops",
        "/cache/purge",
        &[],
        br#"{"tenant":"acme"}"#,
    );
    r.assert_error(401, "unauthorized");
    let r = request(
        p.ops_port,
        "POST",
        "ops",
        "/cache/purge",
        &[("Authorization", "Bearer wrong-token-0000000000")],
        br#"{"tenant":"acme"}"#,
    );
    r.assert_error(401, "unauthorized");
    purge(&p, "{not json").assert_error(400, "bad_request");
    purge(&p, r#"{"tenant":"nope"}"#).assert_error(404, "unknown_tenant");
    purge(&p, r#"{"tenant":"acme","url":"relative"}"#).assert_error(400, "bad_request");
    assert_eq!(
        p.get("acme.test.local", "/c/a").header("x-cache"),
        Some("HIT")
    );

    let r = purge(&p, r#"{"tenant":"acme","url":"/c/a"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["purged"], "url");
    let a2 = p.get("acme.test.local", "/c/a");
    assert_eq!(a2.header("x-cache"), Some("MISS"));
    assert_ne!(seq(&a2), seq(&a));
    assert_eq!(
        seq(&p.get("acme.test.local", "/c/b?x=1")),
        seq(&b),
        "other URLs stay"
    );
    assert_eq!(
        seq(&p.get("globex.test.local", "/c/a")),
        seq(&g),
        "other tenants stay"
    );

    let r = purge(&p, r#"{"tenant":"acme"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["generation"], 1);
    assert_eq!(
        p.get("acme.test.local", "/c/a").header("x-cache"),
        Some("MISS")
    );
    assert_eq!(
        p.get("acme.test.local", "/c/b?x=1").header("x-cache"),
        Some("MISS")
    );
    assert_eq!(seq(&p.get("globex.test.local", "/c/a")), seq(&g));
    assert!(p
        .metrics()
        .contains("vantage_cache_purges_total{kind=\"tenant\"} 1"));
}

/// `n` concurrent GETs of `path` on acme, and what came back.
fn burst(p: &Proxy, path: &'static str, n: usize) -> Vec<Response> {
    burst_hosts(p, path, &vec!["acme.test.local"; n])
}

/// One concurrent GET of `path` per host in `hosts`, answers in the same order.
fn burst_hosts(p: &Proxy, path: &'static str, hosts: &[&'static str]) -> Vec<Response> {
    let port = p.port;
    let handles: Vec<_> = hosts
        .iter()
        .map(|&host| std::thread::spawn(move || request(port, "GET", host, path, &[], b"")))
        .collect();
    let responses: Vec<Response> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for r in &responses {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    responses
}

fn assert_one_origin_request(responses: &[Response]) {
    let seqs: std::collections::HashSet<u64> = responses.iter().map(seq).collect();
    let caches: Vec<_> = responses.iter().map(|r| r.header("x-cache")).collect();
    assert_eq!(
        seqs.len(),
        1,
        "one origin request for {} concurrent misses: seqs {seqs:?}, x-cache {caches:?}",
        responses.len()
    );
    let misses = caches.iter().filter(|c| **c == Some("MISS")).count();
    assert_eq!(misses, 1, "x-cache {caches:?}");
}

#[test]
fn fifty_concurrent_misses_of_a_slow_origin_reach_it_once() {
    let o = Origin::start("o");
    // /slow/delay/500 reaches the origin as /delay/500: it answers after half a second.
    let slow = "  - {id: slow, tenant_id: acme, path_pattern: /slow/*, origin_id: o, strip_prefix: /slow, cache: {enabled: true, default_ttl_seconds: 60, lock_timeout_ms: 10000}}";
    let p = Proxy::start(&body(
        &o.url(),
        "{enabled: true, default_ttl_seconds: 60}",
        slow,
    ));
    let responses = burst(&p, "/slow/delay/500", 50);
    assert_one_origin_request(&responses);
    // The 49 others waited on the fill (counted as each request's log is written).
    wait_for("49 lock waits", 10, || {
        (p.metric("vantage_cache_lock_waits_total") >= 49.0).then_some(())
    });
}

/// Attack: tenant B bursts the same path at the same moment as tenant A. Coalescing is per
/// tenant's key: each tenant's origin is asked once, and nobody is served the other's answer.
#[test]
fn concurrent_misses_of_two_tenants_are_never_coalesced_together() {
    let o = Origin::start("o");
    let p = Proxy::start(&body(
        &o.url(),
        "{enabled: true, default_ttl_seconds: 60, lock_timeout_ms: 10000}",
        "",
    ));
    let hosts: Vec<&str> = (0..40)
        .map(|i| {
            if i % 2 == 0 {
                "acme.test.local"
            } else {
                "globex.test.local"
            }
        })
        .collect();
    let responses = burst_hosts(&p, "/c/same", &hosts);
    let (acme, globex): (Vec<_>, Vec<_>) = responses
        .into_iter()
        .zip(&hosts)
        .partition(|(_, h)| h.starts_with("acme"));
    let acme: Vec<Response> = acme.into_iter().map(|(r, _)| r).collect();
    let globex: Vec<Response> = globex.into_iter().map(|(r, _)| r).collect();
    assert_one_origin_request(&acme);
    assert_one_origin_request(&globex);
    assert_ne!(seq(&acme[0]), seq(&globex[0]), "each tenant its own fetch");
    // Afterwards each tenant still hits its own entry.
    assert_eq!(seq(&p.get("acme.test.local", "/c/same")), seq(&acme[0]));
    assert_eq!(seq(&p.get("globex.test.local", "/c/same")), seq(&globex[0]));
}

/// A fast origin: the fill completes while the burst is still arriving, so some requests
/// miss in storage just before the entry is stored and take the lock just after it is
/// released. They must look up again, not fetch a second time.
#[test]
fn misses_arriving_as_a_fast_fill_completes_reach_the_origin_once() {
    let o = Origin::start("o");
    let p = Proxy::start(&body(
        &o.url(),
        "{enabled: true, default_ttl_seconds: 60, lock_timeout_ms: 10000}",
        "",
    ));
    for (i, path) in ["/c/a", "/c/b", "/c/c"].into_iter().enumerate() {
        let responses = burst(&p, path, 50);
        assert_one_origin_request(&responses);
        assert_eq!(seq(&responses[0]) as usize, i + 1, "one fetch per path");
    }
}

#[test]
fn stale_if_error_serves_the_old_body_when_the_origin_fails() {
    let mut o = Origin::start("o");
    let p = Proxy::start(&body(
        &o.url(),
        "{enabled: true, default_ttl_seconds: 1, stale_if_error_seconds: 60}",
        "",
    ));
    let first = p.get("acme.test.local", "/c/doc");
    assert_eq!(first.status, 200);
    std::thread::sleep(Duration::from_millis(2100));
    o.stop();
    let stale = p.get("acme.test.local", "/c/doc");
    assert_eq!(stale.status, 200, "{}", stale.text());
    assert_eq!(stale.header("x-cache"), Some("STALE"));
    assert_eq!(stale.text(), first.text());
    // Nothing stored: the failure shows.
    assert_eq!(p.get("acme.test.local", "/c/other").status, 502);
    // Back up: fresh content again.
    o.restart();
    let r = p.get("acme.test.local", "/c/doc");
    assert_eq!(r.status, 200);
    assert_ne!(r.header("x-cache"), Some("STALE"));
}

#[test]
fn redis_tier_is_shared_and_purges_reach_the_fleet() {
    let mut redis = Redis::start();
    let o = Origin::start("o");
    let server = format!(
        "  redis: {{url: \"{}\", key_prefix: vcache, timeout_ms: 100}}\n{}",
        redis.url(),
        ops_token()
    );
    let cfg = body(&o.url(), "{enabled: true, default_ttl_seconds: 60, storage: memory+redis}", "  - {id: r, tenant_id: acme, path_pattern: /r/*, origin_id: o, cache: {enabled: true, default_ttl_seconds: 60, storage: redis}}");
    let p1 = Proxy::start_with(&cfg, &server);
    let p2 = Proxy::start_with(&cfg, &server);
    p1.wait_redis_connected();
    p2.wait_redis_connected();
    // Filled through p1, served by p2 from Redis.
    let a = p1.get("acme.test.local", "/r/shared");
    assert_eq!(a.header("x-cache"), Some("MISS"));
    let b = p2.get("acme.test.local", "/r/shared");
    assert_eq!(b.header("x-cache"), Some("HIT"), "{}", p2.log());
    assert_eq!(seq(&a), seq(&b));
    assert!(!redis
        .cli(&["--scan", "--pattern", "vcache:cache:*"])
        .trim()
        .is_empty());
    // memory+redis: p2 keeps its own memory copy too.
    let t1 = p1.get("acme.test.local", "/c/t");
    assert_eq!(seq(&p2.get("acme.test.local", "/c/t")), seq(&t1));

    // A purge on p1 reaches p2's memory tier as well.
    let r = purge(&p1, r#"{"tenant":"acme","url":"/c/t"}"#);
    assert_eq!(r.json()["fleet"], true, "{}", r.text());
    wait_for("purge on p2", 10, || {
        (p2.get("acme.test.local", "/c/t").header("x-cache") == Some("MISS")).then_some(())
    });
    let before = seq(&p2.get("acme.test.local", "/r/shared"));
    let r = purge(&p2, r#"{"tenant":"acme"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["fleet"], true);
    wait_for("tenant purge on p1", 10, || {
        let r = p1.get("acme.test.local", "/r/shared");
        (seq(&r) != before).then_some(())
    });
    // A proxy started later learns the generation from Redis and shares the new entries.
    let p3 = Proxy::start_with(&cfg, &server);
    p3.wait_redis_connected();
    wait_for("p3 shares the new generation", 10, || {
        (p3.get("acme.test.local", "/r/shared").header("x-cache") == Some("HIT")).then_some(())
    });

    // Redis gone: a miss, never an error.
    redis.stop();
    let r = p1.get("acme.test.local", "/r/new");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-cache"), Some("MISS"));
    assert_eq!(p1.get("acme.test.local", "/r/new").status, 200);
    assert!(p1
        .metrics()
        .contains("vantage_redis_errors_total{op=\"cache\"}"));
}
