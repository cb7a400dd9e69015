use super::{validate_resources, validate_server, ErrorKind, ResourceContext};
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
    let text = include_str!("../../../conf/demo.yaml");
    Config::from_yaml_validated(text).expect("conf/demo.yaml must validate");
}

#[test]
fn the_postgres_proxy_config_is_valid() {
    let text = include_str!("../../../conf/proxy-postgres.yaml");
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
            &"server.ops_listen: '127.0.0.1:8080' is already used by server.listen[0]".to_string()
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
            &format!("{{id: globex, name: Globex, subdomain: globex, custom_hosts: [{hosts}]}}"),
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
        assert_eq!(errs[0].kind, ErrorKind::Conflict, "{host}: {errs:?}");
    }
    // Another tenant's custom host: both sides are told.
    let errs = cfg(&claim("api.acme.test")).validate().unwrap_err().0;
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(errs[0].path, "tenants[0].custom_hosts[0]");
    assert_eq!(errs[1].path, "tenants[1].custom_hosts[0]");
    let errs = &errs[1..];
    assert_eq!(errs[0].kind, ErrorKind::Conflict);
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
        format!(
            "{GOOD}jwt_issuers:\n  - {{id: j, tenant_id: acme, issuer: i, jwks_url: \"{url}\"}}\n"
        )
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

/// `(path, kind)` of every problem `validate_resources` finds in `yaml` for `ctx`.
fn kinds(yaml: &str, ctx: &ResourceContext) -> Vec<(String, ErrorKind)> {
    let cfg = Config::from_yaml(yaml).expect("parses");
    match validate_resources(&cfg, ctx) {
        Ok(()) => vec![],
        Err(e) => e.0.into_iter().map(|e| (e.path, e.kind)).collect(),
    }
}

fn good_context() -> ResourceContext {
    ResourceContext::of(&Config::from_yaml(GOOD).unwrap().server)
}

#[test]
fn taken_values_are_conflicts() {
    let ctx = good_context();
    let k = |s: &str| (s.to_string(), ErrorKind::Conflict);
    // A second tenant with a taken id and subdomain: both sides of the subdomain are told.
    let bad = GOOD
        .replace("id: globex, name", "id: acme, name")
        .replace("subdomain: globex", "subdomain: acme")
        .replace("tenant_id: globex", "tenant_id: acme");
    assert_eq!(
        kinds(&bad, &ctx),
        vec![
            k("tenants[1].id"),
            k("tenants[1].subdomain"),
            k("tenants[0].subdomain"),
        ]
    );
    // An origin id used twice; the same key under two ids.
    let hash = "a".repeat(64);
    let bad = GOOD.replace("id: globex-api", "id: acme-api")
        + &format!(
            "api_keys:\n  - {{id: k1, tenant_id: acme, name: A, key_hash: {hash}}}\n  - {{id: k2, tenant_id: globex, name: B, key_hash: {hash}}}\n"
        );
    let found = kinds(&bad, &ctx);
    assert!(found.contains(&k("origins[1].id")), "{found:?}");
    assert!(found.contains(&k("api_keys[1].key_hash")), "{found:?}");
    // A custom host under a base domain of the context.
    let bad = GOOD.replace("[api.acme.test]", "[api.vantage.localhost]");
    assert_eq!(kinds(&bad, &ctx), vec![k("tenants[0].custom_hosts[0]")]);
}

#[test]
fn missing_and_foreign_objects_are_references() {
    let ctx = good_context();
    let r = |s: &str| (s.to_string(), ErrorKind::Reference);
    // An origin of a tenant that does not exist, and routes to it from the real tenant.
    let bad = GOOD.replace("tenant_id: globex\n", "tenant_id: initech\n");
    assert_eq!(
        kinds(&bad, &ctx),
        vec![r("origins[1].tenant_id"), r("routes[2].origin_id")]
    );
    // A route to an origin that does not exist; a JWT route of a tenant without an issuer.
    let bad = GOOD
        .replace(
            "origin_id: acme-api}\n  - {id: r2",
            "origin_id: nope}\n  - {id: r2",
        )
        .replace(
            "origin_id: globex-api}",
            "origin_id: globex-api, auth: {mode: jwt_required}}",
        );
    assert_eq!(
        kinds(&bad, &ctx),
        vec![r("routes[0].origin_id"), r("routes[2].auth.mode")]
    );
    // What a delete leaves behind: routes whose origin is gone.
    let mut cfg = Config::from_yaml(GOOD).unwrap();
    cfg.origins.retain(|o| o.id != "acme-api");
    let errs = validate_resources(&cfg, &ctx).unwrap_err().0;
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs.iter().all(|e| e.kind == ErrorKind::Reference),
        "{errs:?}"
    );
}

