//! Credentials, tenant isolation, hostile input, and API key secrecy.

use serde_json::json;
use vantage_testkit::{bodies, id, Admin, AdminSetup};

#[tokio::test]
async fn no_endpoint_works_without_credentials_except_healthz() {
    let a = Admin::fresh();
    let http = reqwest::Client::new();
    let r = http.get(a.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let doc = a.root("GET", "/openapi.json", None).body;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        if path == "/healthz" {
            continue;
        }
        let path = path.replace("{id}", &uuid::Uuid::new_v4().to_string());
        for method in ops.as_object().unwrap().keys() {
            for auth in [
                None,
                Some("Bearer vat_wrong"),
                Some("Basic abc"),
                Some("Bearer "),
            ] {
                let mut req = http.request(method.to_uppercase().parse().unwrap(), a.url(&path));
                if let Some(h) = auth {
                    req = req.header("authorization", h);
                }
                let r = req.json(&json!({})).send().await.unwrap();
                assert_eq!(r.status(), 401, "{method} {path} with {auth:?}");
                assert!(r.headers().contains_key("www-authenticate"));
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(body["error"]["code"], "unauthorized");
                assert!(body["error"]["request_id"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()));
            }
        }
    }
    // A revoked token stops working.
    let c = a.db.client().await;
    c.execute("UPDATE admin_tokens SET revoked_at = now()", &[])
        .await
        .unwrap();
    assert_eq!(a.root("GET", "/api/v1/tenants", None).status, 401);
}

/// Tenants acme (a tenant_admin's, `tok`) and globex with an origin, route, API key and
/// user.
struct TwoTenants {
    a: Admin,
    mine: String,
    theirs: String,
    their_origin: String,
    their_route: String,
    their_key: String,
    their_user: String,
    tok: String,
}

fn two_tenants() -> TwoTenants {
    let a = Admin::fresh();
    let mine = id(&a.create("/api/v1/tenants", bodies::tenant("acme")));
    let theirs = id(&a.create("/api/v1/tenants", bodies::tenant("globex")));
    let their_origin = id(&a.create("/api/v1/origins", bodies::origin(&theirs, 9002)));
    let their_route = id(&a.create(
        "/api/v1/routes",
        bodies::route(&theirs, &their_origin, "/g"),
    ));
    let their_key = id(&a.create(
        "/api/v1/api-keys",
        json!({"tenant_id": theirs, "name": "k"}),
    ));
    let their_user = id(&a.create(
        "/api/v1/users",
        json!({"tenant_id": theirs, "email": "g@globex.test", "role": "admin"}),
    ));
    let tok = a.token_for("acme");
    TwoTenants {
        a,
        mine,
        theirs,
        their_origin,
        their_route,
        their_key,
        their_user,
        tok,
    }
}

/// Globex still has its one origin: nothing of the other tenant changed.
/// A tenant admin's origin created without `tenant_id` lands in its own tenant.
fn creation_lands_in_the_own_tenant(a: &Admin, tok: &str, mine: &str) {
    let o = a.call(
        tok,
        "POST",
        "/api/v1/origins",
        Some(json!({"targets": [{"url": "http://127.0.0.1:9001"}]})),
    );
    assert_eq!(o.status, 201, "{:?}", o.body);
    assert_eq!(o.body["tenant_id"], mine);
}

