//! Response caching on pingora-cache: per-route policy, the cache key (always tenant first),
//! RFC 9111 freshness and age, `Vary`, request directives, purges and `X-Cache`.
//!
//! pingora-cache runs the lookup, the cache lock (request coalescing, with the gap between
//! lookup and lock closed by [`lock`]), revalidation and stale serving; this module decides
//! what it may store and for how long, and the [`store`] module is the storage behind it.

pub mod directives;
pub mod invalidate;
pub mod lock;
pub mod purge;
pub mod store;

use crate::telemetry::metrics::METRICS;
use directives::Directives;
use http::header;
use pingora::cache::cache_control::{CacheControl, InterpretCacheControl};
use pingora::cache::key::HashBinary;
use pingora::cache::lock::CacheKeyLockImpl;
use pingora::cache::{
    CacheKey, CacheMeta, CacheOptionOverrides, CachePhase, ForcedFreshness, HttpCache,
    NoCacheReason, RespCacheable, VarianceBuilder,
};
use pingora::http::{RequestHeader, ResponseHeader};
use std::collections::HashSet;
use std::time::{Duration, SystemTime};
use vantage_model::{CacheKeyPattern, CachePolicy, CacheStorageKind};

pub use purge::Purges;
pub use store::{MemoryTier, RedisTier, Store};

/// A route's cache policy, compiled.
#[derive(Debug)]
pub struct CacheRt {
    pub storage: CacheStorageKind,
    default_ttl: Duration,
    honor_origin: bool,
    get: bool,
    head: bool,
    statuses: HashSet<u16>,
    query_in_key: bool,
    key_headers: Vec<http::HeaderName>,
    bypass_headers: Vec<http::HeaderName>,
    bypass_cookies: Vec<String>,
    /// Cookies that do not make a request private.
    ignore_cookies: Vec<String>,
    /// The tenant's JWT cookies: always credentials.
    credential_cookies: Vec<String>,
    /// Store responses with `Set-Cookie` (without the field).
    store_set_cookie: bool,
    /// The content is the same for every caller.
    pub shared: bool,
    swr: u32,
    sie: u32,
    pub max_entry_bytes: usize,
    pub lock_timeout: Duration,
}

