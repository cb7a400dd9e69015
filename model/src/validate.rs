//! Field-precise validation of a [`Config`].

use crate::{
    Access, Config, HashKey, HeaderTransform, LbAlgorithm, LimitAlgorithm, LimitSubject,
    PathPattern, RateLimitPolicy, TargetUrl,
};
use std::collections::{HashMap, HashSet};
use std::fmt;

/// One problem, with the path of the field it is about (`routes[3].path_pattern`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(|e| e.to_string()).collect();
        write!(f, "{}", lines.join("\n"))
    }
}

#[derive(Default)]
struct Collector(Vec<FieldError>);

impl Collector {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Identifiers: 1..=64 of `[A-Za-z0-9._-]` (UUIDs qualify).
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// RFC 9110 token (header names, methods).
pub(crate) fn valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

fn check_cache(c: &mut Collector, p: &str, cp: &crate::CachePolicy, has_redis: bool) {
    if !cp.enabled {
        return;
    }
    if cp.storage != crate::CacheStorageKind::Memory && !has_redis {
        c.err(
            format!("{p}.storage"),
            "redis storage needs server.redis to be configured",
        );
    }
    if cp.methods.is_empty() {
        c.err(format!("{p}.methods"), "must list GET and/or HEAD");
    }
    for (k, m) in cp.methods.iter().enumerate() {
        if m != "GET" && m != "HEAD" {
            c.err(
                format!("{p}.methods[{k}]"),
                format!("'{m}' cannot be cached; only GET and HEAD can"),
            );
        }
    }
    if cp.statuses.is_empty() {
        c.err(format!("{p}.statuses"), "must list at least one status");
    }
    for (k, s) in cp.statuses.iter().enumerate() {
        if !(200..=599).contains(s) || *s == 206 || *s == 304 {
            c.err(
                format!("{p}.statuses[{k}]"),
                format!("{s} cannot be stored (200-599, except 206 and 304)"),
            );
        }
    }
    for (k, h) in cp.key_headers.iter().enumerate() {
        if !valid_token(h) {
            c.err(format!("{p}.key_headers[{k}]"), "not a valid header name");
        }
    }
    for (k, h) in cp.bypass.headers.iter().enumerate() {
        if !valid_token(h) {
            c.err(
                format!("{p}.bypass.headers[{k}]"),
                "not a valid header name",
            );
        }
    }
    for (k, h) in cp.bypass.cookies.iter().enumerate() {
        if !valid_token(h) {
            c.err(
                format!("{p}.bypass.cookies[{k}]"),
                "not a valid cookie name",
            );
        }
    }
    if cp.max_entry_bytes == 0 || cp.max_entry_bytes > 64 << 20 {
        c.err(
            format!("{p}.max_entry_bytes"),
            "must be between 1 and 67108864 (64 MiB)",
        );
    }
    if cp.lock_timeout_ms == 0 || cp.lock_timeout_ms > 60_000 {
        c.err(
            format!("{p}.lock_timeout_ms"),
            "must be between 1 and 60000",
        );
    }
    if cp.default_ttl_seconds > 365 * 24 * 3600 {
        c.err(
            format!("{p}.default_ttl_seconds"),
            "must be at most one year (31536000)",
        );
    }
}

fn valid_header_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

fn valid_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A lower-case DNS name of valid labels.
pub(crate) fn valid_host(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(valid_label)
}

fn check_transform(c: &mut Collector, path: &str, t: &HeaderTransform) {
    for (name, value) in t.add.iter().chain(t.set.iter()) {
        let which = if t.add.contains_key(name) {
            "add"
        } else {
            "set"
        };
        if !valid_token(name) {
            c.err(format!("{path}.{which}.{name}"), "not a valid header name");
        }
        if !valid_header_value(value) {
            c.err(
                format!("{path}.{which}.{name}"),
                "header value contains control characters",
            );
        }
    }
    for (i, name) in t.remove.iter().enumerate() {
        if !valid_token(name) {
            c.err(format!("{path}.remove[{i}]"), "not a valid header name");
        }
    }
}

/// `a.b.c.d`, `a.b.c.d/n`, or the IPv6 forms.
pub fn parse_cidr(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

fn check_limits(c: &mut Collector, path: &str, limits: &[RateLimitPolicy], redis: bool) {
    let mut names = HashSet::new();
    for (i, l) in limits.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if !valid_id(&l.name) {
            c.err(
                format!("{p}.name"),
                "must be 1-64 characters of A-Z a-z 0-9 . _ -",
            );
        } else if !names.insert(l.name.as_str()) {
            c.err(format!("{p}.name"), format!("'{}' is listed twice", l.name));
        }
        match &l.algorithm {
            LimitAlgorithm::TokenBucket { rate, burst } => {
                if !(rate.is_finite() && *rate > 0.0) {
                    c.err(
                        format!("{p}.algorithm.rate"),
                        "must be a positive number of requests per second",
                    );
                }
                if *burst == 0 {
                    c.err(format!("{p}.algorithm.burst"), "must be at least 1");
                }
            }
            LimitAlgorithm::SlidingWindow { limit, period_s } => {
                if *limit == 0 {
                    c.err(format!("{p}.algorithm.limit"), "must be at least 1");
                }
                if *period_s == 0 || *period_s > 86_400 {
                    c.err(
                        format!("{p}.algorithm.period_s"),
                        "must be between 1 and 86400",
                    );
                }
            }
        }
        if l.backend == crate::LimitBackend::Redis && !redis {
            c.err(format!("{p}.backend"), "backend redis needs server.redis");
        }
        if let LimitSubject::Header { name } = &l.subject {
            if !valid_token(name) {
                c.err(format!("{p}.subject.name"), "not a valid header name");
            }
        }
    }
}

fn check_origin_value(o: &str) -> bool {
    o == "*"
        || ["http://", "https://"].iter().any(|scheme| {
            o.strip_prefix(scheme).is_some_and(|rest| {
                !rest.is_empty()
                    && !rest.contains(['/', '?', '#', ' '])
                    && rest == rest.to_ascii_lowercase()
            })
        })
}

fn check_access(c: &mut Collector, path: &str, a: &Access) {
    if let Some(cors) = &a.cors {
        for (i, o) in cors.allowed_origins.iter().enumerate() {
            if !check_origin_value(o) {
                c.err(
                    format!("{path}.cors.allowed_origins[{i}]"),
                    format!("'{o}' is not '*' or a lower-case origin like https://app.example.com"),
                );
            }
        }
        if cors.allow_credentials && cors.allowed_origins.iter().any(|o| o == "*") {
            c.err(
                format!("{path}.cors.allow_credentials"),
                "cannot be combined with the '*' origin; list the origins",
            );
        }
        for (field, list) in [
            ("allowed_methods", &cors.allowed_methods),
            ("allowed_headers", &cors.allowed_headers),
            ("exposed_headers", &cors.exposed_headers),
        ] {
            for (i, v) in list.iter().enumerate() {
                if !valid_token(v) {
                    c.err(
                        format!("{path}.cors.{field}[{i}]"),
                        format!("'{v}' is not a valid token"),
                    );
                }
            }
        }
    }
    if let Some(sh) = &a.security_headers {
        for (field, v) in [
            ("frame_options", &sh.frame_options),
            ("referrer_policy", &sh.referrer_policy),
        ] {
            if v.is_empty() || !valid_header_value(v) {
                c.err(
                    format!("{path}.security_headers.{field}"),
                    "must be a non-empty header value",
                );
            }
        }
    }
    if let Some(ip) = &a.ip_rules {
        for (field, list) in [("allow", &ip.allow), ("deny", &ip.deny)] {
            for (i, v) in list.iter().enumerate() {
                if parse_cidr(v).is_none() {
                    c.err(
                        format!("{path}.ip_rules.{field}[{i}]"),
                        format!("'{v}' is not an IP address or CIDR range"),
                    );
                }
            }
        }
    }
}

pub(crate) fn validate(cfg: &Config) -> Result<(), crate::ValidationErrors> {
    let mut c = Collector::default();
    let s = &cfg.server;

    if s.listen.is_empty() && s.tls.is_empty() {
        c.err(
            "server.listen",
            "at least one listener (listen or tls) is needed",
        );
    }
    for (i, a) in s.listen.iter().enumerate() {
        if a.parse::<std::net::SocketAddr>().is_err() {
            c.err(
                format!("server.listen[{i}]"),
                format!("'{a}' is not an address like 0.0.0.0:8080"),
            );
        }
    }
    for (i, t) in s.tls.iter().enumerate() {
        if t.listen.parse::<std::net::SocketAddr>().is_err() {
            c.err(
                format!("server.tls[{i}].listen"),
                format!("'{}' is not an address like 0.0.0.0:8443", t.listen),
            );
        }
        if t.cert_file.is_empty() {
            c.err(format!("server.tls[{i}].cert_file"), "must not be empty");
        }
        if t.key_file.is_empty() {
            c.err(format!("server.tls[{i}].key_file"), "must not be empty");
        }
    }
    if !s.ops_listen.is_empty() && s.ops_listen.parse::<std::net::SocketAddr>().is_err() {
        c.err(
            "server.ops_listen",
            format!("'{}' is not an address like 127.0.0.1:9090", s.ops_listen),
        );
    }
    if s.threads == 0 || s.threads > 256 {
        c.err("server.threads", "must be between 1 and 256");
    }
    for (i, d) in s.base_domains.iter().enumerate() {
        if !valid_host(d) {
            c.err(
                format!("server.base_domains[{i}]"),
                format!("'{d}' is not a lower-case host name"),
            );
        }
    }
    // Pingora's own parser refuses more than 256 fields or 1 MiB with a bare 400, so larger
    // limits would never answer 431.
    if s.max_request_headers == 0 || s.max_request_headers > 256 {
        c.err("server.max_request_headers", "must be between 1 and 256");
    }
    if s.max_request_header_bytes < 1024 || s.max_request_header_bytes > 1 << 20 {
        c.err(
            "server.max_request_header_bytes",
            "must be between 1024 and 1048576",
        );
    }
    if s.source == crate::ConfigSource::Postgres && s.postgres.is_none() {
        c.err("server.postgres", "source: postgres needs server.postgres");
    }
    if let Some(pg) = &s.postgres {
        if !(pg.url.starts_with("postgres://") || pg.url.starts_with("postgresql://")) {
            c.err(
                "server.postgres.url",
                "must start with postgres:// or postgresql://",
            );
        }
        if pg.pool_size == 0 || pg.pool_size > 64 {
            c.err("server.postgres.pool_size", "must be between 1 and 64");
        }
        if !(100..=60_000).contains(&pg.poll_interval_ms) {
            c.err(
                "server.postgres.poll_interval_ms",
                "must be between 100 and 60000",
            );
        }
        if !(100..=60_000).contains(&pg.timeout_ms) {
            c.err(
                "server.postgres.timeout_ms",
                "must be between 100 and 60000",
            );
        }
        if pg.last_good_file.is_empty() {
            c.err("server.postgres.last_good_file", "must not be empty");
        }
        let rl = &pg.request_logs;
        if rl.queue_size == 0 || rl.queue_size > 1_000_000 {
            c.err(
                "server.postgres.request_logs.queue_size",
                "must be between 1 and 1000000",
            );
        }
        if rl.batch_size == 0 || rl.batch_size > 5000 {
            c.err(
                "server.postgres.request_logs.batch_size",
                "must be between 1 and 5000",
            );
        }
        if !(10..=60_000).contains(&rl.flush_interval_ms) {
            c.err(
                "server.postgres.request_logs.flush_interval_ms",
                "must be between 10 and 60000",
            );
        }
    }
    if let Some(t) = &s.tracing {
        if !(t.otlp_endpoint.starts_with("http://") || t.otlp_endpoint.starts_with("https://")) {
            c.err(
                "server.tracing.otlp_endpoint",
                "must be an http:// or https:// URL",
            );
        }
        if t.service_name.is_empty() {
            c.err("server.tracing.service_name", "must not be empty");
        }
        if !(0.0..=1.0).contains(&t.sample_ratio) {
            c.err("server.tracing.sample_ratio", "must be between 0 and 1");
        }
    }
    if s.cache.memory_bytes < 1 << 20 {
        c.err(
            "server.cache.memory_bytes",
            "must be at least 1048576 (1 MiB)",
        );
    }
    if let Some(t) = &s.ops_token {
        if t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()) {
            c.err(
                "server.ops_token",
                "must be at least 16 printable ASCII characters without spaces",
            );
        }
    }
    if let Some(r) = &s.redis {
        if !(r.url.starts_with("redis://") || r.url.starts_with("rediss://")) {
            c.err(
                "server.redis.url",
                "must be redis://host:port or rediss://host:port",
            );
        }
        if r.key_prefix.is_empty() || r.key_prefix.contains(['{', '}', ' ']) {
            c.err(
                "server.redis.key_prefix",
                "must be non-empty, without braces or spaces",
            );
        }
        if r.timeout_ms == 0 || r.timeout_ms > 200 {
            c.err(
                "server.redis.timeout_ms",
                "must be between 1 and 200: a dead Redis must not stall requests",
            );
        }
    }
    for (i, v) in s.trusted_proxies.iter().enumerate() {
        if parse_cidr(v).is_none() {
            c.err(
                format!("server.trusted_proxies[{i}]"),
                format!("'{v}' is not an IP address or CIDR range"),
            );
        }
    }
    let mut addresses: HashMap<std::net::SocketAddr, String> = HashMap::new();
    let all = s
        .listen
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("server.listen[{i}]"), a))
        .chain(
            s.tls
                .iter()
                .enumerate()
                .map(|(i, t)| (format!("server.tls[{i}].listen"), &t.listen)),
        )
        .chain(std::iter::once((
            "server.ops_listen".to_string(),
            &s.ops_listen,
        )));
    for (path, a) in all {
        if let Ok(addr) = a.parse::<std::net::SocketAddr>() {
            if let Some(first) = addresses.insert(addr, path.clone()) {
                c.err(path, format!("'{a}' is already used by {first}"));
            }
        }
    }

    // Tenants.
    let mut tenant_ids: HashMap<&str, usize> = HashMap::new();
    let mut subdomains: HashMap<&str, usize> = HashMap::new();
    let mut hosts: HashMap<String, usize> = HashMap::new();
    for (i, t) in cfg.tenants.iter().enumerate() {
        let p = format!("tenants[{i}]");
        if !valid_id(&t.id) {
            c.err(
                format!("{p}.id"),
                "must be 1-64 characters of A-Z a-z 0-9 . _ -",
            );
        } else if let Some(j) = tenant_ids.insert(&t.id, i) {
            c.err(
                format!("{p}.id"),
                format!("'{}' is already used by tenants[{j}]", t.id),
            );
        }
        if t.name.trim().is_empty() {
            c.err(format!("{p}.name"), "must not be empty");
        }
        if !valid_label(&t.subdomain) {
            c.err(
                format!("{p}.subdomain"),
                "must be a lower-case DNS label (a-z, 0-9, '-', at most 63)",
            );
        } else if let Some(j) = subdomains.insert(&t.subdomain, i) {
            c.err(
                format!("{p}.subdomain"),
                format!("'{}' is already used by tenants[{j}]", t.subdomain),
            );
        }
        check_access(&mut c, &format!("{p}.access"), &t.access);
        check_limits(
            &mut c,
            &format!("{p}.rate_limits"),
            &t.rate_limits,
            s.redis.is_some(),
        );
        for (k, h) in t.custom_hosts.iter().enumerate() {
            let hp = format!("{p}.custom_hosts[{k}]");
            if !valid_host(h) {
                c.err(hp, format!("'{h}' is not a lower-case host name"));
            } else if let Some(j) = hosts.insert(h.clone(), i) {
                c.err(hp, format!("'{h}' is already used by tenants[{j}]"));
            }
        }
    }

    // Origins.
    let mut origin_ids: HashMap<&str, (usize, &str)> = HashMap::new();
    for (i, o) in cfg.origins.iter().enumerate() {
        let p = format!("origins[{i}]");
        if !valid_id(&o.id) {
            c.err(
                format!("{p}.id"),
                "must be 1-64 characters of A-Z a-z 0-9 . _ -",
            );
        } else if let Some((j, _)) = origin_ids.insert(&o.id, (i, &o.tenant_id)) {
            c.err(
                format!("{p}.id"),
                format!("'{}' is already used by origins[{j}]", o.id),
            );
        }
        if !tenant_ids.contains_key(o.tenant_id.as_str()) {
            c.err(
                format!("{p}.tenant_id"),
                format!("no tenant has id '{}'", o.tenant_id),
            );
        }
        if o.targets.is_empty() {
            c.err(format!("{p}.targets"), "at least one target is needed");
        }
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
            }
            if h.interval_ms < 50 {
                c.err(
                    format!("{p}.health_check.interval_ms"),
                    "must be at least 50",
                );
            }
            if h.timeout_ms == 0 {
                c.err(format!("{p}.health_check.timeout_ms"), "must be at least 1");
            }
            if h.healthy_threshold == 0 {
                c.err(
                    format!("{p}.health_check.healthy_threshold"),
                    "must be at least 1",
                );
            }
            if h.unhealthy_threshold == 0 {
                c.err(
                    format!("{p}.health_check.unhealthy_threshold"),
                    "must be at least 1",
                );
            }
        }
        for (name, v) in [
            ("connect_ms", o.timeouts.connect_ms),
            ("read_ms", o.timeouts.read_ms),
            ("write_ms", o.timeouts.write_ms),
            ("total_connect_ms", o.timeouts.total_connect_ms),
        ] {
            if v == 0 {
                c.err(format!("{p}.timeouts.{name}"), "must be at least 1");
            }
        }
        if o.retries > 10 {
            c.err(format!("{p}.retries"), "must be at most 10");
        }
        if o.circuit_breaker.enabled {
            if o.circuit_breaker.failure_threshold == 0 {
                c.err(
                    format!("{p}.circuit_breaker.failure_threshold"),
                    "must be at least 1",
                );
            }
            if o.circuit_breaker.open_ms == 0 {
                c.err(format!("{p}.circuit_breaker.open_ms"), "must be at least 1");
            }
        }
        if let Some(sni) = &o.tls.sni {
            if !valid_host(sni) {
                c.err(format!("{p}.tls.sni"), "not a lower-case host name");
            }
        }
    }

    // Routes.
    let mut route_ids: HashMap<&str, usize> = HashMap::new();
    let mut signatures: HashMap<String, usize> = HashMap::new();
    for (i, r) in cfg.routes.iter().enumerate() {
        let p = format!("routes[{i}]");
        if !valid_id(&r.id) {
            c.err(
                format!("{p}.id"),
                "must be 1-64 characters of A-Z a-z 0-9 . _ -",
            );
        } else if let Some(j) = route_ids.insert(&r.id, i) {
            c.err(
                format!("{p}.id"),
                format!("'{}' is already used by routes[{j}]", r.id),
            );
        }
        if !tenant_ids.contains_key(r.tenant_id.as_str()) {
            c.err(
                format!("{p}.tenant_id"),
                format!("no tenant has id '{}'", r.tenant_id),
            );
        }
        let pattern = match PathPattern::parse(&r.path_pattern) {
            Ok(pat) => Some(pat),
            Err(e) => {
                c.err(
                    format!("{p}.path_pattern"),
                    format!("'{}': {e}", r.path_pattern),
                );
                None
            }
        };
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
            if h.value.as_deref().is_some_and(|v| !valid_header_value(v)) {
                c.err(
                    format!("{p}.headers[{k}].value"),
                    "contains control characters",
                );
            }
        }
        match origin_ids.get(r.origin_id.as_str()) {
            None => c.err(
                format!("{p}.origin_id"),
                format!("no origin has id '{}'", r.origin_id),
            ),
            Some((_, t)) if *t != r.tenant_id => c.err(
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
            }
        }
        if let Some(rw) = &r.rewrite {
            if let Err(e) = regex::Regex::new(&rw.pattern) {
                c.err(
                    format!("{p}.rewrite.pattern"),
                    format!("invalid regex: {e}"),
                );
            }
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
        check_transform(&mut c, &format!("{p}.request_headers"), &r.request_headers);
        check_transform(
            &mut c,
            &format!("{p}.response_headers"),
            &r.response_headers,
        );
        check_access(&mut c, &format!("{p}.access"), &r.access);
        check_limits(
            &mut c,
            &format!("{p}.rate_limits"),
            &r.rate_limits,
            cfg.server.redis.is_some(),
        );
        for (k, scope) in r.auth.scopes.iter().enumerate() {
            if !valid_scope(scope) {
                c.err(
                    format!("{p}.auth.scopes[{k}]"),
                    format!("'{scope}' is not a valid scope"),
                );
            }
        }
        check_cache(
            &mut c,
            &format!("{p}.cache"),
            &r.cache,
            cfg.server.redis.is_some(),
        );
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
            let sig = format!("{}|{}|{m:?}|{h:?}|{}", r.tenant_id, pat, r.priority);
            if let Some(j) = signatures.insert(sig, i) {
                c.err(
                    format!("{p}.path_pattern"),
                    format!(
                        "routes[{j}] already has the same pattern, methods, headers and priority; one of them could never match"
                    ),
                );
            }
        }
    }

    let mut issuer_ids = HashSet::new();
    for (i, j) in cfg.jwt_issuers.iter().enumerate() {
        let p = format!("jwt_issuers[{i}]");
        if !valid_id(&j.id) {
            c.err(
                format!("{p}.id"),
                "must be 1-64 characters of A-Z a-z 0-9 . _ -",
            );
        } else if !issuer_ids.insert(j.id.as_str()) {
            c.err(format!("{p}.id"), format!("'{}' is listed twice", j.id));
        }
        if !tenant_ids.contains_key(j.tenant_id.as_str()) {
            c.err(
                format!("{p}.tenant_id"),
                format!("no tenant has id '{}'", j.tenant_id),
            );
        }
        if j.issuer.is_empty() {
            c.err(format!("{p}.issuer"), "must not be empty");
        }
        let sources = [
            j.jwks_url.is_some(),
            j.public_key_pem.is_some(),
            j.shared_secret.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if sources != 1 {
            c.err(
                format!("{p}.jwks_url"),
                "exactly one of jwks_url, public_key_pem and shared_secret is needed",
            );
        }
        if let Some(u) = &j.jwks_url {
            let ok = u.parse::<http::Uri>().ok().is_some_and(|uri| {
                matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
            });
            if !ok {
                c.err(
                    format!("{p}.jwks_url"),
                    format!("'{u}' is not an http(s) URL"),
                );
            }
        }
        if j.shared_secret.as_ref().is_some_and(|s| s.len() < 32) {
            c.err(format!("{p}.shared_secret"), "must be at least 32 bytes");
        }
        if j.algorithms.is_empty() {
            c.err(
                format!("{p}.algorithms"),
                "at least one algorithm is needed",
            );
        }
        for (k, a) in j.algorithms.iter().enumerate() {
            let family = match a.as_str() {
                "HS256" | "HS384" | "HS512" => "hmac",
                "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => "rsa",
                "ES256" | "ES384" => "ec",
                "EdDSA" => "ed",
                _ => {
                    c.err(
                        format!("{p}.algorithms[{k}]"),
                        format!("'{a}' is not a supported algorithm (never 'none')"),
                    );
                    continue;
                }
            };
            if (family == "hmac") != j.shared_secret.is_some() {
                c.err(
                    format!("{p}.algorithms[{k}]"),
                    format!("'{a}' does not fit the key: HS* needs shared_secret, and a shared secret only HS*"),
                );
            }
        }
        if let Some(cookie) = &j.cookie {
            if !valid_token(cookie) {
                c.err(format!("{p}.cookie"), "not a valid cookie name");
            }
        }
        for (claim, header) in &j.claim_headers {
            if !valid_token(header) {
                c.err(
                    format!("{p}.claim_headers.{claim}"),
                    "not a valid header name",
                );
            }
        }
        if j.jwks_min_refetch_s == 0 {
            c.err(format!("{p}.jwks_min_refetch_s"), "must be at least 1");
        }
    }

    for (i, r) in cfg.routes.iter().enumerate() {
        let needs_jwt = matches!(
            r.auth.mode,
            crate::AuthMode::JwtRequired | crate::AuthMode::JwtOrApikey
        );
        if needs_jwt && !cfg.jwt_issuers.iter().any(|j| j.tenant_id == r.tenant_id) {
            c.err(
                format!("routes[{i}].auth.mode"),
                format!("tenant '{}' has no jwt_issuers entry", r.tenant_id),
            );
        }
    }

    let mut key_ids = HashSet::new();
    let mut hashes: HashMap<&str, usize> = HashMap::new();
    for (i, k) in cfg.api_keys.iter().enumerate() {
        let p = format!("api_keys[{i}]");
        if !valid_id(&k.id) {
            c.err(
                format!("{p}.id"),
                "must be 1-64 characters of A-Z a-z 0-9 . _ -",
            );
        } else if !key_ids.insert(k.id.as_str()) {
            c.err(format!("{p}.id"), format!("'{}' is listed twice", k.id));
        }
        if !tenant_ids.contains_key(k.tenant_id.as_str()) {
            c.err(
                format!("{p}.tenant_id"),
                format!("no tenant has id '{}'", k.tenant_id),
            );
        }
        if k.key_hash.len() != 64
            || !k
                .key_hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            c.err(
                format!("{p}.key_hash"),
                "must be the lower-case hex SHA-256 of the key (64 characters), never the key",
            );
        } else if let Some(j) = hashes.insert(&k.key_hash, i) {
            c.err(
                format!("{p}.key_hash"),
                format!("the same key is already api_keys[{j}]"),
            );
        }
        for (s_i, scope) in k.scopes.iter().enumerate() {
            if !valid_scope(scope) {
                c.err(
                    format!("{p}.scopes[{s_i}]"),
                    format!("'{scope}' is not a valid scope"),
                );
            }
        }
        if let Some(t) = &k.expires_at {
            if humantime::parse_rfc3339_weak(t).is_err() {
                c.err(
                    format!("{p}.expires_at"),
                    format!("'{t}' is not an RFC 3339 time like 2027-01-01T00:00:00Z"),
                );
            }
        }
    }

    if c.0.is_empty() {
        Ok(())
    } else {
        Err(crate::ValidationErrors(c.0))
    }
}

