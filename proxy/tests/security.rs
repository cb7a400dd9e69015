//! Attacks on the gateway, each performed against the real binary by the party that would
//! try it (another tenant's configuration, an anonymous client, a slow client, a hostile
//! origin), and each refused.

use std::io::{Read, Write};
use std::time::{Duration, Instant};
use vantage_testkit::*;

/// One tenant `t` (custom host `api.t.example`), origin `o`, and routes; `origin_extra` and
/// `routes` are YAML fragments.
fn config(o: &Origin, origin_extra: &str, routes: &str) -> String {
    format!(
        r#"
tenants:
  - {{id: t, name: T, subdomain: t, custom_hosts: [api.t.example]}}
origins:
  - {{id: o, tenant_id: t, targets: [{{url: "{u}"}}]{origin_extra}}}
  - {{id: keep, tenant_id: t, preserve_host: true, targets: [{{url: "{u}"}}]}}
routes:
{routes}
"#,
        u = o.url()
    )
}

#[test]
fn check_refuses_a_custom_host_that_takes_another_tenants_traffic() {
    let yaml = |hosts: &str| {
        format!(
            "server: {{base_domains: [test.local, edge.example]}}\ntenants:\n  - {{id: a, name: A, subdomain: acme, custom_hosts: [api.acme.example]}}\n  - {{id: b, name: B, subdomain: mallory, custom_hosts: [{hosts}]}}\n"
        )
    };
    for (host, message) in [
        ("acme.test.local", "is under a base domain"),
        ("acme.edge.example", "is under a base domain"),
        ("future.test.local", "is under a base domain"),
        ("api.acme.example", "is also claimed by tenants[0]"),
        ("API.acme.example", "is not a lower-case host name"),
        ("api.acme.example.", "is not a lower-case host name"),
    ] {
        let (ok, err) = check_config(&yaml(host));
        assert!(!ok, "{host} accepted");
        assert!(
            err.contains(&format!("tenants[1].custom_hosts[0]: '{host}' {message}")),
            "{host}: {err}"
        );
    }
    assert!(check_config(&yaml("api.mallory.example")).0);
}

#[test]
fn private_requests_and_cookies_are_never_served_to_other_clients() {
    let o = Origin::start("o");
    let routes = r#"
  - {id: c, tenant_id: t, path_pattern: "/c/*", origin_id: o, cache: {enabled: true, default_ttl_seconds: 60}}
  - {id: ig, tenant_id: t, path_pattern: "/ig/*", origin_id: o, cache: {enabled: true, default_ttl_seconds: 60, ignore_cookies: [_ga, __session]}}
  - {id: sc, tenant_id: t, path_pattern: "/sc/*", origin_id: o, cache: {enabled: true, default_ttl_seconds: 60, store_set_cookie: true}}
  - {id: sh, tenant_id: t, path_pattern: "/sh/*", origin_id: o, cache: {enabled: true, default_ttl_seconds: 60, shared: true}}
jwt_issuers:
  - {id: clerk, tenant_id: t, issuer: "https://clerk.t.example", shared_secret: "an-hs256-secret-that-is-long-enough!!", algorithms: [HS256], cookie: __session}
"#;
    let p = Proxy::start(&config(&o, "", routes));
    let get = |path: &str, headers: &[(&str, &str)]| {
        let r = p.send("GET", "t.test.local", path, headers, b"");
        assert_eq!(r.status, 200, "{}", r.text());
        r
    };
    let seq = |r: &Response| r.json()["seq"].as_u64().unwrap();

    // Alice's request carries her session cookie: it bypasses the cache, so Bob's request
    // for the same URL goes to the origin and never gets Alice's page.
    for (path, cookie) in [
        ("/c/profile", "session=alice"),
        ("/c/me", "__session=eyJ.alice.token"),
        ("/ig/me", "_ga=1; __session=eyJ.alice.token"),
        ("/ig/prefs", "_ga=1; theme=alice"),
    ] {
        let alice = get(path, &[("Cookie", cookie)]);
        assert_eq!(alice.header("x-cache"), Some("BYPASS"), "{path} {cookie}");
        let bob = get(path, &[]);
        assert_eq!(bob.header("x-cache"), Some("MISS"), "{path}");
        assert_ne!(seq(&bob), seq(&alice));
        assert!(!bob.text().contains("alice"), "{path}: {}", bob.text());
    }
    // A cookie the route ignores does not make a request private.
    assert_eq!(
        get("/ig/x", &[("Cookie", "_ga=1")]).header("x-cache"),
        Some("MISS")
    );
    assert_eq!(
        get("/ig/x", &[("Cookie", "_ga=2")]).header("x-cache"),
        Some("HIT")
    );

    // Set-Cookie is never replayed: not stored even when public, or on a shared route...
    for path in ["/c/login", "/sh/login"] {
        let first = get(
            path,
            &[
                ("X-Origin-Set", "Set-Cookie: sid=alice"),
                ("X-Origin-Set", "Cache-Control: public, max-age=60"),
            ],
        );
        assert_eq!(first.header("set-cookie"), Some("sid=alice"));
        let second = get(path, &[]);
        assert_eq!(second.header("x-cache"), Some("MISS"), "{path}");
        assert_eq!(second.header("set-cookie"), None);
    }
    // ...and a route that opts in stores the response without it.
    let first = get("/sc/page", &[("X-Origin-Set", "Set-Cookie: sid=alice")]);
    assert_eq!(first.header("set-cookie"), Some("sid=alice"));
    let hit = get("/sc/page", &[]);
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(hit.header("set-cookie"), None);
    assert_eq!(seq(&hit), seq(&first));
}

