//! Reading the configuration from Postgres, and the rows of each resource kind: their API
//! representation and how they are written back (through a [`crate::write::UnitOfWork`]).

use crate::error::ApiError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio_postgres::{Client, Transaction};
use uuid::Uuid;
use vantage_model::{ApiKey, Config, JwtIssuer, Origin, Plan, Route, Tenant};

/// The whole configuration, as the proxies read it.
pub async fn load_config(tx: &Transaction<'_>) -> Result<Config, ApiError> {
    let row = tx.query_one("SELECT vantage_config()", &[]).await?;
    let mut v: Value = row.get(0);
    let cfg = v.get_mut("config").map(Value::take).unwrap_or_default();
    serde_json::from_value(cfg)
        .map_err(|e| ApiError::Internal(format!("vantage_config() does not parse: {e}")))
}

/// What a write concerning `scope` is checked against. With a tenant: every tenant row
/// (subdomains, custom hosts and Clerk organisations are unique fleet-wide; the other
/// tenants' plan bindings are left out, their plans being theirs) and that tenant's own
/// origins, routes, API keys, JWT issuers and plans, read through the `tenant_id` indexes —
/// so a write's cost grows with the tenant, not with the fleet. Without: everything.
pub async fn load_config_for(
    tx: &Transaction<'_>,
    scope: Option<Uuid>,
) -> Result<Config, ApiError> {
    let Some(tenant) = scope else {
        return load_config(tx).await;
    };
    let row = tx
        .query_one(
            "SELECT jsonb_build_object('tenants', COALESCE((
                        SELECT jsonb_agg(CASE WHEN x.id = $1 THEN vantage_tenant_json(x)
                                              ELSE vantage_tenant_json(x) - 'plan_id' END
                                         ORDER BY x.created_at, x.id)
                          FROM tenants x), '[]'))
                    || (vantage_tenant_config($1) - 'tenants')",
            &[&tenant],
        )
        .await?;
    let v: Value = row.get(0);
    serde_json::from_value(v)
        .map_err(|e| ApiError::Internal(format!("vantage_tenant_config() does not parse: {e}")))
}

/// The tenant owning the `R` with `id`, if there is such a row.
pub async fn owner_of<R: Table>(client: &Client, id: Uuid) -> Result<Option<Uuid>, ApiError> {
    let row = client
        .query_opt(
            &format!("SELECT {} FROM {} WHERE id = $1", R::TENANT_COL, R::KIND),
            &[&id],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

fn uuid_of(s: &str, path: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(s)
        .map_err(|_| ApiError::invalid_field(path, format!("'{s}' is not a known id")))
}

/// An optional plan reference as a UUID (`path` names the field when it is not one).
fn plan_of(plan_id: &Option<String>, path: &str) -> Result<Option<Uuid>, ApiError> {
    plan_id.as_deref().map(|p| uuid_of(p, path)).transpose()
}

fn json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn enum_str<T: Serialize>(v: &T) -> String {
    match json(v) {
        Value::String(s) => s,
        _ => String::new(),
    }
}

fn int_of(v: u64, path: &str) -> Result<i64, ApiError> {
    i64::try_from(v).map_err(|_| ApiError::invalid_field(path, "is too large"))
}

/// A table whose rows the API shows.
pub trait Table: Send + Sync + 'static {
    /// Table name (and `Config` field for configuration resources): `origins`.
    const KIND: &'static str;
    /// Singular, for messages (`origin`).
    const NAME: &'static str;
    /// SQL function giving the model JSON of a row (`vantage_origin_json`).
    const JSON_FN: &'static str;
    /// Extra `jsonb_build_object` pairs of the API representation, over the row alias `x`.
    const EXTRA_SQL: &'static str = "'created_at', x.created_at, 'updated_at', x.updated_at";
    /// Column holding the owning tenant.
    const TENANT_COL: &'static str = "tenant_id";
    /// Remove secrets from the API representation.
    fn redact(_doc: &mut Map<String, Value>) {}
}

/// A kind of configuration resource stored in its own table.
pub trait Resource: Table + Serialize + DeserializeOwned + Clone {
    /// Fields that updates may not change (besides `id` and `tenant_id`).
    const IMMUTABLE: &'static [&'static str] = &[];

    fn id(&self) -> &str;
    fn tenant_id(&self) -> &str;
    fn items(cfg: &mut Config) -> &mut Vec<Self>;
    /// Insert the row, or update it when the id exists.
    fn upsert(
        &self,
        tx: &Transaction<'_>,
    ) -> impl std::future::Future<Output = Result<(), ApiError>> + Send;
}

