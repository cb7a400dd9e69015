//! Webhook deliveries: the `webhook.deliver` job sends one event to one endpoint, signed
//! by the Standard Webhooks conventions ([`sign`]), to a destination the SSRF rules admit
//! ([`ssrf`]), and keeps the delivery log.
//!
//! One job per delivery (`{delivery_id}`), created with the event ([`crate::events`]).
//! Each run is one attempt:
//!
//! 1. the delivery is loaded; a delivery that is no longer `pending` (delivered, or a dead
//!    letter) is left alone — a job that runs again after a crash sends nothing twice;
//! 2. the attempt is counted and logged *before* anything is sent (as "no outcome"), so an
//!    attempt cut short by a crash still shows in the log;
//! 3. the URL is checked and its host resolved; every address must pass the rules, and the
//!    request connects only to those addresses (pinned: no second lookup);
//! 4. the request goes out with `webhook-id` (the event's id: the same on every attempt and
//!    replay, for the receiver to de-duplicate), `webhook-timestamp` (this attempt) and
//!    `webhook-signature`; redirects are not followed, at most [`MAX_RESPONSE_BYTES`] of the
//!    answer are read, and the whole exchange has `worker.webhook_timeout_ms`;
//! 5. the outcome is logged: 2xx delivers; anything else is retried after the next delay of
//!    `worker.webhook_retry_delays_s`, and once they are used up the delivery is `failed` (a
//!    dead letter, replayable) and the job dead. A destination the rules refuse is a dead
//!    letter at once (retrying cannot help; the operator's allow-list or the endpoint's URL
//!    must change first, then the delivery can be replayed). Only the latest attempt
//!    records an outcome: a worker that lost its job mid-attempt (lease over) and finishes
//!    after a later attempt began writes nothing.
//!
//! Delivery is at least once: a worker that dies after the receiver answered but before the
//! outcome was written sends the event again, with the same `webhook-id`.

pub mod sign;
pub mod ssrf;

use crate::metrics::METRICS;
use crate::worker::queue::{scheduled_delay, Job};
use crate::worker::{unix_now, JobContext, JobError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The `user-agent` of every delivery.
pub const USER_AGENT: &str = concat!("VantageEdge-Webhooks/", env!("CARGO_PKG_VERSION"));

/// Most bytes of a receiver's answer that are read (the start of it is kept in the log).
pub const MAX_RESPONSE_BYTES: usize = 4096;

/// The longest retry delay: a schedule's longer delays are cut to it (30 days), which keeps
/// `now() + delay` far from overflowing.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(30 * 24 * 3600);

/// Most characters of a receiver's answer kept in `last_error`.
const SNIPPET_CHARS: usize = 200;

/// The body formats of an endpoint.
pub const FORMATS: [&str; 2] = ["standard", "slack"];

/// What the attempt log says of an attempt that has not (yet) recorded its outcome: the
/// worker stopped while it was under way.
pub const NO_OUTCOME: &str = "no outcome recorded: the worker stopped during this attempt";

/// `last_error` of a delivery's dead job once a replay of the delivery took its place (the
/// job is then `done`: no longer a dead letter).
pub const SUPERSEDED: &str = "superseded by a replay of its delivery";

/// What a replay of a delivery's job (`POST /jobs/{id}/replay`) finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobReplay {
    /// Go ahead: the delivery is `pending` again (it was a `failed` dead letter), or it is
    /// `delivered` (the job will find nothing to send) or gone (nor anything at all).
    Ready,
    /// Another job of the delivery is queued or running (`id`): replaying this one would
    /// attempt the delivery twice at once.
    Busy(i64),
}

/// Prepare the replay of dead job `job` of `delivery`, in the caller's transaction: a
/// `failed` delivery is `pending` again, so that the replayed job — its attempts starting
/// over, hence the retry schedule too — sends it, with the same `webhook-id`. This is what
/// `POST /webhook-deliveries/{id}/replay` does with a new job. The delivery row is locked
/// first, as that replay does (same lock order: delivery, then jobs).
pub async fn prepare_job_replay(
    c: &impl tokio_postgres::GenericClient,
    delivery: Uuid,
    job: i64,
) -> Result<JobReplay, tokio_postgres::Error> {
    let Some(row) = c
        .query_opt(
            "SELECT state FROM webhook_deliveries WHERE id = $1 FOR UPDATE",
            &[&delivery],
        )
        .await?
    else {
        return Ok(JobReplay::Ready);
    };
    let state: String = row.get(0);
    let busy = c
        .query_opt(
            "SELECT id FROM jobs
              WHERE kind = $1 AND state IN ('queued', 'running') AND id <> $3
                AND payload->>'delivery_id' = $2::uuid::text
              ORDER BY id LIMIT 1",
            &[&crate::worker::kinds::WEBHOOK_DELIVER, &delivery, &job],
        )
        .await?;
    if let Some(r) = busy {
        return Ok(JobReplay::Busy(r.get(0)));
    }
    if state == "failed" {
        c.execute(
            "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = now(),
                    updated_at = now()
              WHERE id = $1",
            &[&delivery],
        )
        .await?;
    }
    Ok(JobReplay::Ready)
}

