//! Routes: ids, owning tenant, pattern, conditions, the origin they forward to, path and
//! header changes, auth, rate limits, access and caching.

use super::origins::OriginOwners;
use super::policies::{check_access, check_cache, check_limits, check_transform};
use super::rules::{valid_header_value, valid_scope, valid_token};
use super::{Collector, ResourceContext, TenantIds};
use crate::bounds as b;
use crate::{AuthMode, JwtIssuer, PathPattern, Route};
use std::collections::HashMap;

/// Compiled size bound of a rewrite regex (the regex crate's default is 10 MiB).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Every route. A second route with the same id is a conflict; a tenant or origin that does
/// not exist, or an origin of another tenant, is a dangling reference. A route with the same
/// pattern, methods, headers and priority as an earlier one of its tenant is invalid: it
/// could never match.
pub(super) fn check(
    c: &mut Collector,
    routes: &[Route],
    tenant_ids: &TenantIds<'_>,
    origin_owners: &OriginOwners<'_>,
    ctx: &ResourceContext,
) {
    let mut route_ids: HashMap<&str, usize> = HashMap::new();
    let mut signatures: HashMap<String, usize> = HashMap::new();
    for (i, r) in routes.iter().enumerate() {
        let p = format!("routes[{i}]");
        if c.id(format!("{p}.id"), &r.id) {
            if let Some(j) = route_ids.insert(&r.id, i) {
                c.conflict(
                    format!("{p}.id"),
                    format!("'{}' is already used by routes[{j}]", r.id),
                );
            }
        }
        c.tenant_ref(format!("{p}.tenant_id"), &r.tenant_id, tenant_ids);
        let pattern = match PathPattern::parse(&r.path_pattern) {
            _ if r.path_pattern.len() > b::PATH_BYTES => {
                c.max_len(format!("{p}.path_pattern"), &r.path_pattern, b::PATH_BYTES);
                None
            }
            Ok(pat) => Some(pat),
            Err(e) => {
                c.err(
                    format!("{p}.path_pattern"),
                    format!("'{}': {e}", r.path_pattern),
                );
                None
            }
        };
        c.max_items(format!("{p}.methods"), r.methods.len(), b::ROUTE_METHODS);
        c.max_items(format!("{p}.headers"), r.headers.len(), b::ROUTE_HEADERS);
        c.max_items(format!("{p}.auth.scopes"), r.auth.scopes.len(), b::SCOPES);
        c.range(
            format!("{p}.priority"),
            r.priority,
            -b::PRIORITY,
            b::PRIORITY,
        );
        let mut methods = Vec::new();
        for (k, m) in r.methods.iter().enumerate() {
            if !valid_token(m) || m.bytes().any(|b| b.is_ascii_lowercase()) {
                c.err(
                    format!("{p}.methods[{k}]"),
                    format!("'{m}' is not an upper-case HTTP method"),
                );
            } else if methods.contains(m) {
                c.err(
                    format!("{p}.methods[{k}]"),
                    format!("'{m}' is listed twice"),
                );
            } else {
                methods.push(m.clone());
            }
        }
        for (k, h) in r.headers.iter().enumerate() {
            if !valid_token(&h.name) {
                c.err(format!("{p}.headers[{k}].name"), "not a valid header name");
            }
            if let Some(v) = h.value.as_deref() {
                if !valid_header_value(v) {
                    c.err(
                        format!("{p}.headers[{k}].value"),
                        "contains control characters",
                    );
                }
                c.max_len(format!("{p}.headers[{k}].value"), v, b::HEADER_VALUE_BYTES);
            }
        }
        match origin_owners.get(r.origin_id.as_str()) {
            None => c.reference(
                format!("{p}.origin_id"),
                format!("no origin has id '{}'", r.origin_id),
            ),
            Some((_, t)) if *t != r.tenant_id => c.reference(
                format!("{p}.origin_id"),
                format!(
                    "origin '{}' belongs to tenant '{t}', not '{}'",
                    r.origin_id, r.tenant_id
                ),
            ),
            Some(_) => {}
        }
        if let Some(sp) = &r.strip_prefix {
            if !sp.starts_with('/') || sp.len() < 2 {
                c.err(
                    format!("{p}.strip_prefix"),
                    "must start with '/' and be longer than '/'",
                );
            } else {
                c.max_len(format!("{p}.strip_prefix"), sp, b::PATH_BYTES);
            }
        }
        if let Some(rw) = &r.rewrite {
            if c.max_len(format!("{p}.rewrite.pattern"), &rw.pattern, b::PATH_BYTES) {
                if let Err(e) = regex::RegexBuilder::new(&rw.pattern)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                {
                    c.err(
                        format!("{p}.rewrite.pattern"),
                        format!("invalid regex: {e}"),
                    );
                }
            }
            c.max_len(
                format!("{p}.rewrite.replacement"),
                &rw.replacement,
                b::PATH_BYTES,
            );
            if rw.replacement.is_empty() {
                c.err(format!("{p}.rewrite.replacement"), "must not be empty");
            } else if rw
                .replacement
                .chars()
                .any(|ch| ch.is_whitespace() || ch.is_control() || !ch.is_ascii() || ch == '#')
            {
                c.err(
                    format!("{p}.rewrite.replacement"),
                    "must be a URI path: no spaces, control or non-ASCII characters, no '#'",
                );
            }
        }
        check_transform(c, &format!("{p}.request_headers"), &r.request_headers);
        check_transform(c, &format!("{p}.response_headers"), &r.response_headers);
        check_access(c, &format!("{p}.access"), &r.access);
        check_limits(
            c,
            &format!("{p}.rate_limits"),
            &r.rate_limits,
            ctx.has_redis,
        );
        for (k, scope) in r.auth.scopes.iter().enumerate() {
            if !valid_scope(scope) {
                c.err(
                    format!("{p}.auth.scopes[{k}]"),
                    format!("'{scope}' is not a valid scope"),
                );
            }
        }
        check_cache(c, &format!("{p}.cache"), &r.cache, ctx.has_redis);
        super::traffic::check(c, &p, r, origin_owners);
        if let Some(l) = r.compression.level {
            if !(1..=9).contains(&l) {
                c.err(format!("{p}.compression.level"), "must be between 1 and 9");
            }
        }
        if let Some(pat) = pattern {
            let mut m = methods.clone();
            m.sort();
            let mut h: Vec<String> = r
                .headers
                .iter()
                .map(|h| format!("{}={:?}", h.name.to_ascii_lowercase(), h.value.as_deref()))
                .collect();
            h.sort();
            let accept = r.traffic.version.as_ref().and_then(|v| v.accept.as_ref());
            let accept = accept.map(|a| (a.param.to_ascii_lowercase(), &a.value));
            let sig = format!(
                "{}|{}|{m:?}|{h:?}|{accept:?}|{}",
                r.tenant_id, pat, r.priority
            );
            if let Some(j) = signatures.insert(sig, i) {
                c.err(
                    format!("{p}.path_pattern"),
                    format!(
                        "routes[{j}] already has the same pattern, methods, headers, Accept parameter and priority; one of them could never match"
                    ),
                );
            }
        }
    }
}

/// Routes that take JWTs need a JWT issuer of their tenant: a reference to it.
pub(super) fn check_issuers(c: &mut Collector, routes: &[Route], issuers: &[JwtIssuer]) {
    for (i, r) in routes.iter().enumerate() {
        let needs_jwt = matches!(r.auth.mode, AuthMode::JwtRequired | AuthMode::JwtOrApikey);
        if needs_jwt && !issuers.iter().any(|j| j.tenant_id == r.tenant_id) {
            c.reference(
                format!("routes[{i}].auth.mode"),
                format!("tenant '{}' has no jwt_issuers entry", r.tenant_id),
            );
        }
    }
}
