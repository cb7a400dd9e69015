//! Which tenant a request's host names.
//!
//! A host is compared lower-case, without a port and without a trailing dot. Names at or
//! under a base domain belong to tenant subdomains only (`<subdomain>.<base>`); other names
//! are custom hosts. Validation refuses custom hosts under a base domain, and the lookup
//! never consults custom hosts there either, so no configuration can take a subdomain's
//! traffic. The matched host, in that normal form, is what origins are told
//! (`X-Forwarded-Host`, or `Host` with `preserve_host`) and what the cache key holds.

use http::HeaderValue;
use std::borrow::Cow;
use std::sync::Arc;
use vantage_model::Tenant;

/// A tenant's host names, made once when the tenant compiles (so rebuilding the index
/// after a change copies pointers, not names).
#[derive(Default)]
pub struct TenantHosts {
    pub subdomain: Arc<str>,
    /// `<subdomain>.<base>` for each base domain, in their order.
    pub under_bases: Vec<HeaderValue>,
    /// Custom hosts not under a base domain (those under one never match).
    pub custom: Vec<(Arc<str>, HeaderValue)>,
}

impl TenantHosts {
    /// The hosts of `t` under `bases`.
    pub fn of(t: &Tenant, bases: &[String]) -> TenantHosts {
        TenantHosts {
            subdomain: t.subdomain.as_str().into(),
            under_bases: bases
                .iter()
                .filter_map(|b| HeaderValue::from_str(&format!("{}.{b}", t.subdomain)).ok())
                .collect(),
            custom: t
                .custom_hosts
                .iter()
                .filter(|h| under_base(bases, h).is_none())
                .filter_map(|h| Some((h.as_str().into(), HeaderValue::from_str(h).ok()?)))
                .collect(),
        }
    }
}

/// Which of a tenant's hosts a request named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostRef {
    /// Its subdomain under base domain `n`.
    Base(usize),
    /// Its `n`th custom host.
    Custom(usize),
}

impl HostRef {
    /// The host, in normal form, as a header value.
    pub fn value(self, hosts: &TenantHosts) -> Option<&HeaderValue> {
        match self {
            HostRef::Base(b) => hosts.under_bases.get(b),
            HostRef::Custom(c) => hosts.custom.get(c).map(|(_, v)| v),
        }
    }
}

/// The hosts of every tenant.
#[derive(Default)]
pub struct HostIndex {
    /// Custom host → tenant index and which of its custom hosts.
    custom: foldhash::HashMap<Arc<str>, (usize, usize)>,
    /// Subdomain label → tenant index.
    subdomains: foldhash::HashMap<Arc<str>, usize>,
    bases: Vec<String>,
    claimed_twice: Vec<(usize, usize, String)>,
}

/// `host` lower-case, without a port and a trailing dot.
pub fn normalize(host: &str) -> Cow<'_, str> {
    let host = strip_port(host).trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// The base domain `host` is at or under (the longest, when base domains nest): its
/// index, and the rest before `.<base>` (empty for the base itself).
fn under_base<'h>(bases: &[String], host: &'h str) -> Option<(usize, &'h str)> {
    bases
        .iter()
        .enumerate()
        .filter_map(|(i, base)| {
            if host == base {
                return Some((i, ""));
            }
            host.strip_suffix(base.as_str())
                .and_then(|r| r.strip_suffix('.'))
                .map(|label| (i, label))
        })
        .min_by_key(|(_, label)| label.len())
}

