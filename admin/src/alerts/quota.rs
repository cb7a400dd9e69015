//! `quota_used`: a subject on a plan used a percentage of a quota in its current period.
//!
//! The subjects are those the proxies count quotas for: each active API key on a plan
//! (`key:<id>`, its own usage) and the tenant when it is on a plan (`tenant`, the usage of
//! every subject of the tenant). The units used come from `usage_quarter` (per quarter
//! hour; a quota period begins at a local midnight or hour of the plan's zone, always a
//! quarter hour of UTC), summed over the routes the quota counts: with a `group`, the
//! routes of that group; without, every route that is not `exempt`. Each threshold is an
//! alert of its own, de-duplicated by subject, quota, period and threshold: it fires at most
//! once per period and resolves when the figure falls below it (a new period began, or the
//! subject moved to a plan with a higher limit).

use super::{field, ser_nums, show, Breach, Env, EvalError, Params, Rule};
use crate::error::Field;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_postgres::GenericClient;
use utoipa::ToSchema;
use uuid::Uuid;
use vantage_model::{Calendar, Quota};

pub const KIND: &str = "quota_used";

/// Most thresholds of one rule.
const MAX_THRESHOLDS: usize = 10;

/// Parameters of a `quota_used` rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaUsedParams {
    /// Percentages of a quota's limit (above 0, at most 1000); each is an alert of its own
    /// that fires at most once per period. Default `[50, 80, 100]`.
    #[serde(default = "default_thresholds", serialize_with = "ser_nums")]
    pub thresholds: Vec<f64>,
    /// Only the quotas of this name (of whatever plan); absent: every quota. Example:
    /// `monthly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<String>,
}

fn default_thresholds() -> Vec<f64> {
    vec![50.0, 80.0, 100.0]
}

impl Params for QuotaUsedParams {
    const FIELDS: &'static [&'static str] = &["thresholds", "quota"];

    fn check(&self, fields: &mut Vec<Field>) {
        if self.thresholds.is_empty() || self.thresholds.len() > MAX_THRESHOLDS {
            fields.push(field("thresholds", "must list 1 to 10 percentages"));
        }
        for (i, t) in self.thresholds.iter().enumerate() {
            if !t.is_finite() || *t <= 0.0 || *t > 1000.0 {
                fields.push(field(
                    format!("thresholds[{i}]"),
                    "must be a percentage above 0 and at most 1000",
                ));
            } else if self.thresholds[..i].contains(t) {
                fields.push(field(
                    format!("thresholds[{i}]"),
                    format!("{} is listed twice", show(*t)),
                ));
            }
        }
        if let Some(q) = &self.quota {
            if q.is_empty() || q.len() > 128 || q.chars().any(char::is_control) {
                fields.push(field("quota", "must be a quota name of 1-128 characters"));
            }
        }
    }
}

/// The plans of the tenant that bind a subject, with their subjects.
struct Bound {
    name: String,
    time_zone: String,
    quotas: serde_json::Value,
    /// (`key:<id>` or `tenant`, the key's or tenant's name).
    subjects: Vec<(String, String)>,
}

fn at(unix: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0))
}

fn rfc3339(unix: i64) -> String {
    humantime::format_rfc3339_seconds(at(unix)).to_string()
}

