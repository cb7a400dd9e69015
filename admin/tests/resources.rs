//! CRUD and validation of every resource through the real `vantage-admin` binary.

use serde_json::json;
use vantage_testkit::{bodies, id, Admin};

/// Tenants acme (checked as created) and b1..b3: acme's id and the others' ids.
fn four_tenants(a: &Admin) -> (String, Vec<String>) {
    let t1 = a.create("/api/v1/tenants", bodies::tenant("acme"));
    assert_eq!(t1["subdomain"], "acme");
    assert!(uuid::Uuid::parse_str(t1["id"].as_str().unwrap()).is_ok());
    let mut others = Vec::new();
    for s in ["b1", "b2", "b3"] {
        others.push(id(&a.create("/api/v1/tenants", bodies::tenant(s))));
    }
    (id(&t1), others)
}

#[test]
fn tenants_paginate_and_refuse_bad_page_parameters() {
    let a = Admin::fresh();
    four_tenants(&a);
    // Pagination: 4 tenants in pages of 3.
    let p1 = a.root("GET", "/api/v1/tenants?limit=3", None);
    assert_eq!(p1.status, 200);
    assert_eq!(p1.body["items"].as_array().unwrap().len(), 3);
    let cursor = p1.body["next_cursor"].as_str().unwrap().to_string();
    let p2 = a.root(
        "GET",
        &format!("/api/v1/tenants?limit=3&cursor={cursor}"),
        None,
    );
    assert_eq!(p2.body["items"].as_array().unwrap().len(), 1);
    assert!(p2.body["next_cursor"].is_null());
    for bad in ["limit=0", "limit=501", "cursor=nope", "limit=x", "bogus=1"] {
        let r = a.root("GET", &format!("/api/v1/tenants?{bad}"), None);
        assert_eq!((r.status, r.code()), (400, "bad_request"), "{bad}");
    }
}

#[test]
fn duplicate_and_invalid_tenants_are_refused_with_their_fields() {
    let a = Admin::fresh();
    four_tenants(&a);
    // Unique subdomain → 409; invalid → 422 with the field.
    let dup = a.root("POST", "/api/v1/tenants", Some(bodies::tenant("acme")));
    assert_eq!(
        (dup.status, dup.code()),
        (409, "conflict"),
        "{:?}",
        dup.body
    );
    assert_eq!(dup.fields(), ["subdomain"]);
    let bad = a.root(
        "POST",
        "/api/v1/tenants",
        Some(json!({"name": " ", "subdomain": "Not Valid", "custom_hosts": ["UPPER"]})),
    );
    assert_eq!(bad.status, 422, "{:?}", bad.body);
    let mut f = bad.fields();
    f.sort();
    assert_eq!(f, ["custom_hosts[0]", "name", "subdomain"]);
    let with_id = a.root(
        "POST",
        "/api/v1/tenants",
        Some(json!({"id": "x", "name": "X", "subdomain": "x"})),
    );
    assert_eq!(with_id.status, 400);
}

