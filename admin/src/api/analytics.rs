//! Request analytics from `request_logs`.

use crate::auth::Principal;
use crate::error::{uuid_param, ApiError, ApiQuery, ErrorBody};
use crate::AppState;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use utoipa::{IntoParams, ToSchema};

/// `?tenant_id=&from=&to=&group_by=`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Query {
    /// Only this tenant's requests (a tenant_admin sees only its own tenant anyway).
    #[param(value_type = Option<uuid::Uuid>)]
    tenant_id: Option<String>,
    /// RFC 3339, inclusive; default `to` minus 24 hours.
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// RFC 3339, exclusive; default now.
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
    /// What the groups are (default `tenant`).
    #[param(value_type = Option<GroupBy>)]
    group_by: Option<String>,
}

/// What `GET /analytics/requests` groups by.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Tenant,
    ApiKey,
    Route,
    /// No groups, only `totals`.
    None,
}

/// The answer of `GET /analytics/requests`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Analytics {
    #[schema(format = DateTime)]
    pub from: String,
    #[schema(format = DateTime)]
    pub to: String,
    pub tenant_id: Option<String>,
    pub group_by: GroupBy,
    /// At most 1000 groups, busiest first.
    pub groups: Vec<GroupStats>,
    pub totals: Stats,
}

/// The statistics of one group.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupStats {
    pub tenant_id: Option<String>,
    /// The API key or route id (only with `group_by` `api_key` or `route`).
    pub key: Option<String>,
    #[serde(flatten)]
    pub stats: Stats,
}

/// Request statistics over a time range.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    pub requests: i64,
    /// Responses with status >= 500.
    pub server_errors: i64,
    /// `server_errors / requests`.
    pub error_rate: f64,
    /// Responses with 400 <= status < 500.
    pub client_errors: i64,
    /// `client_errors / requests`.
    pub client_error_rate: f64,
    pub latency_ms: Latency,
    pub bytes_sent: i64,
}

/// Latency percentiles and mean in milliseconds (`null` without requests).
#[derive(Debug, Serialize, ToSchema)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub mean: Option<f64>,
}