impl Table for Tenant {
    const KIND: &'static str = "tenants";
    const NAME: &'static str = "tenant";
    const JSON_FN: &'static str = "vantage_tenant_json";
    const TENANT_COL: &'static str = "id";
}

impl Resource for Tenant {
    fn id(&self) -> &str {
        &self.id
    }
    fn tenant_id(&self) -> &str {
        &self.id
    }
    fn items(cfg: &mut Config) -> &mut Vec<Self> {
        &mut cfg.tenants
    }
    async fn upsert(&self, tx: &Transaction<'_>) -> Result<(), ApiError> {
        let id = uuid_of(&self.id, "id")?;
        let plan = plan_of(&self.plan_id, "plan_id")?;
        tx.execute(
            "INSERT INTO tenants (id, name, subdomain, clerk_org_id, custom_hosts, access, rate_limits,
                                  plan_id, route_metrics)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, subdomain = EXCLUDED.subdomain,
               clerk_org_id = EXCLUDED.clerk_org_id, custom_hosts = EXCLUDED.custom_hosts,
               access = EXCLUDED.access, rate_limits = EXCLUDED.rate_limits,
               plan_id = EXCLUDED.plan_id, route_metrics = EXCLUDED.route_metrics,
               updated_at = now()",
            &[
                &id,
                &self.name,
                &self.subdomain,
                &self.clerk_org_id,
                &self.custom_hosts,
                &json(&self.access),
                &json(&self.rate_limits),
                &plan,
                &self.route_metrics,
            ],
        )
        .await?;
        Ok(())
    }
}

impl Table for Origin {
    const KIND: &'static str = "origins";
    const NAME: &'static str = "origin";
    const JSON_FN: &'static str = "vantage_origin_json";
}

impl Resource for Origin {
    fn id(&self) -> &str {
        &self.id
    }
    fn tenant_id(&self) -> &str {
        &self.tenant_id
    }
    fn items(cfg: &mut Config) -> &mut Vec<Self> {
        &mut cfg.origins
    }
    async fn upsert(&self, tx: &Transaction<'_>) -> Result<(), ApiError> {
        let id = uuid_of(&self.id, "id")?;
        let tenant = uuid_of(&self.tenant_id, "tenant_id")?;
        let retries = i32::try_from(self.retries)
            .map_err(|_| ApiError::invalid_field("retries", "is too large"))?;
        tx.execute(
            "INSERT INTO origins (id, tenant_id, targets, lb, hash_key, health_check, timeouts, retries,
                                  circuit_breaker, tls, protocol, preserve_host, affinity, discovery)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (id) DO UPDATE SET targets = EXCLUDED.targets, lb = EXCLUDED.lb,
               hash_key = EXCLUDED.hash_key, health_check = EXCLUDED.health_check,
               timeouts = EXCLUDED.timeouts, retries = EXCLUDED.retries,
               circuit_breaker = EXCLUDED.circuit_breaker, tls = EXCLUDED.tls,
               protocol = EXCLUDED.protocol, preserve_host = EXCLUDED.preserve_host,
               affinity = EXCLUDED.affinity, discovery = EXCLUDED.discovery, updated_at = now()",
            &[
                &id,
                &tenant,
                &json(&self.targets),
                &enum_str(&self.lb),
                &self.hash_key.as_ref().map(json),
                &self.health_check.as_ref().map(json),
                &json(&self.timeouts),
                &retries,
                &json(&self.circuit_breaker),
                &json(&self.tls),
                &enum_str(&self.protocol),
                &self.preserve_host,
                &self.affinity.as_ref().map(json),
                &self.discovery.as_ref().map(json),
            ],
        )
        .await?;
        Ok(())
    }
}

impl Table for Route {
    const KIND: &'static str = "routes";
    const NAME: &'static str = "route";
    const JSON_FN: &'static str = "vantage_route_json";
}

