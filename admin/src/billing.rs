//! Billing records: at the end of each period of a billed plan (`plans.billing`), one record
//! per subject on the plan — each API key on it, and the tenant itself when it is the
//! tenant's plan — with the plan, the period in the plan's time zone, included, used and
//! overage units, prices and total in integer minor units.
//!
//! Billing a period is idempotent: the figures are computed from the usage rollup
//! (`usage_quarter`, which splits any zone's periods exactly) and written as revision 1
//! once; computing them again writes nothing when they are the same, and a *correction*
//! (the next revision, with the difference in `delta_total`) when late usage changed them.
//! A correction keeps the prices of the original record.

use crate::events;
use crate::metrics::METRICS;
use crate::worker::queue::Job;
use crate::worker::{JobContext, JobError};
use serde_json::json;
use std::collections::BTreeMap;
use tokio_postgres::GenericClient;
use uuid::Uuid;
use vantage_model::{Calendar, PeriodWindow, PlanBilling};

/// A billed plan as the billing job reads it.
#[derive(Debug, Clone)]
pub struct BilledPlan {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub time_zone: String,
    pub billing: PlanBilling,
    /// The tenant is on this plan (the tenant is billed on it for all of its usage).
    pub is_tenant_plan: bool,
}

/// Load plan `id` if it is billed.
pub async fn load_plan(
    c: &impl GenericClient,
    id: Uuid,
) -> Result<Option<BilledPlan>, tokio_postgres::Error> {
    let row = c
        .query_opt(
            "SELECT p.id, p.tenant_id, p.name, p.time_zone, p.billing, t.plan_id = p.id
               FROM plans p JOIN tenants t ON t.id = p.tenant_id
              WHERE p.id = $1 AND p.billing IS NOT NULL",
            &[&id],
        )
        .await?;
    Ok(row.and_then(|r| {
        Some(BilledPlan {
            id: r.get(0),
            tenant_id: r.get(1),
            name: r.get(2),
            time_zone: r.get(3),
            billing: serde_json::from_value(r.get(4)).ok()?,
            is_tenant_plan: r.get::<_, Option<bool>>(5).unwrap_or(false),
        })
    }))
}

/// Usage of one subject in one period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Used {
    units: i64,
    requests: i64,
}

/// The subjects billed on `plan` for `w`, with their usage: the API keys on the plan (those
/// with usage, and active ones that existed during the period), and, when it is the
/// tenant's plan, the tenant (subject `tenant`) with all of its usage — a tenant's plan
/// counts the whole tenant, as its quotas do.
async fn subjects(
    c: &impl GenericClient,
    plan: &BilledPlan,
    w: PeriodWindow,
) -> Result<BTreeMap<String, Used>, tokio_postgres::Error> {
    let start = w.start as f64;
    let end = w.end as f64;
    let tenant = plan.tenant_id.to_string();
    let mut out: BTreeMap<String, Used> = BTreeMap::new();
    let keys = c
        .query(
            "SELECT 'key:' || id::text, status = 'active' AND created_at < to_timestamp($3)
               FROM api_keys WHERE tenant_id = $1 AND plan_id = $2",
            &[&plan.tenant_id, &plan.id, &end],
        )
        .await?;
    let mut on_plan: Vec<String> = Vec::new();
    for r in &keys {
        let subject: String = r.get(0);
        if r.get::<_, bool>(1) {
            out.insert(subject.clone(), Used::default());
        }
        on_plan.push(subject);
    }
    let usage = c
        .query(
            "SELECT subject, sum(units)::bigint, sum(requests)::bigint
               FROM usage_quarter
              WHERE tenant_id = $1 AND ts >= to_timestamp($2) AND ts < to_timestamp($3)
                AND subject = ANY ($4)
              GROUP BY subject",
            &[&tenant, &start, &end, &on_plan],
        )
        .await?;
    for r in usage {
        out.insert(
            r.get(0),
            Used {
                units: r.get(1),
                requests: r.get(2),
            },
        );
    }
    if plan.is_tenant_plan {
        let r = c
            .query_one(
                "SELECT COALESCE(sum(units), 0)::bigint, COALESCE(sum(requests), 0)::bigint
                   FROM usage_quarter
                  WHERE tenant_id = $1 AND ts >= to_timestamp($2) AND ts < to_timestamp($3)",
                &[&tenant, &start, &end],
            )
            .await?;
        out.insert(
            "tenant".to_string(),
            Used {
                units: r.get(0),
                requests: r.get(1),
            },
        );
    }
    Ok(out)
}

