//! What the proxies metered and refused, from the tables their usage batches fill
//! (`vantage_apply_usage_batch`): usage per minute, hour or UTC day (`usage_minute`,
//! `usage_hour`, `usage_day`) and violations (`violations`).

use crate::auth::Principal;
use crate::error::{uuid_param, ApiError, ApiQuery, ErrorBody};
use crate::AppState;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_postgres::types::ToSql;
use utoipa::{IntoParams, ToSchema};
use vantage_model::EnforcementMode;

/// Most rows of one usage answer; past it the answer says `truncated`.
pub const MAX_USAGE_ROWS: i64 = 10_000;
/// Longest range of a per-minute usage answer.
pub const MAX_MINUTE_RANGE: Duration = Duration::from_secs(7 * 86_400);
/// Most rows of one violations answer, and the default.
pub const MAX_VIOLATIONS: i64 = 10_000;
pub const DEFAULT_VIOLATIONS: i64 = 1_000;

/// `?tenant_id=&api_key_id=&subject=&route_id=&from=&to=&granularity=` of `GET /usage`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Only this tenant's usage. A tenant_admin sees only its own tenant (another one is
    /// 404); a superadmin without it sees every tenant.
    #[param(value_type = Option<Uuid>)]
    tenant_id: Option<String>,
    /// Only this API key's usage (the subject `key:<id>`); not with `subject`.
    #[param(value_type = Option<Uuid>)]
    api_key_id: Option<String>,
    /// Only this subject: `key:<api key id>`, `user:<JWT sub>`, or empty for anonymous
    /// requests. Example: `user:user_2abc`.
    subject: Option<String>,
    /// Only this route's usage (empty: requests that matched no route).
    #[param(value_type = Option<Uuid>)]
    route_id: Option<String>,
    /// RFC 3339 (UTC), rounded down to the start of its minute, hour or day; default `to`
    /// minus 24 hours.
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// RFC 3339 (UTC), exclusive: periods that start before it; default now.
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
    /// The period of a row (default `hour`). `minute` covers at most 7 days.
    #[param(value_type = Option<Granularity>)]
    granularity: Option<String>,
}

/// The period of one usage row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    /// From `usage_minute`, kept `usage_minute_retention_days` (default 7).
    Minute,
    /// From `usage_hour`, kept `usage_hour_retention_days` (default 90).
    Hour,
    /// UTC days, from `usage_day` (kept).
    Day,
}

impl Granularity {
    fn parse(s: &str) -> Result<Granularity, ApiError> {
        match s {
            "minute" => Ok(Granularity::Minute),
            "hour" => Ok(Granularity::Hour),
            "day" => Ok(Granularity::Day),
            _ => Err(ApiError::bad_parameter(
                "granularity",
                "must be minute, hour or day",
            )),
        }
    }

    fn table(self) -> &'static str {
        match self {
            Granularity::Minute => "usage_minute",
            Granularity::Hour => "usage_hour",
            Granularity::Day => "usage_day",
        }
    }

    fn seconds(self) -> u64 {
        match self {
            Granularity::Minute => 60,
            Granularity::Hour => 3600,
            Granularity::Day => 86_400,
        }
    }
}

/// The answer of `GET /usage`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageReport {
    pub granularity: Granularity,
    /// Start of the first period: `from` rounded down to its minute, hour or UTC day.
    #[schema(format = DateTime)]
    pub from: String,
    /// Exclusive: the rows are of periods that start before it.
    #[schema(format = DateTime)]
    pub to: String,
    /// Ordered by `ts`, then tenant, subject, route and status class; at most 10,000.
    pub rows: Vec<UsageRow>,
    /// There were more than 10,000 rows: `rows` holds the first 10,000 (`totals` covers
    /// all of them). Narrow the range or the filters, or ask for a coarser granularity.
    pub truncated: bool,
    /// Over every row of the range and filters.
    pub totals: UsageTotals,
}

