//! Billing: at the end of each period of a billed plan the workers write one record per
//! subject with the plan's arithmetic; late usage gives a correction; records are listed,
//! exported as CSV and JSON, and billed again on demand without changing.

use serde_json::{json, Value};
use vantage_model::{Calendar, QuotaPeriod};
use vantage_testkit::{
    apply_usage_batch, bodies, id, steady_zone, unix_now, wait_for, Admin, UsageRow, Worker,
};

/// Workers that bill a period as soon as it ends and look for late usage every second.
const QUICK_BILLING: &str =
    "  billing_grace_s: 0\n  reconcile_interval_s: 1\n  alert_interval_s: 3600\n";

fn key(a: &Admin, tenant: &str, name: &str, plan: Option<&str>) -> String {
    let mut body = json!({"tenant_id": tenant, "name": name});
    if let Some(p) = plan {
        body["plan_id"] = json!(p);
    }
    let k = a.create("/api/v1/api-keys", body);
    id(&k)
}

/// The latest records of `tenant` for `period`, by subject.
fn records(a: &Admin, token: &str, tenant: &str, period: &str) -> Vec<Value> {
    let r = a.call(
        token,
        "GET",
        &format!("/api/v1/billing/records?tenant_id={tenant}&period={period}"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["records"].as_array().unwrap().clone()
}

fn by_subject<'a>(records: &'a [Value], subject: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["subject"] == subject)
        .unwrap_or_else(|| panic!("no record of {subject} in {records:#?}"))
}

