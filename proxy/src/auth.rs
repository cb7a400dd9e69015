//! Authentication of a route: API keys (SHA-256 hashes only) and JWTs ([`crate::jwt`]).
//!
//! A key is sent as `X-API-Key: <key>` or `Authorization: Bearer <key>`. It is hashed and
//! looked up; a key of another tenant, an unknown, revoked or expired key → 401; a key
//! without a required scope → 403. A JWT comes as `Authorization: Bearer` or in the
//! issuer's cookie; it must verify against one of the tenant's issuers (by its `iss`), and
//! when the tenant has a Clerk organisation its `org_id` must match (403 otherwise). The
//! reason of a refusal is logged; the secret never is.

use crate::errors::Reply;
use crate::jwt::{self, IssuerRt};
use crate::limits::plan::PlanRt;
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;
use vantage_model::{ApiKey, AuthMode, KeyStatus, RouteAuth};

/// What a tenant authenticates JWTs with.
#[derive(Default)]
pub struct TenantAuth {
    pub issuers: Vec<Arc<IssuerRt>>,
    pub clerk_org_id: Option<String>,
    /// Every header the issuers' `claim_headers` set (lower-case): removed from every
    /// incoming request so a client cannot pose as a user.
    pub claim_header_names: Vec<HeaderName>,
}

impl TenantAuth {
    /// The cookies the tenant's JWT issuers read tokens from.
    pub fn credential_cookies(&self) -> Vec<String> {
        self.issuers
            .iter()
            .filter_map(|i| i.spec.cookie.clone())
            .collect()
    }
}

/// A verified JWT.
pub struct User {
    /// The cookie the token came in, if it did.
    pub cookie: Option<String>,
    pub sub: String,
    pub org_id: Option<String>,
    pub claims: Arc<Map<String, Value>>,
    pub issuer: Arc<IssuerRt>,
}

/// Who the request was authenticated as.
pub enum Identity {
    Key(Arc<KeyRt>),
    User(Box<User>),
}

/// A compiled API key.
#[derive(Debug)]
pub struct KeyRt {
    pub id: Arc<str>,
    pub tenant_id: Arc<str>,
    pub scopes: Vec<String>,
    pub expires_at: Option<SystemTime>,
    pub revoked: bool,
    /// The key's plan.
    pub plan: Option<Arc<PlanRt>>,
}

/// Hashes a SHA-256 digest by folding its 8-byte words: the digest is uniform already, and
/// no client can choose it (it is the hash of what they present), so SipHash's protection
/// buys nothing here and costs a fleet of a million keys real time at every reload.
#[derive(Clone, Copy, Default)]
pub struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(17) ^ u64::from_le_bytes(word);
        }
    }

    /// Lengths of the fixed-size digests carry nothing.
    fn write_usize(&mut self, _: usize) {}
}

/// Builds [`DigestHasher`]s.
pub type DigestState = std::hash::BuildHasherDefault<DigestHasher>;

/// Keys by the SHA-256 of the key.
#[derive(Debug, Default)]
pub struct KeyIndex(HashMap<[u8; 32], Arc<KeyRt>, DigestState>);

impl KeyIndex {
    /// Compile the configured keys (validated: 64 hex characters, RFC 3339 expiry); keys of
    /// `tenant` share its id.
    pub fn build(
        keys: &[ApiKey],
        plans: &HashMap<String, Arc<PlanRt>>,
        tenant: &Arc<str>,
    ) -> Result<KeyIndex, String> {
        let mut map = HashMap::with_capacity_and_hasher(keys.len(), DigestState::default());
        for k in keys {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(&k.key_hash, &mut hash)
                .map_err(|e| format!("api key {}: key_hash: {e}", k.id))?;
            let expires_at = match &k.expires_at {
                Some(t) => Some(
                    humantime::parse_rfc3339_weak(t)
                        .map_err(|e| format!("api key {}: expires_at: {e}", k.id))?,
                ),
                None => None,
            };
            map.insert(
                hash,
                Arc::new(KeyRt {
                    id: k.id.as_str().into(),
                    tenant_id: if *k.tenant_id == **tenant {
                        tenant.clone()
                    } else {
                        k.tenant_id.as_str().into()
                    },
                    scopes: k.scopes.clone(),
                    expires_at,
                    revoked: k.status == KeyStatus::Revoked,
                    plan: k.plan_id.as_ref().and_then(|id| plans.get(id).cloned()),
                }),
            );
        }
        Ok(KeyIndex(map))
    }

    /// The key whose SHA-256 is that of `key`, whatever its tenant or state.
    pub fn get(&self, key: &[u8]) -> Option<&Arc<KeyRt>> {
        self.0.get(&key_hash(key))
    }

