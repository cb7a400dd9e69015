//! Webhook endpoints of a tenant, their delivery log, test events and replays. Not part of
//! the proxies' configuration: writes are admin-only units of work (no config version).
//!
//! An endpoint's signing secret is answered once, when it is created or rotated; it is never
//! shown again. URLs must pass the SSRF rules ([`crate::webhooks::ssrf`]) when they are
//! written, and again at every delivery.

use super::resources::{merge_patch, resolve_tenant, ListQuery, Page, Timestamps};
use crate::auth::Principal;
use crate::error::{
    parse, path_id, uuid_param, ApiError, ApiQuery, ErrorBody, Field, JsonObject,
    OptionalJsonObject,
};
use crate::events;
use crate::webhooks::{sign, sql_ts, ssrf, FORMATS, SUPERSEDED};
use crate::worker::kinds;
use crate::write::UnitOfWork;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::GenericClient;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Most webhook endpoints of one tenant.
pub const MAX_ENDPOINTS: i64 = 50;
/// Longest description.
const MAX_DESCRIPTION: usize = 500;
/// Longest wait for an endpoint's host name to resolve when it is written.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How an endpoint's deliveries are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// `{"type", "timestamp", "data"}`.
    Standard,
    /// `{"text": "<one line>"}`, for a Slack-compatible incoming webhook (still signed).
    Slack,
}

impl WebhookFormat {
    /// The stored name's format (`standard` for anything but `slack`).
    fn of(stored: &str) -> WebhookFormat {
        if stored == "slack" {
            WebhookFormat::Slack
        } else {
            WebhookFormat::Standard
        }
    }

    fn name(self) -> &'static str {
        match self {
            WebhookFormat::Standard => "standard",
            WebhookFormat::Slack => "slack",
        }
    }
}

/// A webhook endpoint as the API shows it (never with its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEndpoint {
    #[schema(value_type = Uuid, read_only)]
    pub id: String,
    #[schema(value_type = Uuid)]
    pub tenant_id: String,
    /// Where deliveries are posted. Example: `https://hooks.acme.test/vantage`.
    pub url: String,
    /// Example: `Billing system`.
    pub description: String,
    /// The event types sent to it; empty: every type.
    pub events: Vec<String>,
    pub format: WebhookFormat,
    /// A disabled endpoint gets no new deliveries.
    pub enabled: bool,
    #[serde(flatten)]
    pub timestamps: Timestamps,
}

/// An endpoint just created or whose secret was just rotated: the only answers with the
/// secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEndpointWithSecret {
    #[serde(flatten)]
    pub endpoint: WebhookEndpoint,
    /// The signing secret, `whsec_` + base64 of 32 random bytes, shown this once. The HMAC
    /// key is the base64-decoded part after `whsec_`.
    pub secret: String,
}

/// Body of `POST /webhooks`.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewWebhookEndpoint {
    /// Defaults to the caller's tenant for a tenant_admin token.
    #[schema(value_type = Option<Uuid>)]
    pub tenant_id: Option<String>,
    /// `http` or `https`, no credentials, to a public address (or one the operator's
    /// `worker.webhook_allowed_networks` admits). Example: `https://hooks.acme.test/vantage`.
    pub url: String,
    /// Event types to send (see `docs/webhooks.md`); empty or absent: every type.
    /// Example: `[alert.fired, alert.resolved]`.
    pub events: Option<Vec<String>>,
    /// Default `standard`.
    pub format: Option<WebhookFormat>,
    /// At most 500 characters. Example: `Billing system`.
    pub description: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
}