impl CacheRt {
    /// `None` when the route does not cache. `credential_cookies`: the tenant's JWT cookies.
    pub fn compile(p: &CachePolicy, credential_cookies: &[String]) -> Option<CacheRt> {
        if !p.enabled {
            return None;
        }
        let names = |v: &[String]| {
            v.iter()
                .filter_map(|h| {
                    http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).ok()
                })
                .collect::<Vec<_>>()
        };
        let mut key_headers = names(&p.key_headers);
        key_headers.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        key_headers.dedup();
        Some(CacheRt {
            storage: p.storage,
            default_ttl: Duration::from_secs(p.default_ttl_seconds),
            honor_origin: p.honor_origin_headers,
            get: p.methods.iter().any(|m| m == "GET"),
            head: p.methods.iter().any(|m| m == "HEAD"),
            statuses: p.statuses.iter().copied().collect(),
            query_in_key: p.key == CacheKeyPattern::PathQuery,
            key_headers,
            bypass_headers: names(&p.bypass.headers),
            bypass_cookies: p.bypass.cookies.clone(),
            ignore_cookies: p.ignore_cookies.clone(),
            credential_cookies: credential_cookies.to_vec(),
            store_set_cookie: p.store_set_cookie,
            shared: p.shared,
            swr: p.stale_while_revalidate_seconds,
            sie: p.stale_if_error_seconds,
            max_entry_bytes: p.max_entry_bytes,
            lock_timeout: Duration::from_millis(p.lock_timeout_ms),
        })
    }

    /// Why this request must not use the cache, if it must not. `credentials`: the request
    /// carries an `Authorization` header or an API key (or was authenticated). Unless the
    /// route is `shared`, a request with credentials or with a cookie the route does not
    /// ignore is private: it is neither answered from the cache nor stored.
    pub fn bypass_reason(&self, req: &RequestHeader, credentials: bool) -> Option<&'static str> {
        let method_ok = match req.method {
            http::Method::GET => self.get,
            http::Method::HEAD => self.head,
            _ => false,
        };
        if !method_ok {
            return Some("method");
        }
        if !self.shared {
            if credentials {
                return Some("credentials");
            }
            if cookie_names(req).any(|name| {
                self.credential_cookies.iter().any(|c| c == name)
                    || !self.ignore_cookies.iter().any(|c| c == name)
            }) {
                return Some("cookie");
            }
        }
        if self
            .bypass_headers
            .iter()
            .any(|h| req.headers.contains_key(h))
        {
            return Some("header");
        }
        if !self.bypass_cookies.is_empty()
            && cookie_names(req).any(|name| self.bypass_cookies.iter().any(|c| c == name))
        {
            return Some("cookie");
        }
        if RequestDirectives::parse(req).no_store {
            return Some("no-store");
        }
        None
    }

    /// The cache key: tenant, the tenant's purge generation, route, scheme and host (the
    /// normal form the tenant was found by: everything the origin is told about the request
    /// is in the key), path (and query), then the listed request headers. Fields are
    /// separated by a byte no URI or header holds.
    pub fn key(
        &self,
        tenant: &str,
        generation: u64,
        route: &str,
        (scheme, host): (&str, &[u8]),
        req: &RequestHeader,
    ) -> CacheKey {
        let mut k = Vec::with_capacity(128);
        k.extend_from_slice(tenant.as_bytes());
        k.push(0);
        k.extend_from_slice(generation.to_string().as_bytes());
        k.push(0);
        k.extend_from_slice(route.as_bytes());
        k.push(0);
        k.extend_from_slice(scheme.as_bytes());
        k.push(0);
        k.extend_from_slice(host);
        k.push(0);
        k.extend_from_slice(req.uri.path().as_bytes());
        if self.query_in_key {
            if let Some(q) = req.uri.query() {
                k.push(b'?');
                k.extend_from_slice(q.as_bytes());
            }
        }
        for name in &self.key_headers {
            k.push(0);
            k.extend_from_slice(name.as_str().as_bytes());
            for v in req.headers.get_all(name) {
                k.push(1);
                k.extend_from_slice(v.as_bytes());
            }
        }
        CacheKey::new(k, tenant)
    }

    /// May this response be stored, and with what freshness (RFC 9111 §3, §4.2)?
    pub fn cacheable(
        &self,
        resp: &ResponseHeader,
        credentials: bool,
        now: SystemTime,
    ) -> RespCacheable {
        let uncacheable =
            |why: &'static str| RespCacheable::Uncacheable(NoCacheReason::Custom(why));
        if !self.statuses.contains(&resp.status.as_u16()) {
            return uncacheable("status");
        }
        let cc = CacheControl::from_resp_headers(resp);
        let cc = cc.as_ref();
        let d = Directives::of(resp, cc);
        if d.no_store {
            return uncacheable("no-store");
        }
        if d.private {
            return uncacheable("private");
        }
        if d.must_understand && !UNDERSTOOD_STATUSES.contains(&resp.status.as_u16()) {
            return uncacheable("must-understand");
        }
        if resp.headers.get_all(header::VARY).iter().any(|v| {
            v.as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii() == b"*")
        }) {
            return uncacheable("vary-star");
        }
        let public = d.public;
        let s_maxage = d.s_maxage;
        if credentials && !self.shared && !(public || s_maxage.is_some() || d.must_revalidate) {
            return uncacheable("authorization");
        }
        // A cookie is for the client it was set for: never replayed from the cache.
        let set_cookie = resp.headers.contains_key(header::SET_COOKIE);
        if set_cookie && !self.store_set_cookie {
            return uncacheable("set-cookie");
        }

        let date = http_date(resp, header::DATE);
        let lifetime = if self.honor_origin {
            let explicit = if d.no_cache {
                Some(Duration::ZERO)
            } else {
                s_maxage
                    .or(d.max_age)
                    .map(|s| Duration::from_secs(u64::from(s)))
                    .or_else(|| {
                        (!d.targeted)
                            .then(|| expires_lifetime(resp, date.unwrap_or(now)))
                            .flatten()
                    })
            };
            match explicit {
                Some(l) => l,
                None if !self.default_ttl.is_zero() => self.default_ttl,
                None => match heuristic(resp, date.unwrap_or(now), public) {
                    Some(l) => l,
                    // Without freshness the entry is kept only to be revalidated.
                    None if has_validator(resp) => Duration::ZERO,
                    None => return uncacheable("no-freshness"),
                },
            }
        } else if !self.default_ttl.is_zero() {
            self.default_ttl
        } else {
            return uncacheable("no-default-ttl");
        };

        // RFC 9111 §4.2.3: the age the response already has when it arrives.
        let apparent = date
            .and_then(|d| now.duration_since(d).ok())
            .unwrap_or_default();
        let initial_age = apparent.max(age_header(resp));
        let epoch = now
            .checked_sub(initial_age)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let fresh_until = if lifetime.is_zero() || initial_age >= lifetime {
            // Stale from the start: it is only served after revalidation.
            now.checked_sub(Duration::from_secs(1)).unwrap_or(now)
        } else {
            epoch + lifetime
        };
        let must_revalidate = d.must_revalidate || d.proxy_revalidate || d.no_cache;
        let (swr, sie) = if must_revalidate {
            (0, 0)
        } else {
            (
                d.stale_while_revalidate.unwrap_or(self.swr),
                d.stale_if_error.unwrap_or(self.sie),
            )
        };
        let mut stored = resp.clone();
        if let Some(c) = cc.filter(|_| !d.targeted) {
            c.strip_private_headers(&mut stored);
        }
        strip_connection_headers(&mut stored);
        if set_cookie {
            stored.remove_header(&header::SET_COOKIE);
        }
        // Pingora writes its own Age from the epoch below.
        stored.remove_header(&header::AGE);
        let mut meta = CacheMeta::new(fresh_until, now, swr, sie, stored);
        meta.set_epoch_override(epoch);
        RespCacheable::Cacheable(meta)
    }
}

