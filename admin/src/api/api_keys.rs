//! API keys: create (plaintext returned once), rotate, revoke, and the status of the key's
//! quotas. Reads, `PATCH` (name, scopes, expires_at, plan_id) and `DELETE` are the generic
//! handlers ([`crud`]).

use super::resources::{insert_new, resolve_tenant, resource_api, StoredApiKey};
use super::usage::rfc3339;
use super::written;
use crate::auth::{generate_api_key, sha256_hex, Principal};
use crate::error::{parse, path_id, ApiError, ErrorBody, JsonObject, OptionalJsonObject};
use crate::store::{fetch_doc, owner_of};
use crate::write::Change;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use utoipa::ToSchema;
use uuid::Uuid;
use vantage_model::{
    quota_counter_key, ApiKey, Calendar, EnforcementMode, KeyStatus, Overage, Plan, QuotaPeriod,
    QuotaSubject,
};

resource_api! {
    mod crud: ApiKey => StoredApiKey,
    tag "api-keys", one "api_key", many "api_keys", shown "API key", shown_many "API keys",
    path "/api/v1/api-keys", item "/api/v1/api-keys/{id}",
    ops [list, get, patch, delete]
}

/// Body of `POST /api-keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// Owning tenant; defaults to the caller's tenant for a tenant_admin token.
    #[schema(value_type = Option<Uuid>)]
    pub tenant_id: Option<String>,
    /// Example: `CI pipeline`.
    pub name: String,
    /// Example: `[orders:read, orders:write]`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// RFC 3339 time after which the key is refused. Example: `2027-01-01T00:00:00Z`.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// Import an existing key by its lower-case hex SHA-256 instead of generating one.
    pub key_hash: Option<String>,
    /// Visible start of an imported key. Example: `vk_live_3fA9`.
    pub prefix: Option<String>,
    /// The key's plan, a plan of the same tenant (`/api/v1/plans`).
    #[schema(value_type = Option<Uuid>)]
    pub plan_id: Option<String>,
}

/// A key just created or rotated: the only answer that carries the key itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedApiKey {
    #[serde(flatten)]
    pub stored: StoredApiKey,
    /// The key in plaintext, shown this once (absent for an imported key).
    pub key: Option<String>,
}

/// The visible start of a key (`vk_live_` and four more characters).
fn visible_prefix(key: &str) -> String {
    key.chars().take(12).collect()
}

/// Where the key with `id` is in `cfg`, if the caller may see it (else 404).
fn visible_key(cfg: &vantage_model::Config, id: &str, p: &Principal) -> Result<usize, ApiError> {
    cfg.api_keys
        .iter()
        .position(|k| k.id == id && p.sees(&k.tenant_id))
        .ok_or_else(|| ApiError::not_found("API key"))
}

/// `POST /api-keys`: `{tenant_id?, name, scopes?, expires_at?, plan_id?}` creates a new random key and
/// returns it once as `key`; only its SHA-256 is stored. Giving `key_hash` (and optionally
/// `prefix`) instead imports an existing key.
#[utoipa::path(
    post,
    path = "/api/v1/api-keys",
    tag = "api-keys",
    operation_id = "create_api_key",
    summary = "Create an API key",
    description = "Generates a new random key and returns it once as `key`; only its SHA-256 \
        is stored. With `key_hash` (and optionally `prefix`) an existing key is imported instead.",
    request_body = NewApiKey,
    responses(
        (status = 201, description = "The new key", body = IssuedApiKey,
            headers(("x-config-version" = i64, description = "The config version this write committed"))),
        (status = 409, description = "The same key already exists", body = ErrorBody),
        (status = 422, description = "Validation failed; `fields` lists each problem (e.g. \
            `plan_id` naming no plan of the tenant)", body = ErrorBody),
    )
)]
pub async fn create(
    State(st): State<Arc<AppState>>,
    p: Principal,
    JsonObject(mut obj): JsonObject,
) -> Result<Response, ApiError> {
    for f in ["id", "status"] {
        if obj.contains_key(f) {
            return Err(ApiError::BadRequest(format!("{f} is set by the server")));
        }
    }
    if obj.contains_key("prefix") && !obj.contains_key("key_hash") {
        return Err(ApiError::BadRequest(
            "prefix is set by the server for generated keys".into(),
        ));
    }
    let tenant = resolve_tenant(&p, obj.remove("tenant_id"))?;
    obj.insert("tenant_id".into(), Value::String(tenant.clone()));
    let new: NewApiKey = parse(Value::Object(obj))?;
    let (key_hash, prefix, plaintext) = match new.key_hash {
        Some(hash) => (hash, new.prefix.unwrap_or_default(), None),
        None => {
            let key = generate_api_key();
            (sha256_hex(&key), visible_prefix(&key), Some(key))
        }
    };
    let item = ApiKey {
        id: Uuid::new_v4().to_string(),
        tenant_id: tenant,
        name: new.name,
        key_hash,
        prefix,
        scopes: new.scopes,
        expires_at: new.expires_at,
        status: KeyStatus::Active,
        plan_id: new.plan_id,
    };
    let (version, mut doc) = insert_new(&st, item).await?;
    if let (Some(key), Value::Object(m)) = (plaintext, &mut doc) {
        m.insert("key".into(), Value::String(key));
    }
    Ok(written(StatusCode::CREATED, version, Some(doc)))
}