/// One delivery (an event to an endpoint) in the delivery log.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDelivery {
    #[schema(value_type = Uuid)]
    pub id: String,
    #[schema(value_type = Uuid)]
    pub tenant_id: String,
    #[schema(value_type = Uuid)]
    pub endpoint_id: String,
    /// The event's id: the `webhook-id` header of every attempt.
    #[schema(value_type = Uuid)]
    pub event_id: String,
    /// Example: `alert.fired`.
    pub event_type: String,
    /// `pending` (attempts to come), `delivered`, or `failed` (a dead letter: the retries ran
    /// out or the destination was refused; replayable).
    pub state: String,
    /// Attempts so far, replays included.
    pub attempts: i32,
    /// The receiver's HTTP status at the last attempt (absent: no answer).
    pub last_status: Option<i32>,
    /// What went wrong at the last attempt.
    pub last_error: Option<String>,
    /// How long the last attempt took, in milliseconds.
    pub last_latency_ms: Option<i32>,
    /// When the next attempt is due (pending deliveries that failed an attempt).
    #[schema(format = DateTime)]
    pub next_attempt_at: Option<String>,
    #[schema(format = DateTime)]
    pub delivered_at: Option<String>,
    #[serde(flatten)]
    pub timestamps: Timestamps,
}

/// One attempt of a delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAttempt {
    /// 1 for the first.
    pub attempt: i32,
    /// When it began.
    #[schema(format = DateTime)]
    pub at: String,
    /// The receiver's HTTP status (absent: no answer).
    pub status: Option<i32>,
    pub latency_ms: i32,
    /// What went wrong (absent when delivered).
    pub error: Option<String>,
}

/// The event of a delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEvent {
    #[schema(value_type = Uuid)]
    pub id: String,
    /// Example: `webhook.test`.
    #[serde(rename = "type")]
    pub kind: String,
    pub data: Value,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A delivery with its event and every attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDeliveryDetail {
    #[serde(flatten)]
    pub delivery: WebhookDelivery,
    pub event: WebhookEvent,
    /// Every attempt, oldest first.
    pub attempt_log: Vec<WebhookAttempt>,
}

/// The answer of `POST /webhooks/{id}/test`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestEvent {
    /// The `webhook.test` event (its id is the `webhook-id` of the delivery).
    #[schema(value_type = Uuid)]
    pub event_id: String,
    /// Its delivery to this endpoint; follow it at `/api/v1/webhook-deliveries/{id}`.
    #[schema(value_type = Uuid)]
    pub delivery_id: String,
}

/// `?state=&limit=` of `GET /webhooks/{id}/deliveries`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// Only deliveries in this state: `pending`, `delivered` or `failed`.
    state: Option<String>,
    /// Most deliveries (1-500, default 50), the newest.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

/// The columns of [`WebhookEndpoint`], in its order (table alias `e`).
fn endpoint_columns() -> String {
    format!(
        "e.id::text, e.tenant_id::text, e.url, e.description, e.events, e.format, e.enabled, {}, {}",
        sql_ts("e.created_at"),
        sql_ts("e.updated_at")
    )
}

fn endpoint_of(r: &tokio_postgres::Row) -> WebhookEndpoint {
    WebhookEndpoint {
        id: r.get(0),
        tenant_id: r.get(1),
        url: r.get(2),
        description: r.get(3),
        events: r.get(4),
        format: WebhookFormat::of(r.get(5)),
        enabled: r.get(6),
        timestamps: Timestamps {
            created_at: r.get(7),
            updated_at: r.get(8),
        },
    }
}

/// The columns of [`WebhookDelivery`], in its order (aliases `d` and `ev`).
fn delivery_columns() -> String {
    format!(
        "d.id::text, d.tenant_id::text, d.endpoint_id::text, d.event_id::text, ev.type, d.state,
         d.attempts, d.last_status, d.last_error, d.last_latency_ms, {}, {}, {}, {}",
        sql_ts("d.next_attempt_at"),
        sql_ts("d.delivered_at"),
        sql_ts("d.created_at"),
        sql_ts("d.updated_at")
    )
}

