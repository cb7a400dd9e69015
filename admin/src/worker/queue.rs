//! The durable job queue in Postgres (`jobs`): enqueue (once per dedupe key), claim with
//! `FOR UPDATE SKIP LOCKED` under a lease, finish, retry with exponential backoff and full
//! jitter, dead-letter, replay.
//!
//! Execution is at least once: a worker that dies mid-job (SIGKILL, power loss) leaves its
//! job `running` with a lease that runs out, and another worker (or the same one, restarted)
//! claims it again. Every job's effect is therefore idempotent: each handler keys what it
//! writes so that running it twice writes it once.

use serde::Serialize;
use serde_json::Value;
use std::time::Duration;
use tokio_postgres::GenericClient;
use uuid::Uuid;

/// A job to create.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// What runs it (see [`crate::worker::kinds`]). Example: `webhook.deliver`.
    pub kind: &'static str,
    pub payload: Value,
    /// A job with this key is created once, whoever asks how often (`None`: always).
    pub dedupe_key: Option<String>,
    /// The tenant the job works for (`None`: the fleet's own jobs).
    pub tenant_id: Option<Uuid>,
    /// Not before this many seconds from now.
    pub delay: Duration,
    /// Attempts before the job is dead.
    pub max_attempts: i32,
}

impl NewJob {
    pub fn new(kind: &'static str, payload: Value) -> NewJob {
        NewJob {
            kind,
            payload,
            dedupe_key: None,
            tenant_id: None,
            delay: Duration::ZERO,
            max_attempts: 10,
        }
    }

    pub fn dedupe(mut self, key: impl Into<String>) -> NewJob {
        self.dedupe_key = Some(key.into());
        self
    }

    pub fn tenant(mut self, tenant: Uuid) -> NewJob {
        self.tenant_id = Some(tenant);
        self
    }

    pub fn attempts(mut self, max: i32) -> NewJob {
        self.max_attempts = max.max(1);
        self
    }
}

/// Longest delay the queue takes (a longer one is cut to it).
pub const MAX_DELAY: Duration = Duration::from_secs(30 * 86_400);

/// `d` in milliseconds, at most [`MAX_DELAY`] (Postgres interval arithmetic stays in range).
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.min(MAX_DELAY).as_millis()).unwrap_or(0)
}

