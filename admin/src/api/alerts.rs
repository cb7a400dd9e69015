//! Alert rules of a tenant (`/alert-rules`) and the alerts the workers raise from them
//! (`/alerts`); see [`crate::alerts`] for how rules are evaluated. Rules are not part of the
//! proxies' configuration: their writes are admin-only units of work
//! ([`UnitOfWork::admin`]) and carry no `X-Config-Version`.

use super::resources::{merge_patch, resolve_tenant, ListQuery, Page, Timestamps};
use crate::alerts::{self, AlertView, RuleParams, MAX_COOLDOWN_S, MAX_RULES_PER_TENANT};
use crate::auth::Principal;
use crate::error::{parse, path_id, uuid_param, ApiError, ApiQuery, ErrorBody, Field, JsonObject};
use crate::write::UnitOfWork;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;
use tokio_postgres::GenericClient;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Default `cooldown_s` of a rule: an hour.
pub const DEFAULT_COOLDOWN_S: i64 = 3600;
/// Most alerts of one answer, and the default.
pub const MAX_ALERTS: i64 = 1000;
pub const DEFAULT_ALERTS: i64 = 100;

/// The kind of an alert rule; each takes its own `params`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertRuleKind {
    /// A subject on a plan used a percentage of a quota in its period
    /// (`QuotaUsedParams`).
    QuotaUsed,
    /// An API key or route refused more than N times a minute (`ViolationsParams`).
    Violations,
    /// The share of 5xx answers over a window is above X % (`ErrorRateParams`).
    ErrorRate,
    /// An origin pool has no healthy target (`PoolUnhealthyParams`).
    PoolUnhealthy,
    /// An active API key expires within N days (`KeyExpiringParams`).
    KeyExpiring,
}

/// An alert rule as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertRule {
    #[schema(value_type = Uuid, read_only)]
    pub id: String,
    #[schema(value_type = Uuid)]
    pub tenant_id: String,
    /// Unique within the tenant. Example: `quota-warnings`.
    pub name: String,
    #[schema(value_type = AlertRuleKind)]
    pub kind: String,
    /// The parameters of the kind, every default written out: `QuotaUsedParams`,
    /// `ViolationsParams`, `ErrorRateParams`, `PoolUnhealthyParams` or `KeyExpiringParams`.
    /// Example: `{"thresholds": [50, 80, 100]}`.
    #[schema(value_type = AnyRuleParams)]
    pub params: Value,
    /// After an alert of this rule resolved, the same alert (same subject, period and
    /// threshold) does not fire again for this many seconds (0-2592000). Example: `3600`.
    pub cooldown_s: i32,
    /// A disabled rule is not evaluated; its firing alerts are resolved.
    pub enabled: bool,
    #[serde(flatten)]
    pub timestamps: Timestamps,
}

/// Body of `POST /alert-rules`.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewAlertRule {
    /// Defaults to the caller's tenant for a tenant_admin token.
    #[schema(value_type = Option<Uuid>)]
    pub tenant_id: Option<String>,
    /// 1-100 characters, unique within the tenant. Example: `quota-warnings`.
    pub name: String,
    pub kind: AlertRuleKind,
    /// The kind's parameters (see `AlertRule.params`); absent: the defaults.
    #[schema(value_type = Option<AnyRuleParams>)]
    pub params: Option<Value>,
    /// Default `3600`.
    pub cooldown_s: Option<i32>,
    /// Default `true`.
    pub enabled: Option<bool>,
}

/// The parameters of a rule: those of its kind. Only describes the API (the handlers read
/// `params` as the kind says).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum AnyRuleParams {
    QuotaUsed(alerts::quota::QuotaUsedParams),
    Violations(alerts::violations::ViolationsParams),
    ErrorRate(alerts::error_rate::ErrorRateParams),
    PoolUnhealthy(alerts::pool::PoolUnhealthyParams),
    KeyExpiring(alerts::key_expiring::KeyExpiringParams),
}

/// A rule as submitted (after the tenant is resolved).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleIn {
    name: String,
    kind: String,
    #[serde(default)]
    params: Value,
    #[serde(default)]
    cooldown_s: Option<i64>,
    #[serde(default)]
    enabled: Option<bool>,
}

/// A rule that passed validation.
struct Checked {
    params: RuleParams,
    cooldown_s: i32,
    enabled: bool,
}