fn delivery_of(r: &tokio_postgres::Row) -> WebhookDelivery {
    WebhookDelivery {
        id: r.get(0),
        tenant_id: r.get(1),
        endpoint_id: r.get(2),
        event_id: r.get(3),
        event_type: r.get(4),
        state: r.get(5),
        attempts: r.get(6),
        last_status: r.get(7),
        last_error: r.get(8),
        last_latency_ms: r.get(9),
        next_attempt_at: r.get(10),
        delivered_at: r.get(11),
        timestamps: Timestamps {
            created_at: r.get(12),
            updated_at: r.get(13),
        },
    }
}

/// The endpoint `id` if the caller may see it (`scope`: the caller's tenant, if bound).
async fn fetch_endpoint(
    c: &impl GenericClient,
    id: Uuid,
    scope: Option<Uuid>,
) -> Result<Option<WebhookEndpoint>, ApiError> {
    let row = c
        .query_opt(
            &format!(
                "SELECT {} FROM webhook_endpoints e
                  WHERE e.id = $1 AND ($2::uuid IS NULL OR e.tenant_id = $2)",
                endpoint_columns()
            ),
            &[&id, &scope],
        )
        .await?;
    Ok(row.as_ref().map(endpoint_of))
}

async fn fetch_delivery(
    c: &impl GenericClient,
    id: Uuid,
    scope: Option<Uuid>,
) -> Result<Option<WebhookDelivery>, ApiError> {
    let row = c
        .query_opt(
            &format!(
                "SELECT {} FROM webhook_deliveries d JOIN events ev ON ev.id = d.event_id
                  WHERE d.id = $1 AND ($2::uuid IS NULL OR d.tenant_id = $2)",
                delivery_columns()
            ),
            &[&id, &scope],
        )
        .await?;
    Ok(row.as_ref().map(delivery_of))
}

/// The writable fields of an endpoint, as submitted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointIn {
    url: String,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default = "standard")]
    format: String,
    #[serde(default)]
    description: String,
    #[serde(default = "yes")]
    enabled: bool,
}

fn standard() -> String {
    "standard".into()
}

fn yes() -> bool {
    true
}

