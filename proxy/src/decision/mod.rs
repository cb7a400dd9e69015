//! The rate-limit decision service: services that are not behind the gateway ask it whether
//! a call may go ahead, and the answer comes from the same counters the proxies charge (the
//! process's [`Enforcer`]: its local counters, and Redis for a fleet).
//!
//! It runs in the proxy, which already holds the keys, the plans and the limiter, on a
//! listener of its own (`server.decision.listen`, HTTP/1.1 and h2c) serving:
//!
//! - [`json`]: `POST /api/public/v1/rate-limit/validate`;
//! - [`grpc`]: Envoy's `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`, so
//!   Envoy or Istio can use VantageEdge as their rate-limit service.
//!
//! Both ask [`Decider::decide`]: a subject (an API key, a tenant, or a tenant's subject on a
//! named plan), a route or a quota group, and a cost. A refusal is an answer (`allowed:
//! false`, or `OVER_LIMIT`), never an error; errors are for bad questions. Refusals (and
//! shadow would-be refusals) are recorded as violations like the proxy's own, when the proxy
//! meters usage.

pub mod grpc;
pub mod json;

use crate::auth::{self, Identity};
use crate::errors::Reply;
use crate::limits::enforce::{Enforcer, Scope, Subject};
use crate::limits::plan::{self, Bound, TenantPlans};
use crate::limits::Verdict;
use crate::snapshot::Snapshot;
use crate::telemetry::usage::Meter;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::HeaderMap;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::SystemTime;
use vantage_model::{AuthMode, DecisionSettings, QuotaSubject, RouteAuth};

/// Who a decision counts.
pub enum Who {
    /// An API key (the key itself, as a client would send it); when the caller names the
    /// tenant, a key of another tenant is refused as the proxy refuses it.
    ApiKey { key: String, tenant: Option<String> },
    /// A tenant as a whole (its own plan and tenant-wide policies).
    Tenant(String),
    /// A subject of a tenant on one of its plans (by name), e.g. a JWT `sub` checked by the
    /// caller.
    Subject {
        tenant: String,
        subject: String,
        plan: String,
    },
}

/// One question.
pub struct Question {
    pub who: Who,
    /// A route of the tenant: its policies, plans, group and cost apply.
    pub route: Option<String>,
    /// Without a route: the plans' quotas of this group (and those without one).
    pub group: Option<String>,
    /// Units to charge (default: the route's cost, or 1).
    pub cost: Option<i64>,
}

/// The answer: allowed or not, and the policy closest to refusing.
pub struct Answer {
    pub allowed: bool,
    /// `rate_limited` or `quota_exceeded` when refused.
    pub code: Option<&'static str>,
    pub verdict: Option<Verdict>,
}

/// Largest cost of one question (as `routes[].quota.cost`).
const MAX_COST: i64 = 1_000_000;

/// Answers questions from the current snapshot and the process's counters.
pub struct Decider {
    state: Arc<ArcSwap<Snapshot>>,
    limiter: Arc<Enforcer>,
    /// Where refusals are recorded as violations (with usage metering).
    meter: Option<Meter>,
}

impl Decider {
    pub fn new(
        state: Arc<ArcSwap<Snapshot>>,
        limiter: Arc<Enforcer>,
        meter: Option<Meter>,
    ) -> Decider {
        Decider {
            state,
            limiter,
            meter,
        }
    }

    /// Decide `q`, charging the counters when allowed. `Err` is a bad question (401 for an
    /// unknown key, 404 for an unknown tenant, route or plan, 422 for a bad cost) or a 503
    /// when Redis fails under `deny`.
    pub async fn decide(&self, q: &Question) -> Result<Answer, Reply> {
        let snapshot = self.state.load_full();
        if let Some(cost) = q.cost {
            if !(1..=MAX_COST).contains(&cost) {
                return Err(Reply::new(
                    422,
                    "invalid_request",
                    format!("cost: must be between 1 and {MAX_COST}"),
                ));
            }
        }
        let Resolved {
            tenant,
            identity,
            bound,
            subject: who,
        } = resolve(&snapshot, &q.who)?;
        let no_plans = TenantPlans::default();
        let tenant_rt = snapshot.tenant(&tenant);
        let plans = tenant_rt.map_or(&no_plans, |t| &*t.plans);
        let route = match &q.route {
            Some(id) => match tenant_rt.and_then(|t| t.routes.get(id)) {
                Some(r) => Some(r.clone()),
                _ => {
                    return Err(Reply::new(
                        404,
                        "unknown_route",
                        format!("route: the tenant has no route '{id}'"),
                    ))
                }
            },
            None => None,
        };
        let mut scope = match &route {
            Some(r) => r.scope(),
            None => Scope {
                route_id: "",
                limits: &[],
                plans,
                group: q.group.as_deref(),
                cost: 1,
                exempt: false,
            },
        };
        if let Some(cost) = q.cost {
            scope.cost = cost;
        }
        let headers = HeaderMap::new();
        let subject = Subject {
            client: None,
            identity: identity.as_ref(),
            headers: &headers,
            // Policies by user, key or address count the question's subject.
            named: Some(&who),
        };
        let bound = match bound {
            _ if scope.exempt => Vec::new(),
            Some(b) => b,
            None => plan::bound(scope.plans, identity.as_ref()),
        };
        let mut violations = Vec::new();
        let decided = self
            .limiter
            .enforce_bound(&scope, &bound, &tenant, &subject, &mut violations)
            .await;
        if let Some(meter) = &self.meter {
            let route = route.as_ref().map(|r| r.id.clone());
            let id = crate::errors::new_request_id();
            let sample = id.to_str().unwrap_or("-");
            meter.record_violations(&tenant, &who, route, &violations, sample);
        }
        match decided {
            Ok(admitted) => Ok(Answer {
                allowed: true,
                code: None,
                verdict: admitted.verdict,
            }),
            Err(refusal) if refusal.reply.status == 429 => Ok(Answer {
                allowed: false,
                code: Some(refusal.reply.code),
                verdict: refusal.verdict,
            }),
            Err(refusal) => Err(refusal.reply),
        }
    }
}

