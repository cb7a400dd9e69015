//! The REST API under `/api/v1/`, `/openapi.json` and `/healthz`. Every handler the router
//! serves carries a `#[utoipa::path]`, from which [`crate::openapi`] builds the document.

pub(crate) mod alerts;
pub(crate) mod analytics;
pub(crate) mod api_keys;
pub(crate) mod billing;
pub(crate) mod fleet;
pub(crate) mod jobs;
pub(crate) mod resources;
pub(crate) mod usage;
pub(crate) mod users;
pub(crate) mod webhooks;

pub use alerts::{AlertList, AlertRule, AlertRuleKind, NewAlertRule};
pub use analytics::{Analytics, GroupBy, GroupStats, Latency, Stats};
pub use api_keys::{IssuedApiKey, KeyQuota, NewApiKey, QuotaPlan, QuotaStatus, RotateBody};
pub use resources::{
    merge_patch, Page, StoredApiKey, StoredJwtIssuer, StoredOrigin, StoredPlan, StoredRoute,
    StoredTenant, Timestamps,
};
pub use usage::{
    Granularity, UsageReport, UsageRow, UsageTotals, ViolationKind, ViolationReport, ViolationRow,
};
pub use users::{NewUser, User, UserRole};

use crate::auth::{require_token, Principal};
use crate::error::{request_id_layer, ApiError, ErrorBody};
use crate::AppState;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use utoipa::ToSchema;
use vantage_model::{ApiKey, JwtIssuer, Origin, Plan, Route, Tenant};

/// Header carrying the config version a write committed.
pub const VERSION_HEADER: &str = "x-config-version";

/// The response of a committed write.
pub fn written(status: StatusCode, version: i64, body: Option<Value>) -> Response {
    let mut r = match body {
        Some(b) => (status, Json(b)).into_response(),
        None => status.into_response(),
    };
    r.headers_mut()
        .insert(VERSION_HEADER, HeaderValue::from(version));
    r
}

/// Every route of the service.
pub fn router(st: Arc<AppState>) -> Router {
    use resources::{jwt_issuers, origins, plans, routes, tenants};
    let v1 = Router::new()
        .route("/tenants", get(tenants::list).post(tenants::create))
        .route(
            "/tenants/{id}",
            get(tenants::get)
                .put(tenants::put)
                .patch(tenants::patch)
                .delete(tenants::delete),
        )
        .route("/origins", get(origins::list).post(origins::create))
        .route(
            "/origins/{id}",
            get(origins::get)
                .put(origins::put)
                .patch(origins::patch)
                .delete(origins::delete),
        )
        .route("/routes", get(routes::list).post(routes::create))
        .route(
            "/routes/{id}",
            get(routes::get)
                .put(routes::put)
                .patch(routes::patch)
                .delete(routes::delete),
        )
        .route(
            "/jwt-issuers",
            get(jwt_issuers::list).post(jwt_issuers::create),
        )
        .route(
            "/jwt-issuers/{id}",
            get(jwt_issuers::get)
                .put(jwt_issuers::put)
                .patch(jwt_issuers::patch)
                .delete(jwt_issuers::delete),
        )
        .route(
            "/api-keys",
            get(api_keys::crud::list).post(api_keys::create),
        )
        .route(
            "/api-keys/{id}",
            get(api_keys::crud::get)
                .patch(api_keys::crud::patch)
                .delete(api_keys::crud::delete),
        )
        .route("/api-keys/{id}/rotate", post(api_keys::rotate))
        .route("/api-keys/{id}/revoke", post(api_keys::revoke))
        .route("/api-keys/{id}/quota", get(api_keys::quota))
        .route("/plans", get(plans::list).post(plans::create))
        .route(
            "/plans/{id}",
            get(plans::get)
                .put(plans::put)
                .patch(plans::patch)
                .delete(plans::delete),
        )
        .route("/usage", get(usage::usage))
        .route("/violations", get(usage::violations))
        .route("/users", get(users::crud::list).post(users::create))
        .route(
            "/users/{id}",
            get(users::crud::get)
                .patch(users::patch)
                .delete(users::delete),
        )
        .route("/billing/records", get(billing::list))
        .route("/billing/records/{id}", get(billing::get))
        .route("/billing/export", get(billing::export))
        .route("/billing/runs", post(billing::run))
        .route("/jobs", get(jobs::list))
        .route("/jobs/{id}", get(jobs::get))
        .route("/jobs/{id}/replay", post(jobs::replay))
        .route("/webhooks", get(webhooks::list).post(webhooks::create))
        .route(
            "/webhooks/{id}",
            get(webhooks::get)
                .patch(webhooks::patch)
                .delete(webhooks::delete),
        )
        .route(
            "/webhooks/{id}/rotate-secret",
            post(webhooks::rotate_secret),
        )
        .route("/webhooks/{id}/test", post(webhooks::test))
        .route("/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route("/webhook-deliveries/{id}", get(webhooks::delivery))
        .route("/webhook-deliveries/{id}/replay", post(webhooks::replay))
        .route(
            "/alert-rules",
            get(alerts::list_rules).post(alerts::create_rule),
        )
        .route(
            "/alert-rules/{id}",
            get(alerts::get_rule)
                .patch(alerts::patch_rule)
                .delete(alerts::delete_rule),
        )
        .route("/alerts", get(alerts::list_alerts))
        .route("/analytics/requests", get(analytics::requests))
        .route("/analytics/timeseries", get(analytics::timeseries))
        .route("/fleet", get(fleet::fleet))
        .route("/pool-health", get(fleet::pool_health))
        .route("/me", get(fleet::me))
        .route("/config", get(config_snapshot))
        .route_layer(middleware::from_fn_with_state(
            st.clone(),
            crate::fleet::wait_layer,
        ));
    let protected = Router::new()
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .nest("/api/v1", v1)
        .route_layer(middleware::from_fn_with_state(st.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(crate::console::router())
        .merge(protected)
        .fallback(|| async { ApiError::NoSuchEndpoint })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(st.cfg.max_body_bytes))
        .layer(middleware::from_fn(request_id_layer))
        .layer(middleware::from_fn(crate::otel::span_layer))
        .with_state(st)
}

/// The answer of `GET /healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` when the database does not answer.
    pub status: &'static str,
    /// `ok` or `unavailable`.
    pub database: &'static str,
    /// The current config version (only when the database answered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_version: Option<i64>,
}

/// Liveness, and whether the database answers within two seconds.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    operation_id = "healthz",
    summary = "Liveness and database reachability",
    description = "Needs no credentials.",
    security(),
    responses(
        (status = 200, description = "Healthy", body = Health),
        (status = 503, description = "The database does not answer", body = Health),
    )
)]
pub async fn healthz(State(st): State<Arc<AppState>>) -> Response {
    let db = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        let c = st.pool.get().await.ok()?;
        c.query_one("SELECT vantage_config_version()", &[])
            .await
            .ok()
            .map(|r| r.get::<_, i64>(0))
    })
    .await
    .ok()
    .flatten();
    match db {
        Some(v) => Json(Health {
            status: "ok",
            database: "ok",
            config_version: Some(v),
        })
        .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "degraded",
                database: "unavailable",
                config_version: None,
            }),
        )
            .into_response(),
    }
}