/// Check `e` (the URL's destination only when `check_url`); every problem as a field.
async fn validate(st: &AppState, e: &EndpointIn, check_url: bool) -> Result<(), ApiError> {
    let mut fields = Vec::new();
    let mut field = |path: String, message: String| fields.push(Field { path, message });
    if check_url {
        let allowed = st
            .cfg
            .worker
            .allowed_networks()
            .map_err(|e| ApiError::Internal(format!("worker.webhook_allowed_networks: {e}")))?;
        let timeout = st.cfg.worker.webhook_timeout().min(RESOLVE_TIMEOUT);
        if let Err(refusal) = ssrf::check_url(&e.url, &allowed, timeout).await {
            let message = match refusal {
                ssrf::Refusal::BadUrl(m) => m,
                ssrf::Refusal::Forbidden(m) => format!("is refused: {m}"),
                ssrf::Refusal::Unresolved(m) => format!("cannot be checked: {m}"),
            };
            field("url".into(), message);
        }
    }
    for (i, kind) in e.events.iter().enumerate() {
        if !events::TYPES.contains(&kind.as_str()) {
            field(
                format!("events[{i}]"),
                format!(
                    "'{kind}' is not an event type; one of {}",
                    events::TYPES.join(", ")
                ),
            );
        } else if e.events[..i].contains(kind) {
            field(format!("events[{i}]"), format!("'{kind}' is listed twice"));
        }
    }
    if !FORMATS.contains(&e.format.as_str()) {
        field("format".into(), "must be standard or slack".into());
    }
    if e.description.chars().count() > MAX_DESCRIPTION {
        field(
            "description".into(),
            format!("must be at most {MAX_DESCRIPTION} characters"),
        );
    } else if e.description.chars().any(char::is_control) {
        field(
            "description".into(),
            "must not contain control characters".into(),
        );
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

/// `POST /webhooks` `{tenant_id?, url, events?, format?, description?, enabled?}`.
#[utoipa::path(
    post,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    operation_id = "create_webhook",
    summary = "Create a webhook endpoint",
    description = "The URL must be http(s), without credentials, to a destination the SSRF \
        rules admit (a host name is resolved and every address checked). The answer carries \
        the signing `secret`, shown this once. Not part of the proxies' configuration: the \
        config version stays.",
    request_body = NewWebhookEndpoint,
    responses(
        (status = 201, description = "The new endpoint, with its secret", body = WebhookEndpointWithSecret),
        (status = 409, description = "The tenant has 50 endpoints already", body = ErrorBody),
        (status = 422, description = "Validation failed (e.g. `url` to a private address, an \
            unknown type in `events`); `fields` lists each problem", body = ErrorBody),
    )
)]
pub async fn create(
    State(st): State<Arc<AppState>>,
    p: Principal,
    JsonObject(mut obj): JsonObject,
) -> Result<Response, ApiError> {
    for f in ["id", "secret", "created_at", "updated_at"] {
        if obj.contains_key(f) {
            return Err(ApiError::BadRequest(format!("{f} is set by the server")));
        }
    }
    let tenant = resolve_tenant(&p, obj.remove("tenant_id"))?;
    let tenant_id = Uuid::parse_str(&tenant).map_err(|_| {
        ApiError::invalid_field("tenant_id", format!("no tenant has id '{tenant}'"))
    })?;
    let e: EndpointIn = parse(Value::Object(obj))?;
    validate(&st, &e, true).await?;
    let mut client = st.pool.get().await?;
    let w = UnitOfWork::admin(&mut client).await?;
    // One endpoint write per tenant at a time: the count below stays true until commit.
    let exists = w
        .tx()
        .query_opt(
            "SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE",
            &[&tenant_id],
        )
        .await?
        .is_some();
    if !exists {
        return Err(ApiError::invalid_field(
            "tenant_id",
            format!("no tenant has id '{tenant}'"),
        ));
    }
    let count: i64 = w
        .tx()
        .query_one(
            "SELECT count(*) FROM webhook_endpoints WHERE tenant_id = $1",
            &[&tenant_id],
        )
        .await?
        .get(0);
    if count >= MAX_ENDPOINTS {
        return Err(ApiError::Conflict(
            format!("a tenant has at most {MAX_ENDPOINTS} webhook endpoints"),
            vec![],
        ));
    }
    let secret = sign::generate_secret();
    let id: Uuid = w
        .tx()
        .query_one(
            "INSERT INTO webhook_endpoints (tenant_id, url, description, events, format, secret, enabled)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            &[
                &tenant_id,
                &e.url,
                &e.description,
                &e.events,
                &e.format,
                &secret,
                &e.enabled,
            ],
        )
        .await?
        .get(0);
    let endpoint = fetch_endpoint(w.tx(), id, None)
        .await?
        .ok_or_else(|| ApiError::Internal("the new endpoint is gone".into()))?;
    w.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(WebhookEndpointWithSecret { endpoint, secret }),
    )
        .into_response())
}

/// `GET /webhooks?tenant_id=&limit=&cursor=`.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    operation_id = "list_webhooks",
    summary = "List webhook endpoints",
    description = "A page of the endpoints the caller may see, ordered by id; never with \
        their secrets.",
    params(ListQuery),
    responses(
        (status = 200, description = "A page", body = Page<WebhookEndpoint>),
        (status = 404, description = "`tenant_id` names a tenant the caller may not see", body = ErrorBody),
    )
)]
pub async fn list(
    State(st): State<Arc<AppState>>,
    p: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<WebhookEndpoint>>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_parameter(
            "limit",
            "must be between 1 and 500",
        ));
    }
    let scope = p.scope(uuid_param(&q.tenant_id, "tenant_id")?)?;
    let cursor = uuid_param(&q.cursor, "cursor")?;
    let c = st.pool.get().await?;
    let rows = c
        .query(
            &format!(
                "SELECT {} FROM webhook_endpoints e
                  WHERE ($1::uuid IS NULL OR e.tenant_id = $1) AND ($2::uuid IS NULL OR e.id > $2)
                  ORDER BY e.id LIMIT $3",
                endpoint_columns()
            ),
            &[&scope, &cursor, &(limit + 1)],
        )
        .await?;
    let mut items: Vec<WebhookEndpoint> = rows.iter().map(endpoint_of).collect();
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next_cursor = if more {
        items.last().map(|e| e.id.clone())
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}

