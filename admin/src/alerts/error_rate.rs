//! `error_rate`: the share of the tenant's requests (or one route's) answered with a 5xx
//! over the window is above `percent`.
//!
//! Counted from `usage_minute` (per minute, subject, route and status class) of the current
//! minute and the `window_s` seconds before it, once there are at least `min_requests`
//! requests. One alert per rule until the share falls back.

use super::{check_window, field, ser_num, show, Breach, EvalError, Params, Rule};
use crate::error::Field;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

pub const KIND: &str = "error_rate";

/// Parameters of an `error_rate` rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorRateParams {
    /// Fires when the 5xx share of the requests is above this percentage (0-100). Required.
    /// Example: `5`.
    #[serde(serialize_with = "ser_num")]
    pub percent: f64,
    /// The window in seconds, whole minutes from 60 to 86400. Default `300`.
    #[serde(default = "default_window")]
    pub window_s: i64,
    /// Fewer requests than this in the window never fire. Default `20`.
    #[serde(default = "default_min_requests")]
    pub min_requests: i64,
    /// Only this route's requests; absent: every request of the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Uuid>)]
    pub route_id: Option<String>,
}

fn default_window() -> i64 {
    300
}

fn default_min_requests() -> i64 {
    20
}

impl Params for ErrorRateParams {
    const FIELDS: &'static [&'static str] = &["percent", "window_s", "min_requests", "route_id"];
    const REQUIRED: &'static [&'static str] = &["percent"];

    fn check(&self, fields: &mut Vec<Field>) {
        if !self.percent.is_finite() || !(0.0..100.0).contains(&self.percent) {
            fields.push(field(
                "percent",
                "must be a percentage from 0 to less than 100",
            ));
        }
        check_window(self.window_s, fields);
        if !(1..=1_000_000_000).contains(&self.min_requests) {
            fields.push(field("min_requests", "must be from 1 to 1000000000"));
        }
    }
}

pub(super) async fn evaluate(
    c: &impl GenericClient,
    rule: &Rule,
    p: &ErrorRateParams,
) -> Result<Vec<Breach>, EvalError> {
    let row = c
        .query_one(
            "SELECT COALESCE(sum(requests), 0)::bigint,
                    COALESCE(sum(requests) FILTER (WHERE status_class = 5), 0)::bigint
               FROM usage_minute
              WHERE tenant_id = $1
                AND ts >= date_trunc('minute', now()) - $2::bigint * interval '1 second'
                AND ($3::text IS NULL OR route_id = $3)",
            &[&rule.tenant.to_string(), &p.window_s, &p.route_id],
        )
        .await?;
    let (requests, errors): (i64, i64) = (row.get(0), row.get(1));
    if requests < p.min_requests || requests == 0 {
        return Ok(Vec::new());
    }
    let share = errors as f64 * 100.0 / requests as f64;
    if share <= p.percent {
        return Ok(Vec::new());
    }
    let (subject, shown) = match &p.route_id {
        Some(r) => (format!("route:{r}"), format!("route {r}")),
        None => ("tenant".to_string(), "the tenant".to_string()),
    };
    Ok(vec![Breach {
        dedupe: subject.clone(),
        subject,
        value: share,
        threshold: p.percent,
        message: format!(
            "{}% of the requests of {shown} failed with a 5xx ({errors} of {requests} in {} min; \
             above {}%)",
            show(share),
            p.window_s / 60,
            show(p.percent)
        ),
        details: json!({
            "requests": requests,
            "errors": errors,
            "window_s": p.window_s,
            "route_id": p.route_id,
        }),
    }])
}
