//! Generic CRUD handlers for the configuration resources (tenants, origins, routes, JWT
//! issuers, plans, and the shared parts of API keys and users), the types of their API
//! representation, and — through [`resource_api!`] — one documented handler per kind and
//! operation, which the router serves and `/openapi.json` describes.

use super::written;
use crate::auth::Principal;
use crate::error::{parse, path_id, ApiError, ApiQuery, JsonObject};
use crate::store::{fetch_doc, list_docs, owner_of, Resource, Table};
use crate::write::Change;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use vantage_model::{JwtIssuer, KeyStatus, Origin, Plan, Route, Tenant};

/// `?limit=&cursor=&tenant_id=` of list endpoints.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Most items on the page (1-500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<Uuid>)]
    pub cursor: Option<String>,
    /// Only this tenant's items (a tenant_admin sees only its own tenant anyway).
    #[param(value_type = Option<Uuid>)]
    pub tenant_id: Option<String>,
}

/// One page of a list, ordered by id.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Bookkeeping the API shows with every stored resource.
#[derive(Debug, Serialize, ToSchema)]
pub struct Timestamps {
    #[schema(format = DateTime, read_only)]
    pub created_at: String,
    #[schema(format = DateTime, read_only)]
    pub updated_at: String,
}

/// A tenant as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoredTenant {
    #[serde(flatten)]
    pub tenant: Tenant,
    #[serde(flatten)]
    pub timestamps: Timestamps,
}

/// An origin as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoredOrigin {
    #[serde(flatten)]
    pub origin: Origin,
    #[serde(flatten)]
    pub timestamps: Timestamps,
}

/// A route as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoredRoute {
    #[serde(flatten)]
    pub route: Route,
    #[serde(flatten)]
    pub timestamps: Timestamps,
}

/// A JWT issuer as the API shows it: a shared secret is never shown again, only that it is
/// set.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoredJwtIssuer {
    #[serde(flatten)]
    pub issuer: JwtIssuer,
    /// Present (`true`) when the issuer has a shared secret.
    #[schema(read_only)]
    pub shared_secret_set: Option<bool>,
    #[serde(flatten)]
    pub timestamps: Timestamps,
}

/// A plan as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoredPlan {
    #[serde(flatten)]
    pub plan: Plan,
    #[serde(flatten)]
    pub timestamps: Timestamps,
}

/// An API key as the API shows it: never the key's hash (nor, after creation, the key).
#[derive(Debug, Serialize, ToSchema)]
pub struct StoredApiKey {
    #[schema(value_type = Uuid, read_only)]
    pub id: String,
    #[schema(value_type = Uuid)]
    pub tenant_id: String,
    /// Example: `CI pipeline`.
    pub name: String,
    /// The key's visible start, for people to recognise it. Example: `vk_live_3fA9`.
    #[schema(read_only)]
    pub prefix: String,
    /// Example: `[orders:read, orders:write]`.
    pub scopes: Vec<String>,
    /// RFC 3339 time after which the key is refused. Example: `2027-01-01T00:00:00Z`.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    #[schema(read_only)]
    pub status: KeyStatus,
    /// The key's plan (a plan of the same tenant): its rate limits and quotas count this
    /// key. Changed with `PATCH`.
    #[schema(value_type = Option<Uuid>)]
    pub plan_id: Option<String>,
    /// Last time the key authenticated a request (recorded by the proxies).
    #[schema(format = DateTime, read_only)]
    pub last_used_at: Option<String>,
    /// When the key was revoked.
    #[schema(format = DateTime, read_only)]
    pub revoked_at: Option<String>,
    /// The key this one replaced by rotation.
    #[schema(value_type = Option<Uuid>, read_only)]
    pub rotated_from: Option<String>,
    #[serde(flatten)]
    pub timestamps: Timestamps,
}

