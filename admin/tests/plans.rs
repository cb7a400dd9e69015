//! Plans: CRUD, what binds to them (API keys, tenants), validation with field paths, and the
//! quota status of an API key from the counters the proxies keep in Redis.

use fred::prelude::{Builder, ClientLike, Config, Expiration, KeysInterface};
use serde_json::{json, Value};
use std::time::{Duration, UNIX_EPOCH};
use vantage_model::{quota_counter_key, Calendar, QuotaPeriod};
use vantage_testkit::{
    admin_cli, bodies, id, steady_zone, temp_dir, unix_now, Admin, AdminSetup, Redis, REDIS,
};

/// A plan body of tenant `t` named `name` with one monthly quota.
fn plan(t: &str, name: &str) -> Value {
    json!({
        "tenant_id": t, "name": name,
        "quotas": [{"name": "monthly", "limit": 1000, "period": "month"}],
    })
}

/// An admin with tenants acme and globex: their ids.
fn acme_and_globex() -> (Admin, String, String) {
    let a = Admin::fresh();
    let t = id(&a.create("/api/v1/tenants", bodies::tenant("acme")));
    let g = id(&a.create("/api/v1/tenants", bodies::tenant("globex")));
    (a, t, g)
}

#[tokio::test]
async fn plans_crud_and_a_key_bound_to_a_plan_moves_to_another() {
    let (a, t, g) = acme_and_globex();
    // Create, with the model's defaults filled in.
    let created = a.root(
        "POST",
        "/api/v1/plans",
        Some(json!({
            "tenant_id": t, "name": "pro", "time_zone": "Europe/Berlin",
            "rate_limits": [{"name": "pro-burst", "algorithm": {"type": "token_bucket", "rate": 50, "burst": 100}, "subject": {"by": "api_key"}}],
            "quotas": [
                {"name": "monthly", "limit": 100000, "period": "month", "overage": "allow"},
                {"name": "search-daily", "limit": 500, "period": "day", "group": "search", "mode": "shadow"},
            ],
        })),
    );
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert!(created.version.is_some());
    let pro = created.body;
    let pro_id = id(&pro);
    assert!(uuid::Uuid::parse_str(&pro_id).is_ok());
    assert_eq!(pro["time_zone"], "Europe/Berlin");
    assert_eq!(pro["quotas"][0]["mode"], "enforce");
    assert_eq!(pro["quotas"][1]["overage"], "block");
    assert_eq!(pro["rate_limits"][0]["mode"], "enforce");
    assert!(pro["created_at"].is_string());
    let free = a.create("/api/v1/plans", json!({"tenant_id": t, "name": "free"}));
    assert_eq!(free["time_zone"], "UTC", "the default zone");
    let free_id = id(&free);
    a.create("/api/v1/plans", plan(&g, "pro"));
    // The same name twice in a tenant is a conflict; in another tenant it is not.
    let twin = a.root("POST", "/api/v1/plans", Some(plan(&t, "pro")));
    assert_eq!(
        (twin.status, twin.fields()),
        (409, vec!["name".to_string()])
    );

    // Read, list per tenant, patch (merge), put (replace).
    let got = a.root("GET", &format!("/api/v1/plans/{pro_id}"), None);
    assert_eq!(got.body["quotas"], pro["quotas"]);
    let page = a.root("GET", &format!("/api/v1/plans?tenant_id={t}"), None);
    assert_eq!(page.body["items"].as_array().unwrap().len(), 2);
    let p = a.root(
        "PATCH",
        &format!("/api/v1/plans/{free_id}"),
        Some(json!({"quotas": [{"name": "daily", "limit": 100, "period": "day"}]})),
    );
    assert_eq!(p.status, 200, "{:?}", p.body);
    assert_eq!(p.body["name"], "free");
    assert_eq!(p.body["quotas"][0]["name"], "daily");
    let p = a.root(
        "PUT",
        &format!("/api/v1/plans/{free_id}"),
        Some(json!({"name": "starter", "time_zone": "Asia/Kolkata"})),
    );
    assert_eq!(p.status, 200, "{:?}", p.body);
    assert_eq!(p.body["quotas"], json!([]));
    assert_eq!(p.body["tenant_id"], t.as_str());

    // A key created on a plan, then moved to another one with PATCH.
    let key = a.create(
        "/api/v1/api-keys",
        json!({"tenant_id": t, "name": "ci", "plan_id": pro_id}),
    );
    assert_eq!(key["plan_id"], pro_id.as_str());
    let kid = id(&key);
    let before = a.version();
    let moved = a.root(
        "PATCH",
        &format!("/api/v1/api-keys/{kid}"),
        Some(json!({"plan_id": free_id})),
    );
    assert_eq!(moved.status, 200, "{:?}", moved.body);
    assert_eq!(moved.body["plan_id"], free_id.as_str());
    assert_eq!(moved.version, Some(before + 1), "a configuration write");
    // What the proxies read has the plans and the binding.
    let c = a.db.client().await;
    let v: Value = c
        .query_one("SELECT vantage_config()", &[])
        .await
        .unwrap()
        .get(0);
    let cfg: vantage_model::Config = serde_json::from_value(v["config"].clone()).unwrap();
    assert_eq!(cfg.plans.len(), 3);
    assert_eq!(cfg.api_keys[0].plan_id.as_deref(), Some(free_id.as_str()));
    // Off any plan (merge patch null), and the plan is deletable.
    let off = a.root(
        "PATCH",
        &format!("/api/v1/api-keys/{kid}"),
        Some(json!({"plan_id": null})),
    );
    assert_eq!(off.status, 200, "{:?}", off.body);
    assert!(off.body.get("plan_id").is_none());
    let d = a.root("DELETE", &format!("/api/v1/plans/{free_id}"), None);
    assert_eq!(d.status, 204, "{:?}", d.body);
    assert_eq!(
        a.root("GET", &format!("/api/v1/plans/{free_id}"), None)
            .status,
        404
    );

    // A tenant_admin sees and creates only its own tenant's plans.
    let tok = a.token_for("acme");
    let mine = a.call(&tok, "GET", "/api/v1/plans", None);
    assert_eq!(mine.body["items"].as_array().unwrap().len(), 1);
    let theirs = a.root("GET", &format!("/api/v1/plans?tenant_id={g}"), None);
    let their_plan = theirs.body["items"][0]["id"].as_str().unwrap().to_string();
    let r = a.call(&tok, "GET", &format!("/api/v1/plans/{their_plan}"), None);
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = a.call(&tok, "DELETE", &format!("/api/v1/plans/{their_plan}"), None);
    assert_eq!(r.status, 404);
    let own = a.call(
        &tok,
        "POST",
        "/api/v1/plans",
        Some(json!({"name": "team", "quotas": []})),
    );
    assert_eq!(own.status, 201, "{:?}", own.body);
    assert_eq!(own.body["tenant_id"], t.as_str());
}