#[test]
fn wrong_values_are_invalid_including_a_shadowed_route() {
    let ctx = good_context();
    let i = |s: &str| (s.to_string(), ErrorKind::Invalid);
    let bad = GOOD
        .replace("path_pattern: \"/users/:id\"", "path_pattern: \"users\"")
        .replace("weight: 3", "weight: 0");
    assert_eq!(
        kinds(&bad, &ctx),
        vec![
            i("origins[0].targets[0].weight"),
            i("routes[1].path_pattern")
        ]
    );
    // A route that could never match is wrong in itself, not a name taken by another.
    let twin = GOOD.replace(
        "{id: r3, tenant_id: globex, path_pattern: \"/\", origin_id: globex-api}",
        "{id: r3, tenant_id: acme, path_pattern: \"/api/*\", origin_id: acme-api}",
    );
    assert_eq!(kinds(&twin, &ctx), vec![i("routes[2].path_pattern")]);
}

#[test]
fn the_context_stands_for_the_server_settings() {
    let redis_cache = GOOD.replace(
        "origin_id: globex-api}",
        "origin_id: globex-api, cache: {enabled: true, storage: redis}, rate_limits: [{name: a, algorithm: {type: sliding_window, limit: 5, period_s: 1}, subject: {by: tenant}, backend: redis}]}",
    );
    let without = good_context();
    let with = ResourceContext {
        has_redis: true,
        ..good_context()
    };
    assert_eq!(
        kinds(&redis_cache, &without),
        vec![
            (
                "routes[2].rate_limits[0].backend".to_string(),
                ErrorKind::Invalid
            ),
            ("routes[2].cache.storage".to_string(), ErrorKind::Invalid),
        ]
    );
    assert_eq!(kinds(&redis_cache, &with), vec![]);
    // Base domains and JWKS networks come from the context, not from `server`.
    let hosted = GOOD.replace("[api.acme.test]", "[api.edge.test]");
    let edge = ResourceContext::new(&["edge.test".into()], &[], false).unwrap();
    assert_eq!(kinds(&hosted, &without), vec![]);
    assert_eq!(
        kinds(&hosted, &edge),
        vec![(
            "tenants[0].custom_hosts[0]".to_string(),
            ErrorKind::Conflict
        )]
    );
    let issuer = format!(
        "{GOOD}jwt_issuers:\n  - {{id: j, tenant_id: acme, issuer: i, jwks_url: \"https://10.0.0.7/jwks\"}}\n"
    );
    let private = ResourceContext::new(&[], &["10.0.0.0/24".into()], false).unwrap();
    assert_eq!(kinds(&issuer, &private), vec![]);
    assert_eq!(
        kinds(&issuer, &without),
        vec![("jwt_issuers[0].jwks_url".to_string(), ErrorKind::Invalid)]
    );
}

#[test]
fn a_context_is_checked_with_the_proxies_rules() {
    let errs = ResourceContext::new(
        &["vantage.localhost".into(), "Bad Domain".into()],
        &["127.0.0.0/8".into(), "nope".into()],
        true,
    )
    .unwrap_err();
    assert_eq!(
        errs.to_string(),
        "base_domains[1]: 'Bad Domain' is not a lower-case host name\n\
         jwks_allowed_networks[1]: 'nope' is not an IP address or CIDR range"
    );
    let ctx = ResourceContext::new(&["edge.test".into()], &["::1/128".into()], true).unwrap();
    assert_eq!(ctx.base_domains, ["edge.test"]);
    assert_eq!(
        ctx.jwks_allowed_networks,
        ["::1/128".parse::<ipnet::IpNet>().unwrap()]
    );
    assert!(ctx.has_redis);
}