/// The names of the request's cookies (a value that is not text counts as one unnamed
/// cookie, so it is never taken for an ignored one).
fn cookie_names(req: &RequestHeader) -> impl Iterator<Item = &str> {
    req.headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(';'))
        .map(|pair| pair.split('=').next().unwrap_or("").trim())
}

/// The stored response updated with the fields of the origin's 304 (RFC 9111 §4.3.4),
/// except the ones that describe the 304's own (empty) body.
pub fn merge_not_modified(
    stored: &ResponseHeader,
    not_modified: &ResponseHeader,
) -> ResponseHeader {
    let mut merged = stored.clone();
    let mut names: Vec<&header::HeaderName> = not_modified.headers.keys().collect();
    names.dedup();
    for name in names {
        // These describe the stored body (and the validator it was checked with), not the
        // 304's.
        if matches!(
            *name,
            header::CONTENT_LENGTH
                | header::TRANSFER_ENCODING
                | header::CONTENT_ENCODING
                | header::CONTENT_RANGE
                | header::CONNECTION
                | header::ETAG
        ) || name.as_str() == "content-md5"
        {
            continue;
        }
        merged.remove_header(name);
        for v in not_modified.headers.get_all(name) {
            let _ = merged.append_header(name.clone(), v.clone());
        }
    }
    merged
}

/// Status codes whose caching semantics this cache knows (RFC 9110 §15), for
/// `must-understand`.
const UNDERSTOOD_STATUSES: [u16; 22] = [
    200, 203, 204, 300, 301, 302, 303, 307, 308, 400, 403, 404, 405, 410, 414, 421, 451, 500, 501,
    502, 503, 504,
];

/// The `Age` field (RFC 9111 §5.1): the first member of the first line, when it is a
/// non-negative integer; anything else is ignored (absent is 0).
fn age_header(resp: &ResponseHeader) -> Duration {
    let first = resp
        .headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .unwrap_or("");
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
        return Duration::ZERO;
    }
    // Overflow means "older than anything": RFC 9111 §1.2.2 caps at 2^31.
    Duration::from_secs(first.parse::<u64>().unwrap_or(1 << 31).min(1 << 31))
}

/// Hop-by-hop fields and those the `Connection` header names are not stored
/// (RFC 9111 §3.1).
fn strip_connection_headers(resp: &mut ResponseHeader) {
    let listed: Vec<String> = resp
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    for name in listed.iter().map(String::as_str).chain([
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    ]) {
        resp.remove_header(name);
    }
}

fn http_date(resp: &ResponseHeader, name: header::HeaderName) -> Option<SystemTime> {
    let v = resp.headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(v).ok()
}