#[test]
fn host_variants_cannot_vary_what_the_origin_sees_behind_one_cache_entry() {
    let o = Origin::start("o");
    let routes = r#"
  - {id: c, tenant_id: t, path_pattern: "/c/*", origin_id: o, cache: {enabled: true, default_ttl_seconds: 60}}
  - {id: k, tenant_id: t, path_pattern: "/keep/*", origin_id: keep, cache: {enabled: true, default_ttl_seconds: 60}}
"#;
    let p = Proxy::start(&config(&o, "", routes));
    let get = |host: &str, path: &str| {
        let r = p.send(
            "GET",
            host,
            path,
            &[("X-Forwarded-Host", "evil.example")],
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r
    };
    let poisoner = get("t.test.local:6666", "/c/x");
    assert_eq!(poisoner.header("x-cache"), Some("MISS"));
    assert_eq!(
        poisoner.json()["headers"]["x-forwarded-host"],
        "t.test.local"
    );
    // The entry it filled is what the origin says for the host itself, so sharing it is fine.
    for host in ["t.test.local", "T.Test.Local.", "t.test.local:8080"] {
        let r = get(host, "/c/x");
        assert_eq!(r.header("x-cache"), Some("HIT"), "{host}");
        assert_eq!(r.json()["headers"]["x-forwarded-host"], "t.test.local");
    }
    // Another host of the tenant is told differently, so it has an entry of its own.
    let custom = get("api.t.example", "/c/x");
    assert_eq!(custom.header("x-cache"), Some("MISS"));
    assert_eq!(
        custom.json()["headers"]["x-forwarded-host"],
        "api.t.example"
    );
    // With preserve_host the origin gets the host in normal form, never the client's spelling.
    let kept = get("T.TEST.LOCAL:6666", "/keep/y");
    assert_eq!(kept.json()["headers"]["host"], "t.test.local");
    assert_eq!(
        get("t.test.local", "/keep/y").header("x-cache"),
        Some("HIT")
    );
}

/// POST `path` announcing 100 bytes of body and sending 3; returns the answer.
fn stalled_post(port: u16, path: &str) -> Response {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: t.test.local\r\nContent-Length: 100\r\n\r\nabc"
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    parse_response(&out, false).unwrap_or_else(|| panic!("no response: {out:?}"))
}

#[test]
fn a_slow_request_body_is_the_clients_408_and_never_opens_the_breaker() {
    let o = Origin::start("o");
    let body = format!(
        r#"
tenants:
  - {{id: t, name: T, subdomain: t}}
origins:
  - {{id: o, tenant_id: t, targets: [{{url: "{u}"}}], circuit_breaker: {{failure_threshold: 2, open_ms: 60000}}}}
  - {{id: quick, tenant_id: t, targets: [{{url: "{u}"}}], timeouts: {{read_ms: 300}}, circuit_breaker: {{failure_threshold: 2, open_ms: 60000}}}}
routes:
  - {{id: r, tenant_id: t, path_pattern: "/r/*", origin_id: o}}
  - {{id: q, tenant_id: t, path_pattern: "/q/*", origin_id: quick}}
"#,
        u = o.url()
    );
    let p = Proxy::start_with(&body, "  client_limits: {body_timeout_ms: 1000}\n");
    // Six stalled uploads on each route: the client's read timeout answers them, and on
    // /q the origin's shorter read timeout fires first, while it still waits for the body.
    let port = p.port;
    let started = Instant::now();
    let stalled: Vec<Response> = ["/r/up", "/q/up"]
        .iter()
        .flat_map(|path| std::iter::repeat_n(*path, 6))
        .map(|path| std::thread::spawn(move || stalled_post(port, path)))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert!(started.elapsed() < Duration::from_secs(15));
    for r in &stalled {
        r.assert_error(408, "request_timeout");
        assert_eq!(r.header("connection"), Some("close"));
    }
    // The origin is fine, and every route on it still answers.
    for path in ["/r/after", "/q/after"] {
        assert_eq!(p.get("t.test.local", path).status, 200, "{path}");
    }
    let target = format!("127.0.0.1:{}", o.port);
    for origin in ["o", "quick"] {
        let series =
            format!("vantage_upstream_breaker_open{{origin=\"{origin}\",target=\"{target}\"}}");
        assert_eq!(p.metric(&series), 0.0, "{series}");
    }
    assert_eq!(
        p.metric("vantage_client_timeouts_total{phase=\"body\"}"),
        12.0
    );
}

/// What became of one slowloris connection.
#[derive(Debug, PartialEq)]
enum Held {
    /// Answered at once: too many connections.
    Refused,
    /// Cut with 408 when its head was not complete in time.
    TimedOut,
    Other(String),
}

/// From `from`, open `n` connections that trickle a header line every 300 ms (for at most
/// 4 s each) and report how each ended.
fn slowloris(port: u16, from: [u8; 4], n: usize) -> Vec<std::thread::JoinHandle<Held>> {
    (0..n)
        .map(|_| {
            std::thread::spawn(move || {
                let Ok(mut s) = connect_from(from, port) else {
                    return Held::Other("connect failed".into());
                };
                s.set_read_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
                let _ = s.write_all(b"GET /slow HTTP/1.1\r\nHost: t.test.local\r\n");
                let started = Instant::now();
                let mut out = Vec::new();
                let mut buf = [0u8; 4096];
                while started.elapsed() < Duration::from_secs(4) {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => out.extend_from_slice(&buf[..n]),
                        Err(_) => {
                            // Nothing to read yet: one more header line.
                            let _ = s.write_all(b"X-Slow: 1\r\n");
                        }
                    }
                }
                match parse_response(&out, false) {
                    Some(r)
                        if r.status == 429
                            && r.json()["error"]["code"] == "too_many_connections" =>
                    {
                        Held::Refused
                    }
                    Some(r)
                        if r.status == 408 && r.json()["error"]["code"] == "request_timeout" =>
                    {
                        Held::TimedOut
                    }
                    _ => Held::Other(String::from_utf8_lossy(&out).into_owned()),
                }
            })
        })
        .collect()
}

