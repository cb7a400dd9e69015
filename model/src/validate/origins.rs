//! Origins: ids, owning tenant, targets, load balancing, health checks, timeouts, retries,
//! circuit breaker and upstream TLS.

use super::rules::{valid_host, valid_token, valid_uri_path};
use super::{Collector, TenantIds};
use crate::bounds as b;
use crate::{HashKey, LbAlgorithm, Origin, TargetUrl};
use std::collections::{HashMap, HashSet};

/// Ids of the origins with a valid id → (position, owning tenant). For an id listed twice,
/// the later origin.
pub(super) type OriginOwners<'a> = HashMap<&'a str, (usize, &'a str)>;

/// Every origin; returns the owners of the valid origin ids, for routes to be checked
/// against. A second origin with the same id is a conflict; a tenant that does not exist
/// is a dangling reference.
pub(super) fn check<'a>(
    c: &mut Collector,
    origins: &'a [Origin],
    tenant_ids: &TenantIds<'_>,
) -> OriginOwners<'a> {
    let mut origin_ids: OriginOwners<'a> = HashMap::new();
    for (i, o) in origins.iter().enumerate() {
        let p = format!("origins[{i}]");
        if c.id(format!("{p}.id"), &o.id) {
            if let Some((j, _)) = origin_ids.insert(&o.id, (i, &o.tenant_id)) {
                c.conflict(
                    format!("{p}.id"),
                    format!("'{}' is already used by origins[{j}]", o.id),
                );
            }
        }
        c.tenant_ref(format!("{p}.tenant_id"), &o.tenant_id, tenant_ids);
        if let Some(a) = &o.affinity {
            if !valid_token(&a.cookie) {
                c.err(format!("{p}.affinity.cookie"), "not a valid cookie name");
            }
            c.max_len(format!("{p}.affinity.cookie"), &a.cookie, b::TOKEN_BYTES);
            c.range(
                format!("{p}.affinity.ttl_seconds"),
                a.ttl_seconds,
                0,
                crate::traffic::AFFINITY_TTL_MAX,
            );
            if !a.path.starts_with('/') || !valid_uri_path(&a.path) || a.path.contains(';') {
                c.err(
                    format!("{p}.affinity.path"),
                    "must be a URI path without ';'",
                );
            }
            c.max_len(format!("{p}.affinity.path"), &a.path, b::PATH_BYTES);
            if a.same_site == crate::SameSite::None && !a.secure {
                c.err(
                    format!("{p}.affinity.secure"),
                    "SameSite=None needs Secure (browsers drop the cookie otherwise)",
                );
            }
        }
        match &o.discovery {
            None if o.targets.is_empty() => {
                c.err(format!("{p}.targets"), "at least one target is needed");
            }
            None => {}
            Some(d) => {
                if !o.targets.is_empty() {
                    c.err(
                        format!("{p}.targets"),
                        "must be empty: the targets come from discovery",
                    );
                }
                let dp = format!("{p}.discovery");
                match (&d.name, &d.srv) {
                    (Some(n), None) => {
                        if !valid_host(n) {
                            c.err(format!("{dp}.name"), "not a valid lower-case host name");
                        }
                        if d.port == Some(0) {
                            c.err(format!("{dp}.port"), "must be between 1 and 65535");
                        }
                    }
                    (None, Some(n)) => {
                        if !valid_host(n.trim_start_matches('_').replace("._", ".").as_str()) {
                            c.err(format!("{dp}.srv"), "not a valid SRV name");
                        }
                        if d.port.is_some() {
                            c.err(format!("{dp}.port"), "SRV records carry their ports");
                        }
                    }
                    _ => c.err(dp.clone(), "needs exactly one of name and srv"),
                }
            }
        }
        c.max_items(format!("{p}.targets"), o.targets.len(), b::TARGETS);
        let mut seen = HashSet::new();
        for (k, t) in o.targets.iter().enumerate() {
            match TargetUrl::parse(&t.url) {
                Err(e) => c.err(format!("{p}.targets[{k}].url"), e),
                Ok(u) => {
                    if !seen.insert((u.host.clone(), u.port)) {
                        c.err(
                            format!("{p}.targets[{k}].url"),
                            format!("'{}' is listed twice", t.url),
                        );
                    }
                }
            }
            if t.weight == 0 || t.weight > 1000 {
                c.err(
                    format!("{p}.targets[{k}].weight"),
                    "must be between 1 and 1000",
                );
            }
        }
        match (&o.lb, &o.hash_key) {
            (LbAlgorithm::ConsistentHash, None) => c.err(
                format!("{p}.hash_key"),
                "consistent_hash needs a hash_key (header, cookie, client_ip or path)",
            ),
            (LbAlgorithm::ConsistentHash, Some(HashKey::Header { name }))
            | (LbAlgorithm::ConsistentHash, Some(HashKey::Cookie { name }))
                if !valid_token(name) =>
            {
                c.err(format!("{p}.hash_key.name"), "not a valid name")
            }
            (LbAlgorithm::ConsistentHash, _) => {}
            (_, Some(_)) => c.err(
                format!("{p}.hash_key"),
                "only used with lb: consistent_hash",
            ),
            (_, None) => {}
        }
        if let Some(h) = &o.health_check {
            let urls: Vec<TargetUrl> = o
                .targets
                .iter()
                .filter_map(|t| TargetUrl::parse(&t.url).ok())
                .collect();
            if urls.windows(2).any(|w| w[0].tls != w[1].tls) {
                c.err(
                    format!("{p}.health_check"),
                    "all targets of a health-checked origin must use the same scheme",
                );
            } else if urls.first().is_some_and(|u| u.tls)
                && o.tls.verify
                && o.tls.sni.is_none()
                && h.host.is_none()
                && urls.windows(2).any(|w| w[0].host != w[1].host)
            {
                c.err(
                    format!("{p}.tls.sni"),
                    "https targets with different host names need tls.sni (or health_check.host) for verified health checks",
                );
            }
            if !h.path.starts_with('/') {
                c.err(format!("{p}.health_check.path"), "must start with '/'");
            } else if c.max_len(format!("{p}.health_check.path"), &h.path, b::PATH_BYTES)
                && !valid_uri_path(&h.path)
            {
                c.err(
                    format!("{p}.health_check.path"),
                    "must be a URI path: no spaces, control or non-ASCII characters, no '#'",
                );
            }
            c.range(
                format!("{p}.health_check.interval_ms"),
                h.interval_ms,
                50,
                b::TIMEOUT_MS,
            );
            c.range(
                format!("{p}.health_check.timeout_ms"),
                h.timeout_ms,
                1,
                b::TIMEOUT_MS,
            );
            c.range(
                format!("{p}.health_check.healthy_threshold"),
                h.healthy_threshold,
                1,
                b::THRESHOLD,
            );
            c.range(
                format!("{p}.health_check.unhealthy_threshold"),
                h.unhealthy_threshold,
                1,
                b::THRESHOLD,
            );
            if let Some(host) = &h.host {
                if !valid_host(host) {
                    c.err(
                        format!("{p}.health_check.host"),
                        "not a lower-case host name",
                    );
                }
            }
        }
        for (name, v) in [
            ("connect_ms", o.timeouts.connect_ms),
            ("read_ms", o.timeouts.read_ms),
            ("write_ms", o.timeouts.write_ms),
            ("total_connect_ms", o.timeouts.total_connect_ms),
            ("idle_ms", o.timeouts.idle_ms),
        ] {
            c.range(format!("{p}.timeouts.{name}"), v, 1, b::TIMEOUT_MS);
        }
        if o.retries > 10 {
            c.err(format!("{p}.retries"), "must be at most 10");
        }
        if o.circuit_breaker.enabled {
            c.range(
                format!("{p}.circuit_breaker.failure_threshold"),
                o.circuit_breaker.failure_threshold,
                1,
                b::BREAKER_FAILURES,
            );
            c.range(
                format!("{p}.circuit_breaker.open_ms"),
                o.circuit_breaker.open_ms,
                1,
                b::TIMEOUT_MS,
            );
        }
        if let Some(sni) = &o.tls.sni {
            if !valid_host(sni) {
                c.err(format!("{p}.tls.sni"), "not a lower-case host name");
            }
        }
    }
    origin_ids
}
