//! Usage metering and violations in a real Postgres: per-minute rows rolled up into hours
//! and days, violations with a sample request id, and exact totals across a proxy's
//! SIGTERM and a Postgres outage.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use vantage_model::QuotaPeriod;
use vantage_testkit::*;

/// Tenant `t`: route `r` (`/*`, API key) and `search` (`/search/*`, cost 5); plan `p` with a
/// blocking monthly quota of 6 units; key `ka` on the plan, `kfree` on none.
fn body(o: &Origin) -> String {
    format!(
        r#"
tenants: [{{id: t, name: T, subdomain: t}}]
origins: [{{id: o, tenant_id: t, targets: [{{url: "{url}"}}]}}]
routes:
  - {{id: r, tenant_id: t, path_pattern: "/*", origin_id: o, auth: {{mode: apikey_required}}}}
  - {{id: search, tenant_id: t, path_pattern: "/search/*", origin_id: o, auth: {{mode: apikey_required}}, quota: {{cost: 5}}}}
plans:
  - {{id: p, tenant_id: t, name: pro, time_zone: "{zone}", quotas: [{{name: monthly, limit: 6, period: month}}]}}
api_keys:
  - {{id: ka, tenant_id: t, name: A, key_hash: "{ka}", plan_id: p}}
  - {{id: kfree, tenant_id: t, name: F, key_hash: "{kf}"}}
"#,
        url = o.url(),
        zone = steady_zone(QuotaPeriod::Month, 600),
        ka = hash_key("vk_a"),
        kf = hash_key("vk_free"),
    )
}

fn postgres(db: &Database, extra: &str) -> String {
    format!(
        "  postgres: {{url: \"{}\", timeout_ms: 1000, request_logs: {{enabled: false}}, usage: {{flush_interval_ms: 200{extra}}}}}\n",
        db.url()
    )
}

/// The files saved next to `spool` (`<spool>.<uuid>`).
fn spool_files(spool: &std::path::Path) -> Vec<std::path::PathBuf> {
    let name = spool.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::read_dir(spool.parent().unwrap())
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&name))
                .collect()
        })
        .unwrap_or_default()
}

fn total(db: &Database, table: &str, filter: &str) -> i64 {
    db.sql(&format!(
        "SELECT COALESCE(sum(requests), 0) FROM {table} WHERE {filter}"
    ))
    .trim()
    .parse()
    .unwrap()
}

#[test]
fn usage_and_violations_are_written_to_postgres() {
    let db = Database::migrated();
    let o = Origin::start("o");
    let p = Proxy::start_with(&body(&o), &postgres(&db, ""));
    let key = |k: &'static str| [("x-api-key", k)];
    for _ in 0..5 {
        assert_eq!(
            p.send("GET", "t.test.local", "/x", &key("vk_a"), b"")
                .status,
            200
        );
    }
    // 5 + 5 > 6: refused by the quota, nothing counted.
    let refused = p.send("GET", "t.test.local", "/search/q", &key("vk_a"), b"");
    refused.assert_error(429, "quota_exceeded");
    for _ in 0..3 {
        let r = p.send("POST", "t.test.local", "/x", &key("vk_free"), b"0123456789");
        assert_eq!(r.status, 200);
    }
    for _ in 0..2 {
        p.get("t.test.local", "/x")
            .assert_error(401, "unauthorized");
    }
    wait_for("11 requests in usage_minute", 20, || {
        (total(&db, "usage_minute", "true") == 11).then_some(())
    });
    let rows = db.sql(
        "SELECT subject, route_id, status_class, requests, units, overage FROM usage_minute \
         ORDER BY subject, route_id, status_class",
    );
    assert_eq!(
        rows.lines().collect::<Vec<_>>(),
        [
            "|r|4|2|0|0",
            "key:ka|r|2|5|5|0",
            "key:ka|search|4|1|0|0",
            // No plan counts kfree: no quota units.
            "key:kfree|r|2|3|0|0",
        ],
        "{rows}"
    );
    let bytes = db.sql(
        "SELECT sum(request_bytes), bool_and(response_bytes > 0) FROM usage_minute \
         WHERE subject = 'key:kfree'",
    );
    assert_eq!(bytes.trim(), "30|t");
    // The same totals rolled up per hour and per day.
    assert_eq!(total(&db, "usage_hour", "tenant_id = 't'"), 11);
    assert_eq!(total(&db, "usage_day", "tenant_id = 't'"), 11);
    let violations = db.sql(
        "SELECT kind, policy, mode, subject, route_id, code, count, first_seen <= last_seen \
         FROM violations ORDER BY kind",
    );
    assert_eq!(
        violations.lines().collect::<Vec<_>>(),
        [
            "auth|unauthorized|enforce|ip:127.0.0.1|r|unauthorized|2|t",
            "quota|monthly|enforce|key:ka|search|quota_exceeded|1|t",
        ],
        "{violations}"
    );
    let sample = db.sql("SELECT sample_request_id FROM violations WHERE kind = 'quota'");
    assert_eq!(Some(sample.trim()), refused.header("x-request-id"));
    assert_eq!(
        p.metric("vantage_usage_requests_written_total"),
        11.0,
        "every metered request was written once"
    );
}