impl Resource for Route {
    fn id(&self) -> &str {
        &self.id
    }
    fn tenant_id(&self) -> &str {
        &self.tenant_id
    }
    fn items(cfg: &mut Config) -> &mut Vec<Self> {
        &mut cfg.routes
    }
    async fn upsert(&self, tx: &Transaction<'_>) -> Result<(), ApiError> {
        let id = uuid_of(&self.id, "id")?;
        let tenant = uuid_of(&self.tenant_id, "tenant_id")?;
        let origin = uuid_of(&self.origin_id, "origin_id")?;
        tx.execute(
            "INSERT INTO routes (id, tenant_id, origin_id, path_pattern, methods, headers, priority,
                                 strip_prefix, rewrite, request_headers, response_headers, compression,
                                 auth_mode, auth_scopes, strip_authorization, rate_limits, access, cache,
                                 quota, route_metrics, traffic)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                     $19, $20, $21)
             ON CONFLICT (id) DO UPDATE SET origin_id = EXCLUDED.origin_id,
               path_pattern = EXCLUDED.path_pattern, methods = EXCLUDED.methods,
               headers = EXCLUDED.headers, priority = EXCLUDED.priority,
               strip_prefix = EXCLUDED.strip_prefix, rewrite = EXCLUDED.rewrite,
               request_headers = EXCLUDED.request_headers, response_headers = EXCLUDED.response_headers,
               compression = EXCLUDED.compression, auth_mode = EXCLUDED.auth_mode,
               auth_scopes = EXCLUDED.auth_scopes, strip_authorization = EXCLUDED.strip_authorization,
               rate_limits = EXCLUDED.rate_limits, access = EXCLUDED.access, cache = EXCLUDED.cache,
               quota = EXCLUDED.quota, route_metrics = EXCLUDED.route_metrics,
               traffic = EXCLUDED.traffic, updated_at = now()",
            &[
                &id,
                &tenant,
                &origin,
                &self.path_pattern,
                &self.methods,
                &json(&self.headers),
                &self.priority,
                &self.strip_prefix,
                &self.rewrite.as_ref().map(json),
                &json(&self.request_headers),
                &json(&self.response_headers),
                &json(&self.compression),
                &enum_str(&self.auth.mode),
                &self.auth.scopes,
                &self.auth.strip_authorization,
                &json(&self.rate_limits),
                &json(&self.access),
                &json(&self.cache),
                &json(&self.quota),
                &self.route_metrics,
                &json(&self.traffic),
            ],
        )
        .await?;
        Ok(())
    }
}

impl Table for ApiKey {
    const KIND: &'static str = "api_keys";
    const NAME: &'static str = "API key";
    const JSON_FN: &'static str = "vantage_api_key_json";
    const EXTRA_SQL: &'static str = "'created_at', x.created_at, 'updated_at', x.updated_at, \
        'last_used_at', x.last_used_at, 'revoked_at', x.revoked_at, 'rotated_from', x.rotated_from";
    fn redact(doc: &mut Map<String, Value>) {
        doc.remove("key_hash");
    }
}

impl Resource for ApiKey {
    const IMMUTABLE: &'static [&'static str] = &["key_hash", "prefix", "status"];

    fn id(&self) -> &str {
        &self.id
    }
    fn tenant_id(&self) -> &str {
        &self.tenant_id
    }
    fn items(cfg: &mut Config) -> &mut Vec<Self> {
        &mut cfg.api_keys
    }
    async fn upsert(&self, tx: &Transaction<'_>) -> Result<(), ApiError> {
        let id = uuid_of(&self.id, "id")?;
        let tenant = uuid_of(&self.tenant_id, "tenant_id")?;
        let plan = plan_of(&self.plan_id, "plan_id")?;
        tx.execute(
            "INSERT INTO api_keys (id, tenant_id, name, key_hash, prefix, scopes, expires_at, status, revoked_at,
                                   plan_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7::text::timestamptz, $8,
                     CASE WHEN $8 = 'revoked' THEN now() END, $9)
             ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, scopes = EXCLUDED.scopes,
               expires_at = EXCLUDED.expires_at, status = EXCLUDED.status,
               revoked_at = COALESCE(api_keys.revoked_at, EXCLUDED.revoked_at),
               plan_id = EXCLUDED.plan_id, updated_at = now()",
            &[
                &id,
                &tenant,
                &self.name,
                &self.key_hash,
                &self.prefix,
                &self.scopes,
                &self.expires_at,
                &enum_str(&self.status),
                &plan,
            ],
        )
        .await?;
        Ok(())
    }
}

impl Table for JwtIssuer {
    const KIND: &'static str = "jwt_issuers";
    const NAME: &'static str = "JWT issuer";
    const JSON_FN: &'static str = "vantage_jwt_issuer_json";
    fn redact(doc: &mut Map<String, Value>) {
        if doc.remove("shared_secret").is_some() {
            doc.insert("shared_secret_set".into(), Value::Bool(true));
        }
    }
}

