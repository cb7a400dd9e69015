//! Policies shared by tenants and routes: access (CORS, security headers, IP rules), rate
//! limits, header transforms and response caching.

use super::rules::{parse_cidr, valid_header_value, valid_id, valid_token};
use super::Collector;
use crate::bounds as b;
use crate::{Access, CachePolicy, HeaderTransform, LimitAlgorithm, LimitSubject, RateLimitPolicy};
use std::collections::HashSet;

/// A route's cache policy (only when enabled); Redis storage needs a fleet with Redis.
pub(super) fn check_cache(c: &mut Collector, p: &str, cp: &CachePolicy, has_redis: bool) {
    if !cp.enabled {
        return;
    }
    if cp.storage != crate::CacheStorageKind::Memory && !has_redis {
        c.err(
            format!("{p}.storage"),
            "redis storage needs server.redis to be configured",
        );
    }
    if cp.methods.is_empty() {
        c.err(format!("{p}.methods"), "must list GET and/or HEAD");
    }
    for (k, m) in cp.methods.iter().enumerate() {
        if m != "GET" && m != "HEAD" {
            c.err(
                format!("{p}.methods[{k}]"),
                format!("'{m}' cannot be cached; only GET and HEAD can"),
            );
        }
    }
    if cp.statuses.is_empty() {
        c.err(format!("{p}.statuses"), "must list at least one status");
    }
    for (k, s) in cp.statuses.iter().enumerate() {
        if !(200..=599).contains(s) || *s == 206 || *s == 304 {
            c.err(
                format!("{p}.statuses[{k}]"),
                format!("{s} cannot be stored (200-599, except 206 and 304)"),
            );
        }
    }
    for (field, n) in [
        ("methods", cp.methods.len()),
        ("statuses", cp.statuses.len()),
        ("key_headers", cp.key_headers.len()),
        ("bypass.headers", cp.bypass.headers.len()),
        ("bypass.cookies", cp.bypass.cookies.len()),
        ("ignore_cookies", cp.ignore_cookies.len()),
    ] {
        c.max_items(format!("{p}.{field}"), n, b::CACHE_LIST);
    }
    for (k, h) in cp.key_headers.iter().enumerate() {
        if !valid_token(h) {
            c.err(format!("{p}.key_headers[{k}]"), "not a valid header name");
        }
    }
    for (k, h) in cp.ignore_cookies.iter().enumerate() {
        if !valid_token(h) {
            c.err(
                format!("{p}.ignore_cookies[{k}]"),
                "not a valid cookie name",
            );
        }
    }
    c.range(
        format!("{p}.stale_while_revalidate_seconds"),
        cp.stale_while_revalidate_seconds,
        0,
        b::STALE_S,
    );
    c.range(
        format!("{p}.stale_if_error_seconds"),
        cp.stale_if_error_seconds,
        0,
        b::STALE_S,
    );
    for (k, h) in cp.bypass.headers.iter().enumerate() {
        if !valid_token(h) {
            c.err(
                format!("{p}.bypass.headers[{k}]"),
                "not a valid header name",
            );
        }
    }
    for (k, h) in cp.bypass.cookies.iter().enumerate() {
        if !valid_token(h) {
            c.err(
                format!("{p}.bypass.cookies[{k}]"),
                "not a valid cookie name",
            );
        }
    }
    if cp.max_entry_bytes == 0 || cp.max_entry_bytes > 64 << 20 {
        c.err(
            format!("{p}.max_entry_bytes"),
            "must be between 1 and 67108864 (64 MiB)",
        );
    }
    if cp.lock_timeout_ms == 0 || cp.lock_timeout_ms > 60_000 {
        c.err(
            format!("{p}.lock_timeout_ms"),
            "must be between 1 and 60000",
        );
    }
    if cp.default_ttl_seconds > 365 * 24 * 3600 {
        c.err(
            format!("{p}.default_ttl_seconds"),
            "must be at most one year (31536000)",
        );
    }
}

/// Header changes of a route: valid names and values, bounded lists.
pub(super) fn check_transform(c: &mut Collector, path: &str, t: &HeaderTransform) {
    c.max_items(format!("{path}.add"), t.add.len(), b::TRANSFORM_ENTRIES);
    c.max_items(format!("{path}.set"), t.set.len(), b::TRANSFORM_ENTRIES);
    c.max_items(
        format!("{path}.remove"),
        t.remove.len(),
        b::TRANSFORM_ENTRIES,
    );
    for (name, value) in t.add.iter().chain(t.set.iter()) {
        let which = if t.add.contains_key(name) {
            "add"
        } else {
            "set"
        };
        if !valid_token(name) {
            c.err(format!("{path}.{which}.{name}"), "not a valid header name");
        }
        if !valid_header_value(value) {
            c.err(
                format!("{path}.{which}.{name}"),
                "header value contains control characters",
            );
        }
        c.max_len(
            format!("{path}.{which}.{name}"),
            value,
            b::HEADER_VALUE_BYTES,
        );
    }
    for (i, name) in t.remove.iter().enumerate() {
        if !valid_token(name) {
            c.err(format!("{path}.remove[{i}]"), "not a valid header name");
        }
    }
}

