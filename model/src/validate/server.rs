//! The proxy's own settings (`server.*`): listeners, process limits, Postgres, Redis,
//! tracing, client limits and the networks it trusts.

use super::rules::{parse_cidr, valid_host};
use super::Collector;
use crate::bounds as b;
use crate::ServerSettings;
use std::collections::HashMap;

/// Every field of `s`; paths start with `server.`. Two listeners on one address are a
/// conflict; everything else is invalid.
pub(super) fn check(c: &mut Collector, s: &ServerSettings) {
    if let Some(d) = &s.decision {
        if d.listen.parse::<std::net::SocketAddr>().is_err() {
            c.err(
                "server.decision.listen",
                format!("'{}' is not an address like 127.0.0.1:9092", d.listen),
            );
        }
        if d.token
            .as_ref()
            .is_some_and(|t| t.len() < 16 || t.len() > 1024)
        {
            c.err("server.decision.token", "must be 16 to 1024 characters");
        }
    }
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
    check_base_domains(c, "server.base_domains", &s.base_domains);
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
        let u = &pg.usage;
        c.range(
            "server.postgres.usage.flush_interval_ms",
            u.flush_interval_ms,
            100,
            300_000,
        );
        c.range(
            "server.postgres.usage.spool_batches",
            u.spool_batches,
            1,
            100_000,
        );
        c.range(
            "server.postgres.fleet.heartbeat_ms",
            pg.fleet.heartbeat_ms,
            100,
            60_000,
        );
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
        if let Some(problem) = crate::redis_url_problem(&r.url) {
            c.err("server.redis.url", problem);
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
    check_client_limits(c, &s.client_limits);
    c.range(
        "server.metrics.max_series_per_family",
        s.metrics.max_series_per_family,
        1,
        1_000_000,
    );
    check_jwks_networks(c, "server.jwks_allowed_networks", &s.jwks_allowed_networks);
    c.max_items("server.dns.nameservers", s.dns.nameservers.len(), 8);
    for (i, n) in s.dns.nameservers.iter().enumerate() {
        if n.parse::<std::net::SocketAddr>().is_err() {
            c.err(
                format!("server.dns.nameservers[{i}]"),
                format!("'{n}' is not ip:port"),
            );
        }
    }
    c.range(
        "server.dns.min_ttl_ms",
        s.dns.min_ttl_ms,
        100,
        b::TIMEOUT_MS,
    );
    c.range("server.dns.max_ttl_ms", s.dns.max_ttl_ms, 100, 86_400_000);
    if s.dns.max_ttl_ms < s.dns.min_ttl_ms {
        c.err("server.dns.max_ttl_ms", "must not be less than min_ttl_ms");
    }
    c.range("server.dns.timeout_ms", s.dns.timeout_ms, 10, 60_000);
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
        )))
        .chain(
            s.decision
                .iter()
                .map(|d| ("server.decision.listen".to_string(), &d.listen)),
        );
    for (path, a) in all {
        if let Ok(addr) = a.parse::<std::net::SocketAddr>() {
            if let Some(first) = addresses.insert(addr, path.clone()) {
                c.conflict(path, format!("'{a}' is already used by {first}"));
            }
        }
    }
}

/// Base domains (at most 100, each a lower-case host name) at `path`.
pub(super) fn check_base_domains(c: &mut Collector, path: &str, domains: &[String]) {
    c.max_items(path, domains.len(), 100);
    for (i, d) in domains.iter().enumerate() {
        if !valid_host(d) {
            c.err(
                format!("{path}[{i}]"),
                format!("'{d}' is not a lower-case host name"),
            );
        }
    }
}

/// The networks JWKS URLs may point into (CIDR ranges) at `path`.
pub(super) fn check_jwks_networks(c: &mut Collector, path: &str, networks: &[String]) {
    c.max_items(path, networks.len(), b::CIDRS);
    for (i, v) in networks.iter().enumerate() {
        if parse_cidr(v).is_none() {
            c.err(
                format!("{path}[{i}]"),
                format!("'{v}' is not an IP address or CIDR range"),
            );
        }
    }
}

/// Deadlines and connection caps of `server.client_limits`.
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

#[cfg(test)]
mod metrics_tests {
    use crate::Config;

    #[test]
    fn the_metrics_cap_is_bounded() {
        let with = |extra: &str| {
            let yaml = format!("server:\n  listen: [\"127.0.0.1:8080\"]\n{extra}");
            Config::from_yaml(&yaml).unwrap().validate()
        };
        let cfg = Config::from_yaml("server: {listen: [\"127.0.0.1:8080\"]}").unwrap();
        assert_eq!(cfg.server.metrics.max_series_per_family, 10_000);
        assert!(with("  metrics: {max_series_per_family: 5}\n").is_ok());
        for bad in [0, 1_000_001] {
            let e = with(&format!("  metrics: {{max_series_per_family: {bad}}}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("server.metrics.max_series_per_family: must be between 1 and 1000000"),
                "{e}"
            );
        }
        assert!(Config::from_yaml("server: {metrics: {max_series: 5}}").is_err());
    }
}

#[cfg(test)]
mod redis_tests {
    use crate::Config;

    fn check(url: &str) -> Result<(), String> {
        let yaml =
            format!("server:\n  listen: [\"127.0.0.1:8080\"]\n  redis: {{url: \"{url}\"}}\n");
        Config::from_yaml(&yaml)
            .unwrap()
            .validate()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn single_cluster_and_sentinel_urls_are_accepted() {
        for url in [
            "redis://127.0.0.1:6379",
            "redis://user:pw@10.0.0.1:6379/2",
            "redis-cluster://10.0.0.1:7000",
            "redis-cluster://pw@10.0.0.1:7000?node=10.0.0.2:7000&node=10.0.0.3:7000",
            "redis-sentinel://10.0.0.1:26379?sentinelServiceName=vantage&node=10.0.0.2:26379",
            "redis-sentinel://10.0.0.1:26379/1?sentinelServiceName=vantage",
        ] {
            assert_eq!(check(url), Ok(()), "{url}");
        }
    }

    #[test]
    fn bad_redis_urls_name_the_field_and_the_fix() {
        for (url, why) in [
            ("127.0.0.1:6379", "must be redis://host:port"),
            ("http://127.0.0.1:6379", "must be redis://host:port"),
            ("redis-cluster://10.0.0.1:7000/3", "has no databases"),
            (
                "redis-sentinel://10.0.0.1:26379",
                "needs ?sentinelServiceName",
            ),
            (
                "redis-sentinel://10.0.0.1:26379?sentinelServiceName=",
                "needs ?sentinelServiceName",
            ),
            (
                "redis-sentinel://10.0.0.1:26379?sentinelServiceName=v&sentinelPassword=x",
                "separate Sentinel credentials are not supported",
            ),
            ("redis://", "needs a host"),
            ("redis://:6379", "needs a host"),
            ("rediss://10.0.0.1:6379", "TLS (rediss://) is not supported"),
            (
                "rediss-cluster://10.0.0.1:7000",
                "TLS (rediss://) is not supported",
            ),
        ] {
            let e = check(url).unwrap_err();
            assert!(e.contains("server.redis.url: "), "{url}: {e}");
            assert!(e.contains(why), "{url}: {e}");
        }
    }
}