#[test]
fn server_and_resources_are_checked_apart_and_together() {
    let bad = GOOD
        .replace(
            "  listen: [\"127.0.0.1:8080\"]",
            "  listen: [\"127.0.0.1:8080\", \"127.0.0.1:8080\"]",
        )
        .replace("weight: 3", "weight: 0");
    let cfg = Config::from_yaml(&bad).unwrap();
    let server = validate_server(&cfg.server).unwrap_err().0;
    assert_eq!(server.len(), 1, "{server:?}");
    assert_eq!(server[0].path, "server.listen[1]");
    assert_eq!(server[0].kind, ErrorKind::Conflict);
    let resources = validate_resources(&cfg, &ResourceContext::of(&cfg.server))
        .unwrap_err()
        .0;
    assert_eq!(resources.len(), 1, "{resources:?}");
    assert_eq!(resources[0].path, "origins[0].targets[0].weight");
    // `Config::validate` is both, server first.
    let all = cfg.validate().unwrap_err().0;
    assert_eq!(all, [server, resources].concat());
    // Resources are validated without looking at `server`.
    let mut no_server = cfg.clone();
    no_server.server.listen.clear();
    no_server.server.threads = 0;
    assert_eq!(
        validate_resources(&no_server, &ResourceContext::of(&cfg.server))
            .unwrap_err()
            .0
            .len(),
        1
    );
}

#[test]
fn ids_the_metric_labels_reserve_are_refused() {
    for id in ["_tenant", "_overflow", "-", "_x"] {
        let bad = GOOD.replacen("{id: r1,", &format!("{{id: \"{id}\","), 1);
        assert_ne!(bad, GOOD, "the route id is in GOOD");
        let errs = errors(&bad);
        assert!(
            errs.iter()
                .any(|e| e.contains(".id") && e.contains("not starting with _")),
            "{id}: {errs:?}"
        );
    }
    // Inside an id, `_` and `-` are fine.
    assert_eq!(
        errors(&GOOD.replacen("{id: r1,", "{id: acme_r-1,", 1)),
        Vec::<String>::new()
    );
}

#[test]
fn traffic_management_is_checked_with_field_paths() {
    let with = |traffic: &str| {
        GOOD.replace(
            "  - {id: r1, tenant_id: acme, path_pattern: \"/api/*\", origin_id: acme-api}",
            &format!(
                "  - {{id: r1, tenant_id: acme, path_pattern: \"/api/*\", origin_id: acme-api, traffic: {traffic}}}"
            ),
        )
    };
    let good = with(
        "{split: {origins: [{origin_id: acme-api, weight: 95}], sticky: {by: cookie, name: sid}, \
         rules: [{header: X-Canary, value: '1', origin_id: acme-api}]}, \
         version: {name: v1, accept: {param: version, value: '1'}, deprecated_at: '2026-01-01T00:00:00Z', \
         sunset_at: '2027-01-01T00:00:00+01:00', successor: /v2/}, fallback: {status: 200, body: '[]'}}",
    );
    assert_eq!(errors(&good), Vec::<String>::new());
    let bad = with(
        "{split: {origins: [{origin_id: globex-api, weight: 20000}, {origin_id: nope, weight: 1}], \
         rules: [{header: X-Canary, cookie: c, value: '1', origin_id: acme-api}]}, \
         mirror: {origin_id: acme-api, percent: 150, timeout_ms: 0}, \
         version: {name: 'v 1', deprecated_at: 'tomorrow', sunset_at: '2020-01-01T00:00:00Z', successor: 'java script:'}, \
         fallback: {status: 99, content_type: '', stale: true}}",
    );
    let errs = errors(&bad);
    for path in [
        "routes[0].traffic.split.origins[0].origin_id: origin 'globex-api' belongs to tenant 'globex'",
        "routes[0].traffic.split.origins[0].weight: must be between 0 and 10000",
        "routes[0].traffic.split.origins[1].origin_id: no origin has id 'nope'",
        "routes[0].traffic.split.origins: must include the route's origin 'acme-api'",
        "routes[0].traffic.split.rules[0]: needs exactly one of header and cookie",
        "routes[0].traffic.split.rules[0].origin_id: 'acme-api' is not one of the split's origins",
        "routes[0].traffic.mirror.origin_id: must not be the origin that answers the route",
        "routes[0].traffic.mirror.percent: must be between 0 and 100",
        "routes[0].traffic.mirror.timeout_ms: must be between 1 and",
        "routes[0].traffic.version.name: must be",
        "routes[0].traffic.version.deprecated_at: 'tomorrow' is not an RFC 3339 time",
        "routes[0].traffic.version.successor: must be a path",
        "routes[0].traffic.fallback.status: must be between 200 and 599",
        "routes[0].traffic.fallback.content_type: must be a media type",
        "routes[0].traffic.fallback.stale: needs the route's cache to be enabled",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(path)),
            "no '{path}' in {errs:#?}"
        );
    }
    // Sunset before deprecation; two routes told apart only by their Accept parameter are
    // fine, the same parameter twice is a shadowed route.
    let order = with("{version: {name: v1, deprecated_at: '2027-01-01T00:00:00Z', sunset_at: '2026-01-01T00:00:00Z'}}");
    assert!(errors(&order)
        .iter()
        .any(|e| e.starts_with("routes[0].traffic.version.sunset_at: must not be before")));
    let versions = |second: &str| {
        GOOD.replace(
            "  - {id: r1, tenant_id: acme, path_pattern: \"/api/*\", origin_id: acme-api}",
            &format!(
                "  - {{id: r1, tenant_id: acme, path_pattern: \"/api/*\", origin_id: acme-api, \
                 traffic: {{version: {{name: v1, accept: {{param: version, value: '1'}}}}}}}}\n  \
                 - {{id: r1b, tenant_id: acme, path_pattern: \"/api/*\", origin_id: acme-api, \
                 traffic: {{version: {{name: v2, accept: {{param: Version, value: '{second}'}}}}}}}}"
            ),
        )
    };
    assert_eq!(errors(&versions("2")), Vec::<String>::new());
    assert!(errors(&versions("1"))
        .iter()
        .any(|e| e.contains("could never match")));
}

