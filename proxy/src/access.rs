//! Access policies: the client address behind trusted balancers, IP allow/deny lists, CORS
//! and security response headers. Compiled per route from the tenant's policy overlaid with
//! the route's.

use crate::errors::Reply;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use ipnet::IpNet;
use pingora::http::ResponseHeader;
use std::net::IpAddr;
use vantage_model::{parse_cidr, Access, Cors, IpRules, SecurityHeaders};

/// The client address: the peer, or — when the peer is a trusted balancer — the right-most
/// `X-Forwarded-For` hop that is not itself trusted (hops further left can be forged by
/// the client).
pub fn client_address(peer: Option<IpAddr>, xff: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    if !trusted.iter().any(|n| n.contains(&peer)) {
        return Some(peer);
    }
    let hops: Vec<&str> = xff
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        // A hop may carry a port: `a.b.c.d:port` or `[v6]:port`.
        let ip = hop
            .parse::<IpAddr>()
            .or_else(|_| hop.parse::<std::net::SocketAddr>().map(|s| s.ip()));
        match ip {
            Ok(ip) => {
                let ip = ip.to_canonical();
                client = ip;
                if !trusted.iter().any(|n| n.contains(&ip)) {
                    break;
                }
            }
            // Garbage from a trusted hop's client: the address is unknown.
            Err(_) => return None,
        }
    }
    Some(client)
}

/// Compiled IP rules.
#[derive(Debug, Clone, Default)]
pub struct IpRulesRt {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl IpRulesRt {
    fn compile(r: &IpRules) -> IpRulesRt {
        IpRulesRt {
            allow: r.allow.iter().filter_map(|s| parse_cidr(s)).collect(),
            deny: r.deny.iter().filter_map(|s| parse_cidr(s)).collect(),
        }
    }

    /// Deny wins; a non-empty allow list admits only its ranges. An unknown address is only
    /// admitted when there is no allow list.
    pub fn check(&self, ip: Option<IpAddr>) -> Result<(), Reply> {
        let refused = match ip {
            Some(ip) => {
                self.deny.iter().any(|n| n.contains(&ip))
                    || (!self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(&ip)))
            }
            None => !self.allow.is_empty(),
        };
        if refused {
            return Err(Reply::new(
                403,
                "ip_denied",
                "requests from this address are not allowed",
            ));
        }
        Ok(())
    }
}

/// Compiled CORS policy.
#[derive(Debug, Clone)]
pub struct CorsRt {
    any_origin: bool,
    origins: Vec<String>,
    methods: Vec<Method>,
    allow_methods: HeaderValue,
    allow_headers: HeaderValue,
    allowed_headers_lower: Vec<String>,
    expose_headers: Option<HeaderValue>,
    credentials: bool,
    max_age: HeaderValue,
}

fn join(list: &[String]) -> HeaderValue {
    HeaderValue::from_str(&list.join(", ")).unwrap_or(HeaderValue::from_static(""))
}

impl CorsRt {
    fn compile(c: &Cors) -> CorsRt {
        CorsRt {
            any_origin: c.allowed_origins.iter().any(|o| o == "*"),
            origins: c.allowed_origins.clone(),
            methods: c
                .allowed_methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
            allow_methods: join(&c.allowed_methods),
            allow_headers: join(&c.allowed_headers),
            allowed_headers_lower: c
                .allowed_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            expose_headers: (!c.exposed_headers.is_empty()).then(|| join(&c.exposed_headers)),
            credentials: c.allow_credentials,
            max_age: HeaderValue::from(c.max_age_s),
        }
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.any_origin || self.origins.iter().any(|o| o == origin)
    }

    /// Do answers depend on the request's `Origin` (so caches must `Vary: Origin`)?
    pub fn varies_by_origin(&self) -> bool {
        !self.any_origin || self.credentials
    }

