//! The workers' job queue: list jobs (dead letters above all) and replay dead ones.

use crate::auth::Principal;
use crate::error::{path_id_i64, ApiError, ApiQuery, ErrorBody};
use crate::webhooks::{prepare_job_replay, JobReplay};
use crate::worker::kinds;
use crate::worker::queue::{replay as replay_job, JobView, VIEW_COLUMNS};
use crate::write::UnitOfWork;
use crate::AppState;
use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// `?state=&kind=&limit=` of `GET /jobs`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobQuery {
    /// Only jobs in this state: `queued`, `running`, `done` or `dead`.
    state: Option<String>,
    /// Only jobs of this kind. Example: `webhook.deliver`.
    kind: Option<String>,
    /// Most jobs (1-1000, default 100), newest first.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// The answer of `GET /jobs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    /// Newest first.
    pub jobs: Vec<JobView>,
    /// More matched than `limit`.
    pub truncated: bool,
}

/// `GET /jobs`: a tenant_admin sees its tenant's jobs; a superadmin every job.
#[utoipa::path(
    get,
    path = "/api/v1/jobs",
    tag = "jobs",
    operation_id = "list_jobs",
    summary = "Jobs of the workers",
    description = "The durable job queue: billing closes, alert evaluations, webhook \
        deliveries, maintenance. `state=dead` lists the dead letters (jobs whose attempts ran \
        out or that failed for good), which `POST /jobs/{id}/replay` queues again. A \
        tenant_admin sees only its tenant's jobs.",
    params(JobQuery),
    responses(
        (status = 200, description = "The jobs", body = JobList),
        (status = 400, description = "A bad parameter", body = ErrorBody),
    )
)]
pub async fn list(
    State(st): State<Arc<AppState>>,
    p: Principal,
    ApiQuery(q): ApiQuery<JobQuery>,
) -> Result<Json<JobList>, ApiError> {
    if let Some(s) = &q.state {
        if !["queued", "running", "done", "dead"].contains(&s.as_str()) {
            return Err(ApiError::bad_parameter(
                "state",
                "must be queued, running, done or dead",
            ));
        }
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_parameter("limit", "must be 1-1000"));
    }
    let c = st.pool.get().await?;
    let rows = c
        .query(
            &format!(
                "SELECT {VIEW_COLUMNS} FROM jobs
                  WHERE ($1::uuid IS NULL OR tenant_id = $1)
                    AND ($2::text IS NULL OR state = $2) AND ($3::text IS NULL OR kind = $3)
                  ORDER BY id DESC LIMIT $4"
            ),
            &[&p.tenant, &q.state, &q.kind, &(limit + 1)],
        )
        .await?;
    let truncated = rows.len() as i64 > limit;
    Ok(Json(JobList {
        jobs: rows
            .iter()
            .take(limit as usize)
            .map(JobView::from_row)
            .collect(),
        truncated,
    }))
}

/// `GET /jobs/{id}`.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}",
    tag = "jobs",
    operation_id = "get_job",
    summary = "One job",
    params(("id" = i64, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 404, description = "No such job, or another tenant's", body = ErrorBody),
    )
)]
pub async fn get(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Path(raw): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let id = path_id_i64(&raw, "job")?;
    let c = st.pool.get().await?;
    let row = c
        .query_opt(
            &format!(
                "SELECT {VIEW_COLUMNS} FROM jobs
                  WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)"
            ),
            &[&id, &p.tenant],
        )
        .await?
        .ok_or_else(|| ApiError::not_found("job"))?;
    Ok(Json(JobView::from_row(&row)))
}

/// `POST /jobs/{id}/replay`: queue a dead job again.
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{id}/replay",
    tag = "jobs",
    operation_id = "replay_job",
    summary = "Replay a dead letter",
    description = "Queues a dead job again from its first attempt. Its effect stays \
        idempotent: a job that did its work before it died does not do it twice. Replaying \
        a `webhook.deliver` job replays its delivery, as `POST /webhook-deliveries/{id}/replay` \
        does: a failed delivery is pending again and is sent from a fresh retry schedule, with \
        the same `webhook-id`.",
    params(("id" = i64, Path, description = "The job's id")),
    responses(
        (status = 200, description = "Queued again", body = JobView),
        (status = 404, description = "No such job, or another tenant's", body = ErrorBody),
        (status = 409, description = "The job is not dead, or (a webhook delivery) another \
            job is attempting its delivery", body = ErrorBody),
    )
)]
pub async fn replay(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Path(raw): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let id = path_id_i64(&raw, "job")?;
    let mut client = st.pool.get().await?;
    // One transaction: the job and (for a webhook delivery) its delivery change together.
    let w = UnitOfWork::admin(&mut client).await?;
    let row = w
        .tx()
        .query_opt(
            "SELECT state, kind, payload FROM jobs
              WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)",
            &[&id, &p.tenant],
        )
        .await?
        .ok_or_else(|| ApiError::not_found("job"))?;
    let (state, kind, payload): (String, String, Value) = (row.get(0), row.get(1), row.get(2));
    let not_dead = |state: &str| {
        ApiError::Conflict(
            format!("only a dead job can be replayed; this one is {state}"),
            Vec::new(),
        )
    };
    if state != "dead" {
        return Err(not_dead(&state));
    }
    let delivery = payload
        .get("delivery_id")
        .and_then(Value::as_str)
        .and_then(|d| Uuid::parse_str(d).ok());
    if let (kinds::WEBHOOK_DELIVER, Some(delivery)) = (kind.as_str(), delivery) {
        if let JobReplay::Busy(other) = prepare_job_replay(w.tx(), delivery, id).await? {
            return Err(ApiError::Conflict(
                format!("job {other} is attempting this job's webhook delivery already"),
                Vec::new(),
            ));
        }
    }
    // `None`: it stopped being dead since it was read (another replay won).
    let job = replay_job(w.tx(), id, p.tenant)
        .await?
        .ok_or_else(|| not_dead("no longer dead"))?;
    w.commit().await?;
    Ok(Json(job))
}
