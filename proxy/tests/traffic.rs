//! Traffic management through the real binary: weighted splits (random, sticky, forced by
//! rules, across reloads and weight changes), mirroring, API versions with their
//! deprecation and sunset, and fallback answers.

use std::collections::BTreeMap;
use vantage_testkit::*;

/// Tenant `t` with origins `stable` and `canary` (and `extra` origins), and `routes`.
fn config(stable: &Origin, canary: &Origin, extra_origins: &str, routes: &str) -> String {
    format!(
        r#"
tenants:
  - {{id: t, name: T, subdomain: t}}
  - {{id: other, name: Other, subdomain: other}}
origins:
  - {{id: stable, tenant_id: t, targets: [{{url: "{s}"}}]}}
  - {{id: canary, tenant_id: t, targets: [{{url: "{c}"}}]}}
  - {{id: other-o, tenant_id: other, targets: [{{url: "{c}"}}]}}
{extra_origins}
routes:
{routes}
api_keys:
  - {{id: k1, tenant_id: t, name: one, key_hash: "{h1}"}}
  - {{id: k2, tenant_id: t, name: two, key_hash: "{h2}"}}
"#,
        s = stable.url(),
        c = canary.url(),
        h1 = hash_key("key-one"),
        h2 = hash_key("key-two"),
    )
}

fn split_route(weights: (u32, u32), extra: &str) -> String {
    format!(
        "  - {{id: api, tenant_id: t, path_pattern: \"/*\", origin_id: stable, traffic: {{split: {{origins: [{{origin_id: stable, weight: {}}}, {{origin_id: canary, weight: {}}}]{extra}}}}}}}\n",
        weights.0, weights.1
    )
}

/// Which origin answered each user (sticky by `X-User`).
fn placements(p: &Proxy, users: usize) -> BTreeMap<usize, String> {
    (0..users)
        .map(|u| {
            let r = p.send(
                "GET",
                "t.test.local",
                "/x",
                &[("X-User", &format!("user-{u}"))],
                b"",
            );
            assert_eq!(r.status, 200, "{}", r.text());
            (u, r.origin())
        })
        .collect()
}

