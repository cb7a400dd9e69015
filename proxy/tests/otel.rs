//! OTLP span export through the real binary, to a collector stand-in on loopback that
//! records what the proxy POSTs to `/v1/traces` (OTLP/HTTP, protobuf).

use vantage_testkit::*;

#[test]
fn spans_for_the_request_and_its_phases_reach_the_collector() {
    let collector = Collector::start();
    let o = Origin::start("o");
    let key = "vk_live_otel_test_key_0123456789abcdef";
    let hash = hash_key(key);
    let body = format!(
        r#"
tenants: [{{id: t, name: T, subdomain: t}}]
origins: [{{id: o, tenant_id: t, targets: [{{url: "{u}"}}]}}]
routes:
  - id: r
    tenant_id: t
    path_pattern: /*
    origin_id: o
    auth: {{mode: apikey_required}}
    rate_limits: [{{name: l, algorithm: {{type: token_bucket, rate: 100, burst: 100}}, subject: {{by: api_key}}}}]
api_keys: [{{id: k, tenant_id: t, name: K, key_hash: "{hash}"}}]
"#,
        u = o.url()
    );
    let p = Proxy::start_with(
        &body,
        &format!(
            "  tracing: {{otlp_endpoint: \"{}\", service_name: vantage-test}}\n",
            collector.endpoint()
        ),
    );
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = p.send(
        "GET",
        "t.test.local",
        "/traced",
        &[
            ("traceparent", &format!("00-{trace}-00f067aa0ba902b7-01")),
            ("X-API-Key", key),
        ],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // The origin's traceparent names the exported server span.
    let sent = r.json()["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .to_string();
    let span_id = sent.split('-').nth(2).unwrap().to_string();
    let trace_bin: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace[i * 2..i * 2 + 2], 16).unwrap())
        .collect();
    let span_bin: Vec<u8> = (0..8)
        .map(|i| u8::from_str_radix(&span_id[i * 2..i * 2 + 2], 16).unwrap())
        .collect();
    let all = wait_for("spans at the collector", 30, || {
        let all = collector.received();
        (contains(&all, b"upstream") && contains(&all, &span_bin)).then_some(all)
    });
    for name in [
        &b"request"[..],
        b"auth",
        b"rate_limit",
        b"upstream",
        b"vantage-test",
        b"/traced",
    ] {
        assert!(
            contains(&all, name),
            "{} in the export",
            String::from_utf8_lossy(name)
        );
    }
    assert!(contains(&all, &trace_bin), "the client's trace id");
    assert!(contains(&all, &span_bin), "the server span's id");
}