pub(super) async fn evaluate(
    c: &impl GenericClient,
    rule: &Rule,
    p: &QuotaUsedParams,
    env: &Env,
) -> Result<Vec<Breach>, EvalError> {
    let rows = c
        .query(
            "SELECT pl.id, pl.name, pl.time_zone, pl.quotas, s.subject, s.label
               FROM (SELECT k.plan_id, 'key:' || k.id::text AS subject, k.name AS label
                       FROM api_keys k
                      WHERE k.tenant_id = $1 AND k.status = 'active' AND k.plan_id IS NOT NULL
                     UNION ALL
                     SELECT t.plan_id, 'tenant', t.name
                       FROM tenants t WHERE t.id = $1 AND t.plan_id IS NOT NULL) s
               JOIN plans pl ON pl.id = s.plan_id
              ORDER BY pl.id, s.subject",
            &[&rule.tenant],
        )
        .await?;
    let mut plans: BTreeMap<Uuid, Bound> = BTreeMap::new();
    for r in &rows {
        let b = plans.entry(r.get(0)).or_insert_with(|| Bound {
            name: r.get(1),
            time_zone: r.get(2),
            quotas: r.get(3),
            subjects: Vec::new(),
        });
        b.subjects.push((r.get(4), r.get(5)));
    }
    let tenant_text = rule.tenant.to_string();
    let mut out = Vec::new();
    for (plan_id, plan) in &plans {
        let quotas: Vec<Quota> = serde_json::from_value(plan.quotas.clone())
            .map_err(|e| EvalError::Rule(format!("plan {plan_id}: quotas do not parse: {e}")))?;
        let calendar = Calendar::new(&plan.time_zone)
            .map_err(|e| EvalError::Rule(format!("plan {plan_id}: {e}")))?;
        let all = plan.subjects.iter().any(|(s, _)| s == "tenant");
        let keys: Vec<&str> = plan
            .subjects
            .iter()
            .map(|(s, _)| s.as_str())
            .filter(|s| *s != "tenant")
            .collect();
        for q in &quotas {
            if p.quota.as_ref().is_some_and(|name| *name != q.name) || q.limit <= 0 {
                continue;
            }
            let Some(period) = q.period else { continue };
            let w = calendar.window(period, env.now);
            let used: HashMap<String, i64> = c
                .query(
                    "SELECT u.subject, sum(u.units)::bigint
                       FROM usage_quarter u
                      WHERE u.tenant_id = $1 AND u.ts >= $2 AND u.ts < $3
                        AND ($4 OR u.subject = ANY ($5))
                        AND CASE WHEN $6::text IS NULL
                            THEN NOT EXISTS (
                                SELECT 1 FROM routes r
                                 WHERE r.tenant_id = $7 AND r.id::text = u.route_id
                                   AND COALESCE((r.quota->>'exempt')::boolean, false))
                            ELSE EXISTS (
                                SELECT 1 FROM routes r
                                 WHERE r.tenant_id = $7 AND r.id::text = u.route_id
                                   AND r.quota->>'group' = $6)
                            END
                      GROUP BY u.subject",
                    &[
                        &tenant_text,
                        &at(w.start),
                        &at(w.end),
                        &all,
                        &keys,
                        &q.group,
                        &rule.tenant,
                    ],
                )
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let label = calendar.label(period, w.start);
            for (subject, name) in &plan.subjects {
                let units = if subject == "tenant" {
                    used.values().sum()
                } else {
                    used.get(subject).copied().unwrap_or(0)
                };
                let percent = units as f64 * 100.0 / q.limit as f64;
                let who = if subject == "tenant" {
                    format!("tenant '{name}'")
                } else {
                    format!("API key '{name}'")
                };
                for t in p.thresholds.iter().filter(|t| percent >= **t) {
                    out.push(Breach {
                        dedupe: format!("{subject}|{}|{}|{t}", q.name, w.start),
                        subject: subject.clone(),
                        value: percent,
                        threshold: *t,
                        message: format!(
                            "{who} used {}% of quota '{}' ({units} of {} units in {label}; \
                             threshold {}%)",
                            show(percent),
                            q.name,
                            q.limit,
                            show(*t)
                        ),
                        details: json!({
                            "subject_name": name,
                            "plan_id": plan_id.to_string(),
                            "plan_name": plan.name,
                            "quota": q.name,
                            "group": q.group,
                            "period": period,
                            "period_label": label,
                            "period_start": rfc3339(w.start),
                            "period_end": rfc3339(w.end),
                            "limit": q.limit,
                            "used": units,
                            "percent": percent,
                        }),
                    });
                }
            }
        }
    }
    Ok(out)
}