    /// The hashes of the keys.
    pub fn hashes(&self) -> impl Iterator<Item = &[u8; 32]> {
        self.0.keys()
    }
}

/// The SHA-256 of a presented key.
pub fn key_hash(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

/// Lower-case hex SHA-256 of a key, as stored in `api_keys[].key_hash`.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new random key with the visible prefix `vk_live_`.
pub fn generate_key() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut random = [0u8; 32];
    random[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    random[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    let body: String = random
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    format!("vk_live_{body}")
}

/// The API key a request carries, if any.
pub fn presented_key(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(v) = headers.get("x-api-key") {
        return Some(v.as_bytes()).filter(|k| !k.is_empty());
    }
    let auth = headers.get(http::header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = auth.split_at(auth.iter().position(|b| *b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| token.trim_ascii())
        .filter(|t| !t.is_empty())
}

fn unauthorized(message: &'static str) -> Reply {
    Reply::new(401, "unauthorized", message)
        .with_header("www-authenticate", "Bearer realm=\"vantage\"")
}

fn invalid_token(message: &'static str) -> Reply {
    Reply::new(401, "unauthorized", message).with_header(
        "www-authenticate",
        "Bearer realm=\"vantage\", error=\"invalid_token\"",
    )
}

fn insufficient_scope(required: &[String], missing: &str) -> Reply {
    Reply::new(
        403,
        "insufficient_scope",
        format!("the credential lacks the scope '{missing}'"),
    )
    .with_header(
        "www-authenticate",
        format!(
            "Bearer realm=\"vantage\", error=\"insufficient_scope\", scope=\"{}\"",
            required.join(" ")
        ),
    )
}

/// Verify an API key for `tenant_id`.
pub fn check_key(
    auth: &RouteAuth,
    tenant_id: &str,
    presented: Option<&[u8]>,
    keys: &KeyIndex,
    now: SystemTime,
) -> Result<Arc<KeyRt>, Reply> {
    let Some(presented) = presented else {
        return Err(unauthorized(
            "an API key is required (X-API-Key or Authorization: Bearer)",
        ));
    };
    let key = match keys.get(presented) {
        None => {
            tracing::info!(
                tenant = tenant_id,
                reason = "unknown key",
                "API key refused"
            );
            return Err(unauthorized("invalid API key"));
        }
        Some(k) if &*k.tenant_id != tenant_id => {
            tracing::info!(tenant = tenant_id, key_id = %k.id, reason = "key of another tenant", "API key refused");
            return Err(unauthorized("invalid API key"));
        }
        Some(k) if k.revoked => {
            tracing::info!(tenant = tenant_id, key_id = %k.id, reason = "revoked", "API key refused");
            return Err(unauthorized("invalid API key"));
        }
        Some(k) if k.expires_at.is_some_and(|t| t <= now) => {
            tracing::info!(tenant = tenant_id, key_id = %k.id, reason = "expired", "API key refused");
            return Err(unauthorized("the API key has expired"));
        }
        Some(k) => k,
    };
    if let Some(missing) = auth.scopes.iter().find(|s| !key.scopes.contains(s)) {
        tracing::info!(tenant = tenant_id, key_id = %key.id, scope = %missing, "API key lacks a scope");
        return Err(insufficient_scope(&auth.scopes, missing));
    }
    Ok(key.clone())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let auth = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim())
        })
}

fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}

/// Scopes granted by a token: `scope` (space separated), or `scp`/`scopes` (list or string).
fn token_scopes(claims: &Map<String, Value>) -> Vec<&str> {
    let mut out = Vec::new();
    for name in ["scope", "scp", "scopes"] {
        match claims.get(name) {
            Some(Value::String(s)) => out.extend(s.split_whitespace()),
            Some(Value::Array(a)) => out.extend(a.iter().filter_map(Value::as_str)),
            _ => {}
        }
    }
    out
}

