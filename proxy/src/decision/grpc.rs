//! Envoy's rate-limit service (`envoy.service.ratelimit.v3.RateLimitService/
//! ShouldRateLimit`), so Envoy or Istio can ask VantageEdge.
//!
//! Each descriptor is one question. Its entries name the subject and the scope:
//!
//! | entry key | meaning |
//! | --- | --- |
//! | `api_key` | the API key (as a client sends it): its tenant, its plan, counted per key |
//! | `tenant` | a tenant id (default: the request's `domain`) |
//! | `subject` + `plan` | a subject of the tenant on its plan named `plan` |
//! | `route` | a route id of the tenant: its policies, plans, group and cost |
//! | `group` | without a route: the plans' quotas of this group |
//!
//! Without `api_key` or `subject`, the tenant's own plan is asked. The cost is the
//! descriptor's `hits_addend`, else the request's, else the route's cost (Envoy's 0 means
//! 1). A descriptor that is refused is `OVER_LIMIT` (so is the overall code), and so is one
//! whose API key is unknown, revoked or of another tenant than the domain (the key is the
//! client's); a question that cannot be answered (unknown tenant, route or plan, bad cost,
//! more than 64 descriptors) fails the call with `INVALID_ARGUMENT` (or `UNAUTHENTICATED`
//! for a wrong token), and Envoy's `failure_mode_deny` decides.

use super::{Decider, DecisionServer, Question, Who};
use crate::errors::Reply;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use vantage_model::QuotaPeriod;

/// Most descriptors in one call, and entries in one descriptor.
const MAX_DESCRIPTORS: usize = 64;
const MAX_ENTRIES: usize = 16;

/// The service.
pub struct Grpc {
    decider: Arc<Decider>,
    token: Option<String>,
}

/// The gRPC routes (served over h2c by the decision listener).
pub fn routes(decider: Arc<Decider>, token: Option<String>) -> axum::Router {
    tonic::service::Routes::new(RateLimitServiceServer::new(Grpc { decider, token }))
        .prepare()
        .into_axum_router()
}

fn status(reply: Reply) -> Status {
    match reply.status {
        401 => Status::unauthenticated(reply.message),
        503 => Status::unavailable(reply.message),
        _ => Status::invalid_argument(reply.message),
    }
}

/// The question of one descriptor.
fn question(domain: &str, d: &RateLimitDescriptor, hits: u32) -> Result<Question, Status> {
    let entry = |k: &str| {
        d.entries
            .iter()
            .find(|e| e.key == k)
            .map(|e| e.value.clone())
    };
    if d.entries.len() > MAX_ENTRIES {
        return Err(Status::invalid_argument(format!(
            "a descriptor has at most {MAX_ENTRIES} entries"
        )));
    }
    let tenant = entry("tenant").unwrap_or_else(|| domain.to_string());
    let who = match (entry("api_key"), entry("subject"), entry("plan")) {
        // The domain (or tenant entry) names the tenant: another tenant's key is refused.
        (Some(key), None, None) => Who::ApiKey {
            key,
            tenant: (!tenant.is_empty()).then_some(tenant),
        },
        (None, Some(subject), Some(plan)) => Who::Subject {
            tenant,
            subject,
            plan,
        },
        (None, None, None) => Who::Tenant(tenant),
        _ => {
            return Err(Status::invalid_argument(
                "a descriptor has an api_key, or a subject with a plan, or neither",
            ))
        }
    };
    let hits = d
        .hits_addend
        .as_ref()
        .map_or(hits, |h| h.value.min(u64::from(u32::MAX)) as u32);
    Ok(Question {
        who,
        route: entry("route"),
        group: entry("group"),
        cost: (hits > 0).then_some(i64::from(hits)),
    })
}

fn unit(window_s: u64, period: Option<QuotaPeriod>) -> Unit {
    match period {
        Some(QuotaPeriod::Hour) => Unit::Hour,
        Some(QuotaPeriod::Day) => Unit::Day,
        Some(QuotaPeriod::Month) => Unit::Month,
        None => match window_s {
            0..=1 => Unit::Second,
            60 => Unit::Minute,
            3600 => Unit::Hour,
            86_400 => Unit::Day,
            _ => Unit::Unknown,
        },
    }
}

#[tonic::async_trait]
impl RateLimitService for Grpc {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        if !DecisionServer::authorized(&self.token, presented) {
            return Err(Status::unauthenticated(
                "a valid decision-service token is required",
            ));
        }
        let req = request.into_inner();
        if req.descriptors.is_empty() || req.descriptors.len() > MAX_DESCRIPTORS {
            return Err(Status::invalid_argument(format!(
                "a request has 1 to {MAX_DESCRIPTORS} descriptors"
            )));
        }
        // Every question is read before any is charged.
        let questions = req
            .descriptors
            .iter()
            .map(|d| question(&req.domain, d, req.hits_addend))
            .collect::<Result<Vec<_>, _>>()?;
        let mut statuses = Vec::with_capacity(req.descriptors.len());
        let mut over = false;
        for q in &questions {
            let answer = match self.decider.decide(q).await {
                Ok(a) => a,
                // The key comes from the client's request: an unknown, revoked or foreign
                // key is over the limit (Envoy lets failed calls through by default).
                Err(reply) if reply.status == 401 && matches!(q.who, Who::ApiKey { .. }) => {
                    super::Answer {
                        allowed: false,
                        code: Some("unauthorized"),
                        verdict: None,
                    }
                }
                Err(reply) => return Err(status(reply)),
            };
            over |= !answer.allowed;
            let code = if answer.allowed {
                Code::Ok
            } else {
                Code::OverLimit
            };
            statuses.push(match answer.verdict {
                Some(v) => DescriptorStatus {
                    code: code.into(),
                    current_limit: Some(RateLimit {
                        name: v.policy.clone(),
                        requests_per_unit: v.limit.min(u64::from(u32::MAX)) as u32,
                        unit: unit(v.window_s, v.period).into(),
                    }),
                    limit_remaining: v.remaining.min(u64::from(u32::MAX)) as u32,
                    duration_until_reset: Some(Duration {
                        seconds: v.reset_s as i64,
                        nanos: 0,
                    }),
                    ..Default::default()
                },
                None => DescriptorStatus {
                    code: code.into(),
                    ..Default::default()
                },
            });
        }
        let overall = if over { Code::OverLimit } else { Code::Ok };
        Ok(Response::new(RateLimitResponse {
            overall_code: overall.into(),
            statuses,
            ..Default::default()
        }))
    }
}