/// The usage of one period, tenant, subject, route and status class.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageRow {
    /// Start of the period (UTC).
    #[schema(format = DateTime)]
    pub ts: String,
    pub tenant_id: String,
    /// `key:<api key id>`, `user:<JWT sub>`, or empty for anonymous requests.
    pub subject: String,
    /// Empty when no route matched.
    pub route_id: String,
    /// The status divided by 100 (2 for 2xx); 0 when no response was written.
    pub status_class: i16,
    #[serde(flatten)]
    pub counts: UsageTotals,
}

/// Usage counts.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct UsageTotals {
    pub requests: i64,
    pub request_bytes: i64,
    pub response_bytes: i64,
    /// Quota units charged (each request costs its route's `quota.cost`).
    pub units: i64,
    /// Requests served past a quota with `overage: allow`.
    pub overage: i64,
}

/// `?tenant_id=&api_key_id=&subject=&route_id=&kind=&mode=&from=&to=&limit=` of
/// `GET /violations`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ViolationQuery {
    /// Only this tenant's violations. A tenant_admin sees only its own tenant (another one
    /// is 404); a superadmin without it sees every tenant.
    #[param(value_type = Option<Uuid>)]
    tenant_id: Option<String>,
    /// Only this API key's violations (the subject `key:<id>`); not with `subject`.
    #[param(value_type = Option<Uuid>)]
    api_key_id: Option<String>,
    /// Only this subject: `key:<api key id>`, `user:<JWT sub>`, or for anonymous requests
    /// `ip:<client address>` (empty when unknown). Example: `ip:203.0.113.7`.
    subject: Option<String>,
    /// Only this route's violations (empty: before a route matched).
    #[param(value_type = Option<Uuid>)]
    route_id: Option<String>,
    /// Only this kind of violation.
    #[param(value_type = Option<ViolationKind>)]
    kind: Option<String>,
    /// Only refusals (`enforce`) or only would-be refusals of shadow-mode policies (`shadow`).
    #[param(value_type = Option<EnforcementMode>)]
    mode: Option<String>,
    /// RFC 3339 (UTC), rounded down to its minute; default `to` minus 24 hours.
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// RFC 3339 (UTC), exclusive; default now.
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
    /// Most rows (1-10000, default 1000), the newest.
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<i64>,
}

/// What refused (or, in shadow mode, would have refused) the requests of a violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// A rate limit (route, tenant or plan).
    RateLimit,
    /// A plan's calendar quota.
    Quota,
    /// Authentication or authorization (API key, JWT, scopes).
    Auth,
    /// An IP rule.
    Ip,
}

impl ViolationKind {
    const NAMES: [&'static str; 4] = ["rate_limit", "quota", "auth", "ip"];
}

/// The answer of `GET /violations`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ViolationReport {
    /// `from` rounded down to its minute.
    #[schema(format = DateTime)]
    pub from: String,
    #[schema(format = DateTime)]
    pub to: String,
    /// Newest first (by `ts`, then tenant, subject, kind, policy, mode and route).
    pub rows: Vec<ViolationRow>,
    /// There were more rows than `limit`: `rows` holds the newest.
    pub truncated: bool,
}

/// The violations of one minute, tenant, subject, kind, policy, mode and route.
#[derive(Debug, Serialize, ToSchema)]
pub struct ViolationRow {
    /// Start of the minute (UTC).
    #[schema(format = DateTime)]
    pub ts: String,
    pub tenant_id: String,
    /// `key:<api key id>`, `user:<JWT sub>`, or for anonymous requests
    /// `ip:<client address>` (empty when unknown).
    pub subject: String,
    #[schema(value_type = ViolationKind)]
    pub kind: String,
    /// The rate limit's or quota's name; for auth and IP rules, the error code.
    pub policy: String,
    /// `enforce`: the requests were refused; `shadow`: they were served.
    #[schema(value_type = EnforcementMode)]
    pub mode: String,
    /// Empty when the refusal came before a route matched.
    pub route_id: String,
    /// The error code answered (or that would have been). Example: `quota_exceeded`.
    pub code: String,
    /// Requests refused (or that would have been).
    pub count: i64,
    #[schema(format = DateTime)]
    pub first_seen: String,
    #[schema(format = DateTime)]
    pub last_seen: String,
    /// The request id of one of them, to find it in the access log.
    pub sample_request_id: String,
}