/// Verify a JWT for the tenant.
pub async fn check_jwt(
    auth: &RouteAuth,
    tenant_id: &str,
    tenant: &TenantAuth,
    token: Option<&str>,
    cookie: Option<String>,
) -> Result<Box<User>, Reply> {
    let Some(token) = token else {
        return Err(unauthorized("a bearer token is required"));
    };
    let iss = jwt::claimed_issuer(token);
    let Some(issuer) = tenant
        .issuers
        .iter()
        .find(|i| iss.as_deref() == Some(i.spec.issuer.as_str()))
    else {
        tracing::info!(tenant = tenant_id, iss = ?iss, reason = "issuer not configured for the tenant", "JWT refused");
        return Err(invalid_token("invalid token"));
    };
    let claims = match issuer.verify(token).await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(tenant = tenant_id, issuer = %issuer.spec.id, reason = %e, "JWT refused");
            return Err(invalid_token("invalid token"));
        }
    };
    let org_id = claims
        .get("org_id")
        .and_then(Value::as_str)
        .map(String::from);
    if let Some(org) = &tenant.clerk_org_id {
        if org_id.as_deref() != Some(org.as_str()) {
            tracing::info!(tenant = tenant_id, org_id = ?org_id, reason = "organisation mismatch", "JWT refused");
            return Err(Reply::new(
                403,
                "org_mismatch",
                "the token belongs to another organisation",
            ));
        }
    }
    let granted = token_scopes(&claims);
    if let Some(missing) = auth.scopes.iter().find(|s| !granted.contains(&s.as_str())) {
        tracing::info!(tenant = tenant_id, scope = %missing, "JWT lacks a scope");
        return Err(insufficient_scope(&auth.scopes, missing));
    }
    Ok(Box::new(User {
        cookie,
        sub: claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        org_id,
        claims,
        issuer: issuer.clone(),
    }))
}

/// Check a request against a route's auth settings. `Ok(None)` on public routes.
pub async fn authenticate(
    auth: &RouteAuth,
    tenant_id: &str,
    tenant: &TenantAuth,
    headers: &HeaderMap,
    keys: &KeyIndex,
    now: SystemTime,
) -> Result<Option<Identity>, Reply> {
    let jwt_token = || -> (Option<&str>, Option<String>) {
        if let Some(t) = bearer(headers).filter(|t| looks_like_jwt(t)) {
            return (Some(t), None);
        }
        tenant
            .issuers
            .iter()
            .filter_map(|i| i.spec.cookie.as_deref())
            .find_map(|c| cookie(headers, c).map(|t| (Some(t), Some(c.to_string()))))
            .unwrap_or((None, None))
    };
    match auth.mode {
        AuthMode::Public => Ok(None),
        AuthMode::ApikeyRequired => check_key(auth, tenant_id, presented_key(headers), keys, now)
            .map(|k| Some(Identity::Key(k))),
        AuthMode::JwtRequired => {
            let (token, cookie) = jwt_token();
            check_jwt(auth, tenant_id, tenant, token, cookie)
                .await
                .map(|u| Some(Identity::User(u)))
        }
        AuthMode::JwtOrApikey => {
            let key_sent = headers.contains_key("x-api-key")
                || bearer(headers).is_some_and(|t| !looks_like_jwt(t));
            if key_sent {
                check_key(auth, tenant_id, presented_key(headers), keys, now)
                    .map(|k| Some(Identity::Key(k)))
            } else {
                let (token, cookie) = jwt_token();
                check_jwt(auth, tenant_id, tenant, token, cookie)
                    .await
                    .map(|u| Some(Identity::User(u)))
            }
        }
    }
}

/// Sent to the origin: the id of the API key that authenticated the request.
pub static X_API_KEY_ID: HeaderName = HeaderName::from_static("x-api-key-id");
/// Sent to the origin: the JWT's `sub` and `org_id`.
pub static X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
pub static X_ORG_ID: HeaderName = HeaderName::from_static("x-org-id");
static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// A header value from claim or id text (control characters make it "-").
fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("-"))
}

/// What the origin is told about who sent the request. Only the gateway speaks for a key
/// or a user: the identity headers (and every claim header of the tenant's issuers) the
/// client sent are removed, then set from `identity`. With `strip_authorization` the
/// credentials themselves (Authorization, X-API-Key, the JWT's cookie) do not reach the
/// origin.
pub fn forward_identity(
    upstream: &mut RequestHeader,
    auth: &RouteAuth,
    tenant: &TenantAuth,
    identity: Option<&Identity>,
) -> pingora::Result<()> {
    for name in [&X_API_KEY_ID, &X_USER_ID, &X_ORG_ID]
        .into_iter()
        .chain(tenant.claim_header_names.iter())
    {
        if upstream.headers.contains_key(name) {
            upstream.remove_header(name);
        }
    }
    if auth.strip_authorization {
        upstream.remove_header(&http::header::AUTHORIZATION);
        upstream.remove_header(&X_API_KEY);
        if let Some(Identity::User(u)) = identity {
            if let Some(name) = &u.cookie {
                match cookie_without(&upstream.headers, name) {
                    Some(rest) => upstream.insert_header(http::header::COOKIE, rest)?,
                    None => {
                        upstream.remove_header(&http::header::COOKIE);
                    }
                }
            }
        }
    }
    match identity {
        Some(Identity::Key(key)) => {
            upstream.insert_header(X_API_KEY_ID.as_str(), header_value(&key.id))?;
        }
        Some(Identity::User(user)) => {
            upstream.insert_header(X_USER_ID.as_str(), header_value(&user.sub))?;
            if let Some(org) = &user.org_id {
                upstream.insert_header(X_ORG_ID.as_str(), header_value(org))?;
            }
            for (claim, header) in &user.issuer.spec.claim_headers {
                let value = match user.claims.get(claim) {
                    Some(Value::String(s)) => s.clone(),
                    Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
                    _ => continue,
                };
                upstream.insert_header(header.to_ascii_lowercase(), header_value(&value))?;
            }
        }
        None => {}
    }
    Ok(())
}