/// Body of `POST /api-keys/{id}/rotate`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// Keep the old key working this many seconds (0, the default: revoke it now).
    #[serde(default)]
    grace_seconds: u32,
}

/// `POST /api-keys/{id}/rotate` `{grace_seconds?}`: a new key with the same tenant, name,
/// scopes and expiry (returned once as `key`, `rotated_from` naming the old one); the old
/// key is revoked now, or expires after `grace_seconds`.
#[utoipa::path(
    post,
    path = "/api/v1/api-keys/{id}/rotate",
    tag = "api-keys",
    operation_id = "rotate_api_key",
    summary = "Rotate an API key",
    description = "A new key with the same tenant, name, scopes and expiry replaces this one: \
        returned once as `key`, with `rotated_from` naming the old key. The old key is revoked \
        now, or keeps working for `grace_seconds`.",
    params(("id" = Uuid, Path, description = "Id of the API key")),
    request_body(content = Option<RotateBody>, description = "Optional; an empty body means `{}`"),
    responses(
        (status = 201, description = "The new key", body = IssuedApiKey,
            headers(("x-config-version" = i64, description = "The config version this write committed"))),
        (status = 404, description = "No such API key (or another tenant's)", body = ErrorBody),
        (status = 409, description = "The key is revoked", body = ErrorBody),
    )
)]
pub async fn rotate(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Path(raw): Path<String>,
    OptionalJsonObject(body): OptionalJsonObject,
) -> Result<Response, ApiError> {
    let id = path_id(&raw, "API key")?;
    let body: RotateBody = parse(Value::Object(body))?;
    let id_s = id.to_string();
    let mut client = st.pool.get().await?;
    let owner = owner_of::<ApiKey>(&client, id)
        .await?
        .ok_or_else(|| ApiError::not_found("API key"))?;
    let mut w = st.config_write(&mut client, owner).await?;
    let idx = visible_key(w.candidate(), &id_s, &p)?;
    let old = w.candidate().api_keys[idx].clone();
    if old.status == KeyStatus::Revoked {
        return Err(ApiError::Conflict(
            "a revoked key cannot be rotated".into(),
            vec![],
        ));
    }
    let key = generate_api_key();
    let new_id = Uuid::new_v4();
    let new = ApiKey {
        id: new_id.to_string(),
        key_hash: sha256_hex(&key),
        prefix: visible_prefix(&key),
        status: KeyStatus::Active,
        ..old.clone()
    };
    let mut retired = old.clone();
    if body.grace_seconds == 0 {
        retired.status = KeyStatus::Revoked;
    } else {
        let until = SystemTime::now() + Duration::from_secs(u64::from(body.grace_seconds));
        let earlier = old
            .expires_at
            .as_deref()
            .and_then(|e| humantime::parse_rfc3339_weak(e).ok())
            .is_some_and(|e| e < until);
        if !earlier {
            retired.expires_at = Some(humantime::format_rfc3339_seconds(until).to_string());
        }
    }
    let keys = &mut w.candidate_mut().api_keys;
    keys[idx] = retired.clone();
    keys.push(new.clone());
    let new_idx = keys.len() - 1;
    let w = w.validate(Change::Upsert("api_keys", new_idx))?;
    w.save(&retired).await?;
    w.save(&new).await?;
    w.tx()
        .execute(
            "UPDATE api_keys SET rotated_from = $2 WHERE id = $1",
            &[&new_id, &id],
        )
        .await?;
    if let Ok(tenant) = Uuid::parse_str(&old.tenant_id) {
        crate::events::emit(
            w.tx(),
            tenant,
            crate::events::KEY_ROTATED,
            serde_json::json!({
                "api_key_id": new.id, "rotated_from": old.id, "name": new.name,
                "prefix": new.prefix, "grace_seconds": body.grace_seconds,
            }),
        )
        .await?;
    }
    let mut doc = fetch_doc::<ApiKey>(w.tx(), new_id, None)
        .await?
        .ok_or_else(|| ApiError::Internal("the new key is gone".into()))?;
    let version = w.commit(Some(old.tenant_id.clone())).await?;
    if let Value::Object(m) = &mut doc {
        m.insert("key".into(), Value::String(key));
    }
    Ok(written(StatusCode::CREATED, version, Some(doc)))
}

