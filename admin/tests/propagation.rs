//! Config version, signed Redis notices, the `vantage_config()` contract, seed, OpenAPI.

use serde_json::json;
use vantage_model::notify::{verify, Notice};
use vantage_model::Config;
use vantage_testkit::{admin_cli, bodies, id, Admin, ApiResponse, Subscriber, SECRET};

#[tokio::test]
async fn every_write_bumps_the_version_and_publishes_a_signed_notice() {
    let a = Admin::fresh();
    let mut sub = Subscriber::new(&a.channel()).await;
    let mut last = a.version();

    let mut expect = |r: &ApiResponse, status: u16| {
        assert_eq!(r.status, status, "{:?}", r.body);
        let v = r.version.expect("X-Config-Version on every write");
        assert!(v > last, "version {v} after {last}");
        last = v;
        v
    };
    let t = a.root("POST", "/api/v1/tenants", Some(bodies::tenant("acme")));
    let v1 = expect(&t, 201);
    let tid = id(&t.body);
    let msg = sub.next().await;
    assert_eq!(
        verify(SECRET, &msg).unwrap(),
        Notice {
            version: v1,
            tenant_id: Some(tid.clone())
        }
    );
    assert!(verify("another-secret-of-16+", &msg).is_err());

    let o = a.root("POST", "/api/v1/origins", Some(bodies::origin(&tid, 9001)));
    let mut versions = vec![expect(&o, 201)];
    let oid = id(&o.body);
    let r = a.root(
        "POST",
        "/api/v1/routes",
        Some(bodies::route(&tid, &oid, "/a/*")),
    );
    versions.push(expect(&r, 201));
    let rid = id(&r.body);
    let k = a.root(
        "POST",
        "/api/v1/api-keys",
        Some(json!({"tenant_id": tid, "name": "k"})),
    );
    versions.push(expect(&k, 201));
    let j = a.root("POST", "/api/v1/jwt-issuers", Some(json!({"tenant_id": tid, "issuer": "https://i.test", "jwks_url": "https://i.test/jwks"})));
    versions.push(expect(&j, 201));
    // Users are not part of the proxies' configuration: no version, no notice (the
    // notices below are exactly those of the other writes).
    let u = a.root(
        "POST",
        "/api/v1/users",
        Some(json!({"tenant_id": tid, "email": "a@b.test", "role": "member"})),
    );
    assert_eq!(u.status, 201, "{:?}", u.body);
    assert!(u.version.is_none(), "a user write has no config version");
    let p = a.root(
        "PATCH",
        &format!("/api/v1/routes/{rid}"),
        Some(json!({"priority": 3})),
    );
    versions.push(expect(&p, 200));
    let d = a.root(
        "POST",
        &format!("/api/v1/api-keys/{}/revoke", id(&k.body)),
        None,
    );
    versions.push(expect(&d, 200));
    for v in versions {
        let n = verify(SECRET, &sub.next().await).unwrap();
        assert_eq!(
            n,
            Notice {
                version: v,
                tenant_id: Some(tid.clone())
            }
        );
    }
    // The database agrees, and a refused write changes nothing.
    assert_eq!(a.version(), last);
    let bad = a.root(
        "POST",
        "/api/v1/routes",
        Some(bodies::route(&tid, &oid, "bad")),
    );
    assert_eq!(bad.status, 422);
    assert!(bad.version.is_none());
    assert_eq!(a.version(), last);

    // A write made by hand in SQL bumps the version too (triggers), once per transaction.
    let c = a.db.client().await;
    c.batch_execute("BEGIN; UPDATE tenants SET name = 'x'; UPDATE tenants SET name = 'y'; COMMIT;")
        .await
        .unwrap();
    assert_eq!(a.version(), last + 1);
}

#[tokio::test]
async fn user_edits_leave_the_config_version_alone() {
    let a = Admin::fresh();
    let mut sub = Subscriber::new(&a.channel()).await;
    let t = a.root("POST", "/api/v1/tenants", Some(bodies::tenant("acme")));
    assert_eq!(t.status, 201, "{:?}", t.body);
    let tid = id(&t.body);
    let v0 = a.version();
    assert_eq!(t.version, Some(v0));
    assert_eq!(verify(SECRET, &sub.next().await).unwrap().version, v0);

    // Create, change and delete a user: the version stays, nothing is announced.
    let u = a.root(
        "POST",
        "/api/v1/users",
        Some(json!({"tenant_id": tid, "email": "ann@acme.test", "role": "admin"})),
    );
    assert_eq!(u.status, 201, "{:?}", u.body);
    let uid = id(&u.body);
    let p = a.root(
        "PATCH",
        &format!("/api/v1/users/{uid}"),
        Some(json!({"role": "viewer"})),
    );
    assert_eq!((p.status, &p.body["role"]), (200, &json!("viewer")));
    let d = a.root("DELETE", &format!("/api/v1/users/{uid}"), None);
    assert_eq!(d.status, 204);
    for r in [&u, &p, &d] {
        assert!(r.version.is_none(), "{:?}", r.body);
    }
    assert_eq!(a.version(), v0, "user writes bumped the config version");

    // A resource write still bumps it, and its notice is the next one on the channel.
    let o = a.root("POST", "/api/v1/origins", Some(bodies::origin(&tid, 9001)));
    assert_eq!(o.status, 201, "{:?}", o.body);
    let v1 = o.version.expect("X-Config-Version");
    assert_eq!(v1, v0 + 1);
    assert_eq!(a.version(), v1);
    assert_eq!(
        verify(SECRET, &sub.next().await).unwrap(),
        Notice {
            version: v1,
            tenant_id: Some(tid)
        }
    );
}

