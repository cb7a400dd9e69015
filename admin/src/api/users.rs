//! Users of a tenant (e.g. mirrored from Clerk). Not part of the proxies' configuration:
//! their writes are admin-only units of work ([`UnitOfWork::admin`]), which neither bump
//! the config version nor announce anything, so their answers carry no `X-Config-Version`.

use super::resources::{merge_patch, resolve_tenant, resource_api, Timestamps};
use crate::auth::Principal;
use crate::error::{parse, path_id, ApiError, ErrorBody, Field, JsonObject};
use crate::store::{fetch_doc, Users};
use crate::write::UnitOfWork;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;
use utoipa::ToSchema;
use uuid::Uuid;

resource_api! {
    mod crud: Users => User,
    tag "users", one "user", many "users", shown "user", shown_many "users",
    path "/api/v1/users", item "/api/v1/users/{id}",
    ops [list, get]
}

/// What a user may do in the tenant's console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserRole {
    Admin,
    Member,
    Viewer,
}

impl UserRole {
    const ALL: [UserRole; 3] = [UserRole::Admin, UserRole::Member, UserRole::Viewer];

    /// The stored (and serialized) name.
    fn name(self) -> &'static str {
        match self {
            UserRole::Admin => "admin",
            UserRole::Member => "member",
            UserRole::Viewer => "viewer",
        }
    }
}

/// A user as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct User {
    #[schema(value_type = Uuid, read_only)]
    pub id: String,
    #[schema(value_type = Uuid)]
    pub tenant_id: String,
    /// Unique within the tenant, compared case-insensitively. Example: `ann@acme.test`.
    #[schema(format = Email)]
    pub email: String,
    pub role: UserRole,
    /// The user's id at Clerk, when mirrored from there. Example: `user_2abc`.
    pub clerk_user_id: Option<String>,
    #[serde(flatten)]
    pub timestamps: Timestamps,
}

/// Body of `POST /users`.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewUser {
    /// Defaults to the caller's tenant for a tenant_admin token.
    #[schema(value_type = Option<Uuid>)]
    pub tenant_id: Option<String>,
    /// Example: `ann@acme.test`.
    #[schema(format = Email)]
    pub email: String,
    pub role: UserRole,
    /// Example: `user_2abc`.
    pub clerk_user_id: Option<String>,
}

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
    if !UserRole::ALL.iter().any(|r| r.name() == u.role) {
        let names: Vec<&str> = UserRole::ALL.iter().map(|r| r.name()).collect();
        fields.push(Field {
            path: "role".into(),
            message: format!("must be one of {}", names.join(", ")),
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

/// A committed user write: `status` and, unless deleted, the user.
fn answered(status: StatusCode, doc: Option<Value>) -> Response {
    match doc {
        Some(d) => (status, Json(d)).into_response(),
        None => status.into_response(),
    }
}

/// `POST /users` `{tenant_id?, email, role, clerk_user_id?}`.
#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "users",
    operation_id = "create_user",
    summary = "Create a user",
    description = "Users are not part of the proxies' configuration: the config version stays \
        and nothing is announced.",
    request_body = NewUser,
    responses(
        (status = 201, description = "The new user", body = User),
        (status = 409, description = "The email is already used in the tenant", body = ErrorBody),
        (status = 422, description = "Validation failed; `fields` lists each problem", body = ErrorBody),
    )
)]
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
    let w = UnitOfWork::admin(&mut client).await?;
    let exists = w
        .tx()
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
    w.tx()
        .execute(
            "INSERT INTO users (id, tenant_id, email, role, clerk_user_id) VALUES ($1, $2, $3, $4, $5)",
            &[&id, &tenant_id, &u.email, &u.role, &u.clerk_user_id],
        )
        .await?;
    let doc = fetch_doc::<Users>(w.tx(), id, None).await?;
    w.commit().await?;
    Ok(answered(StatusCode::CREATED, doc))
}

/// `PATCH /users/{id}`: merge patch of `email`, `role`, `clerk_user_id`.
#[utoipa::path(
    patch,
    path = "/api/v1/users/{id}",
    tag = "users",
    operation_id = "patch_user",
    summary = "Change a user",
    description = "A JSON merge patch (RFC 7396) of `email`, `role` and `clerk_user_id`; the \
        config version stays.",
    params(("id" = Uuid, Path, description = "Id of the user")),
    request_body(content = Object, description = "The fields to change"),
    responses(
        (status = 200, description = "The changed user", body = User),
        (status = 404, description = "No such user (or another tenant's)", body = ErrorBody),
        (status = 409, description = "The email is already used in the tenant", body = ErrorBody),
        (status = 422, description = "Validation failed; `fields` lists each problem", body = ErrorBody),
    )
)]
pub async fn patch(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Path(raw): Path<String>,
    JsonObject(obj): JsonObject,
) -> Result<Response, ApiError> {
    let id = path_id(&raw, "user")?;
    let mut client = st.pool.get().await?;
    let w = UnitOfWork::admin(&mut client).await?;
    let current = fetch_doc::<Users>(w.tx(), id, p.tenant)
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
    w.tx()
        .execute(
            "UPDATE users SET email = $2, role = $3, clerk_user_id = $4, updated_at = now() WHERE id = $1",
            &[&id, &u.email, &u.role, &u.clerk_user_id],
        )
        .await?;
    let doc = fetch_doc::<Users>(w.tx(), id, None).await?;
    w.commit().await?;
    Ok(answered(StatusCode::OK, doc))
}

/// `DELETE /users/{id}`.
#[utoipa::path(
    delete,
    path = "/api/v1/users/{id}",
    tag = "users",
    operation_id = "delete_user",
    summary = "Delete a user",
    description = "The config version stays.",
    params(("id" = Uuid, Path, description = "Id of the user")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such user (or another tenant's)", body = ErrorBody),
    )
)]
pub async fn delete(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_id(&raw, "user")?;
    let mut client = st.pool.get().await?;
    let w = UnitOfWork::admin(&mut client).await?;
    w.tx()
        .query_opt(
            "DELETE FROM users WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2) RETURNING id",
            &[&id, &p.tenant],
        )
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    w.commit().await?;
    Ok(answered(StatusCode::NO_CONTENT, None))
}