#[test]
fn slowloris_is_cut_and_capped_while_other_clients_are_served() {
    let o = Origin::start("o");
    let routes = "  - {id: r, tenant_id: t, path_pattern: \"/*\", origin_id: o}\n";
    let p = Proxy::start_with(
        &config(&o, "", routes),
        "  client_limits: {header_timeout_ms: 1500, max_connections_per_ip: 40, max_connections: 1000}\n",
    );
    // The attacker is 127.0.0.2; everyone else is 127.0.0.1.
    let attack = slowloris(p.port, [127, 0, 0, 2], 100);
    let started = Instant::now();
    let mut served = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let r = p.get("t.test.local", "/normal");
        assert_eq!(
            r.status,
            200,
            "a normal request failed during the attack: {}",
            r.text()
        );
        served += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(served >= 10, "only {served} normal requests in 3 s");
    let ends: Vec<Held> = attack.into_iter().map(|h| h.join().unwrap()).collect();
    let refused = ends.iter().filter(|e| **e == Held::Refused).count();
    let timed_out = ends.iter().filter(|e| **e == Held::TimedOut).count();
    assert_eq!(refused + timed_out, 100, "{ends:?}");
    assert!(refused >= 60, "only {refused} refused");
    assert!(timed_out >= 1, "none timed out: {ends:?}");
    assert!(
        p.metric("vantage_connections_refused_total{reason=\"max_connections_per_ip\"}") >= 60.0
    );
    assert!(p.metric("vantage_client_timeouts_total{phase=\"header\"}") >= timed_out as f64);
    wait_for("every connection let go", 10, || {
        (p.metric("vantage_connections_open") == 0.0).then_some(())
    });
}

