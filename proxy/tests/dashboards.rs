//! The Grafana dashboards (`deploy/grafana/**/*.json`) and the Prometheus alert rules
//! (`deploy/prometheus/alerts.yml`) reference only metrics the processes really export: a real
//! proxy is driven until every kind of event they watch has happened (plain requests, a cache
//! miss and hit, a 429, an auth failure, a refused request, a retry, a reload, Redis errors,
//! dropped request logs), then every `vantage_*` name they use must have a sample in
//! `/metrics`. The admin's names (`vantage_admin_*`) are checked against a real
//! `vantage-admin serve`, the workers' (every other family `admin/src/metrics.rs` registers)
//! against a real `vantage-admin worker` that has run jobs and made a dead letter.

use std::collections::{BTreeMap, BTreeSet};
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
fn families(exposition: &str) -> BTreeMap<String, String> {
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

/// A metric family `admin/src/metrics.rs` registers.
#[derive(Debug, Clone, PartialEq)]
struct Declared {
    /// The field of `Metrics` holding it. Example: `dead_letters`.
    field: String,
    /// `counter`, `gauge` or `histogram`.
    kind: &'static str,
    /// Registered with labels (`register_*_vec!`): it has no series until a first use.
    labelled: bool,
}

/// The families registered in `source` (the text of `admin/src/metrics.rs`): every
/// `field: register_<kind>[_vec]!("name", ...)`.
fn declared_families(source: &str) -> BTreeMap<String, Declared> {
    let mut out = BTreeMap::new();
    let mut rest = source;
    while let Some(at) = rest.find("register_") {
        let line_start = rest[..at].rfind('\n').map_or(0, |i| i + 1);
        let field = rest[line_start..at]
            .trim()
            .trim_end_matches(':')
            .trim()
            .to_string();
        let after = &rest[at..];
        rest = &after["register_".len()..];
        let ident =
            |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        // `field: register_…!(` — anything else (an import, a mention) is not a registration.
        let Some(bang) = after.find('!') else { break };
        let mac = &after[..bang];
        if !ident(&field) || !ident(mac) {
            continue;
        }
        let Some(name) = after[bang..].split('"').nth(1) else {
            break;
        };
        let kind = if mac.contains("histogram") {
            "histogram"
        } else if mac.contains("counter") {
            "counter"
        } else {
            "gauge"
        };
        out.insert(
            name.to_string(),
            Declared {
                field,
                kind,
                labelled: mac.ends_with("_vec"),
            },
        );
    }
    out
}

/// The `Metrics` fields that code in `sources` records to (`METRICS.field`, whitespace
/// allowed around the dot).
fn recorded_fields(sources: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for text in sources {
        let mut rest = text.as_str();
        while let Some(at) = rest.find("METRICS") {
            rest = rest[at + "METRICS".len()..].trim_start();
            if let Some(after_dot) = rest.strip_prefix('.') {
                let after_dot = after_dot.trim_start();
                let end = after_dot
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after_dot.len());
                out.insert(after_dot[..end].to_string());
            }
        }
    }
    out
}

/// The text of every `.rs` file under `admin/src` but `metrics.rs` (where the fields are
/// declared, not recorded to).
fn admin_sources() -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../admin/src");
    let mut files = Vec::new();
    files_with_suffix(&src, ".rs", &mut files);
    assert!(!files.is_empty(), "no sources under {src:?}");
    files
        .into_iter()
        .filter(|f| f.file_name().is_some_and(|n| n != "metrics.rs"))
        .map(|f| std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{f:?}: {e}")))
        .collect()
}

/// The family a queried name belongs to among `declared` (`_bucket`, `_sum`, `_count` of a
/// histogram belong to the histogram).
fn declared_family<'a>(declared: &'a BTreeMap<String, Declared>, name: &str) -> Option<&'a str> {
    if let Some((k, _)) = declared.get_key_value(name) {
        return Some(k);
    }
    ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|s| name.strip_suffix(s))
        .find_map(|base| declared.get_key_value(base).map(|(k, _)| k.as_str()))
}