/// `POST /api-keys/{id}/revoke`: the key stops working (idempotent).
#[utoipa::path(
    post,
    path = "/api/v1/api-keys/{id}/revoke",
    tag = "api-keys",
    operation_id = "revoke_api_key",
    summary = "Revoke an API key",
    description = "The key stops working. Revoking a revoked key changes nothing.",
    params(("id" = Uuid, Path, description = "Id of the API key")),
    responses(
        (status = 200, description = "The revoked key", body = StoredApiKey,
            headers(("x-config-version" = i64, description = "The config version this write committed"))),
        (status = 404, description = "No such API key (or another tenant's)", body = ErrorBody),
    )
)]
pub async fn revoke(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_id(&raw, "API key")?;
    let mut client = st.pool.get().await?;
    let owner = owner_of::<ApiKey>(&client, id)
        .await?
        .ok_or_else(|| ApiError::not_found("API key"))?;
    let mut w = st.config_write(&mut client, owner).await?;
    let idx = visible_key(w.candidate(), &id.to_string(), &p)?;
    let key = &mut w.candidate_mut().api_keys[idx];
    key.status = KeyStatus::Revoked;
    let key = key.clone();
    let w = w.validate(Change::Upsert("api_keys", idx))?;
    w.save(&key).await?;
    let doc = fetch_doc::<ApiKey>(w.tx(), id, None)
        .await?
        .ok_or_else(|| ApiError::not_found("API key"))?;
    let version = w.commit(Some(key.tenant_id.clone())).await?;
    Ok(written(StatusCode::OK, version, Some(doc)))
}

/// The answer of `GET /api-keys/{id}/quota`.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyQuota {
    #[schema(value_type = Uuid)]
    pub key_id: String,
    /// The key's plan; `null` when the key is on no plan (and `quotas` is empty).
    pub plan: Option<QuotaPlan>,
    /// Each quota of the plan, in its current period.
    pub quotas: Vec<QuotaStatus>,
}

/// The plan of a key, as far as its quotas need.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaPlan {
    #[schema(value_type = Uuid)]
    pub id: String,
    /// Example: `pro`.
    pub name: String,
    /// The IANA time zone in which the periods begin. Example: `Europe/Berlin`.
    pub time_zone: String,
}

/// One quota of a key's plan in the current period, as the proxies count it.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaStatus {
    /// Example: `monthly`.
    pub name: String,
    /// Units per period. Example: `100000`.
    pub limit: i64,
    pub period: QuotaPeriod,
    /// Only routes of this quota group count. Example: `search`.
    pub group: Option<String>,
    pub overage: Overage,
    pub mode: EnforcementMode,
    /// Start of the current period (the full hour, local midnight or the first of the month
    /// in the plan's time zone), in UTC.
    #[schema(format = DateTime)]
    pub period_start: String,
    /// When the period ends and the count starts again, in UTC.
    #[schema(format = DateTime)]
    pub reset_at: String,
    /// Seconds until `reset_at` (at least 1).
    pub reset_in_s: u64,
    /// Units counted in this period (each request costs its route's `quota.cost`).
    pub used: i64,
    /// `max(0, limit - used)`.
    pub remaining: i64,
    /// `max(0, used - limit)`: units past the limit (served with `overage: allow` or in
    /// shadow mode).
    pub over: i64,
}

