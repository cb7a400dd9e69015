//! The size of `/metrics` is bounded by design, through the real binary: per-tenant series
//! with status classes by default, per-route series only for routes (or tenants) with
//! `route_metrics`, a cap per family past which new label sets count under `_overflow`,
//! and the series of removed tenants and routes forgotten on reload.

use vantage_testkit::*;

/// Histogram buckets of the request and upstream times: 8 bounds and `+Inf`.
const BUCKET_LINES: usize = 9;

/// The sample lines of `/metrics` whose series name is exactly `name`.
fn samples<'a>(metrics: &'a str, name: &str) -> Vec<&'a str> {
    metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .collect()
}

/// The value of the sample line that is exactly `series` (labels in exposition order).
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Wait until `series` has the value `want`; the last `/metrics` text.
fn wait_value(p: &Proxy, series: &str, want: f64) -> String {
    let mut last = String::new();
    let found = try_wait(10, || {
        last = p.metrics();
        value(&last, series) == Some(want)
    });
    assert!(found, "{series} is not {want}:\n{last}");
    last
}

/// Poll `f` for up to `secs` seconds.
fn try_wait(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn many_routes_of_a_tenant_share_its_series_with_status_classes() {
    let o = Origin::start("o");
    let mut body = format!(
        "tenants: [{{id: t, name: T, subdomain: t}}]\norigins: [{{id: o, tenant_id: t, targets: [{{url: \"{}\"}}]}}]\nroutes:\n  - {{id: status, tenant_id: t, path_pattern: \"/status/*\", origin_id: o}}\n",
        o.url()
    );
    for i in 0..200 {
        body.push_str(&format!(
            "  - {{id: r{i}, tenant_id: t, path_pattern: /r{i}, origin_id: o}}\n"
        ));
    }
    let p = Proxy::start(&body);
    for i in 0..200 {
        assert_eq!(p.get("t.test.local", &format!("/r{i}")).status, 200);
    }
    for code in [201, 202, 503, 502] {
        assert_eq!(
            p.get("t.test.local", &format!("/status/{code}")).status,
            code
        );
    }
    let m = wait_value(
        &p,
        r#"vantage_requests_total{route="_tenant",status="2xx",tenant="t"}"#,
        202.0,
    );
    let m = if value(
        &m,
        r#"vantage_requests_total{route="_tenant",status="5xx",tenant="t"}"#,
    ) == Some(2.0)
    {
        m
    } else {
        wait_value(
            &p,
            r#"vantage_requests_total{route="_tenant",status="5xx",tenant="t"}"#,
            2.0,
        )
    };
    // One label set per family for the tenant: its two status classes, one histogram.
    assert_eq!(samples(&m, "vantage_requests_total").len(), 2, "{m}");
    assert_eq!(
        samples(&m, "vantage_request_duration_seconds_bucket").len(),
        BUCKET_LINES,
        "{m}"
    );
    assert_eq!(
        samples(&m, "vantage_request_duration_seconds_count"),
        [r#"vantage_request_duration_seconds_count{route="_tenant",tenant="t"} 204"#],
    );
    assert_eq!(
        samples(&m, "vantage_upstream_duration_seconds_bucket").len(),
        BUCKET_LINES,
        "{m}"
    );
    assert!(!m.contains("route=\"r1"), "no per-route series: {m}");
    assert!(
        !m.contains("status=\"200\""),
        "statuses count by class: {m}"
    );
    // The cap was not reached: the overflow counters stand at 0.
    assert_eq!(
        value(
            &m,
            r#"vantage_metrics_overflow_total{family="vantage_requests_total"}"#
        ),
        Some(0.0),
        "{m}"
    );
    // A request with no route counts under route "-" of the tenant.
    p.get("t.test.local", "/nothing-here")
        .assert_error(404, "no_route");
    wait_value(
        &p,
        r#"vantage_requests_total{route="-",status="4xx",tenant="t"}"#,
        1.0,
    );
}

#[test]
fn route_metrics_gives_a_route_or_a_tenant_series_of_their_own() {
    let o = Origin::start("o");
    let body = |with_u: bool, detail_b: bool| {
        let mut s = format!(
            r#"tenants:
  - {{id: t, name: T, subdomain: t}}
{u_tenant}origins:
  - {{id: o, tenant_id: t, targets: [{{url: "{url}"}}]}}
{u_origin}routes:
  - {{id: a, tenant_id: t, path_pattern: /a, origin_id: o, rate_limits: [{{name: la, algorithm: {{type: token_bucket, rate: 100, burst: 100}}, subject: {{by: route}}}}]}}
  - {{id: b, tenant_id: t, path_pattern: /b, origin_id: o, route_metrics: {detail_b}, rate_limits: [{{name: lb, algorithm: {{type: token_bucket, rate: 100, burst: 100}}, subject: {{by: route}}}}]}}
  - {{id: c, tenant_id: t, path_pattern: /c, origin_id: o}}
"#,
            url = o.url(),
            u_tenant = if with_u {
                "  - {id: u, name: U, subdomain: u, route_metrics: true}\n"
            } else {
                ""
            },
            u_origin = if with_u {
                format!(
                    "  - {{id: uo, tenant_id: u, targets: [{{url: \"{}\"}}]}}\n",
                    o.url()
                )
            } else {
                String::new()
            },
        );
        if with_u {
            s.push_str("  - {id: x, tenant_id: u, path_pattern: /x, origin_id: uo}\n");
            s.push_str("  - {id: y, tenant_id: u, path_pattern: /y, origin_id: uo}\n");
        }
        s
    };
    let p = Proxy::start(&body(true, true));
    for path in ["/a", "/b", "/c"] {
        assert_eq!(p.get("t.test.local", path).status, 200);
    }
    for path in ["/x", "/y"] {
        assert_eq!(p.get("u.test.local", path).status, 200);
    }
    let m = wait_value(
        &p,
        r#"vantage_requests_total{route="y",status="2xx",tenant="u"}"#,
        1.0,
    );
    let m = if value(
        &m,
        r#"vantage_requests_total{route="_tenant",status="2xx",tenant="t"}"#,
    ) == Some(2.0)
    {
        m
    } else {
        wait_value(
            &p,
            r#"vantage_requests_total{route="_tenant",status="2xx",tenant="t"}"#,
            2.0,
        )
    };
    for series in [
        r#"vantage_requests_total{route="b",status="2xx",tenant="t"} 1"#,
        r#"vantage_requests_total{route="x",status="2xx",tenant="u"} 1"#,
        r#"vantage_request_duration_seconds_count{route="b",tenant="t"} 1"#,
        r#"vantage_request_duration_seconds_count{route="_tenant",tenant="t"} 2"#,
        r#"vantage_ratelimit_decisions_total{result="allowed",route="_tenant",tenant="t"} 1"#,
        r#"vantage_ratelimit_decisions_total{result="allowed",route="b",tenant="t"} 1"#,
    ] {
        assert!(m.lines().any(|l| l == series), "no {series} in\n{m}");
    }
    assert!(!m.contains("route=\"a\""), "{m}");
    assert!(!m.contains("route=\"c\""), "{m}");
    assert!(
        !m.contains(r#"route="_tenant",status="2xx",tenant="u""#),
        "{m}"
    );
    // t: its own and b's; u: x's and y's.
    assert_eq!(
        samples(&m, "vantage_request_duration_seconds_bucket").len(),
        4 * BUCKET_LINES,
        "{m}"
    );

    // A reload that removes tenant u and turns b's detail off forgets their series (the
    // first request after the reload has them looked for); t's own stay.
    let v = p.version();
    p.write_body(&body(false, false));
    p.signal("HUP");
    p.wait_version(v + 1);
    assert_eq!(p.get("t.test.local", "/b").status, 200);
    let mut last = String::new();
    let forgotten = try_wait(10, || {
        last = p.metrics();
        !last.contains("tenant=\"u\"") && !last.contains("route=\"b\"")
    });
    assert!(forgotten, "series of u and of b remain:\n{last}");
    let m = wait_value(
        &p,
        r#"vantage_requests_total{route="_tenant",status="2xx",tenant="t"}"#,
        3.0,
    );
    assert!(
        !m.contains("vantage_upstream_duration_seconds_count{origin=\"uo\"}"),
        "{m}"
    );
}

#[test]
fn past_the_cap_new_label_sets_count_under_overflow() {
    let o = Origin::start("o");
    let mut body = String::from("tenants:\n");
    for i in 0..8 {
        body.push_str(&format!("  - {{id: t{i}, name: T{i}, subdomain: t{i}}}\n"));
    }
    body.push_str("origins:\n");
    for i in 0..8 {
        body.push_str(&format!(
            "  - {{id: o{i}, tenant_id: t{i}, targets: [{{url: \"{}\"}}]}}\n",
            o.url()
        ));
    }
    body.push_str("routes:\n");
    for i in 0..8 {
        body.push_str(&format!(
            "  - {{id: r{i}, tenant_id: t{i}, path_pattern: \"/*\", origin_id: o{i}}}\n"
        ));
    }
    let p = Proxy::start_with(&body, "  metrics: {max_series_per_family: 5}\n");
    for i in 0..8 {
        assert_eq!(p.get(&format!("t{i}.test.local"), "/x").status, 200);
    }
    let overflow = r#"vantage_metrics_overflow_total{family="vantage_requests_total"}"#;
    let m = wait_value(&p, overflow, 3.0);
    let requests = samples(&m, "vantage_requests_total");
    // Five tenants' own series and one overflow series: 6 label sets for 8 tenants.
    assert_eq!(requests.len(), 6, "{m}");
    assert!(
        requests.contains(
            &r#"vantage_requests_total{route="_overflow",status="2xx",tenant="_overflow"} 3"#
        ),
        "{m}"
    );
    let own: Vec<&str> = requests
        .iter()
        .copied()
        .filter(|l| !l.contains("_overflow"))
        .collect();
    assert_eq!(own.len(), 5, "{m}");
    assert!(own.iter().all(|l| l.ends_with(" 1")), "{m}");
    assert_eq!(
        samples(&m, "vantage_request_duration_seconds_bucket").len(),
        6 * BUCKET_LINES,
        "{m}"
    );
    assert_eq!(
        samples(&m, "vantage_upstream_duration_seconds_bucket").len(),
        6 * BUCKET_LINES,
        "{m}"
    );
    assert!(
        m.lines()
            .any(|l| l == r#"vantage_upstream_duration_seconds_count{origin="_overflow"} 3"#),
        "{m}"
    );

    // Label sets held keep counting; the others keep going to the overflow series.
    let held: String = own[0]
        .split("tenant=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    let not_held = (0..8)
        .map(|i| format!("t{i}"))
        .find(|t| !own.iter().any(|l| l.contains(&format!("tenant=\"{t}\""))))
        .unwrap();
    assert_eq!(p.get(&format!("{held}.test.local"), "/x").status, 200);
    assert_eq!(p.get(&format!("{not_held}.test.local"), "/x").status, 200);
    wait_value(
        &p,
        &format!(r#"vantage_requests_total{{route="_tenant",status="2xx",tenant="{held}"}}"#),
        2.0,
    );
    let m = wait_value(&p, overflow, 4.0);
    assert_eq!(samples(&m, "vantage_requests_total").len(), 6, "{m}");
    assert_eq!(
        value(
            &m,
            r#"vantage_requests_total{route="_overflow",status="2xx",tenant="_overflow"}"#
        ),
        Some(4.0),
        "{m}"
    );
}
