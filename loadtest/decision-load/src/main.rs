//! `decision-load json|grpc ADDR TOKEN API_KEY SECONDS CONCURRENCY`: asks the decision service
//! for one decision per call (cost 1, the key's plan), from CONCURRENCY tasks in a closed
//! loop for SECONDS, and prints `{"calls", "errors", "refused", "per_s", "p50_ms", "p99_ms"}`.
//! JSON calls go over HTTP/1.1 keep-alive connections, gRPC calls over four h2c channels.

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: u64,
    refused: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, addr, token, key, secs, conc] = &args[..] else {
        eprintln!("usage: decision-load json|grpc ADDR TOKEN API_KEY SECONDS CONCURRENCY");
        std::process::exit(2);
    };
    let secs: u64 = secs.parse().expect("SECONDS");
    let conc: usize = conc.parse().expect("CONCURRENCY");
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    match mode.as_str() {
        "json" => {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(conc)
                .build()
                .expect("client");
            let url = format!("http://{addr}/api/public/v1/rate-limit/validate");
            let body = serde_json::json!({"api_key": key}).to_string();
            for _ in 0..conc {
                let (client, url, body, token) =
                    (client.clone(), url.clone(), body.clone(), token.clone());
                tasks.push(tokio::spawn(async move {
                    let mut t = Tally::default();
                    while Instant::now() < until {
                        let start = Instant::now();
                        let r = client
                            .post(&url)
                            .bearer_auth(&token)
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .await;
                        match r {
                            Ok(r) if r.status() == 200 => {
                                let v: serde_json::Value = r.json().await.unwrap_or_default();
                                if v["allowed"] != true {
                                    t.refused += 1;
                                }
                                t.latencies.push(start.elapsed());
                            }
                            _ => t.errors += 1,
                        }
                    }
                    t
                }));
            }
        }
        "grpc" => {
            let mut channels = Vec::new();
            for _ in 0..4 {
                let c = RateLimitServiceClient::connect(format!("http://{addr}"))
                    .await
                    .expect("connect");
                channels.push(c);
            }
            for i in 0..conc {
                let mut client = channels[i % channels.len()].clone();
                let (key, token) = (key.clone(), token.clone());
                tasks.push(tokio::spawn(async move {
                    let mut t = Tally::default();
                    let auth: tonic::metadata::MetadataValue<_> =
                        format!("Bearer {token}").parse().expect("token");
                    while Instant::now() < until {
                        let mut req = tonic::Request::new(RateLimitRequest {
                            domain: String::new(),
                            descriptors: vec![RateLimitDescriptor {
                                entries: vec![Entry {
                                    key: "api_key".into(),
                                    value: key.clone(),
                                }],
                                ..Default::default()
                            }],
                            hits_addend: 1,
                        });
                        req.metadata_mut().insert("authorization", auth.clone());
                        let start = Instant::now();
                        match client.should_rate_limit(req).await {
                            Ok(r) => {
                                if r.into_inner().overall_code != 1 {
                                    t.refused += 1;
                                }
                                t.latencies.push(start.elapsed());
                            }
                            Err(_) => t.errors += 1,
                        }
                    }
                    t
                }));
            }
        }
        other => panic!("unknown mode {other}"),
    }
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await.expect("task");
        all.latencies.extend(t.latencies);
        all.errors += t.errors;
        all.refused += t.refused;
    }
    all.latencies.sort();
    let pct = |p: f64| {
        let n = all.latencies.len();
        if n == 0 {
            return 0.0;
        }
        all.latencies[((n as f64 * p) as usize).min(n - 1)].as_secs_f64() * 1000.0
    };
    println!(
        "{}",
        serde_json::json!({
            "calls": all.latencies.len(),
            "errors": all.errors,
            "refused": all.refused,
            "per_s": all.latencies.len() as f64 / secs as f64,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
        })
    );
}