fn opt_uuid(v: &Option<String>, name: &str) -> Result<Option<Uuid>, ApiError> {
    v.as_deref()
        .map(|s| {
            Uuid::parse_str(s)
                .map_err(|_| ApiError::BadRequest(format!("{name} must be an id (UUID)")))
        })
        .transpose()
}

/// List `R`: `{"items": [...], "next_cursor": "..."|null}`, ordered by id.
pub async fn list<R: Table>(
    State(st): State<Arc<AppState>>,
    p: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<Value>>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 500".into(),
        ));
    }
    let scope = p.scope(opt_uuid(&q.tenant_id, "tenant_id")?)?;
    let cursor = opt_uuid(&q.cursor, "cursor")?;
    let c = st.pool.get().await?;
    let mut rows = list_docs::<R>(&**c, scope, cursor, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = if more {
        rows.last().map(|(id, _)| id.to_string())
    } else {
        None
    };
    Ok(Json(Page {
        items: rows.into_iter().map(|(_, v)| v).collect(),
        next_cursor: next,
    }))
}

/// One `R` (404 when unknown or another tenant's).
pub async fn get_one<R: Table>(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = path_id(&raw, R::NAME)?;
    let c = st.pool.get().await?;
    fetch_doc::<R>(&**c, id, p.tenant)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(R::NAME))
}

/// The tenant a new resource belongs to: the body's `tenant_id`, or the caller's own tenant.
/// A tenant_admin naming another tenant is told it does not exist.
pub fn resolve_tenant(p: &Principal, given: Option<Value>) -> Result<String, ApiError> {
    match (given, p.tenant) {
        (Some(Value::String(t)), None) => Ok(t),
        (Some(Value::String(t)), Some(own)) => {
            if t == own.to_string() {
                Ok(t)
            } else {
                Err(ApiError::invalid_field(
                    "tenant_id",
                    format!("no tenant has id '{t}'"),
                ))
            }
        }
        (Some(_), _) => Err(ApiError::BadRequest("tenant_id: must be a string".into())),
        (None, Some(own)) => Ok(own.to_string()),
        (None, None) => Err(ApiError::invalid_field("tenant_id", "is required")),
    }
}

fn fixed_fields<R: Resource>() -> Vec<&'static str> {
    let mut f = vec!["id"];
    if R::TENANT_COL != "id" {
        f.push("tenant_id");
    }
    f.extend_from_slice(R::IMMUTABLE);
    f
}

/// Write `item` as a new `R` in one unit of work: validate the whole configuration with it,
/// insert, commit, announce. Returns (version, API representation).
pub async fn insert_new<R: Resource>(st: &AppState, item: R) -> Result<(i64, Value), ApiError> {
    let id = Uuid::parse_str(item.id()).map_err(|_| ApiError::Internal("bad new id".into()))?;
    let tenant = Uuid::parse_str(item.tenant_id())
        .map_err(|_| ApiError::invalid_field("tenant_id", "must be a tenant's id"))?;
    let mut client = st.pool.get().await?;
    let mut w = st.config_write(&mut client, tenant).await?;
    let items = R::items(w.candidate_mut());
    items.push(item.clone());
    let idx = items.len() - 1;
    let w = w.validate(Change::Upsert(R::KIND, idx))?;
    w.save(&item).await?;
    let doc = fetch_doc::<R>(w.tx(), id, None)
        .await?
        .ok_or_else(|| ApiError::Internal("the new row is gone".into()))?;
    let version = w.commit(Some(item.tenant_id().to_string())).await?;
    Ok((version, doc))
}

