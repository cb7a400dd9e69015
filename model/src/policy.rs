//! Request-phase policies: authentication, API keys, rate limits, CORS, security headers and
//! IP rules.

use serde::{Deserialize, Serialize};

/// How a route authenticates requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// No credentials needed.
    #[default]
    Public,
    /// A valid API key of the route's tenant, sent as `X-API-Key` or `Authorization: Bearer`.
    ApikeyRequired,
    /// A valid JWT from one of the tenant's issuers (`Authorization: Bearer`, or the issuer's
    /// cookie).
    JwtRequired,
    /// Either of the two.
    JwtOrApikey,
}

/// Authentication of a route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct RouteAuth {
    /// Example: `apikey_required`.
    pub mode: AuthMode,
    /// Every one of these scopes must be granted to the credential. Example: `[orders:read]`.
    pub scopes: Vec<String>,
    /// Remove the credentials before forwarding: `Authorization`, `X-API-Key` and the JWT
    /// issuer's cookie. Example: `true`.
    pub strip_authorization: bool,
}

/// State of an API key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    #[default]
    Active,
    Revoked,
}

/// An API key. Only the SHA-256 of the key is stored (`vantage-proxy hash-key KEY`, or
/// `printf %s KEY | sha256sum`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// Example: `acme-ci`.
    #[cfg_attr(feature = "openapi", schema(read_only))]
    pub id: String,
    /// Example: `acme`.
    pub tenant_id: String,
    /// Example: `CI pipeline`.
    pub name: String,
    /// Lower-case hex SHA-256 of the whole key (64 characters).
    pub key_hash: String,
    /// The key's visible start, for people to recognise it. Example: `vk_live_3fA9`.
    #[serde(default)]
    pub prefix: String,
    /// Example: `[orders:read, orders:write]`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// RFC 3339 time after which the key is refused. Example: `2027-01-01T00:00:00Z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Example: `revoked`.
    #[serde(default)]
    pub status: KeyStatus,
    /// The key's plan (same tenant): its rate limits and quotas count this key.
    /// Example: `acme-pro`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
}

/// Rate-limit algorithm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LimitAlgorithm {
    /// GCRA: a sustained `rate` per second with bursts of up to `burst` requests.
    /// Example: `{type: token_bucket, rate: 100, burst: 20}`.
    TokenBucket { rate: f64, burst: u32 },
    /// At most `limit` requests in any `period_s` window (two-window estimate).
    /// Example: `{type: sliding_window, limit: 1000, period_s: 60}`.
    SlidingWindow { limit: u32, period_s: u32 },
}

/// Whose requests a policy counts together.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "by", rename_all = "snake_case", deny_unknown_fields)]
pub enum LimitSubject {
    /// The whole tenant.
    Tenant,
    /// The route, across all clients.
    Route,
    /// Each API key (requests without one are counted by client IP).
    ApiKey,
    /// Each JWT subject (`sub`; requests without a token are counted by client IP).
    User,
    /// Each client address.
    ClientIp,
    /// Each value of a request header (requests without it are counted by client IP).
    /// Example: `{by: header, name: X-Customer}`.
    Header { name: String },
}

/// Where counters live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LimitBackend {
    /// In this proxy process.
    #[default]
    Local,
    /// In Redis (`server.redis`), shared by every proxy of the fleet.
    Redis,
}

/// What a Redis-backed policy does when Redis cannot answer within its time budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OnRedisError {
    /// Admit the request (fail open).
    Allow,
    /// Refuse it with 503 `rate_limit_unavailable` (fail closed; never a 401/403).
    Deny,
    /// Count it in this proxy's local limiter instead.
    #[default]
    Local,
}

/// One rate-limit policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RateLimitPolicy {
    /// Name shown in `RateLimit-Policy`. Example: `per-key`.
    pub name: String,
    /// Example: `{type: token_bucket, rate: 100, burst: 20}`.
    pub algorithm: LimitAlgorithm,
    /// Example: `{by: api_key}`.
    pub subject: LimitSubject,
    /// Example: `redis`.
    #[serde(default)]
    pub backend: LimitBackend,
    /// For `redis`: `allow`, `deny` or `local` (default) when Redis fails.
    #[serde(default)]
    pub on_redis_error: OnRedisError,
    /// `shadow`: decide, count and record, but never refuse. Example: `shadow`.
    #[serde(default)]
    pub mode: crate::EnforcementMode,
}

