//! The operator console: three static files (`admin/console/`) built into the binary and
//! served under `/console/` without a token — the page asks for one and sends it with each
//! API call it makes. No third-party asset, no inline script or style, and a strict
//! Content-Security-Policy, so data shown by the page (names chosen by tenants) cannot run.
//!
//! For work on the console itself, `VANTAGE_CONSOLE_DIR=admin/console` serves the same three
//! files from that directory instead, read at each request.

use crate::AppState;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

/// The console's files: name, content type, embedded content.
const FILES: [(&str, &str, &str); 3] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../console/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../console/app.css"),
    ),
];

/// What the console's pages may load and do: only this origin's files and API.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
    frame-ancestors 'none'";

fn serve(name: &str) -> Response {
    let Some((_, kind, embedded)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return crate::error::ApiError::NoSuchEndpoint.into_response();
    };
    let body = match std::env::var_os("VANTAGE_CONSOLE_DIR") {
        Some(dir) => match std::fs::read_to_string(std::path::Path::new(&dir).join(name)) {
            Ok(text) => text,
            Err(e) => {
                tracing::warn!("VANTAGE_CONSOLE_DIR: {name}: {e}");
                return StatusCode::NOT_FOUND.into_response();
            }
        },
        None => (*embedded).to_string(),
    };
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `/console` (redirects to `/console/`), `/console/`, `/console/app.js`, `/console/app.css`.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(|| async { serve("index.html") }))
        .route("/console/app.js", get(|| async { serve("app.js") }))
        .route("/console/app.css", get(|| async { serve("app.css") }))
}
