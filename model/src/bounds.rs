//! Upper bounds of every string, list and number in the configuration (the configuration
//! reference in `docs/security.md` lists them). Larger values are refused by validation
//! with the field's path, so a file, the admin API and Postgres can never hold a value that
//! slows every reload or breaks every request.

/// Display names (tenant, API key). Characters, not bytes.
pub const NAME_CHARS: usize = 200;
/// Header names, cookie names, methods and other RFC 9110 tokens.
pub const TOKEN_BYTES: usize = 128;
/// A header value set by configuration (transforms, header conditions, security headers).
pub const HEADER_VALUE_BYTES: usize = 4096;
/// Path patterns, prefixes, health-check paths, rewrite patterns and replacements.
pub const PATH_BYTES: usize = 1024;
/// URLs (JWKS, OTLP, CORS origins).
pub const URL_BYTES: usize = 2048;
/// A PEM public key.
pub const PEM_BYTES: usize = 16 * 1024;
/// An HS shared secret.
pub const SECRET_BYTES: usize = 1024;
/// JWT `iss` and each audience.
pub const ISSUER_BYTES: usize = 1024;
/// Clerk organisation ids and API key prefixes.
pub const SHORT_TEXT_BYTES: usize = 128;

/// Custom hosts of one tenant.
pub const CUSTOM_HOSTS: usize = 100;
/// Targets of one origin.
pub const TARGETS: usize = 256;
/// Methods, header conditions of one route.
pub const ROUTE_METHODS: usize = 16;
pub const ROUTE_HEADERS: usize = 16;
/// Entries of one header transform (add, set and remove each).
pub const TRANSFORM_ENTRIES: usize = 64;
/// Rate-limit policies of one route or tenant.
pub const POLICIES: usize = 16;
/// Scopes of a route or an API key.
pub const SCOPES: usize = 64;
/// Entries of one list in a cache policy (statuses, key headers, bypass and ignored cookies).
pub const CACHE_LIST: usize = 32;
/// CORS origins; CORS methods and headers.
pub const CORS_ORIGINS: usize = 100;
pub const CORS_TOKENS: usize = 64;
/// IP allow/deny entries, trusted proxies, JWKS networks.
pub const CIDRS: usize = 1000;
/// Audiences, algorithms and claim headers of one JWT issuer.
pub const AUDIENCES: usize = 32;
pub const CLAIM_HEADERS: usize = 32;

/// Largest JWT clock leeway, seconds.
pub const LEEWAY_S: u64 = 3600;
/// Largest JWKS refresh interval and refetch gap, seconds.
pub const JWKS_REFRESH_S: u64 = 86_400;
/// Largest timeout or interval anywhere, milliseconds (one hour).
pub const TIMEOUT_MS: u64 = 3_600_000;
/// Largest stale-while-revalidate / stale-if-error, seconds (one week).
pub const STALE_S: u32 = 7 * 86_400;
/// Largest CORS preflight max-age, seconds (one day).
pub const CORS_MAX_AGE_S: u32 = 86_400;
/// Largest token-bucket rate (per second) and burst, sliding-window limit.
pub const RATE: f64 = 1_000_000.0;
pub const BURST: u32 = 1_000_000;
pub const WINDOW_LIMIT: u32 = 1_000_000_000;
/// Largest quota limit (units per period) and route cost.
pub const QUOTA_LIMIT: i64 = 1_000_000_000_000_000;
pub const QUOTA_COST: i64 = 1_000_000;
/// Largest route priority, either sign.
pub const PRIORITY: i32 = 1_000_000;
/// Health-check thresholds; breaker failure threshold.
pub const THRESHOLD: u32 = 100;
pub const BREAKER_FAILURES: u32 = 10_000;
/// Largest amount of money in a plan's price (minor units): 10^13, a hundred billion of a
/// two-decimal currency, far from overflowing a bill's arithmetic.
pub const MONEY: i64 = 10_000_000_000_000;