#[test]
fn the_process_connection_cap_answers_503_and_lets_go() {
    let o = Origin::start("o");
    let routes = "  - {id: r, tenant_id: t, path_pattern: \"/*\", origin_id: o}\n";
    let p = Proxy::start_with(
        &config(&o, "", routes),
        "  client_limits: {header_timeout_ms: 5000, max_connections: 20, max_connections_per_ip: 20}\n",
    );
    // Twenty idle connections from as many addresses fill the process.
    let idle: Vec<std::net::TcpStream> = (0..20u8)
        .map(|i| connect_from([127, 0, 1, i + 1], p.port).unwrap())
        .collect();
    wait_for("twenty connections held", 10, || {
        (p.metric("vantage_connections_open") == 20.0).then_some(())
    });
    let r = parse_response(
        &raw_exchange(p.port, b"GET / HTTP/1.1\r\nHost: t.test.local\r\n\r\n").unwrap(),
        false,
    )
    .unwrap();
    r.assert_error(503, "too_many_connections");
    assert_eq!(r.header("retry-after"), Some("1"));
    // The idle ones are cut at the head deadline, and service resumes.
    drop(idle);
    wait_for("service after the idle connections left", 10, || {
        try_request(p.port, "GET", "t.test.local", "/x", &[], b"")
            .ok()
            .filter(|r| r.status == 200)
    });
    assert!(p.metric("vantage_connections_refused_total{reason=\"max_connections\"}") >= 1.0);
}

#[test]
fn malformed_request_heads_get_the_json_error_and_a_closed_connection() {
    let o = Origin::start("o");
    let p = Proxy::start(&config(
        &o,
        "",
        "  - {id: r, tenant_id: t, path_pattern: \"/*\", origin_id: o}\n",
    ));
    let host = "Host: t.test.local\r\n";
    let many: String = (0..300).map(|i| format!("X-{i}: v\r\n")).collect();
    let huge = format!("X-Big: {}\r\n", "b".repeat(1100 * 1024));
    let text = |s: String| s.into_bytes();
    let cases: Vec<(Vec<u8>, &[u16])> = vec![
        (text(format!("POST / HTTP/1.1\r\n{host}Transfer-Encoding : chunked\r\n\r\n")), &[400]),
        (text(format!("POST / HTTP/1.1\r\n{host}Transfer-Encoding: xchunked\r\n\r\n")), &[400, 501]),
        (text(format!("POST / HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")), &[400, 501]),
        (text(format!("POST / HTTP/1.0\r\n{host}Transfer-Encoding: chunked\r\n\r\n")), &[400]),
        (text(format!("POST / HTTP/1.1\r\n{host}Transfer-Encoding: identity\r\n\r\n")), &[400, 501]),
        (text(format!("POST / HTTP/1.1\r\n{host}Content-Length: 1\r\nContent-Length: 2\r\n\r\nab")), &[400]),
        (text(format!("POST / HTTP/1.1\r\n{host}Content-Length: +3\r\n\r\nabc")), &[400]),
        (text(format!("POST / HTTP/1.1\r\n{host}Content-Length: -1\r\n\r\n")), &[400]),
        (text(format!("POST / HTTP/1.1\r\n{host}Content-Length: abc\r\n\r\n")), &[400]),
        (text(format!("POST / HTTP/1.1\r\n{host}Content-Length: 99999999999999999999999\r\n\r\n")), &[400]),
        (text(format!("GET / HTTP/1.1\r\n{host}X-A: a\r\n  folded\r\n\r\n")), &[400]),
        (text("GET / HTTP/1.1\r\nHost: t.test.local\r\nHost: other.test.local\r\n\r\n".into()), &[400]),
        (text("GET http://other.test.local/ HTTP/1.1\r\nHost: t.test.local\r\n\r\n".into()), &[400]),
        (text("GET / HTTP/1.1\r\nHost: user@t.test.local\r\n\r\n".into()), &[400]),
        (text(format!("GET / HTTP/1.1\r\n{host}{many}\r\n")), &[431]),
        (text(format!("GET / HTTP/1.1\r\n{host}{huge}\r\n")), &[431]),
        (text(format!("GET /{} HTTP/1.1\r\n{host}\r\n", "u".repeat(100 * 1024))), &[414]),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n".to_vec(), &[400]),
        (text(format!("G@T / HTTP/1.1\r\n{host}\r\n")), &[400]),
        (text(format!("GET / HTTP/1.1\r\n{host}NoColonHere\r\n\r\n")), &[400]),
        (text(format!("GET / HTTP/1.1\r\n{host}X-Nul: a\0b\r\n\r\n")), &[400]),
        (text(format!("GET / HTTP/1.1\r\n{host}X-Cr: a\rb\r\n\r\n")), &[400]),
        (text("CONNECT t.test.local:443 HTTP/1.1\r\nHost: t.test.local:443\r\n\r\n".into()), &[405]),
    ];
    let refused_before = p.metric("vantage_refused_requests_total{reason=\"bad_request\"}");
    for (raw, statuses) in &cases {
        let what = String::from_utf8_lossy(&raw[..raw.len().min(80)])
            .escape_debug()
            .to_string();
        let bytes = exchange_while_sending(p.port, raw);
        let r = parse_response(&bytes, false)
            .unwrap_or_else(|| panic!("{what}: {:?}", String::from_utf8_lossy(&bytes)));
        assert!(
            statuses.contains(&r.status),
            "{what}: {} {}",
            r.status,
            r.text()
        );
        r.assert_error(r.status, r.json()["error"]["code"].as_str().unwrap());
        assert_eq!(r.header("connection"), Some("close"), "{what}");
        assert_eq!(r.header("server"), None, "{what}");
    }
    assert!(
        p.metric("vantage_refused_requests_total{reason=\"bad_request\"}") >= refused_before + 15.0
    );
    // The gateway is unharmed.
    assert_eq!(p.get("t.test.local", "/after").status, 200);
}

