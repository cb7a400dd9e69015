//! Where webhooks may go: a tenant must not reach internal services through one.
//!
//! A URL must be `http` or `https`, carry no credentials and name a host. Its destination —
//! the IP literal, or every address its host name resolves to — must be a public address:
//! private, loopback, link-local, unspecified, multicast, shared (CGNAT), documentation,
//! benchmarking, broadcast and reserved IPv4 ranges, and loopback, unique-local, link-local,
//! site-local, documentation, NAT64, 6to4, Teredo and IPv4-mapped/-compatible forms of IPv6
//! are refused ([`vantage_model::netrules::special_range`]) — unless the operator's
//! allow-list (`worker.webhook_allowed_networks`) admits the address.
//!
//! The check runs when an endpoint is created or changed, and again at every delivery,
//! where the request then connects only to the addresses that passed (pinned), so a host
//! name that resolves differently a moment later (DNS rebinding) cannot get past it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use vantage_model::ipnet::IpNet;
use vantage_model::netrules::special_range;

/// Longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// Why a destination is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The URL itself is not acceptable (scheme, credentials, no host ...).
    BadUrl(String),
    /// An address is not one webhooks may reach.
    Forbidden(String),
    /// The host name does not resolve (now); may be temporary.
    Unresolved(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::BadUrl(m) | Refusal::Forbidden(m) | Refusal::Unresolved(m) => f.write_str(m),
        }
    }
}

/// A URL that passed the syntax rules.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: reqwest::Url,
    /// The host name, or `None` for an IP literal.
    pub domain: Option<String>,
    /// The literal's address (`None` for a host name).
    pub ip: Option<IpAddr>,
    pub port: u16,
}

/// Parse `raw` and apply the syntax rules: http(s), no user info, a host.
pub fn parse(raw: &str) -> Result<Target, Refusal> {
    let bad = |m: &str| Err(Refusal::BadUrl(m.to_string()));
    if raw.len() > MAX_URL_LEN {
        return bad("must be at most 2048 characters");
    }
    let url = match reqwest::Url::parse(raw) {
        Ok(u) => u,
        Err(e) => return Err(Refusal::BadUrl(format!("is not a URL ({e})"))),
    };
    if !matches!(url.scheme(), "http" | "https") {
        return bad("must be an http:// or https:// URL");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return bad("must not carry credentials (user:password@)");
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return bad("must name a host");
    };
    let Some(port) = url.port_or_known_default() else {
        return bad("must name a port");
    };
    // The URL parser normalises IPv4 forms (`0x7f.1`, `2130706433`) to dotted quads and
    // brackets IPv6 literals.
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok();
    let domain = match ip {
        Some(_) => None,
        None => Some(host.to_ascii_lowercase()),
    };
    Ok(Target {
        url,
        domain,
        ip,
        port,
    })
}

/// May a webhook connect to `ip`? `Err` says why not.
pub fn check_ip(ip: IpAddr, allowed: &[IpNet]) -> Result<(), Refusal> {
    let canonical = ip.to_canonical();
    match special_range(canonical) {
        None => Ok(()),
        Some(_)
            if allowed
                .iter()
                .any(|n| n.contains(&canonical) || n.contains(&ip)) =>
        {
            Ok(())
        }
        Some(range) => Err(Refusal::Forbidden(format!(
            "{ip} is a {range} address: webhooks may not reach it unless the operator's \
             worker.webhook_allowed_networks admits it"
        ))),
    }
}

