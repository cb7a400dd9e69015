//! Reloads, shutdown, TLS and HTTP/2, through the real binary.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use vantage_testkit::*;

fn body(origins: &[&Origin], generation: usize) -> String {
    let targets: String = origins
        .iter()
        .map(|o| format!("{{url: \"{}\"}}, ", o.url()))
        .collect();
    format!(
        r#"
tenants: [{{id: t, name: T, subdomain: t}}]
origins:
  - {{id: o, tenant_id: t, targets: [{targets}], health_check: {{path: /healthz, interval_ms: 200, timeout_ms: 300}}}}
routes:
  - {{id: r, tenant_id: t, path_pattern: "/*", origin_id: o, response_headers: {{set: {{X-Generation: "{generation}"}}}}}}
  - {{id: extra-{generation}, tenant_id: t, path_pattern: "/gen/{generation}", origin_id: o}}
"#
    )
}

#[test]
fn reload_under_continuous_load_fails_no_request() {
    let a = Origin::start("a");
    let b = Origin::start("b");
    let p = Proxy::start(&body(&[&a], 1));
    // Bounded: stops when told, or after 20,000 requests per client.
    let load = Load::start(p.port, "t.test.local", "/load", 4, 20_000);

    // Six reloads: by file watch and by SIGHUP, changing routes and the origin's targets.
    for generation in 2..=7 {
        let origins: Vec<&Origin> = if generation % 2 == 0 {
            vec![&a, &b]
        } else {
            vec![&b]
        };
        p.write_body(&body(&origins, generation));
        if generation % 3 == 0 {
            p.signal("HUP");
        }
        p.wait_version(generation as u64);
        assert_eq!(
            p.get("t.test.local", &format!("/gen/{generation}")).status,
            200
        );
        let r = p.get("t.test.local", "/x");
        assert_eq!(
            r.header("x-generation"),
            Some(generation.to_string().as_str())
        );
    }
    let (ok, failed) = load.stop();
    assert!(
        failed.is_empty(),
        "{} failed requests, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(ok > 50, "load ran: {ok}");
    // The last generation has only b.
    assert!((0..6).all(|_| p.get("t.test.local", "/").origin() == "b"));
    assert!(p
        .metrics()
        .contains("vantage_config_reloads_total{result=\"ok\"} 6"));
}

#[test]
fn an_in_flight_request_finishes_on_the_snapshot_it_started_with() {
    let a = Origin::start("a");
    let p = Proxy::start(&body(&[&a], 1));
    let port = p.port;
    let slow =
        std::thread::spawn(move || request(port, "GET", "t.test.local", "/delay/1500", &[], b""));
    wait_for("slow request in flight", 10, || {
        p.metrics()
            .contains("vantage_active_requests 1")
            .then_some(())
    });
    p.write_body(&body(&[&a], 2));
    p.wait_version(2);
    assert_eq!(
        p.get("t.test.local", "/x").header("x-generation"),
        Some("2")
    );
    let r = slow.join().unwrap();
    assert_eq!((r.status, r.header("x-generation")), (200, Some("1")));
}

#[test]
fn sighup_reloads_and_an_invalid_reload_is_refused_while_traffic_continues() {
    let a = Origin::start("a");
    // No file watching: only SIGHUP reloads here.
    let p = Proxy::start_with(&body(&[&a], 1), "  watch_config: false\n");
    assert_eq!(
        p.get("t.test.local", "/x").header("x-generation"),
        Some("1")
    );

    // Field errors (validation) and broken YAML (parsing): both refused, old config stays.
    let invalid = body(&[&a], 2).replace("path_pattern: \"/*\"", "path_pattern: \"no-slash\"");
    p.write_body(&invalid);
    p.signal("HUP");
    wait_for("refused reload", 10, || {
        p.metrics()
            .contains("vantage_config_reloads_total{result=\"error\"}")
            .then_some(())
    });
    p.write_raw("tenants: [unclosed");
    p.signal("HUP");
    wait_for("second refused reload", 10, || {
        p.metrics()
            .contains("vantage_config_reloads_total{result=\"error\"} 2")
            .then_some(())
    });
    assert!(p
        .log()
        .contains("routes[0].path_pattern: 'no-slash': must start with '/'"));
    assert_eq!(p.version(), 1);
    for _ in 0..10 {
        let r = p.get("t.test.local", "/x");
        assert_eq!((r.status, r.header("x-generation")), (200, Some("1")));
    }
    // A good file is picked up on the next SIGHUP, and not before.
    p.write_body(&body(&[&a], 3));
    std::thread::sleep(std::time::Duration::from_millis(1200));
    assert_eq!(
        p.version(),
        1,
        "watch_config: false does not watch the file"
    );
    p.signal("HUP");
    p.wait_version(2);
    assert_eq!(
        p.get("t.test.local", "/x").header("x-generation"),
        Some("3")
    );
}

#[test]
fn sigterm_drains_in_flight_requests_within_the_bound() {
    let a = Origin::start("a");
    let mut p = Proxy::start(&body(&[&a], 1));
    let port = p.port;
    let slow =
        std::thread::spawn(move || request(port, "GET", "t.test.local", "/delay/1000", &[], b""));
    wait_for("slow request in flight", 10, || {
        p.metrics()
            .contains("vantage_active_requests 1")
            .then_some(())
    });
    p.signal("TERM");
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200, "the in-flight request finished");
    // The proxy exits once idle; grace_period_seconds (10 in tests) is only the upper bound,
    // and Pingora's 300 s default must not apply.
    assert!(
        p.wait_exit(30),
        "proxy did not exit after SIGTERM; log:\n{}",
        p.log()
    );
    assert!(
        p.log().contains("no request in flight, exiting"),
        "{}",
        p.log()
    );
    assert!(
        try_request(port, "GET", "t.test.local", "/", &[], b"").is_err(),
        "still accepting"
    );
}

