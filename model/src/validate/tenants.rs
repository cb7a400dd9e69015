//! Tenants: ids, names, subdomains, custom hosts and their tenant-wide policies.

use super::policies::{check_access, check_limits};
use super::rules::{check_name, valid_host, valid_label};
use super::{Collector, ResourceContext, TenantIds};
use crate::bounds as b;
use crate::Tenant;
use std::collections::HashMap;

/// Every tenant; returns the valid tenant ids (→ position) that other resources may name.
/// A second tenant with the same id or subdomain is a conflict (subdomains are reported on
/// both sides, so the tenant being changed always is).
pub(super) fn check<'a>(
    c: &mut Collector,
    tenants: &'a [Tenant],
    ctx: &ResourceContext,
) -> TenantIds<'a> {
    let mut tenant_ids = TenantIds::<'a>::default();
    let mut subdomains: HashMap<&str, usize> = HashMap::new();
    for (i, t) in tenants.iter().enumerate() {
        let p = format!("tenants[{i}]");
        if c.id(format!("{p}.id"), &t.id) {
            if let Some(j) = tenant_ids.insert(&t.id, i) {
                c.conflict(
                    format!("{p}.id"),
                    format!("'{}' is already used by tenants[{j}]", t.id),
                );
            }
        }
        check_name(c, &format!("{p}.name"), &t.name);
        if let Some(org) = &t.clerk_org_id {
            if org.is_empty()
                || org.len() > b::SHORT_TEXT_BYTES
                || !org.bytes().all(|b| b.is_ascii_graphic())
            {
                c.err(
                    format!("{p}.clerk_org_id"),
                    format!("must be 1-{} visible ASCII characters", b::SHORT_TEXT_BYTES),
                );
            }
        }
        c.max_items(
            format!("{p}.custom_hosts"),
            t.custom_hosts.len(),
            b::CUSTOM_HOSTS,
        );
        if !valid_label(&t.subdomain) {
            c.err(
                format!("{p}.subdomain"),
                "must be a lower-case DNS label (a-z, 0-9, '-', at most 63)",
            );
        } else if let Some(&j) = subdomains.get(t.subdomain.as_str()) {
            c.conflict(
                format!("{p}.subdomain"),
                format!("'{}' is already used by tenants[{j}]", t.subdomain),
            );
            // Both sides are told, so the one being changed always is.
            c.conflict(
                format!("tenants[{j}].subdomain"),
                format!("'{}' is also used by tenants[{i}]", t.subdomain),
            );
        } else {
            subdomains.insert(&t.subdomain, i);
        }
        check_access(c, &format!("{p}.access"), &t.access);
        check_limits(
            c,
            &format!("{p}.rate_limits"),
            &t.rate_limits,
            ctx.has_redis,
        );
    }
    tenant_ids
}

/// The names a tenant is reached by: `<subdomain>.<base>` for every base domain, and its
/// custom hosts. Each host belongs to at most one tenant however it is spelled (names are
/// compared lower-case without a trailing dot), and names at or under a base domain are
/// reserved for subdomains: a custom host there could take another tenant's traffic, now or
/// once a tenant with that subdomain exists. Both are conflicts; a host a tenant lists
/// twice is merely invalid.
pub(super) fn check_hosts(c: &mut Collector, tenants: &[Tenant], base_domains: &[String]) {
    let bases: Vec<&str> = base_domains.iter().map(String::as_str).collect();
    // Every claim of a custom host: host → (tenant, position).
    let mut claims: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
    for (i, t) in tenants.iter().enumerate() {
        for (k, h) in t.custom_hosts.iter().enumerate() {
            let path = format!("tenants[{i}].custom_hosts[{k}]");
            // Only the canonical spelling is accepted, so equal hosts compare equal.
            if !valid_host(h) {
                c.err(
                    path,
                    format!("'{h}' is not a lower-case host name without a trailing dot"),
                );
            } else if bases
                .iter()
                .any(|b| h == b || h.strip_suffix(b).is_some_and(|rest| rest.ends_with('.')))
            {
                c.conflict(
                    path,
                    format!(
                        "'{h}' is under a base domain, where names belong to tenant subdomains"
                    ),
                );
            } else {
                claims.entry(h.as_str()).or_default().push((i, k));
            }
        }
    }
    let mut hosts: Vec<(&str, Vec<(usize, usize)>)> = claims.into_iter().collect();
    hosts.sort();
    for (h, claimants) in hosts {
        for &(i, k) in &claimants {
            let path = format!("tenants[{i}].custom_hosts[{k}]");
            // Each side of a conflict is reported, so the one being changed always is.
            if let Some(&(j, _)) = claimants.iter().find(|(j, _)| *j != i) {
                c.conflict(path, format!("'{h}' is also claimed by tenants[{j}]"));
            } else if claimants.iter().any(|(j, l)| *j == i && *l < k) {
                c.err(path, format!("'{h}' is listed twice"));
            }
        }
    }
}
