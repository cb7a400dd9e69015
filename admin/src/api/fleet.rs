//! What the operator watches: the fleet of proxies and the config version each serves
//! (`GET /fleet`), what the proxies' health checks see of each origin pool
//! (`GET /pool-health`), and who the caller is (`GET /me`, for the console).

use crate::auth::Principal;
use crate::error::{uuid_param, ApiError, ApiQuery, ErrorBody};
use crate::fleet::Fleet;
use crate::AppState;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

/// The proxies reporting to this control plane, with their lag behind the latest config
/// version; superadmins only.
#[utoipa::path(
    get,
    path = "/api/v1/fleet",
    tag = "fleet",
    operation_id = "fleet",
    summary = "Proxies and the config version each serves",
    description = "Every proxy in `source: postgres` mode reports itself on a heartbeat \
        (`server.postgres.fleet`). A proxy silent for `fleet.gone_after_ms` is `gone`. \
        `converged` is true when every live proxy serves `latest_version`. Superadmins only.",
    responses(
        (status = 200, description = "The fleet", body = Fleet),
        (status = 403, description = "Not a superadmin", body = ErrorBody),
    )
)]
pub async fn fleet(State(st): State<Arc<AppState>>, p: Principal) -> Result<Json<Fleet>, ApiError> {
    p.require_superadmin()?;
    let c = st.pool.get().await?;
    Ok(Json(
        crate::fleet::read(&**c, st.cfg.fleet.gone_after()).await?,
    ))
}

/// A caller's role.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Superadmin,
    TenantAdmin,
}

/// The answer of `GET /api/v1/me`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub role: Role,
    /// The tenant of a tenant_admin; `null` for a superadmin.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub tenant_id: Option<String>,
    /// The token's name (`create-token --name`).
    pub name: String,
}

/// Who the token is: its role, tenant and name.
#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "meta",
    operation_id = "me",
    summary = "The caller's role and tenant",
    responses(
        (status = 200, description = "The caller", body = Me),
        (status = 401, description = "No valid token", body = ErrorBody),
    )
)]
pub async fn me(State(st): State<Arc<AppState>>, p: Principal) -> Result<Json<Me>, ApiError> {
    let c = st.pool.get().await?;
    let name: String = c
        .query_opt(
            "SELECT name FROM admin_tokens WHERE id = $1",
            &[&p.token_id],
        )
        .await?
        .map(|r| r.get(0))
        .unwrap_or_default();
    Ok(Json(Me {
        role: if p.is_superadmin() {
            Role::Superadmin
        } else {
            Role::TenantAdmin
        },
        tenant_id: p.tenant.map(|t| t.to_string()),
        name,
    }))
}

/// `?tenant_id=`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PoolHealthQuery {
    /// Only this tenant's origins (a tenant_admin sees only its own anyway).
    #[param(value_type = Option<uuid::Uuid>)]
    tenant_id: Option<String>,
}

/// What one proxy's health checks see of one origin pool.
#[derive(Debug, Serialize, ToSchema)]
pub struct PoolHealthRow {
    #[schema(value_type = uuid::Uuid)]
    pub origin_id: String,
    #[schema(value_type = uuid::Uuid)]
    pub tenant_id: String,
    /// The reporting proxy (`<hostname>:<pid>`; `proxy-N` for a tenant admin).
    pub proxy: String,
    /// Targets passing their health check.
    pub healthy: i32,
    pub total: i32,
    #[schema(format = DateTime)]
    pub reported_at: String,
}

/// The answer of `GET /api/v1/pool-health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PoolHealth {
    /// By origin, then proxy.
    pub items: Vec<PoolHealthRow>,
}

/// Live target health: what each proxy's active health checks see of each origin pool,
/// from reports no older than `worker.pool_health_stale_s`.
#[utoipa::path(
    get,
    path = "/api/v1/pool-health",
    tag = "fleet",
    operation_id = "pool_health",
    summary = "Healthy targets of each origin, per proxy",
    params(PoolHealthQuery),
    responses(
        (status = 200, description = "The reports", body = PoolHealth),
        (status = 400, description = "`tenant_id` is not an id", body = ErrorBody),
        (status = 404, description = "`tenant_id` names a tenant the caller may not see", body = ErrorBody),
    )
)]
pub async fn pool_health(
    State(st): State<Arc<AppState>>,
    p: Principal,
    ApiQuery(q): ApiQuery<PoolHealthQuery>,
) -> Result<Json<PoolHealth>, ApiError> {
    let tenant = p
        .scope(uuid_param(&q.tenant_id, "tenant_id")?)?
        .map(|t| t.to_string());
    let stale = i64::try_from(st.cfg.worker.pool_health_stale_s).unwrap_or(i64::MAX);
    let c = st.pool.get().await?;
    let rows = c
        .query(
            "SELECT origin_id, tenant_id, proxy, healthy, total, reported_at FROM pool_health
              WHERE ($1::text IS NULL OR tenant_id = $1)
                AND reported_at >= now() - make_interval(secs => $2::bigint::float8)
              ORDER BY origin_id, proxy",
            &[&tenant, &stale],
        )
        .await?;
    // Proxy names are the operator's business: a tenant admin sees them numbered.
    let mut names = std::collections::BTreeMap::<String, String>::new();
    if !p.is_superadmin() {
        for r in &rows {
            names.insert(r.get(2), String::new());
        }
        for (i, v) in names.values_mut().enumerate() {
            *v = format!("proxy-{}", i + 1);
        }
    }
    Ok(Json(PoolHealth {
        items: rows
            .iter()
            .map(|r| PoolHealthRow {
                origin_id: r.get(0),
                tenant_id: r.get(1),
                proxy: {
                    let id: String = r.get(2);
                    names.get(&id).cloned().unwrap_or(id)
                },
                healthy: r.get(3),
                total: r.get(4),
                reported_at: humantime::format_rfc3339_millis(r.get(5)).to_string(),
            })
            .collect(),
    }))
}
