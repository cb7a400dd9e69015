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

/// Who a failed proxy attempt is down to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The client was too slow or went away; never counted against the origin.
    Client,
    /// The origin failed or was too slow.
    Origin,
    /// The origin failed while the client still owed it the request body: either could be
    /// at fault (an origin with its own deadline for slow uploads closes on the client).
    /// Never counted against the origin.
    Unclear,
    /// The gateway decided (or failed) itself.
    Gateway,
}

/// Who `e` is down to. `request_body_done`: the client had sent its whole request body. An
/// origin that times out while the client still owes it the body was waiting for the
/// client, not failing.
pub fn blame(e: &pingora::Error, request_body_done: bool) -> Blame {
    use pingora::{ErrorSource, ErrorType::*};
    match (e.esource(), e.etype()) {
        (ErrorSource::Downstream, _) => Blame::Client,
        // The origin was silent while it still waited for the body.
        (ErrorSource::Upstream, ReadTimedout) if !request_body_done => Blame::Client,
        (ErrorSource::Upstream, _) if !request_body_done => Blame::Unclear,
        (ErrorSource::Upstream, _) => Blame::Origin,
        _ => Blame::Gateway,
    }
}

impl Blame {
    /// Does this failure count against the origin's circuit breaker?
    pub fn counts_against_origin(self) -> bool {
        matches!(self, Blame::Origin | Blame::Gateway)
    }
}

/// The reply for a failed proxy attempt (`None`: the client is gone, nothing to say). The
/// connection is closed afterwards, and the reply says so.
pub fn proxy_failure(e: &pingora::Error, blame: Blame) -> Option<Reply> {
    use pingora::ErrorType::*;
    let reply = match blame {
        Blame::Client => match e.etype() {
            ReadError | WriteError | ConnectionClosed => return None,
            ReadTimedout | WriteTimedout => Reply::new(
                408,
                "request_timeout",
                "the client was too slow sending the request",
            ),
            _ => Reply::new(400, "bad_request", "the request could not be read"),
        },
        Blame::Origin | Blame::Unclear => match e.etype() {
            ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout => {
                Reply::new(504, "upstream_timeout", "the origin did not answer in time")
            }
            _ => Reply::new(502, "upstream_error", "the origin failed to answer"),
        },
        Blame::Gateway => match e.etype() {
            HTTPStatus(code) => Reply::new(*code, "gateway_error", e.to_string()),
            _ => Reply::new(
                500,
                "internal_error",
                "the gateway failed to handle the request",
            ),
        },
    };
    Some(reply.closing())
}

/// The JSON body of an error.
pub fn body(code: &str, message: &str, request_id: &str) -> Bytes {
    let v = serde_json::json!({
        "error": {"code": code, "message": message, "request_id": request_id}
    });
    Bytes::from(v.to_string())
}

/// The response head of `reply` with a body of `body_len` bytes.
fn response_header(
    reply: &Reply,
    body_len: usize,
    request_id: &str,
) -> pingora::Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(reply.status, Some(8 + reply.headers.len()))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body_len.to_string())?;
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
    }
    Ok(resp)
}

/// Write `reply` as the whole response.
pub async fn respond(
    session: &mut Session,
    reply: &Reply,
    request_id: &str,
) -> pingora::Result<()> {
    let body = body(reply.code, &reply.message, request_id);
    respond_with(session, reply, body, request_id, None).await
}

/// Write a configured answer (a route's fallback): `body` of `content_type`, with the
/// headers of the gateway's own answers and the reply's.
pub async fn respond_as(
    session: &mut Session,
    reply: &Reply,
    content_type: &HeaderValue,
    body: Bytes,
    request_id: &str,
) -> pingora::Result<()> {
    respond_with(session, reply, body, request_id, Some(content_type)).await
}

/// Write a gateway answer that is not an error (the key holder's usage report): `value` as
/// JSON with the headers of the gateway's own answers.
pub async fn respond_json(
    session: &mut Session,
    status: u16,
    value: &serde_json::Value,
    request_id: &str,
) -> pingora::Result<()> {
    let reply = Reply::new(status, "", "");
    let body = Bytes::from(value.to_string());
    respond_with(session, &reply, body, request_id, None).await
}