async fn assert_theirs_unchanged(a: &Admin, theirs: &str) {
    // Nothing of the other tenant changed.
    let c = a.db.client().await;
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM origins WHERE tenant_id::text = $1",
            &[&theirs],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn a_tenant_admins_creations_land_in_its_own_tenant() {
    let TwoTenants {
        a,
        mine,
        theirs,
        their_origin,
        tok,
        ..
    } = two_tenants();
    creation_lands_in_the_own_tenant(&a, &tok, &mine);
    // Naming the other tenant is as if it did not exist.
    let r = a.call(
        &tok,
        "POST",
        "/api/v1/origins",
        Some(bodies::origin(&theirs, 1)),
    );
    assert_eq!((r.status, r.fields()), (422, vec!["tenant_id".to_string()]));
    // Using the other tenant's origin from an own route: unknown origin.
    let r = a.call(
        &tok,
        "POST",
        "/api/v1/routes",
        Some(json!({"origin_id": their_origin, "path_pattern": "/x"})),
    );
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_theirs_unchanged(&a, &theirs).await;
}

#[test]
fn a_tenant_admin_lists_only_its_own_tenants_things() {
    let TwoTenants {
        a,
        mine,
        theirs,
        tok,
        ..
    } = two_tenants();
    creation_lands_in_the_own_tenant(&a, &tok, &mine);
    // Lists show only the own tenant's things; filtering by the other tenant is 404.
    for kind in [
        "tenants",
        "origins",
        "routes",
        "api-keys",
        "users",
        "jwt-issuers",
    ] {
        let l = a.call(&tok, "GET", &format!("/api/v1/{kind}"), None);
        assert_eq!(l.status, 200);
        for item in l.body["items"].as_array().unwrap() {
            let t = item.get("tenant_id").unwrap_or(&item["id"]);
            assert_eq!(t, mine.as_str(), "{kind}: {item}");
        }
        let l = a.call(
            &tok,
            "GET",
            &format!("/api/v1/{kind}?tenant_id={theirs}"),
            None,
        );
        assert_eq!(l.status, 404, "{kind}");
    }
}

#[tokio::test]
async fn another_tenants_things_are_404_to_a_tenant_admin() {
    let TwoTenants {
        a,
        theirs,
        their_origin,
        their_route,
        their_key,
        their_user,
        tok,
        ..
    } = two_tenants();
    // Every way of touching the other tenant's things is 404.
    let paths = [
        format!("/api/v1/tenants/{theirs}"),
        format!("/api/v1/origins/{their_origin}"),
        format!("/api/v1/routes/{their_route}"),
        format!("/api/v1/api-keys/{their_key}"),
        format!("/api/v1/users/{their_user}"),
    ];
    for p in &paths {
        for (m, body) in [("GET", None), ("PATCH", Some(json!({}))), ("DELETE", None)] {
            let r = a.call(&tok, m, p, body);
            assert_eq!((r.status, r.code()), (404, "not_found"), "{m} {p}");
        }
    }
    for action in ["rotate", "revoke"] {
        let r = a.call(
            &tok,
            "POST",
            &format!("/api/v1/api-keys/{their_key}/{action}"),
            None,
        );
        assert_eq!(r.status, 404, "{action}");
    }
    let r = a.call(
        &tok,
        "GET",
        &format!("/api/v1/analytics/requests?tenant_id={theirs}"),
        None,
    );
    assert_eq!(r.status, 404);
    assert_theirs_unchanged(&a, &theirs).await;
}

#[tokio::test]
async fn config_and_tenant_lifecycle_are_superadmin_only_but_the_own_tenant_is_editable() {
    let TwoTenants {
        a,
        mine,
        theirs,
        tok,
        ..
    } = two_tenants();
    let r = a.call(&tok, "GET", "/api/v1/config", None);
    assert_eq!(r.status, 403);
    // Tenants are made and removed by superadmins only.
    let r = a.call(&tok, "POST", "/api/v1/tenants", Some(bodies::tenant("new")));
    assert_eq!(r.status, 403);
    let r = a.call(&tok, "DELETE", &format!("/api/v1/tenants/{mine}"), None);
    assert_eq!(r.status, 403);
    // The own tenant can be read and changed.
    let r = a.call(
        &tok,
        "PATCH",
        &format!("/api/v1/tenants/{mine}"),
        Some(json!({"name": "Acme!"})),
    );
    assert_eq!(r.status, 200);
    assert_theirs_unchanged(&a, &theirs).await;
}

async fn counts(a: &Admin) -> Vec<i64> {
    let c = a.db.client().await;
    let row = c
        .query_one(
            "SELECT (SELECT count(*) FROM tenants), (SELECT count(*) FROM origins),
                    (SELECT count(*) FROM routes), (SELECT count(*) FROM api_keys),
                    (SELECT count(*) FROM users), (SELECT count(*) FROM jwt_issuers),
                    vantage_config_version()",
            &[],
        )
        .await
        .unwrap();
    (0..7).map(|i| row.get(i)).collect()
}

#[tokio::test]
async fn hostile_input_gets_clean_4xx_and_writes_nothing() {
    let a = Admin::fresh();
    let http = reqwest::Client::new();
    let t = id(&a.create("/api/v1/tenants", bodies::tenant("acme")));
    let o = id(&a.create("/api/v1/origins", bodies::origin(&t, 9001)));
    let before = counts(&a).await;
    let raw = |method: &str, path: &str, ctype: &str, body: Vec<u8>| {
        http.request(method.parse().unwrap(), a.url(path))
            .bearer_auth(&a.root)
            .header("content-type", ctype)
            .body(body)
            .send()
    };
    let json_ct = "application/json";
    let origin_path = format!("/api/v1/origins/{o}");
    let cases: Vec<(&str, &str, &str, Vec<u8>, u16)> = vec![
        ("POST", "/api/v1/tenants", json_ct, b"{\"name\": \"x\", ".to_vec(), 400),
        ("POST", "/api/v1/tenants", json_ct, b"[1,2,3]".to_vec(), 400),
        ("POST", "/api/v1/tenants", json_ct, b"".to_vec(), 400),
        ("POST", "/api/v1/tenants", json_ct, b"\xff\xfe".to_vec(), 400),
        ("POST", "/api/v1/tenants", json_ct, br#"{"name": ["x"], "subdomain": "y"}"#.to_vec(), 400),
        ("POST", "/api/v1/tenants", json_ct, br#"{"name": "x", "subdomain": 5}"#.to_vec(), 400),
        ("POST", "/api/v1/tenants", "text/plain", br#"{"name": "x", "subdomain": "y"}"#.to_vec(), 415),
        ("POST", "/api/v1/origins", json_ct, format!(r#"{{"tenant_id": "{t}", "targets": [{{"url": "http://h:1", "weight": -1}}]}}"#).into_bytes(), 400),
        ("POST", "/api/v1/routes", json_ct, format!(r#"{{"tenant_id": "{t}", "origin_id": "{o}", "path_pattern": "/x", "priority": 99999999999}}"#).into_bytes(), 400),
        ("POST", "/api/v1/routes", json_ct, format!(r#"{{"tenant_id": "{t}", "origin_id": "{o}", "path_pattern": "/x", "auth": {{"mode": "root"}}}}"#).into_bytes(), 400),
        ("POST", "/api/v1/routes", json_ct, format!(r#"{{"tenant_id": "{t}", "origin_id": "'; DROP TABLE routes; --", "path_pattern": "/x"}}"#).into_bytes(), 422),
        ("POST", "/api/v1/tenants", json_ct, br#"{"name": "x", "subdomain": "a' OR '1'='1"}"#.to_vec(), 422),
        ("POST", "/api/v1/tenants", json_ct, br#"{"name": "x", "subdomain": "x", "custom_hosts": ["evil.test; DROP TABLE tenants"]}"#.to_vec(), 422),
        ("POST", "/api/v1/api-keys", json_ct, format!(r#"{{"tenant_id": "{t}", "name": "k", "expires_at": "tomorrow"}}"#).into_bytes(), 422),
        ("POST", "/api/v1/api-keys", json_ct, format!(r#"{{"tenant_id": "{t}", "name": "k", "key_hash": "vk_live_plaintext"}}"#).into_bytes(), 422),
        ("POST", "/api/v1/users", json_ct, format!(r#"{{"tenant_id": "{t}", "email": "x@y.z", "role": "admin'; --"}}"#).into_bytes(), 422),
        ("PATCH", &origin_path, json_ct, br#"{"targets": "lots"}"#.to_vec(), 400),
        ("PATCH", &origin_path, json_ct, br#"{"targets": []}"#.to_vec(), 422),
        ("GET", "/api/v1/analytics/requests?from=yesterday", json_ct, vec![], 400),
        ("GET", "/api/v1/analytics/requests?group_by=1;DROP", json_ct, vec![], 400),
        ("GET", "/api/v1/tenants?tenant_id=%27%20OR%201%3D1", json_ct, vec![], 400),
    ];
    for (m, p, ct, body, want) in cases {
        let shown = String::from_utf8_lossy(&body).to_string();
        let r = raw(m, p, ct, body).await.unwrap();
        let status = r.status().as_u16();
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        assert_eq!(status, want, "{m} {p} {shown}: {v}");
        assert!(
            v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            "{v}"
        );
    }
    // Deeply nested JSON is refused, not a crash.
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let r = raw("POST", "/api/v1/tenants", json_ct, deep.into_bytes())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Oversized bodies: 413 (the test server allows 64 KiB).
    let big = format!(
        r#"{{"name": "{}", "subdomain": "big"}}"#,
        "a".repeat(100_000)
    );
    let r = raw("POST", "/api/v1/tenants", json_ct, big.into_bytes())
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "payload_too_large");

    assert_eq!(
        counts(&a).await,
        before,
        "a refused request wrote something"
    );
    // SQL-looking text that is valid is stored literally.
    let sneaky = "Robert'); DROP TABLE tenants; --";
    let r = a.create(
        "/api/v1/tenants",
        json!({"name": sneaky, "subdomain": "bobby"}),
    );
    assert_eq!(r["name"], sneaky);
    let got = a.root("GET", &format!("/api/v1/tenants/{}", id(&r)), None);
    assert_eq!(got.body["name"], sneaky);
    assert_eq!(counts(&a).await[0], before[0] + 1);
    // The service is still healthy.
    assert_eq!(
        http.get(a.url("/healthz")).send().await.unwrap().status(),
        200
    );
}

/// Tenant acme with the API key "CI" (checked as created): the admin, the tenant id, the
/// key's plaintext and its id.
fn ci_key() -> (Admin, String, String, String) {
    let a = Admin::fresh();
    let t = id(&a.create("/api/v1/tenants", bodies::tenant("acme")));
    let k = a.create("/api/v1/api-keys", json!({"tenant_id": t, "name": "CI", "scopes": ["orders:read"], "expires_at": "2030-01-01T00:00:00Z"}));
    let plain = k["key"].as_str().unwrap().to_string();
    assert!(
        plain.starts_with("vk_live_") && plain.len() == 40,
        "{plain}"
    );
    assert_eq!(k["prefix"], &plain[..12]);
    assert!(k.get("key_hash").is_none());
    assert_eq!(k["expires_at"], "2030-01-01T00:00:00Z");
    let kid = id(&k);
    (a, t, plain, kid)
}

/// No key of `plains` (nor its body) and no admin token anywhere in the database (every row
/// of every table, as text).
async fn assert_no_plaintext(a: &Admin, plains: &[&String]) {
    // No plaintext anywhere in the database (every row of every table, as text).
    let c = a.db.client().await;
    let tables: Vec<String> = c
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tables.iter().any(|t| t == "api_keys"));
    for table in tables {
        let rows = c
            .query(&format!("SELECT to_jsonb(x)::text FROM \"{table}\" x"), &[])
            .await
            .unwrap();
        for row in rows {
            let text: String = row.get(0);
            for p in plains {
                assert!(!text.contains(p.as_str()), "plaintext key in {table}");
                assert!(!text.contains(&p[8..]), "key body in {table}");
            }
            assert!(!text.contains(&a.root), "admin token in {table}");
        }
    }
}

#[tokio::test]
async fn an_api_keys_plaintext_is_shown_once_and_only_its_sha256_is_stored() {
    let (a, _, plain, kid) = ci_key();
    // Reads never show the key.
    let got = a.root("GET", &format!("/api/v1/api-keys/{kid}"), None);
    assert!(got.body.get("key").is_none() && got.body.get("key_hash").is_none());
    // The stored hash is the SHA-256 the proxy computes.
    let c = a.db.client().await;
    let hash: String = c
        .query_one("SELECT key_hash FROM api_keys WHERE id::text = $1", &[&kid])
        .await
        .unwrap()
        .get(0);
    assert_eq!(hash, vantage_admin::auth::sha256_hex(&plain));
    assert_no_plaintext(&a, &[&plain]).await;
}

#[test]
fn an_api_key_patch_changes_no_secret_part_put_is_refused_and_delete_works() {
    let (a, _, _, kid) = ci_key();
    // Patch: name/scopes/expiry yes, the secret parts no.
    let p = a.root(
        "PATCH",
        &format!("/api/v1/api-keys/{kid}"),
        Some(json!({"name": "CI 2", "expires_at": null})),
    );
    assert_eq!(p.status, 200, "{:?}", p.body);
    assert!(p.body.get("expires_at").is_none());
    for f in [
        json!({"key_hash": "0".repeat(64)}),
        json!({"status": "revoked"}),
        json!({"prefix": "x"}),
    ] {
        let p = a.root("PATCH", &format!("/api/v1/api-keys/{kid}"), Some(f.clone()));
        assert_eq!(p.status, 400, "{f}");
    }
    let p = a.root("PUT", &format!("/api/v1/api-keys/{kid}"), Some(json!({})));
    assert_eq!(p.status, 405);
    // Deleting a key.
    assert_eq!(
        a.root("DELETE", &format!("/api/v1/api-keys/{kid}"), None)
            .status,
        204
    );
}

#[tokio::test]
async fn rotation_with_grace_keeps_the_old_key_without_revokes_it_and_revoke_is_idempotent() {
    let (a, _, plain, kid) = ci_key();
    // Rotate with a grace period: the old key expires later, the new one is returned once.
    let r = a.root(
        "POST",
        &format!("/api/v1/api-keys/{kid}/rotate"),
        Some(json!({"grace_seconds": 3600})),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let plain2 = r.body["key"].as_str().unwrap().to_string();
    assert_ne!(plain2, plain);
    assert_eq!(r.body["rotated_from"], kid.as_str());
    assert_eq!(r.body["scopes"], json!(["orders:read"]));
    let old = a.root("GET", &format!("/api/v1/api-keys/{kid}"), None).body;
    assert_eq!(old["status"], "active");
    assert!(old["expires_at"].is_string());
    // Rotate without grace: the old one is revoked at once.
    let k2 = id(&r.body);
    let r = a.root("POST", &format!("/api/v1/api-keys/{k2}/rotate"), None);
    assert_eq!(r.status, 201, "{:?}", r.body);
    let plain3 = r.body["key"].as_str().unwrap().to_string();
    let old = a.root("GET", &format!("/api/v1/api-keys/{k2}"), None).body;
    assert_eq!(old["status"], "revoked");
    assert!(old["revoked_at"].is_string());
    let again = a.root("POST", &format!("/api/v1/api-keys/{k2}/rotate"), None);
    assert_eq!(again.status, 409);
    // Revoke is idempotent.
    let k3 = id(&r.body);
    for _ in 0..2 {
        let r = a.root("POST", &format!("/api/v1/api-keys/{k3}/revoke"), None);
        assert_eq!(r.status, 200);
        assert_eq!(r.body["status"], "revoked");
    }
    assert_no_plaintext(&a, &[&plain, &plain2, &plain3]).await;
}

#[test]
fn an_imported_key_shows_no_plaintext_and_its_hash_is_unique() {
    let (a, t, _, _) = ci_key();
    // Importing a key by its hash returns no plaintext.
    let imported = a.create("/api/v1/api-keys", json!({"tenant_id": t, "name": "imported", "key_hash": vantage_admin::auth::sha256_hex("vk_live_imported"), "prefix": "vk_live_impo"}));
    assert!(imported.get("key").is_none());
    let dup = a.root("POST", "/api/v1/api-keys", Some(json!({"tenant_id": t, "name": "again", "key_hash": vantage_admin::auth::sha256_hex("vk_live_imported")})));
    assert_eq!(dup.status, 409, "{:?}", dup.body);
}

/// The error body says nothing about `who` (another tenant's id, subdomain or name, or
/// its place in the configuration).
fn reveals_nothing(body: &serde_json::Value, who: &[&str]) {
    let text = body.to_string();
    for w in who {
        assert!(!text.contains(w), "the refusal names {w}: {text}");
    }
    assert!(
        !text.contains("tenants["),
        "the refusal points into the config: {text}"
    );
}

#[test]
fn a_tenant_admin_cannot_take_another_tenants_host() {
    let a = Admin::fresh();
    let acme = a.create(
        "/api/v1/tenants",
        json!({"name": "Acme Corp", "subdomain": "acme", "custom_hosts": ["api.acme.test"]}),
    );
    let acme_id = id(&acme);
    let mallory = id(&a.create("/api/v1/tenants", bodies::tenant("mallory")));
    let tok = a.token_for("mallory");
    let before = a.version();
    let path = format!("/api/v1/tenants/{mallory}");
    let claim =
        |host: &'static str| a.call(&tok, "PATCH", &path, Some(json!({"custom_hosts": [host]})));
    for host in [
        // Acme's subdomain host, under the fleet's base domain.
        "acme.vantage.localhost",
        // A subdomain no tenant has yet: pre-claiming it would hijack a future tenant.
        "future.vantage.localhost",
        "deep.acme.vantage.localhost",
        // Acme's custom host.
        "api.acme.test",
    ] {
        let r = claim(host);
        assert_eq!(r.status, 409, "{host}: {}", r.body);
        assert_eq!(r.code(), "conflict");
        assert_eq!(r.fields(), vec!["custom_hosts[0]"], "{}", r.body);
        reveals_nothing(&r.body, &[&acme_id, "Acme Corp", "acme.vantage"]);
    }
    // Other spellings of the same host are not hosts at all.
    for host in ["API.acme.test", "api.acme.test."] {
        assert_eq!(claim(host).status, 422, "{host}");
    }
    // A subdomain already taken is refused the same way, whichever tenant comes first in
    // the configuration.
    let r = a.root("POST", "/api/v1/tenants", Some(bodies::tenant("acme")));
    assert_eq!(r.status, 409, "{}", r.body);
    reveals_nothing(&r.body, &[&acme_id, "Acme Corp"]);
    for (tenant, taken) in [(&mallory, "acme"), (&acme_id, "mallory")] {
        let r = a.root(
            "PATCH",
            &format!("/api/v1/tenants/{tenant}"),
            Some(json!({"subdomain": taken})),
        );
        assert_eq!(r.status, 409, "{taken}: {}", r.body);
        assert_eq!(r.fields(), vec!["subdomain"], "{}", r.body);
        reveals_nothing(&r.body, &["Acme Corp", "tenants["]);
    }
    assert_eq!(a.version(), before, "nothing was written");
    // A host of its own is fine.
    let r = a.call(
        &tok,
        "PATCH",
        &format!("/api/v1/tenants/{mallory}"),
        Some(json!({"custom_hosts": ["api.mallory.test"]})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn unbounded_inputs_are_refused_with_their_field() {
    let a = Admin::fresh();
    let t = id(&a.create("/api/v1/tenants", bodies::tenant("acme")));
    let o = id(&a.create("/api/v1/origins", bodies::origin(&t, 9001)));
    let before = a.version();
    let cases = [
        (
            "/api/v1/tenants",
            json!({"name": "n".repeat(300), "subdomain": "big"}),
            "name",
        ),
        (
            "/api/v1/routes",
            json!({"tenant_id": t, "origin_id": o, "path_pattern": format!("/{}", "p".repeat(6000))}),
            "path_pattern",
        ),
        (
            "/api/v1/jwt-issuers",
            json!({"tenant_id": t, "issuer": "https://i.test", "shared_secret": "s".repeat(40),
                   "algorithms": ["HS256"], "leeway_s": 1_000_000_000_000u64}),
            "leeway_s",
        ),
        (
            "/api/v1/origins",
            json!({"tenant_id": t, "targets": [{"url": "http://127.0.0.1:9001"}], "timeouts": {"read_ms": 10_000_000_000u64}}),
            "timeouts.read_ms",
        ),
        (
            "/api/v1/routes",
            json!({"tenant_id": t, "origin_id": o, "path_pattern": "/m", "methods": vec!["GET"; 20]}),
            "methods",
        ),
    ];
    for (path, body, field) in cases {
        let r = a.root("POST", path, Some(body));
        assert_eq!(r.status, 422, "{path} {field}: {}", r.body);
        assert!(r.fields().iter().any(|f| f == field), "{field}: {}", r.body);
    }
    // A megabyte of name does not even get parsed.
    let r = a.root(
        "POST",
        "/api/v1/tenants",
        Some(json!({"name": "n".repeat(1 << 20), "subdomain": "huge"})),
    );
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(a.version(), before, "nothing was written");
}

#[test]
fn jwks_urls_into_private_networks_are_refused() {
    let a = Admin::fresh();
    let t = id(&a.create("/api/v1/tenants", bodies::tenant("acme")));
    for url in [
        "http://clerk.acme.test/.well-known/jwks.json",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.1.2.3/jwks.json",
        "https://[fd00::1]/jwks.json",
        "https://[::ffff:192.168.1.1]/jwks.json",
    ] {
        let r = a.root(
            "POST",
            "/api/v1/jwt-issuers",
            Some(json!({"tenant_id": t, "issuer": "https://i.test", "jwks_url": url})),
        );
        assert_eq!(r.status, 422, "{url}: {}", r.body);
        assert_eq!(r.fields(), vec!["jwks_url"], "{url}: {}", r.body);
    }
    // Public https and loopback (the default allow-list) are accepted.
    for url in [
        "https://clerk.acme.test/.well-known/jwks.json",
        "http://127.0.0.1:9/jwks.json",
    ] {
        let r = a.root(
            "POST",
            "/api/v1/jwt-issuers",
            Some(json!({"tenant_id": t, "issuer": url, "jwks_url": url})),
        );
        assert_eq!(r.status, 201, "{url}: {}", r.body);
    }
}

#[test]
fn shared_secrets_are_never_returned_or_logged() {
    let a = AdminSetup::fresh().rust_log("debug").start();
    let t = id(&a.create("/api/v1/tenants", bodies::tenant("acme")));
    let secret = "hs256-secret-that-must-never-leave-0123456789";
    let created = a
        .create(
            "/api/v1/jwt-issuers",
            json!({"tenant_id": t, "issuer": "https://i.test", "shared_secret": secret, "algorithms": ["HS256"]}),
        );
    let issuer = id(&created);
    assert_eq!(created["shared_secret_set"], true);
    let reads = [
        created.clone(),
        a.root("GET", &format!("/api/v1/jwt-issuers/{issuer}"), None)
            .body,
        a.root("GET", "/api/v1/jwt-issuers", None).body,
        a.root("GET", "/api/v1/config", None).body,
    ];
    for body in &reads {
        assert!(!body.to_string().contains(secret), "{body}");
    }
    let config = &reads[3];
    assert_eq!(
        config["config"]["jwt_issuers"][0]["shared_secret_set"],
        true
    );
    let log = a.log();
    assert!(log.contains("DEBUG"), "the admin logged at debug: {log}");
    assert!(!log.contains(secret), "the secret is in the log:\n{log}");
}

#[test]
fn pool_health_and_the_fleet_stay_with_their_owner() {
    let t = two_tenants();
    let my_origin = id(&t.a.create("/api/v1/origins", bodies::origin(&t.mine, 9003)));
    // Two proxies report both tenants' pools.
    t.a.db.sql(&format!(
        "INSERT INTO pool_health (proxy, origin_id, tenant_id, healthy, total) VALUES
           ('edge-a.internal:1', '{my_origin}', '{mine}', 1, 1),
           ('edge-b.internal:2', '{my_origin}', '{mine}', 0, 1),
           ('edge-a.internal:1', '{their}', '{theirs}', 2, 2)",
        mine = t.mine,
        their = t.their_origin,
        theirs = t.theirs
    ));
    // The tenant admin sees its own origin's reports, with the proxies numbered, not named.
    let r = t.a.call(&t.tok, "GET", "/api/v1/pool-health", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{}", r.body);
    assert!(items.iter().all(|i| i["origin_id"] == my_origin.as_str()));
    let proxies: Vec<&str> = items.iter().map(|i| i["proxy"].as_str().unwrap()).collect();
    assert_eq!(proxies, ["proxy-1", "proxy-2"]);
    assert!(!r.body.to_string().contains("internal"), "{}", r.body);
    // Asking for the other tenant's is 404; the fleet is the operator's.
    let r = t.a.call(
        &t.tok,
        "GET",
        &format!("/api/v1/pool-health?tenant_id={}", t.theirs),
        None,
    );
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(t.a.call(&t.tok, "GET", "/api/v1/fleet", None).status, 403);
    // The superadmin sees every report, named.
    let all = t.a.root("GET", "/api/v1/pool-health", None);
    assert_eq!(all.body["items"].as_array().unwrap().len(), 3);
    assert!(all.body.to_string().contains("edge-b.internal:2"));
    // `/me` tells each token what it is.
    let me = t.a.call(&t.tok, "GET", "/api/v1/me", None);
    assert_eq!(me.body["role"], "tenant_admin");
    assert_eq!(me.body["tenant_id"], t.mine.as_str());
    assert_eq!(
        t.a.root("GET", "/api/v1/me", None).body["role"],
        "superadmin"
    );
}
