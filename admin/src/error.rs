//! The one error type of the API, rendered as
//! `{"error": {"code", "message", "request_id", "fields"?}}`, and the extractors whose
//! rejections use it.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being handled (empty outside a request).
pub fn request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// Gives every request an id (`X-Request-Id` from the client when it is sane, else a new
/// UUID), available to error bodies and echoed in the response header.
pub async fn request_id_layer(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(String::from)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut resp = REQUEST_ID.scope(id.clone(), next.run(req)).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// A field-precise problem with the submitted resource.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ToSchema)]
pub struct Field {
    /// The field, relative to the submitted resource. Example: `targets[0].weight`.
    pub path: String,
    /// What is wrong with it. Example: `must be between 1 and 1000`.
    pub message: String,
}

/// The body of every error answer: `{"error": {"code", "message", "request_id", "fields"?}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// For people; never names another tenant's resources.
    pub message: String,
    /// The request's id (`X-Request-Id`), also in the service's logs.
    pub request_id: String,
    /// Each problem with the submitted resource (409 and 422), or the query parameter at
    /// fault (400, where the endpoint names it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<Field>,
}

/// The `code` of an error answer; each goes with one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: malformed JSON or query, wrong types, unknown or read-only fields.
    BadRequest,
    /// 401: no admin token, or an unknown or revoked one.
    Unauthorized,
    /// 403: the token's role may not do this.
    Forbidden,
    /// 404: no such resource, or another tenant's.
    NotFound,
    /// 404: no such endpoint.
    NoSuchEndpoint,
    /// 405: the endpoint does not take that method.
    MethodNotAllowed,
    /// 409: a value is already in use, or the resource is still in use.
    Conflict,
    /// 422: the resource failed validation; `fields` lists each problem.
    ValidationFailed,
    /// 413: the body is larger than the service accepts.
    PayloadTooLarge,
    /// 415: the body is not JSON.
    UnsupportedMediaType,
    /// 503: the database (or, for quota counters, Redis) is unavailable.
    Unavailable,
    /// 500: a bug or an unexpected database answer (details only in the log).
    Internal,
}

/// Everything a handler can refuse with.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    /// 400 naming the query parameter at fault in `fields`.
    BadParameter(Field),
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    NoSuchEndpoint,
    MethodNotAllowed,
    Conflict(String, Vec<Field>),
    Invalid(String, Vec<Field>),
    PayloadTooLarge,
    UnsupportedMediaType,
    Unavailable(String),
    Internal(String),
}

impl ApiError {
    pub fn not_found(what: &str) -> ApiError {
        ApiError::NotFound(format!("no such {what}"))
    }

    /// A 400 for the query parameter `name`, e.g. `bad_parameter("granularity", "must be
    /// minute, hour or day")`.
    pub fn bad_parameter(name: &str, message: impl Into<String>) -> ApiError {
        ApiError::BadParameter(Field {
            path: name.into(),
            message: message.into(),
        })
    }

    pub fn invalid_field(path: &str, message: impl Into<String>) -> ApiError {
        ApiError::Invalid(
            "the request failed validation".into(),
            vec![Field {
                path: path.into(),
                message: message.into(),
            }],
        )
    }