/// CORS policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Cors {
    /// Exact origins, or `*`. Example: `[https://app.acme.test]`.
    pub allowed_origins: Vec<String>,
    /// Example: `[GET, POST, DELETE]`.
    pub allowed_methods: Vec<String>,
    /// Example: `[Authorization, Content-Type, X-API-Key]`.
    pub allowed_headers: Vec<String>,
    /// Response headers a browser may read. Example: `[X-Request-Id]`.
    pub exposed_headers: Vec<String>,
    /// `Access-Control-Allow-Credentials: true` (never with `*`). Example: `true`.
    pub allow_credentials: bool,
    /// Preflight cache time. Example: `600`.
    pub max_age_s: u32,
}

impl Default for Cors {
    fn default() -> Self {
        Cors {
            allowed_origins: Vec::new(),
            allowed_methods: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
                .map(String::from)
                .to_vec(),
            allowed_headers: ["Authorization", "Content-Type", "X-API-Key", "X-Request-Id"]
                .map(String::from)
                .to_vec(),
            exposed_headers: Vec::new(),
            allow_credentials: false,
            max_age_s: 600,
        }
    }
}

/// Security response headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct SecurityHeaders {
    /// Add the headers below to proxied responses (gateway errors always carry them).
    pub enabled: bool,
    /// `Strict-Transport-Security: max-age=...` on HTTPS responses; 0 leaves it out.
    /// Example: `31536000`.
    pub hsts_max_age_s: u32,
    /// `X-Frame-Options`. Example: `DENY`.
    pub frame_options: String,
    /// `Referrer-Policy`. Example: `no-referrer`.
    pub referrer_policy: String,
}

impl Default for SecurityHeaders {
    fn default() -> Self {
        SecurityHeaders {
            enabled: false,
            hsts_max_age_s: 31_536_000,
            frame_options: "DENY".into(),
            referrer_policy: "strict-origin-when-cross-origin".into(),
        }
    }
}

/// IP allow and deny lists (CIDR). Deny wins; a non-empty allow list admits only its ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct IpRules {
    /// Example: `[10.0.0.0/8, 2001:db8::/32]`.
    pub allow: Vec<String>,
    /// Example: `[203.0.113.7/32]`.
    pub deny: Vec<String>,
}

/// Access policy of a tenant; a route's `access` replaces each part it sets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Access {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_headers: Option<SecurityHeaders>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_rules: Option<IpRules>,
}

impl Access {
    /// This policy with `over`'s parts replacing ours where `over` sets them.
    pub fn overlay(&self, over: &Access) -> Access {
        Access {
            cors: over.cors.clone().or_else(|| self.cors.clone()),
            security_headers: over
                .security_headers
                .clone()
                .or_else(|| self.security_headers.clone()),
            ip_rules: over.ip_rules.clone().or_else(|| self.ip_rules.clone()),
        }
    }
}

/// A JWT issuer of a tenant: a JWKS URL (Clerk, any OIDC provider), a static public key, or
/// an HS256 shared secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JwtIssuer {
    /// Example: `acme-clerk`.
    #[cfg_attr(feature = "openapi", schema(read_only))]
    pub id: String,
    /// Example: `acme`.
    pub tenant_id: String,
    /// Expected `iss`. Example: `https://clerk.acme.test`.
    pub issuer: String,
    /// Accepted `aud` values; empty means `aud` is not checked. Example: `[acme-api]`.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Example: `https://clerk.acme.test/.well-known/jwks.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// PEM public key (RSA or EC) instead of a JWKS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_pem: Option<String>,
    /// Shared secret for HS256/384/512 instead of a JWKS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(write_only))]
    pub shared_secret: Option<String>,
    /// Accepted `alg` values. Example: `[RS256, ES256]`. `none` is never accepted.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock leeway for `exp`/`nbf` in seconds. Example: `30`.
    #[serde(default = "default_leeway")]
    pub leeway_s: u64,
    /// Also read the token from this cookie. Example: `__session` (Clerk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// Extra claims sent to the origin as headers. Example: `{email: X-User-Email}`.
    #[serde(default)]
    pub claim_headers: std::collections::BTreeMap<String, String>,
    /// How often the JWKS is fetched again, in seconds. Example: `300`.
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_s: u64,
    /// Least time between two fetches caused by unknown `kid`s, in seconds. Example: `10`.
    #[serde(default = "default_jwks_min_gap")]
    pub jwks_min_refetch_s: u64,
    /// A claim whose value names the subject's plan of the tenant (by the plan's `name`);
    /// its rate limits and quotas then count the token's `sub`. Example: `plan` (Clerk
    /// public metadata exported into the session token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_claim: Option<String>,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into()]
}
fn default_leeway() -> u64 {
    30
}
fn default_jwks_refresh() -> u64 {
    300
}
fn default_jwks_min_gap() -> u64 {
    10
}

