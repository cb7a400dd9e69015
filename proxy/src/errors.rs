//! The gateway's one error shape:
//! `{"error": {"code": "rate_limited", "message": "...", "request_id": "..."}}`.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use std::borrow::Cow;

/// An error answered by the gateway itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Stable machine-readable code, e.g. `unknown_tenant`.
    pub code: &'static str,
    /// Human-readable explanation (never contains secrets).
    pub message: Cow<'static, str>,
    /// Close the client connection after answering (request smuggling suspects).
    pub close: bool,
    /// Extra response headers (WWW-Authenticate, Retry-After, rate-limit and CORS fields).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Reply {
    /// A reply that keeps the connection open.
    pub fn new(status: u16, code: &'static str, message: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            status,
            code,
            message: message.into(),
            close: false,
            headers: Vec::new(),
        }
    }

    /// The same reply with one more response header (`name` is lower-case; a value that is
    /// not a valid header value is left out).
    pub fn with_header(mut self, name: &'static str, value: impl AsRef<str>) -> Reply {
        if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
            self.headers.push((HeaderName::from_static(name), v));
        }
        self
    }

    /// The same reply, closing the connection afterwards.
    pub fn closing(mut self) -> Reply {
        self.close = true;
        self
    }
}

/// The JSON body of an error.
pub fn body(code: &str, message: &str, request_id: &str) -> Bytes {
    let v = serde_json::json!({
        "error": {"code": code, "message": message, "request_id": request_id}
    });
    Bytes::from(v.to_string())
}

/// Write `reply` as the whole response.
pub async fn respond(
    session: &mut Session,
    reply: &Reply,
    request_id: &str,
) -> pingora::Result<()> {
    let body = body(reply.code, &reply.message, request_id);
    let mut resp = ResponseHeader::build(reply.status, Some(6))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    // Security headers are always on for the gateway's own answers.
    resp.insert_header("x-content-type-options", "nosniff")?;
    resp.insert_header("x-frame-options", "DENY")?;
    resp.insert_header("referrer-policy", "no-referrer")?;
    for (name, value) in &reply.headers {
        resp.append_header(name.clone(), value.clone())?;
    }
    if !request_id.is_empty() {
        resp.insert_header("x-request-id", request_id)?;
    }
    if reply.close {
        resp.insert_header(http::header::CONNECTION, "close")?;
        session.set_keepalive(None);
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn body_shape() {
        let b = super::body("no_route", "no route for \"/x\"", "abc");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"]["code"], "no_route");
        assert_eq!(v["error"]["message"], "no route for \"/x\"");
        assert_eq!(v["error"]["request_id"], "abc");
    }
}