fn time(v: &Option<String>, name: &str, default: SystemTime) -> Result<SystemTime, ApiError> {
    match v {
        None => Ok(default),
        Some(s) => humantime::parse_rfc3339_weak(s).map_err(|_| {
            ApiError::BadRequest(format!(
                "{name} must be an RFC 3339 time like 2026-01-01T00:00:00Z"
            ))
        }),
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// `GET /analytics/requests`: per group, request count, server errors (status >= 500) and
/// client errors (400-499) with their rates, p50/p95/p99 and mean latency, bytes sent; plus
/// the same over everything as `totals`.
#[utoipa::path(
    get,
    path = "/api/v1/analytics/requests",
    tag = "analytics",
    operation_id = "request_analytics",
    summary = "Request statistics",
    description = "Request counts, error rates and latency percentiles from the proxies' \
        request logs, per group and in total.",
    params(Query),
    responses(
        (status = 200, description = "The statistics", body = Analytics),
        (status = 404, description = "`tenant_id` names a tenant the caller may not see", body = ErrorBody),
    )
)]
pub async fn requests(
    State(st): State<Arc<AppState>>,
    p: Principal,
    ApiQuery(q): ApiQuery<Query>,
) -> Result<Json<Value>, ApiError> {
    let asked = q
        .tenant_id
        .as_deref()
        .map(|s| {
            uuid::Uuid::parse_str(s)
                .map_err(|_| ApiError::BadRequest("tenant_id must be an id (UUID)".into()))
        })
        .transpose()?;
    let tenant = p.scope(asked)?.map(|t| t.to_string());
    let to = time(&q.to, "to", SystemTime::now())?;
    let from = time(&q.from, "from", to - Duration::from_secs(86_400))?;
    if from >= to {
        return Err(ApiError::BadRequest("from must be before to".into()));
    }
    let group_by = q.group_by.as_deref().unwrap_or("tenant");
    let key = match group_by {
        "tenant" => "tenant_id",
        "api_key" => "api_key_id",
        "route" => "route_id",
        "none" => "NULL::text",
        _ => {
            return Err(ApiError::BadRequest(
                "group_by must be tenant, api_key, route or none".into(),
            ))
        }
    };
    let stats = "count(*) AS requests,
        count(*) FILTER (WHERE status >= 500) AS server_errors,
        count(*) FILTER (WHERE status >= 400 AND status < 500) AS client_errors,
        percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50,
        percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95,
        percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) AS p99,
        avg(latency_ms) AS mean,
        COALESCE(sum(bytes_sent), 0)::bigint AS bytes";
    let filter = "ts >= $1::text::timestamptz AND ts < $2::text::timestamptz
                  AND ($3::text IS NULL OR tenant_id = $3)";
    let (from_s, to_s) = (rfc3339(from), rfc3339(to));
    let c = st.pool.get().await?;
    let groups_sql = format!(
        "SELECT tenant_id, {key} AS key, {stats} FROM request_logs WHERE {filter}
          GROUP BY 1, 2 ORDER BY requests DESC, 1, 2 LIMIT 1000"
    );
    let total_sql =
        format!("SELECT NULL::text, NULL::text, {stats} FROM request_logs WHERE {filter}");
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&from_s, &to_s, &tenant];
    let render = |r: &tokio_postgres::Row, with_key: bool| {
        let requests: i64 = r.get("requests");
        let server: i64 = r.get("server_errors");
        let client: i64 = r.get("client_errors");
        let rate = |n: i64| {
            if requests > 0 {
                n as f64 / requests as f64
            } else {
                0.0
            }
        };
        let mut v = json!({
            "requests": requests,
            "server_errors": server,
            "error_rate": rate(server),
            "client_errors": client,
            "client_error_rate": rate(client),
            "latency_ms": {
                "p50": r.get::<_, Option<f64>>("p50"),
                "p95": r.get::<_, Option<f64>>("p95"),
                "p99": r.get::<_, Option<f64>>("p99"),
                "mean": r.get::<_, Option<f64>>("mean"),
            },
            "bytes_sent": r.get::<_, i64>("bytes"),
        });
        if with_key {
            v["tenant_id"] = json!(r.get::<_, Option<String>>(0));
            if group_by != "tenant" && group_by != "none" {
                v["key"] = json!(r.get::<_, Option<String>>(1));
            }
        }
        v
    };
    let groups: Vec<Value> = if group_by == "none" {
        Vec::new()
    } else {
        c.query(&groups_sql, &params)
            .await?
            .iter()
            .map(|r| render(r, true))
            .collect()
    };
    let totals = render(&c.query_one(&total_sql, &params).await?, false);
    Ok(Json(json!({
        "from": from_s,
        "to": to_s,
        "tenant_id": tenant,
        "group_by": group_by,
        "groups": groups,
        "totals": totals,
    })))
}

/// `?tenant_id=&from=&to=&step_s=`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// Only this tenant's requests (a tenant_admin sees only its own tenant anyway).
    #[param(value_type = Option<uuid::Uuid>)]
    tenant_id: Option<String>,
    /// RFC 3339, inclusive; default `to` minus one hour.
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// RFC 3339, exclusive; default now.
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
    /// Bucket width in seconds, 10 to 86400 (default 60); at most 1440 buckets.
    step_s: Option<u32>,
}

/// The answer of `GET /analytics/timeseries`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Series {
    #[schema(format = DateTime)]
    pub from: String,
    #[schema(format = DateTime)]
    pub to: String,
    pub step_s: u32,
    pub tenant_id: Option<String>,
    /// Buckets that had requests, oldest first (empty buckets are left out).
    pub points: Vec<SeriesPoint>,
}

