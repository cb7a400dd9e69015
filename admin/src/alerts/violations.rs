//! `violations`: an API key (or a route) refused more than `per_minute` times a minute.
//!
//! Counted from the proxies' `violations` rows (per minute, subject, kind, policy, mode and
//! route) of the window: the last `window_s / 60` **complete** minutes — rows with
//! `date_trunc('minute', now()) - window_s <= ts < date_trunc('minute', now())` — divided
//! by that many minutes. The current minute is not counted until it is over: half a minute
//! of refusals over a whole minute's divisor would understate, a partial minute added to
//! whole ones with the whole ones' divisor overstate the rate. One alert per key (or route)
//! until the rate falls back.

use super::{check_window, field, ser_num, show, Breach, EvalError, Params, Rule};
use crate::error::Field;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

pub const KIND: &str = "violations";

const BY: [&str; 2] = ["key", "route"];
const VIOLATION_KINDS: [&str; 4] = ["rate_limit", "quota", "auth", "ip"];
const MODES: [&str; 2] = ["enforce", "shadow"];

/// Parameters of a `violations` rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ViolationsParams {
    /// Fires when the refusals per minute (over the window) are above this. Required.
    /// Example: `10`.
    #[serde(serialize_with = "ser_num")]
    pub per_minute: f64,
    /// Count per API key (`key`, the subjects `key:<id>`) or per route (`route`). Default
    /// `key`.
    #[serde(default = "default_by")]
    pub by: String,
    /// Only violations of this kind: `rate_limit`, `quota`, `auth` or `ip`; absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `enforce` (real refusals, the default) or `shadow` (would-be refusals of shadow-mode
    /// policies).
    #[serde(default = "default_mode")]
    pub mode: String,
    /// The window in seconds, whole minutes from 60 to 86400: the rate is that of the last
    /// `window_s / 60` complete minutes (the current minute counts once it is over).
    /// Default `60`.
    #[serde(default = "default_window")]
    pub window_s: i64,
}

fn default_by() -> String {
    "key".into()
}

fn default_mode() -> String {
    "enforce".into()
}

fn default_window() -> i64 {
    60
}

impl Params for ViolationsParams {
    const FIELDS: &'static [&'static str] = &["per_minute", "by", "kind", "mode", "window_s"];
    const REQUIRED: &'static [&'static str] = &["per_minute"];

    fn check(&self, fields: &mut Vec<Field>) {
        if !self.per_minute.is_finite() || !(0.0..=1.0e9).contains(&self.per_minute) {
            fields.push(field("per_minute", "must be a number from 0 to 1000000000"));
        }
        if !BY.contains(&self.by.as_str()) {
            fields.push(field("by", "must be key or route"));
        }
        if let Some(k) = &self.kind {
            if !VIOLATION_KINDS.contains(&k.as_str()) {
                fields.push(field("kind", "must be rate_limit, quota, auth or ip"));
            }
        }
        if !MODES.contains(&self.mode.as_str()) {
            fields.push(field("mode", "must be enforce or shadow"));
        }
        check_window(self.window_s, fields);
    }
}

pub(super) async fn evaluate(
    c: &impl GenericClient,
    rule: &Rule,
    p: &ViolationsParams,
) -> Result<Vec<Breach>, EvalError> {
    let by_route = p.by == "route";
    let rows = c
        .query(
            "WITH v AS (
                SELECT CASE WHEN $5 THEN route_id ELSE subject END AS who,
                       sum(count)::bigint AS n
                  FROM violations
                 WHERE tenant_id = $1
                   AND ts >= date_trunc('minute', now()) - $2::bigint * interval '1 second'
                   AND ts < date_trunc('minute', now())
                   AND mode = $3 AND ($4::text IS NULL OR kind = $4)
                   AND CASE WHEN $5 THEN route_id <> '' ELSE subject LIKE 'key:%' END
                 GROUP BY 1)
             SELECT v.who, v.n,
                    CASE WHEN $5
                         THEN (SELECT r.path_pattern FROM routes r
                                WHERE r.tenant_id = $6 AND r.id::text = v.who)
                         ELSE (SELECT k.name FROM api_keys k
                                WHERE k.tenant_id = $6 AND 'key:' || k.id::text = v.who)
                    END
               FROM v ORDER BY v.who",
            &[
                &rule.tenant.to_string(),
                &p.window_s,
                &p.mode,
                &p.kind,
                &by_route,
                &rule.tenant,
            ],
        )
        .await?;
    let minutes = (p.window_s / 60).max(1);
    let mut out = Vec::new();
    for r in &rows {
        let who: String = r.get(0);
        let n: i64 = r.get(1);
        let name: Option<String> = r.get(2);
        let rate = n as f64 / minutes as f64;
        if rate <= p.per_minute {
            continue;
        }
        let (subject, shown) = if by_route {
            (
                format!("route:{who}"),
                format!("route '{}'", name.as_deref().unwrap_or(&who)),
            )
        } else {
            let id = who.trim_start_matches("key:");
            (
                who.clone(),
                format!("API key '{}'", name.as_deref().unwrap_or(id)),
            )
        };
        let what = p.kind.as_deref().unwrap_or("any");
        out.push(Breach {
            dedupe: subject.clone(),
            subject,
            value: rate,
            threshold: p.per_minute,
            message: format!(
                "{shown}: {} violations a minute ({n} in {minutes} min, kind {what}, mode {}; \
                 above {})",
                show(rate),
                p.mode,
                show(p.per_minute)
            ),
            details: json!({
                "by": p.by,
                "name": name,
                "count": n,
                "window_s": p.window_s,
                "kind": p.kind,
                "mode": p.mode,
                "per_minute": rate,
            }),
        });
    }
    Ok(out)
}