/// Scopes: 1–128 visible ASCII characters, no spaces or commas. Example: `orders:read`.
fn valid_scope(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}

#[cfg(test)]
mod tests {
    use crate::Config;

    const GOOD: &str = r#"
server:
  listen: ["127.0.0.1:8080"]
  base_domains: [vantage.localhost]
tenants:
  - {id: acme, name: Acme, subdomain: acme, custom_hosts: [api.acme.test]}
  - {id: globex, name: Globex, subdomain: globex}
origins:
  - id: acme-api
    tenant_id: acme
    lb: weighted
    targets:
      - {url: "http://127.0.0.1:9001", weight: 3}
      - {url: "http://127.0.0.1:9002"}
  - id: globex-api
    tenant_id: globex
    lb: consistent_hash
    hash_key: {source: header, name: X-User}
    targets: [{url: "https://api.globex.test"}]
routes:
  - {id: r1, tenant_id: acme, path_pattern: "/api/*", origin_id: acme-api}
  - {id: r2, tenant_id: acme, path_pattern: "/users/:id", methods: [GET], origin_id: acme-api}
  - {id: r3, tenant_id: globex, path_pattern: "/", origin_id: globex-api}
"#;

    fn errors(yaml: &str) -> Vec<String> {
        let cfg = Config::from_yaml(yaml).expect("parses");
        match cfg.validate() {
            Ok(()) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn good_config_passes() {
        assert_eq!(errors(GOOD), Vec::<String>::new());
    }

    #[test]
    fn the_demo_config_is_valid() {
        let text = include_str!("../../conf/demo.yaml");
        Config::from_yaml_validated(text).expect("conf/demo.yaml must validate");
    }

    #[test]
    fn the_postgres_proxy_config_is_valid() {
        let text = include_str!("../../conf/proxy-postgres.yaml");
        let cfg = Config::from_yaml_validated(text).expect("conf/proxy-postgres.yaml");
        assert_eq!(cfg.server.source, crate::ConfigSource::Postgres);
        let bad = text.replace("poll_interval_ms: 1000", "poll_interval_ms: 5");
        assert!(errors(&bad)
            .iter()
            .any(|e| e.starts_with("server.postgres.poll_interval_ms")));
        let none = text.replace("  postgres:\n", "  old_postgres:\n");
        assert!(Config::from_yaml(&none).is_err(), "unknown field");
    }

    #[test]
    fn reports_every_bad_field_with_its_path() {
        let bad = GOOD
            .replace(
                "path_pattern: \"/users/:id\"",
                "path_pattern: \"users/:id\"",
            )
            .replace("weight: 3", "weight: 0")
            .replace("subdomain: globex", "subdomain: Globex!")
            .replace("origin_id: globex-api", "origin_id: acme-api")
            .replace("methods: [GET]", "methods: [get]");
        let errs = errors(&bad);
        let expect = [
            "routes[1].path_pattern: 'users/:id': must start with '/'",
            "origins[0].targets[0].weight: must be between 1 and 1000",
            "tenants[1].subdomain: must be a lower-case DNS label",
            "routes[2].origin_id: origin 'acme-api' belongs to tenant 'acme', not 'globex'",
            "routes[1].methods[0]: 'get' is not an upper-case HTTP method",
        ];
        for e in expect {
            assert!(
                errs.iter().any(|x| x.starts_with(e)),
                "missing {e:?} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), expect.len(), "{errs:#?}");
    }

    #[test]
    fn cache_policies_are_checked() {
        let bad = GOOD.replace(
            "origin_id: globex-api}",
            "origin_id: globex-api, cache: {enabled: true, storage: redis, methods: [GET, POST], statuses: [200, 206], key_headers: [\"bad name\"], max_entry_bytes: 0, lock_timeout_ms: 0}}",
        );
        let errs = errors(&bad);
        let expect = [
            "routes[2].cache.storage: redis storage needs server.redis",
            "routes[2].cache.methods[1]: 'POST' cannot be cached",
            "routes[2].cache.statuses[1]: 206 cannot be stored",
            "routes[2].cache.key_headers[0]: not a valid header name",
            "routes[2].cache.max_entry_bytes: must be between",
            "routes[2].cache.lock_timeout_ms: must be between",
        ];
        for e in expect {
            assert!(
                errs.iter().any(|x| x.starts_with(e)),
                "missing {e:?} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), expect.len(), "{errs:#?}");
        // A disabled policy is not checked; unknown fields are refused when parsing.
        let off = GOOD.replace(
            "origin_id: globex-api}",
            "origin_id: globex-api, cache: {enabled: false, methods: [POST]}}",
        );
        assert_eq!(errors(&off), Vec::<String>::new());
        let typo = GOOD.replace(
            "origin_id: globex-api}",
            "origin_id: globex-api, cache: {enabled: true, ttl: 5}}",
        );
        assert!(Config::from_yaml(&typo).is_err());
    }

    #[test]
    fn refuses_duplicates_and_dangling_references() {
        let bad = GOOD
            .replace("id: globex, name", "id: acme, name")
            .replace("subdomain: globex", "subdomain: acme");
        let errs = errors(&bad);
        assert!(errs
            .iter()
            .any(|e| e.starts_with("tenants[1].id: 'acme' is already used by tenants[0]")));
        assert!(errs
            .iter()
            .any(|e| e.starts_with("tenants[1].subdomain: 'acme' is already used")));

        let bad = GOOD.replace(
            "origin_id: acme-api}\n  - {id: r2",
            "origin_id: nope}\n  - {id: r2",
        );
        assert_eq!(
            errors(&bad),
            vec!["routes[0].origin_id: no origin has id 'nope'"]
        );

        let bad = GOOD
            .replace("path_pattern: \"/\"", "path_pattern: \"/api/*\"")
            .replace(
                "{id: r3, tenant_id: globex, path_pattern: \"/api/*\", origin_id: globex-api}",
                "{id: r3, tenant_id: acme, path_pattern: \"/api//*\", origin_id: acme-api}",
            );
        let errs = errors(&bad);
        assert!(
            errs[0].starts_with("routes[2].path_pattern: routes[0] already has"),
            "{errs:?}"
        );
    }

    #[test]
    fn target_urls_and_algorithms() {
        let bad = GOOD
            .replace("http://127.0.0.1:9002", "ftp://127.0.0.1:9002")
            .replace(
                "lb: consistent_hash\n    hash_key: {source: header, name: X-User}",
                "lb: consistent_hash",
            );
        let errs = errors(&bad);
        assert!(
            errs.iter()
                .any(|e| e.starts_with("origins[0].targets[1].url: scheme must be http or https")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("origins[1].hash_key: consistent_hash needs")),
            "{errs:?}"
        );
    }

    #[test]
    fn server_addresses_limits_and_health_check_targets() {
        let bad = GOOD.replace(
            "  listen: [\"127.0.0.1:8080\"]",
            "  listen: [\"127.0.0.1:8080\"]\n  ops_listen: \"127.0.0.1:8080\"\n  max_request_headers: 1000",
        );
        let errs = errors(&bad);
        assert!(
            errs.contains(
                &"server.ops_listen: '127.0.0.1:8080' is already used by server.listen[0]"
                    .to_string()
            ),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("server.max_request_headers: must be between 1 and 256")),
            "{errs:?}"
        );

        let bad = GOOD.replace(
            "      - {url: \"http://127.0.0.1:9002\"}",
            "      - {url: \"https://127.0.0.1:9002\"}\n    health_check: {path: /healthz}",
        );
        assert_eq!(errors(&bad), vec!["origins[0].health_check: all targets of a health-checked origin must use the same scheme"]);

        let bad = GOOD.replace(
            "origin_id: acme-api}\n  - {id: r2",
            "origin_id: acme-api, rewrite: {pattern: \"^/a\", replacement: \"/b c\"}}\n  - {id: r2",
        );
        assert_eq!(errors(&bad), vec!["routes[0].rewrite.replacement: must be a URI path: no spaces, control or non-ASCII characters, no '#'"]);
    }

    #[test]
    fn policies_are_validated() {
        let bad = GOOD
            .replace(
                "  listen: [\"127.0.0.1:8080\"]",
                "  listen: [\"127.0.0.1:8080\"]\n  trusted_proxies: [10.0.0.0/33]",
            )
            .replace(
                "{id: globex, name: Globex, subdomain: globex}",
                "{id: globex, name: Globex, subdomain: globex, access: {cors: {allowed_origins: ['*'], allow_credentials: true}, ip_rules: {deny: [nope]}}, rate_limits: [{name: a, algorithm: {type: token_bucket, rate: 0, burst: 0}, subject: {by: tenant}}]}",
            )
            + "api_keys:\n  - {id: k, tenant_id: acme, name: K, key_hash: vk_live_plaintext, expires_at: tomorrow}\n";
        let errs = errors(&bad);
        for e in [
            "server.trusted_proxies[0]: '10.0.0.0/33' is not an IP address or CIDR range",
            "tenants[1].access.cors.allow_credentials: cannot be combined with the '*' origin",
            "tenants[1].access.ip_rules.deny[0]: 'nope' is not an IP address or CIDR range",
            "tenants[1].rate_limits[0].algorithm.rate: must be a positive number",
            "tenants[1].rate_limits[0].algorithm.burst: must be at least 1",
            "api_keys[0].key_hash: must be the lower-case hex SHA-256 of the key",
            "api_keys[0].expires_at: 'tomorrow' is not an RFC 3339 time",
        ] {
            assert!(
                errs.iter().any(|x| x.starts_with(e)),
                "missing {e:?} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), 7, "{errs:#?}");
    }

    #[test]
    fn unknown_fields_are_refused_by_the_parser() {
        let err = Config::from_yaml(
            &GOOD
                .replace("priority", "x")
                .replace("lb: weighted", "lb: weighted\n    colour: red"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `colour`"), "{err}");
        let err = Config::from_yaml(&GOOD.replace("lb: weighted", "lb: fastest"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `fastest`"), "{err}");
    }
}