#[test]
fn affinity_cookies_are_checked_with_field_paths() {
    let with = |affinity: &str| {
        GOOD.replace(
            "    lb: weighted\n",
            &format!("    lb: weighted\n    affinity: {affinity}\n"),
        )
    };
    assert_eq!(
        errors(&with("{cookie: srv, ttl_seconds: 60, same_site: strict}")),
        Vec::<String>::new()
    );
    let errs = errors(&with(
        "{cookie: 'a b', ttl_seconds: 99999999, path: 'x;y', same_site: none, secure: false}",
    ));
    for path in [
        "origins[0].affinity.cookie: not a valid cookie name",
        "origins[0].affinity.ttl_seconds: must be between 0 and 31536000",
        "origins[0].affinity.path: must be a URI path",
        "origins[0].affinity.secure: SameSite=None needs Secure",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(path)),
            "no '{path}' in {errs:#?}"
        );
    }
}

#[test]
fn discovery_and_the_resolver_are_checked_with_field_paths() {
    let origin = |discovery: &str, targets: &str| {
        GOOD.replace(
            "    lb: weighted\n    targets:\n      - {url: \"http://127.0.0.1:9001\", weight: 3}\n      - {url: \"http://127.0.0.1:9002\"}\n",
            &format!("    lb: weighted\n    targets: {targets}\n    discovery: {discovery}\n"),
        )
    };
    assert_eq!(
        errors(&origin("{srv: _api._tcp.svc.internal}", "[]")),
        Vec::<String>::new()
    );
    assert_eq!(
        errors(&origin(
            "{name: api.svc.internal, port: 8080, tls: true}",
            "[]"
        )),
        Vec::<String>::new()
    );
    let cases = [
        (
            "{name: api.svc.internal}",
            "[{url: \"http://127.0.0.1:1\"}]",
            "origins[0].targets: must be empty",
        ),
        (
            "{name: API_bad}",
            "[]",
            "origins[0].discovery.name: not a valid",
        ),
        (
            "{srv: _api._tcp.svc.internal, port: 80}",
            "[]",
            "origins[0].discovery.port: SRV records carry their ports",
        ),
        (
            "{name: a.internal, srv: _b._tcp.internal}",
            "[]",
            "origins[0].discovery: needs exactly one of name and srv",
        ),
    ];
    for (discovery, targets, want) in cases {
        let errs = errors(&origin(discovery, targets));
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "no '{want}' in {errs:#?}"
        );
    }
    let server = |dns: &str| {
        GOOD.replace(
            "  base_domains: [vantage.localhost]\n",
            &format!("  base_domains: [vantage.localhost]\n  dns: {dns}\n"),
        )
    };
    assert_eq!(
        errors(&server(
            "{nameservers: [\"127.0.0.1:5353\"], min_ttl_ms: 500}"
        )),
        Vec::<String>::new()
    );
    let errs = errors(&server(
        "{nameservers: [\"resolver.internal\"], min_ttl_ms: 5000, max_ttl_ms: 1000}",
    ));
    for want in [
        "server.dns.nameservers[0]: 'resolver.internal' is not ip:port",
        "server.dns.max_ttl_ms: must not be less than min_ttl_ms",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "no '{want}' in {errs:#?}"
        );
    }
}
