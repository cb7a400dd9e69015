//! Which network addresses the gateway may be told to fetch from (JWKS endpoints), shared by
//! validation (`--check`, the admin) and the proxy's fetch-time check of resolved addresses.
//!
//! Rules: plain `http://` only to loopback; any other special-purpose address (private,
//! link-local, shared/CGNAT, unique-local, unspecified, multicast, broadcast, documentation,
//! benchmarking, reserved, IPv4-mapped forms of these) only when an operator's allow-list
//! admits it. Loopback is special-purpose too: the default allow-list admits it.

use ipnet::IpNet;
use std::net::IpAddr;

/// The special-purpose range `ip` falls in, or `None` for a public address.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    let ip = ip.to_canonical();
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if o[0] == 100 && (64..128).contains(&o[1]) {
                Some("shared address space (CGNAT)")
            } else if o[0] == 0 {
                Some("this-network")
            } else if v4.is_multicast() {
                Some("multicast")
            } else if v4.is_broadcast() || o[0] >= 240 {
                Some("reserved")
            } else if v4.is_documentation() {
                Some("documentation")
            } else if o[0] == 198 && (18..20).contains(&o[1]) {
                Some("benchmarking")
            } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
                Some("IETF protocol assignments")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if s[0] & 0xfe00 == 0xfc00 {
                Some("unique-local")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if s[0] & 0xffc0 == 0xfec0 {
                Some("site-local")
            } else if s[0] == 0x2001 && s[1] == 0x0db8 {
                Some("documentation")
            } else if s[0] == 0x2002 {
                // 6to4: an IPv4 address inside.
                Some("6to4")
            } else if s[0] == 0x2001 && s[1] == 0 {
                Some("Teredo")
            } else if s[0] == 0x0064 && s[1] == 0xff9b {
                Some("NAT64")
            } else if s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 {
                // IPv4-compatible and other deprecated embeddings (mapped ones were
                // canonicalised above).
                Some("reserved")
            } else {
                None
            }
        }
    }
}

/// May the gateway connect to `ip` for a JWKS fetch? `Err` says why not.
pub fn fetch_allowed(ip: IpAddr, tls: bool, allowed: &[IpNet]) -> Result<(), String> {
    let ip = ip.to_canonical();
    if !tls && !ip.is_loopback() {
        return Err(format!(
            "{ip}: plain http is only allowed to loopback; use https"
        ));
    }
    match special_range(ip) {
        None => Ok(()),
        Some(_) if allowed.iter().any(|n| n.contains(&ip)) => Ok(()),
        Some(range) => Err(format!(
            "{ip} is a {range} address, which is refused unless server.jwks_allowed_networks admits it"
        )),
    }
}

/// Host names that always mean this machine (RFC 6761).
pub fn is_loopback_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// Check a JWKS URL's host as far as it can be checked without resolving it: IP literals
/// against the rules, `localhost` names as loopback, plain http only to loopback.
pub fn check_fetch_url(url: &str, allowed: &[IpNet]) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("'{url}' is not a URL"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("'{url}' is not an http(s) URL")),
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("'{url}' has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']');
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!("'{url}' must not carry credentials"));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return fetch_allowed(ip, tls, allowed);
    }
    if is_loopback_name(host) {
        return fetch_allowed(IpAddr::from([127, 0, 0, 1]), tls, allowed);
    }
    if !tls {
        return Err(format!(
            "'{url}': plain http is only allowed to loopback; use https"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn special_ranges() {
        for (ip, range) in [
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared address space (CGNAT)"),
            ("0.0.0.0", "this-network"),
            ("127.0.0.1", "loopback"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("fec0::1", "site-local"),
            ("2002:a9fe:a9fe::1", "6to4"),
            ("2001:0:4136:e378::1", "Teredo"),
        ] {
            assert_eq!(special_range(ip.parse().unwrap()), Some(range), "{ip}");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert_eq!(special_range(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[test]
    fn urls() {
        let default = nets(&["127.0.0.0/8", "::1/128"]);
        for ok in [
            "https://clerk.acme.test/.well-known/jwks.json",
            "http://127.0.0.1:9000/jwks",
            "http://localhost:9000/jwks",
            "http://[::1]:9000/jwks",
            "https://93.184.216.34/jwks",
        ] {
            assert_eq!(check_fetch_url(ok, &default), Ok(()), "{ok}");
        }
        for bad in [
            "http://clerk.acme.test/jwks",
            "http://10.0.0.5/jwks",
            "https://10.0.0.5/jwks",
            "https://169.254.169.254/latest/meta-data",
            "https://[fd00::1]/jwks",
            "https://[::ffff:192.168.0.1]/jwks",
            "https://0.0.0.0/jwks",
            "ftp://example.com/jwks",
            "https://user:pw@example.com/jwks",
        ] {
            assert!(check_fetch_url(bad, &default).is_err(), "{bad}");
        }
        // An operator may admit a private range for https, never for plain http.
        let office = nets(&["10.20.0.0/16"]);
        assert_eq!(check_fetch_url("https://10.20.1.1/jwks", &office), Ok(()));
        assert!(check_fetch_url("http://10.20.1.1/jwks", &office).is_err());
        // Without the default allow-list even loopback is refused.
        assert!(check_fetch_url("http://127.0.0.1:9000/jwks", &[]).is_err());
    }
}
