//! Field-precise validation of a [`Config`].

use crate::bounds as b;
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
    /// The value is fine on its own but something else already holds it (a host, a
    /// subdomain, an API key): an API answers 409, and must not say who holds it.
    pub conflict: bool,
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
            conflict: false,
        });
    }

    fn conflict(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
            conflict: true,
        });
    }

    /// `s` has at most `max` bytes.
    fn max_len(&mut self, path: impl Into<String>, s: &str, max: usize) -> bool {
        if s.len() > max {
            self.err(path, format!("is {} bytes long; at most {max}", s.len()));
            return false;
        }
        true
    }

    /// A list has at most `max` entries.
    fn max_items(&mut self, path: impl Into<String>, n: usize, max: usize) -> bool {
        if n > max {
            self.err(path, format!("has {n} entries; at most {max}"));
            return false;
        }
        true
    }

    /// `v` lies in `lo..=hi`.
    fn range<T: PartialOrd + fmt::Display>(&mut self, path: impl Into<String>, v: T, lo: T, hi: T) {
        if v < lo || v > hi {
            self.err(path, format!("must be between {lo} and {hi}"));
        }
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
        && s.len() <= b::TOKEN_BYTES
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
    for (field, n) in [
        ("methods", cp.methods.len()),
        ("statuses", cp.statuses.len()),
        ("key_headers", cp.key_headers.len()),
        ("bypass.headers", cp.bypass.headers.len()),
        ("bypass.cookies", cp.bypass.cookies.len()),
        ("ignore_cookies", cp.ignore_cookies.len()),
    ] {
        c.max_items(format!("{p}.{field}"), n, b::CACHE_LIST);
    }
    for (k, h) in cp.key_headers.iter().enumerate() {
        if !valid_token(h) {
            c.err(format!("{p}.key_headers[{k}]"), "not a valid header name");
        }
    }
    for (k, h) in cp.ignore_cookies.iter().enumerate() {
        if !valid_token(h) {
            c.err(
                format!("{p}.ignore_cookies[{k}]"),
                "not a valid cookie name",
            );
        }
    }
    c.range(
        format!("{p}.stale_while_revalidate_seconds"),
        cp.stale_while_revalidate_seconds,
        0,
        b::STALE_S,
    );
    c.range(
        format!("{p}.stale_if_error_seconds"),
        cp.stale_if_error_seconds,
        0,
        b::STALE_S,
    );
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
    c.max_items(format!("{path}.add"), t.add.len(), b::TRANSFORM_ENTRIES);
    c.max_items(format!("{path}.set"), t.set.len(), b::TRANSFORM_ENTRIES);
    c.max_items(
        format!("{path}.remove"),
        t.remove.len(),
        b::TRANSFORM_ENTRIES,
    );
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
        c.max_len(
            format!("{path}.{which}.{name}"),
            value,
            b::HEADER_VALUE_BYTES,
        );
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
    c.max_items(path, limits.len(), b::POLICIES);
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
                if !(rate.is_finite() && *rate > 0.0 && *rate <= b::RATE) {
                    c.err(
                        format!("{p}.algorithm.rate"),
                        format!(
                            "must be a positive number of requests per second, at most {}",
                            b::RATE
                        ),
                    );
                }
                if *burst == 0 {
                    c.err(format!("{p}.algorithm.burst"), "must be at least 1");
                }
                c.range(format!("{p}.algorithm.burst"), *burst, 0, b::BURST);
            }
            LimitAlgorithm::SlidingWindow { limit, period_s } => {
                c.range(format!("{p}.algorithm.limit"), *limit, 1, b::WINDOW_LIMIT);
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
        c.max_items(
            format!("{path}.cors.allowed_origins"),
            cors.allowed_origins.len(),
            b::CORS_ORIGINS,
        );
        c.range(
            format!("{path}.cors.max_age_s"),
            cors.max_age_s,
            0,
            b::CORS_MAX_AGE_S,
        );
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
            c.max_items(format!("{path}.cors.{field}"), list.len(), b::CORS_TOKENS);
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
            if v.is_empty() || !valid_header_value(v) || v.len() > b::HEADER_VALUE_BYTES {
                c.err(
                    format!("{path}.security_headers.{field}"),
                    format!(
                        "must be a non-empty header value of at most {} bytes",
                        b::HEADER_VALUE_BYTES
                    ),
                );
            }
        }
    }
    if let Some(ip) = &a.ip_rules {
        for (field, list) in [("allow", &ip.allow), ("deny", &ip.deny)] {
            c.max_items(format!("{path}.ip_rules.{field}"), list.len(), b::CIDRS);
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
    c.max_items("server.listen", s.listen.len(), 64);
    c.max_items("server.tls", s.tls.len(), 64);
    c.max_items("server.base_domains", s.base_domains.len(), 100);
    c.range(
        "server.grace_period_seconds",
        s.grace_period_seconds,
        0,
        b::TIMEOUT_MS / 1000,
    );
    c.range(
        "server.graceful_shutdown_timeout_seconds",
        s.graceful_shutdown_timeout_seconds,
        0,
        b::TIMEOUT_MS / 1000,
    );
    for (field, v) in [("pid_file", &s.pid_file), ("upgrade_sock", &s.upgrade_sock)] {
        c.max_len(format!("server.{field}"), v, b::PATH_BYTES * 4);
    }
    if let Some(t) = &s.ops_token {
        c.max_len("server.ops_token", t, b::SECRET_BYTES);
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
        c.max_len(
            "server.postgres.last_good_file",
            &pg.last_good_file,
            b::PATH_BYTES * 4,
        );
        c.range(
            "server.postgres.notice_window_ms",
            pg.notice_window_ms,
            1000,
            b::TIMEOUT_MS,
        );
        c.range(
            "server.postgres.min_reload_interval_ms",
            pg.min_reload_interval_ms,
            0,
            60_000,
        );
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
        c.max_len(
            "server.tracing.service_name",
            &t.service_name,
            b::TOKEN_BYTES,
        );
        c.max_len(
            "server.tracing.otlp_endpoint",
            &t.otlp_endpoint,
            b::URL_BYTES,
        );
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
        if r.key_prefix.is_empty()
            || r.key_prefix.len() > b::TOKEN_BYTES
            || r.key_prefix.contains(['{', '}', ' '])
        {
            c.err(
                "server.redis.key_prefix",
                "must be 1-128 bytes, without braces or spaces",
            );
        }
        if r.timeout_ms == 0 || r.timeout_ms > 200 {
            c.err(
                "server.redis.timeout_ms",
                "must be between 1 and 200: a dead Redis must not stall requests",
            );
        }
    }
    c.max_items("server.trusted_proxies", s.trusted_proxies.len(), b::CIDRS);
    check_client_limits(&mut c, &s.client_limits);
    c.max_items(
        "server.jwks_allowed_networks",
        s.jwks_allowed_networks.len(),
        b::CIDRS,
    );
    for (i, v) in s.jwks_allowed_networks.iter().enumerate() {
        if parse_cidr(v).is_none() {
            c.err(
                format!("server.jwks_allowed_networks[{i}]"),
                format!("'{v}' is not an IP address or CIDR range"),
            );
        }
    }
    let jwks_allowed: Vec<ipnet::IpNet> = s
        .jwks_allowed_networks
        .iter()
        .filter_map(|v| parse_cidr(v))
        .collect();
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
        check_name(&mut c, &format!("{p}.name"), &t.name);
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
        check_access(&mut c, &format!("{p}.access"), &t.access);
        check_limits(
            &mut c,
            &format!("{p}.rate_limits"),
            &t.rate_limits,
            s.redis.is_some(),
        );
    }
    check_hosts(&mut c, cfg);

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
        c.max_len(format!("{p}.issuer"), &j.issuer, b::ISSUER_BYTES);
        c.max_items(format!("{p}.audiences"), j.audiences.len(), b::AUDIENCES);
        for (k, a) in j.audiences.iter().enumerate() {
            c.max_len(format!("{p}.audiences[{k}]"), a, b::ISSUER_BYTES);
        }
        c.max_items(format!("{p}.algorithms"), j.algorithms.len(), b::AUDIENCES);
        c.max_items(
            format!("{p}.claim_headers"),
            j.claim_headers.len(),
            b::CLAIM_HEADERS,
        );
        if let Some(pem) = &j.public_key_pem {
            c.max_len(format!("{p}.public_key_pem"), pem, b::PEM_BYTES);
        }
        c.range(format!("{p}.leeway_s"), j.leeway_s, 0, b::LEEWAY_S);
        c.range(
            format!("{p}.jwks_refresh_s"),
            j.jwks_refresh_s,
            1,
            b::JWKS_REFRESH_S,
        );
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
            if c.max_len(format!("{p}.jwks_url"), u, b::URL_BYTES) {
                if let Err(e) = crate::netrules::check_fetch_url(u, &jwks_allowed) {
                    c.err(format!("{p}.jwks_url"), e);
                }
            }
        }
        if let Some(secret) = &j.shared_secret {
            c.range(
                format!("{p}.shared_secret"),
                secret.len(),
                32,
                b::SECRET_BYTES,
            );
        }
        if j.algorithms.is_empty() {
            c.err(
                format!("{p}.algorithms"),
                "at least one algorithm is needed",
            );
        }
        let mut algorithms = HashSet::new();
        for (k, a) in j.algorithms.iter().enumerate() {
            if !algorithms.insert(a.as_str()) {
                c.err(
                    format!("{p}.algorithms[{k}]"),
                    format!("'{a}' is listed twice"),
                );
            }
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
            if claim.is_empty() || claim.len() > b::TOKEN_BYTES {
                c.err(
                    format!("{p}.claim_headers"),
                    format!("claim names must be 1-{} bytes", b::TOKEN_BYTES),
                );
            }
            if !valid_token(header) {
                c.err(
                    format!("{p}.claim_headers.{claim}"),
                    "not a valid header name",
                );
            }
        }
        c.range(
            format!("{p}.jwks_min_refetch_s"),
            j.jwks_min_refetch_s,
            1,
            b::JWKS_REFRESH_S,
        );
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
            c.conflict(
                format!("{p}.key_hash"),
                format!("the same key is already api_keys[{j}]"),
            );
        }
        check_name(&mut c, &format!("{p}.name"), &k.name);
        if k.prefix.len() > b::SHORT_TEXT_BYTES || !k.prefix.bytes().all(|b| b.is_ascii_graphic()) {
            c.err(
                format!("{p}.prefix"),
                format!(
                    "must be at most {} visible ASCII characters",
                    b::SHORT_TEXT_BYTES
                ),
            );
        }
        c.max_items(format!("{p}.scopes"), k.scopes.len(), b::SCOPES);
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