/// An RFC 3339 query parameter, or `default`.
fn time_param(v: &Option<String>, name: &str, default: SystemTime) -> Result<SystemTime, ApiError> {
    match v {
        None => Ok(default),
        Some(s) => humantime::parse_rfc3339_weak(s).map_err(|_| {
            ApiError::bad_parameter(name, "must be an RFC 3339 time like 2026-01-01T00:00:00Z")
        }),
    }
}

/// `t` rounded down to a multiple of `seconds` since the epoch (minute, hour, UTC day).
fn floor(t: SystemTime, seconds: u64) -> SystemTime {
    let s = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    UNIX_EPOCH + Duration::from_secs(s - s % seconds)
}

/// RFC 3339 in UTC, to the second.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// RFC 3339 in UTC, to the millisecond.
fn rfc3339_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The filters common to both endpoints: tenant (scoped to the caller), subject and route.
struct Filters {
    tenant: Option<String>,
    subject: Option<String>,
    route: Option<String>,
}

impl Filters {
    fn new(
        p: &Principal,
        tenant_id: &Option<String>,
        api_key_id: &Option<String>,
        subject: &Option<String>,
        route_id: &Option<String>,
    ) -> Result<Filters, ApiError> {
        let asked = uuid_param(tenant_id, "tenant_id")?;
        let tenant = p.scope(asked)?.map(|t| t.to_string());
        let key = uuid_param(api_key_id, "api_key_id")?;
        let subject = match (key, subject) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_parameter(
                    "subject",
                    "give api_key_id or subject, not both",
                ))
            }
            (Some(k), None) => Some(format!("key:{k}")),
            (None, s) => s.clone(),
        };
        Ok(Filters {
            tenant,
            subject,
            route: route_id.clone(),
        })
    }
}

/// `[from, to)` of a query: `from` rounded down to `round` seconds, `from` before `to`.
fn range(
    from: &Option<String>,
    to: &Option<String>,
    round: u64,
) -> Result<(SystemTime, SystemTime), ApiError> {
    let to = time_param(to, "to", SystemTime::now())?;
    let from = time_param(from, "from", to - Duration::from_secs(86_400))?;
    if from >= to {
        return Err(ApiError::bad_parameter("from", "must be before to"));
    }
    Ok((floor(from, round), to))
}

