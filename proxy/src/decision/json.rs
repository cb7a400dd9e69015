//! `POST /api/public/v1/rate-limit/validate`: one decision as JSON.
//!
//! ```json
//! {"api_key": "vk_live_...", "route_id": "search", "cost": 5}
//! ```
//! (or `X-API-Key` instead of `api_key`; or `tenant_id`, with `subject` and `plan` to count
//! a subject of the tenant on a named plan; `group` instead of `route_id`) is answered
//! `200` with `{"allowed", "limit", "remaining", "reset", "policy", "retry_after", "code"}`
//! — a refusal too. Bad questions get the gateway's JSON error with their status.

use super::{Decider, DecisionServer, Question, Who};
use crate::errors::{self, Reply};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// The path of the JSON decision.
pub const PATH: &str = "/api/public/v1/rate-limit/validate";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    api_key: Option<String>,
    tenant_id: Option<String>,
    subject: Option<String>,
    plan: Option<String>,
    route_id: Option<String>,
    group: Option<String>,
    cost: Option<i64>,
}

#[derive(Clone)]
struct Ctx {
    decider: Arc<Decider>,
    token: Option<String>,
}

/// The JSON route.
pub fn routes(decider: Arc<Decider>, token: Option<String>) -> Router {
    Router::new()
        .route(PATH, post(validate).fallback(wrong_method))
        .with_state(Ctx { decider, token })
}

fn error(reply: &Reply) -> Response {
    let id = errors::new_request_id();
    let id = id.to_str().unwrap_or("-");
    let body = errors::body(reply.code, &reply.message, id);
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = http::HeaderValue::from_str(id) {
        h.insert("x-request-id", v);
    }
    for (n, v) in &reply.headers {
        h.append(n.clone(), v.clone());
    }
    resp
}

async fn wrong_method() -> Response {
    error(&Reply::new(405, "method_not_allowed", "use POST").with_header("allow", "POST"))
}

/// Any other path of the listener.
pub async fn not_found() -> Response {
    error(&Reply::new(
        404,
        "not_found",
        format!("the decision service answers POST {PATH} and Envoy's RateLimitService"),
    ))
}

fn invalid(message: impl Into<String>) -> Response {
    error(&Reply::new(422, "invalid_request", message.into()))
}

async fn validate(State(ctx): State<Ctx>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if !DecisionServer::authorized(&ctx.token, presented) {
        return error(
            &Reply::new(
                401,
                "unauthorized",
                "a valid decision-service token is required",
            )
            .with_header("www-authenticate", "Bearer realm=\"vantage-decision\""),
        );
    }
    let body: Body = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(&Reply::new(400, "bad_request", format!("body: {e}"))),
    };
    let header_key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let who = match (body.api_key.or(header_key), body.tenant_id) {
        (Some(key), tenant) => {
            if body.subject.is_some() || body.plan.is_some() {
                return invalid("subject: not with an api_key");
            }
            Who::ApiKey { key, tenant }
        }
        (None, Some(tenant)) => match (body.subject, body.plan) {
            (None, None) => Who::Tenant(tenant),
            (Some(subject), Some(plan)) => Who::Subject {
                tenant,
                subject,
                plan,
            },
            _ => return invalid("plan: subject and plan go together"),
        },
        (None, None) => {
            return invalid("api_key: an api_key (or X-API-Key) or a tenant_id is required")
        }
    };
    if body.route_id.is_some() && body.group.is_some() {
        return invalid("group: give a route_id or a group, not both");
    }
    let q = Question {
        who,
        route: body.route_id,
        group: body.group,
        cost: body.cost,
    };
    match ctx.decider.decide(&q).await {
        Ok(a) => {
            let v = a.verdict.as_ref();
            axum::Json(json!({
                "allowed": a.allowed,
                "limit": v.map(|v| v.limit),
                "remaining": v.map(|v| v.remaining),
                "reset": v.map(|v| v.reset_s),
                "policy": v.map(|v| v.policy.as_str()),
                "retry_after": v.and_then(|v| v.retry_after_s),
                "code": a.code,
            }))
            .into_response()
        }
        Err(reply) => error(&reply),
    }
}