#[tokio::test]
async fn vantage_config_round_trips_into_the_model_and_validates() {
    let a = Admin::fresh();
    let t = id(&a.create("/api/v1/tenants", json!({
        "name": "Acme", "subdomain": "acme", "custom_hosts": ["api.acme.test"], "clerk_org_id": "org_1",
        "access": {"cors": {"allowed_origins": ["https://app.acme.test"]}, "ip_rules": {"deny": ["203.0.113.7/32"]}},
        "rate_limits": [{"name": "ceiling", "algorithm": {"type": "sliding_window", "limit": 100, "period_s": 60}, "subject": {"by": "tenant"}, "backend": "redis"}],
    })));
    let g = id(&a.create("/api/v1/tenants", bodies::tenant("globex")));
    let o = id(&a.create("/api/v1/origins", json!({
        "tenant_id": t, "lb": "consistent_hash", "hash_key": {"source": "header", "name": "X-User"},
        "targets": [{"url": "https://api.acme.test"}], "tls": {"verify": true, "sni": "api.acme.test"},
        "health_check": {"path": "/h"}, "circuit_breaker": {"enabled": false}, "protocol": "http2", "preserve_host": true,
    })));
    let go = id(&a.create("/api/v1/origins", bodies::origin(&g, 9003)));
    a.create("/api/v1/jwt-issuers", json!({"tenant_id": t, "issuer": "https://clerk.acme.test", "jwks_url": "https://clerk.acme.test/jwks", "cookie": "__session", "audiences": ["acme"]}));
    a.create("/api/v1/routes", json!({
        "tenant_id": t, "origin_id": o, "path_pattern": "/users/:id", "methods": ["GET"],
        "headers": [{"name": "X-Version", "value": "2"}, {"name": "X-Any"}],
        "rewrite": {"pattern": "^/users/(.*)$", "replacement": "/v2/$1"},
        "response_headers": {"remove": ["Server"]}, "compression": {"enabled": true, "level": 4},
        "auth": {"mode": "jwt_or_apikey", "scopes": ["users:read"], "strip_authorization": true},
        "access": {"security_headers": {"enabled": true}},
        "cache": {"enabled": true, "storage": "memory+redis", "key": "path", "statuses": [200]},
    }));
    a.create("/api/v1/routes", bodies::route(&g, &go, "/*"));
    a.create("/api/v1/api-keys", json!({"tenant_id": t, "name": "k", "scopes": ["users:read"], "expires_at": "2031-05-06T07:08:09Z"}));

    let c = a.db.client().await;
    let v: serde_json::Value = c
        .query_one("SELECT vantage_config()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v["version"].as_i64().unwrap(), a.version());
    let cfg: Config =
        serde_json::from_value(v["config"].clone()).expect("the model parses vantage_config()");
    assert_eq!(
        (
            cfg.tenants.len(),
            cfg.origins.len(),
            cfg.routes.len(),
            cfg.api_keys.len(),
            cfg.jwt_issuers.len()
        ),
        (2, 2, 2, 1, 1)
    );
    // Redis-backed policies need the proxy's server.redis; with it, the config validates.
    let with_redis = vantage_admin::AdminConfig::default()
        .resource_context()
        .unwrap();
    assert!(with_redis.has_redis);
    vantage_model::validate_resources(&cfg, &with_redis).expect("the stored config is valid");
    let key = &cfg.api_keys[0];
    assert_eq!(key.expires_at.as_deref(), Some("2031-05-06T07:08:09Z"));
    assert_eq!(key.key_hash.len(), 64);
    assert_eq!(
        cfg.tenants
            .iter()
            .find(|x| x.id == t)
            .unwrap()
            .clerk_org_id
            .as_deref(),
        Some("org_1")
    );
    let route = cfg.routes.iter().find(|r| r.tenant_id == t).unwrap();
    assert_eq!(route.headers[1].value, None);
    assert_eq!(route.auth.mode, vantage_model::AuthMode::JwtOrApikey);
    // The per-tenant variant has only that tenant's part.
    let gv: serde_json::Value = c
        .query_one("SELECT vantage_config($1::text::uuid)", &[&g])
        .await
        .unwrap()
        .get(0);
    let gcfg: Config = serde_json::from_value(gv["config"].clone()).unwrap();
    assert_eq!(
        (gcfg.tenants.len(), gcfg.origins.len(), gcfg.routes.len()),
        (1, 1, 1)
    );
    gcfg.validate().unwrap();
    // The API's own /config answers the same.
    let api = a.root("GET", "/api/v1/config", None);
    assert_eq!(api.body["config"], v["config"]);
}

#[tokio::test]
async fn seed_loads_the_demo_idempotently() {
    let a = Admin::fresh();
    let out = admin_cli(&a.db, &["seed"]);
    assert!(out.contains("subdomain acme"), "{out}");
    admin_cli(&a.db, &["seed"]);
    let c = a.db.client().await;
    let v: serde_json::Value = c
        .query_one("SELECT vantage_config()", &[])
        .await
        .unwrap()
        .get(0);
    let cfg: Config = serde_json::from_value(v["config"].clone()).unwrap();
    cfg.validate().unwrap();
    let demo = Config::from_yaml(vantage_admin::seed::DEMO_YAML).unwrap();
    assert_eq!(cfg.tenants.len(), demo.tenants.len());
    assert_eq!(cfg.routes.len(), demo.routes.len());
    let acme = cfg.tenants.iter().find(|t| t.subdomain == "acme").unwrap();
    let key = cfg
        .api_keys
        .iter()
        .find(|k| {
            k.key_hash
                == vantage_admin::auth::sha256_hex("vk_live_demo_acme_key_do_not_use_in_prod")
        })
        .expect("the demo key");
    assert_eq!(key.tenant_id, acme.id);
    // The seeded tenant can be managed through the API, including by its tenant_admin.
    let tok = a.token_for("acme");
    let l = a.call(&tok, "GET", "/api/v1/routes", None);
    assert_eq!(
        l.body["items"].as_array().unwrap().len(),
        demo.routes.iter().filter(|r| r.tenant_id == "acme").count()
    );
    // migrate is idempotent on a live database.
    admin_cli(&a.db, &["migrate"]);
}

#[test]
fn openapi_documents_exactly_served_endpoints() {
    let a = Admin::fresh();
    let doc = a.root("GET", "/openapi.json", None).body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let mut ops = 0;
    for (path, item) in paths {
        let concrete = path.replace("{id}", &uuid::Uuid::new_v4().to_string());
        for (method, op) in item.as_object().unwrap() {
            ops += 1;
            assert!(op["responses"].is_object(), "{method} {path}");
            let r = a.root(&method.to_uppercase(), &concrete, Some(json!({})));
            assert_ne!(
                r.status, 405,
                "{method} {path} is documented but not served"
            );
            assert_ne!(
                r.code(),
                "no_such_endpoint",
                "{method} {path} is documented but not served"
            );
        }
    }
    assert!(ops >= 30, "{ops} operations");
    // On every documented path, each method the document does not list is not served.
    for (path, item) in paths {
        let concrete = path.replace("{id}", &uuid::Uuid::new_v4().to_string());
        for m in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if item.get(m.to_lowercase()).is_some() {
                continue;
            }
            let r = a.root(m, &concrete, Some(json!({})));
            assert_eq!(
                (r.status, r.code()),
                (405, "method_not_allowed"),
                "{m} {path} is served but not documented"
            );
        }
    }
    // And what is not documented is not served.
    for (m, p) in [
        ("DELETE", "/api/v1/tenants"),
        ("PUT", "/api/v1/users/x"),
        ("GET", "/api/v1/nothing"),
        ("POST", "/api/v1/api-keys/x/unrevoke"),
    ] {
        let r = a.root(m, p, None);
        assert!(
            r.status == 405 || r.code() == "no_such_endpoint",
            "{m} {p}: {}",
            r.status
        );
        assert!(paths.get(p).and_then(|i| i.get(m.to_lowercase())).is_none());
    }
}

#[tokio::test]
async fn metrics_report_the_version_and_published_notices() {
    let a = Admin::fresh();
    let _sub = Subscriber::new(&a.channel()).await;
    let t = a.root("POST", "/api/v1/tenants", Some(bodies::tenant("metrics")));
    assert_eq!(t.status, 201, "{:?}", t.body);
    let v = t.version.unwrap();
    let m = a.root("GET", "/metrics", None);
    assert_eq!(m.status, 200);
    let text = m.body.as_str().expect("text exposition").to_string();
    assert!(
        text.contains(&format!("vantage_admin_config_version {v}")),
        "{text}"
    );
    assert!(text.contains("vantage_admin_database_up 1"), "{text}");
    assert!(
        text.contains("vantage_admin_notices_total{result=\"published\"}"),
        "{text}"
    );
    let anon = reqwest::get(a.url("/metrics")).await.unwrap();
    assert_eq!(anon.status().as_u16(), 401, "metrics need a token");
}