/// `Expires - Date`; an invalid or repeated `Expires` means already expired.
fn expires_lifetime(resp: &ResponseHeader, date: SystemTime) -> Option<Duration> {
    let mut all = resp.headers.get_all(header::EXPIRES).iter();
    let first = all.next()?;
    if all.next().is_some() {
        return Some(Duration::ZERO);
    }
    let expires = first
        .to_str()
        .ok()
        .and_then(|v| httpdate::parse_http_date(v).ok());
    Some(match expires {
        Some(e) => e.duration_since(date).unwrap_or_default(),
        None => Duration::ZERO,
    })
}

/// RFC 9110 §15.1: statuses that may get heuristic freshness.
const HEURISTIC_STATUSES: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

/// 10% of the time since `Last-Modified`, at most a day (RFC 9111 §4.2.2).
fn heuristic(resp: &ResponseHeader, date: SystemTime, public: bool) -> Option<Duration> {
    if !public && !HEURISTIC_STATUSES.contains(&resp.status.as_u16()) {
        return None;
    }
    let lm = http_date(resp, header::LAST_MODIFIED)?;
    let since = date.duration_since(lm).ok()?;
    Some((since / 10).min(Duration::from_secs(86_400)))
}

fn has_validator(resp: &ResponseHeader) -> bool {
    resp.headers.contains_key(header::ETAG) || resp.headers.contains_key(header::LAST_MODIFIED)
}

/// The secondary key of a response with `Vary`: the named request headers' values.
pub fn variance(meta: &CacheMeta, req: &RequestHeader) -> Option<HashBinary> {
    let mut names: Vec<String> = meta
        .headers()
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return None;
    }
    names.sort();
    names.dedup();
    let mut b = VarianceBuilder::new();
    for name in names {
        let mut value = Vec::new();
        let mut present = false;
        for (i, v) in req.headers.get_all(name.as_str()).iter().enumerate() {
            present = true;
            if i > 0 {
                value.extend_from_slice(b", ");
            }
            value.extend_from_slice(v.as_bytes());
        }
        // Absent and empty are different requests.
        value.insert(0, if present { b'=' } else { b'!' });
        b.add_owned_name_value(name, value);
    }
    b.finalize()
}

/// The request's own `Cache-Control` (RFC 9111 §5.2.1) and `Pragma: no-cache`.
#[derive(Debug, Default, PartialEq)]
pub struct RequestDirectives {
    pub no_cache: bool,
    pub no_store: bool,
    pub max_age: Option<u64>,
    pub min_fresh: Option<u64>,
    pub only_if_cached: bool,
}

impl RequestDirectives {
    pub fn parse(req: &RequestHeader) -> RequestDirectives {
        let mut d = RequestDirectives::default();
        let mut seen_cc = false;
        for v in req.headers.get_all(header::CACHE_CONTROL) {
            let Ok(v) = v.to_str() else { continue };
            for part in v.split(',') {
                seen_cc = true;
                let (name, value) = match part.split_once('=') {
                    Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                    None => (part.trim(), None),
                };
                let secs = || value.and_then(|v| v.parse::<u64>().ok());
                match name.to_ascii_lowercase().as_str() {
                    "no-cache" => d.no_cache = true,
                    "no-store" => d.no_store = true,
                    "max-age" => d.max_age = secs().or(Some(0)),
                    "min-fresh" => d.min_fresh = secs(),
                    "only-if-cached" => d.only_if_cached = true,
                    _ => {}
                }
            }
        }
        if !seen_cc {
            d.no_cache = req
                .headers
                .get_all(header::PRAGMA)
                .iter()
                .any(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"));
        }
        d
    }

    /// The stored response must be revalidated before it is used for this request.
    pub fn needs_revalidation(&self, meta: &CacheMeta, now: SystemTime) -> bool {
        if self.no_cache {
            return true;
        }
        let age = meta.age().as_secs();
        if self.max_age.is_some_and(|m| age > m) {
            return true;
        }
        if let Some(min) = self.min_fresh {
            let left = meta
                .fresh_until()
                .duration_since(now)
                .map_or(0, |d| d.as_secs());
            if left < min {
                return true;
            }
        }
        false
    }
}

/// The `X-Cache` value of a response on a caching route.
pub fn status_label(phase: CachePhase) -> &'static str {
    match phase {
        CachePhase::Hit => "HIT",
        CachePhase::Miss => "MISS",
        CachePhase::Expired => "EXPIRED",
        CachePhase::Stale | CachePhase::StaleUpdating => "STALE",
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => "REVALIDATED",
        _ => "BYPASS",
    }
}