#[test]
fn clients_cannot_speak_for_the_hop_or_smuggle_names_and_trace_is_refused() {
    let o = Origin::start("o");
    let routes = r#"
  - {id: r, tenant_id: t, path_pattern: "/*", origin_id: o}
  - {id: traced, tenant_id: t, path_pattern: "/trace", methods: [GET, TRACE], origin_id: o}
"#;
    let p = Proxy::start(&config(&o, "", routes));
    let r = p.send(
        "GET",
        "t.test.local",
        "/x",
        &[
            ("X-Real-IP", "6.6.6.6"),
            ("Forwarded", "for=6.6.6.6;host=evil.example"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Forwarded-Proto", "https"),
            ("X_User_Id", "admin"),
            ("X-Api_Key-Id", "k"),
        ],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let h = &r.json()["headers"];
    assert!(h.get("x-real-ip").is_none(), "{h}");
    assert!(h.get("forwarded").is_none(), "{h}");
    assert_eq!(h["x-forwarded-host"], "t.test.local");
    assert_eq!(h["x-forwarded-proto"], "http");
    for name in ["x_user_id", "x-api_key-id"] {
        assert!(h.get(name).is_none(), "{name} reached the origin: {h}");
    }
    // TRACE would echo the request, credentials included: only a route listing it takes it.
    p.send("TRACE", "t.test.local", "/x", &[], b"")
        .assert_error(405, "method_not_allowed");
    assert_eq!(
        p.send("TRACE", "t.test.local", "/trace", &[], b"").status,
        200
    );
}

#[test]
fn targeted_cache_control_overrides_cache_control_for_the_gateway_only() {
    let o = Origin::start("o");
    let routes = r#"
  - {id: c, tenant_id: t, path_pattern: "/c/*", origin_id: o, cache: {enabled: true}}
"#;
    let p = Proxy::start(&config(&o, "", routes));
    let twice = |path: &str, fields: &[&str]| {
        let headers: Vec<(&str, &str)> = fields.iter().map(|f| ("X-Origin-Set", *f)).collect();
        let first = p.send("GET", "t.test.local", path, &headers, b"");
        let second = p.send("GET", "t.test.local", path, &headers, b"");
        (first, second)
    };
    // The CDN field says store, Cache-Control says no-store: the gateway stores, and clients
    // still get both fields as the origin sent them.
    let (first, second) = twice(
        "/c/a",
        &["Cache-Control: no-store", "CDN-Cache-Control: max-age=60"],
    );
    assert_eq!(first.header("x-cache"), Some("MISS"));
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert_eq!(second.header("cdn-cache-control"), Some("max-age=60"));
    assert_eq!(second.header("cache-control"), Some("no-store"));
    // The CDN field says private: not stored, whatever Cache-Control says.
    let (_, second) = twice(
        "/c/b",
        &["Cache-Control: max-age=60", "CDN-Cache-Control: private"],
    );
    assert_eq!(second.header("x-cache"), Some("MISS"));
    // An invalid targeted field is ignored.
    let (_, second) = twice(
        "/c/c",
        &[
            "Cache-Control: no-store",
            "CDN-Cache-Control: max-age=\"60\"",
        ],
    );
    assert_eq!(second.header("x-cache"), Some("MISS"));
    // The gateway's own field wins over the CDN's and never reaches clients.
    let (_, second) = twice(
        "/c/d",
        &[
            "CDN-Cache-Control: no-store",
            "Vantage-Cache-Control: max-age=60",
        ],
    );
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert_eq!(second.header("vantage-cache-control"), None);
    assert_eq!(second.header("cdn-cache-control"), Some("no-store"));
}

#[test]
fn a_token_with_an_unknown_critical_header_is_refused() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let o = Origin::start("o");
    let secret = "an-hs256-secret-that-is-long-enough!!";
    let routes = format!(
        r#"
  - {{id: r, tenant_id: t, path_pattern: "/*", origin_id: o, auth: {{mode: jwt_required}}}}
jwt_issuers:
  - {{id: i, tenant_id: t, issuer: "https://i.t.example", shared_secret: "{secret}", algorithms: [HS256]}}
"#
    );
    let p = Proxy::start(&config(&o, "", &routes));
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = serde_json::json!({"iss": "https://i.t.example", "sub": "u1", "exp": exp});
    let token = |crit: Option<Vec<String>>| {
        let mut h = Header::new(Algorithm::HS256);
        h.crit = crit;
        encode(&h, &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    };
    let send = |t: &str| {
        p.send(
            "GET",
            "t.test.local",
            "/x",
            &[("Authorization", &format!("Bearer {t}"))],
            b"",
        )
    };
    assert_eq!(send(&token(None)).status, 200);
    for crit in [vec!["urn:example:must-check".to_string()], vec![]] {
        let r = send(&token(Some(crit)));
        r.assert_error(401, "unauthorized");
        assert!(r
            .header("www-authenticate")
            .is_some_and(|v| v.contains("invalid_token")));
    }
}

#[test]
fn check_refuses_jwks_urls_into_private_networks_unless_allowed() {
    let yaml = |url: &str, allowed: &str| {
        format!(
            "server: {{base_domains: [test.local]{allowed}}}\ntenants: [{{id: t, name: T, subdomain: t}}]\njwt_issuers: [{{id: i, tenant_id: t, issuer: x, jwks_url: \"{url}\"}}]\n"
        )
    };
    for url in [
        "http://clerk.t.example/jwks.json",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.20.30.40/jwks.json",
        "https://[fe80::1]/jwks.json",
        "https://0.0.0.0/jwks.json",
    ] {
        let (ok, err) = check_config(&yaml(url, ""));
        assert!(!ok, "{url} accepted");
        assert!(err.contains("jwt_issuers[0].jwks_url: "), "{url}: {err}");
    }
    assert!(check_config(&yaml("https://clerk.t.example/jwks.json", "")).0);
    assert!(check_config(&yaml("http://127.0.0.1:9/jwks.json", "")).0);
    // An operator can admit a private network (for https only).
    let office = ", jwks_allowed_networks: [10.20.0.0/16]";
    assert!(check_config(&yaml("https://10.20.30.40/jwks.json", office)).0);
    assert!(!check_config(&yaml("http://10.20.30.40/jwks.json", office)).0);
    // Without the default allow-list even loopback is refused.
    assert!(
        !check_config(&yaml(
            "http://127.0.0.1:9/jwks.json",
            ", jwks_allowed_networks: []"
        ))
        .0
    );
}

#[test]
fn a_quiet_websocket_outlives_the_request_body_timeout() {
    let origin = UpgradeOrigin::start();
    let p = Proxy::start_with(
        &origin.config(),
        "  client_limits: {body_timeout_ms: 300}\n",
    );
    let (mut c, mut reader) = upgrade(p.port);
    UpgradeOrigin::echo(&mut c, &mut reader, b"hello");
    // Quiet for four body timeouts: the tunnel stays up (the origin's read_ms governs it).
    std::thread::sleep(Duration::from_millis(1200));
    UpgradeOrigin::echo(&mut c, &mut reader, b"again");
}