impl Resource for JwtIssuer {
    fn id(&self) -> &str {
        &self.id
    }
    fn tenant_id(&self) -> &str {
        &self.tenant_id
    }
    fn items(cfg: &mut Config) -> &mut Vec<Self> {
        &mut cfg.jwt_issuers
    }
    async fn upsert(&self, tx: &Transaction<'_>) -> Result<(), ApiError> {
        let id = uuid_of(&self.id, "id")?;
        let tenant = uuid_of(&self.tenant_id, "tenant_id")?;
        let leeway = int_of(self.leeway_s, "leeway_s")?;
        let refresh = int_of(self.jwks_refresh_s, "jwks_refresh_s")?;
        let min_gap = int_of(self.jwks_min_refetch_s, "jwks_min_refetch_s")?;
        tx.execute(
            "INSERT INTO jwt_issuers (id, tenant_id, issuer, audiences, jwks_url, public_key_pem,
                                      shared_secret, algorithms, leeway_s, cookie, claim_headers,
                                      jwks_refresh_s, jwks_min_refetch_s, plan_claim)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (id) DO UPDATE SET issuer = EXCLUDED.issuer, audiences = EXCLUDED.audiences,
               jwks_url = EXCLUDED.jwks_url, public_key_pem = EXCLUDED.public_key_pem,
               shared_secret = EXCLUDED.shared_secret, algorithms = EXCLUDED.algorithms,
               leeway_s = EXCLUDED.leeway_s, cookie = EXCLUDED.cookie,
               claim_headers = EXCLUDED.claim_headers, jwks_refresh_s = EXCLUDED.jwks_refresh_s,
               jwks_min_refetch_s = EXCLUDED.jwks_min_refetch_s, plan_claim = EXCLUDED.plan_claim,
               updated_at = now()",
            &[
                &id,
                &tenant,
                &self.issuer,
                &self.audiences,
                &self.jwks_url,
                &self.public_key_pem,
                &self.shared_secret,
                &self.algorithms,
                &leeway,
                &self.cookie,
                &json(&self.claim_headers),
                &refresh,
                &min_gap,
                &self.plan_claim,
            ],
        )
        .await?;
        Ok(())
    }
}

impl Table for Plan {
    const KIND: &'static str = "plans";
    const NAME: &'static str = "plan";
    const JSON_FN: &'static str = "vantage_plan_json";
}

impl Resource for Plan {
    fn id(&self) -> &str {
        &self.id
    }
    fn tenant_id(&self) -> &str {
        &self.tenant_id
    }
    fn items(cfg: &mut Config) -> &mut Vec<Self> {
        &mut cfg.plans
    }
    async fn upsert(&self, tx: &Transaction<'_>) -> Result<(), ApiError> {
        let id = uuid_of(&self.id, "id")?;
        let tenant = uuid_of(&self.tenant_id, "tenant_id")?;
        tx.execute(
            "INSERT INTO plans (id, tenant_id, name, time_zone, rate_limits, quotas, billing)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, time_zone = EXCLUDED.time_zone,
               rate_limits = EXCLUDED.rate_limits, quotas = EXCLUDED.quotas,
               billing = EXCLUDED.billing, updated_at = now()",
            &[
                &id,
                &tenant,
                &self.name,
                &self.time_zone,
                &json(&self.rate_limits),
                &json(&self.quotas),
                &self.billing.as_ref().map(json),
            ],
        )
        .await?;
        Ok(())
    }
}

/// People of a tenant (not part of the proxies' configuration).
pub struct Users;

impl Table for Users {
    const KIND: &'static str = "users";
    const NAME: &'static str = "user";
    const JSON_FN: &'static str = "vantage_user_json";
}

/// The API representation of one row of `R` (model JSON plus bookkeeping, secrets removed).
pub async fn fetch_doc<R: Table>(
    c: &impl tokio_postgres::GenericClient,
    id: Uuid,
    scope: Option<Uuid>,
) -> Result<Option<Value>, ApiError> {
    let sql = format!(
        "SELECT {}(x) || jsonb_build_object({}) FROM {} x WHERE x.id = $1 AND ($2::uuid IS NULL OR x.{} = $2)",
        R::JSON_FN,
        R::EXTRA_SQL,
        R::KIND,
        R::TENANT_COL
    );
    let row = c.query_opt(&sql, &[&id, &scope]).await?;
    Ok(row.map(|r| redacted::<R>(r.get(0))))
}

/// A page of `R`, ordered by id, after `cursor`.
pub async fn list_docs<R: Table>(
    c: &impl tokio_postgres::GenericClient,
    scope: Option<Uuid>,
    cursor: Option<Uuid>,
    limit: i64,
) -> Result<Vec<(Uuid, Value)>, ApiError> {
    let sql = format!(
        "SELECT x.id, {}(x) || jsonb_build_object({}) FROM {} x
          WHERE ($1::uuid IS NULL OR x.{} = $1) AND ($2::uuid IS NULL OR x.id > $2)
          ORDER BY x.id LIMIT $3",
        R::JSON_FN,
        R::EXTRA_SQL,
        R::KIND,
        R::TENANT_COL
    );
    let rows = c.query(&sql, &[&scope, &cursor, &limit]).await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.get(0), redacted::<R>(r.get(1))))
        .collect())
}

fn redacted<R: Table>(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        R::redact(m);
    }
    v
}