/// `GET /webhooks/{id}`.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}",
    tag = "webhooks",
    operation_id = "get_webhook",
    summary = "Get one webhook endpoint",
    description = "Never with its secret.",
    params(("id" = Uuid, Path, description = "Id of the webhook endpoint")),
    responses(
        (status = 200, description = "The endpoint", body = WebhookEndpoint),
        (status = 404, description = "No such endpoint (or another tenant's)", body = ErrorBody),
    )
)]
pub async fn get(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Path(raw): Path<String>,
) -> Result<Json<WebhookEndpoint>, ApiError> {
    let id = path_id(&raw, "webhook endpoint")?;
    let c = st.pool.get().await?;
    fetch_endpoint(&**c, id, p.tenant)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))
}

/// `PATCH /webhooks/{id}`: merge patch of `url`, `events`, `format`, `description`,
/// `enabled`.
#[utoipa::path(
    patch,
    path = "/api/v1/webhooks/{id}",
    tag = "webhooks",
    operation_id = "patch_webhook",
    summary = "Change a webhook endpoint",
    description = "A JSON merge patch (RFC 7396) of `url`, `events`, `format`, `description` \
        and `enabled`. A new `url` passes the same checks as at creation. The secret changes \
        only through `rotate-secret`.",
    params(("id" = Uuid, Path, description = "Id of the webhook endpoint")),
    request_body(content = Object, description = "The fields to change"),
    responses(
        (status = 200, description = "The changed endpoint", body = WebhookEndpoint),
        (status = 404, description = "No such endpoint (or another tenant's)", body = ErrorBody),
        (status = 422, description = "Validation failed; `fields` lists each problem", body = ErrorBody),
    )
)]
pub async fn patch(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Path(raw): Path<String>,
    JsonObject(obj): JsonObject,
) -> Result<Json<WebhookEndpoint>, ApiError> {
    let id = path_id(&raw, "webhook endpoint")?;
    let current = {
        let c = st.pool.get().await?;
        fetch_endpoint(&**c, id, p.tenant)
            .await?
            .ok_or_else(|| ApiError::not_found("webhook endpoint"))?
    };
    for f in ["id", "tenant_id", "created_at", "updated_at"] {
        if let Some(v) = obj.get(f) {
            let same = match f {
                "id" => v.as_str() == Some(current.id.as_str()),
                "tenant_id" => v.as_str() == Some(current.tenant_id.as_str()),
                _ => false,
            };
            if !same {
                return Err(ApiError::BadRequest(format!("{f} cannot be changed")));
            }
        }
    }
    let mut obj = obj;
    obj.remove("id");
    obj.remove("tenant_id");
    if obj.contains_key("secret") {
        return Err(ApiError::BadRequest(
            "secret cannot be set; POST /api/v1/webhooks/{id}/rotate-secret makes a new one".into(),
        ));
    }
    let url_changes = obj
        .get("url")
        .is_some_and(|u| u.as_str() != Some(current.url.as_str()));
    let mut base = Map::new();
    base.insert("url".into(), Value::String(current.url.clone()));
    base.insert("events".into(), json!(current.events));
    base.insert("format".into(), Value::String(current.format.name().into()));
    base.insert(
        "description".into(),
        Value::String(current.description.clone()),
    );
    base.insert("enabled".into(), Value::Bool(current.enabled));
    let mut merged = Value::Object(base);
    merge_patch(&mut merged, Value::Object(obj));
    let e: EndpointIn = parse(merged)?;
    validate(&st, &e, url_changes).await?;
    let mut client = st.pool.get().await?;
    let w = UnitOfWork::admin(&mut client).await?;
    let n = w
        .tx()
        .execute(
            "UPDATE webhook_endpoints SET url = $3, events = $4, format = $5, description = $6,
                    enabled = $7, updated_at = now()
              WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)",
            &[
                &id,
                &p.tenant,
                &e.url,
                &e.events,
                &e.format,
                &e.description,
                &e.enabled,
            ],
        )
        .await?;
    if n == 0 {
        return Err(ApiError::not_found("webhook endpoint"));
    }
    let endpoint = fetch_endpoint(w.tx(), id, None)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    w.commit().await?;
    Ok(Json(endpoint))
}

