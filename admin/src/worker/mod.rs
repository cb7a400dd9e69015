//! `vantage-admin worker`: runs the jobs of the durable queue ([`queue`]) — billing at each
//! period's end, alert evaluation, webhook deliveries, partition maintenance and retention —
//! and schedules the periodic ones ([`schedule`]) once per fleet however many workers run.
//!
//! Several workers share one queue: each claims ready jobs with `FOR UPDATE SKIP LOCKED`,
//! so no job runs twice at once; a worker killed mid-job loses nothing (its lease runs out
//! and the job runs again); every handler's effect is idempotent. SIGTERM stops claiming,
//! lets the jobs in hand finish (up to the lease) and exits.

pub mod queue;
pub mod schedule;

use crate::config::WorkerSettings;
use crate::metrics::METRICS;
use crate::AdminConfig;
use anyhow::Context;
use queue::Job;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The kinds of job, and what runs each.
pub mod kinds {
    /// Bill one plan's period: `{plan_id, period_start}` (Unix seconds).
    pub const BILLING_CLOSE: &str = "billing.close";
    /// Find closed periods whose usage changed after they were billed; write corrections.
    pub const BILLING_RECONCILE: &str = "billing.reconcile";
    /// Evaluate every enabled alert rule.
    pub const ALERTS_EVALUATE: &str = "alerts.evaluate";
    /// Send one webhook delivery: `{delivery_id}`.
    pub const WEBHOOK_DELIVER: &str = "webhook.deliver";
    /// Partitions ahead, retention of old rows.
    pub const MAINTENANCE: &str = "maintenance";
}

/// Why a job's attempt failed.
#[derive(Debug)]
pub enum JobError {
    /// Try again later: after `after` when given, else after the queue's backoff.
    Retry {
        message: String,
        after: Option<Duration>,
    },
    /// Trying again cannot help: the job is dead at once (a dead letter).
    Permanent(String),
}

impl JobError {
    pub fn retry(message: impl std::fmt::Display) -> JobError {
        JobError::Retry {
            message: message.to_string(),
            after: None,
        }
    }

    pub fn permanent(message: impl std::fmt::Display) -> JobError {
        JobError::Permanent(message.to_string())
    }
}

impl From<tokio_postgres::Error> for JobError {
    fn from(e: tokio_postgres::Error) -> Self {
        JobError::retry(format!("database: {e}"))
    }
}

impl From<deadpool_postgres::PoolError> for JobError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        JobError::retry(format!("database: {e}"))
    }
}

/// What a job's handler has at hand.
pub struct JobContext {
    pub pool: deadpool_postgres::Pool,
    pub cfg: AdminConfig,
    /// Unix seconds now (one clock for a job; see [`JobContext::now`]).
    pub worker_id: String,
}

impl JobContext {
    /// Unix seconds now.
    pub fn now(&self) -> i64 {
        unix_now()
    }

