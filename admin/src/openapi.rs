//! The OpenAPI 3 document served at `/openapi.json`. Every operation here is served by
//! `api::router` (an integration test calls each one and checks the router knows it).

use serde_json::{json, Map, Value};

fn err(desc: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn ok(desc: &str, schema: Value) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": schema}}})
}

fn body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn id_param() -> Value {
    json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}})
}

fn common(responses: &mut Map<String, Value>) {
    responses.insert(
        "400".into(),
        err("Malformed JSON, wrong types, unknown fields"),
    );
    responses.insert("401".into(), err("Missing or unknown admin token"));
}

fn op(
    tag: &str,
    summary: &str,
    params: Vec<Value>,
    req: Option<Value>,
    mut resp: Map<String, Value>,
) -> Value {
    common(&mut resp);
    let mut o = json!({
        "tags": [tag],
        "summary": summary,
        "parameters": params,
        "responses": resp,
        "security": [{"bearer": []}],
    });
    if let Some(r) = req {
        o["requestBody"] = r;
    }
    o
}

fn list_params() -> Vec<Value> {
    vec![
        json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}}),
        json!({"name": "cursor", "in": "query", "description": "next_cursor of the previous page", "schema": {"type": "string"}}),
        json!({"name": "tenant_id", "in": "query", "schema": {"type": "string", "format": "uuid"}}),
    ]
}

fn resp(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone()))
        .collect()
}

/// CRUD paths for one resource.
fn crud(
    paths: &mut Map<String, Value>,
    base: &str,
    tag: &str,
    schema: &str,
    put: bool,
    custom_create: Option<&str>,
) {
    let list_schema = json!({"type": "object", "properties": {
        "items": {"type": "array", "items": schema_ref(schema)},
        "next_cursor": {"type": ["string", "null"]}}});
    let created_desc =
        custom_create.unwrap_or("Created; X-Config-Version carries the committed version");
    paths.insert(
        base.into(),
        json!({
            "get": op(tag, &format!("List {tag}"), list_params(), None, resp(&[("200", ok("A page", list_schema))])),
            "post": op(tag, &format!("Create one of {tag}"), vec![], Some(body(schema_ref(schema))), resp(&[
                ("201", ok(created_desc, schema_ref(schema))),
                ("409", err("Conflict (e.g. subdomain or host already used)")),
                ("422", err("Validation failed; `fields` lists each problem")),
                ("413", err("Body too large")),
                ("415", err("Not JSON")),
            ])),
        }),
    );
    let mut item = json!({
        "get": op(tag, "Get one", vec![id_param()], None, resp(&[("200", ok("The resource", schema_ref(schema))), ("404", err("Unknown (or another tenant's)"))])),
        "patch": op(tag, "JSON merge patch (RFC 7396)", vec![id_param()], Some(body(json!({"type": "object"}))), resp(&[
            ("200", ok("Updated", schema_ref(schema))),
            ("404", err("Unknown")),
            ("409", err("Conflict")),
            ("422", err("Validation failed")),
        ])),
        "delete": op(tag, "Delete", vec![id_param()], None, resp(&[
            ("204", json!({"description": "Deleted"})),
            ("404", err("Unknown")),
            ("409", err("Still in use")),
        ])),
    });
    if put {
        item["put"] = op(
            tag,
            "Replace",
            vec![id_param()],
            Some(body(schema_ref(schema))),
            resp(&[
                ("200", ok("Replaced", schema_ref(schema))),
                ("404", err("Unknown")),
                ("409", err("Conflict")),
                ("422", err("Validation failed")),
            ]),
        );
    }
    if base == "/api/v1/tenants" {
        if let Some(a) = item["delete"]["parameters"].as_array_mut() {
            a.push(json!({"name": "cascade", "in": "query", "schema": {"type": "boolean"}, "description": "Also delete the tenant's origins, routes, keys, issuers and users"}));
        }
    }
    paths.insert(format!("{base}/{{id}}"), item);
}