/// RFC 3339 (UTC, milliseconds) of a `timestamptz` column, in SQL.
pub(crate) fn sql_ts(col: &str) -> String {
    format!("to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
}

#[derive(Debug, Deserialize)]
struct Payload {
    delivery_id: Uuid,
}

/// A delivery with its endpoint and event, as one attempt needs them.
struct Loaded {
    state: String,
    url: String,
    format: String,
    secret: String,
    enabled: bool,
    event_id: Uuid,
    event_type: String,
    event_data: Value,
    event_at: String,
}

/// The body of the standard format.
#[derive(Serialize)]
struct StandardBody<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    timestamp: &'a str,
    data: &'a Value,
}

/// The body sent to an endpoint of `format` for an event.
pub fn body(format: &str, kind: &str, timestamp: &str, data: &Value) -> Vec<u8> {
    let v = if format == "slack" {
        json!({ "text": slack_line(kind, data) })
    } else {
        serde_json::to_value(StandardBody {
            kind,
            timestamp,
            data,
        })
        .unwrap_or(Value::Null)
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

/// One human line about an event, for chat channels: its `message` when it has one, else
/// its simple fields.
pub fn slack_line(kind: &str, data: &Value) -> String {
    let summary = match data.get("message").and_then(Value::as_str) {
        Some(m) => m.to_string(),
        None => {
            let parts: Vec<String> = data
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| match v {
                            Value::String(s) => Some(format!("{k}={s}")),
                            Value::Number(n) => Some(format!("{k}={n}")),
                            Value::Bool(b) => Some(format!("{k}={b}")),
                            _ => None,
                        })
                        .take(8)
                        .collect()
                })
                .unwrap_or_default();
            if parts.is_empty() {
                "(no details)".to_string()
            } else {
                parts.join(", ")
            }
        }
    };
    let line = format!("VantageEdge {kind}: {summary}");
    let line: String = line
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.chars().count() > 1000 {
        let mut cut: String = line.chars().take(999).collect();
        cut.push('…');
        cut
    } else {
        line
    }
}

/// How one attempt ended.
enum Outcome {
    /// 2xx.
    Delivered { status: u16 },
    /// A non-2xx answer, or no answer (connection, timeout, DNS): try again.
    Failed { status: Option<u16>, error: String },
    /// The destination is not allowed (or the endpoint cannot be signed for): no retry.
    Refused { error: String },
}