#[test]
fn declarations_and_records_are_read() {
    let source = r#"use prometheus::{register_int_gauge, IntGauge};
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    up: register_int_gauge!("vantage_x_up", "Up").expect("register vantage_x_up"),
    jobs: register_int_counter_vec!(
        "vantage_x_jobs_total",
        "Jobs",
        &["kind"]
    )
    .expect("register"),
    took: register_histogram_vec!("vantage_x_seconds", "Took", &["kind"], vec![1.0]).unwrap(),
});"#;
    let d = declared_families(source);
    assert_eq!(
        d.iter()
            .map(|(n, d)| (n.as_str(), d.field.as_str(), d.kind, d.labelled))
            .collect::<Vec<_>>(),
        [
            ("vantage_x_jobs_total", "jobs", "counter", true),
            ("vantage_x_seconds", "took", "histogram", true),
            ("vantage_x_up", "up", "gauge", false),
        ]
    );
    assert_eq!(
        declared_family(&d, "vantage_x_seconds_bucket"),
        Some("vantage_x_seconds")
    );
    assert_eq!(
        declared_family(&d, "vantage_x_jobs_total"),
        Some("vantage_x_jobs_total")
    );
    assert_eq!(declared_family(&d, "vantage_y_total"), None);
    let used = recorded_fields(&[
        "METRICS\n        .jobs\n        .inc(); METRICS.up.set(1); METRICS;".into(),
    ]);
    assert_eq!(used.into_iter().collect::<Vec<_>>(), ["jobs", "up"]);

    // The real file: the workers' families are found, with their kinds.
    let real = declared_families(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../admin/src/metrics.rs"),
        )
        .unwrap(),
    );
    assert_eq!(
        real["vantage_worker_job_duration_seconds"].kind,
        "histogram"
    );
    assert_eq!(real["vantage_worker_dead_letters_total"].kind, "counter");
    assert!(real["vantage_worker_dead_letters_total"].labelled);
    assert!(!real["vantage_admin_database_up"].labelled);
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
    let db = Database::migrated();
    let admin = Admin::start(
        &db,
        &format!("redis://127.0.0.1:{redis_port}"),
        "dashboards-secret-0123456789",
    );
    // A proxy reporting to the fleet (its heartbeat row), so the fleet gauges have series.
    db.sql(
        "INSERT INTO proxies (id, hostname, config_version, applied_at, ready, build_version, started_at)
         VALUES ('dash:1', 'dash', 1, now(), true, '0', now())",
    );
    let admin_metrics = admin.root("GET", "/metrics", None);
    assert_eq!(admin_metrics.status, 200, "{}", admin_metrics.text());
    let admin_metrics = admin_metrics.text();

    // A real worker over the same database, looking for due periodic jobs every second: it
    // schedules and runs them (job counts and durations), and a job of a kind no handler
    // knows fails for good at its one attempt (a failed attempt and a dead letter). The
    // queue's gauges are read at scrape.
    let worker = Worker::start_with(
        &db,
        "  metrics_listen: 127.0.0.1:0\n  poll_ms: 50\n  schedule_interval_s: 1\n",
        "",
    );
    db.sql("INSERT INTO jobs (kind, max_attempts) VALUES ('dashboards.no_such_kind', 1)");
    let worker_metrics = wait_for("the worker's jobs and dead letter in /metrics", 30, || {
        let m = worker.metrics_text();
        // The worker gives its labelled series their known values at 0 when it starts:
        // wait for this dead letter itself.
        (m.contains(r#"vantage_worker_dead_letters_total{kind="dashboards.no_such_kind"} 1"#)
            && has_sample(&m, "vantage_worker_job_duration_seconds_bucket")
            && has_sample(&m, "vantage_worker_queue_jobs"))
        .then_some(m)
    });
    assert_eq!(
        db.sql("SELECT state FROM jobs WHERE kind = 'dashboards.no_such_kind'"),
        "dead"
    );
    assert!(
        worker_metrics
            .contains(r#"vantage_worker_dead_letters_total{kind="dashboards.no_such_kind"} 1"#),
        "{worker_metrics}"
    );

    // The families of the admin crate, and which of them its code records to. A family
    // registered with labels has no series until its first use, and the webhook, alert and
    // billing ones are first used by tenants' data (a delivery, a rule that fires, a billed
    // period) that this test does not create: such a family, when the worker has not shown
    // it, stands for itself as registered (its kind from the registration, so a histogram
    // is still only queried through _bucket/_sum/_count) provided some code records to it.
    // A family that is not registered, is misspelt, is of another kind, or that nothing
    // records to still fails; so does a plain gauge or counter, which every worker exports
    // from its start.
    let declared = declared_families(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../admin/src/metrics.rs"),
        )
        .expect("admin/src/metrics.rs"),
    );
    let recorded = recorded_fields(&admin_sources());
    let seen = families(&worker_metrics);
    let mut stand_ins = String::new();
    let mut unseen = Vec::new();
    let mut never_recorded = BTreeMap::new();
    for (name, d) in &declared {
        if !recorded.contains(&d.field) {
            never_recorded.insert(name.as_str(), d.field.as_str());
        }
        if name.starts_with("vantage_admin_")
            || seen.contains_key(name)
            || !d.labelled
            || !recorded.contains(&d.field)
        {
            continue;
        }
        unseen.push(name.clone());
        stand_ins.push_str(&format!("# TYPE {name} {}\n", d.kind));
        if d.kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                stand_ins.push_str(&format!("{name}{suffix}{{registered=\"only\"}} 0\n"));
            }
        } else {
            stand_ins.push_str(&format!("{name}{{registered=\"only\"}} 0\n"));
        }
    }
    let worker_checked = format!("{worker_metrics}{stand_ins}");
    eprintln!("worker families checked against their registration only: {unseen:?}");

    let refs = referenced_names();
    assert!(refs.len() >= 10, "too few metric references: {refs:?}");
    let problems: Vec<String> = refs
        .iter()
        .filter_map(|(n, f)| {
            let family = declared_family(&declared, n);
            if let Some(field) = family.and_then(|fam| never_recorded.get(fam)) {
                return Some(format!(
                    "{}: {n} is registered in admin/src/metrics.rs, but no code records to it (METRICS.{field})",
                    f.display()
                ));
            }
            let exposition = if n.starts_with("vantage_admin_") {
                &admin_metrics
            } else if family.is_some() {
                &worker_checked
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
        "dashboards/alerts reference metrics the proxy, admin or worker does not export:\n{}\n\n/metrics:\n{metrics}\n\nadmin /metrics:\n{admin_metrics}\n\nworker /metrics:\n{worker_checked}",
        problems.join("\n")
    );
    // Every worker family the dashboards and rules are built on is queried somewhere.
    for family in [
        "vantage_worker_queue_jobs",
        "vantage_worker_queue_oldest_ready_seconds",
        "vantage_worker_jobs_total",
        "vantage_worker_dead_letters_total",
        "vantage_webhook_deliveries_total",
        "vantage_alerts_total",
        "vantage_billing_records_total",
    ] {
        assert!(
            refs.iter().any(|(n, _)| n == family),
            "no dashboard or alert uses {family}"
        );
    }
    drop(worker);
    drop(p);
    let _ = std::fs::remove_dir_all(logs_dir);
}