/// The latest revision of a subject's record for a period.
struct Latest {
    revision: i32,
    used: Used,
    total: i64,
    billing: PlanBilling,
}

/// What [`bill_period`] wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Billed {
    pub originals: u32,
    pub corrections: u32,
    pub unchanged: u32,
}

/// Compute `plan`'s records for period `w` and write what is new: revision 1 for a subject
/// billed for the first time (kind `original`, or `correction` when `late` — it appeared
/// after the period was billed), the next revision (kind `correction`) for a subject whose
/// figures changed, nothing for one whose figures are the same. One transaction; emits one
/// `billing.record_ready` event when anything was written.
pub async fn bill_period(
    client: &mut tokio_postgres::Client,
    plan: &BilledPlan,
    w: PeriodWindow,
    late: bool,
) -> Result<Billed, tokio_postgres::Error> {
    let cal = Calendar::new(&plan.time_zone)
        .unwrap_or_else(|_| Calendar::new("UTC").expect("UTC is a time zone"));
    let period = plan.billing.period;
    let label = cal.label(period, w.start);
    let tx = client.transaction().await?;
    // One biller per plan and period at a time (two workers, or a close and a reconcile).
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('vantage_billing'), hashtext($1))",
        &[&format!("{}:{}", plan.id, w.start)],
    )
    .await?;
    let subjects = subjects(&tx, plan, w).await?;
    let start = w.start as f64;
    let end = w.end as f64;
    let mut done = Billed::default();
    let mut written = Vec::new();
    for (subject, used) in &subjects {
        let latest = tx
            .query_opt(
                "SELECT revision, used_units, requests, total, currency, base_fee, included_units,
                        unit_price, per_units
                   FROM billing_records
                  WHERE tenant_id = $1 AND subject = $2 AND plan_id = $3
                    AND period_start = to_timestamp($4)
                  ORDER BY revision DESC LIMIT 1",
                &[&plan.tenant_id, subject, &plan.id, &start],
            )
            .await?
            .map(|r| Latest {
                revision: r.get(0),
                used: Used {
                    units: r.get(1),
                    requests: r.get(2),
                },
                total: r.get(3),
                billing: PlanBilling {
                    currency: r.get(4),
                    period,
                    base_fee: r.get(5),
                    included_units: r.get(6),
                    unit_price: r.get(7),
                    per_units: r.get(8),
                },
            });
        let (revision, kind, prices, previous_total) = match &latest {
            None => (
                1,
                if late { "correction" } else { "original" },
                plan.billing.clone(),
                0,
            ),
            Some(l) if l.used == *used => {
                done.unchanged += 1;
                continue;
            }
            Some(l) => (l.revision + 1, "correction", l.billing.clone(), l.total),
        };
        let charge = prices.charge(used.units);
        let id: Option<Uuid> = tx
            .query_opt(
                "INSERT INTO billing_records (tenant_id, subject, plan_id, plan_name, time_zone,
                        period, period_label, period_start, period_end, revision, kind, currency,
                        included_units, used_units, overage_units, unit_price, per_units,
                        base_fee, overage_amount, total, delta_total, requests)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, to_timestamp($8), to_timestamp($9), $10, $11,
                         $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)
                 ON CONFLICT (tenant_id, subject, plan_id, period_start, revision) DO NOTHING
                 RETURNING id",
                &[
                    &plan.tenant_id,
                    subject,
                    &plan.id,
                    &plan.name,
                    &plan.time_zone,
                    &period_name(period),
                    &label,
                    &start,
                    &end,
                    &revision,
                    &kind,
                    &prices.currency,
                    &charge.included_units,
                    &charge.used_units,
                    &charge.overage_units,
                    &prices.unit_price,
                    &prices.per_units,
                    &charge.base_fee,
                    &charge.overage_amount,
                    &charge.total,
                    &(charge.total - previous_total),
                    &used.requests,
                ],
            )
            .await?
            .map(|r| r.get(0));
        if let Some(id) = id {
            if kind == "original" {
                done.originals += 1;
            } else {
                done.corrections += 1;
            }
            written.push(json!({
                "id": id, "subject": subject, "revision": revision, "kind": kind,
                "total": charge.total, "currency": prices.currency,
            }));
        }
    }
    if !written.is_empty() {
        events::emit(
            &tx,
            plan.tenant_id,
            events::BILLING_RECORD_READY,
            json!({
                "plan_id": plan.id, "plan_name": plan.name, "period": label,
                "period_start": rfc3339(w.start), "period_end": rfc3339(w.end),
                "records": written,
            }),
        )
        .await?;
    }
    tx.commit().await?;
    METRICS
        .billing_records
        .with_label_values(&["original"])
        .inc_by(u64::from(done.originals));
    METRICS
        .billing_records
        .with_label_values(&["correction"])
        .inc_by(u64::from(done.corrections));
    Ok(done)
}