#[test]
fn a_weighted_split_sends_each_origin_its_share_and_names_it() {
    let (stable, canary) = (Origin::start("stable"), Origin::start("canary"));
    let p = Proxy::start(&config(&stable, &canary, "", &split_route((80, 20), "")));
    let n = 1000;
    let counts = tally((0..n).map(|_| p.get("t.test.local", "/x")));
    // 20% of 1000 is 200; the standard deviation is 12.6: ±63 is five of them.
    let c = counts.get("canary").copied().unwrap_or(0);
    assert!((137..=263).contains(&c), "{counts:?}");
    assert_eq!(counts.get("stable").copied().unwrap_or(0) + c, n);

    // The metrics and the access log name the origin that served.
    let m = p.metrics();
    let series = |o: &str| {
        format!(r#"vantage_split_requests_total{{origin="{o}",route="api",tenant="t"}} "#)
    };
    assert!(m.contains(&format!("{}{c}", series("canary"))), "{m}");
    assert!(m.contains(&format!("{}{}", series("stable"), n - c)), "{m}");
    let r = p.send(
        "GET",
        "t.test.local",
        "/x",
        &[("X-Request-Id", "split-log-1")],
        b"",
    );
    let line = wait_for("access log line", 10, || {
        p.log()
            .lines()
            .find(|l| l.contains("split-log-1") && l.contains("\"origin\""))
            .map(String::from)
    });
    assert!(
        line.contains(&format!("\"origin\":\"{}\"", r.origin())),
        "{line}"
    );
}

#[test]
fn sticky_clients_keep_their_origin_across_reloads_and_a_weight_change_moves_only_the_needed_share()
{
    let (stable, canary) = (Origin::start("stable"), Origin::start("canary"));
    let sticky = ", sticky: {by: header, name: X-User}";
    let p = Proxy::start(&config(
        &stable,
        &canary,
        "",
        &split_route((90, 10), sticky),
    ));
    let users = 600;
    let before = placements(&p, users);
    // Asked again, every user lands where it did.
    assert_eq!(placements(&p, users), before);

    // A reload that changes the tenant (a new route) keeps every placement.
    let v = p.version();
    let more = split_route((90, 10), sticky)
        + "  - {id: other-route, tenant_id: t, path_pattern: \"/other\", origin_id: stable}\n";
    p.write_body(&config(&stable, &canary, "", &more));
    p.wait_version(v + 1);
    assert_eq!(placements(&p, users), before);

    // 10% → 30%: users move from stable to canary only, about a fifth of them.
    p.write_body(&config(
        &stable,
        &canary,
        "",
        &split_route((70, 30), sticky),
    ));
    p.wait_version(v + 2);
    let after = placements(&p, users);
    let mut moved = 0;
    for (u, was) in &before {
        let now = &after[u];
        assert!(
            !(was == "canary" && now == "stable"),
            "user-{u} left the canary"
        );
        moved += usize::from(was != now);
    }
    // 20% of 600 is 120; the standard deviation is 9.8: ±49 is five of them.
    assert!((71..=169).contains(&moved), "{moved} of {users} moved");
}

#[test]
fn a_split_sticky_by_api_key_keeps_each_key_on_one_origin() {
    let (stable, canary) = (Origin::start("stable"), Origin::start("canary"));
    let route = "  - {id: api, tenant_id: t, path_pattern: \"/*\", origin_id: stable, auth: {mode: apikey_required}, traffic: {split: {origins: [{origin_id: stable, weight: 50}, {origin_id: canary, weight: 50}], sticky: {by: api_key}}}}\n";
    let p = Proxy::start(&config(&stable, &canary, "", route));
    for key in ["key-one", "key-two"] {
        let origins: std::collections::BTreeSet<String> = (0..30)
            .map(|_| {
                let r = p.send("GET", "t.test.local", "/x", &[("X-Api-Key", key)], b"");
                assert_eq!(r.status, 200, "{}", r.text());
                r.origin()
            })
            .collect();
        assert_eq!(origins.len(), 1, "{key} went to {origins:?}");
    }
    // Without a key nothing is split: the route refuses first.
    p.get("t.test.local", "/x")
        .assert_error(401, "unauthorized");
}

#[test]
fn a_rule_forces_its_origin_whatever_the_weights_and_cannot_reach_another_tenant() {
    let (stable, canary) = (Origin::start("stable"), Origin::start("canary"));
    let rules = ", rules: [{header: X-Canary, value: \"1\", origin_id: canary}, {cookie: track, value: beta, origin_id: canary}]";
    let p = Proxy::start(&config(&stable, &canary, "", &split_route((100, 0), rules)));
    assert_eq!(
        tally((0..20).map(|_| p.get("t.test.local", "/x")))["stable"],
        20
    );
    let forced = |h: (&str, &str)| p.send("GET", "t.test.local", "/x", &[h], b"").origin();
    assert_eq!(forced(("X-Canary", "1")), "canary");
    assert_eq!(forced(("Cookie", "a=b; track=beta")), "canary");
    assert_eq!(forced(("X-Canary", "2")), "stable");
    assert_eq!(forced(("Cookie", "track=betamax")), "stable");

    // A split naming another tenant's origin is refused whole, with the field's path; the
    // running configuration stays.
    let v = p.version();
    let foreign = "  - {id: api, tenant_id: t, path_pattern: \"/*\", origin_id: stable, traffic: {split: {origins: [{origin_id: stable, weight: 1}, {origin_id: other-o, weight: 99}]}}}\n";
    p.write_body(&config(&stable, &canary, "", foreign));
    wait_for("the refusal in the log", 10, || {
        p.log()
            .contains("routes[0].traffic.split.origins[1].origin_id")
            .then_some(())
    });
    assert_eq!(p.version(), v);
    assert_eq!(
        tally((0..10).map(|_| p.get("t.test.local", "/x")))["stable"],
        10
    );
}

#[test]
fn the_mirror_gets_a_copy_and_the_client_never_waits_for_it() {
    let (stable, canary) = (Origin::start("stable"), Origin::start("canary"));
    // The mirror holds every request unanswered: a mirror as slow as can be.
    let mirror = Receiver::scripted([], Reply::Hold);
    let mirror_origin = format!(
        "  - {{id: shadow, tenant_id: t, targets: [{{url: \"{}\"}}]}}",
        mirror.url("")
    );
    let route = "  - {id: api, tenant_id: t, path_pattern: \"/*\", origin_id: stable, traffic: {mirror: {origin_id: shadow, percent: 100, max_body_bytes: 16, timeout_ms: 60000, max_in_flight: 1}}}\n";
    let p = Proxy::start(&config(&stable, &canary, &mirror_origin, route));

    // A client claiming to be a copy is not believed.
    let r = p.send(
        "POST",
        "t.test.local",
        "/orders?x=1",
        &[("X-Vantage-Mirror", "1"), ("X-Custom", "c")],
        b"{\"n\": 1}",
    );
    assert_eq!((r.status, r.origin()), (200, "stable".to_string()));
    assert!(
        r.json()["headers"].get("x-vantage-mirror").is_none(),
        "{}",
        r.text()
    );

    // The copy arrives (and is held) after the client had its answer.
    let copy = &mirror.wait_for_requests(1, 10)[0];
    assert_eq!(
        (copy.method.as_str(), copy.path.as_str()),
        ("POST", "/orders?x=1")
    );
    assert_eq!(copy.header("x-vantage-mirror"), Some("1"));
    assert_eq!(copy.header("x-custom"), Some("c"));
    assert_eq!(copy.body, b"{\"n\": 1}");
    assert_eq!(copy.answered, None);

    // With the one slot taken, the next copies are dropped and counted; a body over the
    // bound is never copied. The clients are answered all the same.
    for _ in 0..3 {
        assert_eq!(p.get("t.test.local", "/y").status, 200);
    }
    let big = vec![b'x'; 64];
    assert_eq!(
        p.send("POST", "t.test.local", "/big", &[], &big).status,
        200
    );
    wait_for("drops counted", 10, || {
        let m = p.metrics();
        (m.contains(r#"vantage_mirror_requests_total{origin="shadow",result="dropped_busy"} 3"#)
            && m.contains(
                r#"vantage_mirror_requests_total{origin="shadow",result="dropped_body"} 1"#,
            ))
        .then_some(())
    });
    assert_eq!(mirror.count(), 1);
    mirror.release(200);
    wait_for("the held copy settled", 10, || {
        (p.metric(r#"vantage_mirror_requests_total{origin="shadow",result="sent"}"#) == 1.0)
            .then_some(())
    });
}

#[test]
fn a_mirror_that_is_down_changes_nothing_for_the_client() {
    let (stable, canary) = (Origin::start("stable"), Origin::start("canary"));
    let dead = Origin::dead("shadow");
    let mirror_origin = format!(
        "  - {{id: shadow, tenant_id: t, targets: [{{url: \"{}\"}}]}}",
        dead.url()
    );
    let route = "  - {id: api, tenant_id: t, path_pattern: \"/*\", origin_id: stable, traffic: {mirror: {origin_id: shadow, percent: 100}}}\n";
    let p = Proxy::start(&config(&stable, &canary, &mirror_origin, route));
    for i in 0..5 {
        let r = p.send("PUT", "t.test.local", &format!("/items/{i}"), &[], b"v");
        assert_eq!((r.status, r.origin()), (200, "stable".to_string()));
    }
    wait_for("failed copies counted", 10, || {
        (p.metric(r#"vantage_mirror_requests_total{origin="shadow",result="error"}"#) == 5.0)
            .then_some(())
    });
}

#[test]
fn api_versions_by_path_header_and_accept_carry_deprecation_sunset_and_successor() {
    let (stable, canary) = (Origin::start("v1"), Origin::start("v2"));
    let routes = r#"
  - {id: v1, tenant_id: t, path_pattern: "/v1/*", origin_id: stable, traffic: {version: {name: v1, deprecated_at: "2026-01-01T00:00:00Z", sunset_at: "2099-01-01T00:00:00Z", successor: /v2/}}}
  - {id: v2, tenant_id: t, path_pattern: "/v2/*", origin_id: canary, traffic: {version: {name: v2}}}
  - {id: h1, tenant_id: t, path_pattern: "/h/*", headers: [{name: X-Api-Version, value: "1"}], origin_id: stable, traffic: {version: {name: h1, deprecated_at: "2026-01-01T00:00:00Z"}}}
  - {id: h2, tenant_id: t, path_pattern: "/h/*", origin_id: canary, traffic: {version: {name: h2}}}
  - {id: a1, tenant_id: t, path_pattern: "/a/*", origin_id: stable, traffic: {version: {name: a1, accept: {param: version, value: "1"}, deprecated_at: "2026-02-01T00:00:00Z"}}}
  - {id: a2, tenant_id: t, path_pattern: "/a/*", origin_id: canary, traffic: {version: {name: a2}}}
  - {id: v0, tenant_id: t, path_pattern: "/v0/*", origin_id: stable, traffic: {version: {name: v0, deprecated_at: "2020-01-01T00:00:00Z", sunset_at: "2021-01-01T00:00:00Z", successor: "https://api.example.com/v2/"}}}
  - {id: legacy, tenant_id: t, path_pattern: "/legacy/*", origin_id: stable, traffic: {version: {name: legacy, sunset_at: "2021-01-01T00:00:00Z", serve_after_sunset: true}}}
"#;
    let p = Proxy::start(&config(&stable, &canary, "", routes));

    // By path: v1 announces its deprecation, sunset and successor; v2 carries none.
    let r = p.get("t.test.local", "/v1/users");
    assert_eq!((r.status, r.origin()), (200, "v1".to_string()));
    assert_eq!(r.header("deprecation"), Some("@1767225600"));
    assert_eq!(r.header("sunset"), Some("Thu, 01 Jan 2099 00:00:00 GMT"));
    assert_eq!(r.header("link"), Some("</v2/>; rel=\"successor-version\""));
    let r = p.get("t.test.local", "/v2/users");
    assert_eq!(r.origin(), "v2");
    assert_eq!((r.header("deprecation"), r.header("sunset")), (None, None));

    // By header.
    let r = p.send(
        "GET",
        "t.test.local",
        "/h/x",
        &[("X-Api-Version", "1")],
        b"",
    );
    assert_eq!(
        (r.origin().as_str(), r.header("deprecation")),
        ("v1", Some("@1767225600"))
    );
    assert_eq!(p.get("t.test.local", "/h/x").origin(), "v2");

    // By a media-type parameter of Accept.
    let accept = |a: &str| p.send("GET", "t.test.local", "/a/x", &[("Accept", a)], b"");
    let r = accept("application/json; version=1");
    assert_eq!(
        (r.origin().as_str(), r.header("deprecation")),
        ("v1", Some("@1769904000"))
    );
    assert_eq!(accept("application/json; version=2").origin(), "v2");
    assert_eq!(accept("application/json").origin(), "v2");

    // Past its sunset: 410 in the JSON shape, with the fields, and nothing reaches the origin.
    let seen = stable_seq(&p);
    let r = p.get("t.test.local", "/v0/users");
    r.assert_error(410, "api_version_sunset");
    assert_eq!(r.header("sunset"), Some("Fri, 01 Jan 2021 00:00:00 GMT"));
    assert_eq!(
        r.header("link"),
        Some("<https://api.example.com/v2/>; rel=\"successor-version\"")
    );
    assert_eq!(
        stable_seq(&p),
        seen + 1,
        "only the probe itself reached the origin"
    );
    // ... unless it keeps serving.
    let r = p.get("t.test.local", "/legacy/x");
    assert_eq!(
        (r.status, r.header("sunset")),
        (200, Some("Fri, 01 Jan 2021 00:00:00 GMT"))
    );

    // Operators see who still calls each version (v1: once, and twice for `stable_seq`).
    let m = p.metrics();
    for series in [
        r#"vantage_api_version_requests_total{state="deprecated",tenant="t",version="v1"} 3"#,
        r#"vantage_api_version_requests_total{state="current",tenant="t",version="v2"} 1"#,
        r#"vantage_api_version_requests_total{state="sunset",tenant="t",version="v0"} 1"#,
        r#"vantage_api_version_requests_total{state="sunset",tenant="t",version="legacy"} 1"#,
    ] {
        assert!(m.contains(series), "no {series} in\n{m}");
    }
}

/// How many requests the `v1` origin echoed so far (asked through the proxy).
fn stable_seq(p: &Proxy) -> u64 {
    let r = p.send("GET", "t.test.local", "/v1/seq", &[], b"");
    assert_eq!(r.origin(), "v1");
    r.json()["seq"].as_u64().expect("seq")
}

#[test]
fn a_route_without_a_healthy_target_answers_its_fallback() {
    let (stable, canary) = (Origin::start("stable"), Origin::start("canary"));
    let dead = Origin::dead("down");
    let down = format!(
        "  - {{id: down, tenant_id: t, retries: 0, targets: [{{url: \"{}\"}}], health_check: {{path: /healthz, interval_ms: 200, timeout_ms: 200, unhealthy_threshold: 1}}}}",
        dead.url()
    );
    let routes = r#"
  - {id: list, tenant_id: t, path_pattern: "/items", origin_id: down, traffic: {fallback: {status: 200, content_type: application/json, body: '{"items": [], "degraded": true}'}}}
  - {id: plain, tenant_id: t, path_pattern: "/plain", origin_id: down}
"#;
    let p = Proxy::start(&config(&stable, &canary, &down, routes));
    let r = p.get("t.test.local", "/items");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-vantage-fallback"), Some("static"));
    assert_eq!(r.json(), serde_json::json!({"items": [], "degraded": true}));
    assert!(r.header("x-request-id").is_some());
    // A HEAD gets the head only.
    let h = p.send("HEAD", "t.test.local", "/items", &[], b"");
    assert_eq!(
        (h.status, h.header("x-vantage-fallback")),
        (200, Some("static"))
    );
    // Without a fallback: the gateway's 503.
    p.get("t.test.local", "/plain")
        .assert_error(503, "no_healthy_upstream");
    assert_eq!(
        p.metric(r#"vantage_fallback_responses_total{kind="static",tenant="t"}"#),
        2.0
    );
}

#[test]
fn an_affinity_cookie_pins_a_client_and_is_rewritten_when_its_target_fails() {
    let mut origins: Vec<Origin> = ["a", "b", "c"].into_iter().map(Origin::start).collect();
    let targets: Vec<String> = origins
        .iter()
        .map(|o| format!("{{url: \"{}\"}}", o.url()))
        .collect();
    let body = format!(
        r#"
tenants: [{{id: t, name: T, subdomain: t}}]
origins:
  - {{id: pinned, tenant_id: t, lb: round_robin, retries: 2, targets: [{}], health_check: {{path: /healthz, interval_ms: 200, timeout_ms: 200, unhealthy_threshold: 1, healthy_threshold: 1}}, affinity: {{cookie: srv, ttl_seconds: 600}}}}
routes:
  - {{id: r, tenant_id: t, path_pattern: "/*", origin_id: pinned}}
"#,
        targets.join(", ")
    );
    let p = Proxy::start(&body);
    let first = p.get("t.test.local", "/x");
    let set = first
        .header("set-cookie")
        .expect("an affinity cookie")
        .to_string();
    let (pair, attributes) = set.split_once(';').unwrap();
    assert_eq!(
        attributes,
        " Path=/; Max-Age=600; Secure; HttpOnly; SameSite=Lax"
    );
    let token = pair.strip_prefix("srv=").unwrap().to_string();
    assert_eq!(token.len(), 16);
    for o in &origins {
        assert!(
            !set.contains(&o.port.to_string()),
            "the cookie names an address: {set}"
        );
    }
    let home = first.origin();
    let with = |cookie: &str| p.send("GET", "t.test.local", "/x", &[("Cookie", cookie)], b"");
    // Round robin would spread them; the cookie keeps every one on its target, unrewritten.
    for _ in 0..9 {
        let r = with(&format!("other=1; srv={token}"));
        assert_eq!(r.origin(), home);
        assert_eq!(r.header("set-cookie"), None);
    }
    // A made-up token names no target: the client is placed and told where.
    let r = with("srv=0000000000000000");
    assert!(r
        .header("set-cookie")
        .is_some_and(|c| c.starts_with("srv=")));

    // The pinned target goes down: the client moves, and its cookie is rewritten.
    origins.iter_mut().find(|o| o.name == home).unwrap().stop();
    let moved = with(&format!("srv={token}"));
    assert_eq!(moved.status, 200, "{}", moved.text());
    assert_ne!(moved.origin(), home);
    let new = moved.header("set-cookie").expect("a rewritten cookie");
    let new_token = new
        .split_once(';')
        .unwrap()
        .0
        .strip_prefix("srv=")
        .unwrap()
        .to_string();
    assert_ne!(new_token, token);
    let there = moved.origin();
    for _ in 0..5 {
        let r = with(&format!("srv={new_token}"));
        assert_eq!((r.origin(), r.header("set-cookie")), (there.clone(), None));
    }
}

#[test]
fn a_fallback_serves_a_stored_response_before_its_static_answer() {
    let (stable, canary) = (Origin::start("stable"), Origin::start("canary"));
    let mut cached = Origin::start("cached");
    let origin = format!(
        "  - {{id: cached, tenant_id: t, retries: 0, targets: [{{url: \"{}\"}}], health_check: {{path: /healthz, interval_ms: 200, timeout_ms: 200, unhealthy_threshold: 1}}}}",
        cached.url()
    );
    let route = "  - {id: c, tenant_id: t, path_pattern: \"/*\", origin_id: cached, cache: {enabled: true, default_ttl_seconds: 1, stale_if_error_seconds: 300}, traffic: {fallback: {status: 200, body: 'static', content_type: text/plain, stale: true}}}\n";
    let p = Proxy::start(&config(&stable, &canary, &origin, route));
    let first = p.get("t.test.local", "/doc");
    assert_eq!(first.header("x-cache"), Some("MISS"));
    cached.stop();
    // Once the entry is stale and the target is marked down: the stored body, marked.
    let stale = wait_for("the stored response as the fallback", 20, || {
        let r = p.get("t.test.local", "/doc");
        (r.header("x-vantage-fallback") == Some("stale")).then_some(r)
    });
    assert_eq!(
        (stale.status, stale.header("x-cache")),
        (200, Some("STALE"))
    );
    assert_eq!(stale.text(), first.text());
    // Nothing stored for this one: the static answer.
    let r = p.get("t.test.local", "/never-stored");
    assert_eq!((r.status, r.text().as_str()), (200, "static"));
    assert_eq!(r.header("x-vantage-fallback"), Some("static"));
    assert!(p.metric(r#"vantage_fallback_responses_total{kind="stale",tenant="t"}"#) >= 1.0);
}

#[test]
fn a_retried_request_is_copied_once_with_its_body() {
    let (stable, canary) = (Origin::start("stable"), Origin::start("canary"));
    let dead = Origin::dead("dead");
    let mirror = Receiver::start();
    let extra = format!(
        "  - {{id: shadow, tenant_id: t, targets: [{{url: \"{}\"}}]}}\n  - {{id: flaky, tenant_id: t, lb: round_robin, retries: 1, circuit_breaker: {{enabled: false}}, targets: [{{url: \"{}\"}}, {{url: \"{}\"}}]}}",
        mirror.url(""),
        dead.url(),
        stable.url()
    );
    let route = "  - {id: api, tenant_id: t, path_pattern: \"/*\", origin_id: flaky, traffic: {mirror: {origin_id: shadow}}}\n";
    let p = Proxy::start(&config(&stable, &canary, &extra, route));
    // Round robin: of two PUTs, one meets the dead target first and is retried.
    for i in 0..2 {
        let r = p.send(
            "PUT",
            "t.test.local",
            &format!("/doc/{i}"),
            &[],
            b"body-once",
        );
        assert_eq!((r.status, r.origin()), (200, "stable".to_string()));
    }
    let copies = mirror.wait_for_requests(2, 10);
    assert!(p.metric(r#"vantage_upstream_retries_total{origin="flaky"}"#) >= 1.0);
    for c in &copies {
        assert_eq!(c.body, b"body-once", "{c:?}");
    }
}

#[test]
fn weights_change_by_reload_under_load_without_a_failed_request() {
    let (stable, canary) = (Origin::start("stable"), Origin::start("canary"));
    let p = Proxy::start(&config(&stable, &canary, "", &split_route((100, 0), "")));
    // Bounded: at most 5,000 requests per client.
    let load = Load::start(p.port, "t.test.local", "/x", 4, 5000);
    // 100/0 → 75/25 → 50/50 → 0/100, each reload waited for.
    let v = p.version();
    for (n, weights) in [(75, 25), (50, 50), (0, 100)].into_iter().enumerate() {
        p.write_body(&config(&stable, &canary, "", &split_route(weights, "")));
        p.wait_version(v + 1 + n as u64);
    }
    let (ok, failed) = load.stop();
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(ok > 0);
    // The last weights hold: everything on the canary.
    assert_eq!(
        tally((0..20).map(|_| p.get("t.test.local", "/x")))["canary"],
        20
    );
}