/// The `webhook.deliver` job: one attempt of delivery `{delivery_id}`.
pub async fn deliver_job(ctx: &JobContext, job: &Job) -> Result<(), JobError> {
    let Payload { delivery_id } = serde_json::from_value(job.payload.clone())
        .map_err(|e| JobError::permanent(format!("bad payload: {e}")))?;
    let c = ctx.pool.get().await?;
    let row = c
        .query_opt(
            &format!(
                "SELECT d.state, e.url, e.format, e.secret, e.enabled, ev.id, ev.type, ev.data, {}
                   FROM webhook_deliveries d
                   JOIN webhook_endpoints e ON e.id = d.endpoint_id
                   JOIN events ev ON ev.id = d.event_id
                  WHERE d.id = $1",
                sql_ts("ev.created_at")
            ),
            &[&delivery_id],
        )
        .await?;
    let Some(r) = row else {
        // The endpoint (and its deliveries) was deleted since.
        tracing::info!(%delivery_id, "webhook delivery is gone; nothing to send");
        return Ok(());
    };
    let d = Loaded {
        state: r.get(0),
        url: r.get(1),
        format: r.get(2),
        secret: r.get(3),
        enabled: r.get(4),
        event_id: r.get(5),
        event_type: r.get(6),
        event_data: r.get(7),
        event_at: r.get(8),
    };
    if d.state != "pending" {
        // Delivered already (this job runs again after a crash), or a dead letter.
        tracing::info!(%delivery_id, state = %d.state, "webhook delivery is not pending; nothing to send");
        return Ok(());
    }
    if !d.enabled {
        c.execute(
            "UPDATE webhook_deliveries SET state = 'failed', next_attempt_at = NULL,
                    last_error = 'the endpoint is disabled', updated_at = now()
              WHERE id = $1 AND state = 'pending'",
            &[&delivery_id],
        )
        .await?;
        return Err(JobError::permanent("the endpoint is disabled"));
    }

    // Count and log the attempt before anything is sent.
    let begun = c
        .query_opt(
            "WITH d AS (
                UPDATE webhook_deliveries SET attempts = attempts + 1, updated_at = now()
                 WHERE id = $1 AND state = 'pending'
                RETURNING attempts)
             INSERT INTO webhook_attempts (delivery_id, attempt, status, latency_ms, error)
             SELECT $1, attempts, NULL, 0, $2 FROM d
             RETURNING attempt",
            &[&delivery_id, &NO_OUTCOME],
        )
        .await?;
    let Some(n) = begun.map(|r| r.get::<_, i32>(0)) else {
        return Ok(());
    };
    drop(c);

    let started = Instant::now();
    let outcome = attempt(ctx, &d).await;
    let latency = started.elapsed();
    let latency_ms = i32::try_from(latency.as_millis()).unwrap_or(i32::MAX);

    let retry_in = match &outcome {
        Outcome::Failed { .. } => {
            scheduled_delay(&ctx.settings().webhook_retry_delays(), job.attempt)
                .map(|d| d.min(MAX_RETRY_DELAY))
        }
        _ => None,
    };
    let (status, error, state, result) = match &outcome {
        Outcome::Delivered { status } => (Some(*status), None, "delivered", "delivered"),
        Outcome::Failed { status, error } => match retry_in {
            Some(_) => (*status, Some(error.clone()), "pending", "failed"),
            None => (*status, Some(error.clone()), "failed", "dead"),
        },
        Outcome::Refused { error } => (None, Some(error.clone()), "failed", "refused"),
    };
    let status_i = status.map(i32::from);
    // At most MAX_RETRY_DELAY (30 days): far from overflowing an interval.
    let retry_ms = retry_in.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let mut c = ctx.pool.get().await?;
    let tx = c.transaction().await?;
    // Only the latest attempt may record the delivery's outcome. This worker may have lost
    // its job while the request was under way (paused past its lease: heartbeats late), and
    // another worker claimed the job again and began attempt n+1 — it may have delivered
    // already, or be delivering now. Were this stale worker to write its outcome over that,
    // a delivered delivery could turn `pending` again (or `failed`) with no job left to run
    // it: stuck for ever. So the outcome is written only while the delivery is still
    // `pending` at the attempt this worker began (`attempts = n`); once a later attempt has
    // begun (its counter moved on) or the delivery was settled, this write changes nothing,
    // and the job's own outcome (complete/fail, which check the lease holder) is not ours
    // to record either. The guarded UPDATE is atomic (Postgres re-checks its WHERE against
    // a concurrent writer's committed row) and holds the delivery's row lock until commit,
    // so no attempt can begin in between. The attempt's own log row is written only along
    // with the delivery, so the two never disagree: a superseded attempt keeps saying it
    // recorded no outcome.
    let recorded = tx
        .execute(
            "UPDATE webhook_deliveries SET state = $2, last_status = $3, last_error = $4,
                    last_latency_ms = $5, updated_at = now(),
                    next_attempt_at = now() + $6::bigint * interval '1 millisecond',
                    delivered_at = CASE WHEN $2 = 'delivered' THEN now() ELSE delivered_at END
              WHERE id = $1 AND state = 'pending' AND attempts = $7",
            &[
                &delivery_id,
                &state,
                &status_i,
                &error,
                &latency_ms,
                &retry_ms,
                &n,
            ],
        )
        .await?;
    if recorded == 1 {
        tx.execute(
            "UPDATE webhook_attempts SET status = $3, latency_ms = $4, error = $5
              WHERE delivery_id = $1 AND attempt = $2",
            &[&delivery_id, &n, &status_i, &latency_ms, &error],
        )
        .await?;
    }
    tx.commit().await?;

    METRICS.webhook_attempts.with_label_values(&[result]).inc();
    METRICS
        .webhook_seconds
        .with_label_values(&[result])
        .observe(latency.as_secs_f64());
    if recorded == 0 {
        // Superseded (see above), or the delivery is gone (its endpoint was deleted).
        // Whoever holds the job now finishes it; should this worker still hold it, there is
        // nothing left for it to do: done.
        tracing::warn!(
            %delivery_id,
            attempt = n,
            result,
            "webhook attempt finished after a later attempt began or the delivery went away; \
             its outcome is not recorded"
        );
        return Ok(());
    }
    match outcome {
        Outcome::Delivered { status } => {
            tracing::info!(%delivery_id, attempt = n, status, "webhook delivered");
            Ok(())
        }
        Outcome::Failed { error, .. } => match retry_in {
            Some(after) => Err(JobError::Retry {
                message: format!("attempt {n}: {error}"),
                after: Some(after),
            }),
            None => Err(JobError::permanent(format!(
                "attempt {n}: {error}; the retries are used up (a dead letter)"
            ))),
        },
        Outcome::Refused { error } => Err(JobError::permanent(format!("attempt {n}: {error}"))),
    }
}