/// `GET /usage`: the proxies' metered usage per minute, hour or UTC day, tenant, subject,
/// route and status class, with totals.
#[utoipa::path(
    get,
    path = "/api/v1/usage",
    tag = "usage",
    operation_id = "usage",
    summary = "Metered usage",
    description = "Requests, bytes, quota units and overage as the proxies metered them, per \
        period (`granularity`), tenant, subject, route and status class, ordered by time, with \
        totals. At most 10,000 rows (`truncated` says when there were more). A bad parameter \
        is a 400 whose `fields` names it.",
    params(UsageQuery),
    responses(
        (status = 200, description = "The usage", body = UsageReport),
        (status = 404, description = "`tenant_id` names a tenant the caller may not see", body = ErrorBody),
    )
)]
pub async fn usage(
    State(st): State<Arc<AppState>>,
    p: Principal,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> Result<Json<UsageReport>, ApiError> {
    let f = Filters::new(&p, &q.tenant_id, &q.api_key_id, &q.subject, &q.route_id)?;
    let granularity = Granularity::parse(q.granularity.as_deref().unwrap_or("hour"))?;
    let (from, to) = range(&q.from, &q.to, granularity.seconds())?;
    if granularity == Granularity::Minute
        && to.duration_since(from).unwrap_or_default() > MAX_MINUTE_RANGE
    {
        return Err(ApiError::bad_parameter(
            "from",
            "per-minute usage covers at most 7 days; narrow the range or ask for hours or days",
        ));
    }
    let filter = "ts >= $1 AND ts < $2
                  AND ($3::text IS NULL OR tenant_id = $3)
                  AND ($4::text IS NULL OR subject = $4)
                  AND ($5::text IS NULL OR route_id = $5)";
    let table = granularity.table();
    let rows_sql = format!(
        "SELECT ts, tenant_id, subject, route_id, status_class, requests, request_bytes,
                response_bytes, units, overage
           FROM {table} WHERE {filter}
          ORDER BY ts, tenant_id, subject, route_id, status_class LIMIT $6"
    );
    let totals_sql = format!(
        "SELECT COALESCE(sum(requests), 0)::bigint, COALESCE(sum(request_bytes), 0)::bigint,
                COALESCE(sum(response_bytes), 0)::bigint, COALESCE(sum(units), 0)::bigint,
                COALESCE(sum(overage), 0)::bigint
           FROM {table} WHERE {filter}"
    );
    let limit = MAX_USAGE_ROWS + 1;
    let params: [&(dyn ToSql + Sync); 6] = [&from, &to, &f.tenant, &f.subject, &f.route, &limit];
    let c = st.pool.get().await?;
    let found = c.query(&rows_sql, &params).await?;
    let totals = c.query_one(&totals_sql, &params[..5]).await?;
    let truncated = found.len() as i64 > MAX_USAGE_ROWS;
    let rows = found
        .iter()
        .take(MAX_USAGE_ROWS as usize)
        .map(|r| UsageRow {
            ts: rfc3339(r.get(0)),
            tenant_id: r.get(1),
            subject: r.get(2),
            route_id: r.get(3),
            status_class: r.get(4),
            counts: UsageTotals {
                requests: r.get(5),
                request_bytes: r.get(6),
                response_bytes: r.get(7),
                units: r.get(8),
                overage: r.get(9),
            },
        })
        .collect();
    Ok(Json(UsageReport {
        granularity,
        from: rfc3339(from),
        to: rfc3339(to),
        rows,
        truncated,
        totals: UsageTotals {
            requests: totals.get(0),
            request_bytes: totals.get(1),
            response_bytes: totals.get(2),
            units: totals.get(3),
            overage: totals.get(4),
        },
    }))
}

/// `GET /violations`: the refusals of rate limits, quotas, auth and IP rules, and the
/// would-be refusals of shadow-mode policies, per minute, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/violations",
    tag = "usage",
    operation_id = "violations",
    summary = "Policy violations",
    description = "Every refusal by a rate limit, quota, auth or IP rule, and every would-be \
        refusal of a shadow-mode policy (`mode: shadow`, the request was served), counted per \
        minute, tenant, subject, kind, policy, mode and route; newest first, at most `limit` \
        rows (`truncated` says when there were more). A bad parameter is a 400 whose `fields` \
        names it.",
    params(ViolationQuery),
    responses(
        (status = 200, description = "The violations", body = ViolationReport),
        (status = 404, description = "`tenant_id` names a tenant the caller may not see", body = ErrorBody),
    )
)]
pub async fn violations(
    State(st): State<Arc<AppState>>,
    p: Principal,
    ApiQuery(q): ApiQuery<ViolationQuery>,
) -> Result<Json<ViolationReport>, ApiError> {
    let f = Filters::new(&p, &q.tenant_id, &q.api_key_id, &q.subject, &q.route_id)?;
    if let Some(k) = q.kind.as_deref() {
        if !ViolationKind::NAMES.contains(&k) {
            return Err(ApiError::bad_parameter(
                "kind",
                "must be rate_limit, quota, auth or ip",
            ));
        }
    }
    if let Some(m) = q.mode.as_deref() {
        if m != EnforcementMode::Enforce.as_str() && m != EnforcementMode::Shadow.as_str() {
            return Err(ApiError::bad_parameter("mode", "must be enforce or shadow"));
        }
    }
    let limit = q.limit.unwrap_or(DEFAULT_VIOLATIONS);
    if !(1..=MAX_VIOLATIONS).contains(&limit) {
        return Err(ApiError::bad_parameter(
            "limit",
            "must be between 1 and 10000",
        ));
    }
    let (from, to) = range(&q.from, &q.to, 60)?;
    let sql = "SELECT ts, tenant_id, subject, kind, policy, mode, route_id, code, count,
                      first_seen, last_seen, sample_request_id
                 FROM violations
                WHERE ts >= $1 AND ts < $2
                  AND ($3::text IS NULL OR tenant_id = $3)
                  AND ($4::text IS NULL OR subject = $4)
                  AND ($5::text IS NULL OR route_id = $5)
                  AND ($6::text IS NULL OR kind = $6)
                  AND ($7::text IS NULL OR mode = $7)
                ORDER BY ts DESC, tenant_id, subject, kind, policy, mode, route_id
                LIMIT $8";
    let fetch = limit + 1;
    let c = st.pool.get().await?;
    let found = c
        .query(
            sql,
            &[
                &from, &to, &f.tenant, &f.subject, &f.route, &q.kind, &q.mode, &fetch,
            ],
        )
        .await?;
    let truncated = found.len() as i64 > limit;
    let rows = found
        .iter()
        .take(limit as usize)
        .map(|r| ViolationRow {
            ts: rfc3339(r.get(0)),
            tenant_id: r.get(1),
            subject: r.get(2),
            kind: r.get(3),
            policy: r.get(4),
            mode: r.get(5),
            route_id: r.get(6),
            code: r.get(7),
            count: r.get(8),
            first_seen: rfc3339_millis(r.get(9)),
            last_seen: rfc3339_millis(r.get(10)),
            sample_request_id: r.get(11),
        })
        .collect();
    Ok(Json(ViolationReport {
        from: rfc3339(from),
        to: rfc3339(to),
        rows,
        truncated,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn at(s: &str) -> SystemTime {
        humantime::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn from_is_rounded_down_to_its_period() {
        let t = at("2026-11-28T23:59:59Z");
        assert_eq!(rfc3339(floor(t, 60)), "2026-11-28T23:59:00Z");
        assert_eq!(rfc3339(floor(t, 3600)), "2026-11-28T23:00:00Z");
        assert_eq!(rfc3339(floor(t, 86_400)), "2026-11-28T00:00:00Z");
    }

    #[test]
    fn bad_parameters_are_named() {
        let field = |e: ApiError| match e {
            ApiError::BadParameter(f) => f.path,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(Granularity::parse("week").unwrap_err()),
            "granularity"
        );
        let late = Some("2026-01-02T00:00:00Z".to_string());
        let early = Some("2026-01-01T00:00:00Z".to_string());
        assert_eq!(field(range(&late, &early, 60).unwrap_err()), "from");
        assert_eq!(field(range(&late, &late, 60).unwrap_err()), "from");
        assert_eq!(
            field(range(&Some("yesterday".into()), &None, 60).unwrap_err()),
            "from"
        );
        assert_eq!(
            field(range(&None, &Some("2026-13-01".into()), 60).unwrap_err()),
            "to"
        );
        let p = Principal {
            token_id: Uuid::new_v4(),
            tenant: None,
        };
        let both = Filters::new(
            &p,
            &None,
            &Some(Uuid::new_v4().to_string()),
            &Some("user:x".into()),
            &None,
        );
        assert_eq!(field(both.err().unwrap()), "subject");
        let bad_key = Filters::new(&p, &None, &Some("k1".into()), &None, &None);
        assert_eq!(field(bad_key.err().unwrap()), "api_key_id");
    }
}
