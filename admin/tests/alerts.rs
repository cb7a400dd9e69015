//! Alert rules and their alerts, with a real `vantage-admin serve` and real workers over a
//! database of the test's own: usage and violations written the way the proxies write them
//! (`vantage_apply_usage_batch`), pool health the way they report it (`pool_health`), and
//! the alerts and events the workers' evaluation (`alerts.evaluate`, every second here)
//! records from them.
//!
//! "Fires only once" is checked after an evaluation that began after the test's last step
//! has completed ([`settle`]), never after a fixed sleep.

use serde_json::{json, Value};
use std::time::{Duration, SystemTime};
use vantage_model::QuotaPeriod;
use vantage_testkit::{
    apply_batch, bodies, id, steady_zone, unix_now, wait_for, Admin, Database, UsageRow,
    ViolationRow, Worker,
};

/// The `worker:` lines of the test workers: evaluate the alert rules every second.
const EVERY_SECOND: &str = "  alert_interval_s: 1\n";

/// One usage row of a batch: subject, route, status class, requests, units.
type Usage<'a> = (&'a str, &'a str, i16, i64, i64);

/// One violation of a batch: subject, kind, route, count.
type Violation<'a> = (&'a str, &'a str, &'a str, i64);

/// Apply a batch of `tenant`'s usage, stamped now, and violations, stamped a minute ago (the
/// `violations` rules count complete minutes only), the way a proxy does (a fresh batch id
/// each time).
fn apply(db: &Database, tenant: &str, usage: &[Usage<'_>], violations: &[Violation<'_>]) {
    apply_at(db, tenant, unix_now() - 60, usage, violations);
}