/// Check the destination, sign and send; what happened.
async fn attempt(ctx: &JobContext, d: &Loaded) -> Outcome {
    let s = ctx.settings();
    let timeout = s.webhook_timeout();
    let allowed = match s.allowed_networks() {
        Ok(a) => a,
        Err(e) => {
            return Outcome::Refused {
                error: e.to_string(),
            }
        }
    };
    let target = match ssrf::parse(&d.url) {
        Ok(t) => t,
        Err(e) => {
            return Outcome::Refused {
                error: format!("refused: the URL {e}"),
            }
        }
    };
    let addrs = match ssrf::resolve(&target, &allowed, timeout).await {
        Ok(a) => a,
        Err(ssrf::Refusal::Unresolved(m)) => {
            return Outcome::Failed {
                status: None,
                error: m,
            }
        }
        Err(e) => {
            return Outcome::Refused {
                error: format!("refused: {e}"),
            }
        }
    };
    let Some(key) = sign::key_of(&d.secret) else {
        return Outcome::Refused {
            error: "the endpoint's secret is not whsec_<base64>; rotate it".into(),
        };
    };
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_max_idle_per_host(0)
        .user_agent(USER_AGENT);
    if let Some(domain) = &target.domain {
        // Connect only to the addresses just checked: no second lookup to rebind.
        builder = builder.resolve_to_addrs(domain.trim_end_matches('.'), &addrs);
        if domain.ends_with('.') {
            builder = builder.resolve_to_addrs(domain, &addrs);
        }
    }
    let client = match builder.build() {
        Ok(c) => c,
        Err(e) => {
            return Outcome::Failed {
                status: None,
                error: format!("cannot build the HTTP client: {}", chain(&e.without_url())),
            }
        }
    };
    let id = d.event_id.to_string();
    let timestamp = unix_now();
    let body = body(&d.format, &d.event_type, &d.event_at, &d.event_data);
    let request = client
        .post(target.url.clone())
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            sign::signature(&key, &id, timestamp, &body),
        )
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    let mut resp = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Failed {
                status: None,
                error: describe(e, timeout),
            }
        }
    };
    let status = resp.status();
    // A bounded look at the answer (the rest is never read).
    let mut head = Vec::new();
    while head.len() < MAX_RESPONSE_BYTES {
        match resp.chunk().await {
            Ok(Some(bytes)) => head.extend_from_slice(&bytes),
            _ => break,
        }
    }
    head.truncate(MAX_RESPONSE_BYTES);
    drop(resp);
    if status.is_success() {
        return Outcome::Delivered {
            status: status.as_u16(),
        };
    }
    let mut error = format!("HTTP {}", status.as_u16());
    if status.is_redirection() {
        error.push_str(" (redirects are not followed)");
    }
    let snippet: String = String::from_utf8_lossy(&head)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(SNIPPET_CHARS)
        .collect();
    let snippet = snippet.trim();
    if !snippet.is_empty() {
        error.push_str(": ");
        error.push_str(snippet);
    }
    Outcome::Failed {
        status: Some(status.as_u16()),
        error,
    }
}

/// A request error in words — without the URL: a URL's path or query may be the secret
/// itself (a Slack incoming webhook's is), and these words go to `jobs.last_error`, the
/// delivery log and the logs.
fn describe(e: reqwest::Error, timeout: Duration) -> String {
    let e = e.without_url();
    if e.is_timeout() {
        format!("no answer within {} ms", timeout.as_millis())
    } else if e.is_connect() {
        format!("cannot connect: {}", chain(&e))
    } else {
        chain(&e)
    }
}

/// An error with its causes.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_of_both_formats() {
        let data = json!({"endpoint_id": "e1", "message": "This is a test."});
        let b: Value = serde_json::from_slice(&body(
            "standard",
            "webhook.test",
            "2026-01-02T03:04:05.000Z",
            &data,
        ))
        .unwrap();
        assert_eq!(
            b,
            json!({"type": "webhook.test", "timestamp": "2026-01-02T03:04:05.000Z", "data": data})
        );
        let b: Value = serde_json::from_slice(&body(
            "slack",
            "webhook.test",
            "2026-01-02T03:04:05.000Z",
            &data,
        ))
        .unwrap();
        assert_eq!(
            b,
            json!({"text": "VantageEdge webhook.test: This is a test."})
        );
        assert_eq!(
            slack_line(
                "key.created",
                &json!({"key_id": "k1", "scopes": ["a"], "n": 3})
            ),
            "VantageEdge key.created: key_id=k1, n=3"
        );
        assert_eq!(
            slack_line("x", &json!({"message": "a\nb"})),
            "VantageEdge x: a b"
        );
    }
}