    fn parts(&self) -> (StatusCode, ErrorCode, String, &[Field]) {
        use ApiError::*;
        match self {
            BadRequest(m) => (
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                m.clone(),
                &[],
            ),
            BadParameter(f) => (
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                format!("{}: {}", f.path, f.message),
                std::slice::from_ref(f),
            ),
            Unauthorized(m) => (
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                m.clone(),
                &[],
            ),
            Forbidden(m) => (StatusCode::FORBIDDEN, ErrorCode::Forbidden, m.clone(), &[]),
            NotFound(m) => (StatusCode::NOT_FOUND, ErrorCode::NotFound, m.clone(), &[]),
            NoSuchEndpoint => (
                StatusCode::NOT_FOUND,
                ErrorCode::NoSuchEndpoint,
                "no such endpoint; see /openapi.json".into(),
                &[],
            ),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::MethodNotAllowed,
                "this endpoint does not take that method".into(),
                &[],
            ),
            Conflict(m, f) => (StatusCode::CONFLICT, ErrorCode::Conflict, m.clone(), f),
            Invalid(m, f) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::ValidationFailed,
                m.clone(),
                f,
            ),
            PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                "the request body is too large".into(),
                &[],
            ),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                "send the body as Content-Type: application/json".into(),
                &[],
            ),
            Unavailable(m) => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                m.clone(),
                &[],
            ),
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                "internal error".into(),
                &[],
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(request_id = %request_id(), "{detail}");
        }
        let (status, code, message, fields) = self.parts();
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message,
                request_id: request_id(),
                fields: fields.to_vec(),
            },
        };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"vantage-admin\""),
            );
        }
        resp
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> ApiError {
        if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            let detail = db.detail().unwrap_or(db.message()).to_string();
            return match code {
                "23505" => ApiError::Conflict(format!("already exists: {detail}"), vec![]),
                "23503" => ApiError::Conflict(format!("still referenced: {detail}"), vec![]),
                c if c.starts_with("22") || c == "23514" => {
                    ApiError::Invalid(format!("invalid value: {}", db.message()), vec![])
                }
                _ => ApiError::Internal(format!("postgres: {e}")),
            };
        }
        if e.is_closed() {
            return ApiError::Unavailable("the database is unavailable".into());
        }
        ApiError::Internal(format!("postgres: {e}"))
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> ApiError {
        tracing::warn!("database pool: {e}");
        ApiError::Unavailable("the database is unavailable".into())
    }
}

/// Deserialize a JSON value into `T`; type errors name the field (`targets[0].weight: ...`).
pub fn parse<T: DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::BadRequest(format!("{inner}"))
        } else {
            ApiError::BadRequest(format!("{path}: {inner}"))
        }
    })
}

/// A request body that must be a JSON object (`Content-Type: application/json`).
pub struct JsonObject(pub Map<String, Value>);

/// Like [`JsonObject`], but an empty body is an empty object.
pub struct OptionalJsonObject(pub Map<String, Value>);

async fn read_object<S: Send + Sync>(
    req: Request,
    state: &S,
    optional: bool,
) -> Result<Map<String, Value>, ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
        .unwrap_or(false);
    let bytes = axum::body::Bytes::from_request(req, state)
        .await
        .map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest(format!("cannot read the body: {e}"))
            }
        })?;
    if optional && bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        )),
        Err(e) => Err(ApiError::BadRequest(format!("malformed JSON: {e}"))),
    }
}

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        read_object(req, state, false).await.map(JsonObject)
    }
}

impl<S: Send + Sync> FromRequest<S> for OptionalJsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        read_object(req, state, true).await.map(OptionalJsonObject)
    }
}

/// Query parameters, refused with a JSON 400 when they do not parse.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded_like(q).map(ApiQuery)
    }
}

fn serde_urlencoded_like<T: DeserializeOwned>(q: &str) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(
        &format!("/?{q}")
            .parse()
            .map_err(|_| ApiError::BadRequest("malformed query string".into()))?,
    )
    .map(|axum::extract::Query(v)| v)
    .map_err(|e| ApiError::BadRequest(format!("bad query parameter: {}", e.body_text())))
}

/// Parse a path id; anything that is not a UUID names nothing (404).
pub fn path_id(raw: &str, what: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(raw).map_err(|_| ApiError::not_found(what))
}

/// Parse a numeric path id; anything else names nothing (404).
pub fn path_id_i64(raw: &str, what: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().map_err(|_| ApiError::not_found(what))
}

/// An optional UUID query parameter `name`; anything else is a 400 naming it.
pub fn uuid_param(v: &Option<String>, name: &str) -> Result<Option<uuid::Uuid>, ApiError> {
    v.as_deref()
        .map(|s| {
            uuid::Uuid::parse_str(s)
                .map_err(|_| ApiError::bad_parameter(name, "must be an id (UUID)"))
        })
        .transpose()
}
