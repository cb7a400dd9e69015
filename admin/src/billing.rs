//! Billing records: at the end of each period of a billed plan (`plans.billing`), one record
//! per subject on the plan — each API key on it, and the tenant itself when it is the
//! tenant's plan — with the plan, the period in the plan's time zone, included, used and
//! overage units, prices and total in integer minor units.
//!
//! Billing a period is idempotent: the figures are computed from the usage rollup
//! (`usage_quarter`, which splits any zone's periods exactly) and written as revision 1
//! once; computing them again writes nothing when they are the same, and a *correction*
//! (the next revision, with the difference in `delta_total`) when late usage changed them.
//! A correction keeps the prices of the original record. A period's subjects are fixed when
//! it is first billed (`billing_periods`): a key moved to another plan afterwards is not
//! billed for that period twice. Only periods that begin after the plan became billed
//! (`plans.billing_since`) are billed.

use crate::events;
use crate::metrics::METRICS;
use crate::worker::queue::Job;
use crate::worker::{JobContext, JobError};
use serde_json::json;
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
    /// Unix seconds since when the plan is billed: periods that begin earlier are not.
    pub billing_since: i64,
}

/// Load plan `id` if it is billed.
pub async fn load_plan(
    c: &impl GenericClient,
    id: Uuid,
) -> Result<Option<BilledPlan>, tokio_postgres::Error> {
    let row = c
        .query_opt(
            "SELECT p.id, p.tenant_id, p.name, p.time_zone, p.billing, t.plan_id = p.id,
                    EXTRACT(EPOCH FROM p.billing_since)::bigint
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
            billing_since: r.get::<_, Option<i64>>(6).unwrap_or(0),
        })
    }))
}

/// Usage of one subject in one period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Used {
    units: i64,
    requests: i64,
}

/// The usage of `subject` of `tenant` in `w` (`tenant`: all of the tenant's usage).
async fn usage_of(
    c: &impl GenericClient,
    tenant: Uuid,
    subject: &str,
    w: PeriodWindow,
) -> Result<Used, tokio_postgres::Error> {
    let r = c
        .query_one(
            "SELECT COALESCE(sum(units), 0)::bigint, COALESCE(sum(requests), 0)::bigint
               FROM usage_quarter
              WHERE tenant_id = $1 AND ts >= to_timestamp($2) AND ts < to_timestamp($3)
                AND ($4 = 'tenant' OR subject = $4)",
            &[
                &tenant.to_string(),
                &(w.start as f64),
                &(w.end as f64),
                &subject,
            ],
        )
        .await?;
    Ok(Used {
        units: r.get(0),
        requests: r.get(1),
    })
}