/// Where a route's cached responses live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum CacheStorageKind {
    /// This proxy's bounded in-memory cache (`server.cache.memory_bytes`).
    #[default]
    #[serde(rename = "memory")]
    Memory,
    /// The Redis cache tier shared by the fleet (`server.redis`).
    #[serde(rename = "redis")]
    Redis,
    /// Memory in front of Redis: hits come from memory, misses fall through to Redis.
    #[serde(rename = "memory+redis")]
    MemoryRedis,
}

/// Which parts of the request URL go into the cache key (after the tenant).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum CacheKeyPattern {
    /// Path only; the query string is ignored.
    #[serde(rename = "path")]
    Path,
    /// Path and query string.
    #[default]
    #[serde(rename = "path+query")]
    PathQuery,
}

/// Requests that skip the cache (neither served from it nor stored in it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct CacheBypass {
    /// Any of these request headers present. Example: `[X-No-Cache]`.
    pub headers: Vec<String>,
    /// Any of these cookies present. Example: `[session_id]`.
    pub cookies: Vec<String>,
}

/// Response caching of a route. Off unless `enabled`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct CachePolicy {
    /// Example: `true`.
    pub enabled: bool,
    /// Example: `memory+redis`.
    pub storage: CacheStorageKind,
    /// Freshness, in seconds, of a cacheable response that carries no `Cache-Control`
    /// max-age/s-maxage or `Expires` (or of every response when `honor_origin_headers` is
    /// off). `0` means such responses are stored only with heuristic freshness
    /// (10% of `Last-Modified` age). Example: `60`.
    pub default_ttl_seconds: u64,
    /// Follow the origin's `Cache-Control`/`Expires` (RFC 9111). Off: every cacheable status
    /// is stored for `default_ttl_seconds`, but `no-store` and `private` are still honoured.
    /// Example: `true`.
    pub honor_origin_headers: bool,
    /// Methods answered from the cache. Example: `[GET, HEAD]`.
    pub methods: Vec<String>,
    /// Statuses that may be stored. Example: `[200, 301, 404]`.
    pub statuses: Vec<u16>,
    /// `path` or `path+query`. Example: `path`.
    pub key: CacheKeyPattern,
    /// Request headers whose values are added to the key. Example: `[Accept-Language]`.
    pub key_headers: Vec<String>,
    /// Requests that skip the cache.
    pub bypass: CacheBypass,
    /// The content is the same for every caller: responses to requests with credentials
    /// (`Authorization`, an API key, a JWT cookie) may be stored and served to anyone. When
    /// off, such requests — and requests with a cookie not in `ignore_cookies` — bypass
    /// the cache. Example: `false`.
    pub shared: bool,
    /// Serve a stale entry this long past expiry while it is refreshed in the background,
    /// unless the origin says otherwise. Example: `30`.
    pub stale_while_revalidate_seconds: u32,
    /// Serve a stale entry this long past expiry when the origin fails, unless the origin
    /// says otherwise. Example: `300`.
    pub stale_if_error_seconds: u32,
    /// Larger responses are not stored. Example: `1048576`.
    pub max_entry_bytes: usize,
    /// Concurrent misses for one key wait this long for the first one to fill the cache,
    /// then go to the origin themselves. Example: `3000`.
    pub lock_timeout_ms: u64,
    /// Cookies that do not make a request private (analytics, A/B flags). On a route that
    /// is not `shared`, a request carrying any other cookie bypasses the cache; the JWT
    /// issuer's cookie always counts as a credential. Example: `[_ga, ab_variant]`.
    pub ignore_cookies: Vec<String>,
    /// Store responses that carry `Set-Cookie`, without that field: the cookie reaches only
    /// the client whose request filled the cache, never a hit. Off: such responses are not
    /// stored. Example: `false`.
    pub store_set_cookie: bool,
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            enabled: false,
            storage: CacheStorageKind::Memory,
            default_ttl_seconds: 0,
            honor_origin_headers: true,
            methods: vec!["GET".into(), "HEAD".into()],
            // RFC 9110 §15.1 heuristically cacheable statuses.
            statuses: vec![200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501],
            key: CacheKeyPattern::PathQuery,
            key_headers: Vec::new(),
            bypass: CacheBypass::default(),
            shared: false,
            stale_while_revalidate_seconds: 0,
            stale_if_error_seconds: 0,
            max_entry_bytes: 1 << 20,
            lock_timeout_ms: 3000,
            ignore_cookies: Vec::new(),
            store_set_cookie: false,
        }
    }
}