fn validate(r: &RuleIn) -> Result<Checked, ApiError> {
    let mut fields = Vec::new();
    let name = r.name.trim();
    if name.is_empty() || r.name.chars().count() > 100 || r.name.chars().any(char::is_control) {
        fields.push(Field {
            path: "name".into(),
            message: "must be 1-100 characters, not blank, without control characters".into(),
        });
    }
    let params = match RuleParams::parse(&r.kind, &r.params) {
        Ok(p) => Some(p),
        Err(problems) => {
            fields.extend(problems);
            None
        }
    };
    let cooldown = r.cooldown_s.unwrap_or(DEFAULT_COOLDOWN_S);
    if !(0..=MAX_COOLDOWN_S).contains(&cooldown) {
        fields.push(Field {
            path: "cooldown_s".into(),
            message: format!("must be from 0 to {MAX_COOLDOWN_S} seconds (30 days)"),
        });
    }
    match params {
        Some(params) if fields.is_empty() => Ok(Checked {
            params,
            cooldown_s: i32::try_from(cooldown).unwrap_or(0),
            enabled: r.enabled.unwrap_or(true),
        }),
        _ => Err(ApiError::Invalid(
            "the request failed validation".into(),
            fields,
        )),
    }
}

/// The columns of [`AlertRule`] in its order.
const RULE_COLUMNS: &str = "id::text, tenant_id::text, name, kind, params, cooldown_s, enabled, \
    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
    to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')";

fn rule_of(r: &tokio_postgres::Row) -> AlertRule {
    AlertRule {
        id: r.get(0),
        tenant_id: r.get(1),
        name: r.get(2),
        kind: r.get(3),
        params: r.get(4),
        cooldown_s: r.get(5),
        enabled: r.get(6),
        timestamps: Timestamps {
            created_at: r.get(7),
            updated_at: r.get(8),
        },
    }
}

/// The rule `id` if the caller (`scope`: its tenant, or `None` for a superadmin) may see it.
async fn fetch_rule(
    c: &impl GenericClient,
    id: Uuid,
    scope: Option<Uuid>,
) -> Result<Option<AlertRule>, ApiError> {
    let row = c
        .query_opt(
            &format!(
                "SELECT {RULE_COLUMNS} FROM alert_rules
                  WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)"
            ),
            &[&id, &scope],
        )
        .await?;
    Ok(row.as_ref().map(rule_of))
}

/// 422 for problems with what the parameters name, 409 for a name in use.
async fn check_in_tenant(
    c: &impl GenericClient,
    tenant: Uuid,
    name: &str,
    except: Option<Uuid>,
    params: &RuleParams,
) -> Result<(), ApiError> {
    let fields = params.check_references(c, tenant).await?;
    if !fields.is_empty() {
        return Err(ApiError::Invalid(
            "the request failed validation".into(),
            fields,
        ));
    }
    let taken = c
        .query_opt(
            "SELECT 1 FROM alert_rules
              WHERE tenant_id = $1 AND name = $2 AND ($3::uuid IS NULL OR id <> $3)",
            &[&tenant, &name, &except],
        )
        .await?;
    if taken.is_some() {
        return Err(name_taken(name));
    }
    Ok(())
}

fn name_taken(name: &str) -> ApiError {
    ApiError::Conflict(
        format!("the tenant already has an alert rule named '{name}'"),
        vec![Field {
            path: "name".into(),
            message: "already in use by another rule of the tenant".into(),
        }],
    )
}

/// `GET /alert-rules`: the rules the caller may see, by id.
#[utoipa::path(
    get,
    path = "/api/v1/alert-rules",
    tag = "alerts",
    operation_id = "list_alert_rules",
    summary = "List alert rules",
    description = "A tenant_admin sees its own tenant's rules; a superadmin every tenant's, or \
        one tenant's with `tenant_id`. Ordered by id, one page at a time.",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of alert rules", body = Page<AlertRule>),
        (status = 404, description = "`tenant_id` names a tenant the caller may not see", body = ErrorBody),
    )
)]
pub async fn list_rules(
    State(st): State<Arc<AppState>>,
    p: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<AlertRule>>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_parameter(
            "limit",
            "must be between 1 and 500",
        ));
    }
    let asked = uuid_param(&q.tenant_id, "tenant_id")?;
    let scope = p.scope(asked)?;
    let cursor = uuid_param(&q.cursor, "cursor")?;
    let fetch = limit + 1;
    let c = st.pool.get().await?;
    let rows = c
        .query(
            &format!(
                "SELECT {RULE_COLUMNS} FROM alert_rules
                  WHERE ($1::uuid IS NULL OR tenant_id = $1) AND ($2::uuid IS NULL OR id > $2)
                  ORDER BY id LIMIT $3"
            ),
            &[&scope, &cursor, &fetch],
        )
        .await?;
    let mut items: Vec<AlertRule> = rows.iter().map(rule_of).collect();
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next_cursor = if more {
        items.last().map(|r| r.id.clone())
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}