/// An instant in Unix seconds as RFC 3339 (UTC).
fn unix_rfc3339(s: i64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_secs(u64::try_from(s).unwrap_or(0)))
}

/// `GET /api-keys/{id}/quota`: the key's plan and, per quota, the current period and what
/// the proxies counted in it (the counters in Redis).
#[utoipa::path(
    get,
    path = "/api/v1/api-keys/{id}/quota",
    tag = "api-keys",
    operation_id = "api_key_quota",
    summary = "Quota status of an API key",
    description = "The key's plan and, for each quota of the plan, the current calendar period \
        in the plan's time zone, when it resets, and the units used and remaining, read from \
        the counters the proxies keep in Redis.",
    params(("id" = Uuid, Path, description = "Id of the API key")),
    responses(
        (status = 200, description = "The quota status", body = KeyQuota),
        (status = 404, description = "No such API key (or another tenant's)", body = ErrorBody),
        (status = 503, description = "No Redis is configured (`redis_url`), or Redis or the \
            database does not answer", body = ErrorBody),
    )
)]
pub async fn quota(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Path(raw): Path<String>,
) -> Result<Json<KeyQuota>, ApiError> {
    let id = path_id(&raw, "API key")?;
    let c = st.pool.get().await?;
    let row = c
        .query_opt(
            "SELECT k.tenant_id::text, CASE WHEN p.id IS NOT NULL THEN vantage_plan_json(p) END
               FROM api_keys k LEFT JOIN plans p ON p.id = k.plan_id
              WHERE k.id = $1 AND ($2::uuid IS NULL OR k.tenant_id = $2)",
            &[&id, &p.tenant],
        )
        .await?
        .ok_or_else(|| ApiError::not_found("API key"))?;
    drop(c);
    let counters = st.counters.as_ref().ok_or_else(|| {
        ApiError::Unavailable(
            "no Redis is configured (redis_url): quota counters cannot be read".into(),
        )
    })?;
    let tenant: String = row.get(0);
    let key_id = id.to_string();
    let Some(plan) = row.get::<_, Option<Value>>(1) else {
        return Ok(Json(KeyQuota {
            key_id,
            plan: None,
            quotas: Vec::new(),
        }));
    };
    let plan: Plan = serde_json::from_value(plan)
        .map_err(|e| ApiError::Internal(format!("vantage_plan_json() does not parse: {e}")))?;
    let calendar = Calendar::new(&plan.time_zone)
        .map_err(|e| ApiError::Internal(format!("plan {}: {e}", plan.id)))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let subject = QuotaSubject::Key(key_id.clone()).label();
    // Every quota has a period (validation requires one).
    let periods: Vec<_> = plan
        .quotas
        .iter()
        .filter_map(|q| {
            q.period
                .map(|period| (q, period, calendar.window(period, now)))
        })
        .collect();
    let keys: Vec<String> = periods
        .iter()
        .map(|(q, _, w)| {
            quota_counter_key(
                counters.prefix(),
                &tenant,
                &plan.id,
                &q.name,
                &subject,
                w.start,
            )
        })
        .collect();
    let used = counters.read(&keys).await?;
    let quotas = periods
        .into_iter()
        .zip(used)
        .map(|((q, period, w), used)| QuotaStatus {
            name: q.name.clone(),
            limit: q.limit,
            period,
            group: q.group.clone(),
            overage: q.overage,
            mode: q.mode,
            period_start: unix_rfc3339(w.start),
            reset_at: unix_rfc3339(w.end),
            reset_in_s: w.seconds_left(now),
            used,
            remaining: q.limit.saturating_sub(used).max(0),
            over: used.saturating_sub(q.limit).max(0),
        })
        .collect();
    Ok(Json(KeyQuota {
        key_id,
        plan: Some(QuotaPlan {
            id: plan.id,
            name: plan.name,
            time_zone: plan.time_zone,
        }),
        quotas,
    }))
}