#[test]
fn a_period_end_bills_each_subject_once_and_late_usage_is_corrected() {
    let a = Admin::fresh();
    let t = id(&a.create("/api/v1/tenants", bodies::tenant("acme")));
    // Two billed plans in zones far from their period's boundary now: a monthly one and a
    // daily metered one.
    let month_zone = steady_zone(QuotaPeriod::Month, 900);
    let day_zone = steady_zone(QuotaPeriod::Day, 900);
    let pro = id(&a.create(
        "/api/v1/plans",
        json!({
            "tenant_id": t, "name": "pro", "time_zone": month_zone,
            "billing": {"currency": "EUR", "period": "month", "base_fee": 4900,
                        "included_units": 100, "unit_price": 50, "per_units": 10},
        }),
    ));
    let metered = id(&a.create(
        "/api/v1/plans",
        json!({
            "tenant_id": t, "name": "metered", "time_zone": day_zone,
            "billing": {"currency": "JPY", "period": "day", "unit_price": 3},
        }),
    ));
    // An unbilled plan: never billed.
    let free = id(&a.create("/api/v1/plans", json!({"tenant_id": t, "name": "free"})));
    // The tenant's own plan counts (and bills) all of the tenant's usage.
    let platform = id(&a.create(
        "/api/v1/plans",
        json!({
            "tenant_id": t, "name": "platform", "time_zone": month_zone,
            "billing": {"currency": "EUR", "period": "month", "base_fee": 10000,
                        "included_units": 150, "unit_price": 7},
        }),
    ));
    let r = a.root(
        "PATCH",
        &format!("/api/v1/tenants/{t}"),
        Some(json!({"plan_id": platform})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let heavy = key(&a, &t, "heavy", Some(&pro));
    let idle = key(&a, &t, "idle", Some(&pro)); // no usage: the base fee
    let meter = key(&a, &t, "meter", Some(&metered));
    let unbilled = key(&a, &t, "unbilled", Some(&free));
    let tenantless = key(&a, &t, "on-no-plan", None);

    let now = unix_now();
    let month = Calendar::new(month_zone).unwrap();
    let last_month = month.previous_window(QuotaPeriod::Month, now);
    let day = Calendar::new(day_zone).unwrap();
    let yesterday = day.previous_window(QuotaPeriod::Day, now);
    let m = |s: &str| format!("key:{s}");
    // The billed plans have been billed since before last month (a plan is billed from
    // when its billing is set: only later periods).
    a.db.sql(&format!(
        "UPDATE plans SET billing_since = to_timestamp({}) WHERE id IN ('{pro}', '{metered}', '{platform}')",
        last_month.start.min(yesterday.start) - 86_400
    ));
    // A plan billed only from now on, with a key that used it last month: nothing of last
    // month is billed on it.
    let newcomer = id(&a.create(
        "/api/v1/plans",
        json!({
            "tenant_id": t, "name": "newcomer", "time_zone": month_zone,
            "billing": {"currency": "EUR", "period": "month", "base_fee": 100},
        }),
    ));
    let late_key = key(&a, &t, "late", Some(&newcomer));
    // The idle key existed all last month (keys created now did not: only their usage bills
    // them).
    a.db.sql(&format!(
        "UPDATE api_keys SET created_at = to_timestamp({}) WHERE id = '{idle}'",
        last_month.start - 86_400
    ));
    // Usage of last month (and some just outside it, which must not count).
    let usage = [
        UsageRow::new(last_month.start, &t, &m(&heavy), 100),
        UsageRow::new(last_month.end - 60, &t, &m(&heavy), 35),
        UsageRow::new(last_month.start - 60, &t, &m(&heavy), 1000),
        UsageRow::new(last_month.end, &t, &m(&heavy), 1000),
        UsageRow::new(last_month.start + 3600, &t, "user:alice", 7),
        UsageRow::new(last_month.start + 7200, &t, "", 3),
        UsageRow::new(last_month.start + 7200, &t, &m(&unbilled), 50),
        UsageRow::new(yesterday.start + 900, &t, &m(&meter), 41),
        UsageRow::new(yesterday.end - 1, &t, &m(&meter), 1),
        UsageRow::new(yesterday.end, &t, &m(&meter), 500),
        UsageRow::new(last_month.start + 60, &t, &m(&tenantless), 4),
        UsageRow::new(last_month.start + 120, &t, &m(&late_key), 9),
    ];
    assert!(apply_usage_batch(&a.db, &usage));
    // The tenant's record: every unit of the tenant in last month.
    let tenant_units: i64 = usage
        .iter()
        .filter(|u| u.ts >= last_month.start && u.ts < last_month.end)
        .map(|u| u.units)
        .sum();

    let _w1 = Worker::start(&a.db, QUICK_BILLING, "");
    let _w2 = Worker::start(&a.db, QUICK_BILLING, "");
    let month_label = month.label(QuotaPeriod::Month, last_month.start);
    let day_label = day.label(QuotaPeriod::Day, yesterday.start);
    let got = wait_for("last month's records", 30, || {
        let r = records(&a, &a.root, &t, &month_label);
        (r.len() >= 3).then_some(r)
    });
    // One record per subject: heavy and idle on pro, the tenant on platform. Keys on no
    // plan or an unbilled one, and JWT subjects, have none.
    assert_eq!(got.len(), 3, "{got:#?}");
    let h = by_subject(&got, &m(&heavy));
    assert_eq!(h["plan_name"], "pro");
    assert_eq!(h["time_zone"], month_zone);
    assert_eq!(h["period"], "month");
    assert_eq!(h["revision"], 1);
    assert_eq!(h["kind"], "original");
    assert_eq!(h["currency"], "EUR");
    assert_eq!(h["used_units"], 135);
    assert_eq!(h["included_units"], 100);
    assert_eq!(h["overage_units"], 35);
    // 35 units at 50 per 10: 175 cents.
    assert_eq!(h["overage_amount"], 175);
    assert_eq!(h["base_fee"], 4900);
    assert_eq!(h["total"], 5075);
    assert_eq!(h["delta_total"], 5075);
    assert_eq!(h["requests"], 135);
    let i = by_subject(&got, &m(&idle));
    assert_eq!(
        (i["used_units"].as_i64(), i["total"].as_i64()),
        (Some(0), Some(4900))
    );
    let whole = by_subject(&got, "tenant");
    assert_eq!(whole["plan_name"], "platform");
    assert_eq!(whole["used_units"], tenant_units);
    let over = (tenant_units - 150).max(0);
    assert_eq!(whole["overage_units"], over);
    assert_eq!(whole["total"], 10000 + 7 * over);
    // The daily plan: 42 units at 3 yen each, no base fee.
    let d = wait_for("yesterday's record", 30, || {
        let r = records(&a, &a.root, &t, &day_label);
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(d[0]["subject"], m(&meter));
    assert_eq!(d[0]["currency"], "JPY");
    assert_eq!(d[0]["used_units"], 42);
    assert_eq!(d[0]["total"], 126);
    // The unbilled plan's key has no record at all.
    assert_eq!(
        a.db.sql(&format!(
            "SELECT count(*) FROM billing_records WHERE subject = 'key:{unbilled}'"
        )),
        "0"
    );

    // Billing the period again (on demand; and the schedulers of two workers keep asking)
    // changes nothing.
    let run = a.root(
        "POST",
        "/api/v1/billing/runs",
        Some(json!({"plan_id": pro, "period": month_label})),
    );
    assert_eq!(run.status, 202, "{}", run.body);
    let job = run.body["job_id"].as_i64().unwrap();
    wait_for("the billing run", 30, || {
        let j = a.root("GET", &format!("/api/v1/jobs/{job}"), None);
        (j.body["state"] == "done").then_some(())
    });
    assert_eq!(
        a.db.sql("SELECT count(*) FROM billing_records"),
        "4",
        "one record per subject and period"
    );

    // Late usage of last month (a proxy's spool flushed after the period was billed): a
    // correction, not a silent change.
    assert!(apply_usage_batch(
        &a.db,
        &[UsageRow::new(last_month.start + 60, &t, &m(&heavy), 20)],
    ));
    let corrected = wait_for("the correction", 30, || {
        let r = records(&a, &a.root, &t, &month_label);
        let h = by_subject(&r, &m(&heavy)).clone();
        (h["revision"] == 2).then_some(h)
    });
    assert_eq!(corrected["kind"], "correction");
    assert_eq!(corrected["used_units"], 155);
    assert_eq!(corrected["overage_units"], 55);
    // ceil(55 * 50 / 10) = 275.
    assert_eq!(corrected["total"], 5175);
    assert_eq!(corrected["delta_total"], 100);
    // The tenant's record too: 20 more units of the tenant.
    let whole = wait_for("the tenant's correction", 30, || {
        let r = records(&a, &a.root, &t, &month_label);
        let w = by_subject(&r, "tenant").clone();
        (w["revision"] == 2).then_some(w)
    });
    assert_eq!(whole["used_units"], tenant_units + 20);
    assert_eq!(whole["kind"], "correction");
    // The heavy key moves to a new plan; more late usage of last month corrects its record
    // on pro, the plan it was billed on, and bills nothing of last month on the new one.
    let pro2 = id(&a.create(
        "/api/v1/plans",
        json!({
            "tenant_id": t, "name": "pro2", "time_zone": month_zone,
            "billing": {"currency": "EUR", "period": "month", "base_fee": 9900},
        }),
    ));
    let r = a.root(
        "PATCH",
        &format!("/api/v1/api-keys/{heavy}"),
        Some(json!({"plan_id": pro2})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(apply_usage_batch(
        &a.db,
        &[UsageRow::new(last_month.start + 90, &t, &m(&heavy), 10)],
    ));
    let moved = wait_for("the correction after the move", 30, || {
        let r = records(&a, &a.root, &t, &month_label);
        let h = by_subject(&r, &m(&heavy)).clone();
        (h["revision"] == 3).then_some(h)
    });
    assert_eq!(moved["plan_name"], "pro");
    assert_eq!(moved["used_units"], 165);
    assert_eq!(
        a.db.sql(&format!(
            "SELECT count(*) FROM billing_records WHERE plan_id IN ('{pro2}', '{newcomer}')"
        )),
        "0",
        "nothing of last month on plans billed since"
    );
    let r = a.root(
        "POST",
        "/api/v1/billing/runs",
        Some(json!({"plan_id": newcomer, "period": month_label})),
    );
    assert_eq!((r.status, r.fields()), (422, vec!["period".to_string()]));
    // The tenant's record follows all of it: 30 more units.
    wait_for("the tenant's second correction", 30, || {
        let r = records(&a, &a.root, &t, &month_label);
        let w = by_subject(&r, "tenant").clone();
        (w["revision"] == 3 && w["used_units"] == tenant_units + 30).then_some(())
    });
    // Every revision is kept.
    let all = a.root(
        "GET",
        &format!(
            "/api/v1/billing/records?tenant_id={t}&period={month_label}&subject=key:{heavy}&latest=false"
        ),
        None,
    );
    let totals: Vec<i64> = all.body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["total"].as_i64().unwrap())
        .collect();
    assert_eq!(totals, vec![5075, 5175, 5225]);
    // Each write told the tenant: billing.record_ready events.
    let ready: i64 =
        a.db.sql("SELECT count(*) FROM events WHERE type = 'billing.record_ready'")
            .parse()
            .unwrap();
    assert!(ready >= 3, "{ready} billing.record_ready events");

    // Export: CSV with a header and the latest revisions, JSON with totals per currency.
    let csv = a.root(
        "GET",
        &format!("/api/v1/billing/export?tenant_id={t}&period={month_label}&format=csv"),
        None,
    );
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let text = csv.text();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("id,tenant_id,subject,plan_id,plan_name"));
    assert_eq!(lines.len(), 4, "{text}");
    assert!(text.contains(&format!(",key:{heavy},")));
    assert!(text.contains(",3,correction,EUR,100,165,65,50,10,4900,325,5225,50,165"));
    let j = a.root(
        "GET",
        &format!("/api/v1/billing/export?tenant_id={t}&period={month_label}&format=json"),
        None,
    );
    assert_eq!(j.status, 200, "{}", j.body);
    assert_eq!(j.body["totals"][0]["currency"], "EUR");
    assert_eq!(j.body["totals"][0]["records"], 3);
    let over = (tenant_units + 30 - 150).max(0);
    assert_eq!(j.body["totals"][0]["total"], 5225 + 4900 + 10000 + 7 * over);

    // Another tenant sees none of it.
    let other = id(&a.create("/api/v1/tenants", bodies::tenant("globex")));
    let tok = a.token_for(&other);
    assert!(records(&a, &tok, &other, &month_label).is_empty());
    let rid = corrected["id"].as_str().unwrap();
    let r = a.call(&tok, "GET", &format!("/api/v1/billing/records/{rid}"), None);
    assert_eq!(r.status, 404);
    let r = a.call(
        &tok,
        "GET",
        &format!("/api/v1/billing/records?tenant_id={t}"),
        None,
    );
    assert_eq!(r.status, 404);
    let r = a.call(
        &tok,
        "POST",
        "/api/v1/billing/runs",
        Some(json!({"plan_id": pro, "period": month_label})),
    );
    assert_eq!(r.status, 404);
    // The owner's tenant admin sees its records.
    let own = a.token_for(&t);
    assert_eq!(records(&a, &own, &t, &month_label).len(), 3);
}

#[test]
fn bad_billing_input_gets_field_errors_and_changes_nothing() {
    let a = Admin::fresh();
    let t = id(&a.create("/api/v1/tenants", bodies::tenant("acme")));
    let r = a.root(
        "POST",
        "/api/v1/plans",
        Some(json!({
            "tenant_id": t, "name": "pro",
            "billing": {"currency": "EURO", "base_fee": -1, "per_units": 0,
                        "unit_price": 10_000_000_000_001_i64},
        })),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    let mut fields = r.fields();
    fields.sort();
    assert_eq!(
        fields,
        vec![
            "billing.base_fee",
            "billing.currency",
            "billing.per_units",
            "billing.unit_price"
        ]
    );
    // A float amount is not money.
    let r = a.root(
        "POST",
        "/api/v1/plans",
        Some(json!({"tenant_id": t, "name": "pro", "billing": {"currency": "EUR", "base_fee": 9.99}})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(a.db.sql("SELECT count(*) FROM plans"), "0");

    let billed = id(&a.create(
        "/api/v1/plans",
        json!({"tenant_id": t, "name": "pro", "time_zone": "Asia/Kolkata",
               "billing": {"currency": "INR", "period": "month", "base_fee": 100}}),
    ));
    let unbilled = id(&a.create("/api/v1/plans", json!({"tenant_id": t, "name": "free"})));
    let run = |body: Value| a.root("POST", "/api/v1/billing/runs", Some(body));
    let r = run(json!({"plan_id": unbilled, "period": "2026-01"}));
    assert_eq!((r.status, r.fields()), (422, vec!["plan_id".to_string()]));
    for bad in ["2026-13", "2026-01-01", "January", ""] {
        let r = run(json!({"plan_id": billed, "period": bad}));
        assert_eq!(
            (r.status, r.fields()),
            (422, vec!["period".to_string()]),
            "{bad}"
        );
    }
    // The period that has not ended cannot be billed yet.
    let cal = Calendar::new("Asia/Kolkata").unwrap();
    let current = cal.label(QuotaPeriod::Month, unix_now());
    let r = run(json!({"plan_id": billed, "period": current}));
    assert_eq!((r.status, r.fields()), (422, vec!["period".to_string()]));
    let r = run(json!({"plan_id": uuid::Uuid::new_v4(), "period": "2026-01"}));
    assert_eq!(r.status, 404);
    let r = run(json!({"plan_id": billed, "period": "2026-01", "extra": 1}));
    assert_eq!(r.status, 400);
    let r = a.root("GET", "/api/v1/billing/export?format=csv", None);
    assert_eq!((r.status, r.fields()), (400, vec!["period".to_string()]));
    let r = a.root(
        "GET",
        "/api/v1/billing/export?period=2026-01&format=xml",
        None,
    );
    assert_eq!((r.status, r.fields()), (400, vec!["format".to_string()]));
    assert_eq!(a.db.sql("SELECT count(*) FROM jobs"), "0");
}

#[test]
fn a_worker_that_was_away_bills_every_missed_period_once() {
    let a = Admin::fresh();
    let t = id(&a.create("/api/v1/tenants", bodies::tenant("acme")));
    let zone = steady_zone(QuotaPeriod::Day, 900);
    let cal = Calendar::new(zone).unwrap();
    let daily = id(&a.create(
        "/api/v1/plans",
        json!({
            "tenant_id": t, "name": "daily", "time_zone": zone,
            "billing": {"currency": "USD", "period": "day", "base_fee": 25},
        }),
    ));
    let k = key(&a, &t, "k", Some(&daily));
    // Billed since 3.5 days ago, and no worker ran since: the whole days after that are due.
    let now = unix_now();
    let since = now - 3 * 86_400 - 43_200;
    a.db.sql(&format!(
        "UPDATE plans SET billing_since = to_timestamp({since});
         UPDATE api_keys SET created_at = to_timestamp({}) WHERE id = '{k}'",
        since - 86_400
    ));
    let mut want = Vec::new();
    let first = cal.window(QuotaPeriod::Day, since);
    let mut w = if first.start >= since {
        first
    } else {
        cal.window(QuotaPeriod::Day, first.end)
    };
    while w.end <= now {
        want.push(cal.label(QuotaPeriod::Day, w.start));
        w = cal.window(QuotaPeriod::Day, w.end);
    }
    assert!(want.len() >= 2, "{want:?}");
    let _w = Worker::start(
        &a.db,
        "  billing_grace_s: 0\n  alert_interval_s: 3600\n",
        "",
    );
    let got = wait_for("every missed day billed", 30, || {
        let r = a.root(
            "GET",
            &format!("/api/v1/billing/records?tenant_id={t}"),
            None,
        );
        let labels: Vec<String> = r.body["records"]
            .as_array()?
            .iter()
            .map(|r| r["period_label"].as_str().unwrap().to_string())
            .collect();
        (labels.len() >= want.len()).then_some(r.body["records"].as_array()?.clone())
    });
    let mut labels: Vec<String> = got
        .iter()
        .map(|r| r["period_label"].as_str().unwrap().to_string())
        .collect();
    labels.sort();
    assert_eq!(
        labels, want,
        "each missed day once, none before billing began"
    );
    assert!(got
        .iter()
        .all(|r| r["total"] == 25 && r["subject"] == format!("key:{k}")));
}