fn model_schema(desc: &str, required: &[&str], props: Value) -> Value {
    json!({"type": "object", "description": desc, "required": required, "properties": props})
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    crud(
        &mut paths,
        "/api/v1/tenants",
        "tenants",
        "Tenant",
        true,
        None,
    );
    crud(
        &mut paths,
        "/api/v1/origins",
        "origins",
        "Origin",
        true,
        None,
    );
    crud(&mut paths, "/api/v1/routes", "routes", "Route", true, None);
    crud(
        &mut paths,
        "/api/v1/jwt-issuers",
        "jwt-issuers",
        "JwtIssuer",
        true,
        None,
    );
    crud(&mut paths, "/api/v1/users", "users", "User", false, None);
    crud(
        &mut paths,
        "/api/v1/api-keys",
        "api-keys",
        "ApiKey",
        false,
        Some("Created; `key` holds the plaintext key, shown this once"),
    );
    paths.insert(
        "/api/v1/api-keys/{id}/rotate".into(),
        json!({"post": op("api-keys", "Rotate: a new key replaces this one", vec![id_param()],
            Some(json!({"required": false, "content": {"application/json": {"schema": {"type": "object", "properties": {"grace_seconds": {"type": "integer", "minimum": 0, "description": "Old key keeps working this long (default 0: revoked now)"}}}}}})),
            resp(&[("201", ok("The new key; `key` holds its plaintext, shown this once", schema_ref("ApiKey"))), ("404", err("Unknown")), ("409", err("Already revoked"))]))}),
    );
    paths.insert(
        "/api/v1/api-keys/{id}/revoke".into(),
        json!({"post": op("api-keys", "Revoke", vec![id_param()], None,
            resp(&[("200", ok("Revoked", schema_ref("ApiKey"))), ("404", err("Unknown"))]))}),
    );
    paths.insert(
        "/api/v1/analytics/requests".into(),
        json!({"get": op("analytics", "Request counts, error rates and latency percentiles from request_logs", vec![
            json!({"name": "tenant_id", "in": "query", "schema": {"type": "string", "format": "uuid"}}),
            json!({"name": "from", "in": "query", "schema": {"type": "string", "format": "date-time"}, "description": "Inclusive; default to - 24h"}),
            json!({"name": "to", "in": "query", "schema": {"type": "string", "format": "date-time"}, "description": "Exclusive; default now"}),
            json!({"name": "group_by", "in": "query", "schema": {"type": "string", "enum": ["tenant", "api_key", "route", "none"], "default": "tenant"}}),
        ], None, resp(&[("200", ok("Statistics", schema_ref("Analytics")))]))}),
    );
    paths.insert(
        "/api/v1/config".into(),
        json!({"get": op("config", "The configuration as the proxies read it, secrets redacted (superadmin)", vec![], None,
            resp(&[("200", ok("{version, config}", json!({"type": "object"}))), ("403", err("Not a superadmin"))]))}),
    );
    paths.insert(
        "/openapi.json".into(),
        json!({"get": op("meta", "This document", vec![], None, resp(&[("200", ok("OpenAPI 3", json!({"type": "object"})))]))}),
    );
    paths.insert(
        "/metrics".into(),
        json!({"get": op("meta", "Prometheus metrics (text exposition)", vec![], None,
        resp(&[("200", {
            let mut r = ok("Prometheus text", json!({"type": "string"}));
            r["content"] = json!({"text/plain": {"schema": {"type": "string"}}});
            r
        })]))}),
    );
    paths.insert(
        "/healthz".into(),
        json!({"get": {"tags": ["meta"], "summary": "Liveness and database reachability (no credentials)", "security": [],
            "responses": {"200": {"description": "Healthy"}, "503": {"description": "Database unreachable"}}}}),
    );

    let stamps = json!({
        "created_at": {"type": "string", "format": "date-time", "readOnly": true},
        "updated_at": {"type": "string", "format": "date-time", "readOnly": true}});
    let with = |mut props: Value| {
        if let (Value::Object(p), Value::Object(s)) = (&mut props, &stamps) {
            p.extend(s.clone());
        }
        props
    };
    let id = json!({"type": "string", "format": "uuid", "readOnly": true});
    let tenant_id = json!({"type": "string", "format": "uuid", "description": "Defaults to the caller's tenant for tenant_admin tokens"});
    let policy = |d: &str| json!({"type": "object", "description": d});
    let list = |d: &str| json!({"type": "array", "items": {"type": "object"}, "description": d});
    let strings = json!({"type": "array", "items": {"type": "string"}});
    let schemas = json!({
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message", "request_id"], "properties": {
            "code": {"type": "string", "example": "validation_failed"},
            "message": {"type": "string"},
            "request_id": {"type": "string"},
            "fields": {"type": "array", "items": {"type": "object", "properties": {"path": {"type": "string"}, "message": {"type": "string"}}}}}}}},
        "Tenant": model_schema("vantage_model::Tenant", &["name", "subdomain"], with(json!({
            "id": id, "name": {"type": "string"}, "subdomain": {"type": "string", "example": "acme"},
            "custom_hosts": strings, "access": policy("Access: cors, security_headers, ip_rules"),
            "rate_limits": list("RateLimitPolicy"), "clerk_org_id": {"type": "string"}}))),
        "Origin": model_schema("vantage_model::Origin", &["targets"], with(json!({
            "id": id, "tenant_id": tenant_id,
            "targets": {"type": "array", "items": {"type": "object", "required": ["url"], "properties": {"url": {"type": "string", "example": "http://127.0.0.1:9001"}, "weight": {"type": "integer", "minimum": 1, "maximum": 1000}}}},
            "lb": {"type": "string", "enum": ["round_robin", "weighted", "random", "consistent_hash", "least_connections"]},
            "hash_key": policy("HashKey: {source: header|cookie|client_ip|path, name?}"),
            "health_check": policy("HealthCheck"), "timeouts": policy("Timeouts"),
            "retries": {"type": "integer", "minimum": 0, "maximum": 10},
            "circuit_breaker": policy("CircuitBreaker"), "tls": policy("UpstreamTls"),
            "protocol": {"type": "string", "enum": ["http1", "http2", "auto"]},
            "preserve_host": {"type": "boolean"}}))),
        "Route": model_schema("vantage_model::Route", &["path_pattern", "origin_id"], with(json!({
            "id": id, "tenant_id": tenant_id, "path_pattern": {"type": "string", "example": "/api/users/*"},
            "methods": strings, "headers": list("HeaderMatch"), "priority": {"type": "integer"},
            "origin_id": {"type": "string", "format": "uuid"}, "strip_prefix": {"type": "string"},
            "rewrite": policy("PathRewrite {pattern, replacement}"),
            "request_headers": policy("HeaderTransform {add, set, remove}"),
            "response_headers": policy("HeaderTransform {add, set, remove}"),
            "compression": policy("Compression {enabled, level}"),
            "auth": policy("RouteAuth {mode: public|apikey_required|jwt_required|jwt_or_apikey, scopes, strip_authorization}"),
            "rate_limits": list("RateLimitPolicy"), "access": policy("Access"), "cache": policy("CachePolicy")}))),
        "ApiKey": model_schema("vantage_model::ApiKey (key_hash is never shown)", &["name"], with(json!({
            "id": id, "tenant_id": tenant_id, "name": {"type": "string"},
            "key": {"type": "string", "readOnly": true, "description": "Plaintext, only in the answer to create and rotate"},
            "key_hash": {"type": "string", "writeOnly": true, "description": "Import an existing key by its SHA-256 instead of generating one"},
            "prefix": {"type": "string", "example": "vk_live_3fA9"}, "scopes": strings,
            "expires_at": {"type": "string", "format": "date-time"},
            "status": {"type": "string", "enum": ["active", "revoked"], "readOnly": true},
            "last_used_at": {"type": "string", "format": "date-time", "readOnly": true},
            "revoked_at": {"type": "string", "format": "date-time", "readOnly": true},
            "rotated_from": {"type": "string", "format": "uuid", "readOnly": true}}))),
        "JwtIssuer": model_schema("vantage_model::JwtIssuer (shared_secret is write-only)", &["issuer"], with(json!({
            "id": id, "tenant_id": tenant_id, "issuer": {"type": "string"}, "audiences": strings,
            "jwks_url": {"type": "string"}, "public_key_pem": {"type": "string"},
            "shared_secret": {"type": "string", "writeOnly": true}, "shared_secret_set": {"type": "boolean", "readOnly": true},
            "algorithms": strings, "leeway_s": {"type": "integer"}, "cookie": {"type": "string"},
            "claim_headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "jwks_refresh_s": {"type": "integer"}, "jwks_min_refetch_s": {"type": "integer"}}))),
        "User": model_schema("A person of a tenant", &["email", "role"], with(json!({
            "id": id, "tenant_id": tenant_id, "email": {"type": "string", "format": "email"},
            "role": {"type": "string", "enum": ["admin", "member", "viewer"]},
            "clerk_user_id": {"type": "string"}}))),
        "Stats": {"type": "object", "properties": {
            "tenant_id": {"type": ["string", "null"]}, "key": {"type": ["string", "null"], "description": "api_key_id or route_id"},
            "requests": {"type": "integer"}, "server_errors": {"type": "integer", "description": "status >= 500"},
            "error_rate": {"type": "number", "description": "server_errors / requests"},
            "client_errors": {"type": "integer", "description": "400 <= status < 500"},
            "client_error_rate": {"type": "number"},
            "latency_ms": {"type": "object", "properties": {"p50": {"type": ["number", "null"]}, "p95": {"type": ["number", "null"]}, "p99": {"type": ["number", "null"]}, "mean": {"type": ["number", "null"]}}},
            "bytes_sent": {"type": "integer"}}},
        "Analytics": {"type": "object", "properties": {
            "from": {"type": "string"}, "to": {"type": "string"}, "tenant_id": {"type": ["string", "null"]},
            "group_by": {"type": "string"}, "groups": {"type": "array", "items": schema_ref("Stats")}, "totals": schema_ref("Stats")}},
    });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "VantageEdge admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Configuration of the VantageEdge gateway. Every write is validated with the proxy's own rules, bumps the config version (X-Config-Version) and is announced to the proxies. Errors: {\"error\": {\"code\", \"message\", \"request_id\", \"fields\"?}}.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "Admin token from `vantage-admin create-token`"}},
            "schemas": schemas,
        },
        "security": [{"bearer": []}],
    })
}
