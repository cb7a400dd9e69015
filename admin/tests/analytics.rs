//! request_logs partitions and the analytics endpoint, on rows with known answers.

use vantage_testkit::{bodies, id, Admin};

/// An admin with tenants acme and globex (their ids) and request_logs rows with known
/// answers, and a client of its database.
async fn logged() -> (Admin, String, String, tokio_postgres::Client) {
    let a = Admin::fresh();
    let t = id(&a.create("/api/v1/tenants", bodies::tenant("acme")));
    let g = id(&a.create("/api/v1/tenants", bodies::tenant("globex")));
    let c = a.db.client().await;
    // Acme: 100 requests in the last hour, latency 1..=100 ms; 5 are 503, 10 are 404;
    // route r1 gets the first 60, r2 the rest; key k1 on the even ones.
    c.execute(
        "INSERT INTO request_logs (ts, request_id, tenant_id, route_id, api_key_id, method, host, path, status, latency_ms, bytes_sent)
         SELECT now() - interval '30 minutes', 'req-' || i, $1, CASE WHEN i <= 60 THEN 'r1' ELSE 'r2' END,
                CASE WHEN i % 2 = 0 THEN 'k1' END, 'GET', 'acme.test', '/x',
                CASE WHEN i <= 5 THEN 503 WHEN i <= 15 THEN 404 ELSE 200 END, i, 10
           FROM generate_series(1, 100) i",
        &[&t],
    )
    .await
    .unwrap();
    // Globex: 4 requests, one 500; one acme row far outside the range (default partition).
    c.execute(
        "INSERT INTO request_logs (ts, request_id, tenant_id, method, path, status, latency_ms)
         VALUES (now() - interval '10 minutes', 'g1', $1, 'GET', '/', 200, 10),
                (now() - interval '10 minutes', 'g2', $1, 'GET', '/', 200, 20),
                (now() - interval '10 minutes', 'g3', $1, 'GET', '/', 500, 30),
                (now() - interval '10 minutes', 'g4', $1, 'GET', '/', 200, 40),
                ('2001-01-01T00:00:00Z', 'old', $2, 'GET', '/', 500, 9999)",
        &[&g, &t],
    )
    .await
    .unwrap();
    (a, t, g, c)
}

/// `v` is `want` (to 1e-9).
fn close(v: &serde_json::Value, want: f64) {
    let got = v.as_f64().unwrap();
    assert!((got - want).abs() < 1e-9, "{got} != {want}");
}

