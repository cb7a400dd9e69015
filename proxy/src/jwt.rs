//! JWT verification (`jsonwebtoken`) against a tenant's issuers: a JWKS URL (fetched and
//! cached), a static PEM public key, or an HS shared secret.
//!
//! - The token's `alg` must be one of the issuer's algorithms, and the key's type must fit it:
//!   `none` and HS-with-an-RSA-key confusion are refused.
//! - An unknown `kid` triggers one JWKS fetch: one fetch in flight at a time and at least
//!   `jwks_min_refetch_s` between such fetches, so a flood of bad tokens cannot hammer the
//!   issuer. Keys are also refreshed in the background every `jwks_refresh_s`. When the
//!   endpoint is down, the cached keys keep working.

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use vantage_model::JwtIssuer;

/// Key family, to pin the token's `alg` to the key's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

fn family_of(alg: Algorithm) -> Family {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Family::Hmac,
        Algorithm::ES256 | Algorithm::ES384 => Family::Ec,
        Algorithm::EdDSA => Family::Ed,
        _ => Family::Rsa,
    }
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<(DecodingKey, Family)>>,
    /// Keys without a `kid` (static keys, or JWKS entries lacking one).
    anonymous: Vec<Arc<(DecodingKey, Family)>>,
}

/// Why a token was refused (logged; the client sees a generic message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("algorithm {0} is not allowed for this issuer")]
    Algorithm(String),
    #[error("no key for kid {0:?}")]
    UnknownKey(Option<String>),
    #[error("token rejected: {0}")]
    Invalid(String),
    #[error("issuer {0:?} is not configured for this tenant")]
    UnknownIssuer(Option<String>),
}

/// The URL a JWKS is fetched from.
struct JwksSource {
    host: String,
    port: u16,
    tls: bool,
    path: String,
    /// Special-purpose networks the fetch may reach (`server.jwks_allowed_networks`).
    allowed: Arc<Vec<ipnet::IpNet>>,
}

/// One configured issuer with its key cache.
pub struct IssuerRt {
    /// The configuration it was built from (reused across reloads when equal).
    pub spec: JwtIssuer,
    algorithms: Vec<Algorithm>,
    keys: ArcSwap<KeySet>,
    jwks: Option<JwksSource>,
    /// Serialises fetches and remembers when the last one started.
    fetch: tokio::sync::Mutex<Option<Instant>>,
    /// Last successful fetch, ms on the process clock (for the background refresh).
    fetched_at: AtomicU64,
    refreshing: AtomicBool,
    /// JWKS fetches done (tests and metrics).
    pub fetches: AtomicU64,
    /// Recently verified tokens (by SHA-256) → claims, until min(exp, 60 s from verification).
    verified: std::sync::Mutex<HashMap<[u8; 32], Verified>>,
}

/// A verified token's claims and the wall-clock ms until which they may be reused.
type Verified = (Arc<Map<String, Value>>, u64);

/// Most verified tokens remembered per issuer.
const VERIFIED_CAP: usize = 10_000;
/// Longest a verification is reused, in ms.
const VERIFIED_TTL_MS: u64 = 60_000;

fn now_ms() -> u64 {
    crate::upstream::breaker::now_ms()
}

/// Milliseconds since the Unix epoch (to compare with `exp`).
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn connector() -> &'static Connector {
    static C: OnceLock<Connector> = OnceLock::new();
    C.get_or_init(|| Connector::new(None))
}

