//! The REST API under `/api/v1/`, `/openapi.json` and `/healthz`.

mod analytics;
mod api_keys;
mod resources;
mod users;

use crate::auth::{require_token, Principal};
use crate::error::{request_id_layer, ApiError};
use crate::AppState;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;
use vantage_model::{JwtIssuer, Origin, Route, Tenant};

pub use resources::merge_patch;

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
    use resources::{create, delete, get_one, list, patch, put};
    let v1 = Router::new()
        .route("/tenants", get(list::<Tenant>).post(create::<Tenant>))
        .route(
            "/tenants/{id}",
            get(get_one::<Tenant>)
                .put(put::<Tenant>)
                .patch(patch::<Tenant>)
                .delete(delete::<Tenant>),
        )
        .route("/origins", get(list::<Origin>).post(create::<Origin>))
        .route(
            "/origins/{id}",
            get(get_one::<Origin>)
                .put(put::<Origin>)
                .patch(patch::<Origin>)
                .delete(delete::<Origin>),
        )
        .route("/routes", get(list::<Route>).post(create::<Route>))
        .route(
            "/routes/{id}",
            get(get_one::<Route>)
                .put(put::<Route>)
                .patch(patch::<Route>)
                .delete(delete::<Route>),
        )
        .route(
            "/jwt-issuers",
            get(list::<JwtIssuer>).post(create::<JwtIssuer>),
        )
        .route(
            "/jwt-issuers/{id}",
            get(get_one::<JwtIssuer>)
                .put(put::<JwtIssuer>)
                .patch(patch::<JwtIssuer>)
                .delete(delete::<JwtIssuer>),
        )
        .route(
            "/api-keys",
            get(list::<vantage_model::ApiKey>).post(api_keys::create),
        )
        .route(
            "/api-keys/{id}",
            get(get_one::<vantage_model::ApiKey>)
                .patch(patch::<vantage_model::ApiKey>)
                .delete(delete::<vantage_model::ApiKey>),
        )
        .route("/api-keys/{id}/rotate", post(api_keys::rotate))
        .route("/api-keys/{id}/revoke", post(api_keys::revoke))
        .route(
            "/users",
            get(list::<crate::store::Users>).post(users::create),
        )
        .route(
            "/users/{id}",
            get(get_one::<crate::store::Users>)
                .patch(users::patch)
                .delete(users::delete),
        )
        .route("/analytics/requests", get(analytics::requests))
        .route("/config", get(config_snapshot));
    let protected = Router::new()
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .nest("/api/v1", v1)
        .route_layer(middleware::from_fn_with_state(st.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(protected)
        .fallback(|| async { ApiError::NoSuchEndpoint })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(st.cfg.max_body_bytes))
        .layer(middleware::from_fn(request_id_layer))
        .layer(middleware::from_fn(crate::otel::span_layer))
        .with_state(st)
}

async fn healthz(State(st): State<Arc<AppState>>) -> Response {
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
        Some(v) => {
            Json(json!({"status": "ok", "database": "ok", "config_version": v})).into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "degraded", "database": "unavailable"})),
        )
            .into_response(),
    }
}

/// Prometheus metrics (needs an admin token like everything but `/healthz`).
async fn metrics(State(st): State<Arc<AppState>>, _: Principal) -> Response {
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
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::metrics::render(),
    )
        .into_response()
}

async fn openapi(_: Principal) -> Json<Value> {
    Json(crate::openapi::document())
}

/// The configuration as the proxies read it (`vantage_config()`), superadmin only. Secrets
/// are never returned after they were written: JWT shared secrets show as
/// `shared_secret_set: true`.
async fn config_snapshot(
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