#[test]
fn usage_totals_equal_answered_requests_across_a_sigterm_and_a_postgres_outage() {
    let pg = PgCluster::start();
    let db = Database::on(pg.port);
    db.migrate();
    let o = Origin::start("o");
    let spool = temp_dir("spool").join("usage-spool.json");
    let extra = format!(", spool_file: \"{}\"", spool.display());
    let mut p = Proxy::start_with(&body(&o), &postgres(&db, &extra));
    let answered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let port = p.port;
    // Bounded load: four clients, at most 5,000 requests each, until told to stop.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (answered, stop) = (answered.clone(), stop.clone());
            std::thread::spawn(move || {
                for _ in 0..5_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let sent = try_request(
                        port,
                        "GET",
                        "t.test.local",
                        "/x",
                        &[("x-api-key", "vk_free")],
                        b"",
                    );
                    match sent {
                        Ok(_) => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        // The proxy is restarting: nothing was answered.
                        Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                    }
                }
            })
        })
        .collect();
    let at_least = |n: u64| {
        let answered = answered.clone();
        wait_for(&format!("{n} answered requests"), 60, move || {
            (answered.load(Ordering::Relaxed) >= n).then_some(())
        });
    };
    at_least(300);
    // Postgres goes away: batches spool and are retried.
    pg.stop();
    at_least(answered.load(Ordering::Relaxed) + 300);
    // SIGTERM while Postgres is still away: the spool is saved to disk.
    p.signal("TERM");
    assert!(p.wait_exit(20), "the proxy exits after SIGTERM");
    assert!(
        !spool_files(&spool).is_empty(),
        "unwritten batches were saved at shutdown"
    );
    p.restart();
    at_least(answered.load(Ordering::Relaxed) + 300);
    pg.restart();
    at_least(answered.load(Ordering::Relaxed) + 300);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let answered = answered.load(Ordering::Relaxed) as i64;
    wait_for("usage totals equal to the answered requests", 30, || {
        (total(&db, "usage_minute", "true") >= answered).then_some(())
    });
    // Zero lost, zero counted twice; the hour and day roll-ups agree.
    assert_eq!(total(&db, "usage_minute", "true"), answered);
    assert_eq!(total(&db, "usage_hour", "true"), answered);
    assert_eq!(total(&db, "usage_day", "true"), answered);
    assert_eq!(
        p.metric(r#"vantage_usage_dropped_requests_total{reason="spool_full"}"#),
        0.0
    );
    wait_for("the spool files removed once written", 10, || {
        spool_files(&spool).is_empty().then_some(())
    });
}

#[test]
fn decision_service_refusals_are_recorded_as_violations() {
    let db = Database::migrated();
    let o = Origin::start("o");
    let port = free_port();
    let token = "decision-token-0123456789";
    let extra = format!(
        "{}  decision: {{listen: \"127.0.0.1:{port}\", token: \"{token}\"}}\n",
        postgres(&db, "")
    );
    let _p = Proxy::start_with(&body(&o), &extra);
    wait_for("decision listener", 20, || port_open(port).then_some(()));
    let ask = |cost: u32| {
        let body = serde_json::json!({"api_key": "vk_a", "route_id": "search", "cost": cost});
        validate_decision(port, token, &body).json()
    };
    assert_eq!(ask(6)["allowed"], true);
    assert_eq!(ask(1)["allowed"], false);
    assert_eq!(ask(1)["allowed"], false);
    let row = wait_for("the decision's violations", 20, || {
        let row =
            db.sql("SELECT kind, policy, mode, subject, route_id, code, count FROM violations");
        (!row.is_empty()).then_some(row)
    });
    assert_eq!(row, "quota|monthly|enforce|key:ka|search|quota_exceeded|2");
}
