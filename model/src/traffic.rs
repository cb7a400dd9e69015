//! Traffic management of a route: weighted splits between origins (sticky or random, with
//! match-first rules), mirroring a share of requests to another origin, the API version a
//! route serves (deprecation, sunset), and the answer when no target is available.

use serde::{Deserialize, Serialize};
use std::time::SystemTime;

/// A route's traffic management. Every part is optional; an empty one changes nothing.
/// Example: `{split: {origins: [{origin_id: api, weight: 95}, {origin_id: api-canary, weight: 5}]}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Traffic {
    /// Send shares of the route's requests to several origins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
    /// Copy a share of the route's requests to another origin, discarding its answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,
    /// The API version the route serves, with its deprecation and sunset dates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<ApiVersion>,
    /// What to answer when no target of the origin can take the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
}

impl Traffic {
    /// True when the route has no traffic management.
    pub fn is_default(&self) -> bool {
        *self == Traffic::default()
    }
}

/// A weighted split. The route's own `origin_id` must be one of `origins`; it also takes
/// requests while every weight is 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Split {
    /// Origins of the route's tenant and their relative weights, in a fixed order: a client
    /// falls in the same place of the order whatever the weights, so raising one weight
    /// moves only the clients that must move.
    /// Example: `[{origin_id: api, weight: 95}, {origin_id: api-canary, weight: 5}]`.
    pub origins: Vec<WeightedOrigin>,
    /// What keeps a client on its origin. Absent: each request is drawn at random. A request
    /// without the named credential, header or cookie is drawn at random too.
    /// Example: `{by: api_key}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<StickyBy>,
    /// Checked first, in order: a request matching one goes to its origin whatever the
    /// weights. Example: `[{header: X-Canary, value: "1", origin_id: api-canary}]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<SplitRule>,
}

/// One origin of a split. Example: `{origin_id: api-canary, weight: 5}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WeightedOrigin {
    pub origin_id: String,
    /// 0–10000, relative to the others. Example: `5`.
    pub weight: u32,
}

/// What a sticky split hashes to place a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "by", rename_all = "snake_case", deny_unknown_fields)]
pub enum StickyBy {
    /// The verified API key's id. Example: `{by: api_key}`.
    ApiKey,
    /// The verified JWT's subject. Example: `{by: jwt_subject}`.
    JwtSubject,
    /// A request header's value. Example: `{by: header, name: X-User}`.
    Header { name: String },
    /// A cookie's value. Example: `{by: cookie, name: session}`.
    Cookie { name: String },
    /// The client's address (behind trusted proxies, from X-Forwarded-For).
    /// Example: `{by: client_ip}`.
    ClientIp,
}

/// A match-first rule of a split: a header or a cookie (exactly one) with this value.
/// Example: `{cookie: canary, value: "always", origin_id: api-canary}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SplitRule {
    /// Header name. Example: `X-Canary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Cookie name. Example: `canary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// Exact value. Example: `"1"`.
    pub value: String,
    /// One of the split's origins. Example: `api-canary`.
    pub origin_id: String,
}

/// Mirroring: a copy of a share of the requests (method, path, headers and a bounded body,
/// marked with `X-Vantage-Mirror: 1`) goes to another origin of the tenant; its answer is
/// discarded and it never delays or fails the client's request.
/// Example: `{origin_id: api-next, percent: 10}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    pub origin_id: String,
    /// Share of the requests copied, 0–100. Example: `10`.
    #[serde(default = "hundred")]
    pub percent: f64,
    /// Requests with a larger body are not copied (counted as dropped). 0–1048576.
    /// Example: `65536`.
    #[serde(default = "mirror_body")]
    pub max_body_bytes: usize,
    /// Time the copy may take from connect to the end of its answer. Example: `2000`.
    #[serde(default = "mirror_timeout")]
    pub timeout_ms: u64,
    /// Copies in flight at once per route; more are dropped and counted. 1–10000.
    /// Example: `64`.
    #[serde(default = "mirror_concurrency")]
    pub max_in_flight: usize,
}

fn hundred() -> f64 {
    100.0
}
fn mirror_body() -> usize {
    64 * 1024
}
fn mirror_timeout() -> u64 {
    2000
}
fn mirror_concurrency() -> usize {
    64
}

/// Largest mirrored body.
pub const MIRROR_BODY_MAX: usize = 1 << 20;

/// The API version a route serves. Requests pick a version by the route's own conditions
/// (a path prefix in `path_pattern`, a header in `headers`) or by a media-type parameter of
/// `Accept` (`accept`). Example:
/// `{name: v1, deprecated_at: "2026-06-01T00:00:00Z", sunset_at: "2027-01-01T00:00:00Z", successor: "/v2/"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApiVersion {
    /// Label of the version in metrics. Example: `v1`.
    pub name: String,
    /// The route matches only requests whose `Accept` carries this media-type parameter.
    /// Example: `{param: version, value: "1"}` matches `Accept: application/json; version=1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept: Option<AcceptParam>,
    /// From then on (RFC 3339), responses carry `Deprecation` (RFC 9745); the field is sent
    /// before the date too, announcing it. Example: `"2026-06-01T00:00:00Z"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated_at: Option<String>,
    /// Responses carry `Sunset` (RFC 8594); after it the gateway answers 410 unless
    /// `serve_after_sunset`. Example: `"2027-01-01T00:00:00Z"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sunset_at: Option<String>,
    /// URI of the version that replaces it, sent as `Link: <...>; rel="successor-version"`.
    /// Example: `/v2/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successor: Option<String>,
    /// Keep serving after the sunset date (the fields are still sent). Example: `false`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub serve_after_sunset: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A media-type parameter of `Accept`. Example: `{param: version, value: "2"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AcceptParam {
    /// Parameter name, matched without regard to case. Example: `version`.
    pub param: String,
    /// Exact value (quotes around it in the request are removed). Example: `"2"`.
    pub value: String,
}