/// `POST /alert-rules` `{tenant_id?, name, kind, params?, cooldown_s?, enabled?}`.
#[utoipa::path(
    post,
    path = "/api/v1/alert-rules",
    tag = "alerts",
    operation_id = "create_alert_rule",
    summary = "Create an alert rule",
    description = "The workers evaluate it every `worker.alert_interval_s`. A tenant has at \
        most 100 alert rules. Alert rules are not part of the proxies' configuration: the \
        config version stays.",
    request_body = NewAlertRule,
    responses(
        (status = 201, description = "The new rule, defaults filled in", body = AlertRule),
        (status = 409, description = "The tenant already has a rule of that name, or already \
            has 100 rules (the most a tenant may have)", body = ErrorBody),
        (status = 422, description = "Validation failed; `fields` lists each problem (e.g. \
            `params.thresholds[1]`)", body = ErrorBody),
    )
)]
pub async fn create_rule(
    State(st): State<Arc<AppState>>,
    p: Principal,
    JsonObject(mut obj): JsonObject,
) -> Result<Response, ApiError> {
    for f in ["id", "created_at", "updated_at"] {
        if obj.contains_key(f) {
            return Err(ApiError::BadRequest(format!("{f} is set by the server")));
        }
    }
    let tenant = resolve_tenant(&p, obj.remove("tenant_id"))?;
    let r: RuleIn = parse(Value::Object(obj))?;
    let checked = validate(&r)?;
    let no_tenant = || ApiError::invalid_field("tenant_id", format!("no tenant has id '{tenant}'"));
    let tenant_id = Uuid::parse_str(&tenant).map_err(|_| no_tenant())?;
    let mut client = st.pool.get().await?;
    let w = UnitOfWork::admin(&mut client).await?;
    let exists = w
        .tx()
        .query_opt("SELECT 1 FROM tenants WHERE id = $1", &[&tenant_id])
        .await?
        .is_some();
    if !exists {
        return Err(no_tenant());
    }
    check_in_tenant(w.tx(), tenant_id, &r.name, None, &checked.params).await?;
    // The tenant's rule creations take turns, so that two at once cannot both pass the cap.
    w.tx()
        .execute(
            "SELECT pg_advisory_xact_lock(hashtext('vantage_alert_rules'), hashtext($1::text))",
            // The tenant's canonical id, however the caller spelled it.
            &[&tenant_id.to_string()],
        )
        .await?;
    let count: i64 = w
        .tx()
        .query_one(
            "SELECT count(*) FROM alert_rules WHERE tenant_id = $1",
            &[&tenant_id],
        )
        .await?
        .get(0);
    if count >= MAX_RULES_PER_TENANT {
        return Err(ApiError::Conflict(
            format!(
                "the tenant has {count} alert rules, the most a tenant may have \
                 ({MAX_RULES_PER_TENANT}); delete one before creating another"
            ),
            Vec::new(),
        ));
    }
    let row = w
        .tx()
        .query_opt(
            "INSERT INTO alert_rules (tenant_id, name, kind, params, cooldown_s, enabled)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (tenant_id, name) DO NOTHING
             RETURNING id",
            &[
                &tenant_id,
                &r.name,
                &checked.params.kind(),
                &checked.params.to_json(),
                &checked.cooldown_s,
                &checked.enabled,
            ],
        )
        .await?
        .ok_or_else(|| name_taken(&r.name))?;
    let rule = fetch_rule(w.tx(), row.get(0), None)
        .await?
        .ok_or_else(|| ApiError::Internal("a rule just inserted is gone".into()))?;
    w.commit().await?;
    Ok((StatusCode::CREATED, Json(rule)).into_response())
}