/// Everything process-wide the cache needs: the three storages, the lock and the purges.
pub struct Caches {
    pub memory: &'static Store,
    pub redis: Option<&'static Store>,
    pub tiered: Option<&'static Store>,
    pub lock: &'static CacheKeyLockImpl,
    pub purges: &'static Purges,
}

/// Longest a cache lock is honoured before waiters stop trusting the writer.
const LOCK_AGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest entry any route may store (TinyUFO's per-entry weight bound).
pub const MAX_ENTRY_BYTES: usize = 64 << 20;

impl Caches {
    /// Allocate the process's cache storages (they live as long as the process).
    pub fn new(
        memory_bytes: usize,
        redis: Option<(fred::prelude::Client, String, Duration)>,
        purges: &'static Purges,
    ) -> Caches {
        let mem_tier: &'static MemoryTier = Box::leak(Box::new(MemoryTier::new(memory_bytes)));
        let memory: &'static Store =
            Box::leak(Box::new(Store::new(Some(mem_tier), None, MAX_ENTRY_BYTES)));
        let (redis, tiered) = match redis {
            Some((client, prefix, timeout)) => {
                let tier: &'static RedisTier =
                    Box::leak(Box::new(RedisTier::new(client, &prefix, timeout)));
                (
                    Some(&*Box::leak(Box::new(Store::new(
                        None,
                        Some(tier),
                        MAX_ENTRY_BYTES,
                    )))),
                    Some(&*Box::leak(Box::new(Store::new(
                        Some(mem_tier),
                        Some(tier),
                        MAX_ENTRY_BYTES,
                    )))),
                )
            }
            None => (None, None),
        };
        Caches {
            memory,
            redis,
            tiered,
            lock: Box::leak(Box::new(lock::CoalescingLock::new(LOCK_AGE_TIMEOUT))),
            purges,
        }
    }

    /// Turn pingora-cache on for a request of a caching route: the route's storage, the
    /// cache lock with the route's wait, and its entry size bound.
    pub fn enable(&self, cache: &mut HttpCache, policy: &CacheRt) {
        let mut overrides = CacheOptionOverrides::default();
        overrides.wait_timeout = Some(policy.lock_timeout);
        cache.enable(
            self.storage(policy.storage),
            None,
            None,
            Some(self.lock),
            Some(overrides),
        );
        cache.set_max_file_size_bytes(policy.max_entry_bytes);
    }

    /// A fresh or stale hit that must not be served as it is: a purge since it was stored
    /// refetches it; the request's own `no-cache`, `max-age` and `min-fresh` revalidate it.
    pub fn forced_freshness(
        &self,
        tenant: &str,
        req: &RequestHeader,
        meta: &CacheMeta,
        is_fresh: bool,
    ) -> Option<ForcedFreshness> {
        let (path, query) = (req.uri.path(), req.uri.query());
        if self
            .purges
            .purged_after(tenant, path, query, meta.created())
        {
            return Some(ForcedFreshness::ForceMiss);
        }
        if is_fresh && RequestDirectives::parse(req).needs_revalidation(meta, SystemTime::now()) {
            return Some(ForcedFreshness::ForceExpired);
        }
        None
    }

    /// The storage a route asked for (memory when Redis is not configured).
    pub fn storage(&self, kind: CacheStorageKind) -> &'static Store {
        match kind {
            CacheStorageKind::Memory => self.memory,
            CacheStorageKind::Redis => self.redis.unwrap_or(self.memory),
            CacheStorageKind::MemoryRedis => self.tiered.unwrap_or(self.memory),
        }
    }
}

/// The request carries credentials: it was authenticated, or sends `Authorization` or an
/// API key (private routes then bypass the cache).
pub fn carries_credentials(req: &RequestHeader, authenticated: bool) -> bool {
    authenticated
        || req.headers.contains_key(header::AUTHORIZATION)
        || req.headers.contains_key("x-api-key")
}

/// Counts one served response by cache outcome.
pub fn record(label: &'static str) {
    METRICS.cache_responses.with_label_values(&[label]).inc();
}

