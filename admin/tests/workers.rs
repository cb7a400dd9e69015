//! The workers' durable queue: several workers on one queue run each job once, periodic
//! jobs are created once per fleet, dead letters are listed and replayed, and the queue's
//! figures are in the workers' metrics.

use serde_json::json;
use vantage_model::{Calendar, QuotaPeriod};
use vantage_testkit::{
    apply_usage_batch, bodies, id, steady_zone, unix_now, wait_for, Admin, UsageRow, Worker,
};

#[test]
fn two_workers_on_one_queue_do_every_job_exactly_once() {
    let a = Admin::fresh();
    let t = id(&a.create("/api/v1/tenants", bodies::tenant("acme")));
    let zone = steady_zone(QuotaPeriod::Day, 900);
    let cal = Calendar::new(zone).unwrap();
    let yesterday = cal.previous_window(QuotaPeriod::Day, unix_now());
    let label = cal.label(QuotaPeriod::Day, yesterday.start);
    // 30 billed plans, a key on each with usage yesterday.
    let mut plans = Vec::new();
    let mut rows = Vec::new();
    for n in 0..30 {
        let plan = id(&a.create(
            "/api/v1/plans",
            json!({"tenant_id": t, "name": format!("p{n}"), "time_zone": zone,
                   "billing": {"currency": "USD", "period": "day", "unit_price": 2}}),
        ));
        let k = id(&a.create(
            "/api/v1/api-keys",
            json!({"tenant_id": t, "name": format!("k{n}"), "plan_id": plan}),
        ));
        rows.push(UsageRow::new(
            yesterday.start + 60,
            &t,
            &format!("key:{k}"),
            n + 1,
        ));
        plans.push(plan);
    }
    assert!(apply_usage_batch(&a.db, &rows));
    // Billed since before yesterday.
    a.db.sql(&format!(
        "UPDATE plans SET billing_since = to_timestamp({})",
        yesterday.start - 86_400
    ));
    // Queue every period's billing twice over, before any worker runs: 60 jobs.
    for plan in plans.iter().chain(plans.iter()) {
        let r = a.root(
            "POST",
            "/api/v1/billing/runs",
            Some(json!({"plan_id": plan, "period": label})),
        );
        assert_eq!(r.status, 202, "{}", r.body);
    }
    // Two workers at once (and their schedulers asking for the same closes too).
    let settings = "  concurrency: 3\n  billing_grace_s: 0\n  alert_interval_s: 1\n";
    let w1 = Worker::start(&a.db, settings, "");
    let w2 = Worker::start(&a.db, settings, "");
    wait_for("every billing job to be done", 60, || {
        let left =
            a.db.sql("SELECT count(*) FROM jobs WHERE kind = 'billing.close' AND state <> 'done'");
        let done: i64 =
            a.db.sql("SELECT count(*) FROM jobs WHERE kind = 'billing.close' AND state = 'done'")
                .parse()
                .unwrap();
        (left == "0" && done >= 60).then_some(())
    });
    // No job was claimed twice (no crash happened, so each took one attempt) ...
    assert_eq!(
        a.db.sql("SELECT count(*) FROM jobs WHERE kind = 'billing.close' AND attempts <> 1"),
        "0"
    );
    // ... and each effect happened once: one record per subject, one event per plan.
    assert_eq!(a.db.sql("SELECT count(*) FROM billing_records"), "30");
    assert_eq!(
        a.db.sql("SELECT count(DISTINCT (subject, revision)) FROM billing_records"),
        "30"
    );
    assert_eq!(
        a.db.sql("SELECT count(*) FROM events WHERE type = 'billing.record_ready'"),
        "30"
    );
    assert_eq!(
        a.db.sql("SELECT sum(total) FROM billing_records"),
        (2 * (1..=30).sum::<i64>()).to_string()
    );
    // Periodic jobs: one per slot for the whole fleet, however many workers schedule.
    wait_for("a few alert evaluation slots", 30, || {
        let n: i64 =
            a.db.sql("SELECT count(*) FROM jobs WHERE kind = 'maintenance'")
                .parse()
                .unwrap();
        (n >= 1).then_some(())
    });
    assert_eq!(
        a.db.sql(
            "SELECT count(*) FROM (SELECT dedupe_key FROM jobs WHERE dedupe_key IS NOT NULL
               GROUP BY dedupe_key HAVING count(*) > 1) d"
        ),
        "0"
    );
    // Both workers' metrics read the same queue.
    for w in [&w1, &w2] {
        let m = w.metrics_text();
        assert!(
            m.contains("vantage_worker_queue_jobs{state=\"dead\"} 0"),
            "{m}"
        );
        assert!(m.contains("vantage_admin_database_up 1"), "{m}");
    }
}

