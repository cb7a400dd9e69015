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
use std::collections::HashMap;
use vantage_model::Tenant;

/// The hosts of every tenant.
#[derive(Default)]
pub struct HostIndex {
    /// Custom host → tenant index and the host as a header value.
    custom: HashMap<String, (usize, HeaderValue)>,
    /// Subdomain label → tenant index and its host under each base domain (same order as
    /// `bases`).
    subdomains: HashMap<String, (usize, Vec<HeaderValue>)>,
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

impl HostIndex {
    /// Index `tenants` under `bases`. A host claimed twice goes to the later tenant and is
    /// listed in [`HostIndex::claimed_twice`] (validation refuses such configurations; an
    /// incremental reload checks it).
    pub fn build<'a>(tenants: impl IntoIterator<Item = &'a Tenant>, bases: &[String]) -> HostIndex {
        let mut index = HostIndex {
            bases: bases.to_vec(),
            ..HostIndex::default()
        };
        for (i, t) in tenants.into_iter().enumerate() {
            let hosts = bases
                .iter()
                .filter_map(|b| HeaderValue::from_str(&format!("{}.{b}", t.subdomain)).ok())
                .collect();
            if let Some((other, _)) = index.subdomains.insert(t.subdomain.clone(), (i, hosts)) {
                index.claimed_twice.push((other, i, t.subdomain.clone()));
            }
            for h in &t.custom_hosts {
                if index.under_base(h).is_some() {
                    continue;
                }
                if let Ok(v) = HeaderValue::from_str(h) {
                    if let Some((other, _)) = index.custom.insert(h.clone(), (i, v)) {
                        if other != i {
                            index.claimed_twice.push((other, i, h.clone()));
                        }
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

    /// The base domain `host` is at or under (the longest, when base domains nest): its
    /// index, and the rest before `.<base>` (empty for the base itself).
    fn under_base<'h>(&self, host: &'h str) -> Option<(usize, &'h str)> {
        self.bases
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

    /// The tenant index a raw `Host` (or `:authority`) names, and the host in normal form.
    pub fn find(&self, raw: &str) -> Option<(usize, &HeaderValue)> {
        let host = normalize(raw);
        match self.under_base(&host) {
            Some((b, label)) => {
                let (i, hosts) = self.subdomains.get(label)?;
                Some((*i, hosts.get(b)?))
            }
            None => self.custom.get(host.as_ref()).map(|(i, v)| (*i, v)),
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

    #[test]
    fn subdomains_win_under_base_domains() {
        let bases = vec!["vantage.localhost".to_string(), "edge.test".to_string()];
        // Tenant b's custom host names a's subdomain host (only a file that skipped
        // validation can say this): it never takes a's traffic.
        let idx = HostIndex::build(
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
        let find = |h: &str| {
            idx.find(h)
                .map(|(i, v)| (i, v.to_str().unwrap().to_string()))
        };
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
        let nested = HostIndex::build(
            &[tenant("a", "acme", &[])],
            &["example.com".to_string(), "edge.example.com".to_string()],
        );
        assert_eq!(
            nested.find("acme.edge.example.com").map(|(i, _)| i),
            Some(0)
        );
        assert_eq!(nested.find("acme.example.com").map(|(i, _)| i), Some(0));
    }
}
