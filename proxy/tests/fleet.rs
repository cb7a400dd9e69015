//! Fleet convergence end to end: real proxies in `source: postgres` mode report themselves
//! on a heartbeat; the real admin shows them (`GET /api/v1/fleet`), exports their lag and
//! lets a write wait for them (`?wait=`). A lagging proxy is made by freezing its process
//! (SIGSTOP), never by a sleep; waits poll what the services answer.

use serde_json::{json, Value};
use vantage_testkit::*;

/// A proxy over `db` beating every 100 ms.
fn beating_proxy(db: &Database, redis: &Redis, tag: &str) -> Proxy {
    let p = Proxy::start_with(
        "",
        &postgres_source(
            &db.url(),
            Some(redis),
            SECRET,
            tag,
            "request_logs: {enabled: false}, usage: {enabled: false}, fleet: {heartbeat_ms: 100}",
        ),
    );
    p.wait_redis_connected();
    p
}

/// The fleet row of the proxy with process id `pid`.
fn row_of(fleet: &Value, pid: u32) -> Option<Value> {
    fleet["proxies"]
        .as_array()?
        .iter()
        .find(|p| {
            p["id"]
                .as_str()
                .is_some_and(|id| id.ends_with(&format!(":{pid}")))
        })
        .cloned()
}

