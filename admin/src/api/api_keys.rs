//! API keys: create (plaintext returned once), rotate, revoke. Reads, `PATCH` (name,
//! scopes, expires_at) and `DELETE` are the generic handlers.

use super::resources::{insert_new, resolve_tenant};
use super::written;
use crate::auth::{generate_api_key, sha256_hex, Principal};
use crate::error::{parse, path_id, ApiError, JsonObject, OptionalJsonObject};
use crate::store::{begin_write, check, fetch_doc, Change, Resource};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use uuid::Uuid;
use vantage_model::{ApiKey, KeyStatus};

/// The visible start of a key (`vk_live_` and four more characters).
fn visible_prefix(key: &str) -> String {
    key.chars().take(12).collect()
}

/// `POST /api-keys`: `{tenant_id?, name, scopes?, expires_at?}` creates a new random key and
/// returns it once as `key`; only its SHA-256 is stored. Giving `key_hash` (and optionally
/// `prefix`) instead imports an existing key.
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
    let plaintext = if obj.contains_key("key_hash") {
        None
    } else {
        if obj.contains_key("prefix") {
            return Err(ApiError::BadRequest(
                "prefix is set by the server for generated keys".into(),
            ));
        }
        let key = generate_api_key();
        obj.insert("key_hash".into(), Value::String(sha256_hex(&key)));
        obj.insert("prefix".into(), Value::String(visible_prefix(&key)));
        Some(key)
    };
    obj.insert("id".into(), Value::String(Uuid::new_v4().to_string()));
    let tenant = resolve_tenant(&p, obj.remove("tenant_id"))?;
    obj.insert("tenant_id".into(), Value::String(tenant));
    let item: ApiKey = parse(Value::Object(obj))?;
    let (version, mut doc) = insert_new(&st, item).await?;
    if let (Some(key), Value::Object(m)) = (plaintext, &mut doc) {
        m.insert("key".into(), Value::String(key));
    }
    Ok(written(StatusCode::CREATED, version, Some(doc)))
}

/// Body of `POST /api-keys/{id}/rotate`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    /// Keep the old key working this many seconds (0, the default: revoke it now).
    #[serde(default)]
    grace_seconds: u32,
}

/// `POST /api-keys/{id}/rotate` `{grace_seconds?}`: a new key with the same tenant, name,
/// scopes and expiry (returned once as `key`, `rotated_from` naming the old one); the old
/// key is revoked now, or expires after `grace_seconds`.
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
    let tx = client.transaction().await?;
    let (version, mut cfg) = begin_write(&tx, &st.cfg).await?;
    let before = cfg.clone();
    let idx = cfg
        .api_keys
        .iter()
        .position(|k| k.id == id_s && p.sees(&k.tenant_id))
        .ok_or_else(|| ApiError::not_found("API key"))?;
    let old = cfg.api_keys[idx].clone();
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
    cfg.api_keys[idx] = retired.clone();
    cfg.api_keys.push(new.clone());
    let new_idx = cfg.api_keys.len() - 1;
    check(&before, &cfg, Change::Upsert("api_keys", new_idx))?;
    retired.upsert(&tx).await?;
    new.upsert(&tx).await?;
    tx.execute(
        "UPDATE api_keys SET rotated_from = $2 WHERE id = $1",
        &[&new_id, &id],
    )
    .await?;
    let mut doc = fetch_doc::<ApiKey>(&*tx, new_id, None)
        .await?
        .ok_or_else(|| ApiError::Internal("the new key is gone".into()))?;
    tx.commit().await?;
    st.announce(version, Some(old.tenant_id.clone())).await;
    if let Value::Object(m) = &mut doc {
        m.insert("key".into(), Value::String(key));
    }
    Ok(written(StatusCode::CREATED, version, Some(doc)))
}

/// `POST /api-keys/{id}/revoke`: the key stops working (idempotent).
pub async fn revoke(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_id(&raw, "API key")?;
    let id_s = id.to_string();
    let mut client = st.pool.get().await?;
    let tx = client.transaction().await?;
    let (version, mut cfg) = begin_write(&tx, &st.cfg).await?;
    let before = cfg.clone();
    let idx = cfg
        .api_keys
        .iter()
        .position(|k| k.id == id_s && p.sees(&k.tenant_id))
        .ok_or_else(|| ApiError::not_found("API key"))?;
    cfg.api_keys[idx].status = KeyStatus::Revoked;
    let key = cfg.api_keys[idx].clone();
    check(&before, &cfg, Change::Upsert("api_keys", idx))?;
    key.upsert(&tx).await?;
    let doc = fetch_doc::<ApiKey>(&*tx, id, None)
        .await?
        .ok_or_else(|| ApiError::not_found("API key"))?;
    tx.commit().await?;
    st.announce(version, Some(key.tenant_id.clone())).await;
    Ok(written(StatusCode::OK, version, Some(doc)))
}
