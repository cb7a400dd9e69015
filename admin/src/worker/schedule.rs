//! Periodic jobs, created once per fleet: every worker looks for due slots each
//! `schedule_interval_s` and enqueues each slot's job under a dedupe key naming the slot
//! (`alerts.evaluate@<slot>`), so however many workers look, one job exists per slot.

use super::queue::{enqueue, NewJob};
use super::{kinds, JobContext};
use serde_json::json;
use vantage_model::{Calendar, PlanBilling};

/// Slot number of a fixed interval: `now / every`.
fn slot(now: i64, every_s: u64) -> i64 {
    now.div_euclid(every_s.max(1) as i64)
}

/// Enqueue whatever is due now.
pub async fn tick(ctx: &JobContext) -> Result<(), tokio_postgres::Error> {
    let Ok(c) = ctx.pool.get().await else {
        return Ok(());
    };
    let now = ctx.now();
    let s = ctx.settings();
    let fixed = [
        (kinds::ALERTS_EVALUATE, s.alert_interval_s),
        (kinds::BILLING_RECONCILE, s.reconcile_interval_s),
        (kinds::MAINTENANCE, ctx.cfg.partition_interval_s),
    ];
    for (kind, every) in fixed {
        let n = slot(now, every);
        let job = NewJob::new(kind, json!({ "slot": n }))
            .dedupe(format!("{kind}@{every}:{n}"))
            .attempts(3);
        enqueue(&**c, &job).await?;
    }
    // Each billed plan's last ended period.
    let rows = c
        .query(
            "SELECT id, tenant_id, time_zone, billing FROM plans WHERE billing IS NOT NULL",
            &[],
        )
        .await?;
    for r in rows {
        let plan: uuid::Uuid = r.get(0);
        let tenant: uuid::Uuid = r.get(1);
        let zone: String = r.get(2);
        let Ok(billing) = serde_json::from_value::<PlanBilling>(r.get(3)) else {
            continue;
        };
        let Ok(cal) = Calendar::new(&zone) else {
            continue;
        };
        let grace = i64::try_from(s.billing_grace_s).unwrap_or(0);
        let ended = cal.previous_window(billing.period, now - grace);
        enqueue(&**c, &close_job(plan, tenant, ended.start)).await?;
    }
    Ok(())
}

/// The job that bills `plan`'s period starting at `period_start` (one per plan and period,
/// whoever asks: the scheduler at the period's end, or an operator on demand).
pub fn close_job(plan: uuid::Uuid, tenant: uuid::Uuid, period_start: i64) -> NewJob {
    NewJob::new(
        kinds::BILLING_CLOSE,
        json!({ "plan_id": plan, "period_start": period_start }),
    )
    .dedupe(format!("{}:{plan}:{period_start}", kinds::BILLING_CLOSE))
    .tenant(tenant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_the_same_for_every_worker_within_an_interval() {
        assert_eq!(slot(119, 60), 1);
        assert_eq!(slot(120, 60), 2);
        assert_eq!(slot(5, 0), 5);
    }
}