/// Who is billed on `plan` for `w`. A period billed before keeps the subjects it was billed
/// for. Otherwise: the API keys on the plan now that are active (and were created before
/// the period's end) or have usage in it, and the tenant when it is the tenant's plan (a
/// tenant's plan counts the whole tenant, as its quotas do).
async fn subjects(
    c: &impl GenericClient,
    plan: &BilledPlan,
    w: PeriodWindow,
    billed_before: bool,
) -> Result<Vec<String>, tokio_postgres::Error> {
    if billed_before {
        let rows = c
            .query(
                "SELECT DISTINCT subject FROM billing_records
                  WHERE plan_id = $1 AND period_start = to_timestamp($2)
                    AND period_end = to_timestamp($3)
                  ORDER BY subject",
                &[&plan.id, &(w.start as f64), &(w.end as f64)],
            )
            .await?;
        return Ok(rows.iter().map(|r| r.get(0)).collect());
    }
    let rows = c
        .query(
            "SELECT 'key:' || k.id::text FROM api_keys k
              WHERE k.tenant_id = $1 AND k.plan_id = $2
                AND ((k.status = 'active' AND k.created_at < to_timestamp($4))
                     OR EXISTS (SELECT 1 FROM usage_quarter u
                                 WHERE u.tenant_id = $1::text AND u.subject = 'key:' || k.id::text
                                   AND u.ts >= to_timestamp($3) AND u.ts < to_timestamp($4)))
              ORDER BY 1",
            &[
                &plan.tenant_id,
                &plan.id,
                &(w.start as f64),
                &(w.end as f64),
            ],
        )
        .await?;
    let mut out: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    if plan.is_tenant_plan {
        out.push("tenant".to_string());
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

/// Compute `plan`'s records for period `w` and write what is new: revision 1 (kind
/// `original`) for each subject when the period is billed for the first time, the next
/// revision (kind `correction`) for a subject whose figures changed since, nothing for one
/// whose figures are the same. One transaction; records the period in `billing_periods`
/// (its subjects are fixed from then on) and emits one `billing.record_ready` event when
/// anything was written.
pub async fn bill_period(
    client: &mut tokio_postgres::Client,
    plan: &BilledPlan,
    w: PeriodWindow,
) -> Result<Billed, tokio_postgres::Error> {
    let period = plan.billing.period;
    let tx = client.transaction().await?;
    // One biller per plan and period at a time (two workers, or a close and a reconcile).
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('vantage_billing'), hashtext($1))",
        &[&format!("{}:{}", plan.id, w.start)],
    )
    .await?;
    let start = w.start as f64;
    let end = w.end as f64;
    // A period billed before keeps its name (even if the plan's zone changed since).
    let before: Option<String> = tx
        .query_opt(
            "SELECT period_label FROM billing_periods
              WHERE plan_id = $1 AND period_start = to_timestamp($2)
                AND period_end = to_timestamp($3)",
            &[&plan.id, &start, &end],
        )
        .await?
        .map(|r| r.get(0));
    let billed_before = before.is_some();
    let label = before.unwrap_or_else(|| {
        Calendar::new(&plan.time_zone)
            .map(|cal| cal.label(period, w.start))
            .unwrap_or_else(|_| rfc3339(w.start))
    });
    let subjects = subjects(&tx, plan, w, billed_before).await?;
    let mut done = Billed::default();
    let mut written = Vec::new();
    for subject in &subjects {
        let used = &usage_of(&tx, plan.tenant_id, subject, w).await?;
        let latest = tx
            .query_opt(
                "SELECT revision, used_units, requests, total, currency, base_fee, included_units,
                        unit_price, per_units
                   FROM billing_records
                  WHERE tenant_id = $1 AND subject = $2 AND plan_id = $3
                    AND period_start = to_timestamp($4) AND period_end = to_timestamp($5)
                  ORDER BY revision DESC LIMIT 1",
                &[&plan.tenant_id, subject, &plan.id, &start, &end],
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
            None => (1, "original", plan.billing.clone(), 0),
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
                 ON CONFLICT (tenant_id, subject, plan_id, period_start, period_end, revision)
                 DO NOTHING
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
    tx.execute(
        "INSERT INTO billing_periods (plan_id, period_start, period_end, period_label, tenant_id,
                                      checked_at)
         VALUES ($1, to_timestamp($2), to_timestamp($3), $4, $5, now())
         ON CONFLICT (plan_id, period_start, period_end) DO UPDATE SET checked_at = now()",
        &[&plan.id, &start, &end, &label, &plan.tenant_id],
    )
    .await?;
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
    if w.start < plan.billing_since {
        tracing::info!(%plan_id, "billing: the period began before the plan was billed");
        return Ok(());
    }
    let now = ctx.now();
    if w.end > now {
        return Err(JobError::Retry {
            message: "the period has not ended yet".into(),
            after: Some(std::time::Duration::from_secs((w.end - now) as u64)),
        });
    }
    let done = bill_period(&mut c, &plan, w).await?;
    tracing::info!(
        plan = %plan.id, period = %cal.label(plan.billing.period, w.start),
        originals = done.originals, corrections = done.corrections, unchanged = done.unchanged,
        "billed"
    );
    Ok(())
}

/// `billing.reconcile`: billed periods that ended up to `correction_days` ago whose usage
/// may have changed since they were last read — a usage batch of their tenant with rows in
/// the period was applied after (or shortly before) `checked_at` — are billed again, which
/// writes corrections where the figures changed and moves `checked_at` on.
pub async fn reconcile_job(ctx: &JobContext, _job: &Job) -> Result<(), JobError> {
    let mut c = ctx.pool.get().await?;
    let days = i32::try_from(ctx.settings().correction_days.min(100_000)).unwrap_or(40);
    // The margin covers a batch whose transaction began before the period was read and
    // committed after it (its applied_at is its transaction's start); it makes a period
    // be read once or twice more after its last batch, never forever.
    let rows = c
        .query(
            "SELECT p.plan_id, EXTRACT(EPOCH FROM p.period_start)::bigint,
                    EXTRACT(EPOCH FROM p.period_end)::bigint
               FROM billing_periods p
              WHERE p.period_end > now() - $1::int * interval '1 day'
                AND EXISTS (SELECT 1 FROM usage_batches u
                             WHERE u.applied_at > p.checked_at - interval '2 minutes'
                               AND u.first_ts < p.period_end AND u.last_ts >= p.period_start
                               AND p.tenant_id::text = ANY (u.tenants))",
            &[&days],
        )
        .await?;
    for r in rows {
        let plan_id: Uuid = r.get(0);
        let w = PeriodWindow {
            start: r.get(1),
            end: r.get(2),
        };
        // A plan no longer billed keeps the records it has.
        let Some(plan) = load_plan(&**c, plan_id).await? else {
            continue;
        };
        let done = bill_period(&mut c, &plan, w).await?;
        if done.corrections > 0 {
            tracing::info!(
                plan = %plan.id, period_start = w.start,
                corrections = done.corrections, "late usage: billing corrected"
            );
        }
    }
    Ok(())
}