#[tokio::test]
async fn a_plan_in_use_by_a_key_or_its_tenant_cannot_be_deleted() {
    let (a, t, _) = acme_and_globex();
    let pro = id(&a.create("/api/v1/plans", plan(&t, "pro")));
    let ent = id(&a.create("/api/v1/plans", plan(&t, "enterprise")));
    let kid = id(&a.create(
        "/api/v1/api-keys",
        json!({"tenant_id": t, "name": "ci", "plan_id": pro}),
    ));
    let before = a.version();
    let d = a.root("DELETE", &format!("/api/v1/plans/{pro}"), None);
    assert_eq!((d.status, d.code()), (409, "conflict"), "{:?}", d.body);
    assert!(
        d.fields().iter().any(|f| f.ends_with(".plan_id")),
        "{:?}",
        d.body
    );
    assert_eq!(a.version(), before, "a refused delete bumps nothing");
    // The tenant's own plan is in use too.
    let p = a.root(
        "PATCH",
        &format!("/api/v1/tenants/{t}"),
        Some(json!({"plan_id": ent})),
    );
    assert_eq!(p.status, 200, "{:?}", p.body);
    assert_eq!(p.body["plan_id"], ent.as_str());
    let d = a.root("DELETE", &format!("/api/v1/plans/{ent}"), None);
    assert_eq!(d.status, 409, "{:?}", d.body);
    assert_eq!(d.fields(), ["tenants[0].plan_id"]);
    // A tenant with plans is deleted only with cascade, plans and bindings with it.
    let d = a.root("DELETE", &format!("/api/v1/tenants/{t}"), None);
    assert_eq!(d.status, 409);
    assert!(
        d.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 plans"),
        "{:?}",
        d.body
    );
    let d = a.root("DELETE", &format!("/api/v1/tenants/{t}?cascade=true"), None);
    assert_eq!(d.status, 204, "{:?}", d.body);
    for path in [
        format!("/api/v1/plans/{pro}"),
        format!("/api/v1/api-keys/{kid}"),
    ] {
        assert_eq!(a.root("GET", &path, None).status, 404, "{path}");
    }
}