    pub fn settings(&self) -> &WorkerSettings {
        &self.cfg.worker
    }
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Run one job: the handler of its kind.
async fn dispatch(ctx: &JobContext, job: &Job) -> Result<(), JobError> {
    match job.kind.as_str() {
        kinds::BILLING_CLOSE => crate::billing::close_job(ctx, job).await,
        kinds::BILLING_RECONCILE => crate::billing::reconcile_job(ctx, job).await,
        kinds::ALERTS_EVALUATE => crate::alerts::evaluate_job(ctx, job).await,
        kinds::WEBHOOK_DELIVER => crate::webhooks::deliver_job(ctx, job).await,
        kinds::MAINTENANCE => {
            let c = ctx.pool.get().await?;
            crate::db::maintain(&**c, &crate::db::Retention::of(&ctx.cfg)).await?;
            let s = ctx.settings();
            let days = |d: u32| d.min(100_000) as i32;
            if s.job_retention_days > 0 {
                c.execute(
                    "DELETE FROM jobs WHERE state = 'done'
                        AND updated_at < now() - $1::int * interval '1 day'",
                    &[&days(s.job_retention_days)],
                )
                .await?;
            }
            if s.event_retention_days > 0 {
                // Deliveries and their attempts go with their events.
                c.execute(
                    "DELETE FROM events WHERE created_at < now() - $1::int * interval '1 day'",
                    &[&days(s.event_retention_days)],
                )
                .await?;
                c.execute(
                    "DELETE FROM alerts WHERE state = 'resolved'
                        AND resolved_at < now() - $1::int * interval '1 day'",
                    &[&days(s.event_retention_days)],
                )
                .await?;
            }
            Ok(())
        }
        other => Err(JobError::permanent(format!(
            "no handler for job kind '{other}'"
        ))),
    }
}

/// Run the worker until SIGTERM or Ctrl-C.
pub async fn run(cfg: AdminConfig) -> anyhow::Result<()> {
    cfg.check_for_worker()?;
    crate::metrics::init_worker_series();
    let s = cfg.worker.clone();
    let pool = crate::db::pool(&cfg.database_url, s.concurrency + 2)?;
    let worker_id = format!(
        "{}-{}-{}",
        hostname(),
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let metrics = tokio::net::TcpListener::bind(&s.metrics_listen)
        .await
        .with_context(|| format!("cannot listen on {}", s.metrics_listen))?;
    let metrics_addr = metrics.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let pool = pool.clone();
        tokio::spawn(async move {
            let app = axum::Router::new()
                .route(
                    "/metrics",
                    axum::routing::get(move || {
                        let pool = pool.clone();
                        async move { metrics_text(&pool).await }
                    }),
                )
                .route("/healthz", axum::routing::get(|| async { "ok" }));
            if let Err(e) = axum::serve(metrics, app).await {
                tracing::error!("worker metrics listener: {e}");
            }
        });
    }
    let ctx = Arc::new(JobContext {
        pool: pool.clone(),
        cfg: cfg.clone(),
        worker_id: worker_id.clone(),
    });
    println!("vantage-admin worker {worker_id} running (metrics on http://{metrics_addr}/metrics)");
    tracing::info!(%worker_id, %metrics_addr, "worker started");

    // The scheduler: periodic jobs, each slot created once per fleet (dedupe keys).
    {
        let ctx = ctx.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ctx.settings().schedule_interval());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                if let Err(e) = schedule::tick(&ctx).await {
                    tracing::warn!("scheduling: {e}");
                }
            }
        });
    }

    let permits = Arc::new(tokio::sync::Semaphore::new(s.concurrency));
    let mut shutdown = Box::pin(shutdown_signal());
    loop {
        // Wait for a free slot (or the end).
        let free = tokio::select! {
            _ = &mut shutdown => break,
            p = permits.clone().acquire_many_owned(1) => p?,
        };
        drop(free);
        let want = permits.available_permits() as i64;
        let claimed = match pool.get().await {
            Ok(c) => queue::claim(&**c, &worker_id, want, s.lease()).await,
            Err(e) => {
                tracing::warn!("claiming jobs: {e}");
                Ok(Vec::new())
            }
        };
        let jobs = claimed.unwrap_or_else(|e| {
            tracing::warn!("claiming jobs: {e}");
            Vec::new()
        });
        if jobs.is_empty() {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(s.poll()) => {}
            }
            continue;
        }
        for job in jobs {
            let permit = permits.clone().acquire_owned().await?;
            let ctx = ctx.clone();
            tokio::spawn(async move {
                execute(&ctx, job).await;
                drop(permit);
            });
        }
    }
    stop.store(true, Ordering::Relaxed);
    tracing::info!("worker stopping: waiting for the jobs in hand");
    let all = u32::try_from(s.concurrency).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(s.lease(), permits.acquire_many(all)).await;
    tracing::info!("worker stopped");
    Ok(())
}