/// The addresses `target` may be reached at: the literal, or every address its host name
/// resolves to (within `timeout`), each checked. Refused when any of them is forbidden.
pub async fn resolve(
    target: &Target,
    allowed: &[IpNet],
    timeout: Duration,
) -> Result<Vec<SocketAddr>, Refusal> {
    if let Some(ip) = target.ip {
        check_ip(ip, allowed)?;
        return Ok(vec![SocketAddr::new(ip, target.port)]);
    }
    let host = target.domain.as_deref().unwrap_or_default();
    let found = tokio::time::timeout(
        timeout,
        tokio::net::lookup_host((host.trim_end_matches('.'), target.port)),
    )
    .await;
    let addrs: Vec<SocketAddr> = match found {
        Ok(Ok(a)) => a.collect(),
        Ok(Err(e)) => return Err(Refusal::Unresolved(format!("{host} does not resolve: {e}"))),
        Err(_) => {
            return Err(Refusal::Unresolved(format!(
                "{host} did not resolve within {} ms",
                timeout.as_millis()
            )))
        }
    };
    if addrs.is_empty() {
        return Err(Refusal::Unresolved(format!("{host} has no address")));
    }
    for a in &addrs {
        check_ip(a.ip(), allowed).map_err(|e| match e {
            Refusal::Forbidden(m) => Refusal::Forbidden(format!("{host} resolves to {m}")),
            other => other,
        })?;
    }
    let mut unique = Vec::with_capacity(addrs.len());
    for a in addrs {
        if !unique.contains(&a) {
            unique.push(a);
        }
    }
    Ok(unique)
}

/// The full check of an endpoint URL, as the admin API runs it when an endpoint is created
/// or changed: syntax, then the destination.
pub async fn check_url(raw: &str, allowed: &[IpNet], timeout: Duration) -> Result<(), Refusal> {
    let target = parse(raw)?;
    resolve(&target, allowed, timeout).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn urls_must_be_http_without_credentials() {
        for (bad, why) in [
            ("ftp://example.com/x", "http"),
            ("file:///etc/passwd", "http"),
            ("https://user:pw@example.com/", "credentials"),
            ("https://user@example.com/", "credentials"),
            ("not a url", "not a URL"),
        ] {
            match parse(bad) {
                Err(Refusal::BadUrl(m)) => assert!(m.contains(why), "{bad}: {m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let t = parse("https://Hooks.Example.com/in?x=1").unwrap();
        assert_eq!(t.domain.as_deref(), Some("hooks.example.com"));
        assert_eq!(t.port, 443);
        let t = parse("http://[::1]:8080/").unwrap();
        assert_eq!(t.ip, Some("::1".parse().unwrap()));
        // Obscure IPv4 spellings are normalised before the check.
        assert_eq!(
            parse("http://2130706433/").unwrap().ip,
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            parse("http://0x7f.1/").unwrap().ip,
            Some("127.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn special_addresses_are_refused_unless_allowed() {
        let none = nets(&[]);
        for ip in [
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.18.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "fec0::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "2001:db8::1",
            "64:ff9b::a00:1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(
                matches!(check_ip(ip, &none), Err(Refusal::Forbidden(_))),
                "{ip}"
            );
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert_eq!(check_ip(ip.parse().unwrap(), &none), Ok(()), "{ip}");
        }
        let loopback = nets(&["127.0.0.0/8"]);
        assert_eq!(check_ip("127.0.0.1".parse().unwrap(), &loopback), Ok(()));
        assert_eq!(
            check_ip("::ffff:127.0.0.1".parse().unwrap(), &loopback),
            Ok(())
        );
        assert!(check_ip("::1".parse().unwrap(), &loopback).is_err());
        assert!(check_ip("10.0.0.1".parse().unwrap(), &loopback).is_err());
    }

    #[tokio::test]
    async fn host_names_are_resolved_and_every_address_checked() {
        let t = Duration::from_secs(5);
        // localhost is loopback (127.0.0.1, and ::1 where configured).
        let e = check_url("http://localhost:9/", &[], t).await.unwrap_err();
        assert!(
            matches!(&e, Refusal::Forbidden(m) if m.starts_with("localhost resolves to")),
            "{e:?}"
        );
        let addrs = resolve(
            &parse("http://127.0.0.1:9/").unwrap(),
            &nets(&["127.0.0.0/8"]),
            t,
        )
        .await
        .unwrap();
        assert_eq!(addrs, vec!["127.0.0.1:9".parse().unwrap()]);
        let e = check_url("http://no-such-host.invalid/", &[], t)
            .await
            .unwrap_err();
        assert!(matches!(e, Refusal::Unresolved(_)), "{e:?}");
    }
}