/// `GET /alert-rules/{id}`.
#[utoipa::path(
    get,
    path = "/api/v1/alert-rules/{id}",
    tag = "alerts",
    operation_id = "get_alert_rule",
    summary = "Get an alert rule",
    params(("id" = Uuid, Path, description = "Id of the rule")),
    responses(
        (status = 200, description = "The rule", body = AlertRule),
        (status = 404, description = "No such rule (or another tenant's)", body = ErrorBody),
    )
)]
pub async fn get_rule(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Path(raw): Path<String>,
) -> Result<Json<AlertRule>, ApiError> {
    let id = path_id(&raw, "alert rule")?;
    let c = st.pool.get().await?;
    fetch_rule(&**c, id, p.tenant)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("alert rule"))
}

/// `PATCH /alert-rules/{id}`: merge patch of `name`, `params`, `cooldown_s`, `enabled`.
#[utoipa::path(
    patch,
    path = "/api/v1/alert-rules/{id}",
    tag = "alerts",
    operation_id = "patch_alert_rule",
    summary = "Change an alert rule",
    description = "A JSON merge patch (RFC 7396) of `name`, `params` (merged into the stored \
        parameters), `cooldown_s` and `enabled`; `kind` and `tenant_id` cannot change. Firing \
        alerts the changed rule no longer sees resolve at its next evaluation.",
    params(("id" = Uuid, Path, description = "Id of the rule")),
    request_body(content = Object, description = "The fields to change"),
    responses(
        (status = 200, description = "The changed rule", body = AlertRule),
        (status = 404, description = "No such rule (or another tenant's)", body = ErrorBody),
        (status = 409, description = "The tenant already has a rule of that name", body = ErrorBody),
        (status = 422, description = "Validation failed; `fields` lists each problem", body = ErrorBody),
    )
)]
pub async fn patch_rule(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Path(raw): Path<String>,
    JsonObject(mut obj): JsonObject,
) -> Result<Response, ApiError> {
    let id = path_id(&raw, "alert rule")?;
    let mut client = st.pool.get().await?;
    let w = UnitOfWork::admin(&mut client).await?;
    let current = fetch_rule(w.tx(), id, p.tenant)
        .await?
        .ok_or_else(|| ApiError::not_found("alert rule"))?;
    let fixed = [
        ("id", Value::String(current.id.clone())),
        ("tenant_id", Value::String(current.tenant_id.clone())),
        ("kind", Value::String(current.kind.clone())),
        (
            "created_at",
            Value::String(current.timestamps.created_at.clone()),
        ),
        (
            "updated_at",
            Value::String(current.timestamps.updated_at.clone()),
        ),
    ];
    for (f, now) in fixed {
        if let Some(v) = obj.remove(f) {
            if v != now {
                return Err(ApiError::BadRequest(format!("{f} cannot be changed")));
            }
        }
    }
    let mut base = Map::new();
    base.insert("name".into(), Value::String(current.name.clone()));
    base.insert("kind".into(), Value::String(current.kind.clone()));
    base.insert("params".into(), current.params.clone());
    base.insert("cooldown_s".into(), Value::from(current.cooldown_s));
    base.insert("enabled".into(), Value::Bool(current.enabled));
    let mut merged = Value::Object(base);
    merge_patch(&mut merged, Value::Object(obj));
    let r: RuleIn = parse(merged)?;
    let checked = validate(&r)?;
    let tenant = Uuid::parse_str(&current.tenant_id)
        .map_err(|_| ApiError::Internal("a rule's tenant is not a UUID".into()))?;
    check_in_tenant(w.tx(), tenant, &r.name, Some(id), &checked.params).await?;
    w.tx()
        .execute(
            "UPDATE alert_rules SET name = $2, params = $3, cooldown_s = $4, enabled = $5,
                    updated_at = now()
              WHERE id = $1",
            &[
                &id,
                &r.name,
                &checked.params.to_json(),
                &checked.cooldown_s,
                &checked.enabled,
            ],
        )
        .await?;
    let rule = fetch_rule(w.tx(), id, None)
        .await?
        .ok_or_else(|| ApiError::not_found("alert rule"))?;
    w.commit().await?;
    Ok(Json(rule).into_response())
}