/// [`apply`] with the violations stamped at `violations_at` (Unix seconds).
fn apply_at(
    db: &Database,
    tenant: &str,
    violations_at: i64,
    usage: &[Usage<'_>],
    violations: &[Violation<'_>],
) {
    let now = unix_now();
    let rows: Vec<UsageRow> = usage
        .iter()
        .map(|u| UsageRow {
            route: u.1.to_string(),
            status_class: u.2,
            units: u.4,
            ..UsageRow::new(now, tenant, u.0, u.3)
        })
        .collect();
    let refusals: Vec<ViolationRow> = violations
        .iter()
        .map(|v| ViolationRow {
            route: v.2.to_string(),
            ..ViolationRow::new(violations_at, tenant, v.0, v.1, v.3)
        })
        .collect();
    assert!(
        apply_batch(db, &rows, &refusals),
        "a fresh batch is applied"
    );
}

/// Whether no alert evaluation is running now (the evaluation's lock is free).
fn no_evaluation_running(a: &Admin) -> bool {
    a.db.sql(&format!(
        "SELECT pg_try_advisory_xact_lock(hashtext('{}'), 0)",
        vantage_admin::alerts::EVALUATION_LOCK
    )) == "t"
}

/// Wait until an evaluation that began after whatever the test did before has completed.
///
/// First no evaluation runs (one that began before is over), and the highest job id is
/// taken; then two `alerts.evaluate` jobs with a higher id are done. Such a job was created,
/// so claimed, after that moment: either it evaluated the rules, or it skipped its slot
/// because an evaluation ran, one that began after that moment too. Last, no evaluation
/// runs any more: that one is over as well.
fn settle(a: &Admin) {
    wait_for("no alert evaluation running", 30, || {
        no_evaluation_running(a).then_some(())
    });
    let last: i64 =
        a.db.sql("SELECT coalesce(max(id), 0) FROM jobs")
            .parse()
            .unwrap();
    wait_for("two alert evaluations created after now", 30, || {
        let done: i64 =
            a.db.sql(&format!(
                "SELECT count(*) FROM jobs
                  WHERE kind = 'alerts.evaluate' AND state = 'done' AND id > {last}"
            ))
            .parse()
            .unwrap();
        (done >= 2).then_some(())
    });
    wait_for("the alert evaluation to end", 30, || {
        no_evaluation_running(a).then_some(())
    });
}

/// The alerts of `rule` (as the superadmin sees them), newest first.
fn alerts_of(a: &Admin, rule: &str, state: Option<&str>) -> Vec<Value> {
    let state = state.map(|s| format!("&state={s}")).unwrap_or_default();
    let r = a.root(
        "GET",
        &format!("/api/v1/alerts?rule_id={rule}{state}"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["items"].as_array().unwrap().clone()
}

/// Wait until `rule` has `n` alerts in `state`; returns them.
fn wait_alerts(a: &Admin, rule: &str, state: &str, n: usize) -> Vec<Value> {
    wait_for(&format!("{n} {state} alerts of rule {rule}"), 30, || {
        let items = alerts_of(a, rule, Some(state));
        (items.len() == n).then_some(items)
    })
}

/// Events of `tenant` of type `kind`: their `data`, oldest first.
async fn events(a: &Admin, tenant: &str, kind: &str) -> Vec<Value> {
    let c = a.db.client().await;
    c.query(
        "SELECT data FROM events WHERE tenant_id = $1::text::uuid AND type = $2
          ORDER BY created_at, id",
        &[&tenant, &kind],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// The events of `rule` among `events`.
fn of_rule(events: Vec<Value>, rule: &str) -> Vec<Value> {
    events
        .into_iter()
        .filter(|e| e["rule_id"] == rule)
        .collect()
}

/// Rows of `alerts` of `rule` in the database.
fn alert_rows(a: &Admin, rule: &str) -> i64 {
    a.db.sql(&format!(
        "SELECT count(*) FROM alerts WHERE rule_id = '{rule}'"
    ))
    .parse()
    .unwrap()
}

/// `vantage_alerts_total{kind, state}` summed over `workers`.
fn alerts_metric(workers: &[&Worker], kind: &str, state: &str) -> f64 {
    let series = format!("vantage_alerts_total{{kind=\"{kind}\",state=\"{state}\"}} ");
    workers
        .iter()
        .map(|w| {
            w.metrics_text()
                .lines()
                .find_map(|l| l.strip_prefix(&series)?.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        })
        .sum()
}

/// An RFC 3339 time `days` from now.
fn in_days(days: f64) -> String {
    let t = SystemTime::now() + Duration::from_secs_f64(days * 86_400.0);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// An admin with tenant acme, an origin and a route `/api/*`: (admin, tenant, origin, route).
fn acme() -> (Admin, String, String, String) {
    let a = Admin::fresh();
    let t = id(&a.create("/api/v1/tenants", bodies::tenant("acme")));
    let o = id(&a.create("/api/v1/origins", bodies::origin(&t, 9)));
    let r = id(&a.create("/api/v1/routes", bodies::route(&t, &o, "/api/*")));
    (a, t, o, r)
}

#[tokio::test]
async fn quota_alerts_at_80_and_100_percent_fire_once_each_and_resolve_on_a_bigger_plan() {
    let (a, t, _, route) = acme();
    // Far from the month's boundary in its zone: the whole test is within one period.
    let zone = steady_zone(QuotaPeriod::Month, 900);
    let plan = |name: &str, limit: i64| {
        id(&a.create(
            "/api/v1/plans",
            json!({"tenant_id": t, "name": name, "time_zone": zone,
                   "quotas": [{"name": "monthly", "limit": limit, "period": "month"}]}),
        ))
    };
    let (small, big) = (plan("small", 100), plan("big", 10_000));
    let key = |name: &str| {
        id(&a.create(
            "/api/v1/api-keys",
            json!({"tenant_id": t, "name": name, "plan_id": small}),
        ))
    };
    let (ci, quiet) = (key("ci"), key("quiet"));
    // The tenant itself is on a plan whose quota counts every subject of the tenant.
    let team = id(&a.create(
        "/api/v1/plans",
        json!({"tenant_id": t, "name": "team", "time_zone": zone,
               "quotas": [{"name": "team-monthly", "limit": 120, "period": "month"}]}),
    ));
    let r = a.root(
        "PATCH",
        &format!("/api/v1/tenants/{t}"),
        Some(json!({"plan_id": team})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let before = a.version();
    let rule = a.create(
        "/api/v1/alert-rules",
        json!({"tenant_id": t, "name": "quota-warnings", "kind": "quota_used",
               "params": {"thresholds": [80, 100], "quota": "monthly"}}),
    );
    let tenant_rule = id(&a.create(
        "/api/v1/alert-rules",
        json!({"tenant_id": t, "name": "team-quota", "kind": "quota_used",
               "params": {"thresholds": [80], "quota": "team-monthly"}}),
    ));
    assert_eq!(a.version(), before, "alert rules are not configuration");
    assert_eq!(
        rule["params"],
        json!({"thresholds": [80, 100], "quota": "monthly"})
    );
    assert_eq!(
        (rule["cooldown_s"].as_i64(), rule["enabled"].as_bool()),
        (Some(3600), Some(true))
    );
    let rule = id(&rule);
    // Two workers on the same queue.
    let workers = [
        Worker::start(&a.db, EVERY_SECOND, ""),
        Worker::start(&a.db, EVERY_SECOND, ""),
    ];

    // 85 of 100 units: the 80% alert fires; the quiet key (10 units) raises nothing.
    let (ci_subject, quiet_subject) = (format!("key:{ci}"), format!("key:{quiet}"));
    apply(
        &a.db,
        &t,
        &[
            (&ci_subject, &route, 2, 85, 85),
            (&quiet_subject, &route, 2, 10, 10),
        ],
        &[],
    );
    let fired = wait_alerts(&a, &rule, "firing", 1);
    let at80 = &fired[0];
    assert_eq!(at80["subject"], ci_subject.as_str());
    assert_eq!(at80["kind"], "quota_used");
    assert_eq!(at80["rule_name"], "quota-warnings");
    assert_eq!(
        (at80["threshold"].as_f64(), at80["value"].as_f64()),
        (Some(80.0), Some(85.0))
    );
    assert_eq!(at80["details"]["used"], 85);
    assert_eq!(at80["details"]["limit"], 100);
    assert_eq!(at80["details"]["quota"], "monthly");
    assert!(at80["resolved_at"].is_null());
    assert!(
        at80["message"]
            .as_str()
            .unwrap()
            .contains("'ci' used 85% of quota 'monthly'"),
        "{at80}"
    );

    // 105 units: the 100% alert fires too; the 80% one keeps firing, once. The tenant used
    // 115 of its 120.
    apply(&a.db, &t, &[(&ci_subject, &route, 2, 20, 20)], &[]);
    let fired = wait_alerts(&a, &rule, "firing", 2);
    assert_eq!(fired[0]["threshold"].as_f64(), Some(100.0), "newest first");
    assert_eq!(fired[1]["id"], at80["id"]);
    assert_eq!(
        fired[1]["value"].as_f64(),
        Some(105.0),
        "a firing alert's value follows"
    );
    let whole = wait_alerts(&a, &tenant_rule, "firing", 1);
    assert_eq!(whole[0]["subject"], "tenant");
    assert_eq!(whole[0]["details"]["used"], 115);
    assert_eq!(whole[0]["details"]["plan_name"], "team");
    settle(&a);
    assert_eq!(alert_rows(&a, &rule), 2, "each threshold fired once");
    assert_eq!(alert_rows(&a, &tenant_rule), 1);
    let ids: Vec<&Value> = fired.iter().map(|f| &f["id"]).collect();
    for kind in ["alert.fired", "quota.threshold"] {
        let sent = of_rule(events(&a, &t, kind).await, &rule);
        assert_eq!(sent.len(), 2, "{kind}: {sent:?}");
        let mut sent_ids: Vec<&Value> = sent.iter().map(|e| &e["id"]).collect();
        sent_ids.reverse();
        assert_eq!(sent_ids, ids, "{kind}");
        assert!(sent.iter().all(|e| e["state"] == "firing"));
    }
    assert_eq!(
        alerts_metric(&[&workers[0], &workers[1]], "quota_used", "fired"),
        3.0
    );

    // The key moves to the big plan: 105 of 10,000 is 1%, both alerts resolve.
    let moved = a.root(
        "PATCH",
        &format!("/api/v1/api-keys/{ci}"),
        Some(json!({"plan_id": big})),
    );
    assert_eq!(moved.status, 200, "{}", moved.body);
    let resolved = wait_alerts(&a, &rule, "resolved", 2);
    assert!(resolved.iter().all(|r| r["resolved_at"].is_string()));
    assert!(alerts_of(&a, &rule, Some("firing")).is_empty());
    settle(&a);
    assert_eq!(alert_rows(&a, &rule), 2, "nothing fired again");
    let sent = events(&a, &t, "alert.resolved").await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent
        .iter()
        .all(|e| e["state"] == "resolved" && e["rule_id"] == rule.as_str()));
    assert_eq!(of_rule(events(&a, &t, "alert.fired").await, &rule).len(), 2);
    // The tenant's own usage did not change: its alert still fires.
    assert_eq!(alerts_of(&a, &tenant_rule, Some("firing")).len(), 1);
    assert_eq!(
        alerts_metric(&[&workers[0], &workers[1]], "quota_used", "resolved"),
        2.0
    );
}

#[tokio::test]
async fn a_key_hammering_a_rate_limit_fires_a_violations_alert() {
    let (a, t, _, route) = acme();
    let key = |name: &str| id(&a.create("/api/v1/api-keys", json!({"tenant_id": t, "name": name})));
    let (loud, calm) = (key("loud"), key("calm"));
    let rule = |name: &str, params: Value| {
        id(&a.create(
            "/api/v1/alert-rules",
            json!({"tenant_id": t, "name": name, "kind": "violations", "params": params}),
        ))
    };
    let by_key = rule(
        "hammering",
        json!({"per_minute": 5, "by": "key", "window_s": 600}),
    );
    let quota_by_route = rule(
        "quota-refusals",
        json!({"per_minute": 1, "by": "route", "kind": "quota"}),
    );
    let limits_by_route = rule(
        "rate-limited-routes",
        json!({"per_minute": 20, "by": "route", "kind": "rate_limit", "window_s": 600}),
    );
    let (loud_s, calm_s) = (format!("key:{loud}"), format!("key:{calm}"));
    // In the last complete minute, 300 refusals over a 10-minute window: 30 a minute, above
    // 5; the calm key's 40 are 4 a minute.
    apply(
        &a.db,
        &t,
        &[],
        &[
            (&loud_s, "rate_limit", &route, 300),
            (&calm_s, "rate_limit", &route, 40),
        ],
    );
    // Refusals of a minute that is not over yet (a proxy whose clock runs five minutes
    // ahead) count only once it is: not during this test.
    apply_at(
        &a.db,
        &t,
        unix_now() + 300,
        &[],
        &[
            (&loud_s, "rate_limit", &route, 1000),
            (&calm_s, "rate_limit", &route, 1000),
        ],
    );
    // Twelve evaluations queued at once, run by two workers four at a time: they take turns
    // (one evaluates, the others that find it running skip their slot), and each alert fires
    // once.
    a.db.sql(
        "INSERT INTO jobs (kind, payload)
         SELECT 'alerts.evaluate', jsonb_build_object('burst', n) FROM generate_series(1, 12) n",
    );
    let _w = [
        Worker::start(&a.db, EVERY_SECOND, ""),
        Worker::start(&a.db, EVERY_SECOND, ""),
    ];
    wait_for("the burst of evaluations", 30, || {
        let done =
            a.db.sql("SELECT count(*) FROM jobs WHERE payload ? 'burst' AND state = 'done'");
        (done == "12").then_some(())
    });
    let fired = wait_alerts(&a, &by_key, "firing", 1);
    assert_eq!(fired[0]["subject"], loud_s.as_str());
    assert_eq!(fired[0]["value"].as_f64(), Some(30.0));
    assert_eq!(fired[0]["threshold"].as_f64(), Some(5.0));
    assert_eq!(fired[0]["details"]["count"], 300);
    assert!(
        fired[0]["message"].as_str().unwrap().contains("'loud'"),
        "{}",
        fired[0]
    );
    // The route saw 340 rate-limit refusals in 10 minutes: 34 a minute, above 20.
    let on_route = wait_alerts(&a, &limits_by_route, "firing", 1);
    assert_eq!(on_route[0]["subject"], format!("route:{route}").as_str());
    assert_eq!(on_route[0]["value"].as_f64(), Some(34.0));
    settle(&a);
    // Evaluated again since: the figures are still those of the complete minutes.
    let fired = alerts_of(&a, &by_key, Some("firing"));
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0]["value"].as_f64(), Some(30.0));
    assert_eq!(
        fired[0]["subject"],
        loud_s.as_str(),
        "the calm key stays calm"
    );
    assert_eq!(
        alert_rows(&a, &by_key),
        1,
        "the loud key's alert fired once"
    );
    assert_eq!(alert_rows(&a, &quota_by_route), 0, "no quota refusals");
    assert_eq!(alert_rows(&a, &limits_by_route), 1);
    let sent = events(&a, &t, "alert.fired").await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(events(&a, &t, "quota.threshold").await.is_empty());
}

#[tokio::test]
async fn a_5xx_rate_above_the_rule_fires_and_resolves() {
    let (a, t, _, route) = acme();
    let rule = id(&a.create(
        "/api/v1/alert-rules",
        json!({"tenant_id": t, "name": "errors", "kind": "error_rate",
               "params": {"percent": 10, "window_s": 300, "min_requests": 20}}),
    ));
    let _w = Worker::start(&a.db, EVERY_SECOND, "");
    // Half of 10 requests failed: too few requests to judge.
    apply(
        &a.db,
        &t,
        &[("", &route, 5, 5, 0), ("", &route, 2, 5, 0)],
        &[],
    );
    settle(&a);
    assert_eq!(alert_rows(&a, &rule), 0, "below min_requests");
    // 10 of 45 failed: 22%, above 10%.
    apply(
        &a.db,
        &t,
        &[("key:k", &route, 2, 30, 0), ("key:k", &route, 5, 5, 0)],
        &[],
    );
    let fired = wait_alerts(&a, &rule, "firing", 1);
    assert_eq!(fired[0]["subject"], "tenant");
    let value = fired[0]["value"].as_f64().unwrap();
    assert!((value - 1000.0 / 45.0).abs() < 1e-9, "{value}");
    assert_eq!(fired[0]["details"]["requests"], 45);
    assert_eq!(fired[0]["details"]["errors"], 10);
    // 100 more successes: 10 of 145 is 6.9%, below 10%.
    apply(&a.db, &t, &[("key:k", &route, 2, 100, 0)], &[]);
    wait_alerts(&a, &rule, "resolved", 1);
    settle(&a);
    assert_eq!(alert_rows(&a, &rule), 1);
    assert_eq!(events(&a, &t, "alert.fired").await.len(), 1);
    assert_eq!(events(&a, &t, "alert.resolved").await.len(), 1);
}

#[tokio::test]
async fn a_pool_with_no_healthy_target_fires_and_resolves_when_a_target_recovers() {
    let (a, t, origin, _) = acme();
    let other = id(&a.create("/api/v1/origins", bodies::origin(&t, 10)));
    let rule = id(&a.create(
        "/api/v1/alert-rules",
        json!({"tenant_id": t, "name": "pools", "kind": "pool_unhealthy"}),
    ));
    let _w = Worker::start(&a.db, EVERY_SECOND, "");
    // Proxy p1 sees no healthy target of the origin, p2 sees both; the other origin's only
    // report of no healthy target is an hour old (its proxy is gone).
    a.db.sql(&format!(
        "INSERT INTO pool_health (proxy, origin_id, tenant_id, healthy, total, reported_at) VALUES
            ('p1', '{origin}', '{t}', 0, 2, now()),
            ('p2', '{origin}', '{t}', 2, 2, now()),
            ('p1', '{other}', '{t}', 0, 3, now() - interval '1 hour')"
    ));
    let fired = wait_alerts(&a, &rule, "firing", 1);
    assert_eq!(fired[0]["subject"], format!("origin:{origin}").as_str());
    assert_eq!(fired[0]["details"]["proxies"], json!(["p1"]));
    let sent = events(&a, &t, "pool.unhealthy").await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["id"], fired[0]["id"]);
    settle(&a);
    assert_eq!(alert_rows(&a, &rule), 1, "the stale report raises nothing");
    // p1's health checks see a target again.
    a.db.sql(&format!(
        "UPDATE pool_health SET healthy = 1, reported_at = now()
          WHERE proxy = 'p1' AND origin_id = '{origin}'"
    ));
    wait_alerts(&a, &rule, "resolved", 1);
    settle(&a);
    assert_eq!(alert_rows(&a, &rule), 1);
    assert_eq!(events(&a, &t, "alert.resolved").await.len(), 1);
}

#[tokio::test]
async fn a_key_expiring_in_two_days_fires_once_and_the_cooldown_holds_it_back() {
    let (a, t, _, _) = acme();
    let key = |name: &str, days: f64| {
        id(&a.create(
            "/api/v1/api-keys",
            json!({"tenant_id": t, "name": name, "expires_at": in_days(days)}),
        ))
    };
    let soon = key("soon", 2.0);
    key("later", 30.0);
    let revoked = key("revoked", 1.0);
    let r = a.root("POST", &format!("/api/v1/api-keys/{revoked}/revoke"), None);
    assert!(r.status < 300, "{}", r.body);
    let rule = id(&a.create(
        "/api/v1/alert-rules",
        json!({"tenant_id": t, "name": "expiry", "kind": "key_expiring", "params": {"days": 7}}),
    ));
    let _w = Worker::start(&a.db, EVERY_SECOND, "");
    let fired = wait_alerts(&a, &rule, "firing", 1);
    assert_eq!(fired[0]["subject"], format!("key:{soon}").as_str());
    let days_left = fired[0]["value"].as_f64().unwrap();
    assert!(days_left > 1.99 && days_left <= 2.0, "{days_left}");
    assert_eq!(fired[0]["details"]["key_name"], "soon");
    let sent = events(&a, &t, "key.expiring").await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["subject"], format!("key:{soon}").as_str());

    // Extended: resolved.
    let patch = |days: f64| {
        let r = a.root(
            "PATCH",
            &format!("/api/v1/api-keys/{soon}"),
            Some(json!({"expires_at": in_days(days)})),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    };
    patch(60.0);
    wait_alerts(&a, &rule, "resolved", 1);
    // Back to two days within the cooldown (an hour): nothing fires.
    patch(2.0);
    settle(&a);
    assert_eq!(alert_rows(&a, &rule), 1, "held back by the cooldown");
    // Without a cooldown the same alert fires again.
    let r = a.root(
        "PATCH",
        &format!("/api/v1/alert-rules/{rule}"),
        Some(json!({"cooldown_s": 0})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["params"], json!({"days": 7}), "the params stay");
    let again = wait_alerts(&a, &rule, "firing", 1);
    assert_ne!(again[0]["id"], fired[0]["id"]);
    assert_eq!(again[0]["dedupe"], fired[0]["dedupe"]);
    assert_eq!(alert_rows(&a, &rule), 2);
    assert_eq!(events(&a, &t, "key.expiring").await.len(), 2);
}

#[tokio::test]
async fn bad_rules_are_refused_with_field_paths_and_tenants_see_only_their_own() {
    let a = Admin::fresh();
    let t = id(&a.create("/api/v1/tenants", bodies::tenant("acme")));
    let g = id(&a.create("/api/v1/tenants", bodies::tenant("globex")));
    let go = id(&a.create("/api/v1/origins", bodies::origin(&g, 9)));
    let their_route = id(&a.create("/api/v1/routes", bodies::route(&g, &go, "/x/*")));
    let (mine, theirs) = (a.token_for("acme"), a.token_for("globex"));
    let before = a.version();

    // Each refusal names its fields, and changes nothing.
    let refused = |body: Value| {
        let r = a.call(&mine, "POST", "/api/v1/alert-rules", Some(body.clone()));
        (r.status, r.fields())
    };
    let rule = |kind: &str, params: Value| json!({"name": "r", "kind": kind, "params": params});
    assert_eq!(
        refused(rule("nope", json!({}))),
        (422, vec!["kind".to_string()])
    );
    assert_eq!(
        refused(rule("quota_used", json!({"thresholds": [50, -1, 50]}))),
        (
            422,
            vec![
                "params.thresholds[1]".to_string(),
                "params.thresholds[2]".to_string()
            ]
        )
    );
    assert_eq!(
        refused(rule("quota_used", json!({"thresholds": [50, "x"]}))),
        (422, vec!["params.thresholds[1]".to_string()])
    );
    assert_eq!(
        refused(rule("violations", json!({}))),
        (422, vec!["params.per_minute".to_string()])
    );
    assert_eq!(
        refused(rule(
            "violations",
            json!({"per_minute": 1, "by": "user", "window_s": 90})
        )),
        (
            422,
            vec!["params.by".to_string(), "params.window_s".to_string()]
        )
    );
    assert_eq!(
        refused(rule(
            "error_rate",
            json!({"percent": 5, "route_id": their_route})
        )),
        (422, vec!["params.route_id".to_string()]),
        "another tenant's route"
    );
    assert_eq!(
        refused(rule("key_expiring", json!({"days": 7, "colour": "red"}))),
        (422, vec!["params.colour".to_string()])
    );
    assert_eq!(
        refused(rule("key_expiring", json!([7]))),
        (422, vec!["params".to_string()])
    );
    assert_eq!(
        refused(json!({"name": "r", "kind": "key_expiring", "cooldown_s": 31 * 86_400})),
        (422, vec!["cooldown_s".to_string()])
    );
    assert_eq!(
        refused(json!({"name": " ", "kind": "key_expiring"})),
        (422, vec!["name".to_string()])
    );
    assert_eq!(
        refused(json!({"name": "r", "kind": "key_expiring", "tenant_id": g})),
        (422, vec!["tenant_id".to_string()])
    );
    let r = a.call(
        &mine,
        "POST",
        "/api/v1/alert-rules",
        Some(json!({"name": "r", "kind": "key_expiring", "severity": "high"})),
    );
    assert_eq!((r.status, r.code()), (400, "bad_request"), "{}", r.body);
    assert_eq!(a.db.sql("SELECT count(*) FROM alert_rules"), "0");

    // A tenant's rule; the name is taken in its tenant only.
    let create = |tok: &str, name: &str| {
        a.call(
            tok,
            "POST",
            "/api/v1/alert-rules",
            Some(json!({"name": name, "kind": "key_expiring"})),
        )
    };
    let r = create(&mine, "expiry");
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["tenant_id"], t.as_str());
    assert_eq!(r.body["params"], json!({"days": 7}));
    let rule = id(&r.body);
    let twin = create(&mine, "expiry");
    assert_eq!(
        (twin.status, twin.fields()),
        (409, vec!["name".to_string()])
    );
    let their_rule = create(&theirs, "expiry");
    assert_eq!(their_rule.status, 201, "{}", their_rule.body);
    let their_rule = id(&their_rule.body);
    let other = id(&create(&mine, "other").body);
    let r = a.call(
        &mine,
        "PATCH",
        &format!("/api/v1/alert-rules/{other}"),
        Some(json!({"name": "expiry"})),
    );
    assert_eq!((r.status, r.fields()), (409, vec!["name".to_string()]));
    let r = a.call(
        &mine,
        "PATCH",
        &format!("/api/v1/alert-rules/{other}"),
        Some(json!({"params": {"days": 0}})),
    );
    assert_eq!(
        (r.status, r.fields()),
        (422, vec!["params.days".to_string()])
    );
    let r = a.call(
        &mine,
        "PATCH",
        &format!("/api/v1/alert-rules/{other}"),
        Some(json!({"kind": "quota_used"})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = a.call(&mine, "GET", &format!("/api/v1/alert-rules/{other}"), None);
    assert_eq!(
        (r.body["name"].as_str(), r.body["params"]["days"].as_i64()),
        (Some("other"), Some(7))
    );
    let r = a.call(
        &mine,
        "PATCH",
        &format!("/api/v1/alert-rules/{other}"),
        Some(json!({"enabled": false, "params": {"days": 3}})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (
            r.body["enabled"].as_bool(),
            r.body["params"]["days"].as_i64()
        ),
        (Some(false), Some(3))
    );

    assert_eq!(a.version(), before, "no rule write is configuration");

    // An alert of acme's, from a key expiring tomorrow.
    a.create(
        "/api/v1/api-keys",
        json!({"tenant_id": t, "name": "soon", "expires_at": in_days(1.0)}),
    );
    let before = a.version();
    let _w = Worker::start(&a.db, EVERY_SECOND, "");
    let fired = wait_alerts(&a, &rule, "firing", 1);
    let alert = fired[0]["id"].clone();

    // Globex sees none of acme's rules and alerts.
    for (method, body) in [
        ("GET", None),
        ("PATCH", Some(json!({"enabled": false}))),
        ("DELETE", None),
    ] {
        let r = a.call(
            &theirs,
            method,
            &format!("/api/v1/alert-rules/{rule}"),
            body,
        );
        assert_eq!(
            (r.status, r.code()),
            (404, "not_found"),
            "{method}: {}",
            r.body
        );
    }
    let list = a.call(&theirs, "GET", "/api/v1/alert-rules", None);
    let ids: Vec<&str> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [their_rule.as_str()]);
    let r = a.call(&theirs, "GET", "/api/v1/alerts", None);
    assert_eq!(r.body["items"], json!([]), "{}", r.body);
    let r = a.call(
        &theirs,
        "GET",
        &format!("/api/v1/alerts?rule_id={rule}"),
        None,
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let r = a.call(
        &theirs,
        "GET",
        &format!("/api/v1/alerts?tenant_id={t}"),
        None,
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let r = a.call(&theirs, "GET", "/api/v1/alerts?state=burning", None);
    assert_eq!((r.status, r.fields()), (400, vec!["state".to_string()]));
    // Acme and the superadmin see it.
    let r = a.call(&mine, "GET", "/api/v1/alerts?state=firing", None);
    assert_eq!(r.body["items"][0]["id"], alert, "{}", r.body);
    let r = a.root("GET", &format!("/api/v1/alerts?tenant_id={t}"), None);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1, "{}", r.body);
    let r = a.root("GET", &format!("/api/v1/alert-rules?tenant_id={t}"), None);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2, "{}", r.body);

    // Deleting the rule resolves its firing alert (receivers see it end), then removes it.
    let r = a.call(
        &mine,
        "DELETE",
        &format!("/api/v1/alert-rules/{rule}"),
        None,
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        a.call(&mine, "GET", &format!("/api/v1/alert-rules/{rule}"), None)
            .status,
        404
    );
    let resolved = events(&a, &t, "alert.resolved").await;
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0]["id"], alert);
    assert_eq!(alert_rows(&a, &rule), 0);
    assert_eq!(a.version(), before, "nor is a rule's deletion");
}

#[tokio::test]
async fn a_tenant_has_at_most_100_alert_rules() {
    let a = Admin::fresh();
    let t = id(&a.create("/api/v1/tenants", bodies::tenant("acme")));
    a.create("/api/v1/tenants", bodies::tenant("globex"));
    let (mine, theirs) = (a.token_for("acme"), a.token_for("globex"));
    let count = || {
        a.db.sql(&format!(
            "SELECT count(*) FROM alert_rules WHERE tenant_id = '{t}'"
        ))
    };
    a.db.sql(&format!(
        "INSERT INTO alert_rules (tenant_id, name, kind, params)
         SELECT '{t}', 'rule-' || n, 'key_expiring', '{{\"days\": 7}}'
           FROM generate_series(1, 96) n"
    ));
    let create = |tok: &str, name: &str| {
        a.call(
            tok,
            "POST",
            "/api/v1/alert-rules",
            Some(json!({"name": name, "kind": "key_expiring"})),
        )
    };
    // Six creations at once with room for four: four are created, two refused.
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..6)
            .map(|i| {
                let (create, mine) = (&create, &mine);
                s.spawn(move || create(mine, &format!("at-once-{i}")).status)
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let created = statuses.iter().filter(|s| **s == 201).count();
    let refused = statuses.iter().filter(|s| **s == 409).count();
    assert_eq!((created, refused), (4, 2), "{statuses:?}");
    assert_eq!(count(), "100");

    // The 101st is refused with a clear message, and changes nothing.
    let r = create(&mine, "one-too-many");
    assert_eq!((r.status, r.code()), (409, "conflict"), "{}", r.body);
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("100 alert rules") && message.contains("delete one"),
        "{message}"
    );
    assert_eq!(count(), "100");
    assert_eq!(
        a.db.sql("SELECT count(*) FROM alert_rules WHERE name = 'one-too-many'"),
        "0"
    );
    // Another tenant's rules are its own.
    let r = create(&theirs, "one-too-many");
    assert_eq!(r.status, 201, "{}", r.body);
    // Once one is deleted, there is room for one.
    let some = a.db.sql(&format!(
        "SELECT id FROM alert_rules WHERE tenant_id = '{t}' AND name = 'rule-1'"
    ));
    let r = a.call(
        &mine,
        "DELETE",
        &format!("/api/v1/alert-rules/{}", some.trim()),
        None,
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(create(&mine, "one-too-many").status, 201);
    assert_eq!(create(&mine, "one-more").status, 409);
    assert_eq!(count(), "100");
}

/// `alerts.evaluate` jobs done so far.
fn evaluations_done(a: &Admin) -> i64 {
    a.db.sql("SELECT count(*) FROM jobs WHERE kind = 'alerts.evaluate' AND state = 'done'")
        .parse()
        .unwrap()
}

#[tokio::test]
async fn while_an_evaluation_runs_the_next_intervals_skip_instead_of_piling_up() {
    let (a, t, _, _) = acme();
    a.create(
        "/api/v1/api-keys",
        json!({"tenant_id": t, "name": "soon", "expires_at": in_days(1.0)}),
    );
    let rule = id(&a.create(
        "/api/v1/alert-rules",
        json!({"tenant_id": t, "name": "expiry", "kind": "key_expiring"}),
    ));
    // A long evaluation: the test holds the evaluation's lock as one would.
    let mut c = a.db.client().await;
    let slow = c.transaction().await.unwrap();
    slow.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1), 0)",
        &[&vantage_admin::alerts::EVALUATION_LOCK],
    )
    .await
    .unwrap();
    let w = Worker::start(&a.db, EVERY_SECOND, "");
    // Each interval's job is done at once, without waiting for its turn nor evaluating.
    wait_for("three skipped intervals", 30, || {
        (evaluations_done(&a) >= 3).then_some(())
    });
    assert_eq!(alert_rows(&a, &rule), 0, "nothing was evaluated");
    assert_eq!(
        a.db.sql(
            "SELECT count(*) FROM jobs WHERE kind = 'alerts.evaluate' AND last_error IS NOT NULL"
        ),
        "0"
    );
    assert!(w.log().contains("alert evaluation skipped"), "{}", w.log());
    // The long evaluation is over: the next interval evaluates.
    slow.rollback().await.unwrap();
    let fired = wait_alerts(&a, &rule, "firing", 1);
    assert_eq!(fired[0]["details"]["key_name"], "soon");
}

#[tokio::test]
async fn a_rule_the_database_fails_does_not_hold_back_the_others() {
    let (a, t, _, _) = acme();
    a.create(
        "/api/v1/api-keys",
        json!({"tenant_id": t, "name": "soon", "expires_at": in_days(1.0)}),
    );
    let rule = |name: &str| {
        id(&a.create(
            "/api/v1/alert-rules",
            json!({"tenant_id": t, "name": name, "kind": "key_expiring"}),
        ))
    };
    let (one, two) = (rule("one"), rule("two"));
    // The database refuses the alerts of the rule evaluated first.
    let broken =
        a.db.sql("SELECT id FROM alert_rules ORDER BY tenant_id, id LIMIT 1");
    let healthy = if broken == one { &two } else { &one };
    a.db.sql(&format!(
        "CREATE FUNCTION refuse_alert() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.rule_id = '{broken}' THEN RAISE EXCEPTION 'no alerts for this rule'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_alert BEFORE INSERT ON alerts
             FOR EACH ROW EXECUTE FUNCTION refuse_alert();"
    ));
    let _w = Worker::start(&a.db, EVERY_SECOND, "");
    // The other rule is evaluated all the same; the job fails, to be tried again.
    let fired = wait_alerts(&a, healthy, "firing", 1);
    assert_eq!(fired[0]["details"]["key_name"], "soon");
    let error = wait_for("a failed evaluation", 30, || {
        let e = a.db.sql(
            "SELECT last_error FROM jobs
              WHERE kind = 'alerts.evaluate' AND last_error IS NOT NULL LIMIT 1",
        );
        (!e.is_empty()).then_some(e)
    });
    assert!(
        error.contains("1 of 2 alert rules could not be evaluated")
            && error.contains(&format!("rule {broken}"))
            && error.contains("no alerts for this rule"),
        "{error}"
    );
    assert_eq!(alert_rows(&a, &broken), 0);
    assert_eq!(events(&a, &t, "alert.fired").await.len(), 1);
    // Once the database takes it, the rule fires too.
    a.db.sql("DROP TRIGGER refuse_alert ON alerts");
    wait_alerts(&a, &broken, "firing", 1);
    assert_eq!(alert_rows(&a, healthy), 1, "the other fired once");
    assert_eq!(events(&a, &t, "alert.fired").await.len(), 2);
    // The failing intervals gave up at their last attempt: no dead letters piled up.
    assert_eq!(
        a.db.sql("SELECT count(*) FROM jobs WHERE kind = 'alerts.evaluate' AND state = 'dead'"),
        "0"
    );
}
