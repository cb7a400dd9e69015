//! JWT authentication against a real JWKS server on loopback, with keys the test generates.

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use std::io::{BufRead, BufReader, Write};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use vantage_testkit::*;

/// A JWKS endpoint whose key set the test can change, or take down.
struct Jwks {
    port: u16,
    keys: Arc<Mutex<Vec<Jwk>>>,
    hits: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

impl Jwks {
    fn start() -> Jwks {
        let listener = listener();
        let port = listener.local_addr().unwrap().port();
        let keys: Arc<Mutex<Vec<Jwk>>> = Arc::default();
        let hits = Arc::new(AtomicUsize::new(0));
        let down = Arc::new(AtomicBool::new(false));
        let (k, h, d) = (keys.clone(), hits.clone(), down.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                h.fetch_add(1, Ordering::SeqCst);
                let mut s = stream;
                let response = if d.load(Ordering::SeqCst) {
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                } else {
                    let body = serde_json::to_string(&JwkSet {
                        keys: k.lock().unwrap().clone(),
                    })
                    .unwrap();
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = s.write_all(response.as_bytes());
            }
        });
        Jwks {
            port,
            keys,
            hits,
            down,
        }
    }

    fn publish(&self, key: &Signer) {
        self.keys.lock().unwrap().push(key.jwk.clone());
    }
}

/// A signing key generated with openssl, and its public JWK.
struct Signer {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
    jwk: Jwk,
    public_pem: Vec<u8>,
}

fn signer(dir: &std::path::Path, kid: &str, alg: Algorithm) -> Signer {
    let key_path = dir.join(format!("{kid}.pem"));
    let pub_path = dir.join(format!("{kid}.pub.pem"));
    let args: Vec<&str> = match alg {
        Algorithm::RS256 => vec![
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        _ => vec![
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ],
    };
    let ok = Command::new("openssl")
        .args(&args)
        .arg("-out")
        .arg(&key_path)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl genpkey");
    let ok = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key_path)
        .arg("-out")
        .arg(&pub_path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl pkey -pubout");
    let pem = std::fs::read(&key_path).unwrap();
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
        _ => EncodingKey::from_ec_pem(&pem).unwrap(),
    };
    let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
    jwk.common.key_id = Some(kid.to_string());
    Signer {
        kid: kid.into(),
        alg,
        key,
        jwk,
        public_pem: std::fs::read(&pub_path).unwrap(),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

const ISS: &str = "https://clerk.acme.test";

fn claims(extra: serde_json::Value) -> serde_json::Value {
    let mut c = serde_json::json!({
        "sub": "user_1", "iss": ISS, "aud": "acme-api", "exp": now() + 300, "nbf": now() - 10,
        "org_id": "org_acme", "email": "ada@acme.test", "scope": "orders:read profile",
    });
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            if v.is_null() {
                c.remove(k);
            } else {
                c.insert(k.clone(), v.clone());
            }
        }
    }
    c
}

fn sign(s: &Signer, claims: &serde_json::Value) -> String {
    let mut h = Header::new(s.alg);
    h.kid = Some(s.kid.clone());
    encode(&h, claims, &s.key).unwrap()
}

