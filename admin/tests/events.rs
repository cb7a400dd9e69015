//! Events of the admin's own writes reach the tenant's webhook endpoints: keys created,
//! rotated and revoked, plans changed, the configuration changed — each once, to the
//! endpoints whose filter takes it, never to another tenant's.

use serde_json::{json, Value};
use vantage_testkit::{bodies, id, wait_for, Admin, AdminSetup, Receiver, Worker};

const LOOPBACK_ALLOWED: &str = "worker:\n  webhook_allowed_networks: [\"127.0.0.0/8\"]\n";

fn endpoint(a: &Admin, tenant: &str, url: &str, events: &[&str]) -> String {
    let r = a.root(
        "POST",
        "/api/v1/webhooks",
        Some(json!({"tenant_id": tenant, "url": url, "events": events})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    id(&r.body)
}

/// (type, data) of each request the receiver got, in order.
fn received(rx: &Receiver) -> Vec<(String, Value)> {
    rx.requests()
        .iter()
        .map(|r| {
            let v = r.json();
            (
                v["type"].as_str().unwrap_or("").to_string(),
                v["data"].clone(),
            )
        })
        .collect()
}

#[test]
fn key_plan_and_config_changes_are_announced_to_the_tenants_endpoints() {
    let a = AdminSetup::fresh().settings(LOOPBACK_ALLOWED).start();
    let t = id(&a.create("/api/v1/tenants", bodies::tenant("acme")));
    let g = id(&a.create("/api/v1/tenants", bodies::tenant("globex")));
    let keys_rx = Receiver::start();
    let all_rx = Receiver::start();
    let globex_rx = Receiver::start();
    endpoint(
        &a,
        &t,
        &keys_rx.url("/keys"),
        &["key.created", "key.rotated", "key.revoked", "plan.changed"],
    );
    endpoint(&a, &t, &all_rx.url("/all"), &[]);
    endpoint(&a, &g, &globex_rx.url("/all"), &[]);
    let _w = Worker::start(
        &a.db,
        "  webhook_allowed_networks: [\"127.0.0.0/8\"]\n  alert_interval_s: 3600\n",
        "",
    );

    let free = id(&a.create("/api/v1/plans", json!({"tenant_id": t, "name": "free"})));
    let pro = id(&a.create("/api/v1/plans", json!({"tenant_id": t, "name": "pro"})));
    let k = id(&a.create(
        "/api/v1/api-keys",
        json!({"tenant_id": t, "name": "ci", "plan_id": free}),
    ));
    let r = a.root(
        "PATCH",
        &format!("/api/v1/api-keys/{k}"),
        Some(json!({"plan_id": pro})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = a.root("POST", &format!("/api/v1/api-keys/{k}/rotate"), None);
    assert_eq!(r.status, 201, "{}", r.body);
    let k2 = id(&r.body);
    let r = a.root("POST", &format!("/api/v1/api-keys/{k2}/revoke"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    // A refused write announces nothing.
    let r = a.root(
        "PATCH",
        &format!("/api/v1/api-keys/{k2}"),
        Some(json!({"plan_id": "no-such-plan"})),
    );
    assert_eq!(r.status, 422, "{}", r.body);

    // The key events, in order: created, plan changed, rotated (with the new key created
    // and the old one revoked at once), the new one revoked.
    let want = [
        ("key.created", k.as_str()),
        ("plan.changed", k.as_str()),
        ("key.rotated", k2.as_str()),
        ("key.created", k2.as_str()),
        ("key.revoked", k.as_str()),
        ("key.revoked", k2.as_str()),
    ];
    keys_rx.wait_for_requests(want.len(), 30);
    let mut got: Vec<(String, String)> = received(&keys_rx)
        .into_iter()
        .map(|(ty, d)| (ty, d["api_key_id"].as_str().unwrap_or("").to_string()))
        .collect();
    // Deliveries run in parallel: compare as sets of (type, key), each exactly once.
    got.sort();
    let mut want: Vec<(String, String)> = want
        .iter()
        .map(|(ty, k)| (ty.to_string(), k.to_string()))
        .collect();
    want.sort();
    assert_eq!(got, want);
    let plan_change = received(&keys_rx)
        .into_iter()
        .find(|(ty, _)| ty == "plan.changed")
        .unwrap()
        .1;
    assert_eq!(plan_change["from_plan_id"], free);
    assert_eq!(plan_change["to_plan_id"], pro);
    assert_eq!(plan_change["subject"], format!("key:{k}"));

    // The endpoint without a filter also gets config.changed, once per configuration write
    // of the tenant (2 plans, the key, its patch, the rotation, the revocation).
    let all = wait_for("every event at the unfiltered endpoint", 30, || {
        let r = received(&all_rx);
        (r.iter().filter(|(ty, _)| ty == "config.changed").count() >= 6).then_some(r)
    });
    let versions: Vec<i64> = all
        .iter()
        .filter(|(ty, _)| ty == "config.changed")
        .map(|(_, d)| d["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions.len(), 6, "{all:?}");
    let mut unique = versions.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6, "one per committed version: {versions:?}");
    assert!(all.iter().any(|(ty, _)| ty == "key.rotated"));
    // Every delivery is logged delivered, and the other tenant heard nothing of acme's.
    wait_for("every delivery logged", 30, || {
        (a.db
            .sql("SELECT count(*) FROM webhook_deliveries WHERE state <> 'delivered'")
            == "0")
            .then_some(())
    });
    assert_eq!(globex_rx.count(), 0, "{:?}", received(&globex_rx));
    assert_eq!(
        a.db.sql(&format!(
            "SELECT count(*) FROM events WHERE tenant_id = '{g}' AND type <> 'config.changed'"
        )),
        "0"
    );
}