/// Display names: 1–200 characters, no control characters.
fn check_name(c: &mut Collector, path: &str, name: &str) {
    if name.trim().is_empty() {
        c.err(path, "must not be empty");
    } else if name.chars().count() > b::NAME_CHARS {
        c.err(
            path,
            format!("must be at most {} characters", b::NAME_CHARS),
        );
    } else if name.chars().any(char::is_control) {
        c.err(path, "must not contain control characters");
    }
}

/// A path sent on the wire (health checks): visible ASCII without `#`.
fn valid_uri_path(p: &str) -> bool {
    p.bytes().all(|b| b.is_ascii_graphic() && b != b'#')
}

/// Compiled size bound of a rewrite regex (the regex crate's default is 10 MiB).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

fn check_client_limits(c: &mut Collector, l: &crate::ClientLimits) {
    let p = "server.client_limits";
    for (field, v, lo) in [
        ("header_timeout_ms", l.header_timeout_ms, 100),
        ("body_timeout_ms", l.body_timeout_ms, 100),
        ("send_timeout_ms", l.send_timeout_ms, 100),
        ("keepalive_timeout_ms", l.keepalive_timeout_ms, 100),
    ] {
        c.range(format!("{p}.{field}"), v, lo, b::TIMEOUT_MS);
    }
    c.range(
        format!("{p}.max_connections"),
        l.max_connections,
        1,
        1_000_000,
    );
    c.range(
        format!("{p}.max_connections_per_ip"),
        l.max_connections_per_ip,
        1,
        l.max_connections.max(1),
    );
    c.range(format!("{p}.max_uri_bytes"), l.max_uri_bytes, 256, 1 << 20);
}

