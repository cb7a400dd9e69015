//! What an origin is told about the client and this hop, and which client-sent header
//! fields never reach it.
//!
//! - `X-Forwarded-For`: the peer's address appended to the list the request came with (only
//!   the right-most entries, added by this gateway and trusted balancers, are facts).
//! - `X-Forwarded-Proto`, `X-Forwarded-Host`: always the gateway's own view; the host is the
//!   normal form of the host the tenant was found by.
//! - `Forwarded` (RFC 7239) and `X-Real-IP`: kept only from a trusted balancer (anyone else
//!   could name any address in them).
//! - Header names with `_`: dropped unless `allow_underscores_in_headers` (CGI and WSGI
//!   servers read `X_User_Id` as `X-User-Id`, a name only the gateway may set).

use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use std::net::IpAddr;

// Names built once: a lookup by `&str` parses the name on every call. Inserts pass
// `.as_str()`, which Pingora keeps as the wire spelling without copying.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub static FORWARDED: HeaderName = http::header::FORWARDED;

/// This hop, as the gateway sees it.
pub struct Hop<'a> {
    /// The TCP peer.
    pub peer: Option<IpAddr>,
    /// The peer is one of `trusted_proxies`.
    pub peer_trusted: bool,
    pub tls: bool,
    /// The matched host in normal form.
    pub host: Option<&'a HeaderValue>,
}

impl<'a> Hop<'a> {
    /// The hop of a request from `peer`, trusted when it is one of `trusted_proxies`.
    pub fn new(
        peer: Option<IpAddr>,
        trusted_proxies: &[ipnet::IpNet],
        tls: bool,
        host: Option<&'a HeaderValue>,
    ) -> Hop<'a> {
        Hop {
            peer,
            peer_trusted: peer.is_some_and(|p| trusted_proxies.iter().any(|n| n.contains(&p))),
            tls,
            host,
        }
    }
}

/// Append an IP address to `out` (IPv4 without the formatting machinery: this runs for
/// every request).
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// Set the forwarding fields of the request to the origin.
pub fn apply(req: &mut RequestHeader, hop: &Hop<'_>) -> pingora::Result<()> {
    if let Some(peer) = hop.peer {
        let mut xff = String::with_capacity(48);
        for prev in req.headers.get_all(&X_FORWARDED_FOR) {
            if let Ok(prev) = prev.to_str() {
                xff.push_str(prev);
                xff.push_str(", ");
            }
        }
        push_ip(&mut xff, peer);
        req.insert_header(X_FORWARDED_FOR.as_str(), xff)?;
    }
    if !hop.peer_trusted {
        for name in [&FORWARDED, &X_REAL_IP] {
            if req.headers.contains_key(name) {
                req.remove_header(name);
            }
        }
    }
    req.insert_header(
        X_FORWARDED_PROTO.as_str(),
        HeaderValue::from_static(if hop.tls { "https" } else { "http" }),
    )?;
    match hop.host {
        Some(host) => req.insert_header(X_FORWARDED_HOST.as_str(), host.clone())?,
        None => {
            req.remove_header(&X_FORWARDED_HOST);
        }
    }
    Ok(())
}

/// Remove every header whose name holds `_`.
pub fn drop_underscored(req: &mut RequestHeader) {
    let underscored = |n: &http::HeaderName| n.as_str().bytes().any(|b| b == b'_');
    if !req.headers.keys().any(underscored) {
        return;
    }
    let names: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|n| underscored(n))
        .cloned()
        .collect();
    for name in names {
        req.remove_header(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    fn get<'a>(r: &'a RequestHeader, n: &str) -> Option<&'a str> {
        r.headers.get(n).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn push_ip_formats_like_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.100.255",
            "203.0.113.9",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut s = String::new();
            push_ip(&mut s, ip);
            assert_eq!(s, ip.to_string());
        }
    }

    #[test]
    fn untrusted_clients_cannot_speak_for_the_hop() {
        let host = HeaderValue::from_static("acme.example");
        let spoofed = [
            ("x-forwarded-for", "6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6;host=evil"),
            ("x-forwarded-host", "evil"),
            ("x-forwarded-proto", "https"),
        ];
        let mut r = req(&spoofed);
        let peer: IpAddr = "198.51.100.7".parse().unwrap();
        let hop = Hop {
            peer: Some(peer),
            peer_trusted: false,
            tls: false,
            host: Some(&host),
        };
        apply(&mut r, &hop).unwrap();
        assert_eq!(get(&r, "x-forwarded-for"), Some("6.6.6.6, 198.51.100.7"));
        assert_eq!(get(&r, "x-real-ip"), None);
        assert_eq!(get(&r, "forwarded"), None);
        assert_eq!(get(&r, "x-forwarded-host"), Some("acme.example"));
        assert_eq!(get(&r, "x-forwarded-proto"), Some("http"));
        // A trusted balancer's list is extended and its Forwarded kept.
        let mut r = req(&[
            ("x-forwarded-for", "203.0.113.5"),
            ("forwarded", "for=203.0.113.5"),
            ("x-real-ip", "203.0.113.5"),
        ]);
        let lb: IpAddr = "10.0.0.2".parse().unwrap();
        let hop = Hop {
            peer: Some(lb),
            peer_trusted: true,
            tls: true,
            host: Some(&host),
        };
        apply(&mut r, &hop).unwrap();
        assert_eq!(get(&r, "x-forwarded-for"), Some("203.0.113.5, 10.0.0.2"));
        assert_eq!(get(&r, "x-real-ip"), Some("203.0.113.5"));
        assert_eq!(get(&r, "forwarded"), Some("for=203.0.113.5"));
        assert_eq!(get(&r, "x-forwarded-proto"), Some("https"));
    }

    #[test]
    fn underscored_names_are_dropped() {
        let mut r = req(&[("x_user_id", "admin"), ("x-ok", "1"), ("a_b", "2")]);
        drop_underscored(&mut r);
        assert_eq!(get(&r, "x_user_id"), None);
        assert_eq!(get(&r, "a_b"), None);
        assert_eq!(get(&r, "x-ok"), Some("1"));
    }
}