/// Create `job` (in the caller's transaction when `c` is one). Returns its id, or `None`
/// when a job with its dedupe key exists already.
pub async fn enqueue(
    c: &impl GenericClient,
    job: &NewJob,
) -> Result<Option<i64>, tokio_postgres::Error> {
    let delay_ms = millis(job.delay);
    let row = c
        .query_opt(
            "INSERT INTO jobs (kind, payload, dedupe_key, tenant_id, max_attempts, run_at)
             VALUES ($1, $2, $3, $4, $5, now() + $6::bigint * interval '1 millisecond')
             ON CONFLICT (dedupe_key) DO NOTHING
             RETURNING id",
            &[
                &job.kind,
                &job.payload,
                &job.dedupe_key,
                &job.tenant_id,
                &job.max_attempts,
                &delay_ms,
            ],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// A claimed job.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub payload: Value,
    pub tenant_id: Option<Uuid>,
    /// This attempt's number (1 for the first).
    pub attempt: i32,
    pub max_attempts: i32,
}

impl Job {
    /// This is the last attempt: failing it makes the job dead.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }
}

/// Claim up to `n` ready jobs for `worker` for `lease`: queued ones whose time has come,
/// and running ones whose worker's lease ran out (it died). Each claim counts an attempt. A
/// job whose lease ran out on its last attempt is dead instead (a job that kills or hangs
/// its worker every time must not take it down forever).
pub async fn claim(
    c: &impl GenericClient,
    worker: &str,
    n: i64,
    lease: Duration,
) -> Result<Vec<Job>, tokio_postgres::Error> {
    let lease_ms = millis(lease);
    let died = c
        .query(
            "UPDATE jobs SET state = 'dead', locked_by = NULL, locked_until = NULL,
                    last_error = 'the lease ran out on its last attempt (its worker died or hung)',
                    finished_at = now(), updated_at = now()
              WHERE state = 'running' AND locked_until < now() AND attempts >= max_attempts
             RETURNING kind",
            &[],
        )
        .await?;
    for r in died {
        crate::metrics::METRICS
            .dead_letters
            .with_label_values(&[r.get::<_, &str>(0)])
            .inc();
    }
    let rows = c
        .query(
            "UPDATE jobs SET state = 'running', locked_by = $1,
                    locked_until = now() + $3::bigint * interval '1 millisecond',
                    attempts = attempts + 1, updated_at = now()
              WHERE id IN (
                    SELECT id FROM jobs
                     WHERE (state = 'queued' AND run_at <= now())
                        OR (state = 'running' AND locked_until < now())
                     ORDER BY run_at, id
                     LIMIT $2
                     FOR UPDATE SKIP LOCKED)
             RETURNING id, kind, payload, tenant_id, attempts, max_attempts",
            &[&worker, &n, &lease_ms],
        )
        .await?;
    let mut jobs: Vec<Job> = rows
        .iter()
        .map(|r| Job {
            id: r.get(0),
            kind: r.get(1),
            payload: r.get(2),
            tenant_id: r.get(3),
            attempt: r.get(4),
            max_attempts: r.get(5),
        })
        .collect();
    jobs.sort_by_key(|j| j.id);
    Ok(jobs)
}

/// Extend the lease of a job `worker` holds (long jobs call it). False when the job is no
/// longer this worker's.
pub async fn heartbeat(
    c: &impl GenericClient,
    id: i64,
    worker: &str,
    lease: Duration,
) -> Result<bool, tokio_postgres::Error> {
    let lease_ms = millis(lease);
    let n = c
        .execute(
            "UPDATE jobs SET locked_until = now() + $3::bigint * interval '1 millisecond'
              WHERE id = $1 AND locked_by = $2 AND state = 'running'",
            &[&id, &worker, &lease_ms],
        )
        .await?;
    Ok(n == 1)
}

/// The job succeeded. False when it was no longer this worker's (its lease ran out and
/// another worker claimed it; that one finishes it).
pub async fn complete(
    c: &impl GenericClient,
    id: i64,
    worker: &str,
) -> Result<bool, tokio_postgres::Error> {
    let n = c
        .execute(
            "UPDATE jobs SET state = 'done', locked_by = NULL, locked_until = NULL,
                    last_error = NULL, finished_at = now(), updated_at = now()
              WHERE id = $1 AND locked_by = $2 AND state = 'running'",
            &[&id, &worker],
        )
        .await?;
    Ok(n == 1)
}

/// The attempt failed: queue the job again after `retry_in`, or make it dead when `retry_in`
/// is `None`. Returns the state it is in now (`None` when it was no longer this worker's).
pub async fn fail(
    c: &impl GenericClient,
    id: i64,
    worker: &str,
    error: &str,
    retry_in: Option<Duration>,
) -> Result<Option<&'static str>, tokio_postgres::Error> {
    let error: String = error.chars().take(2000).collect();
    let (state, delay_ms) = match retry_in {
        Some(d) => ("queued", millis(d)),
        None => ("dead", 0),
    };
    let n = c
        .execute(
            "UPDATE jobs SET state = $3, locked_by = NULL, locked_until = NULL, last_error = $4,
                    run_at = now() + $5::bigint * interval '1 millisecond', updated_at = now(),
                    finished_at = CASE WHEN $3 = 'dead' THEN now() END
              WHERE id = $1 AND locked_by = $2 AND state = 'running'",
            &[&id, &worker, &state, &error, &delay_ms],
        )
        .await?;
    Ok((n == 1).then_some(state))
}

/// Exponential backoff with full jitter: a random delay in `[0, min(max, base·2^(attempt-1))]`,
/// at least `base / 2` so that a failing job never spins.
pub fn backoff(attempt: i32, base: Duration, max: Duration) -> Duration {
    let exp = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let ceiling = base.saturating_mul(1u32 << exp).min(max);
    let floor = (base / 2).min(ceiling);
    let span = ceiling.saturating_sub(floor).as_millis() as u64;
    floor
        + Duration::from_millis(if span == 0 {
            0
        } else {
            fastrand::u64(0..=span)
        })
}

/// `delays[attempt-1]` with ±10 % jitter (a fixed schedule such as webhooks'); `None` once
/// the schedule is used up.
pub fn scheduled_delay(delays: &[Duration], attempt: i32) -> Option<Duration> {
    let d = *delays.get(usize::try_from(attempt.max(1) - 1).ok()?)?;
    let tenth = d.as_millis() as u64 / 10;
    let jitter = if tenth == 0 {
        0
    } else {
        fastrand::u64(0..=2 * tenth)
    };
    Some(d.saturating_sub(Duration::from_millis(tenth)) + Duration::from_millis(jitter))
}