/// Rate-limit policies of a tenant or route: unique names, sane numbers, Redis-backed ones
/// only on a fleet with Redis.
pub(super) fn check_limits(c: &mut Collector, path: &str, limits: &[RateLimitPolicy], redis: bool) {
    c.max_items(path, limits.len(), b::POLICIES);
    let mut names = HashSet::new();
    for (i, l) in limits.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if !valid_id(&l.name) {
            c.err(
                format!("{p}.name"),
                "must be 1-64 characters of A-Z a-z 0-9 . _ -",
            );
        } else if !names.insert(l.name.as_str()) {
            c.err(format!("{p}.name"), format!("'{}' is listed twice", l.name));
        }
        match &l.algorithm {
            LimitAlgorithm::TokenBucket { rate, burst } => {
                if !(rate.is_finite() && *rate > 0.0 && *rate <= b::RATE) {
                    c.err(
                        format!("{p}.algorithm.rate"),
                        format!(
                            "must be a positive number of requests per second, at most {}",
                            b::RATE
                        ),
                    );
                }
                if *burst == 0 {
                    c.err(format!("{p}.algorithm.burst"), "must be at least 1");
                }
                c.range(format!("{p}.algorithm.burst"), *burst, 0, b::BURST);
            }
            LimitAlgorithm::SlidingWindow { limit, period_s } => {
                c.range(format!("{p}.algorithm.limit"), *limit, 1, b::WINDOW_LIMIT);
                if *period_s == 0 || *period_s > 86_400 {
                    c.err(
                        format!("{p}.algorithm.period_s"),
                        "must be between 1 and 86400",
                    );
                }
            }
        }
        if l.backend == crate::LimitBackend::Redis && !redis {
            c.err(format!("{p}.backend"), "backend redis needs server.redis");
        }
        if let LimitSubject::Header { name } = &l.subject {
            if !valid_token(name) {
                c.err(format!("{p}.subject.name"), "not a valid header name");
            }
        }
    }
}

/// A CORS origin: `*` or a lower-case `http(s)://host[:port]`.
fn check_origin_value(o: &str) -> bool {
    o == "*"
        || ["http://", "https://"].iter().any(|scheme| {
            o.strip_prefix(scheme).is_some_and(|rest| {
                !rest.is_empty()
                    && !rest.contains(['/', '?', '#', ' '])
                    && rest == rest.to_ascii_lowercase()
            })
        })
}

/// An access policy of a tenant or route.
pub(super) fn check_access(c: &mut Collector, path: &str, a: &Access) {
    if let Some(cors) = &a.cors {
        c.max_items(
            format!("{path}.cors.allowed_origins"),
            cors.allowed_origins.len(),
            b::CORS_ORIGINS,
        );
        c.range(
            format!("{path}.cors.max_age_s"),
            cors.max_age_s,
            0,
            b::CORS_MAX_AGE_S,
        );
        for (i, o) in cors.allowed_origins.iter().enumerate() {
            if !check_origin_value(o) {
                c.err(
                    format!("{path}.cors.allowed_origins[{i}]"),
                    format!("'{o}' is not '*' or a lower-case origin like https://app.example.com"),
                );
            }
        }
        if cors.allow_credentials && cors.allowed_origins.iter().any(|o| o == "*") {
            c.err(
                format!("{path}.cors.allow_credentials"),
                "cannot be combined with the '*' origin; list the origins",
            );
        }
        for (field, list) in [
            ("allowed_methods", &cors.allowed_methods),
            ("allowed_headers", &cors.allowed_headers),
            ("exposed_headers", &cors.exposed_headers),
        ] {
            c.max_items(format!("{path}.cors.{field}"), list.len(), b::CORS_TOKENS);
            for (i, v) in list.iter().enumerate() {
                if !valid_token(v) {
                    c.err(
                        format!("{path}.cors.{field}[{i}]"),
                        format!("'{v}' is not a valid token"),
                    );
                }
            }
        }
    }
    if let Some(sh) = &a.security_headers {
        for (field, v) in [
            ("frame_options", &sh.frame_options),
            ("referrer_policy", &sh.referrer_policy),
        ] {
            if v.is_empty() || !valid_header_value(v) || v.len() > b::HEADER_VALUE_BYTES {
                c.err(
                    format!("{path}.security_headers.{field}"),
                    format!(
                        "must be a non-empty header value of at most {} bytes",
                        b::HEADER_VALUE_BYTES
                    ),
                );
            }
        }
    }
    if let Some(ip) = &a.ip_rules {
        for (field, list) in [("allow", &ip.allow), ("deny", &ip.deny)] {
            c.max_items(format!("{path}.ip_rules.{field}"), list.len(), b::CIDRS);
            for (i, v) in list.iter().enumerate() {
                if parse_cidr(v).is_none() {
                    c.err(
                        format!("{path}.ip_rules.{field}[{i}]"),
                        format!("'{v}' is not an IP address or CIDR range"),
                    );
                }
            }
        }
    }
}