/// The answer when no target of the chosen origin is healthy or every breaker is open,
/// instead of the generic 503. It is marked `X-Vantage-Fallback: static` (or `stale`).
/// Example: `{status: 200, content_type: application/json, body: '{"items": []}'}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Fallback {
    /// 200–599. Example: `503`.
    #[serde(default = "fallback_status")]
    pub status: u16,
    /// Example: `application/json`.
    #[serde(default = "fallback_type")]
    pub content_type: String,
    /// At most 65536 bytes. Example: `'{"items": [], "degraded": true}'`.
    #[serde(default)]
    pub body: String,
    /// On a caching route, first answer with the stored response when one is within its
    /// stale-if-error window (the route's `stale_if_error_seconds` or the origin's
    /// `stale-if-error`), marked `X-Vantage-Fallback: stale`. Example: `true`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub stale: bool,
}

fn fallback_status() -> u16 {
    503
}
fn fallback_type() -> String {
    "application/json".into()
}

/// An origin's affinity cookie: the gateway sets it to a token naming the target that
/// served (never its address) and sends the next requests carrying it to that target while
/// it is healthy; otherwise the client moves and the cookie is rewritten.
/// Example: `{cookie: srv, ttl_seconds: 3600, same_site: strict}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CookieAffinity {
    /// Cookie name. Example: `srv`.
    #[serde(default = "affinity_cookie")]
    pub cookie: String,
    /// `Max-Age`; 0 makes a session cookie. At most a year. Example: `3600`.
    #[serde(default)]
    pub ttl_seconds: u64,
    /// `Secure` (sent back over HTTPS only). Example: `true`.
    #[serde(default = "yes")]
    pub secure: bool,
    /// `HttpOnly`. Example: `true`.
    #[serde(default = "yes")]
    pub http_only: bool,
    /// `SameSite`. Example: `lax`.
    #[serde(default)]
    pub same_site: SameSite,
    /// `Path`. Example: `/`.
    #[serde(default = "root_path")]
    pub path: String,
}

/// A cookie's `SameSite` attribute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SameSite {
    Strict,
    #[default]
    Lax,
    None,
}

fn affinity_cookie() -> String {
    "vantage_affinity".into()
}
fn yes() -> bool {
    true
}
fn root_path() -> String {
    "/".into()
}

/// An origin's targets from DNS: the addresses of an A/AAAA name on one port, or the
/// targets and ports of an SRV name (those of the lowest priority, weighted). Names are
/// re-resolved when their records expire (within `server.dns`'s bounds); a new address
/// takes traffic once it passes its first health check, a removed one drains.
/// Example: `{name: api.service.internal, port: 8080}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Discovery {
    /// A/AAAA name. Example: `api.service.internal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Port of the A/AAAA addresses (default 80, or 443 with `tls`). Example: `8080`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// SRV name. Example: `_api._tcp.service.internal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srv: Option<String>,
    /// The targets speak HTTPS (SNI and Host are the name). Example: `false`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub tls: bool,
}

/// The proxy's resolver for DNS discovery. Example:
/// `{nameservers: ["10.0.0.2:53"], min_ttl_ms: 1000, max_ttl_ms: 300000}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsSettings {
    /// `ip:port` of the name servers; empty: the system's (`/etc/resolv.conf`).
    /// Example: `["127.0.0.1:53"]`.
    pub nameservers: Vec<String>,
    /// Re-resolve no sooner than this after an answer, whatever its TTL. Example: `1000`.
    pub min_ttl_ms: u64,
    /// Re-resolve at least this often, whatever the TTL. Example: `300000`.
    pub max_ttl_ms: u64,
    /// Time a query may take. Example: `2000`.
    pub timeout_ms: u64,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            nameservers: Vec::new(),
            min_ttl_ms: 1000,
            max_ttl_ms: 300_000,
            timeout_ms: 2000,
        }
    }
}

/// Largest affinity cookie lifetime (a year).
pub const AFFINITY_TTL_MAX: u64 = 365 * 86_400;

/// Largest fallback body.
pub const FALLBACK_BODY_MAX: usize = 64 * 1024;
/// Largest weight of a split origin.
pub const SPLIT_WEIGHT_MAX: u32 = 10_000;
/// Origins of one split; rules of one split.
pub const SPLIT_ORIGINS: usize = 16;
pub const SPLIT_RULES: usize = 32;

/// An RFC 3339 instant (`2027-01-01T00:00:00Z`, any offset).
pub fn parse_instant(s: &str) -> Result<SystemTime, String> {
    let ts: jiff::Timestamp = s
        .parse()
        .map_err(|e| format!("'{s}' is not an RFC 3339 time: {e}"))?;
    Ok(SystemTime::from(ts))
}