/// A job as the admin API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: i64,
    /// Example: `webhook.deliver`.
    pub kind: String,
    pub payload: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dedupe_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// `queued`, `running`, `done` or `dead` (a dead letter: its attempts ran out or it
    /// failed for good; replayable).
    pub state: String,
    pub attempts: i32,
    pub max_attempts: i32,
    #[schema(format = DateTime)]
    pub run_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// The columns of [`JobView`], in its order.
pub const VIEW_COLUMNS: &str = "id, kind, payload, dedupe_key, tenant_id::text, state, attempts, \
    max_attempts, to_char(run_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
    last_error, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
    to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')";

impl JobView {
    pub fn from_row(r: &tokio_postgres::Row) -> JobView {
        JobView {
            id: r.get(0),
            kind: r.get(1),
            payload: r.get(2),
            dedupe_key: r.get(3),
            tenant_id: r.get(4),
            state: r.get(5),
            attempts: r.get(6),
            max_attempts: r.get(7),
            run_at: r.get(8),
            last_error: r.get(9),
            created_at: r.get(10),
            updated_at: r.get(11),
        }
    }
}

/// Queue a dead job again from its first attempt. `tenant`: only a job of that tenant.
/// Returns the job, or `None` when there is no such dead job.
pub async fn replay(
    c: &impl GenericClient,
    id: i64,
    tenant: Option<Uuid>,
) -> Result<Option<JobView>, tokio_postgres::Error> {
    let row = c
        .query_opt(
            &format!(
                "UPDATE jobs SET state = 'queued', attempts = 0, run_at = now(), last_error = NULL,
                        finished_at = NULL, updated_at = now()
                  WHERE id = $1 AND state = 'dead' AND ($2::uuid IS NULL OR tenant_id = $2)
                 RETURNING {VIEW_COLUMNS}"
            ),
            &[&id, &tenant],
        )
        .await?;
    Ok(row.as_ref().map(JobView::from_row))
}

/// Queue depth and health, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueueStats {
    /// Queued jobs whose time has come.
    pub ready: i64,
    /// Queued jobs waiting for a later time (retries, delays).
    pub scheduled: i64,
    pub running: i64,
    pub dead: i64,
    /// Seconds the oldest ready job has waited (0 when none).
    pub oldest_ready_s: f64,
}

pub async fn stats(c: &impl GenericClient) -> Result<QueueStats, tokio_postgres::Error> {
    let r = c
        .query_one(
            "SELECT count(*) FILTER (WHERE state = 'queued' AND run_at <= now()),
                    count(*) FILTER (WHERE state = 'queued' AND run_at > now()),
                    count(*) FILTER (WHERE state = 'running'),
                    count(*) FILTER (WHERE state = 'dead'),
                    COALESCE(EXTRACT(EPOCH FROM now() - min(run_at)
                             FILTER (WHERE state = 'queued' AND run_at <= now()))::float8, 0)
               FROM jobs WHERE state IN ('queued', 'running', 'dead')",
            &[],
        )
        .await?;
    Ok(QueueStats {
        ready: r.get(0),
        scheduled: r.get(1),
        running: r.get(2),
        dead: r.get(3),
        oldest_ready_s: r.get(4),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        for attempt in 1..40 {
            let d = backoff(attempt, base, max);
            let ceiling = base.saturating_mul(1 << (attempt - 1).min(30)).min(max);
            assert!(
                d >= base / 2 && d <= ceiling.max(base / 2),
                "{attempt}: {d:?}"
            );
        }
        // Jitter: ten draws of attempt 6 (ceiling 32 s) are not all equal.
        let draws: std::collections::HashSet<_> = (0..10).map(|_| backoff(6, base, max)).collect();
        assert!(draws.len() > 1);
    }

    #[test]
    fn a_fixed_schedule_runs_out() {
        let delays = [Duration::from_secs(5), Duration::from_secs(300)];
        let first = scheduled_delay(&delays, 1).unwrap();
        assert!(first >= Duration::from_millis(4500) && first <= Duration::from_millis(5500));
        assert!(scheduled_delay(&delays, 2).unwrap() >= Duration::from_secs(270));
        assert_eq!(scheduled_delay(&delays, 3), None);
    }
}