fn fleet(admin: &Admin) -> Value {
    let r = admin.root("GET", "/api/v1/fleet", None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// Wait until both proxies are listed live serving the latest version.
fn wait_converged(admin: &Admin, pids: &[u32]) -> Value {
    wait_for("the fleet to converge", 20, || {
        let f = fleet(admin);
        let all = pids.iter().all(|pid| {
            row_of(&f, *pid)
                .is_some_and(|p| p["state"] == "live" && p["config_version"] == f["latest_version"])
        });
        (all && f["converged"] == true).then_some(f)
    })
}

#[test]
fn every_proxy_reports_what_it_serves_and_a_write_waits_for_the_fleet() {
    let db = Database::migrated();
    let redis = Redis::start();
    let admin = AdminSetup::new(&db, &redis.url(), SECRET).start();
    let p1 = beating_proxy(&db, &redis, "fleet1");
    let p2 = beating_proxy(&db, &redis, "fleet2");
    let f = wait_converged(&admin, &[p1.pid(), p2.pid()]);
    let row = row_of(&f, p1.pid()).unwrap();
    assert_eq!(row["ready"], true);
    assert_eq!(row["lag_versions"], 0);
    assert_eq!(row["lag_seconds"], 0.0);
    assert_eq!(row["build_version"], env!("CARGO_PKG_VERSION"));
    assert!(row["hostname"].is_string() && row["applied_at"].is_string());

    // A write that waits: the answer says both proxies applied its version in time.
    let r = admin.root(
        "POST",
        "/api/v1/tenants?wait=10s",
        Some(bodies::tenant("acme")),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.version.expect("x-config-version");
    assert_eq!(r.header("x-config-applied"), Some("2/2"));
    let by = r
        .header("x-config-applied-by")
        .unwrap_or_default()
        .to_string();
    for p in [&p1, &p2] {
        assert!(by.contains(&format!(":{}", p.pid())), "{by}");
        // Applied means served: the proxy's own answer agrees.
        assert!(p.version() >= v as u64);
    }
    assert_eq!(r.header("x-config-lagging"), Some(""));
    let tenant = id(&r.body);

    // A tenant admin may wait too, but sees counts only, and not the fleet.
    let token = admin.token_for(&tenant);
    let r = admin.call(
        &token,
        "POST",
        "/api/v1/origins?wait=10s",
        Some(bodies::origin(&tenant, 9)),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("x-config-applied"), Some("2/2"));
    assert!(r.header("x-config-applied-by").is_none());
    assert!(r.header("x-config-lagging").is_none());
    assert_eq!(
        admin.call(&token, "GET", "/api/v1/fleet", None).code(),
        "forbidden"
    );

    // Bad waits are refused before anything is written.
    let before = admin.version();
    for (q, why) in [("wait=soon", "duration"), ("wait=10m", "at most")] {
        let r = admin.root(
            "POST",
            &format!("/api/v1/tenants?{q}"),
            Some(bodies::tenant("globex")),
        );
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        assert_eq!(r.fields(), vec!["wait".to_string()], "{q}");
        assert!(r.body.to_string().contains(why), "{q}: {}", r.body);
    }
    let r = admin.root("GET", "/api/v1/tenants?wait=1s", None);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(admin.version(), before, "a refused wait wrote nothing");

    // The lag metric exists for each live proxy, at 0.
    let m = admin.root("GET", "/metrics", None).response.text();
    assert!(m.contains("vantage_fleet_proxies{state=\"live\"} 2"), "{m}");
    assert!(m.contains(&format!(
        "vantage_fleet_config_lag_versions{{proxy=\"{}\"}} 0",
        row["id"].as_str().unwrap()
    )));

    // A proxy that stops gracefully leaves the fleet.
    let gone = p2.pid();
    p2.signal("TERM");
    wait_for("the stopped proxy to leave the fleet", 30, || {
        row_of(&fleet(&admin), gone).is_none().then_some(())
    });
    assert!(row_of(&fleet(&admin), p1.pid()).is_some());
}

#[test]
fn a_frozen_proxy_lags_then_is_gone_and_catches_up_when_it_wakes() {
    let db = Database::migrated();
    let redis = Redis::start();
    // One admin forgets no proxy for a minute (to watch the lag), one after a second.
    let admin = AdminSetup::new(&db, &redis.url(), SECRET)
        .settings("fleet: {gone_after_ms: 60000}")
        .start();
    let quick = AdminSetup::new(&db, &redis.url(), SECRET)
        .settings("fleet: {gone_after_ms: 1000}")
        .start();
    let live = beating_proxy(&db, &redis, "fleet-live");
    let frozen = beating_proxy(&db, &redis, "fleet-frozen");
    wait_converged(&admin, &[live.pid(), frozen.pid()]);

    frozen.signal("STOP");
    let r = admin.root(
        "POST",
        "/api/v1/tenants?wait=300ms",
        Some(bodies::tenant("acme")),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.version.unwrap();
    // The write is committed whatever the fleet does; the answer names the laggard.
    assert_eq!(r.header("x-config-applied"), Some("1/2"));
    let lagging = r.header("x-config-lagging").unwrap_or_default().to_string();
    assert!(
        lagging.ends_with(&format!(":{}", frozen.pid())),
        "{lagging}"
    );

    let f = fleet(&admin);
    assert_eq!(f["converged"], false);
    assert_eq!(f["latest_version"], json!(v));
    let row = row_of(&f, frozen.pid()).unwrap();
    assert_eq!(row["state"], "live");
    assert_eq!(row["lag_versions"], 1);
    assert!(row["lag_seconds"].as_f64().unwrap() > 0.0, "{row}");
    let m = admin.root("GET", "/metrics", None).response.text();
    assert!(
        m.contains(&format!(
            "vantage_fleet_config_lag_versions{{proxy=\"{}\"}} 1",
            row["id"].as_str().unwrap()
        )),
        "{m}"
    );

    // Silent past `gone_after`: gone, and no longer holding convergence back.
    let f = wait_for("the frozen proxy to be gone", 20, || {
        let f = fleet(&quick);
        (row_of(&f, frozen.pid())?["state"] == "gone").then_some(f)
    });
    assert_eq!(f["converged"], true, "{f}");
    let r = quick.root(
        "POST",
        "/api/v1/tenants?wait=5s",
        Some(bodies::tenant("globex")),
    );
    assert_eq!(r.header("x-config-applied"), Some("1/1"));
    let m = quick.root("GET", "/metrics", None).response.text();
    assert!(m.contains("vantage_fleet_proxies{state=\"gone\"} 1"), "{m}");

    // Woken up, it catches up and beats again.
    frozen.signal("CONT");
    wait_converged(&quick, &[live.pid(), frozen.pid()]);
}
