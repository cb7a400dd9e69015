//! Pool health reports in a real Postgres: each proxy writes what its active health checks
//! see of every origin pool to `pool_health`, keeps it current, deletes the rows of origins
//! that left its configuration, and withdraws its rows when it stops.

use vantage_testkit::*;

/// Tenant `t` with origin `a` (one target, `a`) and, when given, origin `b` (one target,
/// `b`); both health checked every 100 ms, a target down after one failed probe.
fn body(a: &Origin, b: Option<&Origin>) -> String {
    let hc = "health_check: {path: /healthz, interval_ms: 100, timeout_ms: 300, healthy_threshold: 1, unhealthy_threshold: 1}";
    let b = b.map_or_else(String::new, |b| {
        format!(
            "  - {{id: b, tenant_id: t, targets: [{{url: \"{}\"}}], {hc}}}\n",
            b.url()
        )
    });
    format!(
        r#"
tenants: [{{id: t, name: T, subdomain: t}}]
origins:
  - {{id: a, tenant_id: t, targets: [{{url: "{a}"}}], {hc}}}
{b}routes:
  - {{id: r, tenant_id: t, path_pattern: "/*", origin_id: a}}
"#,
        a = a.url(),
    )
}

/// Usage metering (and so pool health reports) into `db` every 200 ms.
fn postgres(db: &Database) -> String {
    format!(
        "  postgres: {{url: \"{}\", timeout_ms: 1000, request_logs: {{enabled: false}}, usage: {{flush_interval_ms: 200}}}}\n",
        db.url()
    )
}

/// `origin|tenant|healthy|total` of every row the proxy with `pid` reported, by origin.
fn rows(db: &Database, pid: u32) -> Vec<String> {
    db.sql(&format!(
        "SELECT origin_id, tenant_id, healthy, total FROM pool_health \
         WHERE proxy LIKE '%:{pid}' ORDER BY origin_id"
    ))
    .lines()
    .map(str::to_string)
    .collect()
}

#[test]
fn pool_health_follows_the_health_checks_of_each_origin() {
    let db = Database::migrated();
    let a = Origin::start("a");
    let mut b = Origin::dead("b");
    let p = Proxy::start_with(&body(&a, Some(&b)), &postgres(&db));
    let pid = p.pid();

    wait_for("a's pool healthy, b's (target dead) not", 20, || {
        (rows(&db, pid) == ["a|t|1|1", "b|t|0|1"]).then_some(())
    });
    // The process reports under the name its usage batches carry: `<hostname>:<pid>`.
    let hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    assert_eq!(
        db.sql("SELECT DISTINCT proxy FROM pool_health"),
        format!("{}:{pid}", hostname.trim())
    );

    // Reports go on while nothing changes: the rows are refreshed.
    let first = db.sql("SELECT reported_at FROM pool_health WHERE origin_id = 'a'");
    wait_for("a newer report", 20, || {
        let newer = db.sql(&format!(
            "SELECT reported_at > '{first}'::timestamptz FROM pool_health WHERE origin_id = 'a'"
        ));
        (newer == "t").then_some(())
    });

    b.restart();
    wait_for("b's pool healthy once its target runs", 20, || {
        (rows(&db, pid) == ["a|t|1|1", "b|t|1|1"]).then_some(())
    });
}

#[test]
fn rows_of_a_removed_origin_and_of_a_stopped_proxy_are_deleted() {
    let db = Database::migrated();
    let a = Origin::start("a");
    let b = Origin::start("b");
    let p = Proxy::start_with(&body(&a, Some(&b)), &postgres(&db));
    let pid = p.pid();
    wait_for("both pools reported", 20, || {
        (rows(&db, pid) == ["a|t|1|1", "b|t|1|1"]).then_some(())
    });
    // Another proxy's report of the same origin is none of this one's business.
    db.sql(
        "INSERT INTO pool_health (proxy, origin_id, tenant_id, healthy, total) \
         VALUES ('elsewhere:1', 'b', 't', 0, 1)",
    );

    let version = p.version();
    p.write_body(&body(&a, None));
    p.signal("HUP");
    p.wait_version(version + 1);
    wait_for("the removed origin's row deleted", 20, || {
        (rows(&db, pid) == ["a|t|1|1"]).then_some(())
    });

    p.signal("TERM");
    wait_for("the stopped proxy's rows withdrawn", 20, || {
        rows(&db, pid).is_empty().then_some(())
    });
    assert_eq!(
        db.sql("SELECT proxy, origin_id, healthy FROM pool_health"),
        "elsewhere:1|b|0"
    );
}

#[test]
fn a_postgres_outage_stops_neither_serving_nor_the_reports_after_it() {
    let pg = PgCluster::start();
    let db = Database::on(pg.port);
    db.migrate();
    let a = Origin::start("a");
    let mut b = Origin::dead("b");
    let p = Proxy::start_with(&body(&a, Some(&b)), &postgres(&db));
    let pid = p.pid();
    wait_for("both pools reported", 20, || {
        (rows(&db, pid) == ["a|t|1|1", "b|t|0|1"]).then_some(())
    });

    pg.stop();
    wait_for("a report that could not be written", 20, || {
        p.log().contains("pool health not reported").then_some(())
    });
    // Requests are served, and the health checks go on, while Postgres is away.
    for _ in 0..5 {
        assert_eq!(p.get("t.test.local", "/").status, 200);
    }
    b.restart();

    pg.restart();
    wait_for("the change reported once Postgres is back", 20, || {
        (rows(&db, pid) == ["a|t|1|1", "b|t|1|1"]).then_some(())
    });
    wait_for("the recovery logged", 20, || {
        p.log().contains("pool health reported again").then_some(())
    });
}