/// Prometheus metrics (needs an admin token like everything but `/healthz`).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    description = "The admin service's metrics in the Prometheus text exposition format.",
    responses(
        (status = 200, description = "Prometheus text", body = String,
            content_type = "text/plain; version=0.0.4"),
    )
)]
pub async fn metrics(State(st): State<Arc<AppState>>, _: Principal) -> Response {
    use crate::metrics::METRICS;
    let version = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        let c = st.pool.get().await.ok()?;
        c.query_one("SELECT vantage_config_version()", &[])
            .await
            .ok()
            .map(|r| r.get::<_, i64>(0))
    })
    .await
    .ok()
    .flatten();
    METRICS.database_up.set(i64::from(version.is_some()));
    if let Some(v) = version {
        METRICS.config_version.set(v);
    }
    crate::fleet::export_metrics(&st).await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::metrics::render(),
    )
        .into_response()
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    operation_id = "openapi",
    summary = "This OpenAPI document",
    responses((status = 200, description = "OpenAPI 3.1", body = Object)),
)]
pub async fn openapi(_: Principal) -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::document())
}

/// `GET /config`: what `vantage_config()` answers, secrets redacted.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigSnapshot {
    /// The config version of this snapshot.
    pub version: i64,
    pub config: ConfigResources,
}

/// Every resource of the configuration, in the form the proxies read (a
/// `vantage_model::Config` without `server`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigResources {
    pub tenants: Vec<Tenant>,
    pub origins: Vec<Origin>,
    pub routes: Vec<Route>,
    pub api_keys: Vec<ApiKey>,
    /// Shared secrets show as `shared_secret_set: true`.
    pub jwt_issuers: Vec<JwtIssuer>,
    pub plans: Vec<Plan>,
}

/// The configuration as the proxies read it (`vantage_config()`), superadmin only. Secrets
/// are never returned after they were written: JWT shared secrets show as
/// `shared_secret_set: true`.
#[utoipa::path(
    get,
    path = "/api/v1/config",
    tag = "config",
    operation_id = "config_snapshot",
    summary = "The whole configuration",
    description = "The configuration as the proxies read it, with its version; superadmins \
        only. JWT shared secrets show as `shared_secret_set: true`.",
    responses(
        (status = 200, description = "The configuration", body = ConfigSnapshot),
        (status = 403, description = "Not a superadmin", body = ErrorBody),
    )
)]
pub async fn config_snapshot(
    State(st): State<Arc<AppState>>,
    p: Principal,
) -> Result<Json<Value>, ApiError> {
    p.require_superadmin()?;
    let c = st.pool.get().await?;
    let mut v: Value = c.query_one("SELECT vantage_config()", &[]).await?.get(0);
    if let Some(issuers) = v
        .pointer_mut("/config/jwt_issuers")
        .and_then(Value::as_array_mut)
    {
        for issuer in issuers.iter_mut().filter_map(Value::as_object_mut) {
            <JwtIssuer as crate::store::Table>::redact(issuer);
        }
    }
    Ok(Json(v))
}