/// `POST /R`: the server assigns the id; `tenant_id` defaults to the caller's tenant.
pub async fn create<R: Resource>(
    State(st): State<Arc<AppState>>,
    p: Principal,
    JsonObject(mut obj): JsonObject,
) -> Result<Response, ApiError> {
    if R::TENANT_COL == "id" {
        p.require_superadmin()?;
    }
    if obj.contains_key("id") {
        return Err(ApiError::BadRequest("id is assigned by the server".into()));
    }
    obj.insert("id".into(), Value::String(Uuid::new_v4().to_string()));
    if R::TENANT_COL != "id" {
        let tenant = resolve_tenant(&p, obj.remove("tenant_id"))?;
        obj.insert("tenant_id".into(), Value::String(tenant));
    }
    let item: R = parse(Value::Object(obj))?;
    let (version, doc) = insert_new(&st, item).await?;
    Ok(written(StatusCode::CREATED, version, Some(doc)))
}

/// RFC 7396 JSON merge patch: objects merge, `null` removes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(&k);
                    } else {
                        merge_patch(t.entry(k).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other,
    }
}

/// Where the `R` with `id` is in `cfg`, if the caller may see it (else 404).
fn visible_index<R: Resource>(
    cfg: &mut vantage_model::Config,
    id: &str,
    p: &Principal,
) -> Result<usize, ApiError> {
    R::items(cfg)
        .iter()
        .position(|x| x.id() == id && p.sees(x.tenant_id()))
        .ok_or_else(|| ApiError::not_found(R::NAME))
}

async fn update<R: Resource>(
    st: Arc<AppState>,
    p: Principal,
    raw: String,
    obj: Map<String, Value>,
    merge: bool,
) -> Result<Response, ApiError> {
    let id = path_id(&raw, R::NAME)?;
    let mut client = st.pool.get().await?;
    let owner = owner_of::<R>(&client, id)
        .await?
        .ok_or_else(|| ApiError::not_found(R::NAME))?;
    let mut w = st.config_write(&mut client, owner).await?;
    let idx = visible_index::<R>(w.candidate_mut(), &id.to_string(), &p)?;
    let current = match serde_json::to_value(&R::items(w.candidate_mut())[idx]) {
        Ok(Value::Object(m)) => m,
        _ => {
            return Err(ApiError::Internal(
                "cannot serialize the current row".into(),
            ))
        }
    };
    let fixed = fixed_fields::<R>();
    for f in &fixed {
        if let Some(v) = obj.get(*f) {
            if Some(v) != current.get(*f) {
                return Err(ApiError::BadRequest(format!("{f} cannot be changed")));
            }
        }
    }
    let mut new = if merge {
        let mut base = Value::Object(current.clone());
        merge_patch(&mut base, Value::Object(obj));
        base
    } else {
        Value::Object(obj)
    };
    if let Value::Object(m) = &mut new {
        for f in &fixed {
            match current.get(*f) {
                Some(v) => m.insert((*f).to_string(), v.clone()),
                None => m.remove(*f),
            };
        }
    }
    let item: R = parse(new)?;
    R::items(w.candidate_mut())[idx] = item.clone();
    let w = w.validate(Change::Upsert(R::KIND, idx))?;
    w.save(&item).await?;
    let doc = fetch_doc::<R>(w.tx(), id, None)
        .await?
        .ok_or_else(|| ApiError::not_found(R::NAME))?;
    let version = w.commit(Some(item.tenant_id().to_string())).await?;
    Ok(written(StatusCode::OK, version, Some(doc)))
}

/// `PUT /R/{id}`: replace the whole resource (absent fields take their defaults).
pub async fn put<R: Resource>(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Path(raw): Path<String>,
    JsonObject(obj): JsonObject,
) -> Result<Response, ApiError> {
    update::<R>(st, p, raw, obj, false).await
}

/// `PATCH /R/{id}`: JSON merge patch (RFC 7396) of the resource.
pub async fn patch<R: Resource>(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Path(raw): Path<String>,
    JsonObject(obj): JsonObject,
) -> Result<Response, ApiError> {
    update::<R>(st, p, raw, obj, true).await
}

/// `?cascade=true` of `DELETE /tenants/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Also delete the tenant's origins, routes, API keys, JWT issuers, users and plans
    /// (tenants only; other kinds refuse it).
    pub cascade: Option<bool>,
}