#[test]
fn plan_bindings_and_quotas_are_refused_with_their_field_paths() {
    let (a, t, g) = acme_and_globex();
    let pro = id(&a.create("/api/v1/plans", plan(&t, "pro")));
    let theirs = id(&a.create("/api/v1/plans", plan(&g, "pro")));
    // A key's plan must be a plan of the key's tenant (and an id at all).
    for bad in [
        uuid::Uuid::new_v4().to_string(),
        "gold".to_string(),
        theirs.clone(),
    ] {
        let r = a.root(
            "POST",
            "/api/v1/api-keys",
            Some(json!({"tenant_id": t, "name": "k", "plan_id": bad})),
        );
        assert_eq!(
            (r.status, r.code(), r.fields()),
            (422, "validation_failed", vec!["plan_id".to_string()]),
            "{bad}: {:?}",
            r.body
        );
    }
    let kid = id(&a.create(
        "/api/v1/api-keys",
        json!({"tenant_id": t, "name": "k", "plan_id": pro}),
    ));
    let r = a.root(
        "PATCH",
        &format!("/api/v1/api-keys/{kid}"),
        Some(json!({"plan_id": theirs})),
    );
    assert_eq!((r.status, r.fields()), (422, vec!["plan_id".to_string()]));
    let r = a.root(
        "PATCH",
        &format!("/api/v1/tenants/{t}"),
        Some(json!({"plan_id": theirs})),
    );
    assert_eq!((r.status, r.fields()), (422, vec!["plan_id".to_string()]));
    // A plan's time zone, its quotas' periods and limits.
    let cases = [
        (
            json!({"tenant_id": t, "name": "tz", "time_zone": "Mars/Olympus"}),
            "time_zone",
        ),
        (
            json!({"tenant_id": t, "name": "np", "quotas": [{"name": "q", "limit": 10}]}),
            "quotas[0].period",
        ),
        (
            json!({"tenant_id": t, "name": "neg", "quotas": [{"name": "q", "limit": -5, "period": "day"}]}),
            "quotas[0].limit",
        ),
        (
            json!({"tenant_id": t, "name": "zero", "quotas": [{"name": "ok", "limit": 1, "period": "day"}, {"name": "q", "limit": 0, "period": "hour"}]}),
            "quotas[1].limit",
        ),
    ];
    for (body, field) in cases {
        let r = a.root("POST", "/api/v1/plans", Some(body.clone()));
        assert_eq!(
            (r.status, r.fields()),
            (422, vec![field.to_string()]),
            "{body}: {:?}",
            r.body
        );
    }
    let r = a.root(
        "POST",
        "/api/v1/plans",
        Some(json!({"tenant_id": t, "name": "p", "quotas": [{"name": "q", "limit": 1, "period": "week"}]})),
    );
    assert_eq!(
        r.status, 400,
        "an unknown period is not a period: {:?}",
        r.body
    );
    // A route's cost.
    let o = id(&a.create("/api/v1/origins", bodies::origin(&t, 9001)));
    let mut route = bodies::route(&t, &o, "/search");
    route["quota"] = json!({"cost": -1, "group": "search"});
    let r = a.root("POST", "/api/v1/routes", Some(route.clone()));
    assert_eq!(
        (r.status, r.fields()),
        (422, vec!["quota.cost".to_string()]),
        "{:?}",
        r.body
    );
    route["quota"]["cost"] = json!(5);
    let created = a.create("/api/v1/routes", route);
    assert_eq!(
        created["quota"],
        json!({"cost": 5, "group": "search", "exempt": false})
    );
    // A JWT issuer's plan claim.
    let r = a.root(
        "POST",
        "/api/v1/jwt-issuers",
        Some(json!({"tenant_id": t, "issuer": "https://auth.acme.test", "jwks_url": "https://auth.acme.test/jwks", "plan_claim": "has space"})),
    );
    assert_eq!(
        (r.status, r.fields()),
        (422, vec!["plan_claim".to_string()])
    );
    let j = a.create(
        "/api/v1/jwt-issuers",
        json!({"tenant_id": t, "issuer": "https://auth.acme.test", "jwks_url": "https://auth.acme.test/jwks", "plan_claim": "plan"}),
    );
    assert_eq!(j["plan_claim"], "plan");
}

