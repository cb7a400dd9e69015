//! The Grafana dashboard (`deploy/grafana/**/*.json`) and the Prometheus alert rules
//! (`deploy/prometheus/alerts.yml`) reference only metrics the proxy really exports: a real
//! proxy is driven until every kind of event they watch has happened (plain requests, a cache
//! miss and hit, a 429, an auth failure, a refused request, a retry, a reload, Redis errors,
//! dropped request logs), then every `vantage_*` name they use must have a sample in
//! `/metrics`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use vantage_testkit::*;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every file under `dir` (recursively) whose name ends with `suffix`.
fn files_with_suffix(dir: &Path, suffix: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files_with_suffix(&p, suffix, out);
        } else if p.to_string_lossy().ends_with(suffix) {
            out.push(p);
        }
    }
}

/// The `vantage_*` identifiers in `text` (a metric name is `[a-zA-Z_:][a-zA-Z0-9_:]*`).
fn vantage_names(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while let Some(off) = text[i..].find("vantage_") {
        let start = i + off;
        let preceded = start > 0 && {
            let c = bytes[start - 1];
            c.is_ascii_alphanumeric() || c == b'_' || c == b':'
        };
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if !preceded {
            names.insert(text[start..end].to_string());
        }
        i = end.max(start + 1);
    }
    names
}

/// The metric families of a text exposition: name → type.
fn families(exposition: &str) -> std::collections::BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.to_string()))
        })
        .collect()
}

/// Whether the exposition has at least one sample line of the series `name`.
fn has_sample(exposition: &str, name: &str) -> bool {
    exposition.lines().any(|l| {
        l.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    })
}

/// Why `name` (as written in a query) is not exported, or None when it is. Histogram
/// series `_bucket`, `_sum` and `_count` belong to the family without the suffix, and only
/// to a histogram (or summary) family.
fn missing(exposition: &str, name: &str) -> Option<String> {
    let fams = families(exposition);
    if let Some(kind) = fams.get(name) {
        if kind == "histogram" || kind == "summary" {
            return Some(format!(
                "{name} is a {kind}: query {name}_bucket, _sum or _count"
            ));
        }
        return (!has_sample(exposition, name)).then(|| format!("{name} ({kind}) has no sample"));
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            return match fams.get(base).map(String::as_str) {
                Some("histogram") => {
                    (!has_sample(exposition, name)).then(|| format!("{name} has no sample"))
                }
                Some("summary") if suffix != "_bucket" => {
                    (!has_sample(exposition, name)).then(|| format!("{name} has no sample"))
                }
                Some(kind) => Some(format!("{base} is a {kind}, it has no {suffix} series")),
                None => Some(format!("no metric family {base} (nor {name})")),
            };
        }
    }
    Some(format!("no metric family {name}"))
}

#[test]
fn name_extraction_and_suffixes() {
    let names = vantage_names(
        r#"sum(rate(vantage_requests_total{status=~"5.."}[5m])) / x_vantage_no + vantage_request_duration_seconds_bucket"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "vantage_request_duration_seconds_bucket",
            "vantage_requests_total"
        ]
    );
    let expo = "# TYPE vantage_h histogram\nvantage_h_bucket{le=\"1\"} 1\nvantage_h_sum 1\nvantage_h_count 1\n# TYPE vantage_c counter\nvantage_c{a=\"b\"} 2\n# TYPE vantage_g gauge\n";
    assert_eq!(missing(expo, "vantage_h_bucket"), None);
    assert_eq!(missing(expo, "vantage_h_count"), None);
    assert_eq!(missing(expo, "vantage_c"), None);
    assert!(missing(expo, "vantage_h").is_some());
    assert!(missing(expo, "vantage_c_count").is_some());
    assert!(missing(expo, "vantage_g").is_some());
    assert!(missing(expo, "vantage_nope_total").is_some());
}

/// The `vantage_*` names the dashboards and alert rules use, with the file using each.
fn referenced_names() -> Vec<(String, PathBuf)> {
    let deploy = deploy_dir();
    let mut files = Vec::new();
    files_with_suffix(&deploy.join("grafana"), ".json", &mut files);
    assert!(
        !files.is_empty(),
        "no dashboard JSON under {deploy:?}/grafana"
    );
    files.push(deploy.join("prometheus/alerts.yml"));
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{f:?}: {e}"));
        for n in vantage_names(&text) {
            out.push((n, f.clone()));
        }
    }
    out
}