#[test]
fn tenants_get_patch_put_and_unknown_ids() {
    let a = Admin::fresh();
    let (tid, others) = four_tenants(&a);
    // Get, patch (merge), put (replace).
    let got = a.root("GET", &format!("/api/v1/tenants/{tid}"), None);
    assert_eq!(got.body["name"], "Tenant acme");
    let patched = a.root(
        "PATCH",
        &format!("/api/v1/tenants/{tid}"),
        Some(json!({"name": "Acme Inc", "custom_hosts": ["api.acme.test"]})),
    );
    assert_eq!(patched.status, 200, "{:?}", patched.body);
    assert_eq!(patched.body["name"], "Acme Inc");
    assert_eq!(patched.body["subdomain"], "acme");
    let host_clash = a.root(
        "PATCH",
        &format!("/api/v1/tenants/{}", others[0]),
        Some(json!({"custom_hosts": ["api.acme.test"]})),
    );
    assert_eq!(host_clash.status, 409, "{:?}", host_clash.body);
    let put = a.root(
        "PUT",
        &format!("/api/v1/tenants/{tid}"),
        Some(json!({"name": "Acme", "subdomain": "acme2"})),
    );
    assert_eq!(put.status, 200, "{:?}", put.body);
    assert_eq!(put.body["custom_hosts"], json!([]));
    let change_id = a.root(
        "PATCH",
        &format!("/api/v1/tenants/{tid}"),
        Some(json!({"id": uuid::Uuid::new_v4().to_string()})),
    );
    assert_eq!(change_id.status, 400);
    let unknown = uuid::Uuid::new_v4();
    for m in ["GET", "DELETE"] {
        let r = a.root(m, &format!("/api/v1/tenants/{unknown}"), None);
        assert_eq!((r.status, r.code()), (404, "not_found"));
    }
    let r = a.root("GET", "/api/v1/tenants/1%27%20OR%201=1", None);
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn a_tenant_with_resources_is_deleted_only_with_cascade() {
    let a = Admin::fresh();
    let (tid, _) = four_tenants(&a);
    // A tenant with resources is only deleted with cascade=true.
    let o = a.create("/api/v1/origins", bodies::origin(&tid, 9001));
    a.create("/api/v1/routes", bodies::route(&tid, &id(&o), "/x"));
    let r = a.root("DELETE", &format!("/api/v1/tenants/{tid}"), None);
    assert_eq!(r.status, 409, "{:?}", r.body);
    let r = a.root(
        "DELETE",
        &format!("/api/v1/tenants/{tid}?cascade=true"),
        None,
    );
    assert_eq!(r.status, 204);
    assert!(r.version.is_some());
    let r = a.root("GET", &format!("/api/v1/origins/{}", id(&o)), None);
    assert_eq!(r.status, 404);
    let c = a.db.client().await;
    let n: i64 = c
        .query_one("SELECT count(*) FROM routes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

/// Tenants acme and globex, and a weighted origin of acme (checked as created): their ids.
fn acme_globex_and_origin(a: &Admin) -> (String, String, String) {
    let t = id(&a.create("/api/v1/tenants", bodies::tenant("acme")));
    let other = id(&a.create("/api/v1/tenants", bodies::tenant("globex")));
    let o = a.create("/api/v1/origins", json!({
        "tenant_id": t, "lb": "weighted",
        "targets": [{"url": "http://127.0.0.1:9001", "weight": 3}, {"url": "http://127.0.0.1:9002"}],
        "health_check": {"path": "/healthz", "interval_ms": 1000},
        "timeouts": {"connect_ms": 500},
    }));
    assert_eq!(o["targets"][0]["weight"], 3);
    assert_eq!(o["timeouts"]["read_ms"], 30000, "defaults are filled in");
    let oid = id(&o);
    (t, other, oid)
}

/// A route of tenant `t` to origin `oid` with most options set (checked as created): its id.
fn users_route(a: &Admin, t: &str, oid: &str) -> String {
    let r = a.create("/api/v1/routes", json!({
        "tenant_id": t, "origin_id": oid, "path_pattern": "/api/users/*", "methods": ["GET", "POST"],
        "strip_prefix": "/api", "priority": 5,
        "request_headers": {"set": {"X-Gateway": "vantage"}},
        "auth": {"mode": "apikey_required", "scopes": ["users:read"]},
        "rate_limits": [{"name": "per-key", "algorithm": {"type": "token_bucket", "rate": 5, "burst": 10}, "subject": {"by": "api_key"}}],
        "cache": {"enabled": true, "default_ttl_seconds": 60},
    }));
    let rid = id(&r);
    assert_eq!(r["auth"]["mode"], "apikey_required");
    assert_eq!(r["cache"]["methods"], json!(["GET", "HEAD"]));
    rid
}

#[test]
fn origins_fill_defaults_and_refuse_invalid_bodies() {
    let a = Admin::fresh();
    let (t, _, _) = acme_globex_and_origin(&a);
    let bad = a.root(
        "POST",
        "/api/v1/origins",
        Some(json!({
            "tenant_id": t, "lb": "consistent_hash",
            "targets": [{"url": "ftp://x"}, {"url": "http://h:1", "weight": 0}],
        })),
    );
    assert_eq!(bad.status, 422, "{:?}", bad.body);
    let mut f = bad.fields();
    f.sort();
    assert_eq!(f, ["hash_key", "targets[0].url", "targets[1].weight"]);
    let wrong = a.root(
        "POST",
        "/api/v1/origins",
        Some(json!({"tenant_id": t, "targets": [{"url": "http://h:1", "weight": "3"}]})),
    );
    assert_eq!(wrong.status, 400);
    assert!(
        wrong.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("targets[0].weight"),
        "{:?}",
        wrong.body
    );
    let unknown_field = a.root(
        "POST",
        "/api/v1/origins",
        Some(json!({"tenant_id": t, "targets": [], "color": "red"})),
    );
    assert_eq!(unknown_field.status, 400);
    let no_tenant = a.root(
        "POST",
        "/api/v1/origins",
        Some(json!({"targets": [{"url": "http://h:1"}]})),
    );
    assert_eq!(
        (no_tenant.status, no_tenant.fields()),
        (422, vec!["tenant_id".to_string()])
    );
    let ghost = a.root(
        "POST",
        "/api/v1/origins",
        Some(bodies::origin(&uuid::Uuid::new_v4().to_string(), 1)),
    );
    assert_eq!(
        (ghost.status, ghost.fields()),
        (422, vec!["tenant_id".to_string()])
    );
}

#[test]
fn routes_validate_like_the_proxy_and_keep_to_their_tenants_origins() {
    let a = Admin::fresh();
    let (t, other, oid) = acme_globex_and_origin(&a);
    users_route(&a, &t, &oid);
    let bad = a.root("POST", "/api/v1/routes", Some(json!({
        "tenant_id": t, "origin_id": oid, "path_pattern": "no-slash", "methods": ["get"],
        "rewrite": {"pattern": "(", "replacement": "/x"}, "compression": {"enabled": true, "level": 12},
    })));
    assert_eq!(bad.status, 422, "{:?}", bad.body);
    let mut f = bad.fields();
    f.sort();
    assert_eq!(
        f,
        [
            "compression.level",
            "methods[0]",
            "path_pattern",
            "rewrite.pattern"
        ]
    );
    // The same pattern, methods and priority twice is refused like the proxy refuses it.
    let twin = a.root("POST", "/api/v1/routes", Some(json!({"tenant_id": t, "origin_id": oid, "path_pattern": "/api/users/*", "methods": ["POST", "GET"], "priority": 5})));
    assert_eq!(twin.status, 422, "{:?}", twin.body);
    // An origin of another tenant cannot be used.
    let foreign = a.root(
        "POST",
        "/api/v1/routes",
        Some(bodies::route(&other, &oid, "/x")),
    );
    assert_eq!(
        (foreign.status, foreign.fields()),
        (422, vec!["origin_id".to_string()])
    );
    // JWT routes need an issuer of the tenant.
    let jwt = a.root("POST", "/api/v1/routes", Some(json!({"tenant_id": t, "origin_id": oid, "path_pattern": "/jwt", "auth": {"mode": "jwt_required"}})));
    assert_eq!(
        (jwt.status, jwt.fields()),
        (422, vec!["auth.mode".to_string()])
    );
}

#[test]
fn routes_patch_merges_and_put_replaces() {
    let a = Admin::fresh();
    let (t, other, oid) = acme_globex_and_origin(&a);
    let rid = users_route(&a, &t, &oid);
    // Patch and put of a route.
    let p = a.root(
        "PATCH",
        &format!("/api/v1/routes/{rid}"),
        Some(json!({"priority": 7, "strip_prefix": null})),
    );
    assert_eq!(p.status, 200, "{:?}", p.body);
    assert_eq!(p.body["priority"], 7);
    assert!(p.body.get("strip_prefix").is_none());
    assert_eq!(p.body["methods"], json!(["GET", "POST"]));
    let p = a.root(
        "PATCH",
        &format!("/api/v1/routes/{rid}"),
        Some(json!({"path_pattern": "no-slash"})),
    );
    assert_eq!(p.status, 422, "{:?}", p.body);
    let p = a.root(
        "PATCH",
        &format!("/api/v1/routes/{rid}"),
        Some(json!({"tenant_id": other})),
    );
    assert_eq!(p.status, 400);
    let p = a.root(
        "PUT",
        &format!("/api/v1/routes/{rid}"),
        Some(json!({"origin_id": oid, "path_pattern": "/v2/*"})),
    );
    assert_eq!(p.status, 200, "{:?}", p.body);
    assert_eq!(p.body["methods"], json!([]));
    assert_eq!(p.body["tenant_id"], t.as_str());
}

#[test]
fn route_metrics_of_tenants_and_routes_round_trip() {
    let a = Admin::fresh();
    let mut body = bodies::tenant("acme");
    body["route_metrics"] = json!(true);
    let t = a.create("/api/v1/tenants", body);
    assert_eq!(t["route_metrics"], true);
    let tid = id(&t);
    let got = a.root("GET", &format!("/api/v1/tenants/{tid}"), None);
    assert_eq!(got.body["route_metrics"], true, "{:?}", got.body);
    // PUT without it: off, and (like every false flag) left out of the representation.
    let put = a.root(
        "PUT",
        &format!("/api/v1/tenants/{tid}"),
        Some(bodies::tenant("acme")),
    );
    assert_eq!(put.status, 200, "{:?}", put.body);
    assert!(put.body.get("route_metrics").is_none(), "{:?}", put.body);

    let oid = id(&a.create("/api/v1/origins", bodies::origin(&tid, 9001)));
    let mut body = bodies::route(&tid, &oid, "/x");
    body["route_metrics"] = json!(true);
    let r = a.create("/api/v1/routes", body);
    assert_eq!(r["route_metrics"], true);
    let rid = id(&r);
    let got = a.root("GET", &format!("/api/v1/routes/{rid}"), None);
    assert_eq!(got.body["route_metrics"], true, "{:?}", got.body);
    let mut body = bodies::route(&tid, &oid, "/y");
    body["route_metrics"] = json!(true);
    let put = a.root("PUT", &format!("/api/v1/routes/{rid}"), Some(body));
    assert_eq!(put.status, 200, "{:?}", put.body);
    assert_eq!(put.body["route_metrics"], true);
    assert_eq!(put.body["path_pattern"], "/y");
    let off = a.root(
        "PATCH",
        &format!("/api/v1/routes/{rid}"),
        Some(json!({"route_metrics": false})),
    );
    assert_eq!(off.status, 200, "{:?}", off.body);
    let got = a.root("GET", &format!("/api/v1/routes/{rid}"), None);
    assert!(got.body.get("route_metrics").is_none(), "{:?}", got.body);
}

#[test]
fn an_origin_in_use_cannot_be_deleted_and_once_unused_can() {
    let a = Admin::fresh();
    let (t, other, oid) = acme_globex_and_origin(&a);
    let rid = users_route(&a, &t, &oid);
    // An origin in use cannot be deleted; once unused it can.
    let d = a.root("DELETE", &format!("/api/v1/origins/{oid}"), None);
    assert_eq!((d.status, d.code()), (409, "conflict"), "{:?}", d.body);
    let page = a.root("GET", &format!("/api/v1/routes?tenant_id={t}"), None);
    assert_eq!(page.body["items"].as_array().unwrap().len(), 1);
    let page = a.root("GET", &format!("/api/v1/routes?tenant_id={other}"), None);
    assert_eq!(page.body["items"].as_array().unwrap().len(), 0);
    assert_eq!(
        a.root("DELETE", &format!("/api/v1/routes/{rid}"), None)
            .status,
        204
    );
    assert_eq!(
        a.root("DELETE", &format!("/api/v1/origins/{oid}"), None)
            .status,
        204
    );
    assert_eq!(
        a.root("GET", &format!("/api/v1/origins/{oid}"), None)
            .status,
        404
    );
}

#[tokio::test]
async fn jwt_issuers_hide_their_secret_validate_and_guard_their_routes() {
    let a = Admin::fresh();
    let t = id(&a.create("/api/v1/tenants", bodies::tenant("acme")));
    let o = id(&a.create("/api/v1/origins", bodies::origin(&t, 9001)));
    let secret = "0123456789abcdef0123456789abcdef-secret";
    let j = a.create(
        "/api/v1/jwt-issuers",
        json!({
            "tenant_id": t, "issuer": "https://auth.acme.test", "shared_secret": secret,
            "algorithms": ["HS256"], "claim_headers": {"email": "X-User-Email"},
        }),
    );
    assert!(
        j.get("shared_secret").is_none(),
        "the secret is not shown: {j}"
    );
    assert_eq!(j["shared_secret_set"], true);
    let jid = id(&j);
    let bad = a.root("POST", "/api/v1/jwt-issuers", Some(json!({
        "tenant_id": t, "issuer": "", "jwks_url": "ftp://x", "shared_secret": "short", "algorithms": ["none"],
    })));
    assert_eq!(bad.status, 422, "{:?}", bad.body);
    assert!(bad.fields().contains(&"algorithms[0]".to_string()));
    let huge = a.root("POST", "/api/v1/jwt-issuers", Some(json!({
        "tenant_id": t, "issuer": "https://x.test", "jwks_url": "https://x.test/jwks", "leeway_s": u64::MAX,
    })));
    assert_eq!(huge.status, 422, "{:?}", huge.body);

    // A JWT route now validates; the issuer it depends on cannot be deleted.
    a.create("/api/v1/routes", json!({"tenant_id": t, "origin_id": o, "path_pattern": "/me", "auth": {"mode": "jwt_required"}}));
    let d = a.root("DELETE", &format!("/api/v1/jwt-issuers/{jid}"), None);
    assert_eq!(d.status, 409, "{:?}", d.body);
    // Patching keeps the secret unless it is replaced.
    let p = a.root(
        "PATCH",
        &format!("/api/v1/jwt-issuers/{jid}"),
        Some(json!({"leeway_s": 5})),
    );
    assert_eq!(p.status, 200, "{:?}", p.body);
    let c = a.db.client().await;
    let stored: String = c
        .query_one("SELECT shared_secret FROM jwt_issuers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, secret);
}

#[test]
fn users_crud_with_case_insensitive_unique_emails() {
    let a = Admin::fresh();
    let t = id(&a.create("/api/v1/tenants", bodies::tenant("acme")));
    let u = a.create("/api/v1/users", json!({"tenant_id": t, "email": "ann@acme.test", "role": "admin", "clerk_user_id": "user_123"}));
    let uid = id(&u);
    assert_eq!(u["role"], "admin");
    let dup = a.root(
        "POST",
        "/api/v1/users",
        Some(json!({"tenant_id": t, "email": "ANN@acme.test", "role": "member"})),
    );
    assert_eq!(dup.status, 409, "{:?}", dup.body);
    let bad = a.root(
        "POST",
        "/api/v1/users",
        Some(json!({"tenant_id": t, "email": "not-an-email", "role": "god"})),
    );
    assert_eq!(bad.status, 422);
    let mut f = bad.fields();
    f.sort();
    assert_eq!(f, ["email", "role"]);
    let p = a.root(
        "PATCH",
        &format!("/api/v1/users/{uid}"),
        Some(json!({"role": "viewer", "clerk_user_id": null})),
    );
    assert_eq!(p.status, 200, "{:?}", p.body);
    assert_eq!(p.body["role"], "viewer");
    assert!(p.body.get("clerk_user_id").is_none());
    let list = a.root("GET", "/api/v1/users", None);
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        a.root("DELETE", &format!("/api/v1/users/{uid}"), None)
            .status,
        204
    );
    assert_eq!(
        a.root("GET", &format!("/api/v1/users/{uid}"), None).status,
        404
    );
}

#[test]
fn origin_affinity_and_discovery_round_trip_and_are_validated() {
    let a = Admin::fresh();
    let t = id(&a.create("/api/v1/tenants", bodies::tenant("acme")));
    let o = a.create(
        "/api/v1/origins",
        json!({"tenant_id": t, "targets": [], "discovery": {"srv": "_api._tcp.svc.internal"},
               "affinity": {"cookie": "srv", "ttl_seconds": 600}}),
    );
    // Defaults filled in, the rest as written.
    assert_eq!(o["discovery"], json!({"srv": "_api._tcp.svc.internal"}));
    assert_eq!(
        o["affinity"],
        json!({"cookie": "srv", "ttl_seconds": 600, "secure": true, "http_only": true, "same_site": "lax", "path": "/"})
    );
    let got = a.root("GET", &format!("/api/v1/origins/{}", id(&o)), None);
    assert_eq!(
        (got.body["discovery"].clone(), got.body["affinity"].clone()),
        (o["discovery"].clone(), o["affinity"].clone())
    );
    let bad = a.root(
        "POST",
        "/api/v1/origins",
        Some(json!({"tenant_id": t, "targets": [{"url": "http://127.0.0.1:1"}], "discovery": {"name": "a.internal", "srv": "_b._tcp.internal"},
                    "affinity": {"cookie": "a b", "same_site": "none", "secure": false}})),
    );
    assert_eq!(bad.status, 422, "{:?}", bad.body);
    let mut f = bad.fields();
    f.sort();
    assert_eq!(
        f,
        ["affinity.cookie", "affinity.secure", "discovery", "targets"]
    );
}
