//! Generic CRUD handlers for the configuration resources (tenants, origins, routes, JWT
//! issuers, and the shared parts of API keys).

use super::written;
use crate::auth::Principal;
use crate::error::{parse, path_id, ApiError, ApiQuery, JsonObject};
use crate::store::{begin_write, check, fetch_doc, list_docs, Change, Resource, Table};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use uuid::Uuid;

/// `?limit=&cursor=&tenant_id=` of list endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    pub tenant_id: Option<String>,
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
) -> Result<Json<Value>, ApiError> {
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
    let items: Vec<Value> = rows.into_iter().map(|(_, v)| v).collect();
    Ok(Json(json!({"items": items, "next_cursor": next})))
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

/// Write `item` as a new `R` in one transaction: validate the whole configuration with it,
/// insert, bump the version, commit, announce. Returns (version, API representation).
pub async fn insert_new<R: Resource>(st: &AppState, item: R) -> Result<(i64, Value), ApiError> {
    let id = Uuid::parse_str(item.id()).map_err(|_| ApiError::Internal("bad new id".into()))?;
    let mut client = st.pool.get().await?;
    let tx = client.transaction().await?;
    let (version, mut cfg) = begin_write(&tx, &st.cfg).await?;
    let before = cfg.clone();
    R::items(&mut cfg).push(item.clone());
    let idx = R::items(&mut cfg).len() - 1;
    check(&before, &cfg, Change::Upsert(R::KIND, idx))?;
    item.upsert(&tx).await?;
    let doc = fetch_doc::<R>(&*tx, id, None)
        .await?
        .ok_or_else(|| ApiError::Internal("the new row is gone".into()))?;
    tx.commit().await?;
    st.announce(version, Some(item.tenant_id().to_string()))
        .await;
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
    let id_s = id.to_string();
    let mut client = st.pool.get().await?;
    let tx = client.transaction().await?;
    let (version, mut cfg) = begin_write(&tx, &st.cfg).await?;
    let before = cfg.clone();
    let idx = visible_index::<R>(&mut cfg, &id_s, &p)?;
    let current = match serde_json::to_value(&R::items(&mut cfg)[idx]) {
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
    R::items(&mut cfg)[idx] = item.clone();
    check(&before, &cfg, Change::Upsert(R::KIND, idx))?;
    item.upsert(&tx).await?;
    let doc = fetch_doc::<R>(&*tx, id, None)
        .await?
        .ok_or_else(|| ApiError::not_found(R::NAME))?;
    tx.commit().await?;
    st.announce(version, Some(item.tenant_id().to_string()))
        .await;
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    pub cascade: Option<bool>,
}

/// `DELETE /R/{id}`: 409 when something still needs it (an origin used by routes, the last
/// JWT issuer of a tenant with JWT routes, a tenant that still has resources unless
/// `?cascade=true`).
pub async fn delete<R: Resource>(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Path(raw): Path<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> Result<Response, ApiError> {
    let id = path_id(&raw, R::NAME)?;
    let id_s = id.to_string();
    let mut client = st.pool.get().await?;
    let tx = client.transaction().await?;
    let (version, mut cfg) = begin_write(&tx, &st.cfg).await?;
    let before = cfg.clone();
    let idx = visible_index::<R>(&mut cfg, &id_s, &p)?;
    let tenant = R::items(&mut cfg)[idx].tenant_id().to_string();
    R::items(&mut cfg).remove(idx);
    if R::TENANT_COL == "id" {
        p.require_superadmin()?;
        let row = tx
            .query_one(
                "SELECT (SELECT count(*) FROM origins WHERE tenant_id = $1),
                        (SELECT count(*) FROM routes WHERE tenant_id = $1),
                        (SELECT count(*) FROM api_keys WHERE tenant_id = $1),
                        (SELECT count(*) FROM jwt_issuers WHERE tenant_id = $1),
                        (SELECT count(*) FROM users WHERE tenant_id = $1)",
                &[&id],
            )
            .await?;
        let counts: Vec<i64> = (0..5).map(|i| row.get(i)).collect();
        if counts.iter().any(|c| *c > 0) && q.cascade != Some(true) {
            return Err(ApiError::Conflict(
                format!(
                    "the tenant still has {} origins, {} routes, {} API keys, {} JWT issuers and {} users; delete them first or pass ?cascade=true",
                    counts[0], counts[1], counts[2], counts[3], counts[4]
                ),
                vec![],
            ));
        }
        cfg.origins.retain(|o| o.tenant_id != id_s);
        cfg.routes.retain(|o| o.tenant_id != id_s);
        cfg.api_keys.retain(|o| o.tenant_id != id_s);
        cfg.jwt_issuers.retain(|o| o.tenant_id != id_s);
    } else if q.cascade.is_some() {
        return Err(ApiError::BadRequest(
            "cascade only applies to tenants".into(),
        ));
    }
    check(&before, &cfg, Change::Delete)?;
    tx.execute(&format!("DELETE FROM {} WHERE id = $1", R::KIND), &[&id])
        .await?;
    tx.commit().await?;
    st.announce(version, Some(tenant)).await;
    Ok(written(StatusCode::NO_CONTENT, version, None))
}