/// `X-Cache` on a caching route's response, counted; `missed` says the lookup missed even
/// if the response then was not stored. A hit never replays `Set-Cookie` (entries are
/// stored without it; one from an older release may still hold it).
pub fn label_response(
    phase: CachePhase,
    missed: bool,
    resp: &mut ResponseHeader,
) -> pingora::Result<&'static str> {
    let label = match phase {
        CachePhase::Disabled(_) | CachePhase::Bypass if missed => "MISS",
        phase => status_label(phase),
    };
    record(label);
    resp.insert_header("x-cache", label)?;
    if matches!(label, "HIT" | "STALE") {
        resp.remove_header(&header::SET_COOKIE);
    }
    Ok(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CachePolicy {
        CachePolicy {
            enabled: true,
            ..CachePolicy::default()
        }
    }

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    fn fresh_for(c: &RespCacheable, now: SystemTime) -> Option<u64> {
        match c {
            RespCacheable::Cacheable(m) => Some(
                m.fresh_until()
                    .duration_since(now)
                    .map_or(0, |d| d.as_secs()),
            ),
            RespCacheable::Uncacheable(_) => None,
        }
    }

    /// Now, in whole seconds (HTTP dates have no fractions).
    fn whole_now() -> SystemTime {
        let s = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn freshness_follows_rfc_9111_order() {
        let rt = CacheRt::compile(&policy(), &[]).unwrap();
        let now = whole_now();
        let date = httpdate::fmt_http_date(now);
        let r = resp(
            200,
            &[
                ("cache-control", "max-age=60, s-maxage=120"),
                ("date", &date),
            ],
        );
        assert_eq!(fresh_for(&rt.cacheable(&r, false, now), now), Some(120));
        let r = resp(200, &[("cache-control", "max-age=60"), ("date", &date)]);
        assert_eq!(fresh_for(&rt.cacheable(&r, false, now), now), Some(60));
        let exp = httpdate::fmt_http_date(now + Duration::from_secs(300));
        let r = resp(200, &[("expires", &exp), ("date", &date)]);
        let f = fresh_for(&rt.cacheable(&r, false, now), now).unwrap();
        assert!((299..=300).contains(&f), "{f}");
        // Invalid Expires: stored, but already stale.
        let r = resp(200, &[("expires", "0"), ("etag", "\"a\"")]);
        assert_eq!(fresh_for(&rt.cacheable(&r, false, now), now), Some(0));
        // Heuristic: 10% of the Last-Modified age.
        let lm = httpdate::fmt_http_date(now - Duration::from_secs(10_000));
        let r = resp(200, &[("last-modified", &lm), ("date", &date)]);
        let f = fresh_for(&rt.cacheable(&r, false, now), now).unwrap();
        assert!((999..=1000).contains(&f), "{f}");
        // Nothing to go on: not stored.
        assert_eq!(
            fresh_for(&rt.cacheable(&resp(200, &[]), false, now), now),
            None
        );
    }

    #[test]
    fn default_ttl_applies_only_without_origin_freshness() {
        let mut p = policy();
        p.default_ttl_seconds = 30;
        let rt = CacheRt::compile(&p, &[]).unwrap();
        let now = SystemTime::now();
        assert_eq!(
            fresh_for(&rt.cacheable(&resp(200, &[]), false, now), now),
            Some(30)
        );
        let r = resp(200, &[("cache-control", "max-age=5")]);
        assert_eq!(fresh_for(&rt.cacheable(&r, false, now), now), Some(5));
        p.honor_origin_headers = false;
        let rt = CacheRt::compile(&p, &[]).unwrap();
        assert_eq!(fresh_for(&rt.cacheable(&r, false, now), now), Some(30));
        // no-store and private hold even then.
        let r = resp(200, &[("cache-control", "private")]);
        assert_eq!(fresh_for(&rt.cacheable(&r, false, now), now), None);
    }

    #[test]
    fn refusals() {
        let rt = CacheRt::compile(&policy(), &[]).unwrap();
        let now = SystemTime::now();
        for h in ["no-store", "private", "max-age=60, no-store"] {
            let r = resp(200, &[("cache-control", h)]);
            assert_eq!(fresh_for(&rt.cacheable(&r, false, now), now), None, "{h}");
        }
        let r = resp(200, &[("cache-control", "max-age=60"), ("vary", "*")]);
        assert_eq!(fresh_for(&rt.cacheable(&r, false, now), now), None);
        let r = resp(500, &[("cache-control", "max-age=60")]);
        assert_eq!(fresh_for(&rt.cacheable(&r, false, now), now), None);
        // With credentials only an explicitly shareable response is stored.
        let r = resp(200, &[("cache-control", "max-age=60")]);
        assert_eq!(fresh_for(&rt.cacheable(&r, true, now), now), None);
        let r = resp(200, &[("cache-control", "public, max-age=60")]);
        assert_eq!(fresh_for(&rt.cacheable(&r, true, now), now), Some(60));
        let r = resp(
            200,
            &[("cache-control", "max-age=60"), ("set-cookie", "a=b")],
        );
        assert_eq!(fresh_for(&rt.cacheable(&r, false, now), now), None);
        // Not even when public, or on a shared route.
        let r = resp(
            200,
            &[
                ("cache-control", "public, max-age=60"),
                ("set-cookie", "a=b"),
            ],
        );
        assert_eq!(fresh_for(&rt.cacheable(&r, false, now), now), None);
        let mut p = policy();
        p.shared = true;
        let shared = CacheRt::compile(&p, &[]).unwrap();
        assert_eq!(fresh_for(&shared.cacheable(&r, false, now), now), None);
        // A route that opts in stores the response without the cookie.
        p.store_set_cookie = true;
        let opted = CacheRt::compile(&p, &[]).unwrap();
        let RespCacheable::Cacheable(m) = opted.cacheable(&r, false, now) else {
            panic!("stored")
        };
        assert!(!m.headers().contains_key("set-cookie"));
    }

    #[test]
    fn age_counts_upstream_age_and_date() {
        let rt = CacheRt::compile(&policy(), &[]).unwrap();
        let now = SystemTime::now();
        let r = resp(200, &[("cache-control", "max-age=100"), ("age", "30")]);
        let RespCacheable::Cacheable(m) = rt.cacheable(&r, false, now) else {
            panic!("cacheable")
        };
        assert!((30..=31).contains(&m.age().as_secs()));
        let left = m.fresh_until().duration_since(now).unwrap().as_secs();
        assert!((69..=70).contains(&left), "{left}");
        let date = httpdate::fmt_http_date(now - Duration::from_secs(50));
        let r = resp(
            200,
            &[
                ("cache-control", "max-age=100"),
                ("age", "10"),
                ("date", &date),
            ],
        );
        let RespCacheable::Cacheable(m) = rt.cacheable(&r, false, now) else {
            panic!("cacheable")
        };
        assert!((50..=51).contains(&m.age().as_secs()));
        // RFC 9111 §5.1: an invalid Age is ignored; of several, the first counts.
        for (age, fresh) in [
            (&["abc"][..], true),
            (&["-7200"], true),
            (&["7200.0"], true),
            (&["0, 7200"], true),
            (&["0", "7200"], true),
            (&["7200, 0"], false),
            (&["7200", "0"], false),
        ] {
            let mut r = resp(200, &[("cache-control", "max-age=3600")]);
            for a in age {
                r.append_header("age", *a).unwrap();
            }
            let RespCacheable::Cacheable(m) = rt.cacheable(&r, false, now) else {
                panic!("cacheable")
            };
            assert_eq!(m.is_fresh(now), fresh, "{age:?}");
        }
        // Older than its lifetime on arrival: stale at once.
        let r = resp(
            200,
            &[
                ("cache-control", "max-age=10"),
                ("age", "20"),
                ("etag", "\"x\""),
            ],
        );
        assert!(
            !matches!(rt.cacheable(&r, false, now), RespCacheable::Cacheable(ref m) if m.is_fresh(now))
        );
    }

    #[test]
    fn key_separates_tenants_query_and_headers() {
        let mut p = policy();
        p.key = CacheKeyPattern::Path;
        p.key_headers = vec!["Accept-Language".into()];
        let rt = CacheRt::compile(&p, &[]).unwrap();
        use pingora::cache::key::CacheHashKey;
        let mut req = RequestHeader::build("GET", b"/a?x=1", None).unwrap();
        let a = rt.key("acme", 0, "r", ("http", b"h"), &req).combined_bin();
        assert_ne!(
            a,
            rt.key("globex", 0, "r", ("http", b"h"), &req)
                .combined_bin()
        );
        assert_ne!(
            a,
            rt.key("acme", 1, "r", ("http", b"h"), &req).combined_bin()
        );
        assert_ne!(
            a,
            rt.key("acme", 0, "r", ("https", b"h"), &req).combined_bin()
        );
        assert_ne!(
            a,
            rt.key("acme", 0, "r", ("http", b"h2"), &req).combined_bin()
        );
        req.set_uri("/a?x=2".parse().unwrap());
        assert_eq!(
            a,
            rt.key("acme", 0, "r", ("http", b"h"), &req).combined_bin()
        );
        req.insert_header("accept-language", "de").unwrap();
        assert_ne!(
            a,
            rt.key("acme", 0, "r", ("http", b"h"), &req).combined_bin()
        );
        let mut p = policy();
        p.key = CacheKeyPattern::PathQuery;
        let rt = CacheRt::compile(&p, &[]).unwrap();
        let req1 = RequestHeader::build("GET", b"/a?x=1", None).unwrap();
        let req2 = RequestHeader::build("GET", b"/a?x=2", None).unwrap();
        assert_ne!(
            rt.key("acme", 0, "r", ("http", b"h"), &req1).combined_bin(),
            rt.key("acme", 0, "r", ("http", b"h"), &req2).combined_bin()
        );
    }

    #[test]
    fn bypass_rules() {
        let mut p = policy();
        p.bypass.headers = vec!["X-No-Cache".into()];
        p.bypass.cookies = vec!["session".into()];
        let rt = CacheRt::compile(&p, &[]).unwrap();
        let req = RequestHeader::build("GET", b"/", None).unwrap();
        assert_eq!(rt.bypass_reason(&req, false), None);
        assert_eq!(rt.bypass_reason(&req, true), Some("credentials"));
        let post = RequestHeader::build("POST", b"/", None).unwrap();
        assert_eq!(rt.bypass_reason(&post, false), Some("method"));
        let mut r = req.clone();
        r.insert_header("x-no-cache", "1").unwrap();
        assert_eq!(rt.bypass_reason(&r, false), Some("header"));
        let mut r = req.clone();
        r.insert_header("cookie", "a=1; session=xyz").unwrap();
        assert_eq!(rt.bypass_reason(&r, false), Some("cookie"));
        let mut r = req.clone();
        r.insert_header("cookie", "sessionx=1").unwrap();
        assert_eq!(rt.bypass_reason(&r, false), Some("cookie"));
        // Any cookie makes a request private unless the route ignores it; the JWT cookie
        // always does.
        let mut p = policy();
        p.ignore_cookies = vec!["_ga".into(), "__session".into()];
        let rt = CacheRt::compile(&p, &["__session".into()]).unwrap();
        let with = |c: &str| {
            let mut r = req.clone();
            r.insert_header("cookie", c).unwrap();
            rt.bypass_reason(&r, false)
        };
        assert_eq!(with("_ga=1"), None);
        assert_eq!(with("_ga=1; theme=dark"), Some("cookie"));
        assert_eq!(with("__session=eyJ"), Some("cookie"));
        // A shared route is answered from the cache whatever the request carries.
        p.shared = true;
        let rt = CacheRt::compile(&p, &["__session".into()]).unwrap();
        let mut r = req.clone();
        r.insert_header("cookie", "__session=eyJ; theme=dark")
            .unwrap();
        assert_eq!(rt.bypass_reason(&r, true), None);
    }

    #[test]
    fn request_directives() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("cache-control", "max-age=5, min-fresh=2")
            .unwrap();
        let d = RequestDirectives::parse(&req);
        assert_eq!(
            (d.max_age, d.min_fresh, d.no_cache),
            (Some(5), Some(2), false)
        );
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("pragma", "no-cache").unwrap();
        assert!(RequestDirectives::parse(&req).no_cache);
        req.insert_header("cache-control", "max-age=1").unwrap();
        assert!(!RequestDirectives::parse(&req).no_cache);
    }

    #[test]
    fn variance_distinguishes_values_and_absence() {
        let now = SystemTime::now();
        let r = resp(200, &[("vary", "Accept-Language, X-A")]);
        let meta = CacheMeta::new(now, now, 0, 0, r);
        let mut a = RequestHeader::build("GET", b"/", None).unwrap();
        let va = variance(&meta, &a);
        a.insert_header("accept-language", "").unwrap();
        let vb = variance(&meta, &a);
        a.insert_header("accept-language", "de").unwrap();
        let vc = variance(&meta, &a);
        assert!(va.is_some());
        assert_ne!(va, vb);
        assert_ne!(vb, vc);
        let meta = CacheMeta::new(now, now, 0, 0, resp(200, &[]));
        assert_eq!(variance(&meta, &a), None);
    }
}
