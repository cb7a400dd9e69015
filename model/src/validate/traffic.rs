//! A route's traffic management: split and mirror origins of the route's own tenant,
//! weights, rules, the version's dates and successor, the fallback answer.

use super::origins::OriginOwners;
use super::rules::{valid_header_value, valid_token};
use super::Collector;
use crate::bounds as b;
use crate::traffic::{self as t, parse_instant, StickyBy, Traffic};
use crate::Route;

/// `p` is the route's path (`routes[3]`).
pub(super) fn check(c: &mut Collector, p: &str, r: &Route, origins: &OriginOwners<'_>) {
    let Traffic {
        split,
        mirror,
        version,
        fallback,
    } = &r.traffic;
    let p = format!("{p}.traffic");
    let origin = |c: &mut Collector, path: String, id: &str| match origins.get(id) {
        None => c.reference(path, format!("no origin has id '{id}'")),
        Some((_, owner)) if *owner != r.tenant_id => c.reference(
            path,
            format!(
                "origin '{id}' belongs to tenant '{owner}', not '{}'",
                r.tenant_id
            ),
        ),
        Some(_) => {}
    };
    if let Some(s) = split {
        let sp = format!("{p}.split");
        if s.origins.is_empty() {
            c.err(format!("{sp}.origins"), "must name at least one origin");
        }
        c.max_items(format!("{sp}.origins"), s.origins.len(), t::SPLIT_ORIGINS);
        let mut seen: Vec<&str> = Vec::new();
        for (k, o) in s.origins.iter().enumerate() {
            let op = format!("{sp}.origins[{k}]");
            origin(c, format!("{op}.origin_id"), &o.origin_id);
            if seen.contains(&o.origin_id.as_str()) {
                c.err(
                    format!("{op}.origin_id"),
                    format!("'{}' is listed twice", o.origin_id),
                );
            }
            seen.push(&o.origin_id);
            c.range(format!("{op}.weight"), o.weight, 0, t::SPLIT_WEIGHT_MAX);
        }
        if !s.origins.is_empty() && !seen.contains(&r.origin_id.as_str()) {
            c.err(
                format!("{sp}.origins"),
                format!("must include the route's origin '{}'", r.origin_id),
            );
        }
        if let Some(StickyBy::Header { name } | StickyBy::Cookie { name }) = &s.sticky {
            if !valid_token(name) {
                c.err(
                    format!("{sp}.sticky.name"),
                    "not a valid header or cookie name",
                );
            }
        }
        c.max_items(format!("{sp}.rules"), s.rules.len(), t::SPLIT_RULES);
        for (k, rule) in s.rules.iter().enumerate() {
            let rp = format!("{sp}.rules[{k}]");
            match (&rule.header, &rule.cookie) {
                (Some(n), None) | (None, Some(n)) => {
                    if !valid_token(n) {
                        let field = if rule.header.is_some() {
                            "header"
                        } else {
                            "cookie"
                        };
                        c.err(format!("{rp}.{field}"), "not a valid header or cookie name");
                    }
                }
                _ => c.err(rp.clone(), "needs exactly one of header and cookie"),
            }
            if !valid_header_value(&rule.value) || rule.value.contains(';') {
                c.err(format!("{rp}.value"), "contains control characters or ';'");
            }
            c.max_len(format!("{rp}.value"), &rule.value, b::HEADER_VALUE_BYTES);
            if !seen.contains(&rule.origin_id.as_str()) {
                c.reference(
                    format!("{rp}.origin_id"),
                    format!("'{}' is not one of the split's origins", rule.origin_id),
                );
            }
        }
    }
    if let Some(m) = mirror {
        let mp = format!("{p}.mirror");
        origin(c, format!("{mp}.origin_id"), &m.origin_id);
        if m.origin_id == r.origin_id {
            c.err(
                format!("{mp}.origin_id"),
                "must not be the origin that answers the route",
            );
        }
        if !(0.0..=100.0).contains(&m.percent) {
            c.err(format!("{mp}.percent"), "must be between 0 and 100");
        }
        c.range(
            format!("{mp}.max_body_bytes"),
            m.max_body_bytes,
            0,
            t::MIRROR_BODY_MAX,
        );
        c.range(format!("{mp}.timeout_ms"), m.timeout_ms, 1, b::TIMEOUT_MS);
        c.range(format!("{mp}.max_in_flight"), m.max_in_flight, 1, 10_000);
    }
    if let Some(v) = version {
        let vp = format!("{p}.version");
        let label = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
        if v.name.is_empty() || v.name.len() > 64 || !v.name.bytes().all(label) {
            c.err(
                format!("{vp}.name"),
                "must be 1-64 characters of A-Z a-z 0-9 . _ -",
            );
        }
        if let Some(a) = &v.accept {
            if !valid_token(&a.param) {
                c.err(format!("{vp}.accept.param"), "not a valid parameter name");
            }
            if a.value.is_empty() || !valid_token(&a.value) {
                c.err(
                    format!("{vp}.accept.value"),
                    "must be a token (letters, digits, . _ - and the like)",
                );
            }
        }
        let deprecated = v
            .deprecated_at
            .as_deref()
            .map(|s| parse_instant(s).map_err(|e| c.err(format!("{vp}.deprecated_at"), e)));
        let sunset = v
            .sunset_at
            .as_deref()
            .map(|s| parse_instant(s).map_err(|e| c.err(format!("{vp}.sunset_at"), e)));
        if let (Some(Ok(d)), Some(Ok(s))) = (deprecated, sunset) {
            if s < d {
                c.err(
                    format!("{vp}.sunset_at"),
                    "must not be before deprecated_at",
                );
            }
        }
        if let Some(succ) = &v.successor {
            let uri_ok = !succ.is_empty()
                && succ.parse::<http::Uri>().is_ok()
                && !succ.contains(['<', '>', '"', ' '])
                && (succ.starts_with('/')
                    || succ.starts_with("https://")
                    || succ.starts_with("http://"));
            if !uri_ok {
                c.err(
                    format!("{vp}.successor"),
                    "must be a path ('/v2/') or an http(s) URL",
                );
            }
            c.max_len(format!("{vp}.successor"), succ, b::URL_BYTES);
        }
    }
    if let Some(f) = fallback {
        let fp = format!("{p}.fallback");
        c.range(format!("{fp}.status"), f.status, 200, 599);
        if !valid_header_value(&f.content_type) || f.content_type.is_empty() {
            c.err(format!("{fp}.content_type"), "must be a media type");
        }
        c.max_len(format!("{fp}.content_type"), &f.content_type, 256);
        c.max_len(format!("{fp}.body"), &f.body, t::FALLBACK_BODY_MAX);
        if f.stale && !r.cache.enabled {
            c.err(
                format!("{fp}.stale"),
                "needs the route's cache to be enabled",
            );
        }
    }
}