/// `DELETE /alert-rules/{id}`: the rule and its alerts; firing ones are resolved first.
#[utoipa::path(
    delete,
    path = "/api/v1/alert-rules/{id}",
    tag = "alerts",
    operation_id = "delete_alert_rule",
    summary = "Delete an alert rule",
    description = "Deletes the rule and its alerts. Each alert still firing is resolved \
        first, with its `alert.resolved` event, so that receivers see it end.",
    params(("id" = Uuid, Path, description = "Id of the rule")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such rule (or another tenant's)", body = ErrorBody),
    )
)]
pub async fn delete_rule(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_id(&raw, "alert rule")?;
    let mut client = st.pool.get().await?;
    let w = UnitOfWork::admin(&mut client).await?;
    // Not while a worker evaluates the rule.
    alerts::lock_rule(w.tx(), id).await?;
    let kind: String = w
        .tx()
        .query_opt(
            "SELECT kind FROM alert_rules
              WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)",
            &[&id, &p.tenant],
        )
        .await?
        .ok_or_else(|| ApiError::not_found("alert rule"))?
        .get(0);
    alerts::resolve_rule(w.tx(), id, &kind).await?;
    w.tx()
        .execute("DELETE FROM alert_rules WHERE id = $1", &[&id])
        .await?;
    w.commit().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `?tenant_id=&rule_id=&state=&limit=` of `GET /alerts`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    /// Only this tenant's alerts. A tenant_admin sees only its own tenant (another one is
    /// 404); a superadmin without it sees every tenant.
    #[param(value_type = Option<Uuid>)]
    tenant_id: Option<String>,
    /// Only the alerts of this rule (another tenant's rule is 404).
    #[param(value_type = Option<Uuid>)]
    rule_id: Option<String>,
    /// Only `firing` or only `resolved` alerts.
    #[param(value_type = Option<String>, pattern = "^(firing|resolved)$")]
    state: Option<String>,
    /// Most alerts (1-1000, default 100), the newest.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// The answer of `GET /alerts`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertList {
    /// Newest first (by `fired_at`).
    pub items: Vec<AlertView>,
    /// There were more than `limit`: `items` holds the newest.
    pub truncated: bool,
}

/// `GET /alerts`: the alerts the caller may see, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/alerts",
    tag = "alerts",
    operation_id = "list_alerts",
    summary = "List alerts",
    description = "Alerts raised by the tenant's rules, firing and resolved, newest first (by \
        `fired_at`), at most `limit` (`truncated` says when there were more). A bad parameter \
        is a 400 whose `fields` names it.",
    params(AlertQuery),
    responses(
        (status = 200, description = "The alerts", body = AlertList),
        (status = 404, description = "`tenant_id` or `rule_id` names a tenant or rule the \
            caller may not see", body = ErrorBody),
    )
)]
pub async fn list_alerts(
    State(st): State<Arc<AppState>>,
    p: Principal,
    ApiQuery(q): ApiQuery<AlertQuery>,
) -> Result<Json<AlertList>, ApiError> {
    let scope = p.scope(uuid_param(&q.tenant_id, "tenant_id")?)?;
    let rule = uuid_param(&q.rule_id, "rule_id")?;
    if let Some(s) = q.state.as_deref() {
        if s != "firing" && s != "resolved" {
            return Err(ApiError::bad_parameter(
                "state",
                "must be firing or resolved",
            ));
        }
    }
    let limit = q.limit.unwrap_or(DEFAULT_ALERTS);
    if !(1..=MAX_ALERTS).contains(&limit) {
        return Err(ApiError::bad_parameter(
            "limit",
            "must be between 1 and 1000",
        ));
    }
    let c = st.pool.get().await?;
    if let Some(r) = rule {
        if fetch_rule(&**c, r, scope).await?.is_none() {
            return Err(ApiError::not_found("alert rule"));
        }
    }
    let fetch = limit + 1;
    let rows = c
        .query(
            &format!(
                "SELECT {} FROM alerts a JOIN alert_rules r ON r.id = a.rule_id
                  WHERE ($1::uuid IS NULL OR a.tenant_id = $1)
                    AND ($2::uuid IS NULL OR a.rule_id = $2)
                    AND ($3::text IS NULL OR a.state = $3)
                  ORDER BY a.fired_at DESC, a.id DESC LIMIT $4",
                alerts::VIEW_COLUMNS
            ),
            &[&scope, &rule, &q.state, &fetch],
        )
        .await?;
    let truncated = rows.len() as i64 > limit;
    Ok(Json(AlertList {
        items: rows
            .iter()
            .take(limit as usize)
            .map(AlertView::from_row)
            .collect(),
        truncated,
    }))
}