/// Whom a question is about.
struct Resolved {
    tenant: Arc<str>,
    /// Who is counted, as violations name it (`key:<id>`, `user:<sub>`, `tenant`).
    subject: String,
    identity: Option<Identity>,
    /// The plans, when the question names them rather than an identity.
    bound: Option<Vec<Bound>>,
}

/// The tenant, identity and (for a tenant or a named plan) the plans a question is about.
fn resolve(snapshot: &Snapshot, who: &Who) -> Result<Resolved, Reply> {
    let unknown_tenant = |t: &str| {
        Reply::new(
            404,
            "unknown_tenant",
            format!("tenant: no tenant has id '{t}'"),
        )
    };
    match who {
        Who::ApiKey { key, tenant } => {
            let tenant: Arc<str> = match tenant {
                Some(t) => t.as_str().into(),
                None => snapshot
                    .key_owner(key.as_bytes())
                    .map_or_else(|| "".into(), |t| t.id.clone()),
            };
            let auth = RouteAuth {
                mode: AuthMode::ApikeyRequired,
                ..RouteAuth::default()
            };
            let k = auth::check_key(
                &auth,
                &tenant,
                Some(key.as_bytes()),
                snapshot
                    .tenant(&tenant)
                    .map_or(&auth::KeyIndex::default(), |t| &t.keys),
                SystemTime::now(),
            )?;
            Ok(Resolved {
                tenant,
                subject: format!("key:{}", k.id),
                identity: Some(Identity::Key(k)),
                bound: None,
            })
        }
        Who::Tenant(t) => {
            let plans = &snapshot.tenant(t).ok_or_else(|| unknown_tenant(t))?.plans;
            let bound = plans
                .own
                .iter()
                .map(|p| Bound {
                    plan: p.clone(),
                    subject: QuotaSubject::Tenant,
                })
                .collect();
            Ok(Resolved {
                tenant: t.as_str().into(),
                subject: QuotaSubject::Tenant.label(),
                identity: None,
                bound: Some(bound),
            })
        }
        Who::Subject {
            tenant,
            subject,
            plan,
        } => {
            let plans = &snapshot
                .tenant(tenant)
                .ok_or_else(|| unknown_tenant(tenant))?
                .plans;
            let p = plans.by_name.get(plan).ok_or_else(|| {
                Reply::new(
                    404,
                    "unknown_plan",
                    format!("plan: the tenant has no plan named '{plan}'"),
                )
            })?;
            if subject.is_empty() || subject.len() > 256 {
                return Err(Reply::new(
                    422,
                    "invalid_request",
                    "subject: must be 1-256 bytes",
                ));
            }
            let counted = QuotaSubject::User(subject.clone());
            let label = counted.label();
            let mut bound = vec![Bound {
                plan: p.clone(),
                subject: counted,
            }];
            bound.extend(plans.own.iter().map(|p| Bound {
                plan: p.clone(),
                subject: QuotaSubject::Tenant,
            }));
            Ok(Resolved {
                tenant: tenant.as_str().into(),
                subject: label,
                identity: None,
                bound: Some(bound),
            })
        }
    }
}

/// The listener: JSON and gRPC on one address, until the server shuts down.
pub struct DecisionServer {
    pub settings: DecisionSettings,
    pub decider: Arc<Decider>,
}

impl DecisionServer {
    /// Is `presented` (an `Authorization` value) the configured token, if one is?
    fn authorized(token: &Option<String>, presented: Option<&[u8]>) -> bool {
        let Some(token) = token else { return true };
        let Some(p) = presented.and_then(|v| v.strip_prefix(b"Bearer ")) else {
            return false;
        };
        // Constant-time comparison of the digests.
        use sha2::{Digest, Sha256};
        let (a, b) = (Sha256::digest(p), Sha256::digest(token.as_bytes()));
        a.iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

#[async_trait]
impl BackgroundService for DecisionServer {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let listener = match tokio::net::TcpListener::bind(&self.settings.listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(listen = %self.settings.listen, "decision service cannot listen: {e}");
                return;
            }
        };
        let token = self.settings.token.clone();
        let router = grpc::routes(self.decider.clone(), token.clone())
            .merge(json::routes(self.decider.clone(), token))
            .fallback(json::not_found);
        tracing::info!(listen = %self.settings.listen, "decision service listening");
        let served = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        });
        if let Err(e) = served.await {
            tracing::error!("decision service stopped: {e}");
        }
    }
}