/// Write `reply`'s head and `body` (JSON unless `content_type` says otherwise).
async fn respond_with(
    session: &mut Session,
    reply: &Reply,
    body: Bytes,
    request_id: &str,
    content_type: Option<&HeaderValue>,
) -> pingora::Result<()> {
    let mut resp = response_header(reply, body.len(), request_id)?;
    if let Some(t) = content_type {
        resp.insert_header(http::header::CONTENT_TYPE, t.clone())?;
    }
    if reply.close {
        // Pingora writes `Connection` from the session's keep-alive state.
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

/// `reply` as the raw bytes of an HTTP/1.1 response, for answers written before Pingora has
/// a session (connection refusals, request heads it would not accept).
pub fn raw(reply: &Reply, request_id: &str, head_only: bool) -> Vec<u8> {
    let body = body(reply.code, &reply.message, request_id);
    let Ok(resp) = response_header(reply, body.len(), request_id) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(512 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(resp.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(resp.status.canonical_reason().unwrap_or("Error").as_bytes());
    out.extend_from_slice(b"\r\ndate: ");
    out.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
    for (name, value) in resp.headers.iter() {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
    if !head_only {
        out.extend_from_slice(&body);
    }
    out
}

/// A new request id (a UUID v4).
pub fn new_request_id() -> http::HeaderValue {
    crate::ids::request_id()
}

#[cfg(test)]
mod tests {
    #[test]
    fn raw_responses_carry_the_json_shape_and_close() {
        let reply = super::Reply::new(431, "too_many_headers", "more than 256").closing();
        let raw = String::from_utf8(super::raw(&reply, "rid-1", false)).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{head}"
        );
        for line in [
            "content-type: application/json",
            "connection: close",
            "x-request-id: rid-1",
            &format!("content-length: {}", body.len()),
        ] {
            assert!(head.contains(line), "{line} in {head}");
        }
        assert!(!head.to_ascii_lowercase().contains("server:"));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "too_many_headers");
        assert_eq!(v["error"]["request_id"], "rid-1");
        let head_only = super::raw(&reply, "rid-1", true);
        assert!(head_only.ends_with(b"\r\n\r\n"));
    }

    #[test]
    fn a_slow_client_is_not_the_origins_fault() {
        use super::{blame, proxy_failure, Blame};
        use pingora::{Error, ErrorType};
        let mut down = Error::new(ErrorType::ReadTimedout);
        down.as_down();
        assert_eq!(blame(&down, false), Blame::Client);
        let mut up = Error::new(ErrorType::ReadTimedout);
        up.as_up();
        // The origin waited for a body the client never finished.
        assert_eq!(blame(&up, false), Blame::Client);
        let reply = proxy_failure(&up, Blame::Client).unwrap();
        assert_eq!(
            (reply.status, reply.code, reply.close),
            (408, "request_timeout", true)
        );
        // With the whole request sent, a silent origin is the origin's fault; so is an
        // origin that does not take the body.
        assert_eq!(blame(&up, true), Blame::Origin);
        // Anything else while the body is unfinished could be either side's doing: it is
        // answered as the origin's failure but never counted against it.
        let mut stuck = Error::new(ErrorType::WriteTimedout);
        stuck.as_up();
        assert_eq!(blame(&stuck, false), Blame::Unclear);
        assert!(!Blame::Unclear.counts_against_origin());
        assert_eq!(proxy_failure(&stuck, Blame::Unclear).unwrap().status, 504);
        let mut closed = Error::new(ErrorType::ConnectionClosed);
        closed.as_up();
        assert_eq!(blame(&closed, false), Blame::Unclear);
        assert_eq!(blame(&closed, true), Blame::Origin);
        assert_eq!(proxy_failure(&up, Blame::Origin).unwrap().status, 504);
        let mut reset = Error::new(ErrorType::ConnectionClosed);
        reset.as_down();
        assert_eq!(proxy_failure(&reset, blame(&reset, true)), None);
    }

    #[test]
    fn body_shape() {
        let b = super::body("no_route", "no route for \"/x\"", "abc");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"]["code"], "no_route");
        assert_eq!(v["error"]["message"], "no route for \"/x\"");
        assert_eq!(v["error"]["request_id"], "abc");
    }
}