/// One bucket of requests.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeriesPoint {
    /// Start of the bucket.
    #[schema(format = DateTime)]
    pub t: String,
    pub requests: i64,
    /// Status >= 500.
    pub server_errors: i64,
    /// 400 <= status < 500.
    pub client_errors: i64,
    /// 95th percentile latency in milliseconds.
    pub p95_ms: Option<f64>,
    /// Answers from the cache (`X-Cache` HIT or STALE) over cache lookups (HIT, STALE,
    /// MISS, EXPIRED, REVALIDATED); `null` when nothing was looked up.
    pub cache_hit_ratio: Option<f64>,
    /// Refused with 429 (rate limits and quotas).
    pub limited: i64,
}

/// `GET /analytics/timeseries`: per time bucket, requests, errors, p95 latency, cache hit
/// ratio and limit refusals, for the console's charts.
#[utoipa::path(
    get,
    path = "/api/v1/analytics/timeseries",
    tag = "analytics",
    operation_id = "request_timeseries",
    summary = "Request statistics over time",
    description = "From the proxies' request logs, in buckets of `step_s` seconds.",
    params(SeriesQuery),
    responses(
        (status = 200, description = "The buckets", body = Series),
        (status = 400, description = "A parameter is invalid (named in `fields`)", body = ErrorBody),
        (status = 404, description = "`tenant_id` names a tenant the caller may not see", body = ErrorBody),
    )
)]
pub async fn timeseries(
    State(st): State<Arc<AppState>>,
    p: Principal,
    ApiQuery(q): ApiQuery<SeriesQuery>,
) -> Result<Json<Series>, ApiError> {
    let tenant = p
        .scope(uuid_param(&q.tenant_id, "tenant_id")?)?
        .map(|t| t.to_string());
    let to = time(&q.to, "to", SystemTime::now())?;
    let from = time(&q.from, "from", to - Duration::from_secs(3600))?;
    if from >= to {
        return Err(ApiError::bad_parameter("from", "must be before to"));
    }
    let step = q.step_s.unwrap_or(60);
    if !(10..=86_400).contains(&step) {
        return Err(ApiError::bad_parameter(
            "step_s",
            "must be between 10 and 86400",
        ));
    }
    let span = to.duration_since(from).unwrap_or_default().as_secs();
    if span / u64::from(step) > 1440 {
        return Err(ApiError::bad_parameter(
            "step_s",
            "gives more than 1440 buckets for from..to: take a wider step",
        ));
    }
    let (from_s, to_s) = (rfc3339(from), rfc3339(to));
    let c = st.pool.get().await?;
    let rows = c
        .query(
            "SELECT date_bin(make_interval(secs => $4::int4), ts, $1::text::timestamptz) AS t,
                    count(*),
                    count(*) FILTER (WHERE status >= 500),
                    count(*) FILTER (WHERE status >= 400 AND status < 500),
                    percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms),
                    count(*) FILTER (WHERE cache_status IN ('HIT', 'STALE')),
                    count(*) FILTER (WHERE cache_status IN
                        ('HIT', 'STALE', 'MISS', 'EXPIRED', 'REVALIDATED')),
                    count(*) FILTER (WHERE status = 429)
               FROM request_logs
              WHERE ts >= $1::text::timestamptz AND ts < $2::text::timestamptz
                AND ($3::text IS NULL OR tenant_id = $3)
              GROUP BY 1 ORDER BY 1",
            &[&from_s, &to_s, &tenant, &i32::try_from(step).unwrap_or(60)],
        )
        .await?;
    let points = rows
        .iter()
        .map(|r| {
            let hits: i64 = r.get(5);
            let lookups: i64 = r.get(6);
            SeriesPoint {
                t: rfc3339(r.get(0)),
                requests: r.get(1),
                server_errors: r.get(2),
                client_errors: r.get(3),
                p95_ms: r.get(4),
                cache_hit_ratio: (lookups > 0).then(|| hits as f64 / lookups as f64),
                limited: r.get(7),
            }
        })
        .collect();
    Ok(Json(Series {
        from: from_s,
        to: to_s,
        step_s: step,
        tenant_id: tenant,
        points,
    }))
}
