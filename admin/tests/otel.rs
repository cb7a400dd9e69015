//! The admin's optional OTLP span export, to a collector stand-in on loopback.

use std::time::{Duration, Instant};
use vantage_testkit::{contains, AdminSetup, Collector};

#[tokio::test]
async fn request_spans_reach_the_collector_joined_to_the_callers_trace() {
    let collector = Collector::start();
    let a = AdminSetup::fresh()
        .settings(&format!("otlp_endpoint: \"{}\"\n", collector.endpoint()))
        .start();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = reqwest::Client::new()
        .get(a.url("/api/v1/tenants"))
        .header("authorization", format!("Bearer {}", a.root))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let trace_bin: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace[i * 2..i * 2 + 2], 16).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = collector.received();
        if contains(&body, b"GET /api/v1/tenants") {
            assert!(contains(&body, &trace_bin), "the caller's trace id");
            assert!(contains(&body, b"vantage-admin"), "service name");
            break;
        }
        assert!(Instant::now() < deadline, "no span exported");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
