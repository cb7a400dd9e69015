//! Everything the fleet keeps in Redis, against a real (private) Redis Cluster of three
//! masters and three replicas: shared rate limits, calendar quotas, the cache's Redis tier,
//! fleet purges and the admin's config notices; and a master failover in the middle of
//! counting (a manual `CLUSTER FAILOVER`, then a killed master). The same failovers of a
//! primary behind Sentinel close the file.

use serde_json::json;
use std::time::{Duration, Instant};
use vantage_model::QuotaPeriod;
use vantage_testkit::*;

/// No request may wait on Redis much past its budget (`timeout_ms` below, 100 or 200 ms):
/// a generous bound, far above the budget, far below a stall (a reconnection, a failover).
const STALL: Duration = Duration::from_secs(2);

const OPS_TOKEN: &str = "ops-token-for-tests-0123456789";

/// The `server.redis` line of a proxy on `cluster`.
fn redis_line(cluster: &RedisCluster, prefix: &str) -> String {
    redis_url_line(&cluster.url(), prefix, 100)
}

/// The `server.redis` line for `url`. Failover tests give a call the longest budget (the
/// first call after a planned failover follows a redirection and reloads the script: a
/// few round trips, which a loaded test machine must fit in the budget).
fn redis_url_line(url: &str, prefix: &str, timeout_ms: u64) -> String {
    format!("  redis: {{url: \"{url}\", key_prefix: {prefix}, timeout_ms: {timeout_ms}}}\n")
}

/// A request through `p` that must not stall on Redis.
fn timed(p: &Proxy, host: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let start = Instant::now();
    let r = p.send("GET", host, path, headers, b"");
    let took = start.elapsed();
    assert!(
        took < STALL,
        "{host}{path} took {took:?}: a request waited on Redis past its budget"
    );
    r
}