/// SIGTERM while clients keep sending and slow requests are in flight: every request the
/// proxy answered, before or after the signal, has its row in `request_logs` when the
/// process has exited.
#[test]
fn sigterm_under_load_exits_only_after_every_answered_request_is_logged() {
    let db = Database::shared();
    db.migrate();
    let a = Origin::start("a");
    let extra = format!(
        "  postgres: {{url: \"{}\", timeout_ms: 2000, request_logs: {{enabled: true, batch_size: 20, flush_interval_ms: 100}}}}\n",
        db.url()
    );
    let mut p = Proxy::start_with(&body(&[&a], 1), &extra);
    let port = p.port;
    let answered = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sent = Arc::new(AtomicUsize::new(0));
    // Slow requests that are certainly in flight when the signal comes.
    let slow: Vec<_> = (0..3)
        .map(|i| {
            let answered = answered.clone();
            std::thread::spawn(move || {
                let id = format!("term-slow-{i}");
                let r = request(
                    port,
                    "GET",
                    "t.test.local",
                    "/delay/1500",
                    &[("x-request-id", &id)],
                    b"",
                );
                assert_eq!(r.status, 200, "in-flight request {id} was answered");
                answered.lock().unwrap().push(id);
            })
        })
        .collect();
    // Steady load until the proxy stops accepting (bounded: 400 requests per client).
    let steady: Vec<_> = (0..4)
        .map(|c| {
            let (answered, sent) = (answered.clone(), sent.clone());
            std::thread::spawn(move || {
                for i in 0..400 {
                    let id = format!("term-{c}-{i}");
                    let path = if i % 2 == 0 { "/delay/50" } else { "/x" };
                    sent.fetch_add(1, Ordering::Relaxed);
                    match try_request(
                        port,
                        "GET",
                        "t.test.local",
                        path,
                        &[("x-request-id", &id)],
                        b"",
                    ) {
                        Ok(r) if r.status == 200 => answered.lock().unwrap().push(id),
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    wait_for("slow requests in flight under load", 10, || {
        (p.metric("vantage_active_requests") >= 3.0 && sent.load(Ordering::Relaxed) >= 20)
            .then_some(())
    });
    p.signal("TERM");
    for t in slow.into_iter().chain(steady) {
        t.join().unwrap();
    }
    assert!(
        p.wait_exit(30),
        "proxy did not exit after SIGTERM; log:\n{}",
        p.log()
    );
    let logged: std::collections::HashSet<String> = db
        .sql("SELECT request_id FROM request_logs WHERE request_id LIKE 'term-%'")
        .lines()
        .map(str::to_string)
        .collect();
    let answered = answered.lock().unwrap();
    let missing: Vec<&String> = answered.iter().filter(|id| !logged.contains(*id)).collect();
    // The three slow ones, and the steady load before the signal.
    assert!(answered.len() >= 13, "answered only {}", answered.len());
    assert!(
        missing.is_empty(),
        "{} of {} answered requests have no request_logs row: {:?}\nlog:\n{}",
        missing.len(),
        answered.len(),
        &missing[..missing.len().min(10)],
        p.log()
    );
}

fn openssl_cert(dir: &std::path::Path) -> Option<(String, String)> {
    let cert = dir.join("edge.crt");
    let key = dir.join("edge.key");
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=t.test.local",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .ok()?
        .status
        .success();
    ok.then(|| (cert.display().to_string(), key.display().to_string()))
}

#[test]
fn tls_termination_with_http2_and_h2c() {
    let a = Origin::start("a");
    let dir = temp_dir("tls");
    let (cert, key) = openssl_cert(&dir).expect("openssl is installed by scripts/test.sh");
    let tls_port = free_port();
    let extra = format!(
        "  h2c: true\n  tls:\n    - {{listen: \"127.0.0.1:{tls_port}\", cert_file: \"{cert}\", key_file: \"{key}\"}}\n"
    );
    let p = Proxy::start_with(&body(&[&a], 1), &extra);
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args([
                "-s",
                "-k",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
            ])
            .args(args)
            .output()
            .expect("curl is installed by scripts/test.sh");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let resolve = format!("t.test.local:{tls_port}:127.0.0.1");
    let url = format!("https://t.test.local:{tls_port}/x");
    assert_eq!(curl(&["--http2", "--resolve", &resolve, &url]), "2 200");
    assert_eq!(curl(&["--http1.1", "--resolve", &resolve, &url]), "1.1 200");
    // h2c with prior knowledge on the plain listener.
    let plain = format!("http://127.0.0.1:{}/x", p.port);
    assert_eq!(
        curl(&[
            "--http2-prior-knowledge",
            "-H",
            "Host: t.test.local",
            &plain
        ]),
        "2 200"
    );
    // The origin is told the request came over HTTPS.
    let out = Command::new("curl")
        .args(["-s", "-k", "--resolve", &resolve, &url])
        .output()
        .unwrap();
    let echo: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn upstream_tls_verification_and_http2_to_origins() {
    // Proxy "edge-a" terminates TLS (self-signed) and h2c in front of a demo origin; proxy
    // "edge-b" uses edge-a as its origin over https (verified or not) and over h2c.
    let a = Origin::start("a");
    let dir = temp_dir("up-tls");
    let (cert, key) = openssl_cert(&dir).expect("openssl is installed by scripts/test.sh");
    let tls_port = free_port();
    let extra = format!(
        "  h2c: true\n  tls:\n    - {{listen: \"127.0.0.1:{tls_port}\", cert_file: \"{cert}\", key_file: \"{key}\"}}\n"
    );
    let edge_a = Proxy::start_with(&body(&[&a], 1), &extra);
    let b_body = format!(
        r#"
tenants: [{{id: t, name: T, subdomain: t}}]
origins:
  - {{id: unverified, tenant_id: t, preserve_host: true, targets: [{{url: "https://127.0.0.1:{tls_port}"}}], tls: {{verify: false, sni: t.test.local}}, protocol: auto}}
  - {{id: verified, tenant_id: t, preserve_host: true, retries: 0, targets: [{{url: "https://127.0.0.1:{tls_port}"}}], tls: {{verify: true, sni: t.test.local}}}}
  - {{id: h2c, tenant_id: t, preserve_host: true, targets: [{{url: "http://127.0.0.1:{plain}"}}], protocol: http2}}
routes:
  - {{id: r-unverified, tenant_id: t, path_pattern: /unverified/*, origin_id: unverified}}
  - {{id: r-verified, tenant_id: t, path_pattern: /verified/*, origin_id: verified}}
  - {{id: r-h2c, tenant_id: t, path_pattern: /h2c/*, origin_id: h2c}}
"#,
        plain = edge_a.port
    );
    let edge_b = Proxy::start(&b_body);

    let r = edge_b.get("t.test.local", "/unverified/x");
    assert_eq!(
        (r.status, r.origin()),
        (200, "a".to_string()),
        "{}",
        r.text()
    );
    assert_eq!(
        r.json()["headers"]["x-forwarded-proto"],
        "https",
        "edge-a saw TLS"
    );
    // A self-signed certificate fails verification: 502, nothing reaches the origin.
    edge_b
        .get("t.test.local", "/verified/x")
        .assert_error(502, "upstream_error");

    let r = edge_b.get("t.test.local", "/h2c/x");
    assert_eq!(
        (r.status, r.origin()),
        (200, "a".to_string()),
        "{}",
        r.text()
    );
    // The access line is written after the response: wait for both.
    let versions: Vec<String> = wait_for("two access lines on edge-a", 10, || {
        let versions: Vec<String> = edge_a
            .log()
            .lines()
            .filter(|l| l.contains("\"target\":\"access\""))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["fields"]["version"].as_str().map(str::to_string))
            .collect();
        (versions.len() >= 2).then_some(versions)
    });
    // `protocol: auto` negotiated h2 by ALPN over TLS; `protocol: http2` spoke h2c.
    assert_eq!(
        versions,
        vec!["HTTP/2.0", "HTTP/2.0"],
        "edge-a saw HTTP/2 from edge-b"
    );
    let _ = std::fs::remove_dir_all(dir);
}
