//! DNS discovery through the real binary and a real DNS server on loopback (dnsmasq) whose
//! answers change mid-test: SRV and A records, new targets joining after their first
//! passing health check, removed ones leaving, a failed lookup keeping the last targets.

use std::collections::BTreeSet;
use vantage_testkit::*;

const HEALTH: &str = "health_check: {path: /healthz, interval_ms: 200, timeout_ms: 200, unhealthy_threshold: 1, healthy_threshold: 1}";

fn proxy(dns: &Dns, discovery: &str) -> Proxy {
    let body = format!(
        r#"
tenants: [{{id: t, name: T, subdomain: t}}]
origins:
  - {{id: svc, tenant_id: t, retries: 0, targets: [], discovery: {discovery}, {HEALTH}}}
routes:
  - {{id: r, tenant_id: t, path_pattern: "/*", origin_id: svc}}
"#
    );
    let server = format!(
        "  dns: {{nameservers: [\"{}\"], min_ttl_ms: 200, max_ttl_ms: 1000, timeout_ms: 500}}\n",
        dns.nameserver()
    );
    Proxy::start_with(&body, &server)
}

fn srv(o: &Origin) -> DnsRecord {
    DnsRecord::Srv {
        name: "_api._tcp.svc.test".into(),
        target: "lo.svc.test".into(),
        port: o.port,
        priority: 10,
        weight: 1,
    }
}

fn lo() -> DnsRecord {
    DnsRecord::Address {
        name: "lo.svc.test".into(),
        ip: "127.0.0.1".into(),
    }
}

/// The origins that answered 30 requests (every one must be a 200).
fn serving(p: &Proxy) -> BTreeSet<String> {
    tally((0..30).map(|_| p.get("t.test.local", "/x")))
        .into_keys()
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn srv_targets_follow_the_answers_and_join_after_a_passing_health_check() {
    let (a, b, c) = (Origin::start("a"), Origin::start("b"), Origin::start("c"));
    let mut d = Origin::dead("d");
    let mut dns = Dns::start(&[lo(), srv(&a), srv(&b)]);
    let p = proxy(&dns, "{srv: _api._tcp.svc.test}");
    assert_eq!(serving(&p), set(&["a", "b"]));

    // a leaves DNS; c and d (down) are added. Every request keeps being answered while the
    // proxy follows; d never joins, since it fails its first check.
    dns.answer(&[lo(), srv(&b), srv(&c), srv(&d)]);
    wait_for("the pool to follow the new answer", 20, || {
        (serving(&p) == set(&["b", "c"])).then_some(())
    });
    let label = format!("127.0.0.1:{}", d.port);
    assert!(
        p.log().contains("discovered target not joining yet") && p.log().contains(&label),
        "{}",
        p.log()
    );
    let m = p.metrics();
    assert!(
        !m.contains(&format!("127.0.0.1:{}", a.port)),
        "a's series stay:\n{m}"
    );

    // d comes up: it joins at the next lookup.
    d.restart();
    wait_for("d to join", 20, || serving(&p).contains("d").then_some(()));
}

#[test]
fn an_a_record_is_followed_and_a_failed_lookup_keeps_the_last_targets() {
    let a = Origin::start("a");
    let addr = |ip: &str| DnsRecord::Address {
        name: "api.svc.test".into(),
        ip: ip.into(),
    };
    let mut dns = Dns::start(&[addr("127.0.0.1")]);
    let p = proxy(&dns, &format!("{{name: api.svc.test, port: {}}}", a.port));
    assert_eq!(serving(&p), set(&["a"]));

    // The name moves to an address where nothing answers: that address never joins, and the
    // old one has left, so the route has no target.
    dns.answer(&[addr("127.0.0.2")]);
    wait_for("no target left", 20, || {
        (p.get("t.test.local", "/x").status == 503).then_some(())
    });
    p.get("t.test.local", "/x")
        .assert_error(503, "no_healthy_upstream");

    // Back to the first address; then the DNS server goes away: the last answer stays.
    dns.answer(&[addr("127.0.0.1")]);
    wait_for("the target back", 20, || {
        (p.get("t.test.local", "/x").status == 200).then_some(())
    });
    dns.stop();
    wait_for("a failed lookup logged", 20, || {
        p.log()
            .contains("DNS discovery failed; keeping the last targets")
            .then_some(())
    });
    assert_eq!(serving(&p), set(&["a"]));
}