impl IssuerRt {
    /// Build an issuer; a JWKS is fetched once here (off the request path). A JWKS that
    /// cannot be fetched now leaves the key set empty until a later fetch succeeds.
    pub async fn build(
        spec: &JwtIssuer,
        allowed: Arc<Vec<ipnet::IpNet>>,
    ) -> Result<Arc<IssuerRt>, String> {
        let algorithms = spec
            .algorithms
            .iter()
            .map(|a| {
                Algorithm::from_str(a)
                    .map_err(|e| format!("issuer {}: algorithm {a}: {e}", spec.id))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut keys = KeySet::default();
        if let Some(secret) = &spec.shared_secret {
            keys.anonymous.push(Arc::new((
                DecodingKey::from_secret(secret.as_bytes()),
                Family::Hmac,
            )));
        }
        if let Some(pem) = &spec.public_key_pem {
            let key = DecodingKey::from_rsa_pem(pem.as_bytes())
                .map(|k| (k, Family::Rsa))
                .or_else(|_| DecodingKey::from_ec_pem(pem.as_bytes()).map(|k| (k, Family::Ec)))
                .or_else(|_| DecodingKey::from_ed_pem(pem.as_bytes()).map(|k| (k, Family::Ed)))
                .map_err(|e| format!("issuer {}: public_key_pem: {e}", spec.id))?;
            keys.anonymous.push(Arc::new(key));
        }
        let jwks = match &spec.jwks_url {
            Some(url) => Some(
                parse_url(url, allowed)
                    .map_err(|e| format!("issuer {}: jwks_url: {e}", spec.id))?,
            ),
            None => None,
        };
        let issuer = Arc::new(IssuerRt {
            spec: spec.clone(),
            algorithms,
            keys: ArcSwap::from_pointee(keys),
            jwks,
            fetch: tokio::sync::Mutex::new(None),
            fetched_at: AtomicU64::new(0),
            refreshing: AtomicBool::new(false),
            fetches: AtomicU64::new(0),
            verified: std::sync::Mutex::new(HashMap::new()),
        });
        if issuer.jwks.is_some() {
            if let Err(e) = issuer.fetch_jwks().await {
                tracing::warn!(issuer = %spec.id, "JWKS not available yet: {e}");
            }
        }
        Ok(issuer)
    }

    async fn fetch_jwks(&self) -> Result<(), String> {
        let Some(src) = &self.jwks else {
            return Ok(());
        };
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let body = tokio::time::timeout(Duration::from_secs(3), http_get(src))
            .await
            .map_err(|_| "timed out".to_string())??;
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut keys = KeySet::default();
        for jwk in &set.keys {
            let family = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Family::Rsa,
                AlgorithmParameters::EllipticCurve(_) => Family::Ec,
                AlgorithmParameters::OctetKeyPair(_) => Family::Ed,
                // Symmetric keys are never published; refuse to treat one as a public key.
                _ => continue,
            };
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let key = Arc::new((key, family));
            match &jwk.common.key_id {
                Some(kid) => {
                    keys.by_kid.insert(kid.clone(), key);
                }
                None => keys.anonymous.push(key),
            }
        }
        tracing::info!(issuer = %self.spec.id, keys = keys.by_kid.len() + keys.anonymous.len(), "JWKS loaded");
        self.keys.store(Arc::new(keys));
        self.fetched_at.store(now_ms(), Ordering::Release);
        Ok(())
    }

    /// One fetch at a time, and none sooner than `jwks_min_refetch_s` after the last.
    async fn refetch_for_unknown_kid(&self) {
        let mut last = self.fetch.lock().await;
        let gap = Duration::from_secs(self.spec.jwks_min_refetch_s);
        if last.is_some_and(|t| t.elapsed() < gap) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.fetch_jwks().await {
            tracing::warn!(issuer = %self.spec.id, "JWKS fetch failed; keeping cached keys: {e}");
        }
    }

    /// Start a background refresh when the cached set is older than `jwks_refresh_s`.
    fn maybe_refresh(self: &Arc<Self>) {
        if self.jwks.is_none() {
            return;
        }
        let age = now_ms().saturating_sub(self.fetched_at.load(Ordering::Acquire));
        if age < self.spec.jwks_refresh_s * 1000 || self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            me.refetch_for_unknown_kid().await;
            me.refreshing.store(false, Ordering::Release);
        });
    }

    fn find_key(&self, kid: Option<&str>, family: Family) -> Option<Arc<(DecodingKey, Family)>> {
        let keys = self.keys.load();
        match kid {
            Some(kid) => keys.by_kid.get(kid).cloned(),
            None => None,
        }
        .or_else(|| keys.anonymous.iter().find(|k| k.1 == family).cloned())
        .filter(|k| k.1 == family)
    }

    /// Verify `token`; returns its claims. A token verified in the last 60 s (and not yet
    /// expired) is answered from a small cache: RS256 verification costs far more CPU than
    /// proxying a request, and clients send the same token many times.
    pub async fn verify(
        self: &Arc<Self>,
        token: &str,
    ) -> Result<Arc<Map<String, Value>>, JwtError> {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let now = wall_ms();
        if let Some((claims, until)) = self
            .verified
            .lock()
            .ok()
            .and_then(|m| m.get(&digest).cloned())
        {
            if now < until {
                return Ok(claims);
            }
        }
        let claims = Arc::new(self.verify_uncached(token).await?);
        let exp_ms = claims
            .get("exp")
            .and_then(Value::as_u64)
            .map_or(0, |e| e.saturating_mul(1000));
        let until = exp_ms.min(now + VERIFIED_TTL_MS);
        if let Ok(mut m) = self.verified.lock() {
            if m.len() >= VERIFIED_CAP {
                m.retain(|_, (_, u)| *u > now);
                if m.len() >= VERIFIED_CAP {
                    m.clear();
                }
            }
            m.insert(digest, (claims.clone(), until));
        }
        Ok(claims)
    }

    async fn verify_uncached(
        self: &Arc<Self>,
        token: &str,
    ) -> Result<Map<String, Value>, JwtError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| JwtError::Malformed(e.to_string()))?;
        // RFC 7515 §4.1.11: this verifier understands no header extension, so a token that
        // makes any critical is refused (an empty list is malformed too).
        if header.crit.is_some() {
            return Err(JwtError::Invalid(
                "the token's header marks extensions critical that this gateway does not understand"
                    .into(),
            ));
        }
        if !self.algorithms.contains(&header.alg) {
            return Err(JwtError::Algorithm(format!("{:?}", header.alg)));
        }
        let family = family_of(header.alg);
        self.maybe_refresh();
        let key = match self.find_key(header.kid.as_deref(), family) {
            Some(k) => k,
            None if self.jwks.is_some() => {
                self.refetch_for_unknown_kid().await;
                self.find_key(header.kid.as_deref(), family)
                    .ok_or_else(|| JwtError::UnknownKey(header.kid.clone()))?
            }
            None => return Err(JwtError::UnknownKey(header.kid.clone())),
        };
        let mut v = Validation::new(header.alg);
        v.leeway = self.spec.leeway_s;
        v.validate_nbf = true;
        v.set_issuer(&[&self.spec.issuer]);
        if self.spec.audiences.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&self.spec.audiences);
        }
        v.required_spec_claims =
            HashSet::from(["exp".to_string(), "iss".to_string(), "sub".to_string()]);
        jsonwebtoken::decode::<Map<String, Value>>(token, &key.0, &v)
            .map(|d| d.claims)
            .map_err(|e| JwtError::Invalid(e.to_string()))
    }
}