    /// Headers for a response to a request from `origin` (an allowed one); `Vary` is the
    /// caller's, since it must be merged with the origin's.
    fn allow_origin_headers(&self, origin: &HeaderValue) -> Vec<(HeaderName, HeaderValue)> {
        let mut h = Vec::with_capacity(4);
        if self.any_origin && !self.credentials {
            h.push((
                http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            ));
        } else {
            h.push((http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()));
        }
        if self.credentials {
            h.push((
                http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
        h
    }

    /// CORS headers for an actual (non-preflight) response, or nothing when the request has
    /// no allowed `Origin`.
    pub fn response_headers(&self, req: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
        let Some(origin) = req.get(http::header::ORIGIN) else {
            return Vec::new();
        };
        if !origin.to_str().is_ok_and(|o| self.origin_allowed(o)) {
            return Vec::new();
        }
        let mut h = self.allow_origin_headers(origin);
        if let Some(expose) = &self.expose_headers {
            h.push((http::header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone()));
        }
        h
    }

    /// Answer a preflight: `Ok(headers)` for a 204, `Err` when the origin, method or a
    /// requested header is not allowed.
    pub fn preflight(
        &self,
        req: &HeaderMap,
        method: &Method,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, Reply> {
        let origin = req
            .get(http::header::ORIGIN)
            .cloned()
            .unwrap_or(HeaderValue::from_static(""));
        if !origin.to_str().is_ok_and(|o| self.origin_allowed(o)) {
            return Err(Reply::new(
                403,
                "cors_origin_not_allowed",
                "this origin may not call this API",
            ));
        }
        if !self.methods.contains(method) {
            return Err(Reply::new(
                403,
                "cors_method_not_allowed",
                format!("method {method} is not allowed by CORS"),
            ));
        }
        let requested = req
            .get(http::header::ACCESS_CONTROL_REQUEST_HEADERS)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        for h in requested
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
        {
            if !self
                .allowed_headers_lower
                .iter()
                .any(|a| a.eq_ignore_ascii_case(h))
            {
                return Err(Reply::new(
                    403,
                    "cors_header_not_allowed",
                    format!("header {h} is not allowed by CORS"),
                ));
            }
        }
        let mut h = self.allow_origin_headers(&origin);
        if self.varies_by_origin() {
            h.push((http::header::VARY, HeaderValue::from_static("Origin")));
        }
        h.push((
            http::header::ACCESS_CONTROL_ALLOW_METHODS,
            self.allow_methods.clone(),
        ));
        h.push((
            http::header::ACCESS_CONTROL_ALLOW_HEADERS,
            self.allow_headers.clone(),
        ));
        h.push((http::header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone()));
        Ok(h)
    }
}

/// Compiled security headers.
#[derive(Debug, Clone)]
pub struct SecurityRt {
    hsts: Option<HeaderValue>,
    frame_options: HeaderValue,
    referrer_policy: HeaderValue,
}

impl SecurityRt {
    fn compile(s: &SecurityHeaders) -> Option<SecurityRt> {
        s.enabled.then(|| SecurityRt {
            hsts: (s.hsts_max_age_s > 0)
                .then(|| HeaderValue::from_str(&format!("max-age={}", s.hsts_max_age_s)).ok())
                .flatten(),
            frame_options: HeaderValue::from_str(&s.frame_options)
                .unwrap_or(HeaderValue::from_static("DENY")),
            referrer_policy: HeaderValue::from_str(&s.referrer_policy)
                .unwrap_or(HeaderValue::from_static("no-referrer")),
        })
    }

    /// Headers to add to a proxied response (`tls`: the client connection is HTTPS).
    pub fn headers(&self, tls: bool) -> Vec<(HeaderName, HeaderValue)> {
        let mut h = vec![
            (
                http::header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (http::header::X_FRAME_OPTIONS, self.frame_options.clone()),
            (http::header::REFERRER_POLICY, self.referrer_policy.clone()),
        ];
        if tls {
            if let Some(v) = &self.hsts {
                h.push((http::header::STRICT_TRANSPORT_SECURITY, v.clone()));
            }
        }
        h
    }
}

/// A route's effective access policy.
#[derive(Debug, Clone, Default)]
pub struct AccessRt {
    pub cors: Option<CorsRt>,
    pub security: Option<SecurityRt>,
    pub ip_rules: Option<IpRulesRt>,
}

impl AccessRt {
    /// Compile the tenant's policy with the route's overrides.
    pub fn compile(tenant: &Access, route: &Access) -> AccessRt {
        let a = tenant.overlay(route);
        AccessRt {
            cors: a.cors.as_ref().map(CorsRt::compile),
            security: a.security_headers.as_ref().and_then(SecurityRt::compile),
            ip_rules: a.ip_rules.as_ref().map(IpRulesRt::compile),
        }
    }

    /// True when nothing is configured (the common, free case).
    pub fn is_empty(&self) -> bool {
        self.cors.is_none() && self.security.is_none() && self.ip_rules.is_none()
    }

    /// The policy's response fields: CORS (with `Vary: Origin` added to the origin's own
    /// `Vary` when the answer depends on it) and the security headers.
    pub fn apply_response_headers(
        &self,
        req: &HeaderMap,
        tls: bool,
        resp: &mut ResponseHeader,
    ) -> pingora::Result<()> {
        if let Some(cors) = &self.cors {
            for (n, v) in cors.response_headers(req) {
                resp.insert_header(n, v)?;
            }
            if cors.varies_by_origin() {
                resp.append_header(http::header::VARY, "Origin")?;
            }
        }
        if let Some(sec) = &self.security {
            for (n, v) in sec.headers(tls) {
                resp.insert_header(n, v)?;
            }
        }
        Ok(())
    }
}

/// Is this a CORS preflight? Then the method it asks about.
pub fn preflight_method(method: &Method, headers: &HeaderMap) -> Option<Method> {
    if method != Method::OPTIONS || !headers.contains_key(http::header::ORIGIN) {
        return None;
    }
    headers
        .get(http::header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| parse_cidr(s).unwrap()).collect()
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    #[test]
    fn client_address_behind_trusted_balancers() {
        let trusted = nets(&["10.0.0.0/8"]);
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        // Untrusted peer: XFF is ignored.
        assert_eq!(
            client_address(ip("203.0.113.5"), &xff("1.2.3.4"), &trusted),
            ip("203.0.113.5")
        );
        // Trusted peer: the right-most untrusted hop.
        assert_eq!(
            client_address(
                ip("10.0.0.2"),
                &xff("6.6.6.6, 198.51.100.7, 10.1.1.1"),
                &trusted
            ),
            ip("198.51.100.7")
        );
        // Only trusted hops: the left-most one.
        assert_eq!(
            client_address(ip("10.0.0.2"), &xff("10.9.9.9"), &trusted),
            ip("10.9.9.9")
        );
        // No XFF: the balancer itself.
        assert_eq!(
            client_address(ip("10.0.0.2"), &HeaderMap::new(), &trusted),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn ip_rules_deny_wins_and_allow_restricts() {
        let rules = IpRulesRt::compile(&IpRules {
            allow: vec!["192.0.2.0/24".into()],
            deny: vec!["192.0.2.9".into()],
        });
        assert!(rules.check("192.0.2.1".parse().ok()).is_ok());
        assert_eq!(
            rules.check("192.0.2.9".parse().ok()).unwrap_err().status,
            403
        );
        assert_eq!(
            rules.check("198.51.100.1".parse().ok()).unwrap_err().code,
            "ip_denied"
        );
    }

    #[test]
    fn cors_preflight_and_response() {
        let cors = CorsRt::compile(&Cors {
            allowed_origins: vec!["https://app.example.com".into()],
            allow_credentials: true,
            exposed_headers: vec!["X-Request-Id".into()],
            ..Cors::default()
        });
        let mut req = HeaderMap::new();
        req.insert("origin", "https://app.example.com".parse().unwrap());
        req.insert(
            "access-control-request-headers",
            "content-type, x-api-key".parse().unwrap(),
        );
        let h = cors.preflight(&req, &Method::POST).unwrap();
        assert!(h.contains(&(
            http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
            "https://app.example.com".parse().unwrap()
        )));
        assert!(h.contains(&(
            http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            "true".parse().unwrap()
        )));
        assert_eq!(
            cors.preflight(&req, &Method::TRACE).unwrap_err().code,
            "cors_method_not_allowed"
        );
        req.insert(
            "access-control-request-headers",
            "x-secret".parse().unwrap(),
        );
        assert_eq!(
            cors.preflight(&req, &Method::GET).unwrap_err().code,
            "cors_header_not_allowed"
        );
        req.insert("origin", "https://evil.example".parse().unwrap());
        assert_eq!(
            cors.preflight(&req, &Method::GET).unwrap_err().code,
            "cors_origin_not_allowed"
        );
        assert!(cors.response_headers(&req).is_empty());
    }
}
