//! `source: postgres` end to end: the real `vantage-admin` writes through its REST API into
//! real Postgres and announces on real (private) Redis; real `vantage-proxy` processes follow.
//! Waits are on the served config version, never on a sleep.

use serde_json::json;
use vantage_testkit::*;

const SECRET: &str = "notify-secret-for-tests-0123456789";

/// The server lines of a proxy in postgres mode.
fn pg_server(db_url: &str, redis: Option<&Redis>, dir_tag: &str, request_logs: bool) -> String {
    postgres_source(
        db_url,
        redis,
        SECRET,
        dir_tag,
        &format!("request_logs: {{enabled: {request_logs}, flush_interval_ms: 50}}"),
    )
}

/// Create a tenant with an origin and a catch-all route; returns (tenant id, version).
fn tenant_with_route(admin: &Admin, sub: &str, origin: &str) -> (String, u64) {
    let r = admin.root(
        "POST",
        "/api/v1/tenants",
        Some(json!({"name": sub, "subdomain": sub})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let tenant = r.json()["id"].as_str().expect("tenant id").to_string();
    let r = admin.root(
        "POST",
        "/api/v1/origins",
        Some(json!({"tenant_id": tenant, "targets": [{"url": origin}]})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let origin_id = r.json()["id"].as_str().expect("origin id").to_string();
    let r = admin.root(
        "POST",
        "/api/v1/routes",
        Some(json!({"tenant_id": tenant, "path_pattern": "/*", "origin_id": origin_id})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    (tenant, version_of(&r))
}

fn version_of(r: &Response) -> u64 {
    r.header("x-config-version")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no x-config-version in {:?}", r.headers))
}

#[test]
fn proxies_follow_the_admin_api_and_log_requests() {
    let db = Database::shared();
    db.migrate();
    let redis = Redis::start();
    let admin = Admin::start(&db, &redis.url(), SECRET);
    let o = Origin::start("pg-origin");
    let p1 = Proxy::start_with("", &pg_server(&db.url(), Some(&redis), "pg1", true));
    let p2 = Proxy::start_with("", &pg_server(&db.url(), Some(&redis), "pg2", false));
    p1.wait_redis_connected();
    p2.wait_redis_connected();
    let r = request(p1.ops_port, "GET", "ops", "/readyz", &[], b"");
    assert_eq!(r.json()["config_source"], "postgres");
    assert_eq!(r.json()["postgres"], "connected");
    assert_eq!(p1.get("acme.test.local", "/x").status, 404);

    // A tenant, origin and route created through the API are served by both proxies.
    let (tenant, v) = tenant_with_route(&admin, "acme", &o.url());
    p1.wait_version(v);
    p2.wait_version(v);
    for p in [&p1, &p2] {
        let r = p.get("acme.test.local", "/hello");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["origin"], "pg-origin");
    }
    assert!(p1
        .metrics()
        .contains("vantage_config_notices_total{result=\"accepted\"}"));

    // An unsigned (forged) announcement is refused.
    redis.cli(&[
        "PUBLISH",
        "vantage:config",
        r#"{"version":999,"tenant_id":null,"ts":1}"#,
    ]);
    wait_for("rejected notice", 10, || {
        p1.metrics()
            .contains("vantage_config_notices_total{result=\"rejected\"}")
            .then_some(())
    });
    assert_eq!(p1.version(), v, "a forged announcement changes nothing");

    // Deleting the route is followed too.
    let routes = admin.root("GET", &format!("/api/v1/routes?tenant_id={tenant}"), None);
    let route_id = routes.json()["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = admin.root("DELETE", &format!("/api/v1/routes/{route_id}"), None);
    assert!(r.status == 200 || r.status == 204, "{}", r.text());
    let v = version_of(&r);
    p2.wait_version(v);
    p2.get("acme.test.local", "/hello")
        .assert_error(404, "no_route");

    // Request logs of p1 land in request_logs (batched, off the request path).
    let n: usize = wait_for("request logs", 20, || {
        let n: usize = db
            .sql(&format!(
                "SELECT count(*) FROM request_logs WHERE tenant_id = '{tenant}'"
            ))
            .parse()
            .unwrap_or(0);
        (n >= 1).then_some(n)
    });
    assert!(n >= 1);
    let row = db.sql(&format!(
        "SELECT method, path, status, route_id IS NOT NULL FROM request_logs WHERE tenant_id = '{tenant}' ORDER BY ts LIMIT 1"
    ));
    assert_eq!(row, "GET|/hello|200|t");
    assert!(p1.metrics().contains("vantage_request_logs_written_total"));
}

#[test]
fn redis_away_the_poll_catches_up() {
    let db = Database::shared();
    db.migrate();
    let mut redis = Redis::start();
    let admin = Admin::start(&db, &redis.url(), SECRET);
    let o = Origin::start("o");
    let p = Proxy::start_with("", &pg_server(&db.url(), Some(&redis), "poll", false));
    p.wait_redis_connected();
    redis.stop();
    // The admin still commits (announcing fails); the proxy's version poll sees it.
    let (_, v) = tenant_with_route(&admin, "globex", &o.url());
    p.wait_version(v);
    assert_eq!(p.get("globex.test.local", "/").status, 200);
    redis.restart();
    p.wait_redis_connected();
    let (_, v) = tenant_with_route(&admin, "initech", &o.url());
    p.wait_version(v);
    assert_eq!(p.get("initech.test.local", "/").status, 200);
}

#[test]
fn postgres_down_keeps_serving_and_restarts_from_the_last_good_file() {
    let cluster = PgCluster::start();
    let db = Database::on(cluster.port);
    db.migrate();
    let redis = Redis::start();
    let admin = Admin::start(&db, &redis.url(), SECRET);
    let o = Origin::start("o");
    let mut p = Proxy::start_with("", &pg_server(&db.url(), Some(&redis), "down", true));
    let (_, v) = tenant_with_route(&admin, "acme", &o.url());
    p.wait_version(v);
    assert_eq!(p.get("acme.test.local", "/a").status, 200);

    // Postgres stops: requests keep being served, readiness and metrics say so.
    cluster.stop();
    wait_for("postgres reported unreachable", 20, || {
        let r = request(p.ops_port, "GET", "ops", "/readyz", &[], b"");
        (r.status == 200 && r.json()["postgres"] == "unreachable").then_some(())
    });
    for _ in 0..20 {
        assert_eq!(p.get("acme.test.local", "/a").status, 200);
    }
    assert!(p.metrics().contains("vantage_config_source_up 0"));
    // The last good copy is written in the background after each reload.
    wait_for("the last good copy of the version served", 20, || {
        (p.metric("vantage_config_last_good_version") == v as f64).then_some(())
    });

    // Restarted while Postgres is down: it serves the last good configuration.
    p.restart();
    assert_eq!(p.version(), v);
    assert_eq!(p.get("acme.test.local", "/b").status, 200);

    // Postgres back: the proxy catches up with changes made meanwhile.
    cluster.restart();
    let (_, v2) = tenant_with_route(&admin, "umbrella", &o.url());
    p.wait_version(v2);
    assert_eq!(p.get("umbrella.test.local", "/").status, 200);
    wait_for("postgres reported connected", 20, || {
        let r = request(p.ops_port, "GET", "ops", "/readyz", &[], b"");
        (r.json()["postgres"] == "connected").then_some(())
    });
}

#[test]
fn no_postgres_and_no_last_good_file_is_a_clear_error() {
    let dir = temp_dir("nopg");
    let port = free_port();
    let cfg = server_section(
        &dir,
        free_port(),
        free_port(),
        &format!(
            "  source: postgres\n  postgres: {{url: \"postgres://postgres@127.0.0.1:{port}/none\", timeout_ms: 300, last_good_file: \"{}\"}}\n",
            dir.join("missing.json").display()
        ),
    );
    let path = dir.join("c.yaml");
    std::fs::write(&path, cfg).unwrap();
    let out = std::process::Command::new(proxy_bin())
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot load the configuration from postgres") && err.contains("last good"),
        "{err}"
    );
    // Tenants in the file are refused with source: postgres.
    let cfg = format!(
        "{}\ntenants: [{{id: t, name: T, subdomain: t}}]\n",
        server_section(
            &dir,
            free_port(),
            free_port(),
            "  source: postgres\n  postgres: {url: \"postgres://x@127.0.0.1/x\"}\n"
        )
    );
    let (ok, err) = check_config(&cfg);
    assert!(!ok);
    assert!(err.contains("come from Postgres"), "{err}");
}

#[test]
fn replayed_config_notices_trigger_no_reload_and_the_last_good_copy_is_private() {
    use vantage_model::notify::{sign_at, Notice};
    let db = Database::shared();
    db.migrate();
    let redis = Redis::start();
    let admin = Admin::start(&db, &redis.url(), SECRET);
    let o = Origin::start("replay-origin");
    let p = Proxy::start_with("", &pg_server(&db.url(), Some(&redis), "replay", false));
    p.wait_redis_connected();
    let (_, v) = tenant_with_route(&admin, "acme", &o.url());
    p.wait_version(v);
    wait_for("the announcement of the write to be counted", 10, || {
        (p.metric("vantage_config_notices_total{result=\"accepted\"}")
            + p.metric("vantage_config_notices_total{result=\"ignored\"}")
            >= 1.0)
            .then_some(())
    });
    let metric = |result: &str| {
        p.metric(&format!(
            "vantage_config_notices_total{{result=\"{result}\"}}"
        ))
    };
    let (stale, ignored) = (metric("stale"), metric("ignored"));
    let accepted = metric("accepted");
    let reloads = p.metric("vantage_config_reloads_total{result=\"ok\"}");
    // Someone who captured genuine announcements replays them: an old one (even of a
    // version the proxy has not seen), and a fresh one of the version it already serves.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let notice = |version: u64| Notice {
        version: version as i64,
        tenant_id: None,
    };
    let old = sign_at(SECRET, &notice(v + 1), now - 10 * 60_000);
    let current = sign_at(SECRET, &notice(v), now);
    for _ in 0..25 {
        redis.cli(&["PUBLISH", "vantage:config", &old]);
        redis.cli(&["PUBLISH", "vantage:config", &current]);
    }
    wait_for("the replays to be counted", 20, || {
        (metric("stale") >= stale + 25.0 && metric("ignored") >= ignored + 25.0).then_some(())
    });
    assert_eq!(metric("accepted"), accepted, "a replay woke the reloader");
    assert_eq!(
        p.metric("vantage_config_reloads_total{result=\"ok\"}"),
        reloads,
        "a replay made the proxy reload"
    );
    assert_eq!(p.version(), v);
    // The last good copy holds the tenants' secrets: readable by its owner only.
    let config = std::fs::read_to_string(&p.config_path).unwrap();
    let path = config
        .split("last_good_file: \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("last_good_file in the config");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{path}: {mode:o}");
}

#[test]
fn a_key_moved_to_another_plan_is_applied_by_every_proxy() {
    let db = Database::migrated();
    let redis = Redis::start();
    let admin = Admin::start(&db, &redis.url(), SECRET);
    let o = Origin::start("o");
    let p1 = Proxy::start_with("", &pg_server(&db.url(), Some(&redis), "plan1", false));
    let p2 = Proxy::start_with("", &pg_server(&db.url(), Some(&redis), "plan2", false));
    let tenant = admin.create(
        "/api/v1/tenants",
        json!({"name": "Acme", "subdomain": "acme"}),
    );
    let t = id(&tenant);
    let origin = admin.create(
        "/api/v1/origins",
        json!({"tenant_id": t, "targets": [{"url": o.url()}]}),
    );
    admin.create(
        "/api/v1/routes",
        json!({"tenant_id": t, "path_pattern": "/*", "origin_id": id(&origin), "auth": {"mode": "apikey_required"}}),
    );
    let zone = steady_zone(vantage_model::QuotaPeriod::Month, 600);
    let quota = |limit: u32| json!([{"name": "monthly", "limit": limit, "period": "month"}]);
    let free = admin.create(
        "/api/v1/plans",
        json!({"tenant_id": t, "name": "free", "time_zone": zone, "quotas": quota(2)}),
    );
    let pro = admin.create(
        "/api/v1/plans",
        json!({"tenant_id": t, "name": "pro", "time_zone": zone, "quotas": quota(100)}),
    );
    let r = admin.root(
        "POST",
        "/api/v1/api-keys",
        Some(json!({"tenant_id": t, "name": "ci", "plan_id": id(&free)})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let key = r.json()["key"].as_str().expect("the new key").to_string();
    let key_id = id(&r.json());
    let v = version_of(&r);
    p1.wait_version(v);
    p2.wait_version(v);
    let send = |p: &Proxy| p.send("GET", "acme.test.local", "/x", &[("x-api-key", &key)], b"");
    // Free: two requests in the month, fleet-wide (both proxies count in Redis).
    assert_eq!(send(&p1).status, 200);
    assert_eq!(send(&p2).status, 200);
    send(&p1).assert_error(429, "quota_exceeded");
    send(&p2).assert_error(429, "quota_exceeded");
    // Moved to pro: every proxy applies it with the new version.
    let r = admin.root(
        "PATCH",
        &format!("/api/v1/api-keys/{key_id}"),
        Some(json!({"plan_id": id(&pro)})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = version_of(&r);
    p1.wait_version(v);
    p2.wait_version(v);
    for p in [&p1, &p2] {
        let r = send(p);
        assert_eq!(r.status, 200, "{}", r.text());
        let policy = r.header("ratelimit-policy").unwrap();
        assert!(policy.starts_with("\"monthly\";q=100;"), "{policy}");
    }
}

/// The proxy's count of tenants compiled by reloads.
fn compiled(p: &Proxy) -> f64 {
    p.metric("vantage_config_tenants_compiled_total")
}

#[test]
fn a_change_to_one_tenant_recompiles_it_alone_on_every_proxy_and_leaves_the_others_state() {
    let db = Database::migrated();
    let redis = Redis::start();
    let admin = Admin::start(&db, &redis.url(), SECRET);
    let o = Origin::start("inc-origin");
    let dead = PortHold::new();
    let proxies: Vec<Proxy> = (1..=3)
        .map(|i| {
            Proxy::start_with(
                "",
                &pg_server(&db.url(), Some(&redis), &format!("inc{i}"), false),
            )
        })
        .collect();
    let (acme, _) = tenant_with_route(&admin, "acme", &o.url());

    // globex: a pool with a dead target (health checked), a limited route and a cached one.
    let globex = id(&admin.create(
        "/api/v1/tenants",
        json!({"name": "Globex", "subdomain": "globex"}),
    ));
    let pool = id(&admin.create(
        "/api/v1/origins",
        json!({"tenant_id": globex,
               "targets": [{"url": o.url()}, {"url": format!("http://127.0.0.1:{}", dead.port)}],
               "health_check": {"path": "/healthz", "interval_ms": 200, "timeout_ms": 200,
                                "healthy_threshold": 1, "unhealthy_threshold": 1}}),
    ));
    admin.create(
        "/api/v1/routes",
        json!({"tenant_id": globex, "path_pattern": "/limited", "origin_id": pool,
               "rate_limits": [{"name": "three", "algorithm": {"type": "sliding_window", "limit": 3, "period_s": 3600},
                                "subject": {"by": "tenant"}}]}),
    );
    let r = admin.root(
        "POST",
        "/api/v1/routes",
        Some(
            json!({"tenant_id": globex, "path_pattern": "/cached", "origin_id": pool,
                    "cache": {"enabled": true, "default_ttl_seconds": 3600}}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let v = version_of(&r);
    for p in &proxies {
        p.wait_version(v);
    }
    let p1 = &proxies[0];
    let dead_series = format!(
        "vantage_upstream_target_healthy{{origin=\"{pool}\",target=\"127.0.0.1:{}\"}}",
        dead.port
    );
    wait_for("the dead target marked down", 20, || {
        p1.metrics()
            .contains(&format!("{dead_series} 0"))
            .then_some(())
    });
    for _ in 0..2 {
        assert_eq!(p1.get("globex.test.local", "/limited").status, 200);
    }
    assert_eq!(
        p1.get("globex.test.local", "/cached").header("x-cache"),
        Some("MISS")
    );
    assert_eq!(
        p1.get("globex.test.local", "/cached").header("x-cache"),
        Some("HIT")
    );
    let before: Vec<f64> = proxies.iter().map(compiled).collect();

    // acme gains a route: every proxy follows, compiling acme alone.
    let acme_origin = admin.root("GET", &format!("/api/v1/origins?tenant_id={acme}"), None);
    let acme_origin = acme_origin.json()["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = admin.root(
        "POST",
        "/api/v1/routes",
        Some(json!({"tenant_id": acme, "path_pattern": "/new", "origin_id": acme_origin, "priority": 5,
                    "response_headers": {"set": {"x-new-route": "yes"}}})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let v = version_of(&r);
    for (p, before) in proxies.iter().zip(&before) {
        p.wait_version(v);
        let r = p.get("acme.test.local", "/new");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-new-route"), Some("yes"));
        assert_eq!(
            compiled(p) - before,
            1.0,
            "one tenant compiled:\n{}",
            p.log()
        );
    }
    // globex was not touched: its limiter still counts (third allowed, fourth refused), its
    // cache still answers, its dead target is still known to be down without a new probe
    // having to find it (the pool with its health state was kept).
    assert!(p1.metrics().contains(&format!("{dead_series} 0")));
    assert_eq!(
        p1.get("globex.test.local", "/cached").header("x-cache"),
        Some("HIT")
    );
    assert_eq!(p1.get("globex.test.local", "/limited").status, 200);
    p1.get("globex.test.local", "/limited")
        .assert_error(429, "rate_limited");
}

#[test]
fn a_renamed_or_deleted_tenant_is_gone_from_every_proxy() {
    let db = Database::migrated();
    let redis = Redis::start();
    let admin = Admin::start(&db, &redis.url(), SECRET);
    let o = Origin::start("o");
    let proxies: Vec<Proxy> = (1..=3)
        .map(|i| {
            Proxy::start_with(
                "",
                &pg_server(&db.url(), Some(&redis), &format!("gone{i}"), false),
            )
        })
        .collect();
    let (acme, _) = tenant_with_route(&admin, "acme", &o.url());
    let (globex, v) = tenant_with_route(&admin, "globex", &o.url());
    for p in &proxies {
        p.wait_version(v);
        assert_eq!(p.get("acme.test.local", "/").status, 200);
    }
    let r = admin.root(
        "PATCH",
        &format!("/api/v1/tenants/{acme}"),
        Some(json!({"subdomain": "acme-corp"})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = version_of(&r);
    for p in &proxies {
        p.wait_version(v);
        p.get("acme.test.local", "/")
            .assert_error(404, "unknown_tenant");
        assert_eq!(p.get("acme-corp.test.local", "/").status, 200);
    }
    let r = admin.root(
        "DELETE",
        &format!("/api/v1/tenants/{globex}?cascade=true"),
        None,
    );
    assert!(r.status == 200 || r.status == 204, "{}", r.text());
    let v = version_of(&r);
    for p in &proxies {
        p.wait_version(v);
        p.get("globex.test.local", "/")
            .assert_error(404, "unknown_tenant");
        assert_eq!(p.get("acme-corp.test.local", "/").status, 200);
    }
    // A tenant made again with the old name is a new tenant, served everywhere.
    let (_, v) = tenant_with_route(&admin, "globex", &o.url());
    for p in &proxies {
        p.wait_version(v);
        assert_eq!(p.get("globex.test.local", "/").status, 200);
    }
}

#[test]
fn a_change_log_that_does_not_reach_back_is_caught_up_by_a_full_read() {
    let db = Database::migrated();
    let redis = Redis::start();
    let admin = Admin::start(&db, &redis.url(), SECRET);
    let o = Origin::start("o");
    let p = Proxy::start_with("", &pg_server(&db.url(), Some(&redis), "catchup", false));
    let (_, v) = tenant_with_route(&admin, "acme", &o.url());
    p.wait_version(v);
    // A hand-made write that truncates a table leaves the log incomplete (the proxy cannot
    // know which tenants changed): it reads everything.
    db.sql("TRUNCATE routes");
    let v: u64 = db.sql("SELECT vantage_config_version()").parse().unwrap();
    p.wait_version(v);
    p.get("acme.test.local", "/").assert_error(404, "no_route");
    let log = p.log();
    assert!(
        log.lines()
            .any(|l| l.contains("configuration reloaded") && l.contains("full")),
        "{log}"
    );
    let (_, v) = tenant_with_route(&admin, "globex", &o.url());
    p.wait_version(v);
    assert_eq!(p.get("globex.test.local", "/").status, 200);
}

#[test]
fn a_split_version_and_fallback_written_through_the_admin_are_served_from_postgres() {
    let db = Database::migrated();
    let admin = AdminSetup::fresh().database(&db).start();
    let (stable, canary) = (Origin::start("pg-stable"), Origin::start("pg-canary"));
    let t = id(&admin.create("/api/v1/tenants", bodies::tenant("acme")));
    let other = id(&admin.create("/api/v1/tenants", bodies::tenant("globex")));
    let origin = |tenant: &str, o: &Origin| {
        let body = json!({"tenant_id": tenant, "targets": [{"url": o.url()}]});
        id(&admin.create("/api/v1/origins", body))
    };
    let (s, c, foreign) = (
        origin(&t, &stable),
        origin(&t, &canary),
        origin(&other, &canary),
    );
    let traffic = json!({
        "split": {
            "origins": [{"origin_id": s, "weight": 100}, {"origin_id": c, "weight": 0}],
            "rules": [{"header": "X-Canary", "value": "1", "origin_id": c}],
        },
        "version": {"name": "v1", "deprecated_at": "2026-01-01T00:00:00Z", "successor": "/v2/"},
        "fallback": {"status": 200, "content_type": "application/json", "body": "[]"},
    });
    let body = json!({"tenant_id": t, "origin_id": s, "path_pattern": "/*", "traffic": traffic});
    let r = admin.root("POST", "/api/v1/routes", Some(body));
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["traffic"], traffic);
    let rid = id(&r.body);
    let got = admin.root("GET", &format!("/api/v1/routes/{rid}"), None);
    assert_eq!(got.body["traffic"], traffic);

    let p = Proxy::start_with("", &pg_server(&db.url(), None, "pg-split", false));
    p.wait_version(admin.version() as u64);
    let r = p.get("acme.test.local", "/x");
    assert_eq!((r.status, r.origin()), (200, "pg-stable".to_string()));
    assert_eq!(r.header("deprecation"), Some("@1767225600"));
    let r = p.send("GET", "acme.test.local", "/x", &[("X-Canary", "1")], b"");
    assert_eq!(r.origin(), "pg-canary");

    // Another tenant's origin in a split, and bad fields, are refused with their paths.
    let mut bad = traffic.clone();
    bad["split"]["origins"][1]["origin_id"] = json!(foreign);
    bad["version"]["sunset_at"] = json!("soon");
    let r = admin.root(
        "PATCH",
        &format!("/api/v1/routes/{rid}"),
        Some(json!({"traffic": bad})),
    );
    assert_eq!(r.status, 422, "{:?}", r.body);
    let mut f = r.fields();
    f.sort();
    assert_eq!(
        f,
        [
            "traffic.split.origins[1].origin_id",
            "traffic.split.rules[0].origin_id",
            "traffic.version.sunset_at"
        ]
    );
    // An origin a split still names cannot be deleted.
    let d = admin.root("DELETE", &format!("/api/v1/origins/{c}"), None);
    assert_eq!((d.status, d.code()), (409, "conflict"), "{:?}", d.body);
    assert_eq!(
        p.send("GET", "acme.test.local", "/x", &[("X-Canary", "1")], b"")
            .origin(),
        "pg-canary"
    );
}