#[test]
fn a_dead_letter_is_listed_replayed_and_counted() {
    let a = Admin::fresh();
    let t = id(&a.create("/api/v1/tenants", bodies::tenant("acme")));
    let other = id(&a.create("/api/v1/tenants", bodies::tenant("globex")));
    // A job no worker of this version can run (written by a newer one during an upgrade):
    // it fails for good at once.
    let job: i64 =
        a.db.sql(&format!(
            "WITH j AS (INSERT INTO jobs (kind, payload, tenant_id)
                        VALUES ('report.v2', '{{}}', '{t}') RETURNING id)
             SELECT id FROM j"
        ))
        .parse()
        .unwrap();
    let w = Worker::start(&a.db, "  alert_interval_s: 3600\n", "");
    let dead = wait_for("the dead letter", 30, || {
        let r = a.root("GET", "/api/v1/jobs?state=dead", None);
        let jobs = r.body["jobs"].as_array()?.clone();
        (!jobs.is_empty()).then_some(jobs)
    });
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["id"], job);
    assert_eq!(dead[0]["attempts"], 1);
    assert!(dead[0]["last_error"]
        .as_str()
        .unwrap()
        .contains("no handler for job kind 'report.v2'"));
    wait_for("the dead letter in the metrics", 30, || {
        w.metrics_text()
            .contains("vantage_worker_queue_jobs{state=\"dead\"} 1")
            .then_some(())
    });
    assert!(w
        .metrics_text()
        .contains("vantage_worker_dead_letters_total{kind=\"report.v2\"} 1"));
    // Tenant-scoped: the owner's admin sees and may replay it; another tenant's may not.
    let own = a.token_for(&t);
    let stranger = a.token_for(&other);
    let r = a.call(&stranger, "GET", "/api/v1/jobs?state=dead", None);
    assert_eq!(r.body["jobs"].as_array().unwrap().len(), 0);
    let r = a.call(
        &stranger,
        "POST",
        &format!("/api/v1/jobs/{job}/replay"),
        None,
    );
    assert_eq!(r.status, 404);
    let r = a.call(&own, "POST", &format!("/api/v1/jobs/{job}/replay"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["state"], "queued");
    assert_eq!(r.body["attempts"], 0);
    // It runs again (and dies again: it still has no handler).
    wait_for("the replayed job to run", 30, || {
        let j = a.root("GET", &format!("/api/v1/jobs/{job}"), None);
        (j.body["state"] == "dead" && j.body["attempts"] == 1).then_some(())
    });
    // Only dead jobs are replayed; bad ids and parameters are refused.
    let done: i64 =
        a.db.sql(
            "WITH j AS (INSERT INTO jobs (kind, state) VALUES ('maintenance', 'done') RETURNING id)
             SELECT id FROM j",
        )
        .parse()
        .unwrap();
    let r = a.root("POST", &format!("/api/v1/jobs/{done}/replay"), None);
    assert_eq!((r.status, r.code()), (409, "conflict"));
    assert_eq!(a.root("GET", "/api/v1/jobs/not-a-number", None).status, 404);
    let r = a.root("GET", "/api/v1/jobs?state=exploded", None);
    assert_eq!((r.status, r.fields()), (400, vec!["state".to_string()]));
}