#[tokio::test]
async fn recent_rows_land_in_their_days_partition_and_far_ones_in_the_default() {
    let (_a, _, _, c) = logged().await;
    // migrate made daily partitions from yesterday on; each recent row lands in the one of
    // its own UTC day (rows of "30 minutes ago" are yesterday's just after midnight).
    let in_own_day: i64 = c
        .query_one(
            "SELECT count(*) FROM request_logs \
              WHERE tableoid::regclass::text \
                  = 'request_logs_' || to_char((ts AT TIME ZONE 'UTC')::date, 'YYYYMMDD')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_own_day, 104);
    let in_default: i64 = c
        .query_one("SELECT count(*) FROM request_logs_default", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_default, 1);
}

#[tokio::test]
async fn analytics_per_tenant_counts_error_rates_and_percentiles() {
    let (a, t, _, _c) = logged().await;
    let r = a.root("GET", "/api/v1/analytics/requests", None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let groups = r.body["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    let acme = &groups[0];
    assert_eq!(acme["tenant_id"], t.as_str());
    assert_eq!(acme["requests"], 100);
    assert_eq!(acme["server_errors"], 5);
    assert_eq!(acme["error_rate"], 0.05);
    assert_eq!(acme["client_errors"], 10);
    assert_eq!(acme["client_error_rate"], 0.1);
    close(&acme["latency_ms"]["p50"], 50.5);
    close(&acme["latency_ms"]["p95"], 95.05);
    close(&acme["latency_ms"]["p99"], 99.01);
    close(&acme["latency_ms"]["mean"], 50.5);
    assert_eq!(acme["bytes_sent"], 1000);
    let globex = &groups[1];
    assert_eq!(
        (
            globex["requests"].as_i64(),
            globex["server_errors"].as_i64()
        ),
        (Some(4), Some(1))
    );
    close(&globex["error_rate"], 0.25);
    close(&globex["latency_ms"]["p50"], 25.0);
    assert_eq!(r.body["totals"]["requests"], 104);
}

#[tokio::test]
async fn analytics_per_route_and_per_api_key_of_one_tenant() {
    let (a, t, _, _c) = logged().await;
    // Per route and per key, for one tenant.
    let r = a.root(
        "GET",
        &format!("/api/v1/analytics/requests?tenant_id={t}&group_by=route"),
        None,
    );
    let by: Vec<(String, i64)> = r.body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["key"].as_str().unwrap().to_string(),
                g["requests"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(by, [("r1".to_string(), 60), ("r2".to_string(), 40)]);
    let r1 = &r.body["groups"][0];
    assert_eq!(r1["server_errors"], 5);
    close(&r1["latency_ms"]["p50"], 30.5);
    let r = a.root(
        "GET",
        &format!("/api/v1/analytics/requests?tenant_id={t}&group_by=api_key"),
        None,
    );
    let k1 = r.body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == "k1")
        .unwrap();
    assert_eq!(k1["requests"], 50);
    assert_eq!(k1["server_errors"], 2);
}

#[tokio::test]
async fn analytics_honour_and_check_the_time_range() {
    let (a, _, _, _c) = logged().await;
    // The time range: the old row only.
    let r = a
        .root("GET", "/api/v1/analytics/requests?from=2000-12-31T00:00:00Z&to=2001-01-02T00:00:00Z&group_by=none", None);
    assert_eq!(r.body["totals"]["requests"], 1);
    assert_eq!(r.body["totals"]["error_rate"], 1.0);
    assert_eq!(r.body["groups"], serde_json::json!([]));
    let r = a.root(
        "GET",
        "/api/v1/analytics/requests?from=2030-01-01T00:00:00Z&to=2029-01-01T00:00:00Z",
        None,
    );
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn a_tenant_admin_gets_analytics_of_its_own_tenant_only() {
    let (a, _, g, _c) = logged().await;
    // A tenant_admin gets its own tenant only.
    let tok = a.token_for("globex");
    let r = a.call(&tok, "GET", "/api/v1/analytics/requests", None);
    let groups = r.body["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["tenant_id"], g.as_str());
    assert_eq!(r.body["totals"]["requests"], 4);
}

#[tokio::test]
async fn a_new_partition_takes_its_days_rows_from_the_default_partition() {
    let (_a, _, _, c) = logged().await;
    // Creating a partition for a day that has rows in the default partition moves them.
    let moved: i32 = c
        .query_one(
            "SELECT vantage_ensure_request_log_partitions('2001-01-01', '2001-01-01')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(moved, 1);
    let n: i64 = c
        .query_one("SELECT count(*) FROM request_logs_20010101", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let n: i64 = c
        .query_one("SELECT count(*) FROM request_logs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 105);
}

#[tokio::test]
async fn the_timeseries_buckets_requests_errors_latency_cache_and_refusals_per_tenant() {
    let (a, t, g, c) = logged().await;
    // Acme, 40 minutes ago (another bucket than the 100 above): 2 cache hits, a miss and a
    // 429; a row without a cache lookup.
    c.execute(
        "INSERT INTO request_logs (ts, request_id, tenant_id, method, path, status, latency_ms, cache_status)
         VALUES (now() - interval '40 minutes', 'c1', $1, 'GET', '/c', 200, 1, 'HIT'),
                (now() - interval '40 minutes', 'c2', $1, 'GET', '/c', 200, 1, 'HIT'),
                (now() - interval '40 minutes', 'c3', $1, 'GET', '/c', 200, 5, 'MISS'),
                (now() - interval '40 minutes', 'c4', $1, 'GET', '/c', 429, 1, NULL)",
        &[&t],
    )
    .await
    .unwrap();
    let r = a.root(
        "GET",
        &format!("/api/v1/analytics/timeseries?tenant_id={t}&step_s=60"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let points = r.body["points"].as_array().unwrap();
    assert_eq!(points.len(), 2, "{}", r.body);
    // Oldest first: the cache bucket, then the 100 requests.
    let (cache, busy) = (&points[0], &points[1]);
    assert_eq!(cache["requests"], 4);
    assert_eq!(cache["limited"], 1);
    assert_eq!(cache["client_errors"], 1);
    close(&cache["cache_hit_ratio"], 2.0 / 3.0);
    assert_eq!(busy["requests"], 100);
    assert_eq!(busy["server_errors"], 5);
    assert_eq!(busy["client_errors"], 10);
    close(&busy["p95_ms"], 95.05);
    assert!(busy["cache_hit_ratio"].is_null(), "no lookups: no ratio");
    assert!(points[0]["t"].as_str() < points[1]["t"].as_str());

    // A tenant admin gets its own tenant's series and nobody else's.
    let token = a.token_for(&g);
    let own = a.call(&token, "GET", "/api/v1/analytics/timeseries", None);
    assert_eq!(own.status, 200, "{}", own.body);
    assert_eq!(own.body["tenant_id"], g.as_str());
    assert_eq!(own.body["points"][0]["requests"], 4);
    let other = a.call(
        &token,
        "GET",
        &format!("/api/v1/analytics/timeseries?tenant_id={t}"),
        None,
    );
    assert_eq!(other.status, 404, "{}", other.body);

    // Bad parameters are named.
    for (q, field) in [
        ("step_s=5", "step_s"),
        (
            "step_s=10&from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z",
            "step_s",
        ),
        ("tenant_id=nope", "tenant_id"),
        ("from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
    ] {
        let r = a.root("GET", &format!("/api/v1/analytics/timeseries?{q}"), None);
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        assert_eq!(r.fields(), vec![field.to_string()], "{q}");
    }
}