/// RFC 3339 of Unix seconds, as the admin writes it.
fn rfc3339(s: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s as u64)).to_string()
}

#[tokio::test]
async fn a_keys_quota_shows_used_remaining_and_reset_from_the_redis_counters() {
    let (a, t, g) = acme_and_globex();
    // A zone whose hour (and so day and month: they begin at a full local hour) neither
    // began nor ends within two minutes: the test sees one period of each.
    let zone = steady_zone(QuotaPeriod::Hour, 120);
    let plan_id = id(&a.create(
        "/api/v1/plans",
        json!({
            "tenant_id": t, "name": "pro", "time_zone": zone,
            "quotas": [
                {"name": "hourly", "limit": 100, "period": "hour"},
                {"name": "daily", "limit": 1000, "period": "day", "overage": "allow"},
                {"name": "monthly", "limit": 5, "period": "month", "group": "search", "mode": "shadow"},
            ],
        }),
    ));
    let kid = id(&a.create(
        "/api/v1/api-keys",
        json!({"tenant_id": t, "name": "ci", "plan_id": plan_id}),
    ));
    // The proxies' counters: 30 units this hour, 8 this month (3 over), none today.
    let calendar = Calendar::new(zone).unwrap();
    let before = unix_now();
    let window = |p| calendar.window(p, before);
    let subject = format!("key:{kid}");
    let key = |q: &str, p| quota_counter_key(&a.prefix, &t, &plan_id, q, &subject, window(p).start);
    let redis = Builder::from_config(Config::from_url(REDIS).unwrap())
        .build()
        .unwrap();
    redis.init().await.expect("Redis (run ./scripts/test.sh)");
    for (q, p, n) in [
        ("hourly", QuotaPeriod::Hour, 30),
        ("monthly", QuotaPeriod::Month, 8),
    ] {
        redis
            .set::<(), _, _>(key(q, p), n, Some(Expiration::EX(3600)), None, false)
            .await
            .unwrap();
    }
    // Last month's counter is not this month's.
    let last_month = quota_counter_key(
        &a.prefix,
        &t,
        &plan_id,
        "monthly",
        &subject,
        calendar
            .window(QuotaPeriod::Month, window(QuotaPeriod::Month).start - 1)
            .start,
    );
    redis
        .set::<(), _, _>(last_month, 99, Some(Expiration::EX(3600)), None, false)
        .await
        .unwrap();

    let r = a.root("GET", &format!("/api/v1/api-keys/{kid}/quota"), None);
    let after = unix_now();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body["plan"],
        json!({"id": plan_id, "name": "pro", "time_zone": zone})
    );
    assert_eq!(r.body["key_id"], kid.as_str());
    let quotas = r.body["quotas"].as_array().unwrap();
    let names: Vec<&str> = quotas.iter().map(|q| q["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["hourly", "daily", "monthly"]);
    for (q, period, used, remaining, over) in [
        (&quotas[0], QuotaPeriod::Hour, 30, 70, 0),
        (&quotas[1], QuotaPeriod::Day, 0, 1000, 0),
        (&quotas[2], QuotaPeriod::Month, 8, 0, 3),
    ] {
        let w = window(period);
        assert_eq!(calendar.window(period, after), w, "one period");
        assert_eq!(
            (&q["used"], &q["remaining"], &q["over"]),
            (&json!(used), &json!(remaining), &json!(over)),
            "{q}"
        );
        assert_eq!(q["period_start"], rfc3339(w.start), "{q}");
        assert_eq!(q["reset_at"], rfc3339(w.end), "{q}");
        let reset_in = q["reset_in_s"].as_i64().unwrap();
        assert!(
            (w.end - after..=w.end - before).contains(&reset_in),
            "{reset_in} for {q}"
        );
    }
    assert_eq!(quotas[1]["overage"], "allow");
    assert_eq!(
        (
            &quotas[2]["group"],
            &quotas[2]["mode"],
            &quotas[2]["period"]
        ),
        (&json!("search"), &json!("shadow"), &json!("month"))
    );

    // Its tenant's admin sees it; another tenant's admin is told it does not exist.
    let own = a.call(
        &a.token_for("acme"),
        "GET",
        &format!("/api/v1/api-keys/{kid}/quota"),
        None,
    );
    assert_eq!(own.status, 200, "{:?}", own.body);
    assert_eq!(own.body["quotas"], r.body["quotas"]);
    let other = a.call(
        &a.token_for("globex"),
        "GET",
        &format!("/api/v1/api-keys/{kid}/quota"),
        None,
    );
    assert_eq!(
        (other.status, other.code()),
        (404, "not_found"),
        "{:?}",
        other.body
    );
    for unknown in [uuid::Uuid::new_v4().to_string(), "nope".to_string()] {
        let r = a.root("GET", &format!("/api/v1/api-keys/{unknown}/quota"), None);
        assert_eq!(r.status, 404);
    }
    // A key on no plan has no quotas.
    let plain = id(&a.create("/api/v1/api-keys", json!({"tenant_id": g, "name": "g"})));
    let r = a.root("GET", &format!("/api/v1/api-keys/{plain}/quota"), None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["plan"], Value::Null);
    assert_eq!(r.body["quotas"], json!([]));
}

/// Tenant acme with plan pro and a key on it: the key's id.
fn key_on_a_plan(a: &Admin) -> String {
    let t = id(&a.create("/api/v1/tenants", bodies::tenant("acme")));
    let pro = id(&a.create("/api/v1/plans", plan(&t, "pro")));
    id(&a.create(
        "/api/v1/api-keys",
        json!({"tenant_id": t, "name": "ci", "plan_id": pro}),
    ))
}

#[test]
fn quota_status_is_unavailable_without_redis() {
    let a = AdminSetup::fresh().without_redis().start();
    let kid = key_on_a_plan(&a);
    let r = a.root("GET", &format!("/api/v1/api-keys/{kid}/quota"), None);
    assert_eq!((r.status, r.code()), (503, "unavailable"), "{:?}", r.body);
    assert!(r.body["error"]["request_id"].is_string());
    // Still 404 for what does not exist.
    let r = a.root(
        "GET",
        &format!("/api/v1/api-keys/{}/quota", uuid::Uuid::new_v4()),
        None,
    );
    assert_eq!(r.status, 404);
}

#[test]
fn quota_status_is_unavailable_while_redis_is_down_and_back_after() {
    let mut redis = Redis::start();
    let a = AdminSetup::fresh().redis(&redis.url()).start();
    let kid = key_on_a_plan(&a);
    let path = format!("/api/v1/api-keys/{kid}/quota");
    assert_eq!(a.root("GET", &path, None).status, 200);
    redis.stop();
    let r = a.root("GET", &path, None);
    assert_eq!((r.status, r.code()), (503, "unavailable"), "{:?}", r.body);
    redis.restart();
    // The connection comes back by itself.
    vantage_testkit::wait_for("quota status once Redis is back", 30, || {
        (a.root("GET", &path, None).status == 200).then_some(())
    });
}

#[tokio::test]
async fn a_seed_with_plans_binds_tenants_and_keys_to_them() {
    let a = Admin::fresh();
    // A tenant on its own plan (each needs the other), and a key on it.
    let yaml = r#"
tenants:
  - {id: initech, name: Initech, subdomain: initech, plan_id: initech-team}
plans:
  - id: initech-team
    tenant_id: initech
    name: team
    time_zone: America/Chicago
    quotas: [{name: monthly, limit: 1000, period: month}]
api_keys:
  - id: ci
    tenant_id: initech
    name: CI
    key_hash: 1111111111111111111111111111111111111111111111111111111111111111
    plan_id: initech-team
"#;
    let file = temp_dir("seed").join("plans.yaml");
    std::fs::write(&file, yaml).unwrap();
    let file = file.to_str().unwrap();
    for _ in 0..2 {
        admin_cli(&a.db, &["seed", "--file", file]);
    }
    let c = a.db.client().await;
    let v: Value = c
        .query_one("SELECT vantage_config()", &[])
        .await
        .unwrap()
        .get(0);
    let cfg: vantage_model::Config = serde_json::from_value(v["config"].clone()).unwrap();
    assert_eq!(
        (cfg.tenants.len(), cfg.plans.len(), cfg.api_keys.len()),
        (1, 1, 1)
    );
    let plan = &cfg.plans[0];
    assert_eq!(plan.tenant_id, cfg.tenants[0].id);
    assert_eq!(plan.time_zone, "America/Chicago");
    assert_eq!(cfg.tenants[0].plan_id.as_deref(), Some(plan.id.as_str()));
    assert_eq!(cfg.api_keys[0].plan_id.as_deref(), Some(plan.id.as_str()));
    assert!(uuid::Uuid::parse_str(&plan.id).is_ok());
}