/// The issuer a token claims (`iss`), read without trusting it, to pick the verifier.
pub fn claimed_issuer(token: &str) -> Option<String> {
    let claims: Map<String, Value> = jsonwebtoken::dangerous::insecure_decode_claims(token).ok()?;
    claims.get("iss").and_then(Value::as_str).map(String::from)
}

fn parse_url(url: &str, allowed: Arc<Vec<ipnet::IpNet>>) -> Result<JwksSource, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("scheme must be http or https".into()),
    };
    let host = uri
        .host()
        .ok_or("no host")?
        .trim_matches(['[', ']'])
        .to_string();
    Ok(JwksSource {
        port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        path: uri
            .path_and_query()
            .map_or("/".into(), |p| p.as_str().to_string()),
        host,
        tls,
        allowed,
    })
}

/// The address to fetch from: the host resolved here (never again by the connector, so a
/// name cannot resolve to one address for this check and another for the connection), and
/// the first address the network rules admit.
async fn resolve(src: &JwksSource) -> Result<std::net::SocketAddr, String> {
    let addrs: Vec<std::net::SocketAddr> = match src.host.parse::<std::net::IpAddr>() {
        Ok(ip) => vec![std::net::SocketAddr::new(ip, src.port)],
        Err(_) => tokio::net::lookup_host((src.host.as_str(), src.port))
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", src.host))?
            .collect(),
    };
    let mut refusal = format!("{} resolves to no address", src.host);
    for addr in addrs {
        match vantage_model::netrules::fetch_allowed(addr.ip(), src.tls, &src.allowed) {
            Ok(()) => return Ok(addr),
            Err(e) => refusal = e,
        }
    }
    Err(refusal)
}