/// The proxies' log lines about Redis (for failure messages).
fn redis_warnings(proxies: &[Proxy]) -> String {
    proxies
        .iter()
        .flat_map(|p| {
            p.log()
                .lines()
                .filter(|l| l.to_lowercase().contains("redis"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn statuses(rs: &[Response]) -> Vec<u16> {
    rs.iter().map(|r| r.status).collect()
}

#[test]
fn two_proxies_hold_a_global_limit_with_tenants_spread_over_the_masters() {
    let cluster = RedisCluster::start();
    let o = Origin::start("o");
    let tenants = ["t1", "t2", "t3", "t4", "t5", "t6"];
    let mut body = String::from("tenants:\n");
    for t in tenants {
        body.push_str(&format!("  - {{id: {t}, name: {t}, subdomain: {t}}}\n"));
    }
    body.push_str("origins:\n");
    for t in tenants {
        body.push_str(&format!(
            "  - {{id: o{t}, tenant_id: {t}, targets: [{{url: \"{}\"}}]}}\n",
            o.url()
        ));
    }
    body.push_str("routes:\n");
    for t in tenants {
        // 20 per tenant, fleet-wide (one token per 1000 s: none refills during the test).
        // `deny` without Redis: any Redis failure would show as a 503.
        body.push_str(&format!(
            "  - {{id: r{t}, tenant_id: {t}, path_pattern: /*, origin_id: o{t}, rate_limits: [{{name: global, algorithm: {{type: token_bucket, rate: 0.001, burst: 20}}, subject: {{by: tenant}}, backend: redis, on_redis_error: deny}}]}}\n"
        ));
    }
    let server = redis_line(&cluster, "vtest");
    let proxies = [
        Proxy::start_with(&body, &server),
        Proxy::start_with(&body, &server),
    ];
    for p in &proxies {
        p.wait_redis_connected();
    }
    for t in tenants {
        let host = format!("{t}.test.local");
        let rs: Vec<Response> = (0..30)
            .map(|i| timed(&proxies[i % 2], &host, "/x", &[]))
            .collect();
        let s = statuses(&rs);
        assert_eq!(
            s.iter().filter(|s| **s == 200).count(),
            20,
            "{t}: exactly the limit across both proxies: {s:?}"
        );
        assert!(s[20..].iter().all(|s| *s == 429), "{t}: {s:?}");
        rs[29].assert_error(429, "rate_limited");
    }
    for p in &proxies {
        assert!(
            !p.metrics().contains("vantage_ratelimit_fallbacks_total"),
            "every decision came from the cluster"
        );
    }
    // One counter per tenant, on the master of its slot; the tenants spread over the
    // masters (the keys' hash tags are whole tenant keys, not a shared prefix).
    let by_master = cluster.keys_by_master("vtest:rl:*");
    let all: Vec<&String> = by_master.iter().flat_map(|(_, k)| k).collect();
    assert_eq!(all.len(), tenants.len(), "{by_master:?}");
    for (master, keys) in &by_master {
        for k in keys {
            assert_eq!(cluster.master_of(k), *master, "{k} is where its slot is");
        }
    }
    let holding = by_master.iter().filter(|(_, k)| !k.is_empty()).count();
    assert!(holding >= 2, "counters on one master only: {by_master:?}");
}

/// Tenant `t` with a catch-all route behind API keys, plan `p` holding `quotas`, and keys
/// `ka`, `kb` on it.
fn plan_body(o: &Origin, zone: &str, quotas: &str) -> String {
    format!(
        r#"
tenants: [{{id: t, name: T, subdomain: t}}]
origins: [{{id: o, tenant_id: t, targets: [{{url: "{url}"}}]}}]
routes:
  - {{id: r, tenant_id: t, path_pattern: "/*", origin_id: o, auth: {{mode: apikey_required}}}}
plans:
  - {{id: p, tenant_id: t, name: pro, time_zone: "{zone}", quotas: {quotas}}}
api_keys:
  - {{id: ka, tenant_id: t, name: A, key_hash: "{ka}", plan_id: p}}
  - {{id: kb, tenant_id: t, name: B, key_hash: "{kb}", plan_id: p}}
"#,
        url = o.url(),
        ka = hash_key("vk_a"),
        kb = hash_key("vk_b"),
    )
}

#[test]
fn calendar_quotas_count_through_the_cluster_in_one_slot_per_subject() {
    let cluster = RedisCluster::start();
    let o = Origin::start("o");
    // Two quotas: every request runs one script over two counters (a cross-slot script
    // would fail, and `deny` would answer 503).
    let quotas = "[{name: daily, limit: 8, period: day, on_redis_error: deny}, {name: monthly, limit: 10, period: month, on_redis_error: deny}]";
    // A zone whose day (and so month) neither began nor ends within ten minutes.
    let body = plan_body(&o, steady_zone(QuotaPeriod::Day, 600), quotas);
    let server = redis_line(&cluster, "vq");
    let proxies = [
        Proxy::start_with(&body, &server),
        Proxy::start_with(&body, &server),
    ];
    for p in &proxies {
        p.wait_redis_connected();
    }
    for key in ["vk_a", "vk_b"] {
        let rs: Vec<Response> = (0..12)
            .map(|i| timed(&proxies[i % 2], "t.test.local", "/x", &[("x-api-key", key)]))
            .collect();
        assert_eq!(
            statuses(&rs),
            [[200; 8].as_slice(), &[429; 4]].concat(),
            "{key}: the daily quota binds, fleet-wide"
        );
        rs[11].assert_error(429, "quota_exceeded");
    }
    // Each key's two counters share a slot (so a master); the report on either proxy reads
    // them in one command.
    let by_master = cluster.keys_by_master("vq:q:*");
    let all: Vec<&String> = by_master.iter().flat_map(|(_, k)| k).collect();
    assert_eq!(all.len(), 4, "{by_master:?}");
    for subject in ["key:ka", "key:kb"] {
        let mine: Vec<&&String> = all
            .iter()
            .filter(|k| k.contains(&format!("\u{1f}{subject}}}")))
            .collect();
        assert_eq!(mine.len(), 2, "{subject}: {all:?}");
        assert_eq!(
            cluster.keyslot(mine[0]),
            cluster.keyslot(mine[1]),
            "{mine:?}"
        );
        for k in mine {
            assert_eq!(cluster.cli_any(&["GET", k]).trim(), "8", "{k}");
        }
    }
    for p in &proxies {
        let r = timed(
            p,
            "t.test.local",
            "/.well-known/vantage/usage",
            &[("x-api-key", "vk_a")],
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["quotas"][0]["used"], 8, "{}", r.text());
        assert_eq!(r.json()["quotas"][1]["used"], 8, "{}", r.text());
    }
}

fn seq(r: &Response) -> u64 {
    r.json()["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no seq in {}", r.text()))
}

fn purge(p: &Proxy, json: &str) -> Response {
    request(
        p.ops_port,
        "POST",
        "ops",
        "/cache/purge",
        &[
            ("Authorization", &format!("Bearer {OPS_TOKEN}")),
            ("Content-Type", "application/json"),
        ],
        json.as_bytes(),
    )
}

#[test]
fn the_cache_tier_and_fleet_purges_go_through_the_cluster() {
    let cluster = RedisCluster::start();
    let o = Origin::start("o");
    let body = format!(
        r#"
tenants: [{{id: acme, name: Acme, subdomain: acme}}]
origins: [{{id: o, tenant_id: acme, targets: [{{url: "{}"}}]}}]
routes:
  - {{id: c, tenant_id: acme, path_pattern: /c/*, origin_id: o, cache: {{enabled: true, default_ttl_seconds: 60, storage: memory+redis}}}}
  - {{id: r, tenant_id: acme, path_pattern: /r/*, origin_id: o, cache: {{enabled: true, default_ttl_seconds: 60, storage: redis}}}}
"#,
        o.url()
    );
    let server = format!(
        "{}  ops_token: \"{OPS_TOKEN}\"\n",
        redis_line(&cluster, "vcache")
    );
    let p1 = Proxy::start_with(&body, &server);
    let p2 = Proxy::start_with(&body, &server);
    p1.wait_redis_connected();
    p2.wait_redis_connected();
    // Both proxies listen for purges (each subscriber sits on one node of the cluster).
    wait_for("both proxies subscribed to purges", 30, || {
        (cluster.subscribers("vcache:cache:purge") == 2).then_some(())
    });

    // Entries filled through p1 are served by p2 from the cluster; they spread over the
    // masters (one key per entry).
    let paths: Vec<String> = (0..8).map(|i| format!("/r/{i}")).collect();
    for path in &paths {
        let a = timed(&p1, "acme.test.local", path, &[]);
        assert_eq!(a.header("x-cache"), Some("MISS"));
        let b = timed(&p2, "acme.test.local", path, &[]);
        assert_eq!(b.header("x-cache"), Some("HIT"), "{path}: {}", p2.log());
        assert_eq!(seq(&a), seq(&b));
    }
    let by_master = cluster.keys_by_master("vcache:cache:*");
    let holding = by_master.iter().filter(|(_, k)| !k.is_empty()).count();
    assert!(holding >= 2, "entries on one master only: {by_master:?}");

    // memory+redis: p2 takes the entry from the cluster and keeps its own memory copy; a
    // URL purge on p1 reaches p2's memory tier through the cluster's pub/sub.
    let t1 = timed(&p1, "acme.test.local", "/c/t", &[]);
    assert_eq!(seq(&timed(&p2, "acme.test.local", "/c/t", &[])), seq(&t1));
    let r = purge(&p1, r#"{"tenant":"acme","url":"/c/t"}"#);
    assert_eq!(r.json()["fleet"], true, "{}", r.text());
    wait_for("the URL purge on p2", 10, || {
        (p2.get("acme.test.local", "/c/t").header("x-cache") == Some("MISS")).then_some(())
    });

    // A tenant purge on p2: the generation (one hash on one master) moves, p1 hears of it.
    let before = seq(&p1.get("acme.test.local", "/r/0"));
    let r = purge(&p2, r#"{"tenant":"acme"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["fleet"], true, "{}", r.text());
    let generation = r.json()["generation"].as_u64().expect("generation");
    assert_eq!(
        cluster
            .cli_any(&["HGET", "vcache:cache:generation", "acme"])
            .trim(),
        generation.to_string()
    );
    wait_for("the tenant purge on p1", 10, || {
        (seq(&p1.get("acme.test.local", "/r/0")) != before).then_some(())
    });
    // A proxy started later reads the generation from the cluster (as soon as its client
    // is connected) and shares the new entries.
    let p3 = Proxy::start_with(&body, &server);
    p3.wait_redis_connected();
    wait_for("p3 shares the new generation", 10, || {
        (p3.get("acme.test.local", "/r/0").header("x-cache") == Some("HIT")).then_some(())
    });
    for p in [&p1, &p2] {
        assert!(
            !p.metrics().contains("vantage_redis_errors_total"),
            "no Redis error: {}",
            p.metrics()
        );
    }
}

#[test]
fn a_master_failover_keeps_requests_within_budget_and_counting_resumes() {
    let mut cluster = RedisCluster::start();
    let o = Origin::start("o");
    let route = |id: &str, burst: u32, mode: &str| {
        format!(
            "  - {{id: {id}, tenant_id: t, path_pattern: /{id}, origin_id: o, rate_limits: [{{name: {id}, algorithm: {{type: token_bucket, rate: 0.001, burst: {burst}}}, subject: {{by: route}}, backend: redis, on_redis_error: {mode}}}]}}\n"
        )
    };
    let body = format!(
        "tenants: [{{id: t, name: T, subdomain: t}}]\norigins: [{{id: o, tenant_id: t, targets: [{{url: \"{}\"}}]}}]\nroutes:\n{}{}{}",
        o.url(),
        route("counted", 6, "deny"),
        route("open", 1000, "allow"),
        route("later", 3, "deny"),
    );
    let server = redis_url_line(&cluster.url(), "vfail", 200);
    let proxies = [
        Proxy::start_with(&body, &server),
        Proxy::start_with(&body, &server),
    ];
    for p in &proxies {
        p.wait_redis_connected();
    }
    let get = |i: usize, path: &str| timed(&proxies[i % 2], "t.test.local", path, &[]);

    // Half the limit, then find the counter's master.
    let s: Vec<u16> = (0..3).map(|i| get(i, "/counted").status).collect();
    assert_eq!(s, [200; 3]);
    let key = cluster
        .keys_by_master("vfail:rl:*")
        .into_iter()
        .flat_map(|(_, k)| k)
        .next()
        .expect("the counter");
    let first = cluster.master_of(&key);

    // 1. A manual failover (`CLUSTER FAILOVER` on the replica): the replica took every
    //    write before the switch, the proxies follow the MOVED redirection (and load the
    //    script on the new master), and the count goes on where it was.
    let second = cluster.replica_of(first);
    cluster.failover(second);
    assert_eq!(cluster.master_of(&key), second);
    let s: Vec<u16> = (3..7).map(|i| get(i, "/counted").status).collect();
    assert_eq!(
        s,
        [200, 200, 200, 429],
        "counting goes on across the failover: {}",
        redis_warnings(&proxies)
    );

    // 2. The master is killed (after its replica caught up). Until the replica takes over
    //    (the other masters must first flag the dead one), the slot has no master: every
    //    request still answers within the budget, by its policy's `on_redis_error`.
    let third = cluster.kill_master(second);
    let mut unavailable = 0;
    let mut i = 0;
    loop {
        let promoted = cluster.masters().contains(&third);
        let r = get(i, "/counted");
        match r.status {
            503 => {
                r.assert_error(503, "rate_limit_unavailable");
                unavailable += 1;
            }
            429 => {}
            s => panic!("/counted while the master is dead: {s} {}", r.text()),
        }
        assert_eq!(
            get(i, "/open").status,
            200,
            "fail-open while the master is dead"
        );
        i += 1;
        if promoted {
            break;
        }
    }
    cluster.wait_master(third);
    assert!(
        unavailable > 0,
        "the deny fallback applied while the slot had no master"
    );
    assert!(proxies.iter().any(|p| p
        .metrics()
        .contains("vantage_ratelimit_fallbacks_total{mode=\"deny\"}")));

    // 3. After the failover: the clients reconnect, the limit reached before the crash
    //    still refuses (the count was replicated), and a fresh counter counts to its limit.
    for p in &proxies {
        p.wait_redis_connected();
    }
    // The bus subscriptions are back too (one was on the dead node, or both were not).
    wait_for("both proxies subscribed again", 30, || {
        (cluster.subscribers("vfail:cache:purge") == 2).then_some(())
    });
    for i in 0..2 {
        wait_for("the counter answers again", 30, || {
            match get(i, "/counted").status {
                503 => None,
                429 => Some(()),
                s => panic!("/counted answered {s}: the count before the crash was lost"),
            }
        });
    }
    let s: Vec<u16> = (0..5).map(|i| get(i, "/later").status).collect();
    assert_eq!(s, [200, 200, 200, 429, 429], "counting resumes");
    let s: Vec<u16> = (0..2).map(|i| get(i, "/counted").status).collect();
    assert_eq!(s, [429, 429]);
}

/// Scratch directories removed when the test ends (also when it fails).
struct Scratch(Vec<std::path::PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The server lines of a proxy following the admin through Postgres, hearing of changes
/// on the cluster only: its version poll is a minute apart, longer than any wait below.
fn pg_server(db_url: &str, cluster: &RedisCluster, scratch: &mut Scratch) -> String {
    let dir = temp_dir("cluster-last-good");
    let last_good = dir.join("last-good.json");
    scratch.0.push(dir);
    format!(
        "  source: postgres\n  postgres: {{url: \"{db_url}\", poll_interval_ms: 60000, timeout_ms: 1000, last_good_file: \"{}\", notify_secret: \"{SECRET}\"}}\n{}",
        last_good.display(),
        redis_line(cluster, "vantage")
    )
}

#[test]
fn admin_notices_and_quota_counters_go_through_the_cluster() {
    let cluster = RedisCluster::start();
    let db = Database::migrated();
    let admin = Admin::start(&db, &cluster.url(), SECRET);
    let o = Origin::start("pg-origin");
    let mut scratch = Scratch(Vec::new());
    let p1 = Proxy::start_with("", &pg_server(&db.url(), &cluster, &mut scratch));
    let p2 = Proxy::start_with("", &pg_server(&db.url(), &cluster, &mut scratch));
    for p in [&p1, &p2] {
        p.wait_redis_connected();
    }
    wait_for("both proxies subscribed to config notices", 30, || {
        (cluster.subscribers("vantage:config") == 2).then_some(())
    });

    // A tenant behind API keys, on a plan with a monthly quota, all through the admin API.
    let t = id(&admin.create("/api/v1/tenants", bodies::tenant("acme")));
    let origin = id(&admin.create(
        "/api/v1/origins",
        json!({"tenant_id": t, "targets": [{"url": o.url()}]}),
    ));
    admin.create(
        "/api/v1/routes",
        json!({"tenant_id": t, "origin_id": origin, "path_pattern": "/*", "auth": {"mode": "apikey_required"}}),
    );
    let plan = id(&admin.create(
        "/api/v1/plans",
        json!({
            "tenant_id": t, "name": "pro", "time_zone": steady_zone(QuotaPeriod::Month, 600),
            "quotas": [{"name": "monthly", "limit": 5, "period": "month", "on_redis_error": "deny"}],
        }),
    ));
    let k = admin.create(
        "/api/v1/api-keys",
        json!({"tenant_id": t, "name": "ci", "plan_id": plan}),
    );
    let (kid, plain) = (id(&k), k["key"].as_str().expect("key").to_string());
    // The notices (published on one node, delivered on every node) bring both proxies to
    // the new version, a minute before their poll would.
    let v = admin.version() as u64;
    p1.wait_version(v);
    p2.wait_version(v);
    for p in [&p1, &p2] {
        assert!(p
            .metrics()
            .contains("vantage_config_notices_total{result=\"accepted\"}"));
    }

    // The quota counts through the cluster, and the admin reads the counter back from it.
    let rs: Vec<Response> = (0..7)
        .map(|i| {
            let p = if i % 2 == 0 { &p1 } else { &p2 };
            timed(p, "acme.test.local", "/x", &[("x-api-key", &plain)])
        })
        .collect();
    assert_eq!(statuses(&rs), [200, 200, 200, 200, 200, 429, 429]);
    let r = admin.root("GET", &format!("/api/v1/api-keys/{kid}/quota"), None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["quotas"][0]["used"], 5, "{:?}", r.body);
    assert_eq!(r.body["quotas"][0]["remaining"], 0, "{:?}", r.body);
}

#[test]
fn a_sentinel_failover_is_followed_and_counting_resumes() {
    let mut sentinel = RedisSentinel::start();
    let o = Origin::start("o");
    let route = |id: &str, burst: u32| {
        format!(
            "  - {{id: {id}, tenant_id: t, path_pattern: /{id}, origin_id: o, rate_limits: [{{name: {id}, algorithm: {{type: token_bucket, rate: 0.001, burst: {burst}}}, subject: {{by: route}}, backend: redis, on_redis_error: deny}}]}}\n"
        )
    };
    let body = format!(
        "tenants: [{{id: t, name: T, subdomain: t}}]\norigins: [{{id: o, tenant_id: t, targets: [{{url: \"{}\"}}]}}]\nroutes:\n{}{}",
        o.url(),
        route("counted", 6),
        route("later", 3),
    );
    let server = redis_url_line(&sentinel.url(), "vsent", 200);
    let proxies = [
        Proxy::start_with(&body, &server),
        Proxy::start_with(&body, &server),
    ];
    for p in &proxies {
        p.wait_redis_connected();
    }
    let get = |i: usize, path: &str| timed(&proxies[i % 2], "t.test.local", path, &[]);
    let s: Vec<u16> = (0..3).map(|i| get(i, "/counted").status).collect();
    assert_eq!(s, [200; 3]);

    // 1. `SENTINEL FAILOVER`: the Sentinel promotes the replica and disconnects the old
    //    primary's clients; they ask the Sentinel again and count on the new primary.
    let second = sentinel.failover();
    for p in &proxies {
        p.wait_redis_connected();
    }
    let mut s = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.len() < 4 {
        // A proxy whose client is still reconnecting answers 503 (`deny`) within budget.
        match get(s.len(), "/counted").status {
            503 => assert!(Instant::now() < deadline, "no answer from the new primary"),
            status => s.push(status),
        }
    }
    assert_eq!(
        s,
        [200, 200, 200, 429],
        "counting goes on across the failover: {}",
        redis_warnings(&proxies)
    );
    assert_eq!(sentinel.primary(), second);

    // 2. The new primary is killed: until the Sentinel promotes the replica, requests
    //    answer within the budget by `on_redis_error`; then counting resumes.
    let third = sentinel.kill_primary();
    let mut unavailable = 0;
    let mut i = 0;
    loop {
        let promoted = sentinel.primary() == third;
        match get(i, "/counted").status {
            503 => unavailable += 1,
            429 => {}
            s => panic!("/counted while the primary is dead: {s}"),
        }
        i += 1;
        if promoted {
            break;
        }
    }
    sentinel.wait_primary(third);
    assert!(
        unavailable > 0,
        "the deny fallback applied without a primary"
    );
    for p in &proxies {
        p.wait_redis_connected();
    }
    for i in 0..2 {
        wait_for("the counter answers again", 30, || {
            match get(i, "/counted").status {
                503 => None,
                429 => Some(()),
                s => panic!("/counted answered {s}: the count before the crash was lost"),
            }
        });
    }
    let s: Vec<u16> = (0..4).map(|i| get(i, "/later").status).collect();
    assert_eq!(s, [200, 200, 200, 429], "counting resumes");
}