/// The names a tenant is reached by: `<subdomain>.<base>` for every base domain, and its
/// custom hosts. Each host belongs to at most one tenant however it is spelled (names are
/// compared lower-case without a trailing dot), and names at or under a base domain are
/// reserved for subdomains: a custom host there could take another tenant's traffic, now or
/// once a tenant with that subdomain exists.
fn check_hosts(c: &mut Collector, cfg: &Config) {
    let bases: Vec<&str> = cfg.server.base_domains.iter().map(String::as_str).collect();
    // Every claim of a custom host: host → (tenant, position).
    let mut claims: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
    for (i, t) in cfg.tenants.iter().enumerate() {
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
    fn a_host_belongs_to_one_tenant_however_it_is_spelled() {
        let two_bases = GOOD.replace(
            "base_domains: [vantage.localhost]",
            "base_domains: [vantage.localhost, edge.test]",
        );
        let claim = |hosts: &str| {
            two_bases.replace(
                "{id: globex, name: Globex, subdomain: globex}",
                &format!(
                    "{{id: globex, name: Globex, subdomain: globex, custom_hosts: [{hosts}]}}"
                ),
            )
        };
        let cfg = |yaml: &str| Config::from_yaml(yaml).unwrap();
        // Another tenant's subdomain host, under either base domain, or a future one.
        for host in [
            "acme.vantage.localhost",
            "acme.edge.test",
            "future.vantage.localhost",
            "vantage.localhost",
            "deep.acme.edge.test",
        ] {
            let errs = cfg(&claim(host)).validate().unwrap_err().0;
            assert_eq!(errs.len(), 1, "{host}: {errs:?}");
            assert_eq!(errs[0].path, "tenants[1].custom_hosts[0]");
            assert!(errs[0].conflict, "{host}: {errs:?}");
        }
        // Another tenant's custom host: both sides are told.
        let errs = cfg(&claim("api.acme.test")).validate().unwrap_err().0;
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(errs[0].path, "tenants[0].custom_hosts[0]");
        assert_eq!(errs[1].path, "tenants[1].custom_hosts[0]");
        let errs = &errs[1..];
        assert!(errs[0].conflict);
        assert!(
            errs[0].message.contains("also claimed by tenants[0]"),
            "{errs:?}"
        );
        // Other spellings are refused as not canonical rather than compared loosely.
        for host in [
            "API.acme.test",
            "api.acme.test.",
            "\"acme.vantage.localhost.\"",
        ] {
            let errs = cfg(&claim(host)).validate().unwrap_err().0;
            assert_eq!(errs.len(), 1, "{host}: {errs:?}");
            assert!(errs[0].message.contains("lower-case host name"), "{errs:?}");
        }
        // A name of its own is fine; a name that only looks like a base domain's is too.
        assert_eq!(cfg(&claim("api.globex.test")).validate(), Ok(()));
        assert_eq!(cfg(&claim("xvantage.localhost")).validate(), Ok(()));
    }

    #[test]
    fn every_string_list_and_number_is_bounded() {
        let bad = GOOD
            .replace("name: Acme,", &format!("name: {},", "A".repeat(201)))
            .replace(
                "path_pattern: \"/api/*\"",
                &format!("path_pattern: \"/{}\"", "a".repeat(1100)),
            )
            + "jwt_issuers:\n  - {id: j, tenant_id: acme, issuer: i, shared_secret: 0123456789abcdef0123456789abcdef, algorithms: [HS256], leeway_s: 1000000000000, jwks_refresh_s: 0}\n";
        let errs = errors(&bad);
        for e in [
            "tenants[0].name: must be at most 200 characters",
            "routes[0].path_pattern: is 1101 bytes long; at most 1024",
            "jwt_issuers[0].leeway_s: must be between 0 and 3600",
            "jwt_issuers[0].jwks_refresh_s: must be between 1 and 86400",
        ] {
            assert!(
                errs.iter().any(|x| x.starts_with(e)),
                "missing {e:?} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), 4, "{errs:#?}");
        let hosts: Vec<String> = (0..101).map(|i| format!("h{i}.acme.test")).collect();
        let bad = GOOD.replace("[api.acme.test]", &format!("[{}]", hosts.join(", ")));
        assert_eq!(
            errors(&bad),
            vec!["tenants[0].custom_hosts: has 101 entries; at most 100"]
        );
    }

    #[test]
    fn jwks_urls_follow_the_network_rules() {
        let issuer = |url: &str| {
            format!("{GOOD}jwt_issuers:\n  - {{id: j, tenant_id: acme, issuer: i, jwks_url: \"{url}\"}}\n")
        };
        for ok in [
            "https://clerk.acme.test/.well-known/jwks.json",
            "http://127.0.0.1:9000/jwks",
            "http://localhost:9000/jwks",
        ] {
            assert_eq!(errors(&issuer(ok)), Vec::<String>::new(), "{ok}");
        }
        for bad in [
            "http://clerk.acme.test/jwks",
            "https://169.254.169.254/latest/meta-data/",
            "https://10.0.0.7/jwks",
            "https://[fd12::1]/jwks",
        ] {
            let errs = errors(&issuer(bad));
            assert_eq!(errs.len(), 1, "{bad}: {errs:?}");
            assert!(errs[0].starts_with("jwt_issuers[0].jwks_url: "), "{errs:?}");
        }
        // The operator's allow-list admits a private range for https.
        let allowed = issuer("https://10.0.0.7/jwks").replace(
            "  base_domains: [vantage.localhost]",
            "  base_domains: [vantage.localhost]\n  jwks_allowed_networks: [10.0.0.0/24]",
        );
        assert_eq!(errors(&allowed), Vec::<String>::new());
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
