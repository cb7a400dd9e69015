//! Periodic jobs, created once per fleet: every worker looks for due slots each
//! `schedule_interval_s` and enqueues each slot's job under a dedupe key naming the slot
//! (`alerts.evaluate@<slot>`), so however many workers look, one job exists per slot.

use super::queue::{enqueue, NewJob};
use super::{kinds, JobContext};
use serde_json::json;
use vantage_model::{Calendar, PlanBilling, QuotaPeriod};

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
        (kinds::MAINTENANCE, ctx.cfg.partition_interval_s.max(60)),
    ];
    for (kind, every) in fixed {
        let n = slot(now, every);
        let job = NewJob::new(kind, json!({ "slot": n }))
            .dedupe(format!("{kind}@{every}:{n}"))
            .attempts(3);
        enqueue(&**c, &job).await?;
    }
    // Each billed plan's ended periods not billed yet: from the one after the last billed
    // (or the first that began after the plan became billed) to the last that ended
    // `billing_grace_s` ago, a bounded number per look (a long outage catches up over a few).
    let rows = c
        .query(
            "SELECT p.id, p.tenant_id, p.time_zone, p.billing,
                    EXTRACT(EPOCH FROM p.billing_since)::bigint,
                    (SELECT EXTRACT(EPOCH FROM max(b.period_end))::bigint
                       FROM billing_periods b WHERE b.plan_id = p.id)
               FROM plans p WHERE p.billing IS NOT NULL AND p.billing_since IS NOT NULL",
            &[],
        )
        .await?;
    let grace = i64::try_from(s.billing_grace_s).unwrap_or(0);
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
        let since: i64 = r.get(4);
        let billed_until: Option<i64> = r.get(5);
        for start in due_periods(&cal, billing.period, since, billed_until, now - grace) {
            enqueue(&**c, &close_job(plan, tenant, start)).await?;
        }
    }
    Ok(())
}

/// Most periods of one plan queued per look.
const CATCH_UP: usize = 24;

/// Starts of the periods to bill: those that begin at or after both `since` (billing
/// began) and `billed_until` (the end of the last billed period, whatever its length or zone
/// then) and ended by `until`; at most [`CATCH_UP`]. A plan whose period or zone changed goes
/// on from the first whole period of the new kind; a plan billed again after a pause from
/// the first period after it.
fn due_periods(
    cal: &Calendar,
    period: QuotaPeriod,
    since: i64,
    billed_until: Option<i64>,
    until: i64,
) -> Vec<i64> {
    let floor = billed_until.map_or(since, |e| e.max(since));
    let first = cal.window(period, floor);
    let mut next = if first.start >= floor {
        first.start
    } else {
        first.end
    };
    let mut out = Vec::new();
    while out.len() < CATCH_UP {
        let w = cal.window(period, next);
        if w.end > until {
            break;
        }
        out.push(w.start);
        next = w.end;
    }
    out
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
    fn periods_are_billed_from_the_first_whole_one_and_caught_up_after_an_outage() {
        let utc = Calendar::new("UTC").unwrap();
        let day = 86_400;
        let since = 10 * day + 3600; // billed since day 10, 01:00
                                     // Day 10 began before: the first billed day is day 11, billed once it ended.
        assert!(due_periods(&utc, QuotaPeriod::Day, since, None, 12 * day - 1).is_empty());
        assert_eq!(
            due_periods(&utc, QuotaPeriod::Day, since, None, 12 * day),
            vec![11 * day]
        );
        // Days 12-14 missed while no worker ran (day 11 billed, up to 12): all, in order.
        assert_eq!(
            due_periods(&utc, QuotaPeriod::Day, since, Some(12 * day), 15 * day + 5),
            vec![12 * day, 13 * day, 14 * day]
        );
        // A long outage catches up a bounded number per look.
        let many = due_periods(&utc, QuotaPeriod::Hour, 0, Some(3600), 1000 * 3600);
        assert_eq!(many.len(), CATCH_UP);
        assert_eq!(many[0], 3600);
        // Billing switched off and on again 40 days later: from the first day after.
        let again = 60 * day + 100;
        assert_eq!(
            due_periods(&utc, QuotaPeriod::Day, again, Some(20 * day), 63 * day),
            vec![61 * day, 62 * day]
        );
        // A monthly plan (billed to 1 Nov 1970) turned daily goes on from 1 Nov, not from
        // the 2nd of the month billed.
        let nov1 = 304 * day;
        assert_eq!(
            due_periods(&utc, QuotaPeriod::Day, 0, Some(nov1), nov1 + 2 * day),
            vec![nov1, nov1 + day]
        );
        // A zone moved west: the period that ends after the billed one's end is skipped
        // rather than billed twice.
        let ny = Calendar::new("America/New_York").unwrap();
        let got = due_periods(&ny, QuotaPeriod::Day, 0, Some(nov1), nov1 + 3 * day);
        assert!(got.iter().all(|s| *s >= nov1), "{got:?}");
        assert_eq!(got.len(), 2, "{got:?}");
        // A plan billed from a period's very start bills that period.
        assert_eq!(
            due_periods(&utc, QuotaPeriod::Day, 10 * day, None, 11 * day),
            vec![10 * day]
        );
    }

    #[test]
    fn slots_are_the_same_for_every_worker_within_an_interval() {
        assert_eq!(slot(119, 60), 1);
        assert_eq!(slot(120, 60), 2);
        assert_eq!(slot(5, 0), 5);
    }
}