/// The `Cookie` header without the pair named `name` (None when nothing is left).
pub fn cookie_without(headers: &HeaderMap, name: &str) -> Option<String> {
    let rest: Vec<&str> = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| {
            !pair.is_empty() && pair.split_once('=').is_none_or(|(k, _)| k.trim() != name)
        })
        .collect();
    (!rest.is_empty()).then(|| rest.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn index(now: SystemTime) -> KeyIndex {
        let key =
            |id: &str, tenant: &str, secret: &str, status: KeyStatus, expires: Option<&str>| {
                ApiKey {
                    id: id.into(),
                    tenant_id: tenant.into(),
                    name: id.into(),
                    key_hash: hash_key(secret),
                    prefix: String::new(),
                    scopes: vec!["orders:read".into()],
                    expires_at: expires.map(String::from),
                    status,
                    plan_id: None,
                }
            };
        let _ = now;
        KeyIndex::build(
            &[
                key(
                    "good",
                    "acme",
                    "vk_live_good",
                    KeyStatus::Active,
                    Some("2999-01-01T00:00:00Z"),
                ),
                key(
                    "old",
                    "acme",
                    "vk_live_old",
                    KeyStatus::Active,
                    Some("2001-01-01T00:00:00Z"),
                ),
                key("gone", "acme", "vk_live_gone", KeyStatus::Revoked, None),
                key("other", "globex", "vk_live_other", KeyStatus::Active, None),
            ],
            &HashMap::new(),
            &"acme".into(),
        )
        .unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn api_key_outcomes() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let keys = index(now);
        let auth = RouteAuth {
            mode: AuthMode::ApikeyRequired,
            scopes: vec!["orders:read".into()],
            strip_authorization: false,
        };
        let check = |h: &[(&str, &str)]| {
            check_key(&auth, "acme", presented_key(&headers(h)), &keys, now)
                .map(|k| Some(k.id.to_string()))
        };
        assert_eq!(
            check(&[("x-api-key", "vk_live_good")]).unwrap().as_deref(),
            Some("good")
        );
        assert_eq!(
            check(&[("authorization", "Bearer vk_live_good")])
                .unwrap()
                .as_deref(),
            Some("good")
        );
        assert_eq!(
            check(&[("authorization", "bearer  vk_live_good ")])
                .unwrap()
                .as_deref(),
            Some("good")
        );
        for h in [
            vec![],
            vec![("x-api-key", "vk_live_nope")],
            vec![("x-api-key", "vk_live_old")],
            vec![("x-api-key", "vk_live_gone")],
            vec![("x-api-key", "vk_live_other")],
            vec![("authorization", "Basic dXNlcjpwYXNz")],
        ] {
            let e = check(&h).unwrap_err();
            assert_eq!(e.status, 401, "{h:?}");
            assert!(e.headers.iter().any(|(n, _)| n == "www-authenticate"));
        }
        let admin = RouteAuth {
            scopes: vec!["orders:write".into()],
            ..auth.clone()
        };
        let h = headers(&[("x-api-key", "vk_live_good")]);
        let e = check_key(&admin, "acme", presented_key(&h), &keys, now).unwrap_err();
        assert_eq!((e.status, e.code), (403, "insufficient_scope"));
    }

    #[test]
    fn cookie_without_drops_one_pair() {
        let h = headers(&[("cookie", "a=1; __session=tok; b=2")]);
        assert_eq!(cookie_without(&h, "__session").as_deref(), Some("a=1; b=2"));
        let h = headers(&[("cookie", "__session=tok")]);
        assert_eq!(cookie_without(&h, "__session"), None);
    }

    #[test]
    fn generated_keys_look_right() {
        let k = generate_key();
        assert!(k.starts_with("vk_live_") && k.len() == 40, "{k}");
        assert_ne!(k, generate_key());
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