impl HostIndex {
    /// Index the tenants' hosts (made under `bases`). A host claimed twice goes to the
    /// later tenant and is listed in [`HostIndex::claimed_twice`] (validation refuses such
    /// configurations; an incremental reload checks it).
    pub fn build<'a>(
        tenants: impl ExactSizeIterator<Item = &'a TenantHosts>,
        bases: &[String],
    ) -> HostIndex {
        let mut index = HostIndex {
            bases: bases.to_vec(),
            subdomains: foldhash::HashMap::with_capacity_and_hasher(
                tenants.len(),
                Default::default(),
            ),
            ..HostIndex::default()
        };
        for (i, t) in tenants.enumerate() {
            if let Some(other) = index.subdomains.insert(t.subdomain.clone(), i) {
                index
                    .claimed_twice
                    .push((other, i, t.subdomain.to_string()));
            }
            for (c, (h, _)) in t.custom.iter().enumerate() {
                if let Some((other, _)) = index.custom.insert(h.clone(), (i, c)) {
                    if other != i {
                        index.claimed_twice.push((other, i, h.to_string()));
                    }
                }
            }
        }
        index
    }

    /// Subdomains and custom hosts two tenants claim: (earlier tenant, later tenant, name).
    pub fn claimed_twice(&self) -> &[(usize, usize, String)] {
        &self.claimed_twice
    }

    /// The tenant index a raw `Host` (or `:authority`) names, and which of its hosts.
    pub fn find(&self, raw: &str) -> Option<(usize, HostRef)> {
        let host = normalize(raw);
        match under_base(&self.bases, &host) {
            Some((b, label)) => Some((*self.subdomains.get(label)?, HostRef::Base(b))),
            None => self
                .custom
                .get(host.as_ref())
                .map(|(i, c)| (*i, HostRef::Custom(*c))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str, sub: &str, hosts: &[&str]) -> Tenant {
        serde_yaml::from_str(&format!(
            "{{id: {id}, name: {id}, subdomain: {sub}, custom_hosts: [{}]}}",
            hosts.join(", ")
        ))
        .unwrap()
    }

    /// The index of `tenants` under `bases`, and a lookup giving (tenant index, host).
    fn index(tenants: &[Tenant], bases: &[String]) -> impl Fn(&str) -> Option<(usize, String)> {
        let hosts: Vec<TenantHosts> = tenants.iter().map(|t| TenantHosts::of(t, bases)).collect();
        let idx = HostIndex::build(hosts.iter(), bases);
        move |h: &str| {
            idx.find(h).map(|(i, r)| {
                let v = r.value(&hosts[i]).unwrap();
                (i, v.to_str().unwrap().to_string())
            })
        }
    }

    #[test]
    fn subdomains_win_under_base_domains() {
        let bases = vec!["vantage.localhost".to_string(), "edge.test".to_string()];
        // Tenant b's custom host names a's subdomain host (only a file that skipped
        // validation can say this): it never takes a's traffic.
        let find = index(
            &[
                tenant("a", "acme", &["api.acme.test"]),
                tenant(
                    "b",
                    "globex",
                    &["acme.edge.test", "future.vantage.localhost"],
                ),
            ],
            &bases,
        );
        assert_eq!(find("acme.edge.test"), Some((0, "acme.edge.test".into())));
        assert_eq!(
            find("ACME.Vantage.Localhost.:8080"),
            Some((0, "acme.vantage.localhost".into()))
        );
        assert_eq!(find("future.vantage.localhost"), None);
        assert_eq!(
            find("api.acme.test:6666"),
            Some((0, "api.acme.test".into()))
        );
        assert_eq!(find("API.ACME.TEST."), Some((0, "api.acme.test".into())));
        assert_eq!(
            find("globex.edge.test"),
            Some((1, "globex.edge.test".into()))
        );
        assert_eq!(find("x.acme.vantage.localhost"), None);
        assert_eq!(find("vantage.localhost"), None);
        assert_eq!(find("acme.other.test"), None);
        // Nested base domains: the longest one decides.
        let nested = index(
            &[tenant("a", "acme", &[])],
            &["example.com".to_string(), "edge.example.com".to_string()],
        );
        assert_eq!(
            nested("acme.edge.example.com"),
            Some((0, "acme.edge.example.com".into()))
        );
        assert_eq!(
            nested("acme.example.com"),
            Some((0, "acme.example.com".into()))
        );
    }
}
