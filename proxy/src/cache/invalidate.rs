//! RFC 9111 §4.4: a successful response to an unsafe request invalidates the stored
//! responses of its URL and of the same-host `Location` and `Content-Location` it names.
//! This process forgets them at once; other proxies learn it from purge announcements.

use super::Purges;
use http::Method;
use pingora::http::{RequestHeader, ResponseHeader};

/// Invalidate what `req` (answered with `resp`) made stale, for a tenant with a caching
/// route. `host` is the request's host, to tell same-host locations from others.
pub fn after_response(
    purges: &Purges,
    tenant: &str,
    req: &RequestHeader,
    host: Option<&str>,
    resp: &ResponseHeader,
) {
    let unsafe_method = !matches!(
        req.method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    if !unsafe_method || !(200..400).contains(&resp.status.as_u16()) {
        return;
    }
    purges.invalidate_local(tenant, req.uri.path(), req.uri.query());
    for name in [http::header::LOCATION, http::header::CONTENT_LOCATION] {
        let Some(v) = resp.headers.get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let Ok(uri) = v.parse::<http::Uri>() else {
            continue;
        };
        let same_host = uri.host().is_none_or(|h| Some(h) == host);
        if same_host && uri.path().starts_with('/') {
            purges.invalidate_local(tenant, uri.path(), uri.query());
        }
    }
}
