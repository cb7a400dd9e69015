//! `pool_unhealthy`: an origin pool of the tenant has no healthy target, as a proxy's health
//! checks see it.
//!
//! Read from `pool_health`, which every proxy keeps up to date for each pool it serves
//! (healthy targets of total). Reports older than `worker.pool_health_stale_s` are ignored
//! (the proxy is gone). An origin fires when a fresh report says 0 healthy of more than 0;
//! it resolves when every fresh report sees a healthy target again (or none is fresh).

use super::{field, Breach, Env, EvalError, Params, Rule};
use crate::error::Field;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

pub const KIND: &str = "pool_unhealthy";

/// Parameters of a `pool_unhealthy` rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolUnhealthyParams {
    /// Only this origin; absent: every origin of the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Uuid>)]
    pub origin_id: Option<String>,
}

impl Params for PoolUnhealthyParams {
    const FIELDS: &'static [&'static str] = &["origin_id"];

    fn check(&self, fields: &mut Vec<Field>) {
        if self.origin_id.as_ref().is_some_and(|o| o.is_empty()) {
            fields.push(field("origin_id", "must not be empty"));
        }
    }
}

pub(super) async fn evaluate(
    c: &impl GenericClient,
    rule: &Rule,
    p: &PoolUnhealthyParams,
    env: &Env,
) -> Result<Vec<Breach>, EvalError> {
    let rows = c
        .query(
            "SELECT origin_id,
                    array_agg(proxy ORDER BY proxy) FILTER (WHERE healthy = 0 AND total > 0),
                    max(total)
               FROM pool_health
              WHERE tenant_id = $1
                AND reported_at > now() - $2::bigint * interval '1 second'
                AND ($3::text IS NULL OR origin_id = $3)
              GROUP BY origin_id
             HAVING count(*) FILTER (WHERE healthy = 0 AND total > 0) > 0
              ORDER BY origin_id",
            &[
                &rule.tenant.to_string(),
                &env.pool_health_stale_s,
                &p.origin_id,
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let origin: String = r.get(0);
            let proxies: Vec<String> = r.get(1);
            let total: i32 = r.get(2);
            let subject = format!("origin:{origin}");
            Breach {
                dedupe: subject.clone(),
                subject,
                value: proxies.len() as f64,
                threshold: 1.0,
                message: format!(
                    "origin {origin} has no healthy target (0 of {total}) as seen by {} \
                     proxies: {}",
                    proxies.len(),
                    proxies.join(", ")
                ),
                details: json!({
                    "origin_id": origin,
                    "proxies": proxies,
                    "total": total,
                }),
            }
        })
        .collect())
}