/// `hour`, `day` or `month`.
pub fn period_name(p: vantage_model::QuotaPeriod) -> &'static str {
    match p {
        vantage_model::QuotaPeriod::Hour => "hour",
        vantage_model::QuotaPeriod::Day => "day",
        vantage_model::QuotaPeriod::Month => "month",
    }
}

/// RFC 3339 (UTC) of Unix seconds.
pub fn rfc3339(unix: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `billing.close` `{plan_id, period_start}`: bill one ended period of a plan.
pub async fn close_job(ctx: &JobContext, job: &Job) -> Result<(), JobError> {
    let plan_id = job
        .payload
        .get("plan_id")
        .and_then(|v| v.as_str())
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| JobError::permanent("payload needs plan_id"))?;
    let start = job
        .payload
        .get("period_start")
        .and_then(|v| v.as_i64())
        .ok_or_else(|| JobError::permanent("payload needs period_start"))?;
    let mut c = ctx.pool.get().await?;
    let Some(plan) = load_plan(&**c, plan_id).await? else {
        tracing::info!(%plan_id, "billing: the plan is gone or no longer billed");
        return Ok(());
    };
    let cal = Calendar::new(&plan.time_zone).map_err(JobError::permanent)?;
    let w = cal.window(plan.billing.period, start);
    let now = ctx.now();
    if w.end > now {
        return Err(JobError::Retry {
            message: "the period has not ended yet".into(),
            after: Some(std::time::Duration::from_secs((w.end - now) as u64)),
        });
    }
    let done = bill_period(&mut c, &plan, w, false).await?;
    tracing::info!(
        plan = %plan.id, period = %cal.label(plan.billing.period, w.start),
        originals = done.originals, corrections = done.corrections, unchanged = done.unchanged,
        "billed"
    );
    Ok(())
}

/// `billing.reconcile`: periods billed up to `correction_days` ago whose usage may have
/// changed since (a usage batch with rows in the period was applied after, or shortly
/// before, the period's last record) are billed again, which writes corrections where the
/// figures changed.
pub async fn reconcile_job(ctx: &JobContext, _job: &Job) -> Result<(), JobError> {
    let mut c = ctx.pool.get().await?;
    let days = i32::try_from(ctx.settings().correction_days.min(100_000)).unwrap_or(40);
    // The margin covers a batch whose transaction began before the record's and committed
    // after it (its applied_at is its transaction's start).
    let rows = c
        .query(
            "SELECT b.plan_id, EXTRACT(EPOCH FROM b.period_start)::bigint
               FROM billing_records b
              WHERE b.period_end > now() - $1::int * interval '1 day'
              GROUP BY b.plan_id, b.period_start, b.period_end
             HAVING EXISTS (SELECT 1 FROM usage_batches u
                             WHERE u.applied_at > max(b.created_at) - interval '10 minutes'
                               AND u.first_ts < b.period_end AND u.last_ts >= b.period_start)",
            &[&days],
        )
        .await?;
    for r in rows {
        let plan_id: Uuid = r.get(0);
        let start: i64 = r.get(1);
        let Some(plan) = load_plan(&**c, plan_id).await? else {
            continue;
        };
        let Ok(cal) = Calendar::new(&plan.time_zone) else {
            continue;
        };
        let w = cal.window(plan.billing.period, start);
        let done = bill_period(&mut c, &plan, w, true).await?;
        if done.corrections > 0 {
            tracing::info!(
                plan = %plan.id, period = %cal.label(plan.billing.period, w.start),
                corrections = done.corrections, "late usage: billing corrected"
            );
        }
    }
    Ok(())
}