/// `DELETE /R/{id}`: 409 when something still needs it (an origin used by routes, the last
/// JWT issuer of a tenant with JWT routes, a plan an API key or its tenant is on, a tenant
/// that still has resources unless `?cascade=true`).
pub async fn delete<R: Resource>(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Path(raw): Path<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> Result<Response, ApiError> {
    let id = path_id(&raw, R::NAME)?;
    let id_s = id.to_string();
    let mut client = st.pool.get().await?;
    let owner = owner_of::<R>(&client, id)
        .await?
        .ok_or_else(|| ApiError::not_found(R::NAME))?;
    let mut w = st.config_write(&mut client, owner).await?;
    let idx = visible_index::<R>(w.candidate_mut(), &id_s, &p)?;
    let tenant = R::items(w.candidate_mut())[idx].tenant_id().to_string();
    R::items(w.candidate_mut()).remove(idx);
    if R::TENANT_COL == "id" {
        p.require_superadmin()?;
        let row = w
            .tx()
            .query_one(
                "SELECT (SELECT count(*) FROM origins WHERE tenant_id = $1),
                        (SELECT count(*) FROM routes WHERE tenant_id = $1),
                        (SELECT count(*) FROM api_keys WHERE tenant_id = $1),
                        (SELECT count(*) FROM jwt_issuers WHERE tenant_id = $1),
                        (SELECT count(*) FROM users WHERE tenant_id = $1),
                        (SELECT count(*) FROM plans WHERE tenant_id = $1)",
                &[&id],
            )
            .await?;
        let counts: Vec<i64> = (0..6).map(|i| row.get(i)).collect();
        if counts.iter().any(|c| *c > 0) && q.cascade != Some(true) {
            return Err(ApiError::Conflict(
                format!(
                    "the tenant still has {} origins, {} routes, {} API keys, {} JWT issuers, {} users and {} plans; delete them first or pass ?cascade=true",
                    counts[0], counts[1], counts[2], counts[3], counts[4], counts[5]
                ),
                vec![],
            ));
        }
        let cfg = w.candidate_mut();
        cfg.origins.retain(|o| o.tenant_id != id_s);
        cfg.routes.retain(|o| o.tenant_id != id_s);
        cfg.api_keys.retain(|o| o.tenant_id != id_s);
        cfg.jwt_issuers.retain(|o| o.tenant_id != id_s);
        cfg.plans.retain(|o| o.tenant_id != id_s);
    } else if q.cascade.is_some() {
        return Err(ApiError::BadRequest(
            "cascade only applies to tenants".into(),
        ));
    }
    let w = w.validate(Change::Delete)?;
    w.remove::<R>(id).await?;
    let version = w.commit(Some(tenant)).await?;
    Ok(written(StatusCode::NO_CONTENT, version, None))
}

/// One module of handlers per resource kind: each is a documented (`#[utoipa::path]`)
/// operation that the router serves, delegating to the generic handler above. `ops` picks
/// the operations the kind has (`create_tenant` and `delete_cascade` are the superadmin-only
/// `create` and the `delete` with `?cascade=` of tenants); the kind's
/// type and its API representation must be in scope where it is invoked.
///
/// ```text
/// resource_api! {
///     mod tenants: Tenant => StoredTenant,
///     tag "tenants", one "tenant", many "tenants", shown "tenant", shown_many "tenants",
///     path "/api/v1/tenants", item "/api/v1/tenants/{id}",
///     ops [list, get, create_tenant, put, patch, delete_cascade]
/// }
/// ```
macro_rules! resource_api {
    (
        mod $module:ident: $ty:ident => $stored:ident,
        tag $tag:literal, one $one:literal, many $many:literal,
        shown $shown:literal, shown_many $shown_many:literal,
        path $path:literal, item $item:literal,
        ops [$($op:ident),+ $(,)?]
    ) => {
        #[doc = concat!("The documented handlers of `", $path, "`.")]
        pub mod $module {
            // `$ty` and `$stored` come from the invoking module.
            #[allow(unused_imports)]
            use super::*;
            #[allow(unused_imports)]
            use $crate::api::resources::{DeleteQuery, ListQuery, Page};
            #[allow(unused_imports)]
            use $crate::error::{ApiError, ApiQuery, ErrorBody, JsonObject};
            #[allow(unused_imports)]
            use $crate::{auth::Principal, AppState};
            #[allow(unused_imports)]
            use axum::extract::{Path, State};
            #[allow(unused_imports)]
            use axum::{response::Response, Json};
            #[allow(unused_imports)]
            use serde_json::Value;
            #[allow(unused_imports)]
            use std::sync::Arc;
            #[allow(unused_imports)]
            use uuid::Uuid;
            $(
                $crate::api::resources::resource_api!(
                    @$op ($ty, $stored, $tag, $one, $many, $shown, $shown_many, $path, $item)
                );
            )+
        }
    };
    (@list ($ty:ident, $stored:ident, $tag:literal, $one:literal, $many:literal, $shown:literal, $shown_many:literal, $path:literal, $item:literal)) => {
        #[utoipa::path(
            get,
            path = $path,
            tag = $tag,
            operation_id = concat!("list_", $many),
            summary = concat!("List ", $shown_many),
            description = concat!("A page of the ", $shown_many, " the caller may see, ordered by id."),
            params(ListQuery),
            responses(
                (status = 200, description = "A page", body = Page<$stored>),
                (status = 404, description = "`tenant_id` names a tenant the caller may not see", body = ErrorBody),
            )
        )]
        pub async fn list(
            st: State<Arc<AppState>>,
            p: Principal,
            q: ApiQuery<ListQuery>,
        ) -> Result<Json<Page<Value>>, ApiError> {
            $crate::api::resources::list::<$ty>(st, p, q).await
        }
    };
    (@get ($ty:ident, $stored:ident, $tag:literal, $one:literal, $many:literal, $shown:literal, $shown_many:literal, $path:literal, $item:literal)) => {
        #[utoipa::path(
            get,
            path = $item,
            tag = $tag,
            operation_id = concat!("get_", $one),
            summary = concat!("Get one ", $shown),
            params(("id" = Uuid, Path, description = concat!("Id of the ", $shown))),
            responses(
                (status = 200, description = concat!("The ", $shown), body = $stored),
                (status = 404, description = concat!("No such ", $shown, " (or another tenant's)"), body = ErrorBody),
            )
        )]
        pub async fn get(
            st: State<Arc<AppState>>,
            p: Principal,
            id: Path<String>,
        ) -> Result<Json<Value>, ApiError> {
            $crate::api::resources::get_one::<$ty>(st, p, id).await
        }
    };
    (@create ($ty:ident, $stored:ident, $tag:literal, $one:literal, $many:literal, $shown:literal, $shown_many:literal, $path:literal, $item:literal)) => {
        #[utoipa::path(
            post,
            path = $path,
            tag = $tag,
            operation_id = concat!("create_", $one),
            summary = concat!("Create a ", $shown),
            description = concat!(
                "The server assigns the id; `tenant_id` defaults to the caller's tenant for a \
                 tenant_admin token. The whole configuration is validated with the new ",
                $shown, " by the proxies' own rules before anything is written."
            ),
            request_body = $ty,
            responses(
                (status = 201, description = concat!("The new ", $shown), body = $stored,
                    headers(("x-config-version" = i64, description = "The config version this write committed"))),
                (status = 409, description = "A value is already in use", body = ErrorBody),
                (status = 422, description = "Validation failed; `fields` lists each problem", body = ErrorBody),
            )
        )]
        pub async fn create(
            st: State<Arc<AppState>>,
            p: Principal,
            body: JsonObject,
        ) -> Result<Response, ApiError> {
            $crate::api::resources::create::<$ty>(st, p, body).await
        }
    };
    (@create_tenant ($ty:ident, $stored:ident, $tag:literal, $one:literal, $many:literal, $shown:literal, $shown_many:literal, $path:literal, $item:literal)) => {
        #[utoipa::path(
            post,
            path = $path,
            tag = $tag,
            operation_id = concat!("create_", $one),
            summary = concat!("Create a ", $shown),
            description = concat!(
                "Superadmins only. The server assigns the id. The whole configuration is \
                 validated with the new ", $shown, " by the proxies' own rules before anything \
                 is written."
            ),
            request_body = $ty,
            responses(
                (status = 201, description = concat!("The new ", $shown), body = $stored,
                    headers(("x-config-version" = i64, description = "The config version this write committed"))),
                (status = 403, description = "Not a superadmin", body = ErrorBody),
                (status = 409, description = "A subdomain or custom host is already in use", body = ErrorBody),
                (status = 422, description = "Validation failed; `fields` lists each problem", body = ErrorBody),
            )
        )]
        pub async fn create(
            st: State<Arc<AppState>>,
            p: Principal,
            body: JsonObject,
        ) -> Result<Response, ApiError> {
            $crate::api::resources::create::<$ty>(st, p, body).await
        }
    };
    (@put ($ty:ident, $stored:ident, $tag:literal, $one:literal, $many:literal, $shown:literal, $shown_many:literal, $path:literal, $item:literal)) => {
        #[utoipa::path(
            put,
            path = $item,
            tag = $tag,
            operation_id = concat!("replace_", $one),
            summary = concat!("Replace a ", $shown),
            description = "Absent fields take their defaults; `id` and `tenant_id` cannot change.",
            params(("id" = Uuid, Path, description = concat!("Id of the ", $shown))),
            request_body = $ty,
            responses(
                (status = 200, description = concat!("The replaced ", $shown), body = $stored,
                    headers(("x-config-version" = i64, description = "The config version this write committed"))),
                (status = 404, description = concat!("No such ", $shown, " (or another tenant's)"), body = ErrorBody),
                (status = 409, description = "A value is already in use", body = ErrorBody),
                (status = 422, description = "Validation failed; `fields` lists each problem", body = ErrorBody),
            )
        )]
        pub async fn put(
            st: State<Arc<AppState>>,
            p: Principal,
            id: Path<String>,
            body: JsonObject,
        ) -> Result<Response, ApiError> {
            $crate::api::resources::put::<$ty>(st, p, id, body).await
        }
    };
    (@patch ($ty:ident, $stored:ident, $tag:literal, $one:literal, $many:literal, $shown:literal, $shown_many:literal, $path:literal, $item:literal)) => {
        #[utoipa::path(
            patch,
            path = $item,
            tag = $tag,
            operation_id = concat!("patch_", $one),
            summary = concat!("Change a ", $shown),
            description = concat!(
                "A JSON merge patch (RFC 7396) of the ", $shown,
                ": objects merge, `null` removes a field, anything else replaces it."
            ),
            params(("id" = Uuid, Path, description = concat!("Id of the ", $shown))),
            request_body(content = Object, description = "The fields to change"),
            responses(
                (status = 200, description = concat!("The changed ", $shown), body = $stored,
                    headers(("x-config-version" = i64, description = "The config version this write committed"))),
                (status = 404, description = concat!("No such ", $shown, " (or another tenant's)"), body = ErrorBody),
                (status = 409, description = "A value is already in use", body = ErrorBody),
                (status = 422, description = "Validation failed; `fields` lists each problem", body = ErrorBody),
            )
        )]
        pub async fn patch(
            st: State<Arc<AppState>>,
            p: Principal,
            id: Path<String>,
            body: JsonObject,
        ) -> Result<Response, ApiError> {
            $crate::api::resources::patch::<$ty>(st, p, id, body).await
        }
    };
    (@delete ($ty:ident, $stored:ident, $tag:literal, $one:literal, $many:literal, $shown:literal, $shown_many:literal, $path:literal, $item:literal)) => {
        #[utoipa::path(
            delete,
            path = $item,
            tag = $tag,
            operation_id = concat!("delete_", $one),
            summary = concat!("Delete a ", $shown),
            params(("id" = Uuid, Path, description = concat!("Id of the ", $shown))),
            responses(
                (status = 204, description = "Deleted",
                    headers(("x-config-version" = i64, description = "The config version this write committed"))),
                (status = 404, description = concat!("No such ", $shown, " (or another tenant's)"), body = ErrorBody),
                (status = 409, description = "Still in use: the configuration would be left invalid", body = ErrorBody),
            )
        )]
        pub async fn delete(
            st: State<Arc<AppState>>,
            p: Principal,
            id: Path<String>,
            q: ApiQuery<DeleteQuery>,
        ) -> Result<Response, ApiError> {
            $crate::api::resources::delete::<$ty>(st, p, id, q).await
        }
    };
    (@delete_cascade ($ty:ident, $stored:ident, $tag:literal, $one:literal, $many:literal, $shown:literal, $shown_many:literal, $path:literal, $item:literal)) => {
        #[utoipa::path(
            delete,
            path = $item,
            tag = $tag,
            operation_id = concat!("delete_", $one),
            summary = concat!("Delete a ", $shown),
            description = "Superadmins only. A tenant that still has resources is only deleted with `?cascade=true`.",
            params(("id" = Uuid, Path, description = concat!("Id of the ", $shown)), DeleteQuery),
            responses(
                (status = 204, description = "Deleted",
                    headers(("x-config-version" = i64, description = "The config version this write committed"))),
                (status = 403, description = "Not a superadmin", body = ErrorBody),
                (status = 404, description = concat!("No such ", $shown), body = ErrorBody),
                (status = 409, description = "The tenant still has resources and `cascade` is not set", body = ErrorBody),
            )
        )]
        pub async fn delete(
            st: State<Arc<AppState>>,
            p: Principal,
            id: Path<String>,
            q: ApiQuery<DeleteQuery>,
        ) -> Result<Response, ApiError> {
            $crate::api::resources::delete::<$ty>(st, p, id, q).await
        }
    };
}
pub(crate) use resource_api;