#[test]
fn dashboards_and_alerts_use_only_exported_metrics() {
    let live = Origin::start("live");
    let dead = Origin::dead("dead");
    let pg_port = free_port(); // nothing listens: request-log writes fail
    let redis_port = free_port(); // nothing listens: Redis calls fail
    let logs_dir = temp_dir("dash-pg");
    let server_extra = format!(
        "  max_request_headers: 20\n  redis: {{url: \"redis://127.0.0.1:{redis_port}\", key_prefix: vdash, timeout_ms: 50}}\n  postgres: {{url: \"postgres://postgres@127.0.0.1:{pg_port}/none\", timeout_ms: 200, last_good_file: \"{}\", request_logs: {{enabled: true, flush_interval_ms: 50}}}}\n",
        logs_dir.join("last-good.json").display()
    );
    let key = "vk_test_dashboards_key_0123456789";
    let key_hash = hash_key(key);
    let body = |version_marker: &str| {
        format!(
            r#"tenants: [{{id: t, name: "T {version_marker}", subdomain: t}}]
origins:
  - {{id: o, tenant_id: t, targets: [{{url: "{live}"}}]}}
  - {{id: flaky, tenant_id: t, lb: round_robin, retries: 1, targets: [{{url: "{dead}"}}, {{url: "{live}"}}], circuit_breaker: {{enabled: false}}}}
routes:
  - {{id: plain, tenant_id: t, path_pattern: /plain, origin_id: o}}
  - {{id: retried, tenant_id: t, path_pattern: /retried, methods: [GET], origin_id: flaky}}
  - {{id: cached, tenant_id: t, path_pattern: /cached, origin_id: o, cache: {{enabled: true, default_ttl_seconds: 60}}}}
  - {{id: limited, tenant_id: t, path_pattern: /limited, origin_id: o, rate_limits: [{{name: one, algorithm: {{type: token_bucket, rate: 0.01, burst: 1}}, subject: {{by: route}}}}]}}
  - {{id: shared, tenant_id: t, path_pattern: /shared, origin_id: o, rate_limits: [{{name: shared, algorithm: {{type: token_bucket, rate: 1000, burst: 1000}}, subject: {{by: route}}, backend: redis, on_redis_error: local}}]}}
  - {{id: keyed, tenant_id: t, path_pattern: /keyed, origin_id: o, auth: {{mode: apikey_required}}}}
api_keys:
  - {{id: k, tenant_id: t, name: K, key_hash: "{key_hash}"}}
"#,
            live = live.url(),
            dead = dead.url(),
        )
    };
    let p = Proxy::start_with(&body("1"), &server_extra);

    let host = "t.test.local";
    for _ in 0..3 {
        assert_eq!(p.get(host, "/plain").status, 200);
    }
    // Round robin over a dead and a live target: some request tries the dead one first.
    for _ in 0..4 {
        assert_eq!(p.get(host, "/retried").status, 200);
    }
    assert_eq!(p.get(host, "/cached").header("x-cache"), Some("MISS"));
    assert_eq!(p.get(host, "/cached").header("x-cache"), Some("HIT"));
    assert_eq!(p.get(host, "/limited").status, 200);
    p.get(host, "/limited").assert_error(429, "rate_limited");
    assert_eq!(p.get(host, "/shared").status, 200);
    p.get(host, "/keyed").assert_error(401, "unauthorized");
    let ok = p.send("GET", host, "/keyed", &[("X-API-Key", key)], b"");
    assert_eq!(ok.status, 200, "{}", ok.text());
    let many: Vec<(String, String)> = (0..30).map(|i| (format!("X-H{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    p.send("GET", host, "/plain", &many, b"")
        .assert_error(431, "too_many_headers");
    // A reload (the version and the reload counters move).
    let v = p.version();
    p.write_body(&body("2"));
    p.signal("HUP");
    p.wait_version(v + 1);

    // Request logs are written in the background, and the reload is counted just after the
    // swap: wait for both.
    let metrics = wait_for("request-log drops and the reload in /metrics", 20, || {
        let m = p.metrics();
        (has_sample(&m, "vantage_request_logs_dropped_total")
            && has_sample(&m, "vantage_config_reloads_total"))
        .then_some(m)
    });

    // The admin's own metrics, from a real vantage-admin over its own database.
    let db = Database::shared();
    db.migrate();
    let admin = Admin::start(
        &db,
        &format!("redis://127.0.0.1:{redis_port}"),
        "dashboards-secret-0123456789",
    );
    let admin_metrics = admin.root("GET", "/metrics", None);
    assert_eq!(admin_metrics.status, 200, "{}", admin_metrics.text());
    let admin_metrics = admin_metrics.text();

    let refs = referenced_names();
    assert!(refs.len() >= 10, "too few metric references: {refs:?}");
    let problems: Vec<String> = refs
        .iter()
        .filter_map(|(n, f)| {
            let exposition = if n.starts_with("vantage_admin_") {
                &admin_metrics
            } else {
                &metrics
            };
            missing(exposition, n).map(|why| format!("{}: {why}", f.display()))
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(
        problems.is_empty(),
        "dashboards/alerts reference metrics the proxy or admin does not export:\n{}\n\n/metrics:\n{metrics}\n\nadmin /metrics:\n{admin_metrics}",
        problems.join("\n")
    );
    drop(p);
    let _ = std::fs::remove_dir_all(logs_dir);
}