/// `DELETE /webhooks/{id}`: the endpoint, its deliveries and their log.
#[utoipa::path(
    delete,
    path = "/api/v1/webhooks/{id}",
    tag = "webhooks",
    operation_id = "delete_webhook",
    summary = "Delete a webhook endpoint",
    description = "Its deliveries and their log go with it; pending deliveries are not sent.",
    params(("id" = Uuid, Path, description = "Id of the webhook endpoint")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such endpoint (or another tenant's)", body = ErrorBody),
    )
)]
pub async fn delete(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_id(&raw, "webhook endpoint")?;
    let mut client = st.pool.get().await?;
    let w = UnitOfWork::admin(&mut client).await?;
    w.tx()
        .query_opt(
            "DELETE FROM webhook_endpoints WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)
             RETURNING id",
            &[&id, &p.tenant],
        )
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    w.commit().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /webhooks/{id}/rotate-secret`.
#[utoipa::path(
    post,
    path = "/api/v1/webhooks/{id}/rotate-secret",
    tag = "webhooks",
    operation_id = "rotate_webhook_secret",
    summary = "Rotate a webhook endpoint's secret",
    description = "A new signing secret replaces the old one at once (answered this once); \
        every attempt from now on, retries of earlier events included, is signed with it.",
    params(("id" = Uuid, Path, description = "Id of the webhook endpoint")),
    responses(
        (status = 200, description = "The endpoint, with its new secret", body = WebhookEndpointWithSecret),
        (status = 404, description = "No such endpoint (or another tenant's)", body = ErrorBody),
    )
)]
pub async fn rotate_secret(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Path(raw): Path<String>,
    OptionalJsonObject(body): OptionalJsonObject,
) -> Result<Json<WebhookEndpointWithSecret>, ApiError> {
    let id = path_id(&raw, "webhook endpoint")?;
    if let Some(k) = body.keys().next() {
        return Err(ApiError::BadRequest(format!(
            "{k}: this endpoint takes no body"
        )));
    }
    let secret = sign::generate_secret();
    let mut client = st.pool.get().await?;
    let w = UnitOfWork::admin(&mut client).await?;
    let n = w
        .tx()
        .execute(
            "UPDATE webhook_endpoints SET secret = $3, updated_at = now()
              WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)",
            &[&id, &p.tenant, &secret],
        )
        .await?;
    if n == 0 {
        return Err(ApiError::not_found("webhook endpoint"));
    }
    let endpoint = fetch_endpoint(w.tx(), id, None)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    w.commit().await?;
    Ok(Json(WebhookEndpointWithSecret { endpoint, secret }))
}

/// `POST /webhooks/{id}/test`: a `webhook.test` event to this endpoint only.
#[utoipa::path(
    post,
    path = "/api/v1/webhooks/{id}/test",
    tag = "webhooks",
    operation_id = "test_webhook",
    summary = "Send a test event",
    description = "Records a `webhook.test` event and queues its delivery to this endpoint \
        only (whatever its `events` filter says), exactly like any other event.",
    params(("id" = Uuid, Path, description = "Id of the webhook endpoint")),
    responses(
        (status = 202, description = "Queued", body = TestEvent),
        (status = 404, description = "No such endpoint (or another tenant's)", body = ErrorBody),
        (status = 409, description = "The endpoint is disabled", body = ErrorBody),
    )
)]
pub async fn test(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_id(&raw, "webhook endpoint")?;
    let mut client = st.pool.get().await?;
    let w = UnitOfWork::admin(&mut client).await?;
    let row = w
        .tx()
        .query_opt(
            "SELECT tenant_id, enabled FROM webhook_endpoints
              WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2) FOR SHARE",
            &[&id, &p.tenant],
        )
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    let (tenant, enabled): (Uuid, bool) = (row.get(0), row.get(1));
    if !enabled {
        return Err(ApiError::Conflict(
            "the endpoint is disabled; enable it to send a test event".into(),
            vec![],
        ));
    }
    let data = json!({
        "endpoint_id": id.to_string(),
        "message": "This is a test event from VantageEdge.",
    });
    let event = events::emit_to(w.tx(), tenant, events::TEST, data, Some(id)).await?;
    let delivery: Uuid = w
        .tx()
        .query_one(
            "SELECT id FROM webhook_deliveries WHERE endpoint_id = $1 AND event_id = $2",
            &[&id, &event],
        )
        .await?
        .get(0);
    w.commit().await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(TestEvent {
            event_id: event.to_string(),
            delivery_id: delivery.to_string(),
        }),
    )
        .into_response())
}

/// `GET /webhooks/{id}/deliveries?state=&limit=`.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}/deliveries",
    tag = "webhooks",
    operation_id = "list_webhook_deliveries",
    summary = "The delivery log of an endpoint",
    description = "Its newest deliveries first: state, attempts, the last status, error and \
        latency, the event type and timestamps.",
    params(("id" = Uuid, Path, description = "Id of the webhook endpoint"), DeliveryQuery),
    responses(
        (status = 200, description = "The deliveries", body = Vec<WebhookDelivery>),
        (status = 404, description = "No such endpoint (or another tenant's)", body = ErrorBody),
    )
)]
pub async fn deliveries(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Path(raw): Path<String>,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> Result<Json<Vec<WebhookDelivery>>, ApiError> {
    let id = path_id(&raw, "webhook endpoint")?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_parameter(
            "limit",
            "must be between 1 and 500",
        ));
    }
    if let Some(s) = &q.state {
        if !["pending", "delivered", "failed"].contains(&s.as_str()) {
            return Err(ApiError::bad_parameter(
                "state",
                "must be pending, delivered or failed",
            ));
        }
    }
    let c = st.pool.get().await?;
    if fetch_endpoint(&**c, id, p.tenant).await?.is_none() {
        return Err(ApiError::not_found("webhook endpoint"));
    }
    let rows = c
        .query(
            &format!(
                "SELECT {} FROM webhook_deliveries d JOIN events ev ON ev.id = d.event_id
                  WHERE d.endpoint_id = $1 AND ($2::text IS NULL OR d.state = $2)
                  ORDER BY d.created_at DESC, d.id DESC LIMIT $3",
                delivery_columns()
            ),
            &[&id, &q.state, &limit],
        )
        .await?;
    Ok(Json(rows.iter().map(delivery_of).collect()))
}

/// `GET /webhook-deliveries/{id}`.
#[utoipa::path(
    get,
    path = "/api/v1/webhook-deliveries/{id}",
    tag = "webhooks",
    operation_id = "get_webhook_delivery",
    summary = "One delivery with every attempt",
    params(("id" = Uuid, Path, description = "Id of the delivery")),
    responses(
        (status = 200, description = "The delivery, its event and its attempts", body = WebhookDeliveryDetail),
        (status = 404, description = "No such delivery (or another tenant's)", body = ErrorBody),
    )
)]
pub async fn delivery(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Path(raw): Path<String>,
) -> Result<Json<WebhookDeliveryDetail>, ApiError> {
    let id = path_id(&raw, "webhook delivery")?;
    let c = st.pool.get().await?;
    let delivery = fetch_delivery(&**c, id, p.tenant)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook delivery"))?;
    let ev = c
        .query_one(
            &format!(
                "SELECT ev.id::text, ev.type, ev.data, {} FROM events ev
                   JOIN webhook_deliveries d ON d.event_id = ev.id WHERE d.id = $1",
                sql_ts("ev.created_at")
            ),
            &[&id],
        )
        .await?;
    let attempts = c
        .query(
            &format!(
                "SELECT attempt, {}, status, latency_ms, error FROM webhook_attempts
                  WHERE delivery_id = $1 ORDER BY attempt",
                sql_ts("at")
            ),
            &[&id],
        )
        .await?;
    Ok(Json(WebhookDeliveryDetail {
        delivery,
        event: WebhookEvent {
            id: ev.get(0),
            kind: ev.get(1),
            data: ev.get(2),
            created_at: ev.get(3),
        },
        attempt_log: attempts
            .iter()
            .map(|r| WebhookAttempt {
                attempt: r.get(0),
                at: r.get(1),
                status: r.get(2),
                latency_ms: r.get(3),
                error: r.get(4),
            })
            .collect(),
    }))
}

/// `POST /webhook-deliveries/{id}/replay`.
#[utoipa::path(
    post,
    path = "/api/v1/webhook-deliveries/{id}/replay",
    tag = "webhooks",
    operation_id = "replay_webhook_delivery",
    summary = "Send a delivery again",
    description = "A delivered or failed (dead-letter) delivery is sent again from a fresh \
        retry schedule, with the same `webhook-id` (the event's id) so that the receiver can \
        tell it has seen the event. A pending delivery is still being attempted: 409.",
    params(("id" = Uuid, Path, description = "Id of the delivery")),
    responses(
        (status = 202, description = "Queued again", body = WebhookDelivery),
        (status = 404, description = "No such delivery (or another tenant's)", body = ErrorBody),
        (status = 409, description = "The delivery is pending", body = ErrorBody),
    )
)]
pub async fn replay(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_id(&raw, "webhook delivery")?;
    let mut client = st.pool.get().await?;
    let w = UnitOfWork::admin(&mut client).await?;
    let row = w
        .tx()
        .query_opt(
            "SELECT tenant_id, state FROM webhook_deliveries
              WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2) FOR UPDATE",
            &[&id, &p.tenant],
        )
        .await?
        .ok_or_else(|| ApiError::not_found("webhook delivery"))?;
    let (tenant, state): (Uuid, String) = (row.get(0), row.get(1));
    if state == "pending" {
        return Err(ApiError::Conflict(
            "the delivery is pending: its attempts are still under way".into(),
            vec![],
        ));
    }
    w.tx()
        .execute(
            "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = now(),
                    delivered_at = NULL, updated_at = now()
              WHERE id = $1",
            &[&id],
        )
        .await?;
    // The delivery's dead jobs are superseded by the new one: done, not dead letters any
    // more (else a tenant's broken receiver would grow the dead-letter count for ever, and
    // a replay of one of those jobs would attempt the delivery twice at once).
    w.tx()
        .execute(
            "UPDATE jobs SET state = 'done', last_error = $3, finished_at = now(),
                    updated_at = now()
              WHERE state = 'dead' AND kind = $2 AND tenant_id = $4
                AND payload->>'delivery_id' = $1::uuid::text",
            &[&id, &kinds::WEBHOOK_DELIVER, &SUPERSEDED, &tenant],
        )
        .await?;
    crate::worker::queue::enqueue(
        w.tx(),
        &events::deliver_job(tenant, id, Some(Uuid::new_v4())),
    )
    .await?;
    let delivery = fetch_delivery(w.tx(), id, None)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook delivery"))?;
    w.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(delivery)).into_response())
}