resource_api! {
    mod tenants: Tenant => StoredTenant,
    tag "tenants", one "tenant", many "tenants", shown "tenant", shown_many "tenants",
    path "/api/v1/tenants", item "/api/v1/tenants/{id}",
    ops [list, get, create_tenant, put, patch, delete_cascade]
}

resource_api! {
    mod origins: Origin => StoredOrigin,
    tag "origins", one "origin", many "origins", shown "origin", shown_many "origins",
    path "/api/v1/origins", item "/api/v1/origins/{id}",
    ops [list, get, create, put, patch, delete]
}

resource_api! {
    mod routes: Route => StoredRoute,
    tag "routes", one "route", many "routes", shown "route", shown_many "routes",
    path "/api/v1/routes", item "/api/v1/routes/{id}",
    ops [list, get, create, put, patch, delete]
}

resource_api! {
    mod plans: Plan => StoredPlan,
    tag "plans", one "plan", many "plans", shown "plan", shown_many "plans",
    path "/api/v1/plans", item "/api/v1/plans/{id}",
    ops [list, get, create, put, patch, delete]
}

resource_api! {
    mod jwt_issuers: JwtIssuer => StoredJwtIssuer,
    tag "jwt-issuers", one "jwt_issuer", many "jwt_issuers", shown "JWT issuer",
    shown_many "JWT issuers",
    path "/api/v1/jwt-issuers", item "/api/v1/jwt-issuers/{id}",
    ops [list, get, create, put, patch, delete]
}