/// Run one claimed job and record the outcome; the lease is kept alive while it runs.
async fn execute(ctx: &Arc<JobContext>, job: Job) {
    let started = Instant::now();
    let s = ctx.settings();
    let beat = async {
        let mut every = tokio::time::interval(s.lease() / 3);
        every.tick().await;
        loop {
            every.tick().await;
            if let Ok(c) = ctx.pool.get().await {
                let _ = queue::heartbeat(&**c, job.id, &ctx.worker_id, s.lease()).await;
            }
        }
    };
    // The handler runs as a task of its own, so that a panic in it fails the attempt (and
    // is recorded) instead of leaving the job to wait out its lease.
    let run = {
        let ctx = ctx.clone();
        let job = job.clone();
        tokio::spawn(async move { dispatch(&ctx, &job).await })
    };
    let outcome = tokio::select! {
        r = run => r.unwrap_or_else(|e| Err(JobError::retry(format!("the handler failed: {e}")))),
        _ = beat => unreachable!("the heartbeat never ends"),
    };
    let kind = job.kind.as_str();
    METRICS
        .job_seconds
        .with_label_values(&[kind])
        .observe(started.elapsed().as_secs_f64());
    let recorded = match ctx.pool.get().await {
        Ok(c) => match &outcome {
            Ok(()) => queue::complete(&**c, job.id, &ctx.worker_id)
                .await
                .map(|ok| ok.then_some("done")),
            Err(JobError::Retry { message, after }) => {
                let retry_in = if job.is_last_attempt() {
                    None
                } else {
                    Some(after.unwrap_or_else(|| {
                        queue::backoff(job.attempt, s.retry_base(), s.retry_max())
                    }))
                };
                queue::fail(&**c, job.id, &ctx.worker_id, message, retry_in).await
            }
            Err(JobError::Permanent(message)) => {
                queue::fail(&**c, job.id, &ctx.worker_id, message, None).await
            }
        },
        Err(e) => {
            tracing::warn!(job = job.id, "cannot record the outcome of a job: {e}");
            return;
        }
    };
    let state = match recorded {
        Ok(Some(state)) => state,
        Ok(None) => "lost_lease",
        Err(e) => {
            tracing::warn!(job = job.id, "cannot record the outcome of a job: {e}");
            return;
        }
    };
    METRICS
        .jobs
        .with_label_values(&[kind, if outcome.is_ok() { "ok" } else { "failed" }])
        .inc();
    if state == "dead" {
        METRICS.dead_letters.with_label_values(&[kind]).inc();
    }
    match &outcome {
        Ok(()) => tracing::debug!(job = job.id, kind, attempt = job.attempt, "job done"),
        Err(JobError::Retry { message, .. } | JobError::Permanent(message)) => tracing::warn!(
            job = job.id,
            kind,
            attempt = job.attempt,
            state,
            "job failed: {message}"
        ),
    }
}

/// The worker's metrics, with the queue's figures read at scrape.
async fn metrics_text(pool: &deadpool_postgres::Pool) -> impl axum::response::IntoResponse {
    let stats = async {
        let c = pool.get().await.ok()?;
        queue::stats(&**c).await.ok()
    };
    match tokio::time::timeout(Duration::from_secs(2), stats).await {
        Ok(Some(st)) => {
            METRICS.database_up.set(1);
            METRICS
                .queue_jobs
                .with_label_values(&["ready"])
                .set(st.ready);
            METRICS
                .queue_jobs
                .with_label_values(&["scheduled"])
                .set(st.scheduled);
            METRICS
                .queue_jobs
                .with_label_values(&["running"])
                .set(st.running);
            METRICS.queue_jobs.with_label_values(&["dead"]).set(st.dead);
            METRICS.queue_oldest_ready.set(st.oldest_ready_s);
        }
        _ => METRICS.database_up.set(0),
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::metrics::render(),
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            let _ = ctrl_c.await;
            return;
        };
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
