//! Users of a tenant (e.g. mirrored from Clerk). Not part of the proxies' configuration, but
//! their writes bump the config version like every other write.

use super::resources::{merge_patch, resolve_tenant};
use super::written;
use crate::auth::Principal;
use crate::error::{parse, path_id, ApiError, Field, JsonObject};
use crate::store::{fetch_doc, Users};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::sync::Arc;
use uuid::Uuid;

const ROLES: &[&str] = &["admin", "member", "viewer"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserIn {
    #[serde(default)]
    id: Option<String>,
    tenant_id: String,
    email: String,
    role: String,
    #[serde(default)]
    clerk_user_id: Option<String>,
}

fn validate(u: &UserIn) -> Result<(), ApiError> {
    let mut fields = Vec::new();
    let email_ok = u.email.len() <= 254
        && u.email.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
        })
        && !u.email.chars().any(|c| c.is_whitespace() || c.is_control());
    if !email_ok {
        fields.push(Field {
            path: "email".into(),
            message: format!("'{}' is not an email address", u.email),
        });
    }
    if !ROLES.contains(&u.role.as_str()) {
        fields.push(Field {
            path: "role".into(),
            message: format!("must be one of {}", ROLES.join(", ")),
        });
    }
    if let Some(c) = &u.clerk_user_id {
        if c.is_empty() || c.len() > 128 || !c.bytes().all(|b| b.is_ascii_graphic()) {
            fields.push(Field {
                path: "clerk_user_id".into(),
                message: "must be 1-128 visible ASCII characters".into(),
            });
        }
    }
    if fields.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid(
            "the request failed validation".into(),
            fields,
        ))
    }
}

async fn bump(tx: &tokio_postgres::Transaction<'_>) -> Result<i64, ApiError> {
    Ok(tx
        .query_one("SELECT vantage_bump_config_version()", &[])
        .await?
        .get(0))
}

/// `POST /users` `{tenant_id?, email, role, clerk_user_id?}`.
pub async fn create(
    State(st): State<Arc<AppState>>,
    p: Principal,
    JsonObject(mut obj): JsonObject,
) -> Result<Response, ApiError> {
    if obj.contains_key("id") {
        return Err(ApiError::BadRequest("id is assigned by the server".into()));
    }
    let tenant = resolve_tenant(&p, obj.remove("tenant_id"))?;
    obj.insert("tenant_id".into(), Value::String(tenant));
    let u: UserIn = parse(Value::Object(obj))?;
    validate(&u)?;
    let tenant_id = Uuid::parse_str(&u.tenant_id).map_err(|_| {
        ApiError::invalid_field("tenant_id", format!("no tenant has id '{}'", u.tenant_id))
    })?;
    let mut client = st.pool.get().await?;
    let tx = client.transaction().await?;
    let version = bump(&tx).await?;
    let exists = tx
        .query_opt("SELECT 1 FROM tenants WHERE id = $1", &[&tenant_id])
        .await?
        .is_some();
    if !exists {
        return Err(ApiError::invalid_field(
            "tenant_id",
            format!("no tenant has id '{}'", u.tenant_id),
        ));
    }
    let id = Uuid::new_v4();
    tx.execute(
        "INSERT INTO users (id, tenant_id, email, role, clerk_user_id) VALUES ($1, $2, $3, $4, $5)",
        &[&id, &tenant_id, &u.email, &u.role, &u.clerk_user_id],
    )
    .await?;
    let doc = fetch_doc::<Users>(&*tx, id, None).await?;
    tx.commit().await?;
    st.announce(version, Some(u.tenant_id)).await;
    Ok(written(StatusCode::CREATED, version, doc))
}

/// `PATCH /users/{id}`: merge patch of `email`, `role`, `clerk_user_id`.
pub async fn patch(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Path(raw): Path<String>,
    JsonObject(obj): JsonObject,
) -> Result<Response, ApiError> {
    let id = path_id(&raw, "user")?;
    let mut client = st.pool.get().await?;
    let tx = client.transaction().await?;
    let version = bump(&tx).await?;
    let current = fetch_doc::<Users>(&*tx, id, p.tenant)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let mut base: Map<String, Value> = match current {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    base.remove("created_at");
    base.remove("updated_at");
    for f in ["id", "tenant_id"] {
        if let Some(v) = obj.get(f) {
            if Some(v) != base.get(f) {
                return Err(ApiError::BadRequest(format!("{f} cannot be changed")));
            }
        }
    }
    let mut merged = Value::Object(base);
    merge_patch(&mut merged, Value::Object(obj));
    let u: UserIn = parse(merged)?;
    validate(&u)?;
    debug_assert!(u.id.is_some());
    tx.execute(
        "UPDATE users SET email = $2, role = $3, clerk_user_id = $4, updated_at = now() WHERE id = $1",
        &[&id, &u.email, &u.role, &u.clerk_user_id],
    )
    .await?;
    let doc = fetch_doc::<Users>(&*tx, id, None).await?;
    tx.commit().await?;
    st.announce(version, Some(u.tenant_id)).await;
    Ok(written(StatusCode::OK, version, doc))
}

/// `DELETE /users/{id}`.
pub async fn delete(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_id(&raw, "user")?;
    let mut client = st.pool.get().await?;
    let tx = client.transaction().await?;
    let version = bump(&tx).await?;
    let row = tx
        .query_opt(
            "DELETE FROM users WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2) RETURNING tenant_id::text",
            &[&id, &p.tenant],
        )
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    tx.commit().await?;
    st.announce(version, Some(row.get(0))).await;
    Ok(written(StatusCode::NO_CONTENT, version, None))
}
