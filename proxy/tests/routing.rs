//! Tenant and route lookup, transforms, errors and HTTP safety, through the real binary.

use vantage_testkit::*;

fn two_tenants(a: &Origin, b: &Origin) -> String {
    format!(
        r#"
tenants:
  - {{id: acme, name: Acme, subdomain: acme, custom_hosts: [api.acme.example]}}
  - {{id: globex, name: Globex, subdomain: globex}}
origins:
  - {{id: acme-o, tenant_id: acme, targets: [{{url: "{a}"}}]}}
  - {{id: globex-o, tenant_id: globex, targets: [{{url: "{b}"}}]}}
routes:
  - {{id: acme-all, tenant_id: acme, path_pattern: "/*", origin_id: acme-o}}
  - {{id: globex-api, tenant_id: globex, path_pattern: "/api/*", origin_id: globex-o}}
"#,
        a = a.url(),
        b = b.url()
    )
}

#[test]
fn tenants_are_isolated_by_host() {
    let a = Origin::start("a");
    let b = Origin::start("b");
    let p = Proxy::start(&two_tenants(&a, &b));

    assert_eq!(p.get("acme.test.local", "/api/x").origin(), "a");
    assert_eq!(p.get("ACME.test.local:8080", "/x").origin(), "a");
    assert_eq!(p.get("api.acme.example", "/x").origin(), "a");
    assert_eq!(p.get("globex.test.local", "/api/x").origin(), "b");

    p.get("unknown.test.local", "/api/x")
        .assert_error(404, "unknown_tenant");
    p.get("acme.other.domain", "/api/x")
        .assert_error(404, "unknown_tenant");
    p.get("x.acme.test.local", "/api/x")
        .assert_error(404, "unknown_tenant");
    // globex has no route for /other; acme's catch-all must not leak across tenants.
    p.get("globex.test.local", "/other")
        .assert_error(404, "no_route");

    let m = p.metrics();
    assert!(
        m.contains(r#"vantage_requests_total{route="_tenant",status="2xx",tenant="acme"} 3"#),
        "{m}"
    );
    assert!(
        m.contains(r#"vantage_requests_total{route="-",status="4xx",tenant="-"} 3"#),
        "{m}"
    );
}

#[test]
fn route_precedence_follows_the_documented_rule() {
    let o = Origin::start("o");
    let route = |id: &str, pattern: &str, extra: &str| {
        format!(
            "  - {{id: {id}, tenant_id: t, path_pattern: \"{pattern}\", origin_id: o, response_headers: {{set: {{X-Route: {id}}}}}{extra}}}\n"
        )
    };
    let mut body = format!(
        "tenants: [{{id: t, name: T, subdomain: t}}]\norigins: [{{id: o, tenant_id: t, targets: [{{url: \"{}\"}}]}}]\nroutes:\n",
        o.url()
    );
    body += &route("catch", "/*", "");
    body += &route("api", "/api/*", "");
    body += &route("user", "/api/users/:id", "");
    body += &route("me", "/api/users/me", "");
    body += &route("user-post", "/api/users/:id", ", methods: [POST]");
    body += &route(
        "user-beta",
        "/api/users/:id",
        ", headers: [{name: X-Beta, value: \"1\"}]",
    );
    body += &route("admin-low", "/api/admin/:x", "");
    body += &route("admin", "/api/admin/*", ", priority: 10");
    body += &route("get-only", "/readonly", ", methods: [GET, HEAD]");
    let p = Proxy::start(&body);

    let r = |method: &str, path: &str, headers: &[(&str, &str)]| {
        let resp = p.send(method, "t.test.local", path, headers, b"");
        resp.header("x-route").unwrap_or("none").to_string()
    };
    assert_eq!(
        r("GET", "/api/users/me", &[]),
        "me",
        "exact beats parameter"
    );
    assert_eq!(
        r("GET", "/api/users/7", &[]),
        "user",
        "parameter beats prefix"
    );
    assert_eq!(r("GET", "/api/users/7/posts", &[]), "api", "longest prefix");
    assert_eq!(r("GET", "/api/users", &[]), "api", "prefix includes itself");
    assert_eq!(r("GET", "/elsewhere", &[]), "catch");
    assert_eq!(
        r("POST", "/api/users/7", &[]),
        "user-post",
        "method condition is more specific"
    );
    assert_eq!(
        r("GET", "/api/users/7", &[("X-Beta", "1")]),
        "user-beta",
        "header condition"
    );
    assert_eq!(r("GET", "/api/users/7", &[("X-Beta", "2")]), "user");
    assert_eq!(
        r("GET", "/api/admin/x", &[]),
        "admin",
        "priority beats specificity"
    );
    assert_eq!(r("GET", "/readonly", &[]), "get-only");
    assert_eq!(
        r("DELETE", "/readonly", &[]),
        "catch",
        "method mismatch falls through"
    );
    assert_eq!(
        r("GET", "/api/users/7?x=/me", &[]),
        "user",
        "query string is not matched"
    );
}

#[test]
fn path_and_header_transforms() {
    let o = Origin::start("o");
    let body = format!(
        r#"
tenants: [{{id: t, name: T, subdomain: t}}]
origins:
  - {{id: o, tenant_id: t, targets: [{{url: "{u}"}}]}}
  - {{id: keep, tenant_id: t, preserve_host: true, targets: [{{url: "{u}"}}]}}
routes:
  - id: strip
    tenant_id: t
    path_pattern: /api/*
    origin_id: o
    strip_prefix: /api
    request_headers: {{set: {{X-Env: prod}}, add: {{X-Added: one}}, remove: [X-Secret]}}
    response_headers: {{set: {{Cache-Control: no-store}}, add: {{X-Served-By: vantage}}, remove: [Server]}}
  - id: rewrite
    tenant_id: t
    path_pattern: /v1/items/:id
    origin_id: o
    rewrite: {{pattern: "^/v1/items/([0-9]+)$", replacement: "/items?id=$1"}}
  - {{id: keep-host, tenant_id: t, path_pattern: /keep/*, origin_id: keep}}
"#,
        u = o.url()
    );
    let p = Proxy::start(&body);

    let r = p.send(
        "GET",
        "t.test.local",
        "/api/users/1?q=2",
        &[
            ("X-Secret", "s"),
            ("X-Added", "zero"),
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Request-Id", "req-123"),
        ],
        b"",
    );
    assert_eq!(r.status, 200);
    let echo = r.json();
    assert_eq!(echo["path"], "/users/1?q=2");
    let h = &echo["headers"];
    assert_eq!(h["x-env"], "prod");
    assert_eq!(h["x-added"], "zero, one");
    assert!(h.get("x-secret").is_none());
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "t.test.local");
    assert_eq!(
        h["x-request-id"], "req-123",
        "a given request id passes through"
    );
    assert_eq!(
        h["host"],
        format!("127.0.0.1:{}", o.port),
        "origin sees its own host"
    );
    assert_eq!(r.header("x-request-id"), Some("req-123"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("x-served-by"), Some("vantage"));
    assert!(r.header("server").is_none());

    let r = p.get("t.test.local", "/v1/items/42");
    assert_eq!(r.json()["path"], "/items?id=42");
    let generated = r
        .header("x-request-id")
        .expect("generated request id")
        .to_string();
    assert_eq!(generated.len(), 36, "uuid: {generated}");
    assert_eq!(r.json()["headers"]["x-request-id"], generated.as_str());

    let r = p.get("t.test.local", "/keep/x");
    assert_eq!(r.json()["headers"]["host"], "t.test.local");
}

#[test]
fn forwarded_headers_can_be_turned_off() {
    let o = Origin::start("o");
    let p = Proxy::start_with(&simple(&o), "  forwarded_headers: false\n");
    let r = p.send(
        "GET",
        "t.test.local",
        "/x",
        &[("X-Forwarded-For", "198.51.100.1")],
        b"",
    );
    let h = &r.json()["headers"];
    assert_eq!(
        h["x-forwarded-for"], "198.51.100.1",
        "passed through unchanged"
    );
    assert!(h.get("x-forwarded-proto").is_none() && h.get("x-forwarded-host").is_none());
    assert!(
        h["x-request-id"].as_str().is_some(),
        "the request id is still sent"
    );
}

#[test]
fn compression_is_per_route() {
    let o = Origin::start("o");
    let body = format!(
        r#"
tenants: [{{id: t, name: T, subdomain: t}}]
origins: [{{id: o, tenant_id: t, targets: [{{url: "{u}"}}]}}]
routes:
  - {{id: z, tenant_id: t, path_pattern: /z/*, origin_id: o, strip_prefix: /z, compression: {{enabled: true, level: 5}}}}
  - {{id: plain, tenant_id: t, path_pattern: /*, origin_id: o}}
"#,
        u = o.url()
    );
    let p = Proxy::start(&body);
    for enc in ["gzip", "br", "zstd"] {
        let r = p.send(
            "GET",
            "t.test.local",
            "/z/bytes/20000",
            &[("Accept-Encoding", enc)],
            b"",
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), Some(enc));
        assert!(r.body.len() < 5000, "{enc}: {} bytes", r.body.len());
    }
    let r = p.send(
        "GET",
        "t.test.local",
        "/bytes/20000",
        &[("Accept-Encoding", "gzip")],
        b"",
    );
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.body.len(), 20000);
    let r = p.send("GET", "t.test.local", "/z/bytes/20000", &[], b"");
    assert_eq!(
        r.header("content-encoding"),
        None,
        "no Accept-Encoding, no compression"
    );
}

fn simple(o: &Origin) -> String {
    format!(
        "tenants: [{{id: t, name: T, subdomain: t}}]\norigins: [{{id: o, tenant_id: t, targets: [{{url: \"{}\"}}]}}]\nroutes: [{{id: r, tenant_id: t, path_pattern: \"/*\", origin_id: o}}]\n",
        o.url()
    )
}

fn raw(p: &Proxy, req: &str) -> (Option<Response>, String) {
    let bytes = raw_exchange(p.port, req.as_bytes()).expect("exchange");
    (
        parse_response(&bytes, false),
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

#[test]
fn request_smuggling_vectors_are_refused_and_the_connection_closed() {
    let o = Origin::start("o");
    let p = Proxy::start(&simple(&o));
    // Each request is followed by a second one on the same connection; a closed connection
    // means the second is never answered.
    let follow = "GET /after HTTP/1.1\r\nHost: t.test.local\r\n\r\n";
    let cases = [
        ("POST / HTTP/1.1\r\nHost: t.test.local\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        // HTTP/1.0 with Transfer-Encoding: Pingora's parser already refuses it (bare 400).
        ("POST / HTTP/1.0\r\nHost: t.test.local\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: t.test.local\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        // A final coding other than chunked is refused by Pingora's parser itself (400).
        ("POST / HTTP/1.1\r\nHost: t.test.local\r\nTransfer-Encoding: identity\r\n\r\n", 400),
    ];
    for (req, status) in cases {
        let (resp, text) = raw(&p, &format!("{req}{follow}"));
        let resp = resp.unwrap_or_else(|| panic!("no response to {req:?}: {text}"));
        assert_eq!(resp.status, status, "{req:?} → {text}");
        if status == 501 || resp.header("content-type").is_some() {
            assert_eq!(resp.header("connection"), Some("close"), "{text}");
        }
        assert_eq!(
            text.matches("HTTP/1.1 ").count(),
            1,
            "second request answered: {text}"
        );
        assert!(!text.contains("x-origin"), "reached the origin: {text}");
    }

    // A plain chunked body is fine.
    let (resp, text) = raw(
        &p,
        "POST /echo HTTP/1.1\r\nHost: t.test.local\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    let resp = resp.expect(&text);
    assert_eq!(resp.status, 200, "{text}");
    assert_eq!(resp.json()["body_bytes"], 5);

    // Header limits answer 431.
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (resp, text) = raw(
        &p,
        &format!("GET / HTTP/1.1\r\nHost: t.test.local\r\n{many}\r\n"),
    );
    resp.expect(&text).assert_error(431, "too_many_headers");
    let big = "v".repeat(40_000);
    let (resp, text) = raw(
        &p,
        &format!("GET / HTTP/1.1\r\nHost: t.test.local\r\nX-Big: {big}\r\n\r\n"),
    );
    resp.expect(&text).assert_error(431, "headers_too_large");
    assert!(p
        .metrics()
        .contains("vantage_refused_requests_total{reason=\"too_many_headers\"} 1"));
}

#[test]
fn dot_segments_cannot_escape_a_route() {
    let o = Origin::start("o");
    let body = format!(
        "tenants: [{{id: t, name: T, subdomain: t}}]\norigins: [{{id: o, tenant_id: t, targets: [{{url: \"{}\"}}]}}]\nroutes: [{{id: r, tenant_id: t, path_pattern: \"/public/*\", origin_id: o}}]\n",
        o.url()
    );
    let p = Proxy::start(&body);
    assert_eq!(p.get("t.test.local", "/public/a").status, 200);
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/./a",
        "/public/.%2E/admin",
    ] {
        p.get("t.test.local", path).assert_error(400, "bad_request");
    }
    p.get("t.test.local", "/admin")
        .assert_error(404, "no_route");
}

#[test]
fn ops_endpoints() {
    let o = Origin::start("o");
    let p = Proxy::start(&simple(&o));
    p.get("t.test.local", "/x");
    let health = request(p.ops_port, "GET", "ops", "/healthz", &[], b"");
    assert_eq!(health.status, 200);
    let ready = request(p.ops_port, "GET", "ops", "/readyz", &[], b"");
    assert_eq!(ready.json()["config_version"], 1);
    let m = p.metrics();
    for name in [
        "vantage_requests_total",
        "vantage_request_duration_seconds_bucket",
        "vantage_upstream_duration_seconds_bucket",
        "vantage_active_requests",
        "vantage_config_version 1",
    ] {
        assert!(m.contains(name), "missing {name} in\n{m}");
    }
    assert!(m.contains(&format!(
        "vantage_upstream_target_healthy{{origin=\"o\",target=\"127.0.0.1:{}\"}} 1",
        o.port
    )));
    request(p.ops_port, "GET", "ops", "/nope", &[], b"").assert_error_shape_404();
    // The access log is JSON, one line per request.
    let log = p.log();
    let line = log
        .lines()
        .find(|l| l.contains("\"target\":\"access\""))
        .expect("an access log line");
    let v: serde_json::Value = serde_json::from_str(line).expect("JSON access log");
    assert_eq!(v["fields"]["tenant"], "t");
    assert_eq!(v["fields"]["route"], "r");
    assert_eq!(v["fields"]["status"], 200);
    assert_eq!(v["fields"]["upstream"], format!("127.0.0.1:{}", o.port));
    assert!(v["fields"]["request_id"].as_str().is_some());
}

trait OpsNotFound {
    fn assert_error_shape_404(&self);
}

impl OpsNotFound for Response {
    fn assert_error_shape_404(&self) {
        assert_eq!(self.status, 404);
        assert_eq!(self.json()["error"]["code"], "not_found");
    }
}

#[test]
fn check_flag_validates_like_nginx_t() {
    let dir = temp_dir("check");
    let good = dir.join("good.yaml");
    std::fs::write(&good, include_str!("../../conf/demo.yaml")).unwrap();
    let out = std::process::Command::new(proxy_bin())
        .args(["--config"])
        .arg(&good)
        .arg("--check")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("configuration OK (2 tenants, 3 origins, 7 routes)"));

    let bad = dir.join("bad.yaml");
    let text = include_str!("../../conf/demo.yaml")
        .replace("path_pattern: /status", "path_pattern: status")
        .replace("    origin_id: globex-api", "    origin_id: missing");
    std::fs::write(&bad, text).unwrap();
    let out = std::process::Command::new(proxy_bin())
        .args(["--config"])
        .arg(&bad)
        .arg("--check")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("routes[0].path_pattern: 'status': must start with '/'"),
        "{err}"
    );
    assert!(
        err.contains("routes[6].origin_id: no origin has id 'missing'"),
        "{err}"
    );

    std::fs::write(&bad, "tenants: [{id: a, name: A, subdomian: a}]").unwrap();
    let out = std::process::Command::new(proxy_bin())
        .args(["--config"])
        .arg(&bad)
        .arg("-t")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `subdomian`"));

    let out = std::process::Command::new(proxy_bin())
        .args(["--config", "/nonexistent.yaml", "--check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn websocket_upgrades_pass_through() {
    let origin = UpgradeOrigin::start();
    let p = Proxy::start(&origin.config());
    let (mut c, mut reader) = upgrade(p.port);
    UpgradeOrigin::echo(&mut c, &mut reader, b"hello");
    let head = origin.upgraded_head();
    assert!(head.contains("upgrade: websocket"), "{head}");
}

#[test]
fn traceparent_is_joined_or_started_and_logged() {
    let o = Origin::start("o");
    let p = Proxy::start(&simple(&o));
    let client = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = p.send("GET", "t.test.local", "/x", &[("traceparent", client)], b"");
    let sent = r.json()["headers"]["traceparent"]
        .as_str()
        .expect("traceparent to the origin")
        .to_string();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts.len(), 4);
    assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "same trace");
    assert_ne!(
        parts[2], "00f067aa0ba902b7",
        "the gateway's own span is the parent"
    );
    assert_eq!(parts[3], "01");
    // Absent or invalid: a new trace.
    for given in [None, Some("00-zz-00f067aa0ba902b7-01")] {
        let h: Vec<(&str, &str)> = given.map(|g| ("traceparent", g)).into_iter().collect();
        let r = p.send("GET", "t.test.local", "/y", &h, b"");
        let tp = r.json()["headers"]["traceparent"]
            .as_str()
            .unwrap()
            .to_string();
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(
            (parts[0], parts[1].len(), parts[2].len()),
            ("00", 32, 16),
            "{tp}"
        );
        assert_ne!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736");
    }
    // The access log carries the trace and span ids.
    let log = wait_for("access log line", 10, || {
        let log = p.log();
        log.contains("4bf92f3577b34da6a3ce929d0e0e4736")
            .then_some(log)
    });
    let line = log
        .lines()
        .find(|l| {
            l.contains("\"target\":\"access\"") && l.contains("4bf92f3577b34da6a3ce929d0e0e4736")
        })
        .expect("access line with the trace id");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["fields"]["span_id"], parts[2]);
}