async fn http_get(src: &JwksSource) -> Result<Vec<u8>, String> {
    let addr = resolve(src).await?;
    let sni = if src.tls {
        src.host.clone()
    } else {
        String::new()
    };
    let mut peer = HttpPeer::new(addr, src.tls, sni);
    peer.options.connection_timeout = Some(Duration::from_secs(2));
    peer.options.read_timeout = Some(Duration::from_secs(2));
    let (mut session, _) = connector()
        .get_http_session(&peer)
        .await
        .map_err(|e| e.to_string())?;
    let mut req =
        RequestHeader::build("GET", src.path.as_bytes(), None).map_err(|e| e.to_string())?;
    req.insert_header("host", src.host.as_str())
        .map_err(|e| e.to_string())?;
    req.insert_header("accept", "application/json")
        .map_err(|e| e.to_string())?;
    req.insert_header("connection", "close")
        .map_err(|e| e.to_string())?;
    session
        .write_request_header(Box::new(req))
        .await
        .map_err(|e| e.to_string())?;
    session
        .finish_request_body()
        .await
        .map_err(|e| e.to_string())?;
    session
        .read_response_header()
        .await
        .map_err(|e| e.to_string())?;
    let status = session.response_header().map_or(0, |r| r.status.as_u16());
    if status != 200 {
        return Err(format!("HTTP {status}"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = session
        .read_response_body()
        .await
        .map_err(|e| e.to_string())?
    {
        body.extend_from_slice(&chunk);
        if body.len() > 1 << 20 {
            return Err("JWKS larger than 1 MiB".into());
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const SECRET: &str = "an-hs256-secret-that-is-long-enough!!";

    fn issuer(algs: &[&str]) -> JwtIssuer {
        JwtIssuer {
            id: "i".into(),
            tenant_id: "t".into(),
            issuer: "https://issuer.test".into(),
            audiences: vec!["api".into()],
            jwks_url: None,
            public_key_pem: None,
            shared_secret: Some(SECRET.into()),
            algorithms: algs.iter().map(|a| a.to_string()).collect(),
            leeway_s: 5,
            cookie: None,
            claim_headers: Default::default(),
            jwks_refresh_s: 300,
            jwks_min_refetch_s: 10,
            plan_claim: None,
        }
    }

    fn token(claims: Value, alg: Algorithm) -> String {
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[tokio::test]
    async fn hs256_claims_are_checked() {
        let i = IssuerRt::build(&issuer(&["HS256"]), Arc::default())
            .await
            .unwrap();
        let ok = serde_json::json!({"sub": "u1", "iss": "https://issuer.test", "aud": "api", "exp": now() + 60});
        assert_eq!(
            i.verify(&token(ok.clone(), Algorithm::HS256))
                .await
                .unwrap()["sub"],
            "u1"
        );
        let mut bad = ok.clone();
        bad["exp"] = (now() - 60).into();
        assert!(matches!(
            i.verify(&token(bad, Algorithm::HS256)).await,
            Err(JwtError::Invalid(_))
        ));
        let mut bad = ok.clone();
        bad["nbf"] = (now() + 60).into();
        assert!(i.verify(&token(bad, Algorithm::HS256)).await.is_err());
        let mut bad = ok.clone();
        bad["aud"] = "other".into();
        assert!(i.verify(&token(bad, Algorithm::HS256)).await.is_err());
        let mut bad = ok.clone();
        bad["iss"] = "https://evil.test".into();
        assert!(i.verify(&token(bad, Algorithm::HS256)).await.is_err());
        // Not an allowed algorithm for this issuer.
        assert!(matches!(
            i.verify(&token(ok.clone(), Algorithm::HS512)).await,
            Err(JwtError::Algorithm(_))
        ));
        // Tampered payload.
        let t = token(ok, Algorithm::HS256);
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        parts[1] = parts[1].replace('A', "B");
        assert!(i.verify(&parts.join(".")).await.is_err());
    }

    #[tokio::test]
    async fn alg_none_is_refused() {
        use base64::Engine;
        let i = IssuerRt::build(&issuer(&["HS256"]), Arc::default())
            .await
            .unwrap();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64.encode(format!(
            r#"{{"sub":"u","iss":"https://issuer.test","aud":"api","exp":{}}}"#,
            now() + 60
        ));
        assert!(matches!(
            i.verify(&format!("{header}.{body}.")).await,
            Err(JwtError::Malformed(_))
        ));
    }
}