fn config(origin: &Origin, jwks: &Jwks) -> String {
    format!(
        r#"
tenants:
  - {{id: acme, name: Acme, subdomain: acme, clerk_org_id: org_acme}}
  - {{id: globex, name: Globex, subdomain: globex}}
origins:
  - {{id: o, tenant_id: acme, targets: [{{url: "{u}"}}]}}
  - {{id: g, tenant_id: globex, targets: [{{url: "{u}"}}]}}
routes:
  - {{id: me, tenant_id: acme, path_pattern: /me, origin_id: o, auth: {{mode: jwt_required, scopes: [orders:read]}}}}
  - {{id: admin, tenant_id: acme, path_pattern: /admin, origin_id: o, auth: {{mode: jwt_required, scopes: [admin]}}}}
  - {{id: either, tenant_id: acme, path_pattern: /either, origin_id: o, auth: {{mode: jwt_or_apikey, strip_authorization: true}}, rate_limits: [{{name: per-user, algorithm: {{type: sliding_window, limit: 2, period_s: 600}}, subject: {{by: user}}}}]}}
  - {{id: g, tenant_id: globex, path_pattern: /*, origin_id: g, auth: {{mode: jwt_required}}}}
jwt_issuers:
  - id: clerk
    tenant_id: acme
    issuer: "{ISS}"
    audiences: [acme-api]
    jwks_url: "http://127.0.0.1:{port}/.well-known/jwks.json"
    algorithms: [RS256, ES256]
    leeway_s: 5
    cookie: __session
    claim_headers: {{email: X-User-Email}}
    jwks_min_refetch_s: 10
  - id: globex-static
    tenant_id: globex
    issuer: https://globex.test
    shared_secret: "a-globex-shared-secret-of-32-bytes-or-more"
    algorithms: [HS256]
api_keys:
  - {{id: k1, tenant_id: acme, name: K, key_hash: "{kh}"}}
"#,
        u = origin.url(),
        port = jwks.port,
        kh = "8d1e4b3bdf0ba2c7a3cb4a5f3c2bf1ac2ac1c4d3a2a5d2b6fd9b1e1bb9c3f0f3",
    )
}

/// A proxy whose acme routes take tokens of the JWKS issuer (keys `rsa-1` and `ec-1`
/// published), after its one fetch of the JWKS at load.
struct Acme {
    dir: std::path::PathBuf,
    rsa: Signer,
    ec: Signer,
    jwks: Jwks,
    _origin: Origin,
    p: Proxy,
    fetched_at_start: usize,
}

impl Acme {
    fn start(tag: &str) -> Acme {
        let dir = temp_dir(tag);
        let rsa = signer(&dir, "rsa-1", Algorithm::RS256);
        let ec = signer(&dir, "ec-1", Algorithm::ES256);
        let jwks = Jwks::start();
        jwks.publish(&rsa);
        jwks.publish(&ec);
        let o = Origin::start("o");
        let p = Proxy::start(&config(&o, &jwks));
        let fetched_at_start = jwks.hits.load(Ordering::SeqCst);
        assert_eq!(fetched_at_start, 1, "the JWKS is fetched once at load");
        Acme {
            dir,
            rsa,
            ec,
            jwks,
            _origin: o,
            p,
            fetched_at_start,
        }
    }

    /// GET `path` on acme with `token` as a bearer token.
    fn call(&self, path: &str, token: &str) -> Response {
        self.p.send(
            "GET",
            "acme.test.local",
            path,
            &[("Authorization", &format!("Bearer {token}"))],
            b"",
        )
    }

    /// A valid RS256 token of `rsa-1`.
    fn good(&self) -> String {
        sign(&self.rsa, &claims(serde_json::json!({})))
    }

    fn jwks_hits(&self) -> usize {
        self.jwks.hits.load(Ordering::SeqCst)
    }

    /// No token the test used got into the proxy's log.
    fn assert_no_token_logged(&self, tokens: &[&str]) {
        let log = self.p.log();
        for t in tokens {
            assert!(!log.contains(t), "a token leaked into the log");
        }
    }
}

impl Drop for Acme {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_client_cannot_pose_as_another_user_or_key_through_identity_headers() {
    let a = Acme::start("jwt-spoof");
    // A valid user sends the identity fields of someone else: the origin sees only what the
    // token says (the claim header from the token, no key id at all).
    let r = a.p.send(
        "GET",
        "acme.test.local",
        "/me",
        &[
            ("Authorization", &format!("Bearer {}", a.good())),
            ("X-User-Email", "ceo@acme.test"),
            ("X-User-Id", "user_admin"),
            ("X-Api-Key-Id", "k1"),
            ("X-Org-Id", "org_globex"),
        ],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let h = &r.json()["headers"];
    assert_eq!(h["x-user-email"], "ada@acme.test");
    assert_eq!(h["x-user-id"], "user_1");
    assert_eq!(h["x-org-id"], "org_acme");
    assert!(h.get("x-api-key-id").is_none(), "{h}");
}

#[test]
fn rs256_and_es256_tokens_pass_with_identity_headers_from_header_or_cookie() {
    let a = Acme::start("jwt-valid");
    // Valid RS256 and ES256 tokens; identity headers for the origin.
    for s in [&a.rsa, &a.ec] {
        let r = a.call("/me", &sign(s, &claims(serde_json::json!({}))));
        assert_eq!(r.status, 200, "{}: {}", s.kid, r.text());
        let h = &r.json()["headers"];
        assert_eq!(h["x-user-id"], "user_1");
        assert_eq!(h["x-org-id"], "org_acme");
        assert_eq!(h["x-user-email"], "ada@acme.test");
        assert!(
            h["authorization"].as_str().is_some(),
            "kept unless the route strips it"
        );
    }
    // From Clerk's cookie too.
    let token = a.good();
    let r = a.p.send(
        "GET",
        "acme.test.local",
        "/me",
        &[("Cookie", &format!("theme=dark; __session={token}"))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    a.assert_no_token_logged(&[&token]);
}

#[test]
fn expired_forged_and_malformed_tokens_are_401_without_a_jwks_fetch() {
    let a = Acme::start("jwt-refused");
    // Refusals, each 401 invalid_token.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let rsa = &a.rsa;
    let good = a.good();
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(serde_json::to_vec(&claims(serde_json::json!({"sub": "admin"}))).unwrap()),
        parts[2]
    );
    let alg_none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#),
        parts[1]
    );
    // HS256 signed with the RSA public key as the "secret".
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("rsa-1".into());
    let confused = encode(
        &hs,
        &claims(serde_json::json!({})),
        &EncodingKey::from_secret(&rsa.public_pem),
    )
    .unwrap();
    let cases = [
        (
            "expired",
            sign(rsa, &claims(serde_json::json!({"exp": now() - 60}))),
        ),
        (
            "not yet valid",
            sign(rsa, &claims(serde_json::json!({"nbf": now() + 600}))),
        ),
        (
            "wrong audience",
            sign(rsa, &claims(serde_json::json!({"aud": "other-api"}))),
        ),
        (
            "wrong issuer",
            sign(
                rsa,
                &claims(serde_json::json!({"iss": "https://evil.test"})),
            ),
        ),
        (
            "no exp",
            sign(rsa, &claims(serde_json::json!({"exp": null}))),
        ),
        ("alg none", alg_none),
        ("HS/RS confusion", confused),
        ("tampered", tampered),
        ("garbage", "not.a.jwt".to_string()),
    ];
    for (what, token) in &cases {
        let r = a.call("/me", token);
        r.assert_error(401, "unauthorized");
        assert!(
            r.header("www-authenticate")
                .unwrap()
                .contains("invalid_token"),
            "{what}"
        );
    }
    a.call("/me", "").assert_error(401, "unauthorized");
    assert_eq!(
        a.jwks_hits(),
        a.fetched_at_start,
        "no refusal above fetched the JWKS"
    );
    let tokens: Vec<&str> = cases.iter().map(|(_, t)| t.as_str()).collect();
    a.assert_no_token_logged(&tokens);
}

#[test]
fn missing_scope_other_organisation_and_other_tenant_are_refused() {
    let a = Acme::start("jwt-scope");
    let good = a.good();
    // Scope and organisation.
    a.call("/admin", &good)
        .assert_error(403, "insufficient_scope");
    a.call(
        "/me",
        &sign(&a.rsa, &claims(serde_json::json!({"org_id": "org_other"}))),
    )
    .assert_error(403, "org_mismatch");
    a.call(
        "/me",
        &sign(&a.rsa, &claims(serde_json::json!({"org_id": null}))),
    )
    .assert_error(403, "org_mismatch");
    // A token of acme's issuer is no good on globex.
    let r = a.p.send(
        "GET",
        "globex.test.local",
        "/x",
        &[("Authorization", &format!("Bearer {good}"))],
        b"",
    );
    r.assert_error(401, "unauthorized");
    assert_eq!(
        a.jwks_hits(),
        a.fetched_at_start,
        "no refusal above fetched the JWKS"
    );
    a.assert_no_token_logged(&[&good]);
    assert!(a.p.log().contains("organisation mismatch"));
}

#[test]
fn a_rotated_key_is_fetched_once_and_unknown_kids_are_throttled() {
    let a = Acme::start("jwt-rotation");
    // Rotation: a new key appears in the JWKS; its first token triggers one fetch.
    let rsa2 = signer(&a.dir, "rsa-2", Algorithm::RS256);
    a.jwks.publish(&rsa2);
    let r = a.call("/me", &sign(&rsa2, &claims(serde_json::json!({}))));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(a.jwks_hits(), a.fetched_at_start + 1);
    // A flood of unknown kids does not hammer the issuer (min gap 10 s).
    let stranger = signer(&a.dir, "unknown-kid", Algorithm::RS256);
    for _ in 0..20 {
        a.call("/me", &sign(&stranger, &claims(serde_json::json!({}))))
            .assert_error(401, "unauthorized");
    }
    assert_eq!(
        a.jwks_hits(),
        a.fetched_at_start + 1,
        "unknown kids are throttled"
    );
}

#[test]
fn cached_keys_keep_working_while_the_jwks_endpoint_is_down() {
    let a = Acme::start("jwt-down");
    // The JWKS endpoint goes down: cached keys keep working.
    a.jwks.down.store(true, Ordering::SeqCst);
    assert_eq!(
        a.call("/me", &sign(&a.ec, &claims(serde_json::json!({}))))
            .status,
        200
    );
}

#[test]
fn jwt_or_api_key_static_secret_and_per_user_limits() {
    let jwks = Jwks::start();
    let dir = temp_dir("jwt2");
    let rsa = signer(&dir, "rsa-1", Algorithm::RS256);
    jwks.publish(&rsa);
    let o = Origin::start("o");
    let key = "vk_live_either_route_key";
    let hash = hash_key(key);
    let body = config(&o, &jwks).replace(
        "8d1e4b3bdf0ba2c7a3cb4a5f3c2bf1ac2ac1c4d3a2a5d2b6fd9b1e1bb9c3f0f3",
        hash.trim(),
    );
    let p = Proxy::start(&body);
    let either = |auth: &str| {
        p.send(
            "GET",
            "acme.test.local",
            "/either",
            &[("Authorization", auth)],
            b"",
        )
    };

    let r = either(&format!("Bearer {key}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["headers"]["x-api-key-id"], "k1");
    assert!(
        r.json()["headers"].get("authorization").is_none(),
        "stripped"
    );
    // Per-user limit: user_1 gets 2, user_2 has its own budget.
    let t1 = sign(&rsa, &claims(serde_json::json!({})));
    let t2 = sign(&rsa, &claims(serde_json::json!({"sub": "user_2"})));
    let statuses: Vec<u16> = (0..3)
        .map(|_| either(&format!("Bearer {t1}")).status)
        .collect();
    assert_eq!(statuses, vec![200, 200, 429]);
    assert_eq!(either(&format!("Bearer {t2}")).status, 200);
    either("Bearer vk_live_wrong").assert_error(401, "unauthorized");

    // A static HS256 secret (globex).
    let secret = EncodingKey::from_secret(b"a-globex-shared-secret-of-32-bytes-or-more");
    let token = encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"sub": "g1", "iss": "https://globex.test", "exp": now() + 60}),
        &secret,
    )
    .unwrap();
    let r = p.send(
        "GET",
        "globex.test.local",
        "/x",
        &[("Authorization", &format!("Bearer {token}"))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["headers"]["x-user-id"], "g1");
    let _ = std::fs::remove_dir_all(dir);
}
